"""Keep the conditioner's layout: the refined map's low frequencies are the conditioning's.

``keep_layout(refined, conditioning, valid, sigma)`` returns
``refined + G_sigma(conditioning - refined)``: a low-pass of the difference (about a Gaussian of
``sigma`` pixels: three box means, :func:`masked_lowpass`) is added back, so below the scale ``sigma`` the output equals the conditioning and above
it the output is the refiner's. It is the method's promise made exact: the feed-forward model
fixes the global layout, the refiner adds detail. A constant or slowly varying offset between the
two maps is removed entirely; an edge the refiner sharpens keeps its sharpness (the difference
there is a narrow band, mostly above the cut-off).

Invalid pixels (``valid`` False, or a non-finite conditioning) take no part: the low-pass is a
normalised convolution (weights = valid), so neither NaNs nor the border move the result; where no valid pixel lies within reach the correction is 0.

Pure torch, (B,1,H,W) maps in any units (the correction is linear, so it commutes with the
de-normalisation's scale and shift).
"""

from __future__ import annotations

import math

import torch

from betterdepth_cli.core.guided import box_mean

#: Box passes whose repeated mean approximates the Gaussian (3: within a few % of it, central limit).
PASSES = 3


def box_radius(sigma: float) -> int:
    """The box radius r whose :data:`PASSES` repeated means have variance ``sigma**2`` (rounded).

    One box of width 2r+1 has variance r(r+1)/3, so three have r(r+1): r = (sqrt(1 + 4 sigma^2) - 1) / 2.
    """
    if not sigma > 0:
        raise ValueError(f"`sigma` must be > 0, got {sigma}")
    return max(1, round((math.sqrt(1.0 + 4.0 * sigma * sigma * 3.0 / PASSES) - 1.0) / 2.0))


def masked_lowpass(x: torch.Tensor, weight: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised smoothing: ``S(weight * x) / S(weight)``, 0 where ``S(weight)`` is 0.

    ``S`` is :data:`PASSES` box means (:func:`~betterdepth_cli.core.guided.box_mean`, windows
    clipped at the border, running sums: cost independent of ``sigma``) approximating a Gaussian of
    ``sigma`` pixels; numerator and denominator share it, so a constant comes back exactly and pixels
    with zero weight do not contribute (``x`` may be NaN there). ``x``, ``weight``: (N,1,H,W).
    """
    r = box_radius(sigma)
    w = weight.to(x.dtype)
    if bool((w == 1).all()):  # every weight 1: the clipped box means are already normalised (den = 1)
        for _ in range(PASSES):
            x = box_mean(x, r)
        return x
    num = torch.where(w > 0, x, torch.zeros_like(x)) * w
    den = w
    for _ in range(PASSES):
        num, den = box_mean(num, r), box_mean(den, r)
    tiny = torch.finfo(x.dtype).tiny ** 0.5
    return torch.where(den > tiny, num / den.clamp_min(tiny), torch.zeros_like(num))


def layout_sigma(side: float, share: float) -> float:
    """The low-pass scale in pixels: ``share`` x the image's (or its frame's) longest ``side``."""
    if share < 0:
        raise ValueError(f"`share` must be >= 0, got {share}")
    return float(share) * float(side)


def keep_layout(refined: torch.Tensor, conditioning: torch.Tensor, valid: torch.Tensor | None,
                sigma: float) -> torch.Tensor:
    """``refined + G_sigma(conditioning - refined)`` over valid pixels (module docstring); (B,1,H,W).

    ``sigma`` in pixels; 0 returns ``refined`` unchanged. Computed in float64 for maps up to
    8 M pixels (exact, the same for any thread count), float32 above (memory).
    """
    if refined.shape != conditioning.shape or refined.ndim != 4 or refined.shape[1] != 1:
        raise ValueError(f"`refined` and `conditioning` must both be (B,1,H,W), got {tuple(refined.shape)} "
                         f"and {tuple(conditioning.shape)}")
    if sigma < 0:
        raise ValueError(f"`sigma` must be >= 0, got {sigma}")
    if sigma == 0:
        return refined
    dt = torch.float64 if refined.shape[-2] * refined.shape[-1] <= 8_000_000 else torch.float32
    cond = conditioning.to(device=refined.device, dtype=dt)
    ok = torch.isfinite(cond) & torch.isfinite(refined)
    if valid is not None:
        ok &= valid.to(refined.device).bool()
    diff = torch.where(ok, cond - refined.to(dt), torch.zeros_like(cond))
    return (refined.to(dt) + masked_lowpass(diff, ok.to(dt), sigma)).to(refined.dtype)
