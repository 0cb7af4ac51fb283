"""``folder``: any RGB + depth/disparity described by a ``dataset.toml`` at the root."""


from __future__ import annotations

import io
import math
import os
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from betterdepth_cli.core.types import InputDataError, NoInputError
from betterdepth_cli.evaluation import protocol as P
from betterdepth_cli.evaluation.dataset_base import IMAGE_EXTS, DataRoot, DatasetLoader, Entry, Sample, check_same_size, path_stem
from betterdepth_cli.io.depth_files import decode_pfm, load_npy




# --------------------------------------------------------------------------- folder
from betterdepth_cli.io.images import decode_raster


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
    incomplete_is_error = True  # every image under `images` has its map: a missing one is exit 65 or skipped
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
        files = self._maps_for(rgb_rel)
        return None if None in files else files

    def _maps_for(self, rgb_rel: str) -> tuple[str | None, ...]:
        """The ground truth (and the mask, with ``masks``) of an image: each file found, or None."""
        img_dir = self._folder("images")
        rel = rgb_rel[len(img_dir):] if rgb_rel.startswith(img_dir) else PurePosixPath(rgb_rel).name
        stem = path_stem(rel)
        gt = self._find_with_stem(self._folder("ground_truth") + stem)
        if "masks" not in self.cfg:
            return (gt,)
        return gt, self._find_with_stem(self._folder("masks") + stem, GT_EXTS + IMAGE_EXTS)

    def _is_image(self, rel: str) -> bool:
        """An image file under ``images`` that is not in the ground-truth or mask folder nested inside it."""
        img_dir = self._folder("images")
        if not (rel.startswith(img_dir) and rel.lower().endswith(IMAGE_EXTS)):
            return False
        nested = [self._folder(k) for k in ("ground_truth", "masks") if k in self.cfg]
        return not any(d != img_dir and d.startswith(img_dir) and rel.startswith(d) for d in nested)

    def discover(self) -> list[Entry]:
        img_dir = self._folder("images")
        out, lacking = [], []
        for rel in self.root.files():
            if self._is_image(rel):
                files = self._maps_for(rel)
                if None in files:
                    lacking.append((rel, files))
                else:
                    out.append(Entry(path_stem(rel[len(img_dir):]), (rel, *files)))
        if not out:  # no ground truth at all: the layout is wrong, not a few samples
            self.layout = (
                f"images under {self.root.where(img_dir or '.')} with maps of the same name under "
                f"{self.root.where(self._folder('ground_truth') or '.')} ({', '.join(GT_EXTS)})"
            )
            return out
        for rel, files in lacking:  # reported as the other loaders do (exit 65, or skipped and counted)
            self._lacks(rel, self._expected(rel, files, out), path_stem(rel[len(img_dir):]))
        return out

    def _expected(self, rgb_rel: str, files: tuple[str | None, ...], found: list[Entry]) -> str:
        """The first missing map of an image, named with the extension most maps of its kind have."""
        from collections import Counter

        i = files.index(None)
        folder = self._folder("ground_truth" if i == 0 else "masks")
        ext = Counter(PurePosixPath(e.files[i + 1]).suffix for e in found).most_common(1)[0][0]
        return folder + path_stem(rgb_rel[len(self._folder("images")):]) + ext

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
        return Entry(path_stem(rgb), files)

    def _read_map(self, rel: str) -> np.ndarray:
        where = self.root.where(rel)
        low = rel.lower()
        if low.endswith(".npy"):
            arr = load_npy(io.BytesIO(self.root.read(rel)), where)
        elif low.endswith(".pfm"):
            arr = decode_pfm(self.root.read(rel), where)
        elif low.endswith(".exr"):
            from betterdepth_cli.io.depth_files import read_exr

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
        check_same_size(rgb, raw, self.root.where(rgb_rel), self.root.where(gt_rel))
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
