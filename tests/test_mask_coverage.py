"""training.mask_coverage: the share of ground-truth edges the local patch mask keeps."""

import math

import numpy as np
import pytest
import torch

from betterdepth_cli.core.mask import patch_mask
from training.mask_coverage import edge_coverage, measure


def test_a_conditioner_missing_an_edge_hides_it_until_eta_allows():
    # 8 x 16 map, two 8 x 8 patches. Ground truth steps from -1 to +1 at column 4 (inside the left
    # patch); the conditioning steps at column 8 instead, so in the left patch columns 4..7 differ by
    # 2: RMS = sqrt(4 * 8 * 4 / 64) = sqrt(2) = 1.414 there, 0 in the right patch.
    gt = -torch.ones(1, 1, 8, 16)
    gt[..., 4:] = 1.0
    cond = -torch.ones(1, 1, 8, 16)
    cond[..., 8:] = 1.0
    edges = np.zeros((8, 16), bool)
    edges[:, 3:5] = True  # the ground truth's edge pixels
    for eta, pixels, kept_edges in ((0.5, 0.5, 0.0), (1.4, 0.5, 0.0), (1.5, 1.0, 1.0)):
        keep = patch_mask(cond, gt, None, 8, eta)[0, 0].numpy()
        assert edge_coverage(keep, edges) == (pixels, kept_edges)


def test_edge_coverage_without_edges_and_bad_shapes():
    keep = np.array([[True, False], [False, False]])
    assert edge_coverage(keep, np.ones((2, 2), bool)) == (0.25, 0.25)
    px, e = edge_coverage(keep, np.zeros((2, 2), bool))
    assert px == 0.25 and math.isnan(e)
    with pytest.raises(ValueError, match="differ in shape"):
        edge_coverage(keep, np.zeros((3, 2), bool))


def test_measure_runs_a_real_conditioner_and_grows_with_eta(tiny_dpt_dir, tmp_path):
    from training.synthetic import write_dataset

    root = write_dataset(tmp_path / "ds", 3, seed0=0, size=48)
    rows = measure(str(root), f"hf:{tiny_dpt_dir}", limit=3, etas=[0.0, 0.3, 1e9], batch=2)
    assert [r["eta"] for r in rows] == [0.0, 0.3, 1e9]
    assert rows[0]["pixels"] <= rows[1]["pixels"] <= rows[2]["pixels"] == 1.0
    assert rows[2]["edges"] == 1.0  # every patch kept: every edge pixel kept
