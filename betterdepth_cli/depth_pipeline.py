"""The library's entry point: :class:`BetterDepthPipeline`.

    from PIL import Image
    from betterdepth_cli import BetterDepthPipeline

    pipe = BetterDepthPipeline.from_pretrained()            # embedded refiner + builtin conditioner
    out = pipe(Image.open("photo.jpg"), seed=0)
    out.save_png16("photo_depth.png")                       # 16-bit PNG + JSON sidecar, like `refine`
    depth = out.depth_np[0]                                 # (H, W) float32 in the conditioner's units

Settings (steps, ensemble, reduction, processing resolution) come from the model card
and are resolved in :func:`betterdepth_cli.core.settings.resolve_settings`, the same
function ``refine`` and ``eval`` use; with the same seed an image gives the same map
alone, in any batch, through ``refine`` and through ``eval``.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from betterdepth_cli.core.types import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


_FLAG = re.compile(r"--([a-z][a-z-]*)(?: ([^\s`;,)]+))?")


def _library_names(message: str) -> str:
    """A usage error's text with the command line's flags as the library's keywords (``--dtype fp16``
    -> ``dtype=fp16``, ``--processing-res`` -> ``processing_res``)."""
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_") + (f"={m.group(2)}" if m.group(2) else ""), message)


def _library_errors(fn):
    """Usage errors raised under ``fn`` (a function or a generator function) name keywords, not flags."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UsageError as exc:
                raise UsageError(_library_names(str(exc))) from None
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            raise UsageError(_library_names(str(exc))) from None
    return call


@dataclass
class DepthOutput:
    """A batch of refined maps and what they mean.

    ``depth``, ``conditioning``, ``uncertainty``: torch (B,1,H,W) float32 at input size, in the
    conditioner's units (``uncertainty`` is ``None`` without ensembling); ``valid`` (B,1,H,W) bool.
    ``kind`` is ``"depth"`` or ``"disparity"``; ``metric`` says whether the units are metres.
    The ``*_np`` properties are numpy (B,H,W) views of the same maps. ``settings``: the call's, as
    ``refine``'s sidecars record them; ``routes``: per image, how it was refined (``cascade``: the
    card's first pass at a lower resolution; ``tiles``: [size, overlap] when in tiles;
    ``refined_size``: [width, height] the refiner ran at). Where ``valid`` is False (holes in the
    conditioning) the maps hold no depth: mask them with ``valid`` (``refine``'s EXR and NPY hold NaN
    there). A shot's frames are saved with one range, as ``refine`` saves them, by :func:`save_shot_png16`.
    """

    depth: "torch.Tensor"
    conditioning: "torch.Tensor"
    valid: "torch.Tensor"
    kind: str
    metric: bool
    units: str
    uncertainty: "torch.Tensor | None" = None
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    routes: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.depth.shape[0])

    @staticmethod
    def _np(t):
        return None if t is None else t.detach().float().cpu().numpy()[:, 0]

    @property
    def depth_np(self) -> "np.ndarray":
        return self._np(self.depth)

    @property
    def conditioning_np(self) -> "np.ndarray":
        return self._np(self.conditioning)

    @property
    def valid_np(self) -> "np.ndarray":
        return self.valid.detach().cpu().numpy()[:, 0]

    @property
    def uncertainty_np(self) -> "np.ndarray | None":
        return self._np(self.uncertainty)

    def sidecar(self, index: int = 0) -> dict[str, Any]:
        """The sidecar fields ``refine`` writes for image ``index`` (kind, metric, units, the call's settings,
        how the image was refined)."""
        from betterdepth_cli.io.depth_files import make_sidecar

        return make_sidecar(kind=self.kind, metric=self.metric, **self.settings,
                            **(self.routes[index] if self.routes else {}))

    def save_png16(self, path: str | Path, index: int = 0, source: str | Path | None = None) -> Path:
        """Write image ``index``'s map as a 16-bit PNG plus its JSON sidecar (the range and meaning), as
        ``refine`` writes them. ``source``: the photo's file, recorded relative to the sidecar's folder."""
        from betterdepth_cli.io.depth_files import write_png16

        meta = _png_meta(self.sidecar(index), path, source)
        write_png16(path, self.depth_np[index], self.valid_np[index], meta)
        return Path(path)


