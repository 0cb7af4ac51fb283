"""training.plug_and_play: the artefact figures and the score record."""

import numpy as np
import pytest

from training import plug_and_play as pp


def test_grid_ratio_by_hand():
    # 4 x 8 map, cells of 4: x[:, j] = 2 (j // 4) + 0.25 j. Along x the one border difference per row
    # (columns 3 -> 4) is 2.25, the six others 0.25; along y every difference is 0 and none crosses
    # (rows 0..3 form one cell). Cross mean 2.25; within mean (24 x 0.25 + 24 x 0) / 48 = 0.125.
    j = np.arange(8)
    x = np.tile(2.0 * (j // 4) + 0.25 * j, (4, 1))
    assert pp.grid_ratio(x, 4) == pytest.approx(18.0)
    assert pp.grid_ratio(np.tile(0.25 * j, (4, 1)), 4) == pytest.approx(2.0)  # a ramp: cross 0.25, within 0.125
    with pytest.raises(ValueError):
        pp.grid_ratio(x, 1)


def test_scores_round_trip_through_json():
    s = pp.Scores(table={"a|dev|c|refined": {"abs_rel": 0.1}}, grid={"refined": 1.0},
                  grid_strong={"refined": 0.98}, leakage={"refined": 0.0}, seconds=3.0)
    back = pp.from_json(pp.to_json(s))
    assert back == s
    old = pp.to_json(s)
    del old["grid_strong"]  # records written before the strong-conditioner grid
    assert pp.from_json(old).grid_strong == {}


def test_the_sharp_conditionings_by_hand():
    import cv2

    rng = np.random.default_rng(0)
    disp = rng.uniform(0.5, 2.0, (20, 31)).astype(np.float32)
    # at its own size the round trip is exact; a constant stays constant at any size
    np.testing.assert_array_equal(pp.low_resolution(disp, side=31), disp)
    np.testing.assert_allclose(pp.low_resolution(np.full((40, 62), 1.5, np.float32), side=20), 1.5, rtol=1e-6)
    # mixed blur: columns 0, 10, 20, 30 of 31 take the first, second, third, fourth blur exactly
    shares = (0.02, 0.05, 0.1, 0.2)
    out = pp.mixed_blur(disp, shares)
    for col, share in zip((0, 10, 20, 30), shares):
        want = cv2.GaussianBlur(disp, (0, 0), share * 31, borderType=cv2.BORDER_REFLECT)[:, col]
        np.testing.assert_allclose(out[:, col], want, rtol=1e-6)
    blurs = [cv2.GaussianBlur(disp, (0, 0), s * 31, borderType=cv2.BORDER_REFLECT) for s in shares]
    np.testing.assert_allclose(out[:, 5], 0.5 * (blurs[0][:, 5] + blurs[1][:, 5]), rtol=1e-6)  # halfway between
    assert out.shape == disp.shape and out.dtype == np.float32
