"""Checkpoint folders of a training run and what a resumed run may change."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


from betterdepth_cli.core.types import UsageError
from training.config import Recipe

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"

#: Recipe keys that may change between a checkpoint and a resumed run.
RESUME_MUTABLE = (
    "name", "output", "train.max_steps", "train.log_every", "train.checkpoint_every",
    "train.checkpoints_total_limit", "data.num_workers", "data.cache_dir", "data.cache_predictions",
    "data.cache_latents", "conditioner.device", "model.max_processing_res", "model.residual_smoothing",
    "model.layout_lowpass", "model.edge_gate", "model.keep_sharp", "model.cascade", "model.ensemble",
)



def list_checkpoints(output: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, folder), oldest first."""
    root = Path(output) / CHECKPOINTS
    out = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).exists():
                try:
                    out.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(out)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k in ("model", "conditioner", "data", "objective", "train", "optim", "ema", "validation"):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def check_resume_compatible(saved: dict, recipe: Recipe, where: Path) -> None:
    a, b = _flat(saved), _flat(recipe.to_dict())
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RESUME_MUTABLE
            and not k.startswith("validation.")]
    if diff:
        k = diff[0]
        raise UsageError(
            f"{where} was trained with {k} = {a.get(k)!r}, this run has {b.get(k)!r} "
            f"({len(diff)} setting(s) differ): it is another run; use the same recipe to resume it, or another --output"
        )
