"""Metrics of `betterdepth eval` against hand-computed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from betterdepth_cli.evaluation import edges as E
from betterdepth_cli.evaluation import metrics as M


def step_depth(h=32, w=64, col=32, near=1.0, far=2.0, ramp=True):
    """Depth of a vertical step: inverse depth 1/near left of `col`, 1/far right of it.

    With ramp=True the column `col` holds the mean inverse depth, so the normalised
    inverse depth reads 1, 0.5, 0 across the step: symmetric about `col`, whose
    Canny edge is exactly that one column.
    """
    inv = np.full((h, w), 1.0 / far)
    inv[:, :col] = 1.0 / near
    if ramp:
        inv[:, col] = 0.5 * (1.0 / near + 1.0 / far)
    return (1.0 / inv).astype(np.float32)


def test_registry_names_and_signature():
    assert tuple(M.METRICS) == M.ALL_METRICS
    gt = step_depth()
    valid = np.ones(gt.shape, bool)
    for name, fn in M.METRICS.items():
        assert isinstance(fn(gt, gt, valid), float), name


def test_hand_computed_2x2():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    pred = np.array([[1.0, 3.0], [2.0, 8.0]], np.float32)
    v = np.ones((2, 2), bool)
    assert M.abs_rel(pred, gt, v) == pytest.approx(0.25)
    assert M.sq_rel(pred, gt, v) == pytest.approx((0 + 1 / 2 + 4 / 4 + 0) / 4)
    assert M.rmse(pred, gt, v) == pytest.approx(math.sqrt(5 / 4))
    assert M.rmse_log(pred, gt, v) == pytest.approx(math.sqrt((math.log(1.5) ** 2 + math.log(2) ** 2) / 4))
    assert M.delta1(pred, gt, v) == pytest.approx(0.5)  # ratios 1, 1.5, 2, 1
    assert M.delta2(pred, gt, v) == pytest.approx(0.75)  # 1.5 < 1.5625
    assert M.delta3(pred, gt, v) == pytest.approx(0.75)  # 2 > 1.953125


def test_perfect_prediction():
    gt = step_depth()
    v = np.ones(gt.shape, bool)
    out = M.compute_metrics(gt, gt, v)
    for name in ("abs_rel", "sq_rel", "rmse", "rmse_log", "dbe_acc", "dbe_comp"):
        assert out[name] == 0.0, name
    for name in ("delta1", "delta2", "delta3", "ep", "er"):
        assert out[name] == 1.0, name


def test_constant_factor_1_3():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 5.0, (16, 16)).astype(np.float64)
    pred = 1.3 * gt
    v = np.ones(gt.shape, bool)
    assert M.abs_rel(pred, gt, v) == pytest.approx(0.3)
    assert M.sq_rel(pred, gt, v) == pytest.approx(0.09 * gt.mean())
    assert M.rmse(pred, gt, v) == pytest.approx(0.3 * math.sqrt((gt**2).mean()))
    assert M.rmse_log(pred, gt, v) == pytest.approx(math.log(1.3))
    assert M.delta1(pred, gt, v) == 0.0
    assert M.delta2(pred, gt, v) == 1.0
    assert M.delta3(pred, gt, v) == 1.0


def test_masked_pixels_ignored_whatever_they_hold():
    rng = np.random.default_rng(1)
    gt = step_depth(h=40, w=64).astype(np.float64)
    pred = gt * rng.uniform(0.9, 1.1, gt.shape)
    valid = np.ones(gt.shape, bool)
    valid[:, 50:] = False
    valid[5:9, 3:12] = False
    ref = M.compute_metrics(pred, gt, valid)
    for junk in (np.nan, np.inf, 0.0, -5.0, 1e9):
        p2, g2 = pred.copy(), gt.copy()
        p2[~valid] = junk
        g2[~valid] = -junk if np.isfinite(junk) else junk
        out = M.compute_metrics(p2, g2, valid)
        for name in M.ALL_METRICS:
            assert out[name] == pytest.approx(ref[name], nan_ok=True), (name, junk)


def test_no_valid_pixels_is_nan():
    gt = step_depth()
    v = np.zeros(gt.shape, bool)
    out = M.compute_metrics(gt, gt, v)
    assert all(math.isnan(x) for x in out.values())


def test_shape_and_dtype_errors():
    gt = step_depth()
    with pytest.raises(ValueError, match="one shape"):
        M.abs_rel(gt[:, :10], gt, np.ones(gt.shape, bool))
    with pytest.raises(ValueError, match="bool"):
        M.abs_rel(gt, gt, np.ones(gt.shape))


def test_unknown_metric_name():
    from betterdepth_cli.core.types import UsageError

    with pytest.raises(UsageError, match="unknown metric 'absrel'"):
        M.check_metric_names(["abs_rel", "absrel"])


# ----------------------------------------------------------------- Canny and DBE


def test_canny_symmetric_step_is_one_column():
    gt = step_depth(h=32, w=64, col=32)
    edges = E.depth_edges(gt, np.ones(gt.shape, bool))
    expected = np.zeros(gt.shape, bool)
    expected[1:-1, 32] = True  # border rows are never edges
    assert np.array_equal(edges, expected)


def test_canny_thresholds_are_relative_to_the_normalised_map():
    # a [0,1] step smoothed with sigma sqrt(2) peaks at Sobel magnitude ~8 * 0.28;
    # a high threshold above that removes every edge
    img = np.zeros((24, 24))
    img[:, 12:] = 1.0
    assert E.canny(img).any()
    assert not E.canny(img, low_threshold=2.5, high_threshold=3.0).any()
    with pytest.raises(ValueError, match="low_threshold"):
        E.canny(img, low_threshold=0.5, high_threshold=0.3)


def test_dbe_of_a_shifted_step():
    gt = step_depth(h=32, w=64, col=28)
    v = np.ones(gt.shape, bool)
    shifted = step_depth(h=32, w=64, col=31)  # edge 3 px to the right
    acc, comp = E.depth_boundary_errors(shifted, gt, v)
    assert acc == pytest.approx(3.0)
    assert comp == pytest.approx(3.0)
    far = step_depth(h=32, w=64, col=40)  # 12 px away: beyond the 10 px truncation
    assert E.depth_boundary_errors(far, gt, v) == (10.0, 10.0)
    assert M.dbe_acc(far, gt, v, max_dist=20.0) == pytest.approx(12.0)


def test_dbe_with_annotated_edges_and_flat_gt():
    gt = step_depth(h=32, w=64, col=28)
    v = np.ones(gt.shape, bool)
    annotated = np.zeros(gt.shape, bool)
    annotated[1:-1, 30] = True
    acc, comp = E.depth_boundary_errors(gt, gt, v, gt_edges=annotated)
    assert acc == pytest.approx(2.0) and comp == pytest.approx(2.0)
    flat = np.full(gt.shape, 3.0, np.float32)
    assert all(math.isnan(x) for x in E.depth_boundary_errors(gt, flat, v))


def test_canny_matches_skimage_when_available():
    feature = pytest.importorskip("skimage.feature")
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 1, (48, 40))
    img[:, 20:] += 1.0
    img = (img - img.min()) / (img.max() - img.min())
    mask = np.ones(img.shape, bool)
    mask[30:40, 5:15] = False
    for m in (None, mask):
        ref = feature.canny(img, sigma=math.sqrt(2), low_threshold=0.15, high_threshold=0.3, mask=m)
        ours = E.canny(img, mask=m)
        assert (ref != ours).sum() <= 2  # float rounding at ties only
        # float32 in: both compute in float32 (the detail metrics run this path)
        ref32 = feature.canny(img.astype(np.float32), sigma=math.sqrt(2), low_threshold=0.15, high_threshold=0.3, mask=m)
        ours32 = E.canny(img.astype(np.float32), mask=m)
        assert (ref32 != ours32).sum() <= 2


def test_edge_distances_exact_and_truncated():
    src = np.zeros((20, 30), bool)
    dst = np.zeros((20, 30), bool)
    src[2, 3] = src[10, 20] = src[19, 0] = True
    dst[5, 7] = dst[10, 26] = True
    # row-major order of src: (2,3) -> (5,7) is 5 (3-4-5); (10,20) -> (10,26) is 6; (19,0) -> (5,7) is sqrt(245)
    d = E.edge_distances(src, dst)
    assert d == pytest.approx([5.0, 6.0, math.sqrt(14**2 + 7**2)], abs=1e-12)
    # truncation: max_dist itself and beyond are inf
    assert E.edge_distances(src, dst, max_dist=6.0).tolist() == [5.0, math.inf, math.inf]
    assert np.isinf(E.edge_distances(src, np.zeros_like(dst))).all()
    assert E.edge_distances(np.zeros_like(src), dst).shape == (0,)


def test_metric_values_are_python_floats():
    gt = step_depth(h=24, w=32, col=16)
    pred = step_depth(h=24, w=32, col=17) * 1.1
    values = M.compute_metrics(pred, gt, np.ones(gt.shape, bool))
    assert all(type(v) is float for v in values.values()), {k: type(v) for k, v in values.items()}


# ----------------------------------------------------------------- EP / ER


def test_edge_precision_recall_hand_cases():
    gt = step_depth(h=20, w=30, col=15, ramp=False)  # sharp step between columns 14 and 15
    v = np.ones(gt.shape, bool)
    gt_edges, scored, _ = E.sobel_edges(gt, v)
    expected = np.zeros(gt.shape, bool)
    expected[1:-1, 14:16] = True  # Sobel magnitude 4 on both sides of the step
    assert np.array_equal(gt_edges, expected)
    assert E.edge_precision_recall(gt, gt, v) == (1.0, 1.0)
    moved = step_depth(h=20, w=30, col=16, ramp=False)  # edges at columns 15, 16
    assert E.edge_precision_recall(moved, gt, v) == (0.5, 0.5)
    assert E.edge_precision_recall(moved, gt, v, tolerance=1.0) == (1.0, 1.0)


def test_edge_threshold_on_gt_normalised_inverse_depth():
    gt = step_depth(h=20, w=30, col=15, near=1.0, far=2.0, ramp=False)  # inverse depth 1 | 0.5
    v = np.ones(gt.shape, bool)
    # a prediction whose inverse-depth jump is 4 % of the GT's range: Sobel 0.16 > 0.1
    weak = (1.0 / np.where(np.arange(30) < 15, 0.77, 0.75) * np.ones((20, 1))).astype(np.float32)
    p, r = E.edge_precision_recall(weak, gt, v)
    assert (p, r) == (1.0, 1.0)
    # 2 % of the range: Sobel 0.08, below the threshold: no predicted edge
    weaker = (1.0 / np.where(np.arange(30) < 15, 0.76, 0.75) * np.ones((20, 1))).astype(np.float32)
    assert E.edge_precision_recall(weaker, gt, v) == (0.0, 0.0)
    assert E.edge_precision_recall(weaker, gt, v, threshold=0.05) == (1.0, 1.0)
    flat = np.full(gt.shape, 2.0, np.float32)
    assert all(math.isnan(x) for x in E.edge_precision_recall(gt, flat, v))


def test_f1_is_the_harmonic_mean_and_zero_or_nan_at_the_ends():
    assert M.f1_score(0.5, 1.0) == pytest.approx(2 / 3)
    assert M.f1_score(0.0, 0.0) == 0.0
    assert math.isnan(M.f1_score(math.nan, 0.5))


def test_compute_metrics_equals_the_registry_functions_and_reuses_gt_edges():
    rng = np.random.default_rng(5)
    gt = step_depth(h=40, w=48, col=20, ramp=False).astype(np.float64) * rng.uniform(0.95, 1.05, (40, 48))
    pred = step_depth(h=40, w=48, col=22).astype(np.float64) * rng.uniform(0.9, 1.1, (40, 48))
    valid = rng.uniform(size=gt.shape) > 0.1
    opts = dict(edge_threshold=0.05, edge_tolerance=1.0)
    together = M.compute_metrics(pred, gt, valid, **opts)
    cached = M.compute_metrics(pred, gt, valid, target_edges=M.prepare_target_edges(gt, valid, **opts), **opts)
    assert together == cached
    one_by_one = {n: f(pred, gt, valid) for n, f in M.METRICS.items() if n not in M.EDGE_PR_METRICS}
    one_by_one["ep"] = M.ep(pred, gt, valid, threshold=0.05, tolerance=1.0)
    one_by_one["er"] = M.er(pred, gt, valid, threshold=0.05, tolerance=1.0)
    one_by_one["edge_f1"] = M.edge_f1(pred, gt, valid, threshold=0.05, tolerance=1.0)
    p, r = one_by_one["ep"], one_by_one["er"]
    assert one_by_one["edge_f1"] == pytest.approx(2 * p * r / (p + r))
    for n in M.ALL_METRICS:
        assert together[n] == pytest.approx(one_by_one[n], rel=1e-12, nan_ok=True), n
    assert 0 < together["ep"] <= 1 and 0 < together["dbe_acc"] < 10
