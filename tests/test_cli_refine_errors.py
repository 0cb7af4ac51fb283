"""`betterdepth refine`: bad inputs, exit codes, interruption (CliRunner and subprocess runs over tiny real models)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from betterdepth_cli.io.depth_files import load_depth_output, read_exr
from refine_cli_helpers import REPO, pngs as _pngs, refine, write_png as _write_png


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
    # and a video's frames (their size from the stream)
    from refine_cli_helpers import write_mp4

    clip = write_mp4(tmp_path / "clip.mp4")
    res = refine([clip, "-o", tmp_path / "vid", *models, "--max-pixels", "100"])
    assert res.exit_code == 65 and "clip.mp4: image is 64 x 48 pixels" in _one_line(res)
    # a limit that is not a number is a usage error
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "abc")
    res = refine([src / "c.png", "-o", tmp_path / "abc", *models])
    assert res.exit_code == 64 and "BETTERDEPTH_MAX_PIXELS='abc': expected a number" in _one_line(res)


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
    res = refine([img, "-o", tmp_path / "afile", *models])  # -o names a file: said so, the file kept
    assert res.exit_code == 73
    said = f"betterdepth: error: {tmp_path / 'afile'}: a file, not a folder (the output is a folder of results)"
    assert _one_line(res) == said
    assert (tmp_path / "afile").read_text() == "x"


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
    [(signal.SIGINT, 130, "interrupted"),
     pytest.param(signal.SIGTERM, 143, "terminated", marks=pytest.mark.slow)],
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
