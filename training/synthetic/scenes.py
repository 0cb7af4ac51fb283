"""One random scene per seed: the recipe (indoor or outdoor), the camera, rendering, sensor grain."""

from __future__ import annotations

import numpy as np

from training.synthetic.builder import rand_color
from training.synthetic.indoor import indoor_scene
from training.synthetic.outdoor import outdoor_scene
from training.synthetic.renderer import render
from training.synthetic.scene import (INDOOR_MAX_DEPTH, OUTDOOR_MAX_DEPTH, SCENE_KINDS, SyntheticSample,
                                      intrinsics_from_fov, look_at)


def render_scene(seed: int, size: tuple[int, int] | int = (256, 256), kind: str = "mixed",
                 nthreads: int = 0, supersample: int = 1) -> SyntheticSample:
    """Build and render the random scene of ``seed``; the same seed gives the same bytes.

    size: (H, W) or an int for a square image. kind: indoor | outdoor | mixed.
    supersample: odd rays-per-pixel side for anti-aliased RGB (depth stays
    point-sampled at pixel centres, identical to supersample=1).
    Returns a :class:`SyntheticSample` (see module doc).
    """
    if kind not in SCENE_KINDS:
        raise ValueError(f"`kind` must be one of {', '.join(SCENE_KINDS)}, got {kind!r}")
    if isinstance(size, int):
        size = (size, size)
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
        zen = np.array(rand_color(rng, (0.3, 0.7), (0.6, 0.95)))
        hor = np.clip(zen * 0.4 + 0.6 * np.array(rand_color(rng, (0.0, 0.2), (0.75, 0.95))), 0, 1)
        sky, fog = (tuple(zen), tuple(hor)), float(rng.uniform(80, 500))
    hfov = float(rng.uniform(45, 90))
    K = intrinsics_from_fov(W, H, hfov, cx=W / 2 + rng.uniform(-0.02, 0.02) * W, cy=H / 2 + rng.uniform(-0.02, 0.02) * H)
    E = look_at(eye, target, roll_deg=float(rng.normal(0, 3)))
    s = render(meshes, K, E, (H, W), light=light, max_depth=max_depth, sky=sky, fog=fog, nthreads=nthreads,
               supersample=supersample)
    # sensor-like grain and exposure (seeded), then quantisation happens at write time
    gain = rng.uniform(0.85, 1.15)
    noise = rng.normal(0, rng.uniform(0.0, 0.015), s.rgb.shape).astype(np.float32)
    s.rgb = np.clip(s.rgb * gain + noise, 0, 1).astype(np.float32)
    s.meta.update({"seed": int(seed), "kind": scene_kind, "hfov_deg": hfov, "extrinsic": E.tolist(),
                   "K": K.tolist(), "max_depth": max_depth, **info,
                   "light": {"direction": list(light.direction), "position": None if light.position is None
                             else list(light.position)}})
    return s
