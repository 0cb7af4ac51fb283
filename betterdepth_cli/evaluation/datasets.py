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

import os
from typing import Any

from betterdepth_cli.core.types import UsageError
from betterdepth_cli.evaluation.benchmarks import (
    DIODEDataset,
    ETH3DDataset,
    KITTIDataset,
    MiddleburyDataset,
    NYUv2Dataset,
    ScanNetDataset,
)
from betterdepth_cli.evaluation.dataset_base import DatasetLoader
from betterdepth_cli.evaluation.folder_dataset import FolderDataset

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
        from betterdepth_cli.evaluation.sequences import SEQUENCE_DATASETS

        raise UsageError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}; sequences "
                         f"(temporal metrics): {', '.join(SEQUENCE_DATASETS)}")
    return DATASETS[name](root, split_file=split_file, limit=limit, **options)
