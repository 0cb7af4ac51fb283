"""``betterdepth refine`` end to end over tiny real models (CliRunner and a few subprocess runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from betterdepth_cli.io.depth_files import load_depth_output, read_exr
from refine_cli_helpers import pngs as _pngs, refine, write_mp4 as _write_mp4, write_png as _write_png



# --------------------------------------------------------------------------- values


def test_png16_sidecar_recovers_refine_batch_values(tmp_path, models, tiny_dpt_dir, tiny_model_dir):
    import torch

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.refiner import load_model
    from betterdepth_cli.io.images import read_image

    img = _write_png(tmp_path / "in" / "img.png", 48, 64)
    res = refine([img, "-o", tmp_path / "out", *models, "--steps", "2", "--seed", "5", "-q"])
    assert res.exit_code == 0, res.stderr

    values, meta = load_depth_output(tmp_path / "out" / "img.png")
    assert values.shape == (48, 64)  # output size equals input size
    assert meta["kind"] == "disparity" and meta["metric"] is False and meta["units"] == "relative"
    assert (meta["steps"], meta["ensemble"], meta["seed"], meta["processing_res"]) == (2, 1, 5, 64)
    assert meta["conditioner"] == f"hf:{tiny_dpt_dir}" and meta["frame"] is None
    assert meta["source"].endswith("img.png") and meta["width"] == 64 and meta["height"] == 48

    image = torch.from_numpy(read_image(img)).permute(2, 0, 1)[None]
    direct = refine_batch(
        image, conditioner=get_conditioner(f"hf:{tiny_dpt_dir}"), model=load_model(tiny_model_dir),
        steps=2, ensemble=1, processing_res=64, generator=torch.Generator().manual_seed(5),
    ).refined[0, 0].numpy()  # fmt: skip
    step = (direct.max() - direct.min()) / 65535
    assert meta["encoding"]["min"] == pytest.approx(direct.min(), rel=1e-5)
    assert meta["encoding"]["max"] == pytest.approx(direct.max(), rel=1e-5)
    assert np.abs(values - direct).max() <= step * 1.01


def test_no_refine_writes_the_conditioner_output(tmp_path, tiny_dpt_dir):
    import torch

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.io.images import read_image

    img = _write_png(tmp_path / "a.png", 40, 56)
    res = refine([img, "-o", tmp_path / "out", "--conditioner", f"hf:{tiny_dpt_dir}", "--no-refine", "--format", "npy", "-q"])
    assert res.exit_code == 0, res.stderr
    got = np.load(tmp_path / "out" / "a.npy")
    pred = get_conditioner(f"hf:{tiny_dpt_dir}").predict(torch.from_numpy(read_image(img)).permute(2, 0, 1)[None])
    np.testing.assert_allclose(got, pred.values[0, 0].numpy(), rtol=1e-5, atol=1e-12)
    meta = json.loads((tmp_path / "out" / "a.json").read_text())
    assert meta["refined"] is False and meta["model"] is None
    assert "cascade" not in meta and "tiles" not in meta  # no refiner ran: nothing to say how


def test_model_guided_writes_the_guided_filter_of_the_conditioner(tmp_path, tiny_dpt_dir):
    import torch

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.guided import guided_refine
    from betterdepth_cli.io.images import read_image

    img = _write_png(tmp_path / "a.png", 40, 56)
    res = refine([img, "-o", tmp_path / "out", "--conditioner", f"hf:{tiny_dpt_dir}", "--model", "guided",
                  "--format", "npy", "-q"])
    assert res.exit_code == 0, res.stderr
    image = torch.from_numpy(read_image(img)).permute(2, 0, 1)[None]
    pred = get_conditioner(f"hf:{tiny_dpt_dir}").predict(image)
    want = guided_refine(pred.values, image)[0, 0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out" / "a.npy"), want, rtol=1e-5, atol=1e-7)
    meta = json.loads((tmp_path / "out" / "a.json").read_text())
    assert meta["model"] == "guided"


def test_model_guided_says_which_options_it_does_not_use_and_records_what_ran(tmp_path, tiny_dpt_dir):
    """The guided filter has no steps, members or tiles: the run says so once, writes the same map as a
    plain run and records its own settings; an uncertainty map is refused (there is no spread)."""
    img = _write_png(tmp_path / "a.png", 40, 56)
    cond = ["--conditioner", f"hf:{tiny_dpt_dir}", "--model", "guided", "--format", "npy"]
    plain = refine([img, "-o", tmp_path / "plain", *cond, "-q"])
    asked = refine([img, "-o", tmp_path / "asked", *cond, "--steps", "4", "--ensemble", "3", "--tile", "64"])
    assert plain.exit_code == 0 and asked.exit_code == 0, asked.stderr
    assert ("note: the guided filter (--model guided) runs one classical filter at native resolution, without "
            "sampling or tiles; not applied: --steps, --ensemble, --tile") in asked.stderr
    assert "zero-noise" not in asked.stderr  # not the diffusion models' note about mirrored members
    np.testing.assert_array_equal(np.load(tmp_path / "asked" / "a.npy"), np.load(tmp_path / "plain" / "a.npy"))
    meta = json.loads((tmp_path / "asked" / "a.json").read_text())
    assert (meta["steps"], meta["ensemble"]) == (1, 1) and "tiles" not in meta
    res = refine([img, "-o", tmp_path / "u", *cond[:4], "--format", "png16,uncertainty", "--ensemble", "2"])
    assert res.exit_code == 64 and "the guided filter (--model guided) is one deterministic filter" in res.stderr
    assert not (tmp_path / "u").exists() or not any((tmp_path / "u").glob("a*"))


def test_options_a_run_does_not_use_are_named_once(tmp_path, tiny_dpt_dir):
    """--no-refine has no sampling; stills have no frames to pick and no preview video: one note each,
    and the same map as without them."""
    img = _write_png(tmp_path / "a.png", 40, 56)
    base = [img, "--conditioner", f"hf:{tiny_dpt_dir}", "--no-refine", "--format", "npy"]
    plain = refine([*base, "-o", tmp_path / "plain", "-q"])
    asked = refine([*base, "-o", tmp_path / "asked", "--steps", "3", "--processing-res", "32", "--frames", "1-3",
                    "--preview-video"])
    assert plain.exit_code == 0 and asked.exit_code == 0, asked.stderr
    notes = [line for line in asked.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: --no-refine writes the conditioner's map alone; not applied: --steps, --processing-res",
                     "note: no video or image sequence among the inputs; not applied: --frames, --preview-video"]
    np.testing.assert_array_equal(np.load(tmp_path / "asked" / "a.npy"), np.load(tmp_path / "plain" / "a.npy"))
    assert not list((tmp_path / "asked").glob("*.mp4"))


def test_reduction_with_one_member_is_named_and_changes_nothing(tmp_path, models):
    """One ensemble member has nothing to combine: --reduction median gets one note, the same map."""
    img = _write_png(tmp_path / "a.png", 32, 48)
    base = [img, *models, "--ensemble", "1", "--format", "npy"]
    plain = refine([*base, "-o", tmp_path / "plain", "-q"])
    asked = refine([*base, "-o", tmp_path / "asked", "--reduction", "median"])
    assert plain.exit_code == 0 and asked.exit_code == 0, asked.stderr
    assert [line for line in asked.stderr.splitlines() if line.startswith("note:")] == [
        "note: one ensemble member, nothing to combine; not applied: --reduction"]
    np.testing.assert_array_equal(np.load(tmp_path / "asked" / "a.npy"), np.load(tmp_path / "plain" / "a.npy"))
    two = refine([img, *models, "--ensemble", "2", "--format", "npy", "-o", tmp_path / "two", "--reduction", "median"])
    assert two.exit_code == 0 and "nothing to combine" not in two.stderr


def test_every_output_format(tmp_path, models):
    import cv2

    img = _write_png(tmp_path / "p.png", 32, 48)
    res = refine([img, "-o", tmp_path / "o", *models, "--ensemble", "2", "--format", "png16,exr,npy,preview,uncertainty", "-q"])
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "o"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["betterdepth-run.toml", "p.png", "p.json", "p.exr", "p.npy", "p_preview.jpg", "p_uncertainty.exr"]
    )
    npy = np.load(out / "p.npy")
    assert npy.dtype == np.float32 and npy.shape == (32, 48)
    z, attrs = read_exr(out / "p.exr")
    np.testing.assert_array_equal(z, npy)
    assert attrs["kind"] == "disparity" and attrs["metric"] is False and attrs["units"] == "relative"
    png, meta = load_depth_output(out / "p.png")
    assert np.abs(png - npy).max() <= (npy.max() - npy.min()) / 65535 * 1.01
    unc, uattrs = read_exr(out / "p_uncertainty.exr")
    assert unc.shape == (32, 48) and np.all(unc >= 0) and uattrs["content"] == "uncertainty"
    preview = cv2.imread(str(out / "p_preview.jpg"))
    assert preview.shape == (32, 48, 3)
    assert meta["ensemble"] == 2
    assert (meta["cascade"], meta["tiles"]) == (False, None)  # one pass, whole


def test_uncertainty_without_ensemble_is_a_usage_error(tmp_path, models):
    img = _write_png(tmp_path / "p.png")
    res = refine([img, "-o", tmp_path / "o", *models, "--format", "uncertainty"])
    assert res.exit_code == 64
    assert "--ensemble 2" in res.stderr and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- input kinds


def test_folder_is_flat_without_recursive_and_mirrored_with_it(tmp_path, tree, models):
    res = refine([tree, "-o", tmp_path / "flat", *models, "-q"])
    assert res.exit_code == 0, res.stderr
    assert _pngs(tmp_path / "flat") == ["a.png", "b.png"]
    res = refine([tree, "-o", tmp_path / "deep", *models, "--recursive", "-q"])
    assert res.exit_code == 0, res.stderr
    assert _pngs(tmp_path / "deep") == ["a.png", "b.png", "sub/c.png"]
    assert load_depth_output(tmp_path / "deep" / "sub" / "c.png")[0].shape == (32, 32)


def test_ext_filter(tmp_path, tree, models):
    res = refine([tree, "-o", tmp_path / "o", *models, "--ext", "jpg", "-q"])
    assert res.exit_code == 0, res.stderr
    assert _pngs(tmp_path / "o") == ["b.png"]


def test_recursive_glob_does_not_follow_directory_links(tmp_path, tree, models):
    import os

    os.symlink(tree, tree / "loop")  # photos/loop -> photos
    os.symlink(tree, tree / "sub" / "back")  # photos/sub/back -> photos: two loops
    t0 = time.perf_counter()
    res = refine([str(tree / "**" / "*.png"), "-o", tmp_path / "g", *models, "-q"])
    assert res.exit_code == 0, res.stderr
    assert time.perf_counter() - t0 < 60
    assert _pngs(tmp_path / "g") == ["a.png", "sub/c.png"]  # no loop/..., no nesting
    res = refine([tree, "-o", tmp_path / "r", *models, "--recursive", "-q"])
    assert res.exit_code == 0 and _pngs(tmp_path / "r") == ["a.png", "b.png", "sub/c.png"]


def test_glob_list_and_stdin(tmp_path, tree, models, monkeypatch):
    res = refine([str(tree / "*.png"), "-o", tmp_path / "g", *models, "-q"])
    assert res.exit_code == 0, res.stderr
    assert _pngs(tmp_path / "g") == ["a.png"]

    listing = tmp_path / "list.txt"
    listing.write_text("# two inputs\nphotos/b.jpg\n\nphotos/sub/c.png\n")
    res = refine([f"@{listing}", "-o", tmp_path / "l", *models, "-q"])
    assert res.exit_code == 0, res.stderr
    assert _pngs(tmp_path / "l") == ["photos/b.png", "photos/sub/c.png"]

    monkeypatch.chdir(tmp_path)
    res = refine(["-", "-o", tmp_path / "s", *models, "-q"], input="photos/a.png\nphotos/sub/c.png\n")
    assert res.exit_code == 0, res.stderr
    assert _pngs(tmp_path / "s") == ["photos/a.png", "photos/sub/c.png"]


def test_video_frames_share_one_range_and_preview_video(tmp_path, models):
    import imageio.v2 as iio

    clip = _write_mp4(tmp_path / "clip.mp4", n=3)
    res = refine([clip, "-o", tmp_path / "o", *models, "--format", "png16,npy,preview", "--preview-video", "-q"])
    assert res.exit_code == 0, res.stderr
    out = tmp_path / "o" / "clip"
    assert _pngs(out) == ["clip.0000.png", "clip.0001.png", "clip.0002.png"]
    assert sorted(p.name for p in out.glob("*_preview*")) == [
        "clip_preview.0000.jpg", "clip_preview.0001.jpg", "clip_preview.0002.jpg", "clip_preview.mp4",
    ]  # fmt: skip
    metas = [json.loads((out / f"clip.{i:04d}.json").read_text()) for i in range(3)]
    assert [m["frame"] for m in metas] == [0, 1, 2]
    assert len({(m["encoding"]["min"], m["encoding"]["max"]) for m in metas}) == 1  # one range for the shot
    floats = [np.load(out / f"clip.{i:04d}.npy") for i in range(3)]
    assert metas[0]["encoding"]["min"] == pytest.approx(min(f.min() for f in floats), rel=1e-6)
    assert metas[0]["encoding"]["max"] == pytest.approx(max(f.max() for f in floats), rel=1e-6)
    for f, i in zip(floats, range(3)):
        back = load_depth_output(out / f"clip.{i:04d}.png")[0]
        assert back.shape == (48, 64)
        assert np.abs(back - f).max() <= (metas[0]["encoding"]["max"] - metas[0]["encoding"]["min"]) / 65535 * 1.01
    reader = iio.get_reader(str(out / "clip_preview.mp4"))
    assert reader.count_frames() == 3
    reader.close()
    # two --frames chunks of the clip: each keeps its own preview video beside the whole clip's
    for frames in ("0-1", "1-2"):
        res = refine([clip, "-o", tmp_path / "o", *models, "--format", "png16", "--preview-video", "-q",
                      "--frames", frames, "--overwrite"])
        assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in out.glob("*_preview*.mp4")) == [
        "clip_preview.0-1.mp4", "clip_preview.1-2.mp4", "clip_preview.mp4"]
    reader = iio.get_reader(str(out / "clip_preview.0-1.mp4"))
    assert reader.count_frames() == 2
    reader.close()


def test_sequence_with_frames_keeps_numbers_and_one_range(tmp_path, models):
    for f in range(1001, 1006):
        _write_png(tmp_path / "seq" / f"shot.{f:04d}.png", 32, 40, seed=f)
    res = refine([tmp_path / "seq" / "shot.%04d.png", "--frames", "1002-1004", "-o", tmp_path / "o", *models,
                  "--batch-size", "2", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert _pngs(tmp_path / "o") == ["shot.1002.png", "shot.1003.png", "shot.1004.png"]
    metas = [json.loads((tmp_path / "o" / f"shot.{f}.json").read_text()) for f in (1002, 1003, 1004)]
    assert [m["frame"] for m in metas] == [1002, 1003, 1004]
    assert all(m["range"] == "shot" for m in metas)
    assert len({tuple(m["shot_range"]) for m in metas}) == 1  # export-ply maps every frame by it
    assert metas[0]["source"] == "../seq/shot.1002.png"  # relative to the sidecar's folder
    assert len({(m["encoding"]["min"], m["encoding"]["max"]) for m in metas}) == 1
    # single images get their own range: the shot range covers every frame's own range
    lo, hi = metas[0]["encoding"]["min"], metas[0]["encoding"]["max"]
    vals = [load_depth_output(tmp_path / "o" / f"shot.{f}.png")[0] for f in (1002, 1003, 1004)]
    assert min(v.min() for v in vals) == pytest.approx(lo, abs=(hi - lo) / 65535)
    assert max(v.max() for v in vals) == pytest.approx(hi, abs=(hi - lo) / 65535)
    assert any(v.max() < hi - (hi - lo) * 1e-3 for v in vals)  # the frames do not each span the range
    # EXR or NPY alone: every frame's sidecar records the same shot range (export-ply maps frames by it)
    for fmt in ("exr", "npy", "exr,preview"):
        res = refine([tmp_path / "seq" / "shot.%04d.png", "--frames", "1002-1004", "-o", tmp_path / fmt, *models,
                      "--format", fmt, "--batch-size", "2", "-q"])
        assert res.exit_code == 0, res.stderr
        floats = [json.loads((tmp_path / fmt / f"shot.{f}.json").read_text()) for f in (1002, 1003, 1004)]
        assert [m["shot_range"] for m in floats] == [metas[0]["shot_range"]] * 3
        assert "range" not in floats[0] and floats[0]["frame"] == 1002


@pytest.mark.parametrize("fmt", ["exr", "npy"])
def test_an_interrupted_shot_resumes_where_it_stopped(tmp_path, models, fmt):
    """A shot written frame by frame (EXR, NPY) and stopped after three of six frames: the rerun refines
    the other three only (the done ones lead in, as a --frames chunk's earlier frames do), and every file
    equals an uninterrupted run's, the shot's range in the done frames' sidecars included."""
    for f in range(1001, 1007):
        _write_png(tmp_path / "seq" / f"shot.{f:04d}.png", 32, 40, seed=f)
    args = [tmp_path / "seq" / "shot.%04d.png", *models, "--format", fmt, "--batch-size", "2"]
    assert refine([*args, "-o", tmp_path / "whole", "-q"]).exit_code == 0
    assert refine([*args, "-o", tmp_path / "cut", "-q"]).exit_code == 0
    for f in range(1001, 1007):  # as a run stopped after frame 1003 leaves it: no shot range yet, no later frames
        side = tmp_path / "cut" / f"shot.{f}.json"
        if f <= 1003:
            side.write_text(json.dumps({k: v for k, v in json.loads(side.read_text()).items() if k != "shot_range"}))
        else:
            side.unlink()
            (tmp_path / "cut" / f"shot.{f}.{fmt}").unlink()
    res = refine([*args, "-o", tmp_path / "cut"])
    assert res.exit_code == 0 and "3 to process, 3 existing to skip" in res.stderr, res.stderr
    assert "co-aligning from the shot's first frame" in res.stderr
    for f in range(1001, 1007):
        assert (tmp_path / "cut" / f"shot.{f}.{fmt}").read_bytes() == (tmp_path / "whole" / f"shot.{f}.{fmt}").read_bytes()
        cut, whole = (json.loads((tmp_path / d / f"shot.{f}.json").read_text()) for d in ("cut", "whole"))
        assert cut == whole and "shot_range" in cut


def test_a_preview_video_asked_for_later_is_made_from_the_saved_frames(tmp_path, models):
    """--preview-video added to a refined shot (or its mp4 deleted): the mp4 is made from the frames'
    files, nothing refined again; a file of the user's where it would go is never overwritten."""
    import imageio.v2 as iio

    for f in range(1001, 1004):
        _write_png(tmp_path / "seq" / f"shot.{f:04d}.png", 32, 40, seed=f)
    args = [tmp_path / "seq" / "shot.%04d.png", *models, "-o", tmp_path / "o"]
    assert refine(args).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").glob("shot.*.png")}
    res = refine([*args, "--preview-video"])
    assert res.exit_code == 0 and "1 preview mp4(s) made from the shots' saved frames" in res.stderr, res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").glob("shot.*.png")} == before  # not redone
    reader = iio.get_reader(str(tmp_path / "o" / "shot_preview.mp4"))
    assert reader.count_frames() == 3
    reader.close()
    assert "nothing to do" in refine([*args, "--preview-video"]).stderr
    # a user's own file where the preview goes (no sidecar of the shot names it): refused, kept
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "shot_preview.mp4").write_bytes(b"mine")
    res = refine([*args[:-1], tmp_path / "mine", "--preview-video"])
    assert res.exit_code == 65 and "shot_preview.mp4: exists and was not written by betterdepth" in res.stderr
    assert (tmp_path / "mine" / "shot_preview.mp4").read_bytes() == b"mine"


