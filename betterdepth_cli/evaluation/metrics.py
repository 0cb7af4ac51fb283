"""Depth metrics of the zero-shot protocol and the detail metrics of the paper's Table 4.

Every metric has the signature ``(pred, target, valid) -> float`` on numpy arrays
of shape (H,W): ``pred`` and ``target`` are DEPTH maps (larger = farther, after
alignment, Marigold style), ``valid`` is a bool mask. Pixels outside ``valid``
are ignored whatever they hold (NaN, inf, 0, garbage). A metric over zero valid
pixels is NaN. ``METRICS`` maps each name to its function, so an evaluation is
a list of names.

Pixel metrics (fractions, not percent):

- ``abs_rel``  mean |p - g| / g
- ``sq_rel``   mean (p - g)^2 / g
- ``rmse``     sqrt(mean (p - g)^2)
- ``rmse_log`` sqrt(mean (ln p - ln g)^2)
- ``delta1/2/3`` share of pixels with max(p/g, g/p) < 1.25, 1.25^2, 1.25^3 (strict, as Marigold)

Detail metrics (Table 4). Both are computed on INVERSE depth, i.e. disparity
``1/depth``: a depth map's discontinuities grow with distance, so on depth the
far background dominates the edge maps; inverse depth is what the paper's
models (Depth Anything) predict and what a viewer sees as edges.

- ``dbe_acc``, ``dbe_comp`` (pixels): the depth boundary errors of Koch et al.
  2018 (iBims-1). Each map's inverse depth is normalised to [0, 1] by its own
  min and max over valid pixels; edges come from a Canny detector with
  sigma = sqrt(2) and hysteresis thresholds 0.15 / 0.3 on that normalised map
  (:func:`canny`, the algorithm of ``skimage.feature.canny``, with the valid
  mask as its mask). Ground-truth edges come from the same detector on the
  ground truth unless annotated edges are passed as ``gt_edges``. With the
  Euclidean distances D_gt, D_pred to the nearest edge of each map and
  truncation at 10 px:
  ``dbe_acc = mean of D_gt over predicted edges with D_gt < 10`` and
  ``dbe_comp = (sum_pred min(D_gt, 10) + sum_gt min(D_pred, 10)) / (n_pred + n_gt)``;
  both are 10 when no predicted edge lies within 10 px of a GT edge, NaN when
  the ground truth has no edge (the iBims-1 reference code).
- ``ep``, ``er``: edge precision and recall of Hu et al. 2019: the gradient
  magnitude of the 3x3 Sobel operator (weights 1-2-1, unnormalised) on the
  aligned maps, an edge is a magnitude above ``EDGE_THRESHOLD``; precision is
  the share of predicted edge pixels that are GT edge pixels, recall the share
  of GT edge pixels that are predicted edge pixels (within ``tolerance`` px,
  default 0 = the same pixel, as Hu et al.). Hu et al. threshold metric depth
  in metres, which makes the threshold depend on the scene's scale; here both
  maps are the inverse depth normalised by the GROUND TRUTH's min and max over
  valid pixels (one transform for both, so magnitudes stay comparable), and the
  default threshold 0.1 marks a jump of 2.5 % of the scene's inverse depth
  range between neighbouring pixels (Sobel gives 4x a one-pixel step). On the
  NYUv2 and Middlebury ground truth it keeps 2-7 % of the pixels, the object
  outlines; 0.05 also fires on sensor noise of flat walls.
  Only pixels whose 3x3 neighbourhood is valid are scored. NaN when the ground
  truth has no edge; 0 when it has edges but the prediction has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from betterdepth_cli.evaluation.edges import (  # noqa: F401 (the flags' defaults are re-exported)
    CANNY_HIGH,
    CANNY_LOW,
    CANNY_SIGMA,
    DBE_MAX_DIST,
    EDGE_THRESHOLD,
    EDGE_TOLERANCE,
    MaskTerms,
    SobelEdges,
    boundary_errors,
    check_maps,
    depth_boundary_errors,
    edge_precision_recall,
    inverse_depth,
    inverse_depth_edges,
    inverse_depth_sobel,
    positive_mask,
    precision_recall,
)

# Defaults of the detail metrics (the flags of `betterdepth eval` start here).

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")
DETAIL_METRICS = ("dbe_comp", "dbe_acc", "ep", "er", "edge_f1")
ALL_METRICS = DEPTH_METRICS + DETAIL_METRICS
EDGE_PR_METRICS = ("ep", "er", "edge_f1")  # computed together from the Sobel edge maps
# metrics where larger is better (the rest: smaller is better)
HIGHER_IS_BETTER = frozenset({"delta1", "delta2", "delta3", "ep", "er", "edge_f1"})
UNITS = {
    "abs_rel": "fraction", "sq_rel": "depth unit", "rmse": "depth unit", "rmse_log": "log depth",
    "delta1": "fraction", "delta2": "fraction", "delta3": "fraction",
    "dbe_comp": "px", "dbe_acc": "px", "ep": "fraction", "er": "fraction", "edge_f1": "fraction",
}
# metrics the paper reports in percent (the rest: as they are; DBE in pixels)
PERCENT_METRICS = frozenset({"abs_rel", "delta1", "delta2", "delta3", "ep", "er", "edge_f1"})


# --------------------------------------------------------------------------- helpers


def _valid_values(pred, target, valid) -> tuple[np.ndarray, np.ndarray]:
    pred, target, valid = check_maps(pred, target, valid)
    # a gather is already a new array: no second copy when it is float64
    return pred[valid].astype(np.float64, copy=False), target[valid].astype(np.float64, copy=False)


# --------------------------------------------------------------------------- pixel metrics


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of ``a * b`` over 1-D float64 arrays, without a temporary and without BLAS.

    ``np.dot`` hands long vectors to OpenBLAS, whose threads spin beside torch's
    OpenMP threads after inference: on a 2-core CPU that made a 300k-pixel dot
    product 30-100x slower in the evaluation loop. ``einsum`` runs a plain SIMD loop.
    """
    return float(np.einsum("i,i->", a, b))


