"""Temporal consistency of shot refinement on held-out synthetic sequences (issue 21's success table).

Renders (once, cached under --cache, default /work/runs/sequences) 8 clips of 48 frames at
160 x 120 with camera motion (seeds 9000.., never used for training data), one static clip,
and the flickering conditioner's maps (:mod:`training.flicker_conditioner`: the simulated
conditioner per frame + affine jitter of scale +-10 %, shift +-5 % of range). Then, in one run,
with one torch thread (the machine is shared; every ratio compares passes of this run):

1. TAE (Video Depth Anything's, %) of the conditioner per frame, of independent per-frame
   refinement (``refine --per-frame``) and of shot refinement (``refine``'s default);
2. clip-aligned AbsRel of per-frame and shot refinement;
3. flicker of the shot refinement of the static clip (% of the depth range);
4. throughput of shot vs per-frame refinement (the same frames, passes alternated, best of 3),
   and the peak RSS of the refine engine (``jobs.run``, a child process each, the peak reset
   after the model is loaded and warmed up) on a 48- and a 480-frame sequence (the clip played
   forth and back), with ``--format npy`` (frames streamed out) and with the default ``png16``
   (a shot's frames wait for the shared range: at most 8 in memory, the others spilled to disk).

    PYTHONPATH=. nice python bench/temporal.py [--cache /work/runs/sequences]

The success line is printed last.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SIZE = (120, 160)
CLIPS, FRAMES, SEED0, STATIC_SEED = 8, 48, 9000, 9100
ROOT = Path(__file__).resolve().parents[1]


def prepare(cache: Path) -> tuple[Path, Path, Path, Path]:
    """The moving and static sequence folders and their flicker maps (rendered when missing)."""
    from training.flicker_conditioner import write_flicker_maps
    from training.sequences import write_sequences

    val, static = cache / "bench-val", cache / "bench-static"
    write_sequences(val, CLIPS, FRAMES, seed0=SEED0, size=SIZE, kind="indoor", motion="mixed")
    write_sequences(static, 1, FRAMES, seed0=STATIC_SEED, size=SIZE, kind="indoor", motion="static")
    write_flicker_maps("synth-seq", str(val), str(cache / "bench-val-flicker"))
    write_flicker_maps("synth-seq", str(static), str(cache / "bench-static-flicker"), seed=1)
    return val, cache / "bench-val-flicker", static, cache / "bench-static-flicker"


def long_sequence(cache: Path, val: Path, maps: Path, n: int) -> tuple[Path, Path]:
    """clip0000's frames played forth and back to ``n`` frames: (rgb folder, maps folder)."""
    rgb, out_maps = cache / f"bench-long{n}" / "rgb", cache / f"bench-long{n}" / "maps"
    if not rgb.is_dir() or len(list(rgb.iterdir())) != n:
        shutil.rmtree(rgb.parent, ignore_errors=True)
        rgb.mkdir(parents=True)
        out_maps.mkdir(parents=True)
        period = 2 * FRAMES - 2
        for k in range(n):
            j = k % period
            j = j if j < FRAMES else period - j
            shutil.copyfile(val / "clip0000" / "rgb" / f"frame.{j:06d}.png", rgb / f"frame.{k:06d}.png")
            shutil.copyfile(maps / "clip0000" / f"frame.{j:06d}.npy", out_maps / f"frame.{k:06d}.npy")
    return rgb, out_maps


_MEMORY_CHILD = """
import sys
from pathlib import Path
import torch
from betterdepth_cli import jobs as batch
from betterdepth_cli.conditioner_registry import get_conditioner
from betterdepth_cli.core.pipeline import refine_batch
from betterdepth_cli.core.refiner import load_model
from betterdepth_cli.io.inputs import discover

torch.set_num_threads(1)
rgb, maps, out, fmt = sys.argv[1:5]
spec = f"file:{maps}?kind=disparity"
settings = batch.RefineSettings(out_dir=Path(out), formats=(fmt,), conditioner=spec, model="default", steps=1,
                                ensemble=1, processing_res=0)
plan = batch.plan_run(discover([rgb]), settings)
cond, model = get_conditioner(spec), load_model(None)
first = sorted(Path(rgb).iterdir())[0]
refine_batch(torch.rand(1, 3, 120, 160), conditioner=cond, model=model, keys=[first.stem])  # warm-up
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM): what follows is the shot
summary = batch.run(plan, settings, cond, model)
assert summary.failed == 0, summary.failures
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")][0].split()[1]
print(hwm)
"""


