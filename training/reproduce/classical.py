"""The classical conditioner of the plug-and-play experiment: ground truth blurred and affinely distorted."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """(H,W) float map blurred by a Gaussian of ``sigma`` px (reflected borders); ``sigma`` 0 = a copy."""
    import cv2

    x = np.asarray(x, np.float32)
    if sigma <= 0:
        return x.copy()
    return cv2.GaussianBlur(x, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def blur_affine(disparity: np.ndarray, known: np.ndarray, sigma: float, scale: float, shift: float,
                fill: str = "inpaint") -> np.ndarray:
    """The classical conditioner: ground-truth disparity, blurred, then ``scale * d + shift``.

    Args:
        disparity: (H,W) ground-truth disparity (inverse depth); only ``known`` pixels are read.
        known: (H,W) bool, where the ground truth exists.
        sigma: Gaussian blur in pixels (0 = none): it removes the fine detail the refiner must restore.
        scale, shift: the affine distortion (the scale must be positive: larger stays nearer).
        fill: unknown pixels before blurring: ``zero`` (disparity 0, the sky of synthetic scenes)
            or ``inpaint`` (a normalised convolution of the known pixels: holes of real ground truth).
    Returns:
        (H,W) float32 map, finite everywhere.
    """
    if scale <= 0:
        raise ValueError(f"`scale` must be > 0, got {scale}")
    if fill not in ("zero", "inpaint"):
        raise ValueError(f"`fill` must be 'zero' or 'inpaint', got {fill!r}")
    d = np.asarray(disparity, np.float64)
    k = np.asarray(known, bool) & np.isfinite(d)
    if d.shape != k.shape or d.ndim != 2:
        raise ValueError(f"`disparity` and `known` must be (H,W) of one shape, got {d.shape} and {k.shape}")
    base = np.where(k, d, 0.0)
    if fill == "inpaint" and not k.all():
        h, w = d.shape
        big = max(4.0 * sigma, 0.05 * max(h, w))
        num = gaussian_blur(base.astype(np.float32), big).astype(np.float64)
        den = gaussian_blur(k.astype(np.float32), big).astype(np.float64)
        fallback = float(np.median(d[k])) if k.any() else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            filled = np.where(den > 1e-6, num / den, fallback)
        base = np.where(k, d, filled)
    blurred = gaussian_blur(base.astype(np.float32), sigma).astype(np.float64)
    return (scale * blurred + shift).astype(np.float32)


@dataclass(frozen=True)
class ClassicalSettings:
    """sigma = ``sigma_frac`` x the image's longest side; shift = ``shift_frac`` x the median known disparity."""

    sigma_frac: float = 0.02
    scale: float = 0.5
    shift_frac: float = 0.25


def write_classical_maps(samples: Iterable, out_dir: Path, settings: ClassicalSettings, fill: str) -> dict[str, Any]:
    """Write ``out_dir/<sample id>.npy`` (the ``file:`` conditioner's layout) for evaluation samples.

    ``samples``: :class:`betterdepth_cli.evaluation.datasets.Sample` objects (their
    ``depth()`` and known ground truth, not the evaluation crop). Returns a summary.
    """
    from betterdepth_cli.io.depth_files import write_npy

    out_dir.mkdir(parents=True, exist_ok=True)
    n, sigmas = 0, []
    for s in samples:
        depth = s.depth().astype(np.float64)
        known = np.isfinite(depth) & (depth > 0)
        disp = np.where(known, 1.0 / np.where(known, depth, 1.0), 0.0)
        sigma = settings.sigma_frac * max(depth.shape)
        shift = settings.shift_frac * (float(np.median(disp[known])) if known.any() else 1.0)
        m = blur_affine(disp, known, sigma, settings.scale, shift, fill=fill)
        path = out_dir / f"{s.id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npy(path, m)
        n += 1
        sigmas.append(sigma)
    return {"samples": n, "sigma_px": [round(min(sigmas), 2), round(max(sigmas), 2)] if sigmas else None,
            "fill": fill, **asdict(settings)}
