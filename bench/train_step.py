"""Seconds per training step of the tiny recipe, with and without the prediction cache (issue 4).

Runs ``training/recipes/tiny-cpu.toml`` (64 synthetic 64 x 64 scenes, batch 4,
tiny UNet on the space-to-depth codec) for ``--steps`` optimizer steps twice:

- cached: the conditioner's predictions were computed once beforehand (the
  steady state from the second epoch on: every step reads them from disk);
- uncached: ``data.cache_predictions = false``, the conditioner runs on every
  sample of every step (what a loop without the cache does every epoch).

Per mode it reports seconds per step as the mean of the fastest quarter of
the steps (the machine is shared: the quiet steps show the code, the median
shows the load) and the median, the time spent in the UNet forward and
backward, and the share of the step spent outside them (data loading,
conditioner or cache, crops, normalisation, alignment, masks, codec, optimizer).

    python bench/train_step.py [--steps 30] [--repeats 2] [--conditioner builtin|hf:DIR] [--threads 2]

Without ``--conditioner``: the embedded ``builtin`` conditioner when it is
installed, else a tiny random DPT (tests' config at 64 px) saved to a temp folder.
Each mode runs ``--repeats`` times, interleaved, and keeps its fastest run.
In the cached mode the conditioner count is the one-off prefill (0 once the
cache folder is full). The last line is the cached / uncached ratio of the
fastest-quarter step times.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _default_conditioner(tmp: Path) -> str:
    from betterdepth_cli.core.conditioners import builtin_conditioner_path

    if (builtin_conditioner_path() / "config.json").exists():
        return "builtin"
    from tiny_models import save_dpt

    return f"hf:{save_dpt(tmp / 'dpt', image_size=64)}"


def run(conditioner: str, cached: bool, steps: int, cache_dir: Path, out: Path) -> dict:
    from training.config import load_recipe
    from training.trainer import Trainer

    recipe = load_recipe(
        ROOT / "training" / "recipes" / "tiny-cpu.toml",
        {
            "conditioner.name": conditioner,
            "data.cache_dir": str(cache_dir),
            "data.cache_predictions": cached,
            "train.max_steps": steps,
            "train.checkpoint_every": 0,
            "validation.every": 0,
            "validation.synthetic": {},
        },
    )
    trainer = Trainer(recipe, out, log=lambda m: None)
    try:
        if cached:  # fill the cache first: the steady state of every epoch after the first
            ds = trainer.train_sources[0][0]
            trainer.pred_cache.predict([ds[i] for i in range(len(ds))])
        t0 = time.perf_counter()
        result = trainer.run()
        wall = time.perf_counter() - t0
    finally:
        trainer.close()
    timings = result.timings[2:] or result.timings  # skip the first steps (allocator warm-up)
    totals = sorted(t["total"] for t in timings)
    quiet = totals[: max(1, len(totals) // 4)]  # the fastest quarter: the least disturbed by other load
    quiet_steps = sorted(timings, key=lambda t: t["total"])[: len(quiet)]
    return {
        "median": statistics.median(totals),
        "quiet": statistics.fmean(quiet),
        "unet": statistics.fmean(t.get("unet", 0.0) for t in quiet_steps),
        "data": statistics.fmean(t.get("data", 0.0) for t in quiet_steps),
        "outside": 1.0 - sum(t.get("unet", 0.0) for t in quiet_steps) / sum(t["total"] for t in quiet_steps),
        "wall": wall,
        "conditioner_calls": result.conditioner_calls,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--conditioner", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode; the fastest median is kept")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    conditioner = args.conditioner or _default_conditioner(tmp)
    cache_dir = tmp / "cache"
    print(f"tiny-cpu recipe, {args.steps} steps, conditioner {conditioner}, {args.threads} threads", flush=True)
    rows: dict[str, dict] = {}
    for rep in range(args.repeats):  # interleaved, so that load from other processes hits both alike
        for name, cached in (("cached", True), ("uncached", False)):
            r = run(conditioner, cached, args.steps, cache_dir, tmp / f"run-{name}-{rep}")
            if name not in rows or r["quiet"] < rows[name]["quiet"]:
                rows[name] = r
    for name, r in rows.items():
        print(
            f"{name:9s} {r['quiet']:.3f} s/step (fastest quarter; median {r['median']:.3f}) | UNet fwd+bwd "
            f"{r['unet']:.3f} s | data+conditioner {r['data']:.3f} s | outside the UNet fwd+bwd "
            f"{100 * r['outside']:.0f}% of the step | conditioner ran on {r['conditioner_calls']} samples in this run",
            flush=True,
        )
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"cached/uncached step time ratio: {rows['cached']['quiet'] / rows['uncached']['quiet']:.3f}")


if __name__ == "__main__":
    main()
