"""Depth maps to point clouds and meshes: pure numpy math plus open3d writing.

Conventions
-----------
- Camera frame of the math: OpenCV pinhole, x right, y down, z forward; pixel
  (u, v) = (column, row) has its centre at integer coordinates, so the image
  centre is ((W - 1) / 2, (H - 1) / 2).
- ``depth`` is planar z-depth (distance along the optical axis), (H,W) float32;
  ``valid`` is a bool (H,W) mask. Invalid pixels are never turned into points.
- Files are written in the frame DCC tools expect unless asked otherwise:
  ``axes="opengl"`` (x right, y up, camera looking down -z: Blender, Houdini,
  Nuke, glTF) is the OpenCV frame turned 180 degrees about x, i.e.
  (x, y, z) -> (x, -y, -z); ``axes="opencv"`` writes the math frame as is.
  Both are rotations, so triangle winding and normal orientation survive.
- Normal colours follow the usual normal-map look (the paper's figures):
  RGB = (n + 1) / 2 with n in the OpenGL camera frame (x right, y up, z towards
  the viewer), so a wall facing the camera is lavender (0.5, 0.5, 1.0),
  whatever ``axes`` the points are written in.

Defaults (one place): :data:`DEFAULT_FOV_DEG` (in :mod:`betterdepth_cli.io.intrinsics`), :data:`DEFAULT_DEPTH_RANGE`,
:data:`DEFAULT_EDGE_THRESHOLD`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from betterdepth_cli.core.types import InputDataError, OutputError, UsageError, check_kind
from betterdepth_cli.io.images import IMAGE_EXTENSIONS
from betterdepth_cli.io.intrinsics import (  # noqa: F401 (re-exported for callers of this module)
    DEFAULT_FOV_DEG,
    intrinsics_from_focal,
    intrinsics_from_fov,
    resolve_intrinsics,
    stride_intrinsics,
)

DEFAULT_DEPTH_RANGE = (1.0, 10.0)
"""(near, far) that a relative (affine-invariant) disparity map is spread over."""

DEFAULT_EDGE_THRESHOLD = 0.05
"""Relative depth jump between 4-neighbours above which both pixels are dropped."""

ROBUST_QUANTILES = (0.02, 0.98)
"""Quantiles of the map that define its robust range for ``depth_range``."""

COLOR_MODES = ("normals", "rgb", "depth")
AXES = ("opengl", "opencv")
POINT_EXTS = (".ply",)
MESH_EXTS = (".ply", ".obj", ".glb")


# --------------------------------------------------------------------------- values -> depth
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
        s = 1.0 if scale is None else float(scale)
        b = 0.0 if shift is None else float(shift)
        if not (math.isfinite(s) and math.isfinite(b)) or s == 0.0:
            raise UsageError(f"`--scale` must be non-zero and finite, `--shift` finite; got {s:g}, {b:g}")
        mapped = v * np.float32(s) + np.float32(b)
        conv = DepthConversion(
            "scale-shift", f"{kind} = {s:g} * value + {b:g}", {"scale": s, "shift": b}
        )
        depth = _inverse(mapped, ok) if kind == "disparity" else mapped
    elif depth_range is not None or (kind == "disparity" and not metric):
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
        conv = DepthConversion("depth-range", desc, params)
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


# --------------------------------------------------------------------------- geometry math
def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole back-projection (OpenCV frame).

    Args:
        depth: (H,W) planar depth.
        K: (3,3) intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]].
    Returns:
        points (H,W,3) float32: X = (u - cx) / fx * Z, Y = (v - cy) / fy * Z, Z.
    """
    x, y, z = backproject_planes(depth, K)
    return np.stack([x, y, z], axis=-1)


