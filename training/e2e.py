"""End-to-end fine-tuning objective (Garcia et al. 2024, "Fine-tuning
image-conditional diffusion models is easier than you think"), offered as a
training stage after diffusion training.

The refiner runs one DDIM step at t = T - 1 on a zero noise input, its clean
prediction ``x0 = sqrt(a_T) * 0 - sqrt(1 - a_T) * v_hat`` is decoded, and the
loss compares the decoded map with the normalised ground truth in pixel space,
over the same mask the diffusion objective uses (local patch mask AND GT valid).
A model trained this way is sampled with ``zero_noise = true`` in its card:
deterministic, one step.

Optionally (``gradient_weight > 0``) a multi-scale gradient-matching term
(Ranftl et al. 2020, MiDaS eq. 11) is added: the L1 norm of the horizontal and
vertical differences of the residual ``pred - gt`` at ``gradient_scales``
dyadic scales, over the GT-valid mask only. It is not under the patch mask on
purpose: the patch mask drops exactly the patches where the conditioner blurs
a depth edge, so a term restricted to it could not reward sharp edges. This is
a departure from the paper (whose refiner gets its detail from Stable
Diffusion's prior), off by default.

Optionally (``excursion_weight > 0``) an excursion term penalises the
prediction where it leaves the ground truth's local range: at each GT-valid
pixel, ``max(0, pred - max_N gt) + max(0, min_N gt - pred)`` with N the valid
pixels of the (2r+1) x (2r+1) window around it (``excursion_radius`` = r),
averaged over the GT-valid pixels. An edge put up to r pixels away from the
truth's costs nothing extra; ringing (a band beyond the far side's depth, an
overshoot on the near side) does. Not in the paper, off by default.
"""

from __future__ import annotations

from typing import Callable

import torch

from betterdepth_cli.core.blur import window_max
from betterdepth_cli.core.mask import patch_mask
from training.objective import LossOutput, ObjectiveSettings, prepare_batch

LOSSES = ("l1", "mse")


def decoded_prediction(model, z_x: torch.Tensor, z_c: torch.Tensor, denoise: Callable | None = None) -> torch.Tensor:
    """The one-step, zero-noise prediction decoded to pixels, (B,1,H,W)."""
    denoise = denoise or model.denoise
    t_last = model.scheduler.config.num_train_timesteps - 1
    a = model.scheduler.alphas_cumprod[t_last].to(z_c.device)
    z_t = torch.zeros_like(z_c[:, : model.codec.depth_channels])  # z_c holds two maps with raw conditioning
    t = torch.full((z_c.shape[0],), t_last, device=z_c.device, dtype=torch.long)
    v_hat = denoise(z_x, z_c, z_t, t)
    x0 = a.sqrt() * z_t - (1 - a).sqrt() * v_hat.float()
    return model.codec.decode_depth(model.clean_latent(x0, z_c))


def gradient_matching_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Multi-scale gradient-matching loss of ``pred`` against ``gt`` ((B,1,H,W) each; ``valid`` bool).

    At scale k (k = 0..scales-1) both maps are subsampled with stride 2**k; the
    residual r = pred - gt is differenced along x and y, a difference counts
    when both of its pixels are valid, and the scale's loss is the sum of
    |dx r| + |dy r| over counted differences divided by their number. The
    result is the mean over the scales that have at least one counted difference.
    """
    if scales < 1:
        raise ValueError(f"`scales` must be >= 1, got {scales}")
    total, used = pred.new_zeros(()), 0
    for k in range(scales):
        s = 2 ** k
        r = (pred - gt)[..., ::s, ::s]
        m = valid[..., ::s, ::s].to(r.dtype)
        mx = m[..., :, 1:] * m[..., :, :-1]
        my = m[..., 1:, :] * m[..., :-1, :]
        n = mx.sum() + my.sum()
        if n == 0:
            continue
        gx = (r[..., :, 1:] - r[..., :, :-1]).abs() * mx
        gy = (r[..., 1:, :] - r[..., :-1, :]).abs() * my
        total = total + (gx.sum() + gy.sum()) / n
        used += 1
    return total / max(used, 1)


def excursion_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Mean over GT-valid pixels of how far ``pred`` leaves ``gt``'s valid min/max within ``radius`` px.

    ``pred``, ``gt``: (B,1,H,W); ``valid``: bool, same shape. Zero when no pixel is valid.
    """
    if radius < 0:
        raise ValueError(f"`radius` must be >= 0, got {radius}")
    hi = window_max(gt.masked_fill(~valid, -torch.inf), radius)
    lo = -window_max((-gt).masked_fill(~valid, -torch.inf), radius)
    hi, lo = torch.where(valid, hi, gt), torch.where(valid, lo, gt)  # no window is empty at a valid pixel
    out = (pred - hi).clamp_min(0) + (lo - pred).clamp_min(0)
    m = valid.to(pred.dtype)
    return (out * m).sum() / m.sum().clamp_min(1.0)


def e2e_loss(
    model,
    rgb: torch.Tensor,
    cond: torch.Tensor,
    cond_valid: torch.Tensor,
    depth: torch.Tensor,
    depth_valid: torch.Tensor,
    kind: str,
    settings: ObjectiveSettings = ObjectiveSettings(),
    denoise: Callable | None = None,
    z_image: torch.Tensor | None = None,
    codec_dtype: torch.dtype | None = None,
    loss: str = "l1",
    gradient_weight: float = 0.0,
    gradient_scales: int = 4,
    excursion_weight: float = 0.0,
    excursion_radius: int = 2,
    cond_raw: torch.Tensor | None = None,
) -> LossOutput:
    """Pixel-space loss of the one-step zero-noise prediction against the normalised GT.

    Shapes as :func:`training.objective.training_loss`. The mask is the local
    patch mask (w, eta) AND the GT-valid mask at pixel resolution (only the
    GT-valid mask when ``settings.patch_mask`` is off). ``gradient_weight``
    adds :func:`gradient_matching_loss` over the GT-valid mask, ``excursion_weight``
    :func:`excursion_loss` over the same.
    """
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {', '.join(LOSSES)}, got {loss!r}")
    maps, z_x, z_c, _ = prepare_batch(model, rgb, cond, cond_valid, depth, depth_valid, kind, settings,
                                      z_image=z_image, codec_dtype=codec_dtype, cond_raw=cond_raw)
    mask = maps.valid
    if settings.patch_mask:
        mask = mask & patch_mask(maps.cond, maps.gt, maps.valid, settings.patch_size, settings.eta)
    pred = decoded_prediction(model, z_x, z_c, denoise).float()  # [B,1,H,W]
    err = pred - maps.gt
    err = err.abs() if loss == "l1" else err * err
    m = mask.float()
    gamma = m.sum()
    value = (err * m).sum() / gamma.clamp_min(1.0)
    if gradient_weight > 0:
        value = value + gradient_weight * gradient_matching_loss(pred, maps.gt, maps.valid, gradient_scales)
    if excursion_weight > 0:
        value = value + excursion_weight * excursion_loss(pred, maps.gt, maps.valid, excursion_radius)
    t = torch.full((rgb.shape[0],), model.scheduler.config.num_train_timesteps - 1, dtype=torch.long)
    kept = float(gamma / maps.valid.float().sum().clamp_min(1.0))
    return LossOutput(loss=value, mask=mask, gamma=gamma, t=t, kept=kept, degenerate=maps.degenerate)
