"""Measure the embedded default model and write its model card.

    python -m training.model_card [--data-root data] [--real ../shared/data/real]

Scores the conditioner alone and refined (``betterdepth eval --compare``
protocol) on held-out synthetic scenes (``data/synth-val``, generator seeds
never used in training) and, when present, on the real Middlebury 2005 and
NYUv2 samples; times a 640 x 480 image at the default settings; measures the
fixed test set that ``tests/test_default_model.py`` re-checks; writes the
numbers into ``weights/refiner/betterdepth.json`` (``metrics``) and renders
``weights/MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "betterdepth_cli" / "weights"
#: The fixed test set: generator seeds and size (never used in training).
TEST_SEEDS = tuple(range(3_000_000, 3_000_006))
TEST_SIZE = (96, 128)
METRICS = ("abs_rel", "delta1", "dbe_comp", "dbe_acc", "ep", "er")


def test_set_metrics() -> dict[str, dict[str, float]]:
    """Conditioner and refined means on the fixed synthetic test set (default settings, seed 0)."""
    import numpy as np
    import torch

    from betterdepth_cli.core.conditioners import get_conditioner
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.refiner import load_model
    from betterdepth_cli.evaluation.protocol import evaluate_sample
    from training.synthetic import render_scene

    model = load_model()
    cond = get_conditioner("builtin")
    rows: dict[str, list[dict]] = {"conditioner": [], "refined": []}
    for seed in TEST_SEEDS:
        s = render_scene(seed, TEST_SIZE, "mixed")
        rgb = torch.from_numpy(s.rgb).permute(2, 0, 1)[None].float()
        res = refine_batch(rgb, conditioner=cond, model=model, generator=torch.Generator().manual_seed(0))
        for variant, pred in (("conditioner", res.conditioning), ("refined", res.refined)):
            m = evaluate_sample(pred[0, 0].cpu().numpy(), res.kind, s.depth, s.valid, min_depth=1e-3, max_depth=80.0)
            rows[variant].append(m.metrics)
    return {v: {k: float(np.mean([r[k] for r in rs])) for k in METRICS} for v, rs in rows.items()}


def eval_means(dataset: str, root: str, limit: int | None = None) -> dict:
    from betterdepth_cli.evaluation.runner import EvalConfig, run_evaluation

    result = run_evaluation(EvalConfig(dataset=dataset, data_root=root, limit=limit, compare=True))
    out = {v: {k: result.means[v][k] for k in METRICS if k in result.means[v]} for v in result.means}
    out["samples"] = len({r["id"] for r in result.rows})
    out["seconds_per_image"] = result.seconds_per_image
    return out


def time_default_model(repeats: int = 5) -> tuple[float, dict[str, float]]:
    """Median seconds for one 640 x 480 image through the default model at its card's
    settings (after a warm-up), and the median seconds of each pipeline stage."""
    import statistics

    import torch

    from betterdepth_cli.core.conditioners import get_conditioner
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.refiner import load_model

    model = load_model()
    cond = get_conditioner(model.defaults["conditioner"])
    x = torch.rand(1, 3, 480, 640, generator=torch.Generator().manual_seed(0))
    run = lambda: refine_batch(x, conditioner=cond, model=model, generator=torch.Generator().manual_seed(0))
    run()
    times, stages = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        stages.append(run().timings)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), {k: statistics.median(s[k] for s in stages) for k in stages[0]}


def gate_lines(metrics: dict) -> list[str]:
    """Plain pass/fail lines for the default-model gates, from the measured means."""
    def better(block, key, lower=True):
        c, r = block["conditioner"][key], block["refined"][key]
        return (r < c) if lower else (r > c)

    out = []
    syn = metrics.get("synthetic")
    if syn:
        for key, lower in (("abs_rel", True), ("dbe_comp", True), ("ep", False), ("er", False)):
            verdict = "PASS" if better(syn, key, lower) else "FAIL"
            out.append(f"- {verdict}: synthetic held-out, refined beats the conditioner on {key}"
                       f" ({syn['refined'][key]:.4f} vs {syn['conditioner'][key]:.4f})")
    mb = metrics.get("middlebury")
    if mb:
        for key, lower in (("dbe_comp", True), ("er", False)):
            verdict = "PASS" if better(mb, key, lower) else "FAIL"
            out.append(f"- {verdict}: Middlebury, refined beats the conditioner on {key}"
                       f" ({mb['refined'][key]:.4f} vs {mb['conditioner'][key]:.4f})")
        rel = mb["refined"]["abs_rel"] / mb["conditioner"]["abs_rel"] - 1
        out.append(f"- {'PASS' if rel <= 0.05 else 'FAIL'}: Middlebury AbsRel within +5 % of the conditioner ({rel:+.1%})")
    sec = metrics.get("seconds_640x480")
    if sec is not None:
        out.append(f"- {'PASS' if sec < 1.0 else 'FAIL'}: 640 x 480 under 1 s ({sec:.3f} s on 2 CPU cores)")
    return out


def render_card(card: dict, metrics: dict) -> str:
    def table(block: dict) -> list[str]:
        lines = ["| | AbsRel | delta1 | DBE_comp | DBE_acc | EP | ER |", "|---|---|---|---|---|---|---|"]
        for v in ("conditioner", "refined"):
            m = block.get(v, {})
            cells = [f"{m[k]:.4f}" if k in m else "-" for k in METRICS]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        return lines

    tw = card.get("trained_with", {})
    d = card.get("defaults", {})
    out = [
        "# The embedded default model",
        "",
        "Two small models ship in this folder so that `betterdepth refine` works offline on a fresh machine:",
        "",
        "- `conditioner/`: the `builtin` feed-forward depth model, a Depth-Anything-class",
        "  `DepthAnythingForDepthEstimation` (DINOv2 backbone + DPT head, 0.9 M parameters) from `transformers`,",
        "  trained from scratch with a scale-and-shift-invariant loss in disparity space",
        "  (`training/conditioner.py`, recipe `training/recipes/default-conditioner.toml`). Output: relative disparity.",
        "- `refiner/`: a BetterDepth refiner: a diffusers `UNet2DConditionModel` (no attention) over the exact",
        f"  space-to-depth autoencoder (factor {card.get('latent_factor')}), trained with the paper's objective",
        "  (global pre-alignment, local patch masking w = 8, eta = 0.1, masked v-loss;",
        "  `training/recipes/default-refiner.toml`), then fine-tuned end to end three times: under the same",
        "  mask (`training/recipes/default-refiner-e2e.toml`), under a wider one, eta = 0.5",
        "  (`training/recipes/default-refiner-wide.toml`: at eta = 0.1 the mask hid 99 % of the ground",
        "  truth's edge pixels from the refiner, because `builtin` draws no edges), and last, for longer,",
        "  without the mask (`training/recipes/default-refiner-long.toml`: at eta = 0.5 it still hid more",
        "  than half of them, and the refiner drew no Canny-strength edge); conditioned on `builtin`.",
        "  The shipped stage 1 ran 1250 of a planned 3000 steps (cosine schedule for 3000, stopped for",
        "  time); stage 2 ran 1500 steps, stage 3 2000, stage 4 16000.",
        "",
        f"Defaults: conditioner `{d.get('conditioner')}`, steps {d.get('steps')}, ensemble {d.get('ensemble')},"
        f" processing resolution {d.get('processing_res') or 'native (0)'}, zero-noise start {card.get('zero_noise')}.",
        "The refiner was trained on crops at the data's native pixel scale, and it sharpens best at the",
        "image's own resolution: measured on 2026-11-24 on these sets, native resolution passed the edge",
        "gates that processing at 320 px failed (synthetic EP 0.064 vs 0.042 at 320, ER 0.102 vs 0.042;",
        "Middlebury ER 0.035 vs 0.005) for a slightly higher synthetic AbsRel (0.543 vs 0.474; that day's",
        "synthetic AbsRel does not reproduce on data/synth-val as written by today's generator, see the",
        "table below). The resolution was chosen on these same sets. Time grows with the pixel count: cap",
        "large photos with `--processing-res`.",
        "",
        "## Data, seeds, commands",
        "",
        "- Training data: 3000 procedural scenes (`betterdepth synth -n 3000 --seed 0 --size 192`), rendered by",
        "  open3d ray casting (rooms, streets, parks; thin rods, wires, grilles, fences, foliage; cast shadows).",
        "- Held-out validation: 200 scenes from seeds 1000000.. (`--seed 1000000`).",
        "- Rebuild everything from scratch on 2 CPU cores: `python -m training.build_default --install`",
        "  (resumable; each stage is skipped when its output exists).",
        f"- Refiner training: {tw.get('steps')} optimizer steps in the last stage, effective batch"
        f" {tw.get('effective_batch')}, seed {tw.get('config', {}).get('train', {}).get('seed')}.",
        "",
        "## Measured (conditioner alone vs refined; eval protocol, least-squares alignment in disparity space)",
        "",
        f"Held-out synthetic scenes ({metrics.get('synthetic', {}).get('samples', 0)} scenes, `data/synth-val`):",
        "",
        *table(metrics.get("synthetic", {})),
        "",
    ]
    for name, title in (("middlebury", "Middlebury 2005 (6 real scenes, half size)"), ("nyuv2", "NYUv2 (5 real images)")):
        if name in metrics:
            out += [f"{title}:", "", *table(metrics[name]), ""]
    out += [
        f"Fixed test set (seeds {TEST_SEEDS[0]}..{TEST_SEEDS[-1]}, {TEST_SIZE[1]} x {TEST_SIZE[0]}; re-checked by",
        "`tests/test_default_model.py`):",
        "",
        *table(metrics.get("test_set", {})),
        "",
        f"Speed: {metrics.get('seconds_640x480', float('nan')):.3f} s for a 640 x 480 image at the default settings"
        " on 2 CPU cores (`python bench/default_speed.py`).",
        "",
        "AbsRel and delta1 in fractions; DBE in pixels; EP/ER are edge precision and recall (fractions).",
        "",
        "## Success gates of the issue (measured above)",
        "",
        *gate_lines(metrics),
        "",
        "## Limits, plainly",
        "",
        "- Trained only on procedural scenes at 128-192 px on a CPU for minutes, not on real photographs:",
        "  on real images both models are far below the public ones. For real work use a public conditioner",
        "  (`--conditioner depth-anything-v2-large`) and a refiner trained at scale",
        "  (`training/recipes/sd2-hypersim-vkitti.toml`).",
        "- Relative (affine-invariant) disparity only; no metric scale.",
        "- The conditioner gives little layout beyond a near-at-the-bottom ramp (it underfits: AbsRel 0.288 on",
        "  200 of its own training scenes, 0.288 held out) and draws no depth edges of its own: the",
        "  conditioner rows above score EP/ER near 0 and DBE 10. The model itself draws a bright band one or",
        "  two pixels wide at the image border; `builtin` hides it by padding the input by reflection (1/12",
        "  of the shorter side per side) and cropping the prediction back. Before that padding (2026-12-04),",
        "  that band was every Canny edge of the conditioner on the first 20 held-out synthetic scenes and",
        "  gave it its DBE below 10 (synthetic 9.457, Middlebury 9.495).",
        "- The refiner uses the image only a little: with the same `builtin` prediction, replacing the",
        "  photo by flat grey changes the refined map by 4-6 % of its range on average (held-out synthetic",
        "  scenes 0, 2 and 4, 2026-12-05; 2 % before stage 4). It keeps the conditioner's layout (objects",
        "  the conditioner misses mostly stay missing) and draws the strongest depth edges near the bottom",
        "  of the frame (tables, floors, large near objects); thin rods, wires and far objects stay",
        "  missing. DBE stays near 10 px on both sets: few of its edges pass the Canny thresholds of the",
        "  DBE metrics. A refiner trained from a pre-trained image prior (the paper's Stable Diffusion) or",
        "  far longer does not have this limit.",
        "- The numbers above are what they are; where the refined column is worse than the conditioner, the",
        "  refiner did not reach the paper's behaviour at this budget.",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Measure the default model and write its card")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--real", default=os.environ.get("BETTERDEPTH_REAL_DATA", "../shared/data/real"))
    ap.add_argument("--synthetic-limit", type=int, default=100)
    args = ap.parse_args(argv)
    metrics: dict = {}
    metrics["synthetic"] = eval_means("folder", str(Path(args.data_root) / "synth-val"), args.synthetic_limit)
    real = Path(args.real)
    if (real / "middlebury2005").is_dir():
        metrics["middlebury"] = eval_means("middlebury", str(real / "middlebury2005"))
    if (real / "nyuv2").is_dir():
        metrics["nyuv2"] = eval_means("nyuv2", str(real / "nyuv2"))
    metrics["test_set"] = test_set_metrics()
    metrics["seconds_640x480"] = time_default_model()[0]
    card_path = WEIGHTS / "refiner" / "betterdepth.json"
    card = json.loads(card_path.read_text())
    card["metrics"] = metrics
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    (WEIGHTS / "MODEL_CARD.md").write_text(render_card(card, metrics))
    print(json.dumps(metrics, indent=2, default=str), file=sys.stderr)


if __name__ == "__main__":
    main()
