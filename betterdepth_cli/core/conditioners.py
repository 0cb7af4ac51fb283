"""Conditioner registry: the feed-forward depth models BetterDepth refines.

A conditioner turns a batch of images (B,3,H,W) in [0,1] into a
:class:`DepthPrediction` at input resolution: values, a valid mask, the kind
(``disparity`` or ``depth``) and whether the values are metric.

Names users type:

- ``depth-anything-v2-small|base|large``, ``depth-anything-small|base|large`` (v1),
  ``dpt-large``, ``dpt-hybrid`` and the aliases ``dpt``, ``midas``, ``depth-anything``;
- ``hf:<hub id or local folder>`` for any ``AutoModelForDepthEstimation``
  (options after ``?``: ``kind=depth|disparity``, ``metric=0|1``);
- ``file:<folder>`` for maps precomputed by another tool, matched by file stem
  (options: ``kind=`` (required unless a ``dataset.toml``/sidecar says), ``metric=``);
- ``builtin``: the small conditioner embedded in the package.

New adapters register with :func:`register` (one decorator) or one entry in
:data:`HF_MODELS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

import torch

from betterdepth_cli.core.types import DepthPrediction, InputDataError, ModelNotFoundError, UsageError

#: Registry names that are public transformers checkpoints (all relative disparity).
HF_MODELS: dict[str, str] = {
    "depth-anything-v2-small": "depth-anything/Depth-Anything-V2-Small-hf",
    "depth-anything-v2-base": "depth-anything/Depth-Anything-V2-Base-hf",
    "depth-anything-v2-large": "depth-anything/Depth-Anything-V2-Large-hf",
    "depth-anything-small": "LiheYoung/depth-anything-small-hf",
    "depth-anything-base": "LiheYoung/depth-anything-base-hf",
    "depth-anything-large": "LiheYoung/depth-anything-large-hf",
    "dpt-large": "Intel/dpt-large",
    "dpt-hybrid": "Intel/dpt-hybrid-midas",
}

ALIASES: dict[str, str] = {
    "dpt": "dpt-large",
    "midas": "dpt-hybrid",
    "depth-anything": "depth-anything-v2-large",
}

#: transformers model types whose output is metric depth rather than relative disparity.
METRIC_DEPTH_MODEL_TYPES = {"zoedepth", "glpn", "depth_pro"}

_FACTORIES: dict[str, Callable[..., "Conditioner"]] = {}


def register(name: str) -> Callable:
    """Decorator: ``@register("name")`` on a factory ``(device, dtype, **options) -> Conditioner``."""

    def deco(factory: Callable) -> Callable:
        _FACTORIES[name] = factory
        return factory

    return deco


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


class HFConditioner(Conditioner):
    """Any transformers ``AutoModelForDepthEstimation`` with its own image processor."""

    def __init__(self, path: str | Path, name: str, device="cpu", dtype=torch.float32, kind=None, metric=None,
                 reflect_pad: float = 0.0):
        """``reflect_pad``: pad each side of the input by this fraction of its shorter side, by
        reflection, and crop the prediction back (for models that draw a band at the image border)."""
        import warnings

        from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        from transformers.utils import logging as hf_logging

        self.name = name
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # no "Loading weights" bars on stderr in batch jobs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.processor = AutoImageProcessor.from_pretrained(path)
        self.model = AutoModelForDepthEstimation.from_pretrained(path, torch_dtype=dtype).to(device).eval()
        config = self.model.config
        is_metric = getattr(config, "depth_estimation_type", "relative") == "metric" or (
            config.model_type in METRIC_DEPTH_MODEL_TYPES
        )
        self.kind = kind or ("depth" if is_metric else "disparity")
        self.metric = bool(is_metric if metric is None else metric)
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
        """(B,3,H,W) [0,1] -> the model's ``pixel_values``.

        DPT-family processors (DPT, MiDaS, Depth Anything v1/v2) are replayed in
        torch from their own configuration (size, keep_aspect_ratio,
        ensure_multiple_of, bicubic resampling, mean/std, padding), on the
        model's device; any other processor is called as is.
        """
        p = self.processor
        if type(p).__name__.startswith("DPTImageProcessor"):
            return dpt_preprocess(images.to(self.device, torch.float32), p).to(self.dtype)
        inputs = p(images=images.float().cpu(), return_tensors="pt", do_rescale=False)
        return inputs["pixel_values"].to(self.device, self.dtype)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, keys: list[str] | None = None) -> DepthPrediction:
        b, _, h, w = images.shape
        pad = min(round(self.reflect_pad * min(h, w)), h - 1, w - 1)
        if pad > 0:
            images = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
        outputs = self.model(pixel_values=self.preprocess(images))
        depth = outputs.predicted_depth.float()  # [B,h',w']
        # the processors' post-processing: bicubic to the input size, batched
        values = torch.nn.functional.interpolate(depth[:, None], size=(h + 2 * pad, w + 2 * pad), mode="bicubic",
                                                 align_corners=False)
        if pad > 0:
            values = values[..., pad : pad + h, pad : pad + w].contiguous()
        valid = torch.isfinite(values)
        if self.kind == "depth":
            valid &= values > 0
        return DepthPrediction(values=values, valid=valid, kind=self.kind, metric=self.metric, source=self.name)


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


def dpt_preprocess(images: torch.Tensor, processor) -> torch.Tensor:
    """Replay a DPT-family image processor on a (B,3,H,W) [0,1] tensor."""
    import torch.nn.functional as F

    x = images
    h, w = x.shape[-2:]
    if getattr(processor, "do_resize", True):
        size = processor.size
        size = {"height": size["height"], "width": size["width"]} if "height" in size else {
            "height": size["shortest_edge"], "width": size["shortest_edge"]}
        nh, nw = dpt_resize_size(h, w, size, bool(getattr(processor, "keep_aspect_ratio", False)),
                                 int(getattr(processor, "ensure_multiple_of", 1) or 1))
        resample = int(getattr(processor, "resample", 3))
        mode = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(resample, "bicubic")
        if (nh, nw) != (h, w):
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": nh < h or nw < w}
            x = F.interpolate(x, size=(nh, nw), mode=mode, **kwargs).clamp(0.0, 1.0)
    if getattr(processor, "do_normalize", True):
        mean = torch.tensor(processor.image_mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(processor.image_std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
    divisor = getattr(processor, "size_divisor", None)
    if getattr(processor, "do_pad", False) and divisor:
        ph, pw = (-x.shape[-2]) % divisor, (-x.shape[-1]) % divisor
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return x


class FileConditioner(Conditioner):
    """Precomputed maps from any other tool, matched to inputs by file stem."""

    needs_keys = True
    EXTENSIONS = (".png", ".npy", ".exr", ".pfm", ".tif", ".tiff")

    def __init__(self, folder: str | Path, kind: str, metric: bool = False, device="cpu"):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise UsageError(f"--conditioner file:{folder}: folder not found")
        self.name = f"file:{folder}"
        self.kind = kind
        self.metric = metric
        self.device = torch.device(device)
        self._index: dict[str, Path] = {}
        for p in sorted(self.folder.rglob("*")):
            if p.suffix.lower() in self.EXTENSIONS and p.is_file():
                self._index.setdefault(p.stem, p)
                self._index.setdefault(str(p.relative_to(self.folder).with_suffix("")), p)

    def path_for(self, key: str) -> Path:
        for k in (key, Path(key).name):
            if k in self._index:
                return self._index[k]
        raise InputDataError(
            f"{self.folder}: no precomputed map for '{key}' (looked for {key}"
            f"{{{','.join(self.EXTENSIONS)}}})"
        )

    def predict(self, images: torch.Tensor, keys: list[str] | None = None) -> DepthPrediction:
        from betterdepth_cli.io.images import read_depth_map

        if keys is None or len(keys) != images.shape[0]:
            raise UsageError("the file: conditioner needs one key (file stem) per image")
        b, _, h, w = images.shape
        vals, masks = [], []
        for key in keys:
            path = self.path_for(key)
            v, m = read_depth_map(path)
            v = torch.from_numpy(v).float()[None, None]
            m = torch.from_numpy(m)[None, None]
            if v.shape[-2:] != (h, w):
                v = torch.nn.functional.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
                m = torch.nn.functional.interpolate(m.float(), size=(h, w), mode="nearest") > 0.5
            vals.append(v)
            masks.append(m)
        values = torch.cat(vals).to(self.device)
        valid = torch.cat(masks).to(self.device) & torch.isfinite(values)
        return DepthPrediction(values=values, valid=valid, kind=self.kind, metric=self.metric, source=self.name)


@dataclass(frozen=True)
class ConditionerInfo:
    name: str
    target: str
    description: str


def list_conditioners() -> list[ConditionerInfo]:
    """Every name :func:`get_conditioner` accepts (besides ``hf:`` and ``file:``)."""
    out = [ConditionerInfo("builtin", str(builtin_conditioner_path()), "small model embedded in the package")]
    out += [ConditionerInfo(n, i, "transformers checkpoint, relative disparity") for n, i in HF_MODELS.items()]
    out += [ConditionerInfo(a, t, f"alias of {t}") for a, t in ALIASES.items()]
    out += [ConditionerInfo(n, n, "registered adapter") for n in _FACTORIES if n not in {"builtin"}]
    return out


def _parse_options(spec: str) -> tuple[str, dict[str, str]]:
    if "?" in spec:
        base, query = spec.split("?", 1)
        return base, dict(parse_qsl(query))
    return spec, {}


def _bool(text: str | None, name: str) -> bool | None:
    if text is None:
        return None
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise UsageError(f"--conditioner option `{name}` must be 0 or 1, got {text!r}")


def _load_hf(target: str, name: str, device, dtype, options: dict[str, str]) -> HFConditioner:
    from betterdepth_cli.core.refiner import resolve_model_path
    from betterdepth_cli.core.types import check_kind

    kind = options.get("kind")
    if kind is not None:
        check_kind(kind)
    try:
        path = resolve_model_path(target, what=f"conditioner '{name}'")
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"{exc} Or pass --conditioner hf:/path/to/{target.split('/')[-1]}."
        ) from None
    try:
        return HFConditioner(path, name, device=device, dtype=dtype, kind=kind, metric=_bool(options.get("metric"), "metric"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"conditioner '{name}': {path} is not a transformers depth model ({exc})".splitlines()[0]) from None


@register("builtin")
def _builtin(device="cpu", dtype=torch.float32, **options) -> Conditioner:
    path = builtin_conditioner_path()
    if not (path / "config.json").exists():
        raise ModelNotFoundError(
            f"the embedded conditioner is missing from {path}; reinstall betterdepth or choose "
            "--conditioner NAME (see `betterdepth info`)"
        )
    # the embedded model draws a bright band one or two pixels wide at the image border (its DPT
    # head's zero padding; the loss on those columns was too small to undo it): padding the input by
    # reflection moves the band outside the crop (weights/MODEL_CARD.md)
    return HFConditioner(path, "builtin", device=device, dtype=dtype, reflect_pad=BUILTIN_REFLECT_PAD)


def check_conditioner_name(spec: str) -> None:
    """Refuse an unknown registry name before anything loads, suggesting the closest valid one."""
    if not spec:
        raise UsageError("`--conditioner` must not be empty")
    base, _ = _parse_options(spec)
    if base.startswith(("hf:", "file:")) or ALIASES.get(base, base) in (_FACTORIES.keys() | HF_MODELS.keys()):
        return
    import difflib

    valid = sorted(set(_FACTORIES) | set(HF_MODELS) | set(ALIASES))
    close = difflib.get_close_matches(base, valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown conditioner {spec!r}; {hint}valid: {', '.join(valid)}, or hf:<id or folder>, "
                     "file:<folder>?kind=...")


def get_conditioner(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Conditioner:
    """Build the conditioner a user named (see the module docstring for names)."""
    check_conditioner_name(spec)
    base, options = _parse_options(spec)
    if base.startswith("hf:"):
        target = base[3:]
        if not target:
            raise UsageError("--conditioner hf: needs a hub id or a local folder, e.g. hf:Intel/dpt-large")
        return _load_hf(target, base, device, dtype, options)
    if base.startswith("file:"):
        from betterdepth_cli.core.types import check_kind

        kind = options.get("kind")
        if kind is None:
            raise UsageError(
                f"--conditioner {spec}: say what the maps hold, e.g. file:{base[5:]}?kind=disparity (or kind=depth)"
            )
        check_kind(kind)
        return FileConditioner(base[5:], kind=kind, metric=bool(_bool(options.get("metric"), "metric")), device=device)
    name = ALIASES.get(base, base)
    if name in _FACTORIES:
        return _FACTORIES[name](device=device, dtype=dtype, **options)
    return _load_hf(HF_MODELS[name], name, device, dtype, options)  # a registry name (checked above)
