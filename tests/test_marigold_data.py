"""Training data as people have it (#23): Marigold's preprocessed Hypersim tar with its filtered
list, Virtual KITTI 2 from Marigold's tar, and the KITTI benchmark crop."""

from __future__ import annotations

import tarfile

import cv2
import numpy as np
import pytest
import torch

from training.datasets import VirtualKITTI2Dataset
from training.split_datasets import marigold_hypersim, marigold_vkitti, read_pairs
from training.trainer import build_dataset


def _mm_pattern(h=12, w=16, seed=0) -> np.ndarray:
    mm = np.random.default_rng(seed).integers(500, 20000, size=(h, w)).astype(np.uint16)
    mm[0, :3] = 0  # Marigold writes invalid (NaN) depth as 0
    return mm


def _marigold_hypersim_tar(tmp_path):
    """processed/train/<scene>/rgb_cam_00_frNNNN.png + depth_plane_..., tarred as Marigold's README does."""
    src = tmp_path / "processed" / "train" / "ai_001_001"
    src.mkdir(parents=True)
    rgbs, depths = [], []
    for frame in range(2):
        rgb = np.random.default_rng(frame).integers(0, 255, size=(12, 16, 3)).astype(np.uint8)
        cv2.imwrite(str(src / f"rgb_cam_00_fr{frame:04d}.png"), rgb[..., ::-1])
        mm = _mm_pattern(seed=frame)
        cv2.imwrite(str(src / f"depth_plane_cam_00_fr{frame:04d}.png"), mm)
        rgbs.append(rgb)
        depths.append(mm)
    archive = tmp_path / "hypersim_processed_train.tar"
    with tarfile.open(archive, "w") as tar:  # cd processed/train && tar -cf ../../hypersim_processed_train.tar .
        tar.add(tmp_path / "processed" / "train", arcname=".")
    split = tmp_path / "filename_list_train_filtered.txt"
    split.write_text("ai_001_001/rgb_cam_00_fr0001.png ai_001_001/depth_plane_cam_00_fr0001.png\n")
    return archive, split, rgbs, depths


def test_marigold_hypersim_tar_with_its_filtered_list(tmp_path):
    archive, split, rgbs, depths = _marigold_hypersim_tar(tmp_path)
    ds = marigold_hypersim(archive, filenames=split)
    assert len(ds) == 1 and ds.ids == ["ai_001_001/cam_00/0001"]
    s = ds[0]
    np.testing.assert_allclose(s["depth"][0].numpy(), np.where(depths[1] > 0, depths[1] / 1000.0, 0), rtol=1e-6)
    assert not s["valid"][0, 0, :3].any() and s["valid"].sum() == 12 * 16 - 3
    np.testing.assert_allclose(s["rgb"].permute(1, 2, 0).numpy(), rgbs[1] / 255.0, atol=1e-6)
    # without a list: every pair in the archive; through the recipe's spec, the same loader
    assert len(marigold_hypersim(archive)) == 2
    via_recipe = build_dataset({"type": "hypersim", "root": str(archive), "filenames": str(split)}, tmp_path)
    torch.testing.assert_close(via_recipe[0]["depth"], s["depth"])
    # workers open the archive themselves
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1)
    torch.testing.assert_close(next(iter(loader))["depth"][0], s["depth"])


