"""Training recipes: TOML parsing, every default in one place, overrides, the resolved file.

A recipe is a TOML file with the tables below; every key is optional and its
default lives in the dataclass field here (nowhere else). ``betterdepth train``
flags and ``--set section.key=value`` override the file; the resolved recipe
is written to the output folder as ``config.toml`` (a valid recipe itself).

Data specs (``[data] datasets`` and ``[validation] datasets``) are inline tables
with a ``type``:

- ``{type = "synthetic", n = 64, size = 64, seed = 0, kind = "mixed"}``:
  procedural scenes rendered into the cache folder when missing
  (``[data] synthetic = {...}`` is a shorthand for one of these);
- ``{type = "folder", root = "DIR"}``: the generic folder format (``root`` may be a ``.tar`` of it);
- ``{type = "hypersim", root = "DIR", split = "train"}``: the official layout; or Marigold's
  preprocessed PNGs, a folder or ``hypersim_processed_train.tar``, with
  ``filenames = "data_split/hypersim_depth/filename_list_train_filtered.txt"`` (optional; ``max_depth``);
- ``{type = "vkitti2", root = "DIR"}`` (``depth_root``, ``scenes``, ``variations``, ``cameras``, ``max_depth``,
  ``kb_crop = true`` for the KITTI benchmark crop; ``root``/``depth_root`` may be the official
  ``vkitti_2.0.3_rgb.tar`` / ``vkitti_2.0.3_depth.tar``); or Marigold's ``vkitti.tar`` / folder with
  ``filenames = "data_split/vkitti_depth/vkitti_train.txt"`` (``kb_crop`` defaults to true there)
  (see :mod:`training.split_datasets`).

Every spec takes ``weight`` (mixing probability, default 1); other keys go to
the loader.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from betterdepth_cli.core.types import UsageError

DATASET_TYPES = ("synthetic", "folder", "hypersim", "vkitti2")
TINY_CODECS = ("space-to-depth", "kl", "tiny")  # [model] codec of a tiny model (betterdepth_cli.core.autoencoders.tiny_codec)
SCENE_KINDS = ("indoor", "outdoor", "mixed")  # a synthetic spec's kind (training.synthetic.scene.SCENE_KINDS)
SCHEDULES = ("constant", "linear", "cosine", "exponential")
MIXED_PRECISION = ("no", "fp16", "bf16")
OPTIMIZERS = ("adam", "adamw")


@dataclass
class ModelSection:
    """How the refiner is initialised.

    init: ``"tiny"`` (a small random UNet, options below), a Stable Diffusion
        folder or hub id (``stabilityai/stable-diffusion-2``; conv_in 4 -> 12),
        or an existing BetterDepth model folder (fine-tuning).
    """

    init: str = "tiny"
    codec: str = "space-to-depth"  # tiny only: space-to-depth | kl | tiny
    factor: int = 4  # tiny only: latent downsampling of the codec
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64])  # tiny only
    layers_per_block: int = 1  # tiny only
    processing_res: int = 0  # the card's inference default (0: the data's processing_res, else native)
    max_processing_res: int = 0  # the card's cap on native resolution (longest side; 0 = none): the trained pixel scale
    residual: bool = False  # tiny only: the UNet predicts a residual over the conditioning latent, output layer zero (identity at init)
    conditioning_filter: dict = field(default_factory=dict)  # {type = "guided", radius = 0.01, eps = 1e-3}: filter the conditioning with the photo as guide
    raw_conditioning: bool = False  # tiny only, with conditioning_filter: the UNet also sees the unfiltered map
    residual_base: str = ""  # residual models with raw_conditioning: "raw" adds the unfiltered map's latent ("" = filtered)
    residual_smoothing: int = 0  # inference only (the card's): box width over the decoded residual (no codec grid)
    edge_gate: list[float] = field(default_factory=list)  # inference only (the card's): [low, high] evidence thresholds (core.edge_gate)
    keep_sharp: list[float] = field(default_factory=list)  # inference only (the card's): [low, high] px: edges sharper than low are kept as the conditioner drew them (core.edge_gate)
    cascade: dict = field(default_factory=dict)  # inference only (the card's): {blur_above = px, scale = 0.5}: a first pass at lower resolution for soft conditionings
    layout_lowpass: float = 0.0  # inference only (the card's): below this share of the longest side the output is the conditioner's map
    ensemble: int = 0  # inference only (the card's default; 0 = 1): a zero-noise model's 2 = the photo and its mirror image


@dataclass
class ConditionerSection:
    """The feed-forward model M_FFD: any name ``get_conditioner`` accepts, or ``simulated``.

    ``simulated`` (training only): the ground truth's disparity degraded per
    sample and per step (:class:`training.simulated_conditioner.SimulatedConditioner`,
    options in ``simulated``), mixed with ``mix_name``'s cached predictions for a
    ``mix_share`` of the samples.
    """

    name: str = "builtin"
    device: str = ""  # "" = the training device
    simulated: dict = field(default_factory=dict)  # SimulatedConditioner options (sigma, warp, gamma, thin)
    mix_name: str = ""  # with name = "simulated": a real conditioner for a share of the samples
    mix_share: float = 0.0


@dataclass
class DataSection:
    """Training data and geometric augmentation (applied after the prediction cache)."""

    datasets: list[dict] = field(default_factory=list)
    synthetic: dict = field(default_factory=dict)  # shorthand for one {type = "synthetic", ...} spec
    cache_dir: str = ""  # "" = $BETTERDEPTH_CACHE, else $XDG_CACHE_HOME/betterdepth, else ~/.cache/betterdepth
    processing_res: int = 0  # resize the longest side to this before cropping (0 = native size)
    crop: list[int] = field(default_factory=list)  # [h, w] crop; [] = the largest multiple of the UNet's size unit
    random_crop: bool = True  # random crop position (false: centred)
    hflip: bool = True  # random horizontal flips
    num_workers: int = 0  # DataLoader worker processes
    cache_predictions: bool = True  # conditioner predictions on disk (run once per sample)
    cache_latents: bool = True  # image latents on disk, used only when no augmentation changes them


@dataclass
class ObjectiveSection:
    """The paper's contributions, each switchable (Table 5)."""

    depth_conditioning: bool = True  # False: UNet input cat[z_x, z_t] (Marigold-style)
    prealign: bool = True  # global pre-alignment (eq. 3)
    patch_mask: bool = True  # local patch masking (eq. 4-5)
    patch_size: int = 8  # w
    eta: float = 0.1  # per-pixel tolerance in [-1, 1] units
    mode: str = "diffusion"  # diffusion (the paper's v-loss) | e2e (one step from zero noise, pixel loss; Garcia et al. 2024)
    e2e_loss: str = "l1"  # e2e only: l1 | mse
    e2e_gradient_weight: float = 0.0  # e2e only: weight of a multi-scale gradient-matching term (not in the paper)
    e2e_gradient_scales: int = 4  # e2e only: dyadic scales of that term
    e2e_excursion_weight: float = 0.0  # e2e only: weight of a term on leaving the GT's local range (ringing; not in the paper)
    e2e_excursion_radius: int = 2  # e2e only: that range's window radius in pixels


