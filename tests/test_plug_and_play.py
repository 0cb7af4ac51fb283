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
