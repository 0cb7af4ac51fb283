"""`betterdepth export-ply` through typer's CliRunner: exit codes, messages, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from betterdepth_cli.cli.app import app
from betterdepth_cli.io import intrinsics as ki
from betterdepth_cli.io import depth_files
o3d = pytest.importorskip("open3d")

H, W = 12, 16


def run(*args: str):
    return CliRunner().invoke(app, ["export-ply", *map(str, args)])


def plane_map(folder: Path, name: str = "img", value: float = 0.5, kind: str = "disparity", metric: bool = True,
              source: str = "") -> Path:
    """A constant (fronto-parallel) map written by refine's own png16 writer."""
    meta = depth_files.make_sidecar(kind=kind, metric=metric, source=source)
    path = folder / f"{name}.png"
    depth_files.write_png16(path, np.full((H, W), value, np.float32), meta=meta)
    return path


def read_points(path: Path):
    pcd = o3d.io.read_point_cloud(str(path))
    return np.asarray(pcd.points), np.asarray(pcd.normals), np.asarray(pcd.colors)


def test_help_lists_the_options():
    res = CliRunner().invoke(app, ["export-ply", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    for opt in ("--fov", "--focal", "--depth-range", "--scale", "--assume", "--color", "--axes", "--mesh", "--stride",
                "--edge-threshold"):
        assert opt in res.stdout
    # the defaults the help states are the library's
    from betterdepth_cli.core import depth_values as dv
    from betterdepth_cli.core import geometry as geo

    flat = " ".join(res.stdout.split())
    assert f"(default {geo.DEFAULT_EDGE_THRESHOLD:g})" in flat and f"{ki.DEFAULT_FOV_DEG:g} degree" in flat
    assert "--depth-range NEAR,FAR (default {:g},{:g})".format(*dv.DEFAULT_DEPTH_RANGE) in flat


def test_metric_plane_default_axes_is_opengl(tmp_path):
    # metric disparity 0.5 /m -> a plane 2 m in front of the camera; OpenGL: z = -2, normals (0, 0, 1)
    src = plane_map(tmp_path)
    res = run(src, "-o", tmp_path / "plane.ply", "--fov", 60)
    assert res.exit_code == 0, res.stderr
    assert "wrote" in res.stderr and f"{H * W:,} points" in res.stderr and "--fov 60" in res.stderr
    pts, nrm, col = read_points(tmp_path / "plane.ply")
    assert len(pts) == H * W
    np.testing.assert_allclose(pts[:, 2], -2.0, rtol=1e-5)
    np.testing.assert_allclose(nrm, np.tile([0, 0, 1], (H * W, 1)), atol=1e-5)
    np.testing.assert_allclose(col, np.tile([128, 128, 255], (H * W, 1)) / 255, atol=1e-6)
    # the top image row is up (+y) in OpenGL
    fx = (W / 2) / np.tan(np.radians(30))
    assert pts[:, 1].max() == pytest.approx((H - 1) / 2 / fx * 2.0, rel=1e-4)


def test_opencv_axes(tmp_path):
    src = plane_map(tmp_path)
    res = run(src, "-o", tmp_path / "cv.ply", "--axes", "opencv", "--focal", 20)
    assert res.exit_code == 0, res.stderr
    pts, nrm, _ = read_points(tmp_path / "cv.ply")
    np.testing.assert_allclose(pts[:, 2], 2.0, rtol=1e-5)
    np.testing.assert_allclose(nrm, np.tile([0, 0, -1], (H * W, 1)), atol=1e-5)
    # row 0 is at y = (0 - cy) / fx * z = -(5.5 / 20) * 2 = -0.55 (y down)
    assert pts[:, 1].min() == pytest.approx(-0.55, rel=1e-4)


def test_default_output_next_to_the_map_and_stride(tmp_path):
    src = plane_map(tmp_path)
    res = run(src, "--stride", 2)
    assert res.exit_code == 0, res.stderr
    pts, _, _ = read_points(tmp_path / "img.ply")
    assert len(pts) == (H // 2) * (W // 2)


def test_output_folder_that_is_a_file_exit_73(tmp_path):
    src = plane_map(tmp_path)
    (tmp_path / "afile").write_text("x")
    res = run(src, "-o", tmp_path / "afile")  # no suffix: a folder for img.ply
    assert res.exit_code == 73
    assert res.stderr == f"betterdepth: error: {tmp_path / 'afile'}: a file, not a folder (where img.ply would go)\n"
    assert (tmp_path / "afile").read_text() == "x"


def test_png_without_sidecar(tmp_path):
    src = plane_map(tmp_path, "nosc")
    (tmp_path / "nosc.json").unlink()
    res = run(src, "-o", tmp_path / "x.ply")
    assert res.exit_code == 65
    assert res.stderr == (
        f"betterdepth: error: {src}: sidecar nosc.json is missing (needed to decode the 16-bit PNG); "
        "pass --assume disparity|depth to use the raw PNG values\n"
    )
    assert not (tmp_path / "x.ply").exists()


def test_a_photo_or_a_file_that_is_no_png_says_so_before_the_sidecar(tmp_path):
    """The likely mistakes, a photo passed for its map and a JPEG named .png: the first reason is named."""
    import cv2

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((8, 12, 3), 128, np.uint8))
    res = run(photo, "-o", tmp_path / "x.ply")
    assert res.exit_code == 65
    assert res.stderr == (f"betterdepth: error: {photo}: a colour image, not a depth map (refine writes 16-bit "
                          "grey PNGs with a .json sidecar)\n")
    jpeg = tmp_path / "named.png"
    cv2.imwrite(str(tmp_path / "j.jpg"), np.full((8, 12, 3), 128, np.uint8))
    (tmp_path / "j.jpg").rename(jpeg)
    res = run(jpeg, "-o", tmp_path / "x.ply")
    assert res.exit_code == 65 and res.stderr == f"betterdepth: error: {jpeg}: not a PNG (unrecognised file content)\n"
    assert not (tmp_path / "x.ply").exists()


def test_png_without_sidecar_with_assume(tmp_path):
    src = tmp_path / "nosc.png"  # a 16-bit PNG from another tool: raw codes, no sidecar
    codes = (np.arange(H * W).reshape(H, W) * 100 + 100).astype(np.uint16)
    import cv2

    cv2.imwrite(str(src), codes)
    res = run(src, "-o", tmp_path / "x.ply", "--assume", "depth", "--scale", 0.001, "--edge-threshold", 0)
    assert res.exit_code == 0, res.stderr
    pts, _, _ = read_points(tmp_path / "x.ply")
    # depth = 0.001 * code: 0.1 m .. (191*100+100)/1000 = 19.2 m, in -z
    z = -pts[:, 2]
    assert len(z) == H * W and z.min() == pytest.approx(0.1, rel=1e-5) and z.max() == pytest.approx(19.2, rel=1e-5)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--fov", "60", "--focal", "100"], 64, "`--fov` and `--focal` exclude each other; give one"),
        (["--depth-range", "10,1"], 64, "`--depth-range` needs 0 < NEAR < FAR, got 10,1"),
        (["--depth-range", "1,10", "--scale", "2"], 64, "`--depth-range` and `--scale`/`--shift` exclude each other; give one"),
        (["--color", "height"], 64, "`--color` must be one of normals, rgb, depth, got 'height'"),
        (["--axes", "zup"], 64, "`--axes` must be one of opengl, opencv, got 'zup'"),
        (["--stride", "0"], 64, "`--stride` must be a positive integer, got 0"),
        (["--assume", "height"], 64, "`--assume` must be one of disparity, depth, got 'height'"),
    ],
)
def test_usage_errors(tmp_path, args, code, message):
    src = plane_map(tmp_path)
    res = run(src, "-o", tmp_path / "x.ply", *args)
    assert res.exit_code == code
    assert res.stderr == f"betterdepth: error: {message}\n"


