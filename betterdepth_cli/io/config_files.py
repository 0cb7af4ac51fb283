"""Job files: TOML (or JSON) whose keys are long flag names, read, merged under the flags, written back
(``betterdepth-run.toml`` records how a run was made; ``--config`` reruns it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from betterdepth_cli.core.types import UsageError


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
