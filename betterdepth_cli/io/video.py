"""Videos decoded as a stream through imageio-ffmpeg (its bundled ffmpeg binary).

Memory stays bounded whatever the length: frames come one at a time from an
ffmpeg pipe. Frames are indexed from 0 in decoding order; ffmpeg's
``-fps_mode passthrough`` keeps every decoded frame once (no duplication or
dropping to a constant rate), and rotation metadata is applied by ffmpeg, so
``size`` is the upright size.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from betterdepth_cli.core.types import InputDataError
from betterdepth_cli.io.files import check_file
from betterdepth_cli.io.images import check_pixels

VIDEO_EXTENSIONS = ("mp4", "mov", "mkv", "avi", "webm")
_READ_PARAMS = ["-map", "0:v:0", "-fps_mode", "passthrough"]
_FRAME_RE = re.compile(rb"frame=\s*(\d+)")


@dataclass(frozen=True)
class VideoInfo:
    """nframes: frames in the first video stream; width, height: upright frame size."""

    nframes: int
    fps: float
    width: int
    height: int


def _ffmpeg_reason(text: str) -> str:
    """The most telling line of an ffmpeg error log."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for needle in ("matches no streams", "Invalid data", "moov atom not found", "No such file", "Permission denied"):
        for ln in lines:
            if needle in ln:
                return "no video stream" if needle == "matches no streams" else ln.split("] ")[-1]
    return lines[-1] if lines else "ffmpeg failed"


def count_frames(path: str | os.PathLike) -> int:
    """Frames in the first video stream, counted by remuxing packets (no decoding: fast)."""
    import imageio_ffmpeg

    path = Path(path)
    check_file(path)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path),
           "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]  # fmt: skip
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    log = proc.stderr
    if proc.returncode != 0:
        reason = _ffmpeg_reason(log.decode(errors="replace"))
        if reason == "no video stream":
            raise InputDataError(f"{path}: video has no frames (no video stream in the file)")
        raise InputDataError(f"{path}: not a readable video ({reason})")
    counts = _FRAME_RE.findall(log)
    if counts:
        return int(counts[-1])
    nframes, _ = imageio_ffmpeg.count_frames_and_secs(str(path))  # decodes; slower but exact
    return int(nframes or 0)


def _open(path: Path) -> tuple[Iterator[bytes], dict]:
    import logging

    import imageio_ffmpeg

    # its "frame size for reading is different from the source frame size" is a rotated video's, which
    # ffmpeg turns upright as we want: not a line for the user's stderr
    logging.getLogger("imageio_ffmpeg").setLevel(logging.ERROR)
    gen = imageio_ffmpeg.read_frames(str(path), output_params=list(_READ_PARAMS))
    try:
        meta = next(gen)
    except (OSError, RuntimeError, StopIteration, IndexError, AttributeError) as exc:
        gen.close()
        raise InputDataError(f"{path}: not a readable video ({_ffmpeg_reason(str(exc))})") from exc
    return gen, meta


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, rate and upright size of a video, without decoding frames."""
    path = Path(path)
    nframes = count_frames(path)
    gen, meta = _open(path)
    gen.close()
    width, height = meta["size"]
    return VideoInfo(nframes=nframes, fps=float(meta.get("fps") or 0.0), width=int(width), height=int(height))


def iter_video_frames(path: str | os.PathLike, indices: Collection[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame uint8 (H,W,3) RGB)`` in order, one frame in memory at a time.

    ``indices``: the frames wanted (0-based); others are decoded and skipped, and
    decoding stops after the last wanted one. Raises InputDataError when the
    video ends before a wanted frame.
    """
    path = Path(path)
    check_file(path)
    wanted = None if indices is None else set(indices)
    last = max(wanted) if wanted else None
    if wanted is not None and not wanted:
        return
    gen, meta = _open(path)
    width, height = meta["size"]
    try:
        check_pixels(path, int(width), int(height))  # --max-pixels holds for a video's frames too
    except InputDataError:
        gen.close()
        raise
    index = -1
    try:
        for index, raw in enumerate(gen):
            if wanted is None or index in wanted:
                yield index, np.frombuffer(raw, np.uint8).reshape(height, width, 3)
            if last is not None and index >= last:
                return
    except RuntimeError as exc:
        raise InputDataError(f"{path}: video data ended mid-frame at frame {index + 1}") from exc
    finally:
        gen.close()
    if last is not None and index < last:
        raise InputDataError(f"{path}: video ended after {index + 1} frames, frame {last} requested")
