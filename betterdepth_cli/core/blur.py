"""How soft are a depth map's edges? A scale-space estimate of its blur, in pixels.

A depth step blurred by a Gaussian of sigma ``s`` has its steepest gradient proportional to
``1 / s``; blurred again by a known Gaussian of :data:`PROBE` px it is a step blurred by
``sqrt(s^2 + PROBE^2)``. So the ratio of the steepest gradients after and before the probe,
``rho = s / sqrt(s^2 + PROBE^2)``, gives ``s = PROBE * rho / sqrt(1 - rho^2)``, whatever the
step's height. The steepest gradient of a map is taken as the :data:`QUANTILE` quantile of its
gradient magnitude over the valid pixels (robust to a few noisy pixels, dominated by the map's
sharpest edges). A sharp map gives about 0.5-1 px; a plane or a map without edges gives a large
value (a gradient no blur can lower), which only matters to a caller that sharpens edges, and
there is none to sharpen; a constant map gives 0.

The card's ``cascade`` (:func:`~betterdepth_cli.core.pipeline.refine_batch`) uses it to decide
whether a conditioning map is softer than the refiner was trained to sharpen in one pass.
:func:`local_blur` is the same ratio taken per pixel, of the steepest gradients within
:data:`LOCAL_RADIUS` px before and after the probe: the blur of the nearest strong edge, which the
card's ``keep_sharp`` (:mod:`~betterdepth_cli.core.edge_gate`) reads to leave edges that are already
sharp as the conditioner drew them. Pure torch, (B,1,H,W), any units (the estimates are scale and
shift invariant).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from betterdepth_cli.core.normalize import float64_map, strided_subset

#: The probe's sigma in pixels.
PROBE = 4.0
#: The quantile of the gradient magnitude taken as a map's steepest gradient.
QUANTILE = 0.995
#: :func:`local_blur`'s reach in pixels: the steepest edge within it is the one measured (3 x the probe).
LOCAL_RADIUS = 12
#: Above this many valid pixels the quantile is taken over an evenly strided subset of at most this many.
MAX_SAMPLES = 1 << 20


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B,1,H,W) blurred by a separable Gaussian of ``sigma`` px (truncated at 4 sigma, reflected borders)."""
    r = max(1, math.ceil(4.0 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    # reflect padding needs the pad below the side; replicate where the map is smaller
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.reshape(1, 1, -1, 1))


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    """|grad x| by central differences (one-sided at the border), (B,1,H,W)."""
    gy, gx = torch.gradient(x, dim=(-2, -1))
    return torch.hypot(gy, gx)


def _steepest(x: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """(B,) the :data:`QUANTILE` quantile of |grad x| over the pixels of ``ok`` (0 where none)."""
    mag = _magnitude(x)
    out = []
    for m, k in zip(mag, ok):
        values = m[k]
        values = strided_subset(values, MAX_SAMPLES)
        out.append(_quantile(values.to(torch.float64), QUANTILE) if values.numel() else torch.zeros((), dtype=torch.float64))
    return torch.stack(out)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) from two order statistics: a selection, not a sort."""
    pos = q * (values.numel() - 1)
    lo = math.floor(pos)
    below = torch.kthvalue(values, lo + 1).values
    if pos == lo:
        return below
    return below + (pos - lo) * (torch.kthvalue(values, lo + 2).values - below)


def _probed(cond: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The map scaled to [0, 1] over its valid pixels (float32, 0 where invalid), the same after the
    probe (invalid pixels filled by a normalised blur of their valid neighbours), and the valid pixels
    whose neighbours are valid (where gradients are read)."""
    c, ok = float64_map(cond, valid)
    # float32 from here (its convolutions are ten times faster than float64's on CPUs): the map is
    # first shifted and scaled to [0, 1] over its valid pixels, so a large offset costs no precision
    lo = torch.where(ok, c, torch.inf).amin(dim=(-2, -1), keepdim=True)
    hi = torch.where(ok, c, -torch.inf).amax(dim=(-2, -1), keepdim=True)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    c = torch.where(ok, (c - lo) / span, torch.zeros_like(c)).float()
    okf = ok.float()
    probed = gaussian_blur(c, PROBE)
    if not bool(ok.all()):  # a normalised blur: only the valid neighbours count (all valid: the weights sum to 1)
        probed = probed / gaussian_blur(okf, PROBE).clamp_min(1e-6)
    inner = -F.max_pool2d(-okf, kernel_size=3, stride=1, padding=1) > 0.5  # valid with valid neighbours
    return c, probed, inner


def _sigma(rho: torch.Tensor) -> torch.Tensor:
    """The blur ``s`` of a Gaussian step from the gradient ratio ``rho = s / sqrt(s^2 + PROBE^2)``."""
    rho = rho.clamp(0.0, 1.0 - 1e-9)
    return PROBE * rho / torch.sqrt(1.0 - rho**2)


def estimate_blur(cond: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B,1,H,W) depth or disparity -> (B,) float64: the Gaussian blur of its edges in pixels (module doc).

    Invalid pixels (``valid`` False or non-finite) take no part: the map is filled there by a
    normalised blur of its valid neighbours before the probe, and gradients are read only on valid
    pixels whose neighbours are valid. A map without valid gradient gives 0.
    """
    c, probed, inner = _probed(cond, valid)
    before, after = _steepest(c, inner), _steepest(probed, inner)
    sigma = _sigma(after / before.clamp_min(1e-300))
    return torch.where(before > 0, sigma, torch.zeros_like(sigma))


def _axis_max(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """The maximum over a window of ``2 radius + 1`` centred on each element along ``dim`` (-1 or -2),
    -inf beyond the borders: windows of 1, 2, 4 ... elements by doubling, then two of them overlapping
    (log2 of the window in passes instead of the window's length)."""
    k, n = 2 * radius + 1, x.shape[dim]
    m = F.pad(x, (radius, radius) if dim == -1 else (0, 0, radius, radius), value=-torch.inf)
    w = 1
    while 2 * w <= k:  # m[i] = max of [i, i + 2w)
        m = torch.maximum(m.narrow(dim, 0, m.shape[dim] - w), m.narrow(dim, w, m.shape[dim] - w))
        w *= 2
    return torch.maximum(m.narrow(dim, 0, n), m.narrow(dim, k - w, n))  # [i, i + w) and [i + k - w, i + k)


def window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(B,C,H,W) -> the maximum over the square of side ``2 radius + 1`` centred on each pixel: equal to
    ``F.max_pool2d(x, 2 radius + 1, 1, radius)``, separable and by doubling (about 100 x faster at
    radius 12 on a CPU)."""
    return _axis_max(_axis_max(x, radius, -1), radius, -2)


def local_blur(cond: torch.Tensor, valid: torch.Tensor | None = None, radius: int = LOCAL_RADIUS) -> torch.Tensor:
    """(B,1,H,W) depth or disparity -> (B,1,H,W) float32: at each pixel, the blur in pixels of the
    steepest edge within ``radius`` px (the ratio of the largest gradients there after and before the
    probe; module doc). Exact for a lone blurred step; where two edges share the window the steeper
    one speaks. ``inf`` where there is no gradient within reach (no edge: nothing is sharp). Invalid
    pixels as in :func:`estimate_blur`.
    """
    c, probed, inner = _probed(cond, valid)
    reach = lambda x: window_max(_magnitude(x) * inner, radius)  # noqa: E731
    before, after = reach(c), reach(probed)
    sigma = _sigma(after / before.clamp_min(torch.finfo(before.dtype).tiny))
    return torch.where(before > 0, sigma, torch.full_like(sigma, torch.inf))
