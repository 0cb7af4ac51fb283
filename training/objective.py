"""The BetterDepth training objective (paper eq. 3-6), as pure functions over tensors.

One training example goes through:

1. the ground truth converted to the conditioner's space (:func:`gt_to_space`):
   disparity ``1/depth`` for disparity conditioners, depth otherwise; pixels
   with no valid positive depth stay out of everything that follows;
2. both maps normalised to [-1, 1] by :func:`betterdepth_cli.core.normalize.normalize`
   (the GT over its valid pixels, the conditioning over its own valid pixels);
3. global pre-alignment (eq. 3, :func:`prepare_maps`): the least-squares scale
   and shift of the normalised conditioning onto the normalised GT over the
   pixels valid in both, then a clip to [-1, 1];
4. local patch masking (eq. 4-5, :func:`betterdepth_cli.core.mask.latent_loss_mask`):
   w x w patches where the aligned conditioning and the GT disagree by more
   than ``w * eta`` are dropped, max-pooled to the latent grid and ANDed with
   the GT-valid mask pooled with ``reduce="all"``;
5. frozen-codec latents (:func:`encode_latents`) ``z_x = E(rgb * 2 - 1)``,
   ``z_c = E(d~')``, ``z_0 = E(d)`` (invalid GT pixels filled with the aligned
   conditioning first, so the codec never sees a hole);
6. ``t ~ U{0..T-1}``, ``eps ~ N(0, I)`` from an explicit generator,
   ``z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) eps``, target
   ``v = sqrt(a_t) eps - sqrt(1 - a_t) z_0`` (:func:`v_target`);
7. the masked v-loss (eq. 6, :func:`masked_v_loss`):
   ``sum(((v_hat - v) * m)^2) / gamma`` with ``gamma`` the number of valid
   latent ELEMENTS (the mask's cells times the latent channels).

Every contribution of the paper can be switched off for its Table 5 ablation
(:class:`ObjectiveSettings`): ``depth_conditioning`` (the UNet sees
``cat[z_x, z_t]`` only, Marigold-style; set when the model is built),
``prealign`` (the conditioning is only normalised) and ``patch_mask`` (the mask
is the GT-valid mask only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from betterdepth_cli.core.align import apply_scale_shift, depth_to_disparity, fit_scale_shift
from betterdepth_cli.core.mask import ETA, PATCH_SIZE, latent_loss_mask, to_latent_grid
from betterdepth_cli.core.normalize import normalize, normalize_with
from betterdepth_cli.core.types import check_kind


@dataclass(frozen=True)
class ObjectiveSettings:
    """The switches of the objective (paper Table 5) and the patch-mask parameters."""

    prealign: bool = True
    patch_mask: bool = True
    patch_size: int = PATCH_SIZE
    eta: float = ETA

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"`patch_size` must be >= 1, got {self.patch_size}")
        if not self.eta >= 0:
            raise ValueError(f"`eta` must be >= 0, got {self.eta}")


@dataclass
class PreparedMaps:
    """Pixel-space maps of one batch, all (B,1,H,W).

    gt: the GT in the conditioner's space normalised to [-1, 1] (invalid pixels
        hold the clipped normalisation of 0, never used);
    cond: the conditioning normalised (and pre-aligned, then clipped) in [-1, 1];
    valid: bool, GT valid in the conditioner's space;
    scale, shift: (B,) the pre-alignment parameters (1 and 0 without it);
    cond_raw: the unfiltered conditioning on ``cond``'s normalisation and alignment
        (models with ``raw_conditioning``), else ``None``;
    degenerate: how many samples' pre-alignment fell back (a constant conditioning or fewer than two
        valid pixels in the crop: scale 0 and the GT's mean, or the identity); counted, not warned,
        so that the trainer reports them in its step lines.
    """

    gt: torch.Tensor
    cond: torch.Tensor
    valid: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    cond_raw: torch.Tensor | None = None
    degenerate: int = 0


@dataclass
class LossOutput:
    """What :func:`training_loss` returns.

    loss: scalar; mask: bool (B,1,h,w) on the latent grid; gamma: scalar number
    of valid latent elements; t: (B,) timesteps; kept: share of GT-valid latent
    cells the patch mask kept (a diagnostic); degenerate: samples whose pre-alignment fell back
    (:class:`PreparedMaps`).
    """

    loss: torch.Tensor
    mask: torch.Tensor
    gamma: torch.Tensor
    t: torch.Tensor
    kept: float
    degenerate: int = 0


def gt_to_space(depth: torch.Tensor, valid: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth depth (metres, planar) in the conditioner's space.

    Args:
        depth: (B,1,H,W) depth; any value where ``valid`` is False.
        valid: (B,1,H,W) bool.
        kind: ``"disparity"`` (returns ``1/depth``) or ``"depth"`` (returns depth).
    Returns:
        (target, valid): target (B,1,H,W) float32 with 0 on invalid pixels;
        valid = ``valid & finite & depth > 0``.
    """
    check_kind(kind)
    depth = depth.float()
    ok = valid.bool() & torch.isfinite(depth) & (depth > 0)
    if kind == "disparity":
        target = depth_to_disparity(torch.where(ok, depth, torch.ones_like(depth)), ok)
    else:
        target = torch.where(ok, depth, torch.zeros_like(depth))
    return target, ok


