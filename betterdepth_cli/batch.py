"""The batch engine behind ``betterdepth refine`` (no Typer, no rich).

It takes resolved settings, the discovered inputs and loaded models, and runs::

    reader thread            main thread (compute)          writer thread
    Source.read() ->  [q]  -> same-size batches ->    [q] -> per-frame files (exr, npy, uncertainty)
    decode ahead             refine_batch()                 shots: one png16/preview range for all frames
                                                            single images: png16 + sidecar, preview

- IO overlaps compute: decoding runs ahead in a bounded queue and writing
  happens behind the model, so the model only waits when IO is slower than it.
- A shot (every frame of one ``Source.group``: a video or an image sequence)
  shares one png16 range, so normalisation adds no flicker. Frames are kept as
  float until the shot ends; past ``spill_bytes`` they are spilled to
  temporary ``.npy`` files in the output folder, so memory stays bounded.
- Every file is written atomically (``io.outputs``); existing outputs are
  skipped (resume) unless ``overwrite``; a shot with any output missing is redone
  whole, so its frames keep one range.
- Randomness: each image gets its own generator seeded with ``seed``, so an
  image's result depends neither on which images ran before it nor on the batch
  it is in (a resumed run, a shard, any ``--batch-size`` and ``eval`` agree).

Bad inputs fail alone with a one-line reason; without ``continue_on_error``
the first one halts the batch. See :func:`exit_code` for the exit status.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from betterdepth_cli.core.types import (
    BetterDepthError,
    InputDataError,
    ModelError,
    NoInputError,
    OutputError,
    UsageError,
)

#: Exit codes of ``betterdepth refine`` (sysexits style; see the README).
EXIT_OK = 0
EXIT_PARTIAL = 3
EXIT_USAGE = 64
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_UNAVAILABLE = 69
EXIT_CANTCREAT = 73
EXIT_INTERRUPTED = 130

DEFAULT_FORMATS = ("png16",)
RUN_CONFIG_NAME = "betterdepth-run.toml"
#: Hidden folder of the claims that let several runs share one output folder (removed when empty).
CLAIMS_DIR = ".betterdepth-claims"

MIN_SIDE = 2
_END = object()


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- settings


@dataclass
class RefineSettings:
    """Everything the engine needs, already resolved (no ``None`` meaning "default").

    ``model`` and ``conditioner`` are the names recorded in sidecars; the loaded
    objects are passed to :func:`run` separately. ``processing_res`` 0 = native.
    """

    out_dir: Path
    formats: tuple[str, ...] = DEFAULT_FORMATS
    conditioner: str = "builtin"
    model: str | None = "default"
    refine: bool = True
    steps: int = 2
    ensemble: int = 1
    reduction: str = "mean"
    processing_res: int = 768
    seed: int = 0
    batch_size: int = 1
    overwrite: bool = False
    continue_on_error: bool = False
    preview_video: bool = False
    spill_bytes: int = 1 << 30  # float frames of open shots kept in memory before spilling
    prefetch: int = 0  # decoded images queued ahead of the model (0: 2 x batch_size + 2)
    max_batch_pixels: int = 64_000_000  # a batch is cut when its images exceed this many pixels
    fps: float = 24.0  # preview video rate when the source does not say
    tile: int | None = None  # tiled refinement: None = automatic (the card's tile_above), 0 = off, N = tile side
    tile_overlap: int | None = None  # pixels; None = the card's tile_overlap (or 1/8 of the tile)

    def __post_init__(self) -> None:
        from betterdepth_cli.io.outputs import check_formats

        self.out_dir = Path(self.out_dir)
        self.formats = check_formats(self.formats)
        if self.batch_size < 1:
            raise UsageError(f"`--batch-size` must be >= 1, got {self.batch_size}")
        if self.steps < 1:
            raise UsageError(f"`--steps` must be >= 1, got {self.steps}")
        if self.ensemble < 1:
            raise UsageError(f"`--ensemble` must be >= 1, got {self.ensemble}")
        if self.processing_res < 0:
            raise UsageError(f"`--processing-res` must be >= 0 (0 = native), got {self.processing_res}")
        if self.reduction not in ("mean", "median"):
            raise UsageError(f"`--reduction` must be mean or median, got {self.reduction!r}")
        if "uncertainty" in self.formats and (not self.refine or self.ensemble < 2):
            raise UsageError(
                "`--format uncertainty` needs the ensemble spread: use --ensemble 2 or more (and no --no-refine)"
            )

    def sidecar_fields(self) -> dict:
        """The run's fields of every sidecar (see docs: output files)."""
        if not self.refine:
            return {"model": None, "conditioner": self.conditioner, "steps": None, "ensemble": None,
                    "reduction": None, "seed": None, "processing_res": None, "refined": False}  # fmt: skip
        return {"model": self.model, "conditioner": self.conditioner, "steps": self.steps,
                "ensemble": self.ensemble, "reduction": self.reduction, "seed": self.seed,
                "processing_res": self.processing_res}  # fmt: skip