def test_missing_frames_are_not_a_success_unless_allowed(tmp_path, models):
    for f in (1, 2, 3, 5, 6):  # frame 4 is missing
        _write_png(tmp_path / "seq" / f"shot.{f:04d}.png", 32, 40, seed=f)
    seq = tmp_path / "seq" / "shot.%04d.png"
    res = refine([seq, "--frames", "1-6", "-o", tmp_path / "a", *models])
    assert res.exit_code == 65 and "frames 4 not found; nothing was refined" in res.stderr
    assert f"{tmp_path / 'seq' / 'shot.%04d.png'}: frames 4" in res.stderr  # the input, in its folder
    assert _pngs(tmp_path / "a") == []
    res = refine([seq, "--frames", "1-6", "-o", tmp_path / "b", *models, "--continue-on-error"])
    assert res.exit_code == 3 and len(_pngs(tmp_path / "b")) == 5
    res = refine([seq, "--frames", "1-6", "-o", tmp_path / "c", *models, "--allow-missing"])
    assert res.exit_code == 0 and "frames 4 not found, left out (--allow-missing)" in res.stderr


# --------------------------------------------------------------------------- resume, dry run, shards, config


def test_resume_skips_existing_and_overwrite_redoes(tmp_path, tree, models):
    out = tmp_path / "o"
    assert refine([tree, "-o", out, *models, "-q"]).exit_code == 0
    (out / "b.png").unlink()
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    res = refine([tree, "-o", out, *models])
    assert res.exit_code == 0, res.stderr
    assert "1 processed, 1 skipped, 0 failed" in res.stderr
    assert (out / "a.png").stat().st_mtime_ns == stamp["a.png"] and (out / "b.png").is_file()
    res = refine([tree, "-o", out, *models, "--overwrite"])
    assert "2 processed, 0 skipped" in res.stderr


