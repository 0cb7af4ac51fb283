"""Integer pixels to floats in [0,1], and image shrinking, numpy only (the file readers use it without loading torch)."""

from __future__ import annotations

import numpy as np

INTEGER_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def unit_range(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 / uint16 -> float32 in [0,1] as ``x * float32(1 / max)``: the one conversion the library,
    ``refine`` and ``eval`` share, so the same pixels give the same floats (and the same depth) in each.
    ``out``: a float32 array to write into (``a`` broadcast to it, e.g. grey (H,W,1) into (H,W,3))."""
    return np.multiply(a, np.float32(1.0 / INTEGER_SCALES[a.dtype]), out=out, dtype=np.float32, casting="unsafe")


def area_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """An (H,W,C) image resized to ``width`` x ``height`` by OpenCV's area averaging, in its own dtype.
    Float images stay in [0, 1]: the area weights can sum to 1 + 1 ulp, so saturated white would come
    out 1.0000001 (e.g. 3200 x 2135 -> 1536 x 1025), which the refiner's image check refuses."""
    import cv2

    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if out.dtype.kind == "f":
        np.clip(out, 0.0, 1.0, out=out)
    return out
