"""Run the zero-shot benchmark: dataset -> conditioner (-> refiner) -> protocol -> results.

:func:`run_evaluation` is what ``betterdepth eval`` calls; it imports neither
Typer nor rich. One pass over the data scores up to three variants of every
sample: ``conditioner`` (the feed-forward model alone), ``guided`` (the
classical refiner: the conditioning guided-filtered with the photo as the
guide, :mod:`betterdepth_cli.core.guided`) and ``refined`` (BetterDepth over
it). ``compare=True`` scores all three from the same forward pass (the
refiner's output and the conditioning it was given), as in the paper's
plug-and-play Table 3, so every evaluation shows whether the refiner earns its
cost over the classical filter.

Samples of equal size are batched up to ``batch_size``; the generator is seeded
once from ``seed``, so the same seed, batch size and device give the same
numbers. Seconds per image are measured by stage: ``load`` (reading and
decoding), ``conditioner``, ``encode``, ``sample``, ``decode`` (the pipeline's
own timings, a batch's time shared equally by its images), ``score``
(alignment and metrics), ``score_wait`` and ``total``.

Scoring (NumPy and OpenCV, which release the GIL) runs on one worker thread
while the main thread loads and infers the next samples (``score_workers=1``;
at most :data:`SCORE_QUEUE` samples wait to be scored). The default (``None``)
picks the thread except on a CPU of at most 2 cores that torch already fills
(:func:`scoring_thread_default`).
``score`` is the time the worker spent on a sample; ``score_wait`` the time the
main loop stood waiting for it, the part of scoring not hidden behind
inference. ``total`` = load + inference + score_wait, the sample's share of
the wall clock. ``score_workers=0`` scores inline (then ``score_wait`` =
``score``). On a CPU whose cores torch's threads fill, the scoring thread gets
one of them for the length of the run (oversubscribed OpenMP workers stall
each other).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from betterdepth_cli.core.types import UsageError
from betterdepth_cli.evaluation import metrics as M
from betterdepth_cli.evaluation import protocol as P
from betterdepth_cli.evaluation.datasets import DatasetLoader, Sample, get_dataset
from betterdepth_cli.evaluation.merge import mean_scores, shard_entries

RESULTS_FORMAT = "betterdepth-eval/1"
VARIANTS = ("conditioner", "guided", "refined")
STAGES = ("load", "conditioner", "encode", "sample", "decode", "score", "score_wait", "total")
# scored samples in flight on the scoring thread before the main loop waits for the oldest
SCORE_QUEUE = 2


@dataclass
class EvalConfig:
    """Everything an evaluation depends on (the results file records it).

    ``model=None`` is the embedded default refiner; ``refine=False`` scores the
    conditioner alone; ``compare=True`` scores both. ``steps``, ``ensemble``,
    ``reduction``, ``processing_res`` left ``None`` take the model card's
    defaults; ``conditioner=None`` takes the card's (``builtin``).
    """

    dataset: str
    data_root: str
    split_file: str | None = None
    limit: int | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    conditioner: str | None = None
    model: str | None = None
    refine: bool = True
    compare: bool = False
    steps: int | None = None
    ensemble: int | None = None
    reduction: str | None = None
    processing_res: int | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "fp32"
    batch_size: int = 1
    alignment: str = "auto"
    metrics: tuple[str, ...] = M.ALL_METRICS
    canny_sigma: float = M.CANNY_SIGMA
    canny_low: float = M.CANNY_LOW
    canny_high: float = M.CANNY_HIGH
    dbe_max_dist: float = M.DBE_MAX_DIST
    edge_threshold: float = M.EDGE_THRESHOLD
    edge_tolerance: float = M.EDGE_TOLERANCE
    save_predictions: str | None = None
    score_workers: int | None = None  # None: auto (see the module docstring); 0 inline; 1 a scoring thread
    continue_on_error: bool = False  # skip samples that miss a file (counted in the results) instead of failing
    shard: tuple[int, int] | None = None  # (i, n): score every n-th sample from the (i-1)-th (ranks; evaluation.merge)

    def variants(self) -> tuple[str, ...]:
        if self.compare:
            return VARIANTS
        return ("refined",) if self.refine else ("conditioner",)

    def metric_options(self) -> dict[str, float]:
        return {
            "canny_sigma": self.canny_sigma,
            "canny_low": self.canny_low,
            "canny_high": self.canny_high,
            "dbe_max_dist": self.dbe_max_dist,
            "edge_threshold": self.edge_threshold,
            "edge_tolerance": self.edge_tolerance,
        }

    def validate(self) -> None:
        if self.compare and not self.refine:
            raise UsageError("`--compare` scores the conditioner and the refined output: it needs a refiner, not --no-refine")
        if self.batch_size < 1:
            raise UsageError(f"`batch_size` must be >= 1, got {self.batch_size}")
        if self.score_workers not in (None, 0, 1):
            raise UsageError(f"`score_workers` must be 0 (inline) or 1 (a scoring thread), got {self.score_workers}")
        if self.alignment not in P.ALIGNMENTS:
            raise UsageError(f"`alignment` must be one of {', '.join(P.ALIGNMENTS)}, got {self.alignment!r}")
        M.check_metric_names(self.metrics)
        if not self.metrics:
            raise UsageError("`metrics` must name at least one metric")
        if self.canny_low > self.canny_high:
            raise UsageError("`canny_low` must not exceed `canny_high`")
        for key in ("canny_sigma", "dbe_max_dist", "edge_threshold"):
            if not getattr(self, key) > 0:
                raise UsageError(f"`{key}` must be positive, got {getattr(self, key)}")
        if self.edge_tolerance < 0:
            raise UsageError(f"`edge_tolerance` must be >= 0, got {self.edge_tolerance}")


@dataclass
class EvalResult:
    """Per-sample rows, means per variant, timings and provenance of one evaluation."""

    config: EvalConfig
    dataset: dict[str, Any]
    conditioner: dict[str, Any]
    model: dict[str, Any] | None
    settings: dict[str, Any]
    rows: list[dict[str, Any]]
    means: dict[str, dict[str, float]]
    counts: dict[str, dict[str, int]]
    seconds_per_image: dict[str, float]
    versions: dict[str, str]
    wall_seconds: float

    @property
    def variants(self) -> tuple[str, ...]:
        return self.config.variants()

    def improvement(self) -> dict[str, dict[str, float]]:
        """Refined vs conditioner per metric: ``delta`` (refined - conditioner) and ``relative``
        (the share of the conditioner's error removed, or of its score gained; positive = better)."""
        if "conditioner" not in self.means or "refined" not in self.means:
            return {}
        out = {}
        for name in self.config.metrics:
            a, b = self.means["conditioner"][name], self.means["refined"][name]
            delta = b - a
            better = delta if name in M.HIGHER_IS_BETTER else -delta
            rel = better / abs(a) if a and math.isfinite(a) else math.nan
            out[name] = {"delta": delta, "relative": rel}
        return out

    def to_json(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["metrics"] = list(self.config.metrics)
        return jsonable(
            {
                "format": RESULTS_FORMAT,
                "dataset": self.dataset,
                "config": cfg,
                "settings": self.settings,
                "conditioner": self.conditioner,
                "model": self.model,
                "protocol": {
                    "alignment": self.config.alignment,
                    "alignment_space": "none" if self.config.alignment == "none" else self.conditioner.get("kind"),
                    "min_disparity": P.MIN_DISPARITY,
                    "averaging": "per image, then the mean over images (NaN images skipped, see counts)",
                    "metric_options": self.config.metric_options(),
                    "units": {n: M.UNITS[n] for n in self.config.metrics},
                },
                "samples": len({r["id"] for r in self.rows}),
                "metrics": self.means,
                "counts": self.counts,
                "improvement": self.improvement() or None,
                "seconds_per_image": self.seconds_per_image,
                "wall_seconds": self.wall_seconds,
                "versions": self.versions,
            }
        )

    def csv_text(self) -> str:
        """The per-sample table: one row per sample and variant."""
        cols = ["id", "variant", *self.config.metrics, "scale", "shift", *(f"seconds_{s}" for s in STAGES)]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
        return buf.getvalue()

    def write_json(self, path: str | Path) -> Path:
        from betterdepth_cli.io.outputs import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    def write_csv(self, path: str | Path) -> Path:
        from betterdepth_cli.io.outputs import atomic_write_text

        return atomic_write_text(path, self.csv_text())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return v


def jsonable(obj: Any) -> Any:
    """JSON-safe copy: dataclasses -> dicts, tuples -> lists, NaN/inf -> None, numpy scalars -> Python, Paths -> str."""
    if hasattr(obj, "__dataclass_fields__") and not isinstance(obj, type):
        from dataclasses import asdict

        return jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def versions() -> dict[str, str]:
    """Versions of everything that can change the numbers."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("betterdepth-cli", "torch", "diffusers", "transformers", "numpy", "opencv-python-headless"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _batches(dataset: DatasetLoader, batch_size: int, timings: dict[str, float]):
    """Consecutive samples of one size, at most ``batch_size`` at a time; records load time per id."""
    batch: list[Sample] = []
    it = iter(dataset)
    while True:
        t0 = time.perf_counter()
        try:
            s = next(it)
        except StopIteration:
            break
        timings[s.id] = time.perf_counter() - t0
        if batch and (s.rgb.shape != batch[0].rgb.shape or len(batch) >= batch_size):
            yield batch
            batch = []
        batch.append(s)
    if batch:
        yield batch


def scoring_thread_default(on_cpu: bool, torch_threads: int, cores: int) -> int:
    """1 (score on a thread) unless inference runs on a CPU of at most 2 cores that torch already fills.

    Measured on 2 cores (bench/eval_speed.py): with torch on 1 thread the scoring
    thread cut the wall time per sample by 20 %; with torch on both cores,
    giving one up to scoring made it 14 % slower than scoring inline.
    """
    if not on_cpu or torch_threads < cores or cores >= 4:
        return 1
    return 0


def default_score_workers(device: str) -> int:
    """:func:`scoring_thread_default` for inference on ``device`` with torch's current thread count here."""
    import torch

    return scoring_thread_default(str(device).startswith("cpu"), torch.get_num_threads(), os.cpu_count() or 1)


def _save_prediction(root: Path, variant: str, sample_id: str, values: np.ndarray, meta: dict) -> None:
    from betterdepth_cli.io.outputs import atomic_write_text, safe_join, write_npy

    base = safe_join(root / variant, sample_id)  # ids come from input names (tar members): never outside root
    base.parent.mkdir(parents=True, exist_ok=True)
    write_npy(base.with_suffix(".npy"), values.astype(np.float32))
    atomic_write_text(base.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")


def run_evaluation(
    config: EvalConfig,
    progress: Callable[[int, int, str], None] | None = None,
) -> EvalResult:
    """Evaluate ``config`` and return the per-sample rows and the means.

    ``progress(done, total, sample_id)`` is called after every scored sample.
    """
    import torch

    from betterdepth_cli.core.conditioners import get_conditioner
    from betterdepth_cli.core.guided import guided_refine
    from betterdepth_cli.core.pipeline import refine_batch, seeded_generators
    from betterdepth_cli.core.refiner import DEFAULTS, load_model
    from betterdepth_cli.core.memory import keep_freed_memory
    from betterdepth_cli.core.types import OutputError

    config.validate()
    keep_freed_memory()  # scoring allocates megapixel temporaries: reuse them instead of faulting pages in
    t_wall = time.perf_counter()
    dataset = get_dataset(
        config.dataset, config.data_root, split_file=config.split_file, limit=config.limit,
        skip_incomplete=config.continue_on_error, **config.dataset_options
    )
    if config.shard is not None:
        shard_entries(dataset, *config.shard)
    dtype = getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}.get(config.dtype, config.dtype))
    model = load_model(config.model, device=config.device, dtype=dtype) if config.refine else None
    defaults = model.defaults if model is not None else dict(DEFAULTS)
    cond_spec = config.conditioner or defaults.get("conditioner") or DEFAULTS["conditioner"]
    conditioner = get_conditioner(cond_spec, device=config.device, dtype=dtype)
    settings = {
        "conditioner": cond_spec,
        "steps": int(config.steps if config.steps is not None else defaults["steps"]),
        "ensemble": int(config.ensemble if config.ensemble is not None else defaults["ensemble"]),
        "reduction": config.reduction or defaults["reduction"],
        "processing_res": defaults.get("processing_res") if config.processing_res is None else config.processing_res,
    }
    if model is None:
        settings = {"conditioner": cond_spec}
    save_root = Path(config.save_predictions) if config.save_predictions else None
    if save_root is not None:
        try:
            save_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"--save-predictions {save_root}: cannot create the folder ({exc.strerror})") from None

    metric_opts = config.metric_options()
    variants = config.variants()
    rows: list[dict[str, Any]] = []
    load_times: dict[str, float] = {}
    stage_sums = dict.fromkeys(STAGES, 0.0)
    kind = None
    metric_flag = None
    done = 0
    total = len(dataset)

    def score_job(sample: Sample, kind: str, preds: dict[str, np.ndarray]) -> tuple[dict[str, P.SampleScore], float]:
        t0 = time.perf_counter()
        gt = sample.depth()
        target_edges = M.prepare_target_edges(gt, sample.valid, config.metrics, **metric_opts)
        scores = {
            variant: P.evaluate_sample(
                pred, kind, gt, sample.valid, min_depth=dataset.min_depth, max_depth=dataset.max_depth,
                metrics=config.metrics, alignment=config.alignment, target_edges=target_edges, **metric_opts,
            )
            for variant, pred in preds.items()
        }
        return scores, time.perf_counter() - t0

    def finish(job, scored, waited: float | None = None) -> None:
        nonlocal done
        sample, timing = job
        scores, seconds = scored
        timing = {**timing, "score": seconds, "score_wait": seconds if waited is None else waited}
        timing["total"] = sum(v for k, v in timing.items() if k != "score")
        for k, v in timing.items():
            stage_sums[k] += v
        for variant in variants:
            sc = scores[variant]
            row = {"id": sample.id, "variant": variant, **sc.metrics,
                   "scale": sc.alignment.scale, "shift": sc.alignment.shift}
            row.update({f"seconds_{k}": v for k, v in timing.items()})
            rows.append(row)
        done += 1
        if progress is not None:
            progress(done, total, sample.id)

    def drain(keep: int) -> None:
        """Finish scored samples in order until at most ``keep`` are in flight (waiting counts as score_wait)."""
        while len(pending) > keep or (pending and pending[0][1].done()):
            job, future = pending.popleft()
            t0 = time.perf_counter()
            scored = future.result()
            finish(job, scored, waited=time.perf_counter() - t0)

    on_cpu = str(config.device).startswith("cpu")
    torch_threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    workers = default_score_workers(config.device) if config.score_workers is None else config.score_workers
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="betterdepth-score") if workers else None
    pending: deque = deque()
    if pool is not None and on_cpu and torch_threads > 1 and torch_threads >= cores:
        # leave a core to the scoring thread: oversubscribed OpenMP workers stall each other
        torch.set_num_threads(torch_threads - 1)
    try:
        for batch in _batches(dataset, config.batch_size, load_times):
            images = torch.from_numpy(np.stack([s.rgb for s in batch])).permute(0, 3, 1, 2).contiguous()  # [B,3,H,W]
            res = refine_batch(
                images,
                conditioner=conditioner,
                model=model,
                steps=settings.get("steps"),
                ensemble=settings.get("ensemble"),
                reduction=settings.get("reduction"),
                processing_res=settings.get("processing_res"),
                generator=seeded_generators(config.seed, len(batch)),  # like `refine`: per image
                keys=[s.id for s in batch],
            )
            kind, metric_flag = res.kind, bool(res.metric)
            n = len(batch)
            outputs = {
                "refined": res.refined.detach().float().cpu().numpy()[:, 0],
                "conditioner": res.conditioning.detach().float().cpu().numpy()[:, 0],
            }
            if "guided" in variants:
                guided = guided_refine(res.conditioning.detach().float().cpu(), images.float())
                outputs["guided"] = guided.numpy()[:, 0]
            pred_valid = res.valid.detach().cpu().numpy()[:, 0]
            per_image = {s: res.timings.get(s, 0.0) / n for s in ("conditioner", "encode", "sample", "decode")}
            for i, sample in enumerate(batch):
                if save_root is not None:
                    for variant in variants:
                        _save_prediction(save_root, variant, sample.id, outputs[variant][i], {
                            "kind": res.kind, "metric": bool(res.metric), "variant": variant, "sample": sample.id,
                            "conditioner": cond_spec, "model": None if model is None else model.card.get("source"),
                            **{k: v for k, v in settings.items() if k != "conditioner"}, "seed": config.seed,
                            "note": "raw prediction at the image's size, before alignment",
                        })
                timing = {"load": load_times.pop(sample.id, 0.0), **per_image}
                preds = {v: np.where(pred_valid[i], outputs[v][i], np.nan) for v in variants}
                job = (sample, timing)
                if pool is None:
                    finish(job, score_job(sample, res.kind, preds))
                else:
                    pending.append((job, pool.submit(score_job, sample, res.kind, preds)))
                    drain(SCORE_QUEUE)
        drain(0)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        torch.set_num_threads(torch_threads)

    dataset.root.close()
    means, counts = mean_scores(rows, variants, config.metrics)
    spi = {k: v / max(done, 1) for k, v in stage_sums.items()}
    cond_info = {"spec": cond_spec, "name": getattr(conditioner, "name", cond_spec), "kind": kind, "metric": metric_flag}
    model_info = None
    if model is not None:
        card = model.card
        model_info = {"source": card.get("source"), "version": card.get("version"),
                      "trained_with": card.get("trained_with"), "format": card.get("format")}
    return EvalResult(
        config=config,
        dataset=dataset.describe(),
        conditioner=cond_info,
        model=model_info,
        settings={**settings, "seed": config.seed, "device": str(config.device), "dtype": config.dtype,
                  "batch_size": config.batch_size},
        rows=rows,
        means=means,
        counts=counts,
        seconds_per_image=spi,
        versions=versions(),
        wall_seconds=time.perf_counter() - t_wall,
    )
