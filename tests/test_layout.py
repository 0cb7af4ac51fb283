"""core.layout: the refined map's low frequencies are replaced by the conditioning's."""

import math

import numpy as np
import pytest
import torch

from betterdepth_cli.core.layout import PASSES, box_radius, keep_layout, layout_sigma, masked_lowpass


def _maps(h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = torch.rand((1, 1, h, w), generator=g, dtype=torch.float64)
    return cond


def test_box_radius_matches_the_gaussian_variance():
    # three boxes of width 2r+1 have variance r(r+1): sigma 6.4 -> r = 6 (42 ~ 40.96)
    assert PASSES == 3
    assert box_radius(6.4) == 6
    assert box_radius(0.2) == 1  # at least one pixel
    for sigma in (3.0, 10.0, 40.0):
        r = box_radius(sigma)
        assert abs(math.sqrt(r * (r + 1)) - sigma) <= 0.6
    with pytest.raises(ValueError):
        box_radius(0.0)


def test_constant_offset_is_removed_exactly():
    # refined = conditioning + 3: the whole difference is below any cut-off, so the output is the conditioning
    cond = _maps()
    out = keep_layout(cond + 3.0, cond, None, sigma=5.0)
    torch.testing.assert_close(out, cond, rtol=0, atol=1e-12)


def test_finest_detail_is_kept():
    # a +-1 checkerboard (period 2): one box mean of odd width 2r+1 along an axis scales it by
    # (-1)^r / (2r+1) away from the border, so three passes over both axes leave (1/(2r+1))^6 of it
    h, w = 64, 64
    checker = torch.from_numpy(((np.indices((h, w)).sum(0) % 2) * 2.0 - 1.0)[None, None])
    cond = torch.zeros_like(checker)
    out = keep_layout(cond + checker, cond, None, sigma=6.0)
    r = box_radius(6.0)
    inner = (slice(None), slice(None), slice(30, 34), slice(30, 34))  # more than 3r from every border
    kept = 1.0 - (1.0 / (2 * r + 1)) ** (2 * PASSES)
    torch.testing.assert_close(out[inner], checker[inner] * kept, rtol=0, atol=1e-12)
    assert kept > 1 - 1e-6


def test_linear_ramp_difference_is_removed_in_the_interior():
    # a symmetric kernel reproduces a linear function away from the border (normalised convolution)
    h, w = 50, 80
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    cond = _maps(h, w)
    ramp = (0.01 * xx - 0.02 * yy)[None, None]
    out = keep_layout(cond + ramp, cond, None, sigma=2.0)
    r = PASSES * box_radius(2.0)  # the smoothing's reach
    torch.testing.assert_close(out[..., r:-r, r:-r], cond[..., r:-r, r:-r], rtol=0, atol=1e-12)


def test_invalid_pixels_take_no_part_and_stay_finite():
    cond = _maps()
    valid = torch.ones_like(cond, dtype=torch.bool)
    valid[..., 10:20, 10:20] = False
    bad = cond.clone()
    bad[~valid] = float("nan")  # the conditioning is undefined there
    out = keep_layout(cond + 2.0, bad, valid, sigma=3.0)
    assert torch.isfinite(out).all()
    # the offset is removed wherever valid pixels are in reach (all pixels here)
    torch.testing.assert_close(out[valid], cond[valid], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[~valid], cond[~valid], rtol=0, atol=1e-12)


def test_masked_lowpass_is_zero_out_of_reach():
    x = torch.ones((1, 1, 30, 30), dtype=torch.float64)
    wgt = torch.zeros_like(x)
    wgt[..., :3, :3] = 1.0
    y = masked_lowpass(x, wgt, sigma=1.0)
    assert y[..., 0, 0].item() == pytest.approx(1.0)
    assert y[..., 29, 29].item() == 0.0  # more than 4 sigma from any weight


def test_zero_sigma_is_the_identity_and_bad_shapes_fail():
    cond = _maps()
    ref = cond * 2
    assert keep_layout(ref, cond, None, 0.0) is ref
    with pytest.raises(ValueError):
        keep_layout(ref, cond[..., :-1], None, 1.0)
    with pytest.raises(ValueError):
        keep_layout(ref, cond, None, -1.0)
    assert layout_sigma(640, 0.015) == pytest.approx(9.6)
