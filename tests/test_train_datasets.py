"""Training datasets (folder, Hypersim, Virtual KITTI 2, mixing) and augmentation,
on small files fabricated in each official format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from betterdepth_cli.core.types import InputDataError, NoInputError, UsageError  # noqa: E402
from training.augment import RandomCropFlip, hflip, random_crop, random_hflip, resize  # noqa: E402
from training.datasets import (  # noqa: E402
    FolderDataset,
    HypersimDataset,
    MixedDataset,
    VirtualKITTI2Dataset,
    hypersim_distance_to_depth,
    hypersim_tonemap,
)


def _check_sample(s: dict, h: int, w: int) -> None:
    assert s["rgb"].shape == (3, h, w) and s["rgb"].dtype == torch.float32
    assert s["depth"].shape == (1, h, w) and s["depth"].dtype == torch.float32
    assert s["valid"].shape == (1, h, w) and s["valid"].dtype == torch.bool
    assert 0 <= float(s["rgb"].min()) and float(s["rgb"].max()) <= 1
    assert (s["depth"][~s["valid"]] == 0).all()


def _write_rgb(path: Path, rgb8: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb8[..., ::-1])


# --------------------------------------------------------------------------- folder
def _folder(tmp_path: Path, toml: str | None, depth_name: str, depth_writer) -> Path:
    root = tmp_path / "ds"
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 255  # red
    _write_rgb(root / "rgb" / "a.png", rgb)
    (root / "depth").mkdir(parents=True)
    depth_writer(root / "depth" / depth_name)
    if toml is not None:
        (root / "dataset.toml").write_text(toml)
    return root


def test_folder_png16_millimetres(tmp_path):
    q = np.full((4, 5), 1500, np.uint16)
    q[0, 0] = 0  # invalid value
    root = _folder(tmp_path, '[depth]\nunits = "m"\nscale = 0.001\nkind = "depth"\ninvalid_value = 0\n', "a.png",
                   lambda p: cv2.imwrite(str(p), q))
    ds = FolderDataset(root)
    s = ds[0]
    _check_sample(s, 4, 5)
    assert s["id"] == "a"
    assert s["depth"][0, 1, 1].item() == pytest.approx(1.5)
    assert not s["valid"][0, 0, 0] and s["valid"].sum() == 19
    assert s["rgb"][:, 2, 2].tolist() == [1.0, 0.0, 0.0]


def test_folder_units_cm_and_disparity(tmp_path):
    q = np.full((4, 5), 250, np.uint16)
    root = _folder(tmp_path, '[depth]\nunits = "cm"\nscale = 1.0\n', "a.png", lambda p: cv2.imwrite(str(p), q))
    assert FolderDataset(root)[0]["depth"][0, 0, 0].item() == pytest.approx(2.5)
    d = np.full((4, 5), 0.5, np.float32)  # disparity 0.5 1/m -> 2 m
    root2 = _folder(tmp_path / "b", '[depth]\nkind = "disparity"\n', "a.npy", lambda p: np.save(p, d))
    assert FolderDataset(root2)[0]["depth"][0, 0, 0].item() == pytest.approx(2.0)


def test_folder_npy_without_toml_is_metres_and_mask_applies(tmp_path):
    d = np.linspace(1, 2, 20, dtype=np.float32).reshape(4, 5)
    d[1, 1] = np.nan
    root = _folder(tmp_path, None, "a.npy", lambda p: np.save(p, d))
    m = np.full((4, 5), 255, np.uint8)
    m[3, 4] = 0
    (root / "mask").mkdir()
    cv2.imwrite(str(root / "mask" / "a.png"), m)
    s = FolderDataset(root)[0]
    assert s["depth"][0, 0, 0].item() == pytest.approx(1.0)
    assert not s["valid"][0, 1, 1] and not s["valid"][0, 3, 4] and s["valid"].sum() == 18


def test_folder_exr_z_channel(tmp_path):
    import OpenEXR

    d = np.full((4, 5), 7.25, np.float32)
    root = _folder(tmp_path, '[depth]\nunits = "m"\nscale = 1.0\n', "a.exr", lambda p: OpenEXR.File(
        {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"Z": d}).write(str(p)))
    assert FolderDataset(root)[0]["depth"][0, 2, 3].item() == 7.25


def test_folder_errors_name_the_file(tmp_path):
    q = np.full((4, 5), 1, np.uint16)
    root = _folder(tmp_path, None, "a.png", lambda p: cv2.imwrite(str(p), q))
    with pytest.raises(InputDataError, match="dataset.toml: missing"):
        FolderDataset(root)
    (root / "dataset.toml").write_text('[depth]\nunits = "inch"\n')
    with pytest.raises(InputDataError, match="units must be one of"):
        FolderDataset(root)
    (root / "dataset.toml").write_text('[depth]\nunits = "m"\n')
    cv2.imwrite(str(root / "depth" / "a.png"), np.ones((3, 3), np.uint16))
    with pytest.raises(InputDataError, match=r"depth/a.png: depth 3 x 3 pixels, its RGB 5 x 4: sizes differ"):
        FolderDataset(root)[0]  # the file, not only the sample's id
    with pytest.raises(NoInputError, match="not found"):
        FolderDataset(tmp_path / "nope")


def test_folder_reads_synth_output(tmp_path):
    pytest.importorskip("open3d")
    from training.synthetic import render_scene, write_dataset

    out = write_dataset(tmp_path / "syn", 2, seed0=3, size=(20, 24), kind="indoor", depth_format="png16")
    ds = FolderDataset(out)
    assert ds.ids == ["000000", "000001"]
    s = ds[1]
    _check_sample(s, 20, 24)
    ref = render_scene(4, (20, 24), "indoor")
    np.testing.assert_allclose(s["depth"][0].numpy(), ref.depth, atol=0.0005 + 1e-6)
    assert (s["valid"][0].numpy() == ref.valid).all()


def test_a_synthetic_training_set_is_cached_per_generator_version(tmp_path, monkeypatch):
    pytest.importorskip("open3d")
    from training import batches
    from training.synthetic import writer

    spec = {"type": "synthetic", "n": 1, "size": 16, "seed": 2, "kind": "indoor"}
    real = writer.generator_digest()
    first = batches.build_dataset(spec, tmp_path)
    assert batches.build_dataset(spec, tmp_path).root == first.root  # the same version: reused
    monkeypatch.setattr(writer, "generator_digest", lambda root=None: "feedfacefeedface")
    other = batches.build_dataset(spec, tmp_path)  # another version: rendered afresh, beside the first
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == sorted(
        [f"n1-s16-seed2-indoor-g{real}", "n1-s16-seed2-indoor-gfeedfacefeedface"])
    assert other.root != first.root and (other.root / ".complete").exists()


def test_folder_accepts_the_evaluation_spelling_and_subfolders(tmp_path):
    root = tmp_path / "ev"
    rgb = np.full((4, 5, 3), 200, np.uint8)
    _write_rgb(root / "images" / "room1" / "a.jpg", rgb)
    (root / "gt" / "room1").mkdir(parents=True)
    cv2.imwrite(str(root / "gt" / "room1" / "a.png"), np.full((4, 5), 2000, np.uint16))
    (root / "dataset.toml").write_text('images = "images"\nground_truth = "gt"\nkind = "depth"\nunits = "mm"\n'
                                       "max_depth = 1.5\n")
    ds = FolderDataset(root)
    assert ds.ids == ["room1/a"]
    s = ds[0]
    assert s["depth"].max().item() == 0 and not s["valid"].any()  # 2 m > max_depth 1.5
    (root / "dataset.toml").write_text('[dataset]\nimages = "images"\nground_truth = "gt"\nkind = "disparity"\n'
                                       "scale = 0.01\ndisparity_scale = 4.0\n")
    assert FolderDataset(root)[0]["depth"][0, 0, 0].item() == pytest.approx(4.0 / 20.0)


def test_synth_output_loads_in_the_evaluation_folder_loader(tmp_path):
    pytest.importorskip("open3d")
    ev = pytest.importorskip("betterdepth_cli.evaluation.datasets")
    from training.synthetic import render_scene, write_dataset

    out = write_dataset(tmp_path / "syn", 2, seed0=8, size=(16, 20), kind="outdoor")
    loader = ev.FolderDataset(out)
    entries = loader.entries
    assert [e.id for e in entries] == ["000000", "000001"]
    sample = loader.load(entries[1])
    ref = render_scene(9, (16, 20), "outdoor")
    np.testing.assert_allclose(sample.gt, ref.depth, atol=1e-6)
    assert (sample.valid == ref.valid).all()


# --------------------------------------------------------------------------- Hypersim
def _h5(path: Path, arr: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=arr, compression="gzip")


def _hypersim_tree(root: Path, scene: str = "ai_001_002", cam: str = "cam_00", frame: int = 3,
                   dist: np.ndarray | None = None, color: np.ndarray | None = None, entity: np.ndarray | None = None):
    H, W = 6, 8
    img = root / scene / "images"
    color = color if color is not None else np.full((H, W, 3), 0.25, np.float16)
    dist = dist if dist is not None else np.full((H, W), 5.0, np.float16)
    _h5(img / f"scene_{cam}_final_hdf5" / f"frame.{frame:04d}.color.hdf5", color)
    _h5(img / f"scene_{cam}_geometry_hdf5" / f"frame.{frame:04d}.depth_meters.hdf5", dist)
    if entity is not None:
        _h5(img / f"scene_{cam}_geometry_hdf5" / f"frame.{frame:04d}.render_entity_id.hdf5", entity)


def test_hypersim_focal_is_the_standard_886_81():
    # 1024 px wide, 60 deg: f = 512 / tan(30 deg) = 886.81; the centre pixels are off-axis by half a pixel
    d = hypersim_distance_to_depth(np.ones((768, 1024)))
    f = 886.8100
    assert d[384, 512] == pytest.approx(f / math.sqrt(0.25 + 0.25 + f * f), abs=1e-9)
    assert d[0, 0] == pytest.approx(f / math.sqrt(511.5 ** 2 + 383.5 ** 2 + f * f), rel=1e-6)


def test_hypersim_distance_to_planar_depth_and_tonemap(tmp_path):
    dist = np.full((6, 8), 5.0, np.float16)
    dist[5, 7] = np.nan
    color = np.full((6, 8, 3), 0.25, np.float16)
    color[2, 3] = 0.1
    _hypersim_tree(tmp_path, dist=dist, color=color)
    ds = HypersimDataset(tmp_path)
    assert len(ds) == 1
    s = ds[0]
    _check_sample(s, 6, 8)
    assert s["id"] == "ai_001_002/cam_00/0003"
    # pixel (row 0, col 0) of an 8x6 image, fov 60: f = 4 / tan(30) = 6.928203,
    # ray (-3.5, -2.5, f), |ray| = sqrt(12.25 + 6.25 + 48) = 8.154753 -> z = 5 * 6.928203 / 8.154753
    assert s["depth"][0, 0, 0].item() == pytest.approx(5 * 6.928203 / 8.154753, abs=1e-5)
    assert s["depth"][0, 0, 0].item() == pytest.approx(4.247957, abs=1e-5)
    assert not s["valid"][0, 5, 7] and s["valid"].sum() == 47
    # tone map: the 90th-percentile brightness (0.25) maps to 0.8; 0.1 -> 0.8 * 0.4 ** (1/2.2) = 0.52746
    assert s["rgb"][0, 0, 0].item() == pytest.approx(0.8, abs=1e-5)
    assert s["rgb"][1, 2, 3].item() == pytest.approx(0.8 * 0.4 ** (1 / 2.2), abs=1e-4)


def test_hypersim_tonemap_ignores_entity_minus_one():
    rgb = np.full((4, 5, 3), 0.5)
    rgb[0] = 100.0  # bright pixels with no entity (e.g. a window to the outside)
    valid = np.ones((4, 5), bool)
    valid[0] = False
    out = hypersim_tonemap(rgb, valid)
    assert out[2, 2, 0] == pytest.approx(0.8, abs=1e-6)
    assert out[0, 0, 0] == 1.0
    out_all = hypersim_tonemap(rgb)  # with the bright row counted, p90 = 100
    assert out_all[2, 2, 0] < 0.2


def test_hypersim_official_split_csv(tmp_path):
    _hypersim_tree(tmp_path, frame=0)
    _hypersim_tree(tmp_path, frame=1)
    _hypersim_tree(tmp_path, scene="ai_003_001", frame=0)
    (tmp_path / "metadata_images_split_scene_v1.csv").write_text(
        "scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,split_partition_name\n"
        "ai_001_002,cam_00,0,True,,train\n"
        "ai_001_002,cam_00,1,False,bad,train\n"
        "ai_003_001,cam_00,0,True,,val\n")
    assert [it[0] for it in HypersimDataset(tmp_path, split="train").items] == ["ai_001_002/cam_00/0000"]
    assert [it[0] for it in HypersimDataset(tmp_path, split="val").items] == ["ai_003_001/cam_00/0000"]
    assert len(HypersimDataset(tmp_path)) == 3
    with pytest.raises(UsageError, match="`split`"):
        HypersimDataset(tmp_path, split="dev")


def test_hypersim_missing_dataset_key_is_a_data_error(tmp_path):
    import h5py

    _hypersim_tree(tmp_path)
    p = next(tmp_path.rglob("*.color.hdf5"))
    with h5py.File(p, "w") as f:
        f.create_dataset("other", data=np.zeros(3))
    with pytest.raises(InputDataError, match="no 'dataset' entry"):
        HypersimDataset(tmp_path)[0]


# --------------------------------------------------------------------------- Virtual KITTI 2
def _vkitti_frame(root: Path, scene: str, var: str, cam: str, num: int, depth_cm: np.ndarray) -> None:
    base = root / scene / var / "frames"
    rgb = np.full(depth_cm.shape + (3,), 128, np.uint8)
    _write_rgb(base / "rgb" / cam / f"rgb_{num:05d}.jpg", rgb)
    p = base / "depth" / cam / f"depth_{num:05d}.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(p), depth_cm)


def test_vkitti2_centimetres_sky_and_80m_cap(tmp_path):
    d = np.full((5, 6), 1234, np.uint16)
    d[0, 0] = 65535  # sky
    d[0, 1] = 9000  # 90 m > 80 m cap
    d[0, 2] = 8000  # exactly 80 m: kept
    _vkitti_frame(tmp_path, "Scene01", "clone", "Camera_0", 7, d)
    _vkitti_frame(tmp_path, "Scene01", "fog", "Camera_0", 7, d)
    _vkitti_frame(tmp_path, "Scene02", "clone", "Camera_1", 0, d)  # Camera_1 not used by default
    ds = VirtualKITTI2Dataset(tmp_path)
    assert [it[0] for it in ds.items] == ["Scene01/clone/Camera_0/00007", "Scene01/fog/Camera_0/00007"]
    s = ds[0]
    _check_sample(s, 5, 6)
    assert s["depth"][0, 2, 2].item() == pytest.approx(12.34)
    assert s["depth"][0, 0, 2].item() == pytest.approx(80.0)
    assert not s["valid"][0, 0, 0] and not s["valid"][0, 0, 1] and s["valid"].sum() == 28
    assert abs(s["rgb"][0, 2, 2].item() - 128 / 255) < 3 / 255  # jpeg
    assert len(VirtualKITTI2Dataset(tmp_path, variations=["fog"])) == 1
    assert len(VirtualKITTI2Dataset(tmp_path, cameras=("Camera_0", "Camera_1"))) == 3
    with pytest.raises(NoInputError):
        VirtualKITTI2Dataset(tmp_path, scenes=["Scene20"])


# --------------------------------------------------------------------------- mixing
class _Const(torch.utils.data.Dataset):
    def __init__(self, tag: str, n: int):
        self.tag, self.n = tag, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"id": f"{self.tag}{i}"}


def test_mixed_dataset_follows_weights_and_is_reproducible():
    a, b = _Const("h", 50), _Const("v", 7)
    mix = MixedDataset([a, b], [0.9, 0.1], seed=1, length=4000)
    ids = [mix[i]["id"] for i in range(4000)]
    share = sum(x.startswith("h") for x in ids) / 4000
    assert abs(share - 0.9) < 0.02
    assert ids == [MixedDataset([a, b], [0.9, 0.1], seed=1, length=4000)[i]["id"] for i in range(4000)]
    mix.set_epoch(1)
    assert [mix[i]["id"] for i in range(50)] != ids[:50]
    assert len(MixedDataset([a, b])) == 57
    with pytest.raises(UsageError, match="`weights`"):
        MixedDataset([a, b], [1.0])


# --------------------------------------------------------------------------- augmentation
def _coord_sample(h: int = 6, w: int = 8) -> dict:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    rgb = torch.stack([xx / 100, yy / 100, torch.zeros_like(xx)])
    depth = (yy * 100 + xx + 1)[None]  # encodes the pixel position
    return {"rgb": rgb, "depth": depth, "valid": (xx < 4)[None], "id": "s"}


def test_random_crop_is_the_same_window_for_all_maps():
    s = _coord_sample()
    c = random_crop(s, (3, 4), torch.Generator().manual_seed(0))
    assert c["rgb"].shape == (3, 3, 4) and c["depth"].shape == (1, 3, 4)
    x0 = round(c["rgb"][0, 0, 0].item() * 100)
    y0 = round(c["rgb"][1, 0, 0].item() * 100)
    assert torch.equal(c["depth"], s["depth"][:, y0:y0 + 3, x0:x0 + 4])
    assert torch.equal(c["valid"], s["valid"][:, y0:y0 + 3, x0:x0 + 4])
    c2 = random_crop(s, (3, 4), torch.Generator().manual_seed(0))
    assert torch.equal(c["depth"], c2["depth"])
    seen = {tuple(random_crop(s, (3, 4), torch.Generator().manual_seed(k))["depth"][0, 0, 0:1].tolist())
            for k in range(40)}
    assert len(seen) > 5  # windows vary with the generator


def test_random_crop_pads_small_images_as_invalid():
    s = _coord_sample(2, 3)
    c = random_crop(s, (4, 4), torch.Generator().manual_seed(0))
    assert c["depth"].shape == (1, 4, 4)
    assert not c["valid"][0, 2:, :].any() and not c["valid"][0, :, 3:].any()


def test_hflip_mirrors_all_maps():
    s = _coord_sample()
    f = hflip(s)
    assert torch.equal(f["depth"][0, :, 0], s["depth"][0, :, -1])
    assert torch.equal(f["valid"][0, :, -1], s["valid"][0, :, 0])
    assert torch.equal(f["rgb"][:, :, 0], s["rgb"][:, :, -1])
    g = torch.Generator().manual_seed(0)
    flips = [torch.equal(random_hflip(s, g)["depth"], f["depth"]) for _ in range(200)]
    assert 70 < sum(flips) < 130
    assert torch.equal(random_hflip(s, g, p=0.0)["depth"], s["depth"])


def test_resize_keeps_depth_values_unmixed():
    s = _coord_sample(6, 8)
    r = resize(s, (3, 4))
    assert r["rgb"].shape == (3, 3, 4)
    assert set(r["depth"].unique().tolist()) <= set(s["depth"].unique().tolist())


def test_random_crop_flip_deterministic_per_id_and_epoch():
    aug = RandomCropFlip((3, 4), seed=5)
    s = _coord_sample()
    a, b = aug(s), aug(s)
    assert torch.equal(a["depth"], b["depth"])
    outs = set()
    for e in range(10):
        aug.epoch = e
        outs.add(tuple(aug(s)["depth"].flatten().tolist()))
    assert len(outs) > 3
