"""Edge maps of depth for the detail metrics: Canny on normalised inverse depth (DBE, Koch et al. 2018),
Sobel magnitudes (EP/ER, Hu et al. 2019), distances to the nearest edge. See :mod:`.metrics` for the definitions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Defaults of the detail metrics (the flags of `betterdepth eval` start here).
CANNY_SIGMA = math.sqrt(2.0)
CANNY_LOW = 0.15
CANNY_HIGH = 0.3
DBE_MAX_DIST = 10.0
EDGE_THRESHOLD = 0.1
EDGE_TOLERANCE = 0.0



def check_maps(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three maps as arrays, checked: (H,W) each, one shape, ``valid`` bool."""
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
    return _canny_clean(np.where(m, img, ftype(0)), mask_terms(m, sigma, dtype=ftype), low_threshold, high_threshold)


@dataclass
class MaskTerms:
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


def mask_terms(m: np.ndarray, sigma: float, cached: MaskTerms | None = None, dtype=np.float32) -> MaskTerms:
    """:class:`MaskTerms` of ``m`` for ``dtype`` maps; ``cached`` is returned instead when it holds the
    same mask, sigma and float type."""
    if (
        cached is not None and cached.sigma == sigma and cached.bleed.dtype == dtype
        and np.array_equal(cached.mask, m)
    ):
        return cached
    bleed = _gaussian(sigma, dtype)(m.astype(dtype)) + np.finfo(dtype).eps
    return MaskTerms(mask=m, sigma=sigma, bleed=bleed, eroded=_erode(m))


def _canny_clean(img: np.ndarray, terms: MaskTerms, low_threshold: float, high_threshold: float) -> np.ndarray:
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
class InverseDepth:
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


def inverse_depth(depth: np.ndarray, valid: np.ndarray) -> InverseDepth:
    import cv2

    d = np.asarray(depth)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.divide(1.0, d, dtype=np.float32)  # everywhere: whatever lies outside valid is masked next
    ok = valid & np.isfinite(inv)
    if not ok.any():
        return InverseDepth(inv=np.zeros(d.shape, np.float32), ok=ok, lo=0.0, hi=1.0)
    # numpy's where= paths (masked divide, masked min/max) cost ~10x these OpenCV calls
    mask = ok.view(np.uint8)
    inv = cv2.bitwise_and(inv, inv, mask=mask)  # bitwise: 0.0 outside ok, NaN and inf included
    lo, hi, _, _ = cv2.minMaxLoc(inv, mask)
    return InverseDepth(inv=inv, ok=ok, lo=float(lo), hi=float(hi))


def depth_edges(
    depth: np.ndarray,
    valid: np.ndarray,
    sigma: float = CANNY_SIGMA,
    low_threshold: float = CANNY_LOW,
    high_threshold: float = CANNY_HIGH,
) -> np.ndarray:
    """Canny edges of a depth map's normalised inverse depth over ``valid`` ((H,W) -> (H,W) bool)."""
    return inverse_depth_edges(inverse_depth(depth, positive_mask(depth, valid)), sigma, low_threshold, high_threshold)[0]


def inverse_depth_edges(
    inv: InverseDepth, sigma: float, low_threshold: float, high_threshold: float, terms: MaskTerms | None = None
) -> tuple[np.ndarray, MaskTerms]:
    """:func:`depth_edges` of an :class:`InverseDepth`, and the mask terms it used."""
    terms = mask_terms(inv.ok, sigma, terms)
    norm, _ = inv.normalized()  # finite, 0 outside ok
    return _canny_clean(norm, terms, low_threshold, high_threshold), terms




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
    pred, target, valid = check_maps(pred, target, valid)
    if gt_edges is None:
        gt_edges = depth_edges(target, valid, sigma, low_threshold, high_threshold)
    elif gt_edges.shape != valid.shape:
        raise ValueError(f"gt_edges must have shape {valid.shape}, got {gt_edges.shape}")
    gt_edges = np.asarray(gt_edges, bool)
    if not gt_edges.any():
        return math.nan, math.nan
    est = depth_edges(pred, valid, sigma, low_threshold, high_threshold)
    return boundary_errors(est, gt_edges, max_dist)


def boundary_errors(est: np.ndarray, gt_edges: np.ndarray, max_dist: float) -> tuple[float, float]:
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
    return inverse_depth_sobel(inverse_depth(depth, positive_mask(depth, valid)), threshold, reference)


def inverse_depth_sobel(
    inv: InverseDepth, threshold: float, reference: tuple[float, float] | None = None,
    terms: MaskTerms | None = None,
) -> SobelEdges:
    """:func:`sobel_edges` of an :class:`InverseDepth` (``terms``: mask terms of ``inv.ok``, if at hand)."""
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
    pred, target, valid = check_maps(pred, target, valid)
    ok_gt = positive_mask(target, valid)
    if gt_sobel is None:
        gt_sobel = sobel_edges(target, ok_gt, threshold)
    est = sobel_edges(pred, ok_gt, threshold, reference=gt_sobel[2])
    return precision_recall(gt_sobel, est, tolerance)


def precision_recall(gt_sobel: SobelEdges, est_sobel: SobelEdges, tolerance: float) -> tuple[float, float]:
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


def positive_mask(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return valid & np.isfinite(depth) & (depth > 0)