def _pixel_metric(name: str, pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    p, g = _valid_values(pred, target, valid)
    return _pixel_metrics(p, g, (name,))[name]


def abs_rel(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Mean absolute relative error ``mean |p - g| / g`` over valid pixels."""
    return _pixel_metric("abs_rel", pred, target, valid)


def sq_rel(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Mean squared relative error ``mean (p - g)^2 / g`` over valid pixels."""
    return _pixel_metric("sq_rel", pred, target, valid)


def rmse(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Root mean squared error in the units of the maps."""
    return _pixel_metric("rmse", pred, target, valid)


def rmse_log(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Root mean squared difference of natural logarithms."""
    return _pixel_metric("rmse_log", pred, target, valid)


def delta1(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Share of valid pixels with ``max(p/g, g/p) < 1.25``."""
    return _pixel_metric("delta1", pred, target, valid)


def delta2(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Share of valid pixels with ``max(p/g, g/p) < 1.25^2``."""
    return _pixel_metric("delta2", pred, target, valid)


def delta3(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> float:
    """Share of valid pixels with ``max(p/g, g/p) < 1.25^3``."""
    return _pixel_metric("delta3", pred, target, valid)


def _pixel_metrics(p: np.ndarray, g: np.ndarray, names) -> dict[str, float]:
    """The pixel metrics among ``names`` from the valid values ``p``, ``g`` (1-D float64).

    One pass per quantity: the difference ``d = p - g``, the relative error
    ``d / g`` and the ratio ``r = p / g`` (``ln p - ln g = ln r``;
    ``max(r, 1/r) < t``  <=>  ``1/t < r < t``); sums of squares as dot products.
    """
    if p.size == 0:
        return {n: math.nan for n in names if n in DEPTH_METRICS}
    out: dict[str, float] = {}
    n = p.size
    with np.errstate(divide="ignore", invalid="ignore"):
        if any(k in names for k in ("abs_rel", "sq_rel", "rmse")):
            d = p - g
            if "rmse" in names:
                out["rmse"] = math.sqrt(dot(d, d) / n)
            if "abs_rel" in names or "sq_rel" in names:
                rel = d / g
                if "sq_rel" in names:
                    out["sq_rel"] = dot(d, rel) / n
                if "abs_rel" in names:
                    out["abs_rel"] = float(np.abs(rel, out=rel).sum()) / n
        if any(k == "rmse_log" or k.startswith("delta") for k in names):
            r = p / g
            for k, name in ((1, "delta1"), (2, "delta2"), (3, "delta3")):
                if name in names:
                    t = 1.25**k
                    out[name] = float(np.count_nonzero((r < t) & (r > 1.0 / t))) / n
            if "rmse_log" in names:
                lr = np.log(r, out=r)
                out["rmse_log"] = math.sqrt(dot(lr, lr) / n)
    return out


# --------------------------------------------------------------------------- detail metrics


def dbe_acc(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, **options) -> float:
    """Depth boundary accuracy error (px), Koch et al. 2018; options of :func:`depth_boundary_errors`."""
    return depth_boundary_errors(pred, target, valid, **options)[0]


def dbe_comp(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, **options) -> float:
    """Depth boundary completeness error (px), Koch et al. 2018; options of :func:`depth_boundary_errors`."""
    return depth_boundary_errors(pred, target, valid, **options)[1]


def ep(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, **options) -> float:
    """Edge precision (fraction), Hu et al. 2019; options of :func:`edge_precision_recall`."""
    return edge_precision_recall(pred, target, valid, **options)[0]


def er(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, **options) -> float:
    """Edge recall (fraction), Hu et al. 2019; options of :func:`edge_precision_recall`."""
    return edge_precision_recall(pred, target, valid, **options)[1]


def f1_score(precision: float, recall: float) -> float:
    """The harmonic mean of precision and recall (0 when both are 0, NaN when either is)."""
    if not (math.isfinite(precision) and math.isfinite(recall)):
        return math.nan
    total = precision + recall
    return 0.0 if total == 0 else 2.0 * precision * recall / total


def edge_f1(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, **options) -> float:
    """Edge F1: the harmonic mean of :func:`ep` and :func:`er`."""
    return f1_score(*edge_precision_recall(pred, target, valid, **options))


MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]

METRICS: dict[str, MetricFn] = {
    "abs_rel": abs_rel,
    "sq_rel": sq_rel,
    "rmse": rmse,
    "rmse_log": rmse_log,
    "delta1": delta1,
    "delta2": delta2,
    "delta3": delta3,
    "dbe_comp": dbe_comp,
    "dbe_acc": dbe_acc,
    "ep": ep,
    "er": er,
    "edge_f1": edge_f1,
}


def check_metric_names(names) -> tuple[str, ...]:
    """Validate metric names against :data:`METRICS`; raises ``UsageError`` naming the bad one."""
    from betterdepth_cli.core.types import UsageError

    out = tuple(names)
    for name in out:
        if name not in METRICS:
            raise UsageError(f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}")
    return out


@dataclass
class TargetEdges:
    """What the detail metrics derive from the ground truth alone, computed once per sample
    (:func:`prepare_target_edges`) and reused for every prediction scored against it."""

    boundary: np.ndarray | None = None  # (H,W) bool GT Canny (or annotated) edges
    sobel: SobelEdges | None = None  # sobel_edges() of the GT
    terms: MaskTerms | None = None  # mask terms of the GT's usable pixels (predictions over the same mask reuse them)
    usable: np.ndarray | None = None  # (H,W) bool: valid pixels with a finite positive GT


def prepare_target_edges(
    target: np.ndarray,
    valid: np.ndarray,
    names=ALL_METRICS,
    *,
    gt_edges: np.ndarray | None = None,
    canny_sigma: float = CANNY_SIGMA,
    canny_low: float = CANNY_LOW,
    canny_high: float = CANNY_HIGH,
    edge_threshold: float = EDGE_THRESHOLD,
    **_unused,
) -> TargetEdges:
    """GT edge maps for the detail metrics among ``names``.

    ``gt_edges``: annotated boundaries to use instead of Canny on the target.
    Takes the keyword options of :func:`compute_metrics` (extra ones are ignored).
    """
    out = TargetEdges(usable=positive_mask(target, valid))
    inv = inverse_depth(target, out.usable)  # the GT's inverse depth, for Canny and Sobel alike
    if any(n in ("dbe_acc", "dbe_comp") for n in names):
        if gt_edges is None:
            edges, out.terms = inverse_depth_edges(inv, canny_sigma, canny_low, canny_high)
        else:
            edges = np.asarray(gt_edges, bool)
        out.boundary = edges
    if any(n in EDGE_PR_METRICS for n in names):
        out.sobel = inverse_depth_sobel(inv, edge_threshold, terms=out.terms)
    return out


def compute_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    names=ALL_METRICS,
    *,
    gt_edges: np.ndarray | None = None,
    target_edges: TargetEdges | None = None,
    canny_sigma: float = CANNY_SIGMA,
    canny_low: float = CANNY_LOW,
    canny_high: float = CANNY_HIGH,
    dbe_max_dist: float = DBE_MAX_DIST,
    edge_threshold: float = EDGE_THRESHOLD,
    edge_tolerance: float = EDGE_TOLERANCE,
) -> dict[str, float]:
    """Several metrics of one (H,W) sample at once, the same values as the functions of :data:`METRICS`.

    Shares work: the valid values between pixel metrics, the edge maps between
    the DBE pair and the EP/ER pair. ``gt_edges`` are annotated GT boundaries;
    ``target_edges`` (:func:`prepare_target_edges` with the same options) are
    reused when one ground truth is scored against several predictions.
    """
    names = check_metric_names(names)
    pred, target, valid = check_maps(pred, target, valid)
    out = _pixel_metrics(*_valid_values(pred, target, valid), names)
    opts = dict(canny_sigma=canny_sigma, canny_low=canny_low, canny_high=canny_high, edge_threshold=edge_threshold)
    if not any(n in DETAIL_METRICS for n in names):
        return {n: out[n] for n in names}
    if target_edges is None:
        target_edges = prepare_target_edges(target, valid, names, gt_edges=gt_edges, **opts)
    inv = inverse_depth(pred, positive_mask(pred, valid))  # the prediction's inverse depth, computed once
    terms = target_edges.terms
    if any(n in ("dbe_acc", "dbe_comp") for n in names):
        assert target_edges.boundary is not None
        if not target_edges.boundary.any():
            acc = comp = math.nan
        else:
            est, terms = inverse_depth_edges(inv, canny_sigma, canny_low, canny_high, terms)
            acc, comp = boundary_errors(est, target_edges.boundary, dbe_max_dist)
        out["dbe_acc"], out["dbe_comp"] = acc, comp
    if any(n in EDGE_PR_METRICS for n in names):
        assert target_edges.sobel is not None
        # the prediction's Sobel edges over the GT's usable pixels, normalised by the GT's range
        ok_gt = target_edges.usable if target_edges.usable is not None else positive_mask(target, valid)
        if (inv.ok & ~ok_gt).any():
            inv = inverse_depth(pred, positive_mask(pred, ok_gt))
        est_sobel = inverse_depth_sobel(inv, edge_threshold, target_edges.sobel[2], terms)
        out["ep"], out["er"] = precision_recall(target_edges.sobel, est_sobel, edge_tolerance)
        out["edge_f1"] = f1_score(out["ep"], out["er"])
    return {n: out[n] for n in names}