def test_changed_settings_are_not_skipped_silently(tmp_path, models):
    img = _write_png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert refine([img, "-o", out, *models, "--steps", "2", "-q"]).exit_code == 0
    assert refine([img, "-o", out, *models, "--steps", "2", "-q"]).exit_code == 0  # same settings: skipped
    res = refine([img, "-o", out, *models, "--steps", "1"])
    assert res.exit_code == 65 and "outputs exist from other settings (steps 2 -> 1); --overwrite redoes them" in res.stderr
    assert json.loads((out / "a.json").read_text())["steps"] == 2  # untouched
    assert refine([img, "-o", out, *models, "--steps", "1", "--overwrite", "-q"]).exit_code == 0
    assert json.loads((out / "a.json").read_text())["steps"] == 1
    # tiling changes the pixels too: a --tile the outputs were not made with is not skipped silently
    native = [*models[:4], "--processing-res", "0"]  # tiles refine at the image's own scale
    res = refine([img, "-o", out, *native, "--steps", "1", "--tile", "64:8"])
    assert res.exit_code == 65 and "tile None -> 64, tile_overlap None -> 8)" in res.stderr
    assert refine([img, "-o", out, *native, "--steps", "1", "--tile", "64:8", "--overwrite", "-q"]).exit_code == 0
    side = json.loads((out / "a.json").read_text())
    assert (side["tile"], side["tile_overlap"]) == (64, 8)


