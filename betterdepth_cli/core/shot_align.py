"""Shot-level co-alignment of a per-frame conditioner's predictions (torch, streaming).

Per-frame depth models (Depth Anything, DPT, MiDaS) are affine-ambiguous frame by
frame: their scale and shift jump between frames, and a refiner that de-normalises
each frame back to its own conditioner units inherits every jump. Before
refinement, frame t's prediction ``d_t`` is mapped to the shot's units by one
scale and shift, ``s_t * d_t + b_t``, fitted in closed form against a reference
built from the frames before it:

- the reference is the previous frames' aligned maps averaged with weights
  ``momentum ** age`` (an exponential moving average: the previous aligned frame
  weighs most; older frames smooth the reference over time, so one bad fit
  does not carry on), compared pixel by pixel (pose-free overlap; consecutive
  frames of a shot mostly see the same surfaces at the same pixels);
- the fit is robust: least squares (:func:`~betterdepth_cli.core.align.fit_scale_shift`)
  repeated ``iterations`` times on the pixels whose residual is within
  ``clip`` x 1.4826 x the median absolute residual (moving edges, disoccluded
  pixels and anything that really changed drop out), on maps shrunk by area
  averaging to at most ``max_side`` pixels (cheap, and insensitive to the
  few-pixel parallax of a moving camera);
- the first frame defines the shot's units (s = 1, b = 0); a fit that gives a
  scale <= 0 (no usable overlap, e.g. a cut) keeps the previous frame's
  parameters and restarts the reference from the frame.

Memory is one reference map at ``max_side`` whatever the shot's length; the
result is deterministic and depends only on the frames before (a rerun of the
shot gives the same maps).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from betterdepth_cli.core.align import DegenerateAlignmentWarning, fit_scale_shift

MAX_SIDE = 96
ITERATIONS = 3
CLIP = 2.5
MOMENTUM = 0.5


def shrink(x: torch.Tensor, valid: torch.Tensor, max_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,1,H,W) map and mask -> area-averaged over valid pixels to longest side <= ``max_side``.

    A low-resolution pixel is valid when at least half of its footprint was."""
    h, w = x.shape[-2:]
    f = max(1, -(-max(h, w) // max_side))
    if f == 1:
        return x.double(), valid.bool()
    m = valid.double()
    num = F.avg_pool2d(torch.where(valid, x.double(), 0.0), f, f, ceil_mode=True)
    den = F.avg_pool2d(m, f, f, ceil_mode=True)
    return num / den.clamp_min(1e-12), den >= 0.5


def robust_scale_shift(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                       iterations: int = ITERATIONS, clip: float = CLIP) -> tuple[float, float]:
    """Scale and shift of ``pred`` onto ``target`` (one map each, any shape) by trimmed least squares.

    Each round refits on the pixels with ``|s * pred + b - target| <= clip * 1.4826 * MAD``
    (MAD: median absolute residual of the valid pixels). With no outliers the first
    round's closed form is the answer; a known affine map of ``target`` is recovered exactly.
    """
    p, t, ok = pred.reshape(1, -1).double(), target.reshape(1, -1).double(), valid.reshape(1, -1).bool()
    ok = ok & torch.isfinite(p) & torch.isfinite(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateAlignmentWarning)
        s, b = fit_scale_shift(p, t, ok)
        for _ in range(max(0, iterations - 1)):
            res = (s[0] * p + b[0] - t).abs()
            if not bool(ok.any()):
                break
            mad = res[ok].median()
            keep = ok & (res <= clip * 1.4826 * mad + 1e-12 * t[ok].abs().max())
            if int(keep.sum()) < 2:
                break
            s, b = fit_scale_shift(p, t, keep)
    return float(s[0]), float(b[0])


class ShotAligner:
    """Co-aligns one shot's frames as they come (module doc). Call once per frame, in order."""

    def __init__(self, max_side: int = MAX_SIDE, iterations: int = ITERATIONS, clip: float = CLIP,
                 momentum: float = MOMENTUM):
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}")
        self.max_side, self.iterations, self.clip, self.momentum = int(max_side), int(iterations), float(clip), momentum
        self.reference: torch.Tensor | None = None  # [1,1,h,w] float64, shot units
        self.ref_valid: torch.Tensor | None = None
        self.scale, self.shift = 1.0, 0.0
        self.frames = 0
        # the shot's one-pass-or-two decision (the card's cascade), taken on the frame this aligner saw
        # first and kept for every frame: :func:`betterdepth_cli.core.shot.shot_cascade`
        self.cascade: bool | None = None

    def fit(self, values: torch.Tensor, valid: torch.Tensor) -> tuple[float, float]:
        """Scale and shift of one frame (1,1,H,W) into the shot's units; updates the reference."""
        small, small_ok = shrink(values.float(), valid.bool(), self.max_side)
        small, small_ok = small.cpu(), small_ok.cpu()
        restart = self.reference is None or self.reference.shape != small.shape
        if not restart:
            both = small_ok & self.ref_valid
            s, b = robust_scale_shift(small, self.reference, both, self.iterations, self.clip)
            if s > 0 and int(both.sum()) >= 2:
                self.scale, self.shift = s, b
            else:
                restart = True  # no usable overlap: keep the previous parameters, start a new reference
        aligned = small * self.scale + self.shift
        if restart:
            self.reference, self.ref_valid = aligned, small_ok
        else:
            m = self.momentum
            both = small_ok & self.ref_valid
            blended = torch.where(both, m * self.reference + (1 - m) * aligned, aligned)
            self.reference = torch.where(small_ok, blended, self.reference)
            self.ref_valid = self.ref_valid | small_ok
        self.frames += 1
        return self.scale, self.shift

    def align(self, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(1,1,H,W) frame -> the frame in the shot's units (``s * values + b``)."""
        s, b = self.fit(values, valid)
        return values * s + b


def coalign_prediction(pred, aligners: list["ShotAligner"]):
    """A :class:`~betterdepth_cli.core.types.DepthPrediction` of B frames, frame i co-aligned by
    ``aligners[i]`` (the same aligner for frames of one shot, in order; ``None`` leaves a frame as is)."""
    from betterdepth_cli.core.types import DepthPrediction

    if len(aligners) != pred.values.shape[0]:
        raise ValueError(f"got {len(aligners)} aligners for {pred.values.shape[0]} frames")
    out = []
    for i, aligner in enumerate(aligners):
        v = pred.values[i : i + 1]
        out.append(v if aligner is None else aligner.align(v, pred.valid[i : i + 1]))
    return DepthPrediction(values=torch.cat(out), valid=pred.valid, kind=pred.kind, metric=pred.metric,
                           source=pred.source)
