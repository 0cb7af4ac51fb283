"""`betterdepth synth`: render procedural RGB-D training scenes into a dataset folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from betterdepth_cli.cli.app import app, handle_errors


def _parse_size(text: str) -> tuple[int, int]:
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError:
        raise typer.BadParameter(f"must be N or WxH, got {text!r}") from None
    if w < 8 or h < 8:
        raise typer.BadParameter(f"must be at least 8 pixels per side, got {text!r}")
    return h, w


@app.command("synth")
@handle_errors
def synth(
    n: Annotated[int, typer.Option("-n", "--num", min=1, help="Number of scenes to render.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output dataset folder (created; existing samples are kept).")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first scene; scene i uses seed + i.")] = 0,
    size: Annotated[str, typer.Option("--size", help="Image size: N (square) or WxH.")] = "256",
    kind: Annotated[str, typer.Option("--kind", help="Scene kind: indoor, outdoor or mixed.")] = "mixed",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Rendering processes.")] = 1,
    depth_format: Annotated[
        str, typer.Option("--depth-format", help="npy (float32 metres, exact) or png16 (uint16, 1-2 mm steps).")
    ] = "npy",
    supersample: Annotated[
        int, typer.Option("--supersample", min=1, help="Odd rays per pixel side for anti-aliased RGB (3 = 9 rays; "
                          "depth stays point-sampled at pixel centres).")
    ] = 1,
    sequence: Annotated[bool, typer.Option("--sequence", help="Render camera paths (clips): -n clips of "
                        "--frames frames each, with per-frame depth, intrinsics and pose (README: video).")] = False,
    frames: Annotated[int, typer.Option("--frames", min=1, help="Frames per clip (with --sequence).")] = 48,
    motion: Annotated[str, typer.Option("--motion", help="Camera motion of the clips: orbit, dolly, truck, static or "
                      "mixed (with --sequence).")] = "mixed",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Render procedural RGB-D scenes (open3d ray casting) in the generic folder format.

    Writes OUT/dataset.toml, OUT/rgb/<id>.png, OUT/depth/<id>.npy|.png and
    OUT/meta/<id>.json (seed, intrinsics, pose). Deterministic per seed. With --sequence:
    OUT/<clip>/rgb/frame.<n>.png, depth/frame.<n>.npy and camera.json (K, pose per frame).
    """
    from betterdepth_cli.core.types import OutputError, UsageError

    hw = _parse_size(size)
    if kind not in ("indoor", "outdoor", "mixed"):
        raise UsageError(f"`--kind` must be one of indoor, outdoor, mixed, got {kind!r}")
    if depth_format not in ("npy", "png16"):
        raise UsageError(f"`--depth-format` must be npy or png16, got {depth_format!r}")
    if supersample % 2 == 0:
        raise UsageError(f"`--supersample` must be odd (1, 3, 5), got {supersample}")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")

    if sequence:
        _synth_sequences(n, out, seed, hw, kind, frames, motion, quiet)
        return
    from training.synthetic import write_dataset

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

    there = sum((out / "meta" / f"{i:06d}.json").is_file() for i in range(n))  # a rerun resumes: kept
    _writing(out, lambda: write_dataset(out, n, seed0=seed, size=hw, kind=kind, workers=workers,
                                        depth_format=depth_format, supersample=supersample, progress=progress))
    if not quiet:
        kept = f" ({there} were there already)" if there else ""
        print(f"synth: wrote {n - there} scenes to {out}{kept} in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
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
    from betterdepth_cli.core.types import UsageError
    from training.sequences import MOTIONS, write_sequences

    if motion not in MOTIONS:
        raise UsageError(f"`--motion` must be one of {', '.join(MOTIONS)}, got {motion!r}")
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not quiet:
            print(f"synth: {done}/{total} clips of {frames} frames", file=sys.stderr, flush=True)

    _writing(out, lambda: write_sequences(out, n, frames, seed0=seed, size=hw, kind=kind, motion=motion,
                                          progress=progress))
    if not quiet:
        print(f"synth: wrote {n} clips to {out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