def read_card(model: str | None) -> dict | None:
    """The model card (``betterdepth.json``) of a refiner, read without loading weights.

    ``None``/``"default"``: the embedded model; a folder: its card; a hub id: the
    card in the local Hugging Face cache if there. Returns None when not found.
    """
    from betterdepth_cli.core.guided import GUIDED_MODEL_NAME, guided_card
    from betterdepth_cli.core.refiner import CARD_FILE, DEFAULT_MODEL_NAMES, default_model_path

    if model == GUIDED_MODEL_NAME:
        return guided_card()
    if model in DEFAULT_MODEL_NAMES:
        path = default_model_path() / CARD_FILE
    else:
        path = Path(str(model)).expanduser() / CARD_FILE
        if not path.is_file() and str(model).count("/") == 1 and not str(model).startswith((".", "/", "~")):
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(str(model), CARD_FILE)
                path = Path(cached) if isinstance(cached, str) else path
            except Exception:  # noqa: BLE001 - the cache is optional
                pass
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- plan


@dataclass
class Item:
    """One input image or frame and the files it gives."""

    entry: Any
    outputs: dict[str, Path]
    group: str
    index: int = 0
    blocked: str | None = None  # why it must not be written (a file the tool did not write, stale settings)

    @property
    def key(self) -> str:
        return str(self.entry.relpath)

    @property
    def source_path(self) -> str:
        """The input file, relative to the current folder when inside it (as users type paths)."""
        return display_path(getattr(self.entry, "source", self.key))

    @property
    def label(self) -> str:
        frame = getattr(self.entry, "frame", None)
        return f"{self.source_path} frame {frame}" if frame is not None else self.source_path


def _relative_to(path: Any, folder: Path) -> str:
    """``path`` relative to ``folder`` ('/'-separated), or absolute when no relative path exists."""
    try:
        return Path(os.path.relpath(os.path.abspath(str(path)), os.path.abspath(folder))).as_posix()
    except ValueError:  # another drive (Windows)
        return os.path.abspath(str(path))


def display_path(path: Any) -> str:
    """``path`` relative to the current folder when it is inside it, else as given."""
    text = str(path)
    try:
        rel = os.path.relpath(text)
    except ValueError:  # another drive (Windows)
        return text
    return text if rel.startswith("..") else rel


@dataclass
class Group:
    """A source's items; a shot when it has several frames (one shared png16 range)."""

    source: Any
    key: str
    items: list[Item]
    todo: list[Item]
    extra_outputs: dict[str, Path] = field(default_factory=dict)  # preview mp4

    @property
    def is_shot(self) -> bool:
        return len(self.items) > 1


@dataclass
class Plan:
    groups: list[Group]
    out_dir: Path
    formats: tuple[str, ...]
    excluded: int = 0  # inputs inside the output folder that were left out

    @property
    def total(self) -> int:
        return sum(len(g.items) for g in self.groups)

    @property
    def todo(self) -> int:
        return sum(len(g.todo) for g in self.groups)

    @property
    def skipped(self) -> int:
        return self.total - self.todo

    def describe(self) -> Iterable[str]:
        """One line per input: ``<input> -> <outputs>`` and whether it would be skipped."""
        for g in self.groups:
            todo = {id(i) for i in g.todo}
            for it in g.items:
                outs = " ".join(str(p) for k, p in it.outputs.items() if k != "sidecar")
                state = "" if id(it) in todo else "  (exists, skip)"
                if it.blocked and id(it) in todo:
                    state = f"  (will fail: {it.blocked})"
                yield f"{it.label} -> {outs}{state}"
            for p in g.extra_outputs.values():
                yield f"{g.key} -> {p}{'' if g.todo else '  (exists, skip)'}"


def _resolved(path: Any) -> Path | None:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, TypeError, ValueError):
        return None


def _inside(path: Path | None, folder: Path) -> bool:
    return path is not None and (path == folder or folder in path.parents)


def _is_our_output(path: Path) -> bool:
    """A file ``refine`` wrote: its sidecar (``a.json`` for ``a.png`` and ``a_preview.jpg``) is ours.
    A user's ``A_preview.jpg`` with no sidecar of ours is an input like any other."""
    from betterdepth_cli.io.outputs import is_own_sidecar, sidecar_of

    return is_own_sidecar(sidecar_of(path))


