"""The BetterDepth model bundle: autoencoder + 12-channel UNet + scheduler + card.

A model is a folder in the diffusers layout::

    unet/            UNet2DConditionModel (config.json + safetensors)
    vae/             the autoencoder (AutoencoderKL, AutoencoderTiny or SpaceToDepth)
    scheduler/       DDIMScheduler config (v-prediction, trailing spacing)
    betterdepth.json the model card: space, normalisation, defaults, provenance
    text_embedding.safetensors   (only for UNets with cross-attention) the
                     empty-prompt embedding, so inference needs no text encoder

Local folders and Hugging Face hub ids load through :func:`load_model`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from betterdepth_cli import __version__
from betterdepth_cli.core.autoencoders import LatentCodec, SpaceToDepthCodec, load_codec, tiny_codec
from betterdepth_cli.core.sampler import SCHEDULER_CONFIG, make_scheduler
from betterdepth_cli.core.settings import DEFAULTS, card_defaults
from betterdepth_cli.core.types import ModelNotFoundError

CARD_FILE = "betterdepth.json"
TEXT_EMBEDDING_FILE = "text_embedding.safetensors"
CARD_FORMAT = "betterdepth-model/1"
DEFAULT_MODEL_NAMES = (None, "", "default")



def default_model_path() -> Path:
    """Where the embedded default refiner lives inside the package."""
    return Path(__file__).resolve().parent.parent / "weights" / "refiner"


def new_card(**fields: Any) -> dict:
    card = {
        "format": CARD_FORMAT,
        "version": __version__,
        "depth_conditioning": True,
        "zero_noise": False,
        "normalization": {"low": 0.02, "high": 0.98, "clip": True},
        "space": "the conditioner's (disparity for disparity models, depth for depth models)",
        "trained_with": {"conditioner": None},
        "defaults": dict(DEFAULTS),
    }
    card.update(fields)
    return card


def centred_box(x: torch.Tensor, k: int) -> torch.Tensor:
    """(N,C,H,W) -> the same, box-filtered over ``k`` px per axis with no shift (replicated border).

    Odd ``k``: the centred box. Even ``k``: the box (centred half a pixel off) then a box of 2 that
    moves it back, i.e. the symmetric kernel ``[1, 2, ..., 2, 1] / 2k`` of width ``k + 1``; it keeps the
    box's zeros at the frequencies of every pattern of period ``k`` (and its divisors).
    """
    import torch.nn.functional as F

    x = F.avg_pool2d(F.pad(x, (k // 2, (k - 1) // 2, k // 2, (k - 1) // 2), mode="replicate"), k, stride=1)
    if k % 2 == 0:
        x = F.avg_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, stride=1)
    return x


def weights_digest(folder: Path) -> str:
    """SHA-256 of the files under ``folder`` (names and bytes, in name order), read in 16 MiB pieces: the
    card records its UNet's, so a model retrained into the same folder has another card digest."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(16 << 20):
                h.update(chunk)
    return h.hexdigest()


