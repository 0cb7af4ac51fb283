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


def pil_pixels(im) -> np.ndarray:
    """A Pillow image's pixels as numpy: grey (H,W), RGB (H,W,3), 16-bit (uint16) and float kept
    (``convert("RGB")`` would clip 16-bit and float pixels to 8 bits); ValueError for 32-bit integers
    beyond 16 bits."""
    mode = im.mode
    if mode in ("L", "RGB", "F"):
        return np.asarray(im)
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError("32-bit integer pixels")
        return arr.astype(np.uint16)
    if mode in ("LA", "La", "1"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))
