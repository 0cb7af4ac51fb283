"""training.compact_dataset: JPEG + 16-bit disparity PNG folders read back through FolderDataset."""

import cv2
import numpy as np

from training.compact_dataset import compact, encode_disparity
from training.datasets import FolderDataset


def test_encode_disparity_by_hand():
    depth = np.array([[0.1, 1.0], [0.05, 80.0]])
    valid = np.array([[True, True], [True, False]])
    q = encode_disparity(depth, valid, min_depth=0.1)
    # 65535 * 0.1 / z: 65535 at min_depth, 6553.5 -> 6554 at 1 m, clamped at 0.05 m, 0 where invalid
    assert q.dtype == np.uint16
    assert q.tolist() == [[65535, 6554], [65535, 0]]


def _source(tmp_path, n=3):
    root = tmp_path / "src"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rng = np.random.default_rng(0)
    depths = []
    for i in range(n):
        rgb = np.zeros((24, 32, 3), np.uint8)
        rgb[:, :16] = (200, 40, 10 * i)  # flat colours survive JPEG nearly exactly
        cv2.imwrite(str(root / "rgb" / f"{i:03d}.png"), rgb)
        d = rng.uniform(0.5, 60.0, (24, 32)).astype(np.float32)
        d[0, :5] = 0  # invalid
        np.save(root / "depth" / f"{i:03d}.npy", d)
        depths.append(d)
    return root, depths


def test_compact_round_trip_keeps_ids_valid_pixels_and_depth_within_the_code_step(tmp_path):
    src, depths = _source(tmp_path)
    out = tmp_path / "pack"
    assert compact(str(src), str(out), start=1, count=5, min_depth=0.1) == 2  # scenes 1 and 2 only
    ds = FolderDataset(out)
    assert ds.ids == ["001", "002"]
    for k, i in enumerate((1, 2)):
        s = ds[k]
        d = depths[i]
        valid = d > 0
        np.testing.assert_array_equal(s["valid"][0].numpy(), valid)
        got = s["depth"][0].numpy()[valid]
        # the code is rounded to an integer: relative error <= z / (2 * 65535 * min_depth) (+ float slack)
        bound = d[valid] / (2 * 65535 * 0.1) + 1e-6
        assert np.all(np.abs(got / d[valid] - 1) <= bound)
        rgb = (s["rgb"].permute(1, 2, 0).numpy() * 255)
        assert np.abs(rgb[4:-4, 2:12] - np.array([10 * i, 40, 200])).max() <= 3  # written BGR by OpenCV, read RGB
