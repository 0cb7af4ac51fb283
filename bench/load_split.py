"""Seconds to load a conditioner training set into memory, one decoding thread vs several.

``training.conditioner.load_split`` reads every scene of a generic folder
(PNG/JPEG images, NPY or 16-bit PNG ground truth) before training starts. This
times it with ``--workers 1`` and with ``--threads`` decoding threads, each
``--repeats`` times, interleaved, and keeps each mode's fastest run (the
first pass warms the file cache for both). The last line is the ratio
one thread / N threads.

    python bench/load_split.py data/synth-val [--threads 0] [--repeats 3]

``--threads 0`` means load_split's default (one per core, at most 8).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="a generic RGB-D folder (e.g. betterdepth synth output)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from training.conditioner import default_load_workers, load_split

    threads = args.threads or default_load_workers()
    load_split(args.root, workers=threads)  # file cache warm-up
    best = {1: float("inf"), threads: float("inf")}
    for _ in range(args.repeats):
        for w in best:
            t0 = time.perf_counter()
            rgb, _, _ = load_split(args.root, workers=w)
            best[w] = min(best[w], time.perf_counter() - t0)
    n = len(rgb)
    print(f"{n} scenes of {tuple(rgb.shape[-2:])} from {args.root}")
    for w, t in best.items():
        print(f"{w} thread(s): {t:.3f} s ({1000 * t / n:.2f} ms per scene)")
    print(f"speed-up with {threads} threads over 1: {best[1] / best[threads]:.2f}")


if __name__ == "__main__":
    main()
