"""The library as a researcher calls it: paths, holes in their own maps, devices, seeds, keys, shots,
sidecars that `refine` accepts, and usage errors that name the library's keywords (one line each).

Tiny real models saved with ``save_pretrained`` and loaded back through ``from_pretrained``; the guided
filter where the comparison is about the library's plumbing, not the network.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from betterdepth_cli import BetterDepthPipeline, save_shot_png16
from betterdepth_cli.cli.app import app
from betterdepth_cli.core.types import DepthPrediction, UsageError


def _photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def guided(tiny_dpt_dir):
    return BetterDepthPipeline.from_pretrained("guided", f"hf:{tiny_dpt_dir}")


def _refine(*args: str) -> str:
    res = CliRunner().invoke(app, ["refine", *args])
    assert res.exit_code == 0, res.output
    return res.output


def test_a_path_or_a_rotated_jpeg_gives_refines_file_byte_for_byte(tmp_path, tiny_dpt_dir, tiny_model_dir):
    """A path is read as refine reads it; a PIL image of a photo with an EXIF orientation is turned
    upright, as refine turns the file: the same PNG and sidecar either way."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 x 48, shown 48 x 64
    (tmp_path / "in").mkdir()
    Image.fromarray(_photo()).save(tmp_path / "in" / "rot.jpg", exif=exif, quality=95)
    _refine(str(tmp_path / "in"), "-o", str(tmp_path / "cli"), "--conditioner", f"hf:{tiny_dpt_dir}", "--model",
            str(tiny_model_dir), "-q")
    want = (tmp_path / "cli" / "rot.png").read_bytes()
    pipe = BetterDepthPipeline.from_pretrained(tiny_model_dir, f"hf:{tiny_dpt_dir}")
    photo = tmp_path / "in" / "rot.jpg"
    by_path = pipe(photo)
    assert by_path.depth.shape == (1, 1, 64, 48)
    by_path.save_png16(tmp_path / "cli" / "lib.png", source=photo)
    assert (tmp_path / "cli" / "lib.png").read_bytes() == want
    with Image.open(photo) as im:
        pipe(im).save_png16(tmp_path / "pil.png")
    assert (tmp_path / "pil.png").read_bytes() == want
    side = json.loads((tmp_path / "cli" / "rot.json").read_text())
    assert json.loads((tmp_path / "cli" / "lib.json").read_text()) == {**side, "source": side["source"]}
    np.testing.assert_array_equal(pipe([photo, str(photo)]).depth_np[1], by_path.depth_np[0])


def test_a_16bit_pil_image_is_not_made_white(tmp_path, guided):
    """PIL's convert("RGB") clips 16-bit pixels to 255: the map must be the one of the pixels."""
    grey = (np.random.default_rng(2).random((48, 64)) * 65535).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        from_pil = guided(im).depth_np[0]
    np.testing.assert_array_equal(from_pil, guided(grey).depth_np[0])
    np.testing.assert_array_equal(from_pil, guided(tmp_path / "g16.png").depth_np[0])


def test_holes_in_a_callers_map_stay_holes_and_its_size_is_fitted(guided):
    from betterdepth_cli.core.pipeline import refine_batch

    image = torch.from_numpy(_photo()).permute(2, 0, 1)[None].float() / 255
    yy, xx = np.mgrid[0:48, 0:64]
    values = (1.0 + xx / 64 + (yy > 24)).astype(np.float32)[None, None]
    holed = values.copy()
    holed[0, 0, 10:20, 5:15] = np.nan
    holed[0, 0, 30, 40] = np.inf
    pred = DepthPrediction(holed, np.ones_like(holed, dtype=bool), "disparity")  # numpy is taken as tensors
    assert int((~pred.valid).sum()) == 101 and float(pred.values[0, 0, 12, 7]) == 0.0
    out = refine_batch(image, prediction=pred, model=guided.model)
    assert torch.isfinite(out.refined).all()  # one NaN used to make the whole map NaN
    assert torch.equal(out.valid, pred.valid)
    far = np.ones((48, 64), bool)
    far[0:30, 0:25] = False  # well away from the holes (the filter's radius is 1 % of 64 px: 1 px)
    far[25:36, 34:46] = False
    whole = refine_batch(image, prediction=DepthPrediction(values, np.ones_like(values, bool), "disparity"),
                         model=guided.model)
    np.testing.assert_allclose(out.refined[0, 0].numpy()[far], whole.refined[0, 0].numpy()[far], rtol=0, atol=1e-6)

    half = DepthPrediction(values[..., ::2, ::2].copy(), np.ones((1, 1, 24, 32), bool), "disparity")
    fitted = refine_batch(image, prediction=half, model=guided.model)
    assert fitted.refined.shape == (1, 1, 48, 64)  # at the image's size, as the docstring says
    with pytest.raises(UsageError, match=r"prediction: the map is 48 x 48 pixels, its image 64 x 48: another aspect"):
        refine_batch(image, prediction=DepthPrediction(values[..., :48], np.ones((1, 1, 48, 48), bool), "disparity"),
                     model=guided.model)
    with pytest.raises(UsageError, match=r"must both be \(B,1,H,W\), got \(48, 64\)"):
        DepthPrediction(values[0, 0], np.ones((48, 64), bool), "disparity")


