"""What ``refine`` reads: entries (one image or frame and its output path) grouped in sources
(an image, an image sequence, a video), and the frame and shard specs that select them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from betterdepth_cli.core.types import InputDataError, UsageError
from betterdepth_cli.io.images import read_image, to_float_rgb


_FRAME_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?:x(\d+))?)?$")


def parse_frames(text: str) -> list[int]:
    """``"1001-1005,1010,1020-1030x5"`` -> sorted unique frame numbers.

    Items are ``N``, ``A-B`` (inclusive) or ``A-BxS`` (every S-th from A).
    """
    if not isinstance(text, str) or not text.strip():
        raise UsageError("`frames` must be like 1001-1100, 1001-1100x2 or 1,5,7; got an empty value")
    frames: set[int] = set()
    for item in text.replace(" ", "").split(","):
        match = _FRAME_ITEM.match(item)
        if not match:
            raise UsageError(f"`frames` must be like 1001-1100, 1001-1100x2 or 1,5,7; got {item!r}")
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) is not None else start
        step = int(match.group(3)) if match.group(3) is not None else 1
        if end < start:
            raise UsageError(f"`frames`: range {item!r} ends before it starts")
        if step < 1:
            raise UsageError(f"`frames`: step in {item!r} must be at least 1")
        frames.update(range(start, end + 1, step))
    return sorted(frames)


def format_frames(frames: Iterable[int]) -> str:
    """Sorted frame numbers as compact ranges: ``[1, 2, 3, 7]`` -> ``"1-3,7"``."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(set(frames)):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``: shard i of n, 1-based."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise UsageError(f"`shard` must be i/n (for example 1/4), got {text!r}")
    i, n = int(match.group(1)), int(match.group(2))
    _check_shard(i, n)
    return i, n


def _check_shard(i: int, n: int) -> None:
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"`shard` must be i/n with 1 <= i <= n, got {i}/{n}")


def shard(items: Sequence[Any], i: int, n: int, key=None) -> list[Any]:
    """Shard ``i`` of ``n`` (1-based): sort by a stable key, take every n-th from the (i-1)-th.

    The union over i = 1..n is every item exactly once. For Sources the key is
    ``group``, so a shot (sequence or video) stays whole on one machine and
    single images are spread one by one. Deterministic across machines.
    """
    _check_shard(i, n)
    key = key or (lambda item: getattr(item, "group", str(item)))
    return sorted(items, key=key)[i - 1 :: n]


@dataclass(frozen=True)
class Entry:
    """One image to process.

    source: path of the file to read (the video for video frames); frame: the
    sequence frame number, the 0-based video frame index, or None; relpath:
    output base without extension.
    """

    source: str
    frame: int | None
    relpath: PurePosixPath

    @property
    def key(self) -> str:
        """The name precomputed maps (``file:``) are found by: the relpath as text (a map at the same
        relative path wins; else one of the same file stem)."""
        return self.relpath.as_posix()


OnError = Callable[["Entry", Exception], None]


def _read_files(entries: Iterable["Entry"], on_error: OnError | None) -> Iterator[tuple["Entry", np.ndarray]]:
    """Read each entry's file; one that cannot be read goes to ``on_error`` and is left out (raised without)."""
    for entry in entries:
        try:
            image = read_image(entry.source)
        except InputDataError as exc:
            if on_error is None:
                raise
            on_error(entry, exc)
            continue
        yield entry, image


class Source:
    """One group of inputs: a single image, an image sequence or a video."""

    kind: str = ""
    group: str = ""
    missing: Sequence[int] = ()  # requested frames that do not exist (sequences, videos)

    @property
    def is_shot(self) -> bool:
        return self.kind in ("sequence", "video")

    @property
    def where(self) -> str:
        """The input as a user named it, for messages (a video's file, a sequence's pattern in its folder)."""
        return self.group

    def entries(self) -> list[Entry]:
        raise NotImplementedError

    def read(self, entries: Iterable[Entry] | None = None, on_error: OnError | None = None
             ) -> Iterator[tuple[Entry, np.ndarray]]:
        """Yield ``(entry, image float32 (H,W,3) in [0,1])`` for ``entries`` (default: all), in order.
        ``on_error(entry, exc)``: called for a file that cannot be read, which is then left out (the
        others are still read); ``None`` raises the error."""
        return _read_files(self._own(entries), on_error)

    def lead_in(self, on_error: OnError | None = None) -> Iterator[tuple[Entry, np.ndarray]]:
        """A shot's frames before its first selected one (a ``frames`` chunk that starts later), read
        like :meth:`read`: what a whole-shot run saw first. Nothing for single images."""
        return iter(())

    @property
    def is_chunk(self) -> bool:
        """Whether ``frames`` selected part of a shot (not every frame it has)."""
        return False

    def _own(self, entries: Iterable[Entry] | None) -> list[Entry]:
        mine = self.entries()
        if entries is None:
            return mine
        known = set(mine)
        chosen = list(entries)
        for entry in chosen:
            if entry not in known:
                raise UsageError(f"entry {entry.relpath} does not belong to {self.group}")
        return chosen

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.group!r})"