def prepare_maps(
    cond: torch.Tensor,
    cond_valid: torch.Tensor,
    gt: torch.Tensor,
    gt_valid: torch.Tensor,
    prealign: bool = True,
    cond_raw: torch.Tensor | None = None,
) -> PreparedMaps:
    """Normalise GT and conditioning to [-1, 1] and pre-align the conditioning (eq. 3).

    Args:
        cond: (B,1,H,W) conditioner prediction in its own space and units.
        cond_valid: (B,1,H,W) bool valid mask of the prediction.
        gt: (B,1,H,W) ground truth already in the conditioner's space (:func:`gt_to_space`).
        gt_valid: (B,1,H,W) bool.
        prealign: fit ``s * cond_n + b`` to ``gt_n`` by least squares over the
            pixels valid in both, then clip to [-1, 1]; otherwise only normalise.
        cond_raw: (B,1,H,W) the unfiltered conditioning of a model that filters it:
            mapped by ``cond``'s normalisation and alignment (``PreparedMaps.cond_raw``).
    Returns:
        :class:`PreparedMaps`.
    """
    gt_valid = gt_valid.bool()
    cond_valid = cond_valid.bool() & torch.isfinite(cond)
    gt_n, _, _ = normalize(gt, gt_valid)  # [B,1,H,W] in [-1,1]
    cond_n, lo, hi = normalize(cond, cond_valid)
    raw_n = None if cond_raw is None else normalize_with(torch.nan_to_num(cond_raw.float()), lo, hi)
    b = cond.shape[0]
    fallbacks: list[str] = []
    if prealign:
        s, sh = fit_scale_shift(cond_n, gt_n, gt_valid & cond_valid, on_degenerate=fallbacks.append)  # (B,), (B,)
        cond_n = apply_scale_shift(cond_n, s, sh).clamp(-1.0, 1.0)
        raw_n = None if raw_n is None else apply_scale_shift(raw_n, s, sh).clamp(-1.0, 1.0)
    else:
        s = torch.ones(b, dtype=cond_n.dtype, device=cond_n.device)
        sh = torch.zeros(b, dtype=cond_n.dtype, device=cond_n.device)
    return PreparedMaps(gt=gt_n, cond=cond_n, valid=gt_valid, scale=s, shift=sh, cond_raw=raw_n,
                        degenerate=len(fallbacks))


def loss_mask(maps: PreparedMaps, latent_factor: int, settings: ObjectiveSettings = ObjectiveSettings()) -> torch.Tensor:
    """The latent-grid loss mask (eq. 5): patch mask max-pooled, AND the GT-valid mask.

    Returns bool (B,1,H/f,W/f). Without ``settings.patch_mask`` it is the GT-valid
    mask pooled with ``reduce="all"``.
    """
    return latent_loss_mask(
        maps.cond,
        maps.gt,
        maps.valid,
        latent_factor=latent_factor,
        patch_size=settings.patch_size,
        eta=settings.eta,
        use_patch_mask=settings.patch_mask,
    )


