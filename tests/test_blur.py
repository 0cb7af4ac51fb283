"""core.blur (how soft a map's edges are) and the card's cascade that it drives."""

import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from betterdepth_cli.core.blur import PROBE, estimate_blur, gaussian_blur
from betterdepth_cli.core.guided import guided_refine
from betterdepth_cli.core.pipeline import cascade_resolution, refine_batch, resize
from betterdepth_cli.core.refiner import BetterDepthModel
from betterdepth_cli.core.settings import resolve_settings
from betterdepth_cli.core.types import DepthPrediction


def blurred_step(sigma: float, height: int = 64, width: int = 128, at: float | None = None) -> torch.Tensor:
    """(1,1,H,W) float64: 0 left of column ``at`` (the middle), 1 right of it, blurred by a Gaussian of ``sigma`` px."""
    x = np.arange(width) - ((width - 1) / 2 if at is None else at)
    row = 0.5 * (1.0 + erf(x / (sigma * math.sqrt(2.0))))
    return torch.tensor(np.tile(row, (height, 1)))[None, None]


@pytest.mark.parametrize("sigma", [3.0, 8.0, 14.0])
def test_the_blur_of_a_blurred_step_is_recovered(sigma):
    # rho = s / sqrt(s^2 + PROBE^2) for a Gaussian step: the estimate inverts it; central differences
    # average the derivative over [-1, 1] px (variance 1/3), so the step measured is sqrt(s^2 + 1/3)
    step = blurred_step(sigma, width=256)
    assert float(estimate_blur(step)) == pytest.approx(math.sqrt(sigma**2 + 1 / 3), rel=0.02)


def test_the_estimate_is_scale_and_shift_invariant_and_per_image():
    a, b = blurred_step(4.0), blurred_step(10.0)
    est = estimate_blur(torch.cat([a, 7.0 * b - 3.0]))
    assert est.shape == (2,)
    assert float(est[0]) == pytest.approx(float(estimate_blur(a)), rel=1e-5)  # float32 inside
    assert float(est[1]) == pytest.approx(float(estimate_blur(b)), rel=1e-5)
    assert float(est[0]) < 5.0 < 9.0 < float(est[1])


def test_a_constant_map_has_no_blur_and_a_plane_is_as_soft_as_can_be():
    assert float(estimate_blur(torch.full((1, 1, 32, 32), 2.5))) == 0.0
    plane = torch.linspace(0.0, 1.0, 64, dtype=torch.float64)[None, :].expand(48, 64)[None, None]
    assert float(estimate_blur(plane)) > 10 * PROBE  # the probe cannot lower a plane's gradient: no edge to sharpen


def test_invalid_pixels_take_no_part():
    step = blurred_step(6.0, width=160)
    holed = step.clone()
    holed[..., :, 5:15] = float("nan")  # a hole far from the edge: its borders are no edges
    valid = torch.ones_like(step, dtype=torch.bool)
    valid[..., 40:, 140:] = False
    holed[..., 40:, 140:] = 50.0  # garbage where the mask says invalid
    assert float(estimate_blur(holed, valid)) == pytest.approx(float(estimate_blur(step)), rel=0.02)
    with pytest.raises(ValueError):
        estimate_blur(step[0])


def test_gaussian_blur_keeps_constants_and_the_mass():
    x = torch.zeros(1, 1, 41, 41, dtype=torch.float64)
    x[..., 20, 20] = 1.0
    y = gaussian_blur(x, 2.0)
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-9)
    assert float(y[..., 20, 22] / y[..., 20, 20]) == pytest.approx(math.exp(-0.5), rel=1e-6)
    c = torch.full((1, 1, 9, 12), 3.0, dtype=torch.float64)  # smaller than the kernel: replicated borders
    torch.testing.assert_close(gaussian_blur(c, 4.0), c)


def _residual_model(cascade: dict | None):
    # at initialisation a residual model over guided conditioning returns the guided filter of its
    # conditioning exactly, so each pass is a hand-computable guided filter
    model = BetterDepthModel.tiny(seed=0, residual=True, conditioning_filter={"type": "guided", "radius": 0.05,
                                                                                "eps": 1e-3})
    model.card["zero_noise"] = True
    if cascade is not None:
        model.card["cascade"] = cascade
    return model


def test_cascade_resolution_asks_for_a_first_pass_only_where_the_conditioning_is_too_soft():
    model = _residual_model({"blur_above": 5.0, "scale": 0.5})
    run = resolve_settings(model.card, processing_res=0)
    sharp, soft = blurred_step(1.5, 48, 96).float(), blurred_step(9.0, 48, 96).float()
    ok = torch.ones_like(sharp, dtype=torch.bool)
    assert cascade_resolution(model, run, sharp, ok) == 0
    assert cascade_resolution(model, run, soft, ok) == 48  # half of the 96 px processing size
    assert cascade_resolution(model, resolve_settings(model.card, processing_res=64), soft, ok) == 32
    assert cascade_resolution(model, run, torch.cat([sharp, soft]), ok.repeat(2, 1, 1, 1)) is None  # they disagree
    assert cascade_resolution(_residual_model(None), run, soft, ok) == 0  # a card without a cascade
    for bad in ({"blur_above": 0, "scale": 0.5}, {"blur_above": 5.0, "scale": 1.0}, [11.0, 0.5]):
        with pytest.raises(ValueError):
            cascade_resolution(_residual_model(bad), run, soft, ok)


