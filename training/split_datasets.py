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
from betterdepth_cli.evaluation.datasets import DataRoot
from betterdepth_cli.evaluation.protocol import kb_crop as kitti_benchmark_crop
from betterdepth_cli.io.images import decode_rgb, decode_uint16_map
from training.datasets import _Base, to_sample

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


class SplitListDataset(_Base):
    """``rgb depth`` pairs from a folder or a ``.tar`` (see the module docstring).

    ``depth_scale``: metres per stored unit; ``invalid``: stored values that mean no depth;
    ``max_depth``: farther pixels are invalid; ``kb_crop``: KITTI benchmark crop of both maps.
    """

    def __init__(self, root: str | os.PathLike, pairs: list[tuple[str, str]] | None = None, *,
                 filenames: str | os.PathLike | None = None, depth_scale: float = 0.001,
                 invalid: tuple[int, ...] = (0,), max_depth: float | None = None, kb_crop: bool = False,
                 ids: Callable[[str], str] = hypersim_id, transform: Callable[[dict], dict] | None = None,
                 name: str = "dataset"):
        super().__init__(transform)
        self.root_path = Path(root)
        self.name = name
        self._root: DataRoot | None = None
        self._pid = -1
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
        """The folder or archive, opened once per process (DataLoader workers fork)."""
        if self._root is None or self._pid != os.getpid():
            self._root = DataRoot(self.root_path, self.name)
            self._pid = os.getpid()
        return self._root

    def __getstate__(self):
        return {**self.__dict__, "_root": None, "_pid": -1}

    @property
    def ids(self) -> list[str]:
        return [it[0] for it in self.items]

    def load(self, index: int) -> dict:
        sid, rgb_rel, depth_rel = self.items[index]
        root = self.root()
        rgb = decode_rgb(root.read(rgb_rel), root.where(rgb_rel))
        raw = decode_uint16_map(root.read(depth_rel), root.where(depth_rel), "depth")
        if self.kb_crop:
            rgb, raw = kitti_benchmark_crop(rgb), kitti_benchmark_crop(raw)
        depth = raw.astype(np.float64) * self.depth_scale
        valid = ~np.isin(raw, self.invalid) & (depth > 0)
        if self.max_depth is not None:
            valid &= depth <= self.max_depth
        return to_sample(rgb, depth, valid, sid)


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
