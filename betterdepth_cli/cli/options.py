"""Options shared by the commands: ``Annotated`` aliases, device/dtype parsing, TOML config.

Every option that several commands take (``refine``, ``eval``) is defined once
here. Options default to ``None`` so a command can tell "not given" from a
value and merge, in order of precedence: flags > ``--config`` file > defaults
(the model card's for steps, ensemble and resolution).

Only Typer and the standard library are imported at module level; torch is
imported inside :func:`resolve_device` and :func:`torch_dtype`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from betterdepth_cli.core.types import UsageError
from betterdepth_cli.core.settings import parse_dtype, torch_dtype  # noqa: F401 (the CLI's --dtype)

# --------------------------------------------------------------------------- option aliases

ConditionerOpt = Annotated[
    Optional[str],
    typer.Option(
        "--conditioner",
        "-c",
        help="Depth model to refine: a registry name (see `betterdepth info`), hf:<hub id or folder>, "
        "or file:<folder>?kind=disparity|depth for maps made by another tool. Default: the model card's.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Refiner: a BetterDepth model folder or hub id. Default: the embedded model.",
                 show_default=False),
]
NoRefineOpt = Annotated[
    Optional[bool],
    typer.Option("--no-refine", help="The conditioner alone, no diffusion refinement (for comparison).", show_default=False),
]
StepsOpt = Annotated[
    Optional[int], typer.Option("--steps", help="Denoising steps. Default: the model card's.", show_default=False)
]
EnsembleOpt = Annotated[
    Optional[int],
    typer.Option("--ensemble", help="Ensemble members per image (>= 2 gives an uncertainty map). "
                 "Default: the model card's.", show_default=False),
]
ReductionOpt = Annotated[
    Optional[str], typer.Option("--reduction", help="How ensemble members are combined: mean or median.", show_default=False)
]
ProcessingResOpt = Annotated[
    Optional[int],
    typer.Option("--processing-res", help="Longest side the refiner works at (0 = native). "
                 "Outputs always have the input size. Default: the model card's.", show_default=False),
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0).", show_default=False)]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps (default auto).", show_default=False)
]
DtypeOpt = Annotated[
    Optional[str], typer.Option("--dtype", help="fp32, fp16 or bf16 (default fp32; fp16 needs a GPU).", show_default=False)
]
BatchSizeOpt = Annotated[
    Optional[int], typer.Option("--batch-size", "-b", help="Images per model call (default 1).", show_default=False)
]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="TOML file with option values (keys as the long flag names); flags override it.",
                 show_default=False),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr: no progress, no summary.")]
MaxPixelsOpt = Annotated[
    Optional[int],
    typer.Option("--max-pixels", help="Refuse images whose header claims more pixels (default 150000000; decompression bombs).",
                 show_default=False, min=1),
]


def apply_pixel_limit(max_pixels: int | None) -> None:
    """Make ``--max-pixels`` the limit of every image read in this process (and its children)."""
    if max_pixels:
        import os

        from betterdepth_cli.io.images import PIXEL_LIMIT_ENV

        os.environ[PIXEL_LIMIT_ENV] = str(int(max_pixels))

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


# --------------------------------------------------------------------------- device / dtype


def parse_device(text: str | None) -> str:
    """Check the syntax of ``--device`` (no torch needed): returns it lower-cased.

    >>> parse_device("CUDA:1")
    'cuda:1'
    """
    value = (text or "auto").strip().lower()
    match = _DEVICE_RE.match(value)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UsageError(f"`--device` must be {DEVICE_HELP}, got {text!r}")
    return value


def resolve_device(text: str | None) -> str:
    """``--device`` -> a concrete torch device string that exists on this machine.

    ``auto`` picks ``cuda`` when available, then ``mps``, else ``cpu``. Asking for
    a device that is not there is a usage error naming what is available.
    """
    import torch

    value = parse_device(text)
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if has_mps else "cpu"
    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"`--device {value}`: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        n = torch.cuda.device_count()
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= n:
            raise UsageError(f"`--device {value}`: only {n} CUDA device(s) here (cuda:0..cuda:{n - 1})")
        return value
    if value == "mps" and not has_mps:
        raise UsageError("`--device mps`: Apple MPS is not available here; use --device cpu")
    return value


def check_dtype_for_device(dtype: str, device: str) -> None:
    """fp16 on the CPU is refused (many kernels are missing or very slow there)."""
    if dtype == "fp16" and device == "cpu":
        raise UsageError("`--dtype fp16` needs a GPU (cuda or mps); on the CPU use fp32 (or bf16)")


# --------------------------------------------------------------------------- lists


def split_list(value: str | list | tuple | None, name: str) -> list[str]:
    """``"png16,exr"`` or ``["png16", "exr"]`` -> ``["png16", "exr"]`` (blanks dropped)."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise UsageError(f"`{name}` must be a comma-separated list of names, got {value!r}")
        item = item.strip()
        if item:
            out.append(item)
    return out


# --------------------------------------------------------------------------- TOML config


def load_config(path: str | Path, schema: dict[str, type | tuple], section: str | None = None) -> dict[str, Any]:
    """Read a TOML (or JSON) config whose keys are long flag names (``processing-res`` or ``processing_res``).

    ``schema`` maps the canonical key (underscored) to the accepted Python
    type(s). Keys may sit at the top level or in a ``[section]`` table (the
    table wins). Unknown keys and wrong types are usage errors naming the file
    and the key; other tables (``[eval]``, ``[train]``) are ignored, so one file
    can serve several commands. Returns ``{canonical_key: value}``.
    """
    import tomllib

    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"--config {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: cannot read ({exc})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--config {path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a table of options")
    merged = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if section and isinstance(data.get(section), dict):
        merged.update(data[section])
    out: dict[str, Any] = {}
    for key, value in merged.items():
        canon = key.replace("-", "_")
        if canon not in schema:
            valid = ", ".join(sorted(k.replace("_", "-") for k in schema))
            raise UsageError(f"--config {path}: unknown key {key!r} (valid keys: {valid})")
        types = schema[canon] if isinstance(schema[canon], tuple) else (schema[canon],)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            names = " or ".join("list" if t is list else t.__name__ for t in types)
            raise UsageError(f"--config {path}: `{key}` must be {names}, got {value!r}")
        out[canon] = value
    return out


def merge_options(flags: dict[str, Any], config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Flags (not ``None``) override the config, which overrides the defaults.

    >>> merge_options({"steps": None, "seed": 3}, {"steps": 4, "seed": 1}, {"steps": 2, "seed": 0, "ensemble": 1})
    {'steps': 4, 'seed': 3, 'ensemble': 1}
    """
    out = dict(defaults)
    for source in (config, flags):
        for key, value in source.items():
            if value is not None:
                out[key] = value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(values: dict[str, Any], header: str = "", section: str | None = None) -> str:
    """A flat TOML document (keys with dashes, ``None`` values left out), readable by :func:`load_config`."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    if section:
        lines.append(f"[{section}]")
    for key, value in values.items():
        if value is None:
            continue
        lines.append(f"{key.replace('_', '-')} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
