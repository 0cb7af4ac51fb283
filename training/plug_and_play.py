"""Does the refiner earn its cost? The plug-and-play measurements of the default model.

Each real development scene is scored under the eval protocol (least-squares
alignment in disparity, `betterdepth_cli.evaluation.protocol`) for four maps:

- ``conditioner``: the conditioning alone;
- ``guided``: the classical refiner, the conditioning guided-filtered with the
  photo as the guide (:mod:`betterdepth_cli.core.guided`, the card's defaults);
- ``refined``: the refiner under test over the same conditioning;
- ``control``: the conditioning plus 0.3 x the photo's luminance (scaled to the
  conditioning's 2-98 % range): a map that cheats, drawing the photo's edges
  and texture into depth. A detail metric that this control wins is not
  measuring depth detail.

Conditionings: ``builtin`` (the embedded feed-forward model), and a simulated
strong conditioner, the ground truth's disparity blurred by a Gaussian of
sigma = 0.5 %, 1 % and 2 % of the longest side (the right layout with soft
edges, which is what public models give relative to ground truth). Pixels
without ground truth (stereo occlusions, NYUv2's cropped border) take the
background's disparity before the blur (``background_fill``); until
2026-12-06 they took half the smallest disparity, which drew a far hole at
every occlusion and a far frame around every NYUv2 image.

Two sharper conditionings, where the refiner must do no harm: ``sharp 384``, the ground truth's
disparity at a public model's output resolution (area-resized to :data:`SHARP_SIDE` px on the
longest side and back, bicubic: edges of 1-1.5 px on Middlebury, 1.7-4 px on NYUv2, whose ground
truth is itself soft), and ``mixed blur``, a blur that grows across
the frame (:data:`MIXED_SHARES` of the longest side, from the left edge to the right: a
conditioner whose edges are sharp in places and soft in others).

Scenes are split in two named halves: settings are chosen on ``dev`` and
reported on ``report`` (:data:`SPLITS`). Two artefact figures complete it:

- :func:`grid_ratio`: mean |gradient| across the codec's cell borders over
  that inside cells (1.0 = no grid), on real photos with ``builtin`` and on the
  real scenes with the strong conditioner (a refiner that leaves ``builtin``'s
  smooth maps alone is not tested by the first);
- :func:`plane_leakage`: photos used as the texture of a tilted plane whose
  exact disparity is the conditioning; the RMS distance of the output from its
  best-fitting plane, in % of the plane's disparity range (0 = no texture
  printed into depth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

SIGMAS = (0.005, 0.01, 0.02)
VARIANTS = ("conditioner", "guided", "refined", "control")
METRICS = ("abs_rel", "dbe_comp", "dbe_acc", "ep", "er", "edge_f1")
CONTROL_WEIGHT = 0.3
#: ``sharp 384``: the longest side the ground truth is resized to and back.
SHARP_SIDE = 384
#: ``mixed blur``: the blurs (shares of the longest side) at evenly spaced columns, left to right.
MIXED_SHARES = (0.001, 0.0025, 0.005, 0.01)
#: Development scenes (settings chosen on these) and report scenes (never used to choose).
SPLITS = {
    "middlebury": {"dev": ("Art", "Books", "Dolls"), "report": ("Laundry", "Moebius", "Reindeer")},
    "nyuv2": {"dev": ("image_0", "image_1"), "report": ("image_2", "image_3", "image_4")},
}
DATASET_FOLDERS = {"middlebury": "middlebury2005", "nyuv2": "nyuv2"}


def scene_of(sample_id: str) -> str:
    """``Art/view1`` -> ``Art``; ``image_0`` -> ``image_0``."""
    return sample_id.split("/")[0]


def luminance_control(cond: np.ndarray, rgb: np.ndarray, weight: float = CONTROL_WEIGHT) -> np.ndarray:
    """``cond`` (H,W) plus ``weight`` x luma of ``rgb`` (H,W,3 in [0,1]) x the 2-98 % range of ``cond``."""
    from betterdepth_cli.core.guided import LUMA

    lo, hi = np.percentile(cond[np.isfinite(cond)], [2, 98])
    luma = rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1] + rgb[..., 2] * LUMA[2]
    return (cond + weight * (hi - lo) * luma).astype(np.float32)


def grid_ratio(x: np.ndarray, cell: int) -> float:
    """Mean |difference| between neighbours in different ``cell`` x ``cell`` cells over that within one cell.

    Differences along both axes of the (H,W) map; the difference between
    columns j and j+1 crosses a border when (j + 1) % cell == 0 (cells start at 0).
    1.0 when borders are invisible; a grid printed by the codec gives more.
    """
    if cell < 2:
        raise ValueError(f"`cell` must be >= 2, got {cell}")
    x = np.asarray(x, np.float64)
    dx = np.abs(np.diff(x, axis=1))  # (H, W-1)
    dy = np.abs(np.diff(x, axis=0))  # (H-1, W)
    cross_x = (np.arange(dx.shape[1]) + 1) % cell == 0
    cross_y = (np.arange(dy.shape[0]) + 1) % cell == 0
    cross = np.concatenate([dx[:, cross_x].ravel(), dy[cross_y, :].ravel()])
    within = np.concatenate([dx[:, ~cross_x].ravel(), dy[~cross_y, :].ravel()])
    return float(cross.mean() / max(within.mean(), 1e-12))


def codec_cell(model) -> int:
    """The side of the model's autoencoder cell in pixels (the grid a codec could print); 4 without one."""
    return int(getattr(getattr(model, "codec", None), "factor", 4))


