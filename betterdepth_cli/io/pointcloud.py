"""Point clouds and meshes from depth-map files: reading the map and its photo, writing PLY/OBJ/GLB with open3d.

The math is in :mod:`betterdepth_cli.core.geometry` (points, normals, triangles, colours) and
:mod:`betterdepth_cli.core.depth_values` (stored values to depth); defaults in one place:
:data:`~betterdepth_cli.core.camera.DEFAULT_FOV_DEG`, :data:`~betterdepth_cli.core.depth_values.DEFAULT_DEPTH_RANGE`,
:data:`~betterdepth_cli.core.geometry.DEFAULT_EDGE_THRESHOLD`.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from betterdepth_cli.core.depth_values import to_depth
from betterdepth_cli.core.geometry import ExportOptions, Geometry, depth_to_geometry
from betterdepth_cli.core.types import InputDataError, OutputError, UsageError
from betterdepth_cli.io.files import TEMP_MARK, last_written, remove_temporaries
from betterdepth_cli.io.images import IMAGE_EXTENSIONS
from betterdepth_cli.io.intrinsics import resolve_intrinsics

IMAGE_EXTS = tuple("." + e for e in IMAGE_EXTENSIONS)  # what io.images.read_image (and refine) reads

POINT_EXTS = (".ply",)
MESH_EXTS = (".ply", ".obj", ".glb")
ASSUME_KINDS = ("disparity", "depth")

#: Depths (map units, after the mapping) whose points and normals float32 holds without overflow or
#: underflow (both fail around 1e10 and 1e-9); pixels outside are left out like invalid ones.
DEPTH_LIMITS = (1e-6, 1e8)
_F32_TINY, _F32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)  # Python floats

#: The temporary folders :func:`write_geometry` used before it named them like atomic_write's.
_OLD_TEMP_DIR = re.compile(r"\.betterdepth-[a-z0-9_]{8}")
_STARTED = time.time()  # write_geometry's default: temporaries untouched since the process began are a killed run's


# --------------------------------------------------------------------------- images
def load_rgb(path: str | Path, width: int, height: int) -> np.ndarray:
    """The source image as (height,width,3) uint8 RGB, at the map's size.

    Read like ``refine`` reads its inputs (:func:`betterdepth_cli.io.images.read_image`:
    EXIF orientation applied, 16-bit and EXR handled). A different size with
    the same aspect ratio (within 1 %) is resized (area filter); another
    aspect raises InputDataError.
    """
    from betterdepth_cli.io.images import read_image

    p = Path(path)
    img = read_image(p)  # (h,w,3) float32 in [0,1]
    h, w = img.shape[:2]
    _check_aspect(p, (w, h), width, height)
    if (w, h) != (width, height):
        import cv2

        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def check_source_image(path: str | Path, width: int, height: int) -> None:
    """InputDataError naming ``path`` unless it is a readable image with the aspect of a ``width`` x
    ``height`` map (within 1 %): the photo the map was made from, whose EXIF and colours export uses."""
    from betterdepth_cli.io.images import read_image_size

    _check_aspect(path, read_image_size(path), width, height)


def _check_aspect(path: str | Path, size: tuple[int, int], width: int, height: int) -> None:
    """InputDataError naming ``path`` when an image of ``size`` (w, h) is not of a ``width`` x ``height``
    map's aspect (within 1 %)."""
    w, h = size
    if abs(w / h - width / height) > 0.01 * (width / height):
        raise InputDataError(f"{path}: the image is {w}x{h}, the depth map {width}x{height} (different aspect)")


# --------------------------------------------------------------------------- writing
def output_kind(path: str | Path, mesh: bool) -> str:
    """Check the output extension: point clouds are .ply, meshes .ply/.obj/.glb."""
    ext = Path(path).suffix.lower()
    allowed = MESH_EXTS if mesh else POINT_EXTS
    if ext not in allowed:
        what = "a mesh" if mesh else "a point cloud (add --mesh for .obj/.glb)"
        raise UsageError(f"{path}: {what} is written as {', '.join(allowed)}, not {ext or 'no extension'!r}")
    return ext


