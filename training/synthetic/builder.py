"""Building blocks of the scene recipes: random colours and materials, the mesh collector, grilles."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from training.synthetic.meshes import grid_bars
from training.synthetic.scene import Material, Mesh


def rand_color(rng: np.random.Generator, sat: tuple = (0.1, 0.8), val: tuple = (0.2, 0.9),
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


def rand_material(rng: np.random.Generator, scale: float = 0.3, patterns: Sequence[str] | None = None,
                   weights: Sequence[float] | None = None) -> Material:
    pats = list(patterns or ("flat", "checker", "stripes", "noise", "grid", "wood"))
    w = np.asarray(weights if weights is not None else np.ones(len(pats)), np.float64)
    pat = pats[int(rng.choice(len(pats), p=w / w.sum()))]
    d = rng.normal(0, 1, 3)
    d /= np.linalg.norm(d)
    return Material(color=rand_color(rng), color2=rand_color(rng), pattern=pat,
                    scale=float(scale * rng.uniform(0.4, 2.0)), direction=tuple(float(x) for x in d),
                    offset=tuple(float(x) for x in rng.uniform(0, 10, 3)))


LEAF_HUE = (0.17, 0.42)  # yellow-green to green


class SceneBuilder:
    """Collects meshes for a scene."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.meshes: list[Mesh] = []

    def add(self, vt: tuple[np.ndarray, np.ndarray], material: Material | None = None, name: str = "",
            casts_shadow: bool = True) -> None:
        v, t = vt
        if len(t):
            self.meshes.append(Mesh(v, t, material or rand_material(self.rng), casts_shadow, name))

    def mat(self, **kw) -> Material:
        return rand_material(self.rng, **kw)


def add_grille(b: SceneBuilder, corner, eu, ev, cell: float) -> None:
    rng = b.rng
    nu = max(1, int(np.linalg.norm(eu) / cell))
    nv = max(1, int(np.linalg.norm(ev) / cell))
    b.add(grid_bars(corner, eu, ev, nu, nv, rng.uniform(0.003, 0.012), sides=4),
          Material(color=rand_color(rng, (0, 0.5), (0.05, 0.95)), pattern="flat"), "grille")