def test_a_soft_conditioning_is_refined_at_half_size_first_and_the_full_pass_is_conditioned_on_that():
    model = _residual_model({"blur_above": 5.0, "scale": 0.5})
    g = torch.Generator().manual_seed(2)
    images = torch.rand(1, 3, 48, 96, generator=g)
    soft = 1.0 + blurred_step(9.0, 48, 96).float()
    pred = DepthPrediction(soft, torch.ones_like(soft, dtype=torch.bool), "disparity")
    out = refine_batch(images, prediction=pred, model=model, steps=1, ensemble=1, processing_res=0)
    # by hand: the guided filter at 48 x 24 (radius from that size); its change, upsampled, added to the
    # conditioning; that filtered at full size
    shrunk = resize(soft, (24, 48))
    change = guided_refine(shrunk, resize(images, (24, 48)), 0.05, 1e-3) - shrunk
    want = guided_refine(soft + resize(change, (48, 96)), images, 0.05, 1e-3)
    torch.testing.assert_close(out.refined, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.conditioning, soft)  # the conditioner's map is reported, not the first pass's
    assert "cascade" in out.timings
    one = refine_batch(images, prediction=pred, model=model, steps=1, ensemble=1, processing_res=0, cascade=False)
    torch.testing.assert_close(one.refined, guided_refine(soft, images, 0.05, 1e-3), rtol=0, atol=1e-5)


def test_in_a_batch_each_image_decides_for_itself():
    model = _residual_model({"blur_above": 5.0, "scale": 0.5})
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 48, 96, generator=g)
    maps = torch.cat([1.0 + blurred_step(1.5, 48, 96), 1.0 + blurred_step(9.0, 48, 96)]).float()
    pred = lambda m: DepthPrediction(m, torch.ones_like(m, dtype=torch.bool), "disparity")  # noqa: E731
    both = refine_batch(images, prediction=pred(maps), model=model, steps=1, ensemble=1, processing_res=0,
                        batch_invariant=False)
    for i in range(2):
        alone = refine_batch(images[i : i + 1], prediction=pred(maps[i : i + 1]), model=model, steps=1, ensemble=1,
                             processing_res=0)
        torch.testing.assert_close(both.refined[i : i + 1], alone.refined, rtol=0, atol=1e-6)
    sharp_once = guided_refine(maps[:1], images[:1], 0.05, 1e-3)  # the sharp one had one pass
    torch.testing.assert_close(both.refined[:1], sharp_once, rtol=0, atol=1e-5)
    assert both.timings["cascade"] > 0  # the second image's first pass is counted, though the first had none


def test_a_plane_stays_a_plane_through_both_passes():
    # a plane has no edge, so its blur estimate is huge and the cascade runs; the edge gate leaves the
    # first pass's map unchanged, its change is 0, and the full pass sees the plane itself: exact
    model = _residual_model({"blur_above": 5.0, "scale": 0.5})
    model.card["edge_gate"] = [2.0, 4.0]
    images = torch.rand(1, 3, 48, 96, generator=torch.Generator().manual_seed(4))
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(96.0), indexing="ij")
    plane = (1.0 + 0.01 * yy + 0.003 * xx)[None, None]
    run = resolve_settings(model.card, processing_res=0)
    ok = torch.ones_like(plane, dtype=torch.bool)
    assert cascade_resolution(model, run, plane, ok) == 48
    pred = DepthPrediction(plane, ok, "disparity")
    out = refine_batch(images, prediction=pred, model=model, steps=1, ensemble=1, processing_res=0)
    assert "cascade" in out.timings
    torch.testing.assert_close(out.refined, plane, rtol=0, atol=1e-5)


def test_a_large_map_is_sampled_evenly(monkeypatch):
    # above MAX_SAMPLES pixels the quantile is taken over every k-th pixel of the whole map, so an
    # edge in its bottom rows counts as much as one at the top
    import betterdepth_cli.core.blur as blur

    step = blurred_step(6.0, 64, 128, at=100.0).transpose(-1, -2)  # 128 rows: the edge along row 100
    full = float(estimate_blur(step))
    monkeypatch.setattr(blur, "MAX_SAMPLES", 1000)
    assert float(estimate_blur(step)) == pytest.approx(full, rel=0.05)
    assert 5.0 < full < 7.0


def test_the_quantile_by_selection_equals_torch_quantile():
    from betterdepth_cli.core.blur import _quantile

    for n in (1, 2, 7, 1001):
        v = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        for q in (0.0, 0.5, 0.995, 1.0):
            assert float(_quantile(v, q)) == float(torch.quantile(v, q))
