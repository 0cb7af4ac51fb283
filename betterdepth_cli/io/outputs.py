"""Output files of ``betterdepth refine``: encoders, decoders and the naming plan.

Formats (see docs and ``notes/contracts``), for an output base ``<out>/<relpath>``
(no extension; sequence and video frames keep their number as the last dotted
part, e.g. ``shot.1001``):

- ``png16``: ``<base>.png``, 16-bit grey, plus the sidecar ``<base>.json``;
  ``value = min + (max - min) * png / 65535`` with ``min``/``max`` in the sidecar.
- ``exr``: ``<base>.exr``, one float32 channel ``Z``, ZIP compression, header
  string attributes ``betterdepth:kind``, ``betterdepth:metric``, ``betterdepth:units``.
- ``npy``: ``<base>.npy``, float32 (H,W).
- ``preview``: ``<base>_preview.jpg`` (frames: ``shot_preview.1001.jpg``), coloured
  with the turbo colour map, near is warm (red), far is cold (blue).
- ``uncertainty``: ``<base>_uncertainty.exr`` (frames: ``shot_uncertainty.1001.exr``),
  one float32 channel ``Y`` in the units of the map.

Every file is written atomically: into a hidden temporary file in the target
folder, then renamed over the target with :func:`os.replace`.

numpy is the only third-party import at module level; cv2 and OpenEXR are imported in the
functions that need them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from betterdepth_cli.core.types import InputDataError, OutputError, UsageError, check_kind
from betterdepth_cli.io.depth_files import as_map, as_mask, read_sidecar, write_exr
from betterdepth_cli.io.files import atomic_write_bytes

OUTPUT_FORMATS = ("png16", "exr", "npy", "preview", "uncertainty")
PREVIEW_RANGE = (2.0, 98.0)  # robust percentiles for the preview colour range
_FRAME_RE = re.compile(r"^(?P<stem>.*)\.(?P<frame>-?\d+)$")

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- atomic writes


#: What marks the temporary files of :func:`atomic_write`: ``.<output name>.tmp-XXXX<suffix>``.


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- png16


# --------------------------------------------------------------------------- sidecar


# --------------------------------------------------------------------------- EXR


# --------------------------------------------------------------------------- NPY


# --------------------------------------------------------------------------- preview


def colorize(
    values: Any, valid: Any = None, kind: str = "disparity", percentiles=PREVIEW_RANGE,
    vrange: tuple[float, float] | None = None,
) -> np.ndarray:
    """A coloured preview, near is warm: uint8 RGB (H,W,3).

    values: (H,W) in the map's units. The colour range is the 2 % .. 98 %
    quantiles of the valid, finite pixels (clipped outside). ``disparity``:
    high is near (warm); ``depth``: low is near (warm). Colour map: turbo
    (blue -> green -> yellow -> red). Invalid pixels are black. ``vrange``: a
    given colour range (min, max) instead of the quantiles (one range for a shot).
    """
    import cv2

    check_kind(kind)
    arr = as_map(values)
    ok = as_mask(valid, arr.shape) & np.isfinite(arr)
    t = np.zeros(arr.shape, np.float32)
    if vrange is not None:
        lo, hi = float(vrange[0]), float(vrange[1])
        span = hi - lo if hi > lo else 1.0
        t[ok] = np.clip((arr[ok] - lo) / span, 0.0, 1.0)
    elif ok.any():
        lo, hi = np.percentile(arr[ok], percentiles)
        span = hi - lo if hi > lo else 1.0
        t[ok] = np.clip((arr[ok] - lo) / span, 0.0, 1.0)
    nearness = t if kind == "disparity" else 1.0 - t
    grey = np.rint(nearness * 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    rgb[~ok] = 0
    return rgb


def write_preview(
    path: PathLike, values: Any, valid: Any = None, kind: str = "disparity", quality: int = 90,
    vrange: tuple[float, float] | None = None,
) -> Path:
    """Write the coloured preview (see :func:`colorize`) as JPEG (or PNG by extension), atomically."""
    import cv2

    path = Path(path)
    bgr = cv2.cvtColor(colorize(values, valid, kind, vrange=vrange), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix or ".jpg", bgr, params)
    if not ok:
        raise OutputError(f"{path}: cannot encode the preview")
    return atomic_write_bytes(path, buf.tobytes())


def write_uncertainty(path: PathLike, values: Any, *, kind: str, metric: bool, attrs: Mapping[str, Any] | None = None) -> Path:
    """Write the ensemble spread as a one-channel (``Y``) float32 EXR in the map's units.

    Header attributes: ``betterdepth:content = uncertainty`` plus kind/metric/units.
    """
    fields = {"content": "uncertainty", **dict(attrs or {})}
    return write_exr(path, values, kind=kind, metric=metric, attrs=fields, channel="Y")


# --------------------------------------------------------------------------- naming plan


def split_frame(name: str) -> tuple[str, str | None]:
    """``"shot.1001"`` -> ``("shot", "1001")``; ``"img"`` -> ``("img", None)``.

    The frame number is the last dotted part when it is all digits (zero
    padding kept as a string).
    """
    match = _FRAME_RE.match(name)
    if match and match.group("stem"):
        return match.group("stem"), match.group("frame")
    return name, None


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """Validate output format names (order kept, duplicates dropped)."""
    out: list[str] = []
    for fmt in formats:
        if fmt not in OUTPUT_FORMATS:
            raise UsageError(f"`format` must be among {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
        if fmt not in out:
            out.append(fmt)
    if not out:
        raise UsageError("`format` must name at least one of " + ", ".join(OUTPUT_FORMATS))
    return tuple(out)


def _suffixed(base: Path, tag: str, ext: str) -> Path:
    """``<base>_<tag>.<ext>``, with the frame number moved last: ``shot_tag.1001.ext``."""
    stem, frame = split_frame(base.name)
    name = f"{stem}_{tag}.{frame}.{ext}" if frame is not None else f"{stem}_{tag}.{ext}"
    return base.with_name(name)


def output_paths(out_dir: PathLike, relpath: PurePosixPath | str, formats: Iterable[str]) -> dict[str, Path]:
    """Where each requested format goes for one input.

    ``relpath``: the output base relative to ``out_dir`` without extension
    (``photos/img``, ``shot.1001``, ``clip/clip.0000``). Keys: the formats, plus
    ``"sidecar"``: every run writes the JSON sidecar, the record that marks the
    files as this tool's own (a rerun never overwrites a file without one).

    >>> sorted(output_paths("out", "shot.1001", ["png16", "preview"]).items())  # doctest: +SKIP
    [('png16', out/shot.1001.png), ('preview', out/shot_preview.1001.jpg), ('sidecar', out/shot.1001.json)]
    """
    rel = PurePosixPath(relpath)
    if rel.is_absolute() or ".." in rel.parts or not rel.name:
        raise UsageError(f"output relpath must be relative and inside the output folder, got {str(rel)!r}")
    base = Path(out_dir).joinpath(*rel.parts)
    plan: dict[str, Path] = {}
    for fmt in check_formats(formats):
        if fmt == "png16":
            plan["png16"] = base.with_name(base.name + ".png")
        elif fmt in ("exr", "npy"):
            plan[fmt] = base.with_name(f"{base.name}.{fmt}")
        elif fmt == "preview":
            plan[fmt] = _suffixed(base, "preview", "jpg")
        else:
            plan[fmt] = _suffixed(base, "uncertainty", "exr")
    plan["sidecar"] = base.with_name(base.name + ".json")
    return plan


def is_own_sidecar(path: PathLike) -> bool:
    """A JSON sidecar this tool wrote (:func:`read_sidecar` accepts it)."""
    try:
        read_sidecar(path)
    except InputDataError:
        return False
    return True


def sidecar_of(path: PathLike) -> Path:
    """The sidecar that vouches for an output file: ``a.png``/``a.npy`` -> ``a.json``,
    ``a_preview.jpg`` -> ``a.json``, ``shot_preview.1001.jpg`` -> ``shot.1001.json``."""
    path = Path(path)
    stem, frame = split_frame(path.stem)
    for tag in ("_preview", "_uncertainty"):
        if stem.endswith(tag):
            base = stem[: -len(tag)] + (f".{frame}" if frame is not None else "")
            return path.with_name(base + ".json")
    return path.with_suffix(".json")


def outputs_exist(plan: Mapping[str, Path]) -> bool:
    """True when every file of an output plan exists (a batch resumes past it)."""
    return all(Path(p).is_file() for p in plan.values())


# --------------------------------------------------------------------------- reading back