def test_missing_input_and_wrong_extension(tmp_path):
    res = run(tmp_path / "nothere.png")
    assert res.exit_code == 66 and res.stderr == f"betterdepth: error: {tmp_path / 'nothere.png'}: no such file or folder\n"
    src = plane_map(tmp_path)
    res = run(src, "-o", tmp_path / "x.obj")
    assert res.exit_code == 64 and "add --mesh for .obj/.glb" in res.stderr
    res = run(src, "--color", "rgb")
    assert res.exit_code == 64 and "needs the source image" in res.stderr


@pytest.mark.parametrize("ext", ["obj", "glb", "ply"])
def test_mesh_outputs(tmp_path, ext):
    src = plane_map(tmp_path)
    res = run(src, "--mesh", "-o", tmp_path / f"m.{ext}")
    assert res.exit_code == 0, res.stderr
    m = o3d.io.read_triangle_mesh(str(tmp_path / f"m.{ext}"))
    assert len(m.triangles) == 2 * (H - 1) * (W - 1)
    assert f"{2 * (H - 1) * (W - 1):,} triangles" in res.stderr


def test_exif_focal_from_image(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[ki.EXIF_IFD] = {ki.TAG_FOCAL_35MM: 24}
    # 4:3 image 32x24: fx = 24 mm * 40 px diagonal / 43.27 mm = 22.19 px; the map is 16x12: 11.09 px
    Image.new("RGB", (32, 24), (200, 10, 10)).save(tmp_path / "photo.jpg", exif=exif)
    src = plane_map(tmp_path, "photo")
    res = run(src, "--image", tmp_path / "photo.jpg", "--color", "rgb", "--axes", "opencv", "-o", tmp_path / "p.ply")
    assert res.exit_code == 0, res.stderr
    assert "EXIF FocalLengthIn35mmFilm 24 mm of photo.jpg (fx 11.1 px" in res.stderr
    pts, _, col = read_points(tmp_path / "p.ply")
    fx = 24 * 20 / ki.FULL_FRAME_DIAGONAL_MM
    assert pts[:, 0].min() == pytest.approx(-(W - 1) / 2 / fx * 2.0, rel=1e-4)
    # colours are the photo's (JPEG: close to (200, 10, 10))
    assert np.abs(col * 255 - [200, 10, 10]).max() < 8


def test_an_image_that_cannot_be_the_maps_photo_is_refused_whatever_the_colour(tmp_path):
    """--image serves EXIF intrinsics even with normal colours: an unreadable file, or a photo of
    another aspect, would silently give the default camera or another photo's focal length."""
    from PIL import Image

    src = plane_map(tmp_path, "photo")
    (tmp_path / "junk.png").write_bytes(b"x")
    Image.new("RGB", (H * 2, W * 2)).save(tmp_path / "tall.png")  # 24x32: portrait, the map is 16x12
    Image.new("RGB", (W * 3, H * 3)).save(tmp_path / "big.png")  # the map's aspect at 3x: used
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored 24x32 (portrait), shown 32x24 like the map
    Image.new("RGB", (H * 2, W * 2)).save(tmp_path / "rotated.jpg", exif=exif)
    for name, code, message in (("junk.png", 65, "junk.png: not an image (unrecognised file content)"),
                                ("tall.png", 65, "tall.png: the image is 24x32, the depth map 16x12 (different aspect)"),
                                ("big.png", 0, "wrote"), ("rotated.jpg", 0, "wrote")):
        res = run(src, "--image", tmp_path / name, "-o", tmp_path / f"{name}.ply")
        assert res.exit_code == code, (name, res.stderr)
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert (tmp_path / f"{name}.ply").exists() == (code == 0)


def test_batch_mirrors_names_matches_images_and_continues(tmp_path):
    from PIL import Image

    maps, imgs, out = tmp_path / "refined", tmp_path / "photos", tmp_path / "ply"
    plane_map(maps, "a")
    plane_map(maps / "shot", "shot.1001")
    depth_files.write_npy(maps / "bad.npy", np.ones((H, W), np.float32))  # no sidecar: does not say what it holds
    (imgs / "shot").mkdir(parents=True)
    Image.new("RGB", (W, H), (0, 255, 0)).save(imgs / "a.png")
    Image.new("RGB", (W, H), (0, 0, 255)).save(imgs / "shot" / "shot.1001.png")

    res = run(maps, "-o", out, "--image", imgs, "--color", "rgb")
    assert res.exit_code == 65  # stops at the first bad map (a, bad, shot.1001 in order)
    assert (out / "a.ply").is_file() and not (out / "shot" / "shot.1001.ply").exists()

    res = run(maps, "-o", out, "--image", imgs, "--color", "rgb", "--continue-on-error")
    assert res.exit_code == 3  # partial failure, the same code as refine's
    from betterdepth_cli.core.exit_codes import EXIT_PARTIAL

    assert EXIT_PARTIAL == 3
    assert "bad.npy: the file does not say whether it holds disparity or depth" in res.stderr
    assert "export-ply: 2 written, 0 skipped, 1 failed" in res.stderr
    _, _, col = read_points(out / "shot" / "shot.1001.ply")
    np.testing.assert_allclose(col, np.tile([0, 0, 1], (H * W, 1)))
    _, _, col = read_points(out / "a.ply")
    np.testing.assert_allclose(col, np.tile([0, 1, 0], (H * W, 1)))

    res = run(maps, "-o", out, "--skip-existing", "--continue-on-error", "--assume", "disparity")
    assert res.exit_code == 0, res.stderr
    assert "export-ply: 1 written, 2 skipped, 0 failed" in res.stderr and (out / "bad.ply").is_file()


def test_batch_all_failed_keeps_the_error_code(tmp_path):
    maps = tmp_path / "refined"
    maps.mkdir()
    depth_files.write_npy(maps / "b1.npy", np.ones((H, W), np.float32))
    depth_files.write_npy(maps / "b2.npy", np.ones((H, W), np.float32))
    res = run(maps, "-o", tmp_path / "o", "--continue-on-error")
    assert res.exit_code == 65  # every map failed for the same reason: that reason's code
    assert res.stderr.count("betterdepth: error:") == 2 and "0 written, 0 skipped, 2 failed" in res.stderr


def test_batch_folder_without_maps(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run(tmp_path / "empty")
    assert res.exit_code == 66
    assert res.stderr == f"betterdepth: error: {tmp_path / 'empty'}: no depth maps (.png with sidecar, .exr, .npy) found\n"


def test_relative_disparity_default_range_in_log(tmp_path):
    path = tmp_path / "rel.exr"
    yy, xx = np.mgrid[0:H, 0:W]
    depth_files.write_exr(path, (1 + 0.01 * xx).astype(np.float32), kind="disparity", metric=False)
    res = run(path, "-o", tmp_path / "rel.ply", "--depth-range", "2,4")
    assert res.exit_code == 0, res.stderr
    assert "-> depth 4..2 (--depth-range 2,4)" in res.stderr
    pts, _, _ = read_points(tmp_path / "rel.ply")
    z = -pts[:, 2]
    assert z.max() <= 4.0 + 1e-5 and z.min() < 2.0 + 1e-5


def test_a_frame_of_a_chunked_shot_maps_as_the_whole_runs(tmp_path):
    """Frames of one shot refined by separate `--frames` jobs into one folder each record their chunk's
    range; export-ply maps a frame by the union over the shot's frames there, which is the whole run's."""
    ramp = np.linspace(0.2, 0.6, H * W, dtype=np.float32).reshape(H, W)  # smooth: no pixel is an edge
    frames = [(ramp * (1 + 0.2 * i) + 0.1 * i).astype(np.float32) for i in range(4)]

    def write(folder, chunk):  # as refine's writer: each chunk's range is the min/max of its frames' 2-98 %
        folder.mkdir(exist_ok=True)
        lo = min(float(np.percentile(frames[i], 2)) for i in chunk)
        hi = max(float(np.percentile(frames[i], 98)) for i in chunk)
        for i in chunk:
            meta = depth_files.make_sidecar(kind="disparity", metric=False, frame=1001 + i, shot_aligned=True)
            depth_files.write_exr(folder / f"shot.{1001 + i}.exr", frames[i], kind="disparity", metric=False)
            depth_files.write_sidecar(folder / f"shot.{1001 + i}.json", {**meta, "shot_range": [lo, hi]})

    write(tmp_path / "whole", range(4))
    write(tmp_path / "chunks", range(2))
    write(tmp_path / "chunks", range(2, 4))
    a = depth_files.read_sidecar(tmp_path / "chunks" / "shot.1002.json")["shot_range"]
    assert a != depth_files.read_sidecar(tmp_path / "whole" / "shot.1002.json")["shot_range"]  # the chunk's own
    for d in ("whole", "chunks"):
        res = run(tmp_path / d / "shot.1002.exr", "-o", tmp_path / f"{d}.ply", "--edge-threshold", "0")
        assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(read_points(tmp_path / "chunks.ply")[0], read_points(tmp_path / "whole.ply")[0])


# --------------------------------------------------------------------------- QA round 20: signals, temporaries, EXR, scale, sidecars
_SIGTERM_WHILE_WRITING = """
import os, signal, sys
import open3d as o3d

real = o3d.t.io.write_point_cloud


def write(path, pcd, **kw):  # the farm's SIGTERM arrives while the file is being written
    ok = real(path, pcd, **kw)
    os.kill(os.getpid(), signal.SIGTERM)
    return ok


o3d.t.io.write_point_cloud = write
from betterdepth_cli.cli.app import main

sys.argv = ["betterdepth", *sys.argv[1:]]
main()
"""


def test_sigterm_while_writing_exits_143_and_leaves_no_temporary(tmp_path):
    import os
    import subprocess
    import sys

    src = plane_map(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "img.ply").write_bytes(b"the user's earlier file")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_WHILE_WRITING, "export-ply", str(src), "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr == "betterdepth: error: terminated\n"
    assert sorted(p.name for p in out.iterdir()) == ["img.ply"]  # no temporary folder beside it
    assert (out / "img.ply").read_bytes() == b"the user's earlier file"  # untouched


def test_a_later_run_removes_the_temporaries_a_killed_run_left(tmp_path):
    import os
    import time

    src = plane_map(tmp_path)
    out = tmp_path / "out"
    old = time.time() - 3600

    def leave(rel: str, files=("img.ply",), when: float = old) -> Path:
        folder = out / rel
        folder.mkdir(parents=True)
        for name in files:
            (folder / name).write_bytes(b"partial")
            os.utime(folder / name, (when, when))
        os.utime(folder, (when, when))
        return folder

    killed = leave(".img.ply.tmp-k1ll3d00")  # a SIGKILLed run's, for this target: removed
    legacy = leave(".betterdepth-ab12cd34")  # the folder name earlier versions used: removed
    live = leave(".img.ply.tmp-l1ve0000", when=time.time() + 600)  # still being written by a live run: kept
    other = leave(".other.ply.tmp-k1ll3d00", files=("other.ply",))  # another target's: kept
    spill = leave(".betterdepth-spill-ab12cd34", files=("0.npy",))  # refine's: kept
    mine = leave(".betterdepth-zz99yy88", files=("notes.txt",))  # a folder with other files: kept
    res = run(src, "-o", out / "img.ply")
    assert res.exit_code == 0, res.stderr
    assert not killed.exists() and not legacy.exists()
    assert live.exists() and other.exists() and spill.exists() and mine.exists()
    assert len(read_points(out / "img.ply")[0]) == H * W


def test_truncated_exr_gives_one_line_and_nothing_from_the_library(tmp_path, capfd):
    rng = np.random.default_rng(0)
    whole = depth_files.write_exr(tmp_path / "w.exr", rng.random((64, 64), np.float32) + 1, kind="disparity",
                                  metric=False)
    data = whole.read_bytes()
    (tmp_path / "t.exr").write_bytes(data[: len(data) // 2])  # the second half of the chunks is gone
    res = run(tmp_path / "t.exr", "-o", tmp_path / "t.ply")
    assert res.exit_code == 65
    assert res.stderr == (f"betterdepth: error: {tmp_path / 't.exr'}: not a readable EXR "
                          "(truncated or corrupt: EXR_ERR_BAD_CHUNK_LEADER)\n")
    assert res.stdout == ""  # OpenEXR's "Warning: Exception raised reading pixel data" (on sys.stdout) is gone
    assert capfd.readouterr().err == ""  # and its "(EXR_ERR_BAD_CHUNK_LEADER)" lines on file descriptor 2
    assert not (tmp_path / "t.ply").exists()


def test_a_scale_that_leaves_no_usable_depth_is_one_line_without_numpy_warnings(tmp_path):
    import warnings

    src = plane_map(tmp_path)  # metric disparity 0.5 everywhere
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        # disparity 1e-30 * 0.5 -> depth 2e30: beyond what float32 normals can hold
        res = run(src, "-o", tmp_path / "x.ply", "--scale", "1e-30")
        # 1e-50 is 0 in float32 (the map's type): refused before the map is read
        tiny = run(src, "-o", tmp_path / "x.ply", "--scale", "1e-50")
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning)]
    assert res.exit_code == 64
    assert res.stderr == (f"betterdepth: error: {src}: `disparity = 1e-30 * value + 0` gives depths 2e+30..2e+30, "
                          "none within the 1e-06..1e+08 that float32 points and normals can hold; "
                          "choose a `--scale`/`--shift` that gives depths in scene units\n")
    assert tiny.exit_code == 64
    assert tiny.stderr == ("betterdepth: error: `--scale` must be non-zero and finite, within float32 "
                           "(1.18e-38 to 3.4e+38 in size: the maps are float32), got 1e-50\n")
    assert not (tmp_path / "x.ply").exists()


def test_a_sidecar_of_another_map_is_refused(tmp_path):
    src = plane_map(tmp_path, "small")  # 12x16
    big = tmp_path / "big.png"  # a 24x32 map given small's sidecar
    depth_files.write_png16(big, np.full((2 * H, 2 * W), 0.5, np.float32),
                            meta=depth_files.make_sidecar(kind="disparity", metric=True))
    (tmp_path / "big.json").write_text(src.with_suffix(".json").read_text())
    res = run(big, "-o", tmp_path / "big.ply")
    assert res.exit_code == 65
    assert res.stderr == (f"betterdepth: error: {tmp_path / 'big.json'}: the sidecar is for a {W}x{H} map, "
                          f"but {big} is {2 * W}x{2 * H} (a sidecar of another map?)\n")
    assert not (tmp_path / "big.ply").exists()
