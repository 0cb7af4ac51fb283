"""Tiled refinement on large synthetic plates (issue 22, success 2 and 3): seams and detail.

Renders (once, cached) procedural scenes at plate size with ``betterdepth synth`` (open3d), then for
each plate refines the same conditioning two ways with the default model:

- ``upsampled``: refine at the model's processing resolution (its card's ``max_processing_res``),
  then resize to the plate (what ``--tile 0`` does);
- ``tiled``: overlapping tiles at the plate's own pixel scale fitted to a whole-frame anchor
  (the default above the card's ``tile_above``).

Conditionings: ``sigma S`` = the ground truth's disparity blurred by S x the longest side (a strong
public conditioner's kind of error, as in bench/plug_and_play.py), and ``builtin``.

Scores (evaluation.protocol: least-squares alignment in disparity, full resolution): AbsRel,
DBE_acc, edge F1, averaged over plates (DBE_acc over those with ground-truth edges). Seams: mean |gradient| of the tiled map within 2 px of a tile
border over its mean elsewhere (1 = invisible; the upsampled map at the same places as a control).
Prints the tables, then the seam ratio last.

    python bench/tiled_plates.py [--plates /work/runs/plates/synth3072] [--n 8] [--size 3072x2048]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METRICS = ("abs_rel", "dbe_acc", "edge_f1")
BORDER_PX = 2


def render(folder: Path, n: int, size: str, seed: int) -> None:
    if len(list((folder / "rgb").glob("*.png"))) >= n:
        return
    subprocess.run([sys.executable, "-m", "betterdepth_cli", "synth", "-n", str(n), "-o", str(folder), "--seed",
                    str(seed), "--size", size, "-q"], check=True)


def seam_ratio(values: np.ndarray, rows: list[int], cols: list[int], px: int = BORDER_PX) -> float:
    """Mean |gradient| within ``px`` of the given border rows/columns over the mean elsewhere."""
    gy, gx = np.gradient(values.astype(np.float64))
    mag = np.hypot(gy, gx)
    near = np.zeros(values.shape, bool)
    for r in rows:
        near[max(0, r - px) : r + px, :] = True
    for c in cols:
        near[:, max(0, c - px) : c + px] = True
    return float(mag[near].mean() / mag[~near].mean())


def _score(pred: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    from betterdepth_cli.evaluation.protocol import evaluate_sample

    s = evaluate_sample(pred, "disparity", depth, valid, min_depth=1e-3, max_depth=80.0, metrics=METRICS)
    return {k: float(s.metrics[k]) for k in METRICS}


def run_plate(model, conditioner, rgb: np.ndarray, cond: np.ndarray | None,
              tiling: tuple[int, int] | None = None) -> tuple[dict, tuple[list, list]]:
    import torch

    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.tiled import refine_tiled
    from betterdepth_cli.core.tiling import axis_tiles, tile_borders, tiling_for
    from betterdepth_cli.core.types import DepthPrediction

    h, w = rgb.shape[:2]
    pred = None
    if cond is not None:
        t = torch.from_numpy(cond)[None, None]
        pred = DepthPrediction(t, torch.ones_like(t, dtype=torch.bool), "disparity")
    tile, overlap = tiling or tiling_for(h, w, model.defaults, None, None, 0)
    up = refine_batch(rgb, model=model, conditioner=conditioner, prediction=pred, processing_res=0)
    tiled = refine_tiled(rgb, model=model, conditioner=conditioner, prediction=pred, tile=tile, overlap=overlap)
    m = model.pad_multiple
    borders = (tile_borders(axis_tiles(h, tile, overlap, m), h), tile_borders(axis_tiles(w, tile, overlap, m), w))
    maps = {"upsampled": up.refined[0, 0].float().numpy(), "tiled": tiled.refined[0, 0].float().numpy()}
    return maps, borders


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plates", default="/work/runs/plates/synth3072")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", default="3072x2048")
    ap.add_argument("--seed", type=int, default=1000000, help="held-out scenes start at 1000000")
    ap.add_argument("--sigmas", default="0.005,0.01")
    ap.add_argument("--builtin", action="store_true", help="also score over the builtin conditioner")
    ap.add_argument("--tile", default=None, help="SIZE:OVERLAP (default: the model card's)")
    a = ap.parse_args()

    import cv2
    import torch

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.refiner import load_model
    from training.simulated_conditioner import simulated_disparity

    folder = Path(a.plates)
    render(folder, a.n, a.size, a.seed)
    torch.manual_seed(0)
    model = load_model(None)
    builtin = get_conditioner("builtin") if a.builtin else None
    conds = [f"sigma {s}" for s in a.sigmas.split(",") if s] + (["builtin"] if a.builtin else [])
    scores = {c: {v: [] for v in ("upsampled", "tiled")} for c in conds}
    seams = {"upsampled": [], "tiled": []}
    t0 = time.perf_counter()
    for rgb_path in sorted((folder / "rgb").glob("*.png"))[: a.n]:
        rgb = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)[..., ::-1].copy()
        depth = np.load(folder / "depth" / (rgb_path.stem + ".npy")).astype(np.float32)
        valid = np.isfinite(depth) & (depth > 0)
        for c in conds:
            cond = None
            if c != "builtin":
                sigma = float(c.split()[1]) * max(depth.shape)
                cond = simulated_disparity(depth, valid, sigma, 0.0, np.random.default_rng(0))
            tiling = tuple(int(v) for v in a.tile.split(":")) if a.tile else None
            maps, (rows, cols) = run_plate(model, builtin if c == "builtin" else None, rgb, cond, tiling)
            for v, pred in maps.items():
                scores[c][v].append(_score(pred, depth, valid))
                print(f"  {rgb_path.stem} {c} {v}: " + ", ".join(f"{k} {x:.4f}" for k, x in scores[c][v][-1].items()),
                      file=sys.stderr, flush=True)
                if c == conds[0]:
                    seams[v].append(seam_ratio(pred, rows, cols))
        print(f"{rgb_path.stem}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"{len(seams['tiled'])} plates {a.size}, default model, tiles {a.tile or 'of the card'}")
    print("| conditioning | variant | AbsRel | DBE_acc | edge F1 |\n|---|---|---|---|---|")
    for c in conds:
        for v in ("upsampled", "tiled"):
            mean = {k: np.nanmean([s[k] for s in scores[c][v]]) for k in METRICS}  # DBE: plates with GT edges
            print(f"| {c} | {v} | {mean['abs_rel']:.4f} | {mean['dbe_acc']:.3f} | {mean['edge_f1']:.4f} |")
    # the scene alone sets the ratio of a map made without tiles at those places (objects crossing a
    # border line); the tiled map's ratio over the control's is what the tiles add
    rel = [t / u for t, u in zip(seams["tiled"], seams["upsampled"])]
    print(f"seam ratio per plate, tiled: {' '.join(f'{x:.3f}' for x in seams['tiled'])}")
    print(f"seam ratio per plate, upsampled (no tiles, the same places): {' '.join(f'{x:.3f}' for x in seams['upsampled'])}")
    print(f"seam ratio, tiled over upsampled (what the tiles add): {np.mean(rel):.3f}")
    print(f"seam ratio (mean |grad| within {BORDER_PX} px of tile borders / elsewhere, tiled): "
          f"{np.mean(seams['tiled']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