#: Sidecar fields that change the pixels: outputs written with other values are stale.
PIXEL_SETTINGS = ("model", "conditioner", "steps", "ensemble", "reduction", "seed", "processing_res")


def _existing_state(item: Item, settings: RefineSettings) -> str:
    """``new`` (nothing there), ``done`` (all ours, same settings), ``partial`` (ours, some missing),
    or the reason the outputs must not be written without ``--overwrite``."""
    from betterdepth_cli.io.outputs import read_sidecar

    outs = item.outputs
    present = [p for p in outs.values() if Path(p).is_file()]
    if not present:
        return "new"
    side = outs["sidecar"]
    try:
        stored = read_sidecar(side)
    except InputDataError:
        foreign = next((p for p in present if p != side), side)
        return (f"{foreign}: exists and was not written by betterdepth (no sidecar of ours); "
                "choose another -o folder, or --overwrite to replace it")
    if len(present) < len(outs):
        return "partial"
    want = settings.sidecar_fields()
    diff = [f"{k} {stored.get(k)!r} -> {want.get(k)!r}" for k in PIXEL_SETTINGS if stored.get(k) != want.get(k)]
    if diff:
        return f"{item.label}: outputs exist from other settings ({', '.join(diff)}); --overwrite redoes them"
    return "done"


def preview_video_path(out_dir: Path, relpath: str) -> Path:
    """``<out>/clip/clip.0000`` -> ``<out>/clip/clip_preview.mp4``."""
    from betterdepth_cli.io.outputs import split_frame

    rel = PurePosixPath(str(relpath))
    stem, _ = split_frame(rel.name)
    return Path(out_dir).joinpath(*rel.parent.parts, f"{stem}_preview.mp4")


def plan_run(sources: Sequence[Any], settings: RefineSettings) -> Plan:
    """Map every input to its output files and decide what to skip.

    Refuses (UsageError) an output path equal to an input path and two inputs
    writing the same output. Earlier results found inside the output folder
    (by a recursive search of a folder that holds it) are left out. Raises
    NoInputError when nothing is left.
    """
    from betterdepth_cli.io.outputs import output_paths, outputs_exist

    out_dir = Path(settings.out_dir)
    out_res = _resolved(out_dir) or out_dir
    groups: dict[str, Group] = {}
    owners: dict[Path, str] = {}
    excluded = 0
    index = 0
    sources = list(sources)
    inputs = {r: e.source for s in sources for e in s.entries()  # the inputs that stay inputs
              if (r := _resolved(getattr(e, "source", None))) is not None
              and not (_inside(r, out_res) and _is_our_output(r))}
    for source in sources:
        gkey = str(getattr(source, "group", None) or id(source))
        entries = list(source.entries())
        items = []
        for entry in entries:
            outs = output_paths(out_dir, entry.relpath, settings.formats)
            src = _resolved(getattr(entry, "source", None))
            if src is not None and _inside(src, out_res) and _is_our_output(src):
                excluded += 1
                continue
            for p in outs.values():
                pr = _resolved(p)
                if src is not None and pr == src:
                    raise UsageError(f"{entry.source}: the output {p} would overwrite this input; choose another -o folder")
                if pr in inputs:  # another input (a user photo named like an output): inputs are never written
                    raise UsageError(f"{entry.source}: the output {p} would overwrite the input {inputs[pr]}; "
                                     "choose another -o folder")
                if pr in owners and owners[pr] != str(entry.source) + str(entry.frame):
                    raise UsageError(f"{entry.source} and {owners[pr].rstrip('None')} would both write {p}; rename one")
                owners[pr] = str(entry.source) + str(entry.frame)
            items.append(Item(entry=entry, outputs=outs, group=gkey, index=index))
            index += 1
        if not items:
            continue
        if gkey in groups:  # two sources claiming one group: keep them apart
            gkey = f"{gkey}#{index}"
            for it in items:
                it.group = gkey
        groups[gkey] = Group(source=source, key=gkey, items=items, todo=[])
    if not groups:
        if excluded:
            raise NoInputError(f"every input ({excluded}) is inside the output folder {out_dir}; nothing to do")
        raise NoInputError("no input found")
    for group in groups.values():
        if settings.preview_video and group.is_shot:
            group.extra_outputs["preview_video"] = preview_video_path(out_dir, group.items[0].key)
        if settings.overwrite:
            group.todo = list(group.items)
            continue
        states = [_existing_state(it, settings) for it in group.items]
        for it, state in zip(group.items, states):
            it.blocked = None if state in ("new", "done", "partial") else state
        if group.is_shot:
            # one range per shot: a shot with anything missing is redone whole, one blocked frame blocks it
            reason = next((it.blocked for it in group.items if it.blocked), None)
            for it in group.items:
                it.blocked = reason
            missing = any(s != "done" for s in states) or not outputs_exist(group.extra_outputs)
            group.todo = list(group.items) if missing else []
        else:
            group.todo = [it for it, s in zip(group.items, states) if s != "done"]
    return Plan(groups=list(groups.values()), out_dir=out_dir, formats=settings.formats, excluded=excluded)


