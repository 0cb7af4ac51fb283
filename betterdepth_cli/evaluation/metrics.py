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

# Defaults of the detail metrics (the flags of `betterdepth eval` start here).
CANNY_SIGMA = math.sqrt(2.0)
CANNY_LOW = 0.15
CANNY_HIGH = 0.3
DBE_MAX_DIST = 10.0
EDGE_THRESHOLD = 0.1
EDGE_TOLERANCE = 0.0

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


def _check(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    target = np.asarray(target)
    valid = np.asarray(valid)
    if pred.ndim != 2 or pred.shape != target.shape or pred.shape != valid.shape:
        raise ValueError(
            f"pred, target and valid must be (H,W) arrays of one shape, got "
            f"{pred.shape}, {target.shape}, {valid.shape}"
        )
    if valid.dtype != np.bool_:
        raise ValueError(f"valid must be a bool array, got {valid.dtype}")
    return pred, target, valid


def _valid_values(pred, target, valid) -> tuple[np.ndarray, np.ndarray]:
    pred, target, valid = _check(pred, target, valid)
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


# --------------------------------------------------------------------------- edge detection


def _erode(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion with everything outside the image counted as False."""
    import cv2

    m = mask.astype(np.uint8)
    return cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def _sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised 3x3 Sobel derivatives (rows, cols) with mirrored borders (``scipy.ndimage.sobel``), in x's float type."""
    import cv2

    depth = cv2.CV_32F if x.dtype == np.float32 else cv2.CV_64F
    di = cv2.Sobel(x, depth, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    dj = cv2.Sobel(x, depth, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    return di, dj


def canny(
    image: np.ndarray,
    sigma: float = CANNY_SIGMA,
    low_threshold: float = CANNY_LOW,
    high_threshold: float = CANNY_HIGH,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Canny edges with absolute float thresholds, the algorithm of ``skimage.feature.canny``.

    Gaussian smoothing (radius ``int(4 sigma + 0.5)``, zero outside the image,
    renormalised by the smoothed mask so masked pixels do not bleed in), 3x3
    Sobel gradients, non-maximum suppression with bilinear interpolation along
    the gradient, hysteresis (8-connected low-threshold segments that contain a
    high-threshold pixel). Pixels on the image border or next to a masked pixel
    are never edges. Computed in the image's float type (float32 for float32
    input, else float64), as ``skimage.feature.canny``, whose edges it gives (up
    to float ties). The detail metrics run it on float32 maps. ``cv2.Canny``
    is not used: it takes uint8 images and integer thresholds, so relative
    thresholds of a [0, 1] map would be lost.

    Args:
        image: (H,W) float map (typically normalised to [0, 1]).
        mask: (H,W) bool; pixels outside are ignored whatever they hold.
    Returns:
        (H,W) bool edge map.
    """
    ftype = np.float32 if np.asarray(image).dtype == np.float32 else np.float64
    img = np.asarray(image, dtype=ftype)
    if img.ndim != 2:
        raise ValueError(f"canny needs an (H,W) image, got shape {img.shape}")
    m = np.ones(img.shape, bool) if mask is None else np.asarray(mask, bool)
    m = m & np.isfinite(img)
    return _canny_clean(np.where(m, img, ftype(0)), _mask_terms(m, sigma, dtype=ftype), low_threshold, high_threshold)


@dataclass
class _MaskTerms:
    """What Canny and the Sobel edges derive from a mask alone (shared by maps over one mask)."""

    mask: np.ndarray  # (H,W) bool
    sigma: float
    bleed: np.ndarray  # Gaussian-smoothed mask (+ eps), in the float type of the maps it serves
    eroded: np.ndarray  # 3x3 erosion: pixels whose neighbourhood is inside the mask


def _gaussian(sigma: float, dtype):
    """Gaussian smoothing of radius ``int(4 sigma + 0.5)``, zero outside the image, computed in ``dtype``."""
    import cv2

    radius = int(4.0 * sigma + 0.5)
    k = cv2.getGaussianKernel(2 * radius + 1, sigma, cv2.CV_64F).astype(dtype)
    depth = cv2.CV_32F if dtype == np.float32 else cv2.CV_64F
    return lambda a: cv2.sepFilter2D(a, depth, k, k, borderType=cv2.BORDER_CONSTANT)


def _mask_terms(m: np.ndarray, sigma: float, cached: _MaskTerms | None = None, dtype=np.float32) -> _MaskTerms:
    """:class:`_MaskTerms` of ``m`` for ``dtype`` maps; ``cached`` is returned instead when it holds the
    same mask, sigma and float type."""
    if (
        cached is not None and cached.sigma == sigma and cached.bleed.dtype == dtype
        and np.array_equal(cached.mask, m)
    ):
        return cached
    bleed = _gaussian(sigma, dtype)(m.astype(dtype)) + np.finfo(dtype).eps
    return _MaskTerms(mask=m, sigma=sigma, bleed=bleed, eroded=_erode(m))


def _canny_clean(img: np.ndarray, terms: _MaskTerms, low_threshold: float, high_threshold: float) -> np.ndarray:
    """:func:`canny` of a float ``img`` (of ``terms.bleed``'s type) that is finite everywhere and 0
    outside ``terms.mask``, smoothed with ``terms.sigma``."""
    import cv2

    if low_threshold > high_threshold:
        raise ValueError("low_threshold must not exceed high_threshold")
    smoothed = _gaussian(terms.sigma, img.dtype)(img)
    smoothed /= terms.bleed
    eroded = terms.eroded

    isob, jsob = _sobel(smoothed)
    mag = cv2.magnitude(isob, jsob)  # sqrt(i^2 + j^2), as skimage

    h, w = img.shape
    cand = eroded & (mag >= low_threshold)
    if low_threshold <= 0:
        cand &= mag > 0
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return np.zeros((h, w), bool)
    flat = mag.ravel()
    i = isob.ravel()[idx]
    j = jsob.ravel()[idx]
    m0 = flat[idx]
    ai, aj = np.abs(i), np.abs(j)
    cond1 = ((i >= 0) & (j >= 0)) | ((i <= 0) & (j <= 0))
    # four sectors a, b, c, d with skimage's precedence: cond1 (a: |i| > |j|, else b) before
    # the rest (c: |i| < |j|, else d)
    sector = np.where(cond1, np.where(ai > aj, 0, 1), np.where(ai < aj, 2, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        wgt = np.where((sector == 0) | (sector == 3), aj / ai, ai / aj)
    # flat offsets of the neighbours n1_1, n1_2, n2_1, n2_2 per sector (candidates are never on the border)
    table = np.array(
        [[w, w + 1, -w, -w - 1], [1, w + 1, -1, -w - 1], [1, 1 - w, -1, w - 1], [-w, 1 - w, w, w - 1]], np.intp
    )
    n = np.take(flat, idx[:, None] + table[sector])  # [N,4]
    keep = (n[:, 1] * wgt + n[:, 0] * (1.0 - wgt) <= m0) & (n[:, 3] * wgt + n[:, 2] * (1.0 - wgt) <= m0)
    kept = idx[keep]
    low = np.zeros(h * w, np.uint8)
    low[kept] = 1
    _, labels = cv2.connectedComponents(low.reshape(h, w), connectivity=8)
    # hysteresis: keep the low-threshold segments (labels) that hold a high-threshold pixel
    segment = labels.ravel()[kept]
    good = np.zeros(int(segment.max(initial=0)) + 1, bool)
    good[segment[m0[keep] >= high_threshold]] = True
    out = np.zeros(h * w, bool)
    out[kept[good[segment]]] = True
    return out.reshape(h, w)


def edge_distances(src: np.ndarray, dst: np.ndarray, max_dist: float = math.inf) -> np.ndarray:
    """Euclidean distance (pixels) from every True pixel of ``src`` to the nearest True pixel of ``dst``.

    (H,W) bool, (H,W) bool -> (N,) float64 in the row-major order of ``src``'s
    True pixels; +inf where the nearest is ``max_dist`` or farther (and
    everywhere when ``dst`` has no True pixel). Exact (a k-d tree over the edge
    pixels): edge maps are sparse, so this is far cheaper than a distance
    transform of the whole image.
    """
    from scipy.spatial import cKDTree

    w = src.shape[1]
    # np.flatnonzero on a bool map is ~15x faster than np.argwhere / 2-D nonzero
    queries = np.divmod(np.flatnonzero(src), w)
    targets = np.divmod(np.flatnonzero(dst), w)
    queries, targets = np.stack(queries, 1), np.stack(targets, 1)
    if len(targets) == 0 or len(queries) == 0:
        return np.full(len(queries), np.inf)
    return cKDTree(targets).query(queries, distance_upper_bound=max_dist)[0]


@dataclass
class _InverseDepth:
    """A depth map's inverse over its usable pixels: ``inv`` (float32, finite, 0 outside ``ok``), ``ok``
    and its (min, max). The edge detectors work in float32 (as skimage on float32 maps): their
    thresholds are about 0.1 of a [0, 1] map, far above float32's resolution."""

    inv: np.ndarray
    ok: np.ndarray
    lo: float
    hi: float
    _own: np.ndarray | None = None  # normalized() by its own range, kept for the next caller (read-only)

    def normalized(self, reference: tuple[float, float] | None = None) -> tuple[np.ndarray, tuple[float, float]]:
        """``inv`` mapped linearly to [0, 1] by its own (min, max) or by ``reference``; 0 outside ``ok``."""
        lo, hi = (self.lo, self.hi) if reference is None else reference
        own = (lo, hi) == (self.lo, self.hi)
        if own and self._own is not None:
            return self._own, (lo, hi)
        span = hi - lo if hi > lo else 1.0
        norm = self.inv - lo
        norm /= span
        np.multiply(norm, self.ok, out=norm)  # 0 outside ok (norm is finite everywhere)
        if own:
            self._own = norm
        return norm, (lo, hi)


def _inverse_depth(depth: np.ndarray, valid: np.ndarray) -> _InverseDepth:
    import cv2

    d = np.asarray(depth)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.divide(1.0, d, dtype=np.float32)  # everywhere: whatever lies outside valid is masked next
    ok = valid & np.isfinite(inv)
    if not ok.any():
        return _InverseDepth(inv=np.zeros(d.shape, np.float32), ok=ok, lo=0.0, hi=1.0)
    # numpy's where= paths (masked divide, masked min/max) cost ~10x these OpenCV calls
    mask = ok.view(np.uint8)
    inv = cv2.bitwise_and(inv, inv, mask=mask)  # bitwise: 0.0 outside ok, NaN and inf included
    lo, hi, _, _ = cv2.minMaxLoc(inv, mask)
    return _InverseDepth(inv=inv, ok=ok, lo=float(lo), hi=float(hi))


def normalized_inverse_depth(
    depth: np.ndarray, valid: np.ndarray, reference: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """``1/depth`` mapped linearly to [0, 1] by its min and max over valid pixels.

    Args:
        depth: (H,W) positive depth over ``valid``.
        valid: (H,W) bool.
        reference: (min, max) of another map's inverse depth to use instead of
            this map's own (edge precision/recall normalise both maps by the GT's).
    Returns:
        (H,W) float32 map (0 outside ``valid``) and the (min, max) used.
    """
    return _inverse_depth(depth, valid).normalized(reference)


def depth_edges(
    depth: np.ndarray,
    valid: np.ndarray,
    sigma: float = CANNY_SIGMA,
    low_threshold: float = CANNY_LOW,
    high_threshold: float = CANNY_HIGH,
) -> np.ndarray:
    """Canny edges of a depth map's normalised inverse depth over ``valid`` ((H,W) -> (H,W) bool)."""
    return _depth_edges(_inverse_depth(depth, _positive(depth, valid)), sigma, low_threshold, high_threshold)[0]


def _depth_edges(
    inv: _InverseDepth, sigma: float, low_threshold: float, high_threshold: float, terms: _MaskTerms | None = None
) -> tuple[np.ndarray, _MaskTerms]:
    """:func:`depth_edges` of an :class:`_InverseDepth`, and the mask terms it used."""
    terms = _mask_terms(inv.ok, sigma, terms)
    norm, _ = inv.normalized()  # finite, 0 outside ok
    return _canny_clean(norm, terms, low_threshold, high_threshold), terms


# --------------------------------------------------------------------------- detail metrics


def depth_boundary_errors(
    pred: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    *,
    gt_edges: np.ndarray | None = None,
    sigma: float = CANNY_SIGMA,
    low_threshold: float = CANNY_LOW,
    high_threshold: float = CANNY_HIGH,
    max_dist: float = DBE_MAX_DIST,
) -> tuple[float, float]:
    """(dbe_acc, dbe_comp) of Koch et al. 2018, in pixels; see the module docstring.

    Args:
        pred, target: (H,W) depth; valid: (H,W) bool.
        gt_edges: (H,W) bool annotated edges; detected on ``target`` when None.
    """
    pred, target, valid = _check(pred, target, valid)
    if gt_edges is None:
        gt_edges = depth_edges(target, valid, sigma, low_threshold, high_threshold)
    elif gt_edges.shape != valid.shape:
        raise ValueError(f"gt_edges must have shape {valid.shape}, got {gt_edges.shape}")
    gt_edges = np.asarray(gt_edges, bool)
    if not gt_edges.any():
        return math.nan, math.nan
    est = depth_edges(pred, valid, sigma, low_threshold, high_threshold)
    return _boundary_errors(est, gt_edges, max_dist)


def _boundary_errors(est: np.ndarray, gt_edges: np.ndarray, max_dist: float) -> tuple[float, float]:
    """(dbe_acc, dbe_comp) from the predicted and the (non-empty) GT edge maps."""
    d_gt = edge_distances(est, gt_edges, max_dist)  # at the predicted edges; inf = max_dist or farther
    near = d_gt < max_dist
    if not near.any():
        return float(max_dist), float(max_dist)
    d_est = edge_distances(gt_edges, est, max_dist)  # at the GT edges
    acc = float(d_gt[near].mean())
    ch1 = np.minimum(d_gt, max_dist).sum()
    ch2 = np.minimum(d_est, max_dist).sum()
    comp = float((ch1 + ch2) / (d_gt.size + d_est.size))
    return acc, comp


SobelEdges = tuple[np.ndarray, np.ndarray, tuple[float, float]]  # edges, scored pixels, (min, max) used


def sobel_edges(
    depth: np.ndarray,
    valid: np.ndarray,
    threshold: float = EDGE_THRESHOLD,
    reference: tuple[float, float] | None = None,
) -> SobelEdges:
    """Sobel-magnitude edges of the normalised inverse depth (Hu et al. 2019).

    Returns:
        edges (H,W) bool, scored (H,W) bool (pixels whose 3x3 neighbourhood is
        valid), and the (min, max) normalisation used.
    """
    return _sobel_edges(_inverse_depth(depth, _positive(depth, valid)), threshold, reference)


def _sobel_edges(
    inv: _InverseDepth, threshold: float, reference: tuple[float, float] | None = None,
    terms: _MaskTerms | None = None,
) -> SobelEdges:
    """:func:`sobel_edges` of an :class:`_InverseDepth` (``terms``: mask terms of ``inv.ok``, if at hand)."""
    import cv2

    norm, ref = inv.normalized(reference)
    di, dj = _sobel(norm)
    same = terms is not None and np.array_equal(terms.mask, inv.ok)
    scored = terms.eroded if same else _erode(inv.ok)
    return (cv2.magnitude(di, dj) > threshold) & scored, scored, ref


def edge_precision_recall(
    pred: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    *,
    threshold: float = EDGE_THRESHOLD,
    tolerance: float = EDGE_TOLERANCE,
    gt_sobel: SobelEdges | None = None,
) -> tuple[float, float]:
    """(precision, recall) of Sobel edges of ``pred`` against those of ``target``; see the module docstring.

    ``gt_sobel``: :func:`sobel_edges` of the target (over its positive valid
    pixels) when already computed at this ``threshold``.
    """
    pred, target, valid = _check(pred, target, valid)
    ok_gt = _positive(target, valid)
    if gt_sobel is None:
        gt_sobel = sobel_edges(target, ok_gt, threshold)
    est = sobel_edges(pred, ok_gt, threshold, reference=gt_sobel[2])
    return _precision_recall(gt_sobel, est, tolerance)


def _precision_recall(gt_sobel: SobelEdges, est_sobel: SobelEdges, tolerance: float) -> tuple[float, float]:
    """(precision, recall) from the Sobel edges of the GT and of the prediction (normalised alike)."""
    gt, scored_gt, _ = gt_sobel
    est, scored_est, _ = est_sobel
    scored = scored_gt & scored_est
    gt = gt & scored
    est = est & scored
    n_gt, n_est = int(gt.sum()), int(est.sum())
    if n_gt == 0:
        return math.nan, math.nan
    if n_est == 0:
        return 0.0, 0.0
    if tolerance <= 0:
        tp = int((gt & est).sum())
        return tp / n_est, tp / n_gt
    bound = np.nextafter(tolerance, math.inf)  # within the tolerance, inclusive
    precision = float(np.isfinite(edge_distances(est, gt, bound)).mean())
    recall = float(np.isfinite(edge_distances(gt, est, bound)).mean())
    return precision, recall


def _positive(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return valid & np.isfinite(depth) & (depth > 0)


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
    terms: _MaskTerms | None = None  # mask terms of the GT's usable pixels (predictions over the same mask reuse them)
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
    out = TargetEdges(usable=_positive(target, valid))
    inv = _inverse_depth(target, out.usable)  # the GT's inverse depth, for Canny and Sobel alike
    if any(n in ("dbe_acc", "dbe_comp") for n in names):
        if gt_edges is None:
            edges, out.terms = _depth_edges(inv, canny_sigma, canny_low, canny_high)
        else:
            edges = np.asarray(gt_edges, bool)
        out.boundary = edges
    if any(n in EDGE_PR_METRICS for n in names):
        out.sobel = _sobel_edges(inv, edge_threshold, terms=out.terms)
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
    pred, target, valid = _check(pred, target, valid)
    out = _pixel_metrics(*_valid_values(pred, target, valid), names)
    opts = dict(canny_sigma=canny_sigma, canny_low=canny_low, canny_high=canny_high, edge_threshold=edge_threshold)
    if not any(n in DETAIL_METRICS for n in names):
        return {n: out[n] for n in names}
    if target_edges is None:
        target_edges = prepare_target_edges(target, valid, names, gt_edges=gt_edges, **opts)
    inv = _inverse_depth(pred, _positive(pred, valid))  # the prediction's inverse depth, computed once
    terms = target_edges.terms
    if any(n in ("dbe_acc", "dbe_comp") for n in names):
        assert target_edges.boundary is not None
        if not target_edges.boundary.any():
            acc = comp = math.nan
        else:
            est, terms = _depth_edges(inv, canny_sigma, canny_low, canny_high, terms)
            acc, comp = _boundary_errors(est, target_edges.boundary, dbe_max_dist)
        out["dbe_acc"], out["dbe_comp"] = acc, comp
    if any(n in EDGE_PR_METRICS for n in names):
        assert target_edges.sobel is not None
        # the prediction's Sobel edges over the GT's usable pixels, normalised by the GT's range
        ok_gt = target_edges.usable if target_edges.usable is not None else _positive(target, valid)
        if (inv.ok & ~ok_gt).any():
            inv = _inverse_depth(pred, _positive(pred, ok_gt))
        est_sobel = _sobel_edges(inv, edge_threshold, target_edges.sobel[2], terms)
        out["ep"], out["er"] = _precision_recall(target_edges.sobel, est_sobel, edge_tolerance)
        out["edge_f1"] = f1_score(out["ep"], out["er"])
    return {n: out[n] for n in names}
