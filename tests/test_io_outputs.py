"""Output encoders, sidecar, naming plan and atomic writes (betterdepth_cli.io.outputs)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from betterdepth_cli.core.types import InputDataError, NoInputError, OutputError, UsageError
from betterdepth_cli.io import outputs as bo
from betterdepth_cli.io import depth_files
from betterdepth_cli.io import files
def _ramp(h: int = 6, w: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.12 + 3.28 * rng.random((h, w))).astype(np.float32)


# --------------------------------------------------------------------------- png16


def test_png16_round_trip_within_one_step(tmp_path):
    values = _ramp()
    meta = depth_files.make_sidecar(kind="disparity", metric=False, source="photos/img.jpg", steps=2, seed=0)
    side = depth_files.write_png16(tmp_path / "img.png", values, meta=meta)
    step = (values.max() - values.min()) / 65535
    back, meta_back = depth_files.load_depth_output(tmp_path / "img.png")
    assert back.dtype == np.float32 and back.shape == values.shape
    assert np.abs(back - values).max() <= step
    assert meta_back == side
    assert meta_back["encoding"]["min"] == pytest.approx(values.min())
    assert meta_back["encoding"]["max"] == pytest.approx(values.max())
    assert (meta_back["width"], meta_back["height"]) == (8, 6)
    assert meta_back["units"] == "relative" and meta_back["format"] == "betterdepth/1"


def test_png16_file_is_16_bit_grey_and_uses_full_range(tmp_path):
    import cv2

    values = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    depth_files.write_png16(tmp_path / "a.png", values)
    codes = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)
    assert codes.dtype == np.uint16 and codes.ndim == 2
    # hand-computed: (v - 1) / 4 * 65535
    assert codes.tolist() == [[0, 16384], [32768, 65535]]


def test_encode_png16_invalid_pixels_get_zero_and_do_not_set_range():
    values = np.array([[1.0, np.nan], [100.0, 3.0]], np.float32)
    valid = np.array([[True, True], [False, True]])
    codes, lo, hi = depth_files.encode_png16(values, valid)
    assert (lo, hi) == (1.0, 3.0)
    assert codes.tolist() == [[1, 0], [0, 65535]]  # 0 marks the holes; the valid minimum is code 1
    assert depth_files.png16_has_holes(values, valid) and not depth_files.png16_has_holes(values[:1, :1])


def test_a_png16_with_holes_reads_back_nan_there_and_its_minimum_exactly(tmp_path):
    values = np.array([[2.0, 4.0, 6.0], [8.0, 10.0, 0.0]], np.float32)
    valid = np.array([[True, True, True], [True, True, False]])
    side = depth_files.write_png16(tmp_path / "h.png", values, valid, meta=depth_files.make_sidecar(
        kind="depth", metric=True))
    assert side["encoding"]["invalid"] == 0 and side["encoding"]["formula"] == depth_files.PNG16_HOLES_FORMULA
    back, _ = depth_files.load_depth_output(tmp_path / "h.png")
    assert np.isnan(back[1, 2]) and np.isfinite(back[valid]).all()
    np.testing.assert_allclose(back[valid], values[valid], atol=8.0 / 65534 / 2 + 1e-6)
    assert back[0, 0] == 2.0  # the minimum is a value, not a hole
    read, ok = depth_files.read_depth_map(tmp_path / "h.png")  # as the file: conditioner reads it
    np.testing.assert_array_equal(ok, valid)
    # a map without holes keeps the plain encoding: code 0 is its minimum
    side = depth_files.write_png16(tmp_path / "f.png", values, meta=depth_files.make_sidecar(kind="depth", metric=True))
    assert "invalid" not in side["encoding"] and depth_files.read_png16(tmp_path / "f.png")[1, 2] == 0
    assert depth_files.load_depth_output(tmp_path / "f.png")[0][1, 2] == 0.0


def test_encode_png16_constant_and_empty_maps():
    codes, lo, hi = depth_files.encode_png16(np.full((2, 3), 7.0))
    assert (lo, hi) == (7.0, 7.0) and not codes.any()
    assert np.all(depth_files.decode_png16(codes, lo, hi) == 7.0)
    _, lo, hi = depth_files.encode_png16(np.full((2, 2), np.inf))
    assert (lo, hi) == (0.0, 0.0)


def test_png_without_sidecar_names_the_json(tmp_path):
    depth_files.write_png16(tmp_path / "a.png", _ramp())
    (tmp_path / "a.json").unlink()
    with pytest.raises(InputDataError, match=r"a\.json is missing"):
        depth_files.load_depth_output(tmp_path / "a.png")


def test_load_missing_and_unsupported(tmp_path):
    with pytest.raises(NoInputError, match="nope.exr: no such file"):
        depth_files.load_depth_output(tmp_path / "nope.exr")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(InputDataError, match="unsupported depth output extension '.txt'"):
        depth_files.load_depth_output(tmp_path / "x.txt")


def test_sidecar_rejects_foreign_json(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputDataError, match="not a betterdepth sidecar"):
        depth_files.read_sidecar(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(InputDataError, match="not a readable JSON sidecar"):
        depth_files.read_sidecar(tmp_path / "b.json")


def test_make_sidecar_units_and_kind():
    assert depth_files.make_sidecar(kind="depth", metric=True)["units"] == "metres"
    assert depth_files.make_sidecar(kind="disparity", metric=True)["units"] == "1/metres"
    with pytest.raises(UsageError, match="`kind`"):
        depth_files.make_sidecar(kind="height", metric=False)


# --------------------------------------------------------------------------- EXR


def test_exr_round_trip_exact_with_attributes_and_zip(tmp_path):
    import OpenEXR

    values = _ramp(5, 7)
    values[0, 0] = 1e-7  # tiny and odd values survive float32 exactly
    depth_files.write_exr(tmp_path / "d.exr", values, kind="depth", metric=True, attrs={"source": "a.jpg"})
    back, meta = depth_files.read_exr(tmp_path / "d.exr")
    assert back.dtype == np.float32 and np.array_equal(back, values)
    assert meta == {"kind": "depth", "metric": True, "units": "metres", "source": "a.jpg"}
    header = OpenEXR.File(str(tmp_path / "d.exr")).header()
    assert header["compression"] == OpenEXR.ZIP_COMPRESSION
    assert header["betterdepth:kind"] == "depth" and header["betterdepth:metric"] == "true"
    assert sorted(c.name for c in header["channels"]) == ["Y", "Z"]


def test_exr_depth_opens_with_its_values_in_opencv_imageio_and_openexr(tmp_path):
    """Z (the VFX convention) plus the same values as Y (what OpenCV and imageio read); in a child
    process, since OpenCV reads EXR only with OPENCV_IO_ENABLE_OPENEXR set before it loads."""
    import subprocess
    import sys

    values = _ramp(4, 6) + 0.125
    path = tmp_path / "d.exr"
    depth_files.write_exr(path, values, kind="depth", metric=True)
    bo.write_uncertainty(tmp_path / "u.exr", values, kind="depth", metric=True)
    code = f"""
