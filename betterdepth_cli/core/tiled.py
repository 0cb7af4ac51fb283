"""Tiled refinement of one plate of any size, guided by the whole frame, in bounded memory.

1. **Anchor.** The plate is shrunk to the model's resolution (the card's ``max_processing_res``,
   else one tile); the conditioner and the refiner run on that whole frame. The anchor fixes the
   layout: every tile is later mapped onto it, so tiles cannot disagree about what is near and far.
   The anchor takes the card's cascade (a first pass at half its size when the conditioning is
   softer than ``blur_above``): on four synthetic choosing plates at 1 % blur, an anchor without it
   gave tiled maps whose edges lie closer to the truth (DBE_acc 2.04 -> 1.48 px) but a worse layout
   (AbsRel 0.056 -> 0.068, against 0.057 upsampled), so the layout wins.
2. **Tiles.** Overlapping tiles (:mod:`betterdepth_cli.core.tiling`) are refined one at a time at
   the plate's own pixel scale by :func:`~betterdepth_cli.core.pipeline.refine_batch`, each with its
   crop of the photo, its conditioning and, for models that sample from noise, its crop of one
   plate-wide latent noise field (overlapping tiles start from the same noise where they overlap).
   A tile's conditioning is the **anchor's refined map** sampled at the tile's plate coordinates
   (a cascade, as in BoostingMonocularDepth's merging: the fine pass starts from the coarse pass's
   result). At plate scale a conditioner's blur spans several times more pixels than at the
   model's resolution, beyond what the refiner was trained to undo; the anchor has already
   sharpened it at the model's resolution, so the tiles only add what one anchor pixel cannot hold.
   Measured on synthetic 3072 x 2048 plates (bench/tiled_plates.py): edge F1 up by a third and
   AbsRel lower than tiles conditioned on the conditioner itself. A full-size ``prediction``
   reaches the tiles through the anchor too (its detail finer than one anchor pixel does not).
3. **Fit and blend.** Each tile's map is fitted to the anchor sampled on the tile (a closed-form
   least-squares scale and shift, refitted without outliers: :func:`~betterdepth_cli.core.tiling.
   robust_scale_shift`), its frequencies below one anchor pixel are replaced by the anchor's
   (:func:`~betterdepth_cli.core.layout.keep_layout` with sigma = plate side / anchor side: the
   tile adds only the detail the anchor's resolution cannot hold), then it is weighted by its
   feather weights and added to the plate; rows are normalised as soon as no later tile reaches them.

The card's layout low-pass and edge gate act on each tile at the plate's scale
(:class:`~betterdepth_cli.core.types.Frame`: the plate's side and the conditioning's range over the
whole plate), as they act on the anchor.

Who tiles: ``refine`` (``jobs.engine``), ``eval`` and the library (:func:`refine_plates`) and
:func:`~betterdepth_cli.core.shot.refine_shot` take one decision
(:func:`~betterdepth_cli.core.tiling.model_tiling`) and give one map; frames of a shot pass their
anchor's conditioner map, co-aligned with the shot, as ``prediction`` (:func:`anchor_image`), and
their shot's cascade decision, taken on its first frame's anchor (:func:`anchor_cascade`).

Memory: the photo as given (uint8 stays uint8; only tile crops become float), the output (float32,
plate size), its valid mask (bool), and one tile's working set; no plate-sized float copy of the
photo, the conditioning or the weights. Cost: the tiles' overlap (1/8 of a side: about 27 % more
pixels than the plate) plus one refine at the anchor's size.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from betterdepth_cli.core.layout import keep_layout
from betterdepth_cli.core.normalize import masked_quantiles
from betterdepth_cli.core.pipeline import (check_images, check_map_aspect, draw_noise, frame_cascade, per_image_generators,
                                          processing_size, refine_batch, resize, stack_results)
from betterdepth_cli.core.pixels import area_resize
from betterdepth_cli.core.settings import resolve_settings
from betterdepth_cli.core.tiling import axis_tiles, axis_weight_sum, axis_weights, robust_scale_shift, sample_region
from betterdepth_cli.core.types import DepthPrediction, Frame, RefineResult, UsageError


def _plate_size(image: Any) -> tuple[int, int]:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] < 3:
            raise UsageError(f"tiled refine: expected a numpy image (H,W,3), got shape {image.shape}")
        return int(image.shape[0]), int(image.shape[1])
    if isinstance(image, torch.Tensor) and image.ndim in (3, 4) and (image.ndim == 3 or image.shape[0] == 1):
        return int(image.shape[-2]), int(image.shape[-1])
    raise UsageError("tiled refine: pass one image, a numpy (H,W,3) array or a (3,H,W)/(1,3,H,W) tensor")


def crop_image(image: Any, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    """A crop of the photo as (1,3,h,w) float32 in [0,1] (only the crop is converted)."""
    if isinstance(image, np.ndarray):
        return check_images(np.ascontiguousarray(image[rows[0] : rows[1], cols[0] : cols[1], :3]))
    img = image if image.ndim == 4 else image[None]
    return check_images(img[:, :, rows[0] : rows[1], cols[0] : cols[1]])


def shrink_image(image: Any, size: tuple[int, int]) -> torch.Tensor:
    """The whole photo at ``size`` (h, w) as (1,3,h,w) float32, area-averaged, without a full float copy."""
    if isinstance(image, np.ndarray):
        return check_images(area_resize(np.ascontiguousarray(image[..., :3]), size[1], size[0]))
    img = image if image.ndim == 4 else image[None]
    return resize(check_images(img), size)


def _anchor(image, size, conditioner, model, prediction, keys, options: dict, generator,
            cascade: bool | None) -> tuple[RefineResult, DepthPrediction]:
    """The whole frame at the anchor ``size``: the conditioner (or the given prediction, shrunk) and the refiner."""
    small = shrink_image(image, size)
    t0 = time.perf_counter()
    if prediction is None:
        if conditioner is None:
            raise UsageError("tiled refine needs a `conditioner` or a `prediction`")
        pred = conditioner.predict(small.to(getattr(conditioner, "device", "cpu")), keys=keys)
        pred = DepthPrediction(pred.values.float().cpu(), pred.valid.bool().cpu(), pred.kind, pred.metric, pred.source)
    else:
        try:
            check_map_aspect(tuple(prediction.values.shape[-2:]), _plate_size(image))
        except ValueError as exc:
            raise UsageError(f"prediction: {exc}") from None
        pred = prediction
    t_cond = time.perf_counter() - t0
    res = refine_batch(small, model=model, prediction=_shrink_prediction(pred, size), processing_res=0,
                       generator=generator, cascade=cascade, **options)
    res.timings["conditioner"] = res.timings.get("conditioner", 0.0) + t_cond
    return res, pred


def _shrink_prediction(pred: DepthPrediction, size: tuple[int, int]) -> DepthPrediction:
    """A conditioner's output at the anchor's ``size`` (what the anchor refines)."""
    return DepthPrediction(resize(pred.values.float().cpu(), size), resize(pred.valid.cpu(), size, mode="nearest").bool(),
                           pred.kind, pred.metric, pred.source)


def anchor_cascade(model, prediction: DepthPrediction, height: int, width: int, tile: int,
                   anchor_res: int | None = None) -> bool:
    """Whether the anchor of a ``height`` x ``width`` plate runs the card's first pass on ``prediction``
    (:func:`~betterdepth_cli.core.pipeline.frame_cascade` at the anchor's size)."""
    size = anchor_size(model, height, width, tile, anchor_res)
    return frame_cascade(model, _shrink_prediction(prediction, size), processing_res=0)


def anchor_size(model, height: int, width: int, tile: int, anchor_res: int | None = None) -> tuple[int, int]:
    """The anchor's (h, w) for a plate: its longest side ``anchor_res``, else the card's
    ``max_processing_res``, else ``tile`` (never larger than the plate)."""
    side = int(anchor_res or model.defaults.get("max_processing_res") or tile)
    return processing_size(height, width, min(side, max(height, width)))


def anchor_image(image: Any, model, tile: int, anchor_res: int | None = None) -> torch.Tensor:
    """The whole photo at the anchor's size, (1,3,h,w) float32: what the conditioner sees in
    :func:`refine_tiled` (a caller that adjusts the conditioning, e.g. co-aligns a shot's frames,
    runs it there and passes ``prediction``)."""
    return shrink_image(image, anchor_size(model, *_plate_size(image), tile, anchor_res))


def _frame(anchor: RefineResult, height: int, width: int) -> Frame:
    """The plate as the tiles' frame: its longest side and the conditioning's 2-98 % range over the
    whole plate (from the anchor's), so each tile's layout low-pass and edge gate act at plate scale."""
    lo, hi = masked_quantiles(anchor.conditioning.float().cpu(), anchor.valid.cpu().bool())
    return Frame(side=float(max(height, width)), lo=float(lo[0]), hi=float(hi[0]))


def _noise_field(model, generator, ensemble: int, height: int, width: int) -> torch.Tensor | None:
    """One latent noise field over the padded plate, (1, E, C, H'/f, W'/f); None for zero-noise models."""
    if model.zero_noise:
        return None
    m, f = model.pad_multiple, model.codec.factor
    hp, wp = -(-height // m) * m, -(-width // m) * m
    return draw_noise(generator, 1, ensemble, (model.codec.depth_channels, hp // f, wp // f))


def _tile(image, guide: torch.Tensor, pred: DepthPrediction, full, rows, cols, model, noise, options,
          frame: Frame) -> RefineResult:
    """One tile refined at the plate's pixel scale with its crops of the photo and noise, conditioned on
    ``guide`` (the anchor's refined map sampled bilinearly at the tile's plate coordinates: exact on
    planes, where PyTorch's bicubic, a = -0.75, ripples by 5 % of a source pixel's step), valid where
    the conditioning ``pred`` is (at its own resolution: a full-size prediction's holes stay exact)."""
    img = crop_image(image, rows, cols)
    valid = sample_region(pred.valid, full, rows, cols, "nearest").bool() & torch.isfinite(guide)
    tile_pred = DepthPrediction(guide.contiguous(), valid.contiguous(), pred.kind, pred.metric, pred.source)
    tile_noise = None
    if noise is not None:
        m, f = model.pad_multiple, model.codec.factor
        ph, pw = -(-(rows[1] - rows[0]) // m) * m, -(-(cols[1] - cols[0]) // m) * m
        y0, x0 = rows[0] // f, cols[0] // f
        tile_noise = noise[..., y0 : y0 + ph // f, x0 : x0 + pw // f]
    # one pass: the tile's conditioning is the anchor's refined map, which had the card's cascade
    return refine_batch(img, model=model, prediction=tile_pred, processing_res=0, noise=tile_noise, frame=frame,
                        cascade=False, **options)


def _add_stages(into: dict[str, float], timings: dict[str, float]) -> dict[str, float]:
    """Add a pass's stage seconds (all but its ``total``) to ``into``; returns ``into``."""
    for k, v in timings.items():
        if k != "total":
            into[k] = into.get(k, 0.0) + v
    return into


def _finish_rows(out: np.ndarray, unc: np.ndarray | None, wy: torch.Tensor, wx: np.ndarray, a: int, b: int) -> None:
    """Divide rows a..b of the accumulated maps by the weight sums (outer product of the axis sums)."""
    if b <= a:
        return
    norm = (wy[a:b].numpy()[:, None] * wx[None, :]).astype(np.float32)
    out[a:b] /= norm
    if unc is not None:
        unc[a:b] /= norm


@torch.no_grad()
def refine_tiled(
    image: Any,
    *,
    model,
    tile: int,
    overlap: int,
    conditioner=None,
    prediction: DepthPrediction | None = None,
    anchor_res: int | None = None,
    steps: int | None = None,
    ensemble: int | None = None,
    reduction: str | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    keys: list[str] | None = None,
    restore_tails: bool = True,
    uncertainty: bool = True,
    cascade: bool | None = None,
) -> RefineResult:
    """Refine one plate in overlapping tiles guided by a whole-frame anchor (module docstring).

    Args:
        image: a numpy (H,W,3) uint8/uint16/float array (kept as is; crops are converted) or a tensor.
        model: a BetterDepth model (not the classical guided filter: it needs no tiles).
        tile, overlap: tile side and overlap in pixels (see :func:`~betterdepth_cli.core.tiling.tiling_for`).
        conditioner / prediction: the conditioner (run on the anchor-size photo), or its output at any
            size (shrunk to the anchor's); the tiles are conditioned on the anchor's refined map.
        anchor_res: the anchor's longest side (default: the card's ``max_processing_res``, else ``tile``).
        steps, ensemble, reduction, generator, keys, restore_tails: as in ``refine_batch``; the noise
            field is drawn from ``generator`` first, then the anchor's noise. ``cascade``: the
            anchor's, as in ``refine_batch`` (a shot passes its decision); tiles take one pass.
        uncertainty: assemble the plate's uncertainty map (ensemble > 1); ``False`` saves its buffer.
    Returns:
        :class:`RefineResult`: ``refined``, ``valid``, ``uncertainty`` (ensemble > 1) at plate size,
        ``conditioning`` at the anchor's (a plate-size one is never made).
    """
    t_start = time.perf_counter()
    h, w = _plate_size(image)
    if getattr(model, "classical", False) or model is None:
        raise UsageError("tiled refine needs a BetterDepth model (the guided filter runs whole at any size)")
    ensemble = resolve_settings(model.card, ensemble=ensemble).ensemble  # a zero-noise model's: at most 2
    gen = generator[0] if isinstance(generator, (list, tuple)) else generator
    options = {"steps": steps, "ensemble": ensemble, "reduction": reduction, "restore_tails": restore_tails}
    noise = _noise_field(model, gen, ensemble, h, w)
    anchor, pred = _anchor(image, anchor_size(model, h, w, tile, anchor_res), conditioner, model, prediction, keys,
                           options, gen, cascade)
    stages = _add_stages({}, anchor.timings)  # conditioner, encode, ... summed over the anchor and the tiles
    anchor_map = anchor.refined.float().cpu()
    frame = _frame(anchor, h, w)
    anchor_px = max(h, w) / max(anchor_map.shape[-2:])  # one anchor pixel, in plate pixels
    t_anchor = time.perf_counter() - t_start

    m = model.pad_multiple
    ty, tx = axis_tiles(h, tile, overlap, m), axis_tiles(w, tile, overlap, m)
    wy_sum, wx_sum = axis_weight_sum(ty, h), axis_weight_sum(tx, w).numpy()
    out = np.zeros((h, w), np.float32)
    valid = np.zeros((h, w), bool)
    unc = np.zeros((h, w), np.float32) if ensemble > 1 and uncertainty else None
    done_rows = 0
    for i, rows in enumerate(ty):
        wy = axis_weights(ty, i)
        for j, cols in enumerate(tx):
            target = sample_region(anchor_map, (h, w), rows, cols, "bilinear")  # conditions the tile, then fits it
            res = _tile(image, target, pred, (h, w), rows, cols, model, noise, options, frame)
            _add_stages(stages, res.timings)
            scale, shift = robust_scale_shift(res.refined.cpu(), target, res.valid.cpu())
            fitted = keep_layout(res.refined.float().cpu() * scale + shift, target, res.valid.cpu(), anchor_px)
            weight = (wy[:, None] * axis_weights(tx, j)[None, :]).float().numpy()
            block = fitted[0, 0].numpy() * weight
            out[rows[0] : rows[1], cols[0] : cols[1]] += block
            valid[rows[0] : rows[1], cols[0] : cols[1]] |= res.valid.cpu()[0, 0].numpy()
            if unc is not None and res.uncertainty is not None:
                unc[rows[0] : rows[1], cols[0] : cols[1]] += res.uncertainty.float().cpu()[0, 0].numpy() * scale * weight
        final = ty[i + 1][0] if i + 1 < len(ty) else h  # no later tile reaches above this row
        _finish_rows(out, unc, wy_sum, wx_sum, done_rows, final)
        done_rows = final
    timings = {**stages, "anchor": t_anchor, "tiles": time.perf_counter() - t_start - t_anchor,
               "total": time.perf_counter() - t_start}
    as_map = lambda a: None if a is None else torch.from_numpy(a)[None, None]  # noqa: E731 - (1,1,H,W) views
    return RefineResult(as_map(out), anchor.conditioning, as_map(valid), anchor.kind, anchor.metric, as_map(unc),
                        timings, anchor.cascade, (tile, overlap), (h, w))


def refine_plates(plates: list, *, model, tile: int, overlap: int, generator=None, keys: list[str] | None = None,
                  **options) -> RefineResult:
    """:func:`refine_tiled` for each of ``plates`` (one size; numpy (H,W,3) arrays or (1,3,H,W) tensors,
    as :func:`~betterdepth_cli.core.image_input.as_image_list` gives them), stacked into one (B,1,H,W)
    :class:`RefineResult`. ``generator``: one, or one per plate (as ``refine_batch``); ``keys``: one per
    plate (the ``file:`` conditioner's file stems). The conditioning of each plate is its anchor's,
    resized to the plate (the library's and ``eval``'s maps are at input size).
    ``options``: the other keywords of :func:`refine_tiled`."""
    gens = per_image_generators(generator, len(plates))
    parts = [refine_tiled(plate, model=model, tile=tile, overlap=overlap, generator=gen,
                          keys=None if keys is None else keys[i : i + 1], **options)
             for i, (plate, gen) in enumerate(zip(plates, gens))]
    return stack_results([replace(p, conditioning=resize(p.conditioning.float().cpu(), tuple(p.refined.shape[-2:])))
                          for p in parts])


def refine_images(plates: list, *, model, conditioner=None, tile: int | None = None, overlap: int | None = None,
                  processing_res: int | None = None, generator=None, keys: list[str] | None = None,
                  **options) -> RefineResult:
    """Same-size images (numpy (H,W,3) float arrays or (1,3,H,W) tensors, as
    :func:`~betterdepth_cli.core.image_input.as_image_list` gives them) refined as ``refine`` refines
    files: in tiles where :func:`~betterdepth_cli.core.tiling.model_tiling` says so (``tile``,
    ``overlap``: as ``--tile``; ``None``: the card's), with :func:`refine_plates`, else as one batch
    with :func:`refine_batch`. The library's and ``eval``'s one path. ``options``: ``steps``,
    ``ensemble``, ``reduction``."""
    from betterdepth_cli.core.image_input import image_size
    from betterdepth_cli.core.tiling import model_tiling

    tiling = model_tiling(model, *image_size(plates[0]), tile, overlap, processing_res)
    if tiling is None:
        return refine_batch(check_images(plates), conditioner=conditioner, model=model, processing_res=processing_res,
                            generator=generator, keys=keys, **options)
    return refine_plates(plates, model=model, conditioner=conditioner, tile=tiling[0], overlap=tiling[1],
                         generator=generator, keys=keys, **options)