def _png_meta(meta: dict[str, Any], path: str | Path, source: str | Path | None) -> dict[str, Any]:
    """A sidecar's fields for a 16-bit PNG at ``path`` (which must be named ``.png``), ``source`` recorded
    relative to its folder."""
    from betterdepth_cli.jobs.plan import relative_path

    if Path(path).suffix.lower() != ".png":
        raise UsageError(f"{path}: a 16-bit PNG is named .png (got {Path(path).suffix or 'no extension'})")
    if source is not None:
        meta["source"] = relative_path(source, Path(path).absolute().parent)
    return meta


def save_shot_png16(outputs: Iterable["DepthOutput"], paths: Iterable[str | Path],
                    sources: Iterable[str | Path | None] | None = None,
                    frames: Iterable[int | None] | None = None) -> list[Path]:
    """Write a shot's frames (the :class:`DepthOutput` of each frame, from :meth:`BetterDepthPipeline.shot`,
    in order) as 16-bit PNGs with their sidecars, as ``refine`` writes a video's or a sequence's: one
    range for every frame (``"range": "shot"``, and ``shot_range``, the shot's 2-98 % range that
    ``export-ply`` maps every frame by), so the PNGs add no flicker. ``sources``: the photos' files and
    ``frames``: their frame numbers, recorded as ``refine`` records them. Holds the shot's float maps."""
    from betterdepth_cli.core.depth_values import ShotRange
    from betterdepth_cli.io.depth_files import write_png16

    shot, paths = list(outputs), [Path(p) for p in paths]
    sources = [None] * len(shot) if sources is None else list(sources)
    numbers = [None] * len(shot) if frames is None else list(frames)
    if not len(shot) == len(paths) == len(sources) == len(numbers):
        raise UsageError(f"save_shot_png16: {len(shot)} frames, {len(paths)} paths, {len(sources)} sources and "
                         f"{len(numbers)} frame numbers")
    span = ShotRange()
    for out in shot:
        for i in range(len(out)):
            span.add(out.depth_np[i], out.valid_np[i])
    written = []
    for out, path, source, number in zip(shot, paths, sources, numbers):
        meta = {**_png_meta(out.sidecar(0), path, source), "frame": number, "range": "shot",
                "shot_range": list(span.robust())}
        write_png16(path, out.depth_np[0], out.valid_np[0], meta, vrange=span.full())
        written.append(path)
    return written


