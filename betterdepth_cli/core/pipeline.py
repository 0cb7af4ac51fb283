"""One function refines a batch: conditioner -> normalise -> encode -> sample ->
decode -> ensemble -> de-normalise back to the conditioner's units.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from betterdepth_cli.core.edge_gate import gate_changes
from betterdepth_cli.core.layout import keep_layout, layout_sigma
from betterdepth_cli.core.normalize import denormalize, normalize, normalize_with
from betterdepth_cli.core.sampler import align_members, reduce_members, sample
from betterdepth_cli.core.settings import check_seed, processing_size, resolve_settings
from betterdepth_cli.core.types import MIN_SIDE, DepthPrediction, Frame, InputDataError, RefineResult, UsageError

#: Feed-forward models resize their input to a few hundred pixels; plates larger
#: than this are shrunk before the conditioner (its map is resized back), so a
#: 12000 x 8000 plate costs no full-size preprocessing.
CONDITIONER_MAX_SIDE = 2048


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad (B,C,H,W) at the bottom and right to multiples of ``multiple``.

    Returns the padded tensor and the padding (pad_h, pad_w) for :func:`unpad`.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (0, 0)
    return F.pad(x, (0, pw, 0, ph), mode="replicate"), (ph, pw)


def unpad(x: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` (minding the ``x[:-0]`` slicing trap)."""
    ph, pw = padding
    return x[..., : None if ph == 0 else -ph, : None if pw == 0 else -pw]


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (B,C,H,W); antialiased when shrinking; a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x.float(), size=size, mode="nearest").to(x.dtype)
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrink)


#: How far a map's aspect ratio may stray from its image's (other tools round their working sizes to
#: multiples of 14 or 32) before it is taken for another image's map.
ASPECT_TOLERANCE = 0.05


def check_map_aspect(shape: tuple[int, int], size: tuple[int, int]) -> None:
    """ValueError when a map of ``shape`` (h, w) has another aspect ratio than its image's ``size``."""
    h, w = shape
    if abs((w / h) / (size[1] / size[0]) - 1) > ASPECT_TOLERANCE:
        raise ValueError(f"the map is {w} x {h} pixels, its image {size[1]} x {size[0]}: another aspect ratio "
                         "(the map of another image?)")


