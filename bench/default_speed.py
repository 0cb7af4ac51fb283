"""Seconds per 640 x 480 image for the embedded default model at its default settings.

    python bench/default_speed.py [--repeats 5] [--threads 2]

Times `refine_batch` (the card's conditioner, steps, ensemble and processing
resolution) on one 640 x 480 image after a warm-up, with the same function the
model card uses (`training.model_card.time_default_model`); prints the stages
and, last, the median seconds per image (target: under 1 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 avoids stalls on a busy machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from betterdepth_cli.core.refiner import load_model
    from training.model_card import time_default_model

    seconds, stages = time_default_model(args.repeats)
    for k, v in stages.items():
        print(f"{k:12s} {v * 1000:8.1f} ms")
    print(f"defaults: {load_model().defaults}")
    print(f"seconds per 640x480 image: {seconds:.3f}")


if __name__ == "__main__":
    main()
