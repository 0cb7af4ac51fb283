"""Write a simulated conditioner's maps: the ground truth's disparity, blurred and warped.

A stand-in for a feed-forward model with the right global layout and smoothed
detail (what Depth Anything gives the paper's refiner), to measure a refiner
apart from its conditioner: train and evaluate with
``--conditioner file:<OUT>?kind=disparity`` (maps matched by sample id).

Per sample: disparity = 1 / depth over the valid pixels, invalid pixels (sky)
filled with half the smallest valid disparity (a dense map, as a model gives; with
``--fill background`` the background's disparity, for real datasets' occlusions
and cropped borders: :func:`background_fill`),
a Gaussian blur of ``sigma`` pixels (or, with ``--sigma-max``, a per-sample
width drawn uniformly from [sigma, sigma_max]), then a smooth multiplicative warp
``1 + warp * field`` (``field`` a bicubic upsampling of a 3 x 3 uniform [-1, 1]
grid, clipped to [-1, 1], seeded by the sample's index).

    python -m training.simulated_conditioner folder data/synth-train maps/train --sigma 2.5 --warp 0.1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _fill_runs_along_rows(disp: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Each row's unknown runs take the smaller of the known values that bound them (the one where the
    run touches the border); rows with nothing known stay NaN. (H,W) float64 -> (H,W) float64."""
    h, w = disp.shape
    idx = np.broadcast_to(np.arange(w), (h, w))
    left = np.maximum.accumulate(np.where(known, idx, -1), axis=1)
    right = np.minimum.accumulate(np.where(known, idx, w)[:, ::-1], axis=1)[:, ::-1]
    lv = np.where(left >= 0, np.take_along_axis(disp, np.clip(left, 0, w - 1), axis=1), np.inf)
    rv = np.where(right < w, np.take_along_axis(disp, np.clip(right, 0, w - 1), axis=1), np.inf)
    fill = np.minimum(lv, rv)
    return np.where(known, disp, np.where(np.isfinite(fill), fill, np.nan))