@dataclass(repr=False, eq=False)
class ImageSource(Source):
    path: Path
    relpath: PurePosixPath
    kind: str = "image"

    def __post_init__(self) -> None:
        self.group = str(self.relpath)

    def entries(self) -> list[Entry]:
        return [Entry(str(self.path), None, self.relpath)]


@dataclass(repr=False, eq=False)
class SequenceSource(Source):
    """Frames of one shot: ``files`` maps frame number -> path; ``selected`` the frames to process.

    ``missing``: frames requested by ``frames`` that are not on disk (for a warning).
    """

    pattern: str
    reldir: PurePosixPath
    files: dict[int, Path]
    selected: list[int]
    missing: list[int] = field(default_factory=list)
    kind: str = "sequence"

    def __post_init__(self) -> None:
        self.group = str(self.reldir / self.pattern)

    def entries(self) -> list[Entry]:
        return [self._entry(n) for n in self.selected]

    def _entry(self, n: int) -> Entry:
        return Entry(str(self.files[n]), n, self.reldir / self.files[n].stem)

    @property
    def is_chunk(self) -> bool:
        return set(self.selected) != set(self.files)

    def select(self, frames: list[int]) -> None:
        """Refine only ``frames`` (a resumed shot's rest); the frames before them lead in."""
        keep = set(frames)
        self.selected = [n for n in self.selected if n in keep]

    @property
    def where(self) -> str:
        folder = next(iter(self.files.values())).parent if self.files else self.reldir
        return str(Path(folder) / self.pattern)

    def lead_in(self, on_error: OnError | None = None) -> Iterator[tuple[Entry, np.ndarray]]:
        first = min(self.selected, default=None)
        return _read_files([self._entry(n) for n in sorted(self.files) if first is not None and n < first], on_error)


@dataclass(repr=False, eq=False)
class VideoSource(Source):
    """A video decoded as a stream; frames are 0-based indices; ``frames`` filters them."""

    path: Path
    relbase: PurePosixPath
    frames: list[int] | None = None
    kind: str = "video"
    _nframes: int | None = None
    missing: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.group = f"{self.relbase}/"

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def nframes(self) -> int:
        """Frames in the video (counted once, without decoding); InputDataError when 0."""
        if self._nframes is None:
            from betterdepth_cli.io.video import count_frames

            count = count_frames(self.path)
            if count <= 0:
                raise InputDataError(f"{self.path}: video has no frames")
            self._nframes = count
        return self._nframes

    def _indices(self) -> list[int]:
        n = self.nframes
        if self.frames is None:
            return list(range(n))
        self.missing = [f for f in self.frames if f >= n]
        return [f for f in self.frames if f < n]

    def entries(self) -> list[Entry]:
        return [self._entry(i) for i in self._indices()]

    def _entry(self, i: int) -> Entry:
        name = self.relbase.name
        width = max(4, len(str(self.nframes - 1)))
        return Entry(str(self.path), i, self.relbase / f"{name}.{i:0{width}d}")

    @property
    def is_chunk(self) -> bool:
        return self.frames is not None and len(self._indices()) < self.nframes

    def select(self, frames: list[int]) -> None:
        """Refine only ``frames`` (a resumed shot's rest); the frames before them lead in."""
        keep = set(frames)
        self.frames = [f for f in self._indices() if f in keep]

    def lead_in(self, on_error: OnError | None = None) -> Iterator[tuple[Entry, np.ndarray]]:
        """A video's frames before the first selected one (a broken stream raises: no frame after it decodes)."""
        from betterdepth_cli.io.video import iter_video_frames

        first = min(self._indices(), default=0)
        if first == 0:
            return
        for index, frame in iter_video_frames(self.path, range(first)):
            yield self._entry(index), to_float_rgb(frame, self.path)

    def read(self, entries: Iterable[Entry] | None = None, on_error: OnError | None = None
             ) -> Iterator[tuple[Entry, np.ndarray]]:
        """Decode the video once as a stream, yielding the requested frames in frame order. A broken
        stream raises with or without ``on_error``: no frame after it decodes."""
        from betterdepth_cli.io.video import iter_video_frames

        by_frame = {e.frame: e for e in self._own(entries)}
        for index, frame in iter_video_frames(self.path, by_frame.keys()):
            yield by_frame[index], to_float_rgb(frame, self.path)
