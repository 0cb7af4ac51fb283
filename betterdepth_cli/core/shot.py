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
- one cascade decision: the model card's two passes for soft conditionings run on every frame or
  on none, as the shot's first frame decides (:func:`shot_cascade`); decided per frame, a shot whose
  conditioning's blur hovers at the card's ``blur_above`` would switch between one pass and two
  from frame to frame (measured on a real scene: two maps 0.14 % of the range apart refine 0.9 %
  apart on average, up to 33 %, across the switch, against 0.19 % on either side of it);
- deterministic: the same frames, seed and ``batch_size`` give the same maps (the
  co-alignment runs frame by frame, so ``batch_size`` changes only the float
  rounding of the batched network); a rerun of the shot recomputes the same
  co-alignment.

``consistent=False`` is independent per-frame refinement (``--per-frame``): each frame its own
units and its own cascade decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from betterdepth_cli.core.pipeline import frame_cascade, predict_conditioner, refine_batch, seeded_generators
from betterdepth_cli.core.shot_align import ShotAligner, coalign_prediction
from betterdepth_cli.core.tiling import model_tiling
from betterdepth_cli.core.types import DepthPrediction, RefineResult


def shot_cascade(aligner: ShotAligner | None, model, prediction: DepthPrediction, height: int, width: int,
                 tiling: tuple[int, int] | None, processing_res: int | None = None) -> bool | None:
    """The card's cascade decision for a frame of a shot (``prediction``: that frame, co-aligned): the
    shot's, taken on the first frame its ``aligner`` saw and kept in it. ``tiling``: the frames' tiles
    (then the anchor decides, :func:`~betterdepth_cli.core.tiled.anchor_cascade`). ``None`` when
    ``aligner`` is ``None`` (per-frame: every frame decides for itself)."""
    if aligner is None:
        return None
    if aligner.cascade is None:
        if tiling is not None:
            from betterdepth_cli.core.tiled import anchor_cascade

            aligner.cascade = anchor_cascade(model, prediction, height, width, tiling[0])
        else:
            aligner.cascade = frame_cascade(model, prediction, processing_res)
    return aligner.cascade


def shot_conditioning(conditioner, images: torch.Tensor, keys: list[str] | None, aligners: list[ShotAligner | None],
                      model, hw: tuple[int, int], tiling: tuple[int, int] | None, processing_res: int | None = None
                      ) -> tuple[DepthPrediction, list[bool | None]]:
    """The conditioner's maps of B frames (``images``: what it sees, the anchor's photo for tiled frames),
    frame i co-aligned with its shot by ``aligners[i]`` (in order; ``None``: a single image, left as is),
    and each frame's cascade decision (:func:`shot_cascade`; ``None`` for single images). ``hw``: the
    frames' size, ``tiling``: their tiles. What ``refine`` (``jobs.engine``, lead-ins included) and
    :func:`refine_shot` do to every frame of a shot before refining it."""
    # frame by frame, as refine_batch runs the networks: a frame's map does not depend on its batch, so a
    # --frames chunk or a resumed shot (whose earlier frames lead in one by one) equals a whole run to the bit
    parts = [predict_conditioner(conditioner, images[i : i + 1], None if keys is None else keys[i : i + 1])
             for i in range(images.shape[0])]
    pred = coalign_prediction(parts[0] if len(parts) == 1 else _stack_predictions(parts), aligners)
    return pred, [shot_cascade(a, model, pred.item(i), *hw, tiling, processing_res) for i, a in enumerate(aligners)]


def _stack_predictions(parts: list[DepthPrediction]) -> DepthPrediction:
    return DepthPrediction(torch.cat([p.values for p in parts]), torch.cat([p.valid for p in parts]), parts[0].kind,
                           parts[0].metric, parts[0].source)


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
    pred, cascades = shot_conditioning(conditioner, images, keys if all(k is not None for k in keys) else None,
                                       [aligner] * len(batch), model, tuple(images.shape[-2:]), None, processing_res)
    res = refine_batch(images, model=model, prediction=pred, steps=steps, ensemble=ensemble, reduction=reduction,
                       processing_res=processing_res, generator=seeded_generators(seed, len(batch)), cascade=cascades)
    for i in range(len(batch)):
        yield res.item(i)


def _tiled_frame(image, key, conditioner, model, aligner, tiling, seed, steps, ensemble, reduction) -> RefineResult:
    """One frame refined in tiles, its anchor's conditioning co-aligned with the shot, as ``refine`` does
    (the frame as float32 (H,W,3), as ``refine`` reads files, so the maps are the same)."""
    from betterdepth_cli.core.tiled import anchor_image, refine_plates

    plate = image[0].permute(1, 2, 0).float().cpu().numpy()
    keys = None if key is None else [key]
    pred, cascades = shot_conditioning(conditioner, anchor_image(plate, model, tiling[0]), keys, [aligner], model,
                                       plate.shape[:2], tiling)
    return refine_plates([plate], model=model, tile=tiling[0], overlap=tiling[1], prediction=pred,
                         generator=seeded_generators(seed, 1), keys=keys, steps=steps, ensemble=ensemble,
                         reduction=reduction, cascade=cascades[0])
