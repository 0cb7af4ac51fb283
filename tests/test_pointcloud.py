"""Back-projection, normals, edge removal, meshes, intrinsics and PLY writing (io/pointcloud, io/intrinsics).

Every expected value is worked out by hand in the comments.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from betterdepth_cli.core.types import InputDataError, NoInputError, OutputError, UsageError
from betterdepth_cli.core import camera as cam
from betterdepth_cli.core import depth_values as dv
from betterdepth_cli.core import geometry as geo
from betterdepth_cli.io import intrinsics as ki
from betterdepth_cli.io import outputs
from betterdepth_cli.io import depth_files
from betterdepth_cli.io import pointcloud as pc
from betterdepth_cli.jobs import export_plan as ep

o3d = pytest.importorskip("open3d")


def real_data_root() -> Path:
    env = os.environ.get("BETTERDEPTH_REAL_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def plane_depth(h: int, w: int, K: np.ndarray, m: np.ndarray, c: float) -> np.ndarray:
    """Planar depth of the plane m . P = c seen through K: Z = c / (m . r), r = ((u-cx)/fx, (v-cy)/fy, 1)."""
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rx, ry = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    return (c / (m[0] * rx + m[1] * ry + m[2])).astype(np.float32)


# --------------------------------------------------------------------------- intrinsics


def test_intrinsics_from_fov_90_degrees():
    # fx = (W/2) / tan(45 deg) = W/2 = 50; principal point at ((W-1)/2, (H-1)/2)
    K = cam.intrinsics_from_fov(100, 60, 90.0)
    np.testing.assert_allclose(K, [[50, 0, 49.5], [0, 50, 29.5], [0, 0, 1]], atol=1e-12)
    assert cam.fov_from_intrinsics(K, 100) == pytest.approx(90.0)


def test_intrinsics_reject_bad_values():
    with pytest.raises(UsageError, match="--fov"):
        cam.intrinsics_from_fov(100, 60, 180.0)
    with pytest.raises(UsageError, match="--focal"):
        cam.intrinsics_from_focal(100, 60, -5.0)
    with pytest.raises(UsageError, match="exclude each other"):
        ki.resolve_intrinsics(100, 60, fov=60.0, focal=50.0)


def test_stride_intrinsics_keeps_backprojection_exact():
    # grid pixel (j, i) of depth[::4, ::4] is full pixel (4j, 4i): both must back-project identically
    K = cam.intrinsics_from_focal(40, 20, 30.0, cx=17.0, cy=9.0)
    depth = np.linspace(1, 3, 800, dtype=np.float32).reshape(20, 40)
    full = geo.backproject(depth, K)
    sub = geo.backproject(depth[::4, ::4], cam.stride_intrinsics(K, 4))
    np.testing.assert_allclose(sub, full[::4, ::4], rtol=1e-6)


def _jpeg_with_exif(path: Path, size, ifd: dict) -> Path:
    from PIL import Image, TiffImagePlugin

    exif = Image.Exif()
    exif[ki.EXIF_IFD] = {tag: (TiffImagePlugin.IFDRational(v) if isinstance(v, float) else v) for tag, v in ifd.items()}
    Image.new("RGB", size, (10, 20, 30)).save(path, exif=exif)
    return path


def test_exif_35mm_focal_is_used(tmp_path):
    # 3:2 image, f35 = 36 mm: the 36 mm frame width maps onto the 60 px width -> fx = 60 px
    img = _jpeg_with_exif(tmp_path / "cam.jpg", (60, 40), {ki.TAG_FOCAL_35MM: 36})
    found = ki.exif_focal(img)
    assert found.focal_px == pytest.approx(60.0)
    # the map is 30x20 (half size): fx scales to 30 px, 2*atan(15/30) = 53.13 deg
    K, desc = ki.resolve_intrinsics(30, 20, image=img)
    assert K[0, 0] == pytest.approx(30.0) and K[1, 1] == pytest.approx(30.0)
    assert K[0, 2] == pytest.approx(14.5) and K[1, 2] == pytest.approx(9.5)
    assert "FocalLengthIn35mmFilm 36" in desc and "53.1 deg" in desc
    # flags win over EXIF
    K2, desc2 = ki.resolve_intrinsics(30, 20, fov=90.0, image=img)
    assert K2[0, 0] == pytest.approx(15.0) and desc2.startswith("--fov 90")


def test_exif_focal_length_with_sensor_width_or_focal_plane(tmp_path):
    # FocalLength 4 mm on a 6 mm wide sensor over 60 px: fx = 4/6*60 = 40 px
    img = _jpeg_with_exif(tmp_path / "phone.jpg", (60, 40), {ki.TAG_FOCAL_LENGTH: 4.0})
    assert ki.exif_focal(img) is None  # no sensor size known: not guessed
    assert ki.exif_focal(img, sensor_width_mm=6.0).focal_px == pytest.approx(40.0)
    # FocalPlaneXResolution 10 px/mm (unit 4 = mm), PixelXDimension 60: fx = 4 mm * 10 px/mm = 40 px
    img2 = _jpeg_with_exif(
        tmp_path / "dslr.jpg", (60, 40),
        {ki.TAG_FOCAL_LENGTH: 4.0, ki.TAG_FOCAL_PLANE_X_RES: 10.0, ki.TAG_FOCAL_PLANE_UNIT: 4, ki.TAG_PIXEL_X_DIMENSION: 60},
    )
    assert ki.exif_focal(img2).focal_px == pytest.approx(40.0)


def test_no_exif_falls_back_to_default_fov(tmp_path):
    from PIL import Image

    img = tmp_path / "plain.png"
    Image.new("RGB", (80, 40)).save(img)
    K, desc = ki.resolve_intrinsics(80, 40, image=img)
    assert cam.fov_from_intrinsics(K, 80) == pytest.approx(cam.DEFAULT_FOV_DEG)
    assert "default 60 deg" in desc


# --------------------------------------------------------------------------- values -> depth


def test_relative_disparity_depth_range_mapping():
    # values 0, 0.01, ..., 1.00 (101 of them): numpy's 2 % and 98 % quantiles are exactly 0.02 and 0.98
    v = np.linspace(0, 1, 101, dtype=np.float32).reshape(1, 101)
    depth, valid, conv = dv.to_depth(v, "disparity", depth_range=(1.0, 10.0))
    assert conv.method == "depth-range" and valid.all()
    # 0.02 -> 1/far = 0.1 -> 10 ; 0.98 -> 1/near = 1 -> 1 ; 0.5 -> 0.1 + 0.48/0.96*0.9 = 0.55 -> 1/0.55
    assert depth[0, 2] == pytest.approx(10.0, rel=1e-5)
    assert depth[0, 98] == pytest.approx(1.0, rel=1e-5)
    assert depth[0, 50] == pytest.approx(1 / 0.55, rel=1e-5)
    # below the far end: clamped at far (a backdrop); beyond the near end: the line goes on
    assert depth[0, 0] == pytest.approx(10.0, rel=1e-5)
    assert depth[0, 100] == pytest.approx(1 / (0.1 + 1.0 / 0.96 * 0.9 - 0.02 / 0.96 * 0.9), rel=1e-5)
    assert depth[0, 100] < 1.0
    # the default for relative disparity is DEFAULT_DEPTH_RANGE
    d2, _, conv2 = dv.to_depth(v, "disparity")
    np.testing.assert_allclose(d2, depth) if dv.DEFAULT_DEPTH_RANGE == (1.0, 10.0) else None
    assert "default --depth-range" in conv2.description


def test_scale_shift_metric_and_depth_kinds():
    v = np.array([[0.5, 0.25, -1.0, np.nan]], dtype=np.float32)
    # disparity: inv = 2*v + 0 -> 1, 0.5, -2 (invalid), nan (invalid) -> depth 1, 2
    d, ok, conv = dv.to_depth(v, "disparity", scale=2.0)
    assert conv.method == "scale-shift"
    np.testing.assert_array_equal(ok, [[True, True, False, False]])
    np.testing.assert_allclose(d[ok], [1.0, 2.0])
    assert d[0, 2] == 0 and d[0, 3] == 0
    # depth: 2*v + 1 -> 2, 1.5, -1 (invalid)
    d, ok, _ = dv.to_depth(v, "depth", scale=2.0, shift=1.0)
    np.testing.assert_allclose(d[ok], [2.0, 1.5])
    # metric disparity 1/m: 0.5 -> 2 m, 0.25 -> 4 m
    d, ok, conv = dv.to_depth(v, "disparity", metric=True)
    assert conv.method == "metric"
    np.testing.assert_allclose(d[ok], [2.0, 4.0])
    # relative depth is used as it is
    d, ok, conv = dv.to_depth(np.array([[3.0, 4.0]], np.float32), "depth")
    assert conv.method == "as-is" and d.tolist() == [[3.0, 4.0]]
    with pytest.raises(UsageError, match="exclude each other"):
        dv.to_depth(v, "disparity", depth_range=(1, 10), scale=2.0)
    with pytest.raises(UsageError, match="NEAR < FAR"):
        dv.to_depth(v, "disparity", depth_range=(10, 1))


def test_parse_depth_range():
    assert dv.parse_depth_range("0.5, 20") == (0.5, 20.0)
    with pytest.raises(UsageError, match="--depth-range"):
        dv.parse_depth_range("5")
    with pytest.raises(UsageError, match="--depth-range"):
        dv.parse_depth_range("0,3")


# --------------------------------------------------------------------------- geometry


def test_backproject_hand_values():
    # fx=fy=10, cx=1, cy=0.5 on a 2x3 map at z=2: pixel (u=0, v=0) -> ((0-1)/10*2, (0-0.5)/10*2, 2) = (-0.2, -0.1, 2)
    K = cam.intrinsics_from_focal(3, 2, 10.0)
    p = geo.backproject(np.full((2, 3), 2.0, np.float32), K)
    assert p.shape == (2, 3, 3)
    np.testing.assert_allclose(p[0, 0], [-0.2, -0.1, 2.0], atol=1e-7)
    np.testing.assert_allclose(p[1, 2], [0.2, 0.1, 2.0], atol=1e-7)


@pytest.mark.parametrize("axes, z_sign", [("opencv", 1.0), ("opengl", -1.0)])
def test_fronto_parallel_plane(axes, z_sign):
    h, w, z0 = 12, 16, 2.5
    K = cam.intrinsics_from_fov(w, h, 60.0)
    depth = np.full((h, w), z0, np.float32)
    g = geo.depth_to_geometry(depth, np.ones((h, w), bool), K, geo.ExportOptions(axes=axes))
    assert g.points.shape == (h * w, 3) and g.normals.shape == (h * w, 3)
    # coplanar at the known depth (z = +2.5 in OpenCV, -2.5 in OpenGL)
    np.testing.assert_allclose(g.points[:, 2], z_sign * z0, rtol=1e-6)
    # every normal faces the camera: (0, 0, -1) in OpenCV, (0, 0, +1) in OpenGL
    np.testing.assert_allclose(g.normals, np.tile([0, 0, -z_sign], (h * w, 1)), atol=1e-6)
    assert np.all(np.sum(g.normals * g.points, axis=1) < 0)
    # the colour of a camera-facing normal is (n_gl + 1)/2 = (0.5, 0.5, 1) in both frames
    assert (g.colors == [128, 128, 255]).all()
    # y: row 0 is the top of the image: y < 0 in OpenCV (down is +), y > 0 in OpenGL
    assert np.sign(g.points[0, 1]) == -z_sign


def test_tilted_plane_normals():
    # plane X - 2Z = -6 (Z = 3 on the axis); its camera-facing unit normal is (1, 0, -2)/sqrt(5)
    h, w = 20, 24
    K = cam.intrinsics_from_fov(w, h, 50.0)
    m = np.array([1.0, 0.0, -2.0])
    depth = plane_depth(h, w, K, m, -6.0)
    pts = geo.backproject(depth, K)
    assert np.abs(pts[..., 0] - 2 * pts[..., 2] + 6).max() < 1e-4  # on the plane
    n, ok = geo.normals_from_points(pts, np.ones((h, w), bool))
    assert ok.all()
    np.testing.assert_allclose(n, np.broadcast_to(m / math.sqrt(5), n.shape), atol=1e-4)


def test_sphere_normals_are_radial():
    # sphere of radius 2 centred at (0, 0, 5); nearest hit along r = ((u-cx)/fx, (v-cy)/fy, 1):
    # t^2 |r|^2 - 2 t (r.c) + |c|^2 - R^2 = 0, depth = t (r_z = 1); normal = (P - c) / R
    h = w = 64
    K = cam.intrinsics_from_fov(w, h, 60.0)
    c, R = np.array([0.0, 0.0, 5.0]), 2.0
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    r = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones((h, w))], -1)
    a, b, cc = (r * r).sum(-1), -2 * (r @ c), c @ c - R * R
    disc = b * b - 4 * a * cc
    hit = disc > 0
    depth = np.where(hit, (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a), 0).astype(np.float32)
    g = geo.depth_to_geometry(depth, hit, K, geo.ExportOptions(axes="opencv", edge_threshold=0.0))
    radial = (g.points - c) / np.linalg.norm(g.points - c, axis=1, keepdims=True)
    cos = np.sum(g.normals * radial, axis=1)
    view = -g.points / np.linalg.norm(g.points, axis=1, keepdims=True)
    facing = np.sum(radial * view, axis=1) > 0.5  # away from the silhouette (within 60 deg of the view ray)
    assert facing.sum() > 400
    assert np.degrees(np.arccos(np.clip(cos[facing], -1, 1))).max() < 1.0
    assert np.all(np.sum(g.normals * g.points, axis=1) < 0)  # all towards the camera
    # the point cloud lies on the sphere
    np.testing.assert_allclose(np.linalg.norm(g.points - c, axis=1), R, rtol=1e-4)


def test_normals_one_sided_at_borders_and_missing_when_isolated():
    K = cam.intrinsics_from_fov(5, 5, 60.0)
    valid = np.zeros((5, 5), bool)
    valid[0:2, 0:2] = True  # a 2x2 block: every pixel has only one-sided neighbours
    valid[4, 4] = True  # isolated: no normal
    pts = geo.backproject(np.full((5, 5), 1.0, np.float32), K)
    n, ok = geo.normals_from_points(pts, valid)
    assert ok[:2, :2].all() and not ok[4, 4] and ok.sum() == 4
    np.testing.assert_allclose(n[:2, :2], np.broadcast_to([0, 0, -1], (2, 2, 3)), atol=1e-6)


def step_map(h=6):
    # columns 0-3 at 2 m, a flying pixel column 4 at 3 m, columns 5-9 at 4 m
    depth = np.full((h, 10), 4.0, np.float32)
    depth[:, :4] = 2.0
    depth[:, 4] = 3.0
    return depth


def test_edge_mask_flags_both_sides_of_a_jump():
    depth = step_map()
    # |2-3| = 1 > 0.05*2 and |3-4| = 1 > 0.05*3: columns 3, 4, 5 are flagged; nothing else
    m = geo.edge_mask(depth, np.ones(depth.shape, bool), 0.05)
    assert m[:, 3:6].all() and not m[:, :3].any() and not m[:, 6:].any()
    # a jump of 20 % passes a 0.25 threshold but not 0.1 (relative to the nearer pixel)
    two = np.array([[1.0, 1.2]], np.float32)
    assert not geo.edge_mask(two, np.ones((1, 2), bool), 0.25).any()
    assert geo.edge_mask(two, np.ones((1, 2), bool), 0.1).all()
    assert not geo.edge_mask(depth, np.ones(depth.shape, bool), 0.0).any()


def test_depth_step_leaves_no_points_in_the_gap():
    depth = step_map(h=6)
    K = cam.intrinsics_from_fov(10, 6, 60.0)
    g = geo.depth_to_geometry(depth, np.ones(depth.shape, bool), K, geo.ExportOptions(axes="opencv", mesh=True))
    z = g.points[:, 2]
    assert not np.any((z > 2.0 + 1e-6) & (z < 4.0 - 1e-6))
    # columns 0-2 and 6-9 survive: 7 columns x 6 rows
    assert len(z) == 7 * 6 and g.info["edge_pixels_removed"] == 3 * 6
    # no triangle bridges the gap: all three vertices at the same depth
    tz = z[g.triangles]
    assert len(tz) > 0 and np.all(tz.max(1) == tz.min(1))
    # without edge removal the flying column is there
    g0 = geo.depth_to_geometry(depth, np.ones(depth.shape, bool), K, geo.ExportOptions(axes="opencv", edge_threshold=0))
    assert len(g0.points) == 60 and np.sum(g0.points[:, 2] == 3.0) == 6


def test_stride_mesh_cuts_long_edges():
    # a clean 2 m -> 4 m step between full columns 4 and 5; edge removal drops columns 4 and 5.
    # stride 3 keeps grid columns 0, 3 (2 m) and 6, 9 (4 m), rows 0 and 3: 8 points, 3 quads = 6 triangles,
    # and the quad between columns 3 and 6 spans the gap (spread 4/2 - 1 = 1 > 0.05 * 3): cut -> 4 triangles
    depth = np.full((6, 10), 4.0, np.float32)
    depth[:, :5] = 2.0
    K = cam.intrinsics_from_fov(10, 6, 60.0)
    opts = geo.ExportOptions(axes="opencv", mesh=True, stride=3)
    g = geo.depth_to_geometry(depth, np.ones(depth.shape, bool), K, opts)
    assert len(g.points) == 8
    tz = g.points[:, 2][g.triangles]
    assert len(tz) == 4 and np.all(tz.max(1) == tz.min(1))
    # with removal off, nothing is cut: the two bridging triangles come back
    opts.edge_threshold = 0.0
    g0 = geo.depth_to_geometry(depth, np.ones(depth.shape, bool), K, opts)
    assert len(g0.triangles) == 6


def test_grid_triangles_winding_and_masking():
    # 2x2 grid: a=0, b=1, c=2, d=3 -> (a, c, b), (b, c, d)
    tri = geo.grid_triangles(np.ones((2, 2), bool))
    np.testing.assert_array_equal(tri, [[0, 2, 1], [1, 2, 3]])
    # counter-clockwise seen from the camera: the face normal points at it ((0,0,-1) in OpenCV)
    K = cam.intrinsics_from_fov(2, 2, 60.0)
    p = geo.backproject(np.ones((2, 2), np.float32), K).reshape(-1, 3)
    for t in tri:
        fn = np.cross(p[t[1]] - p[t[0]], p[t[2]] - p[t[0]])
        assert fn[2] < 0 and abs(fn[0]) < 1e-9
    valid = np.ones((2, 2), bool)
    valid[1, 1] = False
    np.testing.assert_array_equal(geo.grid_triangles(valid), [[0, 2, 1]])
    # depth spread 1 -> 1.5 > 1 + 0.2: cut; 1 -> 1.1 kept
    z = np.array([[1.0, 1.0], [1.0, 1.5]], np.float32)
    np.testing.assert_array_equal(geo.grid_triangles(np.ones((2, 2), bool), z, 0.2), [[0, 2, 1]])


def test_normal_colors_and_axes():
    n_cv = np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], np.float32)  # facing, right, up (OpenCV y is down)
    np.testing.assert_array_equal(geo.normal_colors(n_cv), [[128, 128, 255], [255, 128, 128], [128, 255, 128]])
    np.testing.assert_array_equal(geo.convert_axes(n_cv, "opengl"), [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert geo.convert_axes(n_cv, "opencv") is n_cv
    with pytest.raises(UsageError, match="--axes"):
        geo.convert_axes(n_cv, "z-up")


def test_depth_colors_near_is_warm():
    rgb = geo.depth_colors(np.array([1.0, 2.0, 4.0, 8.0] * 10, np.float32))
    near, far = rgb[0].astype(int), rgb[3].astype(int)
    assert near[0] > near[2] and far[2] > far[0]  # red near, blue far


def test_rgb_colours_follow_pixels():
    h, w = 4, 6
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.arange(w)[None, :] * 40
    rgb[..., 1] = np.arange(h)[:, None] * 60
    K = cam.intrinsics_from_fov(w, h, 60.0)
    g = geo.depth_to_geometry(np.ones((h, w), np.float32), np.ones((h, w), bool), K, geo.ExportOptions(color="rgb", stride=2), rgb)
    np.testing.assert_array_equal(g.colors, rgb[::2, ::2].reshape(-1, 3))
    with pytest.raises(UsageError, match="--image"):
        geo.depth_to_geometry(np.ones((h, w), np.float32), np.ones((h, w), bool), K, geo.ExportOptions(color="rgb"))


def test_options_are_checked():
    with pytest.raises(UsageError, match="--stride"):
        geo.ExportOptions(stride=0).check()
    with pytest.raises(UsageError, match="--edge-threshold"):
        geo.ExportOptions(edge_threshold=-1).check()
    with pytest.raises(UsageError, match="--color"):
        geo.ExportOptions(color="height").check()


# --------------------------------------------------------------------------- files


def plane_geometry(h=10, w=12, mesh=False, axes="opengl"):
    K = cam.intrinsics_from_fov(w, h, 60.0)
    return geo.depth_to_geometry(np.full((h, w), 3.0, np.float32), np.ones((h, w), bool), K, geo.ExportOptions(mesh=mesh, axes=axes))


def test_point_cloud_ply_reads_back(tmp_path):
    g = plane_geometry()
    out = pc.write_geometry(tmp_path / "sub" / "plane.ply", g)
    head = out.read_bytes()[:400]
    assert b"binary_little_endian" in head and b"property float nx" in head and b"property uchar red" in head
    back = o3d.io.read_point_cloud(str(out))
    assert len(back.points) == 120
    np.testing.assert_allclose(np.asarray(back.normals), np.tile([0, 0, 1], (120, 1)), atol=1e-6)  # OpenGL: +z faces the camera
    np.testing.assert_allclose(np.asarray(back.points)[:, 2], -3.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(back.colors), np.tile([128, 128, 255], (120, 1)) / 255.0, atol=1e-6)
    assert sorted(p.name for p in out.parent.iterdir()) == ["plane.ply"]  # no temporary left behind


@pytest.mark.parametrize("ext", [".ply", ".obj", ".glb"])
def test_mesh_formats_read_back(tmp_path, ext):
    g = plane_geometry(h=4, w=5, mesh=True)
    # a 4x5 grid has 3x4 quads = 24 triangles over 20 vertices
    assert len(g.triangles) == 24
    out = pc.write_geometry(tmp_path / f"plane{ext}", g)
    back = o3d.io.read_triangle_mesh(str(out))
    assert len(back.triangles) == 24 and len(back.vertices) == 20
    assert back.has_vertex_colors()
    if ext == ".obj":
        assert (tmp_path / "plane.mtl").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_extension_and_folder_errors(tmp_path):
    g = plane_geometry()
    with pytest.raises(UsageError, match=r"add --mesh"):
        pc.write_geometry(tmp_path / "plane.obj", g)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="afile"):
        pc.write_geometry(tmp_path / "afile" / "plane.ply", g)


def write_disparity_png(folder: Path, name: str, disp: np.ndarray, source: str = "") -> Path:
    meta = depth_files.make_sidecar(kind="disparity", metric=False, source=source)
    depth_files.write_png16(folder / f"{name}.png", disp, meta=meta)
    return folder / f"{name}.png"


def test_png_without_sidecar_is_a_clear_error(tmp_path):
    p = write_disparity_png(tmp_path, "a", np.linspace(1, 2, 64, dtype=np.float32).reshape(8, 8))
    (tmp_path / "a.json").unlink()
    with pytest.raises(InputDataError, match=r"a\.png: sidecar a\.json is missing .*--assume"):
        pc.load_map(p)
    # --assume reads the raw 16-bit codes (0 is invalid): code 0 at the minimum, 65535 at the maximum
    values, meta = pc.load_map(p, assume="disparity")
    assert meta == {"kind": "disparity", "metric": False}
    assert np.isnan(values[0, 0]) and values[-1, -1] == 65535.0


def test_npy_without_kind_needs_assume(tmp_path):
    depth_files.write_npy(tmp_path / "m.npy", np.ones((4, 4), np.float32))
    with pytest.raises(InputDataError, match=r"m\.npy: the file does not say"):
        pc.load_map(tmp_path / "m.npy")
    assert pc.load_map(tmp_path / "m.npy", assume="depth")[1]["kind"] == "depth"


def test_export_depth_file_end_to_end(tmp_path):
    # a relative disparity sphere-bump written by refine's own writer, exported with --fov 60
    h, w = 24, 32
    yy, xx = np.mgrid[0:h, 0:w]
    disp = (1.0 + 0.3 * np.exp(-((xx - 16) ** 2 + (yy - 12) ** 2) / 60.0)).astype(np.float32)
    p = write_disparity_png(tmp_path, "bump", disp)
    s = pc.export_depth_file(p, tmp_path / "bump.ply", fov=60.0, options=geo.ExportOptions(edge_threshold=0))
    assert s["points"] == h * w and "--fov 60" in s["intrinsics"] and "default --depth-range 1,10" in s["depth"]
    back = o3d.io.read_point_cloud(str(tmp_path / "bump.ply"))
    z = -np.asarray(back.points)[:, 2]  # OpenGL: the scene is at -z
    assert z.min() >= 1.0 * 0.9 and z.max() == pytest.approx(10.0, rel=1e-3)


def test_exif_of_sidecar_source_is_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _jpeg_with_exif(tmp_path / "cam.jpg", (60, 40), {ki.TAG_FOCAL_35MM: 36})
    p = write_disparity_png(tmp_path, "cam", np.linspace(1, 2, 2400, dtype=np.float32).reshape(40, 60), source="cam.jpg")
    s = pc.export_depth_file(p, tmp_path / "cam.ply")
    assert "FocalLengthIn35mmFilm 36" in s["intrinsics"] and s["fx"] == pytest.approx(60.0)
    # a video frame's source is the video: not an image, so the default field of view applies
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    p2 = write_disparity_png(tmp_path, "clip.0003", np.linspace(1, 2, 2400, dtype=np.float32).reshape(40, 60),
                             source="clip.mp4")
    s2 = pc.export_depth_file(p2, tmp_path / "clip.0003.ply")
    assert s2["image"] is None and s2["intrinsics"].startswith("default 60 deg")
    # an image Pillow cannot open has no EXIF to read (it is not an error)
    (tmp_path / "plate.exr").write_bytes(b"v/1\x01" + b"\x00" * 60)
    assert ki.exif_focal(tmp_path / "plate.exr") is None


def test_a_shot_range_maps_one_value_to_one_depth_in_every_frame():
    # two frames of one shot: the second sees only the near half of the scene
    a = np.linspace(0, 1, 101, dtype=np.float32).reshape(1, 101)
    b = np.linspace(0.5, 1, 101, dtype=np.float32).reshape(1, 101)
    own_a, _, _ = dv.to_depth(a, "disparity", depth_range=(1.0, 10.0))
    own_b, _, _ = dv.to_depth(b, "disparity", depth_range=(1.0, 10.0))
    assert own_a[0, 75] != pytest.approx(own_b[0, 50], rel=1e-2)  # the same value 0.75 gives two depths
    shot = (0.02, 0.98)
    da, _, _ = dv.to_depth(a, "disparity", depth_range=(1.0, 10.0), value_range=shot)
    db, _, _ = dv.to_depth(b, "disparity", depth_range=(1.0, 10.0), value_range=shot)
    assert da[0, 75] == pytest.approx(db[0, 50], rel=1e-6) and da[0, 50] == pytest.approx(db[0, 0], rel=1e-6)
    assert pc.shot_range({"shot_range": [0.02, 0.98]}) == shot and pc.shot_range({"shot_range": "x"}) is None


def test_sidecar_source_resolves_from_the_sidecar_folder(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    _jpeg_with_exif(tmp_path / "photos" / "cam.jpg", (60, 40), {ki.TAG_FOCAL_35MM: 36})
    p = write_disparity_png(tmp_path / "out", "cam", np.linspace(1, 2, 2400, dtype=np.float32).reshape(40, 60),
                            source="../photos/cam.jpg")
    monkeypatch.chdir(tmp_path / "photos")  # somewhere else: the source still resolves from out/
    s = pc.export_depth_file(p, tmp_path / "cam.ply")
    assert s["fx"] == pytest.approx(60.0) and Path(s["image"]).resolve() == (tmp_path / "photos" / "cam.jpg").resolve()


def test_batch_plan_mirrors_names_and_matches_images(tmp_path):
    maps, imgs = tmp_path / "out", tmp_path / "photos"
    disp = np.linspace(1, 2, 64, dtype=np.float32).reshape(8, 8)
    write_disparity_png(maps, "a", disp)
    depth_files.write_exr(maps / "a.exr", disp, kind="disparity", metric=False)  # same base: the EXR is preferred
    write_disparity_png(maps / "shots", "shot.1001", disp)
    outputs.write_uncertainty(maps / "a_uncertainty.exr", disp, kind="disparity", metric=False)
    outputs.write_preview(maps / "a_preview.jpg", disp)
    from PIL import Image

    (imgs / "shots").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(imgs / "a.jpg")
    Image.new("RGB", (8, 8)).save(imgs / "shots" / "shot.1001.png")
    jobs, bare = ep.plan_batch(maps, tmp_path / "ply", ".ply", imgs)
    assert bare == []
    got = [(j.map_path.relative_to(maps).as_posix(), j.out_path.relative_to(tmp_path).as_posix(),
            j.image.relative_to(imgs).as_posix()) for j in jobs]
    assert got == [("a.exr", "ply/a.ply", "a.jpg"), ("shots/shot.1001.png", "ply/shots/shot.1001.ply", "shots/shot.1001.png")]
    # a folder with only a sidecar-less PNG: nothing to do, and the error says why
    with pytest.raises(NoInputError, match=r"no depth maps .*1 \.png without sidecar: pass --assume"):
        ep.plan_batch(imgs / "shots", tmp_path / "x")
    jobs, _ = ep.plan_batch(imgs / "shots", tmp_path / "x", bare_png=True)
    assert [j.map_path.name for j in jobs] == ["shot.1001.png"]


def test_load_rgb_resizes_same_aspect_and_rejects_others(tmp_path):
    from PIL import Image

    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 20:] = 200
    Image.fromarray(img).save(tmp_path / "i.png")
    small = pc.load_rgb(tmp_path / "i.png", 20, 10)
    assert small.shape == (10, 20, 3) and small[0, 0, 0] == 0 and small[0, -1, 0] == 200
    with pytest.raises(InputDataError, match="different aspect"):
        pc.load_rgb(tmp_path / "i.png", 20, 20)


@pytest.mark.real_data
def test_middlebury_disparity_to_point_cloud(tmp_path):
    root = real_data_root() / "middlebury2005" / "Art"
    if not (root / "disp1.png").is_file():
        pytest.skip("real data not available")
    # 8-bit ground-truth disparity, 0 = unknown; Z = 160*3740/(2*value/... ) spans about 1.2-2.9 m
    s = pc.export_depth_file(root / "disp1.png", tmp_path / "art.ply", image=root / "view1.png", assume="disparity",
                             focal=3740 / 2, depth_range=(1.2, 2.9), options=geo.ExportOptions(color="rgb", stride=2))
    back = o3d.io.read_point_cloud(str(tmp_path / "art.ply"))
    assert len(back.points) == s["points"] > 50_000
    z = -np.asarray(back.points)[:, 2]
    assert 1.0 < np.median(z) < 2.9


def test_fast_pinhole_normals_match_the_general_cross_product():
    # depth_to_geometry uses a 4-difference shortcut; it must equal normals_from_points on any depth
    rng = np.random.default_rng(0)
    h, w = 17, 23
    depth = (2.0 + rng.random((h, w))).astype(np.float32)
    valid = rng.random((h, w)) > 0.2
    K = cam.intrinsics_from_focal(w, h, 20.0, cx=9.0, cy=7.5)
    n_ref, ok_ref = geo.normals_from_points(geo.backproject(depth, K), valid)
    xs, ys = geo._ray_slopes(depth.shape, K)
    (nx, ny, nz), ok = geo._pinhole_normal_planes(geo.backproject_planes(depth, K), xs, ys, valid)
    np.testing.assert_array_equal(ok, ok_ref)
    np.testing.assert_allclose(np.stack([nx, ny, nz], -1)[ok], n_ref[ok], atol=2e-5)


def test_decimated_normals_do_not_reach_across_gaps():
    # W=7, stride 3: grid columns 0, 3 (2 m) and 6 (4 m); full-res edge removal drops columns 4 and 5 only,
    # so column 6's only row neighbour on the grid is column 3, across the gap: it must get no normal
    depth = np.full((7, 7), 4.0, np.float32)
    depth[:, :5] = 2.0
    K = cam.intrinsics_from_fov(7, 7, 60.0)
    g = geo.depth_to_geometry(depth, np.ones(depth.shape, bool), K, geo.ExportOptions(axes="opencv", stride=3))
    assert len(g.points) == 2 * 3 and np.all(g.points[:, 2] == 2.0)
    np.testing.assert_allclose(g.normals, np.tile([0, 0, -1], (6, 1)), atol=1e-6)


def test_mesh_has_no_loose_vertices():
    # a rough surface: some triangles are cut (diagonal spreads), their lone corners must leave the mesh
    rng = np.random.default_rng(1)
    depth = (2.0 * (1 + 0.03 * rng.standard_normal((20, 20)))).astype(np.float32)
    K = cam.intrinsics_from_fov(20, 20, 60.0)
    opts = geo.ExportOptions(axes="opencv", edge_threshold=0.08)
    cloud = geo.depth_to_geometry(depth, np.ones(depth.shape, bool), K, opts)
    opts.mesh = True
    mesh = geo.depth_to_geometry(depth, np.ones(depth.shape, bool), K, opts)
    assert len(mesh.points) < len(cloud.points)
    assert np.array_equal(np.unique(mesh.triangles), np.arange(len(mesh.points)))
    # every mesh vertex is one of the cloud's points, with the same normal
    lookup = {tuple(p): i for i, p in enumerate(cloud.points.tolist())}
    idx = np.array([lookup[tuple(p)] for p in mesh.points.tolist()])
    np.testing.assert_array_equal(mesh.normals, cloud.normals[idx])
    z = mesh.points[:, 2][mesh.triangles]
    assert np.all(z.max(1) <= 1.08 * z.min(1) * (1 + 1e-6))
    with pytest.raises(InputDataError, match="no triangle"):
        one = np.zeros((4, 4), bool)
        one[1:3, 1] = True
        one[1, 2] = True
        geo.depth_to_geometry(np.ones((4, 4), np.float32), one, K[:], geo.ExportOptions(mesh=True))


@pytest.mark.parametrize("band, workers", [(5, 1), (4, 3), (1000, 2)])
def test_banded_normals_equal_one_piece(band, workers):
    rng = np.random.default_rng(2)
    h, w = 23, 11
    depth = (2.0 + rng.random((h, w))).astype(np.float32)
    valid = rng.random((h, w)) > 0.15
    K = cam.intrinsics_from_focal(w, h, 15.0)
    xs, ys = geo._ray_slopes(depth.shape, K)
    planes = geo.backproject_planes(depth, K)
    (rx, ry, rz), rok = geo._pinhole_normal_planes(planes, xs, ys, valid, 0.3)
    (bx, by, bz), bok = geo._pinhole_normals_banded(planes, xs, ys, valid, 0.3, band=band, workers=workers)
    np.testing.assert_array_equal(bok, rok)
    for r, b in ((rx, bx), (ry, by), (rz, bz)):
        np.testing.assert_array_equal(b[rok], r[rok])


# --------------------------------------------------------------------------- QA round 20: limits, sidecars, temporaries, EXR


def test_depths_beyond_float32_geometry_are_left_out_and_counted(tmp_path):
    import warnings

    depth = np.full((4, 4), 2.0, np.float32)
    depth[0, 0] = 1e12  # its normal would overflow float32: (1e12)^4
    np.save(tmp_path / "m.npy", depth)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        s = pc.export_depth_file(tmp_path / "m.npy", tmp_path / "m.ply", assume="depth", fov=90.0)
    assert not [w for w in seen if issubclass(w.category, RuntimeWarning)]
    # the 15 others: each keeps a row and a column neighbour, so a normal
    assert s["out_of_range"] == 1 and s["points"] == 15
    np.save(tmp_path / "tiny.npy", np.full((4, 4), 1e-7, np.float32))  # below 1e-6 everywhere: nothing to build
    with pytest.raises(InputDataError, match=r"tiny\.npy: `relative depth used as is` gives depths 1e-07\.\.1e-07, "
                                             r"none within the 1e-06\.\.1e\+08 that float32 .* `--scale`/`--shift`"):
        pc.export_depth_file(tmp_path / "tiny.npy", tmp_path / "tiny.ply", assume="depth")
    with pytest.raises(UsageError, match=r"m\.npy: `depth = 1e\+20 \* value \+ 0` gives depths 2e\+20\.\.1e\+32"):
        pc.export_depth_file(tmp_path / "m.npy", tmp_path / "m.ply", assume="depth", scale=1e20)


def test_scale_and_shift_must_fit_float32():
    pc.check_scale_shift(1e-30, -5.0)  # fine: 1e-30 is a (normal) float32
    pc.check_scale_shift(None, None)
    for scale, shift in ((1e-50, None), (0.0, None), (1e39, None), (float("nan"), None)):
        with pytest.raises(UsageError, match="`--scale` must be non-zero and finite, within float32"):
            pc.check_scale_shift(scale, shift)
    with pytest.raises(UsageError, match="`--shift` must be finite, at most 3.4e\\+38"):
        pc.check_scale_shift(2.0, 1e39)


def test_a_sidecar_whose_size_is_not_the_maps_is_refused(tmp_path):
    a = write_disparity_png(tmp_path, "a", np.linspace(1, 2, 48, dtype=np.float32).reshape(6, 8))
    b = write_disparity_png(tmp_path, "b", np.linspace(1, 2, 20, dtype=np.float32).reshape(4, 5))
    (tmp_path / "b.json").write_text((tmp_path / "a.json").read_text())  # a's sidecar (8x6) beside b (5x4)
    with pytest.raises(InputDataError, match=r"b\.json: the sidecar is for a 8x6 map, but .*b\.png is 5x4 "):
        pc.load_map(b)
    assert pc.load_map(a)[0].shape == (6, 8)
    # a .npy's sidecar says its size too
    np.save(tmp_path / "c.npy", np.ones((4, 5), np.float32))
    (tmp_path / "c.json").write_text((tmp_path / "a.json").read_text())
    with pytest.raises(InputDataError, match=r"c\.json: the sidecar is for a 8x6 map, but .*c\.npy is 5x4 "):
        pc.load_map(tmp_path / "c.npy")
    side = depth_files.read_sidecar(tmp_path / "a.json")
    (tmp_path / "c.json").write_text(__import__("json").dumps({**side, "width": "5", "height": 4.0}))
    assert pc.load_map(tmp_path / "c.npy")[0].shape == (4, 5)  # "5" and 4.0 are whole numbers
    (tmp_path / "c.json").write_text(__import__("json").dumps({**side, "width": "five", "height": 4}))
    with pytest.raises(InputDataError, match=r"c\.json: sidecar width/height must be whole numbers, got 'five', 4"):
        pc.load_map(tmp_path / "c.npy")


def test_remove_stale_temps_only_takes_this_targets_old_ones(tmp_path):
    import time

    old = time.time() - 60
    stale_file = tmp_path / ".x.ply.tmp-ab12.ply"  # a refine-style temporary file of x.ply
    stale_file.write_bytes(b"partial")
    folder = tmp_path / ".x.ply.tmp-cd34"
    folder.mkdir()
    (folder / "x.ply").write_bytes(b"partial")
    for p in (stale_file, folder / "x.ply", folder):
        os.utime(p, (old, old))
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / ".x.ply.tmp-link"
    link.symlink_to(tmp_path / "elsewhere")  # never followed nor removed
    fresh = tmp_path / ".x.ply.tmp-ef56"
    fresh.mkdir()
    (fresh / "x.ply").write_bytes(b"being written")  # written to after `before`: a live run's
    assert pc.remove_stale_temps(tmp_path / "x.ply", before=time.time() - 1) == 2
    assert not stale_file.exists() and not folder.exists()
    assert link.is_symlink() and fresh.exists() and (tmp_path / "elsewhere").is_dir()


def test_write_geometry_names_its_temporary_after_the_target(tmp_path, monkeypatch):
    seen = []
    real = o3d.t.io.write_point_cloud

    def spy(path, pcd, **kw):
        seen.append(Path(path))
        return real(path, pcd, **kw)

    monkeypatch.setattr(o3d.t.io, "write_point_cloud", spy)
    pc.write_geometry(tmp_path / "p.ply", plane_geometry())
    assert seen[0].parent.parent == tmp_path and seen[0].name == "p.ply"
    assert seen[0].parent.name.startswith(".p.ply.tmp-")  # what remove_stale_temps looks for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.ply"]


def test_truncated_exr_is_one_error_without_the_librarys_lines(tmp_path, capfd):
    rng = np.random.default_rng(0)
    whole = depth_files.write_exr(tmp_path / "w.exr", rng.random((64, 64), np.float32) + 1, kind="depth", metric=True)
    data = whole.read_bytes()
    (tmp_path / "t.exr").write_bytes(data[: len(data) // 2])
    capfd.readouterr()
    with pytest.raises(InputDataError, match=r"t\.exr: not a readable EXR \(truncated or corrupt: EXR_ERR_BAD_CHUNK_LEADER\)$"):
        pc.load_map(tmp_path / "t.exr")
    assert capfd.readouterr() == ("", "")  # neither OpenEXR's fd-2 lines nor its py::print on sys.stdout
    values, meta = pc.load_map(whole)  # a whole file still reads, and stderr works again afterwards
    assert values.shape == (64, 64) and meta["kind"] == "depth"
    print("after", file=__import__("sys").stderr)
    assert capfd.readouterr().err == "after\n"


def test_exr_reads_on_many_threads_leave_stdout_and_stderr_as_they_were(tmp_path, capfd):
    import sys
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    whole = depth_files.write_exr(tmp_path / "w.exr", rng.random((64, 64), np.float32) + 1, kind="depth", metric=True)
    data = whole.read_bytes()
    (tmp_path / "t.exr").write_bytes(data[: len(data) // 2])
    stdout, stderr = sys.stdout, sys.stderr

    def read(i: int) -> str:
        try:
            pc.load_map(tmp_path / ("t.exr" if i % 2 else "w.exr"))
            return "read"
        except InputDataError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(read, range(24)))
    assert got[0::2] == ["read"] * 12 and all("not a readable EXR" in g for g in got[1::2])
    assert sys.stdout is stdout and sys.stderr is stderr  # no capture restored out of order
    capfd.readouterr()
    print("out")
    print("err", file=sys.stderr)
    assert capfd.readouterr() == ("out\n", "err\n")  # file descriptors 1 and 2 where they were
