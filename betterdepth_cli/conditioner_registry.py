"""The conditioner names users type, resolved to conditioners.

This module sits above :mod:`betterdepth_cli.core` (the model classes) and
:mod:`betterdepth_cli.io` (maps precomputed by other tools), so neither has to
import the other. Names:

- relative models: ``depth-anything-v2-small|base|large``, ``depth-anything-small|base|large`` (v1),
  ``dpt-large``, ``dpt-hybrid`` and the aliases ``dpt``, ``midas``, ``depth-anything``;
- metric models (depth in metres): ``zoedepth-nyu|kitti|nyu-kitti``, ``depth-pro``,
  ``depth-anything-v2-metric-indoor|outdoor-small|base|large``,
  ``dpt-dinov2-small|base|large|giant-nyu|kitti`` (see :data:`METRIC_MODELS`);
- ``hf:<hub id or local folder>`` for any ``AutoModelForDepthEstimation``
  (options after ``?``: ``kind=depth|disparity``, ``metric=0|1``);
- ``file:<folder>`` for maps precomputed by another tool, matched by file stem
  (options: ``kind=``, ``metric=``, ``units=``/``scale=``, ``invalid=``, ``pattern=``;
  see :mod:`betterdepth_cli.io.precomputed`);
- ``builtin``: the small conditioner embedded in the package.

New adapters register with :func:`register` (one decorator) or one entry in
:data:`HF_MODELS` / :data:`METRIC_MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

import torch

from betterdepth_cli.core.conditioners import BUILTIN_REFLECT_PAD, Conditioner, HFConditioner, builtin_conditioner_path
from betterdepth_cli.core.types import ModelNotFoundError, UsageError, check_kind

#: Registry names that are public transformers checkpoints of relative disparity.
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

#: The metric-depth families: registry-name prefix -> what the family is.
METRIC_FAMILIES: dict[str, str] = {
    "zoedepth": "ZoeDepth, metric depth (metres)",
    "depth-pro": "Depth Pro, metric depth (metres, focal length from its FoV head)",
    "depth-anything-v2-metric": "Depth Anything V2 metric, depth (metres)",
    "dpt-dinov2": "DPT-DINOv2, metric depth (metres)",
}

#: Registry names of public metric-depth checkpoints (values in metres).
METRIC_MODELS: dict[str, str] = {
    "zoedepth-nyu": "Intel/zoedepth-nyu",
    "zoedepth-kitti": "Intel/zoedepth-kitti",
    "zoedepth-nyu-kitti": "Intel/zoedepth-nyu-kitti",
    "depth-pro": "apple/DepthPro-hf",
    **{f"depth-anything-v2-metric-{scene}-{size}":
       f"depth-anything/Depth-Anything-V2-Metric-{scene.title()}-{size.title()}-hf"
       for scene in ("indoor", "outdoor") for size in ("small", "base", "large")},
    **{f"dpt-dinov2-{size}-{data}": f"facebook/dpt-dinov2-{size}-{data}"
       for data in ("nyu", "kitti") for size in ("small", "base", "large", "giant")},
}

ALIASES: dict[str, str] = {
    "dpt": "dpt-large",
    "midas": "dpt-hybrid",
    "depth-anything": "depth-anything-v2-large",
}

_FACTORIES: dict[str, Callable[..., Conditioner]] = {}


def register(name: str) -> Callable:
    """Decorator: ``@register("name")`` on a factory ``(device, dtype, **options) -> Conditioner``."""

    def deco(factory: Callable) -> Callable:
        _FACTORIES[name] = factory
        return factory

    return deco


def metric_family(name: str) -> str | None:
    """The :data:`METRIC_FAMILIES` key a metric registry name belongs to (None for other names)."""
    if name not in METRIC_MODELS:
        return None
    return next(f for f in sorted(METRIC_FAMILIES, key=len, reverse=True) if name.startswith(f))


@dataclass(frozen=True)
class ConditionerInfo:
    name: str
    target: str
    description: str


def list_conditioners() -> list[ConditionerInfo]:
    """Every name :func:`get_conditioner` accepts (besides ``hf:`` and ``file:``)."""
    out = [ConditionerInfo("builtin", str(builtin_conditioner_path()), "small model embedded in the package")]
    out += [ConditionerInfo(n, i, "relative disparity") for n, i in HF_MODELS.items()]
    out += [ConditionerInfo(n, i, METRIC_FAMILIES[metric_family(n)]) for n, i in METRIC_MODELS.items()]
    out += [ConditionerInfo(a, t, f"alias of {t}") for a, t in ALIASES.items()]
    out += [ConditionerInfo(n, n, "registered adapter") for n in _FACTORIES if n not in {"builtin"}]
    return out


def parse_options(spec: str) -> tuple[str, dict[str, str]]:
    """``base?key=value&...`` -> (base, options)."""
    if "?" in spec:
        base, query = spec.split("?", 1)
        return base, dict(parse_qsl(query))
    return spec, {}


def parse_bool(text: str | None, name: str) -> bool | None:
    """An option's 0/1 (true/false, yes/no) value, None when absent."""
    if text is None:
        return None
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise UsageError(f"--conditioner option `{name}` must be 0 or 1, got {text!r}")


