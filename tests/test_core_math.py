"""Hand-worked cases for the pure math of the core: normalise, align, mask."""

import warnings

import pytest
import torch

from betterdepth_cli.core.align import (
    DegenerateAlignmentWarning,
    align,
    apply_scale_shift,
    depth_to_disparity,
    disparity_to_depth,
    fit_scale_shift,
)
from betterdepth_cli.core.mask import latent_loss_mask, patch_mask, to_latent_grid
from betterdepth_cli.core.normalize import denormalize, normalize, normalize_with


# ------------------------------------------------------------------ aligner
def test_aligner_recovers_known_scale_and_shift_ignoring_masked_pixels():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 1, 8, 8, generator=g) * 5 + 1
    pred = (gt - 3) / 2
    valid = torch.ones_like(gt, dtype=torch.bool)
    valid[..., :2, :] = False
    pred = torch.where(valid, pred, torch.full_like(pred, 1e6))  # garbage under the mask
    s, b = fit_scale_shift(pred, gt, valid)
    assert s.item() == pytest.approx(2.0, abs=1e-5)
    assert b.item() == pytest.approx(3.0, abs=1e-5)


def test_aligner_is_batched_per_sample():
    x = torch.linspace(0, 1, 16).reshape(1, 1, 4, 4).repeat(3, 1, 1, 1)
    scales, shifts = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 4.0, -1.0])
    target = apply_scale_shift(x, scales, shifts)
    s, b = fit_scale_shift(x, target)
    torch.testing.assert_close(s, scales, atol=1e-5, rtol=0)
    torch.testing.assert_close(b, shifts, atol=1e-5, rtol=0)
    torch.testing.assert_close(align(x, target), target, atol=1e-5, rtol=0)


def test_aligner_constant_prediction_gives_mean_and_warns():
    pred = torch.full((1, 1, 4, 4), 7.0)
    target = torch.arange(16.0).reshape(1, 1, 4, 4)
    with pytest.warns(DegenerateAlignmentWarning):
        s, b = fit_scale_shift(pred, target)
    assert s.item() == 0.0 and b.item() == pytest.approx(7.5)


def test_aligner_too_few_pixels_defined_and_finite():
    pred = torch.arange(4.0).reshape(2, 1, 1, 2)
    target = pred * 3 + 1
    valid = torch.tensor([[[[True, False]]], [[[False, False]]]])
    with pytest.warns(DegenerateAlignmentWarning):
        s, b = fit_scale_shift(pred, target, valid)
    assert torch.isfinite(s).all() and torch.isfinite(b).all()
    # one pixel: identity scale with the offset that matches it; none: identity
    assert s.tolist() == [1.0, 1.0]
    assert b.tolist() == [pytest.approx(1.0), 0.0]


def test_aligner_reports_degenerate_samples_to_a_callback_instead_of_warning():
    pred = torch.stack([torch.full((1, 2, 2), 7.0), torch.arange(4.0).reshape(1, 2, 2)])  # constant, then fine
    target = torch.arange(8.0).reshape(2, 1, 2, 2)
    reasons: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s, b = fit_scale_shift(pred, target, on_degenerate=reasons.append)
    assert reasons == ["constant prediction"]
    assert s.tolist() == [0.0, pytest.approx(1.0)] and b.tolist() == [pytest.approx(1.5), pytest.approx(4.0)]


def test_aligner_no_warning_when_well_posed():
    x = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_scale_shift(x, 2 * x)


def test_depth_disparity_conversions():
    depth = torch.tensor([[[[2.0, 0.0, 4.0]]]])
    valid = depth > 0
    disp = depth_to_disparity(depth, valid)
    assert disp.tolist() == [[[[0.5, 0.0, 0.25]]]]
    back = disparity_to_depth(torch.tensor([0.5, 0.0, 0.25]))
    assert back.tolist() == pytest.approx([2.0, 1000.0, 4.0])  # clipped at 1e-3 disparity


# ------------------------------------------------------------------ normaliser
def test_normaliser_maps_quantiles_to_unit_range_and_clips():
    x = torch.arange(101.0).reshape(1, 1, 1, 101)  # 2 % quantile = 2, 98 % = 98
    y, lo, hi = normalize(x)
    assert lo.item() == pytest.approx(2.0) and hi.item() == pytest.approx(98.0)
    assert y[0, 0, 0, 50].item() == pytest.approx(0.0)
    assert y[0, 0, 0, 2].item() == pytest.approx(-1.0)
    assert y[0, 0, 0, 98].item() == pytest.approx(1.0)
    assert y[0, 0, 0, 0].item() == -1.0 and y[0, 0, 0, 100].item() == 1.0


