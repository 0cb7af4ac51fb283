"""transformers depth processors replayed in torch: each family's pre-processing and the
post-processing (``post_process_depth_estimation``) that puts the raw output back on the input pixels.

The replays run batched on the model's device and need no torchvision (the ZoeDepth and Depth
Pro processors do). Each pre-processing returns the ``pixel_values`` and a :class:`Geometry`
that says how the model's output maps back onto the input image:

- DPT, MiDaS, Depth Anything, DPT-DINOv2 (``DPTImageProcessor``): resize (optionally keeping
  the aspect ratio, to a multiple), rescale, normalise, centre zero-pad to ``size_divisor``;
  back: the padding is cut off before resizing to the input size.
- ZoeDepth: rescale, reflection pad of ``int(sqrt(side / 2) * 3)`` per side, resize with
  ``align_corners=True``, normalise; back: bicubic to the padded input size, padding cut off.
- Depth Pro: rescale, normalise, bilinear resize to ``size``; back: the raw canonical inverse
  depth scaled by the predicted field of view (``focal = 0.5 W / tan(fov / 2)``), bilinear to
  the input size, inverted to depth in metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: PIL resampling codes the processors store, as torch interpolation modes.
RESAMPLE_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class Geometry:
    """How a raw prediction maps back to the input: resize it to ``canvas`` (H, W) with ``mode``,
    keep the ``box`` (top, left, height, width), then resize that to the input size if it differs."""

    canvas: tuple[int, int]
    box: tuple[int, int, int, int]
    mode: str = "bicubic"


def to_input_grid(raw: torch.Tensor, geometry: Geometry, size: tuple[int, int]) -> torch.Tensor:
    """(B,1,h',w') raw model output -> (B,1,H,W) on the input pixels (see :class:`Geometry`)."""
    kwargs = {} if geometry.mode == "nearest" else {"align_corners": False}
    x = F.interpolate(raw, size=geometry.canvas, mode=geometry.mode, **kwargs)
    top, left, height, width = geometry.box
    x = x[..., top : top + height, left : left + width]
    if (height, width) != tuple(size):
        x = F.interpolate(x, size=size, mode=geometry.mode, **kwargs)
    return x.contiguous()


def _get(processor, name: str, default):
    value = getattr(processor, name, default)
    return default if value is None else value


def rescale(images: torch.Tensor, processor) -> torch.Tensor:
    """[0,1] images -> the values the processor computes from 8-bit pixels (``do_rescale=False``
    processors, e.g. DPT-DINOv2 with mean 123.675, work on 0..255)."""
    factor = float(_get(processor, "rescale_factor", 1 / 255)) if _get(processor, "do_rescale", True) else 1.0
    return images * (255.0 * factor)


def normalize(x: torch.Tensor, processor) -> torch.Tensor:
    if not _get(processor, "do_normalize", True):
        return x
    mean = torch.tensor(_get(processor, "image_mean", [0.5] * 3), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(_get(processor, "image_std", [0.5] * 3), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def _size_hw(processor, default: tuple[int, int]) -> tuple[int, int]:
    size = _get(processor, "size", None)  # a dict, transformers' SizeDict, or a number
    if size is None:
        return default
    if isinstance(size, int | float):
        return int(size), int(size)
    get = size.get if hasattr(size, "get") else dict(size).get
    if get("height"):
        return int(get("height")), int(get("width"))
    if get("shortest_edge"):
        return int(get("shortest_edge")), int(get("shortest_edge"))
    return default


def _constrain_to_multiple_of(val: float, multiple: int) -> int:
    x = round(val / multiple) * multiple
    return int(x if x >= 0 else math.ceil(val / multiple) * multiple)


def dpt_resize_size(height: int, width: int, size: dict, keep_aspect_ratio: bool, multiple: int) -> tuple[int, int]:
    """transformers' DPT ``get_resize_output_image_size``: the size the processor resizes to."""
    scale_h, scale_w = size["height"] / height, size["width"] / width
    if keep_aspect_ratio:
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h
    # at least one multiple per side: a 4 x 2000 strip would otherwise round to height 0 (a crash in resize)
    return (max(multiple, _constrain_to_multiple_of(scale_h * height, multiple)),
            max(multiple, _constrain_to_multiple_of(scale_w * width, multiple)))


