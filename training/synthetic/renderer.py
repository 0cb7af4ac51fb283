"""Ray casting with open3d: depth, shading, cast shadows, sky and haze."""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from training.synthetic.meshes import merge
from training.synthetic.scene import MIN_DEPTH, Light, Mesh, SyntheticSample
from training.synthetic.textures import shade_albedo


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

    lap = _Laps()
    H, W, K, E, ss = _check_camera(size, K, extrinsic, supersample)
    light = light or Light()
    K_rays = K.copy()
    K_rays[:2] *= ss  # pixel-centre convention: sub-pixel (u*ss + (ss-1)/2) has the pixel's centre ray
    Hs, Ws = H * ss, W * ss
    V, T, tri_mesh, materials = _triangle_soup(meshes)

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
        hits = _Hits(ans, t_hit, dirs, origin, idx, tri_mesh)
        albedo = shade_albedo(hits.p, hits.n, hits.mesh_id, materials)
        lap("texture")
        L, dist_l = _light_vectors(light, hits.p)
        kd = np.clip((hits.n * L).sum(1), 0, None)
        if shadows and len(T):
            n_shadowed = _cast_shadows(scene, hits, L, dist_l, kd, nthreads)
        lap("shadow")
        rgb_lin[idx] = _shade(hits, albedo, kd, light, sky, fog)
    rgb, depth, valid = _to_pixels(rgb_lin, t_hit, (H, W), ss, gamma, min_depth, max_depth)
    lap("shade")
    meta = {"triangles": int(len(T)), "meshes": len(materials), "shadowed_pixels": n_shadowed,
            "timings_ms": lap.timings}
    return SyntheticSample(rgb, depth, valid, K, meta)


class _Laps:
    """Milliseconds spent in each stage: ``lap(name)`` closes the stage that began at the previous lap."""

    def __init__(self) -> None:
        self.tic = time.perf_counter()
        self.timings: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round((now - self.tic) * 1000, 3)
        self.tic = now


def _check_camera(size, K, extrinsic, supersample) -> tuple[int, int, np.ndarray, np.ndarray, int]:
    """(H, W, K float64 3x3, extrinsic float64 4x4, supersample), or a ValueError naming the bad argument."""
    H, W = int(size[0]), int(size[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"`size` must be positive (H, W), got {size}")
    K = np.asarray(K, np.float64)
    E = np.asarray(extrinsic, np.float64)
    if K.shape != (3, 3) or E.shape != (4, 4):
        raise ValueError(f"`K` must be 3x3 and `extrinsic` 4x4, got {K.shape} and {E.shape}")
    ss = int(supersample)
    if ss < 1 or ss % 2 == 0:
        raise ValueError(f"`supersample` must be an odd integer >= 1, got {supersample}")
    return H, W, K, E, ss


def _triangle_soup(meshes: Sequence[Mesh]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """All non-empty meshes as one vertex / triangle array, each triangle's mesh index, their materials."""
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
    return V, T, tri_mesh, materials


class _Hits:
    """The primary rays that hit: mesh index, ray parameter, direction, world point, camera-facing normal."""

    def __init__(self, ans, t_hit: np.ndarray, dirs: np.ndarray, origin: np.ndarray, idx: np.ndarray,
                 tri_mesh: np.ndarray):
        tri = ans["primitive_ids"].numpy().ravel()[idx]
        self.mesh_id = tri_mesh[tri]
        self.t = t_hit.ravel()[idx]
        self.d = dirs[idx]
        self.p = origin[None] + self.d * self.t[:, None]
        n = ans["primitive_normals"].numpy().reshape(-1, 3)[idx]
        n *= np.where((n * self.d).sum(1) > 0, np.float32(-1), np.float32(1))[:, None]
        self.n = n


def _light_vectors(light: Light, p: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit vectors (N,3) from the points toward the light, and the distances to a point light (None: directional)."""
    if light.position is None:
        L = np.asarray(light.direction, np.float32)
        return np.broadcast_to(L / np.linalg.norm(L), p.shape), None
    Lv = np.asarray(light.position, np.float32)[None] - p
    dist_l = np.linalg.norm(Lv, axis=1)
    return Lv / np.maximum(dist_l, 1e-9)[:, None], dist_l


def _cast_shadows(scene, hits: _Hits, L: np.ndarray, dist_l: np.ndarray | None, kd: np.ndarray,
                  nthreads: int) -> int:
    """One secondary ray per lit point toward the light; occluded points get ``kd`` 0 (in place). Their count."""
    import open3d as o3d

    lit = np.nonzero(kd > 0)[0]
    if not len(lit):
        return 0
    eps = (1e-4 + 1e-5 * hits.t[lit])[:, None]
    o = hits.p[lit] + hits.n[lit] * eps
    if dist_l is None:
        srays = np.concatenate([o, L[lit]], 1)
        occ = scene.test_occlusions(o3d.core.Tensor(srays), nthreads=nthreads).numpy()
    else:  # point light: direction scaled to the light distance, occluders only for s < 1
        srays = np.concatenate([o, L[lit] * dist_l[lit, None]], 1)
        occ = scene.test_occlusions(o3d.core.Tensor(srays), tfar=0.999, nthreads=nthreads).numpy()
    kd[lit[occ]] = 0
    return int(occ.sum())


def _shade(hits: _Hits, albedo: np.ndarray, kd: np.ndarray, light: Light, sky: tuple, fog: float | None) -> np.ndarray:
    """Linear RGB (N,3) of the hit points: ambient + diffuse, then haze toward the horizon colour."""
    amb = np.float32(light.ambient) * (np.float32(0.75) + np.float32(0.25) * hits.n[:, 2:3])
    col = albedo * (amb + kd[:, None] * np.asarray(light.color, np.float32)[None])
    if fog:
        dist = hits.t * np.linalg.norm(hits.d, axis=1)
        a = np.exp(-dist / np.float32(fog))[:, None]
        col = col * a + np.asarray(sky[1], np.float32)[None] * (1 - a)
    return col


def _to_pixels(rgb_lin: np.ndarray, t_hit: np.ndarray, size: tuple[int, int], ss: int, gamma: float,
               min_depth: float, max_depth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-pixel rays to pixels: RGB averaged in linear light then gamma, depth from the centre sub-ray, valid."""
    H, W = size
    rgb_lin = np.clip(rgb_lin, 0, 1).reshape(H * ss, W * ss, 3)
    if ss > 1:
        rgb_lin = rgb_lin.reshape(H, ss, W, ss, 3).mean(axis=(1, 3))
        c = (ss - 1) // 2
        t_hit = t_hit[c::ss, c::ss]
    rgb = rgb_lin ** np.float32(1.0 / gamma)
    depth = t_hit.astype(np.float32)
    valid = np.isfinite(depth) & (depth > min_depth) & (depth <= max_depth)
    depth = np.where(valid, depth, np.float32(0)).astype(np.float32)
    return rgb.reshape(H, W, 3).astype(np.float32), depth, valid
