"""Plain data types shared by the core, the IO layer and the commands.

Conventions (the design notes, DESIGN.md of the shared project docs):
- images: float32 tensors (B,3,H,W) in [0,1];
- depth-like maps: float32 (B,1,H,W) with an explicit bool valid mask (B,1,H,W);
- every map carries its kind, ``"disparity"`` (inverse depth, larger is nearer)
  or ``"depth"`` (larger is farther), and whether it is metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from betterdepth_cli.core import exit_codes as codes

KINDS = ("disparity", "depth")
MIN_SIDE = 2  # the smallest image side any command or the library takes, in pixels


class BetterDepthError(Exception):
    """Base class of the errors the command line turns into one-line messages."""

    exit_code = codes.EXIT_ERROR


class UsageError(BetterDepthError):
    """A parameter is wrong (sysexits EX_USAGE)."""

    exit_code = codes.EXIT_USAGE


class InputDataError(BetterDepthError):
    """An input file exists but cannot be used (sysexits EX_DATAERR)."""

    exit_code = codes.EXIT_DATAERR


class NoInputError(BetterDepthError):
    """No input was found (sysexits EX_NOINPUT)."""

    exit_code = codes.EXIT_NOINPUT


class ModelNotFoundError(BetterDepthError):
    """A model could not be found locally and cannot be downloaded (EX_UNAVAILABLE)."""

    exit_code = codes.EXIT_UNAVAILABLE


class ModelError(BetterDepthError):
    """A model failed while running (an exception inside torch/transformers/diffusers; EX_SOFTWARE)."""

    exit_code = codes.EXIT_SOFTWARE


class OutputError(BetterDepthError):
    """An output cannot be created (sysexits EX_CANTCREAT)."""

    exit_code = codes.EXIT_CANTCREAT


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"`kind` must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


@dataclass
class DepthPrediction:
    """A batch of depth-like maps with their meaning.

    values: (B,1,H,W) float32; valid: (B,1,H,W) bool (numpy arrays are taken as tensors). Pixels whose
    value is not finite (NaN, inf: a hole in a map from another tool) are invalid, and their value 0.
    """

    values: Any
    valid: Any
    kind: str
    metric: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        check_kind(self.kind)
        self.values, self.valid = _checked_maps(self.values, self.valid)

    def item(self, i: int) -> "DepthPrediction":
        """Image ``i`` of the batch, as a batch of one (views, not copies)."""
        return DepthPrediction(self.values[i : i + 1], self.valid[i : i + 1], self.kind, self.metric, self.source)


def _checked_maps(values: Any, valid: Any) -> tuple[Any, Any]:
    """A prediction's maps as (B,1,H,W) tensors of one shape, non-finite values made invalid holes of 0."""
    import torch

    values, valid = torch.as_tensor(values), torch.as_tensor(valid)
    if values.ndim != 4 or values.shape[1] != 1 or values.shape != valid.shape:
        raise UsageError(f"a prediction's values and valid mask must both be (B,1,H,W), got {tuple(values.shape)} "
                         f"and {tuple(valid.shape)}")
    if values.is_floating_point():
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            valid = valid.bool() & finite
            values = torch.where(finite, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return values, valid


@dataclass(frozen=True)
class Frame:
    """The whole image that the refined images are crops of (tiles of a plate), at their pixel scale.

    ``side``: its longest side in pixels; ``lo``, ``hi``: the conditioning's 2 % / 98 % quantiles
    over it (None: each crop's own). The card's layout low-pass and edge gate then act at the
    frame's scale (sigma = share x the frame's side; evidence per frame side and range), so tiles
    agree with the whole-frame anchor instead of each being treated as an image of its own.
    """

    side: float
    lo: float | None = None
    hi: float | None = None


@dataclass
class RefineResult:
    """What :func:`betterdepth_cli.core.pipeline.refine_batch` returns.

    refined, conditioning, uncertainty: (B,1,H,W) float32 at input size, in the
    conditioner's units (uncertainty in the same units, ``None`` without ensembling).
    cascade: per image, whether it took the card's first pass at a lower resolution (a tiled plate:
    its anchor's); ``None`` where no refiner ran (the conditioner alone, the guided filter).
    tiles: ``(size, overlap)`` when the images were refined in tiles, else ``None``.
    size: ``(height, width)`` the refiner's last pass ran at (a tiled plate's own: its tiles run at
    its pixel scale); ``None`` where no refiner ran.
    """

    refined: Any
    conditioning: Any
    valid: Any
    kind: str
    metric: bool
    uncertainty: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    cascade: tuple[bool, ...] | None = None
    tiles: tuple[int, int] | None = None
    size: tuple[int, int] | None = None

    def item(self, i: int) -> "RefineResult":
        """Image ``i`` as a batch of one (views; the batch's timings)."""
        one = lambda t: None if t is None else t[i : i + 1]  # noqa: E731
        return RefineResult(one(self.refined), one(self.conditioning), one(self.valid), self.kind, self.metric,
                            one(self.uncertainty), self.timings, one(self.cascade), self.tiles, self.size)

    def route(self, i: int) -> dict[str, Any]:
        """How image ``i`` was refined, as its sidecar records it: ``cascade``, ``tiles`` and
        ``refined_size`` ([width, height] of the refiner's last pass; empty where no refiner ran)."""
        if self.cascade is None:
            return {}
        return {"cascade": bool(self.cascade[i]), "tiles": None if self.tiles is None else list(self.tiles),
                "refined_size": None if self.size is None else [self.size[1], self.size[0]]}
