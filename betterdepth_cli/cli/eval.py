"""`betterdepth eval`: the zero-shot benchmark protocol on a public dataset or your own folder."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from betterdepth_cli.cli.app import app, handle_errors
from betterdepth_cli.cli.ranks import defer, rank_device, rank_info, ranked
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

DATASET_NAMES = "nyuv2, kitti, eth3d, scannet, diode, middlebury, folder"

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
            from betterdepth_cli.evaluation.metrics import PERCENT_METRICS

            scale = 100 if name in PERCENT_METRICS else 1
            style = "green" if rel > 0 else "red" if rel < 0 else ""
            cells.append("n/a" if math.isnan(d) else f"{scale * d:+.4g}")
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


@app.command("eval")
@handle_errors
@ranked
def eval_command(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help=f"Dataset loader: {DATASET_NAMES}.", show_default=False)] = None,
    data_root: Annotated[
        Optional[Path], typer.Option("--data-root", help="Dataset folder or .tar archive (e.g. Marigold's evaluation packs).",
                                     show_default=False)
    ] = None,
    split_file: Annotated[
        Optional[Path], typer.Option("--split-file", help="Sample list: one 'rgb gt [...]' line per sample, paths relative "
                                     "to the data root (Marigold's data_split/*.txt). Default: every sample found.",
                                     show_default=False)
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N samples.", show_default=False)] = None,
    dataset_option: Annotated[
        Optional[list[str]], typer.Option("--dataset-option", help="Loader option KEY=VALUE, repeatable: kitti crop=eigen|garg|none, "
                                          "kb_crop=true|false; nyuv2 eigen_crop=true|false; diode subset=all|indoor|outdoor.",
                                          show_default=False)
    ] = None,
    conditioner: ConditionerOpt = None,
    model: ModelOpt = None,
    no_refine: NoRefineOpt = None,
    compare: Annotated[Optional[bool], typer.Option("--compare", help="Score the conditioner and the refined output from "
                                                    "one pass and print the improvement (the paper's Table 3).",
                                                    show_default=False)] = None,
    steps: StepsOpt = None,
    ensemble: EnsembleOpt = None,
    reduction: ReductionOpt = None,
    processing_res: ProcessingResOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    batch_size: BatchSizeOpt = None,
    alignment: Annotated[Optional[str], typer.Option("--alignment", help="auto: least-squares scale and shift in the "
                                                     "prediction's space (disparity or depth); none: metric predictions "
                                                     "as they are. Default auto.", show_default=False)] = None,
    metrics: Annotated[Optional[str], typer.Option("--metrics", help="Comma-separated metrics (default all): abs_rel, sq_rel, "
                                                   "rmse, rmse_log, delta1, delta2, delta3, dbe_comp, dbe_acc, ep, er.",
                                                   show_default=False)] = None,
    edge_threshold: Annotated[Optional[float], typer.Option("--edge-threshold", help="EP/ER: Sobel magnitude threshold on the "
                                                            "inverse depth normalised by the GT's range (default 0.1).",
                                                            show_default=False)] = None,
    edge_tolerance: Annotated[Optional[float], typer.Option("--edge-tolerance", help="EP/ER: match distance in pixels "
                                                            "(default 0: the same pixel).", show_default=False)] = None,
    canny_sigma: Annotated[Optional[float], typer.Option("--canny-sigma", help="DBE: Canny sigma (default sqrt(2)).",
                                                         show_default=False)] = None,
    canny_low: Annotated[Optional[float], typer.Option("--canny-low", help="DBE: Canny low threshold (default 0.15).",
                                                       show_default=False)] = None,
    canny_high: Annotated[Optional[float], typer.Option("--canny-high", help="DBE: Canny high threshold (default 0.3).",
                                                        show_default=False)] = None,
    dbe_max_dist: Annotated[Optional[float], typer.Option("--dbe-max-dist", help="DBE: distance truncation in pixels "
                                                          "(default 10).", show_default=False)] = None,
    save_predictions: Annotated[
        Optional[Path], typer.Option("--save-predictions", help="Write the raw predictions (float32 NPY at image size, before "
                                     "alignment, + a JSON with kind and settings) to DIR/<variant>/<sample id>.npy.",
                                     show_default=False)
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the results (config, versions, means, "
                                                   "seconds per image by stage) to this JSON file.", show_default=False)] = None,
    csv_path: Annotated[Optional[Path], typer.Option("--csv", help="Per-sample metrics CSV (default with --output: "
                                                     "<output stem>_per_sample.csv).", show_default=False)] = None,
    score_workers: Annotated[Optional[int], typer.Option("--score-workers", help="1: score on a worker thread while "
                                                         "the next images infer; 0: score inline. Default: the thread, "
                                                         "except on a CPU of <= 2 cores that torch already fills.",
                                                         show_default=False)] = None,
    continue_on_error: Annotated[Optional[bool], typer.Option(
        "--continue-on-error", help="Skip samples that miss a file (warned, counted in the results) instead of exit 65.",
        show_default=False)] = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate depth on a benchmark with the zero-shot protocol (Marigold's, as in the paper).

    Each image's prediction is aligned to the ground truth by least-squares scale
    and shift (in disparity space for disparity models), clipped to the dataset's
    depth range and scored; metrics are averaged over images. Prints a table;
    --output writes JSON and a per-sample CSV.
    """
    from betterdepth_cli.cli.options import (
        check_dtype_for_device,
        load_config,
        merge_options,
        parse_device,
        parse_dtype,
        resolve_device,
        split_list,
    )
    from betterdepth_cli.core.types import UsageError
    from betterdepth_cli.evaluation import metrics as M

    flags = {
        "dataset": dataset, "data_root": data_root, "split_file": split_file, "limit": limit,
        "dataset_option": dataset_option or None, "conditioner": conditioner, "model": model,
        "no_refine": no_refine, "compare": compare, "steps": steps, "ensemble": ensemble, "reduction": reduction,
        "processing_res": processing_res, "seed": seed, "device": device, "dtype": dtype, "batch_size": batch_size,
        "alignment": alignment, "metrics": metrics, "edge_threshold": edge_threshold,
        "edge_tolerance": edge_tolerance, "canny_sigma": canny_sigma, "canny_low": canny_low,
        "canny_high": canny_high, "dbe_max_dist": dbe_max_dist, "save_predictions": save_predictions,
        "output": output, "csv": csv_path, "score_workers": score_workers, "continue_on_error": continue_on_error,
    }
    cfg = load_config(config, CONFIG_SCHEMA, section="eval") if config else {}
    defaults = {
        "no_refine": False, "compare": False, "seed": 0, "device": "auto", "dtype": "fp32", "batch_size": 1,
        "alignment": "auto", "metrics": list(M.ALL_METRICS), "edge_threshold": M.EDGE_THRESHOLD,
        "edge_tolerance": M.EDGE_TOLERANCE, "canny_sigma": M.CANNY_SIGMA, "canny_low": M.CANNY_LOW,
        "canny_high": M.CANNY_HIGH, "dbe_max_dist": M.DBE_MAX_DIST,
    }
    o = merge_options(flags, cfg, defaults)
    if not o.get("dataset"):
        raise UsageError(f"`--dataset` is required ({DATASET_NAMES})")
    if not o.get("data_root"):
        raise UsageError("`--data-root` is required: the dataset folder or .tar archive")
    if o["no_refine"] and o["compare"]:
        raise UsageError("`--compare` scores the conditioner and the refined output: drop --no-refine")
    if o["no_refine"] and o.get("model"):
        raise UsageError("`--model` and `--no-refine` exclude each other")
    rank = rank_info()  # under torchrun / accelerate launch: every n-th sample, merged on rank 0
    dev = rank_device(resolve_device(o["device"]), parse_device(o["device"]), rank)
    dt = parse_dtype(o["dtype"])
    check_dtype_for_device(dt, dev)
    names = tuple(split_list(o["metrics"], "--metrics"))
    out_json = Path(o["output"]) if o.get("output") else None
    out_csv = Path(o["csv"]) if o.get("csv") else (default_csv_path(out_json) if out_json else None)

    from betterdepth_cli.evaluation.runner import EvalConfig, run_evaluation

    ev = EvalConfig(
        dataset=o["dataset"], data_root=str(o["data_root"]),
        split_file=None if o.get("split_file") is None else str(o["split_file"]), limit=o.get("limit"),
        dataset_options=_parse_dataset_options(list(o.get("dataset_option") or [])),
        conditioner=o.get("conditioner"), model=o.get("model"), refine=not o["no_refine"], compare=o["compare"],
        steps=o.get("steps"), ensemble=o.get("ensemble"), reduction=o.get("reduction"),
        processing_res=o.get("processing_res"), seed=int(o["seed"]), device=dev, dtype=dt,
        batch_size=int(o["batch_size"]), alignment=o["alignment"], metrics=names,
        canny_sigma=float(o["canny_sigma"]), canny_low=float(o["canny_low"]), canny_high=float(o["canny_high"]),
        dbe_max_dist=float(o["dbe_max_dist"]), edge_threshold=float(o["edge_threshold"]),
        edge_tolerance=float(o["edge_tolerance"]),
        save_predictions=None if o.get("save_predictions") is None else str(o["save_predictions"]),
        score_workers=None if o.get("score_workers") is None else int(o["score_workers"]),
        continue_on_error=bool(o.get("continue_on_error")), shard=None if rank is None else rank.shard,
    )
    ev.validate()
    for path, what in ((out_json, "--output"), (out_csv, "--csv")):
        if path is not None and path.parent and not path.parent.exists():
            from betterdepth_cli.core.types import OutputError

            raise OutputError(f"{what} {path}: folder {path.parent} does not exist")

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

    result = run_evaluation(ev, progress=progress)
    if rank is not None:  # rank 0 writes and prints the merged result once every rank is done
        from betterdepth_cli.evaluation.merge import merge_results

        defer(result, lambda results: _report(merge_results(results), out_json, out_csv, quiet))
        return
    _report(result, out_json, out_csv, quiet)


def _report(result, out_json: Path | None, out_csv: Path | None, quiet: bool) -> None:
    """Warn about skipped samples, write the JSON and CSV, print the table."""
    skipped = result.dataset.get("incomplete") or []
    for line in skipped:
        print(f"eval: warning: skipped {line}", file=sys.stderr, flush=True)
    if skipped:
        print(f"eval: {len(skipped)} incomplete sample(s) skipped, {result.dataset['samples']} scored",
              file=sys.stderr, flush=True)
    if out_json is not None:
        result.write_json(out_json)
    if out_csv is not None:
        result.write_csv(out_csv)
    if not quiet:
        from rich.console import Console

        render_table(result, Console(soft_wrap=True))
        for path, what in ((out_json, "results"), (out_csv, "per-sample metrics")):
            if path is not None:
                print(f"eval: wrote {what} to {path}", file=sys.stderr, flush=True)
