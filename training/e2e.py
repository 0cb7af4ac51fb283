"""End-to-end fine-tuning objective (Garcia et al. 2024, "Fine-tuning
image-conditional diffusion models is easier than you think"), offered as a
training stage after diffusion training.

The refiner runs one DDIM step at t = T - 1 on a zero noise input, its clean
prediction ``x0 = sqrt(a_T) * 0 - sqrt(1 - a_T) * v_hat`` is decoded, and the
loss compares the decoded map with the normalised ground truth in pixel space,
over the same mask the diffusion objective uses (local patch mask AND GT valid).
A model trained this way is sampled with ``zero_noise = true`` in its card:
deterministic, one step.
"""

from __future__ import annotations

from typing import Callable

import torch

from betterdepth_cli.core.mask import patch_mask
from training.objective import LossOutput, ObjectiveSettings, prepare_batch

LOSSES = ("l1", "mse")


def decoded_prediction(model, z_x: torch.Tensor, z_c: torch.Tensor, denoise: Callable | None = None) -> torch.Tensor:
    """The one-step, zero-noise prediction decoded to pixels, (B,1,H,W)."""
    denoise = denoise or model.denoise
    t_last = model.scheduler.config.num_train_timesteps - 1
    a = model.scheduler.alphas_cumprod[t_last].to(z_c.device)
    z_t = torch.zeros_like(z_c)
    t = torch.full((z_c.shape[0],), t_last, device=z_c.device, dtype=torch.long)
    v_hat = denoise(z_x, z_c, z_t, t)
    x0 = a.sqrt() * z_t - (1 - a).sqrt() * v_hat.float()
    return model.codec.decode_depth(x0)


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
) -> LossOutput:
    """Pixel-space loss of the one-step zero-noise prediction against the normalised GT.

    Shapes as :func:`training.objective.training_loss`. The mask is the local
    patch mask (w, eta) AND the GT-valid mask at pixel resolution (only the
    GT-valid mask when ``settings.patch_mask`` is off).
    """
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {', '.join(LOSSES)}, got {loss!r}")
    maps, z_x, z_c, _ = prepare_batch(model, rgb, cond, cond_valid, depth, depth_valid, kind, settings,
                                      z_image=z_image, codec_dtype=codec_dtype)
    mask = maps.valid
    if settings.patch_mask:
        mask = mask & patch_mask(maps.cond, maps.gt, maps.valid, settings.patch_size, settings.eta)
    pred = decoded_prediction(model, z_x, z_c, denoise).float()  # [B,1,H,W]
    err = pred - maps.gt
    err = err.abs() if loss == "l1" else err * err
    m = mask.float()
    gamma = m.sum()
    value = (err * m).sum() / gamma.clamp_min(1.0)
    t = torch.full((rgb.shape[0],), model.scheduler.config.num_train_timesteps - 1, dtype=torch.long)
    kept = float(gamma / maps.valid.float().sum().clamp_min(1.0))
    return LossOutput(loss=value, mask=mask, gamma=gamma, t=t, kept=kept)
