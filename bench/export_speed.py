"""export-ply speed on a 4K map (issue 6), against open3d's own PLY writer.

Writes a synthetic 3840x2160 relative-disparity map (a slanted floor, a back
wall and three spheres, so there are real depth edges) as refine's EXR output,
then times, in the same process:

- export: ``export_depth_file`` (read the EXR, disparity -> depth, edge
  removal, back-projection, normals, normal colours, binary PLY written
  atomically): what ``betterdepth export-ply map.exr -o out.ply`` does after
  start-up;
- write: ``open3d.t.io.write_point_cloud`` of exactly the same points, normals
  and colours (already in memory) to a binary PLY: the floor for any exporter
  that writes through open3d;
- legacy: ``open3d.io.write_point_cloud`` of the same points (float64 PLY),
  for reference.

    python bench/export_speed.py [--width 3840] [--height 2160] [--repeats 3]

The three are timed in turn within each repeat (machine load hits them
alike). Prints the median seconds of each and, last, the ratio of the
medians export / write.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_disparity(w: int, h: int) -> np.ndarray:
    """Inverse depth (H,W) float32 of a floor, a back wall at 8 m and three spheres (pinhole, 60 deg)."""
    f = (w / 2) / np.tan(np.radians(30))
    u = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / f
    v = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / f
    rx, ry = np.meshgrid(u, v)
    depth = np.full((h, w), 8.0, np.float32)  # back wall
    floor = np.where(ry > 1e-3, 1.5 / np.maximum(ry, 1e-3), np.inf)  # floor 1.5 m below the camera
    depth = np.minimum(depth, floor)
    rr = rx * rx + ry * ry + 1.0
    for cx, cy, cz, rad in ((-1.0, 0.5, 4.0, 1.0), (1.2, 0.8, 3.0, 0.7), (0.2, -0.3, 6.0, 1.2)):
        b = rx * cx + ry * cy + cz
        disc = b * b - rr * (cx * cx + cy * cy + cz * cz - rad * rad)
        t = np.where(disc > 0, (b - np.sqrt(np.maximum(disc, 0))) / rr, np.inf)
        depth = np.minimum(depth, t.astype(np.float32))
    return (1.0 / depth).astype(np.float32)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=3840)
    ap.add_argument("--height", type=int, default=2160)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import open3d as o3d

    from betterdepth_cli.io import depth_files
    from betterdepth_cli.io import pointcloud as pc
    from betterdepth_cli.core import camera as cam
    from betterdepth_cli.core import depth_values as dv
    from betterdepth_cli.core import geometry as geo

    tmp = Path(tempfile.mkdtemp(prefix="bd-export-bench-"))
    src = tmp / "plate.exr"
    depth_files.write_exr(src, synthetic_disparity(args.width, args.height), kind="disparity", metric=False)
    out = tmp / "plate.ply"

    def export():
        return pc.export_depth_file(src, out, fov=60.0)

    summary = export()  # warm-up: imports, page cache
    n = summary["points"]

    # the same arrays the exporter wrote, rebuilt outside the timing
    values, meta = pc.load_map(src)
    depth, valid, _ = dv.to_depth(values, meta["kind"], metric=meta["metric"])
    K = cam.intrinsics_from_fov(args.width, args.height, 60.0)
    geom = geo.depth_to_geometry(depth, valid, K)
    assert len(geom.points) == n
    del values, depth, valid
    T = o3d.core.Tensor.from_numpy
    tpc = o3d.t.geometry.PointCloud()
    tpc.point.positions = T(geom.points)
    tpc.point.normals = T(geom.normals)
    tpc.point.colors = T(geom.colors)
    ref = tmp / "ref.ply"
    lpc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(geom.points.astype(np.float64)))
    lpc.normals = o3d.utility.Vector3dVector(geom.normals.astype(np.float64))
    lpc.colors = o3d.utility.Vector3dVector(geom.colors.astype(np.float64) / 255.0)
    legacy = tmp / "legacy.ply"
    o3d.t.io.write_point_cloud(str(ref), tpc, write_ascii=False)  # warm-up

    # interleaved, so that load from other processes hits all three alike
    t_export, t_write, t_legacy = [], [], []
    for _ in range(args.repeats):
        t_export.append(timed(export, 1)[0])
        t_write.append(timed(lambda: o3d.t.io.write_point_cloud(str(ref), tpc, write_ascii=False), 1)[0])
        t_legacy.append(timed(lambda: o3d.io.write_point_cloud(str(legacy), lpc, write_ascii=False), 1)[0])
    t_export, t_write, t_legacy = (statistics.median(t) for t in (t_export, t_write, t_legacy))

    size_mb = out.stat().st_size / 1e6
    same = out.stat().st_size == ref.stat().st_size
    for p in (src, out, ref, legacy):
        os.remove(p)
    os.rmdir(tmp)

    print(f"map: {args.width}x{args.height} relative disparity (EXR), {n:,} points "
          f"({summary['edge_pixels_removed']:,} edge pixels removed), PLY {size_mb:.0f} MB, same size as open3d's: {same}")
    print(f"export-ply (read + math + write): {t_export:.2f} s")
    print(f"open3d t.io.write_point_cloud of the same points: {t_write:.2f} s")
    print(f"open3d io.write_point_cloud (legacy, float64): {t_legacy:.2f} s")
    print(f"ratio export / open3d write: {t_export / t_write:.2f}")


if __name__ == "__main__":
    main()
