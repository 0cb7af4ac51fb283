"""Evaluation datasets: a plain registry of loaders that yield RGB + ground truth.

``DATASETS`` maps a name to a loader class; :func:`get_dataset` builds one::

    ds = get_dataset("nyuv2", "/data/nyuv2", split_file=None, limit=None)
    for s in ds:            # Sample(id, rgb (H,W,3) float32 [0,1], gt (H,W) float32, gt_kind, valid (H,W) bool)
        depth = s.depth()   # ground truth as depth (metres where the dataset says so)

Every loader reads a folder or a ``.tar`` archive (members are read one by one,
nothing is extracted to disk; compressed tars work but are slow to seek). The
samples come from ``split_file`` when given (one sample per line, whitespace
separated paths relative to the root, the RGB first and the ground truth
second, as in Marigold's ``data_split/*`` lists; blank lines and ``#`` comments
are skipped), otherwise from the files found under the root, in natural order.
``limit`` keeps the first N. ``valid`` already holds the dataset's depth range
(strict bounds, Marigold's) and evaluation crop.

Layouts (Marigold's evaluation packs and the original releases):

- ``nyuv2`` (1e-3..10 m, Eigen crop): ``<scene>/rgb_XXXX.png`` + ``depth_XXXX.png``
  (Marigold; raw depth, ``filled_XXXX.png`` ignored as in Marigold's eval) or
  flat ``image_<i>.png`` + ``depth_<i>.png``; depth uint16 millimetres.
  Option ``eigen_crop`` (true).
- ``kitti`` (1e-5..80 m): ``<date>/<drive>/image_02/data/<frame>.png`` +
  ``<drive>/proj_depth/groundtruth/image_02/<frame>.png`` (uint16 / 256). KITTI
  benchmark crop 352x1216, then the evaluation crop: option ``crop`` =
  eigen | garg | none (eigen). Without a split file every frame with ground
  truth is used; pass Marigold's ``eigen_test_files_with_gt.txt`` for the
  652-image Eigen test split.
- ``eth3d`` (1e-5..inf): ``.../<scene>/images/dslr_images/<name>.JPG`` +
  ``.../<scene>/ground_truth_depth/dslr_images/<name>.JPG``, the latter raw
  float32 of the image's size, inf = no data.
- ``scannet`` (1e-3..10 m): ``<scene>/color/<frame>.jpg`` + ``<scene>/depth/<frame>.png``
  (uint16 mm). A colour image of another size is resized to the depth's.
- ``diode`` (0.6..350 m): ``<name>.png`` + ``<name>_depth.npy`` + ``<name>_depth_mask.npy``;
  option ``subset`` = all | indoor | outdoor (by the ``indoors`` / ``outdoor`` folders).
- ``middlebury``: 2005/2006 ``<scene>/view1.png`` + ``disp1.png`` (8-bit,
  0 = unknown; the value is the full-resolution disparity, i.e. twice the
  half-size disparity) + ``dmin.txt``: ground-truth disparity ``value + dmin``,
  depth = 3740 px x 0.160 m / disparity. 2014 ``<scene>/im0.png`` +
  ``disp0GT.pfm`` (or ``disp0.pfm``; inf = unknown) + ``calib.txt``: disparity
  ``d + doffs``, depth = f x baseline / disparity. ``gt_kind`` is "disparity".
- ``folder``: any RGB + depth/disparity described by a ``dataset.toml`` at the
  root (see :class:`FolderDataset`).
"""

from __future__ import annotations

import io
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
from betterdepth_cli.io.images import decode_pfm, decode_raster, decode_rgb, decode_uint16_map, load_npy
from betterdepth_cli.io.outputs import safe_parts

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
    """A sample to load: its id and its files (relative to the root)."""

    id: str
    files: tuple[str, ...]


def natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _stem(rel: str) -> str:
    return str(PurePosixPath(rel).with_suffix(""))


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


