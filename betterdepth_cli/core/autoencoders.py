"""Pluggable autoencoders ("latent codecs") for the refiner.

Every codec maps images and depth maps in [-1, 1] to latents and back:

- :class:`KLCodec` wraps a diffusers ``AutoencoderKL`` (Stable Diffusion's VAE at
  scale): latents are the posterior mean times ``scaling_factor``; a depth map is
  repeated to 3 channels before encoding and the decoded channels are averaged.
- :class:`TinyCodec` wraps a diffusers ``AutoencoderTiny`` (TAESD-style) the same way.
- :class:`SpaceToDepthCodec` is an exact, parameter-free pixel-unshuffle by a
  factor f: an image becomes 3 f^2 channels, a depth map f^2 channels, and the
  round trip is lossless. Small CPU models use it because a small learned VAE
  measurably erases depth detail.

A codec saves itself to and loads itself from a folder (the bundle's ``vae/``);
``vae/config.json``'s ``_class_name`` says which codec it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class LatentCodec(nn.Module):
    """Interface: ``encode_image``, ``encode_depth``, ``decode_depth``, ``factor``."""

    factor: int = 8
    image_channels: int = 4
    depth_channels: int = 4

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B,image_channels,H/f,W/f)."""
        raise NotImplementedError

    def encode_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) in [-1,1] -> (B,depth_channels,H/f,W/f)."""
        raise NotImplementedError

    def decode_depth(self, latent: torch.Tensor) -> torch.Tensor:
        """(B,depth_channels,h,w) -> (B,1,h*f,w*f), nominally in [-1,1]."""
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        raise NotImplementedError

    @property
    def kind(self) -> str:
        raise NotImplementedError


class SpaceToDepthCodec(LatentCodec):
    """Exact pixel-unshuffle codec (no parameters, lossless round trip)."""

    def __init__(self, factor: int = 4):
        super().__init__()
        if factor < 1:
            raise ValueError("`factor` must be >= 1")
        self.factor = int(factor)
        self.image_channels = 3 * self.factor**2
        self.depth_channels = self.factor**2

    @property
    def kind(self) -> str:
        return "space-to-depth"

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(image, self.factor)  # [B,3f^2,H/f,W/f]

    def encode_depth(self, depth: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(depth, self.factor)  # [B,f^2,H/f,W/f]

    def decode_depth(self, latent: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latent, self.factor)  # [B,1,H,W]

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(
            json.dumps({"_class_name": "SpaceToDepth", "factor": self.factor}, indent=2) + "\n"
        )


class KLCodec(LatentCodec):
    """A diffusers ``AutoencoderKL``: posterior mean times ``scaling_factor``."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_channels = self.depth_channels = vae.config.latent_channels
        self.scaling_factor = float(vae.config.scaling_factor)

    @property
    def kind(self) -> str:
        return "AutoencoderKL"

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mean * self.scaling_factor

    def encode_depth(self, depth: torch.Tensor) -> torch.Tensor:
        return self.encode_image(depth.repeat(1, 3, 1, 1))

    def decode_depth(self, latent: torch.Tensor) -> torch.Tensor:
        out = self.vae.decode(latent / self.scaling_factor).sample  # [B,3,H,W]
        return out.mean(dim=1, keepdim=True)

    def save_pretrained(self, path: str | Path) -> None:
        self.vae.save_pretrained(path)


class TinyCodec(LatentCodec):
    """A diffusers ``AutoencoderTiny`` (TAESD-style); inputs and outputs in [-1,1]."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.factor = 2 ** (len(vae.config.encoder_block_out_channels) - 1)
        self.image_channels = self.depth_channels = vae.config.latent_channels
        self.scaling_factor = float(vae.config.scaling_factor)

    @property
    def kind(self) -> str:
        return "AutoencoderTiny"

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latents * self.scaling_factor

    def encode_depth(self, depth: torch.Tensor) -> torch.Tensor:
        return self.encode_image(depth.repeat(1, 3, 1, 1))

    def decode_depth(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent / self.scaling_factor).sample.mean(dim=1, keepdim=True)

    def save_pretrained(self, path: str | Path) -> None:
        self.vae.save_pretrained(path)


def load_codec(path: str | Path, dtype: torch.dtype | None = None) -> LatentCodec:
    """Load the codec saved in ``path`` (a bundle's ``vae/`` folder)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    name = config.get("_class_name")
    if name == "SpaceToDepth":
        return SpaceToDepthCodec(config["factor"])
    kwargs = {} if dtype is None else {"torch_dtype": dtype}
    if name == "AutoencoderKL":
        from diffusers import AutoencoderKL

        return KLCodec(AutoencoderKL.from_pretrained(path, **kwargs))
    if name == "AutoencoderTiny":
        from diffusers import AutoencoderTiny

        return TinyCodec(AutoencoderTiny.from_pretrained(path, **kwargs))
    raise ValueError(f"{path / 'config.json'}: unknown autoencoder class {name!r}")


def tiny_codec(kind: str = "space-to-depth", factor: int = 8, seed: int = 0) -> LatentCodec:
    """A tiny codec for tests and CPU recipes: ``space-to-depth``, ``kl`` or ``tiny``."""
    if kind == "space-to-depth":
        return SpaceToDepthCodec(factor)
    torch.manual_seed(seed)
    if kind == "kl":
        from diffusers import AutoencoderKL

        n = {4: 3, 8: 4}.get(factor, 4)
        return KLCodec(
            AutoencoderKL(
                latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * n,
                up_block_types=("UpDecoderBlock2D",) * n,
                block_out_channels=(32, 32, 64, 64)[:n],
                layers_per_block=1,
            )
        )
    if kind == "tiny":
        from diffusers import AutoencoderTiny

        return TinyCodec(
            AutoencoderTiny(
                encoder_block_out_channels=(16,) * 4,
                decoder_block_out_channels=(16,) * 4,
                num_encoder_blocks=(1,) * 4,
                num_decoder_blocks=(1,) * 4,
            )
        )
    raise ValueError("`kind` must be 'space-to-depth', 'kl' or 'tiny'")
