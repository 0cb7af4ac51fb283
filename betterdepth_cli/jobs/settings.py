"""The settings of one ``refine`` job, resolved (no ``None`` meaning "default")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from betterdepth_cli.core.settings import DEFAULTS, check_seed, resolve_settings
from betterdepth_cli.core.types import UsageError

DEFAULT_FORMATS = ("png16",)


@dataclass
class RefineSettings:
    """Everything the engine needs, already resolved (no ``None`` meaning "default").

    ``model`` and ``conditioner`` are the names recorded in sidecars; the loaded
    objects are passed to :func:`run` separately. ``processing_res`` 0 = native.
    """

    out_dir: Path
    formats: tuple[str, ...] = DEFAULT_FORMATS
    conditioner: str = "builtin"
    model: str | None = "default"
    model_card: str | None = None  # the model card's digest (core.settings.card_digest): a changed model makes outputs stale
    refine: bool = True
    steps: int = DEFAULTS["steps"]
    ensemble: int = DEFAULTS["ensemble"]
    reduction: str = DEFAULTS["reduction"]
    processing_res: int = DEFAULTS["processing_res"]
    seed: int = 0
    batch_size: int = 1
    overwrite: bool = False
    continue_on_error: bool = False
    preview_video: bool = False
    per_frame: bool = False  # True: no shot-level co-alignment of a shot's conditioning (core.shot_align)
    tile: int | None = None  # tiled refinement: None = automatic (the card's tile_above), 0 = off, N = tile side
    tile_overlap: int | None = None  # pixels; None = the card's tile_overlap (or 1/8 of the tile)
    spill_bytes: int = 1 << 30  # float frames of open shots kept in memory before spilling
    spill_frames: int = 8  # ... and at most this many: a shot's memory does not grow with its length
    prefetch: int = 0  # decoded images queued ahead of the model (0: 2 x batch_size + 2)
    max_batch_pixels: int = 64_000_000  # a batch is cut when its images exceed this many pixels
    fps: float = 24.0  # preview video rate when the source does not say

    def __post_init__(self) -> None:
        from betterdepth_cli.io.outputs import check_formats

        self.out_dir = Path(self.out_dir)
        self.formats = check_formats(self.formats)
        if self.batch_size < 1:
            raise UsageError(f"`--batch-size` must be >= 1, got {self.batch_size}")
        resolve_settings(steps=self.steps, ensemble=self.ensemble, reduction=self.reduction,
                         processing_res=self.processing_res)  # the one place settings are checked
        self.seed = check_seed(self.seed)
        if "uncertainty" in self.formats and (not self.refine or self.ensemble < 2):
            raise UsageError(
                "`--format uncertainty` needs the ensemble spread: use --ensemble 2 or more (and no --no-refine)"
            )

    def sidecar_fields(self) -> dict:
        """The run's fields of every sidecar (see docs: output files)."""
        if not self.refine:
            return {"model": None, "conditioner": self.conditioner, "steps": None, "ensemble": None,
                    "reduction": None, "seed": None, "processing_res": None, "refined": False}  # fmt: skip
        fields = {"model": self.model, "conditioner": self.conditioner, "steps": self.steps,
                  "ensemble": self.ensemble, "reduction": self.reduction, "seed": self.seed,
                  "processing_res": self.processing_res}  # fmt: skip
        if self.model_card is not None:
            fields["model_card"] = self.model_card
        if self.tile is not None:  # --tile given (absent: automatic, by the card)
            fields.update(tile=self.tile, tile_overlap=self.tile_overlap)
        return fields
