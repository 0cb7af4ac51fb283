"""Sampler, model bundle, conditioner registry and pipeline with tiny real models."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from betterdepth_cli.core.autoencoders import SpaceToDepthCodec, load_codec, tiny_codec
from betterdepth_cli.conditioner_registry import HF_MODELS, get_conditioner
from betterdepth_cli.core.pipeline import pad_to_multiple, processing_size, refine_batch, unpad
from betterdepth_cli.core.refiner import BetterDepthModel, expand_conv_in, load_model
from betterdepth_cli.core.sampler import (
    align_members,
    inference_timesteps,
    make_scheduler,
    reduce_members,
    sample,
)
from betterdepth_cli.core.types import DepthPrediction, InputDataError, ModelNotFoundError, UsageError

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import save_depth_anything, save_dpt, save_fake_stable_diffusion  # noqa: E402


@pytest.fixture(scope="module")
def dpt_dir(tmp_path_factory):
    return save_dpt(tmp_path_factory.mktemp("dpt"))


@pytest.fixture(scope="module")
def tiny_model():
    return BetterDepthModel.tiny(seed=0)


# ------------------------------------------------------------------ sampler
@pytest.mark.parametrize("steps,expected", [(1, [999]), (2, [999, 499]), (4, [999, 749, 499, 249])])
def test_trailing_timesteps(steps, expected):
    assert inference_timesteps(make_scheduler(), steps) == expected


def test_ddim_with_an_oracle_recovers_the_clean_latent():
    sched = make_scheduler()
    z0 = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    ac = sched.alphas_cumprod

    def oracle(z_t, t):  # the exact v for this z0: v = sqrt(a) eps - sqrt(1-a) z0
        a = ac[int(t)]
        eps = (z_t - a.sqrt() * z0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * z0

    for steps in (1, 2, 4):
        out = sample(oracle, sched, z0.shape, steps, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, z0, atol=1e-4, rtol=1e-4)


def test_sampling_is_deterministic_per_seed(tiny_model):
    zi, zc = torch.randn(1, 48, 4, 4), torch.randn(1, 16, 4, 4)
    run = lambda seed: sample(lambda z, t: tiny_model.denoise(zi, zc, z, t), tiny_model.scheduler, (1, 16, 4, 4), 2,
                              generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert torch.equal(run(3), run(3))
        assert not torch.equal(run(3), run(4))


def test_ensemble_alignment_recovers_affinely_distorted_members():
    base = torch.rand(1, 1, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    scales = torch.tensor([1.0, 2.0, 0.5, -1.5]).reshape(4, 1, 1, 1, 1)
    shifts = torch.tensor([0.0, 1.0, -0.3, 2.0]).reshape(4, 1, 1, 1, 1)
    members = base * scales + shifts  # [E=4,B=1,1,6,6]
    aligned = align_members(members)
    spread = (aligned - aligned.mean(0)).abs().max()
    assert spread < 1e-5
    mean, unc = reduce_members(aligned, "mean")
    assert unc.abs().max() < 1e-5
    # aligned members are an affine map of the base with positive correlation to the median
    corr = torch.corrcoef(torch.stack([mean.flatten(), base.flatten()]))[0, 1]
    assert corr == pytest.approx(1.0, abs=1e-5)


def test_reduce_members_mean_median_and_uncertainty():
    m = torch.tensor([1.0, 2.0, 6.0]).reshape(3, 1, 1, 1, 1)
    mean, std = reduce_members(m, "mean")
    med, mad = reduce_members(m, "median")
    assert mean.item() == pytest.approx(3.0) and std.item() == pytest.approx((14 / 3) ** 0.5)
    assert med.item() == 2.0 and mad.item() == 1.0
    assert reduce_members(m[:1], "mean")[1] is None
    # two members (the default ensemble): the lower of the two as the median, as torch.median gives it
    two = torch.tensor([[4.0, -1.0], [1.0, float("nan")]]).reshape(2, 1, 1, 1, 2)
    mean, std = reduce_members(two, "mean")
    med, mad = reduce_members(two, "median")
    assert mean[..., 0].item() == 2.5 and std[..., 0].item() == 1.5
    assert med[..., 0].item() == 1.0 and mad[..., 0].item() == 0.0
    assert torch.equal(med.isnan(), two.median(0).values.isnan()) and med[..., 1].isnan()
    with pytest.raises(ValueError, match="reduction"):
        reduce_members(m, "max")


# ------------------------------------------------------------------ autoencoders and bundle
def test_space_to_depth_round_trip_is_lossless(tmp_path):
    codec = SpaceToDepthCodec(4)
    d = torch.rand(2, 1, 16, 24) * 2 - 1
    z = codec.encode_depth(d)
    assert z.shape == (2, 16, 4, 6)
    assert torch.equal(codec.decode_depth(z), d)
    assert codec.encode_image(torch.rand(1, 3, 8, 8)).shape == (1, 48, 2, 2)
    codec.save_pretrained(tmp_path / "vae")
    assert load_codec(tmp_path / "vae").factor == 4


@pytest.mark.parametrize("kind", ["kl", "tiny"])
def test_learned_codecs_shapes_and_reload(kind, tmp_path):
    codec = tiny_codec(kind)
    z = codec.encode_depth(torch.zeros(1, 1, 32, 32))
    assert z.shape == (1, 4, 4, 4)
    assert codec.decode_depth(z).shape == (1, 1, 32, 32)
    codec.save_pretrained(tmp_path / "vae")
    again = load_codec(tmp_path / "vae")
    torch.testing.assert_close(again.encode_depth(torch.zeros(1, 1, 32, 32)), z)


def test_expanded_conv_in_reproduces_four_channel_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2D",
    ).eval()
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        ref = unet(z, 500, encoder_hidden_states=None).sample
        expand_conv_in(unet, groups=3)
        out = unet(torch.cat([z, z, z], 1), 500, encoder_hidden_states=None).sample
    assert unet.config.in_channels == 12
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_init_from_stable_diffusion_saves_and_loads(tmp_path):
    sd = save_fake_stable_diffusion(tmp_path / "sd")
    model = BetterDepthModel.from_stable_diffusion(str(sd))
    assert model.unet.config.in_channels == 12
    assert model.text_embedding.shape == (1, 77, 32)
    assert model.scheduler.config.prediction_type == "v_prediction"
    assert model.scheduler.config.timestep_spacing == "trailing"
    model.save(tmp_path / "bd")
    again = load_model(tmp_path / "bd")
    assert torch.equal(again.text_embedding, model.text_embedding)
    images = torch.rand(1, 3, 20, 28)
    pred = DepthPrediction(values=torch.rand(1, 1, 20, 28) + 0.5, valid=torch.ones(1, 1, 20, 28, dtype=torch.bool),
                           kind="disparity")
    out = refine_batch(images, model=again, prediction=pred, steps=1, processing_res=16,
                       generator=torch.Generator().manual_seed(0))
    assert out.refined.shape == (1, 1, 20, 28) and torch.isfinite(out.refined).all()


def test_bundle_round_trip_and_card(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "model")
    card = json.loads((path / "betterdepth.json").read_text())
    assert card["autoencoder"] == "space-to-depth" and card["latent_factor"] == 4
    again = load_model(path)
    zi, zc = torch.randn(1, 48, 4, 4), torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(again.denoise(zi, zc, zc, 999), tiny_model.denoise(zi, zc, zc, 999))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp folders left


def test_load_model_errors_name_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a BetterDepth model folder"):
        load_model(tmp_path / "empty")


# ------------------------------------------------------------------ conditioners
def _smooth_images(b, h, w):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    chans = [0.5 + 0.4 * torch.sin(6 * xx + 3 * c) * torch.cos(4 * yy) for c in range(3)]
    return torch.stack(chans)[None].repeat(b, 1, 1, 1)


def test_hf_conditioner_from_local_folder(dpt_dir):
    cond = get_conditioner(f"hf:{dpt_dir}")
    images = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    pred = cond.predict(images)
    assert pred.values.shape == (2, 1, 37, 53) and pred.kind == "disparity" and not pred.metric
    assert pred.valid.all()
    # the adapter's torch preprocessing replays the model's own processor
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    proc = AutoImageProcessor.from_pretrained(dpt_dir)
    smooth = _smooth_images(2, 37, 53)
    ref_in = proc(images=smooth, return_tensors="pt", do_rescale=False)["pixel_values"]
    ours = cond.preprocess(smooth)
    assert ours.shape == ref_in.shape
    assert (ours - ref_in).abs().mean() < 0.01  # PIL (8-bit) vs torch bicubic only
    ours = cond.preprocess(images)
    model = AutoModelForDepthEstimation.from_pretrained(dpt_dir).eval()
    with torch.no_grad():
        out = model(pixel_values=ours)
    ref = proc.post_process_depth_estimation(out, target_sizes=[(37, 53)] * 2)
    torch.testing.assert_close(pred.values[1, 0], ref[1]["predicted_depth"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size,expected", [((480, 640), (70, 98)), ((37, 53), (42, 70)), ((640, 480), (98, 70))])
def test_depth_anything_preprocess_sizes_match_the_processor(size, expected, tmp_path_factory):
    path = save_depth_anything(tmp_path_factory.mktemp("da"))
    cond = get_conditioner(f"hf:{path}")
    images = _smooth_images(1, *size)
    from transformers import AutoImageProcessor

    ref = AutoImageProcessor.from_pretrained(path)(images=images, return_tensors="pt", do_rescale=False)["pixel_values"]
    ours = cond.preprocess(images)
    assert tuple(ours.shape[-2:]) == tuple(ref.shape[-2:]) == expected
    assert (ours - ref).abs().mean() < 0.02


def test_metric_depth_anything_reports_metric_depth(tmp_path):
    path = save_depth_anything(tmp_path / "da-metric", metric=True)
    cond = get_conditioner(f"hf:{path}")
    assert cond.kind == "depth" and cond.metric
    override = get_conditioner(f"hf:{path}?kind=disparity&metric=0")
    assert override.kind == "disparity" and not override.metric


def test_registry_names_resolve_through_the_hf_cache(tmp_path):
    """Every public name loads a tiny model of its real class from an offline HF cache."""
    cache = tmp_path / "hf" / "hub"
    for name, repo in HF_MODELS.items():
        snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123456789abcdef"
        if name.startswith("depth-anything"):
            save_depth_anything(snap)
        else:
            save_dpt(snap, hybrid=name == "dpt-hybrid")
        (snap.parents[1] / "refs").mkdir()
        (snap.parents[1] / "refs" / "main").write_text("0123456789abcdef")
    code = (
        "import torch, sys\n"
        "from betterdepth_cli.conditioner_registry import get_conditioner, HF_MODELS, ALIASES\n"
        "for name in list(HF_MODELS) + list(ALIASES):\n"
        "    c = get_conditioner(name)\n"
        "    p = c.predict(torch.rand(1, 3, 30, 41))\n"
        "    assert p.values.shape == (1, 1, 30, 41) and p.kind == 'disparity', name\n"
        "    print(name, type(c.model).__name__)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split() for line in out.stdout.strip().splitlines())
    assert lines["dpt"] == "DPTForDepthEstimation" and lines["midas"] == "DPTForDepthEstimation"
    assert lines["depth-anything"] == "DepthAnythingForDepthEstimation"
    assert len(lines) == len(HF_MODELS) + 3


def test_missing_hub_model_error_says_what_to_download(tmp_path):
    code = (
        "from betterdepth_cli.conditioner_registry import get_conditioner\n"
        "from betterdepth_cli.core.types import ModelNotFoundError\n"
        "try:\n    get_conditioner('dpt')\nexcept ModelNotFoundError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "Intel/dpt-large" in out.stdout and "HF_HOME" in out.stdout
    # one sentence ends it, naming the flag's local form (no "id.; or")
    assert out.stdout.strip().endswith("instead of the id (--conditioner hf:/path/to/dpt-large)."), out.stdout


def test_missing_local_conditioner_folder_names_the_path_and_no_hub_hint(tmp_path):
    from betterdepth_cli.conditioner_registry import get_conditioner

    gone = tmp_path / "gone"
    with pytest.raises(ModelNotFoundError) as err:
        get_conditioner(f"hf:{gone}")
    assert str(err.value) == f"{gone}: conditioner 'hf:{gone}' folder not found"


def test_reflect_pad_runs_the_model_on_the_mirrored_image_and_crops_back(dpt_dir):
    import torch.nn.functional as F

    from betterdepth_cli.core.conditioners import BUILTIN_REFLECT_PAD, HFConditioner

    images = torch.rand(2, 3, 36, 48, generator=torch.Generator().manual_seed(1))
    padded = HFConditioner(dpt_dir, "t", reflect_pad=1 / 12)  # 3 px of a 36 px shorter side
    plain = HFConditioner(dpt_dir, "t")
    pred = padded.predict(images)
    assert pred.values.shape == (2, 1, 36, 48) and pred.valid.all()
    # the same as predicting the mirrored 42 x 54 image and keeping its middle
    mirrored = F.pad(images, (3, 3, 3, 3), mode="reflect")
    torch.testing.assert_close(mirrored[..., 3:39, 3:51], images)
    want = plain.predict(mirrored).values[..., 3:39, 3:51]
    torch.testing.assert_close(pred.values, want)
    assert not torch.allclose(pred.values, plain.predict(images).values)
    # no padding is the plain adapter; out-of-range fractions are refused
    torch.testing.assert_close(HFConditioner(dpt_dir, "t", reflect_pad=0.0).predict(images).values,
                               plain.predict(images).values)
    with pytest.raises(ValueError, match="reflect_pad"):
        HFConditioner(dpt_dir, "t", reflect_pad=1.0)
    assert BUILTIN_REFLECT_PAD == 1 / 12


def test_unknown_conditioner_lists_valid_names():
    with pytest.raises(UsageError, match="depth-anything-v2-large"):
        get_conditioner("nope")

def test_file_conditioner_without_a_kind_source_asks_for_kind(tmp_path):
    import numpy as np

    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))  # a bare array: nothing says what it holds
    with pytest.raises(UsageError, match="kind=disparity"):
        get_conditioner(f"file:{tmp_path}")


def test_file_conditioner_matches_by_stem(tmp_path):
    import numpy as np

    (tmp_path / "maps").mkdir()
    np.save(tmp_path / "maps" / "img_a.npy", np.full((6, 8), 2.0, np.float32))
    cond = get_conditioner(f"file:{tmp_path / 'maps'}?kind=depth&metric=1")
    pred = cond.predict(torch.rand(1, 3, 12, 16), keys=["img_a"])
    assert pred.kind == "depth" and pred.metric and pred.values.shape == (1, 1, 12, 16)
    assert torch.allclose(pred.values, torch.tensor(2.0))
    with pytest.raises(InputDataError, match="no precomputed map for 'img_b'"):
        cond.predict(torch.rand(1, 3, 12, 16), keys=["img_b"])


# ------------------------------------------------------------------ pipeline
def test_pad_and_unpad_round_trip_including_zero_padding():
    x = torch.rand(1, 1, 16, 13)
    y, pad = pad_to_multiple(x, 8)
    assert y.shape == (1, 1, 16, 16) and pad == (0, 3)
    assert torch.equal(unpad(y, pad), x)
    assert torch.equal(y[..., 12], y[..., 15])  # replicate padding
    assert processing_size(480, 640, 512) == (384, 512) and processing_size(7, 5, 0) == (7, 5)


@pytest.mark.parametrize("size", [(37, 53), (2, 9), (9, 2), (64, 64)])
def test_pipeline_returns_finite_maps_of_input_size(size, dpt_dir, tiny_model):
    cond = get_conditioner(f"hf:{dpt_dir}")
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    res = refine_batch(images, conditioner=cond, model=tiny_model, steps=2, ensemble=3, processing_res=32,
                       generator=torch.Generator().manual_seed(0))
    assert res.refined.shape == (2, 1, *size) and torch.isfinite(res.refined).all()
    assert res.uncertainty.shape == (2, 1, *size) and (res.uncertainty >= 0).all()
    assert set(res.timings) >= {"conditioner", "encode", "sample", "decode", "total"}


def test_pipeline_refuses_one_pixel_images(tiny_model, dpt_dir):
    with pytest.raises(InputDataError, match="1 x 7 pixels"):
        refine_batch(torch.rand(1, 3, 7, 1), conditioner=get_conditioner(f"hf:{dpt_dir}"), model=tiny_model)


def test_pipeline_same_seed_same_output_and_no_refine_passthrough(tiny_model):
    images = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    values = torch.linspace(1, 2, 24 * 24).reshape(1, 1, 24, 24)
    pred = DepthPrediction(values=values, valid=torch.ones_like(values, dtype=torch.bool), kind="disparity")
    run = lambda s: refine_batch(images, model=tiny_model, prediction=pred, steps=1, processing_res=0,
                                 generator=torch.Generator().manual_seed(s)).refined
    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))
    passthrough = refine_batch(images, model=None, prediction=pred)
    assert torch.equal(passthrough.refined, values) and passthrough.kind == "disparity"


def test_pipeline_output_stays_in_the_conditioner_units(tiny_model):
    """Refined values live in the conditioner's range; tails beyond the 2/98 % quantiles come back."""
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    values = torch.linspace(10, 20, 32 * 32).reshape(1, 1, 32, 32)
    pred = DepthPrediction(values=values, valid=torch.ones_like(values, dtype=torch.bool), kind="depth", metric=True)
    res = refine_batch(images, model=tiny_model, prediction=pred, steps=1, processing_res=0,
                       generator=torch.Generator().manual_seed(0))
    lo, hi = torch.quantile(values.flatten(), torch.tensor([0.02, 0.98]))
    assert res.metric and res.kind == "depth"
    assert res.refined.min() >= 10 - 1e-4 and res.refined.max() <= 20 + 1e-4
    # tails beyond the 2/98 % quantiles are clipped by the normalisation and restored exactly
    plain = refine_batch(images, model=tiny_model, prediction=pred, steps=1, processing_res=0,
                         generator=torch.Generator().manual_seed(0), restore_tails=False)
    assert plain.refined.min() >= lo - 1e-4 and plain.refined.max() <= hi + 1e-4
    excess = values - values.clamp(lo, hi)
    torch.testing.assert_close(res.refined - plain.refined, excess, atol=1e-4, rtol=0)


def test_large_plates_reach_the_conditioner_downscaled(dpt_dir, monkeypatch):
    import betterdepth_cli.core.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CONDITIONER_MAX_SIDE", 40)
    cond = get_conditioner(f"hf:{dpt_dir}")
    seen = []
    original = cond.predict
    cond.predict = lambda images, keys=None: (seen.append(tuple(images.shape[-2:])), original(images, keys))[1]
    res = refine_batch(torch.rand(1, 3, 60, 100), conditioner=cond, model=None)
    assert seen == [(24, 40)]
    assert res.refined.shape == (1, 1, 60, 100) and torch.isfinite(res.refined).all()


def test_dpt_resize_keeps_at_least_one_multiple_per_side():
    from betterdepth_cli.core.hf_processing import dpt_resize_size

    # a 4 x 2000 strip at a 28-pixel processor size: height would round to 0
    assert dpt_resize_size(4, 2000, {"height": 28, "width": 28}, True, 14) == (14, 28)
    assert dpt_resize_size(480, 640, {"height": 518, "width": 518}, True, 14) == (518, 686)
