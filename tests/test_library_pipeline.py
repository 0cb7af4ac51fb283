"""The public library pipeline's contract, in the spirit of diffusers' pipeline tests.

Tiny real models (a DPT conditioner, a stochastic BetterDepth refiner) saved with
``save_pretrained`` and loaded back through ``BetterDepthPipeline.from_pretrained``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from betterdepth_cli.cli.app import app


def _images(n: int, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((h, w, 3)) * 255).astype(np.uint8) for _ in range(n)]


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference as a share of the maps' range (the tiny conditioner's values are ~1e-7)."""
    span = float(max(a.max(), b.max()) - min(a.min(), b.min()))
    assert span > 0
    return float(np.abs(a - b).max()) / span


@pytest.fixture(scope="module")
def pipe(tiny_dpt_dir, tiny_model_dir):
    from betterdepth_cli import BetterDepthPipeline

    return BetterDepthPipeline.from_pretrained(tiny_model_dir, f"hf:{tiny_dpt_dir}")


def test_import_is_light_and_exports_the_pipeline():
    code = "import sys, betterdepth_cli as b; print(b.BetterDepthPipeline.__name__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["BetterDepthPipeline", "False"]  # torch loads when the pipeline is built, not imported


def test_batch_of_four_equals_four_single_calls(pipe):
    imgs = _images(4)
    batch = pipe(imgs, steps=2, processing_res=32, seed=7)
    assert batch.depth.shape == (4, 1, 48, 64) and len(batch) == 4
    for i, img in enumerate(imgs):
        alone = pipe(img, steps=2, processing_res=32, seed=7)
        np.testing.assert_allclose(alone.depth_np[0], batch.depth_np[i], rtol=0, atol=1e-5)
    # the noise really matters for this stochastic model: another seed gives another map
    other = pipe(imgs[0], steps=2, processing_res=32, seed=8)
    assert _rel_diff(other.depth_np[0], batch.depth_np[0]) > 1e-2


def test_generators_one_per_image_equal_the_seed(pipe):
    imgs = _images(2)
    by_seed = pipe(imgs, steps=2, processing_res=32, seed=3)
    gens = [torch.Generator().manual_seed(3) for _ in imgs]
    by_gens = pipe(imgs, steps=2, processing_res=32, generator=gens)
    np.testing.assert_array_equal(by_seed.depth_np, by_gens.depth_np)


def test_uint8_float_and_tensor_inputs_give_the_same_map(pipe):
    from PIL import Image

    img = _images(1)[0]
    ref = pipe(img, processing_res=32).depth_np[0]
    as_float = pipe(img.astype(np.float32) / 255.0, processing_res=32).depth_np[0]
    as_tensor = pipe(torch.from_numpy(img).permute(2, 0, 1), processing_res=32).depth_np[0]
    as_pil = pipe(Image.fromarray(img), processing_res=32).depth_np[0]
    as_uint16 = pipe(img.astype(np.uint16) * 257, processing_res=32).depth_np[0]
    for other in (as_float, as_tensor, as_pil, as_uint16):
        assert _rel_diff(other, ref) < 1e-5


def test_output_says_what_it_holds(pipe):
    out = pipe(_images(1), steps=1, ensemble=2, processing_res=32)
    assert out.kind in ("depth", "disparity") and out.metric is False and out.units == "relative"
    assert out.depth_np.shape == out.conditioning_np.shape == out.uncertainty_np.shape == (1, 48, 64)
    assert out.settings["steps"] == 1 and out.settings["ensemble"] == 2 and out.settings["processing_res"] == 32
    assert {"conditioner", "sample", "total", "call"} <= set(out.timings)
    assert out.depth_np.dtype == np.float32 and out.valid_np.dtype == bool


