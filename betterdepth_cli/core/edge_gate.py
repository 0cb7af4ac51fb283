"""Refine only where the conditioner shows a soft depth transition: the card's ``edge_gate`` and ``keep_sharp``.

A refiner's job is to make the conditioner's soft depth edges sharp and put them where the photo
says. Where the conditioner shows no transition at all (a floor, a wall, a weak model's smooth
ramp) every change the refiner makes comes from the photo alone: texture, print, shading. The gate
keeps the refiner's changes where the conditioner's own gradient says "an edge is here" and
returns the conditioner elsewhere:

- **evidence** ``e = |grad S(c) - W(grad S(c))| * L / (q98 - q2)``: the gradient of the
  conditioning ``c`` (lightly smoothed, :data:`PRESMOOTH` px, so pixel noise is no evidence) less
  its own local mean ``W`` (a normalised low-pass of :data:`PLANE_SHARE` x ``L``), in units of the
  map's robust range per image side ``L`` (the longest side). The disparity of a plane is affine in
  the pixel coordinates, so its gradient is constant and equals its local mean: **any plane, at any
  tilt, has no evidence** (a floor falling steeply towards the camera as much as a gentle wall);
  only where the gradient changes within ``W``'s scale (a step, a crease) is there any. A depth
  step of height ``h`` (share of the range) blurred by a Gaussian of ``s * L`` (``s`` well below
  :data:`PLANE_SHARE`) peaks at about ``h / (2.5 s) - h / (2.5 * 0.05)`` (a 30 % step blurred by
  2 % of the side: about 4);
- **gate** ``g = clip((e - low) / (high - low), 0, 1)``, then widened by a max filter of radius
  :func:`dilation_radius` so the refiner may move an edge a little sideways;
- **output** ``c + g * (refined - c)``.

So it is 0 on any plane (no texture printed, by construction) and over a conditioner with no
edges, and 1 around the edges of a strong conditioner, which is where refining pays.

A card's ``keep_sharp`` ``[low, high]`` (pixels at the processing size) multiplies the gate by
``clip((b - low) / (high - low), 0, 1)``, ``b`` the blur of the conditioner's nearest strong edge
(:func:`~betterdepth_cli.core.blur.local_blur`): an edge the conditioner already drew sharper than
``low`` px is returned as it drew it (the refiner, which starts from a guided filter of the map,
would only soften it and move it), one softer than ``high`` px is refined in full. Pure torch,
(B,1,H,W), any units (the evidence and the blur are scale and shift invariant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from betterdepth_cli.core.blur import local_blur, window_max
from betterdepth_cli.core.layout import masked_lowpass
from betterdepth_cli.core.normalize import float64_map, masked_quantiles

#: Pre-smoothing of the conditioning before its gradient, in pixels (about a Gaussian's sigma).
PRESMOOTH = 1.0
#: The scale of the gradient's local mean ``W`` that the evidence removes, a share of the longest side
#: (2.5 x the strongest blur the benchmark simulates, 0.02: a blurred step keeps most of its peak).
PLANE_SHARE = 0.05
#: The max filter's radius as a share of the longest side, and its minimum in pixels.
DILATION_SHARE = 0.003
DILATION_MIN = 2


def dilation_radius(height: float, width: float) -> int:
    """``max(DILATION_MIN, round(DILATION_SHARE * longest side))`` pixels."""
    return max(DILATION_MIN, round(DILATION_SHARE * max(height, width)))


def edge_evidence(cond: torch.Tensor, valid: torch.Tensor | None = None, side: float | None = None,
                  span: tuple[float, float] | None = None) -> torch.Tensor:
    """(B,1,H,W) conditioning -> (B,1,H,W) evidence ``|grad S(c) - W(grad S(c))| * L / (q98 - q2)`` (module doc).

    Invalid pixels (``valid`` False or non-finite) give no evidence and take no part in the
    smoothing or the range; a map without range gives 0. ``side`` and ``span`` (q2, q98) override
    the map's own longest side and range (a tile measured on its whole plate's scale).
    """
    c, ok = float64_map(cond, valid)
    length = float(side or max(c.shape[-2:]))
    gy, gx = (_planar_residual(g, w, PLANE_SHARE * length) for g, w in _gradients(c, ok))
    if span is None:
        lo, hi = masked_quantiles(c, ok)
    else:
        lo, hi = (torch.full((c.shape[0],), float(v), dtype=c.dtype, device=c.device) for v in span)
    rng = (hi - lo).to(c.dtype).clamp_min(torch.finfo(c.dtype).tiny).reshape(-1, 1, 1, 1)
    e = torch.hypot(gy, gx) * length / rng
    e = torch.where((hi > lo).reshape(-1, 1, 1, 1), e, torch.zeros_like(e))
    return torch.where(ok, e, torch.zeros_like(e))


def _gradients(c: torch.Tensor, ok: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(d/dy, weight), (d/dx, weight)]`` of ``c`` (``torch.gradient``: central differences, one-sided
    at the border), each weighted 1 where every pixel it reads is valid and 0 elsewhere."""
    c0 = torch.where(ok, c, torch.zeros_like(c))
    okf = ok.to(c.dtype)
    out = []
    every = bool(ok.all())
    for dim, grad in zip((-2, -1), torch.gradient(c0, dim=(-2, -1))):
        kernel = (3, 1) if dim == -2 else (1, 3)
        pad = (0, 0, 1, 1) if dim == -2 else (1, 1, 0, 0)
        # a min filter over the pixels the difference reads (replicated border = the one-sided case)
        reads = okf if every else -F.max_pool2d(-F.pad(okf, pad, mode="replicate"), kernel_size=kernel, stride=1)
        out.append((grad, reads))
    return out


