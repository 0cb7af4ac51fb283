"""The outdoor scene recipe: a street or a park under the sun, with a far backdrop of hills."""

from __future__ import annotations

import math

import numpy as np

from training.synthetic.builder import LEAF_HUE, SceneBuilder, add_grille, rand_color
from training.synthetic.meshes import boxes, branches, catenary, leaves, merge, quad, tubes, uv_sphere
from training.synthetic.scene import Light, Material, Mesh
from training.synthetic.textures import fbm


def _tree(b: SceneBuilder, x: float, y: float, height: float) -> None:
    rng = b.rng
    trunk_h = height * rng.uniform(0.3, 0.5)
    s, e, r = branches(rng, [x, y, 0], [rng.normal(0, 0.05), rng.normal(0, 0.05), 1], trunk_h,
                       height * rng.uniform(0.015, 0.03), int(rng.integers(2, 4)), spread_deg=rng.uniform(25, 50))
    bark = Material(color=rand_color(rng, (0.2, 0.5), (0.1, 0.35)), color2=rand_color(rng, (0.2, 0.5), (0.05, 0.2)),
                    pattern="noise", scale=0.2)
    b.add(tubes(s, e, r, sides=5, caps=False), bark, "branches")
    tips = e[r < r.max() * 0.5] if (r < r.max() * 0.5).any() else e
    hue = LEAF_HUE if rng.uniform() < 0.8 else (-0.05, 0.14)  # green, sometimes autumn
    foliage = Material(color=rand_color(rng, (0.4, 0.9), (0.2, 0.6), hue), color2=rand_color(rng, (0.4, 0.9), (0.1, 0.35), hue),
                       pattern="noise", scale=0.3)
    n = int(rng.integers(800, 3000) * rng.uniform(0.2, 1.0))  # from bare to dense crowns
    lod = min(1.0, max(0.25, 25.0 / max(math.hypot(x, y), 1e-3)))  # far trees: fewer, larger leaves (same cover)
    b.add(leaves(rng, tips, height * rng.uniform(0.04, 0.1), max(1, int(n * lod)),
                 height * rng.uniform(0.02, 0.04) / math.sqrt(lod)), foliage, "leaves")


def _road(b: SceneBuilder, road_w: float) -> None:
    """The road along +x, its lane marks and kerbs."""
    rng = b.rng
    road = Material(color=rand_color(rng, (0, 0.1), (0.1, 0.3)), color2=rand_color(rng, (0, 0.1), (0.05, 0.2)),
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


def _buildings(b: SceneBuilder, road_w: float) -> None:
    """Boxes with window grids along both sides of the road."""
    rng = b.rng
    xs = 0.0
    while xs < 160:  # buildings along both sides
        for side in (-1, 1):
            if rng.uniform() < 0.85:
                w, d, h = rng.uniform(6, 25), rng.uniform(6, 20), rng.uniform(4, 40)
                off = road_w / 2 + rng.uniform(2, 8) + d / 2
                m = Material(color=rand_color(rng, (0, 0.5), (0.3, 0.9)),
                             color2=rand_color(rng, (0, 0.4), (0.05, 0.5)), pattern="windows",
                             scale=float(rng.uniform(2.0, 3.5)), offset=tuple(float(v) for v in rng.uniform(0, 5, 3)))
                b.add(boxes([[xs + w / 2, side * off, h / 2]], [[w, d, h]]), m, "building")
        xs += rng.uniform(8, 28)


def _poles_and_wires(b: SceneBuilder, road_w: float) -> None:
    """Poles with crossarms along one or both sides, wires sagging between them."""
    rng = b.rng
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
            wm = Material(color=rand_color(rng, (0, 0.2), (0.02, 0.2)))
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


def _cars(b: SceneBuilder, road_w: float) -> None:
    """Up to five cars on the road: body, cabin, wheels."""
    rng = b.rng
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


def _street_trees(b: SceneBuilder, road_w: float) -> None:
    """Sometimes a row of trees along one side."""
    rng = b.rng
    if rng.uniform() < 0.5:  # a row of street trees
        side = rng.choice([-1, 1])
        for tx in np.arange(rng.uniform(2, 8), 90, rng.uniform(7, 15)):
            _tree(b, tx, side * (road_w / 2 + rng.uniform(1.0, 2.0)), rng.uniform(4, 9))


def _signs(b: SceneBuilder, road_w: float) -> None:
    """Up to four street signs: a pole and a plate."""
    rng = b.rng
    for _ in range(int(rng.integers(0, 5))):  # street signs: pole + plate
        sx, sy = rng.uniform(3, 50), rng.choice([-1, 1]) * (road_w / 2 + rng.uniform(0.4, 1.2))
        h = rng.uniform(2.0, 3.5)
        b.add(tubes([[sx, sy, 0]], [[sx, sy, h]], rng.uniform(0.025, 0.05), sides=6), b.mat(scale=0.3), "sign pole")
        b.add(boxes([[sx, sy, h]], [[0.03, rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.8)]], [rng.uniform(-0.3, 0.3)]),
              b.mat(scale=0.1, patterns=("flat", "stripes", "checker")), "sign")


def _railing(b: SceneBuilder, road_w: float) -> None:
    """Sometimes a railing of thin vertical bars along the sidewalk."""
    rng = b.rng
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


def _street(b: SceneBuilder, road_w: float) -> tuple[int, float]:
    """A street of width ``road_w``; (trees still to scatter, their least distance from the road's axis)."""
    _road(b, road_w)
    _buildings(b, road_w)
    _poles_and_wires(b, road_w)
    _cars(b, road_w)
    n_trees = int(b.rng.integers(0, 8))
    side_off = road_w / 2 + 1.5
    _street_trees(b, road_w)
    _signs(b, road_w)
    _railing(b, road_w)
    return n_trees, side_off