def remove_stale_temps(plan: Plan, before: float) -> int:
    """Delete the temporaries of an earlier, killed run (``.<output name>.tmp-*``, see
    ``io.outputs.atomic_write``) beside this plan's outputs, if last written before ``before``
    (a run still writing has fresh ones). Returns how many were removed."""
    from betterdepth_cli.io.outputs import temporary_target

    removed = 0
    folders: dict[Path, set[str]] = {}
    for group in plan.groups:
        for item in group.items:
            for p in item.outputs.values():
                folders.setdefault(Path(p).parent, set()).add(Path(p).name)
        for p in group.extra_outputs.values():
            folders.setdefault(Path(p).parent, set()).add(Path(p).name)
    for folder, names in folders.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if temporary_target(e.name) not in names:
                continue
            try:
                if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime < before:
                    os.remove(e.path)
                    removed += 1
            except OSError:
                pass
    return removed


def check_output_dir(out_dir: Path) -> None:
    """Create the output folder and prove it is writable (OutputError, exit 73, otherwise)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".betterdepth-probe-", dir=out_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"{out_dir}: output folder not writable ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- summary / exit code


@dataclass
class Summary:
    total: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    halted_by: str | None = None  # the error that stopped the batch (without continue_on_error)
    failures: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        state = "interrupted" if self.interrupted else "done"
        return (
            f"{state}: {self.processed} processed, {self.skipped} skipped, {self.failed} failed "
            f"in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s)"
        )


def exit_code(summary: Summary, continue_on_error: bool) -> int:
    """0 all done; 130 interrupted; 65 every input failed (none processed now or
    skipped as done before) or the first bad input halted the batch; 3 some
    inputs failed under ``continue_on_error``."""
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.failed == 0:
        return EXIT_OK
    if summary.processed + summary.skipped == 0 or not continue_on_error:
        return EXIT_DATAERR
    return EXIT_PARTIAL


# --------------------------------------------------------------------------- shots


class _ShotBuffer:
    """Float frames of one shot until its shared range is known; spills to .npy past a budget."""

    def __init__(self, engine: "_Engine"):
        self.engine = engine
        self.frames: list[tuple[Item, Any]] = []  # (item, array or spilled path)
        self.lo, self.hi = math.inf, -math.inf
        self.p_lo, self.p_hi = math.inf, -math.inf
        self.kind, self.metric = "disparity", False
        self.expected = 0
        self.seen = 0

    def add(self, item: Item, values: np.ndarray, valid: np.ndarray, kind: str, metric: bool) -> None:
        self.kind, self.metric = kind, metric
        arr = np.where(valid & np.isfinite(values), values, np.nan).astype(np.float32)
        ok = arr[np.isfinite(arr)]
        if ok.size:
            self.lo, self.hi = min(self.lo, float(ok.min())), max(self.hi, float(ok.max()))
            sample = ok[:: max(1, ok.size // 65536)]
            p2, p98 = np.percentile(sample, (2.0, 98.0))
            self.p_lo, self.p_hi = min(self.p_lo, float(p2)), max(self.p_hi, float(p98))
        self.frames.append((item, self.engine.keep(arr)))

    def arrays(self) -> Iterable[tuple[Item, np.ndarray]]:
        for item, held in self.frames:
            yield item, (np.load(held) if isinstance(held, Path) else held)

    def release(self) -> None:
        for _, held in self.frames:
            self.engine.drop(held)
        self.frames = []


# --------------------------------------------------------------------------- engine


ItemCallback = Callable[[str, Item, "str | None"], None]


def _to_float_rgb(image: Any) -> np.ndarray:
    """(H,W,3) uint8/uint16/float -> float32 (H,W,3) in [0,1]."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) * np.float32(1 / 255)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(1 / 65535)
    return arr.astype(np.float32, copy=False)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _Engine:
    def __init__(self, plan: Plan, settings: RefineSettings, conditioner, model, on_item: ItemCallback | None, log):
        self.plan = plan
        self.s = settings
        self.conditioner = conditioner
        self.model = model if settings.refine else None
        self.on_item = on_item or (lambda status, item, message: None)
        self.log = log or (lambda message: None)
        self.summary = Summary(total=plan.total, skipped=plan.skipped)
        self.halt = threading.Event()  # stop reading new inputs
        self.abort = threading.Event()  # stop everything now (Ctrl-C, output error)
        prefetch = settings.prefetch or 2 * settings.batch_size + 2
        self.in_q: queue.Queue = queue.Queue(maxsize=prefetch)
        self.out_q: queue.Queue = queue.Queue(maxsize=2 * settings.batch_size + 2)
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.held_bytes = 0
        self.spill_dir: Path | None = None
        self.shots: dict[str, _ShotBuffer] = {}
        self.groups = {g.key: g for g in plan.groups}
        self.remaining = {g.key: len(g.todo) for g in plan.groups}
        self.claims: list[Path] = []  # claim files this run holds (released when it ends)

    # ------------------------------------------------------------ memory for shots
    def keep(self, arr: np.ndarray) -> Any:
        if self.held_bytes + arr.nbytes <= self.s.spill_bytes:
            self.held_bytes += arr.nbytes
            return arr
        if self.spill_dir is None:
            self.s.out_dir.mkdir(parents=True, exist_ok=True)
            self.spill_dir = Path(tempfile.mkdtemp(prefix=".betterdepth-spill-", dir=self.s.out_dir))
            self.log(f"shot frames past {self.s.spill_bytes / 2**20:.0f} MiB are kept in {self.spill_dir} until the shot ends")
        fd, name = tempfile.mkstemp(suffix=".npy", dir=self.spill_dir)
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        return Path(name)

    def drop(self, held: Any) -> None:
        if isinstance(held, Path):
            held.unlink(missing_ok=True)
        else:
            self.held_bytes -= held.nbytes

    # ------------------------------------------------------------ queues
    def _put(self, q: queue.Queue, msg: Any, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # ------------------------------------------------------------ reader thread
    def reader(self) -> None:
        try:
            for group in self.plan.groups:
                if not group.todo:
                    continue
                if self.halt.is_set():
                    break
                taken = self._claim(group)
                if taken is None and not self.s.overwrite and all(
                        _existing_state(it, self.s) == "done" for it in group.todo):
                    taken = f"{group.items[0].label}: written by another run meanwhile; skipped"
                if taken is not None:
                    for item in group.todo:
                        if not self._put(self.in_q, ("skip", item, taken), self.halt):
                            return
                    continue
                blocked = [it for it in group.todo if it.blocked]
                for item in blocked:  # never read: their outputs must not be written
                    if not self._put(self.in_q, ("fail", item, item.blocked), self.halt):
                        return
                readable = [it for it in group.todo if not it.blocked]
                if not readable:
                    continue
                by_key = {it.key: it for it in readable}
                pending = dict(by_key)
                try:
                    for entry, image in group.source.read([it.entry for it in readable]):
                        item = by_key.get(str(entry.relpath))
                        if item is None:
                            continue
                        pending.pop(item.key, None)
                        if not self._put(self.in_q, ("image", item, image), self.halt):
                            return
                    if pending:  # the source ended early (e.g. a video shorter than its count)
                        first = next(iter(pending.values()))
                        raise InputDataError(f"{first.label}: the source ended before this frame")
                except (InputDataError, NoInputError) as exc:
                    message = _one_line(exc)
                    for item in pending.values():
                        if not self._put(self.in_q, ("fail", item, message), self.halt):
                            return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = self.error or exc
            self.abort.set()
            self.halt.set()
        finally:
            self._put(self.in_q, _END, self.abort)

    # ------------------------------------------------------------ compute (main thread)
    def compute(self) -> None:
        batch: list[tuple[Item, np.ndarray]] = []
        pixels = 0
        while True:
            if self.error is not None:
                raise self.error
            try:
                msg = self.in_q.get(timeout=0.1)
            except queue.Empty:
                continue
            if msg is _END:
                break
            if self.halt.is_set():
                continue  # drain without working
            tag, item, payload = msg
            if tag in ("fail", "skip"):
                self._emit((tag, item, payload))
                continue
            image = np.asarray(payload)  # converted to float in _flush (a tiled plate never is, whole)
            h, w = image.shape[:2]
            if image.ndim != 3 or image.shape[2] != 3:
                self._emit(("fail", item, f"{item.label}: expected an RGB image, got shape {image.shape}"))
                continue
            if h < MIN_SIDE or w < MIN_SIDE:
                self._emit(("fail", item, f"{item.label}: image is {w} x {h} pixels, at least 2 x 2 needed"))
                continue
            if batch and (batch[0][1].shape != image.shape or pixels + h * w > self.s.max_batch_pixels):
                self._flush(batch)
                batch, pixels = [], 0
            batch.append((item, image))
            pixels += h * w
            if len(batch) >= self.s.batch_size:
                self._flush(batch)
                batch, pixels = [], 0
        if batch and not self.halt.is_set():
            self._flush(batch)
        if self.error is not None:
            raise self.error

    # ------------------------------------------------------------ claims (runs sharing one output folder)
    def _claim_path(self, group: Group) -> Path:
        import hashlib

        return Path(self.plan.out_dir) / CLAIMS_DIR / (hashlib.sha1(group.key.encode()).hexdigest()[:20] + ".claim")

    def _claim(self, group: Group) -> str | None:
        """Claim a group's outputs for this run; None when claimed, else why another run has them.

        A claim is a file created with O_EXCL holding ``host pid``; one whose process is gone (same
        host) is taken over, so a killed run's claims do not block a rerun.
        """
        import socket

        path = self._claim_path(group)
        path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    host, pid = path.read_text().split()
                except (OSError, ValueError):
                    host, pid = "", "0"
                if host == socket.gethostname() and not _alive(int(pid)):
                    with contextlib.suppress(OSError):
                        os.remove(path)  # the run that claimed it is gone: take over
                    continue
                return f"{group.items[0].label}: being written by another run ({host} pid {pid}); skipped"
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.claims.append(path)
            return None
        return f"{group.items[0].label}: claim {path} could not be taken; skipped"

    def _release_claims(self) -> None:
        for path in self.claims:
            with contextlib.suppress(OSError):
                os.remove(path)
        self.claims = []
        with contextlib.suppress(OSError):
            (Path(self.plan.out_dir) / CLAIMS_DIR).rmdir()  # only when empty (no other run's claims)

    def _emit(self, msg: Any) -> None:
        if msg[0] == "fail" and not self.s.continue_on_error:
            self.halt.set()
        if not self._put(self.out_q, msg, self.abort) and self.error is not None:
            raise self.error

    def _flush(self, batch: list[tuple[Item, np.ndarray]]) -> None:
        import torch

        from betterdepth_cli.core.pipeline import refine_batch, seeded_generators

        if self.halt.is_set():
            return
        items = [it for it, _ in batch]
        tiling = self._tiling(batch[0][1].shape[:2])
        if tiling is not None and len(batch) > 1:  # plates are tiled one at a time
            for one in batch:
                self._flush([one])
            return
        generator = seeded_generators(self.s.seed, len(items))
        try:
            if tiling is not None:
                res = self._refine_tiled(batch[0][1], tiling, generator, items)
            else:
                stacked = np.stack([_to_float_rgb(img) for _, img in batch])  # [B,H,W,3]
                images = torch.from_numpy(stacked).permute(0, 3, 1, 2)  # [B,3,H,W], a view
                res = refine_batch(
                    images,
                    conditioner=self.conditioner,
                    model=self.model,
                    steps=self.s.steps,
                    ensemble=self.s.ensemble,
                    reduction=self.s.reduction,
                    processing_res=self.s.processing_res,
                    generator=generator,
                    keys=[str(getattr(it.entry, "key", it.key)) for it in items],
                )
        except (InputDataError, NoInputError) as exc:
            if len(batch) > 1:  # find the bad one(s): rerun one by one
                for one in batch:
                    self._flush([one])
                return
            label = items[0].label
            message = _one_line(exc)
            self._emit(("fail", items[0], message if label in message else f"{label}: {message}"))
            return
        except torch.OutOfMemoryError:
            if hasattr(torch, "cuda") and torch.cuda.is_available():
                torch.cuda.empty_cache()
            if len(batch) > 1:
                for one in batch:
                    self._flush([one])
                return
            h, w = batch[0][1].shape[:2]
            self._emit(("fail", items[0], f"{items[0].label}: out of memory at {w} x {h} "
                        f"(processing-res {self.s.processing_res}); try a lower --processing-res"))
            return
        except BetterDepthError:
            raise
        except Exception as exc:  # noqa: BLE001 - a crash inside torch/transformers/diffusers: one line, exit 70
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise ModelError(f"{items[0].label}: the model failed ({type(exc).__name__}: {first})") from exc
        for k, v in res.timings.items():
            self.summary.timings[k] = self.summary.timings.get(k, 0.0) + float(v)
        refined = res.refined.detach().float().cpu().numpy()[:, 0]  # [B,H,W]
        valid = res.valid.detach().cpu().numpy()[:, 0].astype(bool, copy=False)
        unc = None if res.uncertainty is None else res.uncertainty.detach().float().cpu().numpy()[:, 0]
        for i, item in enumerate(items):
            self._emit(("result", item, (refined[i], valid[i], None if unc is None else unc[i], res.kind, res.metric)))

    def _tiling(self, hw: tuple[int, int]) -> tuple[int, int] | None:
        """(tile, overlap) when an image of this size is refined in tiles (core.tiling.tiling_for)."""
        if self.model is None or getattr(self.model, "classical", False):
            return None
        from betterdepth_cli.core.tiling import tiling_for

        return tiling_for(*hw, self.model.defaults, self.s.tile, self.s.tile_overlap, self.s.processing_res)

    def _refine_tiled(self, image: np.ndarray, tiling: tuple[int, int], generator, items: list[Item]):
        from betterdepth_cli.core.tiled import refine_tiled

        return refine_tiled(image, model=self.model, conditioner=self.conditioner, tile=tiling[0],
                            overlap=tiling[1], steps=self.s.steps, ensemble=self.s.ensemble,
                            reduction=self.s.reduction, generator=generator,
                            keys=[str(getattr(it.entry, "key", it.key)) for it in items])

    # ------------------------------------------------------------ writer thread
    def writer(self) -> None:
        try:
            while not self.abort.is_set():
                try:
                    msg = self.out_q.get(timeout=0.1)
                except queue.Empty:
                    continue
                if msg is _END:
                    return
                tag, item, payload = msg
                if tag == "fail":
                    self._failed(item, payload)
                elif tag == "skip":  # another run claimed it: theirs to write
                    with self.lock:
                        self.summary.skipped += 1
                    self.on_item("skipped", item, payload)
                else:
                    self._write(item, *payload)
                    with self.lock:
                        self.summary.processed += 1
                    self.on_item("done", item, None)
                self._group_step(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = self.error or exc
            self.abort.set()
            self.halt.set()

    def _failed(self, item: Item, message: str) -> None:
        with self.lock:
            self.summary.failed += 1
            self.summary.failures.append((item.label, message))
            if not self.s.continue_on_error and self.summary.halted_by is None:
                self.summary.halted_by = message
        self.on_item("failed", item, message)

    def _meta(self, item: Item, kind: str, metric: bool) -> dict:
        from betterdepth_cli.io.outputs import make_sidecar

        side_dir = Path(item.outputs["sidecar"]).parent
        src = getattr(item.entry, "source", None)
        return make_sidecar(  # ``source`` relative to the sidecar's folder: it resolves wherever the tree moves
            kind=kind, metric=metric, source=_relative_to(src, side_dir) if src else item.source_path,
            frame=getattr(item.entry, "frame", None), **self.s.sidecar_fields(),
        )

    def _write(self, item: Item, values, valid, unc, kind: str, metric: bool) -> None:
        from betterdepth_cli.io import outputs as bo

        outs = item.outputs
        meta = self._meta(item, kind, metric)
        attrs = {k: v for k, v in meta.items() if k in ("source", "frame", "model", "conditioner", "steps",
                                                         "ensemble", "seed", "processing_res", "version")}
        if "exr" in outs:
            bo.write_exr(outs["exr"], values, kind=kind, metric=metric, attrs=attrs)
        if "npy" in outs:
            bo.write_npy(outs["npy"], values)
        if "png16" not in outs:  # png16 writes the sidecar itself (with its encoding); every run has one
            bo.write_sidecar(outs["sidecar"], {**meta, "height": int(values.shape[0]), "width": int(values.shape[1])})
        if "uncertainty" in outs and unc is not None:
            bo.write_uncertainty(outs["uncertainty"], unc, kind=kind, metric=metric, attrs=attrs)
        group = self.groups[item.group]
        if group.is_shot:
            if "png16" in outs or "preview" in outs or group.extra_outputs:
                shot = self.shots.get(item.group)
                if shot is None:
                    shot = self.shots[item.group] = _ShotBuffer(self)
                shot.add(item, values, valid, kind, metric)
            return
        if "png16" in outs:
            bo.write_png16(outs["png16"], values, valid, meta=meta)
        if "preview" in outs:
            bo.write_preview(outs["preview"], values, valid, kind=kind)

    def _group_step(self, item: Item) -> None:
        self.remaining[item.group] -= 1
        if self.remaining[item.group] == 0:
            shot = self.shots.pop(item.group, None)
            if shot is not None:
                try:
                    self._finish_shot(self.groups[item.group], shot)
                finally:
                    shot.release()

    def _finish_shot(self, group: Group, shot: _ShotBuffer) -> None:
        """Write every frame's png16 and preview with the shot's one range (and the preview mp4)."""
        from betterdepth_cli.io import outputs as bo

        if not shot.frames:
            return
        vrange = (shot.lo, shot.hi) if shot.hi >= shot.lo else (0.0, 0.0)
        crange = (shot.p_lo, shot.p_hi) if shot.p_hi >= shot.p_lo else (0.0, 1.0)
        for item, arr in shot.arrays():
            if self.abort.is_set():
                return
            valid = np.isfinite(arr)
            if "png16" in item.outputs:
                meta = self._meta(item, shot.kind, shot.metric)
                meta["range"] = "shot"
                meta["shot_range"] = list(crange)  # the shot's robust 2-98 % range (export-ply maps every frame by it)
                bo.write_png16(item.outputs["png16"], arr, valid, meta=meta, vrange=vrange)
            if "preview" in item.outputs:
                bo.write_preview(item.outputs["preview"], arr, valid, kind=shot.kind, vrange=crange)
        if "preview_video" in group.extra_outputs:
            self._write_preview_video(group, shot, crange)

    def _write_preview_video(self, group: Group, shot: _ShotBuffer, crange) -> None:
        import imageio.v2 as iio

        from betterdepth_cli.io import outputs as bo

        fps = 0.0
        if getattr(group.source, "kind", "") == "video":
            try:
                from betterdepth_cli.io.video import probe_video

                fps = probe_video(group.source.path).fps
            except (BetterDepthError, OSError):
                fps = 0.0
        fps = fps or self.s.fps

        def write(tmp: str) -> None:
            writer = iio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                    macro_block_size=2, ffmpeg_log_level="error")  # fmt: skip
            try:
                for _, arr in shot.arrays():
                    rgb = bo.colorize(arr, np.isfinite(arr), kind=shot.kind, vrange=crange)
                    h, w = rgb.shape[:2]
                    writer.append_data(rgb[: h - h % 2, : w - w % 2])  # x264 needs even sides
            finally:
                writer.close()

        bo.atomic_write(group.extra_outputs["preview_video"], write)

    # ------------------------------------------------------------ run
    def run(self) -> Summary:
        t0 = time.perf_counter()
        started = time.time()
        reader = threading.Thread(target=self.reader, name="betterdepth-read", daemon=True)
        writer = threading.Thread(target=self.writer, name="betterdepth-write", daemon=True)
        reader.start()
        writer.start()
        try:
            self.compute()
            self._put(self.out_q, _END, self.abort)
            writer.join()
            if self.error is not None:
                raise self.error
            remove_stale_temps(self.plan, before=started)
        except BaseException as exc:
            self.abort.set()
            self.halt.set()
            if isinstance(exc, KeyboardInterrupt):
                self.summary.interrupted = True
            writer.join(timeout=60)  # a file being written finishes its atomic rename
            raise
        finally:
            self.halt.set()
            reader.join(timeout=5)
            self._release_claims()
            self.summary.seconds = time.perf_counter() - t0
            for shot in self.shots.values():
                shot.release()
            if self.spill_dir is not None:
                shutil.rmtree(self.spill_dir, ignore_errors=True)
        return self.summary


def run(
    plan: Plan,
    settings: RefineSettings,
    conditioner,
    model=None,
    *,
    on_item: ItemCallback | None = None,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Process a plan: decode ahead, refine in same-size batches, write behind.

    ``on_item(status, item, message)`` is called (from the writer thread) with
    status ``"done"`` or ``"failed"``. Per-input failures are counted in the
    returned summary (the first one halts the run unless ``continue_on_error``);
    an output error raises OutputError. Use :class:`Runner` to keep the summary
    when Ctrl-C (KeyboardInterrupt, raised after the file being written is
    complete) or an error ends the run.
    """
    return Runner(plan, settings, conditioner, model, on_item=on_item, log=log).run()


class Runner:
    """:func:`run` with access to the summary after an interruption or an error."""

    def __init__(self, plan: Plan, settings: RefineSettings, conditioner, model=None, *, on_item=None, log=None):
        self.engine = _Engine(plan, settings, conditioner, model, on_item, log)

    @property
    def summary(self) -> Summary:
        return self.engine.summary

    def run(self) -> Summary:
        return self.engine.run()


__all__ = [
    "BetterDepthError",
    "DEFAULT_FORMATS",
    "Item",
    "Plan",
    "RefineSettings",
    "Runner",
    "Summary",
    "check_output_dir",
    "exit_code",
    "plan_run",
    "preview_video_path",
    "read_card",
    "run",
]
