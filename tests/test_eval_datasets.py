"""Evaluation dataset loaders on files fabricated in each dataset's exact format."""

from __future__ import annotations

import math
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import real_data_dir

from betterdepth_cli.core.types import InputDataError, NoInputError, UsageError
from betterdepth_cli.evaluation import datasets as D
from betterdepth_cli.evaluation import protocol as P

REAL = real_data_dir()


def write_rgb(path: Path, rgb_u8: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb_u8[:, :, ::-1])


def write_grey(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def write_pfm(path: Path, arr: np.ndarray) -> None:
    h, w = arr.shape
    with open(path, "wb") as fh:
        fh.write(f"Pf\n{w} {h}\n-1.0\n".encode())
        fh.write(np.ascontiguousarray(arr[::-1].astype("<f4")).tobytes())


def rgb_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_tar(folder: Path, tar_path: Path) -> Path:
    with tarfile.open(tar_path, "w") as tf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                tf.add(p, arcname="./" + p.relative_to(folder).as_posix())
    return tar_path


# ----------------------------------------------------------------- NYUv2


def make_nyu_marigold(root: Path, n=2, h=48, w=64):
    lines = []
    for i in range(1, n + 1):
        scene = root / "test" / f"kitchen_{i:04d}"
        write_rgb(scene / f"rgb_{i:04d}.png", rgb_image(h, w, i))
        mm = np.full((h, w), 1000 * i, np.uint16)
        mm[0, 0] = 0  # no data
        mm[5, 5] = 12000  # beyond 10 m
        write_grey(scene / f"depth_{i:04d}.png", mm)
        write_grey(scene / f"filled_{i:04d}.png", np.full((h, w), 1, np.uint16))
        rel = f"test/kitchen_{i:04d}"
        lines.append(f"{rel}/rgb_{i:04d}.png {rel}/depth_{i:04d}.png {rel}/filled_{i:04d}.png")
    split = root.parent / "filename_list_test.txt"
    split.write_text("\n".join(lines) + "\n")
    return split


def test_nyuv2_marigold_layout_split_and_discovery(tmp_path):
    root = tmp_path / "nyu"
    split = make_nyu_marigold(root)
    for ds in (D.get_dataset("nyuv2", root, split_file=split), D.get_dataset("nyuv2", root)):
        assert len(ds) == 2
        s = next(iter(ds))
        assert s.id == "test/kitchen_0001/rgb_0001"
        assert s.rgb.dtype == np.float32 and s.rgb.shape == (48, 64, 3)
        np.testing.assert_allclose(s.rgb, rgb_image(48, 64, 1) / 255.0, atol=1e-7)
        assert s.gt_kind == "depth" and s.gt[10, 10] == pytest.approx(1.0)
        expected = P.nyu_eigen_mask((48, 64)).copy()
        expected[5, 5] = False
        assert np.array_equal(s.valid, expected)
    nocrop = D.get_dataset("nyuv2", root, eigen_crop="false", limit=1)
    s = next(iter(nocrop))
    assert len(nocrop) == 1 and not s.valid[0, 0] and not s.valid[5, 5] and s.valid[0, 1]


def test_nyuv2_tar_matches_folder(tmp_path):
    root = tmp_path / "nyu"
    split = make_nyu_marigold(root)
    tar = make_tar(root, tmp_path / "nyu_labeled_extracted.tar")
    a = list(D.get_dataset("nyuv2", root, split_file=split))
    b = list(D.get_dataset("nyuv2", tar, split_file=split))
    c = list(D.get_dataset("nyuv2", tar))
    assert [s.id for s in a] == [s.id for s in b] == [s.id for s in c]
    for x, y in zip(a, b):
        assert np.array_equal(x.rgb, y.rgb) and np.array_equal(x.gt, y.gt) and np.array_equal(x.valid, y.valid)


def test_nyuv2_flat_layout_and_errors(tmp_path):
    root = tmp_path / "flat"
    for i in (0, 1, 10, 2):
        write_rgb(root / f"image_{i}.png", rgb_image(480, 640, i))
        write_grey(root / f"depth_{i}.png", np.full((480, 640), 2500, np.uint16))
    ds = D.get_dataset("nyuv2", root)
    assert [e.id for e in ds.entries] == ["image_0", "image_1", "image_2", "image_10"]  # natural order
    s = next(iter(ds))
    assert s.valid.sum() == 426 * 560 and s.gt[100, 100] == pytest.approx(2.5)
    # an 8-bit depth map is malformed
    write_grey(root / "depth_2.png", np.full((480, 640), 3, np.uint8))
    with pytest.raises(InputDataError, match=r"depth_2\.png: expected a 16-bit single-channel PNG"):
        list(ds)
    # a split line pointing at a missing file names where it was expected
    split = tmp_path / "split.txt"
    split.write_text("# comment\n\nimage_0.png depth_0.png\nimage_7.png depth_7.png\n")
    with pytest.raises(InputDataError, match=r"image_7\.png \(line 4 of .*split\.txt\) not found, expected .*flat/image_7\.png"):
        D.get_dataset("nyuv2", root, split_file=split)
    with pytest.raises(NoInputError, match=r"nyuv2: data root .*missing does not exist"):
        D.get_dataset("nyuv2", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoInputError, match=r"nyuv2: no samples found in .*empty; expected Marigold's NYUv2 pack"):
        D.get_dataset("nyuv2", tmp_path / "empty")
    with pytest.raises(NoInputError, match="split file .*nope.txt does not exist"):
        D.get_dataset("nyuv2", root, split_file=tmp_path / "nope.txt")
    (tmp_path / "notatar.tar").write_text("hello")
    with pytest.raises(InputDataError, match="neither a folder nor a tar archive"):
        D.get_dataset("nyuv2", tmp_path / "notatar.tar")


def test_registry_and_options():
    assert set(D.DATASETS) == {"nyuv2", "kitti", "eth3d", "scannet", "diode", "middlebury", "folder"}
    with pytest.raises(UsageError, match="unknown dataset 'nyu'; valid datasets: nyuv2, kitti"):
        D.get_dataset("nyu", ".")
    with pytest.raises(UsageError, match="unknown dataset option 'crop' \\(valid: eigen_crop\\)"):
        D.get_dataset("nyuv2", ".", crop="garg")
    with pytest.raises(UsageError, match="option 'crop' must be one of eigen, garg, none"):
        D.get_dataset("kitti", ".", crop="kb")
    with pytest.raises(UsageError, match="`limit` must be a positive integer"):
        D.get_dataset("nyuv2", ".", limit=0)


# ----------------------------------------------------------------- KITTI


def test_kitti_eigen_split_with_kb_and_eigen_crop(tmp_path):
    root = tmp_path / "kitti"
    img_rel = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    gt_rel = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    h, w = 375, 1242
    rgb = rgb_image(h, w)
    write_rgb(root / img_rel, rgb)
    raw = np.zeros((h, w), np.uint16)
    raw[200:, :] = 256 * 20 + 128  # 20.5 m in the lower part, no data above
    raw[300, 600] = 256 * 90  # beyond 80 m
    write_grey(root / gt_rel, raw)
    split = tmp_path / "eigen_test_files_with_gt.txt"
    split.write_text(f"{img_rel} {gt_rel} 721.5377\n2011_09_26/x/image_02/data/0000000001.png None 721.5377\n")
    for ds in (D.get_dataset("kitti", root, split_file=split), D.get_dataset("kitti", root)):
        assert len(ds) == 1
        s = next(iter(ds))
        assert s.rgb.shape == (352, 1216, 3) and s.gt.shape == (352, 1216)
        np.testing.assert_allclose(s.rgb, rgb[23:, 13:1229] / 255.0, atol=1e-7)
        assert s.gt[300 - 23, 600 - 13] == 90.0
        expected = P.kitti_eval_mask((352, 1216), "eigen") & (raw[23:, 13:1229] > 0)
        expected[300 - 23, 600 - 13] = False
        assert np.array_equal(s.valid, expected)
        assert s.gt[250 - 23, 100] == pytest.approx(20.5)
    garg = next(iter(D.get_dataset("kitti", root, split_file=split, crop="garg")))
    expected = P.kitti_eval_mask((352, 1216), "garg") & (raw[23:, 13:1229] > 0)
    expected[300 - 23, 600 - 13] = False
    assert np.array_equal(garg.valid, expected)


# ----------------------------------------------------------------- ETH3D


def test_eth3d_raw_float_depth_and_size_check(tmp_path):
    root = tmp_path / "eth3d"
    h, w = 12, 18
    img_rel = "rgb/office/images/dslr_images/DSC_0219.JPG"
    gt_rel = "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG"
    write_rgb(root / img_rel, rgb_image(h, w))
    depth = np.linspace(0.5, 30.0, h * w, dtype=np.float32).reshape(h, w)
    depth[0, :3] = np.inf
    (root / gt_rel).parent.mkdir(parents=True)
    (root / gt_rel).write_bytes(depth.astype("<f4").tobytes())
    split = tmp_path / "eth3d_filename_list.txt"
    split.write_text(f"{img_rel} {gt_rel}\n")
    for ds in (D.get_dataset("eth3d", root, split_file=split), D.get_dataset("eth3d", root)):
        s = next(iter(ds))
        assert s.id == "rgb/office/images/dslr_images/DSC_0219"
        assert s.valid.sum() == h * w - 3 and not s.valid[0, :3].any()
        np.testing.assert_array_equal(s.gt[s.valid], depth[s.valid])
    (root / gt_rel).write_bytes(depth.tobytes()[:-8])
    with pytest.raises(InputDataError, match=r"DSC_0219\.JPG: expected 864 bytes of raw float32 depth for a 18x12 image, got 856"):
        list(D.get_dataset("eth3d", root))


# ----------------------------------------------------------------- ScanNet


def test_scannet_jpg_png_mm(tmp_path):
    root = tmp_path / "scannet"
    write_rgb(root / "scene0406_02/color/000300.jpg", np.full((24, 32, 3), 128, np.uint8))
    mm = np.full((24, 32), 1500, np.uint16)
    mm[:, 0] = 0
    write_grey(root / "scene0406_02/depth/000300.png", mm)
    # raw ScanNet: colour larger than depth -> resized to the depth's size
    write_rgb(root / "scene0088_02/color/001100.jpg", np.full((48, 64, 3), 200, np.uint8))
    write_grey(root / "scene0088_02/depth/001100.png", np.full((24, 32), 11000, np.uint16))
    ds = D.get_dataset("scannet", root)
    a, b = list(ds)
    assert a.id == "scene0088_02/color/001100"
    assert a.rgb.shape == (24, 32, 3) and a.meta["rgb_resized_from"] == [64, 48] and not a.valid.any()
    assert b.gt[0, 5] == pytest.approx(1.5) and b.valid.sum() == 24 * 31
    # white colour shrunk by a non-integer factor (45 x 33 -> 32 x 24): OpenCV's area weights give
    # 1.0000001, which the refiner's image check refuses; the loader keeps it in [0, 1]
    write_rgb(root / "scene0099_00/color/000000.jpg", np.full((33, 45, 3), 255, np.uint8))
    write_grey(root / "scene0099_00/depth/000000.png", np.full((24, 32), 1000, np.uint16))
    white = next(s for s in D.get_dataset("scannet", root) if s.id == "scene0099_00/color/000000")
    assert white.rgb.shape == (24, 32, 3) and float(white.rgb.max()) == 1.0
    split = tmp_path / "scannet_val_sampled_list_800_1.txt"
    split.write_text("scene0406_02/color/000300.jpg scene0406_02/depth/000300.png\n")
    assert [s.id for s in D.get_dataset("scannet", root, split_file=split)] == ["scene0406_02/color/000300"]


# ----------------------------------------------------------------- DIODE


def make_diode(root: Path):
    for sub, scene, d in (("indoors", "scene_00019/scan_00183", 2.0), ("outdoor", "scene_00022/scan_00193", 100.0)):
        stem = root / "val" / sub / scene / f"00019_00183_{sub}_000_010"
        write_rgb(stem.with_suffix(".png"), rgb_image(16, 20))
        depth = np.full((16, 20, 1), d, np.float32)
        depth[0, 0, 0] = 0.3  # below DIODE's 0.6 m
        np.save(f"{stem}_depth.npy", depth)
        mask = np.ones((16, 20), np.float32)
        mask[3, :] = 0
        np.save(f"{stem}_depth_mask.npy", mask)


def test_diode_subsets_and_mask(tmp_path):
    root = tmp_path / "diode"
    make_diode(root)
    all_ = D.get_dataset("diode", root)
    assert len(all_) == 2
    indoor = D.get_dataset("diode", root, subset="indoor")
    outdoor = D.get_dataset("diode", root, subset="outdoor")
    (si,), (so,) = list(indoor), list(outdoor)
    assert "indoors" in si.id and "outdoor" in so.id
    assert si.gt.shape == (16, 20) and si.gt[5, 5] == 2.0 and so.gt[5, 5] == 100.0
    assert si.valid.sum() == 16 * 20 - 20 - 1
    split = tmp_path / "diode_val_all_filename_list.txt"
    rel = "val/indoors/scene_00019/scan_00183/00019_00183_indoors_000_010"
    split.write_text(f"{rel}.png {rel}_depth.npy {rel}_depth_mask.npy\n")
    assert len(D.get_dataset("diode", root, split_file=split)) == 1
    assert len(D.get_dataset("diode", make_tar(root, tmp_path / "diode_val.tar"), split_file=split)) == 1


# ----------------------------------------------------------------- Middlebury


def test_middlebury_2005_disparity_with_dmin(tmp_path):
    root = tmp_path / "mb"
    write_rgb(root / "Art/view1.png", rgb_image(10, 12))
    disp = np.full((10, 12), 120, np.uint8)
    disp[2, 3] = 0
    write_grey(root / "Art/disp1.png", disp)
    (root / "Art/dmin.txt").write_text("200\n")
    (s,) = list(D.get_dataset("middlebury", root))
    assert s.id == "Art/view1" and s.gt_kind == "disparity"
    assert s.gt[0, 0] == 320.0 and not s.valid[2, 3] and s.valid.sum() == 119
    assert s.disparity_scale == pytest.approx(3740 * 0.160)
    assert s.depth()[0, 0] == pytest.approx(3740 * 0.160 / 320.0)  # 1.87 m


@pytest.mark.parametrize("drop", ["Books/disp1.png", "Books/dmin.txt"])
def test_middlebury_scene_missing_a_file_is_an_error_or_counted(tmp_path, drop):
    root = tmp_path / "mb"
    for scene in ("Art", "Books"):
        write_rgb(root / f"{scene}/view1.png", rgb_image(10, 12))
        write_grey(root / f"{scene}/disp1.png", np.full((10, 12), 120, np.uint8))
        (root / f"{scene}/dmin.txt").write_text("200\n")
    (root / drop).unlink()
    with pytest.raises(InputDataError, match=rf"{drop}: missing \(needed by Books/view1.png\)"):
        D.get_dataset("middlebury", root)
    ds = D.get_dataset("middlebury", root, skip_incomplete=True)
    assert [e.id for e in ds.entries] == ["Art/view1"]
    assert len(ds.describe()["incomplete"]) == 1 and drop in ds.describe()["incomplete"][0]


def test_middlebury_2014_pfm_and_calib(tmp_path):
    root = tmp_path / "mb14"
    write_rgb(root / "Adirondack-perfect/im0.png", rgb_image(8, 10))
    d = np.arange(80, dtype=np.float32).reshape(8, 10) + 100.0
    d[7, 9] = np.inf
    write_pfm(root / "Adirondack-perfect/disp0.pfm", d)
    (root / "Adirondack-perfect/calib.txt").write_text(
        "cam0=[4161.221 0 1445.577; 0 4161.221 984.686; 0 0 1]\n"
        "cam1=[4161.221 0 1654.636; 0 4161.221 984.686; 0 0 1]\ndoffs=209.059\nbaseline=176.252\nwidth=2880\n"
    )
    (s,) = list(D.get_dataset("middlebury", root))
    assert s.gt[0, 0] == pytest.approx(100.0 + 209.059)  # top row first
    assert s.gt[1, 0] == pytest.approx(110.0 + 209.059)
    assert not s.valid[7, 9] and s.valid.sum() == 79
    assert s.depth()[0, 0] == pytest.approx(4161.221 * 0.176252 / 309.059)
    (root / "Adirondack-perfect/calib.txt").write_text("doffs=1\n")
    with pytest.raises(InputDataError, match=r"calib\.txt: expected cam0="):
        list(D.get_dataset("middlebury", root))


# ----------------------------------------------------------------- folder


def test_folder_dataset_depth_mm_and_disparity(tmp_path):
    root = tmp_path / "mine"
    write_rgb(root / "rgb/a/one.jpg", rgb_image(6, 8))
    mm = np.full((6, 8), 4000, np.uint16)
    mm[0, 0] = 0
    write_grey(root / "depth/a/one.png", mm)
    write_rgb(root / "rgb/two.png", rgb_image(6, 8, 1))
    np.save(root / "depth/two.npy", np.full((6, 8), 9000.0, np.float32))  # beyond max_depth
    (root / "dataset.toml").write_text(
        'images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "mm"\ninvalid = 0\nmax_depth = 8.0\n'
    )
    ds = D.get_dataset("folder", root)
    a, b = list(ds)
    assert a.id == "a/one" and a.gt[1, 1] == pytest.approx(4.0) and a.valid.sum() == 47
    assert b.id == "two" and not b.valid.any()
    assert ds.describe()["config"]["units"] == "mm"

    disp_root = tmp_path / "disp"
    write_rgb(disp_root / "images/x.png", rgb_image(6, 8))
    (disp_root / "gt").mkdir()
    np.save(disp_root / "gt/x.npy", np.full((6, 8), 50.0, np.float32))
    (disp_root / "dataset.toml").write_text(
        '[dataset]\nimages = "images"\nground_truth = "gt"\nkind = "disparity"\nunits = "px"\ndisparity_scale = 100.0\n'
    )
    (s,) = list(D.get_dataset("folder", disp_root))
    assert s.gt_kind == "disparity" and s.depth()[0, 0] == pytest.approx(2.0) and s.valid.all()


def test_folder_dataset_errors(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    with pytest.raises(NoInputError, match=r"folder: expected .*mine/dataset\.toml describing the data"):
        D.get_dataset("folder", root)
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "feet"\n')
    with pytest.raises(InputDataError, match=r"`units` for depth must be one of m, cm, mm, got 'feet'"):
        D.get_dataset("folder", root)
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunit = "m"\n')
    with pytest.raises(InputDataError, match=r"unknown key 'unit'"):
        D.get_dataset("folder", root)
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "m"\n')
    with pytest.raises(NoInputError, match=r"images under .*mine/rgb with maps of the same name under .*mine/depth"):
        D.get_dataset("folder", root)


def test_folder_image_without_its_map_is_an_error_or_counted(tmp_path):
    """As nyuv2 and middlebury: an image under `images` without its map is exit 65, or skipped and counted."""
    root = tmp_path / "mine"
    for rel in ("rgb/a.png", "rgb/b.png", "rgb/sub/c.jpg", "rgb/d.png"):
        write_rgb(root / rel, rgb_image(6, 8))
    for rel in ("depth/a.png", "depth/sub/c.png"):  # no depth/b.*
        write_grey(root / rel, np.full((6, 8), 2000, np.uint16))
    np.save(root / "depth/d.npy", np.full((6, 8), 2000.0, np.float32))
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "mm"\n')
    # the missing map is named with the extension most maps have (.png: 2 of 3)
    want = f"{root}/depth/b.png: missing (needed by rgb/b.png)"
    with pytest.raises(InputDataError) as err:
        D.get_dataset("folder", root)
    assert str(err.value) == f"folder: {want}; use --continue-on-error to skip them"
    ds = D.get_dataset("folder", root, skip_incomplete=True)
    assert [e.id for e in ds.entries] == ["a", "d", "sub/c"]  # natural order of the paths
    assert ds.incomplete == [want] and ds.describe()["incomplete"] == [want]
    assert ds.describe()["samples"] == 3

    # with `masks`, a missing mask is the missing file
    for rel in ("masks/a.png", "masks/d.png"):
        write_grey(root / rel, np.full((6, 8), 255, np.uint8))
    (root / "dataset.toml").write_text(
        'images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "mm"\nmasks = "masks"\n'
    )
    ds = D.get_dataset("folder", root, skip_incomplete=True)
    assert [e.id for e in ds.entries] == ["a", "d"]
    assert ds.incomplete == [want, f"{root}/masks/sub/c.png: missing (needed by rgb/sub/c.jpg)"]
    with pytest.raises(InputDataError, match=r"depth/b\.png: missing \(needed by rgb/b\.png\) \(and 1 more incomplete\)"):
        D.get_dataset("folder", root)


def test_folder_without_any_map_is_still_the_layout_error(tmp_path):
    """No map at all is a wrong `ground_truth` folder, not N incomplete samples: the layout error, with or
    without skipping."""
    root = tmp_path / "mine"
    write_rgb(root / "rgb/a.png", rgb_image(6, 8))
    write_rgb(root / "rgb/b.png", rgb_image(6, 8))
    (root / "gt").mkdir()  # the maps are elsewhere than `ground_truth` says
    np.save(root / "gt/a.npy", np.ones((6, 8), np.float32))
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "m"\n')
    for skip in (False, True):
        with pytest.raises(NoInputError, match=r"folder: no samples found in .*mine; expected images under "
                                                r".*mine/rgb with maps of the same name under .*mine/depth"):
            D.get_dataset("folder", root, skip_incomplete=skip)


def test_folder_maps_nested_in_the_image_folder_are_not_images(tmp_path):
    """images = "." with the maps (PNG) and masks in subfolders: the maps are not images lacking a map."""
    root = tmp_path / "mine"
    write_rgb(root / "a.jpg", rgb_image(6, 8))
    write_grey(root / "depth/a.png", np.full((6, 8), 3000, np.uint16))
    write_grey(root / "masks/a.png", np.full((6, 8), 1, np.uint8))
    (root / "dataset.toml").write_text(
        'images = "."\nground_truth = "depth"\nkind = "depth"\nunits = "mm"\nmasks = "masks"\n'
    )
    ds = D.get_dataset("folder", root)
    assert [e.files for e in ds.entries] == [("a.jpg", "depth/a.png", "masks/a.png")] and ds.incomplete == []
    (s,) = list(ds)
    assert s.gt[0, 0] == pytest.approx(3.0) and s.valid.all()


# ----------------------------------------------------------------- real samples


@pytest.mark.real_data
def test_real_nyuv2_and_middlebury():
    if not (REAL / "nyuv2").is_dir() or not (REAL / "middlebury2005").is_dir():
        pytest.skip(f"real data not found in {REAL}")
    nyu = D.get_dataset("nyuv2", REAL / "nyuv2")
    assert len(nyu) == 5
    s = next(iter(nyu))
    assert s.rgb.shape == (480, 640, 3) and s.valid.sum() <= 426 * 560
    assert 0.3 < np.median(s.gt[s.valid]) < 10.0
    mb = D.get_dataset("middlebury", REAL / "middlebury2005")
    assert [e.id for e in mb.entries] == [f"{n}/view1" for n in ("Art", "Books", "Dolls", "Laundry", "Moebius", "Reindeer")]
    for s in mb:
        d = s.depth()[s.valid]
        assert s.valid.mean() > 0.8
        assert 1.0 < np.median(d) < 3.0, s.id  # the README: about 1.2-2.9 m
        assert math.isclose(s.disparity_scale, 598.4)