def test_one_integer_to_float_conversion_for_library_refine_and_eval():
    """uint8 and uint16 pixels become the same floats through the library and through the file readers."""
    from betterdepth_cli.core.image_input import as_image_batch
    from betterdepth_cli.io.images import to_float_rgb

    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        img = np.linspace(0, top, 3 * 64, dtype=np.int64).astype(dtype).reshape(8, 8, 3)
        lib = as_image_batch(img)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(lib, to_float_rgb(img, "x"))
    lib_t = as_image_batch(torch.from_numpy(img8 := np.arange(192, dtype=np.uint8).reshape(8, 8, 3)).permute(2, 0, 1))
    assert np.array_equal(lib_t[0].permute(1, 2, 0).numpy(), to_float_rgb(img8, "x"))


def test_save_load_round_trip_gives_the_same_map(pipe, tmp_path, tiny_dpt_dir):
    from betterdepth_cli import BetterDepthPipeline

    img = _images(1)[0]
    before = pipe(img, steps=2, processing_res=32, seed=1).depth_np
    pipe.save_pretrained(tmp_path / "saved")
    again = BetterDepthPipeline.from_pretrained(tmp_path / "saved", f"hf:{tiny_dpt_dir}")
    np.testing.assert_array_equal(again(img, steps=2, processing_res=32, seed=1).depth_np, before)


def test_settings_come_from_the_card_and_are_checked_once(pipe):
    from betterdepth_cli.core.types import UsageError

    card = pipe.model.card["defaults"]
    run = pipe.settings()
    assert (run.steps, run.ensemble, run.processing_res) == (card["steps"], card["ensemble"], card["processing_res"])
    with pytest.raises(UsageError, match="`steps` must be >= 1"):  # the library's keywords, not refine's flags
        pipe(_images(1), steps=0)
    with pytest.raises(UsageError, match="`reduction` must be mean or median"):
        pipe.settings(reduction="max")
    with pytest.raises(UsageError, match="`processing_res` must be"):
        pipe(_images(1), processing_res=-1)