def tilted_plane(height: int, width: int, near: float = 1.0, far: float = 0.25) -> np.ndarray:
    """(H,W) float32 disparity of a plane tilted away from the camera: ``near`` at the bottom row, ``far`` at the top."""
    rows = np.linspace(far, near, height, dtype=np.float32)[:, None]
    cols = np.linspace(-0.05, 0.05, width, dtype=np.float32)[None, :] * (near - far)
    return (rows + cols).astype(np.float32)


def plane_leakage(pred: np.ndarray, plane: np.ndarray) -> float:
    """RMS distance of ``pred`` from its least-squares plane a*x + b*y + c, in % of ``plane``'s 2-98 % range."""
    h, w = pred.shape
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx.ravel(), yy.ravel(), np.ones(h * w)], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, pred.ravel().astype(np.float64), rcond=None)
    resid = pred.ravel() - a @ coef
    lo, hi = np.percentile(plane, [2, 98])
    return float(100.0 * np.sqrt(np.mean(resid**2)) / (hi - lo))


@dataclass
class Scores:
    """Mean metrics per (dataset, half, conditioning, variant), and the artefact figures."""

    table: dict[str, dict[str, float]] = field(default_factory=dict)  # "dataset|half|conditioning|variant" -> metrics
    grid: dict[str, float] = field(default_factory=dict)  # variant -> mean grid ratio over the photos
    grid_strong: dict[str, float] = field(default_factory=dict)  # variant -> mean grid ratio, strong conditioner
    leakage: dict[str, float] = field(default_factory=dict)  # variant -> mean plane leakage (%)
    seconds: float = 0.0

    def get(self, dataset: str, half: str, conditioning: str, variant: str) -> dict[str, float]:
        return self.table[f"{dataset}|{half}|{conditioning}|{variant}"]


def _torch_images(rgb: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), np.float32))[None]