def peak_rss_mb(rgb: Path, maps: Path, out: Path, fmt: str) -> float:
    """Peak RSS (MiB) of the refine engine (``jobs.run``, what ``betterdepth refine`` runs) over the
    sequence, in a child of its own, counted from after the model is loaded and warmed up."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(rgb), str(maps), str(out), fmt],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"refine failed: {p.stderr[-1500:]}")
    return int(p.stdout.strip().splitlines()[-1]) / 1024


def throughput(clip, conditioner, model, repeats: int = 3) -> tuple[float, float]:
    """Best-of-``repeats`` seconds per frame of (per-frame, shot) passes over one clip, alternated."""
    from betterdepth_cli.evaluation.temporal_runner import predict_clip

    frames = [clip.frame(i) for i in range(len(clip))]
    settings = {"steps": None, "ensemble": None, "reduction": None, "processing_res": None}
    best = {False: float("inf"), True: float("inf")}
    predict_clip(frames[:4], conditioner, model, True, settings, 0, 1)  # warm-up
    for r in range(repeats):
        for consistent in ((False, True) if r % 2 == 0 else (True, False)):  # neither always goes first
            best[consistent] = min(best[consistent],
                                   predict_clip(frames, conditioner, model, consistent, settings, 0, 1)[3] / len(frames))
    return best[False], best[True]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/work/runs/sequences"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.refiner import load_model
    from betterdepth_cli.evaluation.sequences import get_sequence_dataset
    from betterdepth_cli.evaluation.temporal_runner import TemporalConfig, format_table, run_temporal_evaluation

    t0 = time.perf_counter()
    val, maps, static, static_maps = prepare(a.cache)
    model = load_model(None)
    moving = run_temporal_evaluation(TemporalConfig("synth-seq", str(val)), model=model,
                                     conditioner=get_conditioner(f"file:{maps}?kind=disparity"))
    print(f"{CLIPS} held-out clips x {FRAMES} frames, {SIZE[1]}x{SIZE[0]}, flickering conditioner "
          "(scale +-10 %, shift +-5 % of range), default refiner:")
    print(format_table(moving))
    still = run_temporal_evaluation(TemporalConfig("synth-seq", str(static)), model=model,
                                    conditioner=get_conditioner(f"file:{static_maps}?kind=disparity"))
    print("static clip:")
    print(format_table(still))

    clip = get_sequence_dataset("synth-seq", str(val))[0]
    per_s, shot_s = throughput(clip, get_conditioner(f"file:{maps}/clip0000?kind=disparity"), model)
    mem = {}
    for n in (FRAMES, 10 * FRAMES):
        rgb, lmaps = long_sequence(a.cache, val, maps, n)
        for fmt in ("npy", "png16"):
            mem[n, fmt] = peak_rss_mb(rgb, lmaps, a.cache / f"bench-out-{n}-{fmt}", fmt)
    print(f"seconds per frame: per-frame {per_s:.4f}, shot {shot_s:.4f}")
    for fmt in ("npy", "png16"):
        print(f"peak RSS of refine ({fmt}): {mem[FRAMES, fmt]:.0f} MiB at {FRAMES} frames, "
              f"{mem[10 * FRAMES, fmt]:.0f} MiB at {10 * FRAMES} frames")
    m = moving.means
    ratios = {
        "tae_vs_conditioner": m["shot"]["tae"] / m["conditioner"]["tae"],
        "tae_vs_per_frame": m["shot"]["tae"] / m["per-frame"]["tae"],
        "absrel_vs_per_frame": m["shot"]["abs_rel"] / m["per-frame"]["abs_rel"],
        "static_flicker_pct": still.means["shot"]["flicker"],
        "throughput": per_s / shot_s,
        "memory_480_vs_48_npy": mem[10 * FRAMES, "npy"] / mem[FRAMES, "npy"],
        "memory_480_vs_48_png16": mem[10 * FRAMES, "png16"] / mem[FRAMES, "png16"],
    }
    ok = (ratios["tae_vs_conditioner"] <= 0.5 and ratios["tae_vs_per_frame"] <= 0.5
          and ratios["absrel_vs_per_frame"] <= 1.0 and ratios["static_flicker_pct"] < 0.1
          and ratios["throughput"] >= 0.9 and ratios["memory_480_vs_48_npy"] <= 1.1)
    print(f"bench time {time.perf_counter() - t0:.0f} s")
    print(f"TAE shot/conditioner {ratios['tae_vs_conditioner']:.3f} (<= 0.5), shot/per-frame "
          f"{ratios['tae_vs_per_frame']:.3f} (<= 0.5); AbsRel shot/per-frame {ratios['absrel_vs_per_frame']:.3f} "
          f"(<= 1); static flicker {ratios['static_flicker_pct']:.4f} % of range (< 0.1); throughput "
          f"{ratios['throughput']:.3f}x per-frame (>= 0.9); peak RSS 480/48 frames {ratios['memory_480_vs_48_npy']:.3f}x "
          f"(npy), {ratios['memory_480_vs_48_png16']:.3f}x (png16): {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