def backproject_planes(depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`backproject` but returns the X, Y, Z planes, each (H,W) float32."""
    z = np.asarray(depth, dtype=np.float32)
    xs, ys = _ray_slopes(z.shape, K)
    return z * xs[None, :], z * ys[:, None], z


def _ray_slopes(shape: tuple[int, int], K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u - cx) / fx per column (W,) and (v - cy) / fy per row (H,), float32."""
    h, w = shape
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    xs = ((np.arange(w, dtype=np.float64) - cx) / fx).astype(np.float32)
    ys = ((np.arange(h, dtype=np.float64) - cy) / fy).astype(np.float32)
    return xs, ys


def edge_mask(depth: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels on a depth discontinuity (flying pixels), (H,W) bool.

    A pair of valid 4-neighbours a, b is a discontinuity when
    ``|a - b| > threshold * min(a, b)`` (a relative jump); both pixels of such
    a pair are flagged. ``threshold <= 0`` flags nothing.

    Args:
        depth: (H,W) positive depth; valid: (H,W) bool.
    """
    z = np.asarray(depth, dtype=np.float32)
    v = np.asarray(valid, dtype=bool)
    out = np.zeros(z.shape, dtype=bool)
    if threshold <= 0:
        return out
    t = np.float32(threshold)
    for axis in (0, 1):
        a = z[:, :-1] if axis == 1 else z[:-1, :]
        b = z[:, 1:] if axis == 1 else z[1:, :]
        va = v[:, :-1] if axis == 1 else v[:-1, :]
        vb = v[:, 1:] if axis == 1 else v[1:, :]
        jump = (np.abs(a - b) > t * np.minimum(a, b)) & va & vb
        if axis == 1:
            out[:, :-1] |= jump
            out[:, 1:] |= jump
        else:
            out[:-1, :] |= jump
            out[1:, :] |= jump
    return out


def normals_from_points(points: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel normals of a back-projected grid, oriented towards the camera.

    Tangents are central differences of the points along rows (du) and columns
    (dv), using only valid neighbours: one-sided where one neighbour is
    missing; a pixel with no valid neighbour along either axis has no normal.
    n = normalize(dv x du), flipped where it points away from the camera at
    the origin (n . p > 0). In the OpenCV frame a fronto-parallel plane gets
    (0, 0, -1).

    Args:
        points: (H,W,3) float (OpenCV frame); valid: (H,W) bool.
    Returns:
        normals (H,W,3) float32 unit vectors (zeros where missing) and
        has_normal (H,W) bool (``valid`` and a normal could be formed).
    """
    p = np.asarray(points, dtype=np.float32)
    planes = (p[..., 0], p[..., 1], p[..., 2])
    n, ok = _normal_planes(planes, np.asarray(valid, dtype=bool))
    return np.stack(n, axis=-1), ok


def _tangent(planes, valid: np.ndarray, axis: int):
    """Sum of the valid forward and backward differences along ``axis`` (1 = columns)."""
    out = []
    if axis == 1:
        pair = valid[:, 1:] & valid[:, :-1]
    else:
        pair = valid[1:, :] & valid[:-1, :]
    for q in planes:
        d = np.diff(q, axis=axis)
        d *= pair
        t = np.zeros_like(q)
        if axis == 1:
            t[:, :-1] += d
            t[:, 1:] += d
        else:
            t[:-1, :] += d
            t[1:, :] += d
        out.append(t)
    return out


def _normal_planes(planes, valid: np.ndarray):
    """Normals from X, Y, Z planes (each (H,W) float32); see :func:`normals_from_points`."""
    ux, uy, uz = _tangent(planes, valid, axis=1)  # d/du (along a row)
    vx, vy, vz = _tangent(planes, valid, axis=0)  # d/dv (down a column)
    # n = dv x du
    nx = vy * uz - vz * uy
    ny = vz * ux - vx * uz
    nz = vx * uy - vy * ux
    del ux, uy, uz, vx, vy, vz
    norm = np.sqrt(nx * nx + ny * ny + nz * nz)
    ok = valid & (norm > 0) & np.isfinite(norm)
    facing = nx * planes[0] + ny * planes[1] + nz * planes[2]
    inv = np.zeros_like(norm)
    np.divide(np.float32(1.0), norm, out=inv, where=ok)
    np.negative(facing, out=facing)
    np.copysign(inv, facing, out=inv)  # orient towards the camera: n . p < 0
    nx *= inv
    ny *= inv
    nz *= inv
    return (nx, ny, nz), ok


def _tangent_plane(q: np.ndarray, pair: np.ndarray, axis: int, scratch: np.ndarray) -> np.ndarray:
    """Sum of the valid forward and backward differences of q (H,W) along ``axis``.

    pair: float32 1/0 for each neighbouring pair (the shape of ``np.diff(q, axis)``);
    scratch: a buffer of that shape. Returns a new (H,W) float32 array.
    """
    if axis == 1:
        np.subtract(q[:, 1:], q[:, :-1], out=scratch)
    else:
        np.subtract(q[1:, :], q[:-1, :], out=scratch)
    scratch *= pair
    t = np.empty_like(q)
    if axis == 1:
        t[:, :-1] = scratch
        t[:, -1] = 0.0
        t[:, 1:] += scratch
    else:
        t[:-1, :] = scratch
        t[-1, :] = 0.0
        t[1:, :] += scratch
    return t


def _pinhole_normal_planes(planes, xs: np.ndarray, ys: np.ndarray, valid: np.ndarray, max_jump: float = 0.0):
    """:func:`normals_from_points` for a back-projected grid, with fewer passes.

    planes: X, Y, Z (H,W) from :func:`backproject_planes` with slopes xs (W,),
    ys (H,). Because Y = ys * Z is constant in ys along a row and X = xs * Z
    along a column, the row tangent's y is ys * (its z) and the column
    tangent's x is xs * (its z), exactly, so four difference planes give the
    same cross product as six. ``max_jump > 0``: neighbours whose depths differ
    by more than ``max_jump * min`` are not used (a decimated grid steps over
    the gaps that full-resolution edge removal left). Returns ((nx, ny, nz)
    unit, OpenCV frame; only meaningful where ok), ok (H,W) bool.
    """
    X, Y, Z = planes
    h, w = Z.shape
    rx, ry = xs[None, :], ys[:, None]
    pair_u = valid[:, 1:] & valid[:, :-1]
    pair_v = valid[1:, :] & valid[:-1, :]
    if max_jump > 0:
        t = np.float32(max_jump)
        pair_u &= np.abs(Z[:, 1:] - Z[:, :-1]) <= t * np.minimum(Z[:, 1:], Z[:, :-1])
        pair_v &= np.abs(Z[1:, :] - Z[:-1, :]) <= t * np.minimum(Z[1:, :], Z[:-1, :])
    pair_u = pair_u.astype(np.float32)
    pair_v = pair_v.astype(np.float32)
    su = np.empty((h, max(w - 1, 0)), np.float32)
    sv = np.empty((max(h - 1, 0), w), np.float32)
    A = _tangent_plane(X, pair_u, 1, su)  # du = (A, ry * B, B)
    B = _tangent_plane(Z, pair_u, 1, su)
    C = _tangent_plane(Y, pair_v, 0, sv)  # dv = (rx * D, C, D)
    D = _tangent_plane(Z, pair_v, 0, sv)
    del su, sv, pair_u, pair_v
    # n = dv x du = (C*B - D*ry*B, D*A - rx*D*B, rx*D*ry*B - C*A)
    E = B * rx  # rx * B
    F = D * ry  # ry * D
    nz = E * F
    T = A * C
    nz -= T
    np.subtract(C, F, out=F)
    nx = np.multiply(B, F, out=F)  # B * (C - ry*D)
    np.subtract(A, E, out=E)
    ny = np.multiply(D, E, out=E)  # D * (A - rx*B)
    # |n| in T, facing sign (n . p / Z = nx*rx + ny*ry + nz) in A
    np.multiply(nx, nx, out=T)
    np.multiply(ny, ny, out=B)
    T += B
    np.multiply(nz, nz, out=B)
    T += B
    np.sqrt(T, out=T)
    ok = valid & (T > 0) & np.isfinite(T)
    np.multiply(nx, rx, out=A)
    np.multiply(ny, ry, out=C)
    A += C
    A += nz
    np.negative(A, out=A)
    with np.errstate(divide="ignore", invalid="ignore"):  # no normal there: never read (ok is False)
        np.divide(np.float32(1.0), T, out=T)
        np.copysign(T, A, out=T)  # orient towards the camera
        nx *= T
        ny *= T
        nz *= T
    return (nx, ny, nz), ok


NORMAL_BAND_ROWS = 32
"""Rows per band of the banded normal computation (cache-sized; bands run on threads)."""


def _pinhole_normals_banded(planes, xs, ys, valid, max_jump: float = 0.0, band: int = NORMAL_BAND_ROWS,
                            workers: int | None = None):
    """:func:`_pinhole_normal_planes` over bands of rows, on a thread pool.

    Each band is computed with one halo row above and below, so every row sees
    exactly the neighbours it would see in one piece: the result is identical.
    Small bands keep the ~20 temporary planes in cache; numpy releases the GIL,
    so bands run in parallel on several cores.
    """
    from concurrent.futures import ThreadPoolExecutor

    Z = planes[2]
    h, w = Z.shape
    out = tuple(np.empty((h, w), np.float32) for _ in range(3))
    ok = np.empty((h, w), bool)

    def work(r0: int) -> None:
        r1 = min(r0 + band, h)
        a, b = max(r0 - 1, 0), min(r1 + 1, h)
        n, okb = _pinhole_normal_planes(tuple(p[a:b] for p in planes), xs, ys[a:b], valid[a:b], max_jump)
        for o, nk in zip(out, n):
            o[r0:r1] = nk[r0 - a:r1 - a]
        ok[r0:r1] = okb[r0 - a:r1 - a]

    starts = range(0, h, band)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if workers <= 1 or len(starts) <= 1:
        for r0 in starts:
            work(r0)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, starts))
    return out, ok