def _planar_residual(grad: torch.Tensor, weight: torch.Tensor, wide: float) -> torch.Tensor:
    """``S(grad) - W(S(grad))``: the lightly smoothed gradient less its local mean over ``wide`` px.

    Smoothing the gradient (not the map) keeps a plane exact up to the border: an affine map's
    gradient is a constant, and normalised box means return a constant exactly.
    """
    smooth = masked_lowpass(grad, weight, PRESMOOTH)
    return smooth - masked_lowpass(smooth, weight, wide)


def edge_gate(cond: torch.Tensor, valid: torch.Tensor | None, low: float, high: float, side: float | None = None,
              span: tuple[float, float] | None = None) -> torch.Tensor:
    """The gate in [0, 1] (B,1,H,W): evidence ramped from ``low`` to ``high``, widened by the max filter
    (``side``, ``span``: see :func:`edge_evidence`; ``side`` also sets the filter's radius)."""
    if not 0 <= low < high:
        raise ValueError(f"edge gate needs 0 <= low < high, got {low}, {high}")
    g = ((edge_evidence(cond, valid, side, span) - low) / (high - low)).clamp_(0.0, 1.0)
    r = dilation_radius(*((side, side) if side else cond.shape[-2:]))
    return window_max(g, r)


def softness(cond: torch.Tensor, valid: torch.Tensor | None, low: float, high: float) -> torch.Tensor:
    """``clip((b - low) / (high - low), 0, 1)`` (B,1,H,W), ``b`` the local blur of ``cond`` in pixels
    (:func:`~betterdepth_cli.core.blur.local_blur`): 0 beside edges sharper than ``low`` px, 1 beside
    edges softer than ``high`` px and where there is no edge (module doc)."""
    if not 0 <= low < high:
        raise ValueError(f"keep_sharp needs 0 <= low < high, got {low}, {high}")
    return ((local_blur(cond, valid) - low) / (high - low)).clamp_(0.0, 1.0)


def gate_changes(refined: torch.Tensor, cond: torch.Tensor, valid: torch.Tensor | None, low: float | None,
                 high: float | None, side: float | None = None, span: tuple[float, float] | None = None,
                 sharp: tuple[float, float] | None = None) -> torch.Tensor:
    """``cond + g * (refined - cond)`` with ``g`` = :func:`edge_gate` (1 when ``low`` is None) times
    :func:`softness` when ``sharp`` (a card's ``keep_sharp``) is given; ``refined`` where ``cond`` is invalid.

    ``refined`` may hold several maps per conditioning map, stacked member-major ((M*B,1,H,W) over a
    (B,1,H,W) ``cond``: an ensemble's members); the gate is computed once and serves them all.
    """
    b = cond.shape[0]
    if refined.shape[1:] != cond.shape[1:] or refined.shape[0] % max(b, 1):
        raise ValueError(f"`refined` {tuple(refined.shape)} does not stack maps of `cond`'s {tuple(cond.shape)}")
    members = refined.shape[0] // b
    c = cond.to(device=refined.device, dtype=torch.float64)
    v = None if valid is None else valid.to(refined.device).bool()
    g = torch.ones_like(c) if low is None else edge_gate(c, v, low, high, side, span)
    if sharp is not None:
        g = g * softness(c, v, *sharp).to(g.dtype)
    g = g.repeat(members, 1, 1, 1)
    c = c.repeat(members, 1, 1, 1)
    r = refined.to(torch.float64)
    out = torch.where(torch.isfinite(c), c + g * (r - c), r)
    if v is not None:
        out = torch.where(v.repeat(members, 1, 1, 1), out, r)
    return out.to(refined.dtype)