class BetterDepthModel(nn.Module):
    """UNet over ``cat[z_image, z_cond, z_t]`` with a pluggable autoencoder."""

    def __init__(
        self,
        unet,
        codec: LatentCodec,
        scheduler=None,
        card: dict | None = None,
        text_embedding: torch.Tensor | None = None,
    ):
        super().__init__()
        self.unet = unet
        self.codec = codec
        self.scheduler = scheduler if scheduler is not None else make_scheduler()
        self.card = new_card() if card is None else card
        self.card.setdefault("defaults", dict(DEFAULTS))
        if text_embedding is not None:
            self.register_buffer("text_embedding", text_embedding, persistent=False)
        else:
            self.text_embedding = None
        expected = codec.image_channels + codec.depth_channels * (1 + self.conditioning_maps if self.depth_conditioning else 1)
        if unet.config.in_channels != expected:
            raise ValueError(
                f"UNet has {unet.config.in_channels} input channels, the autoencoder needs {expected}"
            )

    # ------------------------------------------------------------------ properties
    @property
    def depth_conditioning(self) -> bool:
        return bool(self.card.get("depth_conditioning", True))

    @property
    def zero_noise(self) -> bool:
        return bool(self.card.get("zero_noise", False))

    @property
    def residual(self) -> bool:
        """The diffusion runs over the residual ``z_0 - z_cond``: the clean latent is ``x0 + z_cond``."""
        return bool(self.card.get("residual", False))

    @property
    def conditioning_filter(self) -> dict | None:
        """``{"type": "guided", "radius": share, "eps": e}`` or ``None`` (the conditioning as it comes)."""
        spec = self.card.get("conditioning_filter") or None
        if spec is not None and spec.get("type") != "guided":
            raise ValueError(f"model card: unknown conditioning_filter type {spec.get('type')!r}")
        return spec

    @property
    def raw_conditioning(self) -> bool:
        """With a conditioning filter: the UNet sees the unfiltered map too (``z_cond`` = cat[E(filtered), E(raw)])."""
        return bool(self.card.get("raw_conditioning", False)) and self.conditioning_filter is not None

    @property
    def raw_base(self) -> bool:
        """A residual model whose residual rides on the raw conditioning (card ``residual_base = "raw"``)."""
        return self.residual and self.raw_conditioning and self.card.get("residual_base") == "raw"

    @property
    def conditioning_maps(self) -> int:
        """How many depth maps condition the UNet (1, or 2 with ``raw_conditioning``)."""
        return 2 if self.raw_conditioning else 1

    def filter_conditioning(self, cond: torch.Tensor, images: torch.Tensor, valid: torch.Tensor | None = None
                            ) -> torch.Tensor:
        """The conditioning the UNet sees: ``cond`` (B,1,H,W) guided-filtered by ``images`` (B,3,H,W) in [0,1]
        when the card names a filter (radius relative to this size; holes, where ``valid`` is False, left
        out), else ``cond`` itself."""
        spec = self.conditioning_filter
        if spec is None:
            return cond
        from betterdepth_cli.core.guided import EPS, RADIUS, guided_refine

        return guided_refine(cond.float(), images.float(), float(spec.get("radius", RADIUS)), float(spec.get("eps", EPS)),
                             valid)

    @property
    def layout_lowpass(self) -> float:
        """Inference only: below this share of the longest side the output takes the conditioner's
        map (card ``layout_lowpass``; 0 = off, see :mod:`betterdepth_cli.core.layout`)."""
        share = float(self.card.get("layout_lowpass") or 0.0)
        if share < 0:
            raise ValueError(f"model card: layout_lowpass must be >= 0, got {share}")
        return share

    def _ramp(self, key: str) -> tuple[float, float] | None:
        """The card's ``key`` as ``(low, high)`` with ``0 <= low < high``, or None where the card has none."""
        spec = self.card.get(key)
        if not spec:
            return None
        low, high = (float(v) for v in spec)
        if not 0 <= low < high:
            raise ValueError(f"model card: {key} must be [low, high] with 0 <= low < high, got {spec}")
        return low, high

    @property
    def edge_gate(self) -> tuple[float, float] | None:
        """Inference only: the card's ``edge_gate`` ``[low, high]`` (evidence thresholds of
        :mod:`betterdepth_cli.core.edge_gate`), or None: changes kept only where the conditioner has edges."""
        return self._ramp("edge_gate")

    @property
    def keep_sharp(self) -> tuple[float, float] | None:
        """Inference only: the card's ``keep_sharp`` ``[low, high]`` (pixels at the processing size), or
        None: edges the conditioner drew sharper than ``low`` px are returned as it drew them, softer
        than ``high`` px refined in full (:func:`~betterdepth_cli.core.edge_gate.softness`)."""
        return self._ramp("keep_sharp")

    @property
    def cascade(self) -> tuple[float, float] | None:
        """Inference only: the card's ``cascade`` ``{blur_above, scale}`` as (blur_above px, scale), or None:
        a conditioning whose edges are softer than ``blur_above`` px is refined at ``scale`` x the
        processing size first (:func:`~betterdepth_cli.core.pipeline.cascade_resolution`)."""
        spec = self.card.get("cascade")
        if not spec:
            return None
        blur_above, scale = (float(spec.get(k, 0.0)) for k in ("blur_above", "scale")) if isinstance(spec, dict) else (0, 0)
        if not (blur_above > 0 and 0 < scale < 1):
            raise ValueError(f"model card: cascade needs blur_above > 0 and 0 < scale < 1, got {spec}")
        return blur_above, scale

    def smooth_residual(self, x0: torch.Tensor) -> torch.Tensor:
        """Inference only: the decoded residual box-filtered over the card's ``residual_smoothing`` pixels.

        A box as wide as the space-to-depth cell has zeros at the frequencies of any pattern that
        repeats every cell, so a residual cannot print the codec's grid (by construction); edges the
        residual moves stay within a few pixels. Only for residual models over the exact codec.
        The filter is centred on every pixel: a box of even width ``k`` is followed by a box of 2
        (kernel ``[1, 2, ..., 2, 1] / 2k`` per axis), since an even box alone would move every edge
        by half a pixel (it did until 2026-12-06).
        """
        k = int(self.card.get("residual_smoothing") or 0)
        if k <= 1 or not self.residual:
            return x0
        if not isinstance(self.codec, SpaceToDepthCodec):
            raise ValueError("model card: residual_smoothing needs the space-to-depth autoencoder")
        return self.codec.encode_depth(centred_box(self.codec.decode_depth(x0), k))

    def clean_latent(self, x0: torch.Tensor, z_cond: torch.Tensor) -> torch.Tensor:
        """The predicted clean depth latent from the sampler's ``x0``: for residual models plus the
        filtered conditioning's latent, or the raw one's with the card's ``residual_base = "raw"``."""
        if not self.residual:
            return x0
        c = self.codec.depth_channels
        base = z_cond[:, c : 2 * c] if self.raw_base else z_cond[:, :c]
        return x0 + base.to(x0.dtype)

    @property
    def defaults(self) -> dict:
        return card_defaults(self.card)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def pad_multiple(self) -> int:
        """Input sides must be multiples of this (autoencoder x UNet downsampling)."""
        n_down = len(self.unet.config.block_out_channels) - 1
        return self.codec.factor * 2**n_down

    # ------------------------------------------------------------------ network
    def unet_input(self, z_image: torch.Tensor, z_cond: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """cat[z_image, z_cond, z_t] (or cat[z_image, z_t] without depth conditioning)."""
        if self.depth_conditioning:
            return torch.cat([z_image, z_cond, z_t], dim=1)  # [B,Ci+2Cd,h,w]
        return torch.cat([z_image, z_t], dim=1)

    def denoise(
        self, z_image: torch.Tensor, z_cond: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor | int
    ) -> torch.Tensor:
        """The UNet's v-prediction for the noisy depth latent ``z_t`` at timestep ``t``."""
        x = self.unet_input(z_image, z_cond, z_t)
        ehs = None
        if self.text_embedding is not None:
            ehs = self.text_embedding.to(x.dtype).expand(x.shape[0], -1, -1)
        if not torch.is_tensor(t) or t.ndim == 0:
            t = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        return self.unet(x, t, encoder_hidden_states=ehs).sample

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write the bundle to ``path`` atomically (a temporary folder, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            self.unet.save_pretrained(tmp / "unet")
            self.codec.save_pretrained(tmp / "vae")
            self.scheduler.save_pretrained(tmp / "scheduler")
            if self.text_embedding is not None:
                from safetensors.torch import save_file

                save_file({"text_embedding": self.text_embedding.detach().cpu().contiguous()}, tmp / TEXT_EMBEDDING_FILE)
            card = {**self.card, "version": __version__, "autoencoder": self.codec.kind, "latent_factor": self.codec.factor,
                    "weights_sha256": weights_digest(tmp / "unet")}  # other weights, another card digest: outputs stale
            (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def from_folder(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()

        path = Path(path)
        missing = [p for p in ("unet", "vae", CARD_FILE) if not (path / p).exists()]
        if missing:
            raise ModelNotFoundError(f"{path}: not a BetterDepth model folder (missing {', '.join(missing)})")
        card = json.loads((path / CARD_FILE).read_text())
        unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype)
        codec = load_codec(path / "vae", dtype=dtype)
        if (path / "scheduler").exists():
            scheduler = DDIMScheduler.from_pretrained(path / "scheduler")
        else:
            scheduler = make_scheduler()
        text_embedding = None
        if (path / TEXT_EMBEDDING_FILE).exists():
            from safetensors.torch import load_file

            text_embedding = load_file(path / TEXT_EMBEDDING_FILE)["text_embedding"].to(dtype)
        model = cls(unet, codec, scheduler, card, text_embedding)
        model.card.setdefault("source", str(path))
        return model.to(device=device, dtype=dtype).eval()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        codec: str | LatentCodec = "space-to-depth",
        factor: int = 4,
        block_out_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 1,
        depth_conditioning: bool = True,
        card: dict | None = None,
        residual: bool = False,
        conditioning_filter: dict | None = None,
        raw_conditioning: bool = False,
    ) -> "BetterDepthModel":
        """A small randomly initialised model (no attention) for tests and CPU recipes.

        ``residual``: the card says so and the UNet's output layer starts at zero, so the
        model's output equals its conditioning until training moves it (identity at init).
        ``conditioning_filter``: the card's filter of the conditioning (``{"type": "guided", ...}``);
        with it, ``raw_conditioning`` gives the UNet the unfiltered map as a second conditioning.
        """
        from diffusers import UNet2DConditionModel

        c = tiny_codec(codec, factor=factor, seed=seed) if isinstance(codec, str) else codec
        maps = 2 if raw_conditioning and conditioning_filter else 1
        in_ch = c.image_channels + c.depth_channels * (1 + maps if depth_conditioning else 1)
        torch.manual_seed(seed)
        n = len(block_out_channels)
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=in_ch,
            out_channels=c.depth_channels,
            layers_per_block=layers_per_block,
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownBlock2D",) * n,
            up_block_types=("UpBlock2D",) * n,
            mid_block_type="UNetMidBlock2D",
            norm_num_groups=min(32, min(block_out_channels)),
        )
        if residual:
            with torch.no_grad():
                unet.conv_out.weight.zero_()
                unet.conv_out.bias.zero_()
        card = new_card(depth_conditioning=depth_conditioning, **(card or {}))
        if residual:
            card["residual"] = True
        if conditioning_filter:
            card["conditioning_filter"] = dict(conditioning_filter)
            card["raw_conditioning"] = bool(raw_conditioning)
        return cls(unet, c, make_scheduler(), card)

    @classmethod
    def from_stable_diffusion(cls, path_or_id: str, dtype: torch.dtype = torch.float32) -> "BetterDepthModel":
        """Initialise from a Stable Diffusion folder or hub id (Marigold's recipe).

        conv_in goes from 4 to 12 input channels: its weight is repeated 3 times
        along input channels and scaled by 1/3, so that equal latent groups give
        the original UNet's output. The empty-prompt text embedding is computed
        once and stored, so inference needs no text encoder.
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel

        root = resolve_model_path(path_or_id, what="Stable Diffusion model")
        unet = UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(root / "vae", torch_dtype=dtype)
        unet = expand_conv_in(unet, groups=3)
        text_embedding = empty_text_embedding(root, dtype=dtype)
        sched_cfg = {}
        sd_sched = root / "scheduler" / "scheduler_config.json"
        if sd_sched.exists():
            src = json.loads(sd_sched.read_text())
            sched_cfg = {k: src[k] for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps") if k in src}
        from betterdepth_cli.core.autoencoders import KLCodec

        card = new_card(init={"stable_diffusion": str(path_or_id)})
        card["defaults"] = {**DEFAULTS, "processing_res": 768}
        return cls(unet, KLCodec(vae), make_scheduler(**sched_cfg), card, text_embedding)


def expand_conv_in(unet, groups: int = 3):
    """Replace ``unet.conv_in`` (C_in -> C_out) by one with ``groups * C_in`` inputs.

    The weight is repeated ``groups`` times along the input channels and scaled
    by ``1 / groups``; the bias is kept. Updates ``unet.config.in_channels``.
    """
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels * groups, old.out_channels, old.kernel_size, old.stride, old.padding,
        dtype=old.weight.dtype, device=old.weight.device,
    )
    with torch.no_grad():
        new.weight.copy_(old.weight.repeat(1, groups, 1, 1) / groups)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=old.in_channels * groups)
    return unet


def empty_text_embedding(root: Path, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The CLIP text encoder's last hidden state for the empty prompt, (1,L,D)."""
    from transformers import AutoTokenizer, CLIPTextModel

    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(root / "text_encoder")
    ids = tokenizer(
        "", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return encoder(ids)[0].to(dtype)


def resolve_model_path(path_or_id: str | Path, what: str = "model") -> Path:
    """A local folder as is; otherwise a hub id through the local cache or a download."""
    from betterdepth_cli.core.model_names import local_model_folder

    local = local_model_folder(path_or_id, what)
    if local is not None:
        return local
    text = str(path_or_id)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    except Exception as exc:  # offline, missing repo, no cache
        raise ModelNotFoundError(
            f"{what}: '{text}' is not in the local Hugging Face cache and cannot be downloaded "
            f"({type(exc).__name__}). On a machine with network run `hf download {text}` "
            "(set HF_HOME to share the cache), or pass the local folder instead of the id."
        ) from None


def load_model(
    name: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> BetterDepthModel:
    """Load a refiner: ``None``/``"default"`` (embedded), ``"guided"`` (the classical
    :class:`~betterdepth_cli.core.guided.GuidedFilterRefiner`), a local folder, or a hub id."""
    from betterdepth_cli.core.guided import GUIDED_MODEL_NAME, GuidedFilterRefiner

    if name == GUIDED_MODEL_NAME:
        return GuidedFilterRefiner(device=device)
    if name in DEFAULT_MODEL_NAMES:
        path = default_model_path()
        if not (path / CARD_FILE).exists():
            raise ModelNotFoundError(
                f"the embedded default model is missing from {path}; reinstall betterdepth "
                "or pass --model PATH to a BetterDepth model folder"
            )
        model = BetterDepthModel.from_folder(path, device=device, dtype=dtype)
        model.card["source"] = "default"
        return model
    return BetterDepthModel.from_folder(resolve_model_path(name, what="BetterDepth model"), device=device, dtype=dtype)


__all__ = [
    "BetterDepthModel",
    "SpaceToDepthCodec",
    "expand_conv_in",
    "load_model",
    "resolve_model_path",
    "default_model_path",
    "SCHEDULER_CONFIG",
]