def _load_hf(target: str, name: str, device, dtype, options: dict[str, str]) -> HFConditioner:
    from betterdepth_cli.core.model_names import looks_like_hub_id
    from betterdepth_cli.core.refiner import resolve_model_path

    kind = options.get("kind")
    if kind is not None:
        check_kind(kind)
    try:
        path = resolve_model_path(target, what=f"conditioner '{name}'")
    except ModelNotFoundError as exc:
        if not looks_like_hub_id(target):  # a local path that is not there: the error says so
            raise
        raise ModelNotFoundError(
            f"{str(exc).rstrip('.')} (--conditioner hf:/path/to/{target.split('/')[-1]})."
        ) from None
    try:
        return HFConditioner(path, name, device=device, dtype=dtype, kind=kind,
                             metric=parse_bool(options.get("metric"), "metric"))
    except (OSError, ValueError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"conditioner '{name}': {path} is not a transformers depth model ({reason})") from None


@register("builtin")
def _builtin(device="cpu", dtype=torch.float32, kind: str | None = None, metric: str | None = None) -> Conditioner:
    path = builtin_conditioner_path()
    if not (path / "config.json").exists():
        raise ModelNotFoundError(
            f"the embedded conditioner is missing from {path}; reinstall betterdepth or choose "
            "--conditioner NAME (see `betterdepth info`)"
        )
    # the embedded model draws a bright band one or two pixels wide at the image border (its DPT
    # head's zero padding; the loss on those columns was too small to undo it): padding the input by
    # reflection moves the band outside the crop (weights/MODEL_CARD.md)
    return HFConditioner(path, "builtin", device=device, dtype=dtype, kind=kind, metric=parse_bool(metric, "metric"),
                         reflect_pad=BUILTIN_REFLECT_PAD)


def _known_names() -> set[str]:
    return set(_FACTORIES) | set(HF_MODELS) | set(METRIC_MODELS)


#: The options every model takes after ``?`` (``file:`` takes more).
MODEL_OPTIONS = ("kind", "metric")


def _check_model_options(spec: str, options: dict[str, str]) -> None:
    """A model's ``?kind=`` and ``?metric=`` checked; any other option is a usage error, not ignored."""
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise UsageError(f"--conditioner {spec}: unknown option {unknown[0]!r} (a model takes "
                         f"{', '.join(MODEL_OPTIONS)}; file: takes more)")
    if "kind" in options:
        try:
            check_kind(options["kind"])
        except UsageError:
            raise UsageError(f"--conditioner {spec}: kind must be disparity or depth, got {options['kind']!r}") from None
    parse_bool(options.get("metric"), "metric")


def check_conditioner_name(spec: str) -> None:
    """Refuse an unknown registry name before anything loads, suggesting the closest valid one."""
    if not spec:
        raise UsageError("`--conditioner` must not be empty")
    base, options = parse_options(spec)
    if not base.startswith("file:"):  # file: checks its own (more) options
        _check_model_options(spec, options)
    if base.startswith("file:"):  # a folder that is not there: not found (69), before anything runs
        if not base[5:]:
            raise UsageError("--conditioner file: needs the folder of the maps, e.g. file:maps?kind=disparity")
        if not Path(base[5:]).expanduser().is_dir():
            raise ModelNotFoundError(f"--conditioner {base}: folder not found")
        return
    if base.startswith("hf:"):
        if base[3:]:
            from betterdepth_cli.core.model_names import local_model_folder

            local_model_folder(base[3:], what=f"conditioner '{base}'")  # a local path that is not there: 69
        return
    if ALIASES.get(base, base) in _known_names():
        return
    import difflib

    valid = sorted(_known_names() | set(ALIASES))
    close = difflib.get_close_matches(base, valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown conditioner {spec!r}; {hint}valid: {', '.join(valid)}, or hf:<id or folder>, "
                     "file:<folder> (see `betterdepth info`)")


def get_conditioner(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Conditioner:
    """Build the conditioner a user named (see the module docstring for names)."""
    check_conditioner_name(spec)
    base, options = parse_options(spec)
    if base.startswith("hf:"):
        target = base[3:]
        if not target:
            raise UsageError("--conditioner hf: needs a hub id or a local folder, e.g. hf:Intel/dpt-large")
        return _load_hf(target, base, device, dtype, options)
    if base.startswith("file:"):
        from betterdepth_cli.io.precomputed import file_conditioner

        return file_conditioner(base[5:], options, metric=parse_bool(options.get("metric"), "metric"), device=device)
    name = ALIASES.get(base, base)
    if name in _FACTORIES:
        return _FACTORIES[name](device=device, dtype=dtype, **options)
    return _load_hf({**HF_MODELS, **METRIC_MODELS}[name], name, device, dtype, options)  # checked above
