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

import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch


@dataclass
class DepthOutput:
    """A batch of refined maps and what they mean.

    ``depth``, ``conditioning``, ``uncertainty``: torch (B,1,H,W) float32 at input size, in the
    conditioner's units (``uncertainty`` is ``None`` without ensembling); ``valid`` (B,1,H,W) bool.
    ``kind`` is ``"depth"`` or ``"disparity"``; ``metric`` says whether the units are metres.
    The ``*_np`` properties are numpy (B,H,W) views of the same maps. ``settings``: the call's, as
    ``refine``'s sidecars record them; ``routes``: per image, how it was refined (``cascade``: the
    card's first pass at a lower resolution; ``tiles``: [size, overlap] when in tiles).
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
        from betterdepth_cli.jobs.plan import relative_path

        meta = self.sidecar(index)
        if source is not None:
            meta["source"] = relative_path(source, Path(path).absolute().parent)
        write_png16(path, self.depth_np[index], self.valid_np[index], meta)
        return Path(path)


class BetterDepthPipeline:
    """A conditioner and a refiner, called on images.

    Build it with :meth:`from_pretrained`; call it on a PIL image, a numpy HWC array (uint8,
    uint16 or float in [0,1]), a torch tensor (CHW or BCHW) or a list of same-size images; pass a
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
            device, dtype: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; ``"fp32"``, ``"fp16"``,
                ``"bf16"`` or a torch dtype.
            refine: ``False`` returns the conditioner's map alone.
        """
        from betterdepth_cli.conditioner_registry import get_conditioner
        from betterdepth_cli.core.refiner import load_model
        from betterdepth_cli.core.devices import torch_dtype
        from betterdepth_cli.core.settings import card_defaults

        tdtype = torch_dtype(dtype)
        loaded = load_model(model, device=device, dtype=tdtype) if refine else None
        spec = conditioner or card_defaults(getattr(loaded, "card", None))["conditioner"]
        cond = get_conditioner(spec, device=device, dtype=tdtype)
        from betterdepth_cli.core.model_names import model_record

        record = {} if loaded is None else model_record(model)  # as refine's sidecars name it
        return cls(cond, loaded, conditioner_name=spec, model_name=record.get("model"),
                   model_card=record.get("model_card"))

    def save_pretrained(self, path: str | Path) -> Path:
        """Save the refiner (weights and card) to ``path``; :meth:`from_pretrained` loads it back."""
        from betterdepth_cli.core.types import UsageError

        if self.model is None or not hasattr(self.model, "save"):
            raise UsageError("this pipeline has no trained refiner to save (conditioner only, or the guided filter)")
        return self.model.save(path)

    def settings(self, **overrides: Any):
        """The :class:`~betterdepth_cli.core.settings.InferenceSettings` a call with ``overrides`` runs."""
        from betterdepth_cli.core.settings import resolve_settings

        return resolve_settings(getattr(self.model, "card", None), **overrides)

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
    ) -> DepthOutput:
        """Refine ``images``. ``generator`` (one, or one per image) overrides ``seed``; by default
        every image draws its noise from its own generator seeded with ``seed``, as ``refine`` does.
        ``tile``: as ``refine --tile`` (``None``: tiles above the card's ``tile_above``, 0: never,
        ``SIZE`` or ``"SIZE:OVERLAP"``: tiles of that size); a plate refined in tiles gives the same
        map as through ``refine``."""
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
        run = self.settings(**chosen) if self._samples() else None
        plates = as_image_list(images)
        gens = generator if generator is not None else seeded_generators(seed, len(plates))
        res = refine_images(plates, model=self.model, conditioner=self.conditioner, tile=size, overlap=overlap,
                            generator=gens, **chosen)  # fmt: skip
        settings = self._record(run, seed)
        if run is not None and size is not None:  # as refine's sidecar: recorded when asked for (else the card decides)
            settings.update(tile=size, tile_overlap=overlap)
        return _output(res, settings, {"call": time.perf_counter() - t0})

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
        from betterdepth_cli.core.image_input import as_image_batch
        from betterdepth_cli.core.shot import refine_shot

        chosen = {"steps": steps, "ensemble": ensemble, "reduction": reduction, "processing_res": processing_res}
        run = self.settings(**chosen) if self._samples() else None
        names = iter(keys) if keys is not None else None
        stream = ((as_image_batch(frame), None if names is None else str(next(names))) for frame in frames)
        settings = {**self._record(run, seed), "shot_aligned": not per_frame}
        for res in refine_shot(stream, conditioner=self.conditioner, model=self.model, consistent=not per_frame,
                               seed=seed, **chosen):  # fmt: skip
            yield _output(res, settings, {})

    def _record(self, run, seed: int) -> dict[str, Any]:
        """The settings a sidecar records for a call (those of ``refine``)."""
        settings: dict[str, Any] = {"conditioner": self.conditioner_name, "model": self.model_name, "seed": seed}
        if run is not None:
            settings.update(steps=run.steps, ensemble=run.ensemble, reduction=run.reduction,
                            processing_res=run.processing_res)  # fmt: skip
        if self.model_card is not None:  # as refine's sidecar: outputs of another card are stale
            settings["model_card"] = self.model_card
        return settings

    def _samples(self) -> bool:
        """Whether the refiner samples (a diffusion model), so the inference settings apply."""
        return self.model is not None and not getattr(self.model, "classical", False)


def _parse_tile(tile: int | str | None) -> tuple[int | None, int | None]:
    """``tile`` as (size, overlap): ``None`` stays automatic; an int or ``"SIZE[:OVERLAP]"`` as ``--tile``."""
    if tile is None:
        return None, None
    from betterdepth_cli.core.tiling import parse_tile
    from betterdepth_cli.core.types import UsageError

    try:
        return parse_tile(str(tile))
    except ValueError as exc:
        raise UsageError(str(exc).replace("`--tile`", "`tile`")) from None


def _output(res, settings: dict[str, Any], timings: dict[str, float]) -> DepthOutput:
    """A :class:`DepthOutput` of a :class:`~betterdepth_cli.core.types.RefineResult`."""
    from betterdepth_cli.io.depth_files import units_for

    return DepthOutput(res.refined, res.conditioning, res.valid, res.kind, bool(res.metric),
                       units_for(res.kind, bool(res.metric)), res.uncertainty, {**res.timings, **timings},
                       dict(settings), [res.route(i) for i in range(res.refined.shape[0])])  # fmt: skip
