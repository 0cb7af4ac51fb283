"""Training data as Marigold ships it: a folder or a ``.tar`` and a file list of ``rgb depth`` pairs.

- Hypersim, from Marigold's ``script/depth/dataset_preprocess/hypersim/preprocess_hypersim.py``
  (optionally tarred: ``cd processed/train && tar -cf ../../hypersim_processed_train.tar .``)::

      <scene>/rgb_cam_XX_frNNNN.png           tone-mapped 8-bit RGB
      <scene>/depth_plane_cam_XX_frNNNN.png   uint16 planar depth in millimetres, 0 = invalid

  listed by ``data_split/hypersim_depth/filename_list_train_filtered.txt`` (Marigold v1.1;
  ``data_split/hypersim/filename_list_train_filtered.txt`` in v1.0). Without a list every
  ``rgb_cam_*`` with its ``depth_plane_*`` is used. ids are ``<scene>/cam_XX/NNNN`` (as
  :class:`training.datasets.HypersimDataset`'s).
- Virtual KITTI 2, as Marigold's ``vkitti.tar`` (``rgb/SceneXX/...jpg depth/SceneXX/...png`` in
  ``data_split/vkitti_depth/vkitti_train.txt``): uint16 centimetres, 65535 (sky) invalid, at most
  ``max_depth`` (80 m); ``kb_crop`` (Marigold's default for training) crops to the KITTI benchmark
  352 x 1216 (bottom rows, central columns).

- Virtual KITTI 2 as its two official archives (``vkitti_2.0.3_rgb.tar``, ``vkitti_2.0.3_depth.tar``:
  ``SceneXX/<variation>/frames/rgb|depth/Camera_C/...``), read without extracting them
  (:func:`vkitti2_archive`).
- The generic folder format of :class:`training.datasets.FolderDataset` packed in a ``.tar``
  (:class:`TarFolderDataset`).

Members of a tar are read one by one (nothing is extracted); each DataLoader worker opens the
archive itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

from betterdepth_cli.core.types import InputDataError, NoInputError
from betterdepth_cli.evaluation.dataset_base import DataRoot
from betterdepth_cli.evaluation.protocol import kb_crop as kitti_benchmark_crop
from betterdepth_cli.io.images import decode_rgb, decode_uint16_map
from training.datasets import (DEPTH_EXTS, RGB_EXTS, _DEFAULT_CFG, _Base, decode_depth, decode_depth_raw,
                               parse_folder_config, read_depth_raw, to_sample)

VKITTI_RGB = re.compile(r"^(?:(?P<prefix>.*)/)?(?P<scene>Scene\d+)/(?P<var>[^/]+)/frames/rgb/(?P<cam>Camera_\d+)/"
                        r"rgb_(?P<num>\d+)\.jpg$")
HYPERSIM_RGB = re.compile(r"^(?P<dir>(?:.*/)?(?P<scene>[^/]+))/rgb_(?P<cam>cam_\d+)_fr(?P<frame>\d+)\.png$")


def read_pairs(filenames: str | os.PathLike) -> list[tuple[str, str]]:
    """A Marigold split file: one ``rgb_path depth_path [...]`` per line -> [(rgb, depth)]."""
    path = Path(filenames)
    if not path.is_file():
        raise NoInputError(f"{path}: file list not found (Marigold's data_split/...; see training/recipes)")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        cols = line.split()
        if not cols or cols[0].startswith("#"):
            continue
        if len(cols) < 2:
            raise InputDataError(f"{path}:{number}: expected 'rgb_path depth_path', got {line.strip()!r}")
        pairs.append((cols[0], cols[1]))
    if not pairs:
        raise NoInputError(f"{path}: the file list is empty")
    return pairs


def hypersim_pairs(root: DataRoot) -> list[tuple[str, str]]:
    """Every ``<scene>/rgb_cam_XX_frNNNN.png`` with its ``depth_plane_cam_XX_frNNNN.png``."""
    pairs = []
    for rel in root.files():
        m = HYPERSIM_RGB.match(rel)
        if m:
            depth = f"{m['dir']}/depth_plane_{m['cam']}_fr{m['frame']}.png"
            if root.exists(depth):
                pairs.append((rel, depth))
    return pairs


def hypersim_id(rgb: str) -> str:
    m = HYPERSIM_RGB.match(rgb)
    return f"{m['scene']}/{m['cam']}/{m['frame']}" if m else rgb.rsplit(".", 1)[0]


class _ArchiveRoots:
    """Folders or archives opened once per process (DataLoader workers fork; a tar handle must not
    be shared), dropped when the dataset is pickled."""

    _roots: dict
    _pid: int = -1

    def data_root(self, path: Path, name: str) -> DataRoot:
        if self._pid != os.getpid():
            self._roots, self._pid = {}, os.getpid()
        if path not in self._roots:
            self._roots[path] = DataRoot(path, name)
        return self._roots[path]

    def __getstate__(self):
        return {**self.__dict__, "_roots": {}, "_pid": -1}


class SplitListDataset(_ArchiveRoots, _Base):
    """``rgb depth`` pairs from a folder or a ``.tar`` (see the module docstring).

    ``depth_scale``: metres per stored unit; ``invalid``: stored values that mean no depth;
    ``max_depth``: farther pixels are invalid; ``kb_crop``: KITTI benchmark crop of both maps.
    """

    def __init__(self, root: str | os.PathLike, pairs: list[tuple[str, str]] | None = None, *,
                 filenames: str | os.PathLike | None = None, depth_root: str | os.PathLike | None = None,
                 depth_scale: float = 0.001,
                 invalid: tuple[int, ...] = (0,), max_depth: float | None = None, kb_crop: bool = False,
                 ids: Callable[[str], str] = hypersim_id, transform: Callable[[dict], dict] | None = None,
                 name: str = "dataset"):
        super().__init__(transform)
        self.root_path = Path(root)
        self.depth_path = Path(depth_root) if depth_root else self.root_path
        self.name = name
        root_now = self.root()
        if pairs is None:
            pairs = read_pairs(filenames) if filenames is not None else hypersim_pairs(root_now)
        if not pairs:
            raise NoInputError(f"{name}: no rgb_cam_XX_frNNNN.png / depth_plane_... pairs in {self.root_path}")
        missing = next((p for p in pairs[:64] if not root_now.exists(p[0])), None)
        if missing is not None:
            raise NoInputError(f"{name}: {root_now.where(missing[0])} is listed but not in the data root")
        self.depth_scale, self.invalid, self.max_depth, self.kb_crop = depth_scale, invalid, max_depth, kb_crop
        self.items = [(ids(rgb), rgb, depth) for rgb, depth in pairs]

    def root(self) -> DataRoot:
        return self.data_root(self.root_path, self.name)

    @property
    def ids(self) -> list[str]:
        return [it[0] for it in self.items]

    def load(self, index: int) -> dict:
        sid, rgb_rel, depth_rel = self.items[index]
        root, droot = self.root(), self.data_root(self.depth_path, self.name)
        rgb = decode_rgb(root.read(rgb_rel), root.where(rgb_rel))
        raw = decode_uint16_map(droot.read(depth_rel), droot.where(depth_rel), "depth")
        if self.kb_crop:
            rgb, raw = kitti_benchmark_crop(rgb), kitti_benchmark_crop(raw)
        depth = raw.astype(np.float64) * self.depth_scale
        valid = ~np.isin(raw, self.invalid) & (depth > 0)
        if self.max_depth is not None:
            valid &= depth <= self.max_depth
        return to_sample(rgb, depth, valid, sid, droot.where(depth_rel))


def marigold_hypersim(root: str | os.PathLike, filenames: str | os.PathLike | None = None,
                      max_depth: float | None = None, transform=None) -> SplitListDataset:
    """Marigold's preprocessed Hypersim (folder or tar), optionally restricted to its filtered list."""
    return SplitListDataset(root, filenames=filenames, depth_scale=0.001, invalid=(0,), max_depth=max_depth,
                            transform=transform, name="hypersim (Marigold preprocessed)")