def dpt_preprocess(images: torch.Tensor, processor) -> tuple[torch.Tensor, Geometry]:
    """Replay a DPT-family image processor on a (B,3,H,W) [0,1] tensor."""
    x = images
    h, w = x.shape[-2:]
    nh, nw = h, w
    mode = RESAMPLE_MODES.get(int(_get(processor, "resample", 3)), "bicubic")
    if _get(processor, "do_resize", True):
        th, tw = _size_hw(processor, (384, 384))
        nh, nw = dpt_resize_size(h, w, {"height": th, "width": tw}, bool(_get(processor, "keep_aspect_ratio", False)),
                                 int(_get(processor, "ensure_multiple_of", 1)))
        if (nh, nw) != (h, w):
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": nh < h or nw < w}
            x = F.interpolate(x, size=(nh, nw), mode=mode, **kwargs).clamp(0.0, 1.0)
    x = normalize(rescale(x, processor), processor)
    divisor = _get(processor, "size_divisor", None)
    top = left = 0
    if _get(processor, "do_pad", False) and divisor:
        ph, pw = (-nh) % int(divisor), (-nw) % int(divisor)
        top, left = ph // 2, pw // 2
        x = F.pad(x, (left, pw - left, top, ph - top))
    if top == left == 0 and tuple(x.shape[-2:]) == (nh, nw):
        return x, Geometry(canvas=(h, w), box=(0, 0, h, w))  # the processor's own post-processing: one resize
    return x, Geometry(canvas=tuple(x.shape[-2:]), box=(top, left, nh, nw))


def zoedepth_padding(height: int, width: int) -> tuple[int, int]:
    """ZoeDepth's reflection padding per side: ``int(sqrt(side / 2) * 3)`` (46, 53 at 480 x 640),
    at most ``side - 1`` (a reflection cannot be wider)."""
    return min(int(math.sqrt(height / 2) * 3), height - 1), min(int(math.sqrt(width / 2) * 3), width - 1)


def _zoe_resize_size(height: int, width: int, processor) -> tuple[int, int]:
    th, tw = _size_hw(processor, (384, 512))
    scale_h, scale_w = th / height, tw / width
    if _get(processor, "keep_aspect_ratio", True):
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h
    multiple = float(_get(processor, "ensure_multiple_of", 1 / 32))
    snap = lambda v: max(1, int(round(v / multiple) * multiple))  # noqa: E731 - the processor's constrain_to_multiple_of
    return snap(scale_h * height), snap(scale_w * width)


def zoedepth_preprocess(images: torch.Tensor, processor) -> tuple[torch.Tensor, Geometry]:
    """Replay ZoeDepth's image processor; the geometry removes its reflection padding afterwards."""
    h, w = images.shape[-2:]
    x = rescale(images, processor)
    ph = pw = 0
    if _get(processor, "do_pad", True):
        ph, pw = zoedepth_padding(h, w)
        x = F.pad(x, (pw, pw, ph, ph), mode="reflect")
    if _get(processor, "do_resize", True):
        mode = RESAMPLE_MODES.get(int(_get(processor, "resample", 2)), "bilinear")
        x = F.interpolate(x, size=_zoe_resize_size(*x.shape[-2:], processor), mode=mode,
                          **({} if mode == "nearest" else {"align_corners": True}))
    return normalize(x, processor), Geometry(canvas=(h + 2 * ph, w + 2 * pw), box=(ph, pw, h, w))


def depth_pro_preprocess(images: torch.Tensor, processor) -> tuple[torch.Tensor, Geometry]:
    """Replay Depth Pro's image processor (normalise first, then resize without antialiasing)."""
    h, w = images.shape[-2:]
    x = normalize(rescale(images, processor), processor)
    mode = RESAMPLE_MODES.get(int(_get(processor, "resample", 2)), "bilinear")
    if _get(processor, "do_resize", True):
        x = F.interpolate(x, size=_size_hw(processor, (1536, 1536)), mode=mode,
                          **({} if mode == "nearest" else {"align_corners": False}))
    return x, Geometry(canvas=(h, w), box=(0, 0, h, w), mode=mode)


def depth_pro_to_metres(raw: torch.Tensor, fov_deg: torch.Tensor | None, geometry: Geometry,
                        size: tuple[int, int]) -> torch.Tensor:
    """Depth Pro's ``post_process_depth_estimation``: (B,1,h',w') canonical inverse depth and the
    field of view (B,) in degrees -> (B,1,H,W) depth in metres (``1 / clamp(inv, 1e-4, 1e4)``).
    Without a field of view (a model without its FoV head) the result is depth up to scale."""
    if fov_deg is not None:
        width = size[1]
        focal = 0.5 * width / torch.tan(0.5 * torch.deg2rad(fov_deg.float()))
        raw = raw * (width / focal).view(-1, 1, 1, 1)
    return 1.0 / to_input_grid(raw, geometry, size).clamp(min=1e-4, max=1e4)
