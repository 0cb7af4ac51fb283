"""The end-to-end fine-tuning objective on hand-built tensors."""

import pytest
import torch

from betterdepth_cli.core.refiner import BetterDepthModel
from training.e2e import decoded_prediction, e2e_loss
from training.objective import ObjectiveSettings


def test_decoded_prediction_is_minus_scaled_v_at_the_last_timestep():
    model = BetterDepthModel.tiny(seed=0)
    a = model.scheduler.alphas_cumprod[999]
    z_x, z_c = torch.randn(1, 48, 4, 4), torch.randn(1, 16, 4, 4)
    v = torch.randn(1, 16, 4, 4)
    out = decoded_prediction(model, z_x, z_c, denoise=lambda zx, zc, zt, t: v)
    assert out.shape == (1, 1, 16, 16)
    torch.testing.assert_close(out, model.codec.decode_depth(-(1 - a).sqrt() * v))


def test_e2e_loss_is_zero_for_a_perfect_prediction_and_ignores_masked_pixels():
    model = BetterDepthModel.tiny(seed=0)
    depth = torch.linspace(1, 4, 32 * 32).reshape(1, 1, 32, 32)
    valid = torch.ones_like(depth, dtype=torch.bool)
    valid[..., :8, :8] = False
    rgb = torch.rand(1, 3, 32, 32)
    cond = 1.0 / depth  # a perfect disparity conditioner
    a = model.scheduler.alphas_cumprod[999]
    settings = ObjectiveSettings()
    # an oracle denoiser whose decoded prediction is exactly the normalised GT on valid pixels
    from training.objective import gt_to_space, prepare_maps

    gt, gv = gt_to_space(depth, valid, "disparity")
    maps = prepare_maps(cond, torch.ones_like(valid), gt, gv)
    target = maps.gt.clone()
    target[~valid] = 5.0  # garbage where the GT is invalid: must not count
    v_star = -model.codec.encode_depth(target) / (1 - a).sqrt()
    out = e2e_loss(model, rgb, cond, torch.ones_like(valid), depth, valid, "disparity", settings,
                   denoise=lambda zx, zc, zt, t: v_star)
    assert out.loss.item() < 1e-6
    assert out.gamma.item() == 32 * 32 - 64
    # a constant error of 0.1 on every valid pixel gives an L1 loss of 0.1
    v_off = -model.codec.encode_depth(target + 0.1) / (1 - a).sqrt()
    out = e2e_loss(model, rgb, cond, torch.ones_like(valid), depth, valid, "disparity", settings,
                   denoise=lambda zx, zc, zt, t: v_off)
    assert abs(out.loss.item() - 0.1) < 1e-5


def test_e2e_loss_trains_the_unet():
    model = BetterDepthModel.tiny(seed=0)
    depth = torch.linspace(1, 4, 32 * 32).reshape(1, 1, 32, 32)
    valid = torch.ones_like(depth, dtype=torch.bool)
    out = e2e_loss(model, torch.rand(1, 3, 32, 32), 1.0 / depth, valid, depth, valid, "disparity")
    out.loss.backward()
    assert model.unet.conv_in.weight.grad.abs().sum() > 0


