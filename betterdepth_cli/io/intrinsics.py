"""Camera intrinsics for back-projection: flags, EXIF, or a stated default.

Order (first that applies wins):
1. ``fov`` (horizontal degrees) or ``focal`` (pixels of the depth map), with
   optional ``cx``/``cy`` (default: the image centre);
2. the source image's EXIF: ``FocalLengthIn35mmFilm`` (defined on the 43.27 mm
   diagonal of a 36 x 24 mm frame, so focal_px = f35 * diagonal_px / 43.27;
   for a 3:2 image that is f35 * width / 36), else ``FocalLength`` (mm) with
   the sensor width (``sensor_width`` mm, the sensor's long side, or EXIF
   ``FocalPlaneXResolution``/``FocalPlaneResolutionUnit``);
3. :data:`DEFAULT_FOV_DEG` (60 degrees horizontal).

A focal length found in an image of another size than the map is scaled by
the ratio of their long sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from betterdepth_cli.core.camera import (  # noqa: F401 (the pinhole math, re-exported for callers)
    DEFAULT_FOV_DEG,
    intrinsics_from_focal,
    intrinsics_from_fov,
)
from betterdepth_cli.core.types import InputDataError, UsageError

EXIF_IFD = 0x8769
TAG_FOCAL_LENGTH = 0x920A
TAG_FOCAL_35MM = 0xA405
TAG_FOCAL_PLANE_X_RES = 0xA20E
TAG_FOCAL_PLANE_UNIT = 0xA210
TAG_PIXEL_X_DIMENSION = 0xA002
TAG_PIXEL_Y_DIMENSION = 0xA003
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm

_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit: inch, cm, mm, um


@dataclass
class ExifFocal:
    """A focal length found in EXIF, in pixels of the image as stored (width x height)."""

    focal_px: float
    width: int
    height: int
    source: str  # which tags gave it, for logs


def _num(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def exif_focal(path: str | Path, sensor_width_mm: float | None = None) -> ExifFocal | None:
    """The focal length in pixels from an image's EXIF, or ``None`` when it has none.

    Reads ``FocalLengthIn35mmFilm``, else ``FocalLength`` with ``sensor_width_mm``
    (the long side of the sensor) or ``FocalPlaneXResolution``. Zero or missing
    tags count as absent, and so does a file Pillow cannot open (EXR, a video);
    a missing file raises :class:`InputDataError`.
    """
    from PIL import Image

    p = Path(path)
    try:
        with Image.open(p) as im:
            width, height = im.size
            exif = im.getexif()
            ifd = dict(exif.get_ifd(EXIF_IFD)) if exif else {}
    except FileNotFoundError:
        raise InputDataError(f"{p}: image not found") from None
    except (OSError, ValueError, SyntaxError):  # not a format Pillow reads (EXR, video...): no EXIF to use
        return None
    tags = dict(exif or {})
    tags.update(ifd)  # some writers put Exif tags in IFD0
    long_px = max(width, height)

    f35 = _num(tags.get(TAG_FOCAL_35MM))
    if f35 is not None:
        focal = f35 * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM
        return ExifFocal(focal, width, height, f"EXIF FocalLengthIn35mmFilm {f35:g} mm")
    f_mm = _num(tags.get(TAG_FOCAL_LENGTH))
    if f_mm is None:
        return None
    if sensor_width_mm is not None:
        focal = f_mm / float(sensor_width_mm) * long_px
        return ExifFocal(focal, width, height, f"EXIF FocalLength {f_mm:g} mm, sensor width {sensor_width_mm:g} mm")
    res = _num(tags.get(TAG_FOCAL_PLANE_X_RES))
    unit_mm = _UNIT_MM.get(int(_num(tags.get(TAG_FOCAL_PLANE_UNIT)) or 2))
    if res is not None and unit_mm is not None:
        focal = f_mm * res / unit_mm  # pixels of the sensor readout PixelXDimension wide
        px_dim = _num(tags.get(TAG_PIXEL_X_DIMENSION))
        py_dim = _num(tags.get(TAG_PIXEL_Y_DIMENSION))
        if px_dim is not None:
            focal *= long_px / max(px_dim, py_dim or 0.0)
        return ExifFocal(focal, width, height, f"EXIF FocalLength {f_mm:g} mm, FocalPlaneXResolution {res:g}")
    return None


def resolve_intrinsics(
    width: int,
    height: int,
    *,
    fov: float | None = None,
    focal: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    image: str | Path | None = None,
    sensor_width: float | None = None,
) -> tuple[np.ndarray, str]:
    """K (3,3) for a ``width`` x ``height`` map, and a line saying where it came from.

    See the module docstring for the order. ``image`` is the source RGB image
    whose EXIF is read (skipped when ``fov`` or ``focal`` is given).
    """
    if fov is not None and focal is not None:
        raise UsageError("`--fov` and `--focal` exclude each other; give one")
    if sensor_width is not None and not (sensor_width > 0 and math.isfinite(sensor_width)):
        raise UsageError(f"`--sensor-width` must be a positive number of millimetres, got {sensor_width}")
    for name, c in (("--cx", cx), ("--cy", cy)):
        if c is not None and not math.isfinite(c):
            raise UsageError(f"`{name}` must be a finite number of pixels, got {c}")
    if fov is not None:
        K = intrinsics_from_fov(width, height, fov, cx, cy)
        return K, f"--fov {fov:g} (fx {K[0, 0]:.1f} px)"
    if focal is not None:
        K = intrinsics_from_focal(width, height, focal, cx, cy)
        return K, f"--focal {focal:g} px"
    if image is not None:
        found = exif_focal(image, sensor_width)
        if found is not None:
            f = found.focal_px * max(width, height) / max(found.width, found.height)
            K = intrinsics_from_focal(width, height, f, cx, cy)
            fov_deg = math.degrees(2 * math.atan(width / 2 / f))
            if not (1.0 <= fov_deg <= 179.0):
                raise InputDataError(f"{image}: EXIF gives an implausible field of view of {fov_deg:.2f} degrees; pass --fov")
            return K, f"{found.source} of {Path(image).name} (fx {f:.1f} px, {fov_deg:.1f} deg horizontal)"
    K = intrinsics_from_fov(width, height, DEFAULT_FOV_DEG, cx, cy)
    return K, f"default {DEFAULT_FOV_DEG:g} deg horizontal field of view (no --fov/--focal/EXIF)"