def grid_triangles(valid: np.ndarray, depth: np.ndarray | None = None, threshold: float = 0.0) -> np.ndarray:
    """Triangulate a (H,W) grid: two triangles per quad of valid pixels.

    Quad (i, j) with corners a = (i, j), b = (i, j+1), c = (i+1, j),
    d = (i+1, j+1) gives triangles (a, c, b) and (b, c, d): counter-clockwise
    seen from the camera, so their face normals point towards it. A triangle is
    kept when its three pixels are valid and, when ``threshold > 0`` and
    ``depth`` is given, ``max(z) <= (1 + threshold) * min(z)`` over its
    vertices (long edges across depth jumps are cut).

    Returns:
        (M,3) int64 indices into the row-major flattened grid (i * W + j).
    """
    v = np.asarray(valid, dtype=bool)
    h, w = v.shape
    if h < 2 or w < 2:
        return np.zeros((0, 3), dtype=np.int64)
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    va, vb, vc, vd = v[:-1, :-1], v[:-1, 1:], v[1:, :-1], v[1:, 1:]
    keep1 = va & vb & vc
    keep2 = vb & vc & vd
    if depth is not None and threshold > 0:
        z = np.asarray(depth, dtype=np.float32)
        za, zb, zc, zd = z[:-1, :-1], z[:-1, 1:], z[1:, :-1], z[1:, 1:]
        lim = np.float32(1.0 + threshold)
        zbc_max, zbc_min = np.maximum(zb, zc), np.minimum(zb, zc)
        keep1 &= np.maximum(zbc_max, za) <= lim * np.minimum(zbc_min, za)
        keep2 &= np.maximum(zbc_max, zd) <= lim * np.minimum(zbc_min, zd)
    t1 = np.stack([a[keep1], c[keep1], b[keep1]], axis=-1)
    t2 = np.stack([b[keep2], c[keep2], d[keep2]], axis=-1)
    return np.concatenate([t1, t2], axis=0)