class BetterDepthPipeline:
    """A conditioner and a refiner, called on images.

    Build it with :meth:`from_pretrained`; call it on an image file's path, a PIL image, a numpy HWC
    array (uint8, uint16 or float in [0,1]), a torch tensor (CHW or BCHW) or a list of same-size images; pass a
    video's or a sequence's frames to :meth:`shot` to have them co-aligned as ``refine`` does.
    """

    def __init__(self, conditioner, model=None, *, conditioner_name: str = "", model_name: str | None = None,
                 model_card: str | None = None):
        self.conditioner = conditioner
        self.model = model
        self.conditioner_name = conditioner_name or getattr(conditioner, "name", "")
        self.model_name = model_name
        self.model_card = model_card  # the digest of the model's card as saved (refine's sidecars record it)

    @classmethod
    @_library_errors
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        conditioner: str | None = None,
        *,
        device: str = "cpu",
        dtype: "str | torch.dtype" = "fp32",
        refine: bool = True,
    ) -> "BetterDepthPipeline":
        """Load a refiner and a conditioner by the names ``refine`` takes.

        Args:
            model: ``None``/``"default"`` (the embedded refiner), ``"guided"`` (the classical
                guided filter), a BetterDepth model folder, or a hub id.
            conditioner: a registry name, ``hf:<id or folder>`` or ``file:<folder>``;
                ``None`` takes the model card's default (``builtin`` for the embedded model).
            device, dtype: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``"fp32"``, ``"fp16"``,
                ``"bf16"`` or a torch dtype (checked as ``refine`` checks them: fp16 needs a GPU).
            refine: ``False`` returns the conditioner's map alone.
        """
        from betterdepth_cli.conditioner_registry import get_conditioner
        from betterdepth_cli.core.devices import check_dtype_for_device, parse_dtype, resolve_device, torch_dtype
        from betterdepth_cli.core.refiner import load_model
        from betterdepth_cli.core.settings import card_defaults

        device = resolve_device(device)
        tdtype = torch_dtype(dtype)
        check_dtype_for_device(parse_dtype(str(tdtype).replace("torch.", "")), device.split(":")[0])
        loaded = load_model(model, device=device, dtype=tdtype) if refine else None
        spec = conditioner or card_defaults(getattr(loaded, "card", None))["conditioner"]
        cond = get_conditioner(spec, device=device, dtype=tdtype)
        from betterdepth_cli.core.model_names import model_record

        record = {} if loaded is None else model_record(model)  # as refine's sidecars name it
        return cls(cond, loaded, conditioner_name=spec, model_name=record.get("model"),
                   model_card=record.get("model_card"))

    def save_pretrained(self, path: str | Path) -> Path:
        """Save the refiner (weights and card) to ``path``; :meth:`from_pretrained` loads it back."""
        if self.model is None or not hasattr(self.model, "save"):
            raise UsageError("this pipeline has no trained refiner to save (conditioner only, or the guided filter)")
        return self.model.save(path)

    @_library_errors
    def settings(self, **overrides: Any):
        """The :class:`~betterdepth_cli.core.settings.InferenceSettings` a call with ``overrides`` runs."""
        from betterdepth_cli.core.settings import resolve_settings

        return resolve_settings(getattr(self.model, "card", None), **overrides)

    @_library_errors
    def __call__(
        self,
        images: Any,
        *,
        steps: int | None = None,
        ensemble: int | None = None,
        reduction: str | None = None,
        processing_res: int | None = None,
        seed: int = 0,
        generator: "torch.Generator | list[torch.Generator] | None" = None,
        tile: int | str | None = None,
        keys: "str | list[str] | None" = None,
    ) -> DepthOutput:
        """Refine ``images`` (a path, a PIL image, an array or tensor, or a list of them). ``generator``
        (one, or one per image) overrides ``seed`` (the sidecar then records no seed); by default
        every image draws its noise from its own generator seeded with ``seed``, as ``refine`` does.
        ``tile``: as ``refine --tile`` (``None``: tiles above the card's ``tile_above``, 0: never,
        ``SIZE`` or ``"SIZE:OVERLAP"``: tiles of that size); a plate refined in tiles gives the same
        map as through ``refine``. ``keys``: the images' names (file stems), one per image, for the
        ``file:`` conditioner."""
        from betterdepth_cli.core.image_input import as_image_list
        from betterdepth_cli.core.pipeline import seeded_generators
        from betterdepth_cli.core.tiled import refine_images
        from betterdepth_cli.core.tiling import tile_resolution_note

        t0 = time.perf_counter()
        size, overlap = _parse_tile(tile)
        note = tile_resolution_note(size, processing_res, "tile")
        if note:
            warnings.warn(note[len("note: "):], stacklevel=2)
        chosen = {"steps": steps, "ensemble": ensemble, "reduction": reduction,
                  "processing_res": 0 if size else processing_res}  # tiles work at the image's own scale
        plates = as_image_list(_read_paths(images))
        gens = generator if generator is not None else seeded_generators(seed, len(plates))
        names = _keys(keys, len(plates))
        res = refine_images(plates, model=self.model, conditioner=self.conditioner, tile=size, overlap=overlap,
                            generator=gens, keys=names, **chosen)  # fmt: skip
        settings = self._record(chosen, None if generator is not None else seed)
        if self._samples() and size is not None:  # as refine's sidecar: recorded when asked for (else the card decides)
            settings.update(tile=size, tile_overlap=overlap)
        return _output(res, settings, {"call": time.perf_counter() - t0})

    @_library_errors
    def shot(
        self,
        frames: Iterable[Any],
        *,
        keys: Iterable[str] | None = None,
        per_frame: bool = False,
        steps: int | None = None,
        ensemble: int | None = None,
        reduction: str | None = None,
        processing_res: int | None = None,
        seed: int = 0,
    ) -> Iterator[DepthOutput]:
        """Refine the frames of ONE shot (a video's or a sequence's, in order) as ``refine`` does a
        video or a sequence: the conditioner's maps co-aligned to the shot's units (its scale and shift
        jumps do not reach the output; the first frame defines the units), one noise field, frames
        above the card's ``tile_above`` in tiles. Streams: yields one :class:`DepthOutput` per frame,
        holding one frame at a time. ``keys``: the frames' names, for the ``file:`` conditioner.
        ``per_frame``: each frame on its own (``--per-frame``)."""
        from betterdepth_cli.core.shot import refine_shot

        chosen = {"steps": steps, "ensemble": ensemble, "reduction": reduction, "processing_res": processing_res}
        settings = {**self._record(chosen, seed), "shot_aligned": not per_frame}
        stream = _frames(frames, keys)
        for res in refine_shot(stream, conditioner=self.conditioner, model=self.model, consistent=not per_frame,
                               seed=seed, **chosen):  # fmt: skip
            yield _output(res, settings, {})

    def _record(self, chosen: dict[str, Any], seed: int | None) -> dict[str, Any]:
        """The settings a sidecar records for a call, as ``refine``'s (``jobs.settings.RefineSettings``)
        with the same flags; ``seed`` None: the caller's own generators (no seed to record)."""
        from betterdepth_cli.core.settings import check_seed, unused_option_notes
        from betterdepth_cli.jobs.settings import RefineSettings

        if seed is not None:
            seed = check_seed(seed)
        run = self.settings(**chosen)
        if self.model is not None:  # the keywords the refiner does not apply (no seed: the library's default is 0)
            card = getattr(self.model, "card", {})
            for note in unused_option_notes(card, run.ensemble, **{k: v for k, v in chosen.items() if v}):
                warnings.warn(_library_names(note[len("note: "):]), stacklevel=3)
        fields = RefineSettings(out_dir=Path("."), conditioner=self.conditioner_name, model=self.model_name,
                                model_card=self.model_card, refine=self.model is not None, steps=run.steps,
                                ensemble=run.ensemble, reduction=run.reduction, processing_res=run.processing_res,
                                seed=0 if seed is None else seed).sidecar_fields()  # fmt: skip
        if seed is None:
            fields["seed"] = None
        return fields

    def _samples(self) -> bool:
        """Whether the refiner samples (a diffusion model), so the inference settings apply."""
        return self.model is not None and not getattr(self.model, "classical", False)