def write_geometry(path: str | Path, geom: Geometry, *, stale_before: float | None = None) -> Path:
    """Write ``geom`` atomically: binary PLY point cloud, or a mesh (PLY/OBJ/GLB).

    Point clouds go through ``open3d.t.io.write_point_cloud`` (float32 x, y, z,
    nx, ny, nz and uchar red, green, blue); meshes through
    ``open3d.t.io.write_triangle_mesh`` (vertex normals and colours). The file
    (and an OBJ's .mtl) is written in a hidden temporary folder next to the target
    (``.<name>.tmp-XXXX``, named like :func:`betterdepth_cli.io.files.atomic_write`'s
    temporaries) and moved into place; the folder is removed whatever happens
    (an error, Ctrl-C, SIGTERM). The temporaries a killed run left for this target
    (:func:`remove_stale_temps`; untouched since ``stale_before``, default: since
    this module was loaded) are removed first.
    """
    import open3d as o3d

    out = Path(path)
    mesh = geom.triangles is not None
    output_kind(out, mesh)
    data = _o3d_geometry(geom)
    if out.parent.exists() and not out.parent.is_dir():
        raise OutputError(f"{out.parent}: a file, not a folder (where {out.name} would go)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out, _STARTED if stale_before is None else stale_before)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}{TEMP_MARK}", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    try:
        target = tmpdir / out.name
        if mesh:
            ok = o3d.t.io.write_triangle_mesh(str(target), data, write_ascii=False)
        else:
            ok = o3d.t.io.write_point_cloud(str(target), data, write_ascii=False)
        if not ok or not target.exists():
            raise OutputError(f"{out}: open3d could not write the file")
        for f in sorted(tmpdir.iterdir()):  # the file, and an OBJ's .mtl
            os.replace(f, out.parent / f.name)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def _o3d_geometry(geom: Geometry):
    """``geom`` as an open3d tensor PointCloud, or a TriangleMesh when it has triangles."""
    import open3d as o3d

    T = o3d.core.Tensor.from_numpy
    if geom.triangles is not None:
        m = o3d.t.geometry.TriangleMesh()
        m.vertex.positions = T(np.ascontiguousarray(geom.points, dtype=np.float32))
        m.vertex.normals = T(np.ascontiguousarray(geom.normals, dtype=np.float32))
        m.vertex.colors = T(np.ascontiguousarray(geom.colors, dtype=np.float32) / np.float32(255.0))
        m.triangle.indices = T(np.ascontiguousarray(geom.triangles, dtype=np.int64))
        return m
    pc = o3d.t.geometry.PointCloud()
    pc.point.positions = T(np.ascontiguousarray(geom.points, dtype=np.float32))
    pc.point.normals = T(np.ascontiguousarray(geom.normals, dtype=np.float32))
    pc.point.colors = T(np.ascontiguousarray(geom.colors, dtype=np.uint8))
    return pc


def remove_stale_temps(out: str | Path, before: float) -> int:
    """Delete what a killed run (SIGKILL, a crash) left beside ``out`` while writing it, if nothing
    has written to it since ``before`` (a live run's temporaries are fresh). Returns how many.

    Only this tool's temporaries of this very target count: hidden ``.<name>.tmp-*`` folders or
    files (:func:`betterdepth_cli.io.files.remove_temporaries`, which ``refine`` uses too), and the
    ``.betterdepth-XXXXXXXX`` folders earlier versions of :func:`write_geometry` used, when they hold
    only this target's files.
    """
    out = Path(out)
    removed = remove_temporaries(out.parent, {out.name}, before)
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return removed
    for e in entries:
        try:
            if _is_old_temp_of(e, out) and last_written(e) < before:
                shutil.rmtree(e.path)
                removed += 1
        except OSError:
            pass
    return removed


def _is_old_temp_of(entry: os.DirEntry, out: Path) -> bool:
    """A ``.betterdepth-XXXXXXXX`` folder of an earlier version holding only this target's files."""
    if entry.is_symlink() or not (_OLD_TEMP_DIR.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)):
        return False
    names = set(os.listdir(entry.path))
    return bool(names) and names <= {out.name, Path(out.name).stem + ".mtl"}


