"""Conditioners: the feed-forward depth models BetterDepth refines.

A conditioner turns a batch of images (B,3,H,W) in [0,1] into a
:class:`DepthPrediction` at input resolution: values, a valid mask, the kind
(``disparity`` or ``depth``) and whether the values are metric.

:class:`HFConditioner` runs any transformers ``AutoModelForDepthEstimation``
through its own processor's pre- and post-processing (replayed in torch by
:mod:`betterdepth_cli.core.hf_processing`); what the values mean comes from
what the model really outputs (:func:`output_semantics`). The names users type
(``depth-anything-v2-large``, ``hf:``, ``file:``...) are resolved by
:mod:`betterdepth_cli.conditioner_registry`; maps precomputed by other tools
are read by :mod:`betterdepth_cli.io.precomputed`.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from betterdepth_cli.core import hf_processing as hp
from betterdepth_cli.core.types import DepthPrediction, InputDataError

#: transformers model types whose output is metric depth rather than relative disparity.
METRIC_DEPTH_MODEL_TYPES = {"zoedepth", "glpn"}

#: ``builtin`` pads each side by this fraction of the shorter side (16 px at 192 px), by reflection.
BUILTIN_REFLECT_PAD = 1 / 12


def builtin_conditioner_path() -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / "conditioner"


class Conditioner:
    """Base class. Subclasses implement :meth:`predict`."""

    name: str = ""
    kind: str = "disparity"
    metric: bool = False
    needs_keys: bool = False

    def predict(self, images: torch.Tensor, keys: list[str] | None = None) -> DepthPrediction:
        """(B,3,H,W) in [0,1] -> DepthPrediction with values (B,1,H,W)."""
        raise NotImplementedError

    def to(self, device=None, dtype=None) -> "Conditioner":
        return self


def output_semantics(config) -> tuple[str, bool]:
    """(kind, metric) of what a transformers depth model gives after its processor's post-processing."""
    if getattr(config, "depth_estimation_type", None) == "metric" or config.model_type in METRIC_DEPTH_MODEL_TYPES:
        return "depth", True
    if config.model_type == "depth_pro":  # metres when the field-of-view head gives the focal length
        return "depth", bool(getattr(config, "use_fov_model", False))
    backbone = getattr(config, "backbone_config", None)
    if config.model_type == "dpt" and getattr(backbone, "model_type", None) == "dinov2":
        return "depth", True  # the DPT-DINOv2 NYU/KITTI heads regress metres
    return "disparity", False


def load_processor(path: str | Path):
    """The model's image processor; a processor class that cannot load here (Depth Pro's needs
    torchvision) becomes its saved settings, which :mod:`hf_processing` replays."""
    import warnings

    from transformers import AutoImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return AutoImageProcessor.from_pretrained(path)
        except (ImportError, ValueError):  # transformers says "None of these classes could be imported"
            settings = Path(path) / "preprocessor_config.json"
            if not settings.is_file():
                raise
            return SimpleNamespace(**json.loads(settings.read_text(encoding="utf-8")))


def processor_family(processor, model_type: str) -> str:
    """``dpt``, ``zoedepth``, ``depth_pro`` (replayed in torch) or ``generic`` (called as is)."""
    name = getattr(processor, "image_processor_type", None) or type(processor).__name__
    if model_type == "depth_pro" or name.startswith("DepthPro"):
        return "depth_pro"
    if name.startswith("ZoeDepth"):
        return "zoedepth"
    if name.startswith("DPTImageProcessor"):
        return "dpt"
    return "generic"


_PREPROCESS = {"dpt": hp.dpt_preprocess, "zoedepth": hp.zoedepth_preprocess, "depth_pro": hp.depth_pro_preprocess}


