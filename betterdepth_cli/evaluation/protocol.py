"""The zero-shot evaluation protocol (Marigold's, which BetterDepth follows).

For one sample with ground-truth depth ``gt`` (metres, or any unit), its valid
mask (depth range and dataset crop already applied by the loader) and a raw
prediction of some ``kind``:

1. Align: least squares of ``[pred, 1]`` to the ground truth over valid pixels
   (``betterdepth_cli.core.align.fit_scale_shift``). A disparity prediction is
   fitted to ``1/gt`` over valid pixels where both are positive (Marigold's
   ``least_square_disparity``), the aligned disparity is clipped to
   ``>= MIN_DISPARITY`` (1e-3) and inverted; a depth prediction is fitted to
   ``gt`` directly. ``alignment="none"`` takes a metric prediction as it is.
2. Clip the aligned depth to the dataset range ``[min_depth, max_depth]``, then
   to ``>= 1e-6``.
3. Score with the metrics of :mod:`betterdepth_cli.evaluation.metrics`;
   per-image results are averaged by the runner.

The dataset crops live here too: NYUv2's Eigen crop and KITTI's benchmark crop
with its Eigen or Garg evaluation mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from betterdepth_cli.evaluation import metrics as M

MIN_DISPARITY = 1e-3
MIN_EVAL_DEPTH = 1e-6
ALIGNMENTS = ("auto", "none")

# NYUv2 Eigen crop for 480x640 images: rows 45:471, cols 41:601
NYU_EIGEN_CROP = (45, 471, 41, 601)
NYU_SIZE = (480, 640)
KB_CROP_SIZE = (352, 1216)
KITTI_CROPS = ("eigen", "garg", "none")


# --------------------------------------------------------------------------- crops


def nyu_eigen_mask(shape: tuple[int, int]) -> np.ndarray:
    """(H,W) bool mask of the Eigen crop: rows 45:471, cols 41:601 of a 480x640 image.

    Other sizes get the same crop scaled proportionally.
    """
    h, w = shape
    r0, r1, c0, c1 = NYU_EIGEN_CROP
    if (h, w) != NYU_SIZE:
        r0, r1 = int(r0 * h / NYU_SIZE[0]), int(r1 * h / NYU_SIZE[0])
        c0, c1 = int(c0 * w / NYU_SIZE[1]), int(c1 * w / NYU_SIZE[1])
    mask = np.zeros((h, w), bool)
    mask[r0:r1, c0:c1] = True
    return mask


def kb_crop(array: np.ndarray) -> np.ndarray:
    """KITTI benchmark crop: the bottom 352 rows and the central 1216 columns of (H,W[,C])."""
    h, w = array.shape[:2]
    ch, cw = KB_CROP_SIZE
    if h < ch or w < cw:
        raise ValueError(f"KITTI benchmark crop needs at least {ch}x{cw} pixels, got {h}x{w}")
    top = h - ch
    left = (w - cw) // 2
    return array[top : top + ch, left : left + cw]


def kitti_eval_mask(shape: tuple[int, int], crop: str = "eigen") -> np.ndarray:
    """(H,W) bool evaluation mask of KITTI: Eigen (NIPS 2014) or Garg (ECCV 2016) crop, or all pixels.

    The fractions are those of BTS and Marigold.
    """
    h, w = shape
    mask = np.zeros((h, w), bool)
    if crop == "garg":
        mask[int(0.40810811 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True
    elif crop == "eigen":
        mask[int(0.3324324 * h) : int(0.91351351 * h), int(0.0359477 * w) : int(0.96405229 * w)] = True
    elif crop == "none":
        mask[:] = True
    else:
        raise ValueError(f"KITTI crop must be one of {', '.join(KITTI_CROPS)}, got {crop!r}")
    return mask


def range_mask(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Pixels with ``min_depth < depth < max_depth`` (finite), Marigold's strict bounds."""
    d = np.asarray(depth)
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > min_depth) & (d < max_depth)


