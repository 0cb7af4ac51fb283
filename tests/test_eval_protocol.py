"""The evaluation protocol: alignment in both spaces, clipping, crops."""

from __future__ import annotations

import numpy as np
import pytest

from betterdepth_cli.evaluation import protocol as P


def gt_and_mask(seed=0, shape=(24, 32)):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.5, 3.0, shape)
    valid = np.ones(shape, bool)
    valid[:4, :6] = False
    valid[20:, 25:] = False
    return gt, valid


def test_disparity_alignment_recovers_scale_and_shift():
    gt, valid = gt_and_mask()
    pred = (1.0 / gt - 0.3) / 2.0
    pred[~valid] = np.nan  # masked pixels hold anything
    gt_junk = gt.copy()
    gt_junk[~valid] = -7.0
    score = P.evaluate_sample(pred, "disparity", gt_junk, valid, min_depth=1e-3, max_depth=10.0)
    assert score.alignment.space == "disparity"
    assert score.alignment.scale == pytest.approx(2.0, abs=1e-9)
    assert score.alignment.shift == pytest.approx(0.3, abs=1e-9)
    np.testing.assert_allclose(score.alignment.depth[valid], gt[valid], rtol=1e-9)
    m = score.metrics
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert m["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert m["delta1"] == 1.0


def test_depth_alignment_recovers_scale_and_shift():
    gt, valid = gt_and_mask(1)
    pred = (gt - 3.0) / 2.0
    pred[~valid] = 1e6
    score = P.evaluate_sample(pred, "depth", gt, valid, min_depth=1e-3, max_depth=10.0)
    assert score.alignment.space == "depth"
    assert score.alignment.scale == pytest.approx(2.0, abs=1e-9)
    assert score.alignment.shift == pytest.approx(3.0, abs=1e-9)
    assert score.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert score.metrics["delta1"] == 1.0
    assert score.metrics["dbe_acc"] == pytest.approx(0.0, abs=1e-9)


def test_fit_scale_shift_values_exact_and_degenerate():
    from betterdepth_cli.core.align import DegenerateAlignmentWarning

    rng = np.random.default_rng(4)
    x = rng.uniform(0.1, 3.0, 1000)
    s, b = P.fit_scale_shift_values(x, 2.5 * x - 0.75)
    assert s == pytest.approx(2.5, abs=1e-12) and b == pytest.approx(-0.75, abs=1e-12)
    with pytest.warns(DegenerateAlignmentWarning):
        s, b = P.fit_scale_shift_values(np.full(5, 2.0), np.arange(5.0))  # constant prediction: s = 0, b = mean
    assert (s, b) == (0.0, 2.0)
    with pytest.warns(DegenerateAlignmentWarning):
        assert P.fit_scale_shift_values(np.array([1.0]), np.array([4.0])) == (1.0, 3.0)  # one pixel: the offset


def test_disparity_fit_ignores_non_positive_predictions():
    # Marigold fits only where the prediction is positive: outliers at <= 0 do not bend the fit
    gt, valid = gt_and_mask(2)
    pred = (1.0 / gt - 0.3) / 2.0
    pred[10, 10:20] = -1.0
    al = P.align_prediction(pred, "disparity", gt, valid, min_depth=1e-3, max_depth=10.0)
    assert (al.scale, al.shift) == (pytest.approx(2.0), pytest.approx(0.3))
    # aligned disparity 2 * -1 + 0.3 < 1e-3 is clipped to 1e-3 -> 1000 m -> clipped to max_depth
    assert np.all(al.depth[10, 10:20] == 10.0)


def test_range_clipping_and_none_alignment():
    gt, valid = gt_and_mask(3)
    pred = gt.copy()
    pred[0, 0] = 50.0  # invalid pixel, still clipped to the range
    pred[5, 5] = 1e-9
    al = P.align_prediction(pred, "depth", gt, valid, alignment="none", min_depth=0.6, max_depth=20.0)
    assert (al.scale, al.shift, al.space) == (1.0, 0.0, "none")
    assert al.depth[0, 0] == 20.0 and al.depth[5, 5] == 0.6
    inv = P.align_prediction(1.0 / gt, "disparity", gt, valid, alignment="none")
    np.testing.assert_allclose(inv.depth, gt, rtol=1e-12)


def test_bad_arguments():
    gt, valid = gt_and_mask()
    with pytest.raises(ValueError, match="pred_kind"):
        P.align_prediction(gt, "inverse", gt, valid)
    with pytest.raises(ValueError, match="alignment"):
        P.align_prediction(gt, "depth", gt, valid, alignment="median")
    with pytest.raises(ValueError, match="differ in shape"):
        P.align_prediction(gt[:, :5], "depth", gt, valid)


def test_gt_to_depth():
    disp = np.array([[2.0, 0.0], [4.0, -1.0]])
    np.testing.assert_allclose(P.gt_to_depth(disp, "disparity", 8.0), [[4.0, 0.0], [2.0, 0.0]])
    np.testing.assert_array_equal(P.gt_to_depth(disp, "depth"), disp)


def test_nyu_eigen_mask():
    m = P.nyu_eigen_mask((480, 640))
    assert m.sum() == (471 - 45) * (601 - 41)
    assert m[45, 41] and m[470, 600] and not m[44, 41] and not m[45, 40] and not m[471, 100] and not m[100, 601]
    half = P.nyu_eigen_mask((240, 320))
    assert half.sum() == (235 - 22) * (300 - 20)


def test_kitti_crops():
    img = np.arange(375 * 1242).reshape(375, 1242)
    c = P.kb_crop(img)
    assert c.shape == (352, 1216)
    assert c[0, 0] == img[23, 13]  # top = 375 - 352, left = (1242 - 1216) // 2
    eigen = P.kitti_eval_mask((352, 1216), "eigen")
    assert eigen.sum() == (321 - 117) * (1172 - 43)
    assert eigen[117, 43] and not eigen[116, 43] and not eigen[321, 43]
    garg = P.kitti_eval_mask((352, 1216), "garg")
    assert garg.sum() == (349 - 143) * (1172 - 43)
    assert P.kitti_eval_mask((4, 4), "none").all()
    with pytest.raises(ValueError, match="at least 352x1216"):
        P.kb_crop(np.zeros((300, 1300)))


def test_range_mask_strict_bounds():
    d = np.array([0.0, 1e-3, 0.5, 10.0, np.inf, np.nan])
    assert P.range_mask(d, 1e-3, 10.0).tolist() == [False, False, True, False, False, False]
