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

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from betterdepth_cli.core.types import InputDataError, OutputError, UsageError, check_kind
from betterdepth_cli.io.images import check_file

SIDECAR_FORMAT = "betterdepth/1"
PNG16_FORMULA = "value = min + (max - min) * png / 65535"
OUTPUT_FORMATS = ("png16", "exr", "npy", "preview", "uncertainty")
EXR_ATTR_PREFIX = "betterdepth:"
PREVIEW_RANGE = (2.0, 98.0)  # robust percentiles for the preview colour range
_FRAME_RE = re.compile(r"^(?P<stem>.*)\.(?P<frame>-?\d+)$")

PathLike = str | os.PathLike


# --------------------------------------------------------------------------- atomic writes


def safe_parts(name: str) -> list[str]:
    """The parts of a name taken from an input (a tar member, a sample id) that cannot climb out of
    a folder: ``/`` and ``\\`` separate, empty, ``.`` and ``..`` parts, drive letters and leading
    slashes are dropped."""
    return [p for p in PurePosixPath(str(name).replace("\\", "/")).parts
            if p not in ("", ".", "..", "/") and not re.fullmatch(r"[A-Za-z]:", p)]


def safe_join(root: PathLike, relative: str) -> Path:
    """``root / relative`` that cannot leave ``root`` (:func:`safe_parts`)."""
    parts = safe_parts(relative)
    if not parts:
        raise OutputError(f"{relative!r}: no usable file name to write under {root}")
    return Path(root).joinpath(*parts)


#: What marks the temporary files of :func:`atomic_write`: ``.<output name>.tmp-XXXX<suffix>``.
TEMP_MARK = ".tmp-"


def temporary_target(name: str) -> str | None:
    """The output name a temporary of :func:`atomic_write` belongs to (``.a.png.tmp-x1.png`` -> ``a.png``), else None."""
    if not name.startswith(".") or TEMP_MARK not in name:
        return None
    return name[1:].split(TEMP_MARK, 1)[0]


def atomic_write(path: PathLike, writer: Callable[[str], Any]) -> Path:
    """Write ``path`` atomically: ``writer(tmp_path)`` then ``os.replace(tmp, path)``.

    The temporary file lives in the target folder (same file system, so the
    rename is atomic), is hidden (``.name.tmp-XXXX.ext``) and keeps the
    extension, so extension-driven encoders (cv2.imwrite) pick the right
    format. If ``writer`` raises, the temporary file is removed and the
    exception propagates; ``OSError`` becomes :class:`OutputError` naming ``path``.
    Missing parent folders are created.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARK}", suffix=path.suffix, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create output ({exc.strerror or exc})") from exc
    try:
        writer(tmp)
        os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise OutputError(f"{path}: cannot write output ({exc.strerror or exc})") from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


def _default_file_mode() -> int:
    """0666 minus the process umask, as a plain ``open()`` would create."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- helpers


def units_for(kind: str, metric: bool) -> str:
    """The ``units`` string of a map: ``relative``, ``metres`` or ``1/metres``."""
    check_kind(kind)
    if not metric:
        return "relative"
    return "metres" if kind == "depth" else "1/metres"


def _as_map(values: Any, name: str = "values") -> np.ndarray:
    """Squeeze a depth-like map to float32 (H,W); accepts (H,W), (1,H,W), (1,1,H,W) and tensors."""
    if hasattr(values, "detach"):  # torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise UsageError(f"`{name}` must be a single map (H,W), got shape {tuple(np.shape(values))}")
    return arr.astype(np.float32, copy=False)


def _as_mask(valid: Any, shape: tuple[int, int]) -> np.ndarray:
    if valid is None:
        return np.ones(shape, dtype=bool)
    mask = _as_map(valid, "valid") > 0.5  # bool -> 0.0/1.0 first
    if mask.shape != shape:
        raise UsageError(f"`valid` has shape {mask.shape}, the map has {shape}")
    return mask


# --------------------------------------------------------------------------- png16


