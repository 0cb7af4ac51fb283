"""Local patch masking (paper eq. 4-5).

The aligned conditioning d~' and the label d, both in [-1, 1], are split into
non-overlapping w x w patches; patch n is kept iff ||d~'_n - d_n||_2 <= w * eta.
The pixel mask is max-pooled to the latent grid and ANDed with the
ground-truth valid mask on that grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PATCH_SIZE = 8
ETA = 0.1


def patch_mask(
    conditioning: torch.Tensor,
    label: torch.Tensor,
    valid: torch.Tensor | None = None,
    patch_size: int = PATCH_SIZE,
    eta: float = ETA,
) -> torch.Tensor:
    """Pixel mask of the patches where conditioning and label agree.

    Args:
        conditioning: (B,1,H,W) aligned conditioning d~' in [-1, 1].
        label: (B,1,H,W) ground truth d in [-1, 1].
        valid: optional bool (B,1,H,W); invalid pixels contribute no difference.
        patch_size: w. H and W need not be multiples of w: partial patches at
            the border are measured over the pixels they have.
        eta: per-pixel tolerance; a patch is kept iff its L2 distance <= w * eta.
    Returns:
        bool (B,1,H,W): True on the pixels of kept patches.
    """
    if patch_size < 1:
        raise ValueError("`patch_size` must be >= 1")
    diff2 = (conditioning.float() - label.float()) ** 2
    if valid is not None:
        diff2 = diff2 * valid.float()
    h, w = diff2.shape[-2:]
    ph, pw = (-h) % patch_size, (-w) % patch_size
    if ph or pw:
        diff2 = F.pad(diff2, (0, pw, 0, ph))
    sq = F.avg_pool2d(diff2, patch_size) * (patch_size * patch_size)  # sum over the patch
    keep = sq.sqrt() <= patch_size * eta + 1e-6  # [B,1,H/w,W/w]
    pixel = keep.repeat_interleave(patch_size, -2).repeat_interleave(patch_size, -1)
    return pixel[..., :h, :w]


def to_latent_grid(mask: torch.Tensor, factor: int, reduce: str = "max") -> torch.Tensor:
    """Pool a bool pixel mask (B,1,H,W) to the latent grid (B,1,H/f,W/f).

    ``reduce="max"``: a latent cell is on when any of its pixels is (the paper's
    MaxPool). ``reduce="all"``: on only when all of its pixels are (used for the
    ground-truth valid mask, so no latent sees an invalid pixel).
    """
    m = mask.float()
    if reduce == "max":
        return F.max_pool2d(m, factor) > 0.5
    if reduce == "all":
        return ~(F.max_pool2d(1.0 - m, factor) > 0.5)
    raise ValueError("`reduce` must be 'max' or 'all'")


def latent_loss_mask(
    conditioning: torch.Tensor,
    label: torch.Tensor,
    valid: torch.Tensor,
    latent_factor: int,
    patch_size: int = PATCH_SIZE,
    eta: float = ETA,
    use_patch_mask: bool = True,
) -> torch.Tensor:
    """The latent-resolution loss mask of eq. 5-6: MaxPool(patch mask) AND valid.

    Returns bool (B,1,H/f,W/f).
    """
    valid_latent = to_latent_grid(valid, latent_factor, reduce="all")
    if not use_patch_mask:
        return valid_latent
    keep = patch_mask(conditioning, label, valid, patch_size, eta)
    return to_latent_grid(keep, latent_factor, reduce="max") & valid_latent
