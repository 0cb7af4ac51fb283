"""The pure parts of tiled refinement: the tile grid, feather weights, the robust fit to the anchor,
and sampling a low-resolution map onto a full-resolution region.

A plate is cut into a product grid of overlapping tiles (every tile of a tile row shares its rows,
every tile of a column its columns). Tile starts are multiples of the model's ``pad_multiple`` so a
tile's latent cells sit on the plate's latent grid (its noise is a crop of one plate-wide field).

Feathering: along each axis a tile's weight rises from ~0 to 1 across its overlap with the previous
tile and falls back across its overlap with the next one (a smoothstep ramp, so ``w(t) + w(1 - t) = 1``:
two overlapping tiles sum to exactly 1; edges on the plate's border are not feathered). A tile's
weight is the outer product of its row and column weights, so the sum over all tiles is the outer
product of the per-axis sums: normalising never needs a plate-sized weight array.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from betterdepth_cli.core.align import fit_scale_shift

#: Defaults when a model card names none (its ``defaults``: ``tile``, ``tile_overlap``, ``tile_above``).
TILE = 1024
OVERLAP_SHARE = 0.125  # overlap as a share of the tile side when not given
#: The robust fit: pixels whose residual exceeds this many robust sigmas (1.4826 x MAD) are left out.
FIT_SIGMAS = 2.5
FIT_ITERATIONS = 3


def parse_tile(text: str) -> tuple[int, int | None]:
    """``"SIZE"`` or ``"SIZE:OVERLAP"`` (pixels) -> (size, overlap or None); ``"0"``/``"off"`` -> (0, None)."""
    text = str(text).strip().lower()
    if text in ("0", "off", "none"):
        return 0, None
    size_s, _, overlap_s = text.partition(":")
    try:
        size = int(size_s)
        overlap = int(overlap_s) if overlap_s else None
    except ValueError:
        raise ValueError(f"`--tile` must be SIZE or SIZE:OVERLAP in pixels (or 0/off), got {text!r}") from None
    if size < 64:
        raise ValueError(f"`--tile` size must be at least 64 pixels, got {size}")
    if overlap is not None and not 0 <= overlap < size // 2:
        raise ValueError(f"`--tile` overlap must be >= 0 and under half the tile ({size // 2}), got {overlap}")
    return size, overlap


def tile_resolution_note(tile: int | None, processing_res: int | None, what: str = "--tile") -> str | None:
    """Tiles refine at the plate's own pixel scale: with a tile size, a processing resolution other
    than native (0) is not used. The note that says so when one was asked for, else None."""
    if tile and processing_res:
        return (f"note: {what} {tile} refines in tiles at the image's own pixel scale: processing resolution "
                f"{processing_res} is not used (give {what} 0 to refine whole at it)")
    return None


def tiling_for(height: int, width: int, defaults: dict, tile: int | None, overlap: int | None,
               processing_res: int | None) -> tuple[int, int] | None:
    """(tile, overlap) when an image of this size is refined in tiles, else ``None``.

    ``tile``: ``None`` = automatic (tiles when the longest side exceeds the card's ``tile_above``,
    which defaults to its ``max_processing_res``, and the run is at native resolution,
    ``processing_res`` 0), 0 = never, N = tiles of N pixels whenever the image is larger than one tile.
    """
    if tile == 0:
        return None
    size = int(tile or defaults.get("tile") or min(TILE, int(defaults.get("max_processing_res") or TILE)))
    if tile is None:
        above = int(defaults.get("tile_above") or defaults.get("max_processing_res") or 0)
        if not above or processing_res or max(height, width) <= above:
            return None
    if max(height, width) <= size:
        return None
    if overlap is None:
        overlap = int(defaults.get("tile_overlap") or round(size * OVERLAP_SHARE)) if tile is None else round(
            size * OVERLAP_SHARE)
    return size, min(int(overlap), size // 2 - 1)


def model_tiling(model, height: int, width: int, tile: int | None = None, overlap: int | None = None,
                 processing_res: int | None = None) -> tuple[int, int] | None:
    """:func:`tiling_for` with ``model``'s card; ``None`` for no model or the guided filter (whole at any
    size). The one decision of ``refine``, ``eval`` and the library."""
    if model is None or getattr(model, "classical", False):
        return None
    return tiling_for(height, width, model.defaults, tile, overlap, processing_res)


def axis_tiles(length: int, size: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """[(start, stop)] covering ``0..length`` with tiles of ``size`` overlapping by at least
    ``overlap - multiple``; starts are multiples of ``multiple``; the last tile ends at ``length``
    (it may be up to ``multiple - 1`` longer than ``size``)."""
    if length <= size:
        return [(0, length)]
    stride = size - overlap
    if stride <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {size}")
    n = math.ceil((length - overlap) / stride)
    last = (length - size) // multiple * multiple
    n = max(n, 2)
    starts = sorted({round(i * last / (n - 1) / multiple) * multiple for i in range(n)})
    return [(s, s + size) for s in starts[:-1]] + [(starts[-1], length)]


def _smoothstep(t: torch.Tensor) -> torch.Tensor:
    return t * t * (3.0 - 2.0 * t)


def axis_weights(tiles: list[tuple[int, int]], k: int) -> torch.Tensor:
    """Feather weights (float64, tile length) of tile ``k`` along one axis (see the module docstring)."""
    start, stop = tiles[k]
    w = torch.ones(stop - start, dtype=torch.float64)
    if k > 0:
        ov = tiles[k - 1][1] - start
        if ov > 0:
            w[:ov] *= _smoothstep((torch.arange(ov, dtype=torch.float64) + 0.5) / ov)
    if k < len(tiles) - 1:
        ov = stop - tiles[k + 1][0]
        if ov > 0:
            w[-ov:] *= _smoothstep((torch.arange(ov, 0, -1, dtype=torch.float64) - 0.5) / ov)
    return w


def axis_weight_sum(tiles: list[tuple[int, int]], length: int) -> torch.Tensor:
    """Sum over tiles of :func:`axis_weights` at each position (float64, ``length``)."""
    total = torch.zeros(length, dtype=torch.float64)
    for k, (start, stop) in enumerate(tiles):
        total[start:stop] += axis_weights(tiles, k)
    return total


def tile_borders(tiles: list[tuple[int, int]], length: int) -> list[int]:
    """Positions of the tile edges inside ``0..length`` (starts and stops, the plate's border excluded)."""
    edges = {s for s, _ in tiles} | {e for _, e in tiles}
    return sorted(e for e in edges if 0 < e < length)


def robust_scale_shift(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                       sigmas: float = FIT_SIGMAS, iterations: int = FIT_ITERATIONS) -> tuple[float, float]:
    """Scale and shift of ``pred`` onto ``target`` (one map each, any shape) by least squares,
    refitted ``iterations`` times without the pixels whose residual is over ``sigmas`` robust sigmas.

    A degenerate tile (constant prediction, under 2 valid pixels) gets scale 1 and the median
    offset; a fit with a scale <= 0 (the tile contradicts the anchor) gets the same.
    """
    p, t = pred.reshape(-1).double(), target.reshape(-1).double()
    ok = torch.isfinite(p) & torch.isfinite(t)
    if valid is not None:
        ok &= valid.reshape(-1).bool()
    if int(ok.sum()) < 2 or float(p[ok].std()) <= 1e-12 * max(float(p[ok].abs().max()), 1e-30):
        shift = float((t[ok] - p[ok]).median()) if bool(ok.any()) else 0.0
        return 1.0, shift
    keep = ok
    scale, shift = 1.0, 0.0
    for _ in range(max(1, iterations)):
        s, b = fit_scale_shift(p[None], t[None], keep[None])
        scale, shift = float(s[0]), float(b[0])
        r = (p * scale + shift - t).abs()
        mad = float(r[keep].median())
        new = ok & (r <= sigmas * 1.4826 * mad + 1e-12)
        if int(new.sum()) < 2 or bool((new == keep).all()):
            break
        keep = new
    if not (math.isfinite(scale) and scale > 0):
        return 1.0, float((t[ok] - p[ok]).median())
    return scale, shift


def sample_region(values: torch.Tensor, full: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int],
                  mode: str = "bilinear") -> torch.Tensor:
    """``values`` (B,C,h,w) resized to the plate size ``full`` (H, W), then cropped to ``rows`` x ``cols``,
    without making the plate-sized map: each output pixel samples the source at its plate coordinate
    (``align_corners=False`` geometry, the border replicated), so neighbouring regions agree exactly.

    ``mode``: bilinear, bicubic or nearest. A map already at the plate size is sliced.
    """
    h, w = values.shape[-2:]
    big_h, big_w = full
    if (h, w) == (big_h, big_w):
        return values[..., rows[0] : rows[1], cols[0] : cols[1]]

    def coords(a: int, b: int, n_src: int, n_dst: int) -> torch.Tensor:
        src = (torch.arange(a, b, dtype=torch.float64) + 0.5) * (n_src / n_dst) - 0.5  # source pixel coordinate
        return ((src + 0.5) / n_src * 2.0 - 1.0).to(torch.float32)  # grid_sample's normalised coordinate

    gy, gx = coords(*rows, h, big_h), coords(*cols, w, big_w)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].expand(values.shape[0], -1, -1, -1)
    src = values.float()
    out = F.grid_sample(src, grid.to(src.device), mode=mode, padding_mode="border", align_corners=False)
    return out.to(values.dtype) if mode == "nearest" else out
