"""RGB-D training datasets: a generic folder, Hypersim, Virtual KITTI 2, and weighted mixing.

Every dataset returns dicts (see :mod:`training.augment`)::

    {"rgb": (3,H,W) float32 in [0,1], "depth": (1,H,W) float32 metres (planar z),
     "valid": (1,H,W) bool, "id": str}

Invalid depth pixels hold 0. An optional ``transform`` (e.g.
:class:`training.augment.RandomCropFlip`) is applied to each sample.

Generic folder format (written by ``betterdepth synth``; the same folder is
read by ``betterdepth eval --dataset folder``)::

    DIR/dataset.toml        [depth] units = "m"|"cm"|"mm", scale = <float>,
                            kind = "depth"|"disparity", invalid_value = 0
    DIR/rgb/<id>.png|.jpg|.jpeg
    DIR/depth/<id>.png|.npy|.exr|.tif|.pfm   (16-bit PNG, float NPY, EXR channel Z/depth.Z/Y/R)
    DIR/mask/<id>.png               optional, non-zero = valid

A stored value s means ``s * scale`` in ``units`` (depth) or ``1 / units``
(disparity); metres = that times 1 (m), 0.01 (cm) or 0.001 (mm), inverted for
disparity. Pixels equal to ``invalid_value``, non-finite or <= 0 are invalid.
The evaluation loader's spelling (``[dataset]`` table or top-level ``images``,
``ground_truth``, ``masks``, ``kind``, ``units``/``scale``, ``invalid``,
``min_depth``, ``max_depth``, ``disparity_scale``) is accepted too (see
:func:`read_folder_config`); ids may contain sub-folders. Without a
``dataset.toml``, NPY and EXR depth are read as metres and other depth files
are refused (their scale is unknown).
"""

from __future__ import annotations

import csv
import io
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from betterdepth_cli.core.types import InputDataError, NoInputError, UsageError
from betterdepth_cli.io.depth_files import decode_pfm, load_npy
from betterdepth_cli.io.images import decode_raster, decode_rgb, decode_uint16_map
from betterdepth_cli.io.files import read_file

UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
RGB_EXTS = (".png", ".jpg", ".jpeg")
DEPTH_EXTS = (".png", ".npy", ".exr", ".tif", ".tiff", ".pfm")
HYPERSIM_FOV_DEG = 60.0  # Hypersim's standard horizontal field of view (1024x768, focal 886.81 px)
HYPERSIM_SPLIT_CSV = "metadata_images_split_scene_v1.csv"


# --------------------------------------------------------------------------- #
# file reading helpers
# --------------------------------------------------------------------------- #
def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An 8- or 16-bit image file -> (H,W,3) float32 in [0,1] (grey is repeated, alpha dropped)."""
    p = Path(path)
    return decode_rgb(read_file(p), str(p))


def read_depth_raw(path: str | os.PathLike) -> np.ndarray:
    """A depth-like file (.png 16/8-bit, .tif, .npy, .exr, .pfm) -> (H,W) float64 stored values (first channel)."""
    p = Path(path)
    ext = p.suffix.lower()
    try:
        if ext == ".exr":
            import OpenEXR

            ch = OpenEXR.File(str(p)).channels()
            for name in ("Z", "depth.Z", "Y", "R", "depth", "D"):
                if name in ch:
                    arr = ch[name].pixels
                    break
            else:
                if len(ch) != 1:
                    raise InputDataError(f"{p}: EXR has no Z/depth.Z/Y/R channel (has {', '.join(ch)})")
                arr = next(iter(ch.values())).pixels
            return _one_map(arr, str(p))
        if ext not in DEPTH_EXTS:
            raise InputDataError(f"{p}: unsupported depth extension {ext!r} (use {', '.join(DEPTH_EXTS)})")
        return decode_depth_raw(read_file(p), str(p), ext)
    except (InputDataError, NoInputError):
        raise
    except FileNotFoundError:
        raise InputDataError(f"{p}: file not found") from None
    except Exception as exc:  # corrupt npy/exr
        raise InputDataError(f"{p}: cannot read depth ({exc})") from None


def decode_depth_raw(data: bytes, where: str, ext: str) -> np.ndarray:
    """The bytes of a .npy, .pfm or raster (.png/.tif) depth file -> (H,W) float64 stored values."""
    if ext == ".npy":
        arr = load_npy(io.BytesIO(data), where)
    elif ext == ".pfm":
        arr = decode_pfm(data, where)
    else:
        arr = decode_raster(data, where)
    return _one_map(arr, where)


def _one_map(arr, where: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3:  # (H,W,1) or a colour-encoded map: its first channel
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InputDataError(f"{where}: depth must be a single-channel (H,W) map, got shape {arr.shape}")
    return arr.astype(np.float64)


def to_sample(rgb: np.ndarray, depth: np.ndarray, valid: np.ndarray, sample_id: str, where: str = "") -> dict:
    """numpy rgb (H,W,3) [0,1], depth (H,W) metres, valid (H,W) -> the tensor sample dict. ``where``: the
    sample's depth file, named in errors (default: its id)."""
    if rgb.shape[:2] != depth.shape or depth.shape != valid.shape:
        raise InputDataError(f"{where or sample_id}: depth {depth.shape[1]} x {depth.shape[0]} pixels, its RGB "
                             f"{rgb.shape[1]} x {rgb.shape[0]}: sizes differ")
    valid = valid & np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, 0.0)
    return {
        "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)),
        "depth": torch.from_numpy(np.ascontiguousarray(depth[None], dtype=np.float32)),
        "valid": torch.from_numpy(np.ascontiguousarray(valid[None], dtype=bool)),
        "id": sample_id,
    }


