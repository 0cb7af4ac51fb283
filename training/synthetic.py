"""Procedural RGB-D scenes rendered by open3d ray casting.

Each scene is built from a seed alone (``numpy.random.default_rng(seed)``, no
global state) and rendered on the CPU with ``o3d.t.geometry.RaycastingScene``:
one primary ray per pixel gives planar z-depth (``t_hit`` with the rays of
``create_rays_pinhole``), the hit geometry gives normals and a world position
for procedural 3D textures, and one secondary ray per lit pixel toward the
light gives cast shadows.

Scenes:

- ``indoor``: a box room (floor, walls, ceiling with their own textures), a
  point light under the ceiling, tables and chairs with thin legs, shelves,
  boxes, spheres, cylinders, tori, lamps on rods, plants (stems and many small
  leaves), grilles and wire meshes, hanging wires.
- ``outdoor``: a ground plane, sky (no hit: invalid depth), a far backdrop of
  hills (beyond ``max_depth``: invalid), buildings with window grids, poles
  with catenary wires, fences with thin pickets, trees with recursive branches
  and leaf clutter, cars, rocks; directional sun with shadows, haze.
- ``mixed``: indoor or outdoor, drawn from the seed (60 % indoor).

Conventions: world frame is z-up, metres. Cameras use the OpenCV convention
(x right, y down, z forward); ``extrinsic`` is the 4x4 world-to-camera matrix;
``K`` is the 3x3 pixel intrinsic matrix in open3d's convention, where the ray
of pixel (u, v) (column, row) goes through the pixel centre
``((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)``.

Outputs (:class:`SyntheticSample`): ``rgb`` (H,W,3) float32 in [0,1] (sRGB-ish
gamma 1/2.2 of the linear shading), ``depth`` (H,W) float32 planar z in metres
with 0 where invalid, ``valid`` (H,W) bool (finite hit, ``min_depth < z <=
max_depth``), ``K`` (3,3) float64, ``meta`` dict (kind, seed, extrinsic, fov,
light, counts).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

SCENE_KINDS = ("indoor", "outdoor", "mixed")
PATTERNS = ("flat", "checker", "stripes", "noise", "grid", "windows", "wood")
INDOOR_MAX_DEPTH = 20.0
OUTDOOR_MAX_DEPTH = 80.0
MIN_DEPTH = 1e-3


# --------------------------------------------------------------------------- #
# data types
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Material:
    """A procedural surface: ``pattern`` mixes ``color`` and ``color2``.

    Patterns (coordinates in metres, ``scale`` = metres per cell):
    ``flat`` (color only), ``checker`` (2D checker on the dominant plane),
    ``stripes`` (bands along ``direction``), ``noise`` (3D value-noise fBm),
    ``grid`` (thin lines of color2, tiles), ``windows`` (facade: color2
    rectangles in a color frame), ``wood`` (noisy stripes).
    Colours are linear RGB in [0,1].
    """

    color: tuple = (0.7, 0.7, 0.7)
    color2: tuple = (0.2, 0.2, 0.2)
    pattern: str = "flat"
    scale: float = 0.5
    direction: tuple = (1.0, 0.0, 0.0)
    offset: tuple = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"`pattern` must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        if not self.scale > 0:
            raise ValueError(f"`scale` must be > 0, got {self.scale}")


@dataclass
class Mesh:
    """A triangle mesh with one material. vertices (N,3) float, triangles (M,3) int."""

    vertices: np.ndarray
    triangles: np.ndarray
    material: Material = field(default_factory=Material)
    casts_shadow: bool = True
    name: str = ""

    @classmethod
    def from_open3d(cls, mesh: Any, material: Material | None = None, name: str = "") -> "Mesh":
        """Wrap an ``open3d.geometry.TriangleMesh`` (legacy) or ``open3d.t.geometry.TriangleMesh``."""
        if hasattr(mesh, "vertex") and hasattr(mesh, "triangle"):  # tensor mesh
            v = mesh.vertex.positions.numpy()
            t = mesh.triangle.indices.numpy()
        else:
            v = np.asarray(mesh.vertices)
            t = np.asarray(mesh.triangles)
        return cls(np.asarray(v, np.float32), np.asarray(t, np.int64), material or Material(), name=name)


@dataclass(frozen=True)
class Light:
    """A directional light (``direction`` points FROM the scene TOWARD the light,
    world frame) or, when ``position`` is set, a point light (no distance falloff).
    ``color`` is the linear RGB intensity; ``ambient`` the sky/fill term."""

    direction: tuple = (0.3, 0.2, 1.0)
    position: tuple | None = None
    color: tuple = (1.0, 1.0, 1.0)
    ambient: float = 0.3


@dataclass
class SyntheticSample:
    """rgb (H,W,3) float32 [0,1]; depth (H,W) float32 metres, planar, 0 where invalid;
    valid (H,W) bool; K (3,3) float64; meta dict."""

    rgb: np.ndarray
    depth: np.ndarray
    valid: np.ndarray
    K: np.ndarray
    meta: dict


# --------------------------------------------------------------------------- #
# cameras
# --------------------------------------------------------------------------- #
def intrinsics_from_fov(width: int, height: int, hfov_deg: float, cx: float | None = None,
                        cy: float | None = None) -> np.ndarray:
    """3x3 pinhole K with square pixels and horizontal field of view ``hfov_deg``."""
    if not 0 < hfov_deg < 180:
        raise ValueError(f"`hfov_deg` must be in (0, 180), got {hfov_deg}")
    f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0, width / 2 if cx is None else cx], [0, f, height / 2 if cy is None else cy], [0, 0, 1]],
                    dtype=np.float64)


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0, 0, 1),
            roll_deg: float = 0.0) -> np.ndarray:
    """4x4 world-to-camera extrinsic (OpenCV axes: x right, y down, z forward)."""
    eye = np.asarray(eye, np.float64)
    f = np.asarray(target, np.float64) - eye
    n = np.linalg.norm(f)
    if n == 0:
        raise ValueError("`target` must differ from `eye`")
    f /= n
    up = np.asarray(up, np.float64)
    r = np.cross(f, up)
    if np.linalg.norm(r) < 1e-8:  # looking straight up or down
        r = np.cross(f, np.array([0.0, 1.0, 0.0]))
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    if roll_deg:
        a = math.radians(roll_deg)
        r, d = math.cos(a) * r + math.sin(a) * d, -math.sin(a) * r + math.cos(a) * d
    R = np.stack([r, d, f])  # rows: camera axes in world coordinates
    E = np.eye(4)
    E[:3, :3] = R
    E[:3, 3] = -R @ eye
    return E


# --------------------------------------------------------------------------- #
# geometry (vectorised builders; each returns vertices (N,3) float32, triangles (M,3) int64)
# --------------------------------------------------------------------------- #
_CUBE_V = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], np.float64)
_CUBE_T = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int64)


def _rot_z(yaw: np.ndarray) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.zeros(yaw.shape + (3, 3))
    R[..., 0, 0], R[..., 0, 1], R[..., 1, 0], R[..., 1, 1], R[..., 2, 2] = c, -s, s, c, 1
    return R


def boxes(centers, sizes, yaws=None) -> tuple[np.ndarray, np.ndarray]:
    """N boxes. centers (N,3), sizes (N,3) full extents, yaws (N,) radians about z."""
    c = np.atleast_2d(np.asarray(centers, np.float64))
    s = np.atleast_2d(np.asarray(sizes, np.float64))
    n = len(c)
    y = np.zeros(n) if yaws is None else np.broadcast_to(np.asarray(yaws, np.float64), (n,))
    v = np.einsum("nij,nkj->nki", _rot_z(y), _CUBE_V[None] * s[:, None, :]) + c[:, None, :]
    t = _CUBE_T[None] + 8 * np.arange(n)[:, None, None]
    return v.reshape(-1, 3).astype(np.float32), t.reshape(-1, 3)


def quad(corner, edge_u, edge_v) -> tuple[np.ndarray, np.ndarray]:
    """One planar quad: corner + a*edge_u + b*edge_v, a, b in [0,1]."""
    c, u, w = (np.asarray(a, np.float64) for a in (corner, edge_u, edge_v))
    v = np.stack([c, c + u, c + u + w, c + w])
    return v.astype(np.float32), np.array([[0, 1, 2], [0, 2, 3]], np.int64)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (N,3) arrays (np.cross is slow on small arrays)."""
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], 1)


