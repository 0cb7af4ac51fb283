"""`betterdepth export-ply`: point clouds (and meshes) from `refine` outputs.

Imports only Typer and the standard library at module level; numpy, cv2 and
open3d load inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from betterdepth_cli.cli.app import app, error_line, handle_errors, stopping_cleanly

HELP = """Turn refined depth maps into normal-coloured point clouds (binary PLY) or meshes.

INPUT is a map written by `refine` (.png with its .json sidecar, .exr, .npy) or a
folder of them (batch: the tree is mirrored under -o DIR, one file per map).

Intrinsics: --fov or --focal (+ --cx/--cy), else the source image's EXIF focal
length (--image, or the sidecar's `source` when that file exists), else a
60 degree horizontal field of view.

Depth: relative disparity (the usual output) has an unknown shift, so its robust
2-98 % range is spread over --depth-range NEAR,FAR (default 1,10) in inverse depth;
or give --scale/--shift (value -> scale * value + shift in the map's own space);
metric maps are used as they are.

Axes: --axes opengl (default; x right, y up, camera looking down -z: Blender,
Houdini, Nuke, glTF) or opencv (x right, y down, z forward). The camera sits at
the origin.
"""


@app.command("export-ply", help=HELP, no_args_is_help=True)
@handle_errors
def export_ply(
    input: Annotated[Path, typer.Argument(help="A refine output map (.png+.json, .exr, .npy) or a folder of them.", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file (.ply; with --mesh also .obj, .glb) or folder. Default: next to the input.", show_default=False)] = None,
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="Source RGB image (folder in batch mode, matched by name) for EXIF focal length and --color rgb.", show_default=False)] = None,
    fov: Annotated[Optional[float], typer.Option("--fov", help="Horizontal field of view in degrees.", show_default=False)] = None,
    focal: Annotated[Optional[float], typer.Option("--focal", help="Focal length in pixels of the depth map.", show_default=False)] = None,
    cx: Annotated[Optional[float], typer.Option("--cx", help="Principal point x in pixels (default: image centre).", show_default=False)] = None,
    cy: Annotated[Optional[float], typer.Option("--cy", help="Principal point y in pixels (default: image centre).", show_default=False)] = None,
    sensor_width: Annotated[Optional[float], typer.Option("--sensor-width", help="Sensor width in mm (long side), to use EXIF FocalLength without a 35 mm equivalent.", show_default=False)] = None,
    depth_range: Annotated[Optional[str], typer.Option("--depth-range", help="NEAR,FAR: where the 2-98 % range of a relative map lands (default 1,10 for relative disparity).", show_default=False)] = None,
    scale: Annotated[Optional[float], typer.Option("--scale", help="value -> scale * value + shift, in the map's own space (disparity then inverted).", show_default=False)] = None,
    shift: Annotated[Optional[float], typer.Option("--shift", help="See --scale.", show_default=False)] = None,
    assume: Annotated[Optional[str], typer.Option("--assume", help="disparity|depth: what a map without sidecar or kind attribute holds (taken as relative; a sidecar-less PNG gives its raw values, 0 = invalid).", show_default=False)] = None,
    color: Annotated[str, typer.Option("--color", help="normals ((n+1)/2 in camera space), rgb (needs the image) or depth (turbo, near is warm).")] = "normals",
    axes: Annotated[str, typer.Option("--axes", help="opengl (y up, -z forward) or opencv (y down, z forward).")] = "opengl",
    mesh: Annotated[bool, typer.Option("--mesh", help="Write a mesh: grid triangles between valid neighbours, long edges cut.")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", help="ply|obj|glb for derived output names (folders, batch); default ply.", show_default=False)] = None,
    stride: Annotated[int, typer.Option("--stride", help="Keep every N-th pixel in x and y.")] = 1,
    edge_threshold: Annotated[Optional[float], typer.Option("--edge-threshold", help="Drop pixels whose depth jumps by more than this fraction to a neighbour (flying pixels); 0 keeps them (default 0.05). A point with no valid neighbour along a row or a column has no normal and is always left out.", show_default=False)] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Leave outputs that already exist (resume a batch).")] = False,
    continue_on_error: Annotated[bool, typer.Option("--continue-on-error", help="In a batch, report a bad map and go on (exit code 3 if some failed).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-file lines on stderr.")] = False,
) -> None:
    stopping_cleanly(_export, **locals())  # SIGTERM stops like Ctrl-C: the file being written is not left half-done


def _export(input, output, image, fov, focal, cx, cy, sensor_width, depth_range, scale, shift, assume, color, axes,
            mesh, fmt, stride, edge_threshold, skip_existing, continue_on_error, quiet) -> None:
    """The command's work (see :func:`export_ply`)."""
    import time

    from betterdepth_cli.io import pointcloud as pc
    from betterdepth_cli.jobs import export_plan as ep
    from betterdepth_cli.core import geometry as geo

    started = time.time()  # the temporaries of a killed run beside our targets are older
    if edge_threshold is None:
        edge_threshold = geo.DEFAULT_EDGE_THRESHOLD
    opts = geo.ExportOptions(stride=stride, edge_threshold=edge_threshold, color=color, axes=axes, mesh=mesh).check()
    rng = _check_options(depth_range, scale, shift, assume, fov, focal)
    jobs = _plan(input, output, image, _format_ext(fmt), fmt, assume, quiet)
    kwargs = dict(fov=fov, focal=focal, cx=cx, cy=cy, sensor_width=sensor_width,
                  depth_range=rng, scale=scale, shift=shift, assume=assume, options=opts, stale_before=started)
    from betterdepth_cli.jobs import exit_code
    from betterdepth_cli.jobs.sequential import run_each

    def work(job: ep.ExportJob) -> dict:
        if job.image_error is not None:
            from betterdepth_cli.core.types import InputDataError

            raise InputDataError(job.image_error)
        return pc.export_depth_file(job.map_path, job.out_path, image=job.image, **kwargs)

    def report(status: str, job: ep.ExportJob, detail) -> None:
        if status == "failed":
            error_line(detail)
        elif status == "done" and not quiet:
            what = f"{detail['points']:,} points" + (f", {detail['triangles']:,} triangles" if mesh else "")
            if detail.get("out_of_range"):
                lo, hi = pc.DEPTH_LIMITS
                what += f", {detail['out_of_range']:,} pixels with depths outside {lo:g}..{hi:g} left out"
            print(f"wrote {detail['output']} ({what}; {detail['intrinsics']}; {detail['depth']})", file=sys.stderr,
                  flush=True)

    summary = run_each(jobs, work, label=lambda job: str(job.map_path), on_item=report,
                       skip=(lambda job: job.out_path.exists()) if skip_existing else None,
                       continue_on_error=continue_on_error and len(jobs) > 1)
    if len(jobs) > 1 and not quiet:
        print(f"export-ply: {summary.processed} written, {summary.skipped} skipped, {summary.failed} failed",
              file=sys.stderr, flush=True)
    if summary.failed:
        raise typer.Exit(exit_code(summary, continue_on_error=True))


def _check_options(depth_range, scale, shift, assume, fov, focal):
    """Options that exclude each other; the parsed --depth-range."""
    from betterdepth_cli.core.types import UsageError
    from betterdepth_cli.io import pointcloud as pc
    from betterdepth_cli.core import depth_values as dv

    rng = dv.parse_depth_range(depth_range) if depth_range is not None else None
    if rng is not None and (scale is not None or shift is not None):
        raise UsageError("`--depth-range` and `--scale`/`--shift` exclude each other; give one")
    pc.check_scale_shift(scale, shift)
    if assume is not None and assume not in pc.ASSUME_KINDS:
        raise UsageError(f"`--assume` must be one of {', '.join(pc.ASSUME_KINDS)}, got {assume!r}")
    if fov is not None and focal is not None:
        raise UsageError("`--fov` and `--focal` exclude each other; give one")
    return rng


def _plan(input: Path, output: Path | None, image: Path | None, ext: str, fmt: str | None, assume, quiet: bool):
    """The export jobs: one map, or every map under a folder (the tree mirrored)."""
    from betterdepth_cli.core.types import NoInputError, UsageError
    from betterdepth_cli.io import pointcloud as pc
    from betterdepth_cli.jobs import export_plan as ep

    if not input.exists():
        raise NoInputError(f"{input}: no such file or folder")
    if image is not None and not image.exists():
        raise NoInputError(f"{image}: no such image or folder (--image)")
    if not input.is_dir():
        img = image
        if image is not None and image.is_dir():  # a folder of photos: the one named like the map
            img = ep.match_image(Path(input.name).with_suffix(""), image, ep.image_index(image))
        return [ep.ExportJob(input, _single_output(input, output, ext, fmt), img)]
    if image is not None and not image.is_dir():
        raise UsageError(f"`--image` must be a folder when INPUT is a folder, got the file {image}")
    if output is not None and output.suffix.lower() in pc.MESH_EXTS:
        raise UsageError(f"`--output` must be a folder when INPUT is a folder, got {output}")
    jobs, bare = ep.plan_batch(input, output if output is not None else input, ext, image, bare_png=assume is not None)
    if bare and not quiet:
        print(f"export-ply: skipping {len(bare)} .png without sidecar (e.g. {bare[0]}); "
              "pass --assume disparity|depth to read them", file=sys.stderr, flush=True)
    return jobs


def _format_ext(fmt: str | None) -> str:
    from betterdepth_cli.core.types import UsageError

    if fmt is None:
        return ".ply"
    if fmt.lower().lstrip(".") not in ("ply", "obj", "glb"):
        raise UsageError(f"`--format` must be one of ply, obj, glb, got {fmt!r}")
    return "." + fmt.lower().lstrip(".")


def _single_output(map_path: Path, output: Path | None, ext: str, fmt: str | None) -> Path:
    """The output file for one map: -o FILE, -o DIR/<name><ext>, or next to the map."""
    from betterdepth_cli.core.types import UsageError

    name = map_path.with_suffix("").name + ext
    if output is None:
        return map_path.with_name(name)
    if output.is_dir() or not output.suffix:
        return output / name
    if fmt is not None and output.suffix.lower() != ext:
        raise UsageError(f"`--format {fmt}` disagrees with the output name {output}")
    return output