def _same_size(rgb: np.ndarray, gt: np.ndarray, rgb_where: str, gt_where: str) -> None:
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
        #: samples found without all their files: "<missing file>: missing (needed by <image>)"
        self.incomplete: list[str] = []
        entries = self._entries_from_split(self.split_file) if self.split_file else self.discover()
        if self.incomplete and not skip_incomplete:
            more = f" (and {len(self.incomplete) - 1} more incomplete)" if len(self.incomplete) > 1 else ""
            raise InputDataError(f"{self.name}: {self.incomplete[0]}{more}; use --continue-on-error to skip them")
        if not entries:
            where = f"listed in {self.split_file}" if self.split_file else f"found in {self.root.path}"
            raise NoInputError(f"{self.name}: no samples {where}; expected {self.layout}")
        self.entries: list[Entry] = entries[:limit] if limit else entries

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
            for rel in entry.files:
                if not self.root.exists(rel):
                    raise InputDataError(
                        f"{self.name}: {rel} (line {n} of {split}) not found, expected {self.root.where(rel)}"
                    )
            entries.append(entry)
        return entries

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
            _same_size(rgb, codes, self.root.where(rgb_rel), where)
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
            "incomplete": list(self.incomplete),  # samples skipped for a missing file (--continue-on-error)
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
                out.append(Entry(_stem(rel), (rel, *gts)))
            elif self.incomplete_is_error:
                missing = next(g for g in gts if g not in present)
                self.incomplete.append(f"{self.root.where(missing)}: missing (needed by {rel})")
        return out


# --------------------------------------------------------------------------- NYUv2


class NYUv2Dataset(DatasetLoader):
    name = "nyuv2"
    incomplete_is_error = True
    min_depth = 1e-3
    max_depth = 10.0
    layout = (
        "Marigold's NYUv2 pack (<scene>/rgb_XXXX.png + depth_XXXX.png, uint16 mm) "
        "or flat image_<i>.png + depth_<i>.png"
    )
    options = {"eigen_crop": True}

    def discover(self) -> list[Entry]:
        a = self._pair_by_pattern(r"((?:.*/)?)rgb_(\d+)\.png", lambda m: f"{m[1]}depth_{m[2]}.png")
        b = self._pair_by_pattern(r"((?:.*/)?)image_(\d+)\.png", lambda m: f"{m[1]}depth_{m[2]}.png")
        return sorted(a + b, key=lambda e: natural_key(e.id))

    def entry_from_line(self, cols: list[str]) -> Entry:
        rgb = cols[0]
        if len(cols) > 1:
            gt = cols[1]
        else:
            p = PurePosixPath(rgb)
            gt = str(p.with_name(re.sub(r"^(rgb|image)_", "depth_", p.name)))
        return Entry(_stem(rgb), (rgb, gt))

    def load(self, entry: Entry) -> Sample:
        rgb, depth, _ = self.read_png16_sample(entry, 1000.0, "depth in millimetres")
        valid = self.range_valid(depth)
        if self.opts["eigen_crop"]:
            valid &= P.nyu_eigen_mask(depth.shape)
        return Sample(entry.id, rgb, depth, "depth", valid, meta={"files": list(entry.files)})


# --------------------------------------------------------------------------- KITTI


class KITTIDataset(DatasetLoader):
    name = "kitti"
    min_depth = 1e-5
    max_depth = 80.0
    layout = (
        "<date>/<drive>/image_02/data/<frame>.png + <drive>/proj_depth/groundtruth/image_02/<frame>.png "
        "(uint16 depth x 256), e.g. Marigold's kitti_eigen_split_test.tar with eigen_test_files_with_gt.txt"
    )
    options = {"crop": "eigen", "kb_crop": True}
    choices = {"crop": P.KITTI_CROPS}

    _GT = re.compile(r"(?:.*/)?(\d{4}_\d\d_\d\d)(_drive_\d{4}_sync)/proj_depth/groundtruth/(image_0[23])/(\d+)\.png")

    def discover(self) -> list[Entry]:
        files = self.root.files()
        images: dict[str, str] = {}
        img_rx = re.compile(r"(?:.*/)?(\d{4}_\d\d_\d\d_drive_\d{4}_sync)/(image_0[23])/data/(\d+)\.png")
        for rel in files:
            m = img_rx.fullmatch(rel)
            if m:
                images.setdefault(f"{m[1]}/{m[2]}/{m[3]}", rel)
        out = []
        for rel in files:
            m = self._GT.fullmatch(rel)
            if m:
                img = images.get(f"{m[1]}{m[2]}/{m[3]}/{m[4]}")
                if img is not None:
                    out.append(Entry(_stem(img), (img, rel)))
        return out

    def entry_from_line(self, cols: list[str]) -> Entry | None:
        if len(cols) < 2:
            raise InputDataError(f"{self.name}: split lines need an image and a ground-truth path, got {cols!r}")
        if cols[1] == "None":
            return None
        return Entry(_stem(cols[0]), (cols[0], cols[1]))

    def load(self, entry: Entry) -> Sample:
        rgb, depth, where = self.read_png16_sample(entry, 256.0, "depth x 256")
        if self.opts["kb_crop"]:
            try:
                rgb, depth = P.kb_crop(rgb), P.kb_crop(depth)
            except ValueError as exc:
                raise InputDataError(f"{where}: {exc}") from None
        valid = self.range_valid(depth) & P.kitti_eval_mask(depth.shape, self.opts["crop"])
        return Sample(entry.id, np.ascontiguousarray(rgb), np.ascontiguousarray(depth), "depth", valid,
                      meta={"files": list(entry.files)})


