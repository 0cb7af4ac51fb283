"""The plug-and-play experiment's DPT conditioner, trained by ``training.conditioner.train``.

training/recipes/reproduce-dpt-conditioner.toml describes it (``[model] arch = "dpt"``, the
class of Intel/dpt-large, and the indoor scenes it learns from); :func:`conditioner_recipe`
points that recipe at the rendered scenes, and :func:`train_dpt_conditioner` trains it once
per output folder and keeps a ``summary.json`` beside the model.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

LOSS_WINDOW = 50  # the summary's final loss: mean over this many last steps


def conditioner_recipe(recipe: dict, train_root: Path, val_root: Path | None) -> dict:
    """The reproduce recipe as a ``training.conditioner`` recipe: its scenes, the held-out
    scenes evaluated once at the end, one checkpoint (the last step)."""
    steps = int(recipe["train"]["steps"])
    return {
        **recipe,
        "data": {**recipe["data"], "train": str(train_root), "val": "" if val_root is None else str(val_root)},
        "train": {**recipe["train"], "checkpoint_every": steps},
    }


def final_val(metrics_path: Path) -> dict | None:
    """The last validation record ``training.conditioner.train`` wrote to ``metrics.jsonl``."""
    val = None
    if metrics_path.exists():
        for line in metrics_path.read_text().splitlines():
            rec = json.loads(line) if line.strip() else {}
            if "val" in rec:
                val = rec["val"]
    return val


def parameter_millions(model_dir: Path) -> float:
    """Parameters of the saved model, in millions (from its safetensors header)."""
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        n = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    return round(n / 1e6, 3)


def train_dpt_conditioner(recipe: dict, train_root: Path, val_root: Path | None, output: Path,
                          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the plug-and-play DPT with ``training.conditioner``'s SSI disparity loss; the model is ``output/final``.

    Skips training when ``output/final/config.json`` and ``output/summary.json`` exist (the
    summary is read back); otherwise trains from scratch. Returns ``{"path", "architecture",
    "steps", "params_m", "seconds", "final_loss", "val_synthetic_mixed", "data"}``.
    """
    from training.conditioner import train

    final = output / "final"
    summary_path = output / "summary.json"
    if (final / "config.json").exists() and summary_path.exists():
        return json.loads(summary_path.read_text())
    for stale in ("checkpoint.pt", "metrics.jsonl", "summary.json"):
        (output / stale).unlink(missing_ok=True)
    shutil.rmtree(final, ignore_errors=True)
    losses: list[float] = []
    t0 = time.perf_counter()
    train(conditioner_recipe(recipe, train_root, val_root), output, log=lambda m: log(f"DPT conditioner: {m}"),
          on_step=lambda _step, loss: losses.append(loss))
    dc = recipe["data"]
    summary = {"path": str(final), "architecture": "DPTForDepthEstimation", "steps": int(recipe["train"]["steps"]),
               "params_m": parameter_millions(final), "seconds": round(time.perf_counter() - t0, 1),
               "final_loss": float(np.mean(losses[-LOSS_WINDOW:])), "val_synthetic_mixed": final_val(
                   output / "metrics.jsonl"),
               "data": {k: dc[k] for k in ("kind", "scenes", "seed0", "size") if k in dc}}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