def encode_png16(values: Any, valid: Any = None, vrange: tuple[float, float] | None = None) -> tuple[np.ndarray, float, float]:
    """Quantise a map to uint16 codes over its valid, finite range.

    values: (H,W) float; valid: (H,W) bool or None; ``vrange``: a given
    (min, max) instead of the map's own, e.g. one range for every frame of a
    shot (values outside it are clipped).
    Returns (codes uint16 (H,W), min, max) with ``value ~= min + (max - min) * code / 65535``;
    the error is at most half a step ``(max - min) / 65535 / 2``. Invalid and
    non-finite pixels get code 0 (they decode to ``min``). A constant map gives
    all zeros and ``min == max``; a map with no valid pixel gives ``0.0, 0.0``.
    """
    arr = _as_map(values)
    ok = _as_mask(valid, arr.shape) & np.isfinite(arr)
    if vrange is not None:
        lo, hi = float(vrange[0]), float(vrange[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo):
            raise UsageError(f"`vrange` must be finite (min, max) with max >= min, got {vrange!r}")
    elif not ok.any():
        return np.zeros(arr.shape, np.uint16), 0.0, 0.0
    else:
        lo, hi = float(arr[ok].min()), float(arr[ok].max())
    codes = np.zeros(arr.shape, np.uint16)
    if hi > lo:
        scaled = (arr[ok].astype(np.float64) - lo) / (hi - lo) * 65535.0
        codes[ok] = np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)
    return codes, lo, hi


