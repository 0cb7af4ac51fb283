"""The BetterDepth objective (training/objective.py) on hand-built tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from betterdepth_cli.core.mask import to_latent_grid
from betterdepth_cli.core.normalize import normalize
from betterdepth_cli.core.sampler import make_scheduler
from training.objective import (
    ObjectiveSettings,
    encode_latents,
    gt_to_space,
    loss_mask,
    masked_v_loss,
    prepare_maps,
    sample_timesteps_and_noise,
    training_loss,
    v_target,
)


# --------------------------------------------------------------------------- masked loss (eq. 6)


def test_masked_latents_get_exactly_zero_gradient():
    g = torch.Generator().manual_seed(0)
    v_hat = torch.randn(2, 4, 3, 5, generator=g, requires_grad=True)
    v = torch.randn(2, 4, 3, 5, generator=g)
    mask = torch.rand(2, 1, 3, 5, generator=g) > 0.5
    loss, gamma = masked_v_loss(v_hat, v, mask)
    loss.backward()
    grad = v_hat.grad
    off = ~mask.expand_as(grad)
    assert torch.equal(grad[off], torch.zeros_like(grad[off]))
    # on the kept elements the gradient is the analytic 2 (v_hat - v) / gamma
    on = mask.expand_as(grad)
    expected = 2 * (v_hat.detach() - v) / gamma
    torch.testing.assert_close(grad[on], expected[on])
    assert int(gamma) == int(mask.sum()) * 4


def test_gamma_counts_valid_latent_elements():
    # k = 5 valid cells x C = 4 channels = 20 elements with unit error -> loss 1
    mask = torch.zeros(2, 1, 3, 3, dtype=torch.bool)
    mask[0, 0, 0, :] = True
    mask[1, 0, 2, 1:] = True
    v = torch.zeros(2, 4, 3, 3)
    v_hat = torch.where(torch.rand(2, 4, 3, 3) > 0.5, 1.0, -1.0)  # |error| = 1 everywhere
    v_hat[~mask.expand_as(v_hat)] = 1e3  # what the mask drops does not count
    loss, gamma = masked_v_loss(v_hat, v, mask)
    assert gamma.item() == 20
    assert loss.item() == pytest.approx(1.0, abs=0)
    loss2, _ = masked_v_loss(v_hat * 2, v, mask)  # error 2 -> 4
    assert loss2.item() == pytest.approx(4.0)


def test_empty_mask_gives_zero_loss_with_a_gradient():
    v_hat = torch.ones(1, 4, 2, 2, requires_grad=True)
    loss, gamma = masked_v_loss(v_hat, torch.zeros(1, 4, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.bool))
    assert gamma.item() == 0 and loss.item() == 0.0
    loss.backward()
    assert torch.equal(v_hat.grad, torch.zeros_like(v_hat))


# --------------------------------------------------------------------------- GT space


def test_disparity_conversion_keeps_invalid_pixels_out():
    depth = torch.tensor([[[[2.0, 0.0, -1.0], [float("nan"), float("inf"), 4.0]]]])
    valid = torch.tensor([[[[True, True, True], [True, True, False]]]])
    disp, ok = gt_to_space(depth, valid, "disparity")
    assert ok.tolist() == [[[[True, False, False], [False, False, False]]]]
    assert disp[0, 0, 0, 0].item() == 0.5
    assert torch.equal(disp[~ok], torch.zeros(5))
    d, ok2 = gt_to_space(depth, valid, "depth")
    assert torch.equal(ok2, ok) and d[0, 0, 0, 0].item() == 2.0 and torch.isfinite(d).all()


def test_gt_normalisation_ignores_invalid_values():
    g = torch.Generator().manual_seed(1)
    depth = 1 + 9 * torch.rand(1, 1, 16, 16, generator=g)
    valid = torch.ones_like(depth, dtype=torch.bool)
    valid[..., :4, :4] = False
    cond = torch.rand(1, 1, 16, 16, generator=g)
    cv = torch.ones_like(valid)
    outs = []
    for garbage in (0.001, 1e6):
        d = depth.clone()
        d[~valid] = garbage
        gt, ok = gt_to_space(d, valid, "disparity")
        outs.append(prepare_maps(cond, cv, gt, ok))
    assert torch.equal(outs[0].gt[valid], outs[1].gt[valid])
    assert torch.equal(outs[0].cond, outs[1].cond)


# --------------------------------------------------------------------------- pre-alignment (eq. 3)


def _banded_scene():
    """GT depth in four bands (1, 2, 4, 8 m), 25 % of the pixels each: the 2 % and 98 %
    quantiles of the disparity are its extremes, so no tail is clipped. A 4x4 block is GT-invalid."""
    depth = torch.tensor([1.0, 2.0, 4.0, 8.0]).repeat_interleave(4).repeat(16, 1)[None, None]  # [1,1,16,16]
    valid = torch.ones_like(depth, dtype=torch.bool)
    valid[..., 6:10, 6:10] = False
    return depth, valid


def test_prealignment_maps_scaled_and_shifted_conditioning_onto_gt_exactly():
    depth, valid = _banded_scene()
    gt, ok = gt_to_space(depth, valid, "disparity")
    cond = 3.0 * gt + 5.0
    cond[~valid] = 100.0  # valid for the conditioner, GT-invalid: distorts its own quantiles
    cond_valid = torch.ones_like(valid)
    no = prepare_maps(cond, cond_valid, gt, ok, prealign=False)
    yes = prepare_maps(cond, cond_valid, gt, ok, prealign=True)
    for disp in (1.0, 0.5, 0.25, 0.125):  # linear map of [1/8, 1] onto [-1, 1]
        sel = ok & (gt == disp)
        value = (disp - 0.125) / 0.875 * 2 - 1
        torch.testing.assert_close(yes.gt[sel], torch.full_like(yes.gt[sel], value))
    # only normalised, the conditioning is compressed by the outliers: far from the GT
    assert (no.cond[ok] - no.gt[ok]).abs().max() > 0.5
    torch.testing.assert_close(yes.cond[ok], yes.gt[ok], atol=1e-5, rtol=0)  # float32 rounding
    assert yes.cond.abs().max() <= 1.0  # clipped after alignment
    assert no.scale.item() == 1.0 and no.shift.item() == 0.0


def test_prealignment_counts_fallbacks_per_batch_without_a_warning():
    """A crop whose conditioning is constant (a blurred flat wall) falls back to scale 0 and the GT's
    mean: counted in ``degenerate`` for the trainer's step line, not a Python warning per step."""
    import warnings

    depth, valid = _banded_scene()
    gt, ok = gt_to_space(depth, valid, "disparity")
    cond = torch.cat([3.0 * gt + 5.0, torch.full_like(gt, 2.0)])  # sample 1: constant
    gt2, ok2 = torch.cat([gt, gt]), torch.cat([ok, ok])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = prepare_maps(cond, torch.ones_like(ok2), gt2, ok2, prealign=True)
        none = prepare_maps(cond[:1], torch.ones_like(ok), gt, ok, prealign=True)
    assert maps.degenerate == 1 and none.degenerate == 0
    assert maps.scale[1].item() == 0.0
    sel = ok[0]
    torch.testing.assert_close(maps.cond[1][sel], torch.full_like(maps.cond[1][sel], maps.gt[1][sel].mean().item()))