def _bushes(b: SceneBuilder) -> None:
    """Bushes: dense leaf clutter near the ground."""
    rng = b.rng
    for _ in range(int(rng.integers(2, 12))):  # bushes: dense leaf clutter near the ground
        bx, by = rng.uniform(2, 40), rng.uniform(-15, 15)
        r = rng.uniform(0.3, 1.5)
        cen = np.c_[bx + rng.normal(0, r / 2, 5), by + rng.normal(0, r / 2, 5), np.abs(rng.normal(r / 2, r / 3, 5))]
        b.add(leaves(rng, cen, r / 3, int(rng.integers(150, 600)), r * rng.uniform(0.06, 0.15)),
              Material(color=rand_color(rng, (0.4, 0.9), (0.15, 0.6), LEAF_HUE),
                       color2=rand_color(rng, (0.4, 0.9), (0.1, 0.4), LEAF_HUE), pattern="noise", scale=0.3), "bush")


def _rocks(b: SceneBuilder) -> None:
    """Rocks: noisy ellipsoids."""
    rng = b.rng
    for _ in range(int(rng.integers(2, 10))):  # rocks: noisy ellipsoids
        cx, cy = rng.uniform(3, 60), rng.uniform(-25, 25)
        r = rng.uniform(0.3, 2.0)
        v, t = uv_sphere([cx, cy, 0], r, 8, 14, radii=(r * rng.uniform(0.7, 1.4), r * rng.uniform(0.7, 1.4), r * 0.7))
        v = v + rng.normal(0, r * 0.08, v.shape).astype(np.float32)
        b.add((v, t), b.mat(scale=0.5, patterns=("noise",)), "rock")


def _park(b: SceneBuilder) -> tuple[int, float]:
    """A park; (trees still to scatter, their least distance from the x axis)."""
    n_trees = int(b.rng.integers(6, 25))
    side_off = 1.0
    _bushes(b)
    _rocks(b)
    return n_trees, side_off


def _grass(b: SceneBuilder, layout: str, road_w: float) -> None:
    """Sometimes grass blades close to the camera (off the road in a street)."""
    rng = b.rng
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
              Material(color=rand_color(rng, (0.4, 0.9), (0.25, 0.7), LEAF_HUE),
                       color2=rand_color(rng, (0.3, 0.8), (0.4, 0.8), (0.1, 0.2)), pattern="noise", scale=0.5), "grass")


def _scattered_trees(b: SceneBuilder, n_trees: int, side_off: float) -> None:
    """``n_trees`` trees on both sides, at least ``side_off`` from the x axis."""
    rng = b.rng
    for _ in range(n_trees):
        tx = rng.uniform(3, 80)
        ty = rng.choice([-1, 1]) * rng.uniform(side_off, side_off + 25)
        _tree(b, tx, ty, rng.uniform(3, 12))


def _fences(b: SceneBuilder) -> None:
    """Up to three fences: posts with rails and pickets, or a mesh."""
    rng = b.rng
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
            add_grille(b, [x0, y0, 0.05], e, [0, 0, h * 0.95], rng.uniform(0.05, 0.2))


def _hills(b: SceneBuilder) -> None:
    """A far backdrop of hills (beyond the maximum depth: invalid depth, visible in RGB)."""
    rng = b.rng
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
    b.add((vb, tb), Material(color=rand_color(rng, (0.1, 0.5), (0.2, 0.5)), pattern="flat"), "hills", casts_shadow=False)


def _outdoor_camera(rng: np.random.Generator, road_w: float) -> tuple[np.ndarray, np.ndarray]:
    """A camera at eye height near the origin looking roughly along +x: (eye, target)."""
    eye = np.array([rng.uniform(-3, 0), rng.uniform(-road_w / 4, road_w / 4), rng.uniform(1.2, 3.0)])
    yaw = rng.uniform(-0.6, 0.6)
    pitch = rng.uniform(-0.2, 0.08)
    target = eye + np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
    return eye, target


def _sun(rng: np.random.Generator) -> Light:
    """Directional sunlight, 20 to 70 degrees above the horizon."""
    el, az = rng.uniform(np.radians(20), np.radians(70)), rng.uniform(0, 2 * np.pi)
    sun = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
    light = Light(direction=sun, color=tuple(float(c) for c in rng.uniform(0.85, 1.0, 3) * rng.uniform(1.0, 1.3)),
                  ambient=float(rng.uniform(0.2, 0.4)))
    return light


def outdoor_scene(rng: np.random.Generator) -> tuple[list[Mesh], Light, np.ndarray, np.ndarray, dict]:
    """A random street or park. Returns meshes, light, eye (3,), target (3,), info."""
    b = SceneBuilder(rng)
    layout = "street" if rng.uniform() < 0.6 else "park"
    ground = Material(color=rand_color(rng, (0.05, 0.5), (0.2, 0.6)), color2=rand_color(rng, (0.05, 0.5), (0.1, 0.5)),
                      pattern="noise", scale=float(rng.uniform(0.5, 3.0)))
    b.add(quad([-300, -300, 0], [600, 0, 0], [0, 600, 0]), ground, "ground")
    road_w = rng.uniform(6, 14)
    n_trees, side_off = _street(b, road_w) if layout == "street" else _park(b)
    _grass(b, layout, road_w)
    _scattered_trees(b, n_trees, side_off)
    _fences(b)
    _hills(b)
    eye, target = _outdoor_camera(rng, road_w)
    light = _sun(rng)
    return b.meshes, light, eye, target, {"layout": layout}