class _Base(Dataset):
    def __init__(self, transform: Callable[[dict], dict] | None = None):
        self.transform = transform
        self.items: list[Any] = []

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        s = self.load(index % len(self))
        return self.transform(s) if self.transform else s


# --------------------------------------------------------------------------- #
# generic folder
# --------------------------------------------------------------------------- #
EVAL_KEYS = ("images", "ground_truth", "kind", "units", "scale", "invalid", "min_depth", "max_depth",
             "disparity_scale", "masks", "eigen_crop")


def read_folder_config(root: str | os.PathLike) -> dict:
    """``root/dataset.toml`` normalised, or {} when there is none.

    Two spellings are accepted: the ``[depth]`` table (``units``, ``scale``,
    ``kind``, ``invalid_value``, optional ``min_depth``/``max_depth``; metres =
    stored x scale x units) and the evaluation ``folder`` keys (top level or a
    ``[dataset]`` table: ``images``, ``ground_truth``, ``masks``, ``kind``,
    ``units`` or ``scale`` (scale wins: stored x scale = metres),
    ``invalid``, ``min_depth``, ``max_depth``, ``disparity_scale``).

    Returns {"images", "ground_truth", "masks" (folder names), "kind",
    "factor" (stored -> metres, or -> disparity), "disparity_scale" (depth =
    disparity_scale / disparity), "invalid" (float or None), "min_depth", "max_depth"}.
    """
    path = Path(root) / "dataset.toml"
    if not path.exists():
        return {}
    return parse_folder_config(path.read_bytes(), str(path))