# --------------------------------------------------------------------------- ETH3D


class ETH3DDataset(DatasetLoader):
    name = "eth3d"
    min_depth = 1e-5
    max_depth = math.inf
    layout = (
        "<scene>/images/dslr_images/<name>.JPG + <scene>/ground_truth_depth/dslr_images/<name>.JPG "
        "(raw float32 of the image size, inf = no data), e.g. Marigold's eth3d.tar"
    )

    def discover(self) -> list[Entry]:
        files = self.root.files()
        images: dict[tuple[str, str], str] = {}
        for rel in files:
            m = re.fullmatch(r"(?:.*/)?([^/]+)/images/dslr_images/([^/]+)", rel)
            if m:
                images.setdefault((m[1], m[2]), rel)
        out = []
        for rel in files:
            m = re.fullmatch(r"(?:.*/)?([^/]+)/ground_truth_depth/dslr_images/([^/]+)", rel)
            if m and (m[1], m[2]) in images:
                img = images[(m[1], m[2])]
                out.append(Entry(_stem(img), (img, rel)))
        return out

    def entry_from_line(self, cols: list[str]) -> Entry:
        if len(cols) < 2:
            raise InputDataError(f"{self.name}: split lines need an image and a depth path, got {cols!r}")
        return Entry(_stem(cols[0]), (cols[0], cols[1]))

    def load(self, entry: Entry) -> Sample:
        rgb_rel, gt_rel = entry.files[:2]
        rgb = self.read_rgb(rgb_rel)
        h, w = rgb.shape[:2]
        data = self.root.read(gt_rel)
        if len(data) != h * w * 4:
            raise InputDataError(
                f"{self.root.where(gt_rel)}: expected {h * w * 4} bytes of raw float32 depth for a "
                f"{w}x{h} image, got {len(data)}"
            )
        depth = np.frombuffer(data, dtype="<f4").reshape(h, w).copy()
        depth[~np.isfinite(depth)] = 0.0
        return Sample(entry.id, rgb, depth, "depth", self.range_valid(depth), meta={"files": list(entry.files)})


# --------------------------------------------------------------------------- ScanNet


class ScanNetDataset(DatasetLoader):
    name = "scannet"
    min_depth = 1e-3
    max_depth = 10.0
    layout = "<scene>/color/<frame>.jpg + <scene>/depth/<frame>.png (uint16 mm), e.g. Marigold's scannet_val_sampled_800_1.tar"

    def discover(self) -> list[Entry]:
        return self._pair_by_pattern(r"((?:.*/)?[^/]+)/color/(\d+)\.jpg", lambda m: f"{m[1]}/depth/{m[2]}.png")

    def entry_from_line(self, cols: list[str]) -> Entry:
        rgb = cols[0]
        gt = cols[1] if len(cols) > 1 else re.sub(r"/color/(\d+)\.jpg$", r"/depth/\1.png", rgb)
        return Entry(_stem(rgb), (rgb, gt))

    def load(self, entry: Entry) -> Sample:
        import cv2

        rgb, depth, _ = self.read_png16_sample(entry, 1000.0, "depth in millimetres", same_size=False)
        meta: dict[str, Any] = {"files": list(entry.files)}
        if rgb.shape[:2] != depth.shape:
            meta["rgb_resized_from"] = [rgb.shape[1], rgb.shape[0]]
            rgb = cv2.resize(rgb, (depth.shape[1], depth.shape[0]), interpolation=cv2.INTER_AREA)
        return Sample(entry.id, rgb, depth, "depth", self.range_valid(depth), meta=meta)