def test_split_list_errors_name_the_file(tmp_path):
    archive, split, _, _ = _marigold_hypersim_tar(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("ai_001_001/rgb_cam_00_fr0009.png ai_001_001/depth_plane_cam_00_fr0009.png\n")
    with pytest.raises(Exception, match="rgb_cam_00_fr0009.png is listed but not in the data root"):
        marigold_hypersim(archive, filenames=bad)
    with pytest.raises(Exception, match="file list not found"):
        read_pairs(tmp_path / "missing.txt")


def _vkitti_frame(h=375, w=1242):
    cm = np.full((h, w), 1500, np.uint16)
    cm[23 + 5, 13 + 7] = 4321  # lands at (5, 7) after the KITTI benchmark crop (top 23, left 13)
    cm[0, 0] = 65535  # sky, outside the crop
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[23 + 5, 13 + 7] = 255
    return rgb, cm


def test_vkitti2_kitti_benchmark_crop_raw_layout_and_marigold_tar(tmp_path):
    rgb, cm = _vkitti_frame()
    raw = tmp_path / "vkitti2"
    (raw / "Scene01/clone/frames/rgb/Camera_0").mkdir(parents=True)
    (raw / "Scene01/clone/frames/depth/Camera_0").mkdir(parents=True)
    cv2.imwrite(str(raw / "Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg"), rgb, [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(raw / "Scene01/clone/frames/depth/Camera_0/depth_00000.png"), cm)
    full = VirtualKITTI2Dataset(raw)[0]
    assert full["depth"].shape == (1, 375, 1242) and not full["valid"][0, 0, 0]
    cropped = VirtualKITTI2Dataset(raw, kb_crop=True)[0]
    assert cropped["depth"].shape == (1, 352, 1216) and cropped["rgb"].shape == (3, 352, 1216)
    assert cropped["depth"][0, 5, 7] == pytest.approx(43.21) and cropped["depth"][0, 0, 0] == pytest.approx(15.0)
    assert cropped["rgb"][:, 5, 7].min() > 0.9
    # Marigold's vkitti.tar layout (rgb/... depth/...) with its list; kb_crop is on by default there
    with tarfile.open(tmp_path / "vkitti.tar", "w") as tar:
        tar.add(raw / "Scene01", arcname="rgb/Scene01")
        tar.add(raw / "Scene01", arcname="depth/Scene01")
    split = tmp_path / "vkitti_train.txt"
    split.write_text("rgb/Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg "
                     "depth/Scene01/clone/frames/depth/Camera_0/depth_00000.png\n")
    listed = marigold_vkitti(tmp_path / "vkitti.tar", split)[0]
    torch.testing.assert_close(listed["depth"], cropped["depth"])
    assert build_dataset({"type": "vkitti2", "root": str(tmp_path / "vkitti.tar"), "filenames": str(split)},
                         tmp_path)[0]["depth"].shape == (1, 352, 1216)


def test_vkitti2_official_archives_read_without_extracting(tmp_path):
    rgb, cm = _vkitti_frame()
    for part, name, data in (("rgb", "rgb_00000.jpg", rgb), ("depth", "depth_00000.png", cm)):
        folder = tmp_path / part / "Scene01/clone/frames" / part / "Camera_0"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / name), data, [cv2.IMWRITE_JPEG_QUALITY, 100])
        with tarfile.open(tmp_path / f"vkitti_2.0.3_{part}.tar", "w") as tar:
            tar.add(tmp_path / part / "Scene01", arcname="Scene01")
    spec = {"type": "vkitti2", "root": str(tmp_path / "vkitti_2.0.3_rgb.tar"),
            "depth_root": str(tmp_path / "vkitti_2.0.3_depth.tar"), "kb_crop": True}
    ds = build_dataset(spec, tmp_path)
    assert ds.ids == ["Scene01/clone/Camera_0/00000"]  # the raw loader's ids
    s = ds[0]
    assert s["depth"].shape == (1, 352, 1216) and s["depth"][0, 5, 7] == pytest.approx(43.21)


def test_generic_folder_format_from_a_tar(tmp_path):
    from training.datasets import FolderDataset

    src = tmp_path / "set"
    (src / "rgb" / "a").mkdir(parents=True)
    (src / "depth" / "a").mkdir(parents=True)
    (src / "dataset.toml").write_text('[depth]\nunits = "mm"\nscale = 1.0\nkind = "depth"\ninvalid_value = 0\n')
    cv2.imwrite(str(src / "rgb" / "a" / "x.png"), np.full((12, 16, 3), 100, np.uint8))
    cv2.imwrite(str(src / "depth" / "a" / "x.png"), _mm_pattern())
    np.save(src / "depth" / "a" / "y.npy", np.ones((12, 16), np.float32))  # no rgb: not a sample
    with tarfile.open(tmp_path / "set.tar", "w") as tar:
        tar.add(src, arcname="set")
    ds = build_dataset({"type": "folder", "root": str(tmp_path / "set.tar")}, tmp_path)
    want = FolderDataset(src)[0]
    assert ds.ids == ["a/x"] == FolderDataset(src).ids
    for key in ("rgb", "depth", "valid"):
        torch.testing.assert_close(ds[0][key], want[key])