def test_e2e_mode_trains_and_saves_a_zero_noise_one_step_model(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import save_dpt

    from betterdepth_cli.core.refiner import load_model
    from training.config import load_recipe
    from training.trainer import train

    cond = save_dpt(tmp_path / "dpt")
    recipe_path = tmp_path / "r.toml"
    recipe_path.write_text(
        'name = "e2e"\n[model]\ninit = "tiny"\n[conditioner]\nname = "hf:' + str(cond) + '"\n'
        "[data]\nsynthetic = {n = 4, size = 32, seed = 0}\ncache_dir = \"" + str(tmp_path / "cache") + "\"\n"
        '[objective]\nmode = "e2e"\n[train]\nbatch_size = 2\nmax_steps = 3\ncheckpoint_every = 0\nlog_every = 1\n'
        "[optim]\nlr = 1e-3\n"
    )
    train(load_recipe(recipe_path), tmp_path / "out", log=lambda m: None)
    model = load_model(tmp_path / "out" / "model")
    assert model.zero_noise and model.defaults["steps"] == 1
    assert model.card["trained_with"]["flags"]["mode"] == "e2e"


def test_gradient_matching_loss_by_hand():
    from training.e2e import gradient_matching_loss

    gt = torch.zeros(1, 1, 4, 4)
    valid = torch.ones_like(gt, dtype=torch.bool)
    ramp = 0.1 * torch.arange(4.0).reshape(1, 1, 1, 4).expand(1, 1, 4, 4)
    # scale 0: 12 x-differences of 0.1 and 12 y-differences of 0 -> 1.2 / 24 = 0.05
    assert abs(gradient_matching_loss(ramp, gt, valid, scales=1).item() - 0.05) < 1e-7
    # scale 1 (stride 2, 2 x 2 pixels): 2 x-differences of 0.2, 2 y-differences of 0 -> 0.1; mean 0.075
    assert abs(gradient_matching_loss(ramp, gt, valid, scales=2).item() - 0.075) < 1e-7
    # a constant offset has no gradient error
    assert gradient_matching_loss(gt + 3.0, gt, valid, scales=3).item() == 0.0
    # a difference touching an invalid pixel does not count: a spike there is ignored
    spike = gt.clone()
    spike[..., 1, 1] = 9.0
    hole = valid.clone()
    hole[..., 1, 1] = False
    assert gradient_matching_loss(spike, gt, hole, scales=1).item() == 0.0
    assert gradient_matching_loss(spike, gt, valid, scales=1).item() > 1.0


@pytest.mark.parametrize("term", ["gradient", "excursion"])
def test_e2e_loss_adds_the_weighted_term(term):
    from training.e2e import excursion_loss, gradient_matching_loss
    from training.objective import gt_to_space, prepare_maps

    model = BetterDepthModel.tiny(seed=0)
    depth = torch.linspace(1, 4, 32 * 32).reshape(1, 1, 32, 32)
    valid = torch.ones_like(depth, dtype=torch.bool)
    rgb = torch.rand(1, 3, 32, 32)
    v = torch.randn(1, 16, 8, 8)
    kw = dict(denoise=lambda zx, zc, zt, t: v)
    weight, extra = {"gradient": (0.5, dict(gradient_weight=0.5)),
                     "excursion": (2.0, dict(excursion_weight=2.0, excursion_radius=3))}[term]
    base = e2e_loss(model, rgb, 1.0 / depth, valid, depth, valid, "disparity", **kw).loss
    with_term = e2e_loss(model, rgb, 1.0 / depth, valid, depth, valid, "disparity", **extra, **kw).loss
    gt, gv = gt_to_space(depth, valid, "disparity")
    maps = prepare_maps(1.0 / depth, valid, gt, gv)
    a = model.scheduler.alphas_cumprod[999]
    pred = model.codec.decode_depth(-(1 - a).sqrt() * v)
    expected = (gradient_matching_loss(pred, maps.gt, maps.valid, 4) if term == "gradient"
                else excursion_loss(pred, maps.gt, maps.valid, 3))
    assert expected.item() > 0
    torch.testing.assert_close(with_term - base, weight * expected)


def test_excursion_loss_by_hand():
    from training.e2e import excursion_loss

    gt = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]).reshape(1, 1, 1, 6)
    valid = torch.ones_like(gt, dtype=torch.bool)
    # a dip of 0.2 below the far side and an overshoot of 0.3 above the near side: (0.2 + 0.3) / 6
    ringing = torch.tensor([0.0, -0.2, 0.0, 1.0, 1.3, 1.0]).reshape(1, 1, 1, 6)
    assert abs(excursion_loss(ringing, gt, valid, radius=1).item() - 0.5 / 6) < 1e-7
    # the edge moved by one pixel is within the truth's range at radius 1, not at radius 0
    moved = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 1.0]).reshape(1, 1, 1, 6)
    assert excursion_loss(moved, gt, valid, radius=1).item() == 0.0
    assert abs(excursion_loss(moved, gt, valid, radius=0).item() - 1.0 / 6) < 1e-7
    # an invalid pixel neither sets the range nor counts: its value 5 does not widen the window
    hole_gt, hole = gt.clone(), valid.clone()
    hole_gt[..., 5], hole[..., 5] = 5.0, False
    high = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0, 9.0]).reshape(1, 1, 1, 6)
    assert abs(excursion_loss(high, hole_gt, hole, radius=1).item() - 1.0 / 5) < 1e-7
    # a hole wider than the window: finite, and its pixels count nothing
    wide = torch.zeros(1, 1, 1, 6, dtype=torch.bool)
    wide[..., 0] = True
    assert excursion_loss(high, hole_gt, wide, radius=1).item() == 0.0