def _read_paths(images: Any) -> Any:
    """Paths (str or ``os.PathLike``, alone or in a list) read as ``refine`` reads them (16 bits kept,
    EXR, EXIF orientation applied: :func:`betterdepth_cli.io.images.read_image`); other images as given."""
    import os

    if isinstance(images, (str, os.PathLike)):
        from betterdepth_cli.io.images import read_image

        return read_image(images)
    if isinstance(images, (list, tuple)):
        return [_read_paths(x) for x in images]
    return images


def _keys(keys: "str | list[str] | None", count: int) -> list[str] | None:
    """The images' names, one per image (a single name for a single image)."""
    if keys is None:
        return None
    names = [str(k) for k in ([keys] if isinstance(keys, (str, Path)) else keys)]
    if len(names) != count:
        raise UsageError(f"`keys`: {len(names)} names for {count} images; pass one per image")
    return names


def _frames(frames: Iterable[Any], keys: Iterable[str] | None) -> Iterator[tuple[Any, str | None]]:
    """A shot's frames as (one image (1,3,H,W), its name), each frame one image; as many names as frames."""
    from betterdepth_cli.core.image_input import as_image_batch

    names = None if keys is None else iter(keys)
    for n, frame in enumerate(frames):
        image = as_image_batch(_read_paths(frame))
        if image.shape[0] != 1:
            raise UsageError(f"shot: frame {n} holds {image.shape[0]} images; pass one image per frame")
        name = None if names is None else next(names, None)
        if names is not None and name is None:
            raise UsageError(f"shot: `keys` ran out at frame {n}; pass one name per frame")
        yield image, None if name is None else str(name)


def _parse_tile(tile: int | str | None) -> tuple[int | None, int | None]:
    """``tile`` as (size, overlap): ``None`` stays automatic; an int or ``"SIZE[:OVERLAP]"`` as ``--tile``."""
    if tile is None:
        return None, None
    from betterdepth_cli.core.tiling import parse_tile

    try:
        return parse_tile(str(tile))
    except ValueError as exc:
        raise UsageError(str(exc)) from None  # in the library's words by _library_errors (`tile`)


def _output(res, settings: dict[str, Any], timings: dict[str, float]) -> DepthOutput:
    """A :class:`DepthOutput` of a :class:`~betterdepth_cli.core.types.RefineResult`."""
    from betterdepth_cli.io.depth_files import units_for

    return DepthOutput(res.refined, res.conditioning, res.valid, res.kind, bool(res.metric),
                       units_for(res.kind, bool(res.metric)), res.uncertainty, {**res.timings, **timings},
                       dict(settings), [res.route(i) for i in range(res.refined.shape[0])])  # fmt: skip