def test_the_guided_filter_warns_that_sampling_settings_do_not_apply_and_records_its_own(guided):
    photo = _photo()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asked = guided(photo, steps=4, ensemble=3, processing_res=32)
        plain = guided(photo)
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert said == ["the guided filter (model=guided) runs one classical filter at native resolution, without "
                    "sampling or tiles; not applied: steps, ensemble, processing_res"]
    assert (asked.settings["steps"], asked.settings["ensemble"], asked.settings["processing_res"]) == (1, 1, 0)
    assert asked.settings == plain.settings
    np.testing.assert_array_equal(np.asarray(asked.depth), np.asarray(plain.depth))


def test_sidecars_of_the_guided_filter_and_the_conditioner_alone_are_refines(tmp_path, tiny_dpt_dir):
    """A rerun of refine over the library's outputs skips them (same settings), for --model guided and
    --no-refine alike."""
    (tmp_path / "in").mkdir()
    Image.fromarray(_photo()).save(tmp_path / "in" / "s.png")
    photo = tmp_path / "in" / "s.png"
    for name, flags, pipe in (("g", ["--model", "guided"], BetterDepthPipeline.from_pretrained("guided", f"hf:{tiny_dpt_dir}")),
                              ("n", ["--no-refine"], BetterDepthPipeline.from_pretrained(None, f"hf:{tiny_dpt_dir}", refine=False))):
        _refine(str(tmp_path / "in"), "-o", str(tmp_path / f"cli_{name}"), "--conditioner", f"hf:{tiny_dpt_dir}", *flags)
        out = tmp_path / f"lib_{name}"
        out.mkdir()
        pipe(photo).save_png16(out / "s.png", source=photo)
        cli = json.loads((tmp_path / f"cli_{name}" / "s.json").read_text())
        assert json.loads((out / "s.json").read_text()) == cli
        rerun = _refine(str(tmp_path / "in"), "-o", str(out), "--conditioner", f"hf:{tiny_dpt_dir}", *flags)
        assert "1 skipped" in rerun  # refine takes the library's files for its own
    assert cli["refined"] is False and cli["seed"] is None


def test_devices_dtypes_seeds_and_options_are_refused_in_the_librarys_words(tiny_dpt_dir, guided):
    cases = [
        (lambda: BetterDepthPipeline.from_pretrained("guided", f"hf:{tiny_dpt_dir}", device="cuda"),
         r"`device=cuda`: CUDA is not available here .*; use device=cpu"),
        (lambda: BetterDepthPipeline.from_pretrained("guided", f"hf:{tiny_dpt_dir}", device="gpu"),
         r"`device` must be"),
        (lambda: BetterDepthPipeline.from_pretrained("guided", f"hf:{tiny_dpt_dir}", dtype="fp16"),
         r"`dtype=fp16` needs a GPU"),
        (lambda: BetterDepthPipeline.from_pretrained("guided", f"hf:{tiny_dpt_dir}", dtype=torch.float16),
         r"`dtype=fp16` needs a GPU"),
        (lambda: BetterDepthPipeline.from_pretrained("guided", "builtin?kind=banana"),
         r"builtin\?kind=banana: kind must be disparity or depth, got 'banana'"),
        (lambda: BetterDepthPipeline.from_pretrained("guided", "builtin?foo=1"), r"unknown option 'foo'"),
        (lambda: guided(_photo(), seed=None), r"`seed` must be an integer, got None"),
        (lambda: guided(_photo(), seed="7"), r"`seed` must be an integer, got '7'"),
        (lambda: guided(_photo(), seed=2**64), r"`seed` must be a 64-bit integer"),
        (lambda: guided(_photo(), keys=["a", "b"]), r"`keys`: 2 names for 1 images"),
        (lambda: list(guided.shot([_photo(), _photo()], keys=["a"])), r"shot: `keys` ran out at frame 1"),
        (lambda: list(guided.shot([[_photo(), _photo()]])), r"shot: frame 0 holds 2 images"),
        (lambda: guided(_photo()).save_png16("x.jpg"), r"x.jpg: a 16-bit PNG is named .png \(got .jpg\)"),
    ]
    for call, match in cases:
        with pytest.raises(UsageError, match=match):
            call()
    assert BetterDepthPipeline.from_pretrained("guided", "builtin?kind=depth").conditioner.kind == "depth"
    res = CliRunner().invoke(app, ["refine", "x.png", "-o", "o", "--conditioner", "builtin?kind=banana"])
    assert res.exit_code == 64 and "kind must be disparity or depth" in res.output  # refine refuses it too


