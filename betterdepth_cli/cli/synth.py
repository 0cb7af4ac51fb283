"""`betterdepth synth`: render procedural RGB-D training scenes into a dataset folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from betterdepth_cli.cli.app import app, handle_errors


#: The flags ``betterdepth synth`` names in errors (the library's argument names otherwise).
FLAG_NAMES = {"n": "-n", "seed0": "--seed", "size": "--size", "supersample": "--supersample", "frames": "--frames",
              "workers": "--workers"}


def _parse_size(text: str) -> tuple[int, int]:
    """(H, W) of ``--size`` N or WxH (its limits are checked with the other flags)."""
    from betterdepth_cli.core.types import UsageError

    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError:
        raise UsageError(f"--size must be N or WxH, got {text!r}") from None
    return h, w


@app.command("synth")
@handle_errors
def synth(
    n: Annotated[int, typer.Option("-n", "--num", min=1, help="Scenes in the folder (clips with "
                                                         "--sequence), at most 10,000,000; a rerun with a larger -n "
                                                         "extends it.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output dataset folder (created; existing samples are kept).")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first scene (>= 0); scene i uses seed + i.")] = 0,
    size: Annotated[str, typer.Option("--size", help="Image size: N (square) or WxH, 8 to 16384 pixels a "
                                                "side and W x H x supersample^2 at most 4096x4096.")] = "256",
    kind: Annotated[str, typer.Option("--kind", help="Scene kind: indoor, outdoor or mixed.")] = "mixed",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Rendering processes (at most 256).")] = 1,
    depth_format: Annotated[
        str, typer.Option("--depth-format", help="npy (float32 metres, exact) or png16 (uint16, 1-2 mm steps).")
    ] = "npy",
    supersample: Annotated[
        int, typer.Option("--supersample", min=1, help="Odd rays per pixel side for anti-aliased RGB (3 = 9 rays; "
                          "depth stays point-sampled at pixel centres).")
    ] = 1,
    sequence: Annotated[bool, typer.Option("--sequence", help="Render camera paths (clips): -n clips of "
                        "--frames frames each, with per-frame depth, intrinsics and pose (README: video).")] = False,
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, help="Frames per clip (with --sequence), "
                                                                          "at most 100,000.  [default: 48]")] = None,
    motion: Annotated[Optional[str], typer.Option("--motion", help="Camera motion of the clips: orbit, dolly, truck, "
                      "static or mixed (with --sequence).  [default: mixed]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Render procedural RGB-D scenes (open3d ray casting) in the generic folder format.

    Writes OUT/dataset.toml, OUT/rgb/<id>.png, OUT/depth/<id>.npy|.png and
    OUT/meta/<id>.json (seed, intrinsics, pose). Deterministic per seed. With --sequence:
    OUT/<clip>/rgb/frame.<n>.png, depth/frame.<n>.npy and camera.json (K, pose per frame).

    A rerun resumes (complete samples are kept) and may extend the folder with a larger -n; a
    folder written with other settings, or holding more scenes (clips) than -n, is refused (exit
    73; nothing is deleted). Limits (exit 64, checked before anything is written): -n at most
    10,000,000; --seed >= 0; each side of --size 8 to 16384 pixels and W x H x supersample^2 at
    most 16,777,216 rays (4096x4096 at --supersample 1: about 4 GB of memory); --frames at most
    100,000; --workers at most 256. A flag the mode would ignore is refused too (exit 64):
    --supersample, --depth-format, --workers with --sequence; --frames, --motion without it.
    """
    from betterdepth_cli.core.types import OutputError, UsageError
    from training.synthetic.settings import check_request

    hw = _parse_size(size)
    if kind not in ("indoor", "outdoor", "mixed"):
        raise UsageError(f"`--kind` must be one of indoor, outdoor, mixed, got {kind!r}")
    if depth_format not in ("npy", "png16"):
        raise UsageError(f"`--depth-format` must be npy or png16, got {depth_format!r}")
    _check_mode_flags(sequence, supersample=supersample, depth_format=depth_format, workers=workers, frames=frames,
                      motion=motion)
    frames, motion = 48 if frames is None else frames, "mixed" if motion is None else motion
    if sequence:
        from training.sequences import MOTIONS

        if motion not in MOTIONS:
            raise UsageError(f"`--motion` must be one of {', '.join(MOTIONS)}, got {motion!r}")
    try:  # every flag before anything is written
        hw = check_request(n, seed, hw, supersample, frames if sequence else None, workers, names=FLAG_NAMES)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if sequence:
        _synth_sequences(n, out, seed, hw, kind, frames, motion, quiet)
    else:
        _synth_scenes(n, out, seed, hw, kind, workers, depth_format, supersample, quiet)


