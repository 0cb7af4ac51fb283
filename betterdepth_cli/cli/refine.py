"""``betterdepth refine``: batch refinement of files, folders, lists, videos and sequences.

A thin command: it merges flags over ``--config`` over the model card's
defaults, finds the inputs (``io.inputs``), plans the outputs and hands them
to the batch engine (``betterdepth_cli.jobs``), rendering progress on stderr.

Exit codes: 0 all done; 3 some inputs failed under --continue-on-error;
64 usage error; 65 bad input (the first one halts the batch without
--continue-on-error) or every input failed; 66 no input found; 69 model or
conditioner not found; 70 a model failed while running; 73 output not writable;
130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from betterdepth_cli.cli.app import app, error_line, handle_errors, on_sigterm
from betterdepth_cli.jobs.refine_job import DEFAULT_OPTIONS
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
    "max_pixels": int, "allow_missing": bool, "per_frame": bool, "tile": (str, int),
}  # fmt: skip

#: Defaults that do not come from the model card.
BASE_DEFAULTS: dict[str, Any] = {**DEFAULT_OPTIONS, "format": ",".join(DEFAULT_OPTIONS["format"])}  # flags' text


class _Reporter:
    """Progress on stderr: a rich bar on a terminal, plain lines when piped, nothing with --quiet."""

    def __init__(self, quiet: bool, total: int):
        self.quiet = quiet
        self.said: set[str] = set()  # skip reasons already shown
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
        if status == "skipped" and message and message not in self.said:  # another run's: once per group
            self.said.add(message)
            self.info(message)
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


def _config_path_values(config: dict, config_file: Path) -> dict:
    """Relative ``inputs``, ``output``, ``model`` and ``file:`` conditioner folder of a config file are
    relative to the file's folder."""
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
    from betterdepth_cli.cli.options import config_relative_paths

    return config_relative_paths(out, config_file, ("output",))


def _usage(message: str):
    from betterdepth_cli.core.types import UsageError

    return UsageError(message)


from betterdepth_cli.core.exit_codes import EXIT_TERMINATED  # noqa: E402


EPILOG = (
    "Exit codes: 0 all done; 3 some inputs failed (--continue-on-error); 64 usage error; 65 bad input "
    "(or every input failed); 66 no input found; 69 model or conditioner not found; 70 a model failed while "
    "running; 73 output not writable; 130 interrupted; 143 terminated. Rerun the same command to resume."
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
    per_frame: Annotated[Optional[bool], typer.Option(
        "--per-frame", help="Refine the frames of videos and sequences independently (default: co-align each "
        "frame's conditioning to the shot first, so per-frame scale and shift jumps do not flicker).",
        show_default=False)] = None,
    tile: Annotated[Optional[str], typer.Option(
        "--tile", help="Refine large images in overlapping tiles of SIZE pixels guided by the whole frame: SIZE or "
        "SIZE:OVERLAP, 0 = never. Default: automatic above the model card's tile_above (its max_processing_res) "
        "at native resolution.", show_default=False)] = None,
    max_pixels: MaxPixelsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Refine depth for images, folders, videos and image sequences; write 16-bit PNG (+ sidecar), EXR, NPY, previews."""
    from betterdepth_cli.jobs import refine_job

    flags = {
        "inputs": list(inputs) if inputs else None, "output": str(output) if output else None,
        "conditioner": conditioner, "model": model, "steps": steps, "ensemble": ensemble, "reduction": reduction,
        "processing_res": processing_res, "seed": seed, "device": device, "dtype": dtype, "batch_size": batch_size,
        "no_refine": no_refine, "format": fmt, "overwrite": overwrite, "continue_on_error": continue_on_error,
        "shard": shard, "recursive": recursive, "ext": ext, "frames": frames, "preview_video": preview_video,
        "quiet": quiet or None, "max_pixels": max_pixels, "allow_missing": allow_missing, "per_frame": per_frame,
        "tile": tile,
    }  # fmt: skip
    options = _options(flags, config)
    report = _Reporter(bool(options["quiet"]), 0)
    job = refine_job.prepare(options, info=report.info, error=report.error)
    if job is None:  # a shard with no input
        raise typer.Exit(0)
    if dry_run:
        refine_job.check_device(job)  # a device or dtype this machine lacks fails the dry run as the run
        for line in job.plan.describe():
            print(line)
        report.info(f"dry run: {job.summary_line}; {job.what}; nothing written")
        raise typer.Exit(0)
    raise typer.Exit(_run(job, report))


def _options(flags: dict[str, Any], config: Path | None) -> dict[str, Any]:
    """Flags over the ``--config`` file over the defaults, with the lists parsed."""
    from betterdepth_cli.cli import options as o

    cfg = _config_path_values(o.load_config(config, CONFIG_SCHEMA, section="refine"), config) if config else {}
    merged = o.merge_options(flags, cfg, BASE_DEFAULTS)
    o.apply_pixel_limit(merged.get("max_pixels"))
    merged["format"] = o.split_list(merged["format"], "format")
    merged["ext"] = o.split_list(merged.get("ext"), "ext") or None
    return merged


def _run(job, report: _Reporter) -> int:
    """Load the models, run the job with progress on stderr, and return its exit status."""
    from betterdepth_cli.core.exit_codes import EXIT_INTERRUPTED
    from betterdepth_cli.jobs import Runner, refine_job

    from betterdepth_cli.cli import ranks

    report.info(f"refine: {job.summary_line}")
    if job.plan.todo == 0:
        if not refine_job.write_missing_previews(job, report.info):
            report.info("nothing to do: every output exists (use --overwrite to redo them)")
        done = refine_job.nothing_to_do(job)
        ranks.record(done, job.settings.continue_on_error)
        return refine_job.finish(job, done, report.info)
    failed = refine_job.fail_blocked(job, report.error)  # every input would fail: no model loaded, no record
    if failed is not None:
        ranks.record(failed, job.settings.continue_on_error)
        return refine_job.finish(job, failed, report.info)
    cond, model = refine_job.load_models(job, report.info)
    report.total = job.plan.todo
    runner = Runner(job.plan, job.settings, cond, model, on_item=report.item, log=report.info)
    terminated: list = []
    try:
        with report, on_sigterm(terminated):
            runner.run()
    except KeyboardInterrupt:
        report.info(runner.summary.line())
        error_line(f"{'terminated' if terminated else 'interrupted'}; rerun the same command to resume")
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    code = refine_job.finish(job, runner.summary, report.info)
    ranks.record(runner.summary, job.settings.continue_on_error)
    return code
