"""core.blur (how soft a map's edges are) and the card's cascade that it drives."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import erf

from betterdepth_cli.core.blur import PROBE, estimate_blur, gaussian_blur
from betterdepth_cli.core.guided import guided_refine
from betterdepth_cli.core.pipeline import cascade_resolution, frame_cascade, refine_batch, resize
from betterdepth_cli.core.refiner import BetterDepthModel, load_model
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
    assert cascade_resolution(model, run, sharp, ok, decided=True) == 48  # a shot's decision beats the blur
    assert cascade_resolution(model, run, soft, ok, decided=False) == 0
    assert cascade_resolution(_residual_model(None), run, sharp, ok, decided=True) == 0
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
    assert both.cascade == (False, True) and both.route(1) == {"cascade": True, "tiles": None, "refined_size": [96, 48]}



def test_cascade_true_or_false_overrides_the_blur_and_a_list_decides_per_image():
    model = _residual_model({"blur_above": 5.0, "scale": 0.5})
    g = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 48, 96, generator=g)
    maps = torch.cat([1.0 + blurred_step(1.5, 48, 96), 1.0 + blurred_step(9.0, 48, 96)]).float()
    ok = torch.ones_like(maps, dtype=torch.bool)
    pred = DepthPrediction(maps, ok, "disparity")
    assert [frame_cascade(model, pred.item(i), 0) for i in range(2)] == [False, True]  # what None decides
    assert frame_cascade(_residual_model(None), pred.item(1), 0) is False
    kw = {"model": model, "steps": 1, "ensemble": 1, "processing_res": 0}
    # True on the sharp map: the first pass at half size runs all the same (by hand, as above)
    forced = refine_batch(images[:1], prediction=pred.item(0), cascade=True, **kw)
    shrunk = resize(maps[:1], (24, 48))
    change = guided_refine(shrunk, resize(images[:1], (24, 48)), 0.05, 1e-3) - shrunk
    torch.testing.assert_close(forced.refined, guided_refine(maps[:1] + resize(change, (48, 96)), images[:1], 0.05,
                                                             1e-3), rtol=0, atol=1e-5)
    assert "cascade" in forced.timings
    # one per image: the sharp one forced to two passes, the soft one held to one
    both = refine_batch(images, prediction=pred, cascade=[True, False], **kw)
    torch.testing.assert_close(both.refined[:1], forced.refined, rtol=0, atol=0)
    torch.testing.assert_close(both.refined[1:], guided_refine(maps[1:], images[1:], 0.05, 1e-3), rtol=0, atol=1e-5)
    assert forced.cascade == (True,) and both.cascade == (True, False)
    same = refine_batch(images, prediction=pred, cascade=[None, None], **kw)  # as the default
    torch.testing.assert_close(same.refined, refine_batch(images, prediction=pred, **kw).refined, rtol=0, atol=0)
    with pytest.raises(ValueError, match="2 images"):
        refine_batch(images, prediction=pred, cascade=[True], **kw)


def _soft_and_sharp_shot(tmp_path, blurs, tiled: bool):
    """A sequence ``frame.000i.png`` of one photo whose precomputed maps are steps of the given blurs,
    each under its own scale and shift (a per-frame conditioner's jumps), and a residual model with a
    cascade (blur_above 5 px) saved at ``m``; ``tiled``: its card tiles the 96 px frames (64 px tiles,
    anchor at 64 px, where the blurs are 2/3 as many pixels: 1.0 and 6.0)."""
    import cv2

    seq, maps = tmp_path / "shot", tmp_path / "maps"
    seq.mkdir()
    maps.mkdir()
    img = (np.random.default_rng(6).uniform(0, 255, (48, 96, 3))).astype(np.uint8)
    for i, (blur, (a, c)) in enumerate(zip(blurs, [(1.0, 1.0), (1.2, 0.9), (0.9, 1.1)])):
        assert cv2.imwrite(str(seq / f"frame.{i:04d}.png"), img)
        np.save(maps / f"frame.{i:04d}.npy", (a * blurred_step(blur, 48, 96)[0, 0].numpy() + c).astype(np.float32))
    model = _residual_model({"blur_above": 5.0, "scale": 0.5})
    if tiled:
        model.card["defaults"] = {**model.card.get("defaults", {}), "processing_res": 0, "max_processing_res": 64,
                                  "tile_above": 64, "tile": 64, "tile_overlap": 16}
    model.save(tmp_path / "m")
    return seq, maps


@pytest.mark.parametrize("blurs,two_passes,tiled", [((1.5, 9.0, 1.5), False, False), ((9.0, 1.5, 9.0), True, False),
                                                     ((1.5, 9.0, 1.5), False, True), ((9.0, 1.5, 9.0), True, True)])
def test_a_shot_takes_one_cascade_decision_on_its_first_frame(tmp_path, blurs, two_passes, tiled):
    """A shot whose conditioning's blur crosses the card's blur_above does not switch between one pass
    and two from frame to frame: its first frame decides for all (refine, a --frames chunk, the
    library); --per-frame frames decide for themselves."""
    from typer.testing import CliRunner

    from betterdepth_cli import BetterDepthPipeline
    from betterdepth_cli.cli.app import app
    from betterdepth_cli.io.images import read_image

    seq, maps = _soft_and_sharp_shot(tmp_path, blurs, tiled)
    cond = f"file:{maps}?kind=disparity"
    res_flags, res = ([], None) if tiled else (["--processing-res", "0"], 0)
    pipe = BetterDepthPipeline.from_pretrained(str(tmp_path / "m"), cond)
    frames = [read_image(seq / f"frame.{i:04d}.png") for i in range(3)]
    keys = [f"frame.{i:04d}" for i in range(3)]
    shot = list(pipe.shot(frames, keys=keys, processing_res=res))
    apart = list(pipe.shot(frames, keys=keys, processing_res=res, per_frame=True))
    assert [("cascade" in out.timings) for out in shot] == [two_passes] * 3
    assert [("cascade" in out.timings) for out in apart] == [b > 5.0 for b in blurs]
    tiles = [64, 16] if tiled else None  # how each frame was refined, as its sidecar says
    assert [[{k: r[k] for k in ("cascade", "tiles")} for r in out.routes] for out in shot] == [
        [{"cascade": two_passes, "tiles": tiles}]] * 3
    assert [out.sidecar()["cascade"] for out in apart] == [b > 5.0 for b in blurs]

    def run(name, *flags):
        res = CliRunner().invoke(app, ["refine", str(seq / "frame.%04d.png"), "-o", str(tmp_path / name),
                                       "--conditioner", cond, "--model", str(tmp_path / "m"), *res_flags,
                                       "-f", "npy", "-q", *flags])
        assert res.exit_code == 0, res.output
        sidecars = {i: json.loads(f.read_text()) for i in range(3) if (f := tmp_path / name / f"frame.{i:04d}.json").is_file()}
        assert all(side["tiles"] == tiles for side in sidecars.values())
        decided[name] = [side["cascade"] for side in sidecars.values()]
        return {i: np.load(f) for i in range(3) if (f := tmp_path / name / f"frame.{i:04d}.npy").is_file()}

    decided = {}
    whole, chunk = run("whole"), run("chunk", "--frames", "1-2")  # the chunk decides on frame 0 too
    batched = run("batched", "--batch-size", "3")  # one batch holds the deciding frame and the others
    assert sorted(chunk) == [1, 2]
    for i in range(3):
        np.testing.assert_array_equal(whole[i], shot[i].depth_np[0])
        np.testing.assert_array_equal(batched[i], whole[i])
        if i:
            np.testing.assert_array_equal(chunk[i], whole[i])
    np.testing.assert_array_equal(run("apart", "--per-frame")[1], apart[1].depth_np[0])
    assert decided == {"whole": [two_passes] * 3, "chunk": [two_passes] * 2, "batched": [two_passes] * 3,
                       "apart": [b > 5.0 for b in blurs]}
    if tiled:
        return
    # frame 1's map is the shot's decision over its co-aligned conditioning; the other decision differs
    image = torch.from_numpy(frames[1]).permute(2, 0, 1)[None]
    pred = DepthPrediction(shot[1].conditioning, torch.ones_like(shot[1].conditioning, dtype=torch.bool), "disparity")
    model = load_model(str(tmp_path / "m"))
    kept, other = (refine_batch(image, prediction=pred, model=model, processing_res=0, cascade=c).refined[0, 0].numpy()
                   for c in (two_passes, not two_passes))
    np.testing.assert_array_equal(kept, whole[1])
    assert np.abs(other - whole[1]).max() > 1e-3

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


def test_local_blur_measures_each_edge_where_it_is_and_is_inf_where_there_is_none():
    # two lone steps, 1 px and 6 px soft, 110 px apart on one map: each is measured within LOCAL_RADIUS
    # of itself as sqrt(s^2 + 1/3) (as the global estimate, central differences), far from both there is
    # no gradient at all (float64's erf is exactly flat there) and the blur is inf
    from betterdepth_cli.core.blur import LOCAL_RADIUS, local_blur

    both = blurred_step(1.0, 32, 256, at=40.0) + 2.0 * blurred_step(6.0, 32, 256, at=150.0)
    b = local_blur(both)[0, 0, 16]
    r = LOCAL_RADIUS
    assert b.shape == (256,) and b.dtype == torch.float32
    for at, s in ((40, 1.0), (150, 6.0)):
        want = math.sqrt(s**2 + 1 / 3)
        assert float(b[at - r : at + r + 1].min()) == pytest.approx(want, rel=0.03)
        assert float(b[at - r : at + r + 1].max()) == pytest.approx(want, rel=0.03)
    assert torch.isinf(b[75:100]).all()  # 35 px from the sharp step, 50 from the soft one's centre
    assert float(b[40 + r + 2]) > 2.0  # past the reach the sharp step is no longer the one measured
    # scale and shift invariant, per image
    twice = local_blur(torch.cat([both, 5.0 * both - 7.0]))
    torch.testing.assert_close(twice[1], twice[0], rtol=1e-4, atol=0)


def test_local_blur_ignores_invalid_pixels():
    from betterdepth_cli.core.blur import local_blur

    step = blurred_step(3.0, 32, 128)
    holed = step.clone()
    valid = torch.ones_like(step, dtype=torch.bool)
    valid[..., :, 100:] = False
    holed[..., :, 100:] = 40.0  # garbage where the mask says invalid: its border is no edge
    b = local_blur(holed, valid)[0, 0, 16]
    torch.testing.assert_close(b[50:78], local_blur(step)[0, 0, 16, 50:78], rtol=1e-4, atol=0)
    assert torch.isinf(b[100:]).all()


@pytest.mark.parametrize("radius", [0, 1, 2, 5, 12])
def test_window_max_equals_max_pooling(radius):
    import torch.nn.functional as F

    from betterdepth_cli.core.blur import window_max

    x = torch.rand(2, 1, 37, 53, generator=torch.Generator().manual_seed(radius))
    torch.testing.assert_close(window_max(x, radius), F.max_pool2d(x, 2 * radius + 1, 1, radius), rtol=0, atol=0)
    # by hand: one bright pixel spreads to the square around it, clipped at the border
    one = torch.zeros(1, 1, 9, 9)
    one[..., 1, 6] = 1.0
    want = torch.zeros_like(one)
    want[..., max(0, 1 - radius) : 2 + radius, max(0, 6 - radius) : 7 + radius] = 1.0
    torch.testing.assert_close(window_max(one, radius), want, rtol=0, atol=0)
