"""``betterdepth refine``: batch refinement of files, folders, lists, videos and sequences.

A thin command: it merges flags over ``--config`` over the model card's
defaults, finds the inputs (``io.inputs``), plans the outputs and hands them
to the batch engine (``betterdepth_cli.batch``), rendering progress on stderr.

Exit codes: 0 all done; 3 some inputs failed under --continue-on-error;
64 usage error; 65 bad input (the first one halts the batch without
--continue-on-error) or every input failed; 66 no input found; 69 model not
found; 73 output not writable; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from betterdepth_cli.cli.app import app, error_line, handle_errors
from betterdepth_cli.cli.ranks import ranked
from betterdepth_cli.cli.options import (
    BatchSizeOpt,
    ConditionerOpt,
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    EnsembleOpt,
    MaxPixelsOpt,
    ModelOpt,
    NoRefineOpt,
    ProcessingResOpt,
    QuietOpt,
    ReductionOpt,
    SeedOpt,
    StepsOpt,
)

#: ``--config`` keys (long flag names) and their TOML types.
CONFIG_SCHEMA: dict[str, Any] = {
    "inputs": (list, str), "output": str, "conditioner": str, "model": str, "steps": int, "ensemble": int,
    "reduction": str, "processing_res": int, "seed": int, "device": str, "dtype": str, "batch_size": int,
    "no_refine": bool, "format": (list, str), "overwrite": bool, "continue_on_error": bool, "shard": str,
    "recursive": bool, "ext": (list, str), "frames": (str, int), "preview_video": bool, "quiet": bool,
    "max_pixels": int, "allow_missing": bool, "tile": (str, int),
}  # fmt: skip

#: Defaults that do not come from the model card.
BASE_DEFAULTS: dict[str, Any] = {
    "seed": 0, "device": "auto", "dtype": "fp32", "batch_size": 1, "no_refine": False, "format": "png16",
    "overwrite": False, "continue_on_error": False, "recursive": False, "preview_video": False, "quiet": False,
}  # fmt: skip


class _Reporter:
    """Progress on stderr: a rich bar on a terminal, plain lines when piped, nothing with --quiet."""

    def __init__(self, quiet: bool, total: int):
        self.quiet = quiet
        self._total = total
        self.done = 0
        self.t0 = time.perf_counter()
        self.last_line = 0.0
        self.progress = None
        self.console = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)  # fmt: skip

            self.console = Console(stderr=True)
            self.progress = Progress(
                TextColumn("refine"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=False,
            )  # fmt: skip
            self.task = self.progress.add_task("refine", total=total, rate="")

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        """The number of images to process, known once the run is planned (the bar's total follows)."""
        self._total = int(value)
        if self.progress is not None:
            self.progress.update(self.task, total=self._total)

    def __enter__(self):
        self.t0 = time.perf_counter()
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()

    def info(self, message: str) -> None:
        if self.quiet:
            return
        if self.console is not None:
            self.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        if self.console is not None:
            self.console.print(f"betterdepth: error: {message}", markup=False, highlight=False, style="red")
        else:
            error_line(message)

    def item(self, status: str, item, message: str | None) -> None:
        self.done += 1
        if status == "failed":
            self.error(message or item.label)
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done, rate=f"{rate:.2f} img/s")
            return
        now = time.perf_counter()
        if now - self.last_line >= 2.0 or self.done == self.total:
            self.last_line = now
            pct = 100.0 * self.done / self.total if self.total else 100.0
            left = max(self.total - self.done, 0) / rate if rate > 0 else 0.0
            eta = f"eta {int(left // 3600)}:{int(left % 3600 // 60):02d}:{int(left % 60):02d}"
            print(f"refine: {self.done}/{self.total} ({pct:.0f}%) {rate:.2f} images/s, {eta}, {item.label}",
                  file=sys.stderr, flush=True)  # fmt: skip


#: Said once per run when the offline conditioner runs: what a user will see on real photos.
BUILTIN_NOTICE = ("note: the builtin conditioner is a small offline model trained on synthetic scenes; on real "
                  "photos it gives little more than a near-to-far ramp. For real work use "
                  "--conditioner depth-anything-v2-large (downloaded once, then offline).")


