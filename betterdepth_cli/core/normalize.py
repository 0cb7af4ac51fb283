"""Robust normalisation of depth-like maps to [-1, 1] and its exact inverse.

A map is mapped linearly so that its 2 % quantile over valid pixels goes to -1
and its 98 % quantile to +1, then clipped (Marigold's convention). Training and
inference use this same function.
"""

from __future__ import annotations

import torch

LOW_QUANTILE = 0.02
HIGH_QUANTILE = 0.98
_MIN_RANGE = 1e-6
#: Above this many pixels the quantiles are taken over an evenly strided subset
#: of at most this many values (deterministic; the 2 %/98 % quantiles of a
#: 65 k-pixel subset differ from the full map's by far less than the detail the
#: refiner adds, and a full sort of a 4K map costs more than a UNet step).
QUANTILE_SAMPLES = 65_536


def strided_subset(values: torch.Tensor, limit: int = QUANTILE_SAMPLES) -> torch.Tensor:
    """Every k-th value along the last dim, so that at most ``limit`` remain (all of them when they fit)."""
    n = values.shape[-1]
    return values if n <= limit else values[..., :: -(-n // limit)]


def float64_map(cond: torch.Tensor, valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B,1,H,W) map as float64 and its usable pixels (finite, and ``valid`` where given); other shapes are refused."""
    if cond.ndim != 4 or cond.shape[1] != 1:
        raise ValueError(f"`cond` must be (B,1,H,W), got {tuple(cond.shape)}")
    c = cond.to(torch.float64)
    ok = torch.isfinite(c)
    if valid is not None:
        ok &= valid.to(c.device).bool()
    return c, ok


def masked_quantiles(
    x: torch.Tensor, valid: torch.Tensor, low: float = LOW_QUANTILE, high: float = HIGH_QUANTILE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample quantiles over valid pixels.

    Args:
        x: (B,1,H,W) or (B,H,W) map.
        valid: bool mask of the same shape.
    Returns:
        lo, hi: (B,) tensors. A sample without valid pixels gives lo = 0, hi = 1.
    """
    b = x.shape[0]
    flat = x.reshape(b, -1).float()
    mask = valid.reshape(b, -1)
    lo = torch.zeros(b, dtype=flat.dtype, device=flat.device)
    hi = torch.ones(b, dtype=flat.dtype, device=flat.device)
    if bool(mask.all()):
        q = torch.tensor([low, high], dtype=flat.dtype, device=flat.device)
        qs = torch.quantile(strided_subset(flat), q, dim=1)  # [2,B]
        return qs[0], qs[1]
    for i in range(b):
        vals = flat[i][mask[i]]
        if vals.numel() == 0:
            continue
        vals = strided_subset(vals)
        q = torch.quantile(vals, torch.tensor([low, high], dtype=vals.dtype, device=vals.device))
        lo[i], hi[i] = q[0], q[1]
    return lo, hi


def normalize(
    x: torch.Tensor,
    valid: torch.Tensor | None = None,
    low: float = LOW_QUANTILE,
    high: float = HIGH_QUANTILE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map ``x`` (B,1,H,W) to [-1, 1] by its robust quantiles over ``valid``.

    Returns ``(normalised, lo, hi)`` with lo, hi of shape (B,). Values outside the
    quantile range are clipped; invalid pixels are mapped too (and clipped) so
    the result is finite everywhere. A constant map gives zeros.
    """
    if valid is None:
        valid = torch.isfinite(x)
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = masked_quantiles(x, valid, low, high)
    return normalize_with(x, lo, hi), lo, hi


def normalize_with(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Apply the mapping [lo, hi] -> [-1, 1] (per sample) and clip."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    lo_ = lo.reshape(shape).to(x)
    rng = (hi - lo).clamp_min(_MIN_RANGE).reshape(shape).to(x)
    return ((x - lo_) / rng * 2.0 - 1.0).clamp(-1.0, 1.0)


def denormalize(y: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`normalize_with` for values inside [-1, 1]."""
    shape = (-1,) + (1,) * (y.ndim - 1)
    lo_ = lo.reshape(shape).to(y)
    rng = (hi - lo).clamp_min(_MIN_RANGE).reshape(shape).to(y)
    return (y + 1.0) * 0.5 * rng + lo_