def resize_map(values: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A map (B,1,h,w) of another size brought to its image's ``size``: values interpolated over valid
    pixels only (a hole's fill does not bleed into its neighbours), validity by nearest pixel. Another
    aspect ratio (beyond :data:`ASPECT_TOLERANCE`) is a ValueError: most likely the map of another image."""
    if tuple(values.shape[-2:]) == tuple(size):
        return values, valid
    check_map_aspect(tuple(values.shape[-2:]), size)
    weight = valid.float()
    num = F.interpolate(values.float() * weight, size=size, mode="bilinear", align_corners=False)
    den = F.interpolate(weight, size=size, mode="bilinear", align_corners=False)
    out = torch.where(den > 1e-6, num / den.clamp_min(1e-6), torch.zeros_like(num))
    return out, F.interpolate(weight, size=size, mode="nearest") > 0.5


def fit_prediction(pred: DepthPrediction, size: tuple[int, int]) -> DepthPrediction:
    """A caller's prediction at its images' ``size`` (:func:`resize_map`); another aspect is a UsageError."""
    if tuple(pred.values.shape[-2:]) == tuple(size):
        return pred
    try:
        values, valid = resize_map(pred.values, pred.valid.bool(), tuple(size))
    except ValueError as exc:
        raise UsageError(f"prediction: {exc}") from None
    return DepthPrediction(values, valid, pred.kind, pred.metric, pred.source)


def check_images(images) -> torch.Tensor:
    """Any accepted image form (:mod:`betterdepth_cli.core.image_input`) as (B,3,H,W) float in [0,1], size checked."""
    from betterdepth_cli.core.image_input import as_image_batch

    images = as_image_batch(images)
    h, w = images.shape[-2:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputDataError(f"image is {w} x {h} pixels; need at least {MIN_SIDE} x {MIN_SIDE}")
    return images


def _predict_bounded(conditioner, images: torch.Tensor, keys) -> DepthPrediction:
    """``conditioner.predict`` on a copy no larger than :data:`CONDITIONER_MAX_SIDE`, at input size."""
    h, w = images.shape[-2:]
    if getattr(conditioner, "needs_keys", False) or max(h, w) <= CONDITIONER_MAX_SIDE:
        return conditioner.predict(images, keys=keys)
    small = resize(images, processing_size(h, w, CONDITIONER_MAX_SIDE))
    pred = conditioner.predict(small, keys=keys)
    values = F.interpolate(pred.values, size=(h, w), mode="bicubic", align_corners=False)
    valid = resize(pred.valid, (h, w), mode="nearest").bool()  # DepthPrediction makes non-finite values holes
    return DepthPrediction(values=values, valid=valid, kind=pred.kind, metric=pred.metric, source=pred.source)


def predict_conditioner(conditioner, images, keys: list[str] | None = None) -> DepthPrediction:
    """The conditioner's prediction for any accepted image form, at input size (as :func:`refine_batch` makes it)."""
    images = check_images(images)
    return _predict_bounded(conditioner, images, keys)


def per_image_generators(generator, count: int) -> list:
    """``generator`` as one entry per image: a list with one per image as given, or one generator
    (or ``None``) repeated, so the images draw from it in turn."""
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * count
    if len(gens) != count:
        raise UsageError(f"got {len(gens)} generators for {count} images; pass one, or one per image")
    return gens


def draw_noise(generator, batch: int, ensemble: int, latent: tuple[int, int, int]) -> torch.Tensor:
    """Standard normal starting noise (B,E,C,h,w), image by image.

    ``generator`` is one ``torch.Generator`` (image 0's members are drawn first, then
    image 1's, ...), a list with one per image, or ``None`` (the global generator).
    With a list, an image's noise depends only on its own generator, not on the batch.
    """
    out = []
    for g in per_image_generators(generator, batch):
        dev = g.device if g is not None else "cpu"
        out.append(torch.randn((ensemble, *latent), generator=g, device=dev, dtype=torch.float32).cpu())
    return torch.stack(out)


def seeded_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, each seeded with ``seed``: an image's noise is the same
    alone or in any batch, on any device, through ``refine`` and through ``eval``."""
    seed = check_seed(seed)
    return [torch.Generator().manual_seed(seed) for _ in range(count)]


def _one_by_one(images: torch.Tensor, *, generator, noise, keys, prediction, cascade, **kwargs) -> RefineResult:
    """:func:`refine_batch` image by image (each with its own generator, noise, key, prediction and
    cascade decision), stacked."""
    b = images.shape[0]
    gens = per_image_generators(generator, b)
    cascades = list(cascade) if isinstance(cascade, (list, tuple)) else [cascade] * b
    parts = []
    for i in range(b):
        pred = None if prediction is None else prediction.item(i)
        parts.append(refine_batch(images[i : i + 1], generator=gens[i], keys=None if keys is None else keys[i : i + 1],
                                  noise=None if noise is None else noise[i : i + 1], prediction=pred,
                                  cascade=cascades[i], **kwargs))
    return stack_results(parts)


def stack_results(parts: list[RefineResult]) -> RefineResult:
    """Results of single images as one batch: maps concatenated, each stage's seconds summed."""
    cat = lambda name: None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    timings = {k: sum(p.timings.get(k, 0.0) for p in parts) for k in dict.fromkeys(k for p in parts for k in p.timings)}
    cascade = None if any(p.cascade is None for p in parts) else tuple(c for p in parts for c in p.cascade)
    return RefineResult(cat("refined"), cat("conditioning"), cat("valid"), parts[0].kind, parts[0].metric,
                        cat("uncertainty"), timings, cascade, parts[0].tiles, parts[0].size)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def refine_batch(
    images: torch.Tensor,
    *,
    conditioner=None,
    model=None,
    steps: int | None = None,
    ensemble: int | None = None,
    reduction: str | None = None,
    processing_res: int | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    noise: torch.Tensor | None = None,
    keys: list[str] | None = None,
    prediction: DepthPrediction | None = None,
    restore_tails: bool = True,
    batch_invariant: bool = True,
    frame: Frame | None = None,
    cascade: bool | None | list[bool | None] = None,
) -> RefineResult:
    """Refine a batch of images.

    Args:
        images: (B,3,H,W) float in [0,1], or a PIL image, a numpy (H,W,3) array (uint8, uint16
            or float in [0,1]), a uint8 tensor, or a list of them (converted explicitly; ambiguous
            input is refused, see :mod:`betterdepth_cli.core.image_input`).
        conditioner: a :class:`~betterdepth_cli.core.conditioners.Conditioner` (not needed with ``prediction``).
        model: a :class:`~betterdepth_cli.core.refiner.BetterDepthModel`, or ``None`` for the conditioner alone.
        steps, ensemble, reduction, processing_res: ``None`` takes the model card's
            defaults; ``processing_res=0`` means native resolution, capped at the card's
            ``max_processing_res`` when it has one (the longest side; the output keeps the input size).
        generator: the only source of randomness: one ``torch.Generator`` or a list with
            one per image (then an image's result does not depend on its batch).
        noise: the starting latent noise itself, (B, ensemble, C, h/f, w/f) at the padded
            processing size (overrides ``generator``; ignored by zero-noise models).
        keys: file stems (needed by the ``file:`` conditioner); prediction: a precomputed conditioner output.
        restore_tails: add back the conditioner's values beyond the 2-98 % range that the
            [-1,1] normalisation clips, so the output keeps the full range of the input layout.
        batch_invariant: run the networks one image at a time, so an image's result is bitwise the same
            alone and in any batch; ``False`` batches them (faster on some GPUs, varies in the last bits).
        frame: the images are crops (tiles) of a larger image: its scale for the card's layout
            low-pass and edge gate (:class:`~betterdepth_cli.core.types.Frame`).
        cascade: the card's first pass at a lower resolution: ``None``: where the conditioning is too
            soft (:func:`cascade_resolution`, per image); ``True`` / ``False``: whatever the blur (a
            shot's decision, :func:`frame_cascade`); or one per image. ``noise`` is the last pass's.
    Returns:
        :class:`RefineResult` at input size in the conditioner's units.
    """
    images = check_images(images)
    split = lambda p: _one_by_one(images, conditioner=conditioner, model=model, steps=steps,  # noqa: E731
                                  ensemble=ensemble, reduction=reduction, processing_res=processing_res,
                                  generator=generator, noise=noise, keys=keys, prediction=p,
                                  restore_tails=restore_tails, frame=frame, cascade=cascade)
    cascade = _batch_cascade(cascade, images.shape[0])
    if (batch_invariant and images.shape[0] > 1) or isinstance(cascade, list):  # one by one
        return split(prediction)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    pred = _condition(images, conditioner, keys, prediction)
    timings["conditioner"] = time.perf_counter() - t_start
    cond_full, valid_full = pred.values.float(), pred.valid.bool()

    if model is None or getattr(model, "classical", False):  # the conditioner alone, or the guided filter
        refined = cond_full if model is None else model.refine(cond_full, images, valid_full)
        timings["total"] = time.perf_counter() - t_start
        return RefineResult(refined, cond_full.to(refined.device), valid_full.to(refined.device), pred.kind,
                            pred.metric, None, timings)

    run = resolve_settings(model.card, steps=steps, ensemble=ensemble, reduction=reduction, processing_res=processing_res)
    cond_pass = cond_full  # what this pass is conditioned on
    first_res = cascade_resolution(model, run, cond_full, valid_full, decided=cascade)
    if first_res is None:  # the images of this batch disagree: one by one, each deciding for itself
        return split(pred)
    if first_res:  # too soft for one pass: refine at a lower resolution first, then condition on that
        cond_pass, timings["cascade"] = _first_pass(images, model, pred, run, first_res, generator, restore_tails,
                                                    batch_invariant)
    refined, uncertainty = _one_pass(model, images, cond_pass, valid_full, run, generator, noise, restore_tails,
                                     frame, timings)
    timings["total"] = time.perf_counter() - t_start
    return RefineResult(refined, cond_full.to(model.device), valid_full.to(model.device), pred.kind, pred.metric,
                        uncertainty, timings, (bool(first_res),) * images.shape[0],
                        size=run.processing_size(*images.shape[-2:]))


def _batch_cascade(cascade: bool | None | list, count: int) -> bool | None | list:
    """``refine_batch``'s ``cascade`` for a batch of ``count``: one value for all, or the list when its
    images differ (then they are refined one by one)."""
    if not isinstance(cascade, (list, tuple)):
        return cascade
    if len(cascade) != count:
        raise ValueError(f"`cascade` has {len(cascade)} entries for {count} images")
    return list(cascade) if len(set(cascade)) > 1 else cascade[0]


def _one_pass(model, images, cond, valid, run, generator, noise, restore_tails: bool, frame: Frame | None,
              timings: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode, sample and decode over the conditioning ``cond``: (refined, uncertainty) at its size;
    the seconds of each stage are added to ``timings``."""
    t0 = time.perf_counter()
    enc = _encode(model, images, cond, valid, run)
    t1 = time.perf_counter()
    z0 = _sample_latents(model, enc, run, generator, noise)
    t2 = time.perf_counter()
    out = _decode(model, enc, z0, run, cond, restore_tails, frame)
    timings["encode"], timings["sample"], timings["decode"] = t1 - t0, t2 - t1, time.perf_counter() - t2
    return out


def cascade_resolution(model, run, cond: torch.Tensor, valid: torch.Tensor, decided: bool | None = None) -> int | None:
    """The processing resolution of the card's first pass for this batch: 0 for no first pass, None when
    its images disagree (then each decides alone). ``decided``: the caller's decision (a shot's), which
    the blur does not change.

    A card's ``cascade`` ``{blur_above, scale}`` asks for a first pass at ``scale`` x the processing
    size wherever the conditioning's edges, at the processing size, are softer than ``blur_above``
    pixels (:func:`~betterdepth_cli.core.blur.estimate_blur`): more than the refiner was trained
    to sharpen in one pass. At the lower resolution the same blur is fewer pixels.
    """
    spec = model.cascade
    if spec is None or decided is not None:
        return first_pass_resolution(model, run, cond.shape[-2:]) if decided else 0
    from betterdepth_cli.core.blur import estimate_blur

    size = run.processing_size(*cond.shape[-2:])
    soft = estimate_blur(resize(cond.float(), size), resize(valid, size, mode="nearest")) > spec[0]
    if not soft.any():
        return 0
    return first_pass_resolution(model, run, cond.shape[-2:]) if soft.all() else None


def first_pass_resolution(model, run, shape: tuple[int, int]) -> int:
    """The card's first-pass processing resolution for maps of ``shape`` (``scale`` x the longest
    processing side); 0 when the card has no cascade."""
    spec = model.cascade
    if spec is None:
        return 0
    return max(MIN_SIDE, round(spec[1] * max(run.processing_size(*shape))))


def frame_cascade(model, prediction: DepthPrediction, processing_res: int | None = None) -> bool:
    """Whether :func:`refine_batch` (``cascade=None``) runs the card's first pass on this one
    frame's conditioning at ``processing_res``: the decision a shot takes on its first frame and keeps
    for every frame (:func:`~betterdepth_cli.core.shot.shot_cascade`)."""
    if model is None or getattr(model, "classical", False):
        return False
    run = resolve_settings(model.card, processing_res=processing_res)
    return bool(cascade_resolution(model, run, prediction.values.float(), prediction.valid.bool()))


def _first_pass(images, model, pred: DepthPrediction, run, first_res: int, generator, restore_tails: bool,
                batch_invariant: bool) -> tuple[torch.Tensor, float]:
    """The cascade's first pass at ``first_res``: (the map the full pass is conditioned on, its seconds).

    Its changes, upsampled, are added to the full-size conditioning: where the first pass changed
    nothing, the full pass sees the conditioner's own map to the last pixel (upsampling is linear).
    """
    cond = pred.values.float()
    first = refine_batch(images, model=model, steps=run.steps, ensemble=run.ensemble, reduction=run.reduction,
                         processing_res=first_res, generator=generator, prediction=pred, restore_tails=restore_tails,
                         batch_invariant=batch_invariant, cascade=False)
    small = resize(cond, processing_size(*cond.shape[-2:], first_res))
    return cond + first.refined.to(cond.device).float() - resize(small, cond.shape[-2:]), first.timings["total"]


def _condition(images: torch.Tensor, conditioner, keys, prediction: DepthPrediction | None = None) -> DepthPrediction:
    """The caller's ``prediction`` fitted to the images' size, else the conditioner's."""
    if prediction is not None:
        return fit_prediction(prediction, images.shape[-2:])
    if conditioner is None:
        raise UsageError("refine_batch needs a `conditioner` or a `prediction`")
    pred = _predict_bounded(conditioner, images, keys)
    _sync(torch.device(getattr(conditioner, "device", images.device)))
    return pred


@dataclass
class _Encoded:
    """The latents of one batch and what decoding needs to undo: the normalisation range
    (lo, hi) of the (filtered) conditioning, the padding, and the maps the residual rides on."""

    z_image: torch.Tensor  # [B,Ci,h/f,w/f]
    z_cond: torch.Tensor  # [B,Cd or 2Cd,h/f,w/f]
    lo: torch.Tensor  # (B,)
    hi: torch.Tensor
    padding: tuple[int, int]
    size: tuple[int, int]
    raw: torch.Tensor  # the conditioner's map at the processing size [B,1,h,w]
    valid: torch.Tensor  # its valid pixels [B,1,h,w] bool
    cond: torch.Tensor  # the map the model is conditioned on (filtered when the card says so)
    mirrored: tuple[torch.Tensor, torch.Tensor] | None = None  # (z_image, z_cond) of the mirrored inputs


def mirrored_members(model, ensemble: int) -> bool:
    """Whether the odd ensemble members see the photo and the conditioning mirrored left to right.

    A zero-noise model is deterministic, so members that differ only in their noise would all be the
    same: its members differ by a horizontal flip instead (mirrored back before the reduction), a
    test-time augmentation that the training's random flips make fair (resolve_settings runs at most two).
    """
    return bool(model.zero_noise) and ensemble > 1


def _latents(model, img: torch.Tensor, cond_n: torch.Tensor, raw_n: torch.Tensor | None):
    """Pad and encode the photo ([0,1]) and the normalised conditioning(s): (z_image, z_cond, padding)."""
    m, dtype = model.pad_multiple, model.dtype
    img_p, padding = pad_to_multiple(img * 2.0 - 1.0, m)
    z_image = model.codec.encode_image(img_p.to(dtype))
    z_cond = model.codec.encode_depth(pad_to_multiple(cond_n, m)[0].to(dtype))
    if raw_n is not None:  # the unfiltered map too, on the filtered one's scale: [B,2Cd,h/f,w/f]
        z_cond = torch.cat([z_cond, model.codec.encode_depth(pad_to_multiple(raw_n, m)[0].to(dtype))], dim=1)
    return z_image, z_cond, padding


def _encode(model, images, cond_full, valid_full, run) -> _Encoded:
    """The latents at the run's processing size (and the mirrored ones when the members are mirrored)."""
    device, size = model.device, run.processing_size(*images.shape[-2:])
    img = resize(images.to(device=device, dtype=torch.float32), size)  # [B,3,h,w]
    raw = resize(cond_full.to(device), size)  # [B,1,h,w]
    valid = resize(valid_full.to(device), size, mode="nearest")
    cond = model.filter_conditioning(raw, img, valid)  # the guided conditioning, when the card names it
    cond_n, lo, hi = normalize(cond, valid)  # [-1,1], (B,), (B,)
    raw_n = normalize_with(raw, lo, hi) if model.raw_conditioning else None
    z_image, z_cond, padding = _latents(model, img, cond_n, raw_n)
    mirrored = None
    if mirrored_members(model, run.ensemble):  # the same maps, mirrored left to right
        flip = lambda x: None if x is None else x.flip(-1)
        mirrored = _latents(model, flip(img), flip(cond_n), flip(raw_n))[:2]
    _sync(device)
    return _Encoded(z_image, z_cond, lo, hi, padding, size, raw, valid.bool(), cond, mirrored)


def _member_latents(enc: _Encoded, ensemble: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_image, z_cond) for every member, member-major [E*B,...]; odd members mirrored when encoded so."""
    if enc.mirrored is None:
        return enc.z_image.repeat(ensemble, 1, 1, 1), enc.z_cond.repeat(ensemble, 1, 1, 1)
    pick = lambda k: (enc.z_image, enc.z_cond) if k % 2 == 0 else enc.mirrored
    members = [pick(k) for k in range(ensemble)]
    return torch.cat([zi for zi, _ in members]), torch.cat([zc for _, zc in members])


def _sample_latents(model, enc: _Encoded, run, generator, noise) -> torch.Tensor:
    """DDIM from the starting noise (or zeros) to the clean latents, members stacked member-major [E*B,...]."""
    b, ensemble = enc.z_image.shape[0], run.ensemble
    z_image_e, z_cond_e = _member_latents(enc, ensemble)
    latent = (model.codec.depth_channels, *enc.z_image.shape[-2:])
    shape = (ensemble * b, *latent)
    z_noise = None
    if not model.zero_noise:
        if noise is None:
            noise = draw_noise(generator, b, ensemble, latent)
        if tuple(noise.shape) != (b, ensemble, *latent):
            raise UsageError(f"`noise` has shape {tuple(noise.shape)}; expected {(b, ensemble, *latent)}")
        z_noise = noise.transpose(0, 1).reshape(shape)  # member-major, like z_image_e
    z0 = sample(lambda z, t: model.denoise(z_image_e, z_cond_e, z, t), model.scheduler, shape, run.steps,
                device=model.device, dtype=model.dtype, zero_noise=model.zero_noise, noise=z_noise)
    z0 = model.clean_latent(model.smooth_residual(z0), z_cond_e)
    _sync(model.device)
    return z0


def _decode(model, enc: _Encoded, z0, run, cond_full: torch.Tensor, restore_tails: bool, frame: Frame | None = None):
    """Decode, de-normalise to the conditioner's units, finish and reduce the members, then resize to the
    size of its map ``cond_full``; returns (refined, uncertainty).

    Each member is finished at the processing size (:func:`_finish`: tails, layout low-pass, edge
    gate), then the members are reduced: the uncertainty is the spread of what is returned (where
    the gate keeps the conditioner it is 0), and, all finishing steps being affine, the mean of the
    finished members is the finished mean. So their cost is bounded by the processing size.
    """
    b = enc.z_image.shape[0]
    h, w = cond_full.shape[-2:]
    decoded = unpad(model.codec.decode_depth(z0).float(), enc.padding).clamp(-1.0, 1.0)  # [E*B,1,h,w]
    members = decoded.reshape(run.ensemble, b, 1, *enc.size)
    if enc.mirrored is not None:  # the odd members saw the mirrored inputs: mirror them back
        members = torch.stack([m.flip(-1) if k % 2 else m for k, m in enumerate(members)])
    e = run.ensemble
    aligned = align_members(members).clamp(-1.0, 1.0).reshape(e * b, 1, *enc.size)
    side = None if frame is None else frame.side * max(enc.size) / max(h, w)  # the frame at the processing scale
    span = None if frame is None or frame.lo is None else (frame.lo, frame.hi)
    maps = _finish(model, denormalize(aligned, enc.lo.repeat(e), enc.hi.repeat(e)), enc, e, restore_tails, side, span)
    refined, spread = reduce_members(maps.reshape(e, b, 1, *enc.size), run.reduction)
    uncertainty = None if spread is None else resize(spread, (h, w))
    refined = resize(refined, (h, w))
    _sync(model.device)
    return refined, uncertainty


def _finish(model, maps: torch.Tensor, enc: _Encoded, members: int, restore_tails: bool, side: float | None,
            span: tuple[float, float] | None) -> torch.Tensor:
    """The members' maps ([E*B,1,h,w], member-major, the conditioner's units) finished by the card.

    ``restore_tails`` adds back the tails the normalisation clipped; a card with ``layout_lowpass``
    takes the frequencies below that share of the longest side from the conditioner's map
    (:func:`~betterdepth_cli.core.layout.keep_layout`), and one with ``edge_gate`` keeps the changes
    only where the conditioner has edges, ``keep_sharp`` only where they are soft (not in a tile, whose
    conditioning is the anchor's refined map) (:mod:`~betterdepth_cli.core.edge_gate`; its gate computed
    once for all members). ``side``, ``span``: a frame's longest side at the processing scale and its
    conditioning range (:class:`~betterdepth_cli.core.types.Frame`), None for the image's own.
    """
    rep = lambda x: x.repeat(members, 1, 1, 1)  # noqa: E731 - the conditioner's maps, once per member
    if restore_tails:
        # the [-1,1] range clipped the tails of the map the residual rides on: the conditioner's, or the filtered one
        base = enc.raw if model.conditioning_filter is None or model.raw_base else enc.cond
        shape4 = (-1, 1, 1, 1)
        maps = maps + rep(base - torch.minimum(torch.maximum(base, enc.lo.reshape(shape4)), enc.hi.reshape(shape4)))
    if model.layout_lowpass:
        sigma = layout_sigma(side or max(enc.size), model.layout_lowpass)
        maps = keep_layout(maps, rep(enc.raw), rep(enc.valid), sigma)
    # keep_sharp reads the conditioner's edges; a tile's conditioning is the anchor's refined map, whose
    # sharp edges are the refiner's own work (the anchor took keep_sharp against the conditioner)
    sharp = model.keep_sharp if side is None else None
    if model.edge_gate is not None or sharp is not None:
        maps = gate_changes(maps, enc.raw, enc.valid, *(model.edge_gate or (None, None)), side=side, span=span,
                            sharp=sharp)
    return maps
