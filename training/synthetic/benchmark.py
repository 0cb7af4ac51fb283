"""The generator's cost per scene (``python -m training.synthetic [n] [size]``)."""

from __future__ import annotations

import time

from training.synthetic.scenes import render_scene


def benchmark(n: int = 20, size: int = 256, kind: str = "mixed", nthreads: int = 1) -> dict:
    """Per-scene cost (build + render) over seeds 0..n-1: {"wall_ms", "cpu_ms", stage means}."""
    render_scene(0, size, kind, nthreads=nthreads)  # warm-up (imports, noise texture)
    stages: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(n):
        for k, v in render_scene(s, size, kind, nthreads=nthreads).meta["timings_ms"].items():
            stages[k] = stages.get(k, 0.0) + v / n
    return {"wall_ms": (time.perf_counter() - t0) / n * 1000, "cpu_ms": (time.process_time() - c0) / n * 1000,
            **{k: round(v, 1) for k, v in stages.items()}}
