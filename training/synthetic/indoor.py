"""The indoor scene recipe: a furnished room with thin structures, seen from inside."""

from __future__ import annotations

import math

import numpy as np

from training.synthetic.builder import LEAF_HUE, SceneBuilder, add_grille, rand_color, rand_material
from training.synthetic.meshes import (boxes, branches, catenary, leaves, merge, polyline_tube, quad, torus, tubes,
                                       uv_sphere)
from training.synthetic.scene import Light, Material, Mesh


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


def _table(b: SceneBuilder, x: float, y: float, yaw: float, floor: float = 0.0) -> None:
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


def _tabletop_clutter(b: SceneBuilder, x: float, y: float, z: float, w: float, d: float, yaw: float) -> None:
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
            add_grille(b, [px - sz / 2, py - sz / 2, z + h], [sz, 0, 0], [0, sz, 0], rng.uniform(0.01, 0.03))
        elif k == "fork":
            a = rng.uniform(0, 2 * np.pi)
            e = np.array([math.cos(a), math.sin(a), 0])
            q = np.array([-e[1], e[0], 0])
            base = np.array([px, py, z + 0.004])
            L = rng.uniform(0.1, 0.18)
            nt = int(rng.integers(2, 5))
            off = (np.arange(nt) - (nt - 1) / 2) * 0.007
            tines0 = base + e * L * 0.6 + off[:, None] * q
            m = Material(color=rand_color(rng, (0, 0.2), (0.5, 0.9)))
            b.add(merge([tubes([base], [base + e * L * 0.6], 0.004, sides=4),
                         tubes(tines0, tines0 + e * L * 0.4, 0.0015, sides=3, caps=False)]), m, "fork")
        elif k == "plant":
            _plant(b, px, py, z, rng.uniform(0.3, 0.6))
        else:
            sz = rng.uniform(0.03, 0.15, 3)
            b.add(boxes([[px, py, z + sz[2] / 2]], [sz], [rng.uniform(0, np.pi)]), b.mat(scale=0.05), "box")


def _chair(b: SceneBuilder, x: float, y: float, yaw: float) -> None:
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


def _shelf(b: SceneBuilder, x: float, y: float, yaw: float) -> None:
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


def _plant(b: SceneBuilder, x: float, y: float, z: float, scale: float = 1.0) -> None:
    rng = b.rng
    pr = rng.uniform(0.08, 0.2) * scale
    ph = rng.uniform(0.15, 0.35) * scale
    b.add(tubes([[x, y, z]], [[x, y, z + ph]], pr, sides=10), b.mat(scale=0.1), "pot")
    s, e, r = branches(rng, [x, y, z + ph], [0, 0, 1], rng.uniform(0.2, 0.5) * scale, 0.006 * scale, 2,
                       spread_deg=40)
    b.add(tubes(s, e, r, sides=3, caps=False), Material(color=rand_color(rng, (0.4, 0.8), (0.2, 0.5)),
                                                         pattern="flat"), "stems")
    green = Material(color=rand_color(rng, (0.5, 0.9), (0.25, 0.7), LEAF_HUE),
                     color2=rand_color(rng, (0.5, 0.9), (0.1, 0.4), LEAF_HUE), pattern="noise", scale=0.05)
    b.add(leaves(rng, e, 0.05 * scale, int(rng.integers(80, 400)), 0.03 * scale), green, "leaves")


ITEM_KINDS = ("table", "chair", "shelf", "box", "sphere", "cylinder", "plant", "torus", "lamp")
ITEM_WEIGHTS = (0.14, 0.16, 0.1, 0.14, 0.1, 0.08, 0.14, 0.06, 0.08)


class _FloorSpots:
    """Random free spots on the W x D floor, away from the ones already taken (the camera's first)."""

    def __init__(self, rng: np.random.Generator, W: float, D: float, camera: np.ndarray):
        self.rng, self.W, self.D = rng, W, D
        self.taken = [camera]

    def take(self, margin: float) -> np.ndarray | None:
        for _ in range(20):
            q = np.array([self.rng.uniform(margin, self.W - margin), self.rng.uniform(margin, self.D - margin)])
            if all(np.linalg.norm(q - o) > margin + 0.35 for o in self.taken):
                self.taken.append(q)
                return q
        return None