# --------------------------------------------------------------------------- DIODE


class DIODEDataset(DatasetLoader):
    name = "diode"
    min_depth = 0.6
    max_depth = 350.0
    layout = (
        "<indoors|outdoor>/<scene>/<scan>/<name>.png + <name>_depth.npy + <name>_depth_mask.npy, "
        "e.g. Marigold's diode_val.tar"
    )
    options = {"subset": "all"}
    choices = {"subset": ("all", "indoor", "outdoor")}

    def _keep(self, rel: str) -> bool:
        subset = self.opts["subset"]
        parts = set(PurePosixPath(rel).parts)
        if subset == "indoor":
            return bool(parts & {"indoors", "indoor"})
        if subset == "outdoor":
            return bool(parts & {"outdoor", "outdoors"})
        return True

    def discover(self) -> list[Entry]:
        es = self._pair_by_pattern(r"(.+)\.png", lambda m: (f"{m[1]}_depth.npy", f"{m[1]}_depth_mask.npy"))
        return [e for e in es if self._keep(e.files[0])]

    def entry_from_line(self, cols: list[str]) -> Entry | None:
        rgb = cols[0]
        stem = _stem(rgb)
        files = (rgb, cols[1] if len(cols) > 1 else f"{stem}_depth.npy", cols[2] if len(cols) > 2 else f"{stem}_depth_mask.npy")
        return Entry(stem, files) if self._keep(rgb) else None

    def load(self, entry: Entry) -> Sample:
        rgb_rel, gt_rel, mask_rel = entry.files[:3]
        rgb = self.read_rgb(rgb_rel)
        depth = np.squeeze(load_npy(io.BytesIO(self.root.read(gt_rel)), self.root.where(gt_rel))).astype(np.float32)
        mask = np.squeeze(load_npy(io.BytesIO(self.root.read(mask_rel)), self.root.where(mask_rel)))
        _same_size(rgb, depth, self.root.where(rgb_rel), self.root.where(gt_rel))
        if mask.shape != depth.shape:
            raise InputDataError(f"{self.root.where(mask_rel)}: mask shape {mask.shape} differs from depth {depth.shape}")
        valid = mask.astype(bool) & self.range_valid(depth)
        return Sample(entry.id, rgb, depth, "depth", valid, meta={"files": list(entry.files)})


# --------------------------------------------------------------------------- Middlebury


MIDDLEBURY_2005_FOCAL_PX = 3740.0
MIDDLEBURY_2005_BASELINE_M = 0.160


def parse_middlebury_calib(text: str, where: str) -> dict[str, float]:
    """``calib.txt`` of Middlebury 2014: focal length (px), doffs, baseline (mm)."""
    vals: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            vals[k.strip()] = v.strip()
    try:
        cam0 = vals["cam0"].strip("[]").replace(";", " ").split()
        return {"focal": float(cam0[0]), "doffs": float(vals.get("doffs", "0")), "baseline_mm": float(vals["baseline"])}
    except (KeyError, IndexError, ValueError):
        raise InputDataError(f"{where}: expected cam0=[f 0 cx; 0 f cy; 0 0 1], doffs= and baseline= lines") from None


