"""The guided filter and the residual refiner over guided conditioning."""

import numpy as np
import pytest
import torch

from betterdepth_cli.core.guided import box_mean, guided_filter, guided_radius, guided_refine, luminance
from betterdepth_cli.core.pipeline import refine_batch
from betterdepth_cli.core.refiner import BetterDepthModel, load_model
from betterdepth_cli.core.types import DepthPrediction, UsageError


@pytest.mark.parametrize("r", [0, 2, 4, 6, 9])  # 4: the window spans the rows; 6, 9: both sides
def test_box_mean_equals_the_clipped_window_mean_at_every_pixel(r):
    x = torch.arange(5 * 7, dtype=torch.float64).reshape(1, 1, 5, 7) ** 1.5
    got = box_mean(x, r)[0, 0]
    for i in range(5):
        for j in range(7):
            want = x[0, 0, max(0, i - r): i + r + 1, max(0, j - r): j + r + 1].mean()
            assert float(got[i, j]) == pytest.approx(float(want), rel=1e-12)


def test_guided_filter_is_linear_in_the_map_and_keeps_constants():
    g = torch.Generator().manual_seed(0)
    guide = torch.rand(2, 1, 20, 30, generator=g)
    p = torch.rand(2, 1, 20, 30, generator=g)
    q = guided_filter(p, guide, 3, 1e-3)
    q2 = guided_filter(3.0 * p + 2.0, guide, 3, 1e-3)
    torch.testing.assert_close(q2, 3.0 * q + 2.0, rtol=1e-5, atol=1e-5)
    const = torch.full_like(p, 7.5)
    torch.testing.assert_close(guided_filter(const, guide, 3, 1e-3), const)
    assert guided_filter(p, guide, 0, 1e-3) is p


def test_a_map_affine_in_the_guide_comes_back_unchanged():
    # p = 2 I - 1 everywhere: cov = 2 var(I), a = 2 var / (var + eps) -> 2 as eps -> 0, b -> -1
    guide = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    p = 2.0 * guide - 1.0
    torch.testing.assert_close(guided_filter(p, guide, 2, 1e-9), p, rtol=0, atol=1e-5)


def test_a_blurred_step_snaps_to_the_guide_edge():
    # guide: a sharp step at column 10; map: the same step blurred over 6 columns
    guide = torch.zeros(1, 1, 8, 20)
    guide[..., 10:] = 1.0
    p = torch.clamp((torch.arange(20.0) - 7.0) / 6.0, 0, 1).expand(1, 1, 8, 20).clone()
    q = guided_filter(p, guide, 4, 1e-4)
    # the two pixels either side of the edge: the blurred map differs by 1/6, the filtered one by far more
    assert float(q[0, 0, 4, 10] - q[0, 0, 4, 9]) > 0.6 > float(p[0, 0, 4, 10] - p[0, 0, 4, 9])


def test_texture_on_a_flat_map_does_not_leak():
    # a flat plane seen through a random texture: cov(I, p) = 0 in every window, so q = p exactly
    guide = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    p = torch.full((1, 1, 24, 24), 0.25)
    torch.testing.assert_close(guided_filter(p, guide, 3, 1e-3), p)


def test_radius_scales_with_the_longest_side():
    assert guided_radius(480, 640, 0.01) == 6
    assert guided_radius(50, 100, 0.01) == 1
    assert guided_radius(2000, 3000, 0.01) == 30
    assert guided_radius(480, 640, 0.0) == 0


def test_luminance_weights():
    rgb = torch.tensor([1.0, 0.5, 0.0]).reshape(1, 3, 1, 1)
    assert float(luminance(rgb)) == pytest.approx(0.299 + 0.5 * 0.587)


def _guided_residual_model(raw: bool = False):
    model = BetterDepthModel.tiny(seed=0, residual=True, raw_conditioning=raw,
                                  conditioning_filter={"type": "guided", "radius": 0.05, "eps": 1e-3})
    model.card["zero_noise"] = True
    return model