# --------------------------------------------------------------------------- one file, end to end


#: PNG colour types (the IHDR byte after the bit depth) of colour images: RGB, palette, RGB + alpha.
PNG_COLOUR_TYPES = (2, 3, 6)


def _check_png_map(path: Path) -> None:
    """A ``.png`` without its sidecar that is no PNG, or a colour PNG (a photo, not a map), gets the
    reason that comes first (InputDataError), before the missing sidecar would be named."""
    from betterdepth_cli.io.files import read_head
    from betterdepth_cli.io.images import PNG_IHDR_BYTES, png_depth_and_colour, sniff_format

    head = read_head(path, PNG_IHDR_BYTES)
    if sniff_format(head) != "png":
        raise InputDataError(f"{path}: not a PNG (unrecognised file content)")
    header = png_depth_and_colour(head)
    if header is not None and header[1] in PNG_COLOUR_TYPES:
        raise InputDataError(f"{path}: a colour image, not a depth map (refine writes 16-bit grey PNGs "
                             "with a .json sidecar)")


def load_map(path: str | Path, assume: str | None = None) -> tuple[np.ndarray, dict]:
    """A ``refine`` output (.png + sidecar, .exr, .npy) as (values (H,W) float32, meta).

    Invalid pixels are NaN. ``meta["kind"]`` and ``meta["metric"]`` are always
    set on return. A file that does not say what it holds (a PNG without its
    sidecar, an NPY without one, an EXR without ``betterdepth:kind``, or any
    other depth file :func:`betterdepth_cli.io.images.read_depth_map` reads:
    .pfm, .tif, .npz) needs ``assume`` ("disparity" or "depth", taken as
    relative); its raw stored values are used (a 16-bit PNG: 0..65535) and 0
    counts as invalid. Without ``assume`` these raise InputDataError.
    """
    from betterdepth_cli.io import depth_files
    p = Path(path)
    if assume is not None and assume not in ASSUME_KINDS:
        raise UsageError(f"`--assume` must be one of {', '.join(ASSUME_KINDS)}, got {assume!r}")
    ext = p.suffix.lower()
    side = depth_files.sidecar_path(p)
    if (ext == ".png" and not side.is_file()) or ext not in (".png", ".exr", ".npy"):
        if assume is None:
            if ext == ".png":
                _check_png_map(p)
                raise InputDataError(
                    f"{p}: sidecar {side.name} is missing (needed to decode the 16-bit PNG); "
                    "pass --assume disparity|depth to use the raw PNG values"
                )
            raise InputDataError(
                f"{p}: not a refine output (.png with sidecar, .exr, .npy); "
                "pass --assume disparity|depth to use its raw values"
            )
        from betterdepth_cli.io.depth_files import read_depth_map

        values, valid = read_depth_map(p)
        values = np.where(valid, values, np.float32(np.nan)).astype(np.float32)
        meta: dict = {}
    else:
        values, meta = depth_files.load_depth_output(p)
        meta = dict(meta)
        _check_sidecar_size(p, side, values, meta)
    if meta.get("kind") not in ASSUME_KINDS:
        if assume is None:
            raise InputDataError(
                f"{p}: the file does not say whether it holds disparity or depth "
                f"(no sidecar {side.name} or kind attribute); pass --assume disparity|depth"
            )
        meta["kind"] = assume
        meta["metric"] = False
    metric = meta.get("metric", False)
    meta["metric"] = metric is True or str(metric).lower() == "true"
    return values, meta