def convert_axes(xyz: np.ndarray, axes: str) -> np.ndarray:
    """(N,3) vectors from the OpenCV frame to ``axes`` ("opencv" or "opengl").

    opengl: (x, y, z) -> (x, -y, -z), a 180 degree turn about x. Returns a new
    array for "opengl", the input for "opencv".
    """
    if axes == "opencv":
        return xyz
    if axes == "opengl":
        out = np.array(xyz, dtype=np.float32, copy=True)
        out[:, 1:] *= -1.0
        return out
    raise UsageError(f"`--axes` must be one of {', '.join(AXES)}, got {axes!r}")


def normal_colors(normals_cv: np.ndarray) -> np.ndarray:
    """(N,3) OpenCV-frame unit normals -> (N,3) uint8 RGB = (n_gl + 1) / 2.

    n_gl = (nx, -ny, -nz) is the normal in the OpenGL camera frame, so a
    surface facing the camera, n_cv = (0, 0, -1), is (128, 128, 255).
    """
    n = np.asarray(normals_cv, dtype=np.float32).reshape(-1, 3)
    rgb = np.empty(n.shape, dtype=np.uint8)
    tmp = np.empty(n.shape[0], dtype=np.float32)
    for k, sign in enumerate((1.0, -1.0, -1.0)):  # column by column: numpy is slow on a length-3 inner axis
        _normal_channel(n[:, k], sign, tmp, rgb[:, k])
    return rgb


def _normal_channel(nk: np.ndarray, sign: float, tmp: np.ndarray, out: np.ndarray) -> None:
    """out (N,) uint8 = round((sign * nk + 1) * 127.5), clipped to [0, 255]; tmp (N,) float32 scratch."""
    np.multiply(nk, np.float32(127.5 * sign), out=tmp)
    tmp += np.float32(128.0)  # + 127.5 and + 0.5 for rounding
    np.clip(tmp, 0.0, 255.0, out=tmp)
    out[...] = tmp  # float -> uint8 truncates: round half up