def _deterministic_model_notes(card: dict, merged: dict, formats: list[str], report: "_Reporter") -> None:
    """A model that starts from zero noise (its card's ``zero_noise``) samples one result whatever the
    seed: ensembling would repeat it N times at N times the cost. Say so once and run one member;
    an uncertainty map (the members' spread, all zeros) is refused."""
    from betterdepth_cli.core.types import UsageError

    if not card.get("zero_noise"):
        return
    if "uncertainty" in formats:
        raise UsageError("`--format uncertainty`: this model is deterministic (zero-noise start, its card's "
                         "zero_noise), so ensemble members are identical and their spread is zero; drop uncertainty")
    if int(merged["ensemble"]) > 1:
        report.info(f"note: this model is deterministic (zero-noise start): --ensemble {merged['ensemble']} would "
                    "repeat one result; running one member (--seed has no effect either)")
        merged["ensemble"] = 1


def _config_path_values(config: dict, config_file: Path) -> dict:
    """Relative ``inputs``/``output`` of a config file are relative to the file's folder."""
    base = config_file.expanduser().resolve().parent
    out = dict(config)
    if "inputs" in out:
        items = out["inputs"] if isinstance(out["inputs"], list) else [out["inputs"]]
        fixed = []
        for spec in items:
            if not isinstance(spec, str):
                raise _usage(f"--config {config_file}: `inputs` must be a list of strings")
            if spec == "-" or Path(spec).expanduser().is_absolute():
                fixed.append(spec)
            elif spec.startswith("@"):
                fixed.append("@" + str(base / spec[1:]))
            else:
                fixed.append(str(base / spec))
        out["inputs"] = fixed
    if "output" in out and not Path(out["output"]).expanduser().is_absolute():
        out["output"] = str(base / out["output"])
    return out


def _usage(message: str):
    from betterdepth_cli.core.types import UsageError

    return UsageError(message)


def _discover(inputs: list[str], opts: dict, continue_on_error: bool, report: _Reporter) -> tuple[list, list[str]]:
    """Sources of every input spec; under --continue-on-error a bad spec is a failure, not the end."""
    from betterdepth_cli.core.types import InputDataError, NoInputError
    from betterdepth_cli.io.inputs import discover

    kwargs = {"recursive": opts["recursive"], "extensions": opts["ext"], "frames": opts["frames"], "stdin": sys.stdin}
    if not continue_on_error:
        return discover(inputs, **kwargs), []
    failures: list[str] = []

    def bad(exc: Exception) -> None:  # a bad spec (a line of a list or stdin too): reported, skipped
        report.error(str(exc))
        failures.append(str(exc))

    try:
        sources = discover(inputs, on_error=bad, **kwargs)
    except NoInputError:
        if failures:
            raise InputDataError(f"no usable input ({len(failures)} failed)") from None
        raise
    return sources, failures


def _tile_settings(spec) -> dict:
    """``--tile`` SIZE[:OVERLAP] / 0 as RefineSettings fields (absent: automatic, from the model card)."""
    if spec is None:
        return {}
    from betterdepth_cli.core.tiling import parse_tile

    try:
        size, overlap = parse_tile(str(spec))
    except ValueError as exc:
        raise _usage(str(exc)) from None
    return {"tile": size, "tile_overlap": overlap}


EXIT_TERMINATED = 143  # 128 + SIGTERM, what a farm scheduler sees after preempting a job