def _check_sidecar_size(path: Path, side: Path, values: np.ndarray, meta: dict) -> None:
    """A sidecar's ``width``/``height`` (refine writes the map's) must be the map's own: one copied from
    another map would decode it with that map's range and source image."""
    h, w = values.shape[:2]
    given = meta.get("width"), meta.get("height")
    if given == (None, None) or not side.is_file():
        return
    sw, sh = (_whole_number(v) for v in given)
    if sw is None or sh is None:
        raise InputDataError(f"{side}: sidecar width/height must be whole numbers, got {given[0]!r}, {given[1]!r}")
    if (sw, sh) != (w, h):
        raise InputDataError(f"{side}: the sidecar is for a {sw}x{sh} map, but {path} is {w}x{h} "
                             "(a sidecar of another map?)")


def _whole_number(value: Any) -> int | None:
    """``451``, ``451.0`` or ``"451"`` as 451; anything else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def source_image(meta: dict, cwd: str | Path | None = None, sidecar_dir: str | Path | None = None) -> Path | None:
    """The sidecar's ``source`` image when it exists: absolute, or relative to the sidecar's folder
    (how ``refine`` stores it), or, for sidecars written before 2026-12-06, relative to ``cwd``.

    Only still images count (a video frame's source is the video: ``None``).
    """
    src = meta.get("source")
    if not src or not isinstance(src, str) or Path(src).suffix.lower() not in IMAGE_EXTS:
        return None
    p = Path(src)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in ([Path(sidecar_dir)] if sidecar_dir is not None else []) + [Path(cwd or os.getcwd())]:
        if (base / p).is_file():
            return base / p
    return None


def shot_range(meta: dict) -> tuple[float, float] | None:
    """The shot's robust value range a ``refine`` sidecar records for a frame of a shot, else None."""
    r = meta.get("shot_range")
    try:
        lo, hi = (float(v) for v in r)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) and hi > lo else None


def shot_range_of(map_path: str | Path, meta: dict) -> tuple[float, float] | None:
    """The range a frame of a shot is mapped by: the union of the ``shot_range`` every frame of its
    shot in its folder records (:func:`shot_range`). A shot refined whole records one range; a shot
    refined in ``--frames`` chunks by separate jobs records each chunk's, and their union is the
    whole run's (its range is the lowest and highest of the frames' own), so a chunk's frame maps as
    the whole run's does. None for a map that is not a frame of a shot."""
    own = shot_range(meta)
    if own is None or meta.get("frame") is None:
        return own
    from betterdepth_cli.io.outputs import split_frame

    folder = Path(map_path).parent
    stem = split_frame(Path(map_path).stem)[0]
    key = (str(folder.resolve()), stem, _folder_stamp(folder))
    if key not in _SHOT_RANGES:
        ranges = [own]
        for side in folder.glob(f"{glob.escape(stem)}.*.json"):
            if split_frame(side.stem)[0] == stem:
                try:
                    other = shot_range(json.loads(side.read_text()))
                except (OSError, ValueError):
                    other = None
                ranges += [other] if other is not None else []
        _SHOT_RANGES[key] = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    lo, hi = _SHOT_RANGES[key]
    return min(lo, own[0]), max(hi, own[1])


_SHOT_RANGES: dict[tuple, tuple[float, float]] = {}  # (folder, shot, folder mtime) -> the union


def _folder_stamp(folder: Path) -> float:
    try:
        return folder.stat().st_mtime
    except OSError:
        return 0.0


