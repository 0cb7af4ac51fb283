"""core.edge_gate: the refiner's changes kept only where the conditioner shows a depth transition."""

import math

import pytest
import torch

from betterdepth_cli.core.edge_gate import PLANE_SHARE, dilation_radius, edge_evidence, edge_gate, gate_changes
from betterdepth_cli.core.layout import box_radius


def _soft_step(h=50, w=200, sigma=6.0, x0=100.0):
    """A unit depth step at column x0 blurred by a Gaussian of ``sigma`` px (an erf profile)."""
    x = torch.arange(w, dtype=torch.float64)
    row = 0.5 * (1 + torch.erf((x - x0) / (sigma * math.sqrt(2.0))))
    return row.expand(h, w).clone()[None, None]


def test_a_soft_step_peaks_at_its_hand_computed_evidence():
    sigma, w = 6.0, 1000
    e = edge_evidence(_soft_step(w=w, sigma=sigma, x0=500.0))
    # range 0..1 (2 % / 98 % quantiles are the plateaus), L = 1000; the pre-smoothing (three boxes of
    # radius r, variance r (r + 1)) widens the Gaussian: peak |grad| = 1 / (sqrt(2 pi) s1) with
    # s1 = sqrt(sigma^2 + r (r + 1)); the local mean removed (three boxes of radius R, about a
    # Gaussian) is the same bump widened again: 1 / (sqrt(2 pi) s2), s2 = sqrt(s1^2 + R (R + 1))
    want = _peak(w, sigma)
    peak = float(e[0, 0, 25, 495:506].max())
    assert peak == pytest.approx(want, rel=0.02)
    assert float(e[0, 0, 25, :200].max()) < 1e-6  # far from the edge: no evidence