def background_fill(disp: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(H,W) disparity with ``known`` pixels -> (H,W) float64 dense: each unknown run of a row takes the
    smaller (farther) disparity of the two known pixels that bound it, or its one neighbour where it
    touches the border; rows with nothing known are then filled the same way along the columns.

    The stereo convention for occlusions (an occluded pixel sees the background) and, for a frame
    with no ground truth (NYUv2's crop), the nearest row or column extended: a conditioner's
    layout without the holes or frames that a constant fill would draw as depth edges. A map with
    nothing known is all 1.
    """
    known = np.asarray(known, bool)
    out = _fill_runs_along_rows(np.where(known, disp, 0.0).astype(np.float64), known)
    rows_done = np.isfinite(out)
    out = _fill_runs_along_rows(np.where(rows_done, out, 0.0).T, rows_done.T).T
    return np.where(np.isfinite(out), out, 1.0)


def simulated_disparity(depth: np.ndarray, valid: np.ndarray, sigma: float, warp: float,
                        rng: np.random.Generator, fill: str = "far") -> np.ndarray:
    """(H,W) depth and valid -> (H,W) float32 dense disparity, blurred and warped (module doc).

    ``fill``: what invalid pixels get before the blur: ``"far"``, half the smallest valid disparity
    (sky, in rendered scenes), or ``"background"`` (:func:`background_fill`: the occlusions and
    cropped borders of real datasets).
    """
    import cv2

    v = valid & (depth > 0)
    disp = np.where(v, 1.0 / np.maximum(depth, 1e-6), 0.0)
    if fill == "background":
        disp = background_fill(disp, v).astype(np.float32)
    elif fill == "far":
        far = 0.5 * disp[v].min() if v.any() else 1.0
        disp = np.where(v, disp, far).astype(np.float32)
    else:
        raise ValueError(f"fill must be 'far' or 'background', got {fill!r}")
    if sigma > 0:
        disp = cv2.GaussianBlur(disp, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    field = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
    if warp:
        h, w = disp.shape
        grid = np.clip(cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC), -1, 1)
        disp = disp * (1 + warp * grid)
    return disp.astype(np.float32)


def shift_edges(disp: np.ndarray, radius: int, fatter: bool) -> np.ndarray:
    """(H,W) disparity -> (H,W) float32 with every depth edge moved ``radius`` px towards the far side
    (``fatter``: a grey dilation by a disc, near objects grow) or towards the near side (an erosion,
    they shrink). A disc, not a square, so diagonal edges move as far as straight ones."""
    import cv2

    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    op = cv2.dilate if fatter else cv2.erode
    return op(np.asarray(disp, np.float32), disc, borderType=cv2.BORDER_REPLICATE)


class SimulatedConditioner:
    """A training-time conditioner: each sample's ground truth degraded afresh at every step.

    What a refiner must be robust to, drawn per sample from ``rng``:

    - thin structures removed (probability ``thin``): a grey opening of the
      disparity with a square window of 3 px up to ``thin_max`` x the longest side,
      so rods, wires and leaves nearer than their background vanish;
    - edges moved (probability ``shift``): a grey dilation or erosion (either, equally
      likely) of the disparity by a disc of radius 1 px up to ``shift_max`` x the longest
      side, so near objects come out fatter or thinner than they are (a public model's
      outlines sit a few pixels off the photo's);
    - a Gaussian blur of ``sigma`` x the longest side, ``sigma`` log-uniform in
      ``[sigma_min, sigma_max]`` (soft edges, as Depth Anything and DPT give);
    - a smooth monotone warp of the disparity range, ``d' = d^gamma`` on the
      map rescaled to [0, 1], ``gamma`` log-uniform in ``[gamma_min, gamma_max]``;
    - a low-frequency multiplicative distortion ``1 + a * field`` (``field`` a
      bicubic 3 x 3 grid in [-1, 1], ``a`` uniform in [0, ``warp``]).

    Output: relative disparity (``kind = "disparity"``, not metric), dense.
    """

    kind = "disparity"
    metric = False
    online = True
    name = "simulated"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 0.04, warp: float = 0.1,
                 gamma_min: float = 0.7, gamma_max: float = 1.4, thin: float = 0.3, thin_max: float = 0.01,
                 shift: float = 0.0, shift_max: float = 0.008):
        if not 0 <= sigma_min <= sigma_max:
            raise ValueError(f"need 0 <= sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
        if not 0 < gamma_min <= gamma_max:
            raise ValueError(f"need 0 < gamma_min <= gamma_max, got {gamma_min}, {gamma_max}")
        self.sigma = (float(sigma_min), float(sigma_max))
        self.gamma = (float(gamma_min), float(gamma_max))
        if not (0 <= shift <= 1 and shift_max >= 0):
            raise ValueError(f"need 0 <= shift <= 1 and shift_max >= 0, got {shift}, {shift_max}")
        self.warp, self.thin, self.thin_max = float(warp), float(thin), float(thin_max)
        self.shift, self.shift_max = float(shift), float(shift_max)

    def degrade(self, depth: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(H,W) depth and valid -> (H,W) float32 degraded disparity (class doc)."""
        import cv2

        h, w = depth.shape
        side = max(h, w)
        loguni = lambda lo, hi: float(np.exp(rng.uniform(np.log(max(lo, 1e-9)), np.log(max(hi, 1e-9)))))
        sigma = loguni(*self.sigma) * side
        gamma = loguni(*self.gamma)
        amp = float(rng.uniform(0.0, self.warp))
        disp = simulated_disparity(depth, valid, 0.0, 0.0, rng)
        if rng.uniform() < self.thin:
            k = int(rng.integers(1, max(2, round(self.thin_max * side / 2) + 1))) * 2 + 1
            disp = cv2.morphologyEx(disp, cv2.MORPH_OPEN, np.ones((k, k), np.uint8), borderType=cv2.BORDER_REFLECT)
        if self.shift and rng.uniform() < self.shift:  # no draw at all without shifts (older recipes replay)
            disp = shift_edges(disp, int(rng.integers(1, max(1, round(self.shift_max * side)) + 1)),
                               fatter=bool(rng.uniform() < 0.5))
        if sigma > 0.3:
            disp = cv2.GaussianBlur(disp, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        lo, hi = float(disp.min()), float(disp.max())
        if hi > lo:
            disp = lo + (hi - lo) * ((disp - lo) / (hi - lo)) ** gamma
        if amp:
            field = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
            grid = np.clip(cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC), -1, 1)
            disp = disp * (1 + amp * grid)
        return disp.astype(np.float32)

    def predict_sample(self, sample: dict, rng: np.random.Generator):
        """(values (1,H,W) float32, valid (1,H,W) bool) for a training sample dict (``depth``, ``valid``)."""
        import torch

        depth = sample["depth"][0].numpy()
        valid = sample["valid"][0].numpy().astype(bool)
        values = torch.from_numpy(self.degrade(depth, valid, rng))[None]
        return values, torch.ones_like(values, dtype=torch.bool)


def sample_sigma(sigma: float, sigma_max: float | None, seed: int, index: int) -> float:
    """The blur of sample ``index``: ``sigma``, or uniform in [sigma, sigma_max] (seeded by seed and index)."""
    if sigma_max is None or sigma_max == sigma:
        return float(sigma)
    if sigma_max < sigma:
        raise ValueError(f"--sigma-max {sigma_max} is below --sigma {sigma}")
    return float(np.random.default_rng([seed, index, 1]).uniform(sigma, sigma_max))


def write_maps(dataset: str, root: str, out: str, sigma: float = 2.5, warp: float = 0.1, seed: int = 0,
               sigma_max: float | None = None, fill: str = "far", **options) -> int:
    """One ``<out>/<sample id>.npy`` per sample of an eval dataset (``get_dataset`` names); returns the count.

    With ``sigma_max``, each sample's blur is drawn from [sigma, sigma_max] (:func:`sample_sigma`),
    so a refiner trained on the maps sees edges blurred by a range of widths. ``fill``: what pixels
    without ground truth get (:func:`simulated_disparity`; ``"background"`` for real datasets' holes).
    """
    from betterdepth_cli.evaluation.datasets import get_dataset
    from betterdepth_cli.io.depth_files import write_npy

    dst = Path(out)
    n = 0
    for k, s in enumerate(get_dataset(dataset, root, **options)):
        disp = simulated_disparity(s.depth(), s.valid, sample_sigma(sigma, sigma_max, seed, k), warp,
                                   np.random.default_rng([seed, k]), fill=fill)
        path = dst / f"{s.id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npy(path, disp)
        n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    """``python -m training.simulated_conditioner``: errors are one line with ``betterdepth``'s exit codes."""
    from betterdepth_cli.cli.app import script_main

    script_main(_main, argv)


def _main(argv: list[str] | None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="an eval dataset name: folder, middlebury, nyuv2, ...")
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--sigma", type=float, default=2.5, help="Gaussian blur, pixels")
    ap.add_argument("--sigma-max", type=float, default=None,
                    help="draw each sample's blur uniformly from [--sigma, --sigma-max] pixels")
    ap.add_argument("--warp", type=float, default=0.1, help="amplitude of the smooth multiplicative warp")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fill", choices=("far", "background"), default="far",
                    help="pixels without ground truth: half the smallest disparity (rendered sky) or the "
                         "background's disparity (real datasets' occlusions and cropped borders)")
    a = ap.parse_args(argv)
    n = write_maps(a.dataset, a.root, a.out, a.sigma, a.warp, a.seed, a.sigma_max, fill=a.fill)
    print(f"{n} maps -> {a.out} (use --conditioner 'file:{a.out}?kind=disparity')")


if __name__ == "__main__":
    main()