@torch.no_grad()
def encode_latents(
    codec,
    rgb: torch.Tensor,
    maps: PreparedMaps,
    dtype: torch.dtype | None = None,
    z_image: torch.Tensor | None = None,
):
    """Frozen-codec latents of the image, the conditioning and the label.

    Args:
        codec: a :class:`~betterdepth_cli.core.autoencoders.LatentCodec`.
        rgb: (B,3,H,W) in [0,1]; H and W multiples of ``codec.factor``.
        maps: the prepared maps; invalid GT pixels are filled with the aligned
            conditioning before encoding.
        dtype: the codec's compute dtype (default: float32).
        z_image: the image latent when already known (the latent cache).
    Returns:
        z_x (B,Ci,h,w), z_c (B,Cd,h,w), z_0 (B,Cd,h,w), float32.
    """
    dtype = dtype or torch.float32
    gt_filled = torch.where(maps.valid, maps.gt, maps.cond)
    if z_image is not None:
        z_x = z_image.float()
    else:
        z_x = codec.encode_image((rgb * 2.0 - 1.0).to(dtype)).float()
    z_c = codec.encode_depth(maps.cond.to(dtype)).float()
    if maps.cond_raw is not None:  # [B,2Cd,h,w]: filtered then raw, as the pipeline builds it
        z_c = torch.cat([z_c, codec.encode_depth(maps.cond_raw.to(dtype)).float()], dim=1)
    z_0 = codec.encode_depth(gt_filled.to(dtype)).float()
    return z_x, z_c, z_0


def prepare_batch(
    model,
    rgb: torch.Tensor,
    cond: torch.Tensor,
    cond_valid: torch.Tensor,
    depth: torch.Tensor,
    depth_valid: torch.Tensor,
    kind: str,
    settings: ObjectiveSettings = ObjectiveSettings(),
    z_image: torch.Tensor | None = None,
    codec_dtype: torch.dtype | None = None,
    cond_raw: torch.Tensor | None = None,
) -> tuple[PreparedMaps, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1-3 and 5, shared by :func:`training_loss` and the end-to-end loss.

    The GT in the conditioner's space, both maps normalised (and pre-aligned when
    ``settings.prealign``), then the frozen-codec latents. Arguments as
    :func:`training_loss`. Returns (maps, z_x (B,Ci,h,w), z_c (B,Cd,h,w), z_0 (B,Cd,h,w)).
    """
    gt, gt_valid = gt_to_space(depth, depth_valid, kind)
    maps = prepare_maps(cond.float(), cond_valid, gt, gt_valid, prealign=settings.prealign, cond_raw=cond_raw)
    z_x, z_c, z_0 = encode_latents(model.codec, rgb, maps, dtype=codec_dtype, z_image=z_image)
    return maps, z_x, z_c, z_0


def sample_timesteps_and_noise(
    z_0: torch.Tensor, num_train_timesteps: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``t ~ U{0..T-1}`` (B,) long and ``eps ~ N(0, I)`` shaped like ``z_0``.

    Drawn on the generator's device (CPU generators work for any model device),
    then moved to ``z_0``'s device.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    b = z_0.shape[0]
    t = torch.randint(0, num_train_timesteps, (b,), generator=generator, device=gen_device)
    eps = torch.randn(z_0.shape, generator=generator, device=gen_device, dtype=torch.float32)
    return t.to(z_0.device), eps.to(device=z_0.device, dtype=z_0.dtype)


def v_target(scheduler, z_0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The noisy latent and the v-prediction target.

    ``z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) eps`` and
    ``v = sqrt(a_t) eps - sqrt(1 - a_t) z_0`` with ``a_t`` the scheduler's
    cumulative alpha product. Returns (z_t, v), both shaped like ``z_0``.
    """
    z_t = scheduler.add_noise(z_0, eps, t)
    v = scheduler.get_velocity(z_0, eps, t)
    return z_t, v