def parse_folder_config(data: bytes, path: str) -> dict:
    """:func:`read_folder_config` of the bytes of a ``dataset.toml`` (``path`` names it in errors)."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: not valid TOML ({exc})") from None
    ev = raw["dataset"] if isinstance(raw.get("dataset"), dict) else {k: v for k, v in raw.items() if k in EVAL_KEYS}
    d = raw.get("depth") if isinstance(raw.get("depth"), dict) else None

    def num(table: dict, key: str, default: float | None) -> float | None:
        v = table.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputDataError(f"{path}: `{key}` must be a number, got {v!r}")
        return float(v)

    src = d if d is not None else ev
    kind = src.get("kind", "depth")
    if kind not in ("depth", "disparity"):
        raise InputDataError(f"{path}: `kind` must be depth or disparity, got {kind!r}")
    cfg = {"images": str(ev.get("images", "rgb")), "ground_truth": str(ev.get("ground_truth", "depth")),
           "masks": str(ev.get("masks", "mask")), "kind": kind,
           "min_depth": num(src, "min_depth", 0.0), "max_depth": num(src, "max_depth", math.inf)}
    if d is not None:
        units = d.get("units", "m")
        if units not in UNITS:
            raise InputDataError(f"{path}: [depth] units must be one of {', '.join(UNITS)}, got {units!r}")
        scale = num(d, "scale", 1.0)
        if not scale > 0:
            raise InputDataError(f"{path}: [depth] scale must be > 0, got {scale}")
        cfg["invalid"] = num(d, "invalid_value", 0.0)
        if kind == "depth":
            cfg["factor"], cfg["disparity_scale"] = scale * UNITS[units], 1.0
        else:
            cfg["factor"], cfg["disparity_scale"] = scale, UNITS[units]
    else:
        if "scale" in ev:
            factor = num(ev, "scale", 1.0)
        elif "units" in ev:
            table = UNITS if kind == "depth" else {"px": 1.0, "relative": 1.0, "1/m": 1.0}
            if ev["units"] not in table:
                raise InputDataError(f"{path}: `units` for {kind} must be one of {', '.join(table)}, got {ev['units']!r}")
            factor = table[ev["units"]]
        else:
            raise InputDataError(f"{path}: give [depth] units and scale (or `units`/`scale`)")
        if not factor > 0:
            raise InputDataError(f"{path}: `scale` must be > 0, got {factor}")
        cfg["factor"] = factor
        cfg["invalid"] = num(ev, "invalid", None)
        cfg["disparity_scale"] = num(ev, "disparity_scale", 1.0)
    return cfg


def decode_depth(stored: np.ndarray, kind: str = "depth", factor: float = 1.0, disparity_scale: float = 1.0,
                 invalid: float | None = 0.0, min_depth: float = 0.0, max_depth: float = math.inf,
                 **_: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stored values (H,W) -> (depth metres (H,W) float64, valid (H,W) bool).

    depth = stored x factor (kind depth) or disparity_scale / (stored x factor)
    (kind disparity); invalid: stored == invalid, non-finite, <= 0, or outside
    (min_depth, max_depth]."""
    valid = np.isfinite(stored)
    if invalid is not None:
        valid &= stored != invalid
    v = np.where(valid, stored * factor, 0.0)
    valid &= v > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = disparity_scale / v if kind == "disparity" else v
    valid &= np.isfinite(depth) & (depth > min_depth) & (depth <= max_depth)
    return np.where(valid, depth, 0.0), valid


_DEFAULT_CFG = {"images": "rgb", "ground_truth": "depth", "masks": "mask", "kind": "depth", "factor": 1.0,
                "disparity_scale": 1.0, "invalid": 0.0, "min_depth": 0.0, "max_depth": math.inf}