def decode_png16(codes: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Inverse of :func:`encode_png16`: ``min + (max - min) * codes / 65535`` as float32 (H,W)."""
    codes = np.asarray(codes)
    return (vmin + (vmax - vmin) * codes.astype(np.float64) / 65535.0).astype(np.float32)


def _write_png16_codes(path: PathLike, codes: np.ndarray) -> Path:
    import cv2

    ok, data = cv2.imencode(".png", np.ascontiguousarray(codes, dtype=np.uint16))
    if not ok:
        raise OutputError(f"{path}: cv2 could not encode the 16-bit PNG")
    # encoded in memory, written by Python: a full disk reports "No space left on device", not an encoder error
    return atomic_write_bytes(path, data.tobytes())


def write_png16(
    path: PathLike,
    values: Any,
    valid: Any = None,
    meta: Mapping[str, Any] | None = None,
    vrange: tuple[float, float] | None = None,
) -> dict:
    """Write ``<base>.png`` (16-bit grey) and its sidecar ``<base>.json``.

    ``meta`` holds the other sidecar fields (see :func:`make_sidecar`); the
    ``encoding``, ``width`` and ``height`` keys are filled in here.
    ``vrange``: see :func:`encode_png16`. Returns the sidecar dict that was written.
    """
    path = Path(path)
    codes, lo, hi = encode_png16(values, valid, vrange)
    sidecar = _png16_sidecar(meta or {}, lo, hi, codes.shape)
    _write_png16_codes(path, codes)
    write_sidecar(sidecar_path(path), sidecar)
    return sidecar


def _png16_sidecar(meta: Mapping[str, Any], lo: float, hi: float, shape: tuple[int, ...]) -> dict:
    """``meta`` plus the encoding, width and height, in the contract's key order."""
    fields = {
        "format": meta.get("format", SIDECAR_FORMAT),
        "encoding": {"type": "png16", "min": lo, "max": hi, "formula": PNG16_FORMULA},
        "width": int(shape[1]),
        "height": int(shape[0]),
    }
    head = ("format", "kind", "metric", "units", "encoding", "width", "height")
    out = {k: fields[k] if k in fields else meta[k] for k in head if k in fields or k in meta}
    out.update((k, v) for k, v in meta.items() if k not in out)
    return out


def read_png16(path: PathLike) -> np.ndarray:
    """Read a 16-bit single-channel PNG as uint16 (H,W) without any scaling."""
    import cv2

    path = Path(path)
    check_file(path, allow_empty=True)
    codes = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if codes is None:
        raise InputDataError(f"{path}: not a readable PNG")
    if codes.dtype != np.uint16 or codes.ndim != 2:
        raise InputDataError(f"{path}: expected a 16-bit grey PNG, got {codes.dtype} with shape {codes.shape}")
    return codes


# --------------------------------------------------------------------------- sidecar


def sidecar_path(path: PathLike) -> Path:
    """``<base>.json`` for ``<base>.png`` / ``.exr`` / ``.npy`` (frames: ``shot.1001.json``)."""
    return Path(path).with_suffix(".json")


def make_sidecar(
    *,
    kind: str,
    metric: bool,
    source: str = "",
    frame: int | None = None,
    model: str | None = None,
    conditioner: str | None = None,
    steps: int | None = None,
    ensemble: int | None = None,
    reduction: str | None = None,
    seed: int | None = None,
    processing_res: int | None = None,
    units: str | None = None,
    **extra: Any,
) -> dict:
    """The sidecar fields that do not depend on the encoding, in the contract's order."""
    from betterdepth_cli import __version__

    meta = {
        "format": SIDECAR_FORMAT,
        "kind": check_kind(kind),
        "metric": bool(metric),
        "units": units or units_for(kind, metric),
        "source": source,
        "frame": frame,
        "model": model,
        "conditioner": conditioner,
        "steps": steps,
        "ensemble": ensemble,
        "reduction": reduction,
        "seed": seed,
        "processing_res": processing_res,
        "version": __version__,
    }
    meta.update(extra)
    return meta


def write_sidecar(path: PathLike, meta: Mapping[str, Any]) -> Path:
    """Write the sidecar JSON (indented, keys in insertion order) atomically."""
    return atomic_write_text(path, json.dumps(dict(meta), indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"sidecar value of type {type(obj).__name__} is not JSON serialisable")


def read_sidecar(path: PathLike) -> dict:
    """Read a sidecar; raises InputDataError when missing, not JSON, or not ``betterdepth/*``."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: sidecar JSON is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputDataError(f"{path}: not a readable JSON sidecar ({exc})") from exc
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith("betterdepth/"):
        raise InputDataError(f"{path}: not a betterdepth sidecar (no \"format\": \"betterdepth/...\")")
    return meta


# --------------------------------------------------------------------------- EXR


def _exr_attr_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def write_exr(
    path: PathLike,
    values: Any,
    *,
    kind: str | None = None,
    metric: bool | None = None,
    units: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    channel: str = "Z",
) -> Path:
    """Write the map as float32 channel ``channel`` (default ``Z``, the VFX convention) and, for
    readers that look for a grey image, the same values as ``Y``; ZIP compression, atomically.

    With ``Y``, OpenCV (``OPENCV_IO_ENABLE_OPENEXR=1``, ``IMREAD_UNCHANGED``), imageio (its
    ``opencv`` plugin with that flag) and OpenEXR all read the values; a ``Z``-only file reads as
    zeros in the first two. values: (H,W). ``kind``/``metric``/``units`` and every key of
    ``attrs`` become string header attributes ``betterdepth:<key>`` (booleans as ``true``/``false``).
    """
    import OpenEXR

    arr = np.ascontiguousarray(_as_map(values))
    header: dict[str, Any] = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    fields = dict(attrs or {})
    if kind is not None:
        fields["kind"] = check_kind(kind)
    if metric is not None:
        fields["metric"] = bool(metric)
    if units is not None or (kind is not None and metric is not None):
        fields["units"] = units or units_for(kind, bool(metric))  # type: ignore[arg-type]
    for key, value in fields.items():
        header[EXR_ATTR_PREFIX + key] = _exr_attr_value(value)

    channels = {channel: arr} if channel == "Y" else {channel: arr, "Y": arr}

    def write(tmp: str) -> None:
        OpenEXR.File(header, channels).write(tmp)

    try:
        return atomic_write(path, write)
    except RuntimeError as exc:  # OpenEXR reports IO failures as RuntimeError
        raise OutputError(f"{path}: cannot write EXR ({exc})") from exc


def _parse_attr(value: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    return value


def read_exr(path: PathLike, channel: str | None = None) -> tuple[np.ndarray, dict]:
    """Read one channel of an EXR as float32 (H,W) and its ``betterdepth:*`` attributes.

    Channel choice: ``channel`` if given; else ``Z``, then ``depth.Z``, then any
    channel whose name ends in ``.Z``, then the first channel (of a grouped
    RGB(A) layer: its first component). Returns (values, meta) where meta maps
    the attribute names without the prefix (``metric`` parsed to bool).
    """
    import OpenEXR

    path = Path(path)
    check_file(path, allow_empty=True)
    try:
        exr = OpenEXR.File(str(path), separate_channels=True)
        header = exr.header()
        channels = exr.channels()
    except Exception as exc:  # OpenEXR raises RuntimeError / ValueError on bad data
        raise InputDataError(f"{path}: not a readable EXR ({_one_line(exc)})") from exc
    if not channels:
        raise InputDataError(f"{path}: EXR has no channels")
    name = _pick_depth_channel(list(channels), channel)
    if name is None:
        raise InputDataError(f"{path}: EXR has no channel {channel!r} (channels: {', '.join(channels)})")
    values = np.asarray(channels[name].pixels)
    if values.ndim != 2:
        values = values.reshape(values.shape[0], values.shape[1], -1)[..., 0]
    meta = {
        key[len(EXR_ATTR_PREFIX):]: _parse_attr(val)
        for key, val in header.items()
        if key.startswith(EXR_ATTR_PREFIX) and isinstance(val, str)
    }
    return values.astype(np.float32), meta


def _pick_depth_channel(names: list[str], wanted: str | None) -> str | None:
    if wanted is not None:
        return wanted if wanted in names else None
    for candidate in ("Z", "depth.Z"):
        if candidate in names:
            return candidate
    dotted = [n for n in names if n.endswith(".Z")]
    if dotted:
        return dotted[0]
    for first in ("R", "Y"):
        if first in names:
            return first
    return names[0]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- NPY


def write_npy(path: PathLike, values: Any) -> Path:
    """Write a float32 (H,W) ``.npy`` atomically."""
    arr = np.ascontiguousarray(_as_map(values))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    return atomic_write(path, write)


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
    arr = _as_map(values)
    ok = _as_mask(valid, arr.shape) & np.isfinite(arr)
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


def load_depth_output(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read a map written by ``refine``: (values float32 (H,W), meta dict).

    - ``.png``: decoded with its sidecar ``<base>.json`` (InputDataError naming the
      json when it is missing); meta is the sidecar.
    - ``.exr``: channel ``Z`` (or see :func:`read_exr`); meta is the sibling
      ``.json`` if present, updated with the ``betterdepth:*`` header attributes.
    - ``.npy``: meta from a sibling ``.json`` if present, else ``{}``.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".png", ".exr", ".npy"):
        raise InputDataError(f"{path}: unsupported depth output extension {ext or '(none)'!r} (expected .png, .exr, .npy)")
    check_file(path, allow_empty=True)
    side = sidecar_path(path)
    if ext == ".png":
        if not side.is_file():
            raise InputDataError(f"{path}: sidecar {side} is missing (needed to decode the 16-bit PNG)")
        meta = read_sidecar(side)
        enc = meta.get("encoding") or {}
        if not isinstance(enc, dict) or enc.get("type") != "png16" or "min" not in enc or "max" not in enc:
            raise InputDataError(f"{side}: no png16 encoding (min, max) in the sidecar")
        lo, hi = (_finite_number(enc[k], f"{side}: encoding {k}") for k in ("min", "max"))
        return decode_png16(read_png16(path), lo, hi), meta
    meta = read_sidecar(side) if side.is_file() else {}
    if ext == ".exr":
        values, attrs = read_exr(path)
        meta.update(attrs)
        return values, meta
    return _load_npy(path), meta


def _finite_number(value: Any, what: str) -> float:
    """``value`` as a finite float, or InputDataError naming ``what`` (a sidecar field)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputDataError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(out):
        raise InputDataError(f"{what} must be finite, got {value!r}")
    return out


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: not a readable .npy ({_one_line(exc)})") from exc
    arr = np.asarray(arr)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise InputDataError(f"{path}: expected a numeric (H,W) array, got {arr.dtype} {arr.shape}")
    return arr.astype(np.float32)