def depth_colors(depth: np.ndarray) -> np.ndarray:
    """(N,) depths -> (N,3) uint8 RGB with the turbo colormap, near is warm.

    Inverse depth is spread by its 2 %..98 % range (nearest red, farthest blue).
    """
    import cv2

    z = np.asarray(depth, dtype=np.float32).reshape(-1)
    if z.size == 0:
        return np.zeros((0, 3), dtype=np.uint8)
    inv = 1.0 / z
    lo, hi = robust_range(inv, np.ones(inv.shape, dtype=bool))
    t = (inv - lo) / max(hi - lo, 1e-12)
    u8 = np.clip(t * 255.0 + 0.5, 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(u8.reshape(-1, 1), cv2.COLORMAP_TURBO).reshape(-1, 3)
    return np.ascontiguousarray(bgr[:, ::-1])


# --------------------------------------------------------------------------- assembly
@dataclass
class ExportOptions:
    """Everything that shapes the geometry (the defaults live here and above)."""

    stride: int = 1
    edge_threshold: float = DEFAULT_EDGE_THRESHOLD
    color: str = "normals"
    axes: str = "opengl"
    mesh: bool = False

    def check(self) -> "ExportOptions":
        if int(self.stride) != self.stride or self.stride < 1:
            raise UsageError(f"`--stride` must be a positive integer, got {self.stride}")
        if not math.isfinite(self.edge_threshold) or self.edge_threshold < 0:
            raise UsageError(f"`--edge-threshold` must be >= 0 (0 turns removal off), got {self.edge_threshold}")
        if self.color not in COLOR_MODES:
            raise UsageError(f"`--color` must be one of {', '.join(COLOR_MODES)}, got {self.color!r}")
        if self.axes not in AXES:
            raise UsageError(f"`--axes` must be one of {', '.join(AXES)}, got {self.axes!r}")
        return self


@dataclass
class Geometry:
    """A point cloud (and optionally a mesh over the same vertices), in the output frame.

    points, normals: (N,3) float32; colors: (N,3) uint8; triangles: (M,3) int64 or None.
    """

    points: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    triangles: np.ndarray | None = None
    axes: str = "opengl"
    info: dict[str, Any] = field(default_factory=dict)


def depth_to_geometry(
    depth: np.ndarray,
    valid: np.ndarray,
    K: np.ndarray,
    options: ExportOptions | None = None,
    rgb: np.ndarray | None = None,
) -> Geometry:
    """Back-project a depth map into a coloured, normal-carrying point cloud.

    Steps: flying pixels (:func:`edge_mask`, at full resolution) and invalid
    pixels are dropped; the grid is decimated by ``stride``; points are
    back-projected with K; normals come from the (decimated) grid, using only
    neighbours within ``edge_threshold * stride`` relative depth; points that
    have no such neighbour along a row or a column (so no normal) are dropped; colours; with
    ``options.mesh`` the grid is triangulated with long edges cut at
    ``edge_threshold * stride`` (the relative jump allowed per grid step) and
    vertices that end up in no triangle are dropped.

    Args:
        depth: (H,W) planar depth; valid: (H,W) bool; K: (3,3) for (H,W).
        rgb: (H,W,3) uint8, needed for ``color="rgb"``.
    """
    opts = (options or ExportOptions()).check()
    z = np.asarray(depth, dtype=np.float32)
    v = np.asarray(valid, dtype=bool) & np.isfinite(z) & (z > 0)
    if z.ndim != 2 or v.shape != z.shape:
        raise InputDataError(f"depth (H,W) and valid must match, got {z.shape} and {v.shape}")
    n_valid = int(v.sum())
    if opts.edge_threshold > 0:
        v &= ~edge_mask(z, v, opts.edge_threshold)
    n_after_edges = int(v.sum())
    s = int(opts.stride)
    if s > 1:
        z = np.ascontiguousarray(z[::s, ::s])
        v = np.ascontiguousarray(v[::s, ::s])
        Kg = stride_intrinsics(K, s)
    else:
        Kg = np.asarray(K, dtype=np.float64)
    xs, ys = _ray_slopes(z.shape, Kg)
    planes = (z * xs[None, :], z * ys[:, None], z)  # X, Y, Z (H,W), OpenCV frame
    # at stride 1 edge removal already left no jump above the threshold between valid neighbours
    normals, has_n = _pinhole_normals_banded(planes, xs, ys, v, opts.edge_threshold * s if s > 1 else 0.0)
    keep = has_n
    n_out = int(keep.sum())
    if n_out == 0:
        raise InputDataError("no point is left after removing invalid and edge pixels")
    # gather column by column (numpy is slow on a length-3 inner axis), turning axes on the way
    flip = np.float32(-1.0 if opts.axes == "opengl" else 1.0)
    pts = np.empty((n_out, 3), dtype=np.float32)
    nrm = np.empty((n_out, 3), dtype=np.float32)
    colors = np.empty((n_out, 3), dtype=np.uint8)
    tmp = np.empty(n_out, dtype=np.float32)
    for k, sign in enumerate((np.float32(1.0), flip, flip)):
        np.multiply(planes[k][keep], sign, out=pts[:, k])
        nk = normals[k][keep]  # OpenCV frame
        np.multiply(nk, sign, out=nrm[:, k])
        if opts.color == "normals":
            _normal_channel(nk, 1.0 if k == 0 else -1.0, tmp, colors[:, k])
    del tmp
    if opts.color == "depth":
        colors = depth_colors(planes[2][keep])
    elif opts.color == "rgb":
        if rgb is None:
            raise UsageError("`--color rgb` needs the source image: pass `--image`")
        img = np.asarray(rgb)
        if img.shape[:2] != depth.shape:
            raise InputDataError(f"the RGB image is {img.shape[1]}x{img.shape[0]}, the map {depth.shape[1]}x{depth.shape[0]}")
        colors = np.ascontiguousarray(img[::s, ::s][keep][:, :3]).astype(np.uint8, copy=False)
    triangles = None
    if opts.mesh:
        tri = grid_triangles(keep, z, opts.edge_threshold * s)
        remap = np.full(keep.size, -1, dtype=np.int64)
        remap[np.flatnonzero(keep.reshape(-1))] = np.arange(n_out, dtype=np.int64)
        triangles = remap[tri]
        used = np.zeros(n_out, dtype=bool)
        used[triangles.reshape(-1)] = True
        if len(triangles) == 0:
            raise InputDataError("no triangle could be formed (too few neighbouring valid pixels)")
        if not used.all():  # a mesh carries no loose vertices (pixels with no triangle)
            new_index = np.cumsum(used, dtype=np.int64) - 1
            triangles = new_index[triangles]
            pts, nrm, colors = pts[used], nrm[used], colors[used]
            n_out = int(used.sum())
    info = {
        "valid_pixels": n_valid,
        "edge_pixels_removed": n_valid - n_after_edges,
        "points": n_out,
        "triangles": 0 if triangles is None else int(len(triangles)),
        "fx": float(K[0, 0]),
        "fy": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
    }
    return Geometry(pts, nrm, colors, triangles, opts.axes, info)


# --------------------------------------------------------------------------- images
def load_rgb(path: str | Path, width: int, height: int) -> np.ndarray:
    """The source image as (height,width,3) uint8 RGB, at the map's size.

    Read like ``refine`` reads its inputs (:func:`betterdepth_cli.io.images.read_image`:
    EXIF orientation applied, 16-bit and EXR handled). A different size with
    the same aspect ratio (within 1 %) is resized (area filter); another
    aspect raises InputDataError.
    """
    from betterdepth_cli.io.images import read_image

    p = Path(path)
    img = read_image(p)  # (h,w,3) float32 in [0,1]
    h, w = img.shape[:2]
    if _aspect_differs((w, h), (width, height)):
        raise InputDataError(f"{p}: the image is {w}x{h}, the depth map {width}x{height} (different aspect)")
    if (w, h) != (width, height):
        import cv2

        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _aspect_differs(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] / a[1] - b[0] / b[1]) > 0.01 * (b[0] / b[1])


