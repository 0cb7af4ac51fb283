"""One random scene per seed: the recipe (indoor or outdoor), the camera, rendering, sensor grain."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synthetic.builder import rand_color
from training.synthetic.indoor import indoor_scene
from training.synthetic.outdoor import outdoor_scene
from training.synthetic.renderer import render
from training.synthetic.scene import (INDOOR_MAX_DEPTH, OUTDOOR_MAX_DEPTH, SCENE_KINDS, SyntheticSample,
                                      intrinsics_from_fov, look_at)


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
        zen = np.array(rand_color(rng, (0.3, 0.7), (0.6, 0.95)))
        hor = np.clip(zen * 0.4 + 0.6 * np.array(rand_color(rng, (0.0, 0.2), (0.75, 0.95))), 0, 1)
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
