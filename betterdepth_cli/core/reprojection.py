"""Pinhole camera geometry between two frames: unproject, move, project (pure NumPy).

Conventions (OpenCV, TUM RGB-D, ScanNet): ``K`` = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
with the centre of pixel (u, v) (column, row) at ((u - cx) / fx, (v - cy) / fy, 1);
camera axes x right, y down, z forward; a ``pose`` is the 4x4 camera-to-world matrix.
"""

from __future__ import annotations

import math

import numpy as np


def relative_pose(pose_from: np.ndarray, pose_to: np.ndarray) -> np.ndarray:
    """(4,4) transform taking points in the ``pose_from`` camera to the ``pose_to`` camera:
    ``inv(pose_to) @ pose_from`` (both camera-to-world)."""
    return np.linalg.inv(np.asarray(pose_to, np.float64)) @ np.asarray(pose_from, np.float64)


def unproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H,W) planar depth -> (H,W,3) float64 camera points X = (u - cx) / fx * Z, Y = (v - cy) / fy * Z, Z."""
    depth = np.asarray(depth, np.float64)
    h, w = depth.shape
    fx, fy, cx, cy = float(K[0][0]), float(K[1][1]), float(K[0][2]), float(K[1][2])
    xs = (np.arange(w, dtype=np.float64) - cx) / fx
    ys = (np.arange(h, dtype=np.float64) - cy) / fy
    return np.stack([depth * xs[None, :], depth * ys[:, None], depth], axis=-1)


def reproject_depth(depth: np.ndarray, K: np.ndarray, transform: np.ndarray,
                    source_mask: np.ndarray | None = None) -> np.ndarray:
    """Frame 1's depth seen from frame 2: unproject with ``K``, apply ``transform`` (1 -> 2, e.g.
    :func:`relative_pose`), project with ``K``, round to the nearest pixel (Video Depth Anything's
    TAE), keep the nearest point where several land on one pixel (a z-buffer).

    Args:
        depth: (H,W) depth of frame 1 (pixels <= 0 or not finite are skipped).
        K: (3,3) intrinsics of both frames; transform: (4,4).
        source_mask: optional (H,W) bool, the frame-1 pixels to move.
    Returns:
        (H,W) float64 depth in frame 2's camera, 0 where no point landed.
    """
    depth = np.asarray(depth, np.float64)
    h, w = depth.shape
    ok = np.isfinite(depth) & (depth > 0)
    if source_mask is not None:
        ok &= np.asarray(source_mask, bool)
    pts = unproject(np.where(ok, depth, 0.0), K)[ok]  # [N,3]
    T = np.asarray(transform, np.float64)
    moved = pts @ T[:3, :3].T + T[:3, 3]
    z = moved[:, 2]
    front = z > 1e-9
    moved, z = moved[front], z[front]
    fx, fy, cx, cy = float(K[0][0]), float(K[1][1]), float(K[0][2]), float(K[1][2])
    u = np.round(moved[:, 0] * fx / z + cx).astype(np.int64)
    v = np.round(moved[:, 1] * fy / z + cy).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, z = u[inside], v[inside], z[inside]
    out = np.full(h * w, np.inf)
    np.minimum.at(out, v * w + u, z)  # z-buffer: the nearest point wins
    out[~np.isfinite(out)] = 0.0
    return out.reshape(h, w)


def pose_from_quaternion(translation, quaternion) -> np.ndarray:
    """(4,4) pose from a translation (3,) and a unit quaternion (qx, qy, qz, qw) (TUM's order)."""
    x, y, z, w = (float(v) for v in quaternion)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if n == 0:
        raise ValueError("the quaternion is zero")
    x, y, z, w = x / n, y / n, z / n, w / n
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = [float(v) for v in translation]
    return T
