"""``betterdepth info``: version, torch and devices, the conditioner registry, the default model."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from betterdepth_cli.cli.app import app, handle_errors


def gather() -> dict:
    """Everything ``info`` shows, as plain data."""
    import platform

    import torch

    from betterdepth_cli import __version__
    from betterdepth_cli.jobs import read_card
    from betterdepth_cli.core.conditioners import builtin_conditioner_path
    from betterdepth_cli.conditioner_registry import list_conditioners
    from betterdepth_cli.core.refiner import default_model_path

    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda.append({"device": f"cuda:{i}", "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    auto = "cuda" if cuda else ("mps" if mps else "cpu")
    card = read_card(None)
    model: dict = {"path": str(default_model_path()), "present": card is not None}
    if card is not None:
        defaults = card.get("defaults", {}) if isinstance(card.get("defaults"), dict) else {}
        trained = card.get("trained_with", {}) if isinstance(card.get("trained_with"), dict) else {}
        model.update({
            "version": card.get("version"), "autoencoder": card.get("autoencoder"),
            "trained_with_conditioner": trained.get("conditioner"), "defaults": defaults,
            "description": card.get("description") or card.get("summary"), "limits": card.get("limits"),
        })  # fmt: skip
    return {
        "version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "devices": {"auto": auto, "cpu": True, "cuda": cuda, "mps": mps},
        "conditioners": [
            {"name": c.name, "target": c.target, "description": c.description} for c in list_conditioners()
        ],
        "builtin_conditioner": {"path": str(builtin_conditioner_path()),
                                "present": (builtin_conditioner_path() / "config.json").is_file()},  # fmt: skip
        "default_model": model,
    }


def _text(info: dict) -> str:
    lines = [f"betterdepth {info['version']} (python {info['python']}, torch {info['torch']})", ""]
    dev = info["devices"]
    lines.append(f"devices: auto -> {dev['auto']}")
    lines.append("  cpu: yes")
    if dev["cuda"]:
        for d in dev["cuda"]:
            lines.append(f"  {d['device']}: {d['name']} ({d['memory_gib']} GiB)")
    else:
        lines.append("  cuda: not available")
    lines.append(f"  mps: {'yes' if dev['mps'] else 'not available'}")
    lines.append("")
    lines.append("conditioners (--conditioner NAME, or hf:<id or folder>, or file:<folder> for maps other tools "
                 "wrote, see README):")
    width = max(len(c["name"]) for c in info["conditioners"])
    target_width = max(len(c["target"]) for c in info["conditioners"] if c["name"] != "builtin")
    for c in info["conditioners"]:
        lines.append(f"  {c['name']:<{width}}  {c['target']:<{target_width}}  {c['description']}".rstrip())
    b = info["builtin_conditioner"]
    lines.append(f"  (builtin: {'installed' if b['present'] else 'MISSING'} at {b['path']})")
    lines.append("")
    m = info["default_model"]
    if not m["present"]:
        lines.append(f"default model: MISSING at {m['path']} (pass --model PATH to a BetterDepth model folder)")
    else:
        lines.append(f"default model: {m['path']}")
        for key in ("version", "autoencoder", "trained_with_conditioner", "description", "limits"):
            if m.get(key):
                lines.append(f"  {key.replace('_', ' ')}: {m[key]}")
        if m.get("defaults"):
            lines.append("  defaults: " + ", ".join(f"{k} {v}" for k, v in m["defaults"].items()))
    return "\n".join(lines)


@app.command()
@handle_errors
def info(
    as_json: Annotated[bool, typer.Option("--json", help="Print the information as JSON.")] = False,
) -> None:
    """Show the version, torch and the devices it sees, the conditioner names and the default model."""
    data = gather()
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        typer.echo(_text(data))