def test_a_user_file_in_the_output_folder_is_never_overwritten(tmp_path, models):
    src = tmp_path / "in"
    _write_png(src / "A.jpg")
    _write_png(src / "A_preview.jpg", seed=3)  # the user's photo
    before = (src / "A_preview.jpg").read_bytes()
    res = refine([src, "-o", src, *models, "-f", "png16,preview"])
    assert res.exit_code == 64 and "would overwrite the input" in res.stderr
    assert (src / "A_preview.jpg").read_bytes() == before
    (src / "A_preview.jpg").unlink()
    (src / "A.json").write_text('{"mine": true}')
    res = refine([src, "-o", src, *models])
    assert res.exit_code == 65 and "A.json: exists and was not written by betterdepth" in res.stderr
    assert json.loads((src / "A.json").read_text()) == {"mine": True}


def test_dry_run_writes_nothing(tmp_path, tree, models):
    res = refine([tree, "-o", tmp_path / "o", *models, "--recursive", "--dry-run", "--format", "png16,exr"])
    assert res.exit_code == 0, res.stderr
    assert not (tmp_path / "o").exists()
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 3 and all(" -> " in ln for ln in lines)
    assert str(tmp_path / "o" / "sub" / "c.png") in res.stdout and str(tmp_path / "o" / "sub" / "c.exr") in res.stdout
    assert "nothing written" in res.stderr