class MiddleburyDataset(DatasetLoader):
    name = "middlebury"
    incomplete_is_error = True
    min_depth = 1e-3
    max_depth = math.inf
    gt_kind = "disparity"
    layout = (
        "<scene>/view1.png + disp1.png + dmin.txt (2005/2006) or <scene>/im0.png + disp0GT.pfm + calib.txt (2014)"
    )

    def discover(self) -> list[Entry]:
        old = self._pair_by_pattern(r"((?:.*/)?)view1\.png", lambda m: (f"{m[1]}disp1.png", f"{m[1]}dmin.txt"))
        present = set(self.root.files())
        new = []
        for rel in self.root.files():
            m = re.fullmatch(r"((?:.*/)?)im0\.png", rel)
            if not m:
                continue
            for disp in ("disp0GT.pfm", "disp0.pfm"):
                if f"{m[1]}{disp}" in present and f"{m[1]}calib.txt" in present:
                    new.append(Entry(_stem(rel), (rel, f"{m[1]}{disp}", f"{m[1]}calib.txt")))
                    break
            else:
                missing = f"{m[1]}calib.txt" if any(f"{m[1]}{d}" in present for d in ("disp0GT.pfm", "disp0.pfm")) \
                    else f"{m[1]}disp0GT.pfm"
                self.incomplete.append(f"{self.root.where(missing)}: missing (needed by {rel})")
        return sorted(old + new, key=lambda e: natural_key(e.id))

    def entry_from_line(self, cols: list[str]) -> Entry:
        rgb = cols[0]
        folder = str(PurePosixPath(rgb).parent)
        folder = "" if folder == "." else folder + "/"
        if PurePosixPath(rgb).name == "view1.png":
            files = (rgb, cols[1] if len(cols) > 1 else f"{folder}disp1.png", f"{folder}dmin.txt")
        else:
            disp = cols[1] if len(cols) > 1 else f"{folder}disp0GT.pfm"
            if len(cols) == 1 and not self.root.exists(disp) and self.root.exists(f"{folder}disp0.pfm"):
                disp = f"{folder}disp0.pfm"
            files = (rgb, disp, f"{folder}calib.txt")
        return Entry(_stem(rgb), files)

    def load(self, entry: Entry) -> Sample:
        rgb_rel, disp_rel, calib_rel = entry.files[:3]
        rgb = self.read_rgb(rgb_rel)
        where = self.root.where(disp_rel)
        if disp_rel.endswith(".pfm"):
            d = decode_pfm(self.root.read(disp_rel), where)
            d = d[:, :, 0] if d.ndim == 3 else d
            calib = parse_middlebury_calib(self.root.read(calib_rel).decode(errors="replace"), self.root.where(calib_rel))
            known = np.isfinite(d) & (d > 0)
            disp = np.where(known, d + calib["doffs"], 0.0).astype(np.float32)
            scale = calib["focal"] * calib["baseline_mm"] / 1000.0
            meta = {"release": "2014", **calib}
        else:
            raw = decode_raster(self.root.read(disp_rel), where)
            if raw.ndim == 3:
                raw = raw[:, :, 0]
            if raw.dtype != np.uint8:
                raise InputDataError(f"{where}: expected an 8-bit disparity PNG, got {raw.dtype}")
            txt = self.root.read(calib_rel).decode(errors="replace").strip()
            try:
                dmin = float(txt.split()[0])
            except (ValueError, IndexError):
                raise InputDataError(f"{self.root.where(calib_rel)}: expected one number (dmin), got {txt[:40]!r}") from None
            known = raw > 0
            disp = np.where(known, raw.astype(np.float32) + dmin, 0.0).astype(np.float32)
            scale = MIDDLEBURY_2005_FOCAL_PX * MIDDLEBURY_2005_BASELINE_M
            meta = {"release": "2005/2006", "dmin": dmin}
        _same_size(rgb, disp, self.root.where(rgb_rel), where)
        depth = P.gt_to_depth(disp, "disparity", scale)
        valid = known & (disp > 0) & self.range_valid(depth)
        meta["files"] = list(entry.files)
        return Sample(entry.id, rgb, disp, "disparity", valid, disparity_scale=scale, meta=meta)


# --------------------------------------------------------------------------- folder


DEPTH_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
DISPARITY_UNITS = {"px": 1.0, "relative": 1.0, "1/m": 1.0}
GT_EXTS = (".npy", ".png", ".tif", ".tiff", ".exr", ".pfm")