def test_prealignment_is_least_squares_over_gt_valid_pixels():
    g = torch.Generator().manual_seed(3)
    depth = 1 + 4 * torch.rand(2, 1, 12, 12, generator=g)
    valid = torch.rand(2, 1, 12, 12, generator=g) > 0.2
    gt, ok = gt_to_space(depth, valid, "depth")
    cond = torch.rand(2, 1, 12, 12, generator=g)
    cond_valid = torch.rand(2, 1, 12, 12, generator=g) > 0.1
    out = prepare_maps(cond, cond_valid, gt, ok)
    cond_n, _, _ = normalize(cond, cond_valid)
    for i in range(2):
        sel = (ok & cond_valid)[i, 0].numpy()
        x = cond_n[i, 0].numpy()[sel].astype(np.float64)
        y = out.gt[i, 0].numpy()[sel].astype(np.float64)
        s, b = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), y, rcond=None)[0]
        assert out.scale[i].item() == pytest.approx(s, rel=1e-5)
        assert out.shift[i].item() == pytest.approx(b, abs=1e-5)
        want = np.clip(s * cond_n[i, 0].numpy() + b, -1, 1)
        np.testing.assert_allclose(out.cond[i, 0].numpy(), want, atol=1e-5)


# --------------------------------------------------------------------------- patch mask (eq. 4-5)


def test_patch_mask_drops_disagreeing_patches_and_gt_invalid_cells():
    depth, valid = _banded_scene()
    gt, ok = gt_to_space(depth, valid, "disparity")
    maps = prepare_maps(gt.clone(), torch.ones_like(ok), gt, ok)
    maps.cond = maps.cond.clone()
    maps.cond[..., 0:8, 8:16] += 0.5  # one 8x8 patch off by 0.5 per pixel: L2 = 4 > 8 * 0.1
    settings = ObjectiveSettings(patch_size=8, eta=0.1)
    m = loss_mask(maps, latent_factor=4, settings=settings)  # [1,1,4,4]
    valid_lat = to_latent_grid(ok, 4, reduce="all")
    expected = valid_lat.clone()
    expected[..., 0:2, 2:4] = False
    assert torch.equal(m, expected)
    assert not valid_lat[0, 0, 1:3, 1:3].any()  # the invalid block reaches all 4 central cells
    off = loss_mask(maps, 4, ObjectiveSettings(patch_mask=False))
    assert torch.equal(off, valid_lat)
    loose = loss_mask(maps, 4, ObjectiveSettings(patch_size=8, eta=0.6))
    assert torch.equal(loose, valid_lat)


