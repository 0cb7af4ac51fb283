"""Vectorised mesh builders: each returns vertices (N,3) float32 and triangles (M,3) int64."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


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