def marigold_vkitti(root: str | os.PathLike, filenames: str | os.PathLike, kb_crop: bool = True,
                    max_depth: float = 80.0, transform=None) -> SplitListDataset:
    """Marigold's Virtual KITTI 2 tar/folder and file list (centimetres; 65535 sky)."""
    return SplitListDataset(root, filenames=filenames, depth_scale=0.01, invalid=(0, 65535), max_depth=max_depth,
                            kb_crop=kb_crop, ids=lambda rgb: rgb.rsplit(".", 1)[0], transform=transform,
                            name="vkitti2 (Marigold list)")


def vkitti2_archive(root: str | os.PathLike, depth_root: str | os.PathLike | None = None,
                    scenes=None, variations=None, cameras=("Camera_0",), max_depth: float = 80.0,
                    kb_crop: bool = False, transform=None) -> SplitListDataset:
    """Virtual KITTI 2 from its archives (or any folder/tar holding ``SceneXX/<variation>/frames/rgb/...``):
    ``root`` the rgb tar, ``depth_root`` the depth tar (default: the same). Marigold's ``vkitti.tar``
    (``rgb/...`` beside ``depth/...``) works too. ids as :class:`training.datasets.VirtualKITTI2Dataset`'s."""
    rgb_root = DataRoot(root, "vkitti2")
    depth_root_ = DataRoot(depth_root, "vkitti2") if depth_root else rgb_root
    pairs, ids = [], {}
    for rel in rgb_root.files():
        m = VKITTI_RGB.match(rel)
        if not m or (scenes and m["scene"] not in scenes) or (variations and m["var"] not in variations) \
                or m["cam"] not in cameras:
            continue
        depth = f"{m['scene']}/{m['var']}/frames/depth/{m['cam']}/depth_{m['num']}.png"
        for candidate in (depth, f"{m['prefix']}/{depth}" if m["prefix"] else depth, f"depth/{depth}"):
            if depth_root_.exists(candidate):
                pairs.append((rel, candidate))
                ids[rel] = f"{m['scene']}/{m['var']}/{m['cam']}/{m['num']}"
                break
    if not pairs:
        raise NoInputError(f"vkitti2: no SceneXX/<variation>/frames/rgb/Camera_0/rgb_NNNNN.jpg with its "
                           f"frames/depth/.../depth_NNNNN.png in {root}{f' and {depth_root}' if depth_root else ''}")
    return SplitListDataset(root, pairs, depth_root=depth_root, depth_scale=0.01, invalid=(0, 65535),
                            max_depth=max_depth, kb_crop=kb_crop, ids=ids.__getitem__, transform=transform,
                            name="vkitti2")


