"""Refine only where the conditioner shows a depth transition: the card's ``edge_gate``.

A refiner's job is to make the conditioner's soft depth edges sharp and put them where the photo
says. Where the conditioner shows no transition at all (a floor, a wall, a weak model's smooth
ramp) every change the refiner makes comes from the photo alone: texture, print, shading. The gate
keeps the refiner's changes where the conditioner's own gradient says "an edge is here" and
returns the conditioner elsewhere:

- **evidence** ``e = |grad S(c)| * L / (q98 - q2)``: the gradient of the conditioning ``c``
  (lightly smoothed, :data:`PRESMOOTH` px, so pixel noise is no evidence) in units of its robust
  range per image side ``L`` (the longest side). A map that goes once from near to far across the
  image has ``e`` about 1 everywhere; a depth step of height ``h`` (share of the range) blurred by
  a Gaussian of ``s * L`` peaks at ``h / (2.5 s)`` (a 30 % step blurred by 2 % of the side: 6);
- **gate** ``g = clip((e - low) / (high - low), 0, 1)``, then widened by a max filter of radius
  :func:`dilation_radius` so the refiner may move an edge a little sideways;
- **output** ``c + g * (refined - c)``.

So it is 0 on a tilted plane (no texture printed, by construction) and over a conditioner with no
edges, and 1 around the edges of a strong conditioner, which is where refining pays. Pure torch,
(B,1,H,W), any units (the evidence is scale and shift invariant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from betterdepth_cli.core.layout import masked_lowpass
from betterdepth_cli.core.normalize import masked_quantiles

#: Pre-smoothing of the conditioning before its gradient, in pixels (about a Gaussian's sigma).
PRESMOOTH = 1.0
#: The max filter's radius as a share of the longest side, and its minimum in pixels.
DILATION_SHARE = 0.003
DILATION_MIN = 2


def dilation_radius(height: float, width: float) -> int:
    """``max(DILATION_MIN, round(DILATION_SHARE * longest side))`` pixels."""
    return max(DILATION_MIN, round(DILATION_SHARE * max(height, width)))


def edge_evidence(cond: torch.Tensor, valid: torch.Tensor | None = None, side: float | None = None,
                  span: tuple[float, float] | None = None) -> torch.Tensor:
    """(B,1,H,W) conditioning -> (B,1,H,W) evidence ``|grad S(c)| * L / (q98 - q2)`` (module docstring).

    Invalid pixels (``valid`` False or non-finite) give no evidence and take no part in the
    smoothing or the range; a map without range gives 0. ``side`` and ``span`` (q2, q98) override
    the map's own longest side and range (a tile measured on its whole plate's scale).
    """
    if cond.ndim != 4 or cond.shape[1] != 1:
        raise ValueError(f"`cond` must be (B,1,H,W), got {tuple(cond.shape)}")
    c = cond.to(torch.float64)
    ok = torch.isfinite(c)
    if valid is not None:
        ok &= valid.to(c.device).bool()
    smooth = masked_lowpass(c, ok.to(c.dtype), PRESMOOTH)
    gy, gx = torch.gradient(smooth, dim=(-2, -1))
    if span is None:
        lo, hi = masked_quantiles(c, ok)
    else:
        lo, hi = (torch.full((c.shape[0],), float(v), dtype=c.dtype, device=c.device) for v in span)
    rng = (hi - lo).to(c.dtype).clamp_min(torch.finfo(c.dtype).tiny).reshape(-1, 1, 1, 1)
    e = torch.hypot(gy, gx) * float(side or max(c.shape[-2:])) / rng
    e = torch.where((hi > lo).reshape(-1, 1, 1, 1), e, torch.zeros_like(e))
    return torch.where(ok, e, torch.zeros_like(e))


def edge_gate(cond: torch.Tensor, valid: torch.Tensor | None, low: float, high: float, side: float | None = None,
              span: tuple[float, float] | None = None) -> torch.Tensor:
    """The gate in [0, 1] (B,1,H,W): evidence ramped from ``low`` to ``high``, widened by the max filter
    (``side``, ``span``: see :func:`edge_evidence`; ``side`` also sets the filter's radius)."""
    if not 0 <= low < high:
        raise ValueError(f"edge gate needs 0 <= low < high, got {low}, {high}")
    g = ((edge_evidence(cond, valid, side, span) - low) / (high - low)).clamp_(0.0, 1.0)
    r = dilation_radius(*((side, side) if side else cond.shape[-2:]))
    return F.max_pool2d(g, kernel_size=2 * r + 1, stride=1, padding=r)


def gate_changes(refined: torch.Tensor, cond: torch.Tensor, valid: torch.Tensor | None, low: float, high: float,
                 side: float | None = None, span: tuple[float, float] | None = None) -> torch.Tensor:
    """``cond + g * (refined - cond)`` with ``g`` = :func:`edge_gate`; ``refined`` where ``cond`` is invalid."""
    if refined.shape != cond.shape:
        raise ValueError(f"`refined` {tuple(refined.shape)} and `cond` {tuple(cond.shape)} differ")
    c = cond.to(device=refined.device, dtype=torch.float64)
    v = None if valid is None else valid.to(refined.device).bool()
    g = edge_gate(c, v, low, high, side, span)
    r = refined.to(torch.float64)
    out = torch.where(torch.isfinite(c), c + g * (r - c), r)
    if v is not None:
        out = torch.where(v, out, r)
    return out.to(refined.dtype)