def test_normaliser_ignores_invalid_pixels_and_round_trips():
    x = torch.arange(101.0).reshape(1, 1, 1, 101).repeat(2, 1, 1, 1)
    valid = torch.ones_like(x, dtype=torch.bool)
    x[1, ..., :10] = 1e6
    valid[1, ..., :10] = False
    y, lo, hi = normalize(x, valid)
    assert lo[0].item() == pytest.approx(2.0)
    assert lo[1].item() == pytest.approx(10 + 0.02 * 90)
    inside = torch.linspace(lo[0].item(), hi[0].item(), 7).reshape(1, 1, 1, 7)
    back = denormalize(normalize_with(inside, lo[:1], hi[:1]), lo[:1], hi[:1])
    torch.testing.assert_close(back, inside)


def test_normaliser_constant_map_is_finite():
    y, lo, hi = normalize(torch.full((1, 1, 4, 4), 3.0))
    assert torch.isfinite(y).all()


# ------------------------------------------------------------------ masker
def test_patch_mask_keeps_agreeing_and_drops_disagreeing_patches():
    label = torch.zeros(1, 1, 16, 16)
    cond = label.clone()
    cond[..., 0:8, 8:16] += 0.11  # off by more than eta = 0.1 per pixel -> dropped
    cond[..., 8:16, 0:8] += 0.09  # within tolerance -> kept
    keep = patch_mask(cond, label, patch_size=8, eta=0.1)
    assert keep[..., 0:8, 0:8].all()
    assert not keep[..., 0:8, 8:16].any()
    assert keep[..., 8:16, 0:8].all()
    # one outlier pixel of 0.8 in an 8x8 patch: L2 = 0.8 = w * eta -> kept; 0.81 dropped
    cond2 = label.clone()
    cond2[0, 0, 9, 9] = 0.8
    cond2[0, 0, 1, 1] = 0.81
    keep2 = patch_mask(cond2, label)
    assert keep2[..., 8:16, 8:16].all() and not keep2[..., 0:8, 0:8].any()


def test_latent_mask_shape_values_and_gt_valid_and():
    label = torch.zeros(1, 1, 32, 32)
    cond = label.clone()
    cond[..., 0:8, 0:8] = 1.0  # drop the top-left patch
    valid = torch.ones_like(label, dtype=torch.bool)
    valid[..., 31, 31] = False  # one invalid GT pixel in the bottom-right latent cell
    m = latent_loss_mask(cond, label, valid, latent_factor=8)
    assert m.shape == (1, 1, 4, 4)
    expected = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    expected[..., 0, 0] = False
    expected[..., 3, 3] = False
    assert torch.equal(m, expected)
    # latent cells larger than patches: MaxPool keeps a cell when any patch is kept
    m16 = latent_loss_mask(cond, label, torch.ones_like(valid), latent_factor=16)
    assert m16.all()
    # switch off patch masking: only the GT-valid mask
    m_off = latent_loss_mask(cond, label, valid, latent_factor=8, use_patch_mask=False)
    assert m_off.sum().item() == 15 and not m_off[..., 3, 3]


def test_to_latent_grid_max_and_all():
    m = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    m[0, 0, 0, 0] = True
    assert to_latent_grid(m, 2, "max").tolist() == [[[[True, False], [False, False]]]]
    assert not to_latent_grid(m, 2, "all").any()


def test_patch_mask_handles_sizes_not_multiple_of_patch():
    keep = patch_mask(torch.zeros(1, 1, 13, 10), torch.zeros(1, 1, 13, 10))
    assert keep.shape == (1, 1, 13, 10) and keep.all()


def test_core_imports_neither_typer_nor_rich():
    import subprocess
    import sys

    code = (
        "import sys, betterdepth_cli.core.pipeline, betterdepth_cli.core.conditioners, "
        "betterdepth_cli.core.refiner; bad = [m for m in ('typer', 'rich') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_normaliser_quantiles_of_large_maps_use_a_strided_subset_close_to_exact():
    from betterdepth_cli.core.normalize import QUANTILE_SAMPLES, masked_quantiles

    x = torch.rand(1, 1, 512, 512, generator=torch.Generator().manual_seed(0))
    assert x.numel() > QUANTILE_SAMPLES
    lo, hi = masked_quantiles(x, torch.ones_like(x, dtype=torch.bool))
    exact = torch.quantile(x.flatten(), torch.tensor([0.02, 0.98]))
    assert abs(lo.item() - exact[0].item()) < 2e-3 and abs(hi.item() - exact[1].item()) < 2e-3
