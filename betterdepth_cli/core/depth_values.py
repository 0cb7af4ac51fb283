"""A map's stored values to planar depth: relative disparity spread over a range, scale and shift, metric as is."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from betterdepth_cli.core.types import InputDataError, UsageError, check_kind

DEFAULT_DEPTH_RANGE = (1.0, 10.0)
"""(near, far) that a relative (affine-invariant) disparity map is spread over."""

ROBUST_QUANTILES = (0.02, 0.98)
"""Quantiles of the map that define its robust range for ``depth_range``."""


@dataclass
class DepthConversion:
    """How a map's values became depth (for logs and tests)."""

    method: str  # "metric", "as-is", "depth-range", "scale-shift"
    description: str
    params: dict[str, float] = field(default_factory=dict)


def robust_range(values: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """The 2 % and 98 % quantiles of ``values`` (H,W) over ``valid`` (H,W) bool."""
    vals = values[valid]
    if vals.size == 0:
        raise InputDataError("the map has no valid pixels")
    if vals.size > 4_000_000:  # deterministic subsample: quantiles of 4K maps in ms
        vals = vals[:: -(-vals.size // 4_000_000)]
    lo, hi = np.quantile(vals.astype(np.float64), ROBUST_QUANTILES)
    return float(lo), float(hi)


class ShotRange:
    """The one range of a shot's frames, gathered frame by frame: ``full()`` their min and max (what a
    shot's 16-bit PNGs are quantised by) and ``robust()`` the widest of their 2 % and 98 % quantiles
    (a frame's over at most 65536 of its pixels; what previews and ``export-ply`` map by)."""

    def __init__(self) -> None:
        self.lo, self.hi = math.inf, -math.inf
        self.p_lo, self.p_hi = math.inf, -math.inf

    def add(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """A frame into the range; returns it with NaN where it holds no depth (invalid or not finite)."""
        arr = np.where(valid & np.isfinite(values), values, np.nan).astype(np.float32)
        ok = arr[np.isfinite(arr)]
        if ok.size:
            self.lo, self.hi = min(self.lo, float(ok.min())), max(self.hi, float(ok.max()))
            sample = ok[:: max(1, ok.size // 65536)]
            p2, p98 = np.percentile(sample, (2.0, 98.0))
            self.p_lo, self.p_hi = min(self.p_lo, float(p2)), max(self.p_hi, float(p98))
        return arr

    def full(self) -> tuple[float, float]:
        return (self.lo, self.hi) if self.hi >= self.lo else (0.0, 0.0)

    def robust(self) -> tuple[float, float]:
        return (self.p_lo, self.p_hi) if self.p_hi >= self.p_lo else (0.0, 1.0)


def parse_depth_range(text: str) -> tuple[float, float]:
    """``"NEAR,FAR"`` -> (near, far) with 0 < near < far."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        near, far = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"`--depth-range` must be NEAR,FAR (two numbers), got {text!r}") from None
    check_depth_range((near, far))
    return near, far


def check_depth_range(depth_range: tuple[float, float]) -> tuple[float, float]:
    near, far = (float(v) for v in depth_range)
    if not (math.isfinite(near) and math.isfinite(far) and 0.0 < near < far):
        raise UsageError(f"`--depth-range` needs 0 < NEAR < FAR, got {near:g},{far:g}")
    return near, far


def to_depth(
    values: np.ndarray,
    kind: str,
    *,
    metric: bool = False,
    valid: np.ndarray | None = None,
    depth_range: tuple[float, float] | None = None,
    scale: float | None = None,
    shift: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, DepthConversion]:
    """Turn a depth-like map into planar depth.

    Args:
        values: (H,W) map; ``kind`` says whether it is ``"disparity"`` (inverse
            depth, larger is nearer) or ``"depth"``.
        metric: the values are metric (metres, or 1/metres for disparity).
        valid: (H,W) bool; finite values when ``None``.
        depth_range: (near, far). The map's robust 2 %..98 % range is mapped
            linearly onto [1/far, 1/near] for disparity (then inverted), onto
            [near, far] for depth. The side that could reach zero or negative
            depth is clamped (disparity below its 2 % quantile becomes depth
            ``far``: a backdrop plane; depth below its 2 % quantile becomes
            ``near``); the other side continues the line, so the nearest
            surfaces of a disparity map keep their shape (a little nearer than
            ``near``). A constant map becomes a plane at the harmonic
            (disparity) or arithmetic (depth) mean of near and far.
        value_range: the (low, high) values mapped onto the depth range instead of this map's
            own 2 %..98 % range: a shot's shared range, so one value gives one depth in every frame.
        scale, shift: ``scale * value + shift`` in the map's own space (inverse
            depth for disparity, then inverted; depth for depth). Missing one
            of them means scale 1 or shift 0. Exclusive with ``depth_range``.

    Without ``depth_range`` and ``scale``/``shift``: metric maps are used as
    they are (disparity inverted), relative depth maps as they are, relative
    disparity maps with :data:`DEFAULT_DEPTH_RANGE`.

    Returns:
        depth (H,W) float32 (0 where invalid), valid (H,W) bool (finite and
        strictly positive depth), and a :class:`DepthConversion`.
    """
    check_kind(kind)
    values = np.asarray(values)
    if values.ndim != 2:
        raise InputDataError(f"a depth map must be 2-D (H,W), got shape {values.shape}")
    v = values.astype(np.float32, copy=False)
    ok = np.isfinite(v) if valid is None else (np.asarray(valid, dtype=bool) & np.isfinite(v))
    if not ok.any():
        raise InputDataError("the map has no valid (finite) pixels")
    use_affine = scale is not None or shift is not None
    if use_affine and depth_range is not None:
        raise UsageError("`--depth-range` and `--scale`/`--shift` exclude each other; give one")
    v = np.where(ok, v, np.float32(0.0))
    if use_affine:
        depth, conv = _scale_shift(v, ok, kind, scale, shift)
    elif depth_range is not None or (kind == "disparity" and not metric):
        depth, conv = _spread(v, ok, kind, depth_range, value_range)
    elif kind == "disparity":  # metric disparity: 1/metres
        depth = _inverse(v, ok)
        conv = DepthConversion("metric", "metric disparity inverted to metres")
    else:
        depth = v.copy()
        conv = DepthConversion(
            "metric" if metric else "as-is",
            "metric depth used as is" if metric else "relative depth used as is",
        )
    depth = depth.astype(np.float32, copy=False)
    out_valid = ok & np.isfinite(depth) & (depth > 0)
    depth = np.where(out_valid, depth, np.float32(0.0))
    if not out_valid.any():
        raise InputDataError(f"no pixel has a positive depth after the mapping ({conv.description})")
    return depth, out_valid, conv


def _scale_shift(v: np.ndarray, ok: np.ndarray, kind: str, scale, shift) -> tuple[np.ndarray, DepthConversion]:
    """``scale * value + shift`` in the map's own space (then inverted for disparity)."""
    s = 1.0 if scale is None else float(scale)
    b = 0.0 if shift is None else float(shift)
    if not (math.isfinite(s) and math.isfinite(b)) or s == 0.0:
        raise UsageError(f"`--scale` must be non-zero and finite, `--shift` finite; got {s:g}, {b:g}")
    mapped = v * np.float32(s) + np.float32(b)
    conv = DepthConversion("scale-shift", f"{kind} = {s:g} * value + {b:g}", {"scale": s, "shift": b})
    return (_inverse(mapped, ok) if kind == "disparity" else mapped), conv


def _spread(v: np.ndarray, ok: np.ndarray, kind: str, depth_range, value_range) -> tuple[np.ndarray, DepthConversion]:
    """The map's robust range (or ``value_range``) spread over (near, far), in inverse depth for disparity."""
    near, far = check_depth_range(depth_range or DEFAULT_DEPTH_RANGE)
    lo, hi = value_range if value_range is not None else robust_range(v, ok)
    flag = f"{'' if depth_range is not None else 'default '}--depth-range {near:g},{far:g}"
    params = {"near": near, "far": far, "q02": lo, "q98": hi}
    if kind == "disparity":
        depth = _inverse(_map_range(v, lo, hi, 1.0 / far, 1.0 / near), ok)
        desc = f"disparity 2-98 % range {lo:.4g}..{hi:.4g} -> depth {far:g}..{near:g} ({flag})"
    else:
        depth = _map_range(v, lo, hi, near, far)
        desc = f"depth 2-98 % range {lo:.4g}..{hi:.4g} -> depth {near:g}..{far:g} ({flag})"
    return depth, DepthConversion("depth-range", desc, params)


def _map_range(v: np.ndarray, lo: float, hi: float, a: float, b: float) -> np.ndarray:
    """Map [lo, hi] of ``v`` (H,W) float32 linearly onto [a, b], values below ``a`` raised to ``a``.

    An empty range (a constant map) gives ``(a + b) / 2`` everywhere. float32 (H,W).
    """
    if hi - lo <= 1e-12 * max(abs(hi), abs(lo), 1.0):
        return np.full_like(v, np.float32(0.5 * (a + b)))
    out = (v - np.float32(lo)) * np.float32((b - a) / (hi - lo)) + np.float32(a)
    np.maximum(out, np.float32(a), out=out)
    return out


def _inverse(inv: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """1 / inv where ok and inv > 0, else 0 (float32)."""
    good = ok & (inv > 0)
    out = np.zeros_like(inv, dtype=np.float32)
    np.divide(np.float32(1.0), inv, out=out, where=good)
    return out