def test_reduction_with_one_member_warns_and_changes_nothing(pipe):
    import warnings

    img = _images(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asked = pipe(img, ensemble=1, reduction="median", seed=0)
        plain = pipe(img, ensemble=1, seed=0)
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert said == ["one ensemble member, nothing to combine; not applied: reduction"]
    np.testing.assert_array_equal(asked.depth_np, plain.depth_np)


def test_readme_library_example_pil_in_png16_out(tmp_path):
    """The README's library example, run as written (embedded model, builtin conditioner)."""
    from PIL import Image

    from betterdepth_cli import BetterDepthPipeline
    from betterdepth_cli.io.depth_files import decode_png16, read_png16

    Image.fromarray(_images(1, 60, 80)[0]).save(tmp_path / "photo.jpg")
    pipe = BetterDepthPipeline.from_pretrained()
    out = pipe(Image.open(tmp_path / "photo.jpg"))
    out.save_png16(tmp_path / "photo_depth.png")
    side = json.loads((tmp_path / "photo_depth.json").read_text())
    assert side["kind"] == out.kind and side["width"] == 80 and side["height"] == 60
    enc = side["encoding"]
    values = decode_png16(read_png16(tmp_path / "photo_depth.png"), enc["min"], enc["max"])
    step = (enc["max"] - enc["min"]) / 65535
    np.testing.assert_allclose(values, out.depth_np[0], atol=step)


def test_same_image_and_seed_byte_identical_through_refine_batch_and_eval(tmp_path, tiny_dpt_dir, tiny_model_dir):
    """One image: `refine` alone, `refine --batch-size 4` among other images, `eval --save-predictions`."""
    from PIL import Image

    imgs = _images(4, seed=5)
    rgb, depth = tmp_path / "data" / "rgb", tmp_path / "data" / "depth"
    rgb.mkdir(parents=True)
    depth.mkdir()
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(rgb / f"im{i}.png")
        np.save(depth / f"im{i}.npy", np.linspace(1.0, 3.0, 48 * 64, dtype=np.float32).reshape(48, 64))
    (tmp_path / "data" / "dataset.toml").write_text(
        'images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "m"\n')
    common = ["--conditioner", f"hf:{tiny_dpt_dir}", "--model", str(tiny_model_dir), "--steps", "2",
              "--processing-res", "32", "--seed", "11", "--device", "cpu"]
    runner = CliRunner()
    alone = runner.invoke(app, ["refine", str(rgb / "im2.png"), "-o", str(tmp_path / "alone"), *common])
    assert alone.exit_code == 0, alone.output
    batched = runner.invoke(app, ["refine", str(rgb), "-o", str(tmp_path / "batched"), "--batch-size", "4", *common])
    assert batched.exit_code == 0, batched.output
    evald = runner.invoke(app, ["eval", "--dataset", "folder", "--data-root", str(tmp_path / "data"),
                                "--save-predictions", str(tmp_path / "preds"), "--batch-size", "4",
                                "--output", str(tmp_path / "r.json"), *common])
    assert evald.exit_code == 0, evald.output
    one = (tmp_path / "alone" / "im2.png").read_bytes()
    assert (tmp_path / "batched" / "im2.png").read_bytes() == one
    assert (tmp_path / "preds" / "refined" / "im2.png").read_bytes() == one
    import json

    cli, evald_side = (json.loads(p.read_text()) for p in (tmp_path / "alone" / "im2.json",
                                                              tmp_path / "preds" / "refined" / "im2.json"))
    for key in ("model", "model_card", "conditioner", "steps", "seed", "cascade", "tiles"):  # eval's says what refine's says
        assert evald_side[key] == cli[key], key
    # and the library on the same file, opened with PIL
    from betterdepth_cli import BetterDepthPipeline

    pipe = BetterDepthPipeline.from_pretrained(tiny_model_dir, f"hf:{tiny_dpt_dir}")
    pipe(Image.open(rgb / "im2.png"), steps=2, processing_res=32, seed=11).save_png16(tmp_path / "lib.png")
    assert (tmp_path / "lib.png").read_bytes() == one
    # and the maps differ between images: the comparison is not trivially true
    assert (tmp_path / "batched" / "im1.png").read_bytes() != one


@pytest.mark.parametrize("per_frame", [False, True])
def test_a_shot_through_the_library_equals_refine_on_the_sequence(tmp_path, tiny_model_dir, per_frame):
    """`pipe.shot(frames, keys=...)` co-aligns a jittering conditioner's maps as `refine` does a
    sequence (and `per_frame=True` as `--per-frame`): the same maps to the bit."""
    from PIL import Image

    from betterdepth_cli import BetterDepthPipeline

    (tmp_path / "shot").mkdir()
    (tmp_path / "maps").mkdir()
    rng = np.random.default_rng(0)
    img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    base = rng.uniform(0.5, 1.5, (48, 64)).astype(np.float32)
    names = [f"frame.{1001 + i}" for i in range(3)]
    for name, (a, c) in zip(names, [(1.0, 0.0), (1.3, 0.2), (0.8, -0.1)]):
        Image.fromarray(img).save(tmp_path / "shot" / f"{name}.png")
        np.save(tmp_path / "maps" / f"{name}.npy", (a * base + c).astype(np.float32))
    cond = f"file:{tmp_path / 'maps'}?kind=disparity"
    flags = ["--per-frame"] if per_frame else []
    res = CliRunner().invoke(app, ["refine", str(tmp_path / "shot" / "frame.%04d.png"), "-o", str(tmp_path / "out"),
                                   "--conditioner", cond, "--model", str(tiny_model_dir), "-f", "npy", "-q", *flags])
    assert res.exit_code == 0, res.output
    pipe = BetterDepthPipeline.from_pretrained(tiny_model_dir, cond)
    frames = (Image.open(tmp_path / "shot" / f"{n}.png") for n in names)  # streamed
    outs = list(pipe.shot(frames, keys=names, per_frame=per_frame))
    assert len(outs) == 3
    for name, out in zip(names, outs):
        np.testing.assert_array_equal(out.depth_np[0], np.load(tmp_path / "out" / f"{name}.npy"))
        assert out.settings["shot_aligned"] is (not per_frame)
    spread = float(np.abs(outs[1].depth_np[0] - outs[0].depth_np[0]).max())
    assert (spread < 1e-3 * float(np.ptp(outs[0].depth_np[0]))) is (not per_frame)  # the jump is gone, or kept
