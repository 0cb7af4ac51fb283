"""Temporal metrics of a clip's predictions (NumPy), as Video Depth Anything measures them.

Every function takes the clip's frames stacked: ``pred`` (N,H,W), ground-truth depth
``gt`` (N,H,W) in metres, ``valid`` (N,H,W) bool.

- :func:`fit_clip_disparity`: ONE scale and shift for the whole clip, least squares of the
  prediction (disparity, clipped at 1e-3 as VDA does) onto the ground-truth disparity over
  the valid pixels of every frame; :func:`clip_depth` turns the aligned disparity into
  depth clipped to [1e-3, max_depth] (VDA's ``eval_tae.py``).
- :func:`clip_scores`: AbsRel and delta1 of that clip-aligned depth (the mean over frames).
- :func:`tae`: temporal alignment error (VDA): for each pair of consecutive frames, frame t's
  aligned depth is unprojected with K, moved into frame t+1 with the ground-truth poses,
  projected and rounded to the nearest pixel (a z-buffer keeps the nearest point where VDA
  keeps an arbitrary one), and compared with frame t+1's aligned depth by AbsRel over the
  pixels where both exist; the same from t+1 back to t; the mean over both directions and all
  pairs, in percent. ``mask`` (the ground truth's valid pixels here; VDA's own masks where a
  dataset has them) restricts both the moved pixels and the compared ones.
- :func:`flicker`: a pose-free figure: the mean absolute change of the clip-aligned disparity
  between consecutive frames over the pixels whose ground-truth depth did not change
  (relative change <= ``tolerance``), in percent of the clip's ground-truth disparity range
  (its 2-98 % quantiles).
"""

from __future__ import annotations

import numpy as np

from betterdepth_cli.core.reprojection import relative_pose, reproject_depth

MIN_DISPARITY = 1e-3
FLICKER_TOLERANCE = 1e-4


def gt_disparity(gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1 / depth over valid positive pixels, 0 elsewhere (float64)."""
    ok = valid & (gt > 0)
    return np.where(ok, 1.0 / np.where(ok, gt, 1.0), 0.0)


def fit_clip_disparity(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """One (scale, shift) for the clip: ``scale * clip(pred, 1e-3) + shift ~ 1 / gt`` over valid pixels."""
    ok = valid & (gt > 0) & np.isfinite(pred)
    p = np.clip(pred[ok].astype(np.float64), MIN_DISPARITY, None)
    t = 1.0 / gt[ok].astype(np.float64)
    if p.size < 2:
        return 1.0, 0.0
    A = np.stack([p, np.ones_like(p)], axis=1)
    (s, b), *_ = np.linalg.lstsq(A, t, rcond=None)
    return float(s), float(b)


def clip_depth(pred: np.ndarray, scale: float, shift: float, max_depth: float) -> np.ndarray:
    """Clip-aligned depth: 1 / max(scale * clip(pred, 1e-3) + shift, 1e-3), clipped to [1e-3, max_depth]."""
    disp = np.clip(scale * np.clip(pred.astype(np.float64), MIN_DISPARITY, None) + shift, MIN_DISPARITY, None)
    return np.clip(1.0 / disp, 1e-3, max_depth)


def clip_scores(depth: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """AbsRel and delta1 of clip-aligned ``depth`` (mean over frames with valid pixels)."""
    rel, d1 = [], []
    for d, g, v in zip(depth, gt, valid):
        ok = v & (g > 0)
        if not ok.any():
            continue
        p, t = d[ok], g[ok].astype(np.float64)
        rel.append(float(np.mean(np.abs(p - t) / t)))
        d1.append(float(np.mean(np.maximum(p / t, t / p) < 1.25)))
    return {"abs_rel": float(np.mean(rel)) if rel else float("nan"),
            "delta1": float(np.mean(d1)) if d1 else float("nan")}


def tae_pair(depth1: np.ndarray, depth2: np.ndarray, transform: np.ndarray, K: np.ndarray,
             mask1: np.ndarray | None = None, mask2: np.ndarray | None = None) -> float:
    """AbsRel of frame 1's depth moved into frame 2 (``transform`` 1 -> 2) against frame 2's depth.

    0.0 when no pixel is compared (VDA's convention)."""
    proj = reproject_depth(depth1, K, transform, mask1)
    ok = (proj > 0) & (depth2 > 0)
    if mask2 is not None:
        ok &= mask2
    if not ok.any():
        return 0.0
    return float(np.mean(np.abs(depth2[ok] - proj[ok]) / depth2[ok]))


def tae(depth: np.ndarray, poses: np.ndarray, K: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Temporal alignment error in percent (module doc); 0 for a clip of one frame.

    Args:
        depth: (N,H,W) clip-aligned depth; poses: (N,4,4) camera-to-world; K: (3,3);
        mask: optional (N,H,W) bool pixels to use.
    """
    n = len(depth)
    if n < 2:
        return 0.0
    total = 0.0
    for t in range(n - 1):
        T = relative_pose(poses[t], poses[t + 1])
        m1 = None if mask is None else mask[t]
        m2 = None if mask is None else mask[t + 1]
        total += tae_pair(depth[t], depth[t + 1], T, K, m1, m2)
        total += tae_pair(depth[t + 1], depth[t], np.linalg.inv(T), K, m2, m1)
    return 100.0 * total / (2 * (n - 1))


def flicker(disparity: np.ndarray, gt: np.ndarray, valid: np.ndarray,
            tolerance: float = FLICKER_TOLERANCE) -> float:
    """Mean |change| of clip-aligned ``disparity`` between consecutive frames where the ground truth
    did not change, in percent of the clip's ground-truth disparity range; nan without such pixels."""
    gdisp = gt_disparity(gt, valid)
    ok_all = valid & (gt > 0)
    if not ok_all.any():
        return float("nan")
    lo, hi = np.quantile(gdisp[ok_all], [0.02, 0.98])
    span = max(float(hi - lo), 1e-12)
    diffs = []
    for t in range(1, len(disparity)):
        same = ok_all[t] & ok_all[t - 1]
        same &= np.abs(gt[t].astype(np.float64) - gt[t - 1]) <= tolerance * np.abs(gt[t])
        if same.any():
            diffs.append(np.abs(disparity[t][same].astype(np.float64) - disparity[t - 1][same]))
    if not diffs:
        return float("nan")
    return 100.0 * float(np.mean(np.concatenate(diffs))) / span


def clip_temporal_scores(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, poses: np.ndarray,
                         K: np.ndarray, max_depth: float) -> dict[str, float]:
    """Every figure of one clip: abs_rel, delta1, tae (%), flicker (% of range), scale, shift.

    ``pred`` is disparity-like (N,H,W) (a depth prediction: pass 1 / depth)."""
    s, b = fit_clip_disparity(pred, gt, valid)
    finite_max = max_depth if np.isfinite(max_depth) else float(np.max(gt[valid], initial=1.0)) * 10
    depth = clip_depth(pred, s, b, finite_max)
    out = clip_scores(depth, gt, valid)
    out["tae"] = tae(depth, poses, K, valid)
    out["flicker"] = flicker(1.0 / depth, gt, valid)
    out["scale"], out["shift"] = s, b
    return out
