"""Seconds per 640 x 480 image for the embedded default model at its default settings.

    python bench/default_speed.py [--repeats 5]

Times `refine_batch` (builtin conditioner + default refiner, the card's steps,
ensemble and processing resolution) on one 640 x 480 image after a warm-up,
prints the stages and, last, the median seconds per image (target: under 1 s on
2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 avoids stalls on a busy machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from betterdepth_cli.core.conditioners import get_conditioner
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.refiner import load_model

    model = load_model()
    cond = get_conditioner(model.defaults["conditioner"])
    x = torch.rand(1, 3, 480, 640, generator=torch.Generator().manual_seed(0))
    run = lambda: refine_batch(x, conditioner=cond, model=model, generator=torch.Generator().manual_seed(0))
    run()
    times, stages = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = run()
        times.append(time.perf_counter() - t0)
        stages.append(res.timings)
    for k in stages[0]:
        print(f"{k:12s} {statistics.median(s[k] for s in stages) * 1000:8.1f} ms")
    print(f"defaults: {model.defaults}")
    print(f"seconds per 640x480 image: {statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
