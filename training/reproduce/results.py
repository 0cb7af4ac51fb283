"""Reading the results JSON: evaluation lookups, per-image paired differences and number formats."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from training.reproduce.plan import DATASETS, METRICS

HIGHER_IS_BETTER = frozenset({"delta1", "ep", "er"})
PERCENT = frozenset({"abs_rel", "delta1", "ep", "er"})


def fmt_metric(metric: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    v = float(value)
    return f"{100 * v:.2f}" if metric in PERCENT else f"{v:.2f}"


def fmt_seconds(value: Any) -> str:
    if value is None:
        return "–"
    v = float(value)
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def index_evals(evals: list[dict]) -> dict[tuple, dict]:
    return {(e["run"], e["conditioner"], e["dataset"], e["steps"], e["ensemble"], e["reduction"]): e for e in evals}


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def metric_cells(metrics: dict | None) -> list[str]:
    return [fmt_metric(m, (metrics or {}).get(m)) for m in METRICS]


def exp_datasets(exp: dict) -> list[str]:
    seen = []
    for e in exp.get("evals", []):
        if e["dataset"] not in seen:
            seen.append(e["dataset"])
    return [d for d in DATASETS if d in seen]


def table_setting(budget: dict) -> tuple[int, int]:
    """The tables' inference setting: (steps, ensemble members)."""
    return int(budget["eval_steps"]), int(budget["eval_ensemble"])


def find_eval(exp: dict, run: str, cond: str, d: str, steps: int, ens: int, red: str = "mean") -> dict | None:
    return index_evals(exp["evals"]).get((run, cond, d, steps, ens, red))


def edge_f1(m: dict | None) -> float | None:
    """Harmonic mean of edge precision EP and recall ER (0 when the map has no edges)."""
    if not m or m.get("ep") is None or m.get("er") is None:
        return None
    ep, er = float(m["ep"]), float(m["er"])
    return 0.0 if ep + er <= 0 else 2 * ep * er / (ep + er)


def paired_diff(a: dict, b: dict, metric: str, va: str = "refined", vb: str = "refined") -> dict | None:
    """Per-image paired difference ``b[vb] - a[va]`` of ``metric`` over the images both evaluations scored.

    Returns ``{"mean", "se", "n", "better"}`` (``better``: images where b is better) or None
    without per-image rows or with fewer than two common images.
    """
    pa, pb = a.get("per_image"), b.get("per_image")
    if not pa or not pb or va not in pa or vb not in pb:
        return None
    xa = dict(zip(pa["ids"], pa[va][metric]))
    xb = dict(zip(pb["ids"], pb[vb][metric]))
    common = [i for i in pa["ids"] if i in xb and xa[i] is not None and xb[i] is not None]
    if len(common) < 2:
        return None
    d = np.array([xb[i] - xa[i] for i in common], np.float64)
    better = int(np.sum(d > 0)) if metric in HIGHER_IS_BETTER else int(np.sum(d < 0))
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d))), "n": len(d), "better": better}


def fmt_paired(p: dict | None, metric: str = "abs_rel") -> str:
    """' (Δ -1.23 ± 0.45 pts, 12/16 images better)' in the report's units."""
    if p is None:
        return ""
    k = 100.0 if metric in PERCENT else 1.0
    unit = " pts" if metric in PERCENT else " px"
    return f" (Δ {k * p['mean']:+.2f} ± {k * p['se']:.2f}{unit}, {p['better']}/{p['n']} images better)"


def fmt_pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}"
