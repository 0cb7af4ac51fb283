"""The compact records the reproduction keeps: a finished training run, one evaluation."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from betterdepth_cli.evaluation.runner import jsonable
from training.reproduce.plan import METRICS, EvalSpec, RunSpec


def run_summary(run_dir: Path, run: RunSpec) -> dict[str, Any]:
    """What a finished run's ``metrics.jsonl`` says: final loss, kept share of latent cells, seconds."""
    rows = []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("type") == "train":
                    rows.append(rec)
    tail = rows[-max(1, len(rows) // 5):] if rows else []
    card_path = run_dir / "model" / "betterdepth.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return {
        "name": run.name, **run.flags(), "train_size": run.train_size, "steps": run.steps, "seed": run.seed,
        "logged_steps": len(rows),
        "train_seconds": round(sum(r.get("seconds", 0.0) for r in rows), 1),
        "seconds_per_step": round(float(np.median([r["seconds"] for r in rows])), 4) if rows else None,
        "final_loss": float(np.mean([r["loss"] for r in tail])) if tail else None,
        "kept": float(np.mean([r.get("kept", 1.0) for r in rows])) if rows else None,
        "conditioner": (card.get("trained_with") or {}).get("conditioner"),
        "model": str(run_dir / "model"),
    }


def summarize_eval(result, spec: EvalSpec) -> dict[str, Any]:
    """The compact record of one evaluation (an ``EvalResult``) kept in the experiment JSON."""
    data = result.to_json()
    spi = data["seconds_per_image"]
    per_image: dict[str, Any] = {"ids": []}  # one row per sample and variant, samples in order
    for row in result.rows:
        if row["id"] not in per_image["ids"]:
            per_image["ids"].append(row["id"])
        v = per_image.setdefault(row["variant"], {m: [] for m in METRICS})
        for m in METRICS:
            v[m].append(row.get(m))
    refine_s = sum(spi.get(k, 0.0) or 0.0 for k in ("encode", "sample", "decode"))
    return {
        **asdict(spec), "key": spec.key,
        "samples": data["samples"],
        "metrics": data["metrics"],  # {"conditioner": {...}, "refined": {...}}
        "counts": data["counts"],
        "seconds_per_image": {"conditioner": spi.get("conditioner"), "refiner": refine_s,
                              "refined_total": (spi.get("conditioner") or 0.0) + refine_s,
                              "stages": spi},
        "settings": data["settings"],
        "conditioner_info": data["conditioner"],
        "wall_seconds": data["wall_seconds"],
        "per_image": jsonable(per_image),  # {"ids", "conditioner": {metric: [...]}, "refined": {...}}
    }