def test_the_sidecar_records_no_seed_for_a_callers_generator_and_warns_on_extra_members(guided, tiny_model_dir,
                                                                                     tiny_dpt_dir):
    out = guided(_photo(), generator=torch.Generator().manual_seed(123))
    assert out.sidecar()["seed"] is None  # not the default 0: the caller's generator drew the noise
    assert guided(_photo(), seed=5).sidecar()["seed"] == 5
    pipe = BetterDepthPipeline.from_pretrained(tiny_model_dir, f"hf:{tiny_dpt_dir}")
    pipe.model.card["zero_noise"] = True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ran = pipe(_photo(24, 32), ensemble=5)
    assert ran.settings["ensemble"] == 2
    assert any("ensemble=5 would repeat its 2 members" in str(w.message) for w in caught)


def test_file_maps_through_a_call_with_keys(tmp_path, tiny_dpt_dir):
    (tmp_path / "maps").mkdir()
    ramp = np.linspace(1, 2, 48 * 64, dtype=np.float32).reshape(48, 64)
    np.save(tmp_path / "maps" / "a.npy", ramp)
    np.save(tmp_path / "maps" / "b.npy", ramp[::-1].copy())
    pipe = BetterDepthPipeline.from_pretrained("guided", f"file:{tmp_path / 'maps'}?kind=disparity")
    out = pipe([_photo(), _photo(seed=1)], keys=["a", "b"])
    np.testing.assert_array_equal(out.conditioning_np[0], ramp)
    np.testing.assert_array_equal(out.conditioning_np[1], ramp[::-1])
    np.testing.assert_array_equal(pipe(_photo(), keys="a").conditioning_np[0], ramp)


def test_a_shots_pngs_share_one_range_as_refines_do(tmp_path, tiny_model_dir):
    """save_shot_png16 writes a shot's frames as refine writes a sequence: the same bytes and sidecars."""
    (tmp_path / "shot").mkdir()
    (tmp_path / "maps").mkdir()
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.5, (48, 64)).astype(np.float32)
    names = [f"frame.{1001 + i}" for i in range(3)]
    for i, name in enumerate(names):
        Image.fromarray(_photo(seed=i)).save(tmp_path / "shot" / f"{name}.png")
        np.save(tmp_path / "maps" / f"{name}.npy", (base * (1 + 0.3 * i)).astype(np.float32))
    cond = f"file:{tmp_path / 'maps'}?kind=disparity"
    _refine(str(tmp_path / "shot" / "frame.%04d.png"), "-o", str(tmp_path / "cli"), "--conditioner", cond,
            "--model", str(tiny_model_dir), "-q")
    pipe = BetterDepthPipeline.from_pretrained(tiny_model_dir, cond)
    photos = [tmp_path / "shot" / f"{n}.png" for n in names]
    outs = list(pipe.shot(photos, keys=names))
    (tmp_path / "lib").mkdir()
    written = save_shot_png16(outs, [tmp_path / "lib" / f"{n}.png" for n in names], sources=photos,
                              frames=[1001, 1002, 1003])
    assert len(written) == 3
    sides = [json.loads((tmp_path / "lib" / f"{n}.json").read_text()) for n in names]
    assert len({(s["encoding"]["min"], s["encoding"]["max"]) for s in sides}) == 1  # one range for the shot
    for name, side in zip(names, sides):
        cli = json.loads((tmp_path / "cli" / f"{name}.json").read_text())
        assert side == {**cli, "source": side["source"]} and side["range"] == "shot"
        assert (tmp_path / "lib" / f"{name}.png").read_bytes() == (tmp_path / "cli" / f"{name}.png").read_bytes()


def test_the_package_lists_its_exports():
    import betterdepth_cli

    assert {"BetterDepthPipeline", "DepthOutput", "save_shot_png16"} <= set(dir(betterdepth_cli))
