"""The guided filter (He, Sun and Tang, ECCV 2010 / TPAMI 2013), batched, in torch.

``guided_filter(p, guide, radius, eps)`` filters the map ``p`` with a grey
guide ``I``: in every (2r+1) x (2r+1) window the output is the least-squares
affine function of the guide, ``q = a * I + b`` with
``a = cov(I, p) / (var(I) + eps)`` and ``b = mean(p) - a * mean(I)``; each
pixel's ``a`` and ``b`` are averaged over the windows that cover it. Windows
are clipped at the image border (means over the pixels inside). The filter is
linear in ``p``: ``GF(s * p + t) = s * GF(p) + t``, so it works in any depth or
disparity units.

In this project it sharpens a conditioner's map with the photo as the guide:
where the map changes inside a window and the photo changes with it, the
output snaps the change to the photo's edge; where the photo has texture but
the map is flat, ``cov`` is near 0 and the texture does not leak (how much it
leaks is set by ``eps``, in units of the guide's variance, guide in [0, 1]).

:func:`guided_radius` scales the window with the image (``radius`` as a share
of the longest side), so one setting serves 300 px and 3000 px inputs alike.
"""

from __future__ import annotations

import torch

#: Default window radius, as a share of the longest image side (chosen on the
#: development halves, see MODEL_CARD.md), and the default regulariser.
RADIUS = 0.01
EPS = 1e-3
#: Maps up to this many pixels are filtered in float64, larger ones in float32 (memory).
FLOAT64_PIXELS = 8_000_000
#: Rec. 601 luma weights (the grey guide).
LUMA = (0.299, 0.587, 0.114)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB in [0,1] -> (B,1,H,W) Rec. 601 luma."""
    w = torch.tensor(LUMA, dtype=images.dtype, device=images.device).reshape(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def _box_sum_1d(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Sum over [i - r, i + r] along ``dim`` (clipped at the ends), by a cumulative sum.

    With ``c`` the inclusive cumulative sum, the window sum at ``i`` is ``c[min(i + r, n - 1)]``
    minus ``c[i - r - 1]`` where ``i - r - 1 >= 0``: two shifted slices, no padding or gather.
    """
    n = x.shape[dim]
    c = torch.cumsum(x.movedim(dim, -1), dim=-1)
    out = torch.empty_like(c)
    m = max(n - r, 0)
    out[..., :m] = c[..., r : r + m]
    out[..., m:] = c[..., -1:]  # windows reaching past the end: the whole prefix
    if n - r - 1 > 0:
        out[..., r + 1 :] -= c[..., : n - r - 1]
    return out.movedim(-1, dim)


def _window_counts(h: int, w: int, r: int, device) -> torch.Tensor:
    """(1,1,H,W) float64: how many pixels each clipped (2r+1)^2 window holds."""
    def count(n: int) -> torch.Tensor:
        i = torch.arange(n, device=device, dtype=torch.float64)
        return (i + r + 1).clamp(max=n) - (i - r).clamp(min=0)

    return (count(h)[:, None] * count(w)[None, :])[None, None]


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean of (B,C,H,W) over (2r+1)^2 windows clipped at the border, in ``x``'s dtype."""
    if r < 0:
        raise ValueError(f"`r` must be >= 0, got {r}")
    h, w = x.shape[-2:]
    s = _box_sum_1d(_box_sum_1d(x, r, -2), r, -1)
    return s.div_(_window_counts(h, w, r, x.device).to(s.dtype))


