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

from betterdepth_cli.core.types import InputDataError, UsageError
from betterdepth_cli.evaluation import metrics as M
from betterdepth_cli.evaluation import protocol as P
from betterdepth_cli.evaluation.dataset_base import DatasetLoader, Sample
from betterdepth_cli.evaluation.datasets import get_dataset
from betterdepth_cli.evaluation.merge import mean_scores, shard_entries

RESULTS_FORMAT = "betterdepth-eval/1"
MAX_RESULT_BYTES = 64 << 20  # a results JSON is kilobytes: a larger file is not one
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
    seed: int | None = None  # None: 0, not given (a deterministic model then has no seed to warn about)
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

    @property
    def run_seed(self) -> int:
        """The seed the run uses: the one given, else 0."""
        return 0 if self.seed is None else self.seed

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
        from betterdepth_cli.core.settings import check_seed

        if self.seed is not None:
            check_seed(self.seed)
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
    notes: list[str] = field(default_factory=list)  # one-line warnings: options not applied, degenerate fits

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
                "notes": list(self.notes),
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
        from betterdepth_cli.io.files import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    def write_csv(self, path: str | Path) -> Path:
        from betterdepth_cli.io.files import atomic_write_text

        return atomic_write_text(path, self.csv_text())


def is_own_result(path: str | Path, what: str) -> bool:
    """Whether the file ``path`` holds a result ``eval`` wrote, by its content: ``what`` "json", results
    whose ``format`` is ``betterdepth-eval/...`` (``betterdepth-eval-temporal/...`` too); "csv", the
    per-sample CSV (its header ``id,variant,... seconds_total``). Anything else is the user's (or the
    other kind of result), never to be overwritten."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
            if head.lstrip().startswith(b"{"):  # JSON: all of it (a results file is kilobytes)
                head += fh.read(MAX_RESULT_BYTES + 1 - len(head))
    except OSError:
        return False
    text = head.decode("utf-8", errors="replace")
    header = text.split("\n", 1)[0].rstrip("\r")
    if what == "csv":
        return header.startswith("id,variant,") and header.endswith(",seconds_total")
    if not text.lstrip().startswith("{") or len(head) > MAX_RESULT_BYTES:
        return False
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and str(data.get("format", "")).startswith("betterdepth-eval")


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


class _Skips:
    """Samples that fail on their input (a missing or unreadable file, a prediction without a valid pixel):
    without ``continue_on_error`` the first one stops the evaluation (exit 65); with it each is skipped
    with its one-line reason, reported in the dataset's order."""

    def __init__(self, dataset: DatasetLoader, keep_going: bool, progress):
        self.keep_going, self.progress = keep_going, progress
        self.order = {e.id: k for k, e in enumerate(dataset.candidates)}
        self.total = len(dataset.candidates)
        self.found: list[tuple[int, str]] = []
        self.scored = 0  # kept by the scorer, for the progress

    def __call__(self, sample_id: str, reason: str, error: Exception | None = None) -> None:
        if not self.keep_going:
            raise error if error is not None else InputDataError(reason)
        self.found.append((self.order.get(sample_id, len(self.order)), reason))
        if self.progress is not None:
            self.progress(self.scored + len(self.found), self.total, sample_id)

    def reasons(self) -> list[str]:
        return [reason for _, reason in sorted(self.found, key=lambda item: item[0])]


def _batches(dataset: DatasetLoader, batch_size: int, timings: dict[str, float], skip: _Skips):
    """Consecutive samples of one size, at most ``batch_size`` at a time; records load time per id.
    A sample lacking a file, or whose file cannot be read, goes to ``skip``."""
    batch: list[Sample] = []
    for entry in dataset.candidates:
        if entry.problem is not None:
            skip(entry.id, entry.problem)
            continue
        t0 = time.perf_counter()
        try:
            s = dataset.load(entry)
        except InputDataError as exc:
            skip(entry.id, str(exc), exc)
            continue
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


def _save_prediction(root: Path, variant: str, sample_id: str, values: np.ndarray, valid: np.ndarray,
                     meta: dict) -> None:
    """``<root>/<variant>/<id>.npy`` (float32) and ``.png`` (16-bit, encoded as ``refine`` encodes it)
    with its sidecar ``.json``."""
    from betterdepth_cli.io.depth_files import make_sidecar, write_npy, write_png16
    from betterdepth_cli.io.files import safe_join

    base = safe_join(root / variant, sample_id)  # ids come from input names (tar members): never outside root
    base.parent.mkdir(parents=True, exist_ok=True)
    write_npy(base.with_suffix(".npy"), np.where(valid, values, np.nan).astype(np.float32))  # holes NaN, as refine
    write_png16(base.with_suffix(".png"), values, valid, meta=make_sidecar(**meta))


