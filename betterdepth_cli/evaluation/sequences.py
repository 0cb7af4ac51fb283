"""Sequence datasets for temporal evaluation: clips of RGB-D frames with intrinsics and poses.

``get_sequence_dataset(name, root, **options)`` gives a list of :class:`Clip`; a
clip loads its frames one at a time (``clip.frame(i)`` -> :class:`~betterdepth_cli.evaluation.datasets.Sample`,
ground truth as depth in metres), so a long clip never sits in memory.

- ``synth-seq``: the layout of ``betterdepth synth --sequence`` (:mod:`training.sequences`):
  ``<clip>/rgb/frame.<n>.png``, ``<clip>/depth/frame.<n>.npy`` (metres, 0 = invalid),
  ``<clip>/camera.json`` (``K``, ``max_depth``, one camera-to-world ``pose`` per frame).
  ``root`` is the folder of clips or one clip. Valid: 0 < depth <= max_depth.
- ``tum``: the TUM RGB-D layout: ``rgb.txt`` and ``depth.txt`` (``timestamp path`` lines,
  ``#`` comments), ``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``, the camera-to-world
  pose of the colour camera), 16-bit depth PNGs (``depth_factor`` 5000 per metre, 0 = no data).
  ``root`` is one sequence folder or a folder of them (one clip each). Colour and depth frames
  are associated one-to-one by nearest timestamp within ``max_dt`` seconds (0.02, as TUM's
  ``associate.py``), closest pairs first; each pair takes the ground-truth pose nearest to the
  colour timestamp within ``max_dt``; pairs without one are dropped. Intrinsics: the ROS default
  fx = fy = 525, cx = 319.5, cy = 239.5 that TUM's registered depth uses, or ``intrinsics``
  = "fx,fy,cx,cy". Valid depth: 0.1 .. 10 m. ``stride`` keeps every n-th pair, ``max_frames``
  the first n after that.

Both use the pixel-index convention for ``K`` (:mod:`betterdepth_cli.core.reprojection`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from betterdepth_cli.core.reprojection import pose_from_quaternion
from betterdepth_cli.core.types import InputDataError, NoInputError, UsageError
from betterdepth_cli.evaluation.dataset_base import Sample, natural_key

TUM_DEPTH_FACTOR = 5000.0
TUM_DEFAULT_K = (525.0, 525.0, 319.5, 239.5)
TUM_MAX_DT = 0.02
TUM_DEPTH_RANGE = (0.1, 10.0)


@dataclass
class Clip:
    """One clip: ``ids`` (frame names), ``K`` (3,3), ``poses`` (N,4,4) camera-to-world, depth range;
    ``frame(i)`` loads frame i through ``loader``."""

    id: str
    ids: list[str]
    K: np.ndarray
    poses: np.ndarray
    min_depth: float
    max_depth: float
    loader: Callable[[int], tuple[np.ndarray, np.ndarray]]  # i -> (rgb (H,W,3) float32, depth (H,W) metres)

    def __len__(self) -> int:
        return len(self.ids)

    def frame(self, i: int) -> Sample:
        """Frame ``i`` as a Sample (id ``<clip>/<frame>``, gt depth, valid = in range)."""
        rgb, depth = self.loader(i)
        if rgb.shape[:2] != depth.shape:
            raise InputDataError(f"{self.id}/{self.ids[i]}: depth is {depth.shape[1]}x{depth.shape[0]} but the "
                                 f"image is {rgb.shape[1]}x{rgb.shape[0]}")
        valid = np.isfinite(depth) & (depth > self.min_depth) & (depth <= self.max_depth)
        return Sample(id=f"{self.id}/{self.ids[i]}", rgb=rgb, gt=depth.astype(np.float32), gt_kind="depth",
                      valid=valid, meta={"clip": self.id, "index": i})


def _read_rgb(path: Path) -> np.ndarray:
    from betterdepth_cli.io.images import decode_rgb

    try:
        return decode_rgb(path.read_bytes(), str(path))
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- synthetic sequences


def _synth_clip(folder: Path) -> Clip:
    from betterdepth_cli.io.depth_files import load_npy

    cam_path = folder / "camera.json"
    try:
        cam = json.loads(cam_path.read_text())
        K = np.asarray(cam["K"], np.float64).reshape(3, 3)
        ids = [f["id"] for f in cam["frames"]]
        poses = np.asarray([f["pose"] for f in cam["frames"]], np.float64).reshape(-1, 4, 4)
        max_depth = float(cam.get("max_depth", np.inf))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputDataError(f"{cam_path}: not a sequence camera file ({type(exc).__name__}: {exc})") from None

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        dpath = folder / "depth" / f"{ids[i]}.npy"
        if not dpath.is_file():
            raise InputDataError(f"{dpath}: missing depth frame")
        depth = np.asarray(load_npy(dpath, str(dpath)), np.float32)
        return _read_rgb(folder / "rgb" / f"{ids[i]}.png"), depth

    return Clip(folder.name, ids, K, poses, 0.0, max_depth, load)


def synthetic_sequences(root: str | os.PathLike, max_frames: int | None = None) -> list[Clip]:
    """The clips of a ``betterdepth synth --sequence`` folder (or one clip folder)."""
    root = Path(root)
    if not root.is_dir():
        raise NoInputError(f"synth-seq: data root {root} does not exist or is not a folder")
    folders = [root] if (root / "camera.json").is_file() else sorted(
        (p for p in root.iterdir() if (p / "camera.json").is_file()), key=lambda p: natural_key(p.name))
    if not folders:
        raise NoInputError(f"synth-seq: no clips (folders with camera.json) in {root}")
    clips = [_synth_clip(f) for f in folders]
    return [_truncate(c, max_frames) for c in clips]


def _truncate(clip: Clip, max_frames: int | None, stride: int = 1) -> Clip:
    keep = list(range(0, len(clip.ids), stride))[: max_frames or None]
    loader = clip.loader
    return Clip(clip.id, [clip.ids[i] for i in keep], clip.K, clip.poses[keep], clip.min_depth, clip.max_depth,
                lambda i: loader(keep[i]))


# --------------------------------------------------------------------------- TUM RGB-D


def read_tum_list(path: Path, columns: int) -> list[tuple[float, list[str]]]:
    """``timestamp value...`` lines of a TUM list (``#`` comments, blank lines skipped)."""
    if not path.is_file():
        raise NoInputError(f"tum: missing {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        cols = line.split("#", 1)[0].split()
        if not cols:
            continue
        if len(cols) != columns + 1:
            raise InputDataError(f"{path}: line {n} has {len(cols)} fields, expected {columns + 1}")
        try:
            rows.append((float(cols[0]), cols[1:]))
        except ValueError:
            raise InputDataError(f"{path}: line {n}: timestamp {cols[0]!r} is not a number") from None
    return rows


def associate(first: list[float], second: list[float], max_dt: float = TUM_MAX_DT) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) of timestamps within ``max_dt``, closest first, sorted by i (TUM's associate.py)."""
    b = np.asarray(second, np.float64)
    cands = []
    for i, t in enumerate(first):
        if b.size:
            near = np.nonzero(np.abs(b - t) <= max_dt)[0]
            cands += [(abs(b[j] - t), i, int(j)) for j in near]
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in sorted(cands):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def _tum_intrinsics(text: str | None) -> np.ndarray:
    vals = TUM_DEFAULT_K
    if text:
        try:
            vals = tuple(float(v) for v in str(text).split(","))
        except ValueError:
            vals = ()
        if len(vals) != 4:
            raise UsageError(f"tum: option 'intrinsics' must be fx,fy,cx,cy, got {text!r}")
    fx, fy, cx, cy = vals
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)


def tum_clip(folder: str | os.PathLike, intrinsics: str | None = None, max_dt: float = TUM_MAX_DT,
             depth_factor: float = TUM_DEPTH_FACTOR) -> Clip:
    """One TUM RGB-D sequence folder as a clip (module doc)."""
    from betterdepth_cli.io.images import decode_uint16_map

    folder = Path(folder)
    rgb = read_tum_list(folder / "rgb.txt", 1)
    dep = read_tum_list(folder / "depth.txt", 1)
    gt = read_tum_list(folder / "groundtruth.txt", 7)
    pairs = associate([t for t, _ in rgb], [t for t, _ in dep], max_dt)
    gt_times = [t for t, _ in gt]
    frames, poses = [], []
    for i, j in pairs:
        k = associate([rgb[i][0]], gt_times, max_dt)
        if not k:
            continue
        vals = [float(v) for v in gt[k[0][1]][1]]
        poses.append(pose_from_quaternion(vals[:3], vals[3:]))
        frames.append((rgb[i][1][0], dep[j][1][0]))
    if not frames:
        raise NoInputError(f"tum: {folder}: no colour frame has a depth frame and a pose within {max_dt} s")

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        rgb_rel, depth_rel = frames[i]
        dpath = folder / depth_rel
        try:
            data = dpath.read_bytes()
        except OSError as exc:
            raise InputDataError(f"{dpath}: cannot read ({exc.strerror or exc})") from None
        depth = decode_uint16_map(data, str(dpath), "depth (1/5000 m)").astype(np.float32) / np.float32(depth_factor)
        return _read_rgb(folder / rgb_rel), depth

    ids = [Path(r).stem for r, _ in frames]
    return Clip(folder.name, ids, _tum_intrinsics(intrinsics), np.stack(poses), *TUM_DEPTH_RANGE, load)


def tum_sequences(root: str | os.PathLike, intrinsics: str | None = None, stride: int = 1,
                  max_frames: int | None = None) -> list[Clip]:
    """Every TUM sequence under ``root`` (the folder itself when it holds rgb.txt)."""
    root = Path(root)
    if not root.is_dir():
        raise NoInputError(f"tum: data root {root} does not exist or is not a folder")
    if stride < 1:
        raise UsageError(f"tum: option 'stride' must be >= 1, got {stride}")
    folders = [root] if (root / "rgb.txt").is_file() else sorted(
        (p for p in root.iterdir() if (p / "rgb.txt").is_file()), key=lambda p: natural_key(p.name))
    if not folders:
        raise NoInputError(f"tum: no sequences (folders with rgb.txt) in {root}")
    return [_truncate(tum_clip(f, intrinsics), max_frames, stride) for f in folders]


SEQUENCE_DATASETS: dict[str, Callable[..., list[Clip]]] = {"synth-seq": synthetic_sequences, "tum": tum_sequences}


def get_sequence_dataset(name: str, root: str | os.PathLike, **options: Any) -> list[Clip]:
    """The clips of sequence dataset ``name`` (options: ``max_frames``; tum also ``stride``, ``intrinsics``)."""
    if name not in SEQUENCE_DATASETS:
        raise UsageError(f"unknown sequence dataset {name!r}; valid: {', '.join(SEQUENCE_DATASETS)}")
    opts = dict(options)
    for key in ("max_frames", "stride"):
        if key in opts and opts[key] is not None:
            try:
                opts[key] = int(opts[key])
            except (TypeError, ValueError):
                raise UsageError(f"{name}: option {key!r} must be an integer, got {opts[key]!r}") from None
    try:
        return SEQUENCE_DATASETS[name](root, **opts)
    except TypeError as exc:
        raise UsageError(f"{name}: unknown dataset option ({exc})") from None
