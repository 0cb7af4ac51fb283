"""Loaders of the public benchmarks: NYUv2, KITTI, ETH3D, ScanNet, DIODE, Middlebury (layouts in :mod:`.datasets`)."""


from __future__ import annotations

import io
import math
import re
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from betterdepth_cli.core.pixels import area_resize
from betterdepth_cli.core.types import InputDataError
from betterdepth_cli.evaluation import protocol as P
from betterdepth_cli.evaluation.dataset_base import DatasetLoader, Entry, Sample, check_same_size, natural_key, path_stem
from betterdepth_cli.io.depth_files import decode_pfm, load_npy




# --------------------------------------------------------------------------- NYUv2
from betterdepth_cli.io.images import decode_raster


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
        return Entry(path_stem(rgb), (rgb, gt))

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
                    out.append(Entry(path_stem(img), (img, rel)))
        return out

    def entry_from_line(self, cols: list[str]) -> Entry | None:
        if len(cols) < 2:
            raise InputDataError(f"{self.name}: split lines need an image and a ground-truth path, got {cols!r}")
        if cols[1] == "None":
            return None
        return Entry(path_stem(cols[0]), (cols[0], cols[1]))

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
                out.append(Entry(path_stem(img), (img, rel)))
        return out

    def entry_from_line(self, cols: list[str]) -> Entry:
        if len(cols) < 2:
            raise InputDataError(f"{self.name}: split lines need an image and a depth path, got {cols!r}")
        return Entry(path_stem(cols[0]), (cols[0], cols[1]))

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
        return Entry(path_stem(rgb), (rgb, gt))

    def load(self, entry: Entry) -> Sample:
        rgb, depth, _ = self.read_png16_sample(entry, 1000.0, "depth in millimetres", same_size=False)
        meta: dict[str, Any] = {"files": list(entry.files)}
        if rgb.shape[:2] != depth.shape:
            meta["rgb_resized_from"] = [rgb.shape[1], rgb.shape[0]]
            rgb = area_resize(rgb, depth.shape[1], depth.shape[0])
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
        stem = path_stem(rgb)
        files = (rgb, cols[1] if len(cols) > 1 else f"{stem}_depth.npy", cols[2] if len(cols) > 2 else f"{stem}_depth_mask.npy")
        return Entry(stem, files) if self._keep(rgb) else None

    def load(self, entry: Entry) -> Sample:
        rgb_rel, gt_rel, mask_rel = entry.files[:3]
        rgb = self.read_rgb(rgb_rel)
        depth = np.squeeze(load_npy(io.BytesIO(self.root.read(gt_rel)), self.root.where(gt_rel))).astype(np.float32)
        mask = np.squeeze(load_npy(io.BytesIO(self.root.read(mask_rel)), self.root.where(mask_rel)))
        check_same_size(rgb, depth, self.root.where(rgb_rel), self.root.where(gt_rel))
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
                    new.append(Entry(path_stem(rel), (rel, f"{m[1]}{disp}", f"{m[1]}calib.txt")))
                    break
            else:
                missing = f"{m[1]}calib.txt" if any(f"{m[1]}{d}" in present for d in ("disp0GT.pfm", "disp0.pfm")) \
                    else f"{m[1]}disp0GT.pfm"
                self._lacks(rel, missing)
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
        return Entry(path_stem(rgb), files)

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
        check_same_size(rgb, disp, self.root.where(rgb_rel), where)
        depth = P.gt_to_depth(disp, "disparity", scale)
        valid = known & (disp > 0) & self.range_valid(depth)
        meta["files"] = list(entry.files)
        return Sample(entry.id, rgb, disp, "disparity", valid, disparity_scale=scale, meta=meta)
