"""Helpers of the `betterdepth refine` CLI tests: small inputs and a runner (imported by the test modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from betterdepth_cli.cli.app import app

REPO = Path(__file__).resolve().parent.parent


def write_png(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, rng.random((h, w)) * 255], -1).astype(np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def write_mp4(path: Path, n: int = 3, h: int = 48, w: int = 64) -> Path:
    import imageio.v2 as iio

    writer = iio.get_writer(str(path), fps=10, codec="libx264", macro_block_size=1, ffmpeg_log_level="error")
    for i in range(n):
        rng = np.random.default_rng(i)
        frame = np.full((h, w, 3), 40 * i, np.uint8)
        frame[:, : w // 2] = (rng.random((h, w // 2, 3)) * 255).astype(np.uint8)
        writer.append_data(frame)
    writer.close()
    return path


def refine(args, input: str | None = None):
    result = CliRunner().invoke(app, ["refine", *[str(a) for a in args]], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def pngs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))