@pytest.mark.parametrize("raw", [False, True])
def test_a_residual_model_is_the_guided_filter_at_initialisation(tmp_path, raw):
    # the output layer starts at zero: v = 0, x0 = 0, the clean latent is the (filtered) conditioning latent
    model = _guided_residual_model(raw)
    model.save(tmp_path / "m")
    model = load_model(tmp_path / "m")
    assert model.residual and model.conditioning_filter["type"] == "guided"
    assert model.conditioning_maps == (2 if raw else 1)
    assert model.unet.config.in_channels == 48 + 16 * (1 + model.conditioning_maps)
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 40, 56, generator=g)
    cond = 1.0 + torch.rand(2, 1, 40, 56, generator=g)
    pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")
    out = refine_batch(images, prediction=pred, model=model, steps=1, processing_res=0)
    want = guided_refine(cond, images, 0.05, 1e-3)
    torch.testing.assert_close(out.refined, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.conditioning, cond)


def test_raw_conditioning_shares_the_filtered_maps_normalisation_and_alignment():
    from training.objective import prepare_maps

    g = torch.Generator().manual_seed(6)
    gt = 1.0 + torch.rand(1, 1, 16, 16, generator=g)
    cond = 3.0 * gt + 1.0  # the filtered map: an affine copy of the GT, so the alignment maps it onto it
    raw = cond.clone()
    raw[..., :8, :] += 0.5  # the raw map differs on the top half
    ok = torch.ones_like(gt, dtype=torch.bool)
    maps = prepare_maps(cond, ok, gt, ok, prealign=True, cond_raw=raw)
    # the raw map goes through cond's mapping: same values where equal, + 0.5 x the mapping's slope elsewhere
    torch.testing.assert_close(maps.cond_raw[..., 8:, :], maps.cond[..., 8:, :])
    inside = (maps.cond.abs() < 0.9) & (maps.cond_raw.abs() < 0.9)
    x, y = cond[inside].double(), maps.cond[inside].double()
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    top = inside.clone()
    top[..., 8:, :] = False
    diff = (maps.cond_raw - maps.cond)[top]
    assert diff.numel() > 10
    torch.testing.assert_close(diff, torch.full_like(diff, 0.5 * slope), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("raw", [False, True])
def test_residual_training_moves_the_model_off_the_identity(raw):
    from training.e2e import e2e_loss
    from training.objective import ObjectiveSettings

    model = _guided_residual_model(raw).train()
    g = torch.Generator().manual_seed(4)
    rgb = torch.rand(2, 3, 32, 32, generator=g)
    depth = 1.0 + torch.rand(2, 1, 32, 32, generator=g)
    valid = torch.ones_like(depth, dtype=torch.bool)
    cond = 1.0 / depth + 0.1 * torch.rand(2, 1, 32, 32, generator=g)
    out = e2e_loss(model, rgb, cond, valid, depth, valid, "disparity", ObjectiveSettings(patch_mask=False),
                   cond_raw=cond + 0.01 if raw else None)
    out.loss.backward()
    assert model.unet.conv_out.weight.grad.abs().sum() > 0  # the zero layer gets a gradient
    assert float(out.loss.detach()) > 0


def test_simulated_conditioner_is_seeded_and_removes_thin_structures():
    from training.simulated_conditioner import SimulatedConditioner

    depth = np.full((64, 64), 4.0, np.float32)
    depth[:, 31:33] = 1.0  # a 2-pixel rod nearer than the wall
    valid = np.ones_like(depth, bool)
    sim = SimulatedConditioner(sigma_min=0.0, sigma_max=0.0, warp=0.0, gamma_min=1, gamma_max=1, thin=1.0, thin_max=0.1)
    out = sim.degrade(depth, valid, np.random.default_rng(0))
    np.testing.assert_allclose(out, 0.25, rtol=1e-6)  # the opening removed the rod: the wall's disparity everywhere
    blur = SimulatedConditioner(thin=0.0)
    a = blur.degrade(depth, valid, np.random.default_rng(5))
    b = blur.degrade(depth, valid, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a[:, 32].mean() < 1.0  # blurred: the rod's peak disparity (1.0) is spread


def test_native_resolution_is_capped_by_the_card_and_the_output_keeps_the_input_size():
    model = _guided_residual_model()
    model.card["defaults"] = {**model.card.get("defaults", {}), "max_processing_res": 32}
    seen = []
    real = model.codec.encode_image
    model.codec.encode_image = lambda x: seen.append(tuple(x.shape[-2:])) or real(x)
    images = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(7))
    cond = 1.0 + torch.rand(1, 1, 48, 64, generator=torch.Generator().manual_seed(8))
    pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")
    out = refine_batch(images, prediction=pred, model=model, steps=1, processing_res=0)
    assert out.refined.shape == (1, 1, 48, 64)
    assert seen == [(24, 32)]  # 32 x 24 at the cap (a multiple of the model's 8 already)
    seen.clear()
    refine_batch(images, prediction=pred, model=model, steps=1, processing_res=64)  # an explicit size wins
    assert seen == [(48, 64)]


def test_residual_smoothing_removes_any_pattern_that_repeats_every_cell():
    model = _guided_residual_model()
    f = model.codec.factor
    # a residual that is a pure cell-periodic pattern (the codec grid): +1/-1 stripes of period f
    pattern = torch.tensor([1.0, -1.0, 1.0, -1.0])[:f].repeat(8)[None, None, None, :].expand(1, 1, 16, 32).clone()
    x0 = model.codec.encode_depth(pattern)
    assert torch.equal(model.smooth_residual(x0), x0)  # off unless the card asks
    model.card["residual_smoothing"] = f
    smoothed = model.codec.decode_depth(model.smooth_residual(x0))
    inner = smoothed[..., 2:-2, 2:-2]  # away from the replicate-padded border
    assert float(inner.abs().max()) < 1e-6
    # a step (an edge the residual moves) stays a step, spread over the box width only
    step = torch.zeros(1, 1, 16, 32)
    step[..., 16:] = 1.0
    out = model.codec.decode_depth(model.smooth_residual(model.codec.encode_depth(step)))[0, 0, 8]
    assert float(out[:14].abs().max()) == 0.0 and float((out[19:] - 1).abs().max()) == 0.0
    # centred, not half a pixel off: the step's ramp is [1, 3, 5, 7] / 8 about the step at 15.5
    torch.testing.assert_close(out[14:18], torch.tensor([1.0, 3.0, 5.0, 7.0]) / 8)


def test_centred_box_has_the_hand_computed_symmetric_kernel():
    from betterdepth_cli.core.refiner import centred_box

    impulse = torch.zeros(1, 1, 11, 11, dtype=torch.float64)
    impulse[..., 5, 5] = 1.0
    row = torch.tensor([1.0, 2.0, 2.0, 2.0, 1.0], dtype=torch.float64) / 8  # k = 4: [1, 2, 2, 2, 1] / 8
    want = torch.zeros(11, 11, dtype=torch.float64)
    want[3:8, 3:8] = row[:, None] * row[None, :]
    torch.testing.assert_close(centred_box(impulse, 4)[0, 0], want)
    want3 = torch.zeros(11, 11, dtype=torch.float64)
    want3[4:7, 4:7] = 1.0 / 9  # odd k: the plain centred box
    torch.testing.assert_close(centred_box(impulse, 3)[0, 0], want3)


def test_a_zero_noise_models_two_members_are_the_photo_and_its_mirror_image():
    # members of a deterministic model differ by a left-right flip: the pair's result is mirror-equivariant
    # (refining the mirrored photo gives the mirrored result), which one member alone is not
    model = _guided_residual_model(raw=True)
    with torch.no_grad():
        out_conv = model.unet.conv_out
        out_conv.weight.copy_(0.05 * torch.randn(out_conv.weight.shape, generator=torch.Generator().manual_seed(4)))
    g = torch.Generator().manual_seed(5)
    images = torch.rand(1, 3, 40, 56, generator=g)
    cond = 1.0 + torch.rand(1, 1, 40, 56, generator=g)
    pred = lambda c: DepthPrediction(c, torch.ones_like(c, dtype=torch.bool), "disparity")
    run = lambda imgs, c, e: refine_batch(imgs, prediction=pred(c), model=model, steps=1, ensemble=e, processing_res=0)
    one, one_m = run(images, cond, 1), run(images.flip(-1), cond.flip(-1), 1)
    assert float((one_m.refined.flip(-1) - one.refined).abs().max()) > 1e-3  # one member: not equivariant
    pair, pair_m = run(images, cond, 2), run(images.flip(-1), cond.flip(-1), 2)
    torch.testing.assert_close(pair_m.refined.flip(-1), pair.refined, rtol=0, atol=1e-5)
    assert pair.uncertainty is not None and float(pair.uncertainty.max()) > 0  # the two members' spread
    for member in (one.refined, one_m.refined.flip(-1)):  # both members count: the pair is neither alone
        assert float((pair.refined - member).abs().max()) > 1e-3
    assert run(images, cond, 5).refined.shape == pair.refined.shape  # more members are capped at two
    from betterdepth_cli.core.settings import resolve_settings

    assert resolve_settings(model.card, ensemble=5).ensemble == 2


def test_the_uncertainty_is_the_spread_of_what_is_returned_zero_where_the_gate_keeps_the_conditioner():
    model = _guided_residual_model(raw=True)
    with torch.no_grad():
        out_conv = model.unet.conv_out
        out_conv.weight.copy_(0.05 * torch.randn(out_conv.weight.shape, generator=torch.Generator().manual_seed(4)))
    model.card["edge_gate"] = [2.0, 4.0]
    images = torch.rand(1, 3, 40, 64, generator=torch.Generator().manual_seed(6))
    cond = torch.ones(1, 1, 40, 64)
    cond[..., 32:] = 3.0  # one vertical depth step at column 32: the gate opens around it only
    pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")
    out = refine_batch(images, prediction=pred, model=model, steps=1, ensemble=2, processing_res=0)
    far = torch.cat([out.uncertainty[..., :20], out.uncertainty[..., 44:]], -1)
    assert float(far.abs().max()) == 0.0  # the conditioner returned there: no spread
    torch.testing.assert_close(torch.cat([out.refined[..., :20], out.refined[..., 44:]], -1),
                               torch.cat([cond[..., :20], cond[..., 44:]], -1), rtol=0, atol=1e-6)
    assert float(out.uncertainty[..., 28:36].max()) > 0  # the two members differ at the refined edge


def test_a_raw_based_residual_model_is_its_conditioner_at_initialisation():
    # residual_base = "raw": the zero output layer gives back the unfiltered conditioning (the conditioner itself)
    model = _guided_residual_model(raw=True)
    model.card["residual_base"] = "raw"
    g = torch.Generator().manual_seed(9)
    images = torch.rand(1, 3, 40, 56, generator=g)
    cond = 1.0 + torch.rand(1, 1, 40, 56, generator=g)
    pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")
    out = refine_batch(images, prediction=pred, model=model, steps=1, processing_res=0)
    torch.testing.assert_close(out.refined, cond, rtol=0, atol=1e-5)


def _refine_once(model, images, cond, **kwargs) -> torch.Tensor:
    pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")
    return refine_batch(images, prediction=pred, model=model, steps=1, processing_res=0, **kwargs).refined


def _photo_and_map(seed: int, ramp: bool = False):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 3, 40, 56, generator=g)
    cond = torch.linspace(1.0, 2.0, 40)[:, None].expand(40, 56).clone()[None, None] if ramp else \
        1.0 + torch.rand(1, 1, 40, 56, generator=g)
    return images, cond


