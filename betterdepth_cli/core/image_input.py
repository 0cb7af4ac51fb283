"""What the library accepts as images, converted explicitly to the pipeline's (B,3,H,W) float in [0,1].

- a PIL image: EXIF orientation applied (``ImageOps.exif_transpose``, as ``refine`` does), 16-bit
  (``I;16``, ``I``) and float (``F``) pixels kept, other modes converted to RGB;
- a numpy array, channels last: (H,W) grey, (H,W,3) RGB or (H,W,4) RGBA (alpha dropped);
  uint8 is divided by 255, uint16 by 65535, floats must already be in [0,1];
- a torch tensor, channels first: (3,H,W) or (B,3,H,W); uint8 divided by 255, floats in [0,1];
- a list of any of these (same size).

What is ambiguous is refused with a :class:`UsageError` that says what to pass: floats
outside [0,1] (0-255 floats would otherwise run silently and return garbage), a numpy
array with channels first, a tensor with channels last, other dtypes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from betterdepth_cli.core.pixels import INTEGER_SCALES, pil_pixels, unit_range
from betterdepth_cli.core.types import UsageError



def _check_float_range(x: torch.Tensor | np.ndarray, what: str) -> None:
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise UsageError(f"{what}: image values must be finite")
    if lo < 0.0 or hi > 1.0:
        hint = " (values up to 255: pass uint8, or divide by 255)" if hi > 1.0 else ""
        raise UsageError(f"{what}: float image values must be in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}")


def _numpy_rgb(a: np.ndarray, what: str) -> np.ndarray:
    """A numpy image checked (shape, dtype, float range) as (H,W,3), not converted (grey repeated, alpha dropped;
    big-endian integers as native)."""
    if not a.dtype.isnative:  # e.g. ">u2" from some TIFF/FITS readers
        a = a.astype(a.dtype.newbyteorder("="))
    if 0 in a.shape[:2]:
        raise UsageError(f"{what}: the image is empty (shape {a.shape})")
    if a.ndim == 2:
        a = a[..., None].repeat(3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        hint = " (numpy images are channels last: transpose (3,H,W) to (H,W,3))" if a.ndim == 3 and a.shape[0] in (3, 4) else ""
        raise UsageError(f"{what}: expected a numpy image (H,W), (H,W,3) or (H,W,4), got shape {a.shape}{hint}")
    a = a[..., :3]
    if np.issubdtype(a.dtype, np.floating):
        _check_float_range(a, what)
    elif a.dtype not in INTEGER_SCALES:
        raise UsageError(f"{what}: unsupported numpy dtype {a.dtype} (use uint8, uint16 or float in [0, 1])")
    return a


def _from_numpy(a: np.ndarray, what: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(_unit_rgb(a, what).transpose(2, 0, 1)))  # [3,H,W]


def _torch_rgb(t: torch.Tensor, what: str) -> torch.Tensor:
    """A tensor image checked (shape, dtype, float range) as (B,3,H,W), not converted."""
    given = tuple(t.shape)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[1] != 3:
        hint = " (tensors are channels first: permute (H,W,3) to (3,H,W))" if given[-1] in (3, 4) else ""
        raise UsageError(f"{what}: expected a tensor (3,H,W) or (B,3,H,W), got shape {given}{hint}")
    if 0 in t.shape:
        raise UsageError(f"{what}: the image is empty (shape {given})")
    if t.is_floating_point():
        _check_float_range(t, what)
    elif t.dtype != torch.uint8:
        raise UsageError(f"{what}: unsupported tensor dtype {t.dtype} (use uint8, or float in [0, 1])")
    return t


def _from_torch(t: torch.Tensor, what: str) -> torch.Tensor:
    t = _torch_rgb(t, what)
    if t.dtype == torch.uint8:
        return t.float() * torch.tensor(np.float32(1.0 / 255.0))  # as unit_range
    return t.float()


def _one_size(sizes: set) -> None:
    if len(sizes) > 1:
        raise UsageError(f"images of one call must have one size, got {sorted(sizes)}; call once per size")


def as_image_batch(images: Any) -> torch.Tensor:
    """Any accepted image form (module doc) -> (B,3,H,W) float32 in [0,1]; UsageError otherwise."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise UsageError("no images given (an empty list)")
        parts = [as_image_batch(x) for x in images]
        _one_size({tuple(p.shape[-2:]) for p in parts})
        return torch.cat([p.to(parts[0].device) for p in parts])
    if isinstance(images, torch.Tensor):
        return _from_torch(images, "tensor")
    if isinstance(images, np.ndarray):
        return _from_numpy(images, "numpy array")[None]
    if _is_pil(images):
        return _from_numpy(_pil_rgb(images), "PIL image")[None]
    raise _unsupported(images)


def as_image_list(images: Any) -> list[np.ndarray | torch.Tensor]:
    """Each accepted image (module doc), one per image, all of one size, as ``refine`` reads files: a
    numpy (H,W,3) float32 array in [0,1] (integers divided as :func:`as_image_batch` divides them; a
    PIL image as RGB), or a (1,3,H,W) tensor as given (checked). For plates refined in tiles, which
    convert one tile at a time: no (B,3,H,W) batch is made."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise UsageError("no images given (an empty list)")
        parts = [p for x in images for p in as_image_list(x)]
        _one_size({image_size(p) for p in parts})
        return parts
    if isinstance(images, torch.Tensor):
        t = _torch_rgb(images, "tensor")
        return [t[i : i + 1] for i in range(t.shape[0])]
    if isinstance(images, np.ndarray):
        return [_unit_rgb(images, "numpy array")]
    if _is_pil(images):
        return [_unit_rgb(_pil_rgb(images), "PIL image")]
    raise _unsupported(images)


def _pil_rgb(image: Any) -> np.ndarray:
    """A PIL image's pixels upright (its EXIF orientation applied, as ``refine`` reads files), bit depth kept."""
    from PIL import ImageOps

    try:
        return pil_pixels(ImageOps.exif_transpose(image))
    except ValueError as exc:
        raise UsageError(f"PIL image: unsupported pixel format ({exc}, mode {image.mode})") from None


def _unit_rgb(a: np.ndarray, what: str) -> np.ndarray:
    a = _numpy_rgb(a, what)
    return unit_range(a) if a.dtype in INTEGER_SCALES else a.astype(np.float32, copy=False)


def _is_pil(image: Any) -> bool:
    return hasattr(image, "convert") and hasattr(image, "size") and hasattr(image, "mode")


def image_size(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(H, W) of one entry of :func:`as_image_list`."""
    return tuple(image.shape[:2]) if isinstance(image, np.ndarray) else tuple(image.shape[-2:])


def _unsupported(images: Any) -> UsageError:
    return UsageError(f"unsupported image type {type(images).__name__}: pass a PIL image, a numpy array "
                      "(H,W,3), a torch tensor (3,H,W) or (B,3,H,W), or a list of them")
