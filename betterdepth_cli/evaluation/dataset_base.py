"""What every evaluation loader shares: samples, roots (a folder or a .tar read member by member),
split files, and the base loader (see :mod:`.datasets` for the layouts)."""


from __future__ import annotations

import math
import os
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np

from betterdepth_cli.core.types import InputDataError, NoInputError, UsageError
from betterdepth_cli.evaluation import protocol as P
from betterdepth_cli.io.images import decode_rgb, decode_uint16_map
from betterdepth_cli.io.files import safe_parts

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")



# --------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One evaluation sample.

    rgb: (H,W,3) float32 in [0,1]; gt: (H,W) float32 depth (``gt_kind`` "depth")
    or disparity ("disparity", depth = ``disparity_scale / gt``); valid: (H,W) bool
    with range and crop applied.
    """

    id: str
    rgb: np.ndarray
    gt: np.ndarray
    gt_kind: str
    valid: np.ndarray
    disparity_scale: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def depth(self) -> np.ndarray:
        """Ground truth as (H,W) float64 depth (0 where a disparity is not positive)."""
        return P.gt_to_depth(self.gt, self.gt_kind, self.disparity_scale)


@dataclass(frozen=True)
class Entry:
    """A sample to load: its id and its files (relative to the root).

    ``problem`` (a one-line reason naming the file) marks a sample found without all its files:
    it is never loaded (an error, or skipped and counted with ``skip_incomplete``)."""

    id: str
    files: tuple[str, ...]
    problem: str | None = None


def natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def path_stem(rel: str) -> str:
    return str(PurePosixPath(rel).with_suffix(""))


def in_order(entries: list[Entry], lacking: list[Entry]) -> list[Entry]:
    """The samples found and those lacking a file in one natural order of their images' paths
    (the order discovery gives the samples found); ``entries`` as they are when nothing lacks."""
    if not lacking:
        return list(entries)
    return sorted([*entries, *lacking], key=lambda e: natural_key(path_stem(e.files[0])))


# --------------------------------------------------------------------------- roots


class DataRoot:
    """A dataset folder or a ``.tar`` archive, read file by file with relative POSIX paths."""

    def __init__(self, path: str | os.PathLike, dataset: str = "dataset"):
        self.path = Path(path)
        self.dataset = dataset
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] | None = None
        self._files: list[str] | None = None
        if not self.path.exists():
            raise NoInputError(f"{dataset}: data root {self.path} does not exist")
        if self.path.is_file():
            if not tarfile.is_tarfile(self.path):
                raise InputDataError(f"{dataset}: data root {self.path} is neither a folder nor a tar archive")
            try:
                self._tar = tarfile.open(self.path)
                self._members = {
                    self._norm(m.name): m for m in self._tar.getmembers() if m.isfile()
                }
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise InputDataError(f"{dataset}: cannot read tar archive {self.path}: {exc}") from None
        self._prefix: str | None = None

    @staticmethod
    def _norm(name: str) -> str:
        """A member name as a relative POSIX path that stays inside the root (:func:`safe_parts`)."""
        return "/".join(safe_parts(name))

    @property
    def is_tar(self) -> bool:
        return self._tar is not None

    def files(self) -> list[str]:
        """Every file under the root, relative, sorted naturally (cached)."""
        if self._files is None:
            if self._members is not None:
                names = list(self._members)
            else:
                names = []
                for dirpath, dirnames, filenames in os.walk(self.path):
                    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                    rel = os.path.relpath(dirpath, self.path)
                    for f in filenames:
                        names.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
            self._files = sorted(names, key=natural_key)
        return self._files

    def _lookup(self, rel: str) -> str | None:
        rel = self._norm(rel)
        if self._members is not None:
            if rel in self._members:
                return rel
            if self._prefix is None:
                tops = {n.split("/", 1)[0] for n in self._members if "/" in n}
                self._prefix = tops.pop() + "/" if len(tops) == 1 else ""
            if self._prefix and self._prefix + rel in self._members:
                return self._prefix + rel
            return None
        return rel if (self.path / rel).is_file() else None

    def exists(self, rel: str) -> bool:
        return self._lookup(rel) is not None

    def where(self, rel: str) -> str:
        """Where a file is expected, for messages: an absolute path or ``archive.tar:member``."""
        return f"{self.path}:{self._norm(rel)}" if self.is_tar else str(self.path / rel)

    def read(self, rel: str) -> bytes:
        found = self._lookup(rel)
        if found is None:
            raise InputDataError(f"{self.dataset}: missing file, expected {self.where(rel)}")
        try:
            if self._tar is not None:
                fh = self._tar.extractfile(self._members[found])
                assert fh is not None  # members are regular files
                return fh.read()
            return (self.path / found).read_bytes()
        except (OSError, tarfile.TarError) as exc:
            raise InputDataError(f"{self.dataset}: cannot read {self.where(rel)}: {exc}") from None

    def local_path(self, rel: str) -> tuple[str, bool]:
        """A filesystem path for libraries that need one: (path, is_temporary)."""
        if not self.is_tar:
            if not self.exists(rel):
                raise InputDataError(f"{self.dataset}: missing file, expected {self.where(rel)}")
            return str(self.path / rel), False
        data = self.read(rel)
        fd, tmp = tempfile.mkstemp(suffix=PurePosixPath(rel).suffix)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return tmp, True

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None


# --------------------------------------------------------------------------- checks


def check_same_size(rgb: np.ndarray, gt: np.ndarray, rgb_where: str, gt_where: str) -> None:
    if rgb.shape[:2] != gt.shape[:2]:
        raise InputDataError(
            f"{gt_where}: ground truth is {gt.shape[1]}x{gt.shape[0]} but image {rgb_where} is "
            f"{rgb.shape[1]}x{rgb.shape[0]}"
        )


# --------------------------------------------------------------------------- base loader


class DatasetLoader:
    """Base of the loaders: entries from a split file or discovery, lazy loading.

    Subclasses set ``name``, ``min_depth``, ``max_depth``, ``layout`` (the
    expected layout, for errors), ``options`` (name -> default) and implement
    :meth:`discover`, :meth:`entry_from_line` and :meth:`load`.
    """

    name = "dataset"
    min_depth = 0.0
    max_depth = math.inf
    gt_kind = "depth"
    layout = ""
    options: dict[str, Any] = {}
    choices: dict[str, tuple] = {}
    #: an image found without its ground truth is an error (layouts where every image has one)
    incomplete_is_error = False

    def __init__(
        self,
        root: str | os.PathLike,
        split_file: str | os.PathLike | None = None,
        limit: int | None = None,
        skip_incomplete: bool = False,
        **options: Any,
    ):
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise UsageError(f"`limit` must be a positive integer, got {limit!r}")
        self.opts = self._check_options(options)
        self.root = DataRoot(root, self.name)
        self.split_file = None if split_file is None else Path(split_file)
        self._lacking: list[Entry] = []  # images discovered without all their files (:meth:`_lacks`)
        found = self._entries_from_split(self.split_file) if self.split_file else self.discover()
        candidates = in_order(found, self._lacking)
        #: the first ``limit`` samples found, in order, those lacking a file included (marked ``problem``)
        self.candidates: list[Entry] = candidates[:limit] if limit else candidates
        #: the samples among them found without all their files: "<missing file>: missing (needed by <image>)"
        self.incomplete: list[str] = [e.problem for e in self.candidates if e.problem]
        if self.incomplete and not skip_incomplete:
            more = f" (and {len(self.incomplete) - 1} more incomplete)" if len(self.incomplete) > 1 else ""
            raise InputDataError(f"{self.name}: {self.incomplete[0]}{more}; use --continue-on-error to skip them")
        if not any(e.problem is None for e in candidates):
            where = f"listed in {self.split_file}" if self.split_file else f"found in {self.root.path}"
            raise NoInputError(f"{self.name}: no samples {where}; expected {self.layout}")
        #: the samples to load (the candidates with all their files)
        self.entries: list[Entry] = [e for e in self.candidates if e.problem is None]

    def _check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.options)
        for key, value in options.items():
            if key not in self.options:
                valid = ", ".join(self.options) or "none"
                raise UsageError(f"{self.name}: unknown dataset option {key!r} (valid: {valid})")
            default = self.options[key]
            if isinstance(default, bool) and isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise UsageError(f"{self.name}: option {key!r} must be true or false, got {value!r}")
                value = low in ("true", "1", "yes")
            if key in self.choices and value not in self.choices[key]:
                raise UsageError(
                    f"{self.name}: option {key!r} must be one of {', '.join(self.choices[key])}, got {value!r}"
                )
            out[key] = value
        return out

    def _entries_from_split(self, split: Path) -> list[Entry]:
        if not split.is_file():
            raise NoInputError(f"{self.name}: split file {split} does not exist")
        entries = []
        try:
            lines = split.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputDataError(f"{self.name}: cannot read split file {split}: {exc}") from None
        for n, line in enumerate(lines, 1):
            cols = line.split("#", 1)[0].split()
            if not cols:
                continue
            entry = self.entry_from_line(cols)
            if entry is None:
                continue
            missing = next((rel for rel in entry.files if not self.root.exists(rel)), None)
            if missing is not None:  # an error, or skipped and counted (skip_incomplete)
                problem = f"{missing} (line {n} of {split}) not found, expected {self.root.where(missing)}"
                entry = Entry(entry.id, entry.files, problem=problem)
            entries.append(entry)
        return entries

    def _lacks(self, image_rel: str, missing_rel: str, sample_id: str | None = None) -> None:
        """Note an image discovered without one of its files (``missing_rel``): an error, or skipped and
        counted with ``skip_incomplete``; it keeps its place among the samples (``limit``)."""
        problem = f"{self.root.where(missing_rel)}: missing (needed by {image_rel})"
        self._lacking.append(Entry(sample_id or path_stem(image_rel), (image_rel,), problem=problem))

    # -- to implement
    def discover(self) -> list[Entry]:
        raise NotImplementedError

    def entry_from_line(self, cols: list[str]) -> Entry | None:
        raise NotImplementedError

    def load(self, entry: Entry) -> Sample:
        raise NotImplementedError

    # -- shared
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Sample]:
        for entry in self.entries:
            yield self.load(entry)

    def read_rgb(self, rel: str) -> np.ndarray:
        """The image ``rel`` as float32 (H,W,3) RGB in [0,1]."""
        return decode_rgb(self.root.read(rel), self.root.where(rel))

    def read_png16_sample(
        self, entry: Entry, divisor: float, what: str, same_size: bool = True
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """The image and the 16-bit PNG ground truth of ``entry.files[:2]``.

        Returns (rgb (H,W,3) float32 in [0,1], depth (H,W) float32 = codes / ``divisor``,
        where the ground truth is, for messages). ``what`` names the codes in errors;
        with ``same_size`` a ground truth of another size than the image is an error.
        """
        rgb_rel, gt_rel = entry.files[:2]
        rgb = self.read_rgb(rgb_rel)
        where = self.root.where(gt_rel)
        codes = decode_uint16_map(self.root.read(gt_rel), where, what)
        if same_size:
            check_same_size(rgb, codes, self.root.where(rgb_rel), where)
        return rgb, codes.astype(np.float32) / divisor, where

    def range_valid(self, depth: np.ndarray) -> np.ndarray:
        return P.range_mask(depth, self.min_depth, self.max_depth)

    def describe(self) -> dict[str, Any]:
        """What the results file records about the data."""
        return {
            "name": self.name,
            "root": str(self.root.path),
            "split_file": None if self.split_file is None else str(self.split_file),
            "samples": len(self),
            "min_depth": self.min_depth,
            "max_depth": self.max_depth if math.isfinite(self.max_depth) else "inf",
            "options": dict(self.opts),
            "incomplete": list(self.incomplete),  # samples lacking a file (eval adds those it could not use)
        }

    def _pair_by_pattern(self, rgb_re: str, gt_fmt) -> list[Entry]:
        """Entries for every file matching ``rgb_re`` whose ground truth ``gt_fmt(match)`` exists."""
        files = self.root.files()
        present = set(files)
        rx = re.compile(rgb_re)
        out = []
        for rel in files:
            m = rx.fullmatch(rel)
            if not m:
                continue
            gts = gt_fmt(m)
            gts = (gts,) if isinstance(gts, str) else tuple(gts)
            if all(g in present for g in gts):
                out.append(Entry(path_stem(rel), (rel, *gts)))
            elif self.incomplete_is_error:
                self._lacks(rel, next(g for g in gts if g not in present))
        return out
