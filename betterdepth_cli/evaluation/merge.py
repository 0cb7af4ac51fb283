"""Evaluations split over ranks: each rank scores every n-th sample, rank 0 merges the results.

The merged result is the one a single process would give: the rows in the dataset's order, the
means over all of them (per image, NaN images skipped), the seconds per image weighted by samples.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np


def shard_entries(dataset, i: int, n: int) -> None:
    """Keep shard ``i`` of ``n`` (1-based) of a dataset's samples: every n-th from the (i-1)-th, in order
    (those lacking a file included: each is reported by the one rank whose shard holds it)."""
    dataset.candidates = dataset.candidates[i - 1 :: n]
    dataset.entries = [e for e in dataset.candidates if e.problem is None]
    dataset.incomplete = [e.problem for e in dataset.candidates if e.problem]


def mean_scores(rows: list[dict[str, Any]], variants, metrics) -> tuple[dict, dict]:
    """(means, counts) per variant and metric over the rows, NaN rows left out of each metric."""
    means: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for variant in variants:
        vrows = [r for r in rows if r["variant"] == variant]
        means[variant], counts[variant] = {}, {}
        for name in metrics:
            vals = np.array([r[name] for r in vrows], np.float64)
            ok = np.isfinite(vals)
            counts[variant][name] = int(ok.sum())
            means[variant][name] = float(vals[ok].mean()) if ok.any() else math.nan
    return means, counts


def _ordered_rows(results: list) -> list[dict[str, Any]]:
    """Rows of rank r's k-th sample go to place k * n + r: the dataset's order (shards are strided)."""
    n = len(results)
    placed = []
    for r, res in enumerate(results):
        order: dict[str, int] = {}
        for row in res.rows:
            k = order.setdefault(row["id"], len(order))
            placed.append((k * n + r, row))
    placed.sort(key=lambda item: item[0])  # stable: a sample's variants keep their order
    return [row for _, row in placed]


def merge_results(results: list):
    """One :class:`~betterdepth_cli.evaluation.runner.EvalResult` from the ranks' (rank order)."""
    first = results[0]
    rows = _ordered_rows(results)
    means, counts = mean_scores(rows, first.variants, first.config.metrics)
    samples = [len({r["id"] for r in res.rows}) for res in results]
    total = max(sum(samples), 1)
    spi: dict[str, float] = {}
    for res, k in zip(results, samples):
        for stage, v in res.seconds_per_image.items():
            spi[stage] = spi.get(stage, 0.0) + v * k / total
    dataset = dict(first.dataset)
    dataset["samples"] = sum(res.dataset.get("samples", 0) for res in results)
    dataset["incomplete"] = [x for res in results for x in res.dataset.get("incomplete", [])]
    notes = [x for res in results for x in res.notes]
    return replace(first, config=replace(first.config, shard=None), dataset=dataset, rows=rows, means=means,
                   counts=counts, seconds_per_image=spi, wall_seconds=max(res.wall_seconds for res in results),
                   notes=notes)