def _files_by_stem(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    """relative posix stem -> file, for files under folder (recursive) with one of exts."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in exts and not p.name.startswith(".") and p.is_file():
            out.setdefault(p.relative_to(folder).with_suffix("").as_posix(), p)
    return out


class FolderDataset(_Base):
    """The generic folder format (module doc); sub-folders are allowed, ids are the
    relative stems (``a/b/img``). ``ids`` restricts to those stems."""

    def __init__(self, root: str | os.PathLike, transform: Callable[[dict], dict] | None = None,
                 ids: Sequence[str] | None = None):
        super().__init__(transform)
        self.root = Path(root)
        if not self.root.is_dir():
            raise NoInputError(f"{self.root}: dataset folder not found")
        self.config = read_folder_config(self.root)
        cfg = self.config or _DEFAULT_CFG
        rgb_dir, depth_dir = self.root / cfg["images"], self.root / cfg["ground_truth"]
        if not rgb_dir.is_dir() or not depth_dir.is_dir():
            raise NoInputError(f"{self.root}: expected {cfg['images']}/ and {cfg['ground_truth']}/ sub-folders")
        depth_by_id = _files_by_stem(depth_dir, DEPTH_EXTS)
        masks = _files_by_stem(self.root / cfg["masks"], (".png",) + DEPTH_EXTS)
        items = [(sid, p, depth_by_id[sid], masks.get(sid)) for sid, p in _files_by_stem(rgb_dir, RGB_EXTS).items()
                 if sid in depth_by_id]
        if ids is not None:
            want = set(ids)
            items = [it for it in items if it[0] in want]
        if not items:
            raise NoInputError(f"{self.root}: no {cfg['images']}/<id> with a matching "
                               f"{cfg['ground_truth']}/<id>{'|'.join(DEPTH_EXTS)}")
        if not self.config and any(it[2].suffix.lower() not in (".npy", ".exr") for it in items):
            raise InputDataError(f"{self.root / 'dataset.toml'}: missing; PNG/TIFF/PFM depth needs "
                                 "[depth] units and scale")
        self.items = items

    @property
    def ids(self) -> list[str]:
        return [it[0] for it in self.items]

    def load(self, index: int) -> dict:
        sid, rgb_path, depth_path, mask_path = self.items[index]
        depth, valid = decode_depth(read_depth_raw(depth_path), **(self.config or _DEFAULT_CFG))
        if mask_path is not None:
            m = read_depth_raw(mask_path)
            if m.shape != depth.shape:
                raise InputDataError(f"{mask_path}: mask size {m.shape} differs from depth {depth.shape}")
            valid &= m > 0
        return to_sample(read_rgb(rgb_path), depth, valid, sid, str(depth_path))


# --------------------------------------------------------------------------- #
# Hypersim
# --------------------------------------------------------------------------- #
def hypersim_distance_to_depth(distance: np.ndarray, fov_deg: float = HYPERSIM_FOV_DEG) -> np.ndarray:
    """Hypersim ``depth_meters`` (Euclidean distance to the camera centre) (H,W) -> planar z (H,W).

    Pixel (row i, col j) looks along (j + 0.5 - W/2, i + 0.5 - H/2, f) with
    f = (W/2) / tan(fov/2) (886.81 px for the standard 1024x768, 60 deg), so
    z = distance * f / ||(x, y, f)||.
    """
    H, W = distance.shape
    f = 0.5 * W / math.tan(math.radians(fov_deg) / 2)
    x = np.arange(W) + 0.5 - W / 2
    y = np.arange(H) + 0.5 - H / 2
    norm = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + f * f)
    return distance * (f / norm)


def hypersim_tonemap(rgb: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Hypersim's tone mapping (ml-hypersim ``scene_generate_images_tonemap.py``).

    rgb (H,W,3) linear HDR -> (H,W,3) in [0,1]: scale so that the 90th
    percentile of brightness 0.3R + 0.59G + 0.11B over ``valid`` pixels (entity
    id != -1 when known) becomes 0.8 after gamma 1/2.2, then gamma 1/2.2 and clip.
    """
    gamma = 1.0 / 2.2
    rgb = np.nan_to_num(rgb.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    m = np.ones(rgb.shape[:2], bool) if valid is None else valid
    if not m.any():
        scale = 1.0
    else:
        bright = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
        p90 = np.percentile(bright[m], 90)
        scale = 0.0 if p90 < 1e-4 else (0.8 ** (1.0 / gamma)) / p90
    return np.clip(np.power(np.maximum(scale * rgb, 0), gamma), 0, 1).astype(np.float32)


def _read_h5(path: Path) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "dataset" not in f:
                raise InputDataError(f"{path}: HDF5 file has no 'dataset' entry")
            return np.asarray(f["dataset"][()])
    except InputDataError:
        raise
    except (OSError, KeyError) as exc:
        raise InputDataError(f"{path}: cannot read HDF5 ({exc})") from None


class HypersimDataset(_Base):
    """Hypersim in its official layout::

        root/ai_VVV_NNN/images/scene_cam_XX_final_hdf5/frame.IIII.color.hdf5        (H,W,3) linear HDR
        root/ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5  (H,W) distance
        root/ai_VVV_NNN/images/scene_cam_XX_geometry_hdf5/frame.IIII.render_entity_id.hdf5  optional

    Depth is converted from distance-to-camera-centre to planar z; RGB is
    tone-mapped (gamma 1/2.2, 90th-percentile brightness to 0.8, entity id -1
    excluded when the entity file is present); NaN depth is invalid.
    ``split`` ("train"/"val"/"test") filters with the official
    ``metadata_images_split_scene_v1.csv`` (``split_csv`` or found in root),
    keeping only ``included_in_public_release`` frames.
    ids are ``ai_VVV_NNN/cam_XX/IIII``.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, split_csv: str | os.PathLike | None = None,
                 transform: Callable[[dict], dict] | None = None, fov_deg: float = HYPERSIM_FOV_DEG,
                 max_depth: float | None = None):
        super().__init__(transform)
        self.root = Path(root)
        self.fov_deg = fov_deg
        self.max_depth = max_depth
        if not self.root.is_dir():
            raise NoInputError(f"{self.root}: Hypersim folder not found")
        allowed = None
        if split is not None:
            if split not in ("train", "val", "test"):
                raise UsageError(f"`split` must be train, val or test, got {split!r}")
            csv_path = Path(split_csv) if split_csv else self.root / HYPERSIM_SPLIT_CSV
            if not csv_path.exists():
                raise NoInputError(f"{csv_path}: Hypersim split file not found (download it from apple/ml-hypersim "
                                   "evermotion_dataset/analysis/metadata_images_split_scene_v1.csv)")
            allowed = set()
            with open(csv_path, newline="") as f:
                for row in csv.DictReader(f):
                    if row.get("split_partition_name") == split and row.get(
                            "included_in_public_release", "True").strip().lower() == "true":
                        allowed.add((row["scene_name"], row["camera_name"], int(row["frame_id"])))
        items = []
        for color in sorted(self.root.glob("ai_*/images/scene_cam_*_final_hdf5/frame.*.color.hdf5")):
            scene = color.parts[-4]
            cam = color.parent.name[len("scene_"):-len("_final_hdf5")]  # cam_XX
            frame = color.name.split(".")[1]
            geo = color.parent.parent / f"scene_{cam}_geometry_hdf5"
            depth = geo / f"frame.{frame}.depth_meters.hdf5"
            if not depth.exists():
                continue
            if allowed is not None and (scene, cam, int(frame)) not in allowed:
                continue
            entity = geo / f"frame.{frame}.render_entity_id.hdf5"
            items.append((f"{scene}/{cam}/{frame}", color, depth, entity if entity.exists() else None))
        if not items:
            raise NoInputError(f"{self.root}: no ai_*/images/scene_cam_*_final_hdf5/frame.*.color.hdf5 with depth")
        self.items = items

    def load(self, index: int) -> dict:
        sid, color_path, depth_path, entity_path = self.items[index]
        color = _read_h5(color_path)
        dist = _read_h5(depth_path).astype(np.float64)
        if color.ndim != 3 or color.shape[2] != 3 or color.shape[:2] != dist.shape:
            raise InputDataError(f"{color_path}: colour {color.shape} does not match depth {dist.shape}")
        ent_valid = None
        if entity_path is not None:
            ent_valid = _read_h5(entity_path) != -1
        valid = np.isfinite(dist)
        depth = hypersim_distance_to_depth(np.where(valid, dist, 0.0), self.fov_deg)
        if self.max_depth is not None:
            valid &= depth <= self.max_depth
        rgb = hypersim_tonemap(color, ent_valid)
        return to_sample(rgb, depth, valid, sid)


# --------------------------------------------------------------------------- #
# Virtual KITTI 2
# --------------------------------------------------------------------------- #
class VirtualKITTI2Dataset(_Base):
    """Virtual KITTI 2 in its official layout::

        root/SceneXX/<variation>/frames/rgb/Camera_C/rgb_NNNNN.jpg
        depth_root/SceneXX/<variation>/frames/depth/Camera_C/depth_NNNNN.png   uint16 centimetres

    (``depth_root`` defaults to ``root``: the rgb and depth archives extracted
    into one tree). Depth = png / 100 m; 65535 (sky) and anything beyond
    ``max_depth`` (80 m, as Marigold trains) is invalid. ``kb_crop``: crop both
    maps to the KITTI benchmark 352 x 1216 (bottom rows, central columns), as
    Marigold trains. ``variations`` default
    to all found (clone, fog, morning, overcast, rain, sunset, 15/30-deg-left/right).
    ids are ``SceneXX/<variation>/Camera_C/NNNNN``.
    """

    def __init__(self, root: str | os.PathLike, scenes: Sequence[str] | None = None,
                 variations: Sequence[str] | None = None, cameras: Sequence[str] = ("Camera_0",),
                 depth_root: str | os.PathLike | None = None, max_depth: float = 80.0,
                 transform: Callable[[dict], dict] | None = None, kb_crop: bool = False):
        super().__init__(transform)
        self.root = Path(root)
        self.depth_root = Path(depth_root) if depth_root else self.root
        self.kb_crop = bool(kb_crop)
        if not self.root.is_dir():
            raise NoInputError(f"{self.root}: Virtual KITTI 2 folder not found")
        if not max_depth > 0:
            raise UsageError(f"`max_depth` must be > 0, got {max_depth}")
        self.max_depth = float(max_depth)
        items = []
        for rgb in sorted(self.root.glob("Scene*/*/frames/rgb/*/rgb_*.jpg")):
            cam = rgb.parent.name
            var = rgb.parts[-5]
            scene = rgb.parts[-6]
            if scenes is not None and scene not in scenes:
                continue
            if variations is not None and var not in variations:
                continue
            if cam not in cameras:
                continue
            num = rgb.stem[len("rgb_"):]
            depth = self.depth_root / scene / var / "frames" / "depth" / cam / f"depth_{num}.png"
            if depth.exists():
                items.append((f"{scene}/{var}/{cam}/{num}", rgb, depth))
        if not items:
            raise NoInputError(f"{self.root}: no SceneXX/<variation>/frames/rgb/Camera_0/rgb_NNNNN.jpg "
                               "with a matching frames/depth/.../depth_NNNNN.png")
        self.items = items

    def load(self, index: int) -> dict:
        sid, rgb_path, depth_path = self.items[index]
        raw = decode_uint16_map(read_file(depth_path), str(depth_path), "depth in centimetres")
        rgb = read_rgb(rgb_path)
        if self.kb_crop:
            from betterdepth_cli.evaluation.protocol import kb_crop

            rgb, raw = kb_crop(rgb), kb_crop(raw)
        depth = raw.astype(np.float64) / 100.0
        valid = (raw < 65535) & (depth > 1e-5) & (depth <= self.max_depth)
        return to_sample(rgb, depth, valid, sid)


# --------------------------------------------------------------------------- #
# mixing
# --------------------------------------------------------------------------- #
class MixedDataset(Dataset):
    """Samples from several datasets with probabilities ``weights`` (normalised).

    Item i draws (dataset, index) from a generator seeded by (seed, epoch, i), so
    the stream is reproducible and independent of DataLoader workers; call
    :meth:`set_epoch` for new draws. ``length`` defaults to the sum of the
    lengths. Marigold trained with 0.9 Hypersim / 0.1 Virtual KITTI. Samples of
    different sizes need a fixed-size crop before batching.
    """

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float] | None = None, seed: int = 0,
                 length: int | None = None):
        if not datasets:
            raise UsageError("`datasets` must not be empty")
        w = np.ones(len(datasets)) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (len(datasets),) or (w < 0).any() or not w.sum() > 0:
            raise UsageError(f"`weights` must be {len(datasets)} non-negative numbers with a positive sum, got {weights}")
        if any(len(d) == 0 for d in datasets):
            raise UsageError("every dataset in `datasets` must be non-empty")
        self.datasets = list(datasets)
        self.probs = w / w.sum()
        self.seed = int(seed)
        self.epoch = 0
        self.length = int(length) if length is not None else sum(len(d) for d in datasets)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def pick(self, index: int) -> tuple[int, int]:
        """(dataset number, index in it) of item ``index``."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        k = int(rng.choice(len(self.datasets), p=self.probs))
        return k, int(rng.integers(0, len(self.datasets[k])))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        k, j = self.pick(index)
        return self.datasets[k][j]