def dpt_vit_forward(model, pixel_values: torch.Tensor) -> SimpleNamespace:
    """DPTForDepthEstimation's forward for a ViT backbone on a non-square input: the model's own
    forward reshapes the tokens to a square grid and fails; this passes the real grid to the neck."""
    config = model.config
    hidden = model.dpt(pixel_values, output_hidden_states=True).hidden_states
    features = [f for i, f in enumerate(hidden[1:]) if i in config.backbone_out_indices]
    height, width = pixel_values.shape[-2:]
    patch = config.patch_size
    return SimpleNamespace(predicted_depth=model.head(model.neck(features, height // patch, width // patch)))


class HFConditioner(Conditioner):
    """Any transformers ``AutoModelForDepthEstimation`` with its own image processor."""

    def __init__(self, path: str | Path, name: str, device="cpu", dtype=torch.float32, kind=None, metric=None,
                 reflect_pad: float = 0.0):
        """``reflect_pad``: pad each side of the input by this fraction of its shorter side, by
        reflection, and crop the prediction back (for models that draw a band at the image border)."""
        from transformers import AutoModelForDepthEstimation
        from transformers.utils import logging as hf_logging

        self.name = name
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # no "Loading weights" bars on stderr in batch jobs
        self.processor = load_processor(path)
        self.model = AutoModelForDepthEstimation.from_pretrained(path, torch_dtype=dtype).to(device).eval()
        config = self.model.config
        self.family = processor_family(self.processor, config.model_type)
        true_kind, true_metric = output_semantics(config)
        self.kind = kind or true_kind
        self.metric = bool(true_metric if metric is None else metric)
        self.device = torch.device(device)
        self.dtype = dtype
        if not 0.0 <= reflect_pad < 1.0:
            raise ValueError(f"reflect_pad must be in [0, 1), got {reflect_pad}")
        self.reflect_pad = float(reflect_pad)

    def to(self, device=None, dtype=None):
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        self.model.to(device=self.device, dtype=self.dtype)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) [0,1] -> the model's ``pixel_values`` (its processor's pre-processing)."""
        if self.family == "generic":
            pixels = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # what a photo decodes to
            inputs = self.processor(images=list(pixels), return_tensors="pt")
            return inputs["pixel_values"].to(self.device, self.dtype)
        return _PREPROCESS[self.family](images.to(self.device, torch.float32), self.processor)[0].to(self.dtype)

    def _forward(self, pixel_values: torch.Tensor):
        config = self.model.config
        if (config.model_type == "dpt" and not config.is_hybrid and getattr(self.model, "backbone", None) is None
                and pixel_values.shape[-2] != pixel_values.shape[-1]):
            return dpt_vit_forward(self.model, pixel_values)
        try:
            return self.model(pixel_values=pixel_values)
        except (RuntimeError, ValueError) as exc:  # e.g. "Input image size (48*64) doesn't match model"
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc):
                raise
            shape = "x".join(str(v) for v in pixel_values.shape[-2:])
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputDataError(f"conditioner {self.name} cannot take a {shape} input ({reason})") from None

    def _generic_values(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Unknown processors: called as they are, then their own ``post_process_depth_estimation``."""
        import inspect

        outputs = self._forward(self.preprocess(images))
        post = getattr(self.processor, "post_process_depth_estimation", None)
        if post is None:
            raw = outputs.predicted_depth.float().reshape(images.shape[0], 1, *outputs.predicted_depth.shape[-2:])
            return hp.to_input_grid(raw, hp.Geometry(canvas=size, box=(0, 0, *size)), size)
        kwargs = {"target_sizes": [size] * images.shape[0]}
        if "source_sizes" in inspect.signature(post).parameters:
            kwargs["source_sizes"] = [size] * images.shape[0]
        results = post(outputs, **kwargs)
        return torch.stack([r["predicted_depth"].float().reshape(size) for r in results])[:, None].to(self.device)

    def values(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) [0,1] -> (B,1,H,W) the model's post-processed output on the input pixels."""
        size = tuple(images.shape[-2:])
        if self.family == "generic":
            return self._generic_values(images, size)
        pixel_values, geometry = _PREPROCESS[self.family](images.to(self.device, torch.float32), self.processor)
        outputs = self._forward(pixel_values.to(self.dtype))
        raw = outputs.predicted_depth.float()
        raw = raw[:, None] if raw.ndim == 3 else raw
        if self.family == "depth_pro":
            return hp.depth_pro_to_metres(raw, getattr(outputs, "field_of_view", None), geometry, size)
        return hp.to_input_grid(raw, geometry, size)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, keys: list[str] | None = None) -> DepthPrediction:
        b, _, h, w = images.shape
        pad = min(round(self.reflect_pad * min(h, w)), h - 1, w - 1)
        if pad > 0:
            images = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
        values = self.values(images.float())
        if pad > 0:
            values = values[..., pad : pad + h, pad : pad + w].contiguous()
        valid = values > 0 if self.kind == "depth" else torch.ones_like(values, dtype=torch.bool)
        # non-finite values are made invalid holes by DepthPrediction itself
        return DepthPrediction(values=values, valid=valid, kind=self.kind, metric=self.metric, source=self.name)