def test_shards_cover_every_input_once_with_the_same_results(tmp_path, models):
    src = tmp_path / "in"
    for i in range(3):
        _write_png(src / f"i{i}.png", 24, 32, seed=i)
    for f in (1, 2):
        _write_png(src / f"s.{f:04d}.png", 24, 32, seed=10 + f)  # one shot: stays on one shard
    full = tmp_path / "full"
    assert refine([src, "-o", full, *models, "--format", "npy", "-q"]).exit_code == 0
    seen: list[str] = []
    for i in (1, 2, 3):
        out = tmp_path / f"shard{i}"
        res = refine([src, "-o", out, *models, "--format", "npy", "--shard", f"{i}/3", "-q"])
        assert res.exit_code == 0, res.stderr
        names = sorted(p.name for p in out.glob("*.npy"))
        assert (out / f"betterdepth-run.shard-{i}-of-3.toml").is_file()
        for name in names:
            np.testing.assert_array_equal(np.load(out / name), np.load(full / name))
        seen += names
        shot = [n for n in names if n.startswith("s.")]
        assert shot in ([], ["s.0001.npy", "s.0002.npy"])
    assert sorted(seen) == sorted(p.name for p in full.glob("*.npy")) and len(seen) == 5


def test_config_file_flags_override_and_resolved_config_reruns(tmp_path, tree, tiny_dpt_dir, tiny_model_dir):
    cfg = tmp_path / "job.toml"
    cfg.write_text(
        f'inputs = ["photos"]\noutput = "out"\n[refine]\nconditioner = "hf:{tiny_dpt_dir}"\n'
        f'model = "{tiny_model_dir}"\nprocessing-res = 64\nsteps = 3\nformat = ["npy"]\nseed = 7\n'
    )
    res = refine(["--config", cfg, "--steps", "1", "-q"])
    assert res.exit_code == 0, res.stderr
    meta = json.loads((tmp_path / "out" / "a.json").read_text())
    assert (meta["steps"], meta["seed"], meta["processing_res"]) == (1, 7, 64)  # flag beats config
    run_cfg = tmp_path / "out" / "betterdepth-run.toml"
    import tomllib

    resolved = tomllib.loads(run_cfg.read_text())
    assert resolved["steps"] == 1 and resolved["format"] == ["npy"] and resolved["seed"] == 7
    assert resolved["inputs"] == [str(tmp_path / "photos")]
    res = refine(["--config", run_cfg])  # the written config reruns the same job: everything exists
    assert res.exit_code == 0 and "0 processed, 2 skipped" in res.stderr


