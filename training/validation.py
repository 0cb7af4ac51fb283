"""Validation during training: the conditioner and the refiner scored on held-out samples through
``refine_batch`` (the inference path, settings resolved as at inference)."""

from __future__ import annotations

import time

import numpy as np
import torch

from training.batches import seed_from


def validate(trainer) -> dict | None:
    """AbsRel and delta1 (aligned in the conditioner's space) of the conditioner and the refiner on the
    trainer's validation samples, through the inference pipeline; recorded in its metrics and result."""
    if not trainer.val_samples:
        return None
    if not trainer.accelerator.is_main_process:
        trainer.accelerator.wait_for_everyone()
        return None
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.types import DepthPrediction
    from betterdepth_cli.evaluation.protocol import evaluate_sample

    v = trainer.recipe.validation
    res = v.processing_res or trainer.recipe.data.processing_res
    params = list(trainer.unet.parameters())
    if trainer.ema is not None and trainer.recipe.ema.use_for_final:
        trainer.ema.store(params)
        trainer.ema.copy_to(params)
    trainer.unet.eval()
    scores: dict[str, list[dict]] = {"conditioner": [], **{f"refiner_{s}": [] for s in v.steps}}
    t0 = time.perf_counter()
    try:
        for k, sample in enumerate(trainer.val_samples):
            (values, valid_c), = trainer.predictions([sample], [seed_from(v.seed, 6, k)])
            gt = sample["depth"][0].numpy().astype(np.float64)
            gv = sample["valid"][0].numpy() & (gt >= v.min_depth) & (gt <= v.max_depth)
            if not gv.any():
                continue

            def score(pred: torch.Tensor) -> dict:
                return evaluate_sample(
                    pred.cpu().numpy(), trainer.kind, gt, gv, min_depth=v.min_depth, max_depth=v.max_depth,
                    metrics=("abs_rel", "delta1"),
                ).metrics

            scores["conditioner"].append(score(values[0]))
            pred = DepthPrediction(values[None], valid_c[None], trainer.kind, trainer.metric, trainer.recipe.conditioner.name)
            for s in v.steps:
                with trainer.accelerator.autocast():  # the frozen codec may be in fp16/bf16
                    out = refine_batch(
                        sample["rgb"][None].to(trainer.device), prediction=pred, model=trainer.model, steps=s,
                        ensemble=1, processing_res=res, generator=torch.Generator().manual_seed(v.seed),
                    )
                scores[f"refiner_{s}"].append(score(out.refined[0, 0].float()))
    finally:
        trainer.unet.train()
        if trainer.ema is not None and trainer.recipe.ema.use_for_final:
            trainer.ema.restore(params)
    summary = {
        name: {m: float(np.nanmean([r[m] for r in rows])) for m in ("abs_rel", "delta1")}
        for name, rows in scores.items() if rows
    }
    record = {"type": "val", "step": trainer.step, "samples": len(scores["conditioner"]),
              "seconds": round(time.perf_counter() - t0, 3), **summary}
    trainer._metrics(record)
    parts = [f"{name.replace('refiner_', 'refiner ') + (' step' if name.startswith('refiner') else '')}: "
             f"AbsRel {100 * s['abs_rel']:.2f}% delta1 {100 * s['delta1']:.2f}%" for name, s in summary.items()]
    trainer.log(f"val step {trainer.step} ({record['samples']} samples) | " + " | ".join(parts))
    trainer.result.validation.append(record)
    trainer.accelerator.wait_for_everyone()
    return record