def test_any_plane_at_any_tilt_has_no_evidence_and_gets_no_changes():
    # a plane's disparity is affine in (x, y): its gradient is its own local mean, evidence 0, even
    # measured against a range 20 x smaller than its own (a steep floor in a deep room)
    h, w = 60, 80
    y = torch.arange(h, dtype=torch.float64)[:, None]
    x = torch.arange(w, dtype=torch.float64)[None, :]
    plane = (0.25 + 0.75 * y / h + 0.3 * x / w)[None, None]
    texture = 0.05 * torch.rand((1, 1, h, w), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(edge_evidence(plane).max()) < 1e-9
    assert float(edge_evidence(plane, span=(0.0, 0.05)).max()) < 1e-9
    out = gate_changes(plane + texture, plane, None, 2.0, 4.0)
    torch.testing.assert_close(out, plane, rtol=0, atol=0)


def test_a_steep_floor_beside_a_flat_wall_opens_the_gate_at_the_crease_only():
    # top half a wall (constant), bottom half a floor rising steeply towards the camera: the plain
    # gradient would read 2 x 400 / 400 ~ 2 ... 8 over the whole floor; less its local mean, only
    # rows within the wide low-pass's reach of the crease (3 boxes of radius R) keep any evidence
    h = w = 400
    y = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    cond = torch.where(y < 200, torch.zeros_like(y), (y - 200) / 200)[None, None]
    e = edge_evidence(cond)
    reach = 3 * box_radius(PLANE_SHARE * w) + 3 * box_radius(1.0) + 2
    assert float(e[0, 0, 200 + reach:, :].max()) < 1e-9  # the floor, away from the crease
    assert float(e[0, 0, : 200 - reach, :].max()) < 1e-9  # the wall
    assert float(e[0, 0, 195:206, :].max()) > 0.5  # the crease itself is a transition (weak: below the card's gate)


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


def _peak(length: float, sigma: float) -> float:
    """Hand-computed peak evidence of a unit step blurred by ``sigma`` px, range 1, longest side ``length``
    (see the first test)."""
    r, big = box_radius(1.0), box_radius(PLANE_SHARE * length)
    s1 = math.sqrt(sigma**2 + r * (r + 1))
    s2 = math.sqrt(s1**2 + big * (big + 1))
    return length * (1 / s1 - 1 / s2) / math.sqrt(2 * math.pi)


def test_evidence_on_a_frame_scale_takes_its_side_and_its_range():
    cond = _soft_step()
    e = edge_evidence(cond)
    torch.testing.assert_close(edge_evidence(cond, side=200.0, span=(0.0, 4.0)), e / 4.0)  # range x 4
    # a tile measured on a 3 x larger frame: gradient units of 600 px and the local mean over 5 % of 600
    e3 = edge_evidence(cond, side=600.0, span=(0.0, 1.0))
    assert float(e3[0, 0, 25, 95:106].max()) == pytest.approx(_peak(600.0, 6.0), rel=0.02)
    assert float(e[0, 0, 25, 95:106].max()) == pytest.approx(_peak(200.0, 6.0), rel=0.03)


def test_members_stacked_over_one_conditioning_are_gated_as_each_alone():
    cond = _soft_step(sigma=3.0)
    g = torch.Generator().manual_seed(1)
    a, b = (cond + 0.1 * torch.rand(cond.shape, generator=g, dtype=torch.float64) for _ in range(2))
    both = gate_changes(torch.cat([a, b]), cond, None, 2.0, 4.0)
    torch.testing.assert_close(both, torch.cat([gate_changes(a, cond, None, 2.0, 4.0),
                                                gate_changes(b, cond, None, 2.0, 4.0)]), rtol=0, atol=0)
    with pytest.raises(ValueError):
        gate_changes(torch.cat([a, b, a])[..., :-1], cond, None, 2.0, 4.0)


def test_keep_sharp_returns_a_sharp_edge_as_drawn_and_refines_a_soft_one():
    # a 1 px soft step (measured 1.15 px) and a 6 px one (6.03 px), 110 px apart; keep_sharp [1.5, 2]:
    # weight 0 within reach of the first, 1 within reach of the second, whatever the edge gate says
    from betterdepth_cli.core.blur import LOCAL_RADIUS
    from betterdepth_cli.core.edge_gate import softness

    r = LOCAL_RADIUS
    cond = _soft_step(32, 256, 1.0, 40.0) + 2.0 * _soft_step(32, 256, 6.0, 150.0)
    w = softness(cond, None, 1.5, 2.0)[0, 0, 16]
    assert (w[40 - r : 40 + r + 1] == 0).all() and (w[150 - r : 150 + r + 1] == 1).all()
    refined = cond + 0.3 * torch.sin(torch.arange(256, dtype=torch.float64) / 3.0)
    out = gate_changes(refined, cond, None, None, None, sharp=(1.5, 2.0))
    torch.testing.assert_close(out[..., 40 - r : 40 + r + 1], cond[..., 40 - r : 40 + r + 1], rtol=0, atol=0)
    torch.testing.assert_close(out[..., 150 - r : 150 + r + 1], refined[..., 150 - r : 150 + r + 1], rtol=0, atol=0)
    # with the edge gate too: the product (the gate alone keeps changes around both edges)
    both = gate_changes(refined, cond, None, 2.0, 4.0, sharp=(1.5, 2.0))
    alone = gate_changes(refined, cond, None, 2.0, 4.0)
    torch.testing.assert_close(both[..., 150 - r : 150 + r + 1], alone[..., 150 - r : 150 + r + 1], rtol=0, atol=0)
    torch.testing.assert_close(both[..., 40 - r : 40 + r + 1], cond[..., 40 - r : 40 + r + 1], rtol=0, atol=0)
    assert not torch.equal(alone[..., 40 - r : 40 + r + 1], cond[..., 40 - r : 40 + r + 1])
    with pytest.raises(ValueError):
        softness(cond, None, 2.0, 1.5)


def test_a_card_with_keep_sharp_leaves_the_sharp_edge_to_the_conditioner():
    # at initialisation a residual model over guided conditioning returns the guided filter of its
    # conditioning exactly: with keep_sharp, the sharp step comes back as the conditioner drew it
    from betterdepth_cli.core.blur import LOCAL_RADIUS
    from betterdepth_cli.core.guided import guided_refine
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.refiner import BetterDepthModel
    from betterdepth_cli.core.types import DepthPrediction

    r = LOCAL_RADIUS
    model = BetterDepthModel.tiny(seed=0, residual=True, conditioning_filter={"type": "guided", "radius": 0.05,
                                                                                "eps": 1e-3})
    model.card.update(zero_noise=True, keep_sharp=[1.5, 2.0])
    assert model.keep_sharp == (1.5, 2.0)
    cond = (1.0 + _soft_step(32, 256, 1.0, 40.0) + 2.0 * _soft_step(32, 256, 6.0, 150.0)).float()
    images = torch.rand(1, 3, 32, 256, generator=torch.Generator().manual_seed(4))
    pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")
    out = refine_batch(images, prediction=pred, model=model, steps=1, ensemble=1, processing_res=0).refined
    guided = guided_refine(cond, images, 0.05, 1e-3)
    torch.testing.assert_close(out[..., 40 - r : 40 + r + 1], cond[..., 40 - r : 40 + r + 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[..., 150 - r : 150 + r + 1], guided[..., 150 - r : 150 + r + 1], rtol=0, atol=1e-5)
    assert float((guided - cond)[..., 40 - r : 40 + r + 1].abs().max()) > 0.05  # the filter would have moved it
    # a tile (refined as a crop of a frame) is conditioned on the anchor's refined map: keep_sharp is not
    # applied there (the anchor took it against the conditioner)
    from betterdepth_cli.core.types import Frame

    tile = lambda: refine_batch(images, prediction=pred, model=model, steps=1, ensemble=1, processing_res=0,  # noqa: E731
                                frame=Frame(side=512.0)).refined
    with_keep = tile()
    model.card.pop("keep_sharp")
    torch.testing.assert_close(with_keep, tile(), rtol=0, atol=0)
    for bad in ([2.0, 1.5], [-1.0, 1.0]):
        model.card["keep_sharp"] = bad
        with pytest.raises(ValueError):
            model.keep_sharp
