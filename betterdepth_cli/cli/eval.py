"""`betterdepth eval`: the zero-shot benchmark protocol on a public dataset or your own folder."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from betterdepth_cli.cli.app import app, handle_errors, stopping_cleanly
from betterdepth_cli.cli.ranks import defer, ranked
from betterdepth_cli.cli.options import (
    BatchSizeOpt,
    ConditionerOpt,
    ConfigOpt,
    DeviceOpt,
    DtypeOpt,
    EnsembleOpt,
    ModelOpt,
    NoRefineOpt,
    ProcessingResOpt,
    QuietOpt,
    ReductionOpt,
    SeedOpt,
    StepsOpt,
)

DATASET_NAMES = "nyuv2, kitti, eth3d, scannet, diode, middlebury, folder; sequences (temporal metrics): synth-seq, tum"

# --config keys (long flag names) and their types
CONFIG_SCHEMA: dict[str, type | tuple] = {
    "dataset": str, "data_root": str, "split_file": str, "limit": int, "dataset_option": list,
    "conditioner": str, "model": str, "no_refine": bool, "compare": bool, "steps": int, "ensemble": int,
    "reduction": str, "processing_res": int, "seed": int, "device": str, "dtype": str, "batch_size": int,
    "alignment": str, "metrics": (str, list), "edge_threshold": (int, float), "edge_tolerance": (int, float),
    "canny_sigma": (int, float), "canny_low": (int, float), "canny_high": (int, float),
    "dbe_max_dist": (int, float), "save_predictions": str, "output": str, "csv": str, "score_workers": int,
    "continue_on_error": bool,
}


def _parse_dataset_options(items: list[str]) -> dict[str, object]:
    from betterdepth_cli.core.types import UsageError

    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"`--dataset-option` must be KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def default_csv_path(output: Path) -> Path:
    """``results.json`` -> ``results_per_sample.csv`` beside it."""
    return output.with_name(output.stem + "_per_sample.csv")


def _fmt_metric(name: str, value: float) -> str:
    from betterdepth_cli.evaluation.metrics import PERCENT_METRICS

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if name in PERCENT_METRICS:
        return f"{100 * value:.2f}"
    return f"{value:.2f}" if name.startswith("dbe") else f"{value:.4f}"


def fmt_change(name: str, delta: float) -> str:
    """A change of a metric with its sign, at the precision its column shows (percent metrics in points)."""
    if delta is None or math.isnan(delta):
        return "n/a"
    return ("-" if delta < 0 else "+") + _fmt_metric(name, abs(delta))


def _label(name: str) -> str:
    from betterdepth_cli.evaluation.metrics import HIGHER_IS_BETTER, PERCENT_METRICS

    unit = " %" if name in PERCENT_METRICS else " px" if name.startswith("dbe") else ""
    arrow = "↑" if name in HIGHER_IS_BETTER else "↓"
    return f"{name}{unit} {arrow}"


def render_table(result, console) -> None:
    """The means per metric (and, with --compare, the improvement) as a rich table."""
    from rich.table import Table

    ds = result.dataset
    title = f"{ds['name']}: {ds['samples']} samples, conditioner {result.conditioner['spec']}"
    if result.model is not None:
        title += f", refiner {result.model.get('source')}"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for variant in result.variants:
        table.add_column(variant, justify="right")
    imp = result.improvement()
    if imp:
        table.add_column("change", justify="right")
        table.add_column("better by", justify="right")
    for name in result.config.metrics:
        cells = [_label(name)] + [_fmt_metric(name, result.means[v][name]) for v in result.variants]
        if imp:
            d, rel = imp[name]["delta"], imp[name]["relative"]
            style = "green" if rel > 0 else "red" if rel < 0 else ""
            cells.append(fmt_change(name, d))
            cells.append("n/a" if math.isnan(rel) else f"[{style}]{100 * rel:+.1f} %[/{style}]" if style else f"{100 * rel:+.1f} %")
        table.add_row(*cells)
    console.print(table)
    spi = result.seconds_per_image
    stages = ", ".join(f"{k} {spi[k]:.3f}" for k in ("load", "conditioner", "encode", "sample", "decode", "score"))
    console.print(f"seconds per image: {stages} (waited for {spi['score_wait']:.3f}); total {spi['total']:.3f}")
    skipped = {
        n: result.counts[v][n]
        for v in result.variants
        for n in result.config.metrics
        if result.counts[v][n] < ds["samples"]
    }
    if skipped:
        console.print(
            "n/a or fewer images for: "
            + ", ".join(f"{n} ({c}/{ds['samples']})" for n, c in skipped.items())
            + " (no ground-truth edges or no valid pixels)"
        )


def _opt(flag: str, help: str, *names: str, kind=Optional[str], **kw):
    return Annotated[kind, typer.Option(flag, *names, help=help, show_default=False, **kw)]


DatasetOpt = _opt("--dataset", f"Dataset loader: {DATASET_NAMES}.", "-d")
DataRootOpt = _opt("--data-root", "Dataset folder or .tar archive (e.g. Marigold's evaluation packs).", kind=Optional[Path])
SplitFileOpt = _opt("--split-file", "Sample list: one 'rgb gt [...]' line per sample, paths relative to the data root "
                    "(Marigold's data_split/*.txt). Default: every sample found.", kind=Optional[Path])
LimitOpt = _opt("--limit", "Only the first N samples (those skipped by --continue-on-error included).",
                kind=Optional[int], min=1)
DatasetOptionOpt = _opt("--dataset-option", "Loader option KEY=VALUE, repeatable: kitti crop=eigen|garg|none, "
                        "kb_crop=true|false; nyuv2 eigen_crop=true|false; diode subset=all|indoor|outdoor.",
                        kind=Optional[list[str]])
CompareOpt = _opt("--compare", "Score the conditioner, its guided filter (the classical baseline) and the refined "
                  "output from one pass and print the improvement (the paper's Table 3).", kind=Optional[bool])
AlignmentOpt = _opt("--alignment", "auto: least-squares scale and shift in the prediction's space (disparity or depth); "
                    "none: metric predictions as they are. Default auto.")
MetricsOpt = _opt("--metrics", "Comma-separated metrics (default all): abs_rel, sq_rel, rmse, rmse_log, delta1, delta2, "
                  "delta3, dbe_comp, dbe_acc, ep, er, edge_f1.")
EdgeThresholdOpt = _opt("--edge-threshold", "EP/ER: Sobel magnitude threshold on the inverse depth normalised by the "
                        "GT's range (default 0.1).", kind=Optional[float])
EdgeToleranceOpt = _opt("--edge-tolerance", "EP/ER: match distance in pixels (default 0: the same pixel).",
                        kind=Optional[float])
CannySigmaOpt = _opt("--canny-sigma", "DBE: Canny sigma (default sqrt(2)).", kind=Optional[float])
CannyLowOpt = _opt("--canny-low", "DBE: Canny low threshold (default 0.15).", kind=Optional[float])
CannyHighOpt = _opt("--canny-high", "DBE: Canny high threshold (default 0.3).", kind=Optional[float])
DbeMaxDistOpt = _opt("--dbe-max-dist", "DBE: distance truncation in pixels (default 10).", kind=Optional[float])
SavePredictionsOpt = _opt("--save-predictions", "Write the raw predictions (float32 NPY at image size, before "
                          "alignment, and the 16-bit PNG + sidecar refine writes) to DIR/<variant>/<sample id>.",
                          kind=Optional[Path])
OutputOpt = _opt("--output", "Write the results (config, versions, means, seconds per image by stage) to this JSON "
                 "file (an existing file is replaced only if it is an earlier eval result).", "-o",
                 kind=Optional[Path])
CsvOpt = _opt("--csv", "Per-sample metrics CSV (default with --output: <output stem>_per_sample.csv).",
              kind=Optional[Path])
ScoreWorkersOpt = _opt("--score-workers", "1: score on a worker thread while the next images infer; 0: score inline. "
                       "Default: the thread, except on a CPU of <= 2 cores that torch already fills.", kind=Optional[int])
ContinueOpt = _opt("--continue-on-error", "Skip samples that miss a file or whose file is unusable (unreadable, a "
                   "file: map missing or without a valid pixel): warned, counted in the results, exit 3; instead of "
                   "exit 65.", kind=Optional[bool])


@app.command("eval")
@handle_errors
@ranked
def eval_command(
    dataset: DatasetOpt = None, data_root: DataRootOpt = None, split_file: SplitFileOpt = None, limit: LimitOpt = None,
    dataset_option: DatasetOptionOpt = None, conditioner: ConditionerOpt = None, model: ModelOpt = None,
    no_refine: NoRefineOpt = None, compare: CompareOpt = None, steps: StepsOpt = None, ensemble: EnsembleOpt = None,
    reduction: ReductionOpt = None, processing_res: ProcessingResOpt = None, seed: SeedOpt = None,
    device: DeviceOpt = None, dtype: DtypeOpt = None, batch_size: BatchSizeOpt = None, alignment: AlignmentOpt = None,
    metrics: MetricsOpt = None, edge_threshold: EdgeThresholdOpt = None, edge_tolerance: EdgeToleranceOpt = None,
    canny_sigma: CannySigmaOpt = None, canny_low: CannyLowOpt = None, canny_high: CannyHighOpt = None,
    dbe_max_dist: DbeMaxDistOpt = None, save_predictions: SavePredictionsOpt = None, output: OutputOpt = None,
    csv_path: CsvOpt = None, score_workers: ScoreWorkersOpt = None, continue_on_error: ContinueOpt = None,
    config: ConfigOpt = None, quiet: QuietOpt = False,
) -> None:
    """Evaluate depth on a benchmark with the zero-shot protocol (Marigold's, as in the paper).

    Each image's prediction is aligned to the ground truth by least-squares scale
    and shift (in disparity space for disparity models), clipped to the dataset's
    depth range and scored; metrics are averaged over images. Prints a table;
    --output writes JSON and a per-sample CSV.
    """
    flags = {
        "dataset": dataset, "data_root": data_root, "split_file": split_file, "limit": limit,
        "dataset_option": dataset_option or None, "conditioner": conditioner, "model": model,
        "no_refine": no_refine, "compare": compare, "steps": steps, "ensemble": ensemble, "reduction": reduction,
        "processing_res": processing_res, "seed": seed, "device": device, "dtype": dtype, "batch_size": batch_size,
        "alignment": alignment, "metrics": metrics, "edge_threshold": edge_threshold,
        "edge_tolerance": edge_tolerance, "canny_sigma": canny_sigma, "canny_low": canny_low,
        "canny_high": canny_high, "dbe_max_dist": dbe_max_dist, "save_predictions": save_predictions,
        "output": output, "csv": csv_path, "score_workers": score_workers, "continue_on_error": continue_on_error,
    }  # fmt: skip
    o = _options(flags, config)
    stopping_cleanly(_evaluate, o, bool(quiet))


def _evaluate(o: dict, quiet: bool) -> None:
    from betterdepth_cli.evaluation.runner import run_evaluation

    if _is_sequence_dataset(o["dataset"]):  # clips: TAE, flicker, clip-aligned AbsRel (cli/eval_temporal.py)
        return _eval_sequences(o, quiet)
    ev = _eval_config(o)
    out_json, out_csv = _output_files(o)
    result = run_evaluation(ev, progress=_progress_printer(quiet))
    if ev.shard is not None:  # a rank of a multi-process launch: rank 0 writes and prints the merged result
        from betterdepth_cli.evaluation.merge import merge_results

        defer(result, lambda results: _report(merge_results(results), out_json, out_csv, quiet))
        return
    _report(result, out_json, out_csv, quiet)


def _options(flags: dict, config: Path | None) -> dict:
    """Flags over the ``--config`` file over the defaults, with the combinations checked."""
    from betterdepth_cli.cli.options import load_config, merge_options
    from betterdepth_cli.core.types import UsageError
    from betterdepth_cli.evaluation import metrics as M

    cfg = load_config(config, CONFIG_SCHEMA, section="eval") if config else {}
    if config:  # relative paths in the file are relative to it
        from betterdepth_cli.cli.options import config_relative_paths

        cfg = config_relative_paths(cfg, config, ("data_root", "split_file", "save_predictions", "output", "csv"))
    defaults = {
        "no_refine": False, "compare": False, "seed": None, "device": "auto", "dtype": "fp32", "batch_size": 1,
        "alignment": "auto", "metrics": list(M.ALL_METRICS), "edge_threshold": M.EDGE_THRESHOLD,
        "edge_tolerance": M.EDGE_TOLERANCE, "canny_sigma": M.CANNY_SIGMA, "canny_low": M.CANNY_LOW,
        "canny_high": M.CANNY_HIGH, "dbe_max_dist": M.DBE_MAX_DIST,
    }  # fmt: skip
    o = merge_options(flags, cfg, defaults)
    if not o.get("dataset"):
        raise UsageError(f"`--dataset` is required ({DATASET_NAMES})")
    if not o.get("data_root"):
        raise UsageError("`--data-root` is required: the dataset folder or .tar archive")
    if o["no_refine"] and o["compare"]:
        raise UsageError("`--compare` scores the conditioner and the refined output: drop --no-refine")
    if o["no_refine"] and o.get("model"):
        raise UsageError("`--model` and `--no-refine` exclude each other")
    return o


def _is_sequence_dataset(name: str) -> bool:
    from betterdepth_cli.evaluation.sequences import SEQUENCE_DATASETS

    return name in SEQUENCE_DATASETS


def _device_and_dtype(o: dict, rank=None) -> tuple[str, str]:
    """``--device`` resolved on this machine (a rank's own GPU under a multi-process launch) and
    ``--dtype``, checked together."""
    from betterdepth_cli.cli.options import check_dtype_for_device, parse_device, parse_dtype, resolve_device
    from betterdepth_cli.jobs.ranks import rank_device

    dev, dt = rank_device(resolve_device(o["device"]), parse_device(o["device"]), rank), parse_dtype(o["dtype"])
    check_dtype_for_device(dt, dev)
    return dev, dt


def _eval_sequences(o: dict, quiet: bool) -> None:
    from betterdepth_cli.cli.eval_temporal import eval_sequences

    dev, dt = _device_and_dtype(o)
    out_json, _ = _output_files(o, with_csv=False)
    eval_sequences(o, dev, dt, out_json, quiet, _parse_dataset_options(list(o.get("dataset_option") or [])))


def _eval_config(o: dict):
    """The library's :class:`EvalConfig` of the merged options (device resolved, checked)."""
    from betterdepth_cli.cli.options import split_list
    from betterdepth_cli.evaluation.runner import EvalConfig
    from betterdepth_cli.jobs.ranks import rank_info

    rank = rank_info()  # under torchrun / accelerate launch: every n-th sample, merged on rank 0
    dev, dt = _device_and_dtype(o, rank)
    optional = lambda key, cast: None if o.get(key) is None else cast(o[key])  # noqa: E731
    ev = EvalConfig(
        dataset=o["dataset"], data_root=str(o["data_root"]), split_file=optional("split_file", str),
        limit=o.get("limit"), dataset_options=_parse_dataset_options(list(o.get("dataset_option") or [])),
        conditioner=o.get("conditioner"), model=o.get("model"), refine=not o["no_refine"], compare=o["compare"],
        steps=o.get("steps"), ensemble=o.get("ensemble"), reduction=o.get("reduction"),
        processing_res=o.get("processing_res"), seed=optional("seed", int), device=dev, dtype=dt,
        batch_size=int(o["batch_size"]), alignment=o["alignment"], metrics=tuple(split_list(o["metrics"], "--metrics")),
        canny_sigma=float(o["canny_sigma"]), canny_low=float(o["canny_low"]), canny_high=float(o["canny_high"]),
        dbe_max_dist=float(o["dbe_max_dist"]), edge_threshold=float(o["edge_threshold"]),
        edge_tolerance=float(o["edge_tolerance"]), save_predictions=optional("save_predictions", str),
        score_workers=optional("score_workers", int), continue_on_error=bool(o.get("continue_on_error")),
        shard=None if rank is None else rank.shard,
    )  # fmt: skip
    ev.validate()
    return ev


def _output_files(o: dict, with_csv: bool = True) -> tuple[Path | None, Path | None]:
    """``--output`` and ``--csv`` (its default beside the JSON), checked (:func:`check_outputs`)."""
    out_json = Path(o["output"]) if o.get("output") else None
    out_csv = Path(o["csv"]) if o.get("csv") else (default_csv_path(out_json) if out_json else None)
    if not with_csv:
        out_csv = None
    check_outputs(out_json, out_csv)
    return out_json, out_csv


def _same_file(a: Path, b: Path) -> bool:
    import os

    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(out_json: Path | None, out_csv: Path | None) -> None:
    """The results may be written: their folders exist, -o and --csv differ (exit 64), and a file there is a
    result of an earlier ``eval`` (a rerun replaces its own results), never a file of the user's (exit 64,
    as an output that would overwrite an input; checked again just before writing)."""
    from betterdepth_cli.core.types import OutputError, UsageError
    from betterdepth_cli.evaluation.runner import is_own_result

    if out_json is not None and out_csv is not None and _same_file(out_json, out_csv):
        raise UsageError(f"--output and --csv are the same file {out_json}; give --csv another path")
    for path, what, kind in ((out_json, "--output", "json"), (out_csv, "--csv", "csv")):
        desc = "a results JSON" if kind == "json" else "a per-sample CSV"
        if path is None:
            continue
        if path.parent and not path.parent.exists():
            raise OutputError(f"{what} {path}: folder {path.parent} does not exist")
        if path.is_dir():
            raise OutputError(f"{what} {path}: is a folder; give a file name")
        if path.exists() and not is_own_result(path, kind):
            raise UsageError(f"{what} {path}: exists and is not {desc} of betterdepth eval (refusing to overwrite "
                             "it); choose another path")


def _progress_printer(quiet: bool):
    t0 = time.perf_counter()
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(done: int, total: int, sample_id: str) -> None:
        if quiet:
            return
        now = time.perf_counter()
        if done == total or now - last[0] > (0.5 if tty else 10.0):
            last[0] = now
            end = "\r" if tty and done < total else "\n"
            print(f"eval: {done}/{total} samples ({now - t0:.0f} s) {sample_id}", end=end, file=sys.stderr, flush=True)

    return progress


def _report(result, out_json: Path | None, out_csv: Path | None, quiet: bool) -> None:
    """Warnings for skipped samples, the files, and the table: the table is the result (stdout), so
    ``quiet`` hides only the notes on stderr about the files written. Exit 3 when samples were skipped
    (--continue-on-error), 65 when every one was."""
    from betterdepth_cli.core.exit_codes import EXIT_PARTIAL
    from betterdepth_cli.core.types import InputDataError

    skipped = result.dataset.get("incomplete") or []
    for line in skipped:
        print(f"eval: warning: skipped {line}", file=sys.stderr, flush=True)
    for line in result.notes:
        print(f"eval: warning: {line}", file=sys.stderr, flush=True)
    if skipped and not result.dataset["samples"]:
        raise InputDataError(f"{result.dataset['name']}: every sample failed ({len(skipped)} skipped), none scored")
    if skipped:
        print(f"eval: {len(skipped)} sample(s) skipped, {result.dataset['samples']} scored",
              file=sys.stderr, flush=True)
    check_outputs(out_json, out_csv)  # again: a file may have appeared there while the evaluation ran
    earlier = {p for p in (out_json, out_csv) if p is not None and p.exists()}  # own results, checked
    if out_json is not None:
        result.write_json(out_json)
    if out_csv is not None:
        result.write_csv(out_csv)
    from rich.console import Console

    render_table(result, Console(soft_wrap=True))
    if not quiet:
        for path, what in ((out_json, "results"), (out_csv, "per-sample metrics")):
            if path is not None:
                done = f"replaced the earlier {what} in" if path in earlier else f"wrote {what} to"
                print(f"eval: {done} {path}", file=sys.stderr, flush=True)
    if skipped:
        raise typer.Exit(EXIT_PARTIAL)
