"""What a scene is made of (materials, meshes, lights, the rendered sample) and the pinhole camera."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


SCENE_KINDS = ("indoor", "outdoor", "mixed")
PATTERNS = ("flat", "checker", "stripes", "noise", "grid", "windows", "wood")
INDOOR_MAX_DEPTH = 20.0
OUTDOOR_MAX_DEPTH = 80.0
MIN_DEPTH = 1e-3


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
