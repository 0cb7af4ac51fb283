"""Integer pixels to floats in [0,1], numpy only (the file readers use it without loading torch)."""

from __future__ import annotations

import numpy as np

INTEGER_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def unit_range(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 / uint16 -> float32 in [0,1] as ``x * float32(1 / max)``: the one conversion the library,
    ``refine`` and ``eval`` share, so the same pixels give the same floats (and the same depth) in each.
    ``out``: a float32 array to write into (``a`` broadcast to it, e.g. grey (H,W,1) into (H,W,3))."""
    return np.multiply(a, np.float32(1.0 / INTEGER_SCALES[a.dtype]), out=out, dtype=np.float32, casting="unsafe")