# --------------------------------------------------------------------------- writing
def output_kind(path: str | Path, mesh: bool) -> str:
    """Check the output extension: point clouds are .ply, meshes .ply/.obj/.glb."""
    ext = Path(path).suffix.lower()
    allowed = MESH_EXTS if mesh else POINT_EXTS
    if ext not in allowed:
        what = "a mesh" if mesh else "a point cloud (add --mesh for .obj/.glb)"
        raise UsageError(f"{path}: {what} is written as {', '.join(allowed)}, not {ext or 'no extension'!r}")
    return ext


def write_geometry(path: str | Path, geom: Geometry) -> Path:
    """Write ``geom`` atomically: binary PLY point cloud, or a mesh (PLY/OBJ/GLB).

    Point clouds go through ``open3d.t.io.write_point_cloud`` (float32 x, y, z,
    nx, ny, nz and uchar red, green, blue); meshes through
    ``open3d.t.io.write_triangle_mesh`` (vertex normals and colours). The file
    (and an OBJ's .mtl) is written in a temporary folder next to the target and
    moved into place.
    """
    import open3d as o3d

    out = Path(path)
    mesh = geom.triangles is not None
    output_kind(out, mesh)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmpdir = Path(tempfile.mkdtemp(prefix=".betterdepth-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    try:
        target = tmpdir / out.name
        T = o3d.core.Tensor.from_numpy
        if mesh:
            m = o3d.t.geometry.TriangleMesh()
            m.vertex.positions = T(np.ascontiguousarray(geom.points, dtype=np.float32))
            m.vertex.normals = T(np.ascontiguousarray(geom.normals, dtype=np.float32))
            m.vertex.colors = T(np.ascontiguousarray(geom.colors, dtype=np.float32) / np.float32(255.0))
            m.triangle.indices = T(np.ascontiguousarray(geom.triangles, dtype=np.int64))
            ok = o3d.t.io.write_triangle_mesh(str(target), m, write_ascii=False)
        else:
            pc = o3d.t.geometry.PointCloud()
            pc.point.positions = T(np.ascontiguousarray(geom.points, dtype=np.float32))
            pc.point.normals = T(np.ascontiguousarray(geom.normals, dtype=np.float32))
            pc.point.colors = T(np.ascontiguousarray(geom.colors, dtype=np.uint8))
            ok = o3d.t.io.write_point_cloud(str(target), pc, write_ascii=False)
        if not ok or not target.exists():
            raise OutputError(f"{out}: open3d could not write the file")
        for f in sorted(tmpdir.iterdir()):  # the file, and an OBJ's .mtl
            os.replace(f, out.parent / f.name)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- one file, end to end
ASSUME_KINDS = ("disparity", "depth")


def load_map(path: str | Path, assume: str | None = None) -> tuple[np.ndarray, dict]:
    """A ``refine`` output (.png + sidecar, .exr, .npy) as (values (H,W) float32, meta).

    Invalid pixels are NaN. ``meta["kind"]`` and ``meta["metric"]`` are always
    set on return. A file that does not say what it holds (a PNG without its
    sidecar, an NPY without one, an EXR without ``betterdepth:kind``, or any
    other depth file :func:`betterdepth_cli.io.images.read_depth_map` reads:
    .pfm, .tif, .npz) needs ``assume`` ("disparity" or "depth", taken as
    relative); its raw stored values are used (a 16-bit PNG: 0..65535) and 0
    counts as invalid. Without ``assume`` these raise InputDataError.
    """
    from betterdepth_cli.io import outputs

    p = Path(path)
    if assume is not None and assume not in ASSUME_KINDS:
        raise UsageError(f"`--assume` must be one of {', '.join(ASSUME_KINDS)}, got {assume!r}")
    ext = p.suffix.lower()
    side = outputs.sidecar_path(p)
    if (ext == ".png" and not side.is_file()) or ext not in (".png", ".exr", ".npy"):
        if assume is None:
            if ext == ".png":
                raise InputDataError(
                    f"{p}: sidecar {side.name} is missing (needed to decode the 16-bit PNG); "
                    "pass --assume disparity|depth to use the raw PNG values"
                )
            raise InputDataError(
                f"{p}: not a refine output (.png with sidecar, .exr, .npy); "
                "pass --assume disparity|depth to use its raw values"
            )
        from betterdepth_cli.io.images import read_depth_map

        values, valid = read_depth_map(p)
        values = np.where(valid, values, np.float32(np.nan)).astype(np.float32)
        meta: dict = {}
    else:
        values, meta = outputs.load_depth_output(p)
        meta = dict(meta)
    if meta.get("kind") not in ASSUME_KINDS:
        if assume is None:
            raise InputDataError(
                f"{p}: the file does not say whether it holds disparity or depth "
                f"(no sidecar {side.name} or kind attribute); pass --assume disparity|depth"
            )
        meta["kind"] = assume
        meta["metric"] = False
    metric = meta.get("metric", False)
    meta["metric"] = metric is True or str(metric).lower() == "true"
    return values, meta


def source_image(meta: dict, cwd: str | Path | None = None, sidecar_dir: str | Path | None = None) -> Path | None:
    """The sidecar's ``source`` image when it exists: absolute, or relative to the sidecar's folder
    (how ``refine`` stores it), or, for sidecars written before 2026-12-06, relative to ``cwd``.

    Only still images count (a video frame's source is the video: ``None``).
    """
    src = meta.get("source")
    if not src or not isinstance(src, str) or Path(src).suffix.lower() not in IMAGE_EXTS:
        return None
    p = Path(src)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in ([Path(sidecar_dir)] if sidecar_dir is not None else []) + [Path(cwd or os.getcwd())]:
        if (base / p).is_file():
            return base / p
    return None


def shot_range(meta: dict) -> tuple[float, float] | None:
    """The shot's robust value range a ``refine`` sidecar records for a frame of a shot, else None."""
    r = meta.get("shot_range")
    try:
        lo, hi = (float(v) for v in r)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and hi > lo else None


def export_depth_file(
    map_path: str | Path,
    out_path: str | Path,
    *,
    image: str | Path | None = None,
    fov: float | None = None,
    focal: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    sensor_width: float | None = None,
    depth_range: tuple[float, float] | None = None,
    scale: float | None = None,
    shift: float | None = None,
    assume: str | None = None,
    options: ExportOptions | None = None,
) -> dict[str, Any]:
    """Read a map, build its point cloud (or mesh) and write it; returns a summary.

    ``image`` (the source RGB) serves EXIF intrinsics and ``color="rgb"``; when
    it is ``None`` the sidecar's ``source`` is used if that file exists.
    """
    opts = (options or ExportOptions()).check()
    out = Path(out_path)
    output_kind(out, opts.mesh)
    values, meta = load_map(map_path, assume)
    h, w = values.shape
    img_path = Path(image) if image is not None else source_image(meta, sidecar_dir=Path(map_path).parent)
    K, k_desc = resolve_intrinsics(
        w, h, fov=fov, focal=focal, cx=cx, cy=cy, image=img_path, sensor_width=sensor_width
    )
    rgb = load_rgb(img_path, w, h) if (opts.color == "rgb" and img_path is not None) else None
    if opts.color == "rgb" and rgb is None:
        raise UsageError(f"{map_path}: `--color rgb` needs the source image: pass `--image`")
    try:
        depth, valid, conv = to_depth(
            values, meta["kind"], metric=meta["metric"], depth_range=depth_range, scale=scale, shift=shift,
            value_range=shot_range(meta),
        )
        geom = depth_to_geometry(depth, valid, K, opts, rgb)
    except InputDataError as exc:  # the math does not know the file name
        raise InputDataError(f"{map_path}: {exc}") from None
    write_geometry(out, geom)
    return {
        "input": str(map_path),
        "output": str(out),
        "image": None if img_path is None else str(img_path),
        "intrinsics": k_desc,
        "depth": conv.description,
        **geom.info,
    }


# --------------------------------------------------------------------------- batch planning
MAP_EXTS = (".exr", ".npy", ".png")  # preference when one base has several: float first
IMAGE_EXTS = tuple("." + e for e in IMAGE_EXTENSIONS)  # what io.images.read_image (and refine) reads


@dataclass
class ExportJob:
    """One map to export: where it is, where it goes, and its source image if known."""

    map_path: Path
    out_path: Path
    image: Path | None = None
    image_error: str | None = None  # why the image could not be matched (raised when the job runs)


def _is_map_file(p: Path) -> bool:
    from betterdepth_cli.io.outputs import split_frame

    if p.name.startswith(".") or p.suffix.lower() not in MAP_EXTS:
        return False
    stem, _ = split_frame(p.stem)
    return not (stem.endswith("_uncertainty") or stem.endswith("_preview"))


def find_maps(folder: str | Path, bare_png: bool = False) -> tuple[list[Path], list[Path]]:
    """The depth maps under ``folder`` (recursive), one per output base.

    A base written in several formats is read from its EXR, else its NPY, else
    its PNG. Uncertainty maps, previews and hidden files are skipped, and so
    are PNGs without a sidecar unless ``bare_png`` (they are returned second,
    so the caller can say so). Both lists are sorted by path.
    """
    from betterdepth_cli.io.outputs import sidecar_path

    root = Path(folder)
    best: dict[Path, Path] = {}
    bare: list[Path] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or not _is_map_file(p) or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.suffix.lower() == ".png" and not bare_png and not sidecar_path(p).is_file():
            bare.append(p)
            continue
        base = p.with_suffix("")
        cur = best.get(base)
        if cur is None or MAP_EXTS.index(p.suffix.lower()) < MAP_EXTS.index(cur.suffix.lower()):
            best[base] = p
    bare = [b for b in bare if b.with_suffix("") not in best]
    return [best[b] for b in sorted(best)], bare


def image_index(folder: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            index.setdefault(p.stem, []).append(p)
    return index


def match_image(rel_base: Path, image_dir: Path, index: dict[str, list[Path]]) -> Path | None:
    """The RGB image for a map whose base is ``rel_base`` (relative, no extension).

    First ``image_dir/rel_base.<ext>`` (a mirrored tree), else the one image
    anywhere under ``image_dir`` with the same stem; ``None`` when there is
    none; InputDataError when several share the stem and none mirrors the path.
    """
    for ext in IMAGE_EXTS:
        for cand in (image_dir / rel_base.parent / (rel_base.name + ext),
                     image_dir / rel_base.parent / (rel_base.name + ext.upper())):
            if cand.is_file():
                return cand
    hits = index.get(rel_base.name, [])
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        names = ", ".join(str(h.relative_to(image_dir)) for h in hits[:3])
        raise InputDataError(f"{rel_base}: several images in {image_dir} share its name ({names}); mirror the tree")
    return None


def plan_batch(
    input_dir: str | Path,
    out_dir: str | Path,
    ext: str = ".ply",
    image_dir: str | Path | None = None,
    bare_png: bool = False,
) -> tuple[list[ExportJob], list[Path]]:
    """Jobs for every map under ``input_dir``: ``out_dir/<relpath><ext>``, mirroring the tree.

    Returns (jobs, skipped): ``skipped`` are PNGs without a sidecar left out
    because ``bare_png`` is false (see :func:`find_maps`). NoInputError when
    there is no map at all.
    """
    from betterdepth_cli.core.types import NoInputError

    root, out = Path(input_dir), Path(out_dir)
    maps, bare = find_maps(root, bare_png)
    if not maps:
        hint = f" ({len(bare)} .png without sidecar: pass --assume disparity|depth to read them)" if bare else ""
        raise NoInputError(f"{root}: no depth maps (.png with sidecar, .exr, .npy) found{hint}")
    index = image_index(Path(image_dir)) if image_dir is not None else {}
    jobs = []
    for m in maps:
        rel = m.relative_to(root).with_suffix("")
        target = out / rel.parent / (rel.name + ext)
        img, err = None, None
        if image_dir is not None:
            try:
                img = match_image(rel, Path(image_dir), index)
            except InputDataError as exc:
                err = str(exc)
        jobs.append(ExportJob(m, target, img, err))
    return jobs, bare
