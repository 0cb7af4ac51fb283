"""Procedural RGB-D generator: determinism, analytic depth, shadows, folder writer, CLI."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("open3d")

from training.synthetic import (  # noqa: E402
    Light,
    Material,
    Mesh,
    boxes,
    look_at,
    quad,
    render,
    render_scene,
    uv_sphere,
    write_dataset,
)


def test_same_seed_same_bytes_different_seed_differs():
    a = render_scene(3, (48, 64), "mixed")
    b = render_scene(3, (48, 64), "mixed")
    c = render_scene(4, (48, 64), "mixed")
    assert a.rgb.shape == (48, 64, 3) and a.rgb.dtype == np.float32
    assert a.depth.shape == (48, 64) and a.depth.dtype == np.float32 and a.valid.dtype == bool
    assert a.rgb.tobytes() == b.rgb.tobytes()
    assert a.depth.tobytes() == b.depth.tobytes()
    assert (a.valid == b.valid).all()
    assert a.rgb.tobytes() != c.rgb.tobytes()
    assert a.depth.tobytes() != c.depth.tobytes()


def test_thread_count_does_not_change_output():
    a = render_scene(11, (40, 40), "outdoor", nthreads=1)
    b = render_scene(11, (40, 40), "outdoor", nthreads=2)
    assert a.rgb.tobytes() == b.rgb.tobytes() and a.depth.tobytes() == b.depth.tobytes()


@pytest.mark.parametrize("kind", ["indoor", "outdoor"])
def test_scene_kinds_are_plausible(kind):
    s = render_scene(5, (64, 64), kind)
    assert s.meta["kind"] == kind
    assert 0 <= s.rgb.min() and s.rgb.max() <= 1
    assert s.valid.mean() > 0.3
    d = s.depth[s.valid]
    assert d.min() > 0 and d.max() <= s.meta["max_depth"]
    assert (s.depth[~s.valid] == 0).all()
    hfov = 2 * math.degrees(math.atan(32 / s.K[0, 0]))
    assert 45 <= hfov <= 90
    if kind == "indoor":  # a closed room: every ray hits something
        assert s.valid.all()


def test_fronto_parallel_plane_at_z3_gives_depth_3():
    v, t = quad([-50, -50, 3], [100, 0, 0], [0, 100, 0])
    K = np.array([[40.0, 0, 24], [0, 40.0, 16], [0, 0, 1]])
    s = render([Mesh(v, t)], K, np.eye(4), (32, 48))
    assert s.valid.all()
    np.testing.assert_allclose(s.depth, 3.0, rtol=0, atol=1e-5)


def test_plane_depth_is_planar_not_euclidean_for_a_posed_camera():
    # camera at (0,0,10) looking straight down at the ground z=0: planar depth 10 everywhere
    v, t = quad([-100, -100, 0], [200, 0, 0], [0, 200, 0])
    K = np.array([[30.0, 0, 20], [0, 30.0, 20], [0, 0, 1]])
    E = look_at([0, 0, 10], [0, 0, 0])
    s = render([Mesh(v, t)], K, E, (40, 40))
    np.testing.assert_allclose(s.depth, 10.0, atol=1e-4)


def test_open3d_mesh_is_accepted():
    import open3d as o3d

    box = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 1.0).translate((-0.5, -0.5, 2.0))  # front face at z = 2
    K = np.array([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    s = render([Mesh.from_open3d(box)], K, np.eye(4), (16, 16))
    assert s.depth[8, 8] == pytest.approx(2.0, abs=1e-6)
    tbox = o3d.t.geometry.TriangleMesh.from_legacy(box)
    s2 = render([Mesh.from_open3d(tbox)], K, np.eye(4), (16, 16))
    np.testing.assert_array_equal(s.depth, s2.depth)


def _sphere_planar_depth(u: int, v: int, f: float, cx: float, cy: float, D: float, r: float) -> float:
    """Ray d = ((u+.5-cx)/f, (v+.5-cy)/f, 1) from the origin against the sphere |x - (0,0,D)| = r.
    t solves |t d|^2 - 2 t D d_z + D^2 - r^2 = 0; planar z = t * d_z = t."""
    dx, dy = (u + 0.5 - cx) / f, (v + 0.5 - cy) / f
    a = dx * dx + dy * dy + 1
    b = D  # d . c
    c = D * D - r * r
    return (b - math.sqrt(b * b - a * c)) / a


def test_sphere_depth_matches_ray_sphere_intersection():
    D, r, f, cx, cy = 5.0, 1.0, 50.0, 32.5, 32.5
    v, t = uv_sphere([0, 0, D], r, n_lat=256, n_lon=512)  # the -z pole vertex faces the camera
    K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    s = render([Mesh(v, t)], K, np.eye(4), (65, 65), shadows=False)
    # centre pixel: the ray is the optical axis -> z = D - r = 4 exactly
    assert s.depth[32, 32] == pytest.approx(4.0, abs=1e-5)
    # off-centre pixel (u=40, v=30): d = (0.16, -0.04, 1), |d|^2 = 1.0272,
    # t = (5 - sqrt(25 - 1.0272 * 24)) / 1.0272 = (5 - 0.589236) / 1.0272 = 4.293968
    expected = _sphere_planar_depth(40, 30, f, cx, cy, D, r)
    assert expected == pytest.approx(4.293968, abs=1e-5)
    assert s.depth[30, 40] == pytest.approx(expected, abs=2e-4)
    # a pixel whose ray misses the sphere is invalid: |d_perp| / |d| > r / D needs dx > 0.2041
    assert not s.valid[32, 64] and s.depth[32, 64] == 0
    # silhouette: all pixels with tan(angle) < r / sqrt(D^2 - r^2) - margin hit
    uu, vv = np.meshgrid(np.arange(65), np.arange(65))
    rho = np.hypot((uu + 0.5 - cx) / f, (vv + 0.5 - cy) / f)
    lim = r / math.sqrt(D * D - r * r)
    assert s.valid[rho < lim - 0.01].all() and not s.valid[rho > lim + 0.01].any()


def _box_blocks(p: np.ndarray, L: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Slab test: does the ray p + s L (s > 0) hit the box [lo, hi]? p (N,3), L (3,)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - p) / L
        t2 = (hi - p) / L
    tmin = np.minimum(t1, t2).max(1)
    tmax = np.maximum(t1, t2).min(1)
    return (tmax >= np.maximum(tmin, 0))


def test_box_casts_shadow_on_floor_where_geometry_says():
    H = W = 96
    floor = Mesh(*quad([-20, -20, 0], [40, 0, 0], [0, 40, 0]), Material(color=(1, 1, 1)))
    box = Mesh(*boxes([[0, 0, 0.5]], [[1, 1, 1]]), Material(color=(0.5, 0.5, 0.5)))
    K = np.array([[60.0, 0, 48], [0, 60.0, 48], [0, 0, 1]])
    E = look_at([0, -4, 4], [0, 0, 0])
    L = np.array([-1.0, 1.0, 1.5])
    L /= np.linalg.norm(L)
    light = Light(direction=tuple(L), ambient=0.3)
    on = render([floor, box], K, E, (H, W), light=light, shadows=True)
    off = render([floor, box], K, E, (H, W), light=light, shadows=False)
    # back-project to world points; floor pixels have z ~ 0
    uu, vv = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    cam = np.stack([(uu - 48) / 60 * on.depth, (vv - 48) / 60 * on.depth, on.depth], -1).reshape(-1, 3)
    R, tr = E[:3, :3], E[:3, 3]
    world = (cam - tr) @ R  # R^T (x - t)
    floor_px = (np.abs(world[:, 2]) < 1e-3) & on.valid.ravel()
    shadow = _box_blocks(world, L, np.array([-0.5, -0.5, 0.0]), np.array([0.5, 0.5, 1.0])) & floor_px
    assert shadow.sum() > 100
    lum_on = on.rgb.reshape(-1, 3).mean(1)
    lum_off = off.rgb.reshape(-1, 3).mean(1)
    ambient = 0.3 ** (1 / 2.2)  # white floor, normal +z: ambient * (0.75 + 0.25) = 0.3, gamma 2.2
    darker = lum_on < lum_off - 0.05
    agree = (darker[floor_px] == shadow[floor_px]).mean()
    assert agree > 0.99
    np.testing.assert_allclose(lum_on[shadow & darker], ambient, atol=1e-3)
    # lit floor is untouched by the shadow pass
    lit = floor_px & ~shadow & ~darker
    np.testing.assert_array_equal(lum_on[lit], lum_off[lit])


def test_point_light_shadow_stops_at_the_light():
    # a box ABOVE a point light must not shadow the floor below it
    floor = Mesh(*quad([-20, -20, 0], [40, 0, 0], [0, 40, 0]), Material(color=(1, 1, 1)))
    lid = Mesh(*boxes([[0, 0, 3.0]], [[4, 4, 0.1]]))
    K = np.array([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]])
    E = look_at([0, -0.01, 2.0], [0, 0, 0])
    light = Light(position=(0, 0, 2.5), ambient=0.2)
    on = render([floor, lid], K, E, (32, 32), light=light, shadows=True)
    off = render([floor, lid], K, E, (32, 32), light=light, shadows=False)
    assert on.meta["shadowed_pixels"] == 0
    np.testing.assert_array_equal(on.rgb, off.rgb)


def test_supersampling_antialiases_rgb_but_keeps_centre_depth():
    a = render_scene(21, (24, 32), "indoor", supersample=1)
    b = render_scene(21, (24, 32), "indoor", supersample=3)
    np.testing.assert_allclose(a.depth, b.depth, rtol=1e-6)  # same centre rays up to float rounding
    np.testing.assert_array_equal(a.valid, b.valid)
    assert a.rgb.shape == b.rgb.shape and not np.array_equal(a.rgb, b.rgb)
    # a plane covering x/z >= -0.02 at z = 3, lit by ambient only (light behind it): linear value
    # 1 * (0.75 + 0.25 * n_z) = 0.5 with n_z = -1 (turned to the camera); sky black
    v, t = quad([-0.06, -50, 3], [100, 0, 0], [0, 100, 0])
    K = np.array([[10.0, 0, 2.5], [0, 10.0, 2.5], [0, 0, 1]])
    kw = dict(light=Light(direction=(0, 0, 1), ambient=1.0), sky=((0, 0, 0), (0, 0, 0)), shadows=False)
    s1 = render([Mesh(v, t, Material(color=(1, 1, 1)))], K, np.eye(4), (5, 5), **kw)
    s3 = render([Mesh(v, t, Material(color=(1, 1, 1)))], K, np.eye(4), (5, 5), supersample=3, **kw)
    assert s1.rgb[2, 3, 0] ** 2.2 == pytest.approx(0.5, abs=1e-5)
    # pixel column 2 has sub-ray columns at x/z = -1/30, 0, +1/30: two of three hit
    assert s3.rgb[2, 2, 0] ** 2.2 == pytest.approx(0.5 * 2 / 3, abs=1e-4)
    assert s3.rgb[2, 3, 0] ** 2.2 == pytest.approx(0.5, abs=1e-5)
    assert s1.valid[2, 2] and s3.valid[2, 2] and not s1.valid[2, 1]
    with pytest.raises(ValueError, match="`supersample`"):
        render_scene(0, 16, supersample=2)


def test_material_rejects_unknown_pattern():
    with pytest.raises(ValueError, match="`pattern`"):
        Material(pattern="plaid")


def test_render_scene_rejects_bad_kind():
    with pytest.raises(ValueError, match="`kind`"):
        render_scene(0, 32, "underwater")


def test_write_dataset_npy_is_exact_and_resumable(tmp_path):
    out = write_dataset(tmp_path / "ds", 3, seed0=7, size=(24, 32), kind="mixed")
    cfg = tomllib.loads((out / "dataset.toml").read_text())
    assert cfg["depth"] == {"units": "m", "scale": 1.0, "kind": "depth", "invalid_value": 0, "format": "npy"}
    import cv2

    for i in range(3):
        s = render_scene(7 + i, (24, 32), "mixed")
        d = np.load(out / "depth" / f"{i:06d}.npy")
        assert d.dtype == np.float32 and d.shape == (24, 32)
        np.testing.assert_array_equal(d, s.depth)
        rgb = cv2.imread(str(out / "rgb" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
        np.testing.assert_array_equal(rgb, np.round(s.rgb * 255).astype(np.uint8))
    mtime = (out / "depth" / "000001.npy").stat().st_mtime_ns
    write_dataset(out, 4, seed0=7, size=(24, 32), kind="mixed")  # resumes: keeps 0-2, adds 3
    assert (out / "depth" / "000001.npy").stat().st_mtime_ns == mtime
    assert (out / "depth" / "000003.npy").exists()
    assert not list(out.rglob("*.tmp*"))
    import json

    meta = json.loads((out / "meta" / "000002.json").read_text())
    assert meta["seed"] == 9 and len(meta["K"]) == 3 and "timings_ms" not in meta


def test_write_dataset_refuses_a_folder_with_other_settings(tmp_path):
    from betterdepth_cli.core.types import OutputError

    out = write_dataset(tmp_path / "ds", 1, seed0=0, size=(16, 16), kind="indoor")
    write_dataset(out, 2, seed0=0, size=(16, 16), kind="indoor")  # same settings: extends
    with pytest.raises(OutputError, match=r"other settings \(seed0 0 there, 5 asked, kind 'indoor' there, 'outdoor' asked\)"):
        write_dataset(out, 2, seed0=5, size=(16, 16), kind="outdoor")
    with pytest.raises(OutputError, match="depth_format"):
        write_dataset(out, 2, seed0=0, size=(16, 16), kind="indoor", depth_format="png16")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        write_dataset(tmp_path / "other", 1, size=16)


def test_the_generator_digest_follows_the_rendering_code(tmp_path):
    import shutil

    from training.synthetic import writer

    here = Path(writer.__file__).parent
    assert writer.generator_digest() == writer.generator_digest(here)
    assert len(writer.generator_digest()) == 16 and int(writer.generator_digest(), 16) >= 0
    for name in writer.RENDERING_MODULES:
        shutil.copy(here / f"{name}.py", tmp_path / f"{name}.py")
    assert writer.generator_digest(tmp_path) == writer.generator_digest()
    (tmp_path / "textures.py").write_text((here / "textures.py").read_text() + "\n# one more line\n")
    assert writer.generator_digest(tmp_path) != writer.generator_digest()
    (tmp_path / "unrelated.py").write_text("x = 1\n")  # only the rendering modules count
    (tmp_path / "textures.py").write_text((here / "textures.py").read_text())
    assert writer.generator_digest(tmp_path) == writer.generator_digest()


def test_write_dataset_refuses_to_extend_a_folder_of_another_generator_version(tmp_path):
    from betterdepth_cli.core.types import OutputError
    from training.synthetic.writer import generator_digest

    out = write_dataset(tmp_path / "ds", 1, seed0=0, size=(16, 16), kind="indoor")
    toml = (out / "dataset.toml").read_text()
    assert tomllib.loads(toml)["source"]["generator_digest"] == generator_digest()
    (out / "dataset.toml").write_text(toml.replace(generator_digest(), "0123456789abcdef"))
    with pytest.raises(OutputError, match="another version of the scene generator.*0123456789abcdef"):
        write_dataset(out, 2, seed0=0, size=(16, 16), kind="indoor")
    assert not (out / "rgb" / "000001.png").exists()  # nothing written
    # a folder written before the digest was recorded: extended as before (its version is unknown)
    lines = [ln for ln in toml.splitlines() if not ln.startswith("generator_digest")]
    (out / "dataset.toml").write_text("\n".join(lines) + "\n")
    write_dataset(out, 2, seed0=0, size=(16, 16), kind="indoor")
    assert (out / "rgb" / "000001.png").exists()


def test_write_dataset_png16_round_trip(tmp_path):
    import cv2

    out = write_dataset(tmp_path / "ds", 2, seed0=1, size=(24, 24), kind="indoor", depth_format="png16")
    scale = tomllib.loads((out / "dataset.toml").read_text())["depth"]["scale"]
    assert scale == 0.001
    s = render_scene(2, (24, 24), "indoor")
    q = cv2.imread(str(out / "depth" / "000001.png"), cv2.IMREAD_UNCHANGED)
    assert q.dtype == np.uint16
    np.testing.assert_allclose(q * scale, s.depth, atol=0.0005 + 1e-7)
    assert ((q > 0) == s.valid).all()


def test_workers_give_the_same_files(tmp_path):
    a = write_dataset(tmp_path / "a", 4, seed0=0, size=(16, 16), workers=1)
    b = write_dataset(tmp_path / "b", 4, seed0=0, size=(16, 16), workers=2)
    for i in range(4):
        for sub, ext in (("rgb", "png"), ("depth", "npy")):
            assert (a / sub / f"{i:06d}.{ext}").read_bytes() == (b / sub / f"{i:06d}.{ext}").read_bytes()


def _invoke(args):
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    # Typer runs a lone command without its name; with several commands it needs "synth"
    single = len(app.registered_commands) == 1 and app.registered_callback is None and not app.registered_groups
    return CliRunner().invoke(app, args if single else ["synth", *args])


def test_cli_synth_writes_dataset_and_reports_progress(tmp_path):
    res = _invoke(["-n", "2", "-o", str(tmp_path / "ds"), "--seed", "5", "--size", "32x24",
                                   "--kind", "outdoor"])
    assert res.exit_code == 0, res.output
    assert "synth: 2/2 scenes" in res.stderr
    d = np.load(tmp_path / "ds" / "depth" / "000000.npy")
    assert d.shape == (24, 32)
    np.testing.assert_array_equal(d, render_scene(5, (24, 32), "outdoor").depth)


def test_cli_synth_bad_kind_exits_64(tmp_path):
    res = _invoke(["-n", "1", "-o", str(tmp_path / "x"), "--kind", "space"])
    assert res.exit_code == 64
    assert "`--kind` must be one of" in res.stderr


def test_cli_synth_other_settings_exit_73(tmp_path):
    assert _invoke(["-n", "1", "-o", str(tmp_path / "d"), "--size", "16", "-q"]).exit_code == 0
    res = _invoke(["-n", "1", "-o", str(tmp_path / "d"), "--size", "20", "-q"])
    assert res.exit_code == 73
    assert res.stderr.startswith("betterdepth: error: ")
    assert "other settings (size [16, 16] there, [20, 20] asked)" in res.stderr
    again = _invoke(["-n", "2", "-o", str(tmp_path / "d"), "--size", "16"])  # one more scene: one written
    assert again.exit_code == 0 and "wrote 1 scenes" in again.stderr and "(1 were there already)" in again.stderr
