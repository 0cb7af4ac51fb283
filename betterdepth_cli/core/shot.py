"""Refine a shot as a stream: co-aligned conditioning, one shared noise field, bounded memory.

:func:`refine_shot` takes the frames of ONE shot in order and yields one
:class:`~betterdepth_cli.core.types.RefineResult` per frame, holding at most
``batch_size`` frames at a time, so memory does not grow with the shot's length:

- ``consistent=True`` (the default for videos and sequences): the conditioner's
  per-frame predictions are co-aligned to the shot's units before refinement
  (:class:`~betterdepth_cli.core.shot_align.ShotAligner`); the refined frames
  come back in those units, so a per-frame model's scale and shift jumps do not
  reach the output;
- one shared noise field: every frame's starting noise comes from a generator
  seeded with ``seed`` (:func:`~betterdepth_cli.core.pipeline.seeded_generators`),
  the same field for every frame of the shot's size (a stochastic refiner does not
  add its own flicker; the shipped zero-noise model ignores noise);
- deterministic: the same frames, seed and ``batch_size`` give the same maps (the
  co-alignment runs frame by frame, so ``batch_size`` changes only the float
  rounding of the batched network); a rerun of the shot recomputes the same
  co-alignment.

``consistent=False`` is independent per-frame refinement (``--per-frame``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from betterdepth_cli.core.pipeline import predict_conditioner, refine_batch, seeded_generators
from betterdepth_cli.core.shot_align import ShotAligner, coalign_prediction
from betterdepth_cli.core.tiling import model_tiling
from betterdepth_cli.core.types import RefineResult


def refine_shot(
    frames: Iterable[tuple[torch.Tensor, str | None]],
    *,
    conditioner,
    model=None,
    consistent: bool = True,
    seed: int = 0,
    batch_size: int = 1,
    steps: int | None = None,
    ensemble: int | None = None,
    reduction: str | None = None,
    processing_res: int | None = None,
    aligner: ShotAligner | None = None,
) -> Iterator[RefineResult]:
    """Yield each frame's result (batch of one) for ``frames``: ``(image (3,H,W) or (1,3,H,W) in [0,1], key)``.

    ``key`` is the frame's name for the ``file:`` conditioner (``None`` otherwise).
    ``model=None`` gives the (co-aligned, when ``consistent``) conditioning itself.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    aligner = (aligner or ShotAligner()) if consistent else None
    batch: list[tuple[torch.Tensor, str | None]] = []
    for image, key in frames:
        image = image if image.ndim == 4 else image[None]
        if batch and batch[0][0].shape != image.shape:
            yield from _run(batch, conditioner, model, aligner, seed, steps, ensemble, reduction, processing_res)
            batch = []
        batch.append((image, key))
        if len(batch) >= batch_size:
            yield from _run(batch, conditioner, model, aligner, seed, steps, ensemble, reduction, processing_res)
            batch = []
    if batch:
        yield from _run(batch, conditioner, model, aligner, seed, steps, ensemble, reduction, processing_res)


def _run(batch, conditioner, model, aligner, seed, steps, ensemble, reduction, processing_res) -> Iterator[RefineResult]:
    images = torch.cat([im for im, _ in batch])  # [B,3,H,W]
    keys = [k for _, k in batch]
    tiling = model_tiling(model, *images.shape[-2:], processing_res=processing_res)
    if tiling is not None:  # frames above the card's tile_above: in tiles, as `refine` does
        for image, key in batch:
            yield _tiled_frame(image, key, conditioner, model, aligner, tiling, seed, steps, ensemble, reduction)
        return
    pred = predict_conditioner(conditioner, images, keys if all(k is not None for k in keys) else None)
    if aligner is not None:
        pred = coalign_prediction(pred, [aligner] * len(batch))
    res = refine_batch(images, model=model, prediction=pred, steps=steps, ensemble=ensemble, reduction=reduction,
                       processing_res=processing_res, generator=seeded_generators(seed, len(batch)))
    for i in range(len(batch)):
        unc = None if res.uncertainty is None else res.uncertainty[i : i + 1]
        yield RefineResult(res.refined[i : i + 1], res.conditioning[i : i + 1], res.valid[i : i + 1], res.kind,
                           res.metric, unc, res.timings)


def _tiled_frame(image, key, conditioner, model, aligner, tiling, seed, steps, ensemble, reduction) -> RefineResult:
    """One frame refined in tiles, its anchor's conditioning co-aligned with the shot, as ``refine`` does
    (the frame as float32 (H,W,3), as ``refine`` reads files, so the maps are the same)."""
    from betterdepth_cli.core.tiled import anchor_image, refine_plates

    plate = image[0].permute(1, 2, 0).float().cpu().numpy()
    keys = None if key is None else [key]
    pred = predict_conditioner(conditioner, anchor_image(plate, model, tiling[0]), keys)
    if aligner is not None:
        pred = coalign_prediction(pred, [aligner])
    return refine_plates([plate], model=model, tile=tiling[0], overlap=tiling[1], prediction=pred,
                         generator=seeded_generators(seed, 1), keys=keys, steps=steps, ensemble=ensemble,
                         reduction=reduction)