def _room_shell(b: SceneBuilder, W: float, D: float, H: float) -> list:
    """Floor, ceiling and four walls, each with its own material; the walls as (corner, edge)."""
    rng = b.rng
    floor_m = rand_material(rng, 0.4, ("checker", "wood", "noise", "grid", "stripes"))
    b.add(quad([0, 0, 0], [W, 0, 0], [0, D, 0]), floor_m, "floor")
    b.add(quad([0, 0, H], [W, 0, 0], [0, D, 0]), Material(color=rand_color(rng, (0, 0.1), (0.7, 0.95))), "ceiling")
    walls = [([0, 0, 0], [W, 0, 0]), ([W, 0, 0], [0, D, 0]), ([W, D, 0], [-W, 0, 0]), ([0, D, 0], [0, -D, 0])]
    for i, (c0, e) in enumerate(walls):
        m = rand_material(rng, 0.5, ("flat", "noise", "stripes", "grid", "checker"), (3, 2, 1, 1, 0.5))
        b.add(quad(c0, e, [0, 0, H]), m, f"wall{i}")
    return walls


def _add_item(b: SceneBuilder, kind: str, x: float, y: float, yaw: float) -> None:
    """One piece of furniture or one object of ``kind`` standing at (x, y)."""
    rng = b.rng
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


def _furnish(b: SceneBuilder, spots: _FloorSpots) -> None:
    """4 to 11 items on free floor spots (fewer when the room is full)."""
    rng = b.rng
    n_items = int(rng.integers(4, 12))
    for _ in range(n_items):
        kind = rng.choice(list(ITEM_KINDS), p=list(ITEM_WEIGHTS))
        q = spots.take(0.6)
        if q is None:
            break
        x, y = q
        yaw = rng.uniform(0, np.pi)
        _add_item(b, kind, x, y, yaw)


def _wall_grilles(b: SceneBuilder, walls: list) -> None:
    """Up to two grilles just in front of the walls (thin structures)."""
    rng = b.rng
    for _ in range(int(rng.integers(0, 3))):
        i = int(rng.integers(0, 4))
        c0, e = walls[i]
        c0, e = np.asarray(c0, float), np.asarray(e, float)
        L = np.linalg.norm(e)
        a0 = rng.uniform(0, 0.6)
        wdt = rng.uniform(0.5, 1.5)
        inward = np.array([-e[1], e[0], 0]) / L * 0.08
        corner = c0 + e * a0 + np.array([0, 0, rng.uniform(0.5, 1.2)]) + inward
        add_grille(b, corner, e / L * min(wdt, L * (1 - a0)), [0, 0, rng.uniform(0.5, 1.2)], rng.uniform(0.04, 0.2))


def _hanging_cables(b: SceneBuilder, W: float, D: float, H: float) -> None:
    """Up to three cables or strings sagging from the ceiling across the room."""
    rng = b.rng
    for _ in range(int(rng.integers(0, 4))):
        p0 = np.array([rng.uniform(0, W), rng.uniform(0, D), H - 0.01])
        p1 = np.array([rng.uniform(0, W), rng.uniform(0, D), rng.uniform(0, H)])
        b.add(polyline_tube(catenary(p0, p1, rng.uniform(0, 0.4), 12), rng.uniform(0.002, 0.01), 4),
              Material(color=rand_color(rng, (0, 0.4), (0.05, 0.6))), "cable")


def _pictures(b: SceneBuilder, walls: list, H: float) -> None:
    """Up to three flat pictures on the walls."""
    rng = b.rng
    for _ in range(int(rng.integers(0, 4))):
        i = int(rng.integers(0, 4))
        c0, e = (np.asarray(a, float) for a in walls[i])
        L = np.linalg.norm(e)
        inward = np.array([-e[1], e[0], 0]) / L
        pw, ph = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.0)
        cen = c0 + e * rng.uniform(0.2, 0.8) + inward * 0.015 + [0, 0, rng.uniform(1.0, H - 0.6)]
        yaw = math.atan2(e[1], e[0])
        b.add(boxes([cen], [[pw, 0.03, ph]], [yaw]), b.mat(scale=0.1, patterns=("noise", "checker", "stripes")),
              "picture")