def export_depth_file(
    map_path: str | Path,
    out_path: str | Path,
    *,
    image: str | Path | None = None,
    fov: float | None = None,
    focal: float | None = None,
    cx: float | None = None,
    cy: float | None = None,
    sensor_width: float | None = None,
    depth_range: tuple[float, float] | None = None,
    scale: float | None = None,
    shift: float | None = None,
    assume: str | None = None,
    options: ExportOptions | None = None,
    stale_before: float | None = None,
) -> dict[str, Any]:
    """Read a map, build its point cloud (or mesh) and write it; returns a summary.

    ``image`` (the source RGB) serves EXIF intrinsics and ``color="rgb"``; when
    it is ``None`` the sidecar's ``source`` is used if that file exists. Depths
    outside :data:`DEPTH_LIMITS` are left out (``out_of_range`` counts them);
    ``stale_before``: see :func:`write_geometry`.
    """
    opts = (options or ExportOptions()).check()
    out = Path(out_path)
    output_kind(out, opts.mesh)
    check_scale_shift(scale, shift)
    values, meta = load_map(map_path, assume)
    h, w = values.shape
    img_path = Path(image) if image is not None else source_image(meta, sidecar_dir=Path(map_path).parent)
    if img_path is not None:
        check_source_image(img_path, w, h)
    K, k_desc = resolve_intrinsics(
        w, h, fov=fov, focal=focal, cx=cx, cy=cy, image=img_path, sensor_width=sensor_width
    )
    rgb = load_rgb(img_path, w, h) if (opts.color == "rgb" and img_path is not None) else None
    if opts.color == "rgb" and rgb is None:
        raise UsageError(f"{map_path}: `--color rgb` needs the source image: pass `--image`")
    try:
        depth, valid, conv = to_depth(
            values, meta["kind"], metric=meta["metric"], depth_range=depth_range, scale=scale, shift=shift,
            value_range=shot_range_of(map_path, meta),
        )
        valid, n_out = _within_limits(map_path, depth, valid, conv)
        geom = depth_to_geometry(depth, valid, K, opts, rgb)
    except InputDataError as exc:  # the math does not know the file name
        raise InputDataError(f"{map_path}: {exc}") from None
    write_geometry(out, geom, stale_before=stale_before)
    return {
        "input": str(map_path),
        "output": str(out),
        "image": None if img_path is None else str(img_path),
        "intrinsics": k_desc,
        "depth": conv.description,
        "out_of_range": n_out,
        **geom.info,
    }


def check_scale_shift(scale: float | None, shift: float | None) -> None:
    """``--scale``/``--shift`` a float32 map can take: a finite, non-zero scale and a finite shift,
    neither beyond float32 (nor a scale that is 0 in it); UsageError otherwise."""
    if scale is not None and not (math.isfinite(scale) and _F32_TINY <= abs(scale) <= _F32_MAX):
        raise UsageError(f"`--scale` must be non-zero and finite, within float32 ({_F32_TINY:.3g} to "
                         f"{_F32_MAX:.3g} in size: the maps are float32), got {scale:g}")
    if shift is not None and not (math.isfinite(shift) and abs(shift) <= _F32_MAX):
        raise UsageError(f"`--shift` must be finite, at most {_F32_MAX:.3g} in size (the maps are float32), "
                         f"got {shift:g}")


def _within_limits(map_path, depth: np.ndarray, valid: np.ndarray, conv) -> tuple[np.ndarray, int]:
    """``valid`` without the depths outside :data:`DEPTH_LIMITS`, and how many those were; an error
    (naming what the mapping gave) when no depth is left: UsageError naming ``map_path`` when
    ``--scale``/``--shift`` made them, else InputDataError (the caller adds the file name)."""
    lo, hi = DEPTH_LIMITS
    inside = valid & (depth >= lo) & (depth <= hi)
    if inside.any():
        return inside, int(valid.sum() - inside.sum())
    z = depth[valid]
    said = (f"`{conv.description}` gives depths {z.min():.3g}..{z.max():.3g}, none within the {lo:g}..{hi:g} "
            "that float32 points and normals can hold")
    if conv.method == "scale-shift":
        raise UsageError(f"{map_path}: {said}; choose a `--scale`/`--shift` that gives depths in scene units")
    raise InputDataError(said + "; rescale it with `--scale`/`--shift` or `--depth-range`")