def _check_mode_flags(sequence: bool, **given) -> None:
    """Refuse a flag that the chosen mode would ignore: clips (``--sequence``) are rendered at one ray
    per pixel with float depth by one process; ``--frames``/``--motion`` describe clips only."""
    from betterdepth_cli.core.types import UsageError

    if sequence:
        ignored = {"supersample": given["supersample"] != 1, "depth-format": given["depth_format"] != "npy",
                   "workers": given["workers"] != 1}
        for flag, set_ in ignored.items():
            if set_:
                raise UsageError(f"`--{flag}` does not apply with --sequence (clips: one ray per pixel, npy depth, "
                                 "one process)")
    else:
        for flag in ("frames", "motion"):
            if given[flag] is not None:
                raise UsageError(f"`--{flag}` applies only with --sequence (clips)")


def _synth_scenes(n: int, out: Path, seed: int, hw: tuple[int, int], kind: str, workers: int, depth_format: str,
                  supersample: int, quiet: bool) -> None:
    from training.synthetic import write_dataset
    from training.synthetic.settings import complete_scenes

    t0 = time.perf_counter()
    step = max(1, n // 20)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if quiet or not (done == total or done % step == 0 or now - last[0] > 5):
            return
        last[0] = now
        rate = done / max(now - t0, 1e-9)
        print(f"synth: {done}/{total} scenes ({100 * done / total:.0f}%), {rate:.1f}/s", file=sys.stderr, flush=True)

    there = len(complete_scenes(out, n, depth_format))  # a rerun resumes: kept
    _writing(out, lambda: write_dataset(out, n, seed0=seed, size=hw, kind=kind, workers=workers,
                                        depth_format=depth_format, supersample=supersample, progress=progress))
    _report(out, n, there, "scenes", t0, quiet)


def _report(out: Path, n: int, there: int, unit: str, t0: float, quiet: bool) -> None:
    """The closing line: what was written, or that the folder already held it all."""
    if quiet:
        return
    if there == n:
        print(f"synth: nothing to do: {out} already holds the {n} {unit}", file=sys.stderr, flush=True)
        return
    kept = f" ({there} were there already)" if there else ""
    print(f"synth: wrote {n - there} {unit} to {out}{kept} in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
          flush=True)


def _writing(out: Path, write) -> None:
    """Run ``write()``; its ValueError is a usage error, an OSError one writing ``out`` (one line each)."""
    from betterdepth_cli.core.types import OutputError, UsageError

    try:
        write()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except PermissionError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror})") from None
    except OSError as exc:
        raise OutputError(f"{out}: {exc}") from None


def _synth_sequences(n: int, out: Path, seed: int, hw: tuple[int, int], kind: str, frames: int, motion: str,
                     quiet: bool) -> None:
    from training.sequences import complete_clips, write_sequences

    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not quiet:
            print(f"synth: {done}/{total} clips of {frames} frames", file=sys.stderr, flush=True)

    there = len(complete_clips(out, n))
    _writing(out, lambda: write_sequences(out, n, frames, seed0=seed, size=hw, kind=kind, motion=motion,
                                          progress=progress))
    _report(out, n, there, "clips", t0, quiet)
