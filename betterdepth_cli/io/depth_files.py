"""Depth-map files, one reader and one writer per format, and the JSON sidecar that says what a map holds.

- ``png16``: 16-bit grey, ``value = min + (max - min) * png / 65535`` with ``min``/``max`` in the
  sidecar ``<base>.json``; a PNG or TIFF without one is read as stored.
- ``exr``: one float32 channel ``Z`` (ZIP), header attributes ``betterdepth:kind|metric|units``.
- ``npy`` / ``npz``: float (H,W) arrays (an ``.npz`` by its ``depth``/``disparity`` entry or its only one).
- ``pfm``: Portable Float Map, top row first.

:func:`read_depth_map` reads any of them as stored values; :func:`load_depth_output` reads what
``refine`` wrote, with its sidecar. cv2 and OpenEXR are imported in the functions that need them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from betterdepth_cli.core.types import InputDataError, OutputError, UsageError, check_kind
from betterdepth_cli.io.files import atomic_write, atomic_write_bytes, atomic_write_text, check_extension, check_file, file_ext, one_line, read_file, read_head
from betterdepth_cli.io.images import check_size, cv2_decode, pil_decode, sniff_format

PathLike = str | os.PathLike


DEPTH_EXTENSIONS = ("png", "npy", "npz", "exr", "pfm", "tif", "tiff")


def read_pfm(path: str | os.PathLike) -> np.ndarray:
    """Read a PFM (Portable Float Map) as float32 (H,W) or (H,W,3), top row first (see :func:`decode_pfm`)."""
    path = Path(path)
    return decode_pfm(read_file(path), str(path))


def _single_channel(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H,W) from (H,W), (H,W,1) or a grey image stored as 3/4 equal channels."""
    if arr.ndim == 3:
        if arr.shape[2] == 1 or (arr.shape[2] >= 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            arr = arr[..., 0]
        elif arr.shape[2] == 2:
            arr = arr[..., 0]
        else:
            raise InputDataError(f"{path}: colour image, expected a single-channel depth map")
    if arr.ndim != 2:
        raise InputDataError(f"{path}: expected a (H,W) depth map, got shape {arr.shape}")
    return arr


def _load_numpy(path: Path, ext: str) -> np.ndarray:
    data = load_npy(path, str(path), ext)
    if ext == "npz":
        with data:
            names = list(data.files)
            pick = next((k for k in ("depth", "disparity", "Z", "pred") if k in names), None)
            if pick is None and len(names) == 1:
                pick = names[0]
            if pick is None:
                raise InputDataError(f"{path}: .npz holds {', '.join(names) or 'nothing'}; expected one array or 'depth'/'disparity'")
            data = data[pick]
    arr = np.asarray(data)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if not np.issubdtype(arr.dtype, np.number):
        raise InputDataError(f"{path}: non-numeric array ({arr.dtype})")
    return arr


def read_depth_map(path: str | os.PathLike, invalid: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Read a depth-like map: (values float32 (H,W), valid bool (H,W)).

    Values are as stored (a 16-bit PNG of millimetres stays millimetres); a
    ``.png`` with a betterdepth sidecar ``<base>.json`` is decoded with it.
    Pixels that are non-finite or exactly ``invalid`` (None: no such value)
    are invalid and set to 0.
    """
    path = Path(path)
    ext = check_extension(path, DEPTH_EXTENSIONS)
    head = read_head(path)
    if ext == "exr":
        arr = read_exr(path)[0]
    elif ext == "pfm":
        arr = read_pfm(path)
    elif ext in ("npy", "npz"):
        arr = _load_numpy(path, ext)
    else:
        arr = _read_raster_depth(path, head)
    arr = check_size(path, _single_channel(np.asarray(arr), path)).astype(np.float32)
    valid = np.isfinite(arr)
    if invalid is not None:
        valid &= arr != np.float32(invalid)
    arr[~valid] = 0.0
    return arr, valid


def _read_raster_depth(path: Path, head: bytes) -> np.ndarray:
    if sniff_format(head) not in ("png", "tiff"):
        raise InputDataError(f"{path}: not a PNG or TIFF depth map (unrecognised file content)")
    sidecar = path.with_suffix(".json")
    if file_ext(path) == "png" and sidecar.is_file():

        try:
            read_sidecar(sidecar)
        except InputDataError:
            pass  # an unrelated json next to the map: read raw values
        else:
            return load_depth_output(path)[0]
    arr = cv2_decode(path)
    if arr is None:
        arr = pil_decode(path)
    if arr.dtype not in (np.uint8, np.uint16, np.float32, np.float64, np.float16):
        raise InputDataError(f"{path}: unsupported pixel format {arr.dtype} for a depth map")
    return arr


def decode_pfm(data: bytes, where: str) -> np.ndarray:
    """PFM (Portable Float Map) bytes -> float32 (H,W) (``Pf``) or (H,W,3) (``PF``), top row first.

    Header: ``PF`` or ``Pf``, ``W H`` (on one line or two; ``#`` comment lines
    before it are skipped), scale (negative means little-endian); rows are
    stored bottom-to-top.
    """
    buf = io.BytesIO(data)
    try:
        magic = buf.readline().strip()
        line = buf.readline()
        while line.startswith(b"#"):
            line = buf.readline()
        dims = line.split()
        while len(dims) < 2:  # "W\nH\n" is tolerated
            more = buf.readline()
            if not more:
                break
            dims += more.split()
        scale = float(buf.readline().strip())
        width, height = int(dims[0]), int(dims[1])
    except (ValueError, IndexError) as exc:
        raise InputDataError(f"{where}: not a PFM file (bad header)") from exc
    if magic not in (b"PF", b"Pf") or width <= 0 or height <= 0:
        raise InputDataError(f"{where}: not a PFM file (bad header)")
    channels = 3 if magic == b"PF" else 1
    count = width * height * channels
    raw = buf.read(count * 4)
    values = np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4" if scale < 0 else ">f4")
    if values.size != count:
        raise InputDataError(f"{where}: truncated PFM data ({values.size} of {count} values)")
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.ascontiguousarray(values.reshape(shape)[::-1]).astype(np.float32)


def load_npy(source, where: str, ext: str = "npy"):
    """``np.load`` without pickles of a path or file object (``io.BytesIO(data)``): an array, or an NpzFile.

    InputDataError naming ``where`` when it is not a readable .npy/.npz file.
    """
    try:
        return np.load(source, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputDataError(f"{where}: not a readable .{ext} file ({exc})") from exc


SIDECAR_FORMAT = "betterdepth/1"


PNG16_FORMULA = "value = min + (max - min) * png / 65535"
#: The encoding of a map with invalid pixels (holes): code 0 marks them, valid values take 1..65535.
PNG16_HOLES_FORMULA = "value = min + (max - min) * (png - 1) / 65534; png 0: invalid"


EXR_ATTR_PREFIX = "betterdepth:"


def units_for(kind: str, metric: bool) -> str:
    """The ``units`` string of a map: ``relative``, ``metres`` or ``1/metres``."""
    check_kind(kind)
    if not metric:
        return "relative"
    return "metres" if kind == "depth" else "1/metres"


def as_map(values: Any, name: str = "values") -> np.ndarray:
    """Squeeze a depth-like map to float32 (H,W); accepts (H,W), (1,H,W), (1,1,H,W) and tensors."""
    if hasattr(values, "detach"):  # torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise UsageError(f"`{name}` must be a single map (H,W), got shape {tuple(np.shape(values))}")
    return arr.astype(np.float32, copy=False)


def as_mask(valid: Any, shape: tuple[int, int]) -> np.ndarray:
    if valid is None:
        return np.ones(shape, dtype=bool)
    mask = as_map(valid, "valid") > 0.5  # bool -> 0.0/1.0 first
    if mask.shape != shape:
        raise UsageError(f"`valid` has shape {mask.shape}, the map has {shape}")
    return mask


def encode_png16(values: Any, valid: Any = None, vrange: tuple[float, float] | None = None) -> tuple[np.ndarray, float, float]:
    """Quantise a map to uint16 codes over its valid, finite range.

    values: (H,W) float; valid: (H,W) bool or None; ``vrange``: a given
    (min, max) instead of the map's own, e.g. one range for every frame of a
    shot (values outside it are clipped).
    Returns (codes uint16 (H,W), min, max) with ``value ~= min + (max - min) * code / 65535``;
    the error is at most half a step ``(max - min) / 65535 / 2``. A map with invalid or
    non-finite pixels (:func:`png16_has_holes`) reserves code 0 for them:
    ``value ~= min + (max - min) * (code - 1) / 65534`` for the valid ones, so a hole never decodes
    to a depth. A constant map gives all zeros (all ones with holes) and ``min == max``; a map with
    no valid pixel gives ``0.0, 0.0``.
    """
    arr = as_map(values)
    return _encode_png16(arr, _png16_valid(arr, valid), vrange)


def _encode_png16(arr: np.ndarray, ok: np.ndarray, vrange: tuple[float, float] | None) -> tuple[np.ndarray, float, float]:
    """:func:`encode_png16` of a float32 (H,W) map whose valid, finite pixels ``ok`` are known."""
    if vrange is not None:
        lo, hi = float(vrange[0]), float(vrange[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo):
            raise UsageError(f"`vrange` must be finite (min, max) with max >= min, got {vrange!r}")
    elif not ok.any():
        return np.zeros(arr.shape, np.uint16), 0.0, 0.0
    else:
        lo, hi = float(arr[ok].min()), float(arr[ok].max())
    first = 0 if ok.all() else 1  # the lowest code of a valid pixel: 1 when 0 marks the holes
    codes = np.zeros(arr.shape, np.uint16)
    codes[ok] = first
    if hi > lo:
        scaled = (arr[ok].astype(np.float64) - lo) / (hi - lo) * (65535.0 - first) + first
        codes[ok] = np.clip(np.rint(scaled), first, 65535).astype(np.uint16)
    return codes, lo, hi


def _png16_valid(arr: np.ndarray, valid: Any) -> np.ndarray:
    return as_mask(valid, arr.shape) & np.isfinite(arr)


def png16_has_holes(values: Any, valid: Any = None) -> bool:
    """Whether a map has invalid or non-finite pixels, so its PNG reserves code 0 for them."""
    arr = as_map(values)
    return not bool(_png16_valid(arr, valid).all())


def decode_png16(codes: np.ndarray, vmin: float, vmax: float, invalid: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_png16` as float32 (H,W): ``min + (max - min) * codes / 65535``, or with
    ``invalid`` (0: the encoding of a map with holes) NaN there and ``min + (max - min) * (codes - 1) / 65534``."""
    codes = np.asarray(codes).astype(np.float64)
    if invalid is None:
        return (vmin + (vmax - vmin) * codes / 65535.0).astype(np.float32)
    out = vmin + (vmax - vmin) * (codes - 1.0) / 65534.0
    return np.where(codes == invalid, np.nan, out).astype(np.float32)


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
    arr = as_map(values)
    ok = _png16_valid(arr, valid)  # once: it sets the codes and says whether the map has holes
    codes, lo, hi = _encode_png16(arr, ok, vrange)
    sidecar = _png16_sidecar(meta or {}, lo, hi, codes.shape, not bool(ok.all()))
    _write_png16_codes(path, codes)
    write_sidecar(sidecar_path(path), sidecar)
    return sidecar


def _png16_sidecar(meta: Mapping[str, Any], lo: float, hi: float, shape: tuple[int, ...], holes: bool) -> dict:
    """``meta`` plus the encoding, width and height, in the contract's key order."""
    encoding = {"type": "png16", "min": lo, "max": hi, "formula": PNG16_FORMULA}
    if holes:
        encoding.update(formula=PNG16_HOLES_FORMULA, invalid=0)
    fields = {
        "format": meta.get("format", SIDECAR_FORMAT),
        "encoding": encoding,
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

    arr = np.ascontiguousarray(as_map(values))
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
    error: Exception | None = None
    with _library_output_captured() as said:  # OpenEXR prints its complaints, one per chunk
        try:
            exr = OpenEXR.File(str(path), separate_channels=True)
            header = exr.header()
            channels = exr.channels()
        except Exception as exc:  # OpenEXR raises RuntimeError / ValueError on bad data
            error = exc
    drop = _EXR_LIBRARY_LINE if error is not None else None  # its lines are summed up in the one error line
    _pass_on(said["stdout"], sys.stdout, drop)
    _pass_on(said["stderr"], sys.stderr, drop)
    if error is not None:
        raise InputDataError(f"{path}: not a readable EXR ({_exr_reason(error, said['stderr'])})") from error
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


#: What OpenEXR itself prints about a bad file: ``<file>: (EXR_ERR_...) ...`` and ``Warning: Exception raised ...``.
_EXR_LIBRARY_LINE = re.compile(r"\(EXR_ERR_[A-Z_]+\)|^Warning: Exception raised reading")


def _exr_reason(error: Exception, said: str) -> str:
    """Why OpenEXR could not read a file, in a few words: its error codes when it printed any (its
    exception then only says "file has 0 parts"), else its exception's first line."""
    codes = list(dict.fromkeys(re.findall(r"\((EXR_ERR_[A-Z_]+)\)", said)))
    if codes:
        return f"truncated or corrupt: {', '.join(codes)}"
    return one_line(error)


_CAPTURING = threading.Lock()  # held while _library_output_captured redirects the process's output


@contextlib.contextmanager
def _library_output_captured() -> Iterator[dict[str, str]]:
    """Keep aside what a library prints while the block runs: on file descriptor 2 (C++ ``std::cerr``)
    and on Python's ``sys.stdout`` (pybind11's ``py::print``).

    Yields a dict whose ``"stdout"`` and ``"stderr"`` hold the captured text once the block has
    ended. Where fd 2 cannot be redirected (no such descriptor, no temporary file), only
    ``sys.stdout`` is captured. One capture at a time: both are process-wide, and two threads'
    overlapping captures would restore them out of order, so while one runs (a loader thread
    reading another EXR) the block runs without one.
    """
    said = {"stdout": "", "stderr": ""}
    if not _CAPTURING.acquire(blocking=False):
        yield said
        return
    out = io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.callback(_CAPTURING.release)
        sink = stack.enter_context(_fd2_redirected())
        stack.enter_context(contextlib.redirect_stdout(out))
        try:
            yield said
        finally:
            stack.close()
            said["stdout"] = out.getvalue()
            if sink is not None:
                sink.seek(0)
                said["stderr"] = sink.read().decode("utf-8", "replace")
                sink.close()


@contextlib.contextmanager
def _fd2_redirected():
    """File descriptor 2 pointed at a temporary file while the block runs (yielded; None when that
    cannot be done), then restored."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield None
        return
    try:
        sink = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield None
        return
    try:
        os.dup2(sink.fileno(), 2)
    except OSError:
        os.close(saved)
        sink.close()
        yield None
        return
    try:
        yield sink
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _pass_on(text: str, stream, drop: re.Pattern | None = None) -> None:
    """Write captured ``text`` on to ``stream``, without the lines ``drop`` finds (so another
    thread's lines written while it was captured are not lost)."""
    lines = [ln for ln in text.splitlines(keepends=True) if drop is None or not drop.search(ln)]
    if lines:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.write("".join(lines))
            stream.flush()


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


def write_npy(path: PathLike, values: Any) -> Path:
    """Write a float32 (H,W) ``.npy`` atomically."""
    arr = np.ascontiguousarray(as_map(values))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    return atomic_write(path, write)


def load_depth_output(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read a map written by ``refine``: (values float32 (H,W), meta dict).

    - ``.png``: decoded with its sidecar ``<base>.json`` (InputDataError naming the
      json when it is missing); meta is the sidecar; invalid pixels (code 0 of a map with
      holes, the encoding's ``invalid``) are NaN.
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
        invalid = None if enc.get("invalid") is None else int(_finite_number(enc["invalid"], f"{side}: encoding invalid"))
        return decode_png16(read_png16(path), lo, hi, invalid), meta
    meta = read_sidecar(side) if side.is_file() else {}
    if ext == ".exr":
        values, attrs = read_exr(path)
        meta.update(attrs)
        return values, meta
    return _single_channel(_load_numpy(path, "npy"), path).astype(np.float32), meta


def _finite_number(value: Any, what: str) -> float:
    """``value`` as a finite float, or InputDataError naming ``what`` (a sidecar field)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputDataError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(out):
        raise InputDataError(f"{what} must be finite, got {value!r}")
    return out
