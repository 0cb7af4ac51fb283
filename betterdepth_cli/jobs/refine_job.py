"""A ``refine`` job from its options to its exit status, for the CLI and for scripts.

    job = prepare(options, info=print, error=print)    # settings, inputs, plan (nothing written)
    check_device(job)                                   # the device and dtype exist here (a dry run stops)
    cond, model = load_models(job, info=print)          # models loaded, the run recorded
    summary = jobs.run(job.plan, job.settings, cond, model)
    code = finish(job, summary, info=print)             # the exit status

``options`` holds the long flag names of ``betterdepth refine`` (dashes as underscores) with parsed
values (``format`` and ``ext`` as lists), already merged flags > config file; what it leaves out takes
the flags' defaults (:data:`DEFAULT_OPTIONS`), so a script needs only ``inputs`` and ``output``:
``prepare({"inputs": ["photos"], "output": "out"}, ...)``. Settings the model card gives (steps,
ensemble, resolution, conditioner) are resolved here, once, by
:func:`betterdepth_cli.core.settings.resolve_settings`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from betterdepth_cli.core.exit_codes import EXIT_DATAERR, EXIT_OK, EXIT_PARTIAL
from betterdepth_cli.core.model_names import model_record_name, read_card
from betterdepth_cli.core.types import InputDataError, NoInputError, UsageError
from betterdepth_cli.jobs.plan import RUN_CONFIG_NAME, Plan, check_output_dir, plan_run
from betterdepth_cli.jobs.settings import RefineSettings
from betterdepth_cli.jobs.summary import Summary, exit_code

Say = Callable[[str], None]

#: Said once per run when the offline conditioner runs: what a user will see on real photos.
BUILTIN_NOTICE = ("note: the builtin conditioner is a small offline model trained on synthetic scenes; on real "
                  "photos it gives little more than a near-to-far ramp. For real work use "
                  "--conditioner depth-anything-v2-large (downloaded once, then offline).")


#: The defaults of ``betterdepth refine``'s flags that the job reads (the CLI's too); ``seed`` None: 0,
#: not given (a deterministic model's run names a given one as of no effect).
DEFAULT_OPTIONS: dict[str, Any] = {
    "seed": None, "device": "auto", "dtype": "fp32", "batch_size": 1, "no_refine": False, "format": ["png16"],
    "overwrite": False, "continue_on_error": False, "recursive": False, "preview_video": False, "quiet": False,
    "per_frame": False,
}  # fmt: skip


@dataclass
class RefineJob:
    settings: RefineSettings
    plan: Plan
    options: dict[str, Any]
    device: str  # as asked (``auto`` until :func:`execute` resolves it)
    dtype: str
    shard: tuple[int, int] | None = None
    discover_failures: list[str] = field(default_factory=list)
    rank: Any = None  # jobs.ranks.RankInfo under a multi-process launch

    @property
    def what(self) -> str:
        s = self.settings
        if not s.refine:
            return f"{s.conditioner} only (--no-refine)"
        return (f"{s.conditioner} refined by {s.model} (steps {s.steps}, ensemble {s.ensemble}, "
                f"processing-res {s.processing_res or 'native'}, seed {s.seed})")

    @property
    def summary_line(self) -> str:
        shots = sum(1 for g in self.plan.groups if g.is_shot)
        blocked = self.plan.blocked
        todo = f"{self.plan.todo - blocked} to process" + (f", {blocked} that will fail (see below)" if blocked else "")
        return (f"{self.plan.total} input(s) ({shots} shot(s)), {todo}, {self.plan.skipped} "
                f"existing to skip -> {self.settings.out_dir}")

    def run_config(self) -> dict[str, Any]:
        """The options as run, absolute paths and resolved settings: ``betterdepth-run.toml``."""
        s, o = self.settings, self.options
        return {
            "inputs": [_absolute_input(i) for i in o["inputs"]],
            "output": str(s.out_dir.absolute()), "conditioner": s.conditioner,
            "model": None if o.get("model") is None else model_record_name(o.get("model")),
            "steps": s.steps, "ensemble": s.ensemble, "reduction": s.reduction, "processing_res": s.processing_res,
            "seed": s.seed, "device": self.device, "dtype": self.dtype, "batch_size": s.batch_size,
            "no_refine": not s.refine, "format": list(s.formats), "overwrite": s.overwrite,
            "continue_on_error": s.continue_on_error, "shard": o.get("shard"), "recursive": bool(o.get("recursive")),
            "ext": o.get("ext"), "frames": o.get("frames"), "preview_video": s.preview_video, "per_frame": s.per_frame,
            "tile": o.get("tile"), "allow_missing": bool(o.get("allow_missing")), "max_pixels": o.get("max_pixels"),
        }  # fmt: skip


def _absolute_input(spec: str) -> str:
    """An input as the run record keeps it: absolute (``@list.txt`` too), so the record reruns from any folder."""
    if spec == "-":
        return spec
    if spec.startswith("@"):
        return "@" + str(Path(spec[1:]).expanduser().absolute())
    return str(Path(spec).expanduser().absolute())


#: The options a diffusion refiner uses and the guided filter and the conditioner alone do not.
SAMPLING_OPTIONS = ("steps", "ensemble", "reduction", "processing_res", "tile")
#: The options that apply to videos and image sequences only.
SHOT_OPTIONS = ("frames", "allow_missing", "preview_video", "per_frame")


def _settings(options: dict[str, Any], info: Say) -> RefineSettings:
    """The job's settings: the options over the model card's defaults, checked once."""
    from betterdepth_cli.conditioner_registry import check_conditioner_name
    from betterdepth_cli.core.model_names import local_model_folder
    from betterdepth_cli.core.settings import card_defaults, card_digest, resolve_settings

    refine = not options.get("no_refine")
    if refine and model_record_name(options.get("model")) not in ("default", "guided"):
        local_model_folder(options["model"])  # a missing folder fails now (exit 69), a dry run too
    card = read_card(options.get("model")) or {}
    conditioner = options.get("conditioner") or card_defaults(card)["conditioner"]
    check_conditioner_name(conditioner)  # a misspelt name fails now, not after discovery and setup
    run = resolve_settings(card, **{k: options.get(k) for k in ("steps", "ensemble", "reduction", "processing_res")})
    tiles = _tile_settings(options.get("tile"))
    if not refine:
        from betterdepth_cli.core.settings import not_applied_note

        note = not_applied_note("--no-refine writes the conditioner's map alone",
                                **{k: options.get(k) for k in SAMPLING_OPTIONS})
        if note:
            info(note)
        tiles = {}
    elif card.get("classical"):  # the guided filter runs whole at any size
        tiles = {}
    if tiles.get("tile"):  # tiles work at the plate's own scale: the record says so, a rerun of it agrees
        from betterdepth_cli.core.tiling import tile_resolution_note

        note = tile_resolution_note(tiles["tile"], options.get("processing_res"))
        if note:
            info(note)
        run = replace(run, processing_res=0)
    if refine:
        from betterdepth_cli.core.settings import unused_option_notes

        _check_uncertainty(card, run.ensemble, options["format"])
        for note in unused_option_notes(card, run.ensemble, options.get("seed"),
                                        **{k: options.get(k) for k in SAMPLING_OPTIONS}):
            info(note)
    if conditioner == "builtin":
        info(BUILTIN_NOTICE)
    return RefineSettings(
        out_dir=Path(options["output"]).expanduser(), formats=tuple(options["format"]), conditioner=conditioner,
        model=model_record_name(options.get("model")), model_card=card_digest(card) if refine else None, refine=refine,
        steps=run.steps, ensemble=run.ensemble,
        reduction=run.reduction, processing_res=run.processing_res, seed=int(options["seed"] or 0),
        batch_size=int(options["batch_size"]), overwrite=bool(options["overwrite"]),
        continue_on_error=bool(options["continue_on_error"]), preview_video=bool(options["preview_video"]),
        per_frame=bool(options.get("per_frame")), **tiles,
    )  # fmt: skip


def _check_uncertainty(card: dict, members: int, formats) -> None:
    """An uncertainty map is the spread of ensemble members: refused (UsageError) for the guided filter
    (one deterministic filter) and for a zero-noise model (the photo and its mirror image, at most two:
    resolve_settings) that runs one member."""
    if "uncertainty" not in formats:
        return
    if card.get("classical"):
        raise UsageError("`--format uncertainty`: the guided filter (--model guided) is one deterministic filter, "
                         "with no ensemble members to spread; the diffusion refiner (the default --model) writes one")
    if card.get("zero_noise") and members < 2:
        raise UsageError("`--format uncertainty`: this model is deterministic (zero-noise start, its card's "
                         "zero_noise) and runs one member here, so there is no spread; use --ensemble 2 "
                         "(the photo and its mirror image)")


def _tile_settings(spec) -> dict:
    """``--tile`` SIZE[:OVERLAP] / 0 as RefineSettings fields (absent: automatic, from the model card)."""
    if spec is None:
        return {}
    from betterdepth_cli.core.tiling import parse_tile

    try:
        size, overlap = parse_tile(str(spec))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return {"tile": size, "tile_overlap": overlap}


def _discover(options: dict[str, Any], continue_on_error: bool, error: Say) -> tuple[list, list[str]]:
    """Sources of every input spec; under --continue-on-error a bad spec is a failure, not the end."""
    from betterdepth_cli.io.inputs import discover

    frames = options.get("frames")
    kwargs = {"recursive": bool(options.get("recursive")), "extensions": options.get("ext") or None,
              "frames": str(frames) if frames is not None else None, "stdin": sys.stdin}
    if not continue_on_error:
        return discover(options["inputs"], **kwargs), []
    failures: list[str] = []

    def bad(exc: Exception) -> None:  # a bad spec (a line of a list or stdin too): reported, skipped
        error(str(exc))
        failures.append(str(exc))

    try:
        sources = discover(options["inputs"], on_error=bad, **kwargs)
    except NoInputError:
        if failures:
            raise InputDataError(f"no usable input ({len(failures)} failed)") from None
        raise
    return sources, failures


def _missing_frames(sources: list, allow: bool, continue_on_error: bool, info: Say, error: Say) -> list[str]:
    """Sequences with frames of ``--frames`` that do not exist: left out, failures, or the end of the job."""
    from betterdepth_cli.io.sources import format_frames

    failures: list[str] = []
    for source in sources:
        missing = getattr(source, "missing", None)
        if not missing:
            continue
        line = f"{source.where}: frames {format_frames(missing)} not found"
        if allow:
            info(f"warning: {line}, left out (--allow-missing)")
        elif continue_on_error:  # the run goes on; a farm sees exit 3, not success
            error(f"{line} (--allow-missing accepts a shot with gaps)")
            failures += [line] * len(missing)
        else:
            raise InputDataError(f"{line}; nothing was refined (--allow-missing refines the frames that exist)")
    return failures


def prepare(options: dict[str, Any], *, info: Say, error: Say) -> RefineJob | None:
    """Settings, inputs and the plan of outputs; nothing is written. ``None``: this shard has no input."""
    from betterdepth_cli.core.devices import parse_device, parse_dtype
    from betterdepth_cli.io.sources import parse_shard
    from betterdepth_cli.jobs.ranks import rank_info, take_share

    options = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    if isinstance(options["format"], str):
        options["format"] = [f.strip() for f in options["format"].split(",") if f.strip()]
    if not options.get("inputs"):
        raise UsageError("no INPUTS given (files, folders, globs, videos, @list.txt or -); see `betterdepth refine --help`")
    if not options.get("output"):
        raise UsageError("`-o/--output` is required (the folder the results go to)")
    device, dtype = parse_device(options.get("device")), parse_dtype(options.get("dtype"))
    settings = _settings(options, info)
    shard = parse_shard(options["shard"]) if options.get("shard") else None
    sources, failures = _discover(options, settings.continue_on_error, error)
    found, rank = len(sources), rank_info()  # under torchrun / accelerate launch: this rank's share
    if not any(getattr(s, "is_shot", False) for s in sources):
        from betterdepth_cli.core.settings import not_applied_note

        note = not_applied_note("no video or image sequence among the inputs",
                                **{k: options.get(k) for k in SHOT_OPTIONS})
        if note:
            info(note)
    sources = take_share(sources, shard, rank)
    failures += _missing_frames(sources, bool(options.get("allow_missing")), settings.continue_on_error, info, error)
    if not sources:
        where = " ".join(([f"shard {options['shard']}"] if shard else []) + ([f"rank {rank.rank}"] if rank else []))
        info(f"{where}: nothing to do ({found} input groups)")
        return None
    plan = plan_run(sources, settings)
    if plan.excluded:
        info(f"warning: left out {plan.excluded} input(s) inside the output folder {settings.out_dir}")
    return RefineJob(settings, plan, dict(options), device, dtype, shard, failures, rank)


def check_device(job: RefineJob) -> None:
    """Resolve the job's device (``auto``, this rank's GPU) and check that it and the dtype exist here:
    a dry run fails as the run would (exit 64)."""
    from betterdepth_cli.core.devices import check_dtype_for_device, resolve_device
    from betterdepth_cli.jobs.ranks import rank_device

    job.device = rank_device(resolve_device(job.device), job.device, job.rank)
    check_dtype_for_device(job.dtype, job.device)


def write_missing_previews(job: RefineJob, info: Say) -> int:
    """The preview mp4s of shots refined before (``plan.Group.preview_only``), from their saved frames."""
    import threading

    from betterdepth_cli.jobs.writers import OutputWriter

    if not any(g.preview_only for g in job.plan.groups):
        return 0
    written = OutputWriter(job.plan, job.settings, threading.Event(), info).write_missing_previews()
    info(f"{written} preview mp4(s) made from the shots' saved frames (nothing refined again)")
    return written


def fail_blocked(job: RefineJob, error: Say) -> Summary | None:
    """When every input to process would fail before it is read (its outputs exist from other
    settings, or files not ours are in the way): their failures, without loading a model or writing
    the run record (the record of the job that wrote those outputs stays). ``None`` otherwise."""
    todo = [it for g in job.plan.groups for it in g.todo]
    if not todo or any(it.blocked is None for it in todo):
        return None
    failures = [(it.label, it.blocked) for it in todo]
    for _, reason in failures if job.settings.continue_on_error else failures[:1]:
        error(reason)
    return Summary(total=job.plan.total, skipped=job.plan.skipped, failed=len(todo), failures=failures,
                   halted_by=None if job.settings.continue_on_error else failures[0][1])


def load_models(job: RefineJob, info: Say):
    """Check the output folder, resolve the device, load the conditioner and the refiner, and record how
    to rerun the job (``betterdepth-run.toml``). Returns (conditioner, model or None)."""
    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.devices import torch_dtype
    from betterdepth_cli.core.refiner import load_model

    s = job.settings
    check_output_dir(s.out_dir)
    check_device(job)
    info(f"loading {job.what} on {job.device} {job.dtype}")
    tdtype = torch_dtype(job.dtype)
    _quiet_hf()
    cond = get_conditioner(s.conditioner, device=job.device, dtype=tdtype)
    model = load_model(job.options.get("model"), device=job.device, dtype=tdtype) if s.refine else None
    _write_run_config(s.out_dir / run_config_name(job.shard, job.options.get("frames"), job.rank), job.run_config(),
                      job.device, job.dtype)  # the work starts
    return cond, model


def run_config_name(shard: tuple[int, int] | None, frames: str | None, rank) -> str:
    """The run record's file name: ``betterdepth-run.toml``, with the job's part of the work in it when
    it has one (``--frames`` chunk, ``--shard``, rank), so that jobs sharing one output folder each
    keep theirs: ``betterdepth-run.frames-1001-1100.shard-1-of-8.rank-0-of-2.toml``."""
    parts = [Path(RUN_CONFIG_NAME).stem]
    if frames:
        parts.append("frames-" + re.sub(r"[^0-9A-Za-z-]+", "_", str(frames)).strip("_"))
    if shard:
        parts.append(f"shard-{shard[0]}-of-{shard[1]}")
    if rank is not None:
        parts.append(f"rank-{rank.rank}-of-{rank.world}")
    return ".".join(parts) + ".toml"


def nothing_to_do(job: RefineJob) -> Summary:
    return Summary(total=job.plan.total, skipped=job.plan.skipped, failed=len(job.discover_failures))


def finish(job: RefineJob, summary: Summary, info: Say) -> int:
    """Count the failures found before the run and say how it ended; the exit status."""
    if job.plan.todo == 0:  # the summary of nothing_to_do counts them already
        info(summary.line())
        return EXIT_OK if not job.discover_failures else EXIT_PARTIAL
    summary.failed += len(job.discover_failures)
    info(summary.line())
    code = exit_code(summary, job.settings.continue_on_error)
    if code == EXIT_DATAERR and summary.halted_by and summary.processed + summary.failed < job.plan.todo:
        info("stopped at the first bad input (use --continue-on-error to go on past bad inputs)")
    return code


def _quiet_hf() -> None:
    """No download/loading progress bars from transformers/huggingface_hub (ours is on stderr)."""
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - both are dependencies
        pass


def _write_run_config(path: Path, values: dict, device: str, dtype: str) -> None:
    from datetime import datetime, timezone

    from betterdepth_cli import __version__
    from betterdepth_cli.io.config_files import dump_toml
    from betterdepth_cli.io.files import atomic_write_text

    header = (
        f"betterdepth {__version__} refine, {datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
        f"ran on {device} {dtype}\nrerun with: betterdepth refine --config {path.name}"
    )
    atomic_write_text(path, dump_toml(values, header=header))
