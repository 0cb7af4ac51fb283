"""A flickering per-frame conditioner for sequences: the simulated conditioner plus affine jitter.

Per-frame depth models see each frame alone: their systematic errors follow the
image (blur, lost thin structures, a warped range), and their affine ambiguity
is resolved afresh every frame, so scale and shift jump. This stand-in does both,
from the ground truth of a sequence dataset (:mod:`betterdepth_cli.evaluation.sequences`):

- the degradation of :class:`training.simulated_conditioner.SimulatedConditioner`
  (thin structures removed, Gaussian blur of 0.2-4 % of the longest side,
  gamma 0.7-1.4 on the range, a smooth 3 x 3 multiplicative warp up to 10 %),
  its parameters drawn ONCE per clip (one model's character), applied to each frame;
- then, independently per frame, an affine jitter in disparity:
  ``d' = a * d + c * (p98 - p2)`` with ``a`` uniform in [1 - ``scale_jitter``, 1 + ``scale_jitter``]
  (default +-10 %) and ``c`` uniform in [-``shift_jitter``, ``shift_jitter``] (default +-5 % of the
  frame's 2-98 % disparity range).

Maps are written as ``<out>/<clip>/<frame>.npy`` (float32 relative disparity) for
``--conditioner 'file:<out>?kind=disparity'`` (``betterdepth eval --dataset synth-seq``
matches them by ``<clip>/<frame>``)::

    python -m training.flicker_conditioner synth-seq /work/runs/sequences/val maps/flicker --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training.simulated_conditioner import SimulatedConditioner

SCALE_JITTER = 0.10
SHIFT_JITTER = 0.05


class FlickerConditioner:
    """Clip-level degradation plus per-frame affine jitter (module doc); deterministic per (seed, clip, frame)."""

    kind = "disparity"
    metric = False

    def __init__(self, scale_jitter: float = SCALE_JITTER, shift_jitter: float = SHIFT_JITTER, seed: int = 0,
                 degradation: SimulatedConditioner | None = None):
        if not 0 <= scale_jitter < 1:
            raise ValueError(f"`scale_jitter` must be in [0, 1), got {scale_jitter}")
        if shift_jitter < 0:
            raise ValueError(f"`shift_jitter` must be >= 0, got {shift_jitter}")
        self.scale_jitter, self.shift_jitter, self.seed = float(scale_jitter), float(shift_jitter), int(seed)
        self.degradation = degradation or SimulatedConditioner()

    def jitter(self, clip_index: int, frame: int) -> tuple[float, float]:
        """(a, c) of one frame: scale factor and shift as a fraction of the range."""
        rng = np.random.default_rng([self.seed, clip_index, frame, 2])
        return (float(rng.uniform(1 - self.scale_jitter, 1 + self.scale_jitter)),
                float(rng.uniform(-self.shift_jitter, self.shift_jitter)))

    def predict(self, depth: np.ndarray, valid: np.ndarray, clip_index: int, frame: int) -> np.ndarray:
        """(H,W) ground-truth depth of frame ``frame`` of clip ``clip_index`` -> (H,W) float32 disparity."""
        clip_rng = np.random.default_rng([self.seed, clip_index, 1])  # the same draws for every frame
        disp = self.degradation.degrade(depth, valid, clip_rng)
        return apply_jitter(disp, *self.jitter(clip_index, frame))


def apply_jitter(disp: np.ndarray, scale: float, shift_fraction: float) -> np.ndarray:
    """``scale * disp + shift_fraction * (p98 - p2)`` of the map (float32)."""
    lo, hi = np.quantile(disp, [0.02, 0.98])
    return (scale * disp + shift_fraction * float(hi - lo)).astype(np.float32)


def write_flicker_maps(dataset: str, root: str, out: str, seed: int = 0, scale_jitter: float = SCALE_JITTER,
                       shift_jitter: float = SHIFT_JITTER, **options) -> int:
    """One ``<out>/<clip>/<frame>.npy`` per frame of a sequence dataset; returns the count."""
    from betterdepth_cli.core.types import OutputError
    from betterdepth_cli.evaluation.sequences import get_sequence_dataset
    from betterdepth_cli.io.depth_files import write_npy

    cond = FlickerConditioner(scale_jitter, shift_jitter, seed)
    n = 0
    for ci, clip in enumerate(get_sequence_dataset(dataset, root, **options)):
        for i in range(len(clip)):
            path = Path(out) / clip.id / f"{clip.ids[i]}.npy"
            if path.exists():
                n += 1
                continue
            s = clip.frame(i)
            disp = cond.predict(s.depth(), s.valid, ci, i)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_npy(path, disp)
            except OSError as exc:
                raise OutputError(f"{out}: cannot write {path.name} ({exc.strerror or exc})") from None
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    """``python -m training.flicker_conditioner``: errors are one line with ``betterdepth``'s exit codes
    (64 usage, 66 no input such as a missing folder or one without clips, 73 cannot write)."""
    from betterdepth_cli.cli.app import script_main

    script_main(_main, argv)


def _main(argv: list[str] | None) -> None:
    from betterdepth_cli.core.types import UsageError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="a sequence dataset: synth-seq or tum")
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale-jitter", type=float, default=SCALE_JITTER, help="per-frame scale: 1 +- this")
    ap.add_argument("--shift-jitter", type=float, default=SHIFT_JITTER, help="per-frame shift: +- this x range")
    a = ap.parse_args(argv)
    if not 0 <= a.scale_jitter < 1:
        raise UsageError(f"--scale-jitter must be in [0, 1), got {a.scale_jitter}")
    if not a.shift_jitter >= 0:
        raise UsageError(f"--shift-jitter must be >= 0, got {a.shift_jitter}")
    n = write_flicker_maps(a.dataset, a.root, a.out, a.seed, a.scale_jitter, a.shift_jitter)
    print(f"{n} maps -> {a.out} (use --conditioner 'file:{a.out}?kind=disparity')")


if __name__ == "__main__":
    main()