def test_layout_lowpass_takes_the_low_frequencies_from_the_conditioner():
    # at initialisation the residual model returns the guided filter's map; with the card's
    # layout_lowpass s the pipeline adds back G_sigma(cond - that map), sigma = s x the longest side
    from betterdepth_cli.core.layout import keep_layout

    model = _guided_residual_model()
    images, cond = _photo_and_map(4)
    plain = _refine_once(model, images, cond)
    torch.testing.assert_close(plain, guided_refine(cond, images, 0.05, 1e-3), rtol=0, atol=1e-5)
    model.card["layout_lowpass"] = 0.05
    torch.testing.assert_close(_refine_once(model, images, cond), keep_layout(plain, cond, None, 0.05 * 56),
                               rtol=0, atol=1e-6)
    model.card["layout_lowpass"] = -1
    with pytest.raises(ValueError):
        _refine_once(model, images, cond)


def test_edge_gate_returns_the_conditioner_where_it_has_no_edges():
    # the card's edge_gate keeps the refiner's changes only near the conditioner's transitions:
    # over a smooth ramp (no transition) the pipeline returns the conditioning itself
    from betterdepth_cli.core.edge_gate import gate_changes

    model = _guided_residual_model()
    images, ramp = _photo_and_map(5, ramp=True)
    plain = _refine_once(model, images, ramp)
    assert float((plain - ramp).abs().max()) > 1e-3  # the guided filter printed the photo's texture
    model.card["edge_gate"] = [2.5, 5.0]
    out = _refine_once(model, images, ramp)
    torch.testing.assert_close(out, gate_changes(plain, ramp, None, 2.5, 5.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(out, ramp, rtol=0, atol=1e-6)
    model.card["edge_gate"] = [5.0, 2.5]
    with pytest.raises(ValueError):
        _refine_once(model, images, ramp)


def test_a_frame_sets_the_scale_of_the_layout_low_pass_and_the_gate():
    # a tile of a larger plate: the low-pass sigma is the share of the frame's side, not the tile's
    from betterdepth_cli.core.edge_gate import gate_changes
    from betterdepth_cli.core.layout import keep_layout
    from betterdepth_cli.core.types import Frame

    model = _guided_residual_model()
    images, cond = _photo_and_map(6)
    plain = _refine_once(model, images, cond)
    model.card["layout_lowpass"] = 0.01
    out = _refine_once(model, images, cond, frame=Frame(side=300.0))
    torch.testing.assert_close(out, keep_layout(plain, cond, None, 3.0), rtol=0, atol=1e-6)
    model.card["layout_lowpass"] = 0
    model.card["edge_gate"] = [2.5, 5.0]
    out = _refine_once(model, images, cond, frame=Frame(side=300.0, lo=0.5, hi=2.5))
    want = gate_changes(plain, cond, None, 2.5, 5.0, side=300.0, span=(0.5, 2.5))
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)


def test_holes_are_left_out_of_the_filter():
    """A constant map with a hole of zeros (a `file:` map's invalid pixels): every valid pixel keeps the
    constant (the plain filter pulls the hole's zeros into its neighbours); all valid is the plain
    filter bit for bit; a pixel no window with a valid pixel covers keeps its value."""
    g = torch.Generator().manual_seed(0)
    guide = torch.rand(1, 1, 24, 32, generator=g, dtype=torch.float64)
    p = torch.full((1, 1, 24, 32), 2.0, dtype=torch.float64)
    valid = torch.ones_like(p, dtype=torch.bool)
    p[..., 8:14, 10:18], valid[..., 8:14, 10:18] = 0.0, False
    plain = guided_filter(p, guide, 3, 1e-3)
    assert float((plain[valid] - 2.0).abs().max()) > 0.5  # the pits the hole digs into its neighbours
    holed = guided_filter(p, guide, 3, 1e-3, valid)
    torch.testing.assert_close(holed[valid], torch.full_like(holed[valid], 2.0), rtol=0, atol=1e-9)
    assert torch.equal(guided_filter(p, guide, 3, 1e-3, torch.ones_like(valid)), plain)
    far = torch.zeros_like(valid)
    far[..., 0, 0] = True  # one valid pixel: windows more than 3 px from it hold none
    out = guided_filter(p, guide, 3, 1e-3, far)
    assert float(out[0, 0, 0, 0]) == pytest.approx(2.0) and torch.equal(out[..., 20:, 20:], p[..., 20:, 20:])


def test_the_guided_model_leaves_a_maps_holes_out(tmp_path):
    """`--model guided` over a `file:` map with holes (refine_batch's classical path): no pits."""
    from betterdepth_cli.core.guided import GuidedFilterRefiner

    images = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(1))
    values = torch.full((1, 1, 40, 60), 3.0)
    valid = torch.ones_like(values, dtype=torch.bool)
    values[..., 10:20, 20:30], valid[..., 10:20, 20:30] = 0.0, False
    out = refine_batch(images, prediction=DepthPrediction(values, valid, "depth"), model=GuidedFilterRefiner())
    torch.testing.assert_close(out.refined[valid], torch.full_like(out.refined[valid], 3.0), rtol=0, atol=1e-5)


def test_the_classical_card_keeps_its_own_settings_and_names_what_it_ignores():
    from betterdepth_cli.core.guided import guided_card
    from betterdepth_cli.core.settings import classical_ignores, resolve_settings

    card = guided_card()
    own = resolve_settings(card)
    assert (own.steps, own.ensemble, own.processing_res) == (1, 1, 0)
    assert resolve_settings(card, steps=4, ensemble=3, reduction="median", processing_res=32) == own
    with pytest.raises(UsageError, match="ensemble"):  # still checked: a wrong value is a usage error
        resolve_settings(card, ensemble=0)
    assert classical_ignores(card) is None and classical_ignores(card, steps=None) is None
    assert classical_ignores(card, steps=4, tile="64").endswith("not applied: --steps, --tile")
    assert classical_ignores({"defaults": {}}, steps=4) is None  # a diffusion model's card uses them
