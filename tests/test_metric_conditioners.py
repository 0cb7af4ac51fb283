"""Every conditioner family through its processor's own pre- and post-processing (#23).

Tiny random models of the real classes are saved and loaded back through ``hf:``; each test
checks alignment (the processing geometry puts a known pattern back in place, and the
prediction equals the processor's post-processing computed by hand), the kind and the units.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from betterdepth_cli.conditioner_registry import METRIC_MODELS, get_conditioner, list_conditioners
from betterdepth_cli.core import hf_processing as hp
from betterdepth_cli.core.types import InputDataError
from betterdepth_cli.io.depth_files import units_for
from tiny_models import FOV_DEGREES, save_depth_pro, save_dpt, save_dpt_dinov2, save_glpn, save_zoedepth


def _square_pattern(h: int, w: int, box=(12, 20, 18, 30)) -> torch.Tensor:
    """A white rectangle (rows box[0]:box[1], cols box[2]:box[3]) on black, (1,3,H,W)."""
    img = torch.zeros(1, 3, h, w)
    img[..., box[0] : box[1], box[2] : box[3]] = 1.0
    return img


def _pattern_back(prep, images, processor) -> torch.Tensor:
    """The family's pre-processing, then its geometry back to the input, with the model replaced by
    the identity on the first channel (un-normalised): a pattern must come back where it was."""
    x, geometry = prep(images, processor)
    mean, std = processor.image_mean[0], processor.image_std[0]
    back = hp.to_input_grid(x[:, :1] * std + mean, geometry, tuple(images.shape[-2:]))
    return back / hp.rescale(torch.ones(1), processor)  # back to [0,1]


def _assert_in_place(back: torch.Tensor, box=(12, 20, 18, 30)):
    t, b, l, r = box
    assert back[0, 0, t + 2 : b - 2, l + 2 : r - 2].min() > 0.9  # inside stays bright
    outside = back[0, 0].clone()
    outside[t - 2 : b + 2, l - 2 : r + 2] = 0
    assert outside.abs().max() < 0.1  # nothing moved out
    ys, xs = torch.meshgrid(torch.arange(back.shape[-2]), torch.arange(back.shape[-1]), indexing="ij")
    weight = back[0, 0].clamp(min=0)
    cy, cx = (weight * ys).sum() / weight.sum(), (weight * xs).sum() / weight.sum()
    assert abs(cy - (t + b - 1) / 2) < 0.5 and abs(cx - (l + r - 1) / 2) < 0.5


# ------------------------------------------------------------------ ZoeDepth
def test_zoedepth_padding_is_the_processors(tmp_path):
    assert hp.zoedepth_padding(480, 640) == (46, 53)  # int(sqrt(240) * 3), int(sqrt(320) * 3)
    assert hp.zoedepth_padding(48, 64) == (14, 16)


def test_zoedepth_removes_its_reflection_padding_and_reports_metres(tmp_path):
    path = save_zoedepth(tmp_path / "zoe")
    cond = get_conditioner(f"hf:{path}")
    assert (cond.kind, cond.metric, units_for(cond.kind, cond.metric)) == ("depth", True, "metres")
    _assert_in_place(_pattern_back(hp.zoedepth_preprocess, _square_pattern(48, 64), cond.processor))

    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    pred = cond.predict(images)
    assert pred.values.shape == (2, 1, 48, 64) and pred.kind == "depth" and pred.metric
    # the processor's own pre-processing, the model, then its post-processing by hand:
    # bicubic to the padded input size (48 + 2*14, 64 + 2*16), padding cut off
    official = cond.processor(images=list(images * 255), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(cond.preprocess(images), official, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        raw = cond.model(pixel_values=official).predicted_depth[:, None]
    want = F.interpolate(raw, size=(76, 96), mode="bicubic", align_corners=False)[..., 14:62, 16:80]
    torch.testing.assert_close(pred.values, want, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ Depth Pro
def test_depth_pro_turns_inverse_depth_into_metres_with_its_field_of_view(tmp_path):
    path = save_depth_pro(tmp_path / "pro")
    cond = get_conditioner(f"hf:{path}")
    assert (cond.kind, cond.metric, units_for(cond.kind, cond.metric)) == ("depth", True, "metres")
    _assert_in_place(_pattern_back(hp.depth_pro_preprocess, _square_pattern(48, 64), cond.processor))

    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    pred = cond.predict(images)
    with torch.no_grad():
        out = cond.model(pixel_values=cond.preprocess(images))
    torch.testing.assert_close(out.field_of_view, torch.full((2,), FOV_DEGREES))
    # focal = 0.5 W / tan(fov / 2); inverse depth * W / focal, bilinear to the input, then 1 / x
    focal = 0.5 * 64 / math.tan(math.radians(FOV_DEGREES) / 2)
    inv = F.interpolate(out.predicted_depth[:, None] * 64 / focal, size=(48, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pred.values, 1.0 / inv.clamp(1e-4, 1e4), atol=1e-5, rtol=1e-4)
    # the processor's pre-processing: normalise first, then bilinear without antialiasing
    want_in = F.interpolate((images - 0.5) / 0.5, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(cond.preprocess(images), want_in)


# ------------------------------------------------------------------ DPT with a DINOv2 backbone
def test_dpt_dinov2_uses_0_255_normalisation_cuts_its_padding_and_is_metric(tmp_path):
    path = save_dpt_dinov2(tmp_path / "dinov2")
    cond = get_conditioner(f"hf:{path}")
    assert (cond.kind, cond.metric, units_for(cond.kind, cond.metric)) == ("depth", True, "metres")
    grey = torch.full((1, 3, 40, 50), 0.5)
    x = cond.preprocess(grey)
    # do_rescale=False: mean/std are in 0..255 units; grey 127.5 -> (127.5 - 123.675) / 58.395 = 0.0655
    assert x.shape[-2:] == (42, 56)  # centre zero padding to multiples of 14
    torch.testing.assert_close(x[0, 0, 20, 25], torch.tensor((127.5 - 123.675) / 58.395))
    assert x[0, 0, 0, 0] == 0 and x[0, 0, 1, 3] != 0  # 1 row on top, 3 columns left are padding
    official = cond.processor(images=[grey[0] * 255], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(x, official, atol=1e-5, rtol=1e-5)
    _assert_in_place(_pattern_back(hp.dpt_preprocess, _square_pattern(40, 50), cond.processor))

    images = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(0))
    pred = cond.predict(images)
    with torch.no_grad():
        raw = cond.model(pixel_values=cond.preprocess(images)).predicted_depth[:, None]
    want = F.interpolate(raw, size=(42, 56), mode="bicubic", align_corners=False)[..., 1:41, 3:53]
    torch.testing.assert_close(pred.values, want, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ DPT-ViT, non-square input
def test_dpt_vit_takes_a_non_square_input(tmp_path):
    from transformers import DPTImageProcessor

    from betterdepth_cli.core.conditioners import dpt_vit_forward

    path = save_dpt(tmp_path / "dpt")
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=True, ensure_multiple_of=16
                      ).save_pretrained(path)  # keeps the aspect ratio: 48 x 64 stays non-square
    cond = get_conditioner(f"hf:{path}")
    images = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    assert cond.preprocess(images).shape[-2:] == (48, 64)
    with pytest.raises(RuntimeError):
        cond.model(pixel_values=cond.preprocess(images))  # transformers' own forward
    pred = cond.predict(images)
    assert pred.values.shape == (1, 1, 48, 64) and torch.isfinite(pred.values).all()
    square = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # on a square input the split forward is the model's own
        torch.testing.assert_close(dpt_vit_forward(cond.model, square).predicted_depth,
                                   cond.model(pixel_values=square).predicted_depth)


def test_a_model_that_cannot_take_an_input_fails_in_one_line(tmp_path):
    path = save_dpt(tmp_path / "hybrid", hybrid=True)
    from transformers import DPTImageProcessor

    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=True, ensure_multiple_of=16
                      ).save_pretrained(path)
    cond = get_conditioner(f"hf:{path}")  # DPT-hybrid's BiT backbone takes only its configured 64 x 64
    with pytest.raises(InputDataError, match="cannot take a 48x64 input") as err:
        cond.predict(torch.rand(1, 3, 48, 64))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ any other processor: called as it is
def test_other_processors_run_as_they_are_with_their_post_processing(tmp_path):
    path = save_glpn(tmp_path / "glpn")
    cond = get_conditioner(f"hf:{path}")
    assert cond.family == "generic" and (cond.kind, cond.metric) == ("depth", True)
    images = torch.rand(2, 3, 45, 61, generator=torch.Generator().manual_seed(0))
    pred = cond.predict(images)
    pixels = [(im * 255).round().to(torch.uint8) for im in images]
    inputs = cond.processor(images=pixels, return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (32, 32)  # GLPN rounds down to multiples of 32
    with torch.no_grad():
        out = cond.model(**inputs)
    ref = cond.processor.post_process_depth_estimation(out, target_sizes=[(45, 61)] * 2)
    torch.testing.assert_close(pred.values[:, 0], torch.stack([r["predicted_depth"] for r in ref]))


# ------------------------------------------------------------------ registry and info
def test_registry_lists_the_metric_families_with_hub_ids():
    listed = {c.name: c for c in list_conditioners()}
    for name, hub in {"zoedepth-nyu-kitti": "Intel/zoedepth-nyu-kitti", "depth-pro": "apple/DepthPro-hf",
                      "depth-anything-v2-metric-outdoor-large":
                          "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf",
                      "dpt-dinov2-small-nyu": "facebook/dpt-dinov2-small-nyu"}.items():
        assert listed[name].target == hub and "metres" in listed[name].description
    from betterdepth_cli.cli.info import _text, gather

    text = _text(gather())
    for family in ("ZoeDepth", "Depth Pro", "Depth Anything V2 metric", "DPT-DINOv2"):
        assert family in text
    assert all(name in text for name in METRIC_MODELS)


def _cache(tmp_path, repo, saver):
    snap = tmp_path / "hf" / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123456789abcdef"
    saver(snap)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0123456789abcdef")


@pytest.mark.slow
def test_metric_names_resolve_offline(tmp_path):
    from tiny_models import save_depth_anything

    names = {"zoedepth-nyu": save_zoedepth, "depth-pro": save_depth_pro, "dpt-dinov2-small-kitti": save_dpt_dinov2,
             "depth-anything-v2-metric-indoor-small": lambda p: save_depth_anything(p, metric=True)}
    for name, saver in names.items():
        _cache(tmp_path, METRIC_MODELS[name], saver)
    code = (
        "import torch\nfrom betterdepth_cli.conditioner_registry import get_conditioner\n"
        f"for name in {sorted(names)!r}:\n"
        "    c = get_conditioner(name)\n"
        "    p = c.predict(torch.rand(1, 3, 30, 41))\n"
        "    print(name, type(c.model).__name__, p.kind, p.metric, tuple(p.values.shape))\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.strip().splitlines()}
    assert rows["zoedepth-nyu"][0] == "ZoeDepthForDepthEstimation"
    assert rows["depth-pro"][0] == "DepthProForDepthEstimation"
    assert rows["dpt-dinov2-small-kitti"][0] == "DPTForDepthEstimation"
    assert all(r[1:4] == ["depth", "True", "(1,"] for r in rows.values())