class FolderDataset(DatasetLoader):
    """RGB images and ground-truth maps described by ``dataset.toml`` at the root::

        images = "rgb"          # folder of RGB images (any subfolders)
        ground_truth = "depth"  # folder of maps with the same relative stems: .npy .png .tif .exr .pfm
        kind = "depth"          # or "disparity"
        units = "mm"            # depth: m | cm | mm; disparity: px | 1/m | relative
        scale = 0.001           # optional, instead of units: stored value x scale
        invalid = 0             # optional stored value meaning "no data" (non-finite always is)
        min_depth = 0.001       # optional, metres (default 0)
        max_depth = 80.0        # optional (default inf)
        disparity_scale = 1.0   # disparity only: depth = disparity_scale / disparity (f x B for stereo)
        masks = "masks"         # optional folder of masks with the same stems, non-zero = valid
        eigen_crop = false      # optional, NYUv2's Eigen crop
    """

    name = "folder"
    layout = "dataset.toml at the root naming the `images` and `ground_truth` folders, `kind` and `units`"
    KEYS = ("images", "ground_truth", "kind", "units", "scale", "invalid", "min_depth", "max_depth",
            "disparity_scale", "masks", "eigen_crop")

    def __init__(self, root, split_file=None, limit=None, **options):
        self.root = DataRoot(root, self.name)
        self.cfg = self._read_config()
        self.min_depth = float(self.cfg.get("min_depth", 0.0))
        self.max_depth = float(self.cfg.get("max_depth", math.inf))
        self.root.close()
        super().__init__(root, split_file, limit, **options)

    def _read_config(self) -> dict[str, Any]:
        import tomllib

        if not self.root.exists("dataset.toml"):
            raise NoInputError(f"folder: expected {self.root.where('dataset.toml')} describing the data ({self.layout})")
        where = self.root.where("dataset.toml")
        try:
            cfg = tomllib.loads(self.root.read("dataset.toml").decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputDataError(f"{where}: invalid TOML ({exc})") from None
        if isinstance(cfg.get("dataset"), dict):
            cfg = cfg["dataset"]
        for key in cfg:
            if key not in self.KEYS:
                raise InputDataError(f"{where}: unknown key {key!r} (valid: {', '.join(self.KEYS)})")
        for key in ("images", "ground_truth", "kind"):
            if key not in cfg:
                raise InputDataError(f"{where}: missing key {key!r}")
        if cfg["kind"] not in ("depth", "disparity"):
            raise InputDataError(f"{where}: `kind` must be 'depth' or 'disparity', got {cfg['kind']!r}")
        units = DEPTH_UNITS if cfg["kind"] == "depth" else DISPARITY_UNITS
        if "scale" in cfg:
            try:
                cfg["_scale"] = float(cfg["scale"])
            except (TypeError, ValueError):
                raise InputDataError(f"{where}: `scale` must be a number, got {cfg['scale']!r}") from None
        elif "units" in cfg:
            if cfg["units"] not in units:
                raise InputDataError(
                    f"{where}: `units` for {cfg['kind']} must be one of {', '.join(units)}, got {cfg['units']!r}"
                )
            cfg["_scale"] = units[cfg["units"]]
        else:
            raise InputDataError(f"{where}: give `units` ({', '.join(units)}) or `scale`")
        for key in ("min_depth", "max_depth", "disparity_scale", "invalid"):
            if key in cfg and not isinstance(cfg[key], (int, float)):
                raise InputDataError(f"{where}: `{key}` must be a number, got {cfg[key]!r}")
        return cfg

    def _folder(self, key: str) -> str:
        f = str(self.cfg[key]).strip("/")
        return "" if f in ("", ".") else f + "/"

    def _find_with_stem(self, stem: str, exts=GT_EXTS) -> str | None:
        for ext in exts:
            for cand in (stem + ext, stem + ext.upper()):
                if self.root.exists(cand):
                    return cand
        return None

    def _gt_for(self, rgb_rel: str) -> tuple[str, ...] | None:
        img_dir = self._folder("images")
        rel = rgb_rel[len(img_dir):] if rgb_rel.startswith(img_dir) else PurePosixPath(rgb_rel).name
        stem = _stem(rel)
        gt = self._find_with_stem(self._folder("ground_truth") + stem)
        if gt is None:
            return None
        if "masks" in self.cfg:
            mask = self._find_with_stem(self._folder("masks") + stem, GT_EXTS + IMAGE_EXTS)
            if mask is None:
                return None
            return gt, mask
        return (gt,)

    def discover(self) -> list[Entry]:
        img_dir = self._folder("images")
        out = []
        for rel in self.root.files():
            if rel.startswith(img_dir) and rel.lower().endswith(IMAGE_EXTS):
                gts = self._gt_for(rel)
                if gts is not None:
                    out.append(Entry(_stem(rel[len(img_dir):]), (rel, *gts)))
        if not out:
            self.layout = (
                f"images under {self.root.where(img_dir or '.')} with maps of the same name under "
                f"{self.root.where(self._folder('ground_truth') or '.')} ({', '.join(GT_EXTS)})"
            )
        return out

    def entry_from_line(self, cols: list[str]) -> Entry:
        rgb = cols[0]
        if len(cols) > 1:
            files = tuple(cols[:3]) if "masks" in self.cfg else (cols[0], cols[1])
        else:
            gts = self._gt_for(rgb)
            if gts is None:
                raise InputDataError(
                    f"folder: no ground truth for {rgb} under {self.root.where(self._folder('ground_truth'))}"
                )
            files = (rgb, *gts)
        return Entry(_stem(rgb), files)

    def _read_map(self, rel: str) -> np.ndarray:
        where = self.root.where(rel)
        low = rel.lower()
        if low.endswith(".npy"):
            arr = load_npy(io.BytesIO(self.root.read(rel)), where)
        elif low.endswith(".pfm"):
            arr = decode_pfm(self.root.read(rel), where)
        elif low.endswith(".exr"):
            from betterdepth_cli.io.outputs import read_exr

            path, tmp = self.root.local_path(rel)
            try:
                arr, _ = read_exr(path)
            finally:
                if tmp:
                    os.unlink(path)
        else:
            arr = decode_raster(self.root.read(rel), where)
        arr = np.squeeze(np.asarray(arr))
        if arr.ndim == 3:
            arr = arr[:, :, 0]
        if arr.ndim != 2:
            raise InputDataError(f"{where}: expected a single-channel map, got shape {arr.shape}")
        return arr

    def load(self, entry: Entry) -> Sample:
        rgb_rel, gt_rel = entry.files[:2]
        rgb = self.read_rgb(rgb_rel)
        raw = self._read_map(gt_rel)
        _same_size(rgb, raw, self.root.where(rgb_rel), self.root.where(gt_rel))
        known = np.isfinite(raw.astype(np.float64))
        if "invalid" in self.cfg:
            known &= raw != self.cfg["invalid"]
        values = np.where(known, raw.astype(np.float64) * self.cfg["_scale"], 0.0).astype(np.float32)
        kind = self.cfg["kind"]
        dscale = float(self.cfg.get("disparity_scale", 1.0))
        depth = P.gt_to_depth(values, kind, dscale)
        valid = known & (depth > 0) & self.range_valid(depth)
        if len(entry.files) > 2:
            mask = self._read_map(entry.files[2])
            if mask.shape != valid.shape:
                raise InputDataError(f"{self.root.where(entry.files[2])}: mask shape {mask.shape} differs from {valid.shape}")
            valid &= mask != 0
        if self.cfg.get("eigen_crop", False):
            valid &= P.nyu_eigen_mask(valid.shape)
        return Sample(entry.id, rgb, values, kind, valid, disparity_scale=dscale if kind == "disparity" else 1.0,
                      meta={"files": list(entry.files)})

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["config"] = {k: v for k, v in self.cfg.items() if not k.startswith("_")}
        return d


# --------------------------------------------------------------------------- registry


DATASETS: dict[str, type[DatasetLoader]] = {
    "nyuv2": NYUv2Dataset,
    "kitti": KITTIDataset,
    "eth3d": ETH3DDataset,
    "scannet": ScanNetDataset,
    "diode": DIODEDataset,
    "middlebury": MiddleburyDataset,
    "folder": FolderDataset,
}


def get_dataset(
    name: str,
    root: str | os.PathLike,
    split_file: str | os.PathLike | None = None,
    limit: int | None = None,
    **options: Any,
) -> DatasetLoader:
    """Build the loader registered under ``name``; an unknown name lists the valid ones."""
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[name](root, split_file=split_file, limit=limit, **options)
