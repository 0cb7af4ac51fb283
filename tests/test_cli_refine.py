"""``betterdepth refine`` end to end over tiny real models (CliRunner and a few subprocess runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from betterdepth_cli.cli.app import app
from betterdepth_cli.io.depth_files import load_depth_output, read_exr

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- helpers


def _write_png(path: Path, h: int = 48, w: int = 64, seed: int = 0) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, rng.random((h, w)) * 255], -1).astype(np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _write_mp4(path: Path, n: int = 3, h: int = 48, w: int = 64) -> Path:
    import imageio.v2 as iio

    writer = iio.get_writer(str(path), fps=10, codec="libx264", macro_block_size=1, ffmpeg_log_level="error")
    for i in range(n):
        rng = np.random.default_rng(i)
        frame = np.full((h, w, 3), 40 * i, np.uint8)
        frame[:, : w // 2] = (rng.random((h, w // 2, 3)) * 255).astype(np.uint8)
        writer.append_data(frame)
    writer.close()
    return path


@pytest.fixture()
def models(tiny_dpt_dir, tiny_model_dir) -> list[str]:
    return ["--conditioner", f"hf:{tiny_dpt_dir}", "--model", str(tiny_model_dir), "--processing-res", "64"]


def refine(args, input: str | None = None):
    result = CliRunner().invoke(app, ["refine", *[str(a) for a in args]], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _pngs(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))


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


def test_uncertainty_without_ensemble_is_a_usage_error(tmp_path, models):
    img = _write_png(tmp_path / "p.png")
    res = refine([img, "-o", tmp_path / "o", *models, "--format", "uncertainty"])
    assert res.exit_code == 64
    assert "--ensemble 2" in res.stderr and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- input kinds


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    _write_png(root / "a.png", seed=1)
    _write_png(root / "b.jpg", seed=2)
    _write_png(root / "sub" / "c.png", 32, 32, seed=3)
    return root


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


def test_missing_frames_are_not_a_success_unless_allowed(tmp_path, models):
    for f in (1, 2, 3, 5, 6):  # frame 4 is missing
        _write_png(tmp_path / "seq" / f"shot.{f:04d}.png", 32, 40, seed=f)
    seq = tmp_path / "seq" / "shot.%04d.png"
    res = refine([seq, "--frames", "1-6", "-o", tmp_path / "a", *models])
    assert res.exit_code == 65 and "frames 4 not found; nothing was refined" in res.stderr
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


# --------------------------------------------------------------------------- exit codes and bad inputs


def _one_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("betterdepth: error:")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("zero.png", b"", "empty file (0 bytes)"),
        ("text.jpg", b"hello, not a picture", "not an image"),
        ("trunc.png", None, "corrupt"),
        ("notes.txt", b"hello", "unsupported extension '.txt'"),
        ("dot.png", "1x1", "1 x 1 pixels"),
        ("broken.mp4", b"\x00\x00\x00\x18ftypmp42 garbage", "not a readable video"),
    ],
)
def test_bad_input_is_one_line_and_exit_65(tmp_path, models, name, content, reason):
    import cv2

    path = tmp_path / name
    if content is None:
        good = _write_png(tmp_path / "full.png", 64, 64).read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif content == "1x1":
        cv2.imwrite(str(path), np.zeros((1, 1, 3), np.uint8))
    else:
        path.write_bytes(content)
    res = refine([path, "-o", tmp_path / "o", *models])
    assert res.exit_code == 65, res.stderr
    line = _one_line(res)
    assert name in line and reason in line


def test_unreadable_file(tmp_path, models):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = _write_png(tmp_path / "locked.png")
    path.chmod(0)
    res = refine([path, "-o", tmp_path / "o", *models])
    assert res.exit_code == 65 and "locked.png" in _one_line(res)


def test_video_without_frames(tmp_path, models):
    import imageio_ffmpeg

    path = tmp_path / "silent.mp4"  # a real mp4 with an audio track and no video stream
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono",
                    "-t", "0.2", "-c:a", "aac", str(path)], check=True)  # fmt: skip
    res = refine([path, "-o", tmp_path / "o", *models])
    assert res.exit_code == 65
    assert "silent.mp4" in _one_line(res)


def test_no_input_exit_66(tmp_path, models):
    (tmp_path / "empty").mkdir()
    res = refine([tmp_path / "empty", "-o", tmp_path / "o", *models])
    assert res.exit_code == 66 and "no images found" in _one_line(res)
    res = refine([tmp_path / "missing.png", "-o", tmp_path / "o", *models])
    assert res.exit_code == 66 and "missing.png" in _one_line(res)


def test_missing_file_map_names_the_image(tmp_path, models, tiny_model_dir):
    _write_png(tmp_path / "in" / "has.png", 32, 32)
    _write_png(tmp_path / "in" / "lacks.png", 32, 32)
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "has.npy", np.linspace(1, 2, 32 * 32, dtype=np.float32).reshape(32, 32))
    args = [tmp_path / "in", "-o", tmp_path / "o", "--conditioner", f"file:{maps}?kind=disparity",
            "--model", tiny_model_dir, "--processing-res", "32"]  # fmt: skip
    res = refine(args)
    assert res.exit_code == 65
    line = _one_line(res)
    assert "lacks.png" in line and "no precomputed map for 'lacks'" in line
    res = refine([*args, "--continue-on-error"])
    assert res.exit_code == 3 and (tmp_path / "o" / "has.png").is_file()


def test_continue_on_error_exit_3_and_first_error_halts(tmp_path, models):
    src = tmp_path / "in"
    (src).mkdir()
    (src / "a_bad.png").write_bytes(b"")
    _write_png(src / "b.png", seed=1)
    _write_png(src / "c.png", seed=2)
    res = refine([src, "-o", tmp_path / "halt", *models])
    assert res.exit_code == 65 and "a_bad.png: empty file" in _one_line(res)
    assert _pngs(tmp_path / "halt") == []  # stopped at the first bad input
    res = refine([src, "-o", tmp_path / "go", *models, "--continue-on-error"])
    assert res.exit_code == 3, res.stderr
    assert _pngs(tmp_path / "go") == ["b.png", "c.png"]
    assert "2 processed, 0 skipped, 1 failed" in res.stderr
    (src / "b.png").write_bytes(b"")
    (src / "c.png").write_bytes(b"x")
    res = refine([src, "-o", tmp_path / "none", *models, "--continue-on-error"])
    assert res.exit_code == 65  # every input failed


def test_decompression_bombs_are_refused_one_by_one(tmp_path, models, monkeypatch):
    from test_io_images import _png_claiming

    from betterdepth_cli.io.images import DEFAULT_PIXEL_LIMIT, PIXEL_LIMIT_ENV

    # --max-pixels sets the variable for the process: set it here so that monkeypatch restores it after
    monkeypatch.setenv(PIXEL_LIMIT_ENV, str(DEFAULT_PIXEL_LIMIT))
    src = tmp_path / "in"
    src.mkdir()
    _png_claiming(src / "a_huge.png", 60000, 60000)
    _png_claiming(src / "b_big.png", 16000, 16000)
    _write_png(src / "c.png", seed=2)
    res = refine([src, "-o", tmp_path / "alone", *models, "--continue-on-error"])
    assert res.exit_code == 3, res.stderr
    assert _pngs(tmp_path / "alone") == ["c.png"]
    assert "a_huge.png: image is 60000 x 60000 pixels (3600 MP), above the 150 MP limit" in res.stderr
    assert "b_big.png: image is 16000 x 16000 pixels" in res.stderr and "Traceback" not in res.stderr
    assert "1 processed, 0 skipped, 2 failed" in res.stderr
    res = refine([src / "b_big.png", "-o", tmp_path / "one", *models])
    assert res.exit_code == 65 and "above the 150 MP limit (raise it with --max-pixels" in _one_line(res)
    # a lower limit refuses the small image too
    res = refine([src / "c.png", "-o", tmp_path / "low", *models, "--max-pixels", "100"])
    assert res.exit_code == 65 and "c.png: image is 64 x 48 pixels" in _one_line(res)


def test_continue_on_error_covers_bad_specs(tmp_path, models):
    good = _write_png(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("x")
    res = refine([good, tmp_path / "notes.txt", "-o", tmp_path / "o", *models, "--continue-on-error"])
    assert res.exit_code == 3 and "notes.txt" in _one_line(res)
    assert _pngs(tmp_path / "o") == ["good.png"]


def test_output_equal_to_input_is_refused(tmp_path, models):
    img = _write_png(tmp_path / "img.png")
    res = refine([img, "-o", tmp_path, *models])
    assert res.exit_code == 64 and "would overwrite this input" in _one_line(res)
    assert img.read_bytes()[:4] == b"\x89PNG"


def test_output_not_writable_exit_73(tmp_path, models):
    img = _write_png(tmp_path / "img.png")
    (tmp_path / "afile").write_text("x")
    res = refine([img, "-o", tmp_path / "afile" / "out", *models])
    assert res.exit_code == 73 and "afile" in _one_line(res)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "png16,tiff"], "`format` must be among"),
        (["--device", "tpu"], "`--device` must be"),
        (["--dtype", "fp8"], "`--dtype` must be"),
        (["--steps", "0"], "`--steps` must be >= 1"),
        (["--reduction", "max"], "`--reduction` must be mean or median"),
        (["--shard", "4/3"], "`shard` must be i/n"),
        (["--frames", "10-5"], "ends before it starts"),
        (["--conditioner", "nope"], "unknown conditioner 'nope'"),
    ],
)
def test_usage_errors_exit_64(tmp_path, models, args, message):
    img = _write_png(tmp_path / "img.png")
    res = refine([img, "-o", tmp_path / "o", *models, *args])
    assert res.exit_code == 64, res.stderr
    assert message in _one_line(res)


def test_missing_model_exit_69(tmp_path, tiny_dpt_dir):
    img = _write_png(tmp_path / "img.png")
    res = refine([img, "-o", tmp_path / "o", "--conditioner", f"hf:{tiny_dpt_dir}", "--model", tmp_path / "nomodel"])
    assert res.exit_code == 69 and "nomodel" in _one_line(res)


# --------------------------------------------------------------------------- subprocess


def _default_sigint() -> None:
    # a shell's background job (`pytest &`) starts with SIGINT ignored, which the child would inherit,
    # and Python then installs no KeyboardInterrupt handler: give the child the terminal's default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "betterdepth_cli", "refine", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint, **kw)  # fmt: skip


def test_subprocess_plain_progress_and_summary(tmp_path, tree, models):
    proc = _cli([tree, "-o", tmp_path / "o", *models, "--recursive"])
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert out == ""  # results go to files, logs to stderr
    assert "refine: 3/3 (100%)" in err  # plain progress lines when stderr is not a terminal
    assert "done: 3 processed, 0 skipped, 0 failed in" in err and "images/s" in err
    assert "\x1b[" not in err  # no terminal escapes in a log file


@pytest.mark.parametrize(
    "sig, code, word",
    [(signal.SIGINT, 130, "interrupted"), pytest.param(signal.SIGTERM, 143, "terminated", marks=pytest.mark.slow)],
)
def test_ctrl_c_exits_130_without_partial_files_and_resumes(tmp_path, models, sig, code, word):
    src = tmp_path / "in"
    for i in range(16):
        _write_png(src / f"m{i:03d}.png", 64, 64, seed=i)
    out = tmp_path / "o"
    proc = _cli([src, "-o", out, *models, "--format", "png16,exr"])
    deadline = time.time() + 150
    while time.time() < deadline and len(list(out.glob("*.exr"))) < 2:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert word in err and "Traceback" not in err
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary or partial file
    for p in out.glob("*.png"):  # every file there is whole and readable
        assert load_depth_output(p)[0].shape == (64, 64)
    for p in out.glob("*.exr"):
        assert read_exr(p)[0].shape == (64, 64)
    complete = [p.stem for p in out.glob("*.png") if (out / f"{p.stem}.exr").is_file()]
    assert 0 < len(complete) < 16
    if sig == signal.SIGTERM:
        return
    res = refine([src, "-o", out, *models, "--format", "png16,exr"])  # rerun: resumes
    assert res.exit_code == 0
    assert f"{16 - len(complete)} processed, {len(complete)} skipped, 0 failed" in res.stderr
    assert len(list(out.glob("*.exr"))) == 16 and len(list(out.glob("*.png"))) == 16


# --------------------------------------------------------------------------- big and real inputs


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


def test_deterministic_model_runs_one_member_and_says_so_and_builtin_notice(tmp_path):
    img = _write_png(tmp_path / "a.png")
    res = refine([img, "-o", tmp_path / "o", "--ensemble", "3", "--seed", "4"])  # the embedded model (zero_noise)
    assert res.exit_code == 0, res.stderr
    assert "deterministic (zero-noise start): --ensemble 3 would repeat one result; running one member" in res.stderr
    assert "the builtin conditioner is a small offline model" in res.stderr
    assert res.stderr.count("the builtin conditioner is a small offline model") == 1
    assert json.loads((tmp_path / "o" / "a.json").read_text())["ensemble"] == 1
    res = refine([img, "-o", tmp_path / "u", "--format", "uncertainty"])
    assert res.exit_code == 64 and "this model is deterministic" in res.stderr


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