def masked_v_loss(v_hat: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6: ``sum(((v_hat - v) * m)^2) / gamma``.

    Args:
        v_hat, v: (B,C,h,w).
        mask: bool (B,1,h,w) (or (B,C,h,w)), broadcast over the channels.
    Returns:
        (loss, gamma): gamma = number of valid ELEMENTS of the mask broadcast
        to (B,C,h,w). With an empty mask the loss is 0 and still carries a
        (zero) gradient, so every process of a distributed run calls backward.
    """
    m = mask.to(v_hat.dtype).expand_as(v_hat)
    gamma = m.sum()
    sq = ((v_hat.float() - v.float()) * m.float()) ** 2
    loss = sq.sum() / gamma.float().clamp_min(1.0)
    return loss, gamma


def training_loss(
    model,
    rgb: torch.Tensor,
    cond: torch.Tensor,
    cond_valid: torch.Tensor,
    depth: torch.Tensor,
    depth_valid: torch.Tensor,
    kind: str,
    generator: torch.Generator | None,
    settings: ObjectiveSettings = ObjectiveSettings(),
    denoise: Callable | None = None,
    z_image: torch.Tensor | None = None,
    codec_dtype: torch.dtype | None = None,
    cond_raw: torch.Tensor | None = None,
) -> LossOutput:
    """The full BetterDepth loss of one batch.

    Args:
        model: a :class:`~betterdepth_cli.core.refiner.BetterDepthModel` (its
            ``codec``, ``scheduler`` and ``denoise``).
        rgb: (B,3,H,W) in [0,1], H and W multiples of ``model.pad_multiple``.
        cond, cond_valid: (B,1,H,W) conditioner prediction and its valid mask.
        depth, depth_valid: (B,1,H,W) ground-truth planar depth and valid mask.
        kind: the conditioner's output kind (``disparity`` or ``depth``).
        generator: the only source of randomness (timesteps and noise).
        settings: the ablation switches and patch parameters.
        denoise: ``denoise(z_x, z_c, z_t, t) -> v_hat`` (default ``model.denoise``;
            the trainer passes the accelerate-wrapped UNet's).
        z_image: the precomputed image latent ``z_x`` (the latent cache); encoded when None.
        codec_dtype: dtype the frozen codec runs in.
    Returns:
        :class:`LossOutput`.
    """
    maps, z_x, z_c, z_0 = prepare_batch(model, rgb, cond, cond_valid, depth, depth_valid, kind, settings,
                                        z_image=z_image, codec_dtype=codec_dtype, cond_raw=cond_raw)
    mask = loss_mask(maps, model.codec.factor, settings)  # [B,1,h,w]
    if getattr(model, "residual", False):  # the diffusion runs over the residual (BetterDepthModel.clean_latent)
        z_0 = z_0 - z_c[:, : z_0.shape[1]]
    t, eps = sample_timesteps_and_noise(z_0, model.scheduler.config.num_train_timesteps, generator)
    z_t, v = v_target(model.scheduler, z_0, eps, t)
    denoise = denoise or model.denoise
    v_hat = denoise(z_x, z_c, z_t, t)  # [B,Cd,h,w]
    loss, gamma = masked_v_loss(v_hat, v, mask)
    valid_cells = to_latent_grid(maps.valid, model.codec.factor, reduce="all").sum().float()
    kept = float(mask.sum().float() / valid_cells.clamp_min(1.0))
    return LossOutput(loss=loss, mask=mask, gamma=gamma, t=t, kept=kept, degenerate=maps.degenerate)


__all__ = [
    "ObjectiveSettings",
    "PreparedMaps",
    "LossOutput",
    "gt_to_space",
    "prepare_maps",
    "loss_mask",
    "encode_latents",
    "prepare_batch",
    "sample_timesteps_and_noise",
    "v_target",
    "masked_v_loss",
    "training_loss",
]