class TarFolderDataset(_ArchiveRoots, _Base):
    """The generic folder format (:class:`training.datasets.FolderDataset`: ``dataset.toml``,
    ``rgb/<id>``, ``depth/<id>``, optional ``mask/<id>``) read from a ``.tar``."""

    def __init__(self, root: str | os.PathLike, transform: Callable[[dict], dict] | None = None, ids=None):
        super().__init__(transform)
        self.root_path = Path(root)
        data = self.root()
        self.config = (parse_folder_config(data.read("dataset.toml"), data.where("dataset.toml"))
                       if data.exists("dataset.toml") else {})
        cfg = self.config or _DEFAULT_CFG
        by_dir = {key: self._by_stem(data, cfg[key], exts) for key, exts in
                  (("images", RGB_EXTS), ("ground_truth", DEPTH_EXTS), ("masks", (".png",) + DEPTH_EXTS))}
        self.items = [(sid, rgb, by_dir["ground_truth"][sid], by_dir["masks"].get(sid))
                      for sid, rgb in by_dir["images"].items() if sid in by_dir["ground_truth"]
                      and (ids is None or sid in set(ids))]
        if not self.items:
            raise NoInputError(f"{self.root_path}: no {cfg['images']}/<id> with a matching {cfg['ground_truth']}/<id>")
        if not self.config and any(not it[2].endswith((".npy", ".exr")) for it in self.items):
            raise InputDataError(f"{data.where('dataset.toml')}: missing; PNG/TIFF/PFM depth needs [depth] units and scale")

    def root(self) -> DataRoot:
        return self.data_root(self.root_path, "folder")

    @staticmethod
    def _by_stem(data: DataRoot, folder: str, exts: tuple[str, ...]) -> dict[str, str]:
        """id -> member (relative to the root; an archive's single top folder, ``set/rgb/...``, is skipped
        as :class:`DataRoot` skips it when reading)."""
        names = data.files()
        tops = {n.split("/", 1)[0] for n in names if "/" in n}
        top = tops.pop() + "/" if len(tops) == 1 and folder.strip("/") not in tops else ""
        out: dict[str, str] = {}
        prefix = top + folder.strip("/") + "/"
        for name in names:
            if name.startswith(prefix) and os.path.splitext(name)[1].lower() in exts:
                rel = name[len(top):]
                out.setdefault(os.path.splitext(rel[len(folder.strip("/")) + 1:])[0], rel)
        return out

    @property
    def ids(self) -> list[str]:
        return [it[0] for it in self.items]

    def _stored(self, rel: str) -> np.ndarray:
        data = self.root()
        ext = os.path.splitext(rel)[1].lower()
        if ext == ".exr":  # OpenEXR reads files: a temporary copy of the member
            path, temporary = data.local_path(rel)
            try:
                return read_depth_raw(path)
            finally:
                if temporary:
                    os.unlink(path)
        return decode_depth_raw(data.read(rel), data.where(rel), ext)

    def load(self, index: int) -> dict:
        sid, rgb_rel, depth_rel, mask_rel = self.items[index]
        depth, valid = decode_depth(self._stored(depth_rel), **(self.config or _DEFAULT_CFG))
        if mask_rel is not None:
            mask = self._stored(mask_rel)
            if mask.shape != depth.shape:
                raise InputDataError(f"{self.root().where(mask_rel)}: mask size {mask.shape} differs from depth "
                                     f"{depth.shape}")
            valid &= mask > 0
        data = self.root()
        return to_sample(decode_rgb(data.read(rgb_rel), data.where(rgb_rel)), depth, valid, sid, data.where(depth_rel))