def test_config_errors_are_usage_errors(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("stepz = 2\n")
    res = refine(["x.png", "-o", tmp_path / "o", "--config", cfg])
    assert res.exit_code == 64 and "unknown key 'stepz'" in res.stderr
    cfg.write_text('steps = "two"\n')
    res = refine(["x.png", "-o", tmp_path / "o", "--config", cfg])
    assert res.exit_code == 64 and "`steps` must be int" in res.stderr


# --------------------------------------------------------------------------- large and real inputs, help


@pytest.mark.slow
def test_huge_image_is_processed_at_processing_res(tmp_path, models):
    import cv2

    img = np.zeros((8000, 12000, 3), np.uint8)
    img[:, :6000] = 200
    cv2.imwrite(str(tmp_path / "plate.png"), img)
    res = refine([tmp_path / "plate.png", "-o", tmp_path / "o", *models, "--format", "png16", "-q"])
    assert res.exit_code == 0, res.stderr
    assert json.loads((tmp_path / "o" / "plate.json").read_text())["width"] == 12000


def _real_photos() -> Path:
    from conftest import real_data_dir

    return real_data_dir() / "photos"


@pytest.mark.real_data
@pytest.mark.skipif(not _real_photos().is_dir(), reason="../shared/data/real/photos is absent")
def test_real_photos(tmp_path, models):
    from betterdepth_cli.core.conditioners import builtin_conditioner_path
    from betterdepth_cli.core.refiner import default_model_path
    from betterdepth_cli.io.images import read_image

    photos = _real_photos()
    shipped = (default_model_path() / "betterdepth.json").is_file() and (builtin_conditioner_path() / "config.json").is_file()
    args = ["--processing-res", "64"] if shipped else models
    res = refine([photos, "-o", tmp_path / "o", *args, "--format", "png16,preview", "-q"])
    assert res.exit_code == 0, res.stderr
    inputs = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    assert len(inputs) >= 1
    for p in inputs:
        values, meta = load_depth_output(tmp_path / "o" / f"{p.stem}.png")
        assert values.shape == read_image(p).shape[:2]
        assert np.isfinite(values).all() and values.max() > values.min()
        assert (tmp_path / "o" / f"{p.stem}_preview.jpg").is_file()


def test_progress_bar_total_follows_the_plan_and_plain_lines_show_an_eta(monkeypatch, capsys):
    from types import SimpleNamespace

    from betterdepth_cli.cli.refine import _Reporter

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = _Reporter(quiet=False, total=0)
    bar.total = 9  # set after the plan, as the command does
    assert bar.progress.tasks[0].total == 9
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    plain = _Reporter(quiet=False, total=4)
    plain.t0 = time.perf_counter() - 2.0  # 2 s for the first image: 3 left at 0.5 images/s = 6 s
    plain.item("done", SimpleNamespace(label="a.png"), None)
    line = capsys.readouterr().err
    assert "refine: 1/4 (25%)" in line and "eta 0:00:0" in line and line.rstrip().endswith("a.png")


def test_deterministic_model_runs_at_most_two_members_and_says_so_and_builtin_notice(tmp_path):
    img = _write_png(tmp_path / "a.png")
    res = refine([img, "-o", tmp_path / "o", "--ensemble", "3", "--seed", "4"])  # the embedded model (zero_noise)
    assert res.exit_code == 0, res.stderr
    assert "--ensemble 3 would repeat its 2 members (the photo and its mirror image); running 2" in res.stderr
    assert "the builtin conditioner is a small offline model" in res.stderr
    assert res.stderr.count("the builtin conditioner is a small offline model") == 1
    assert json.loads((tmp_path / "o" / "a.json").read_text())["ensemble"] == 2
    res = refine([img, "-o", tmp_path / "u", "--format", "uncertainty", "--ensemble", "1"])
    assert res.exit_code == 64 and "this model is deterministic" in res.stderr
    res = refine([img, "-o", tmp_path / "v", "--format", "uncertainty", "--ensemble", "2"])  # the two members' spread
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "v" / "a_uncertainty.exr").is_file()
    assert "--seed" not in res.stderr  # not given: nothing to say
    seeded = refine([img, "-o", tmp_path / "s", "--format", "npy", "--seed", "7"])
    plain = refine([img, "-o", tmp_path / "p", "--format", "npy"])
    assert seeded.exit_code == 0 and plain.exit_code == 0, seeded.stderr
    assert "note: this model is deterministic (zero-noise start): --seed has no effect" in seeded.stderr
    assert "--seed" not in plain.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "s" / "a.npy"), np.load(tmp_path / "p" / "a.npy"))