def gt_to_depth(gt: np.ndarray, gt_kind: str, disparity_scale: float = 1.0) -> np.ndarray:
    """Ground truth as depth: itself, or ``disparity_scale / disparity`` (0 where disparity <= 0).

    ``disparity_scale`` is focal length x baseline for stereo disparity (then
    the depth is in the baseline's unit), 1 for an inverse-depth map.
    """
    g = np.asarray(gt, np.float64)
    if gt_kind == "depth":
        return g
    if gt_kind != "disparity":
        raise ValueError(f"gt_kind must be 'depth' or 'disparity', got {gt_kind!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(g) & (g > 0), disparity_scale / g, 0.0)


# --------------------------------------------------------------------------- alignment


@dataclass
class Alignment:
    """An aligned prediction: depth (H,W) float64, and the fitted ``scale``, ``shift``.

    ``space`` is where the fit happened: "disparity", "depth" or "none".
    """

    depth: np.ndarray
    scale: float
    shift: float
    space: str


def fit_scale_shift_values(pred: np.ndarray, target: np.ndarray, on_degenerate=None) -> tuple[float, float]:
    """Least-squares ``s * pred + b ~ target`` over 1-D float64 arrays of the fitted pixels.

    The sums are taken in numpy on one thread (no BLAS or torch threads that
    would spin beside inference) and solved by the core aligner's closed form
    (:func:`betterdepth_cli.core.align.scale_shift_from_moments`), degenerate
    cases included: they raise its ``DegenerateAlignmentWarning``, or, with
    ``on_degenerate``, call ``on_degenerate(reason)`` instead (no Python warning:
    warnings filters are not thread-safe); either way the same fallback (fewer
    than two pixels: s = 1 and the offset of the one pixel, or 0; a constant
    prediction: s = 0, b = the mean target).
    """
    import torch

    from betterdepth_cli.core.align import scale_shift_from_moments

    moments = (float(pred.size), pred.sum(), target.sum(), M.dot(pred, pred), M.dot(pred, target))
    s, b = scale_shift_from_moments(*(torch.tensor([float(m)], dtype=torch.float64) for m in moments), stacklevel=2,
                                    on_degenerate=on_degenerate)
    return float(s[0]), float(b[0])


def align_prediction(
    pred: np.ndarray,
    pred_kind: str,
    gt_depth: np.ndarray,
    valid: np.ndarray,
    *,
    alignment: str = "auto",
    min_depth: float = 0.0,
    max_depth: float = float("inf"),
    min_disparity: float = MIN_DISPARITY,
    on_degenerate=None,
) -> Alignment:
    """Align a raw prediction to the ground truth and return depth, clipped to the dataset range.

    Args:
        pred: (H,W) raw prediction, disparity (larger = nearer) or depth.
        pred_kind: "disparity" or "depth".
        gt_depth: (H,W) ground-truth depth; valid: (H,W) bool.
        alignment: "auto" (least squares in the prediction's space) or "none"
            (a metric prediction used as it is; disparity is inverted).
        on_degenerate: ``on_degenerate(reason)`` for a degenerate fit instead of the Python warning
            (:func:`fit_scale_shift_values`).
    """
    if pred_kind not in ("disparity", "depth"):
        raise ValueError(f"pred_kind must be 'disparity' or 'depth', got {pred_kind!r}")
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {', '.join(ALIGNMENTS)}, got {alignment!r}")
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt_depth)  # compared in its own type; the fitted values are taken in float64
    if p.shape != g.shape or p.shape != valid.shape:
        raise ValueError(f"prediction {p.shape}, ground truth {g.shape} and mask {valid.shape} differ in shape")
    with np.errstate(invalid="ignore"):
        gt_ok = valid & (g > 0) & (g < np.inf)  # NaN compares False
    if alignment == "none":
        scale, shift, space = 1.0, 0.0, "none"
        aligned = p.copy()
    else:
        with np.errstate(invalid="ignore"):
            fit_mask = gt_ok & (p > 0) & (p < np.inf) if pred_kind == "disparity" else gt_ok & np.isfinite(p)
        pf, gf = p[fit_mask], g[fit_mask].astype(np.float64, copy=False)
        target = np.divide(1.0, gf, out=gf) if pred_kind == "disparity" else gf
        scale, shift = fit_scale_shift_values(pf, target, on_degenerate)
        space = pred_kind
        aligned = p * scale
        aligned += shift
    if pred_kind == "disparity":
        # non-finite or too small disparities become min_disparity, i.e. far
        aligned[aligned == np.inf] = min_disparity
        np.fmax(aligned, min_disparity, out=aligned)  # fmax also replaces NaN
        np.divide(1.0, aligned, out=aligned)
    elif not np.isfinite(aligned).all():
        aligned[~np.isfinite(aligned)] = max_depth if np.isfinite(max_depth) else MIN_EVAL_DEPTH
    # the dataset's range, and never below MIN_EVAL_DEPTH (one pass: clip to min_depth..max_depth, then >= MIN)
    np.clip(aligned, max(min_depth, MIN_EVAL_DEPTH), max(max_depth, MIN_EVAL_DEPTH), out=aligned)
    return Alignment(depth=aligned, scale=scale, shift=shift, space=space)


# --------------------------------------------------------------------------- one sample


@dataclass
class SampleScore:
    """Metrics of one prediction on one sample, with the aligned depth (H,W) it was scored on."""

    metrics: dict[str, float]
    alignment: Alignment
    metric_options: dict = field(default_factory=dict)


def evaluate_sample(
    pred: np.ndarray,
    pred_kind: str,
    gt_depth: np.ndarray,
    valid: np.ndarray,
    *,
    min_depth: float,
    max_depth: float,
    metrics=M.ALL_METRICS,
    alignment: str = "auto",
    gt_edges: np.ndarray | None = None,
    target_edges: M.TargetEdges | None = None,
    on_degenerate=None,
    **metric_options,
) -> SampleScore:
    """Align one (H,W) prediction to the ground truth, clip it to the range and score it.

    ``valid`` must already hold the dataset's range and crop (the loaders do
    that); ``metric_options`` go to :func:`betterdepth_cli.evaluation.metrics.compute_metrics`
    (edge thresholds and the like); ``gt_edges`` are annotated GT boundaries;
    ``target_edges`` (:func:`~betterdepth_cli.evaluation.metrics.prepare_target_edges`)
    reuse the GT's edge maps across predictions of the same sample; ``on_degenerate(reason)`` hears of a
    degenerate alignment instead of a Python warning (:func:`align_prediction`).
    """
    al = align_prediction(
        pred, pred_kind, gt_depth, valid, alignment=alignment, min_depth=min_depth, max_depth=max_depth,
        on_degenerate=on_degenerate,
    )
    scores = M.compute_metrics(
        al.depth, gt_depth, valid, metrics, gt_edges=gt_edges, target_edges=target_edges, **metric_options
    )
    return SampleScore(metrics=scores, alignment=al, metric_options=dict(metric_options))
