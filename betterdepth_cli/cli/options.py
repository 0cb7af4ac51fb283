"""Options shared by the commands: ``Annotated`` aliases, device/dtype parsing, TOML config.

Every option that several commands take (``refine``, ``eval``) is defined once
here. Options default to ``None`` so a command can tell "not given" from a
value and merge, in order of precedence: flags > ``--config`` file > defaults
(the model card's for steps, ensemble and resolution).

Only Typer and the standard library are imported at module level; torch is
imported inside :func:`resolve_device` and :func:`torch_dtype`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from betterdepth_cli.core.types import UsageError
from betterdepth_cli.io.config_files import dump_toml, load_config, merge_options  # noqa: F401 (--config)
from betterdepth_cli.core.devices import (  # noqa: F401 (the CLI's --device and --dtype)
    check_dtype_for_device,
    parse_device,
    parse_dtype,
    resolve_device,
    torch_dtype,
)

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
    if max_pixels is not None and int(max_pixels) <= 0:  # from a config file (the flag has min=1)
        raise UsageError(f"`max-pixels` must be a positive number of pixels, got {max_pixels}")
    if max_pixels:
        import os

        from betterdepth_cli.io.images import PIXEL_LIMIT_ENV

        os.environ[PIXEL_LIMIT_ENV] = str(int(max_pixels))

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


def config_relative_paths(config: dict, config_file: Path, paths: tuple[str, ...] = ()) -> dict:
    """A ``--config`` file's relative paths made relative to the file's folder: the keys ``paths``
    (folders and files, whether they exist yet or not), a ``model`` folder and the folder of a
    ``file:`` or ``hf:`` ``conditioner`` when one exists there (a hub id or a built-in name is left
    as it is)."""
    import os

    base = config_file.expanduser().resolve().parent
    out = dict(config)
    for key in paths:
        if isinstance(out.get(key), str) and not Path(out[key]).expanduser().is_absolute():
            out[key] = os.path.normpath(base / out[key])
    model = out.get("model")
    if isinstance(model, str) and model not in ("default", "guided") and (base / model).is_dir() \
            and not Path(model).expanduser().is_absolute():
        out["model"] = os.path.normpath(base / model)
    cond = out.get("conditioner")
    if isinstance(cond, str) and cond.startswith(("file:", "hf:")):
        scheme, _, rest = cond.partition(":")
        folder, sep, query = rest.partition("?")
        if folder and not Path(folder).expanduser().is_absolute() and (base / folder).is_dir():
            out["conditioner"] = f"{scheme}:{os.path.normpath(base / folder)}{sep}{query}"
    return out
