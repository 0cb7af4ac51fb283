"""core.edge_gate: the refiner's changes kept only where the conditioner shows a depth transition."""

import math

import pytest
import torch

from betterdepth_cli.core.edge_gate import dilation_radius, edge_evidence, edge_gate, gate_changes
from betterdepth_cli.core.layout import box_radius


def _soft_step(h=50, w=200, sigma=6.0, x0=100.0):
    """A unit depth step at column x0 blurred by a Gaussian of ``sigma`` px (an erf profile)."""
    x = torch.arange(w, dtype=torch.float64)
    row = 0.5 * (1 + torch.erf((x - x0) / (sigma * math.sqrt(2.0))))
    return row.expand(h, w).clone()[None, None]


def test_a_soft_step_peaks_at_its_hand_computed_evidence():
    sigma = 6.0
    e = edge_evidence(_soft_step(sigma=sigma))
    # range 0..1 (2 % / 98 % quantiles are the plateaus), L = 200; the pre-smoothing (three boxes of
    # radius 1, variance 2) widens the Gaussian: peak |grad| = 1 / (sqrt(2 pi) sqrt(sigma^2 + 2))
    r = box_radius(1.0)
    want = 200.0 / (math.sqrt(2 * math.pi) * math.sqrt(sigma**2 + r * (r + 1)))
    peak = float(e[0, 0, 25, 95:106].max())
    assert peak == pytest.approx(want, rel=0.02)
    assert float(e[0, 0, 25, :40].max()) < 1e-6  # far from the edge: no evidence


def test_a_tilted_plane_gets_no_changes_at_all():
    # a plane going once from far to near: evidence about 1 everywhere, below the gate's low end
    h, w = 60, 80
    plane = torch.linspace(0.25, 1.0, h, dtype=torch.float64)[:, None].expand(h, w).clone()[None, None]
    texture = 0.05 * torch.rand((1, 1, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    e = edge_evidence(plane)
    assert float(e.max()) < 2.0
    out = gate_changes(plane + texture, plane, None, 2.5, 5.0)
    torch.testing.assert_close(out, plane, rtol=0, atol=0)


def test_changes_are_kept_around_a_strong_edge_and_dropped_elsewhere():
    cond = _soft_step(sigma=3.0)  # peak evidence ~ 24: the gate is open there
    refined = cond.clone()
    refined[..., 100:] = 1.0  # the refiner made the edge sharp
    refined[..., :100] = 0.0
    refined = refined + 0.01  # and shifted everything a little
    out = gate_changes(refined, cond, None, 2.5, 5.0)
    torch.testing.assert_close(out[..., 95:106], refined[..., 95:106], rtol=0, atol=1e-15)  # the edge: refined
    torch.testing.assert_close(out[..., :60], cond[..., :60], rtol=0, atol=0)  # far away: the conditioner
    g = edge_gate(cond, None, 2.5, 5.0)
    assert float(g.min()) == 0.0 and float(g.max()) == 1.0


def test_invalid_pixels_keep_the_refined_value_and_give_no_evidence():
    cond = _soft_step()
    valid = torch.ones_like(cond, dtype=torch.bool)
    valid[..., :, 10:20] = False
    cond_nan = cond.clone()
    cond_nan[~valid] = float("nan")
    refined = cond + 0.5
    out = gate_changes(refined, cond_nan, valid, 2.5, 5.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[~valid], refined[~valid], rtol=0, atol=0)
    assert float(edge_evidence(cond_nan, valid)[~valid].abs().max()) == 0.0


def test_flat_map_and_bad_arguments():
    flat = torch.ones((1, 1, 20, 30), dtype=torch.float64)
    assert float(edge_evidence(flat).abs().max()) == 0.0
    with pytest.raises(ValueError):
        edge_gate(flat, None, 5.0, 2.5)
    with pytest.raises(ValueError):
        edge_evidence(flat[:, 0])
    assert dilation_radius(480, 640) == 2 and dilation_radius(2048, 3072) == 9


def test_evidence_on_a_frame_scale_is_linear_in_its_side_and_inverse_in_its_range():
    cond = _soft_step()
    e = edge_evidence(cond)
    torch.testing.assert_close(edge_evidence(cond, side=600.0, span=(0.0, 1.0)), 3.0 * e)  # side 200 -> 600
    torch.testing.assert_close(edge_evidence(cond, side=200.0, span=(0.0, 4.0)), e / 4.0)
