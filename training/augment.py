"""Geometric augmentation for RGB-D training samples, driven by an explicit torch.Generator.

A sample is the dict the training datasets return:
``{"rgb": (3,H,W) float32 [0,1], "depth": (1,H,W) float32, "valid": (1,H,W) bool, "id": str}``.
Every function applies the same geometry to rgb, depth and valid, and returns a
new dict (inputs are not modified). Extra keys are passed through unchanged.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

_MAPS = ("rgb", "depth", "valid")


def _hw(sample: dict) -> tuple[int, int]:
    return int(sample["rgb"].shape[-2]), int(sample["rgb"].shape[-1])


def _check_size(size: Any, name: str = "size") -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"`{name}` must be a positive int or (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def pad_to(sample: dict, size: tuple[int, int]) -> dict:
    """Pad bottom/right up to at least size (H, W): rgb 0, depth 0, valid False."""
    H, W = _hw(sample)
    h, w = _check_size(size)
    ph, pw = max(0, h - H), max(0, w - W)
    if ph == 0 and pw == 0:
        return dict(sample)
    out = dict(sample)
    for k in _MAPS:
        x = sample[k]
        out[k] = torch.nn.functional.pad(x.to(torch.float32) if x.dtype == torch.bool else x, (0, pw, 0, ph))
        if x.dtype == torch.bool:
            out[k] = out[k] > 0.5
    return out


def crop(sample: dict, top: int, left: int, size: tuple[int, int]) -> dict:
    """The window [top:top+h, left:left+w] of every map."""
    h, w = _check_size(size)
    out = dict(sample)
    for k in _MAPS:
        out[k] = sample[k][..., top:top + h, left:left + w]
    return out


def random_crop(sample: dict, size: Any, generator: torch.Generator) -> dict:
    """A uniformly random (H,W) = size window, the same for rgb/depth/valid.

    Images smaller than size are padded first (padding is invalid).
    """
    h, w = _check_size(size)
    s = pad_to(sample, (h, w))
    H, W = _hw(s)
    top = int(torch.randint(0, H - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, W - w + 1, (1,), generator=generator))
    return crop(s, top, left, (h, w))


def hflip(sample: dict) -> dict:
    """Mirror every map left-right."""
    out = dict(sample)
    for k in _MAPS:
        out[k] = torch.flip(sample[k], dims=[-1])
    return out


def random_hflip(sample: dict, generator: torch.Generator, p: float = 0.5) -> dict:
    """Mirror left-right with probability p (one draw from generator)."""
    if not 0 <= p <= 1:
        raise ValueError(f"`p` must be in [0, 1], got {p}")
    flip = bool(torch.rand((1,), generator=generator) < p)
    return hflip(sample) if flip else dict(sample)


def resize(sample: dict, size: Any) -> dict:
    """Resize to (H, W): rgb bilinear (antialiased), depth and valid nearest (no mixed depths)."""
    h, w = _check_size(size)
    F = torch.nn.functional
    out = dict(sample)
    out["rgb"] = F.interpolate(sample["rgb"][None], size=(h, w), mode="bilinear", align_corners=False,
                               antialias=True)[0].clamp(0, 1)
    out["depth"] = F.interpolate(sample["depth"][None], size=(h, w), mode="nearest-exact")[0]
    out["valid"] = F.interpolate(sample["valid"][None].float(), size=(h, w), mode="nearest-exact")[0] > 0.5
    return out


class RandomCropFlip:
    """Random crop to ``size`` then horizontal flip with probability ``p_flip``.

    Deterministic per (seed, epoch, sample id) when called without a generator,
    so results do not depend on DataLoader worker scheduling; set ``epoch`` to
    draw new crops each epoch. ``resize_to`` (H, W) is applied before cropping.
    """

    def __init__(self, size: Any, p_flip: float = 0.5, seed: int = 0, resize_to: Any = None):
        self.size = _check_size(size)
        if not 0 <= p_flip <= 1:
            raise ValueError(f"`p_flip` must be in [0, 1], got {p_flip}")
        self.p_flip = p_flip
        self.seed = int(seed)
        self.epoch = 0
        self.resize_to = None if resize_to is None else _check_size(resize_to, "resize_to")

    def generator_for(self, sample_id: str) -> torch.Generator:
        key = zlib.crc32(f"{self.seed}/{self.epoch}/{sample_id}".encode())
        return torch.Generator().manual_seed(key)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        g = generator if generator is not None else self.generator_for(str(sample.get("id", "")))
        s = resize(sample, self.resize_to) if self.resize_to else sample
        s = random_crop(s, self.size, g)
        return random_hflip(s, g, self.p_flip)
