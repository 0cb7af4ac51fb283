"""Pinhole camera intrinsics (pure math; EXIF reading is in :mod:`betterdepth_cli.io.intrinsics`)."""

from __future__ import annotations

import math

import numpy as np

from betterdepth_cli.core.types import UsageError

DEFAULT_FOV_DEG = 60.0
"""Horizontal field of view used when neither flags nor EXIF give intrinsics."""


def intrinsics_from_fov(
    width: int, height: int, fov_deg: float, cx: float | None = None, cy: float | None = None
) -> np.ndarray:
    """Pinhole K (3,3) float64 from a horizontal field of view in degrees.

    fx = fy = (W / 2) / tan(fov / 2); the principal point defaults to the image
    centre ((W - 1) / 2, (H - 1) / 2).
    """
    if not (0.0 < fov_deg < 180.0) or not math.isfinite(fov_deg):
        raise UsageError(f"`--fov` must be between 0 and 180 degrees, got {fov_deg}")
    focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return intrinsics_from_focal(width, height, focal, cx, cy)


def intrinsics_from_focal(
    width: int, height: int, focal: float, cx: float | None = None, cy: float | None = None
) -> np.ndarray:
    """Pinhole K (3,3) float64 with fx = fy = ``focal`` (pixels of the map)."""
    if not (focal > 0.0) or not math.isfinite(focal):
        raise UsageError(f"`--focal` must be a positive number of pixels, got {focal}")
    cx = (width - 1) / 2.0 if cx is None else float(cx)
    cy = (height - 1) / 2.0 if cy is None else float(cy)
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def fov_from_intrinsics(K: np.ndarray, width: int) -> float:
    """Horizontal field of view in degrees of K for an image ``width`` pixels wide."""
    return math.degrees(2.0 * math.atan((width / 2.0) / float(K[0, 0])))


def stride_intrinsics(K: np.ndarray, stride: int) -> np.ndarray:
    """K of the grid ``image[::stride, ::stride]``.

    Grid pixel (j, i) sits at full-resolution pixel (stride * j, stride * i), so
    fx, fy, cx, cy are divided by ``stride``; back-projection stays exact.
    """
    Ks = np.array(K, dtype=np.float64, copy=True)
    Ks[:2, :] /= float(stride)
    Ks[2, 2] = 1.0
    return Ks