@contextlib.contextmanager
def _on_sigterm(flag: list):
    """Turn SIGTERM (farm preemption) into the same clean stop as Ctrl-C while the batch runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        flag.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    from betterdepth_cli.cli.options import dump_toml
    from betterdepth_cli.io.outputs import atomic_write_text

    header = (
        f"betterdepth {__version__} refine, {datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
        f"ran on {device} {dtype}\nrerun with: betterdepth refine --config {path.name}"
    )
    atomic_write_text(path, dump_toml(values, header=header))


EPILOG = (
    "Exit codes: 0 all done; 3 some inputs failed (--continue-on-error); 64 usage error; 65 bad input "
    "(or every input failed); 66 no input found; 69 model not found; 73 output not writable; "
    "130 interrupted; 143 terminated. Rerun the same command to resume."
)


@app.command(epilog=EPILOG)
@handle_errors
@ranked
def refine(
    inputs: Annotated[
        Optional[list[str]],
        typer.Argument(help="Images, folders, globs, videos, shot.%04d.png sequences, @list.txt, or - (paths on stdin).",
                       show_default=False),
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output folder (mirrors the input tree).",
                                                   show_default=False)] = None,
    conditioner: ConditionerOpt = None,
    model: ModelOpt = None,
    steps: StepsOpt = None,
    ensemble: EnsembleOpt = None,
    reduction: ReductionOpt = None,
    processing_res: ProcessingResOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    batch_size: BatchSizeOpt = None,
    no_refine: NoRefineOpt = None,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="Comma-separated outputs: png16 (16-bit PNG + JSON sidecar), "
                                               "exr, npy, preview, uncertainty. Default: png16.", show_default=False)] = None,
    config: ConfigOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would be read and written; write nothing.")] = False,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help="Redo outputs that exist (default: skip them, so a rerun resumes).",
                                                      show_default=False)] = None,
    continue_on_error: Annotated[Optional[bool], typer.Option("--continue-on-error", help="Go on past bad inputs (exit code 3 if some failed).",
                                                              show_default=False)] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="Process shard i/n of the inputs (farm jobs; shots stay whole).",
                                                 show_default=False)] = None,
    recursive: Annotated[Optional[bool], typer.Option("--recursive", "-r", help="Search folders recursively.", show_default=False)] = None,
    ext: Annotated[Optional[str], typer.Option("--ext", help="Extensions to take from folders, e.g. jpg,png (add mp4 for videos).",
                                               show_default=False)] = None,
    frames: Annotated[Optional[str], typer.Option("--frames", help="Frames of sequences/videos, e.g. 1001-1100, 1001-1100x2, 1,5,9.",
                                                  show_default=False)] = None,
    preview_video: Annotated[Optional[bool], typer.Option("--preview-video", help="Also write an mp4 preview per video or sequence.",
                                                          show_default=False)] = None,
    allow_missing: Annotated[Optional[bool], typer.Option(
        "--allow-missing", help="Refine the frames of --frames that exist when some are missing (default: exit 65, "
        "or 3 with --continue-on-error).", show_default=False)] = None,
    max_pixels: MaxPixelsOpt = None,
    tile: Annotated[Optional[str], typer.Option(
        "--tile", help="Refine large images in overlapping tiles of SIZE pixels guided by the whole frame: SIZE or "
        "SIZE:OVERLAP, 0 = never. Default: automatic above the model card's tile_above (its max_processing_res) "
        "at native resolution.", show_default=False)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Refine depth for images, folders, videos and image sequences; write 16-bit PNG (+ sidecar), EXR, NPY, previews."""
    from betterdepth_cli import batch
    from betterdepth_cli.cli import options as o
    from betterdepth_cli.core.types import UsageError

    flags = {
        "inputs": list(inputs) if inputs else None, "output": str(output) if output else None,
        "conditioner": conditioner, "model": model, "steps": steps, "ensemble": ensemble, "reduction": reduction,
        "processing_res": processing_res, "seed": seed, "device": device, "dtype": dtype, "batch_size": batch_size,
        "no_refine": no_refine, "format": fmt, "overwrite": overwrite, "continue_on_error": continue_on_error,
        "shard": shard, "recursive": recursive, "ext": ext, "frames": frames, "preview_video": preview_video,
        "quiet": quiet or None, "max_pixels": max_pixels, "allow_missing": allow_missing, "tile": tile,
    }  # fmt: skip
    cfg = {}
    if config is not None:
        cfg = _config_path_values(o.load_config(config, CONFIG_SCHEMA, section="refine"), config)
    merged = o.merge_options(flags, cfg, BASE_DEFAULTS)
    o.apply_pixel_limit(merged.get("max_pixels"))
    if not merged.get("inputs"):
        raise UsageError("no INPUTS given (files, folders, globs, videos, @list.txt or -); see `betterdepth refine --help`")
    if not merged.get("output"):
        raise UsageError("`-o/--output` is required (the folder the results go to)")
    out_dir = Path(merged["output"]).expanduser()
    formats = o.split_list(merged["format"], "format")
    exts = o.split_list(merged.get("ext"), "ext") or None
    frame_spec = merged.get("frames")
    frame_spec = str(frame_spec) if frame_spec is not None else None
    shard_spec = merged.get("shard")
    refine_on = not merged["no_refine"]
    device_req = o.parse_device(merged["device"])
    dtype_name = o.parse_dtype(merged["dtype"])

    # defaults from the model card (steps, ensemble, resolution, conditioner)
    card = batch.read_card(merged.get("model")) or {}
    card_defaults = card.get("defaults", {}) if isinstance(card.get("defaults"), dict) else {}
    from betterdepth_cli.core.refiner import DEFAULTS as CORE_DEFAULTS

    defaults = {**CORE_DEFAULTS, **card_defaults}
    for key in ("conditioner", "steps", "ensemble", "reduction", "processing_res"):
        if merged.get(key) is None:
            merged[key] = defaults[key]
    model_name = merged.get("model") or "default"
    from betterdepth_cli.core.conditioners import check_conditioner_name

    check_conditioner_name(merged["conditioner"])  # a misspelt name fails now, not after discovery and setup

    report = _Reporter(bool(merged["quiet"]), 0)
    if refine_on:
        _deterministic_model_notes(card, merged, formats, report)
    if merged["conditioner"] == "builtin" and not merged["quiet"]:
        report.info(BUILTIN_NOTICE)
    settings = batch.RefineSettings(
        out_dir=out_dir, formats=tuple(formats), conditioner=merged["conditioner"], model=model_name,
        refine=refine_on, steps=int(merged["steps"]), ensemble=int(merged["ensemble"]),
        reduction=str(merged["reduction"]), processing_res=int(merged["processing_res"]), seed=int(merged["seed"]),
        batch_size=int(merged["batch_size"]), overwrite=bool(merged["overwrite"]),
        continue_on_error=bool(merged["continue_on_error"]), preview_video=bool(merged["preview_video"]),
        **_tile_settings(merged.get("tile")),
    )  # fmt: skip

    from betterdepth_cli.cli import ranks
    from betterdepth_cli.io.inputs import parse_shard

    shard_ij = parse_shard(shard_spec) if shard_spec else None
    rank = ranks.rank_info()  # under torchrun / accelerate launch: this rank's share, no flag needed
    sources, discover_failures = _discover(
        merged["inputs"], {"recursive": bool(merged["recursive"]), "ext": exts, "frames": frame_spec},
        settings.continue_on_error, report,
    )  # fmt: skip
    n_found = len(sources)
    sources = ranks.split_shard(shard_ij, rank)(sources)
    for source in sources:
        missing = getattr(source, "missing", None)
        if missing:
            from betterdepth_cli.core.types import InputDataError
            from betterdepth_cli.io.inputs import format_frames

            line = f"{source.group}: frames {format_frames(missing)} not found"
            if merged.get("allow_missing"):
                report.info(f"warning: {line}, left out (--allow-missing)")
            elif settings.continue_on_error:  # the run goes on; a farm sees exit 3, not success
                report.error(f"{line} (--allow-missing accepts a shot with gaps)")
                discover_failures += [line] * len(missing)
            else:
                raise InputDataError(f"{line}; nothing was refined (--allow-missing refines the frames that exist)")
    if not sources:
        where = " ".join(([f"shard {shard_spec}"] if shard_ij else []) + ([f"rank {rank.rank}"] if rank else []))
        report.info(f"{where}: nothing to do ({n_found} input groups)")
        raise typer.Exit(0)
    plan = batch.plan_run(sources, settings)
    if plan.excluded:
        report.info(f"warning: left out {plan.excluded} input(s) inside the output folder {out_dir}")

    resolved = {
        "inputs": [s if s == "-" else (s if s.startswith("@") else str(Path(s).expanduser().absolute()))
                   for s in merged["inputs"]],
        "output": str(out_dir.absolute()), "conditioner": settings.conditioner, "model": merged.get("model"),
        "steps": settings.steps, "ensemble": settings.ensemble, "reduction": settings.reduction,
        "processing_res": settings.processing_res, "seed": settings.seed, "device": device_req, "dtype": dtype_name,
        "batch_size": settings.batch_size, "no_refine": not refine_on, "format": list(settings.formats),
        "overwrite": settings.overwrite, "continue_on_error": settings.continue_on_error, "shard": shard_spec,
        "recursive": bool(merged["recursive"]), "ext": exts, "frames": frame_spec,
        "preview_video": settings.preview_video, "tile": merged.get("tile"),
    }  # fmt: skip
    what = (f"{settings.conditioner} refined by {model_name} (steps {settings.steps}, ensemble {settings.ensemble}, "
            f"processing-res {settings.processing_res or 'native'}, seed {settings.seed})"
            if refine_on else f"{settings.conditioner} only (--no-refine)")  # fmt: skip
    shots = sum(1 for g in plan.groups if g.is_shot)
    summary_line = (f"{plan.total} input(s) ({shots} shot(s)), {plan.todo} to process, {plan.skipped} existing "
                    f"to skip -> {out_dir}")  # fmt: skip

    if dry_run:
        for line in plan.describe():
            print(line)
        report.info(f"dry run: {summary_line}; {what}; nothing written")
        raise typer.Exit(0)

    batch.check_output_dir(out_dir)
    device_name = ranks.rank_device(o.resolve_device(device_req), device_req, rank)
    o.check_dtype_for_device(dtype_name, device_name)
    run_config = out_dir / (batch.RUN_CONFIG_NAME if not shard_ij else
                            f"betterdepth-run.shard-{shard_ij[0]}-of-{shard_ij[1]}.toml")  # fmt: skip
    if rank is not None:
        run_config = run_config.with_name(f"{run_config.stem}.rank-{rank.rank}-of-{rank.world}.toml")
    report.info(f"refine: {summary_line}")
    if plan.todo == 0:
        report.info("nothing to do: every output exists (use --overwrite to redo them)")
        done = batch.Summary(total=plan.total, skipped=plan.skipped, failed=len(discover_failures))
        report.info(done.line())
        ranks.record(done, settings.continue_on_error)
        raise typer.Exit(batch.EXIT_OK if not discover_failures else batch.EXIT_PARTIAL)

    report.info(f"loading {what} on {device_name} {dtype_name}")
    from betterdepth_cli.core.conditioners import get_conditioner
    from betterdepth_cli.core.refiner import load_model

    tdtype = o.torch_dtype(dtype_name)
    _quiet_hf()
    cond = get_conditioner(settings.conditioner, device=device_name, dtype=tdtype)
    mdl = load_model(merged.get("model"), device=device_name, dtype=tdtype) if refine_on else None
    _write_run_config(run_config, resolved, device_name, dtype_name)  # the work starts: record how to rerun it

    report.total = plan.todo
    runner = batch.Runner(plan, settings, cond, mdl, on_item=report.item, log=report.info)
    summary = runner.summary
    terminated = []
    try:
        with report, _on_sigterm(terminated):
            runner.run()
    except KeyboardInterrupt:
        report.info(summary.line())
        error_line(f"{'terminated' if terminated else 'interrupted'}; rerun the same command to resume")
        raise typer.Exit(EXIT_TERMINATED if terminated else batch.EXIT_INTERRUPTED) from None
    summary.failed += len(discover_failures)
    report.info(summary.line())
    ranks.record(summary, settings.continue_on_error)
    code = batch.exit_code(summary, settings.continue_on_error)
    if code == batch.EXIT_DATAERR and summary.halted_by and summary.processed + summary.failed < plan.todo:
        report.info("stopped at the first bad input (use --continue-on-error to go on past bad inputs)")
    raise typer.Exit(code)
