"""A ``refine`` job's plan: every input mapped to its output files, what is done, what is blocked."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from betterdepth_cli.core.types import InputDataError, NoInputError, OutputError, UsageError
from betterdepth_cli.jobs.settings import RefineSettings

RUN_CONFIG_NAME = "betterdepth-run.toml"


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


def relative_path(path: Any, folder: Path) -> str:
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
    """A source's items; a shot when its source is a video or an image sequence (one shared png16 range),
    also a one-frame chunk of it or a one-frame video: its frame carries the shot's range and preview."""

    source: Any
    key: str
    items: list[Item]
    todo: list[Item]
    extra_outputs: dict[str, Path] = field(default_factory=dict)  # preview mp4
    resumed: list[Item] = field(default_factory=list)  # a shot's frames an interrupted run finished (see resume_shot)
    preview_only: bool = False  # every frame done, its preview mp4 missing: made from the frames' files

    @property
    def is_shot(self) -> bool:
        return bool(getattr(self.source, "is_shot", False))

    @property
    def claim_key(self) -> str:
        """What a run claims when it writes this group (``jobs.claims``): its key, and for frames of a
        shot the frames it holds, so ``--frames`` chunks of one shot run side by side into one folder."""
        from betterdepth_cli.io.sources import format_frames

        frames = [it.entry.frame for it in self.items if getattr(it.entry, "frame", None) is not None]
        return f"{self.key}@{format_frames(frames)}" if frames else self.key


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

    @property
    def blocked(self) -> int:
        """Inputs to process that will fail before they are read (their outputs are not this run's to write)."""
        return sum(1 for g in self.groups for it in g.todo if it.blocked)

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
    """A file ``refine`` wrote: its sidecar (``a.json`` for ``a.png`` and ``a_preview.jpg``) is ours
    and does not name it as its source (``io.inputs.is_own_output``: the ``a.jpg`` beside its own
    ``a.json`` stays an input). A user's ``A_preview.jpg`` with no sidecar of ours is an input like any other."""
    from betterdepth_cli.io.inputs import is_own_output

    return is_own_output(path)


#: Sidecar fields that change the pixels: outputs written with other values are stale.
PIXEL_SETTINGS = ("model", "model_card", "conditioner", "steps", "ensemble", "reduction", "seed", "processing_res",
                  "tile", "tile_overlap")