@dataclass
class _Models:
    """What an evaluation infers with, and the settings it records."""

    conditioner: Any
    model: Any
    spec: str  # the conditioner as asked
    settings: dict[str, Any]
    record: dict[str, Any] = field(default_factory=dict)  # the refiner as refine's sidecars name it (model, model_card)
    notes: list[str] = field(default_factory=list)  # options the refiner does not use (the guided filter's)

    def info(self, kind, metric) -> tuple[dict, dict | None]:
        cond = {"spec": self.spec, "name": getattr(self.conditioner, "name", self.spec), "kind": kind, "metric": metric}
        if self.model is None:
            return cond, None
        card = self.model.card
        return cond, {"source": card.get("source"), "version": card.get("version"),
                      "trained_with": card.get("trained_with"), "format": card.get("format")}


def _load_models(config: EvalConfig) -> _Models:
    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.devices import torch_dtype
    from betterdepth_cli.core.refiner import load_model
    from betterdepth_cli.core.settings import card_defaults, not_applied_note, resolve_settings, unused_option_notes

    dtype = torch_dtype(config.dtype)
    model = load_model(config.model, device=config.device, dtype=dtype) if config.refine else None
    spec = config.conditioner or card_defaults(model.card if model is not None else None)["conditioner"]
    conditioner = get_conditioner(spec, device=config.device, dtype=dtype)
    settings: dict[str, Any] = {"conditioner": spec}
    record: dict[str, Any] = {"model": None}
    asked = {"steps": config.steps, "ensemble": config.ensemble, "reduction": config.reduction,
             "processing_res": config.processing_res}
    notes = [] if config.refine else [not_applied_note("--no-refine scores the conditioner's map alone", **asked)]
    if model is not None:
        run = resolve_settings(model.card, **asked)
        settings.update({k: v for k, v in run.as_dict().items() if k != "max_processing_res"})
        from betterdepth_cli.core.model_names import model_record

        record = model_record(config.model)
        notes = unused_option_notes(model.card, run.ensemble, config.seed, **asked)
    return _Models(conditioner, model, spec, settings, record, [n[len("note: "):] for n in notes if n])


def _save_root(config: EvalConfig) -> Path | None:
    from betterdepth_cli.core.types import OutputError

    if not config.save_predictions:
        return None
    root = Path(config.save_predictions)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--save-predictions {root}: cannot create the folder ({exc.strerror})") from None
    return root


def _infer_each(batch: list[Sample], models: _Models, config: EvalConfig, variants: tuple[str, ...], skip: _Skips):
    """[(samples, :func:`_infer` of them)]: the batch at once; when one sample's input fails it (a ``file:``
    map missing or unreadable) under ``continue_on_error``, sample by sample (each image's noise is its
    own, so the numbers are the same), the failing ones skipped."""
    try:
        return [(batch, _infer(batch, models, config, variants))]
    except InputDataError as exc:
        if len(batch) == 1 or not skip.keep_going:
            skip(batch[0].id, str(exc), exc)
            return []
    parts = []
    for sample in batch:
        try:
            parts.append(([sample], _infer([sample], models, config, variants)))
        except InputDataError as exc:
            skip(sample.id, str(exc), exc)
    return parts


def _empty_prediction(sample: Sample, preds: dict[str, np.ndarray], models: _Models, root) -> str | None:
    """Why a sample's prediction cannot be scored (no valid pixel: an all-NaN map), naming the map (a
    ``file:`` conditioner's) or the sample's image under the dataset's ``root``; or None."""
    if all(np.isfinite(p).any() for p in preds.values()):
        return None
    path_for = getattr(models.conditioner, "path_for", None)  # the file: conditioner's map of the sample
    if path_for:
        where = f"{path_for(sample.id)}: the precomputed map"
    else:
        where = f"{root.where((sample.meta.get('files') or [sample.id])[0])}: the conditioner's prediction"
    return f"{where} has no valid pixel (every value NaN, infinite or masked)"