def _perp_frame(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors u, v perpendicular to the rows of a (N,3)."""
    an = a / np.maximum(np.sqrt((a * a).sum(1, keepdims=True)), 1e-12)
    helper = np.where(np.abs(an[:, 2:3]) < 0.9, np.array([[0.0, 0, 1]]), np.array([[1.0, 0, 0]]))
    u = _cross(an, helper)
    u /= np.sqrt((u * u).sum(1, keepdims=True))
    return u, _cross(an, u)


_TUBE_TOPOLOGY: dict = {}


def _tube_topology(sides: int, caps: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cos (S,), sin (S,), triangles (M,3)) of one tube with ``sides`` sides, cached."""
    key = (sides, caps)
    if key not in _TUBE_TOPOLOGY:
        th = 2 * np.pi * np.arange(sides) / sides
        i = np.arange(sides)
        j = (i + 1) % sides
        tri = [np.stack([i, j, sides + i], 1), np.stack([j, sides + j, sides + i], 1)]
        if caps:
            c0, c1 = 2 * sides, 2 * sides + 1
            tri += [np.stack([np.full(sides, c0), j, i], 1), np.stack([np.full(sides, c1), sides + i, sides + j], 1)]
        _TUBE_TOPOLOGY[key] = (np.cos(th), np.sin(th), np.concatenate(tri, 0))
    return _TUBE_TOPOLOGY[key]


def tubes(p0, p1, radii, sides: int = 6, caps: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """N cylinders (rods, legs, wires) from p0 (N,3) to p1 (N,3) with radii (N,) or scalar."""
    p0 = np.atleast_2d(np.asarray(p0, np.float64))
    p1 = np.atleast_2d(np.asarray(p1, np.float64))
    n = len(p0)
    r = np.broadcast_to(np.asarray(radii, np.float64), (n,))
    u, w = _perp_frame(p1 - p0)
    cos, sin, t1 = _tube_topology(sides, caps)
    ring = cos[None, :, None] * u[:, None, :] + sin[None, :, None] * w[:, None, :]  # (N,S,3)
    ring = ring * r[:, None, None]
    parts = [p0[:, None] + ring, p1[:, None] + ring]
    if caps:
        parts += [p0[:, None], p1[:, None]]
    v = np.concatenate(parts, 1)  # (N, V1, 3)
    t = t1[None] + v.shape[1] * np.arange(n)[:, None, None]
    return v.reshape(-1, 3).astype(np.float32), t.reshape(-1, 3)


def polyline_tube(points, radius: float, sides: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A wire along points (K,3) as K-1 tube segments."""
    p = np.asarray(points, np.float64)
    return tubes(p[:-1], p[1:], radius, sides=sides, caps=False)


def uv_sphere(center, radius: float, n_lat: int = 12, n_lon: int = 24,
              radii: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A UV sphere (or ellipsoid with ``radii``) with poles on the z axis; the +z pole
    vertex is exactly at center + (0,0,radius)."""
    lat = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    lon = 2 * np.pi * np.arange(n_lon) / n_lon
    st, ct = np.sin(lat)[:, None], np.cos(lat)[:, None]
    ring = np.stack([st * np.cos(lon), st * np.sin(lon), np.broadcast_to(ct, st.shape * np.array([1, n_lon]))], -1)
    v = np.concatenate([[[0, 0, 1.0]], ring.reshape(-1, 3), [[0, 0, -1.0]]])
    scale = np.asarray(radii if radii is not None else (radius,) * 3, np.float64)
    v = v * scale + np.asarray(center, np.float64)
    tris = []
    top, bottom = 0, len(v) - 1
    k = np.arange(n_lon)
    k1 = (k + 1) % n_lon
    tris.append(np.stack([np.full(n_lon, top), 1 + k, 1 + k1], 1))
    for a in range(n_lat - 2):
        r0, r1 = 1 + a * n_lon, 1 + (a + 1) * n_lon
        tris.append(np.stack([r0 + k, r1 + k, r1 + k1], 1))
        tris.append(np.stack([r0 + k, r1 + k1, r0 + k1], 1))
    last = 1 + (n_lat - 2) * n_lon
    tris.append(np.stack([last + k, np.full(n_lon, bottom), last + k1], 1))
    return v.astype(np.float32), np.concatenate(tris).astype(np.int64)


def torus(center, R: float, r: float, n_u: int = 24, n_v: int = 10, axis=(0, 0, 1)) -> tuple[np.ndarray, np.ndarray]:
    """A torus of major radius R and tube radius r around ``axis`` through center."""
    uu = 2 * np.pi * np.arange(n_u) / n_u
    vv = 2 * np.pi * np.arange(n_v) / n_v
    U, V = np.meshgrid(uu, vv, indexing="ij")
    local = np.stack([(R + r * np.cos(V)) * np.cos(U), (R + r * np.cos(V)) * np.sin(U), r * np.sin(V)], -1)
    a = np.asarray(axis, np.float64)[None]
    e1, e2 = _perp_frame(a)
    an = a / np.linalg.norm(a)
    M = np.stack([e1[0], e2[0], an[0]], 1)
    v = local.reshape(-1, 3) @ M.T + np.asarray(center, np.float64)
    i, j = np.meshgrid(np.arange(n_u), np.arange(n_v), indexing="ij")
    i1, j1 = (i + 1) % n_u, (j + 1) % n_v
    idx = lambda a_, b_: (a_ * n_v + b_).ravel()  # noqa: E731
    t = np.concatenate([np.stack([idx(i, j), idx(i1, j), idx(i1, j1)], 1),
                        np.stack([idx(i, j), idx(i1, j1), idx(i, j1)], 1)])
    return v.astype(np.float32), t.astype(np.int64)


def leaves(rng: np.random.Generator, centers, spread: float, n: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    """n small random triangles scattered (gaussian, ``spread``) around random picks of centers (K,3)."""
    c = np.atleast_2d(np.asarray(centers, np.float64))
    base = c[rng.integers(0, len(c), n)] + rng.normal(0, spread, (n, 3))
    d = rng.normal(0, 1, (n, 2, 3))
    d /= np.linalg.norm(d, axis=2, keepdims=True)
    s = size * rng.uniform(0.5, 1.5, (n, 1, 1))
    v = np.concatenate([base[:, None], base[:, None] + s * d], 1)  # (n,3,3)
    return v.reshape(-1, 3).astype(np.float32), np.arange(3 * n, dtype=np.int64).reshape(n, 3)


def branches(rng: np.random.Generator, root, direction, length: float, radius: float, depth: int,
             spread_deg: float = 35.0, children: tuple[int, int] = (2, 4)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A recursive branching structure, grown level by level (vectorised).

    Each branch of level k < depth spawns ``children`` branches starting at 50-100 %
    of its length, 0.5-0.75 as long, 0.6 as thick, turned by ~``spread_deg`` and
    biased upward. Returns starts (N,3), ends (N,3), radii (N,)."""
    d0 = np.asarray(direction, np.float64)
    P = np.asarray(root, np.float64)[None]
    D = (d0 / np.linalg.norm(d0))[None]
    Ls = np.array([float(length)])
    Rs = np.array([float(radius)])
    starts, ends, rads = [], [], []
    tan = math.tan(math.radians(spread_deg))
    for k in range(depth + 1):
        starts.append(P), ends.append(P + D * Ls[:, None]), rads.append(Rs)
        if k == depth:
            break
        counts = rng.integers(children[0], children[1] + 1, len(P))
        parent = np.repeat(np.arange(len(P)), counts)
        m = len(parent)
        nd = D[parent] + tan * rng.normal(0, 1, (m, 3))
        nd[:, 2] = np.abs(nd[:, 2]) * 0.5 + nd[:, 2] * 0.5 + 0.1
        nd /= np.linalg.norm(nd, axis=1, keepdims=True)
        t0 = rng.uniform(0.5, 1.0, m)
        P = P[parent] + D[parent] * (Ls[parent] * t0)[:, None]
        D = nd
        Ls = Ls[parent] * rng.uniform(0.5, 0.75, m)
        Rs = Rs[parent] * 0.6
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(rads)


def grid_bars(origin, edge_u, edge_v, n_u: int, n_v: int, radius: float, sides: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A planar lattice of thin bars (grille, wire mesh, fence mesh): n_u+1 bars along v
    and n_v+1 bars along u across the parallelogram origin + a*edge_u + b*edge_v."""
    o, u, w = (np.asarray(a, np.float64) for a in (origin, edge_u, edge_v))
    a = np.linspace(0, 1, n_u + 1)[:, None]
    b = np.linspace(0, 1, n_v + 1)[:, None]
    p0 = np.concatenate([o + a * u, o + b * w])
    p1 = np.concatenate([o + a * u + w, o + b * w + u])
    return tubes(p0, p1, radius, sides=sides, caps=False)


def catenary(p0, p1, sag: float, n: int = 16) -> np.ndarray:
    """Points (n,3) of a hanging wire from p0 to p1 sagging by ``sag`` metres at mid-span."""
    t = np.linspace(0, 1, n)[:, None]
    p = (1 - t) * np.asarray(p0, np.float64) + t * np.asarray(p1, np.float64)
    p[:, 2] -= sag * 4 * t[:, 0] * (1 - t[:, 0])
    return p


def merge(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (vertices, triangles) pairs into one."""
    vs, ts, off = [], [], 0
    for v, t in parts:
        vs.append(v)
        ts.append(t + off)
        off += len(v)
    if not vs:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    return np.concatenate(vs).astype(np.float32), np.concatenate(ts)


# --------------------------------------------------------------------------- #
# textures and shading
# --------------------------------------------------------------------------- #
_NOISE_N = 32  # lattice period of the value-noise table (cells)
_NOISE_TABLE = np.random.default_rng(20240607).random(_NOISE_N ** 3, dtype=np.float32)


def value_noise(p: np.ndarray, salt: np.ndarray | int = 0) -> np.ndarray:
    """3D value noise in [0,1) at points p (N,3) (lattice spacing 1, period 32), smoothstep-interpolated.

    The lattice values come from a fixed table, so the noise is the same on every
    machine; ``salt`` (scalar or (N,)) shifts the lattice per surface."""
    N = _NOISE_N
    p = np.asarray(p, np.float32)
    f = np.floor(p)
    t = p - f
    t = t * t * (3 - 2 * t)
    i = f.astype(np.int32) + (np.asarray(salt, np.int32) * np.array([[7], [13], [19]], np.int32)).T
    x0, y0, z0 = (i[:, 0] & (N - 1)), (i[:, 1] & (N - 1)) * N, (i[:, 2] & (N - 1)) * (N * N)
    x1, y1, z1 = ((i[:, 0] + 1) & (N - 1)), ((i[:, 1] + 1) & (N - 1)) * N, ((i[:, 2] + 1) & (N - 1)) * (N * N)
    tab = _NOISE_TABLE
    tx, ty, tz = t[:, 0], t[:, 1], t[:, 2]
    a = tab[x0 + y0 + z0] + tx * (tab[x1 + y0 + z0] - tab[x0 + y0 + z0])
    b = tab[x0 + y1 + z0] + tx * (tab[x1 + y1 + z0] - tab[x0 + y1 + z0])
    c = tab[x0 + y0 + z1] + tx * (tab[x1 + y0 + z1] - tab[x0 + y0 + z1])
    d = tab[x0 + y1 + z1] + tx * (tab[x1 + y1 + z1] - tab[x0 + y1 + z1])
    ab = a + ty * (b - a)
    cd = c + ty * (d - c)
    return ab + tz * (cd - ab)


def fbm(p: np.ndarray, octaves: int = 3, salt: np.ndarray | int = 0) -> np.ndarray:
    """Fractal value noise in [0,1) at p (N,3)."""
    acc = np.zeros(len(p), np.float32)
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        acc += amp * value_noise(p * (2.0 ** o), salt)
        tot += amp
        amp *= 0.5
    return acc / tot


_OTHER_AXES = np.array([[1, 2], [0, 2], [0, 1]])


def _plane_coords(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """2D coordinates (N,2) on the dominant plane of normals n (triplanar projection)."""
    ax = np.argmax(np.abs(n), axis=1)
    return np.take_along_axis(p, _OTHER_AXES[ax], axis=1)


_TEX_N = 256  # texels per side of the tileable noise texture
_TEX_PER_UNIT = 16.0  # texels per pattern cell (Material.scale metres)
_NOISE_TEX: np.ndarray | None = None


def noise_texture() -> np.ndarray:
    """A fixed, tileable fractal-noise texture (256,256) float32 in [0,1] (1/f^1.3 amplitude
    spectrum between 2 and 96 cycles per tile, from a fixed seed: the same everywhere)."""
    global _NOISE_TEX
    if _NOISE_TEX is None:
        n = _TEX_N
        rng = np.random.default_rng(1234567)
        spec = np.fft.fft2(rng.standard_normal((n, n)))
        f = np.fft.fftfreq(n) * n
        k = np.hypot(f[:, None], f[None, :])
        amp = np.where((k >= 2) & (k <= 96), np.maximum(k, 1) ** -1.3, 0)
        x = np.real(np.fft.ifft2(spec * amp))
        lo, hi = np.percentile(x, [1, 99])
        _NOISE_TEX = np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32)
    return _NOISE_TEX


def sample_noise(uv: np.ndarray) -> np.ndarray:
    """Bilinear samples (N,) of :func:`noise_texture` at pattern coordinates uv (N,2)
    (16 texels per unit, wrapping every 16 units)."""
    import cv2

    tex = noise_texture()
    n = len(uv)
    if n == 0:
        return np.zeros(0, np.float32)
    xy = np.mod(uv * np.float32(_TEX_PER_UNIT), np.float32(_TEX_N)).astype(np.float32)
    cols = 256
    rows = -(-n // cols)
    pad = rows * cols - n
    mx = np.concatenate([xy[:, 0], np.zeros(pad, np.float32)]).reshape(rows, cols)
    my = np.concatenate([xy[:, 1], np.zeros(pad, np.float32)]).reshape(rows, cols)
    out = np.empty((0,), np.float32)
    chunks = []
    for r0 in range(0, rows, 16384):  # cv2.remap needs fewer than 32767 rows
        chunks.append(cv2.remap(tex, mx[r0:r0 + 16384], my[r0:r0 + 16384], cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_WRAP).ravel())
    out = np.concatenate(chunks)
    return out[:n]


def shade_albedo(p: np.ndarray, n: np.ndarray, mesh_id: np.ndarray, materials: Sequence[Material]) -> np.ndarray:
    """Albedo (N,3) float32 of hit points p (N,3) with normals n (N,3) on meshes mesh_id (N,).

    Pattern coordinates are q = (p + offset) / scale; 2D patterns use the
    dominant-axis plane of q (triplanar); noise is a fixed tileable texture."""
    C1 = np.array([m.color for m in materials], np.float32).reshape(-1, 3)
    out = C1[mesh_id]
    codes = np.array([PATTERNS.index(m.pattern) for m in materials], np.int32)
    if not codes.any():
        return out
    sub = np.nonzero(codes[mesh_id] != 0)[0]
    if len(sub) == 0:
        return out
    C2 = np.array([m.color2 for m in materials], np.float32).reshape(-1, 3)
    scale = np.array([m.scale for m in materials], np.float32)
    offs = np.array([m.offset for m in materials], np.float32).reshape(-1, 3)
    dirs = np.array([m.direction for m in materials], np.float32).reshape(-1, 3)
    salt = (np.arange(len(materials), dtype=np.float32) * 5.37)[:, None]  # decorrelate noise per surface
    mid = mesh_id[sub]
    pat = codes[mid]
    q = (p[sub] + offs[mid]) / scale[mid, None]
    uv = _plane_coords(q, n[sub])
    w = np.zeros(len(sub), np.float32)
    present = np.flatnonzero(np.bincount(pat, minlength=len(PATTERNS)))
    for code in present:
        name = PATTERNS[code]
        sel = np.nonzero(pat == code)[0] if len(present) > 1 else slice(None)
        u = uv[sel]
        if name == "checker":
            w[sel] = (np.floor(u).astype(np.int64).sum(1) & 1).astype(np.float32)
        elif name == "stripes":
            w[sel] = (np.mod((q[sel] * dirs[mid[sel]]).sum(1), 1.0) < 0.5).astype(np.float32)
        elif name == "noise":
            w[sel] = sample_noise(u + salt[mid[sel]])
        elif name == "grid":
            w[sel] = (np.mod(u, 1.0) < 0.06).any(1).astype(np.float32)
        elif name == "windows":
            f = np.mod(u, 1.0)
            w[sel] = (((f > 0.22) & (f < 0.78)).all(1) & (np.abs(n[sub][sel][:, 2]) < 0.5)).astype(np.float32)
        elif name == "wood":
            s = (q[sel] * dirs[mid[sel]]).sum(1) * 6 + 1.5 * sample_noise(u * 2 + salt[mid[sel]])
            w[sel] = 0.5 + 0.5 * np.sin(np.float32(2 * np.pi) * s)
    c1 = out[sub]
    out[sub] = c1 + w[:, None] * (C2[mid] - c1)
    return out


def _sky(dirs_world: np.ndarray, zenith, horizon) -> np.ndarray:
    """Sky colour (N,3) for world directions (N,3): a horizon-to-zenith gradient."""
    d = dirs_world / np.linalg.norm(dirs_world, axis=1, keepdims=True)
    t = np.clip(d[:, 2], 0, 1)[:, None] ** 0.6
    return (np.asarray(horizon, np.float32) * (1 - t) + np.asarray(zenith, np.float32) * t).astype(np.float32)


def render(meshes: Sequence[Mesh], K: np.ndarray, extrinsic: np.ndarray, size: tuple[int, int],
           light: Light | None = None, shadows: bool = True, max_depth: float = math.inf,
           min_depth: float = MIN_DEPTH, sky: tuple = ((0.35, 0.55, 0.9), (0.8, 0.85, 0.9)),
           fog: float | None = None, gamma: float = 2.2, nthreads: int = 0,
           supersample: int = 1) -> SyntheticSample:
    """Ray-cast ``meshes`` from a pinhole camera.

    K (3,3) pixel intrinsics (open3d pixel-centre convention, see module doc);
    extrinsic (4,4) world-to-camera (OpenCV axes); size (H,W). ``light`` defaults
    to a directional light from above. ``sky`` = (zenith, horizon) linear colours
    for rays that hit nothing; ``fog`` = distance (m) of exp(-d/fog) haze toward
    the horizon colour. ``nthreads`` 0 = all cores. ``supersample`` (odd s):
    s x s rays per pixel, RGB averaged in linear light (anti-aliased), depth and
    valid from the sub-ray through the pixel centre (point-sampled, exact).

    Shading (linear RGB, then gamma): albedo * (ambient * (0.75 + 0.25 n_z) +
    light.color * max(0, n.l) * unoccluded), n the face normal turned toward the
    camera; occlusion from one secondary ray per lit pixel toward the light
    (for a point light only occluders before the light count).

    Returns a :class:`SyntheticSample`: depth is planar z (metres), 0 where
    invalid; valid = finite hit with min_depth < z <= max_depth;
    meta["timings_ms"] has the cost of each stage.
    """
    import open3d as o3d

    tic = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal tic
        now = time.perf_counter()
        timings[name] = round((now - tic) * 1000, 3)
        tic = now

    H, W = int(size[0]), int(size[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"`size` must be positive (H, W), got {size}")
    K = np.asarray(K, np.float64)
    E = np.asarray(extrinsic, np.float64)
    if K.shape != (3, 3) or E.shape != (4, 4):
        raise ValueError(f"`K` must be 3x3 and `extrinsic` 4x4, got {K.shape} and {E.shape}")
    light = light or Light()
    ss = int(supersample)
    if ss < 1 or ss % 2 == 0:
        raise ValueError(f"`supersample` must be an odd integer >= 1, got {supersample}")
    K_rays = K.copy()
    K_rays[:2] *= ss  # pixel-centre convention: sub-pixel (u*ss + (ss-1)/2) has the pixel's centre ray
    Hs, Ws = H * ss, W * ss

    parts, counts, materials = [], [], []
    for m in meshes:
        t = np.asarray(m.triangles)
        if len(t) == 0:
            continue
        parts.append((np.asarray(m.vertices, np.float32), t))
        counts.append(len(t))
        materials.append(m.material)
    V, T = merge(parts)
    tri_mesh = np.repeat(np.arange(len(counts), dtype=np.int32), counts)

    scene = o3d.t.geometry.RaycastingScene(nthreads=nthreads)
    if len(T):
        scene.add_triangles(o3d.core.Tensor(V), o3d.core.Tensor(T.astype(np.uint32)))
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(o3d.core.Tensor(K_rays), o3d.core.Tensor(E), Ws, Hs)
    lap("setup")
    ans = scene.cast_rays(rays, nthreads=nthreads)
    t_hit = ans["t_hit"].numpy()  # (H,W) planar z
    lap("cast")
    dirs = rays.numpy().reshape(-1, 6)[:, 3:]
    origin = (-E[:3, :3].T @ E[:3, 3]).astype(np.float32)  # camera centre in world
    hit = np.isfinite(t_hit).ravel()
    idx = np.nonzero(hit)[0]

    rgb_lin = np.empty((Hs * Ws, 3), np.float32)
    miss = np.nonzero(~hit)[0]
    if len(miss):
        rgb_lin[miss] = _sky(dirs[miss], *sky)
    n_shadowed = 0
    if len(idx):
        tri = ans["primitive_ids"].numpy().ravel()[idx]
        mid = tri_mesh[tri]
        t = t_hit.ravel()[idx]
        d = dirs[idx]
        p = origin[None] + d * t[:, None]
        n = ans["primitive_normals"].numpy().reshape(-1, 3)[idx]
        n *= np.where((n * d).sum(1) > 0, np.float32(-1), np.float32(1))[:, None]
        albedo = shade_albedo(p, n, mid, materials)
        lap("texture")
        if light.position is None:
            L = np.asarray(light.direction, np.float32)
            L = np.broadcast_to(L / np.linalg.norm(L), p.shape)
            dist_l = None
        else:
            Lv = np.asarray(light.position, np.float32)[None] - p
            dist_l = np.linalg.norm(Lv, axis=1)
            L = Lv / np.maximum(dist_l, 1e-9)[:, None]
        kd = np.clip((n * L).sum(1), 0, None)
        if shadows and len(T):
            lit = np.nonzero(kd > 0)[0]
            if len(lit):
                eps = (1e-4 + 1e-5 * t[lit])[:, None]
                o = p[lit] + n[lit] * eps
                if dist_l is None:
                    srays = np.concatenate([o, L[lit]], 1)
                    occ = scene.test_occlusions(o3d.core.Tensor(srays), nthreads=nthreads).numpy()
                else:  # point light: direction scaled to the light distance, occluders only for s < 1
                    srays = np.concatenate([o, L[lit] * dist_l[lit, None]], 1)
                    occ = scene.test_occlusions(o3d.core.Tensor(srays), tfar=0.999, nthreads=nthreads).numpy()
                kd[lit[occ]] = 0
                n_shadowed = int(occ.sum())
        lap("shadow")
        amb = np.float32(light.ambient) * (np.float32(0.75) + np.float32(0.25) * n[:, 2:3])
        col = albedo * (amb + kd[:, None] * np.asarray(light.color, np.float32)[None])
        if fog:
            dist = t * np.linalg.norm(d, axis=1)
            a = np.exp(-dist / np.float32(fog))[:, None]
            col = col * a + np.asarray(sky[1], np.float32)[None] * (1 - a)
        rgb_lin[idx] = col
    rgb_lin = np.clip(rgb_lin, 0, 1).reshape(Hs, Ws, 3)
    if ss > 1:
        rgb_lin = rgb_lin.reshape(H, ss, W, ss, 3).mean(axis=(1, 3))
        c = (ss - 1) // 2
        t_hit = t_hit[c::ss, c::ss]
    rgb = rgb_lin ** np.float32(1.0 / gamma)
    depth = t_hit.astype(np.float32)
    valid = np.isfinite(depth) & (depth > min_depth) & (depth <= max_depth)
    depth = np.where(valid, depth, np.float32(0)).astype(np.float32)
    lap("shade")
    meta = {"triangles": int(len(T)), "meshes": len(materials), "shadowed_pixels": n_shadowed,
            "timings_ms": timings}
    return SyntheticSample(rgb.reshape(H, W, 3).astype(np.float32), depth, valid, K, meta)


# --------------------------------------------------------------------------- #
# random scenes
# --------------------------------------------------------------------------- #
def _rand_color(rng: np.random.Generator, sat: tuple = (0.1, 0.8), val: tuple = (0.2, 0.9),
                hue: tuple = (0.0, 1.0)) -> tuple:
    """A random linear RGB colour from HSV ranges (hue in turns, wraps)."""
    h = rng.uniform(*hue) % 1.0
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p_, q_, t_ = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t_, p_), (q_, v, p_), (p_, v, t_), (p_, q_, v), (t_, p_, v), (v, p_, q_)][i]
    return tuple(float(c) ** 2.2 for c in rgb)  # to linear


def _rand_material(rng: np.random.Generator, scale: float = 0.3, patterns: Sequence[str] | None = None,
                   weights: Sequence[float] | None = None) -> Material:
    pats = list(patterns or ("flat", "checker", "stripes", "noise", "grid", "wood"))
    w = np.asarray(weights if weights is not None else np.ones(len(pats)), np.float64)
    pat = pats[int(rng.choice(len(pats), p=w / w.sum()))]
    d = rng.normal(0, 1, 3)
    d /= np.linalg.norm(d)
    return Material(color=_rand_color(rng), color2=_rand_color(rng), pattern=pat,
                    scale=float(scale * rng.uniform(0.4, 2.0)), direction=tuple(float(x) for x in d),
                    offset=tuple(float(x) for x in rng.uniform(0, 10, 3)))


_LEAF_HUE = (0.17, 0.42)  # yellow-green to green


class _Builder:
    """Collects meshes for a scene."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.meshes: list[Mesh] = []

    def add(self, vt: tuple[np.ndarray, np.ndarray], material: Material | None = None, name: str = "",
            casts_shadow: bool = True) -> None:
        v, t = vt
        if len(t):
            self.meshes.append(Mesh(v, t, material or _rand_material(self.rng), casts_shadow, name))

    def mat(self, **kw) -> Material:
        return _rand_material(self.rng, **kw)


def _corners(x: float, y: float, hx: float, hy: float, yaw: float) -> np.ndarray:
    """(4,2) the corners (+-hx, +-hy) of a rectangle centred at (x, y) turned by ``yaw``.

    Order (-,-), (-,+), (+,-), (+,+) in the rectangle's own axes (legs and uprights).
    """
    c, s = math.cos(yaw), math.sin(yaw)
    out = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = sx * hx, sy * hy
            out.append([x + c * lx - s * ly, y + s * lx + c * ly])
    return np.array(out)


def _table(b: _Builder, x: float, y: float, yaw: float, floor: float = 0.0) -> None:
    rng = b.rng
    w, d, h = rng.uniform(0.6, 1.6), rng.uniform(0.5, 1.0), rng.uniform(0.45, 0.8)
    top = rng.uniform(0.02, 0.05)
    b.add(boxes([[x, y, floor + h - top / 2]], [[w, d, top]], [yaw]), b.mat(scale=0.3), "table top")
    r = rng.uniform(0.012, 0.03)
    legs = _corners(x, y, w / 2 - 0.05, d / 2 - 0.05, yaw)
    p0 = np.c_[legs, np.full(4, floor)]
    p1 = np.c_[legs, np.full(4, floor + h - top)]
    b.add(tubes(p0, p1, r, sides=6), b.mat(scale=0.2), "table legs")
    if rng.uniform() < 0.5:  # stretchers between legs: thin rods
        b.add(tubes(p0[[0, 1, 3, 2]] + [0, 0, 0.12], p0[[1, 3, 2, 0]] + [0, 0, 0.12], r * 0.6, sides=4, caps=False),
              b.mat(scale=0.2), "table rods")


def _tabletop_clutter(b: _Builder, x: float, y: float, z: float, w: float, d: float, yaw: float) -> None:
    """Small objects with fine structure on a w x d surface at height z: cups, balls, pencils,
    rings, a cooling-rack grid, forks (thin tines), a small plant, boxes."""
    rng = b.rng
    c, s = math.cos(yaw), math.sin(yaw)

    def spot() -> tuple[float, float]:
        lx, ly = rng.uniform(-w / 2 + 0.04, w / 2 - 0.04), rng.uniform(-d / 2 + 0.04, d / 2 - 0.04)
        return x + c * lx - s * ly, y + s * lx + c * ly

    for _ in range(int(rng.integers(4, 14))):
        k = rng.choice(["cup", "ball", "pencils", "ring", "rack", "fork", "plant", "box"],
                       p=[0.15, 0.12, 0.15, 0.1, 0.1, 0.12, 0.08, 0.18])
        px, py = spot()
        if k == "cup":
            r, h = rng.uniform(0.03, 0.06), rng.uniform(0.06, 0.14)
            b.add(tubes([[px, py, z]], [[px, py, z + h]], r, sides=16), b.mat(scale=0.05), "cup")
            if rng.uniform() < 0.6:  # handle
                b.add(torus([px + r * 1.3, py, z + h / 2], h * 0.25, 0.006, 16, 6, (0, 1, 0)), b.mat(scale=0.05), "handle")
        elif k == "ball":
            r = rng.uniform(0.02, 0.07)
            b.add(uv_sphere([px, py, z + r], r, 10, 20), b.mat(scale=0.03), "ball")
        elif k == "pencils":
            m = int(rng.integers(1, 6))
            a = rng.uniform(0, np.pi) + rng.normal(0, 0.2, m)
            L = rng.uniform(0.1, 0.2, m)
            cx = px + rng.normal(0, 0.03, m)
            cy = py + rng.normal(0, 0.03, m)
            r = rng.uniform(0.002, 0.005)
            p0 = np.c_[cx - np.cos(a) * L / 2, cy - np.sin(a) * L / 2, np.full(m, z + r)]
            p1 = np.c_[cx + np.cos(a) * L / 2, cy + np.sin(a) * L / 2, np.full(m, z + r)]
            b.add(tubes(p0, p1, r, sides=5), b.mat(scale=0.02), "pencils")
        elif k == "ring":
            R = rng.uniform(0.02, 0.08)
            b.add(torus([px, py, z + R * rng.uniform(0.1, 1.0)], R, R * rng.uniform(0.05, 0.2), 20, 6,
                        rng.normal(0, 1, 3)), b.mat(scale=0.05), "ring")
        elif k == "rack":
            sz = rng.uniform(0.12, 0.3)
            h = rng.uniform(0.01, 0.05)
            _grille(b, [px - sz / 2, py - sz / 2, z + h], [sz, 0, 0], [0, sz, 0], rng.uniform(0.01, 0.03))
        elif k == "fork":
            a = rng.uniform(0, 2 * np.pi)
            e = np.array([math.cos(a), math.sin(a), 0])
            q = np.array([-e[1], e[0], 0])
            base = np.array([px, py, z + 0.004])
            L = rng.uniform(0.1, 0.18)
            nt = int(rng.integers(2, 5))
            off = (np.arange(nt) - (nt - 1) / 2) * 0.007
            tines0 = base + e * L * 0.6 + off[:, None] * q
            m = Material(color=_rand_color(rng, (0, 0.2), (0.5, 0.9)))
            b.add(merge([tubes([base], [base + e * L * 0.6], 0.004, sides=4),
                         tubes(tines0, tines0 + e * L * 0.4, 0.0015, sides=3, caps=False)]), m, "fork")
        elif k == "plant":
            _plant(b, px, py, z, rng.uniform(0.3, 0.6))
        else:
            sz = rng.uniform(0.03, 0.15, 3)
            b.add(boxes([[px, py, z + sz[2] / 2]], [sz], [rng.uniform(0, np.pi)]), b.mat(scale=0.05), "box")


def _chair(b: _Builder, x: float, y: float, yaw: float) -> None:
    rng = b.rng
    w, h = rng.uniform(0.38, 0.5), rng.uniform(0.4, 0.5)
    m = b.mat(scale=0.2)
    b.add(boxes([[x, y, h]], [[w, w, 0.04]], [yaw]), m, "seat")
    pts = _corners(x, y, w / 2 - 0.03, w / 2 - 0.03, yaw)
    r = rng.uniform(0.01, 0.02)
    b.add(tubes(np.c_[pts, np.zeros(4)], np.c_[pts, np.full(4, h)], r, sides=5), m, "chair legs")
    back = pts[[2, 3]]  # +x side... two back posts
    top = h + rng.uniform(0.35, 0.5)
    b.add(tubes(np.c_[back, np.full(2, h)], np.c_[back, np.full(2, top)], r, sides=5), m, "back posts")
    n_slats = int(rng.integers(2, 7))
    zz = np.linspace(h + 0.1, top - 0.02, n_slats)
    if rng.uniform() < 0.5:  # horizontal slats
        b.add(tubes(np.c_[np.repeat(back[:1], n_slats, 0), zz], np.c_[np.repeat(back[1:], n_slats, 0), zz],
                    r * 0.6, sides=4, caps=False), m, "slats")
    else:  # vertical spindles
        tt = np.linspace(0.15, 0.85, n_slats)[:, None]
        bp = back[:1] * (1 - tt) + back[1:] * tt
        b.add(tubes(np.c_[bp, np.full(n_slats, h)], np.c_[bp, np.full(n_slats, top)], r * 0.5, sides=4, caps=False),
              m, "spindles")


def _shelf(b: _Builder, x: float, y: float, yaw: float) -> None:
    rng = b.rng
    w, d, h = rng.uniform(0.6, 1.4), rng.uniform(0.25, 0.45), rng.uniform(0.8, 2.0)
    n = int(rng.integers(2, 6))
    c, s = math.cos(yaw), math.sin(yaw)
    m = b.mat(scale=0.3)
    zs = np.linspace(0.05, h, n)
    b.add(boxes(np.c_[np.full(n, x), np.full(n, y), zs], np.tile([w, d, 0.025], (n, 1)), np.full(n, yaw)), m, "shelves")
    # four thin uprights
    pts = _corners(x, y, w / 2, d / 2, yaw)
    b.add(tubes(np.c_[pts, np.zeros(4)], np.c_[pts, np.full(4, h)], rng.uniform(0.008, 0.02), sides=4), m, "uprights")
    # clutter on shelves: small boxes and spheres
    k = int(rng.integers(2, 10))
    lx = rng.uniform(-w / 2 + 0.05, w / 2 - 0.05, k)
    zi = rng.integers(0, n - 1 if n > 1 else 1, k)
    sz = rng.uniform(0.05, 0.2, (k, 3))
    sz[:, 2] = np.minimum(sz[:, 2], np.diff(zs).min() * 0.8 if n > 1 else 0.2)
    cen = np.c_[x + c * lx, y + s * lx, zs[zi] + 0.0125 + sz[:, 2] / 2]
    b.add(boxes(cen, sz, yaw + rng.uniform(-0.3, 0.3, k)), b.mat(scale=0.1), "books")


def _plant(b: _Builder, x: float, y: float, z: float, scale: float = 1.0) -> None:
    rng = b.rng
    pr = rng.uniform(0.08, 0.2) * scale
    ph = rng.uniform(0.15, 0.35) * scale
    b.add(tubes([[x, y, z]], [[x, y, z + ph]], pr, sides=10), b.mat(scale=0.1), "pot")
    s, e, r = branches(rng, [x, y, z + ph], [0, 0, 1], rng.uniform(0.2, 0.5) * scale, 0.006 * scale, 2,
                       spread_deg=40)
    b.add(tubes(s, e, r, sides=3, caps=False), Material(color=_rand_color(rng, (0.4, 0.8), (0.2, 0.5)),
                                                         pattern="flat"), "stems")
    green = Material(color=_rand_color(rng, (0.5, 0.9), (0.25, 0.7), _LEAF_HUE),
                     color2=_rand_color(rng, (0.5, 0.9), (0.1, 0.4), _LEAF_HUE), pattern="noise", scale=0.05)
    b.add(leaves(rng, e, 0.05 * scale, int(rng.integers(80, 400)), 0.03 * scale), green, "leaves")


def _grille(b: _Builder, corner, eu, ev, cell: float) -> None:
    rng = b.rng
    nu = max(1, int(np.linalg.norm(eu) / cell))
    nv = max(1, int(np.linalg.norm(ev) / cell))
    b.add(grid_bars(corner, eu, ev, nu, nv, rng.uniform(0.003, 0.012), sides=4),
          Material(color=_rand_color(rng, (0, 0.5), (0.05, 0.95)), pattern="flat"), "grille")


def indoor_scene(rng: np.random.Generator) -> tuple[list[Mesh], Light, np.ndarray, np.ndarray, dict]:
    """A random room. Returns meshes, light, eye (3,), target (3,), info."""
    b = _Builder(rng)
    W, D, H = rng.uniform(3, 8), rng.uniform(3, 8), rng.uniform(2.4, 3.5)
    # room shell: each wall its own material
    floor_m = _rand_material(rng, 0.4, ("checker", "wood", "noise", "grid", "stripes"))
    b.add(quad([0, 0, 0], [W, 0, 0], [0, D, 0]), floor_m, "floor")
    b.add(quad([0, 0, H], [W, 0, 0], [0, D, 0]), Material(color=_rand_color(rng, (0, 0.1), (0.7, 0.95))), "ceiling")
    walls = [([0, 0, 0], [W, 0, 0]), ([W, 0, 0], [0, D, 0]), ([W, D, 0], [-W, 0, 0]), ([0, D, 0], [0, -D, 0])]
    for i, (c0, e) in enumerate(walls):
        m = _rand_material(rng, 0.5, ("flat", "noise", "stripes", "grid", "checker"), (3, 2, 1, 1, 0.5))
        b.add(quad(c0, e, [0, 0, H]), m, f"wall{i}")
    # camera first so that furniture avoids it
    eye = np.array([rng.uniform(0.4, W - 0.4), rng.uniform(0.4, D - 0.4), rng.uniform(0.7, min(2.0, H - 0.3))])
    occupied = [eye[:2]]

    def free_spot(margin: float) -> np.ndarray | None:
        for _ in range(20):
            q = np.array([rng.uniform(margin, W - margin), rng.uniform(margin, D - margin)])
            if all(np.linalg.norm(q - o) > margin + 0.35 for o in occupied):
                occupied.append(q)
                return q
        return None

    n_items = int(rng.integers(4, 12))
    for _ in range(n_items):
        kind = rng.choice(["table", "chair", "shelf", "box", "sphere", "cylinder", "plant", "torus", "lamp"],
                          p=[0.14, 0.16, 0.1, 0.14, 0.1, 0.08, 0.14, 0.06, 0.08])
        q = free_spot(0.6)
        if q is None:
            break
        x, y = q
        yaw = rng.uniform(0, np.pi)
        if kind == "table":
            _table(b, x, y, yaw)
            if rng.uniform() < 0.6:
                _plant(b, x, y, 0.75, 0.6) if rng.uniform() < 0.5 else b.add(
                    uv_sphere([x, y, 0.9], 0.12, 10, 20), b.mat(scale=0.05), "ball")
        elif kind == "chair":
            _chair(b, x, y, yaw)
        elif kind == "shelf":
            _shelf(b, x, y, yaw)
        elif kind == "box":
            s = rng.uniform(0.2, 1.2, 3)
            b.add(boxes([[x, y, s[2] / 2]], [s], [yaw]), b.mat(scale=0.3), "box")
        elif kind == "sphere":
            r = rng.uniform(0.1, 0.5)
            b.add(uv_sphere([x, y, r + rng.uniform(0, 1.0)], r, 12, 24), b.mat(scale=0.2), "sphere")
        elif kind == "cylinder":
            r, h = rng.uniform(0.05, 0.4), rng.uniform(0.2, 1.6)
            b.add(tubes([[x, y, 0]], [[x, y, h]], r, sides=16), b.mat(scale=0.2), "cylinder")
        elif kind == "plant":
            _plant(b, x, y, 0.0, rng.uniform(1.0, 2.5))
        elif kind == "torus":
            R = rng.uniform(0.15, 0.4)
            b.add(torus([x, y, rng.uniform(R, 1.5)], R, R * rng.uniform(0.08, 0.35), 24, 10, rng.normal(0, 1, 3)),
                  b.mat(scale=0.2), "torus")
        elif kind == "lamp":
            h = rng.uniform(1.0, 1.8)
            m = b.mat(scale=0.2)
            b.add(tubes([[x, y, 0]], [[x, y, 0.03]], 0.15, sides=12), m, "lamp base")
            b.add(tubes([[x, y, 0]], [[x, y, h]], rng.uniform(0.006, 0.015), sides=5), m, "lamp rod")
            b.add(tubes([[x, y, h - 0.25]], [[x, y, h]], 0.18, sides=14, caps=False), b.mat(scale=0.1), "shade")
    # thin structures on walls and hanging
    for _ in range(int(rng.integers(0, 3))):
        i = int(rng.integers(0, 4))
        c0, e = walls[i]
        c0, e = np.asarray(c0, float), np.asarray(e, float)
        L = np.linalg.norm(e)
        a0 = rng.uniform(0, 0.6)
        wdt = rng.uniform(0.5, 1.5)
        inward = np.array([-e[1], e[0], 0]) / L * 0.08
        corner = c0 + e * a0 + np.array([0, 0, rng.uniform(0.5, 1.2)]) + inward
        _grille(b, corner, e / L * min(wdt, L * (1 - a0)), [0, 0, rng.uniform(0.5, 1.2)], rng.uniform(0.04, 0.2))
    for _ in range(int(rng.integers(0, 4))):  # hanging cables / strings across the room
        p0 = np.array([rng.uniform(0, W), rng.uniform(0, D), H - 0.01])
        p1 = np.array([rng.uniform(0, W), rng.uniform(0, D), rng.uniform(0, H)])
        b.add(polyline_tube(catenary(p0, p1, rng.uniform(0, 0.4), 12), rng.uniform(0.002, 0.01), 4),
              Material(color=_rand_color(rng, (0, 0.4), (0.05, 0.6))), "cable")
    for _ in range(int(rng.integers(0, 4))):  # pictures on the walls
        i = int(rng.integers(0, 4))
        c0, e = (np.asarray(a, float) for a in walls[i])
        L = np.linalg.norm(e)
        inward = np.array([-e[1], e[0], 0]) / L
        pw, ph = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.0)
        cen = c0 + e * rng.uniform(0.2, 0.8) + inward * 0.015 + [0, 0, rng.uniform(1.0, H - 0.6)]
        yaw = math.atan2(e[1], e[0])
        b.add(boxes([cen], [[pw, 0.03, ph]], [yaw]), b.mat(scale=0.1, patterns=("noise", "checker", "stripes")),
              "picture")
    tabletop = rng.uniform() < 0.3
    if tabletop:  # close-up of a table covered with small objects
        q = free_spot(0.8)
        if q is None:
            tabletop = False
    if tabletop:
        yaw = rng.uniform(0, np.pi)
        tw, td, th = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0), rng.uniform(0.45, 0.8)
        b.add(boxes([[q[0], q[1], th - 0.015]], [[tw, td, 0.03]], [yaw]),
              b.mat(scale=0.2, patterns=("wood", "noise", "flat", "checker")), "table top")
        _tabletop_clutter(b, q[0], q[1], th, tw, td, yaw)
        a = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.4, 1.1)
        eye = np.array([np.clip(q[0] + math.cos(a) * dist, 0.2, W - 0.2), np.clip(q[1] + math.sin(a) * dist, 0.2, D - 0.2),
                        th + rng.uniform(0.25, 0.8)])
        target = np.array([q[0] + rng.normal(0, 0.1), q[1] + rng.normal(0, 0.1), th])
    else:  # look at a random point across the room
        target = np.array([rng.uniform(0.2, W - 0.2), rng.uniform(0.2, D - 0.2), rng.uniform(0.2, 1.6)])
        while np.linalg.norm(target[:2] - eye[:2]) < 1.0:
            target = np.array([rng.uniform(0.2, W - 0.2), rng.uniform(0.2, D - 0.2), rng.uniform(0.2, 1.6)])
    if not tabletop and rng.uniform() < 0.35:  # a near object between the camera and the target
        t = rng.uniform(0.35, 0.7)
        near = eye + (target - eye) * t / max(1.0, np.linalg.norm(target - eye)) * rng.uniform(0.6, 1.6)
        near += rng.normal(0, 0.15, 3)
        if rng.uniform() < 0.5:
            _plant(b, near[0], near[1], max(0.0, near[2] - 0.5), rng.uniform(0.6, 1.5))
        else:
            _grille(b, near - [0.4, 0, 0.4], [0.8 * math.cos(rng.uniform(0, 6.3)), 0.8 * math.sin(rng.uniform(0, 6.3)), 0],
                    [0, 0, 0.8], rng.uniform(0.05, 0.15))
    lp = np.array([rng.uniform(0.3, W - 0.3), rng.uniform(0.3, D - 0.3), H - 0.15])
    light = Light(position=tuple(lp), color=tuple(float(c) for c in rng.uniform(0.75, 1.0, 3) * rng.uniform(0.9, 1.3)),
                  ambient=float(rng.uniform(0.15, 0.4)))
    return b.meshes, light, eye, target, {"room": [W, D, H], "tabletop": bool(tabletop)}


def _tree(b: _Builder, x: float, y: float, height: float) -> None:
    rng = b.rng
    trunk_h = height * rng.uniform(0.3, 0.5)
    s, e, r = branches(rng, [x, y, 0], [rng.normal(0, 0.05), rng.normal(0, 0.05), 1], trunk_h,
                       height * rng.uniform(0.015, 0.03), int(rng.integers(2, 4)), spread_deg=rng.uniform(25, 50))
    bark = Material(color=_rand_color(rng, (0.2, 0.5), (0.1, 0.35)), color2=_rand_color(rng, (0.2, 0.5), (0.05, 0.2)),
                    pattern="noise", scale=0.2)
    b.add(tubes(s, e, r, sides=5, caps=False), bark, "branches")
    tips = e[r < r.max() * 0.5] if (r < r.max() * 0.5).any() else e
    hue = _LEAF_HUE if rng.uniform() < 0.8 else (-0.05, 0.14)  # green, sometimes autumn
    foliage = Material(color=_rand_color(rng, (0.4, 0.9), (0.2, 0.6), hue), color2=_rand_color(rng, (0.4, 0.9), (0.1, 0.35), hue),
                       pattern="noise", scale=0.3)
    n = int(rng.integers(800, 3000) * rng.uniform(0.2, 1.0))  # from bare to dense crowns
    lod = min(1.0, max(0.25, 25.0 / max(math.hypot(x, y), 1e-3)))  # far trees: fewer, larger leaves (same cover)
    b.add(leaves(rng, tips, height * rng.uniform(0.04, 0.1), max(1, int(n * lod)),
                 height * rng.uniform(0.02, 0.04) / math.sqrt(lod)), foliage, "leaves")


def outdoor_scene(rng: np.random.Generator) -> tuple[list[Mesh], Light, np.ndarray, np.ndarray, dict]:
    """A random street or park. Returns meshes, light, eye (3,), target (3,), info."""
    b = _Builder(rng)
    layout = "street" if rng.uniform() < 0.6 else "park"
    ground = Material(color=_rand_color(rng, (0.05, 0.5), (0.2, 0.6)), color2=_rand_color(rng, (0.05, 0.5), (0.1, 0.5)),
                      pattern="noise", scale=float(rng.uniform(0.5, 3.0)))
    b.add(quad([-300, -300, 0], [600, 0, 0], [0, 600, 0]), ground, "ground")
    road_w = rng.uniform(6, 14)
    if layout == "street":
        road = Material(color=_rand_color(rng, (0, 0.1), (0.1, 0.3)), color2=_rand_color(rng, (0, 0.1), (0.05, 0.2)),
                        pattern="noise", scale=float(rng.uniform(0.3, 1.5)))
        b.add(quad([-50, -road_w / 2, 0.005], [400, 0, 0], [0, road_w, 0]), road, "road")
        paint = Material(color=(0.8, 0.8, 0.75) if rng.uniform() < 0.7 else (0.8, 0.6, 0.1))
        dash, gap = rng.uniform(2, 5), rng.uniform(3, 9)
        xs_d = np.arange(-20, 200, dash + gap)
        marks = [boxes(np.c_[xs_d + dash / 2, np.zeros(len(xs_d)), np.full(len(xs_d), 0.01)],
                       np.tile([dash, 0.15, 0.01], (len(xs_d), 1)))]
        for side in (-1, 1):
            marks.append(boxes([[75, side * (road_w / 2 - 0.3), 0.01]], [[250, 0.12, 0.01]]))
        b.add(merge(marks), paint, "lane marks")
        for side in (-1, 1):  # kerbs
            b.add(boxes([[150, side * (road_w / 2 + 0.1), 0.07]], [[400, 0.2, 0.14]]), b.mat(scale=0.5), "kerb")
        xs = 0.0
        while xs < 160:  # buildings along both sides
            for side in (-1, 1):
                if rng.uniform() < 0.85:
                    w, d, h = rng.uniform(6, 25), rng.uniform(6, 20), rng.uniform(4, 40)
                    off = road_w / 2 + rng.uniform(2, 8) + d / 2
                    m = Material(color=_rand_color(rng, (0, 0.5), (0.3, 0.9)),
                                 color2=_rand_color(rng, (0, 0.4), (0.05, 0.5)), pattern="windows",
                                 scale=float(rng.uniform(2.0, 3.5)), offset=tuple(float(v) for v in rng.uniform(0, 5, 3)))
                    b.add(boxes([[xs + w / 2, side * off, h / 2]], [[w, d, h]]), m, "building")
            xs += rng.uniform(8, 28)
        # poles with wires along one or both sides
        for side in (-1, 1):
            if rng.uniform() < 0.75:
                gap = rng.uniform(12, 30)
                px = np.arange(rng.uniform(-5, 10), 160, gap)
                py = side * (road_w / 2 + rng.uniform(0.5, 1.5))
                ph = rng.uniform(6, 10)
                pm = b.mat(scale=0.5)
                b.add(tubes(np.c_[px, np.full(len(px), py), np.zeros(len(px))],
                            np.c_[px, np.full(len(px), py), np.full(len(px), ph)], rng.uniform(0.08, 0.15), sides=8),
                      pm, "poles")
                b.add(boxes(np.c_[px, np.full(len(px), py), np.full(len(px), ph - 0.5)],
                            np.tile([0.1, 1.6, 0.1], (len(px), 1))), pm, "crossarms")
                wm = Material(color=_rand_color(rng, (0, 0.2), (0.02, 0.2)))
                nw = int(rng.integers(1, 4))
                seg0, seg1, rad = [], [], []
                for k in range(len(px) - 1):
                    for j in range(nw):
                        off = (j - (nw - 1) / 2) * 0.5
                        pts = catenary([px[k], py + off, ph - 0.45], [px[k + 1], py + off, ph - 0.45],
                                       rng.uniform(0.2, 1.0), 16)
                        seg0.append(pts[:-1]), seg1.append(pts[1:]), rad.append(np.full(15, rng.uniform(0.01, 0.025)))
                if seg0:  # all spans in one vectorised tube call
                    b.add(tubes(np.concatenate(seg0), np.concatenate(seg1), np.concatenate(rad), sides=4, caps=False),
                          wm, "wires")
        for _ in range(int(rng.integers(0, 6))):  # cars
            cx, cy = rng.uniform(3, 80), rng.uniform(-road_w / 2 + 1.2, road_w / 2 - 1.2)
            L, Wc = rng.uniform(3.5, 5), rng.uniform(1.6, 2.0)
            m = b.mat(scale=1.0, patterns=("flat",))
            b.add(merge([boxes([[cx, cy, 0.65]], [[L, Wc, 0.7]]), boxes([[cx - 0.2, cy, 1.25]], [[L * 0.55, Wc * 0.9, 0.55]])]),
                  m, "car")
            wheels = [[cx + sx * L * 0.33, cy + sy * Wc / 2, 0.32] for sx in (-1, 1) for sy in (-1, 1)]
            wheels = np.array(wheels)
            b.add(tubes(wheels - [0, 0.1, 0], wheels + [0, 0.1, 0], 0.32, sides=12),
                  Material(color=(0.02, 0.02, 0.02)), "wheels")
        n_trees = int(rng.integers(0, 8))
        side_off = road_w / 2 + 1.5
        if rng.uniform() < 0.5:  # a row of street trees
            side = rng.choice([-1, 1])
            for tx in np.arange(rng.uniform(2, 8), 90, rng.uniform(7, 15)):
                _tree(b, tx, side * (road_w / 2 + rng.uniform(1.0, 2.0)), rng.uniform(4, 9))
        for _ in range(int(rng.integers(0, 5))):  # street signs: pole + plate
            sx, sy = rng.uniform(3, 50), rng.choice([-1, 1]) * (road_w / 2 + rng.uniform(0.4, 1.2))
            h = rng.uniform(2.0, 3.5)
            b.add(tubes([[sx, sy, 0]], [[sx, sy, h]], rng.uniform(0.025, 0.05), sides=6), b.mat(scale=0.3), "sign pole")
            b.add(boxes([[sx, sy, h]], [[0.03, rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.8)]], [rng.uniform(-0.3, 0.3)]),
                  b.mat(scale=0.1, patterns=("flat", "stripes", "checker")), "sign")
        if rng.uniform() < 0.5:  # railing along the sidewalk: thin vertical bars
            side = rng.choice([-1, 1])
            y0 = side * (road_w / 2 + rng.uniform(0.3, 0.8))
            x0, x1 = rng.uniform(0, 10), rng.uniform(15, 60)
            nb = int((x1 - x0) / rng.uniform(0.1, 0.3))
            xb = np.linspace(x0, x1, nb)
            h = rng.uniform(0.7, 1.2)
            m = b.mat(scale=0.3, patterns=("flat",))
            b.add(merge([tubes(np.c_[xb, np.full(nb, y0), np.zeros(nb)], np.c_[xb, np.full(nb, y0), np.full(nb, h)],
                               rng.uniform(0.006, 0.02), sides=4, caps=False),
                         tubes([[x0, y0, h]], [[x1, y0, h]], 0.025, sides=6)]), m, "railing")
    else:
        n_trees = int(rng.integers(6, 25))
        side_off = 1.0
        for _ in range(int(rng.integers(2, 12))):  # bushes: dense leaf clutter near the ground
            bx, by = rng.uniform(2, 40), rng.uniform(-15, 15)
            r = rng.uniform(0.3, 1.5)
            cen = np.c_[bx + rng.normal(0, r / 2, 5), by + rng.normal(0, r / 2, 5), np.abs(rng.normal(r / 2, r / 3, 5))]
            b.add(leaves(rng, cen, r / 3, int(rng.integers(150, 600)), r * rng.uniform(0.06, 0.15)),
                  Material(color=_rand_color(rng, (0.4, 0.9), (0.15, 0.6), _LEAF_HUE),
                           color2=_rand_color(rng, (0.4, 0.9), (0.1, 0.4), _LEAF_HUE), pattern="noise", scale=0.3), "bush")
        for _ in range(int(rng.integers(2, 10))):  # rocks: noisy ellipsoids
            cx, cy = rng.uniform(3, 60), rng.uniform(-25, 25)
            r = rng.uniform(0.3, 2.0)
            v, t = uv_sphere([cx, cy, 0], r, 8, 14, radii=(r * rng.uniform(0.7, 1.4), r * rng.uniform(0.7, 1.4), r * 0.7))
            v = v + rng.normal(0, r * 0.08, v.shape).astype(np.float32)
            b.add((v, t), b.mat(scale=0.5, patterns=("noise",)), "rock")
    if rng.uniform() < 0.6:  # grass blades: thin upright triangles close to the camera
        nb = int(rng.integers(500, 3000))
        gx, gy = rng.uniform(1, 18, nb), rng.uniform(-8, 8, nb)
        if layout == "street":
            gy = np.sign(gy + 1e-9) * (road_w / 2 + 0.3 + np.abs(gy))
        hgt = rng.uniform(0.05, 0.5, nb) * rng.uniform(0.5, 1.5)
        wid = rng.uniform(0.005, 0.03, nb)
        a = rng.uniform(0, np.pi, nb)
        lean = rng.normal(0, 0.1, (nb, 2)) * hgt[:, None]
        base0 = np.c_[gx - np.cos(a) * wid, gy - np.sin(a) * wid, np.zeros(nb)]
        base1 = np.c_[gx + np.cos(a) * wid, gy + np.sin(a) * wid, np.zeros(nb)]
        tip = np.c_[gx + lean[:, 0], gy + lean[:, 1], hgt]
        vg = np.stack([base0, base1, tip], 1).reshape(-1, 3).astype(np.float32)
        b.add((vg, np.arange(3 * nb, dtype=np.int64).reshape(nb, 3)),
              Material(color=_rand_color(rng, (0.4, 0.9), (0.25, 0.7), _LEAF_HUE),
                       color2=_rand_color(rng, (0.3, 0.8), (0.4, 0.8), (0.1, 0.2)), pattern="noise", scale=0.5), "grass")
    for _ in range(n_trees):
        tx = rng.uniform(3, 80)
        ty = rng.choice([-1, 1]) * rng.uniform(side_off, side_off + 25)
        _tree(b, tx, ty, rng.uniform(3, 12))
    for _ in range(int(rng.integers(0, 4))):  # fences: posts, rails, pickets or mesh
        x0, y0 = rng.uniform(1, 30), rng.choice([-1, 1]) * rng.uniform(1.5, 12)
        ang = rng.uniform(-0.4, 0.4) + (0 if rng.uniform() < 0.7 else np.pi / 2)
        L = rng.uniform(5, 30)
        e = np.array([math.cos(ang), math.sin(ang), 0]) * L
        h = rng.uniform(0.8, 2.0)
        m = b.mat(scale=0.3, patterns=("flat", "wood", "noise"))
        n_posts = max(2, int(L / rng.uniform(1.5, 3)))
        tp = np.linspace(0, 1, n_posts)[:, None]
        P = np.array([x0, y0, 0]) + tp * e
        b.add(tubes(P, P + [0, 0, h], rng.uniform(0.03, 0.07), sides=4), m, "fence posts")
        if rng.uniform() < 0.5:
            n_pick = int(L / rng.uniform(0.1, 0.25))
            tq = np.linspace(0, 1, n_pick)[:, None]
            Q = np.array([x0, y0, 0]) + tq * e
            b.add(tubes(Q, Q + [0, 0, h * 0.9], rng.uniform(0.01, 0.025), sides=4), m, "pickets")
            for zr in (0.25, 0.75):
                b.add(tubes([[x0, y0, h * zr]], [[x0 + e[0], y0 + e[1], h * zr]], 0.03, sides=4), m, "rail")
        else:
            _grille(b, [x0, y0, 0.05], e, [0, 0, h * 0.95], rng.uniform(0.05, 0.2))
    # far backdrop of hills (beyond max depth: invalid depth, visible in RGB)
    ang = np.linspace(-np.pi, np.pi, 90)
    rad = rng.uniform(180, 260)
    hh = np.abs(fbm(np.c_[np.cos(ang) * 2, np.sin(ang) * 2, np.zeros_like(ang)] + rng.uniform(0, 50, 3), 3)) * rng.uniform(
        10, 60)
    ring = np.c_[np.cos(ang) * rad, np.sin(ang) * rad]
    vb = np.concatenate([np.c_[ring, np.zeros(len(ang))], np.c_[ring, hh]]).astype(np.float32)
    k = np.arange(len(ang) - 1)
    nb = len(ang)
    tb = np.concatenate([np.stack([k, k + 1, nb + k + 1], 1), np.stack([k, nb + k + 1, nb + k], 1)])
    b.add((vb, tb), Material(color=_rand_color(rng, (0.1, 0.5), (0.2, 0.5)), pattern="flat"), "hills", casts_shadow=False)
    eye = np.array([rng.uniform(-3, 0), rng.uniform(-road_w / 4, road_w / 4), rng.uniform(1.2, 3.0)])
    yaw = rng.uniform(-0.6, 0.6)
    pitch = rng.uniform(-0.2, 0.08)
    target = eye + np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    el, az = rng.uniform(np.radians(20), np.radians(70)), rng.uniform(0, 2 * np.pi)
    sun = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
    light = Light(direction=sun, color=tuple(float(c) for c in rng.uniform(0.85, 1.0, 3) * rng.uniform(1.0, 1.3)),
                  ambient=float(rng.uniform(0.2, 0.4)))
    return b.meshes, light, eye, target, {"layout": layout}


@dataclass
class SceneSetup:
    """A seed's scene before rendering: what :func:`render_scene` draws, then renders from one camera.

    ``render_kwargs`` (light, max_depth, sky, fog) go to :func:`render`; ``extrinsic`` is the
    seed's own camera; ``rng`` is left where the setup stopped (the seed's grain and exposure
    come next in :func:`render_scene`)."""

    rng: np.random.Generator
    kind: str
    meshes: list
    eye: np.ndarray
    target: np.ndarray
    K: np.ndarray
    roll_deg: float
    hfov: float
    render_kwargs: dict
    info: dict

    @property
    def extrinsic(self) -> np.ndarray:
        return look_at(self.eye, self.target, roll_deg=self.roll_deg)


def scene_setup(seed: int, size: tuple[int, int], kind: str = "mixed") -> SceneSetup:
    """Build the random scene and camera of ``seed`` at ``size`` (H, W) (see :func:`render_scene`)."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"`kind` must be one of {', '.join(SCENE_KINDS)}, got {kind!r}")
    H, W = int(size[0]), int(size[1])
    if H < 8 or W < 8:
        raise ValueError(f"`size` must be at least 8x8, got {H}x{W}")
    rng = np.random.default_rng(int(seed))
    scene_kind = kind if kind != "mixed" else ("indoor" if rng.uniform() < 0.6 else "outdoor")
    if scene_kind == "indoor":
        meshes, light, eye, target, info = indoor_scene(rng)
        max_depth, sky, fog = INDOOR_MAX_DEPTH, ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), None
    else:
        meshes, light, eye, target, info = outdoor_scene(rng)
        max_depth = OUTDOOR_MAX_DEPTH
        zen = np.array(_rand_color(rng, (0.3, 0.7), (0.6, 0.95)))
        hor = np.clip(zen * 0.4 + 0.6 * np.array(_rand_color(rng, (0.0, 0.2), (0.75, 0.95))), 0, 1)
        sky, fog = (tuple(zen), tuple(hor)), float(rng.uniform(80, 500))
    hfov = float(rng.uniform(45, 90))
    K = intrinsics_from_fov(W, H, hfov, cx=W / 2 + rng.uniform(-0.02, 0.02) * W, cy=H / 2 + rng.uniform(-0.02, 0.02) * H)
    roll = float(rng.normal(0, 3))
    return SceneSetup(rng, scene_kind, meshes, np.asarray(eye, np.float64), np.asarray(target, np.float64), K, roll,
                      hfov, {"light": light, "max_depth": max_depth, "sky": sky, "fog": fog}, info)


def render_scene(seed: int, size: tuple[int, int] | int = (256, 256), kind: str = "mixed",
                 nthreads: int = 0, supersample: int = 1) -> SyntheticSample:
    """Build and render the random scene of ``seed``; the same seed gives the same bytes.

    size: (H, W) or an int for a square image. kind: indoor | outdoor | mixed.
    supersample: odd rays-per-pixel side for anti-aliased RGB (depth stays
    point-sampled at pixel centres, identical to supersample=1).
    Returns a :class:`SyntheticSample` (see module doc).
    """
    if isinstance(size, int):
        size = (size, size)
    setup = scene_setup(seed, size, kind)
    rng, light, E = setup.rng, setup.render_kwargs["light"], setup.extrinsic
    s = render(setup.meshes, setup.K, E, (int(size[0]), int(size[1])), nthreads=nthreads, supersample=supersample,
               **setup.render_kwargs)
    # sensor-like grain and exposure (seeded), then quantisation happens at write time
    gain = rng.uniform(0.85, 1.15)
    noise = rng.normal(0, rng.uniform(0.0, 0.015), s.rgb.shape).astype(np.float32)
    s.rgb = np.clip(s.rgb * gain + noise, 0, 1).astype(np.float32)
    s.meta.update({"seed": int(seed), "kind": setup.kind, "hfov_deg": setup.hfov, "extrinsic": E.tolist(),
                   "K": setup.K.tolist(), "max_depth": setup.render_kwargs["max_depth"], **setup.info,
                   "light": {"direction": list(light.direction), "position": None if light.position is None
                             else list(light.position)}})
    return s


# --------------------------------------------------------------------------- #
# writing the generic folder format
# --------------------------------------------------------------------------- #
DEPTH_FORMATS = ("npy", "png16")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _encode_png(arr: np.ndarray) -> bytes:
    import cv2

    if arr.ndim == 3:
        arr = arr[..., ::-1]  # RGB -> BGR for cv2
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    bio = io.BytesIO()
    np.save(bio, arr)
    return bio.getvalue()


def dataset_toml(depth_format: str, scale: float, extra: dict, max_depth: float | None = None) -> str:
    """The ``dataset.toml`` text of the generic folder format.

    ``[depth]`` is read by :mod:`training.datasets`; ``[dataset]`` spells the same
    for the evaluation ``folder`` loader (``betterdepth eval --dataset folder``)."""
    lines = ["# generic RGB-D folder (betterdepth): rgb/<id>.png, depth/<id>.<ext>, meta/<id>.json",
             "# metres = stored * scale; stored 0 = invalid (sky, beyond range)",
             "[depth]", 'units = "m"', f"scale = {scale!r}", 'kind = "depth"', "invalid_value = 0",
             f'format = "{depth_format}"', "", "[dataset]", 'images = "rgb"', 'ground_truth = "depth"',
             'kind = "depth"', f"scale = {scale!r}", "invalid = 0"]
    if max_depth is not None:
        lines.append(f"max_depth = {float(max_depth)!r}")
    lines += ["", "[source]"]
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def _write_one(args: tuple) -> str:
    out_dir, i, seed, size, kind, depth_format, scale, supersample, nthreads = args
    out = Path(out_dir)
    sid = f"{i:06d}"
    dpath = out / "depth" / f"{sid}.{'npy' if depth_format == 'npy' else 'png'}"
    rpath = out / "rgb" / f"{sid}.png"
    if dpath.exists() and rpath.exists() and (out / "meta" / f"{sid}.json").exists():
        return sid  # resume: already written
    s = render_scene(seed, size, kind, nthreads=nthreads, supersample=supersample)
    rgb8 = np.round(s.rgb * 255).astype(np.uint8)
    if depth_format == "npy":
        dbytes = _npy_bytes(np.where(s.valid, s.depth, 0).astype(np.float32))
    else:
        q = np.round(np.where(s.valid, s.depth, 0) / scale)
        q = np.where(s.valid & (q < 1), 1, q)  # keep valid pixels distinct from the invalid value
        dbytes = _encode_png(np.clip(q, 0, 65535).astype(np.uint16))
    _atomic_write_bytes(dpath, dbytes)
    _atomic_write_bytes(rpath, _encode_png(rgb8))
    meta = {"id": sid, **{k: v for k, v in s.meta.items() if k != "timings_ms"}}  # no run-dependent values
    _atomic_write_bytes(out / "meta" / f"{sid}.json", json.dumps(meta).encode())
    return sid


def _check_same_recipe(out: Path, source: dict, depth_format: str) -> None:
    """Refuse to resume into a folder written with other settings (stale samples would mix in)."""
    import tomllib

    from betterdepth_cli.core.types import OutputError

    path = out / "dataset.toml"
    if not path.exists():
        if out.is_dir() and any(out.iterdir()):
            raise OutputError(f"{out}: folder is not empty and has no dataset.toml; use an empty or new folder")
        return
    try:
        cfg = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise OutputError(f"{path}: exists but is not a synthetic dataset description; use another folder") from None
    old = cfg.get("source", {})
    old_format = cfg.get("depth", {}).get("format")
    if old.get("generator") != source["generator"]:
        raise OutputError(f"{out}: holds a dataset not written by `betterdepth synth`; use another folder")
    diff = [k for k in ("seed0", "size", "kind", "supersample") if old.get(k, 1 if k == "supersample" else None)
            != source[k]]
    if old_format != depth_format:
        diff.append("depth_format")
    if diff:
        raise OutputError(f"{out}: was written with other settings ({', '.join(diff)}: "
                          + ", ".join(f"{k}={old.get(k, old_format if k == 'depth_format' else None)!r}"
                                      for k in diff) + "); use another folder or the same settings")


def write_dataset(out_dir: str | os.PathLike, n: int, seed0: int = 0, size: tuple[int, int] | int = (256, 256),
                  kind: str = "mixed", workers: int = 1, depth_format: str = "npy", supersample: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Render scenes seed0 .. seed0+n-1 into the generic folder format.

    Layout: ``out_dir/dataset.toml``, ``rgb/<id>.png`` (8-bit), ``depth/<id>.npy``
    (float32 metres, 0 = invalid; exact) or ``depth/<id>.png`` (uint16, scale
    0.001 m for indoor, 0.002 m otherwise, 0 = invalid), ``meta/<id>.json``
    (seed, K, extrinsic, scene kind). ids are ``%06d`` of the index. Existing
    complete samples are kept (an interrupted run resumes; a folder written with
    other settings is refused). ``workers`` > 1 renders in processes (each ray
    caster single-threaded); the files are the same whatever ``workers`` is. ``supersample`` (odd)
    anti-aliases RGB with s x s rays per pixel (depth unchanged). ``progress(done, n)``
    is called after each sample. Returns the output folder.

    NPY is the default: 256 KiB per 256x256 sample, exact; png16 is ~3x smaller.
    """
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n}")
    if kind not in SCENE_KINDS:
        raise ValueError(f"`kind` must be one of {', '.join(SCENE_KINDS)}, got {kind!r}")
    if depth_format not in DEPTH_FORMATS:
        raise ValueError(f"`depth_format` must be one of {', '.join(DEPTH_FORMATS)}, got {depth_format!r}")
    if workers < 1:
        raise ValueError(f"`workers` must be >= 1, got {workers}")
    if supersample < 1 or supersample % 2 == 0:
        raise ValueError(f"`supersample` must be an odd integer >= 1, got {supersample}")
    if isinstance(size, int):
        size = (size, size)
    out = Path(out_dir)
    source = {"generator": "betterdepth training.synthetic", "seed0": int(seed0), "n": int(n),
              "size": [int(size[0]), int(size[1])], "kind": kind, "supersample": int(supersample)}
    _check_same_recipe(out, source, depth_format)
    for sub in ("rgb", "depth", "meta"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    scale = 1.0 if depth_format == "npy" else (0.001 if kind == "indoor" else 0.002)
    toml = dataset_toml(depth_format, scale, source,
                        max_depth=INDOOR_MAX_DEPTH if kind == "indoor" else OUTDOOR_MAX_DEPTH)
    _atomic_write_bytes(out / "dataset.toml", toml.encode())
    nthreads = 0 if workers == 1 else 1  # one process: all cores for ray casting; else one each
    jobs = [(str(out), i, int(seed0) + i, tuple(size), kind, depth_format, scale, int(supersample), nthreads)
            for i in range(n)]
    done = 0
    if workers == 1:
        for j in jobs:
            _write_one(j)
            done += 1
            if progress:
                progress(done, n)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=4):
                done += 1
                if progress:
                    progress(done, n)
    return out


def benchmark(n: int = 20, size: int = 256, kind: str = "mixed", nthreads: int = 1) -> dict:
    """Per-scene cost (build + render) over seeds 0..n-1: {"wall_ms", "cpu_ms", stage means}."""
    render_scene(0, size, kind, nthreads=nthreads)  # warm-up (imports, noise texture)
    stages: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(n):
        for k, v in render_scene(s, size, kind, nthreads=nthreads).meta["timings_ms"].items():
            stages[k] = stages.get(k, 0.0) + v / n
    return {"wall_ms": (time.perf_counter() - t0) / n * 1000, "cpu_ms": (time.process_time() - c0) / n * 1000,
            **{k: round(v, 1) for k, v in stages.items()}}


if __name__ == "__main__":  # python -m training.synthetic [n] [size]: timing on one thread
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    for k in SCENE_KINDS:
        r = benchmark(n, size, k)
        print(f"{k}: {r.pop('wall_ms'):.1f} ms wall, {r.pop('cpu_ms'):.1f} ms CPU per {size}x{size} scene "
              f"(1 thread); render stages ms: {r}")
