"""`betterdepth eval` speed on the real samples (issue 5): loading, inference, scoring.

Runs the evaluation runner (what ``betterdepth eval`` calls after start-up) on
the real NYUv2 (5 images, 640x480) and Middlebury 2005 (6 scenes, ~695x555)
samples of ``$BETTERDEPTH_REAL_DATA`` (default ``<repo>/../shared/data/real``),
with the embedded default refiner and conditioner when the package ships them,
else a tiny random refiner (``BetterDepthModel.tiny(seed=0)``) over a tiny DPT
conditioner (64x64 input) built from configs. A one-image warm-up run is
discarded. Seconds per sample are split into

- load: reading and decoding the RGB and the ground truth,
- inference: conditioner + encode + sample + decode (the pipeline's timings),
- score: alignment and all 11 metrics (AbsRel ... delta3, DBE_comp/acc, EP/ER),

twice in one run: scoring inline (``score_workers=0``: the loop waits for all
of it) and on the runner's scoring thread (scoring overlaps the next samples'
loading and inference, and only the time the loop waits for it,
``score_wait``, adds to the wall clock). The two modes alternate ``--repeat``
times (default 3) and the figures are means over all passes: inference time on
a shared machine swings by 20-30 % from one pass to the next.

    python bench/eval_speed.py [--compare] [--processing-res N] [--device cpu] [--repeat N]

Prints a line per mode and dataset, the scoring CPU time and its share of the
inline total, the wall time per sample of both modes, the share of scoring in
the wall clock with the scoring thread and, last, that share in the mode
``betterdepth eval`` picks by default here (the target: under 10 %).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tiny_models


def real_data() -> Path:
    env = os.environ.get("BETTERDEPTH_REAL_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "real"


def models(tmp: Path) -> tuple[str | None, str, str]:
    """(model spec, conditioner spec, description): the shipped defaults, else tiny ones."""
    from betterdepth_cli.core.conditioners import builtin_conditioner_path
    from betterdepth_cli.core.refiner import CARD_FILE, BetterDepthModel, default_model_path

    if (default_model_path() / CARD_FILE).exists() and (builtin_conditioner_path() / "config.json").exists():
        return None, "builtin", "embedded default refiner + builtin conditioner"
    from tiny_models import save_dpt

    save_dpt(tmp / "dpt")  # the tests' tiny DPT (64 x 64 processor), seed 0
    BetterDepthModel.tiny(seed=0).save(tmp / "model")
    return str(tmp / "model"), f"hf:{tmp / 'dpt'}", "tiny random refiner (BetterDepthModel.tiny) + tiny DPT (64x64)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", action="store_true", help="score the conditioner and the refined output")
    ap.add_argument("--processing-res", type=int, default=None, help="refiner resolution (default: the model card's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3, help="passes per mode over the samples, alternating (default 3)")
    args = ap.parse_args()

    import torch

    from betterdepth_cli.evaluation.runner import EvalConfig, run_evaluation

    root = real_data()
    sets = [("nyuv2", root / "nyuv2"), ("middlebury", root / "middlebury2005")]
    sets = [(n, p) for n, p in sets if p.is_dir()]
    if not sets:
        sys.exit(f"no real samples under {root} (set BETTERDEPTH_REAL_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        model, cond, what = models(Path(tmp))
        print(f"models: {what}; torch threads {torch.get_num_threads()}; device {args.device}")

        def config(name: str, path: Path, limit: int | None, workers: int) -> EvalConfig:
            return EvalConfig(dataset=name, data_root=str(path), limit=limit, conditioner=cond, model=model,
                              compare=args.compare, processing_res=args.processing_res, device=args.device,
                              score_workers=workers)

        run_evaluation(config(*sets[0], limit=1, workers=0))  # warm-up, discarded
        modes = ((0, "inline"), (1, "scoring thread"))
        keys = ("load", "inference", "score", "score_wait", "wall")
        totals = {mode: dict.fromkeys(keys, 0.0) for _, mode in modes}
        counts = dict.fromkeys(totals, 0)
        for _ in range(max(1, args.repeat)):
            for (workers, mode), (name, path) in itertools.product(modes, sets):
                r = run_evaluation(config(name, path, None, workers))
                spi = r.seconds_per_image
                n = r.to_json()["samples"]
                inference = sum(spi[k] for k in ("conditioner", "encode", "sample", "decode"))
                for k, v in zip(keys, (spi["load"], inference, spi["score"], spi["score_wait"], spi["total"])):
                    totals[mode][k] += v * n
                counts[mode] += n
                print(f"{mode:14s} {name:10s} {n} samples, processing_res {r.settings.get('processing_res')}: "
                      f"load {spi['load']:.3f} s  inference {inference:.3f} s  score {spi['score']:.3f} s "
                      f"(waited {spi['score_wait']:.3f} s)  total {spi['total']:.3f} s per sample")
        report = {mode: {k: v / counts[mode] for k, v in t.items()} for mode, t in totals.items()}
        inline, threaded = report["inline"], report["scoring thread"]
        print(f"scoring CPU time: {1000 * inline['score']:.1f} ms per sample inline, {1000 * threaded['score']:.1f} ms "
              f"on the thread; share of the inline total: {100 * inline['score'] / inline['wall']:.1f} %")
        print(f"wall per sample: inline {inline['wall']:.3f} s, with the scoring thread {threaded['wall']:.3f} s "
              f"(ratio {threaded['wall'] / inline['wall']:.3f})")
        from betterdepth_cli.evaluation.runner import default_score_workers

        auto = default_score_workers(args.device)
        print(f"`betterdepth eval` here would default to: {'the scoring thread' if auto else 'inline scoring'} "
              f"(torch threads {torch.get_num_threads()}, {os.cpu_count()} cores)")
        print(f"scoring share of the wall clock with the scoring thread: "
              f"{100 * threaded['score_wait'] / threaded['wall']:.1f} % of {threaded['wall']:.3f} s per sample")
        chosen = threaded if auto else inline
        print(f"scoring share of the wall clock at the default ({'scoring thread' if auto else 'inline'}): "
              f"{100 * chosen['score_wait'] / chosen['wall']:.1f} % of {chosen['wall']:.3f} s per sample (target < 10 %)")


if __name__ == "__main__":
    main()
