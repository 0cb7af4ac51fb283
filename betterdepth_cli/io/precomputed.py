"""Depth maps another tool (or an earlier run of this one) already computed, used as the
conditioner: ``--conditioner file:<folder>[?options]``.

A map is matched to an input by its file stem (or its path relative to the folder, without
extension), anywhere below the folder; then by the default output names of other tools:

========================  ==========================================  ==========================
tool                      file (``<stem>`` = the input's stem)         read as
========================  ==========================================  ==========================
this tool                 ``<stem>.png`` + ``<stem>.json``, ``.exr``,  kind, metric, units from
                          ``.npy`` + ``.json``                         the sidecar / EXR header
Marigold v1.1 / v1.0      ``depth_npy/<stem>_depth.npy`` /             depth, relative, [0, 1]
                          ``<stem>_pred.npy``; ``depth_bw/`` 16-bit
                          PNG (``* 65535``)
MiDaS ``run.py``          ``<stem>-<model>.pfm``                       disparity, relative
Depth Pro ``depth-pro-run``  ``<stem>.npz`` (array ``depth``)          depth, metres
Depth Anything ``run.py``  ``<stem>.png``, grey 8-bit (``--pred-only   say ``kind=disparity``;
                          --grayscale``), 0 = farthest                 0 is a value, not a hole
========================  ==========================================  ==========================

Options (after ``?``, joined with ``&``):

- ``kind=depth|disparity`` and ``metric=0|1``: what the values are (needed only where
  neither a sidecar nor the tool's convention says);
- ``units=m|cm|mm`` (values in those units: converted to metres, metric) and ``scale=<float>``
  (multiplies the stored values first, e.g. ``scale=0.1&units=mm`` or ``scale=0.00001526``);
- ``invalid=<value>|none``: the stored value that means "no depth" (default 0 for maps of
  unknown origin in 16-bit or float; none for 8-bit PNGs and the relative tools above);
- ``pattern=<glob>``: the map's path relative to the folder, ``{stem}`` (and ``{key}``, the
  input's relative path without extension) replaced, e.g. ``pattern=out/{stem}_disp.npy``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from betterdepth_cli.core.conditioners import Conditioner
from betterdepth_cli.core.pipeline import resize_map
from betterdepth_cli.core.types import DepthPrediction, InputDataError, ModelNotFoundError, UsageError, check_kind
from betterdepth_cli.io.depth_files import read_depth_map

EXTENSIONS = (".png", ".npy", ".npz", ".exr", ".pfm", ".tif", ".tiff")
UNITS = {"m": 1.0, "metres": 1.0, "meters": 1.0, "cm": 0.01, "mm": 0.001}
PROBE_FILES = 16  # files looked at to learn what the maps hold when no kind= is given
_OPTIONS = {"kind", "metric", "units", "scale", "invalid", "pattern"}


@dataclass(frozen=True)
class Reading:
    """How to read one map: what it holds and how its stored values become that."""

    kind: str | None = None
    metric: bool = False
    scale: float = 1.0  # stored value * scale = the value (metres for metric depth)
    invalid: float | None = 0.0
    origin: str = "file"


#: Other tools' default output names: (stem suffix, extensions in preference order, reading).
TOOL_NAMES: tuple[tuple[str, tuple[str, ...], Reading], ...] = (
    ("_depth", (".npy",), Reading("depth", False, 1.0, None, "Marigold v1.1")),
    ("_pred", (".npy",), Reading("depth", False, 1.0, None, "Marigold v1.0")),
    ("_depth", (".png",), Reading("depth", False, 1 / 65535, None, "Marigold v1.1 16-bit PNG")),
    ("_pred", (".png",), Reading("depth", False, 1 / 65535, None, "Marigold v1.0 16-bit PNG")),
)
#: MiDaS ``run.py`` writes ``<stem>-<model type>.pfm`` (raw relative disparity).
MIDAS = Reading("disparity", False, 1.0, None, "MiDaS")
#: Depth Pro's ``depth-pro-run`` writes ``<stem>.npz`` holding ``depth`` in metres.
DEPTH_PRO = Reading("depth", True, 1.0, None, "Depth Pro")


def _float(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--conditioner file: option `{name}` must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise UsageError(f"--conditioner file: option `{name}` must be finite, got {text!r}")
    return value


def _png_bit_depth(path: Path) -> int | None:
    from betterdepth_cli.io.images import PNG_IHDR_BYTES, png_depth_and_colour

    with open(path, "rb") as fh:
        header = png_depth_and_colour(fh.read(PNG_IHDR_BYTES))
    return header[0] if header else None


def _npz_names(path: Path) -> list[str]:
    from betterdepth_cli.io.depth_files import load_npy

    with load_npy(path, str(path), "npz") as data:
        return list(data.files)


class FileConditioner(Conditioner):
    """Precomputed maps from any other tool, matched to inputs by file stem (see the module docstring)."""

    needs_keys = True

    def __init__(self, folder: str | Path, kind: str | None = None, metric: bool | None = None, device="cpu",
                 units: str | None = None, scale: float | None = None, invalid: float | None | str = "default",
                 pattern: str | None = None):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise ModelNotFoundError(f"--conditioner file:{folder}: folder not found")
        if kind is not None:
            check_kind(kind)
        if units is not None and units not in UNITS:
            raise UsageError(f"--conditioner file:{folder}: units must be one of {', '.join(UNITS)}, got {units!r}")
        self.name = f"file:{folder}"
        self.options = {"kind": kind, "metric": metric, "units": units, "scale": scale, "invalid": invalid}
        self.pattern = pattern
        self.device = torch.device(device)
        self._readings: dict[Path, Reading] = {}
        self._index: dict[str, Path] = {}  # stem -> the first file
        self._rel: dict[str, Path] = {}  # relative path without extension -> the first file
        self._stem_dirs: dict[str, set[Path]] = {}  # stem -> the folders holding a map of that stem
        self._by_stem: dict[tuple[str, str], Path] = {}  # (stem, extension) -> the first file
        self._midas: dict[str, Path] = {}  # <stem> of <stem>-<model>.pfm -> the first file
        for p in sorted(self.folder.rglob("*")):
            if p.suffix.lower() in EXTENSIONS and p.is_file():
                rel = p.relative_to(self.folder)
                self._index.setdefault(p.stem, p)
                self._rel.setdefault(rel.with_suffix("").as_posix(), p)
                self._stem_dirs.setdefault(p.stem, set()).add(rel.parent)
                self._by_stem.setdefault((p.stem, p.suffix.lower()), p)
                if p.suffix.lower() == ".pfm" and "-" in p.stem:
                    self._midas.setdefault(p.stem.rsplit("-", 1)[0], p)
        probe = self._with_options(Reading(kind))
        for path in list(self._rel.values())[:PROBE_FILES]:  # every file once, in sorted order
            if probe.kind is not None:
                break
            probe = self.reading(path)
        if probe.kind is None:
            raise UsageError(
                f"--conditioner {self.name}: say what the maps hold, e.g. file:{folder}?kind=disparity (or kind=depth)"
            )
        self.kind, self.metric = probe.kind, probe.metric

    # ------------------------------------------------------------------ finding the map of an input
    def path_for(self, key: str) -> Path:
        """The map of the input ``key`` (its stem or relative path without extension)."""
        stem = Path(key).name
        if self.pattern:
            spec = self.pattern.replace("{stem}", glob.escape(stem)).replace("{key}", glob.escape(key))
            hits = sorted(p for p in self.folder.glob(spec) if p.is_file())
            if hits:
                return hits[0]
            raise InputDataError(f"{self.folder}: no precomputed map for '{key}' (pattern {spec})")
        if key in self._rel:  # the input's relative path: a mirrored tree, or a flat folder
            return self._rel[key]
        if stem in self._index:  # by name alone: only when one folder holds maps of that name
            folders = self._stem_dirs[stem]
            if len(folders) > 1:
                where = ", ".join(sorted(str(d) for d in folders)[:4]) + (", ..." if len(folders) > 4 else "")
                raise InputDataError(f"{self.folder}: maps named {stem} in {len(folders)} folders ({where}) and none "
                                     f"at {key}: mirror the inputs' folders there, or pass ?pattern=...")
            return self._index[stem]
        for suffix, exts, _ in TOOL_NAMES:
            for ext in exts:
                if (stem + suffix, ext) in self._by_stem:
                    return self._by_stem[(stem + suffix, ext)]
        if stem in self._midas:
            return self._midas[stem]
        raise InputDataError(
            f"{self.folder}: no precomputed map for '{key}' (looked for {stem}{{{','.join(EXTENSIONS)}}}, "
            f"{stem}_depth.npy, {stem}_pred.npy, {stem}-<model>.pfm; or pass ?pattern=...)"
        )

    # ------------------------------------------------------------------ what a map holds
    def _convention(self, path: Path) -> Reading:
        """What the file says about itself: this tool's sidecar/EXR header, another tool's convention."""
        from betterdepth_cli.io.outputs import is_own_sidecar
        from betterdepth_cli.io.depth_files import read_exr, read_sidecar, sidecar_path

        side = sidecar_path(path)
        if path.suffix.lower() in (".png", ".npy", ".exr") and side.is_file() and is_own_sidecar(side):
            meta = read_sidecar(side)
            return Reading(meta.get("kind"), bool(meta.get("metric")), 1.0, None, f"sidecar {side.name}")
        ext = path.suffix.lower()
        if ext == ".exr":
            meta = read_exr(path)[1]
            if meta.get("kind"):
                return Reading(meta["kind"], bool(meta.get("metric")), 1.0, None, "EXR header")
        for suffix, exts, reading in TOOL_NAMES:
            if path.stem.endswith(suffix) and ext in exts:
                return reading
        if ext == ".pfm" and "-" in path.stem:
            return MIDAS
        if ext == ".npz" and "depth" in _npz_names(path):
            return DEPTH_PRO
        if ext == ".npz" and "disparity" in _npz_names(path):
            return Reading("disparity", False, 1.0, 0.0, "npz disparity")
        if ext == ".png" and _png_bit_depth(path) == 8:
            return Reading(None, False, 1.0, None, "8-bit PNG")  # e.g. Depth Anything: 0 is the farthest value
        return Reading()

    def _with_options(self, reading: Reading) -> Reading:
        o = self.options
        if o["kind"] is not None:
            reading = replace(reading, kind=o["kind"])
        if o["metric"] is not None:
            reading = replace(reading, metric=bool(o["metric"]))
        if o["invalid"] != "default":
            reading = replace(reading, invalid=o["invalid"])
        scale = reading.scale if o["scale"] is None else o["scale"]
        if o["units"] is not None:
            factor = UNITS[o["units"]]
            scale *= factor if reading.kind != "disparity" else 1 / factor
            reading = replace(reading, metric=True)
        return replace(reading, scale=scale)

    def reading(self, path: Path) -> Reading:
        """How ``path`` is read: its own convention, overridden by the options the user gave."""
        if path not in self._readings:
            self._readings[path] = self._with_options(self._convention(path))
        return self._readings[path]

    # ------------------------------------------------------------------ predict
    def _load(self, key: str, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, Reading]:
        path = self.path_for(key)
        reading = self.reading(path)
        if reading.kind is None:
            raise InputDataError(f"--conditioner {self.name}: {path} does not say what it holds; add ?kind=disparity "
                                 "(or kind=depth)")  # this file's problem: it fails alone under --continue-on-error
        try:
            v, m = read_depth_map(path, invalid=reading.invalid)
        except InputDataError as exc:
            if "colour image" in str(exc):
                raise InputDataError(f"{exc} (Depth Anything: run.py --pred-only --grayscale)") from None
            raise
        v = torch.from_numpy(v * np.float32(reading.scale)).float()[None, None]
        m = torch.from_numpy(m)[None, None]
        if v.shape[-2:] != size:
            try:
                v, m = resize_map(v, m, size)
            except ValueError as exc:
                raise InputDataError(f"{path}: {exc}") from None
        return v, m, reading

    def predict(self, images: torch.Tensor, keys: list[str] | None = None) -> DepthPrediction:
        if keys is None or len(keys) != images.shape[0]:
            raise UsageError("the file: conditioner needs one key (file stem) per image")
        size = tuple(images.shape[-2:])
        vals, masks = [], []
        for key in keys:
            v, m, reading = self._load(key, size)
            if (reading.kind, reading.metric) != (self.kind, self.metric):
                raise InputDataError(f"{self.path_for(key)}: holds {reading.kind} (metric {reading.metric}, from "
                                     f"{reading.origin}), the "
                                     f"other maps {self.kind} (metric {self.metric}); pass ?kind= and ?metric=")
            vals.append(v)
            masks.append(m)
        values = torch.cat(vals).to(self.device)
        valid = torch.cat(masks).to(self.device)  # non-finite values: holes, made so by DepthPrediction
        return DepthPrediction(values=values, valid=valid, kind=self.kind, metric=self.metric, source=self.name)


def file_conditioner(folder: str, options: dict[str, str], metric: bool | None = None, device="cpu") -> FileConditioner:
    """``file:<folder>?options`` -> a :class:`FileConditioner` (options checked here, one line each;
    ``metric``: the ``metric=`` option, parsed by the caller)."""
    unknown = set(options) - _OPTIONS
    if unknown:
        raise UsageError(f"--conditioner file:{folder}: unknown option(s) {', '.join(sorted(unknown))} "
                         f"(valid: {', '.join(sorted(_OPTIONS))})")
    invalid: float | None | str = "default"
    if "invalid" in options:
        text = options["invalid"].lower()
        invalid = None if text in ("none", "") else _float(text, "invalid")
    scale = _float(options["scale"], "scale") if "scale" in options else None
    if metric is False and options.get("units"):
        raise UsageError(f"--conditioner file:{folder}: metric=0 and units={options['units']} contradict each other "
                         "(values in m, cm or mm are metric); drop one")
    if scale is not None and scale <= 0:
        raise UsageError(f"--conditioner file:{folder}: scale must be positive, got {options['scale']!r}")
    return FileConditioner(folder, kind=options.get("kind"), metric=metric,
                           device=device, units=options.get("units"), scale=scale, invalid=invalid,
                           pattern=options.get("pattern"))