def _refine(model, rgb: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """The refiner's output over ``cond`` (disparity), at the image's size."""
    import torch

    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.types import DepthPrediction

    values = torch.from_numpy(cond)[None, None]
    pred = DepthPrediction(values, torch.isfinite(values), "disparity")
    res = refine_batch(_torch_images(rgb), prediction=pred, model=model, generator=torch.Generator().manual_seed(0))
    return res.refined[0, 0].float().cpu().numpy()


def _guided(rgb: np.ndarray, cond: np.ndarray) -> np.ndarray:
    import torch

    from betterdepth_cli.core.guided import guided_refine

    return guided_refine(torch.from_numpy(cond)[None, None], _torch_images(rgb))[0, 0].numpy()


def variant_maps(model, rgb: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
    """The four maps of :data:`VARIANTS` for one photo and conditioning (all disparity, (H,W))."""
    return {"conditioner": cond, "guided": _guided(rgb, cond), "refined": _refine(model, rgb, cond),
            "control": luminance_control(cond, rgb)}


def simulated_strong(sample, sigma: float) -> np.ndarray:
    """The ground truth's disparity blurred by ``sigma`` x the longest side (no warp), its invalid pixels
    first given the background's disparity (``fill="background"``: occlusions and NYUv2's cropped
    border, which a constant far fill would turn into holes and a frame that no conditioner draws)."""
    from training.simulated_conditioner import simulated_disparity

    h, w = sample.valid.shape
    return simulated_disparity(sample.depth(), sample.valid, sigma * max(h, w), 0.0, np.random.default_rng(0),
                               fill="background")


def ground_truth_disparity(sample) -> np.ndarray:
    """The ground truth's disparity, its invalid pixels given the background's: :func:`simulated_strong`
    without the blur."""
    return simulated_strong(sample, 0.0)


def low_resolution(disp: np.ndarray, side: int = SHARP_SIDE) -> np.ndarray:
    """``disp`` area-resized to ``side`` px on its longest side and back (bicubic): a sharp conditioning."""
    import cv2

    h, w = disp.shape
    scale = side / max(h, w)
    small = cv2.resize(disp, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)


def mixed_blur(disp: np.ndarray, shares: tuple[float, ...] = MIXED_SHARES) -> np.ndarray:
    """``disp`` blurred by ``shares[k]`` x its longest side at ``len(shares)`` evenly spaced columns from
    the left edge to the right, linearly between (each column a blend of the two nearest blurs)."""
    import cv2

    h, w = disp.shape
    maps = np.stack([cv2.GaussianBlur(disp, (0, 0), s * max(h, w), borderType=cv2.BORDER_REFLECT) for s in shares])
    x = np.linspace(0.0, len(shares) - 1, w)
    i = np.minimum(np.floor(x).astype(int), len(shares) - 2)
    f = (x - i)[None, :]
    cols = np.arange(w)
    return (maps[i, :, cols].T * (1 - f) + maps[i + 1, :, cols].T * f).astype(np.float32)


def measure(model, real_root: str | Path, datasets: Iterable[str] = ("middlebury", "nyuv2"),
            sigmas: Iterable[float] = SIGMAS, photos: Iterable[str | Path] = ()) -> Scores:
    """Score every split scene of ``real_root`` (the layout of ``../shared/data/real``); see the module doc."""
    import time

    import torch

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.evaluation import metrics as M
    from betterdepth_cli.evaluation import protocol as P
    from betterdepth_cli.evaluation.datasets import get_dataset

    t0 = time.perf_counter()
    builtin = get_conditioner("builtin")
    per: dict[str, list[dict[str, float]]] = {}
    strong_grid: dict[str, list[float]] = {}
    cell = codec_cell(model)
    for name in datasets:
        ds = get_dataset(name, Path(real_root) / DATASET_FOLDERS[name])
        halves = {scene: half for half, scenes in SPLITS[name].items() for scene in scenes}
        for sample in ds:
            half = halves.get(scene_of(sample.id))
            if half is None:
                continue
            gt = sample.depth()
            target = M.prepare_target_edges(gt, sample.valid, METRICS)
            with torch.no_grad():
                b = builtin.predict(_torch_images(sample.rgb)).values[0, 0].float().numpy()
            truth = ground_truth_disparity(sample)
            conds = {"builtin": b, **{f"sigma {s:g}": simulated_strong(sample, s) for s in sigmas},
                     f"sharp {SHARP_SIDE}": low_resolution(truth), "mixed blur": mixed_blur(truth)}
            for cname, cond in conds.items():
                for variant, pred in variant_maps(model, sample.rgb, cond).items():
                    sc = P.evaluate_sample(pred, "disparity", gt, sample.valid, min_depth=ds.min_depth,
                                           max_depth=ds.max_depth, metrics=METRICS, target_edges=target)
                    per.setdefault(f"{name}|{half}|{cname}|{variant}", []).append(sc.metrics)
                    if cname.startswith("sigma"):
                        strong_grid.setdefault(variant, []).append(grid_ratio(pred, cell))
    out = Scores()
    for key, rows in per.items():
        out.table[key] = {m: float(np.nanmean([r[m] for r in rows])) for m in METRICS}
    out.grid_strong = {k: float(np.mean(v)) for k, v in strong_grid.items()}
    if photos:
        out.grid, out.leakage = artefacts(model, photos)
    out.seconds = time.perf_counter() - t0
    return out


def artefacts(model, photos: Iterable[str | Path]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean grid ratio (``builtin`` conditioning) and plane leakage per variant over ``photos``."""
    import torch

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.io.images import read_image

    builtin = get_conditioner("builtin")
    cell = codec_cell(model)
    grid: dict[str, list[float]] = {}
    leak: dict[str, list[float]] = {}
    for path in photos:
        rgb = read_image(path)
        rgb = (rgb.astype(np.float32) / (65535.0 if rgb.dtype == np.uint16 else 255.0)) if rgb.dtype != np.float32 else rgb
        rgb = rgb[..., :3] if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, -1)
        with torch.no_grad():
            b = builtin.predict(_torch_images(rgb)).values[0, 0].float().numpy()
        for variant, pred in variant_maps(model, rgb, b).items():
            grid.setdefault(variant, []).append(grid_ratio(pred, cell))
        plane = tilted_plane(*rgb.shape[:2])
        for variant, pred in variant_maps(model, rgb, plane).items():
            leak.setdefault(variant, []).append(plane_leakage(pred, plane))
    mean = lambda d: {k: float(np.mean(v)) for k, v in d.items()}
    return mean(grid), mean(leak)


def gates(s: Scores, max_abs_rel_ratio: float = 1.05, half: str = "report") -> list[tuple[bool, str]]:
    """The success gates of issue 18 over the ``report`` halves (or ``dev``, to choose settings): (passed, line) each."""
    out: list[tuple[bool, str]] = []
    for cname in (f"sigma {x:g}" for x in SIGMAS):
        c, g, r = (s.get("middlebury", half, cname, v) for v in ("conditioner", "guided", "refined"))
        for m in ("dbe_comp", "dbe_acc", "edge_f1"):
            better = (lambda a, b: a > b) if m == "edge_f1" else (lambda a, b: a < b)
            ok = better(r[m], c[m]) and better(r[m], g[m])
            out.append((ok, f"Middlebury {half}, {cname}: refined {m} {r[m]:.4f} beats conditioner {c[m]:.4f} "
                            f"and guided {g[m]:.4f}"))
        ratio = r["abs_rel"] / c["abs_rel"]
        out.append((ratio <= max_abs_rel_ratio, f"Middlebury {half}, {cname}: AbsRel {r['abs_rel']:.4f} = "
                                                f"{ratio:.3f} x the conditioner's (limit {max_abs_rel_ratio})"))
    for ds in ("middlebury", "nyuv2"):
        c, r, k = (s.get(ds, half, "builtin", v) for v in ("conditioner", "refined", "control"))
        out.append((r["abs_rel"] <= c["abs_rel"], f"{ds} {half}, builtin: AbsRel {r['abs_rel']:.6f} not worse "
                                                  f"than builtin alone {c['abs_rel']:.6f}"))
        no_edges = not (r["ep"] > 0)
        ok = no_edges or r["ep"] >= k["ep"]
        out.append((ok, f"{ds} {half}, builtin: EP {r['ep']:.4f} at least the luminance control's {k['ep']:.4f} "
                        "(or no edges added)"))
    if s.grid:
        out.append((s.grid["refined"] <= 1.1, f"grid ratio on real photos {s.grid['refined']:.3f} (limit 1.1)"))
    if s.grid_strong:  # builtin's smooth maps may leave the refiner nothing to do: also over strong conditioners
        out.append((s.grid_strong["refined"] <= 1.1, f"grid ratio over the strong conditioner on the real scenes "
                                                       f"{s.grid_strong['refined']:.3f} (limit 1.1)"))
    if s.leakage:
        out.append((s.leakage["refined"] < s.leakage["control"],
                    f"plane leakage {s.leakage['refined']:.3f} % below the luminance control's "
                    f"{s.leakage['control']:.3f} %"))
    return out


def render(s: Scores, halves: Iterable[str] = ("dev", "report")) -> list[str]:
    """Markdown tables: one per dataset and half, rows conditioning x variant."""
    lines: list[str] = []
    pct = {"abs_rel", "ep", "er", "edge_f1"}
    head = "| conditioning | variant | AbsRel | DBE_comp | DBE_acc | EP | ER | edge F1 |"
    for ds in SPLITS:
        for half in halves:
            keys = [k for k in s.table if k.startswith(f"{ds}|{half}|")]
            if not keys:
                continue
            scenes = ", ".join(SPLITS[ds][half])
            lines += ["", f"{ds}, {half} half ({scenes}):", "", head, "|---|---|---|---|---|---|---|---|"]
            conds = list(dict.fromkeys(k.split("|")[2] for k in keys))
            for cname in conds:
                for v in VARIANTS:
                    m = s.get(ds, half, cname, v)
                    cells = [f"{m[x]:.4f}" if x in pct else f"{m[x]:.2f}" for x in METRICS]
                    lines.append(f"| {cname} | {v} | " + " | ".join(cells) + " |")
    if s.grid:
        lines += ["", "| artefact | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS),
                  "| grid ratio (builtin, photos) | " + " | ".join(f"{s.grid[v]:.3f}" for v in VARIANTS) + " |",
                  *(["| grid ratio (strong conditioner, real scenes) | "
                     + " | ".join(f"{s.grid_strong[v]:.3f}" for v in VARIANTS) + " |"] if s.grid_strong else []),
                  "| plane leakage, % of range | " + " | ".join(f"{s.leakage[v]:.3f}" for v in VARIANTS) + " |"]
    return lines


def from_json(d: dict[str, Any]) -> Scores:
    """The :class:`Scores` that :func:`to_json` wrote (older records lack ``grid_strong``)."""
    return Scores(table=d["table"], grid=d.get("grid", {}), grid_strong=d.get("grid_strong", {}),
                  leakage=d.get("leakage", {}), seconds=d.get("seconds", 0.0))


def to_json(s: Scores) -> dict[str, Any]:
    clean = lambda d: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
    return {"table": {k: clean(v) for k, v in s.table.items()}, "grid": s.grid, "grid_strong": s.grid_strong,
            "leakage": s.leakage, "seconds": s.seconds}
