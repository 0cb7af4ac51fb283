"""Writing a ``refine`` job's results: per-format files and sidecars, and shots.

A shot (every frame of one ``Source.group``: a video or an image sequence) shares one
png16 range, so normalisation adds no flicker. Frames are kept as float until the shot
ends; past ``spill_frames`` frames or ``spill_bytes`` they are spilled to temporary ``.npy`` files in the output
folder, so memory stays bounded. Every file is written atomically (``io.outputs``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from betterdepth_cli.core.depth_values import ShotRange
from betterdepth_cli.core.types import BetterDepthError
from betterdepth_cli.io import depth_files, files
from betterdepth_cli.io import outputs as bo
from betterdepth_cli.jobs.plan import Group, Item, Plan, relative_path
from betterdepth_cli.jobs.settings import RefineSettings


class ShotBuffer:
    """Float frames of one shot until its shared range is known; spills to .npy past a budget."""

    def __init__(self, store: "OutputWriter"):
        self.store = store
        self.frames: list[tuple[Item, Any, dict]] = []  # (item, array or spilled path (None: not kept), how it was refined)
        self.range = ShotRange()
        self.kind, self.metric = "disparity", False
        self.expected = 0
        self.seen = 0

    def add(self, item: Item, values: np.ndarray, valid: np.ndarray, kind: str, metric: bool, route: dict,
            keep: bool = True) -> None:
        """A frame's range into the shot's; its map kept (``keep``: for the png16, previews) or not (only
        its sidecar gains the shot's range at the end)."""
        self.kind, self.metric = kind, metric
        arr = self.range.add(values, valid)
        self.frames.append((item, self.store.keep(arr) if keep else None, route))

    def arrays(self) -> Iterable[tuple[Item, np.ndarray | None, dict]]:
        for item, held, route in self.frames:
            yield item, (np.load(held) if isinstance(held, Path) else held), route

    def release(self) -> None:
        for _, held, _ in self.frames:
            if held is not None:
                self.store.drop(held)
        self.frames = []


class OutputWriter:
    """Writes each result as it comes and each shot when its last frame has come."""

    def __init__(self, plan: Plan, settings: RefineSettings, abort: threading.Event, log: Callable[[str], None]):
        self.s = settings
        self.abort = abort
        self.log = log
        self.held_bytes = 0
        self.held_frames = 0
        self.spill_dir: Path | None = None
        self.shots: dict[str, ShotBuffer] = {}
        self.groups = {g.key: g for g in plan.groups}
        self.remaining = {g.key: len(g.todo) for g in plan.groups}

    # ------------------------------------------------------------ memory for shots
    def keep(self, arr: np.ndarray) -> Any:
        """A frame of an open shot: held in memory while few are held, else spilled to a temporary ``.npy``
        (memory stays bounded whatever the shot's length)."""
        if self.held_frames < self.s.spill_frames and self.held_bytes + arr.nbytes <= self.s.spill_bytes:
            self.held_bytes += arr.nbytes
            self.held_frames += 1
            return arr
        if self.spill_dir is None:
            self.s.out_dir.mkdir(parents=True, exist_ok=True)
            self.spill_dir = Path(tempfile.mkdtemp(prefix=".betterdepth-spill-", dir=self.s.out_dir))
            self.log(f"frames of long shots wait in {self.spill_dir} until the shot's shared range is known")
        fd, name = tempfile.mkstemp(suffix=".npy", dir=self.spill_dir)
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr, allow_pickle=False)
        return Path(name)

    def drop(self, held: Any) -> None:
        if isinstance(held, Path):
            held.unlink(missing_ok=True)
        else:
            self.held_bytes -= held.nbytes
            self.held_frames -= 1

    def close(self) -> None:
        """Drop every open shot and the spill folder."""
        for shot in self.shots.values():
            shot.release()
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    # ------------------------------------------------------------ files
    def meta(self, item: Item, kind: str, metric: bool, route: dict) -> dict:
        """An output's sidecar fields; ``route``: how it was refined (``RefineResult.route``)."""
        side_dir = Path(item.outputs["sidecar"]).parent
        src = getattr(item.entry, "source", None)
        extra = {"shot_aligned": not self.s.per_frame} if self.groups[item.group].source.is_shot else {}
        return depth_files.make_sidecar(  # ``source`` relative to the sidecar's folder: it resolves wherever the tree moves
            kind=kind, metric=metric, source=relative_path(src, side_dir) if src else item.source_path,
            frame=getattr(item.entry, "frame", None), **self.s.sidecar_fields(), **route, **extra,
        )

    def write(self, item: Item, values, valid, unc, kind: str, metric: bool, route: dict) -> None:
        outs = item.outputs
        meta = self.meta(item, kind, metric, route)
        if not valid.all():  # holes (the conditioning's invalid pixels) hold no depth: NaN in EXR and NPY
            values = np.where(valid, values, np.float32(np.nan)).astype(np.float32)
        attrs = {k: v for k, v in meta.items() if k in ("source", "frame", "model", "conditioner", "steps",
                                                         "ensemble", "seed", "processing_res", "version")}
        if "exr" in outs:
            depth_files.write_exr(outs["exr"], values, kind=kind, metric=metric, attrs=attrs)
        if "npy" in outs:
            depth_files.write_npy(outs["npy"], values)
        group = self.groups[item.group]
        if "png16" not in outs or group.is_shot:  # png16 writes the sidecar itself (with its encoding); a shot's
            # png16 waits for the shot's end: its frames' other files are marked ours now, so a run killed
            # before then resumes (a shot with anything missing is redone whole)
            depth_files.write_sidecar(outs["sidecar"], {**meta, "height": int(values.shape[0]), "width": int(values.shape[1])})
        if "uncertainty" in outs and unc is not None:
            bo.write_uncertainty(outs["uncertainty"], unc, kind=kind, metric=metric, attrs=attrs)
        if group.is_shot:  # every frame's sidecar records the shot's range, whatever the formats
            shot = self.shots.get(item.group)
            if shot is None:
                shot = self.shots[item.group] = ShotBuffer(self)
                self._add_resumed(shot, group)
            shot.add(item, values, valid, kind, metric, route,
                     keep="png16" in outs or "preview" in outs or bool(group.extra_outputs))
            return
        if "png16" in outs:
            depth_files.write_png16(outs["png16"], values, valid, meta=meta)
        if "preview" in outs:
            bo.write_preview(outs["preview"], values, valid, kind=kind)

    def write_missing_previews(self) -> int:
        """The preview mp4 of each shot whose frames were all done (``Group.preview_only``: asked for
        after the shot was refined, or deleted), made from the frames' files with the range their
        sidecars record; nothing is refined again. Returns how many were written."""
        written = 0
        for group in self.groups.values():
            if not group.preview_only or self.abort.is_set():
                continue
            shot, metas = ShotBuffer(self), []
            try:
                for item in group.items:
                    values, meta = _saved_map(item)
                    metas.append(meta)
                    shot.add(item, values, np.isfinite(values), meta["kind"], bool(meta.get("metric")), {})
                crange = metas[0].get("shot_range")
                self._write_preview_video(group, shot, tuple(crange) if crange else shot.range.robust())
                mark = {"preview_video": Path(group.extra_outputs["preview_video"]).name}
                for item, meta in zip(group.items, metas):
                    depth_files.write_sidecar(item.outputs["sidecar"], {**meta, **mark})
                written += 1
            finally:
                shot.release()
        return written

    @staticmethod
    def _add_resumed(shot: ShotBuffer, group: Group) -> None:
        """The frames an interrupted run finished (``plan.resume_shot``): their maps, read back, join the
        shot's range, and their sidecars gain it at the shot's end."""
        for item in group.resumed:
            values, meta = _saved_map(item)
            shot.add(item, values, np.isfinite(values), meta["kind"], bool(meta.get("metric")),
                     {k: meta.get(k) for k in ("cascade", "tiles", "refined_size") if k in meta}, keep=False)

    def group_step(self, item: Item) -> None:
        self.remaining[item.group] -= 1
        if self.remaining[item.group] == 0:
            shot = self.shots.pop(item.group, None)
            if shot is not None:
                try:
                    self._finish_shot(self.groups[item.group], shot)
                finally:
                    shot.release()

    def _finish_shot(self, group: Group, shot: ShotBuffer) -> None:
        """Write every frame's png16 and preview with the shot's one range (and the preview mp4); the
        sidecars of frames without a png16 (EXR, NPY) gain the shot's range too."""

        if not shot.frames:
            return
        vrange, crange = shot.range.full(), shot.range.robust()
        video = group.extra_outputs.get("preview_video")
        mark = {} if video is None else {"preview_video": Path(video).name}  # the shot's own, a rerun knows it
        for item, arr, route in shot.arrays():
            if self.abort.is_set():
                return
            if "png16" not in item.outputs:  # EXR, NPY: the sidecar written with the frame gains the range
                side = item.outputs["sidecar"]
                depth_files.write_sidecar(side, {**depth_files.read_sidecar(side), "shot_range": list(crange), **mark})
            if arr is None:
                continue
            valid = np.isfinite(arr)
            if "png16" in item.outputs:
                meta = self.meta(item, shot.kind, shot.metric, route)
                meta["range"] = "shot"
                meta["shot_range"] = list(crange)  # the shot's robust 2-98 % range (export-ply maps every frame by it)
                meta.update(mark)
                depth_files.write_png16(item.outputs["png16"], arr, valid, meta=meta, vrange=vrange)
            if "preview" in item.outputs:
                bo.write_preview(item.outputs["preview"], arr, valid, kind=shot.kind, vrange=crange)
        if "preview_video" in group.extra_outputs:
            self._write_preview_video(group, shot, crange)

    def _write_preview_video(self, group: Group, shot: ShotBuffer, crange) -> None:
        import imageio.v2 as iio


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
                for _, arr, _ in shot.arrays():
                    rgb = bo.colorize(arr, np.isfinite(arr), kind=shot.kind, vrange=crange)
                    h, w = rgb.shape[:2]
                    writer.append_data(rgb[: h - h % 2, : w - w % 2])  # x264 needs even sides
            finally:
                writer.close()

        files.atomic_write(group.extra_outputs["preview_video"], write)


def _saved_map(item: Item) -> tuple[np.ndarray, dict]:
    """A done frame's map read back (NPY, else EXR, else the png16 decoded by its sidecar) and its sidecar."""
    outs = item.outputs
    meta = depth_files.read_sidecar(outs["sidecar"])
    if "npy" in outs:
        return np.load(outs["npy"]), meta
    if "exr" in outs:
        return depth_files.read_exr(outs["exr"])[0], meta
    return depth_files.load_depth_output(outs["png16"])[0], meta