import cv2, imageio.v3 as iio, numpy as np, OpenEXR
for p in ({str(path)!r}, {str(tmp_path / "u.exr")!r}):
    a = cv2.imread(p, cv2.IMREAD_UNCHANGED)
    b = iio.imread(p, plugin="opencv", flags=cv2.IMREAD_UNCHANGED)
    c = OpenEXR.File(p).channels()
    c = c["Z"].pixels if "Z" in c else c["Y"].pixels
    print(a.dtype, float(np.abs(a - b).max()), float(np.abs(a - c).max()), float(a[1, 2]))
"""
    env = {**os.environ, "OPENCV_IO_ENABLE_OPENEXR": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    for line in out.splitlines():
        dtype, d_iio, d_exr, v = line.split()
        assert dtype == "float32" and float(d_iio) == 0.0 and float(d_exr) == 0.0
        assert float(v) == pytest.approx(float(values[1, 2]))


def test_load_depth_output_exr_and_npy_with_sidecar(tmp_path):
    values = _ramp()
    depth_files.write_exr(tmp_path / "a.exr", values, kind="disparity", metric=False)
    back, meta = depth_files.load_depth_output(tmp_path / "a.exr")
    assert np.array_equal(back, values) and meta["kind"] == "disparity" and meta["metric"] is False
    depth_files.write_npy(tmp_path / "a.npy", values[None, None])  # (1,1,H,W) is squeezed
    back, meta = depth_files.load_depth_output(tmp_path / "a.npy")
    assert np.array_equal(back, values) and meta == {}
    depth_files.write_sidecar(tmp_path / "a.json", depth_files.make_sidecar(kind="disparity", metric=False))
    assert depth_files.load_depth_output(tmp_path / "a.npy")[1]["kind"] == "disparity"


def test_read_exr_channel_choice(tmp_path):
    import OpenEXR

    z = np.full((2, 3), 5.0, np.float32)
    r = np.ones((2, 3), np.float32)
    path = str(tmp_path / "nuke.exr")
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"R": r, "G": r, "B": r, "depth.Z": z}).write(path)
    assert np.all(depth_files.read_exr(path)[0] == 5.0)
    assert np.all(depth_files.read_exr(path, channel="R")[0] == 1.0)
    with pytest.raises(InputDataError, match="no channel 'Q'"):
        depth_files.read_exr(path, channel="Q")


def test_uncertainty_exr(tmp_path):
    bo.write_uncertainty(tmp_path / "u.exr", np.zeros((2, 2)), kind="depth", metric=False)
    values, meta = depth_files.read_exr(tmp_path / "u.exr")
    assert values.shape == (2, 2) and meta["content"] == "uncertainty" and meta["units"] == "relative"


def test_corrupt_exr_is_input_data_error(tmp_path):
    (tmp_path / "bad.exr").write_bytes(b"v/1\x01garbage")
    with pytest.raises(InputDataError, match="bad.exr: not a readable EXR"):
        depth_files.read_exr(tmp_path / "bad.exr")


# --------------------------------------------------------------------------- preview


def test_preview_near_is_warm_for_both_kinds():
    ramp = np.tile(np.linspace(1.0, 10.0, 50, dtype=np.float32), (4, 1))
    disp = bo.colorize(ramp, kind="disparity").astype(int)
    depth = bo.colorize(ramp, kind="depth").astype(int)
    # disparity: the right (large) end is near -> red; depth: the left (small) end is near -> red
    assert disp[0, -1, 0] > disp[0, -1, 2] and disp[0, 0, 2] > disp[0, 0, 0]
    assert depth[0, 0, 0] > depth[0, 0, 2] and depth[0, -1, 2] > depth[0, -1, 0]


def test_preview_range_is_robust_and_invalid_is_black():
    values = np.tile(np.linspace(0.0, 1.0, 100, dtype=np.float32), (2, 1))
    values[0, 0] = 1e6  # an outlier must not flatten the rest of the map
    valid = np.ones_like(values, bool)
    valid[1, 5] = False
    rgb = bo.colorize(values, valid, kind="disparity")
    assert rgb[1, 5].tolist() == [0, 0, 0]
    assert len({tuple(p) for p in rgb[1, 10:90]}) > 40


def test_write_preview_jpeg(tmp_path):
    import cv2

    path = bo.write_preview(tmp_path / "p_preview.jpg", _ramp(16, 16), kind="depth")
    img = cv2.imread(str(path))
    assert img.shape == (16, 16, 3)


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_leaves_no_temp_file_when_writer_raises(tmp_path):
    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        files.atomic_write(tmp_path / "out.png", broken)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")

    def broken(tmp: str) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="a.json: cannot write output"):
        files.atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_creates_folders_and_replaces(tmp_path):
    target = tmp_path / "deep" / "er" / "x.txt"
    files.atomic_write_text(target, "one")
    files.atomic_write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["x.txt"]


def test_atomic_write_unwritable_folder_is_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot create output"):
        files.atomic_write_text(blocker / "x.txt", "a")


# --------------------------------------------------------------------------- naming plan


def test_output_paths_plain_base(tmp_path):
    plan = bo.output_paths(tmp_path, PurePosixPath("photos/img"), bo.OUTPUT_FORMATS)
    rel = {k: v.relative_to(tmp_path).as_posix() for k, v in plan.items()}
    assert rel == {
        "png16": "photos/img.png",
        "sidecar": "photos/img.json",
        "exr": "photos/img.exr",
        "npy": "photos/img.npy",
        "preview": "photos/img_preview.jpg",
        "uncertainty": "photos/img_uncertainty.exr",
    }


def test_output_paths_frame_numbered_base(tmp_path):
    plan = bo.output_paths(tmp_path, "clip/clip.0007", ["png16", "exr", "preview", "uncertainty"])
    rel = {k: v.relative_to(tmp_path).as_posix() for k, v in plan.items()}
    assert rel == {
        "png16": "clip/clip.0007.png",
        "sidecar": "clip/clip.0007.json",
        "exr": "clip/clip.0007.exr",
        "preview": "clip/clip_preview.0007.jpg",
        "uncertainty": "clip/clip_uncertainty.0007.exr",
    }


def test_output_paths_dotted_names_that_are_not_frames(tmp_path):
    plan = bo.output_paths(tmp_path, "my.photo", ["npy", "preview"])
    assert plan["npy"].name == "my.photo.npy" and plan["preview"].name == "my.photo_preview.jpg"
    assert bo.split_frame("shot.1001") == ("shot", "1001")
    assert bo.split_frame("v1.2.final") == ("v1.2.final", None)
    assert bo.split_frame(".1001") == (".1001", None)


def test_output_paths_rejects_bad_format_and_escaping_relpath(tmp_path):
    with pytest.raises(UsageError, match="`format` must be among"):
        bo.output_paths(tmp_path, "a", ["tiff"])
    with pytest.raises(UsageError, match="inside the output folder"):
        bo.output_paths(tmp_path, "../a", ["npy"])


def test_outputs_exist(tmp_path):
    plan = bo.output_paths(tmp_path, "a", ["npy", "exr"])
    assert not bo.outputs_exist(plan)
    depth_files.write_npy(plan["npy"], np.zeros((2, 2)))
    assert not bo.outputs_exist(plan)
    depth_files.write_exr(plan["exr"], np.zeros((2, 2)))
    assert not bo.outputs_exist(plan)  # the sidecar, the record of the run, is an output too
    depth_files.write_sidecar(plan["sidecar"], depth_files.make_sidecar(kind="disparity", metric=False))
    assert bo.outputs_exist(plan) and bo.is_own_sidecar(plan["sidecar"])


def test_sidecar_of_names_the_record_of_each_output(tmp_path):
    assert bo.sidecar_of(tmp_path / "a.png") == tmp_path / "a.json"
    assert bo.sidecar_of(tmp_path / "A_preview.jpg") == tmp_path / "A.json"
    assert bo.sidecar_of(tmp_path / "shot_preview.1001.jpg") == tmp_path / "shot.1001.json"
    assert bo.sidecar_of(tmp_path / "shot_uncertainty.1001.exr") == tmp_path / "shot.1001.json"
    (tmp_path / "user.json").write_text('{"title": "my notes"}')
    assert not bo.is_own_sidecar(tmp_path / "user.json") and not bo.is_own_sidecar(tmp_path / "none.json")


def test_encode_png16_shared_vrange_clips_outside():
    codes, lo, hi = depth_files.encode_png16(np.array([[0.0, 5.0], [10.0, 20.0]]), vrange=(0.0, 10.0))
    assert (lo, hi) == (0.0, 10.0)
    assert codes.tolist() == [[0, 32768], [65535, 65535]]  # 5 / 10 * 65535 = 32767.5 rounds to even 32768
    with pytest.raises(UsageError, match="`vrange` must be finite"):
        depth_files.encode_png16(np.zeros((2, 2)), vrange=(1.0, 0.0))


def test_sidecar_keys_follow_the_contract_order(tmp_path):
    meta = depth_files.make_sidecar(kind="depth", metric=False, source="a.jpg", seed=3)
    side = depth_files.write_png16(tmp_path / "a.png", _ramp(), meta=meta)
    keys = list(json.loads((tmp_path / "a.json").read_text()))
    assert keys[:7] == ["format", "kind", "metric", "units", "encoding", "width", "height"]
    assert keys == list(side) and side["seed"] == 3 and side["source"] == "a.jpg"


def test_atomic_write_follows_the_umask_not_mkstemp_0600(tmp_path):
    import os
    import stat

    from betterdepth_cli.io.files import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("name,want", [
    ("a/b.npy", "a/b.npy"), ("../../evil/x", "evil/x"), ("/etc/passwd", "etc/passwd"),
    ("./a/../b", "a/b"), ("C:/x/y", "x/y"), ("..\\..\\w", "w"),
])
def test_safe_join_never_leaves_the_root(tmp_path, name, want):
    from betterdepth_cli.io.files import safe_join

    got = safe_join(tmp_path, name)
    assert got == tmp_path / want
    assert got.resolve().is_relative_to(tmp_path.resolve())


def test_safe_join_refuses_a_name_with_nothing_left(tmp_path):
    from betterdepth_cli.core.types import OutputError
    from betterdepth_cli.io.files import safe_join

    with pytest.raises(OutputError, match="no usable file name"):
        safe_join(tmp_path, "../..")


@pytest.mark.parametrize("bad", ["abc", None, "nan", [1]])
def test_sidecar_with_a_non_numeric_range_is_one_line(tmp_path, bad):
    depth_files.write_png16(tmp_path / "d.png", _ramp() + 1.0, meta=depth_files.make_sidecar(kind="disparity", metric=False))
    meta = json.loads((tmp_path / "d.json").read_text())
    meta["encoding"]["min"] = bad
    (tmp_path / "d.json").write_text(json.dumps(meta))
    with pytest.raises(InputDataError, match=r"d.json: encoding min must be (a number|finite)"):
        depth_files.load_depth_output(tmp_path / "d.png")


def test_a_full_disk_says_no_space_left(tmp_path, monkeypatch):
    import errno

    class Full:  # a file on a full disk: the first write fails with ENOSPC
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    from betterdepth_cli.io import files

    monkeypatch.setattr(files, "open", Full, raising=False)  # atomic writes go through open()
    with pytest.raises(OutputError, match=r"d.png: cannot write output \(No space left on device\)"):
        depth_files.write_png16(tmp_path / "d.png", _ramp(), meta=depth_files.make_sidecar(kind="disparity", metric=False))
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary left behind