def _tabletop_view(b: SceneBuilder, q: np.ndarray, W: float, D: float) -> tuple[np.ndarray, np.ndarray]:
    """A table at ``q`` covered with small objects, and a close-up camera on it: (eye, target)."""
    rng = b.rng
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
    return eye, target


def _across_the_room(rng: np.random.Generator, eye: np.ndarray, W: float, D: float) -> np.ndarray:
    """A random target at least 1 m (horizontally) from the camera."""
    target = np.array([rng.uniform(0.2, W - 0.2), rng.uniform(0.2, D - 0.2), rng.uniform(0.2, 1.6)])
    while np.linalg.norm(target[:2] - eye[:2]) < 1.0:
        target = np.array([rng.uniform(0.2, W - 0.2), rng.uniform(0.2, D - 0.2), rng.uniform(0.2, 1.6)])
    return target


def _near_object(b: SceneBuilder, eye: np.ndarray, target: np.ndarray) -> None:
    """A plant or a grille between the camera and its target (occlusion close to the lens)."""
    rng = b.rng
    t = rng.uniform(0.35, 0.7)
    near = eye + (target - eye) * t / max(1.0, np.linalg.norm(target - eye)) * rng.uniform(0.6, 1.6)
    near += rng.normal(0, 0.15, 3)
    if rng.uniform() < 0.5:
        _plant(b, near[0], near[1], max(0.0, near[2] - 0.5), rng.uniform(0.6, 1.5))
    else:
        add_grille(b, near - [0.4, 0, 0.4],
                   [0.8 * math.cos(rng.uniform(0, 6.3)), 0.8 * math.sin(rng.uniform(0, 6.3)), 0],
                   [0, 0, 0.8], rng.uniform(0.05, 0.15))


def _room_light(rng: np.random.Generator, W: float, D: float, H: float) -> Light:
    """A point light just under the ceiling."""
    lp = np.array([rng.uniform(0.3, W - 0.3), rng.uniform(0.3, D - 0.3), H - 0.15])
    return Light(position=tuple(lp), color=tuple(float(c) for c in rng.uniform(0.75, 1.0, 3) * rng.uniform(0.9, 1.3)),
                 ambient=float(rng.uniform(0.15, 0.4)))


def indoor_scene(rng: np.random.Generator) -> tuple[list[Mesh], Light, np.ndarray, np.ndarray, dict]:
    """A random room. Returns meshes, light, eye (3,), target (3,), info."""
    b = SceneBuilder(rng)
    W, D, H = rng.uniform(3, 8), rng.uniform(3, 8), rng.uniform(2.4, 3.5)
    walls = _room_shell(b, W, D, H)
    # camera first so that furniture avoids it
    eye = np.array([rng.uniform(0.4, W - 0.4), rng.uniform(0.4, D - 0.4), rng.uniform(0.7, min(2.0, H - 0.3))])
    spots = _FloorSpots(rng, W, D, eye[:2])
    _furnish(b, spots)
    _wall_grilles(b, walls)
    _hanging_cables(b, W, D, H)
    _pictures(b, walls, H)
    tabletop = rng.uniform() < 0.3
    q = spots.take(0.8) if tabletop else None  # close-up of a table covered with small objects
    tabletop = q is not None
    if tabletop:
        eye, target = _tabletop_view(b, q, W, D)
    else:  # look at a random point across the room
        target = _across_the_room(rng, eye, W, D)
    if not tabletop and rng.uniform() < 0.35:  # a near object between the camera and the target
        _near_object(b, eye, target)
    light = _room_light(rng, W, D, H)
    return b.meshes, light, eye, target, {"room": [W, D, H], "tabletop": bool(tabletop)}