def comparable_settings(fields: dict) -> dict:
    """The :data:`PIXEL_SETTINGS` of a sidecar or a run in one spelling: a local model folder as its
    absolute path (``m``, ``./m`` and ``/abs/m`` are one model; sidecars of earlier versions kept the
    path as typed), a ``--tile SIZE`` without overlap with the overlap it runs with, and with tiles
    the native resolution they run at (records of earlier versions kept the card's beside them)."""
    from betterdepth_cli.core.model_names import model_record_name
    from betterdepth_cli.core.tiling import OVERLAP_SHARE

    out = {k: fields.get(k) for k in PIXEL_SETTINGS}
    if isinstance(out["model"], str):
        out["model"] = model_record_name(out["model"])
    if out["tile"] and out["tile_overlap"] is None:
        out["tile_overlap"] = min(round(int(out["tile"]) * OVERLAP_SHARE), int(out["tile"]) // 2 - 1)
    if out["tile"]:  # tiles work at the image's own scale whatever resolution was recorded beside them
        out["processing_res"] = 0
    return out


def _existing_state(item: Item, settings: RefineSettings) -> str:
    """``new`` (nothing there), ``done`` (all ours, same settings), ``partial`` (ours, some missing),
    or the reason the outputs must not be written without ``--overwrite``."""
    from betterdepth_cli.io.depth_files import read_sidecar

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
    a, b = comparable_settings(stored), comparable_settings(want)
    diff = [f"{k} {stored.get(k)!r} -> {want.get(k)!r}" for k in PIXEL_SETTINGS if a[k] != b[k]]
    if diff:
        return f"{item.label}: outputs exist from other settings ({', '.join(diff)}); --overwrite redoes them"
    return "done"


def preview_video_path(out_dir: Path, relpath: str, chunk: Sequence[int] | None = None) -> Path:
    """``<out>/clip/clip.0000`` -> ``<out>/clip/clip_preview.mp4``; a ``--frames`` chunk's frames
    ``chunk`` name their own after its first and last frame (``clip_preview.1001-1100.mp4``), so chunks
    of one shot keep theirs."""
    from betterdepth_cli.io.outputs import split_frame

    rel = PurePosixPath(str(relpath))
    stem, _ = split_frame(rel.name)
    part = f".{min(chunk)}-{max(chunk)}" if chunk else ""
    return Path(out_dir).joinpath(*rel.parent.parts, f"{stem}_preview{part}.mp4")


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
            chunk = [it.entry.frame for it in group.items] if group.source.is_chunk else None
            group.extra_outputs["preview_video"] = preview_video_path(out_dir, group.items[0].key, chunk)
        if settings.overwrite:
            group.todo = list(group.items)
            continue
        states = [_existing_state(it, settings) for it in group.items]
        for it, state in zip(group.items, states):
            it.blocked = None if state in ("new", "done", "partial") else state
        if group.is_shot:
            # one range per shot: a shot with anything missing is redone whole (but a shot written frame by
            # frame resumes, resume_shot), one blocked frame blocks it
            reason = next((it.blocked for it in group.items if it.blocked), None)
            missing = any(s != "done" for s in states)
            if reason is None and (missing or not outputs_exist(group.extra_outputs)):
                reason = foreign_preview(group)  # a file of the user's where the preview mp4 would go
            for it in group.items:
                it.blocked = reason
            group.preview_only = reason is None and not missing and not outputs_exist(group.extra_outputs)
            group.todo = list(group.items) if missing or (reason and not outputs_exist(group.extra_outputs)) else []
            if missing and reason is None:
                resume_shot(group, states)
        else:
            group.todo = [it for it, s in zip(group.items, states) if s != "done"]
    return Plan(groups=list(groups.values()), out_dir=out_dir, formats=settings.formats, excluded=excluded)


def foreign_preview(group: Group) -> str | None:
    """Why a shot's preview mp4 must not be written: a file is there that no frame sidecar of the shot
    records as its preview (``preview_video``, written with it); None when free or ours."""
    from betterdepth_cli.io.depth_files import read_sidecar

    path = group.extra_outputs.get("preview_video")
    if path is None or not Path(path).exists():
        return None
    for it in group.items:
        try:
            if read_sidecar(it.outputs["sidecar"]).get("preview_video") == Path(path).name:
                return None
        except (InputDataError, OSError):
            continue
    return (f"{path}: exists and was not written by betterdepth (no sidecar of the shot names it); "
            "choose another -o folder, or --overwrite to replace it")


#: Outputs a shot writes frame by frame (a shot's png16 and previews wait for its end: its one range).
FRAME_BY_FRAME = {"exr", "npy", "uncertainty", "sidecar"}


def resume_shot(group: Group, states: list[str]) -> None:
    """A shot an interrupted run wrote in part: when only frame-by-frame outputs are asked for (EXR, NPY)
    and its first frames are done, only the rest is refined, as a ``--frames`` chunk that starts there is
    (the conditioner runs on the done frames first, so the alignment and the maps are a whole run's);
    the done frames' maps join the shot's range at its end (``group.resumed``)."""
    done = next((i for i, s in enumerate(states) if s != "done"), len(states))
    formats = {name for it in group.items for name in it.outputs}
    if not 0 < done < len(states) or not formats <= FRAME_BY_FRAME or group.extra_outputs:
        return
    if any(s == "done" for s in states[done:]) or not hasattr(group.source, "select"):
        return  # done frames after a missing one: not a run stopped part way
    group.resumed, group.todo = group.items[:done], group.items[done:]
    group.source.select([it.entry.frame for it in group.todo])


def remove_stale_temps(plan: Plan, before: float) -> int:
    """Delete the temporaries of an earlier, killed run (``.<output name>.tmp-*``, see
    ``io.outputs.atomic_write``) beside this plan's outputs, if last written before ``before``
    (a run still writing has fresh ones). Returns how many were removed."""
    from betterdepth_cli.io.files import remove_temporaries

    folders: dict[Path, set[str]] = {}
    for group in plan.groups:
        for item in group.items:
            for p in item.outputs.values():
                folders.setdefault(Path(p).parent, set()).add(Path(p).name)
        for p in group.extra_outputs.values():
            folders.setdefault(Path(p).parent, set()).add(Path(p).name)
    return sum(remove_temporaries(folder, names, before) for folder, names in folders.items())


def check_output_dir(out_dir: Path) -> None:
    """Create the output folder and prove it is writable (OutputError, exit 73, otherwise)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: a file, not a folder (the output is a folder of results)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".betterdepth-probe-", dir=out_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"{out_dir}: output folder not writable ({exc.strerror or exc})") from None
