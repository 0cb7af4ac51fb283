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