def _infer(batch: list[Sample], models: _Models, config: EvalConfig, variants: tuple[str, ...]):
    """One batch through the pipeline: (result, {variant: (B,H,W) maps}, valid (B,H,W), per-image stage seconds)."""
    import torch

    from betterdepth_cli.core.guided import guided_refine
    from betterdepth_cli.core.pipeline import seeded_generators
    from betterdepth_cli.core.tiled import refine_images

    chosen = {k: models.settings.get(k) for k in ("steps", "ensemble", "reduction", "processing_res")}
    keys, gens = [s.id for s in batch], seeded_generators(config.run_seed, len(batch))  # like `refine`: per image
    res = refine_images([s.rgb for s in batch], model=models.model, conditioner=models.conditioner, keys=keys,
                        generator=gens, **chosen)  # plates above the card's tile_above in tiles, as `refine` does
    outputs = {"refined": res.refined.detach().float().cpu().numpy()[:, 0],
               "conditioner": res.conditioning.detach().float().cpu().numpy()[:, 0]}
    if "guided" in variants:
        images = torch.from_numpy(np.stack([s.rgb for s in batch])).permute(0, 3, 1, 2)  # [B,3,H,W]
        outputs["guided"] = guided_refine(res.conditioning.detach().float().cpu(), images.float(),
                                          valid=res.valid.detach().cpu()).numpy()[:, 0]  # holes left out
    valid = res.valid.detach().cpu().numpy()[:, 0]
    per_image = {s: res.timings.get(s, 0.0) / len(batch) for s in ("conditioner", "encode", "sample", "decode")}
    return res, outputs, valid, per_image