def guided_filter(p: torch.Tensor, guide: torch.Tensor, radius: int, eps: float,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """Grey-guided filter of ``p`` (B,1,H,W) by ``guide`` (B,1,H,W); returns (B,1,H,W).

    ``radius`` in pixels (0 returns ``p``), ``eps`` > 0 in guide-variance units. ``valid`` (B,1,H,W)
    bool: a map with holes is filtered from its valid pixels only (:func:`_holed_filter`); all valid
    (or ``None``) is the plain filter, bit for bit.
    """
    if p.shape != guide.shape or p.ndim != 4 or p.shape[1] != 1:
        raise ValueError(f"`p` and `guide` must both be (B,1,H,W), got {tuple(p.shape)} and {tuple(guide.shape)}")
    if not eps > 0:
        raise ValueError(f"`eps` must be > 0, got {eps}")
    if radius == 0:
        return p
    # float64 up to FLOAT64_PIXELS (exact and the same for any thread count); above, float32 on
    # centred values (the box sums are differences of running sums, ~1e-6 of the range at 8K):
    # a 24 MP plate then needs ~1 GB instead of 2.25 GB
    big = p.shape[-2] * p.shape[-1] > FLOAT64_PIXELS and p.dtype != torch.float64
    dt = torch.float32 if big else torch.float64
    # centred on the first pixel's value, not the mean: a parallel reduction's last bit depends on the
    # thread count, and on a near-constant map the eval's alignment turns that bit into a different score
    offset = p[..., :1, :1].to(dt)  # the filter is linear in p: added back after
    pc = p.to(dt) - offset
    gi = guide.to(dt) - guide[..., :1, :1].to(dt)  # a constant shift of the guide changes nothing
    if valid is not None and not bool(valid.all()):
        return _holed_filter(pc, gi, valid.to(dt), radius, eps).add_(offset).to(p.dtype)
    mean_i, mean_p = box_mean(gi, radius), box_mean(pc, radius)
    a = box_mean(gi * pc, radius).sub_(mean_i * mean_p)  # cov(I, p)
    var_i = box_mean(gi * gi, radius).sub_(mean_i * mean_i).clamp_min_(0.0)
    a.div_(var_i.add_(eps))
    del var_i
    b = mean_p.sub_(a * mean_i)  # mean_p is not used again
    del mean_i
    q = box_mean(a, radius).mul_(gi).add_(box_mean(b, radius))
    return q.add_(offset).to(p.dtype)


def _holed_filter(pc: torch.Tensor, gi: torch.Tensor, w: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """The guided filter over the pixels where ``w`` is 1: each window's means, covariance and variance
    from its valid pixels (a hole's value does not pull its neighbours), each pixel's ``a`` and ``b``
    averaged over the windows that hold a valid pixel; a pixel no such window covers keeps its value."""
    share = box_mean(w, radius)  # of each window's pixels, how many are valid
    has = share > 0
    n = share.clamp_min(1e-12)
    mean_i, mean_p = box_mean(w * gi, radius) / n, box_mean(w * pc, radius) / n
    cov = box_mean(w * gi * pc, radius) / n - mean_i * mean_p
    var = (box_mean(w * gi * gi, radius) / n - mean_i * mean_i).clamp_min(0.0)
    a = torch.where(has, cov / (var + eps), torch.zeros_like(cov))
    b = torch.where(has, mean_p - a * mean_i, torch.zeros_like(cov))
    cover = box_mean(has.to(pc.dtype), radius)
    q = (box_mean(a, radius) * gi + box_mean(b, radius)) / cover.clamp_min(1e-12)
    return torch.where(cover > 0, q, pc)


def guided_radius(height: int, width: int, share: float = RADIUS) -> int:
    """The window radius in pixels for an image: ``round(share * longest side)``, at least 1."""
    if share < 0:
        raise ValueError(f"`share` must be >= 0, got {share}")
    if share == 0:
        return 0
    return max(1, round(share * max(height, width)))


def guided_refine(depth: torch.Tensor, images: torch.Tensor, radius: float = RADIUS, eps: float = EPS,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """The classical refiner: ``depth`` (B,1,H,W) filtered with the photos' luma as the guide.

    ``images`` (B,3,H,W) in [0,1] at the map's size; ``radius`` a share of the longest side;
    ``valid``: the map's valid pixels (holes are left out of the filter).
    """
    h, w = depth.shape[-2:]
    if tuple(images.shape[-2:]) != (h, w):
        raise ValueError(f"`images` are {tuple(images.shape[-2:])}, the maps {(h, w)}")
    valid = None if valid is None else valid.to(depth.device)
    return guided_filter(depth, luminance(images.to(depth.dtype)), guided_radius(h, w, radius), eps, valid)


#: The name that selects the classical refiner wherever a refiner model is named (``--model guided``).
GUIDED_MODEL_NAME = "guided"


def guided_card(radius: float = RADIUS, eps: float = EPS) -> dict:
    """The card of the classical refiner: what it is and the defaults a run resolves from it."""
    return {
        "format": "betterdepth-classical/1",
        "source": GUIDED_MODEL_NAME,
        "classical": {"type": "guided", "radius": radius, "eps": eps,
                      "reference": "He, Sun and Tang, Guided Image Filtering, ECCV 2010 (grey guide)"},
        "zero_noise": True,
        "defaults": {"steps": 1, "ensemble": 1, "reduction": "mean", "processing_res": 0, "conditioner": "builtin"},
    }


class GuidedFilterRefiner:
    """The classical refiner: the conditioner's map guided-filtered with the photo as the guide.

    Takes the place of a BetterDepth model in :func:`betterdepth_cli.core.pipeline.refine_batch`
    (``model=``): no weights, no sampling, native resolution; steps, ensemble and seed do not apply.
    """

    classical = True

    def __init__(self, radius: float = RADIUS, eps: float = EPS, device: str | torch.device = "cpu"):
        self.radius, self.eps = float(radius), float(eps)
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.card = guided_card(self.radius, self.eps)

    @property
    def defaults(self) -> dict:
        return dict(self.card["defaults"])

    def refine(self, depth: torch.Tensor, images: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B,1,H,W) map in any units and (B,3,H,W) photos in [0,1] -> (B,1,H,W) filtered map (its holes,
        where ``valid`` is False, left out of the filter)."""
        return guided_refine(depth.to(self.device).float(), images.to(self.device).float(), self.radius, self.eps,
                             valid)