# --------------------------------------------------------------------------- v target


def test_v_target_matches_the_formula_by_hand():
    sched = make_scheduler()
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=np.float64) ** 2
    a = np.cumprod(1 - betas)
    g = torch.Generator().manual_seed(4)
    z0 = torch.randn(2, 4, 3, 3, generator=g)
    eps = torch.randn(2, 4, 3, 3, generator=g)
    t = torch.tensor([500, 17])
    z_t, v = v_target(sched, z0, eps, t)
    for i, ti in enumerate(t.tolist()):
        sa, sb = math.sqrt(a[ti]), math.sqrt(1 - a[ti])
        torch.testing.assert_close(v[i], (sa * eps[i] - sb * z0[i]).float(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(z_t[i], (sa * z0[i] + sb * eps[i]).float(), atol=1e-6, rtol=1e-5)


def test_timesteps_and_noise_come_from_the_generator():
    z0 = torch.zeros(8, 4, 2, 2)
    t1, e1 = sample_timesteps_and_noise(z0, 1000, torch.Generator().manual_seed(7))
    t2, e2 = sample_timesteps_and_noise(z0, 1000, torch.Generator().manual_seed(7))
    assert torch.equal(t1, t2) and torch.equal(e1, e2)
    assert t1.dtype == torch.long and int(t1.min()) >= 0 and int(t1.max()) <= 999


# --------------------------------------------------------------------------- the whole loss


def _batch(seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(2, 3, size, size, generator=g)
    depth = 1 + 4 * torch.rand(2, 1, size, size, generator=g)
    valid = torch.ones_like(depth, dtype=torch.bool)
    valid[0, :, :4, :] = False
    cond = 1 / depth + 0.05 * torch.randn(2, 1, size, size, generator=g)
    return rgb, cond, torch.ones_like(valid), depth, valid


@pytest.mark.parametrize("depth_conditioning", [True, False])
def test_training_loss_backpropagates_into_the_unet_only(depth_conditioning):
    from betterdepth_cli.core.refiner import BetterDepthModel

    model = BetterDepthModel.tiny(seed=0, factor=4, block_out_channels=(8, 16), depth_conditioning=depth_conditioning)
    rgb, cond, cv, depth, valid = _batch()
    out = training_loss(model, rgb, cond, cv, depth, valid, "disparity", torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    assert out.mask.shape == (2, 1, 4, 4)
    assert not out.mask[0, 0, 0].any()  # GT-invalid top rows
    assert out.gamma.item() == out.mask.sum().item() * 16
    out.loss.backward()
    grads = [p.grad for p in model.unet.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # same generator, same loss
    model.zero_grad()
    again = training_loss(model, rgb, cond, cv, depth, valid, "disparity", torch.Generator().manual_seed(0))
    assert again.loss.item() == out.loss.item()


def test_precomputed_image_latent_gives_the_same_loss():
    from betterdepth_cli.core.refiner import BetterDepthModel

    model = BetterDepthModel.tiny(seed=0, factor=4, block_out_channels=(8, 16))
    rgb, cond, cv, depth, valid = _batch(1)
    gt, ok = gt_to_space(depth, valid, "disparity")
    z_x, _, _ = encode_latents(model.codec, rgb, prepare_maps(cond, cv, gt, ok))
    a = training_loss(model, rgb, cond, cv, depth, valid, "disparity", torch.Generator().manual_seed(2))
    b = training_loss(model, rgb, cond, cv, depth, valid, "disparity", torch.Generator().manual_seed(2), z_image=z_x)
    assert a.loss.item() == b.loss.item()


def test_invalid_gt_is_filled_with_the_conditioning_before_encoding():
    from betterdepth_cli.core.autoencoders import SpaceToDepthCodec

    depth, valid = _banded_scene()
    gt, ok = gt_to_space(depth, valid, "disparity")
    maps = prepare_maps(gt * 2 + 1, torch.ones_like(ok), gt, ok)
    _, z_c, z_0 = encode_latents(SpaceToDepthCodec(4), torch.zeros(1, 3, 16, 16), maps)
    decoded = torch.nn.functional.pixel_shuffle(z_0, 4)
    torch.testing.assert_close(decoded[~ok], maps.cond[~ok])
    torch.testing.assert_close(decoded[ok], maps.gt[ok])


def test_settings_validate_parameters():
    with pytest.raises(ValueError, match="patch_size"):
        ObjectiveSettings(patch_size=0)
    with pytest.raises(ValueError, match="eta"):
        ObjectiveSettings(eta=-1)