class _Scorer:
    """Scores samples (on a worker thread while the next batch infers, or inline), in order."""

    def __init__(self, config: EvalConfig, dataset, variants, progress):
        self.config, self.dataset, self.variants, self.progress = config, dataset, variants, progress
        self.metric_opts = config.metric_options()
        self.rows: list[dict[str, Any]] = []
        self.stage_sums = dict.fromkeys(STAGES, 0.0)
        self.done = 0
        self.notes: list[str] = []  # degenerate alignments, one line each (appended on the scoring thread)
        self.skips: _Skips | None = None
        workers = default_score_workers(config.device) if config.score_workers is None else config.score_workers
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="betterdepth-score") if workers else None
        self.pending: deque = deque()

    def score(self, sample: Sample, kind: str, preds: dict[str, np.ndarray]):
        t0 = time.perf_counter()
        gt, c = sample.depth(), self.config
        target_edges = M.prepare_target_edges(gt, sample.valid, c.metrics, **self.metric_opts)
        scores = {
            variant: P.evaluate_sample(
                pred, kind, gt, sample.valid, min_depth=self.dataset.min_depth, max_depth=self.dataset.max_depth,
                metrics=c.metrics, alignment=c.alignment, target_edges=target_edges,
                on_degenerate=self._note(sample.id, variant), **self.metric_opts,
            )
            for variant, pred in preds.items()
        }  # fmt: skip
        return scores, time.perf_counter() - t0

    def _note(self, sample_id: str, variant: str):
        def note(reason: str) -> None:
            self.notes.append(f"{sample_id} ({variant}): degenerate alignment ({reason}), scored with the defined "
                              "fallback")

        return note

    def submit(self, sample: Sample, timing: dict, kind: str, preds: dict[str, np.ndarray]) -> None:
        if self.pool is None:
            self._finish(sample, timing, self.score(sample, kind, preds))
            return
        self.pending.append((sample, timing, self.pool.submit(self.score, sample, kind, preds)))
        self.drain(SCORE_QUEUE)

    def drain(self, keep: int) -> None:
        """Finish scored samples in order until at most ``keep`` are in flight (waiting counts as score_wait)."""
        while len(self.pending) > keep or (self.pending and self.pending[0][2].done()):
            sample, timing, future = self.pending.popleft()
            t0 = time.perf_counter()
            scored = future.result()
            self._finish(sample, timing, scored, waited=time.perf_counter() - t0)

    def _finish(self, sample: Sample, timing: dict, scored, waited: float | None = None) -> None:
        scores, seconds = scored
        timing = {**timing, "score": seconds, "score_wait": seconds if waited is None else waited}
        timing["total"] = sum(v for k, v in timing.items() if k != "score")
        for k, v in timing.items():
            self.stage_sums[k] += v
        for variant in self.variants:
            sc = scores[variant]
            row = {"id": sample.id, "variant": variant, **sc.metrics,
                   "scale": sc.alignment.scale, "shift": sc.alignment.shift}
            row.update({f"seconds_{k}": v for k, v in timing.items()})
            self.rows.append(row)
        self.done += 1
        skipped = 0 if self.skips is None else len(self.skips.found)
        if self.skips is not None:
            self.skips.scored = self.done
        if self.progress is not None:
            self.progress(self.done + skipped, len(self.dataset.candidates), sample.id)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def means(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
        """Per variant and metric: the mean over the samples where it is finite, and how many those are."""
        return mean_scores(self.rows, self.variants, self.config.metrics)


def run_evaluation(
    config: EvalConfig,
    progress: Callable[[int, int, str], None] | None = None,
) -> EvalResult:
    """Evaluate ``config`` and return the per-sample rows and the means.

    ``progress(done, total, sample_id)`` is called after every scored or skipped sample. A sample
    that fails on its input (a missing or unreadable file, a ``file:`` map missing or without a
    valid pixel) raises :class:`InputDataError`, or with ``continue_on_error`` is skipped: the result's
    ``dataset["incomplete"]`` lists why, ``dataset["samples"]`` counts the samples scored.
    """
    import torch

    from betterdepth_cli.core.memory import keep_freed_memory

    config.validate()
    keep_freed_memory()  # scoring allocates megapixel temporaries: reuse them instead of faulting pages in
    t_wall = time.perf_counter()
    dataset = get_dataset(config.dataset, config.data_root, split_file=config.split_file, limit=config.limit,
                          skip_incomplete=config.continue_on_error, **config.dataset_options)  # fmt: skip
    if config.shard is not None:
        shard_entries(dataset, *config.shard)
    models = _load_models(config)
    save_root = _save_root(config)
    variants = config.variants()
    scorer = _Scorer(config, dataset, variants, progress)
    scorer.skips = skip = _Skips(dataset, config.continue_on_error, progress)
    scorer.notes.extend(models.notes)
    load_times: dict[str, float] = {}
    kind = metric_flag = None
    torch_threads = torch.get_num_threads()
    if scorer.pool is not None and str(config.device).startswith("cpu") and 1 < torch_threads >= (os.cpu_count() or 1):
        torch.set_num_threads(torch_threads - 1)  # leave a core to the scoring thread: oversubscribed OpenMP stalls
    try:
        for batch in _batches(dataset, config.batch_size, load_times, skip):
            for part, (res, outputs, valid, per_image) in _infer_each(batch, models, config, variants, skip):
                kind, metric_flag = res.kind, bool(res.metric)
                for i, sample in enumerate(part):
                    timing = {"load": load_times.pop(sample.id, 0.0), **per_image}
                    preds = {v: np.where(valid[i], outputs[v][i], np.nan) for v in variants}
                    empty = _empty_prediction(sample, preds, models, dataset.root)
                    if empty is not None:
                        skip(sample.id, empty)
                        continue
                    if save_root is not None:
                        _save_sample(save_root, sample, {v: outputs[v][i] for v in variants}, valid[i], res, i,
                                     models, config)
                    scorer.submit(sample, timing, res.kind, preds)
        scorer.drain(0)
    finally:
        scorer.close()
        torch.set_num_threads(torch_threads)
    dataset.root.close()
    return _result(config, dataset, models, scorer, skip.reasons(), (kind, metric_flag), t_wall)


def _result(config: EvalConfig, dataset: DatasetLoader, models: _Models, scorer: _Scorer, skipped: list[str],
            prediction: tuple, t_wall: float) -> EvalResult:
    means, counts = scorer.means()
    cond_info, model_info = models.info(*prediction)
    described = {**dataset.describe(), "samples": scorer.done, "incomplete": skipped}
    return EvalResult(
        config=config, dataset=described, conditioner=cond_info, model=model_info,
        settings={**models.settings, "seed": config.run_seed, "device": str(config.device), "dtype": config.dtype,
                  "batch_size": config.batch_size},
        rows=scorer.rows, means=means, counts=counts,
        seconds_per_image={k: v / max(scorer.done, 1) for k, v in scorer.stage_sums.items()},
        versions=versions(), wall_seconds=time.perf_counter() - t_wall, notes=list(scorer.notes),
    )  # fmt: skip


def _save_sample(root: Path, sample: Sample, maps: dict, valid, res, index: int, models: _Models,
                 config: EvalConfig) -> None:
    """One sample's map of every scored variant (``maps``: variant -> (H,W)); the sample is image ``index``
    of the batch's result ``res`` (the refined map's sidecar says how it was refined, as ``refine``'s)."""
    for variant, values in maps.items():
        _save_prediction(root, variant, sample.id, values, valid, {
            "kind": res.kind, "metric": bool(res.metric), "variant": variant, "sample": sample.id,
            "conditioner": models.spec, **models.record,
            **{k: v for k, v in models.settings.items() if k != "conditioner"}, "seed": config.run_seed,
            **(res.route(index) if variant == "refined" else {}),
            "note": "raw prediction at the image's size, before alignment",
        })