@pytest.mark.parametrize("command", ["", "refine", "train", "synth", "eval", "export-ply", "info"])
def test_help_is_clean_at_80_columns(command):
    """No Typer type names (<bool>, <list[str]>), no {INPUT}, no text cut with an ellipsis, no box lines."""
    import re

    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    args = [sys.executable, "-m", "betterdepth_cli", *([command] if command else []), "--help"]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert not re.search(r"<(str|int|bool|path|float|list\[[a-z]+\])>", text), text
    assert "{" not in text.split("\n", 1)[0] and "…" not in text and "╭" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    if not command:
        assert "143 terminated" in text


def test_misspelt_conditioner_fails_first_with_a_suggestion_and_writes_nothing(tmp_path):
    img = _write_png(tmp_path / "a.png")
    res = refine([img, "-o", tmp_path / "o", "--conditioner", "depth-anything-v2-larg"])
    assert res.exit_code == 64
    assert "unknown conditioner 'depth-anything-v2-larg'; did you mean 'depth-anything-v2-large'?" in res.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_rotated_video_is_refined_upright_without_a_library_line(tmp_path):
    """A phone video (a display-rotation tag): its frames upright, and stderr quiet under -q (imageio's
    "frame size for reading is different" line is the rotation we want, not the user's concern)."""
    import subprocess

    import imageio_ffmpeg

    _write_mp4(tmp_path / "v.mp4", n=2, h=48, w=64)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    made = subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-display_rotation", "90", "-i",
                           str(tmp_path / "v.mp4"), "-c", "copy", str(tmp_path / "rot.mp4")], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"this ffmpeg cannot tag a rotation: {made.stderr.decode()[:200]}")
    res = subprocess.run([sys.executable, "-m", "betterdepth_cli", "refine", str(tmp_path / "rot.mp4"), "-o",
                          str(tmp_path / "o"), "--model", "guided", "--conditioner", "builtin", "-f", "npy", "-q"],
                         capture_output=True, text=True)  # a process of its own: pytest's log capture off
    assert res.returncode == 0, res.stderr
    assert "frame size for reading" not in res.stderr and res.stderr.strip() == "", res.stderr
    assert np.load(tmp_path / "o" / "rot" / "rot.0000.npy").shape == (64, 48)  # upright: 48 wide, 64 high
