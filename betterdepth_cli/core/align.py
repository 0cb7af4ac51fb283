"""Least-squares scale and shift alignment (paper eq. 3), batched, in torch.

``fit_scale_shift(pred, target, valid)`` solves
``argmin_{s,b} sum_valid (s * pred + b - target)^2`` in closed form per sample.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch


class DegenerateAlignmentWarning(UserWarning):
    """Alignment had a constant prediction or fewer than two valid pixels."""


def fit_scale_shift(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
    on_degenerate: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form least squares of ``s * pred + b`` to ``target`` over ``valid``.

    Args:
        pred, target: (B, ...) maps of the same shape.
        valid: bool (B, ...) mask; all pixels when ``None``.
    Returns:
        scale, shift: (B,) float64-accurate results cast to ``pred.dtype``.

    Degenerate samples never give NaN: with fewer than two valid pixels the
    result is s = 1, b = 0 (or b = target - pred for one pixel); with a constant
    prediction it is s = 0, b = mean(target). Both raise a
    :class:`DegenerateAlignmentWarning`, or call ``on_degenerate`` with the reason of each such
    sample instead (as :func:`scale_shift_from_moments`).
    """
    b = pred.shape[0]
    p = pred.reshape(b, -1).double()
    t = target.reshape(b, -1).double()
    sp, st = p.sum(1), t.sum(1)
    if valid is None and bool(torch.isfinite(sp).all() & torch.isfinite(st).all()):
        # finite sums: no NaN or inf anywhere, every pixel counts (the common case, no masking passes)
        n = torch.full_like(sp, float(p.shape[1]))
    else:
        ok = torch.isfinite(p) & torch.isfinite(t)
        if valid is not None:
            ok &= valid.reshape(b, -1).bool()
        p = torch.where(ok, p, 0.0)
        t = torch.where(ok, t, 0.0)
        n = ok.sum(1).double()
        sp, st = p.sum(1), t.sum(1)
    # the second moments as dot products (no temporaries)
    spp, spt = torch.linalg.vecdot(p, p), torch.linalg.vecdot(p, t)
    scale, shift = scale_shift_from_moments(n, sp, st, spp, spt, stacklevel=2, on_degenerate=on_degenerate)
    return scale.to(pred.dtype), shift.to(pred.dtype)


def scale_shift_from_moments(
    n: torch.Tensor, sp: torch.Tensor, st: torch.Tensor, spp: torch.Tensor, spt: torch.Tensor, stacklevel: int = 1,
    on_degenerate: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed form of :func:`fit_scale_shift` from the per-sample sums over valid pixels.

    Args:
        n: pixel count; sp, st: sums of pred and target; spp: sum of pred^2;
            spt: sum of pred * target. All (B,) float64.
        stacklevel: the frame the degenerate-case warning names, counted from the caller (1).
        on_degenerate: called with the reason of each degenerate sample, in order ("constant
            prediction", "1 valid pixel to fit"), instead of the Python warning (whose filters are
            not thread-safe: a scoring thread hears of it this way).
    Returns:
        scale, shift: (B,) float64, with the degenerate cases of :func:`fit_scale_shift`.
    """
    n_safe = n.clamp_min(1.0)
    mp, mt = sp / n_safe, st / n_safe
    var = spp - sp * mp
    cov = spt - sp * mt
    constant = var <= 1e-12 * spp.clamp_min(1e-300)
    few = n < 2
    scale = torch.where(constant | few, torch.zeros_like(var), cov / var.clamp_min(1e-300))
    shift = mt - scale * mp
    # fewer than 2 pixels: identity, or the offset that matches the single pixel
    one = n == 1
    scale = torch.where(few, torch.ones_like(scale), scale)
    shift = torch.where(few, torch.where(one, mt - mp, torch.zeros_like(shift)), shift)
    if bool((constant | few).any()):
        idx = torch.nonzero(constant | few).flatten().tolist()
        if on_degenerate is not None:
            for i in idx:
                count = int(n[i])
                on_degenerate(f"{count} valid pixel{'' if count == 1 else 's'} to fit" if bool(few[i])
                              else "constant prediction")
            return scale, shift
        warnings.warn(
            f"degenerate alignment for sample(s) {idx}: constant prediction or fewer than "
            "2 valid pixels; using a defined fallback",
            DegenerateAlignmentWarning,
            stacklevel=stacklevel + 1,
        )
    return scale, shift


def apply_scale_shift(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``scale * x + shift`` with (B,) parameters broadcast over (B, ...)."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    return x * scale.reshape(shape).to(x) + shift.reshape(shape).to(x)


def align(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``pred`` mapped onto ``target`` by the least-squares scale and shift."""
    s, b = fit_scale_shift(pred, target, valid)
    return apply_scale_shift(pred, s, b)


def depth_to_disparity(depth: torch.Tensor, valid: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 / depth over valid positive pixels, 0 elsewhere."""
    ok = valid & (depth > eps)
    return torch.where(ok, 1.0 / depth.clamp_min(eps), torch.zeros_like(depth))


def disparity_to_depth(disp: torch.Tensor, min_disparity: float = 1e-3) -> torch.Tensor:
    """1 / max(disparity, min_disparity): the eval protocol's inversion."""
    return 1.0 / disp.clamp_min(min_disparity)