@dataclass
class TrainSection:
    seed: int = 0
    batch_size: int = 4  # per process and micro-step
    gradient_accumulation_steps: int = 1
    max_steps: int = 200  # optimizer steps
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_checkpointing: bool = False
    checkpoint_every: int = 100  # 0 = only the final model
    checkpoints_total_limit: int = 2  # keep the newest N checkpoints (0 = all)
    log_every: int = 10  # console line every N steps (metrics.jsonl gets every step)


@dataclass
class OptimSection:
    optimizer: str = "adam"  # adam | adamw
    lr: float = 3e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up from 0
    schedule: str = "constant"  # constant | linear | cosine | exponential (after warm-up)
    min_lr_ratio: float = 0.0  # final lr / lr (exponential needs > 0)
    max_grad_norm: float = 1.0  # 0 = no clipping


@dataclass
class EMASection:
    enabled: bool = False
    decay: float = 0.999
    use_for_final: bool = True  # the saved model (and validation) uses the EMA weights


@dataclass
class ValidationSection:
    """Held-out validation: AbsRel and delta1 of the conditioner and of the refiner."""

    every: int = 0  # steps between validations (0 = only after the last step)
    datasets: list[dict] = field(default_factory=list)
    synthetic: dict = field(default_factory=dict)
    holdout: int = 0  # without validation datasets: the last N samples of the first training set
    steps: list[int] = field(default_factory=lambda: [1, 2])  # refiner denoising steps to score
    max_samples: int = 16
    processing_res: int = 0  # 0 = the data's processing_res (0 = native)
    min_depth: float = 1e-3
    max_depth: float = 80.0
    seed: int = 0


