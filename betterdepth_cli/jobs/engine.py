"""The engine that runs a ``refine`` job (no Typer, no rich)::

    reader thread            main thread (compute)          writer thread
    Source.read() ->  [q]  -> same-size batches ->    [q] -> per-frame files (exr, npy, uncertainty)
    decode ahead             refine_batch()                 shots: one png16/preview range for all frames
                                                            single images: png16 + sidecar, preview

- IO overlaps compute: decoding runs ahead in a bounded queue and writing happens behind
  the model, so the model only waits when IO is slower than it.
- Existing outputs are skipped (resume) unless ``overwrite``; a shot with any output missing
  is redone whole, so its frames keep one range (:mod:`.plan`, :mod:`.writers`).
- Randomness: each image gets its own generator seeded with ``seed`` and the networks run
  image by image, so an image's result depends neither on which images ran before it nor on
  the batch it is in (a resumed run, a shard, any ``--batch-size`` and ``eval`` agree).

Bad inputs fail alone with a one-line reason; without ``continue_on_error`` the first one
halts the batch. :func:`betterdepth_cli.jobs.summary.exit_code` gives the exit status.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from betterdepth_cli.core.types import MIN_SIDE, BetterDepthError, InputDataError, ModelError, NoInputError
from betterdepth_cli.io.files import one_line
from betterdepth_cli.jobs.claims import Claims, stale_seconds
from betterdepth_cli.jobs.plan import Item, Plan, _existing_state, remove_stale_temps
from betterdepth_cli.jobs.settings import RefineSettings
from betterdepth_cli.jobs.summary import Summary
from betterdepth_cli.jobs.writers import OutputWriter

_END = object()
# --------------------------------------------------------------------------- engine


ItemCallback = Callable[[str, Item, "str | None"], None]


def _to_float_rgb(image: Any) -> np.ndarray:
    """(H,W,3) uint8/uint16/float -> float32 (H,W,3) in [0,1]."""
    from betterdepth_cli.core.pixels import unit_range

    arr = np.asarray(image)
    if arr.dtype in (np.uint8, np.uint16):
        return unit_range(arr)
    return arr.astype(np.float32, copy=False)


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
        self.out = OutputWriter(plan, settings, self.abort, self.log)
        self.claims = Claims(plan.out_dir)  # the groups this run writes (released when it ends)
        self.aligners: dict[str, Any] = {}  # the open shot's co-aligner (compute thread; one at a time)

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
            deferred: list = []  # groups that runs on other hosts had claimed: watched once the rest is read
            for group in self.plan.groups:
                if group.todo and not self._read_group(group, deferred):
                    return
            if deferred and not self.halt.is_set():
                self.log(f"{len(deferred)} input group(s) claimed by runs on other hosts: watching their "
                         f"heartbeat (up to {stale_seconds():.0f} s) to take over those whose run is gone")
                self.claims.watch([g.claim_key for g in deferred], stop=self.halt)
                for group in deferred:
                    if not self._read_group(group, None):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = self.error or exc
            self.abort.set()
            self.halt.set()
        finally:
            self._put(self.in_q, _END, self.abort)

    def _read_group(self, group, deferred: list | None) -> bool:
        """Claim one group and queue its images (or its skips and failures); ``deferred`` collects a
        group another host's run holds, to be tried again after :meth:`Claims.watch`. False: stop."""
        if self.halt.is_set():
            return False
        held = self.claims.take(group.claim_key, group.items[0].label)
        if held is not None and held.remote and deferred is not None:
            deferred.append(group)
            return True
        taken = None if held is None else held.reason
        if taken is None and not self.s.overwrite and all(_existing_state(it, self.s) == "done" for it in group.todo):
            taken = f"{group.items[0].label}: written by another run meanwhile; skipped"
        if taken is not None:
            return all(self._put(self.in_q, ("skip", item, taken), self.halt) for item in group.todo)
        for item in (it for it in group.todo if it.blocked):  # never read: their outputs must not be written
            if not self._put(self.in_q, ("fail", item, item.blocked), self.halt):
                return False
        readable = [it for it in group.todo if not it.blocked]
        return self._read_images(group, readable) if readable else True

    def _read_images(self, group, readable: list) -> bool:
        """Queue the images of ``readable`` items of ``group``; a frame that cannot be read fails alone."""
        by_key = {it.key: it for it in readable}
        pending = dict(by_key)

        def unreadable(entry, exc) -> None:  # one frame of a sequence: it fails alone
            item = pending.pop(str(entry.relpath), None)
            if item is not None:
                self._put(self.in_q, ("fail", item, one_line(exc)), self.halt)

        try:
            for entry, image in group.source.read([it.entry for it in readable], on_error=unreadable):
                item = by_key.get(str(entry.relpath))
                if item is None:
                    continue
                pending.pop(item.key, None)
                if not self._put(self.in_q, ("image", item, image), self.halt):
                    return False
            if pending:  # the source ended early (e.g. a video shorter than its count)
                first = next(iter(pending.values()))
                raise InputDataError(f"{first.label}: the source ended before this frame")
        except (InputDataError, NoInputError) as exc:
            message = one_line(exc)
            for item in pending.values():
                if not self._put(self.in_q, ("fail", item, message), self.halt):
                    return False
        return True

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
            image = np.asarray(payload)  # converted to float when refined (a tiled plate never is, whole)
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


    def _emit(self, msg: Any) -> None:
        if msg[0] == "fail" and not self.s.continue_on_error:
            self.halt.set()
        if not self._put(self.out_q, msg, self.abort) and self.error is not None:
            raise self.error

    def _flush(self, batch: list[tuple[Item, np.ndarray]]) -> None:
        import torch

        if self.halt.is_set():
            return
        items = [it for it, _ in batch]
        tiling = self._tiling(batch[0][1].shape[:2])
        if tiling is not None and len(batch) > 1:  # plates are tiled one at a time
            for one in batch:
                self._flush([one])
            return
        try:
            res = self._refine(batch, items, tiling)
        except (InputDataError, NoInputError) as exc:
            if len(batch) > 1:  # find the bad one(s): rerun one by one
                for one in batch:
                    self._flush([one])
                return
            label = items[0].label
            message = one_line(exc)
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
            self._emit(("result", item, (refined[i], valid[i], None if unc is None else unc[i], res.kind, res.metric,
                                         res.route(i))))

    def _refine(self, batch: list[tuple[Item, np.ndarray]], items: list[Item], tiling: tuple[int, int] | None):
        """One model call: a plate in tiles guided by the whole frame, or a same-size batch (a shot's
        frames co-aligned first). Every image draws its noise from its own generator seeded with ``seed``,
        so every frame of a shot shares one noise field."""
        import torch

        from betterdepth_cli.core.pipeline import refine_batch, seeded_generators

        generator = seeded_generators(self.s.seed, len(items))
        keys = [it.key for it in items]  # the entries' relative paths: file: maps are found by them
        if tiling is not None:
            from betterdepth_cli.core.tiled import refine_tiled

            plate = batch[0][1]
            pred = cascade = None
            if self._in_shot(items[0]):  # a frame of a shot: its anchor's conditioning co-aligned with the others
                pred, [cascade] = self._shot_prediction(self._conditioner_input(plate), items, keys, plate.shape[:2],
                                                        tiling)
            return refine_tiled(plate, model=self.model, conditioner=self.conditioner, prediction=pred, tile=tiling[0],
                                overlap=tiling[1], steps=self.s.steps, ensemble=self.s.ensemble,
                                reduction=self.s.reduction, generator=generator, keys=keys,
                                uncertainty="uncertainty" in self.s.formats, cascade=cascade)  # fmt: skip
        stacked = np.stack([_to_float_rgb(img) for _, img in batch])  # [B,H,W,3]
        images = torch.from_numpy(stacked).permute(0, 3, 1, 2)  # [B,3,H,W], a view
        pred, cascade = self._shot_prediction(images, items, keys, stacked.shape[1:3], None)
        return refine_batch(images, conditioner=self.conditioner, model=self.model, steps=self.s.steps,
                            ensemble=self.s.ensemble, reduction=self.s.reduction,
                            processing_res=self.s.processing_res, generator=generator, keys=keys,
                            prediction=pred, cascade=cascade)  # fmt: skip

    def _tiling(self, hw: tuple[int, int]) -> tuple[int, int] | None:
        """(tile, overlap) when an image of this size is refined in tiles (core.tiling.tiling_for)."""
        from betterdepth_cli.core.tiling import model_tiling

        return model_tiling(self.model, *hw, self.s.tile, self.s.tile_overlap, self.s.processing_res)

    def _in_shot(self, item: Item) -> bool:
        """Whether ``item`` is a frame co-aligned with its shot (a video or sequence, not ``--per-frame``;
        a one-frame ``--frames`` chunk of a shot too: it takes the shot's units)."""
        return self.out.groups[item.group].source.is_shot and not self.s.per_frame

    def _shot_prediction(self, images, items: list[Item], keys: list[str], hw: tuple[int, int], tiling):
        """(the conditioning co-aligned per shot (``core.shot_align``), each frame's cascade decision: its
        shot's (``core.shot.shot_cascade``), None for single images), or (None, None) when no frame is
        of a shot (single images, ``per_frame``). ``hw``: the frames' size; ``tiling``: their tiles."""
        from betterdepth_cli.core.shot import shot_conditioning

        shots = [self._in_shot(it) for it in items]
        if not any(shots):
            return None, None
        t0 = time.perf_counter()
        groups = dict.fromkeys(it.group for it, shot in zip(items, shots) if shot)  # frames come shot by shot
        self.aligners = {g: self.aligners[g] if g in self.aligners else self._new_aligner(g) for g in groups}
        aligners = [self.aligners[it.group] if shot else None for it, shot in zip(items, shots)]
        pred, cascades = shot_conditioning(self.conditioner, images, keys, aligners, self.model, hw, tiling,
                                           self.s.processing_res)
        self.summary.timings["conditioner"] = self.summary.timings.get("conditioner", 0.0) + time.perf_counter() - t0
        return pred, cascades

    def _new_aligner(self, group_key: str):
        """A shot's co-aligner, first shown the shot's frames before the run's first one (a ``--frames``
        chunk that starts later): the conditioner runs on them as on the run's frames, so the chunk gets
        the units and the alignment of a whole-shot run."""
        from betterdepth_cli.core.shot import shot_conditioning
        from betterdepth_cli.core.shot_align import ShotAligner

        aligner = ShotAligner()
        announced = False
        left_out = lambda entry, exc: self.log(f"{group_key}: left out of the co-alignment: {one_line(exc)}")  # noqa: E731
        for entry, image in self.out.groups[group_key].source.lead_in(on_error=left_out):
            if self.abort.is_set():
                break
            if not announced:
                announced = True
                self.log(f"{group_key}: co-aligning from the shot's first frame (the conditioner runs on the frames "
                         f"before {self.out.groups[group_key].items[0].label})")
            try:  # e.g. no precomputed map for it: a whole run fails that frame, and aligns without it
                hw = image.shape[:2]  # the shot's units and cascade decision, as a whole run's
                shot_conditioning(self.conditioner, self._conditioner_input(image), [entry.key], [aligner], self.model,
                                  hw, self._tiling(hw), self.s.processing_res)
            except InputDataError as exc:
                left_out(entry, exc)
                continue
        return aligner

    def _conditioner_input(self, image: np.ndarray):
        """What the conditioner sees of one frame in :meth:`_refine`: the photo, or its anchor when tiled."""
        import torch

        tiling = self._tiling(image.shape[:2])
        if tiling is not None:
            from betterdepth_cli.core.tiled import anchor_image

            return anchor_image(image, self.model, tiling[0])
        return torch.from_numpy(_to_float_rgb(image)[None]).permute(0, 3, 1, 2)

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
                    self.out.write(item, *payload)
                    with self.lock:
                        self.summary.processed += 1
                    self.on_item("done", item, None)
                self.out.group_step(item)
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
            self.out.write_missing_previews()
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
            self.claims.release()
            self.summary.seconds = time.perf_counter() - t0
            self.out.close()
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
