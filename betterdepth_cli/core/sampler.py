"""DDIM sampling with v-prediction and trailing timesteps, and ensembling.

The loop calls a diffusers scheduler through its two-method contract
(``set_timesteps``, ``step``); it does not embed one. The UNet input is
``cat[z_image, z_cond, z_t]`` along channels.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from betterdepth_cli.core.align import apply_scale_shift, fit_scale_shift
from betterdepth_cli.core.settings import REDUCTIONS


#: Stable Diffusion 2's noise schedule with the settings BetterDepth inference uses.
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def make_scheduler(**overrides):
    """A ``DDIMScheduler`` with :data:`SCHEDULER_CONFIG` (trailing spacing, v-prediction)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**{**SCHEDULER_CONFIG, **overrides})


def inference_timesteps(scheduler, steps: int) -> list[int]:
    """The timesteps a ``steps``-step run visits, e.g. 2 -> [999, 499] (trailing)."""
    s = copy.deepcopy(scheduler)
    s.set_timesteps(steps)
    return [int(t) for t in s.timesteps]


def sample(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler,
    shape: tuple[int, ...],
    steps: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    zero_noise: bool = False,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run DDIM from pure noise to a clean latent.

    Args:
        denoise: ``denoise(z_t, t) -> v`` (the UNet over cat[z_image, z_cond, z_t]).
        scheduler: a diffusers scheduler; a private copy is used.
        shape: latent shape (N,C,h,w).
        steps: number of denoising steps (>= 1).
        generator: the only source of randomness (CPU generators work for any device).
        zero_noise: start from zeros instead of noise (for models fine-tuned
            end-to-end at t = T with a zero input, Garcia et al. 2024).
        noise: the starting noise itself, (N,C,h,w) (then ``generator`` is not used).
    Returns:
        (N,C,h,w) predicted clean latent (the last step's ``pred_original_sample``).
    """
    if steps < 1:
        raise ValueError("`steps` must be >= 1")
    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(steps, device=device)
    if zero_noise:
        z = torch.zeros(shape, dtype=dtype, device=device)
    elif noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"`noise` has shape {tuple(noise.shape)}; expected {tuple(shape)}")
        z = noise.to(device=device, dtype=dtype)
    else:
        gen_device = generator.device if generator is not None else "cpu"
        z = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
        z = z.to(device=device, dtype=dtype)
    timesteps = list(sched.timesteps)
    for i, t in enumerate(timesteps):
        v = denoise(z, t)
        out = sched.step(v, t, z)
        # the last step returns the predicted clean latent itself: DDIM's
        # prev_sample at t = -1 would re-add noise of scale sqrt(1 - alpha_0)
        z = out.pred_original_sample if i == len(timesteps) - 1 else out.prev_sample
    return z


def align_members(members: torch.Tensor, iterations: int = 2) -> torch.Tensor:
    """Align ensemble members to each other by scale and shift.

    Args:
        members: (E,B,1,H,W) maps.
    Returns:
        (E,B,1,H,W): each member mapped by least squares onto the reference,
        the median of the members (then the mean of the aligned members,
        ``iterations`` times). Closed form, batched.
    """
    e, b = members.shape[:2]
    if e == 1:
        return members
    ref = lower_median(members)  # [B,1,H,W]
    aligned = members
    for _ in range(max(1, iterations)):
        flat = members.reshape(e * b, *members.shape[2:])
        target = ref.unsqueeze(0).expand_as(members).reshape(e * b, *members.shape[2:])
        s, t = fit_scale_shift(flat, target)
        aligned = apply_scale_shift(flat, s, t).reshape(members.shape)
        ref = aligned.mean(dim=0)
    return aligned


def lower_median(members: torch.Tensor) -> torch.Tensor:
    """``members.median(0).values`` (the lower of the two middle values for an even count); for two
    members their elementwise minimum, the same values 60 x faster on the CPU."""
    if members.shape[0] == 2:
        return torch.minimum(members[0], members[1])
    return members.median(0).values


def reduce_members(members: torch.Tensor, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reduce aligned members (E,B,1,H,W) to (B,1,H,W) plus an uncertainty map.

    ``mean``: the mean and the standard deviation; ``median``: the median and
    the median absolute deviation. With one member the uncertainty is ``None``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if members.shape[0] == 1:
        return members[0], None
    if reduction == "mean":
        mean = members.mean(0)  # the population deviation by hand: Tensor.std over dim 0 is 10 x slower on the CPU
        return mean, (members - mean).square().mean(0).sqrt()
    med = lower_median(members)
    return med, lower_median((members - med).abs())
