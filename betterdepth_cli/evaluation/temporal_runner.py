"""Temporal evaluation of sequence datasets: conditioner, per-frame refinement and shot refinement.

:func:`run_temporal_evaluation` (``betterdepth eval --dataset synth-seq|tum``) runs
every clip twice through :func:`~betterdepth_cli.core.shot.refine_shot`: once frame
by frame (``consistent=False``, as ``refine --per-frame``) and once as a shot
(co-aligned conditioning, as ``refine`` does for videos and sequences). It scores
four variants per clip with :func:`~betterdepth_cli.evaluation.temporal.clip_temporal_scores`:

- ``conditioner``: the conditioner's own per-frame maps;
- ``conditioner-shot``: the same maps co-aligned to the shot (no refiner);
- ``per-frame``: each frame refined on its own;
- ``shot``: the shot refined with co-aligned conditioning.

Without a refiner (``refine=False``) only the two conditioner variants are scored.
The means are over clips; ``seconds_per_frame`` is each pass's wall time per frame
(conditioner, co-alignment and refiner; frames are decoded once per clip beforehand).
A clip's frames and maps are held while it is scored: bound long real sequences
with the ``max_frames`` option.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from betterdepth_cli.evaluation.sequences import Clip, get_sequence_dataset
from betterdepth_cli.evaluation.temporal import clip_temporal_scores

METRICS = ("abs_rel", "delta1", "tae", "flicker")
VARIANTS = ("conditioner", "conditioner-shot", "per-frame", "shot")


@dataclass
class TemporalConfig:
    """What a temporal evaluation depends on; ``None`` takes the model card's defaults."""

    dataset: str
    data_root: str
    dataset_options: dict[str, Any] = field(default_factory=dict)
    conditioner: str | None = None
    model: str | None = None
    refine: bool = True
    steps: int | None = None
    ensemble: int | None = None
    reduction: str | None = None
    processing_res: int | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "fp32"
    batch_size: int = 1


@dataclass
class TemporalResult:
    config: TemporalConfig
    variants: tuple[str, ...]
    clips: list[dict[str, Any]]  # {"clip", "frames", variant: {metric: value}}
    means: dict[str, dict[str, float]]
    seconds_per_frame: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"format": "betterdepth-eval-temporal/1", "config": asdict(self.config), "variants": list(self.variants),
                "means": self.means, "seconds_per_frame": self.seconds_per_frame, "clips": self.clips}


def _disparity_like(values: np.ndarray, kind: str) -> np.ndarray:
    """A prediction as disparity for the clip alignment (a depth map is inverted)."""
    if kind == "depth":
        return 1.0 / np.clip(values, 1e-6, None)
    return values


def predict_clip(clip_frames, conditioner, model, consistent: bool, settings: dict, seed: int,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray, str, float]:
    """(refined (N,H,W), conditioning (N,H,W), kind, seconds) of one pass over a clip's frames."""
    import torch

    from betterdepth_cli.core.shot import refine_shot

    refined, cond, kind = [], [], "disparity"
    t0 = time.perf_counter()
    frames = ((torch.from_numpy(s.rgb).permute(2, 0, 1), s.id) for s in clip_frames)
    for res in refine_shot(frames, conditioner=conditioner, model=model, consistent=consistent, seed=seed,
                           batch_size=batch_size, **settings):
        refined.append(res.refined[0, 0].float().cpu().numpy())
        cond.append(res.conditioning[0, 0].float().cpu().numpy())
        kind = res.kind
    return np.stack(refined), np.stack(cond), kind, time.perf_counter() - t0


def score_clip(clip: Clip, frames, conditioner, model, settings: dict, cfg: TemporalConfig) -> tuple[dict, dict]:
    """Scores of every variant of one clip and the seconds of each pass."""
    gt = np.stack([s.gt for s in frames])
    valid = np.stack([s.valid for s in frames])
    maps, seconds = {}, {}
    per, cond, kind, seconds["per-frame"] = predict_clip(frames, conditioner, model, False, settings, cfg.seed,
                                                        cfg.batch_size)
    shot, cond_shot, _, seconds["shot"] = predict_clip(frames, conditioner, model, True, settings, cfg.seed,
                                                      cfg.batch_size)
    maps["conditioner"], maps["conditioner-shot"] = cond, cond_shot
    if model is not None:
        maps["per-frame"], maps["shot"] = per, shot
    row = {"clip": clip.id, "frames": len(frames)}
    for name, pred in maps.items():
        row[name] = clip_temporal_scores(_disparity_like(pred, kind), gt, valid, clip.poses, clip.K, clip.max_depth)
    return row, seconds


def run_temporal_evaluation(cfg: TemporalConfig, progress: Callable[[int, int, str], None] | None = None,
                            conditioner=None, model=None) -> TemporalResult:
    """Evaluate every clip of ``cfg.dataset`` (module doc); loaded ``conditioner``/``model`` may be passed in."""

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.devices import torch_dtype
    from betterdepth_cli.core.refiner import load_model
    from betterdepth_cli.core.settings import card_defaults

    clips = get_sequence_dataset(cfg.dataset, cfg.data_root, **cfg.dataset_options)
    dtype = torch_dtype(cfg.dtype)
    if model is None and cfg.refine:
        model = load_model(cfg.model, device=cfg.device, dtype=dtype)
    if conditioner is None:
        spec = cfg.conditioner or card_defaults(getattr(model, "card", None))["conditioner"]
        conditioner = get_conditioner(spec, device=cfg.device, dtype=dtype)
    settings = {"steps": cfg.steps, "ensemble": cfg.ensemble, "reduction": cfg.reduction,
                "processing_res": cfg.processing_res}
    rows, secs, nframes = [], {"per-frame": 0.0, "shot": 0.0}, 0
    for k, clip in enumerate(clips):
        frames = [clip.frame(i) for i in range(len(clip))]
        row, seconds = score_clip(clip, frames, conditioner, model, settings, cfg)
        rows.append(row)
        nframes += len(frames)
        for key, v in seconds.items():
            secs[key] += v
        if progress:
            progress(k + 1, len(clips), clip.id)
    variants = VARIANTS if model is not None else VARIANTS[:2]
    means = {v: {m: _mean([r[v][m] for r in rows]) for m in METRICS} for v in variants}
    return TemporalResult(cfg, variants, rows, means, {k: v / max(nframes, 1) for k, v in secs.items()})


def _mean(values: list[float]) -> float:
    """Mean of the finite values; nan when there is none (e.g. no pixel with unchanged ground truth)."""
    ok = [v for v in values if np.isfinite(v)]
    return float(np.mean(ok)) if ok else float("nan")


def format_table(result: TemporalResult) -> str:
    """The means as a plain text table (variants as columns)."""
    labels = {"abs_rel": "AbsRel % (clip-aligned)", "delta1": "delta1 %", "tae": "TAE %",
              "flicker": "flicker % of range"}
    head = f"{'metric':<26}" + "".join(f"{v:>18}" for v in result.variants)
    lines = [head]
    for m in METRICS:
        scale = 100.0 if m in ("abs_rel", "delta1") else 1.0
        lines.append(f"{labels[m]:<26}" + "".join(f"{scale * result.means[v][m]:>18.3f}" for v in result.variants))
    return "\n".join(lines)