@dataclass
class Recipe:
    name: str = "betterdepth"
    output: str = ""  # default output folder ("" = runs/<name>)
    model: ModelSection = field(default_factory=ModelSection)
    conditioner: ConditionerSection = field(default_factory=ConditionerSection)
    data: DataSection = field(default_factory=DataSection)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    ema: EMASection = field(default_factory=EMASection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def train_sources(self) -> list[dict]:
        """The training data specs, the ``synthetic`` shorthand included."""
        return _sources(self.data.datasets, self.data.synthetic)

    def validation_sources(self) -> list[dict]:
        return _sources(self.validation.datasets, self.validation.synthetic)

    def cache_dir(self) -> Path:
        return resolve_cache_dir(self.data.cache_dir)


_SECTION_CLASSES = {
    "model": ModelSection,
    "conditioner": ConditionerSection,
    "data": DataSection,
    "objective": ObjectiveSection,
    "train": TrainSection,
    "optim": OptimSection,
    "ema": EMASection,
    "validation": ValidationSection,
}


def _sources(datasets: list[dict], synthetic: dict) -> list[dict]:
    out = [dict(d) for d in datasets]
    if synthetic:
        out.append({"type": "synthetic", **synthetic})
    return out


def resolve_cache_dir(text: str = "") -> Path:
    """The cache folder: ``text``, else $BETTERDEPTH_CACHE, else $XDG_CACHE_HOME/betterdepth, else ~/.cache/betterdepth."""
    if text:
        return Path(text).expanduser()
    if os.environ.get("BETTERDEPTH_CACHE"):
        return Path(os.environ["BETTERDEPTH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "betterdepth"


# --------------------------------------------------------------------------- type checks


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "a boolean"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, dict):
        return "a table"
    return "a list"


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Check ``value`` against the type of ``default``; ints are accepted for floats."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, list)
    if not ok:
        raise UsageError(f"{where} must be {_type_name(default)}, got {value!r}")
    return value


def _check_values(r: Recipe, where: str) -> None:
    def need(cond: bool, key: str, what: str, value: Any) -> None:
        if not cond:
            raise UsageError(f"{where}: `{key}` must be {what}, got {value!r}")

    t, o, d, v, ob = r.train, r.optim, r.data, r.validation, r.objective
    need(t.batch_size >= 1, "train.batch_size", ">= 1", t.batch_size)
    need(t.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", ">= 1", t.gradient_accumulation_steps)
    need(t.max_steps >= 0, "train.max_steps", ">= 0", t.max_steps)
    need(t.mixed_precision in MIXED_PRECISION, "train.mixed_precision", " | ".join(MIXED_PRECISION), t.mixed_precision)
    need(t.checkpoint_every >= 0, "train.checkpoint_every", ">= 0", t.checkpoint_every)
    need(t.checkpoints_total_limit >= 0, "train.checkpoints_total_limit", ">= 0", t.checkpoints_total_limit)
    need(t.log_every >= 1, "train.log_every", ">= 1", t.log_every)
    need(o.optimizer in OPTIMIZERS, "optim.optimizer", " | ".join(OPTIMIZERS), o.optimizer)
    need(o.lr > 0, "optim.lr", "> 0", o.lr)
    need(len(o.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas),
         "optim.betas", "two numbers in [0, 1)", o.betas)
    need(o.weight_decay >= 0, "optim.weight_decay", ">= 0", o.weight_decay)
    need(o.warmup_steps >= 0, "optim.warmup_steps", ">= 0", o.warmup_steps)
    need(o.schedule in SCHEDULES, "optim.schedule", " | ".join(SCHEDULES), o.schedule)
    need(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]", o.min_lr_ratio)
    need(o.schedule != "exponential" or o.min_lr_ratio > 0, "optim.min_lr_ratio", "> 0 for the exponential schedule",
         o.min_lr_ratio)
    need(o.max_grad_norm >= 0, "optim.max_grad_norm", ">= 0", o.max_grad_norm)
    need(0 < r.ema.decay < 1, "ema.decay", "in (0, 1)", r.ema.decay)
    need(ob.patch_size >= 1, "objective.patch_size", ">= 1", ob.patch_size)
    need(ob.eta >= 0, "objective.eta", ">= 0", ob.eta)
    need(ob.mode in ("diffusion", "e2e"), "objective.mode", "diffusion or e2e", ob.mode)
    need(ob.e2e_loss in ("l1", "mse"), "objective.e2e_loss", "l1 or mse", ob.e2e_loss)
    need(ob.e2e_gradient_weight >= 0, "objective.e2e_gradient_weight", "a number >= 0", ob.e2e_gradient_weight)
    need(ob.e2e_gradient_scales >= 1, "objective.e2e_gradient_scales", "an integer >= 1", ob.e2e_gradient_scales)
    need(ob.e2e_excursion_weight >= 0, "objective.e2e_excursion_weight", "a number >= 0", ob.e2e_excursion_weight)
    need(ob.e2e_excursion_radius >= 0, "objective.e2e_excursion_radius", "an integer >= 0", ob.e2e_excursion_radius)
    need(d.processing_res >= 0, "data.processing_res", ">= 0", d.processing_res)
    need(d.crop == [] or (len(d.crop) == 2 and all(isinstance(c, int) and c >= 1 for c in d.crop)),
         "data.crop", "[] or [height, width] in pixels", d.crop)
    need(d.num_workers >= 0, "data.num_workers", ">= 0", d.num_workers)
    need(r.model.factor >= 1, "model.factor", ">= 1", r.model.factor)
    need(r.model.codec in TINY_CODECS, "model.codec", " | ".join(TINY_CODECS), r.model.codec)
    need(len(r.model.block_out_channels) >= 1 and all(isinstance(c, int) and c >= 1 for c in r.model.block_out_channels),
         "model.block_out_channels", "a list of positive integers", r.model.block_out_channels)
    need(r.model.processing_res >= 0, "model.processing_res", ">= 0", r.model.processing_res)
    need(bool(r.model.init), "model.init", "'tiny', a Stable Diffusion folder/id or a BetterDepth model folder", r.model.init)
    need(bool(r.conditioner.name), "conditioner.name", "a conditioner name", r.conditioner.name)
    need(v.every >= 0, "validation.every", ">= 0", v.every)
    need(v.holdout >= 0, "validation.holdout", ">= 0", v.holdout)
    need(all(isinstance(s, int) and s >= 1 for s in v.steps), "validation.steps", "a list of integers >= 1", v.steps)
    need(v.max_samples >= 1, "validation.max_samples", ">= 1", v.max_samples)
    need(0 < v.min_depth < v.max_depth, "validation.min_depth/max_depth", "0 < min < max", (v.min_depth, v.max_depth))
    for key, specs in (("data", r.train_sources()), ("validation", r.validation_sources())):
        for spec in specs:
            check_source(spec, f"{where}: [{key}]")
    if not r.train_sources():
        raise UsageError(f"{where}: no training data; set [data] synthetic = {{n = ..., size = ...}} or [data] datasets")


def check_source(spec: Any, where: str) -> None:
    """Validate one data spec (see the module docstring)."""
    if not isinstance(spec, dict):
        raise UsageError(f"{where} datasets: each entry must be a table, got {spec!r}")
    kind = spec.get("type")
    if kind not in DATASET_TYPES:
        raise UsageError(f"{where} datasets: `type` must be one of {', '.join(DATASET_TYPES)}, got {kind!r}")
    w = spec.get("weight", 1.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
        raise UsageError(f"{where} {kind}: `weight` must be a number >= 0, got {w!r}")
    if kind == "synthetic":
        for key, lo, default in (("n", 1, None), ("size", 8, None), ("seed", 0, 0), ("workers", 1, 1)):
            val = spec.get(key, default)  # n and size are required
            if isinstance(val, bool) or not isinstance(val, int) or val < lo:
                raise UsageError(f"{where} synthetic: `{key}` must be an integer >= {lo}, got {val!r}")
        if spec.get("kind", "mixed") not in SCENE_KINDS:
            raise UsageError(f"{where} synthetic: `kind` must be one of {', '.join(SCENE_KINDS)}, got {spec['kind']!r}")
        allowed = {"type", "n", "size", "seed", "kind", "weight", "workers"}
    else:
        if not isinstance(spec.get("root"), str) or not spec["root"]:
            raise UsageError(f"{where} {kind}: `root` (the dataset folder) is required")
        allowed = _loader_keys(kind)
    extra = sorted(set(spec) - allowed)
    if extra:
        raise UsageError(f"{where} {kind}: unknown key {extra[0]!r} (valid: {', '.join(sorted(allowed))})")


def _loader_keys(kind: str) -> set[str]:
    """The keys a data spec of ``kind`` takes: ``type``, ``weight`` and its loaders' keyword arguments."""
    import inspect

    from training import datasets as D
    from training import split_datasets as S

    loaders = {"folder": (D.FolderDataset, S.TarFolderDataset), "hypersim": (D.HypersimDataset, S.marigold_hypersim),
               "vkitti2": (D.VirtualKITTI2Dataset, S.marigold_vkitti, S.vkitti2_archive)}[kind]
    keys = {"type", "weight"}
    for loader in loaders:
        params = inspect.signature(loader).parameters.values()
        keys |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return keys - {"self", "transform"}  # the trainer's own


# --------------------------------------------------------------------------- build / override


def recipe_from_dict(data: dict, where: str = "recipe") -> Recipe:
    """Build a :class:`Recipe` from a parsed TOML table, checking keys and types."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a table")
    r = Recipe()
    for key, value in data.items():
        if key in ("name", "output"):
            setattr(r, key, _coerce(value, getattr(r, key), f"{where}: `{key}`"))
            continue
        if key not in _SECTION_CLASSES:
            valid = ", ".join(["name", "output", *(f"[{s}]" for s in _SECTION_CLASSES)])
            raise UsageError(f"{where}: unknown key {key!r} (valid: {valid})")
        if not isinstance(value, dict):
            raise UsageError(f"{where}: `{key}` must be a table [{key}]")
        section = getattr(r, key)
        names = {f.name for f in dataclasses.fields(section)}
        for k, v in value.items():
            if k not in names:
                raise UsageError(f"{where}: unknown key [{key}] {k!r} (valid: {', '.join(sorted(names))})")
            setattr(section, k, _coerce(v, getattr(section, k), f"{where}: `{key}.{k}`"))
    _check_values(r, where)
    return r


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``1e-4``, ``true``, ``[1, 2]``, ``{n = 8}``) or else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: dict[str, Any] | list[str] | None, where: str = "--set") -> dict:
    """Return a copy of the raw recipe table with dotted-key overrides applied.

    ``overrides``: ``{"optim.lr": 1e-4}`` or ``["optim.lr=1e-4", ...]`` (values parsed by :func:`parse_value`).
    """
    out = json.loads(json.dumps(data))
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        for text in overrides or []:
            if "=" not in text:
                raise UsageError(f"{where} {text!r}: expected section.key=value, e.g. optim.lr=1e-4")
            key, value = text.split("=", 1)
            items.append((key.strip(), parse_value(value.strip())))
    for key, value in items:
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in ("name", "output"):
            out[parts[0]] = value
            continue
        if len(parts) != 2 or parts[0] not in _SECTION_CLASSES:
            raise UsageError(
                f"{where} {key!r}: expected section.key with a section of {', '.join(_SECTION_CLASSES)} (or name, output)"
            )
        names = {f.name for f in dataclasses.fields(_SECTION_CLASSES[parts[0]])}
        if parts[1] not in names:
            raise UsageError(f"{where} {key!r}: unknown key [{parts[0]}] {parts[1]!r} (valid: {', '.join(sorted(names))})")
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def read_recipe_toml(path: str | os.PathLike) -> tuple[Path, dict]:
    """A recipe file's path and its TOML table; a missing, unreadable or invalid file is a UsageError."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--recipe {p}: file not found")
    try:
        return p, tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--recipe {p}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--recipe {p}: not valid TOML ({exc})") from None


def load_recipe(path: str | os.PathLike, overrides: dict[str, Any] | list[str] | None = None) -> Recipe:
    """Read a recipe TOML, apply overrides, check it. Errors name the file and the key."""
    p, data = read_recipe_toml(path)
    if overrides:  # a bad value may be the file's or an override's: the message says both were read
        return recipe_from_dict(apply_overrides(data, overrides), where=f"{p} with --set")
    return recipe_from_dict(data, where=str(p))


# --------------------------------------------------------------------------- writing


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_scalar(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_recipe(recipe: Recipe, header: str = "") -> str:
    """The recipe as TOML text that :func:`load_recipe` reads back to an equal recipe."""
    data = recipe.to_dict()
    lines = [f"# {line}" for line in header.splitlines()]
    lines.append(f"name = {_toml_scalar(data.pop('name'))}")
    lines.append(f"output = {_toml_scalar(data.pop('output'))}")
    for section, values in data.items():
        lines.append("")
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {_toml_scalar(v)}")
    return "\n".join(lines) + "\n"


__all__ = [
    "Recipe",
    "ModelSection",
    "ConditionerSection",
    "DataSection",
    "ObjectiveSection",
    "TrainSection",
    "OptimSection",
    "EMASection",
    "ValidationSection",
    "load_recipe",
    "recipe_from_dict",
    "apply_overrides",
    "parse_value",
    "dump_recipe",
    "resolve_cache_dir",
    "check_source",
]
