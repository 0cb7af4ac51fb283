"""Depth maps to points, normals, triangles and colours: pure numpy math.

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

Defaults (one place): :data:`~betterdepth_cli.core.camera.DEFAULT_FOV_DEG`,
:data:`~betterdepth_cli.core.depth_values.DEFAULT_DEPTH_RANGE`, :data:`DEFAULT_EDGE_THRESHOLD`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from betterdepth_cli.core.camera import stride_intrinsics
from betterdepth_cli.core.depth_values import robust_range
from betterdepth_cli.core.types import InputDataError, UsageError

DEFAULT_EDGE_THRESHOLD = 0.05
"""Relative depth jump between 4-neighbours above which both pixels are dropped."""

COLOR_MODES = ("normals", "rgb", "depth")
AXES = ("opengl", "opencv")


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


def _mesh(keep: np.ndarray, z: np.ndarray, threshold: float, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid triangles over the kept points, indexed into them; (triangles, which points a triangle uses).
    The triangles are re-indexed to the used points alone."""
    tri = grid_triangles(keep, z, threshold)
    remap = np.full(keep.size, -1, dtype=np.int64)
    remap[np.flatnonzero(keep.reshape(-1))] = np.arange(n_out, dtype=np.int64)
    triangles = remap[tri]
    used = np.zeros(n_out, dtype=bool)
    used[triangles.reshape(-1)] = True
    if len(triangles) == 0:
        raise InputDataError("no triangle could be formed (too few neighbouring valid pixels)")
    if not used.all():
        triangles = (np.cumsum(used, dtype=np.int64) - 1)[triangles]
    return triangles, used


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
        triangles, used = _mesh(keep, z, opts.edge_threshold * s, n_out)
        if not used.all():  # a mesh carries no loose vertices (pixels with no triangle)
            pts, nrm, colors = pts[used], nrm[used], colors[used]
            n_out = int(used.sum())
    info = {"valid_pixels": n_valid, "edge_pixels_removed": n_valid - n_after_edges, "points": n_out,
            "triangles": 0 if triangles is None else int(len(triangles)), "fx": float(K[0, 0]), "fy": float(K[1, 1]),
            "cx": float(K[0, 2]), "cy": float(K[1, 2])}
    return Geometry(pts, nrm, colors, triangles, opts.axes, info)
