"""Claims that let several runs share one output folder: a group of outputs is written by
the run that holds its claim file (created with O_EXCL, holding ``host pid``).

A run keeps its claims alive: every :data:`HEARTBEAT_S` seconds it touches them (their modification
time is its heartbeat). A claim is taken over when the run that holds it is gone:

- on this host, at once, when its process no longer exists;
- on another host (a farm job preempted or killed on another node, whose process cannot be asked),
  when its heartbeat has stopped: no touch for :data:`STALE_S` seconds
  (``$BETTERDEPTH_CLAIM_STALE`` overrides it; it must exceed the heartbeat).

A claim of another host that is still fresh when a run meets it is not given up at once: the run
refines everything else first, then watches such claims (:meth:`Claims.watch`) until each one
either beats (its run is alive: the group is skipped, that run writes it), disappears, or goes
stale (taken over). So a requeued farm job never exits 0 over groups a dead job had claimed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: Hidden folder of the claims (removed when empty).
CLAIMS_DIR = ".betterdepth-claims"
#: Seconds between two touches of a run's claims.
HEARTBEAT_S = 30.0
#: Seconds without a touch after which another host's claim is taken over.
STALE_S = 120.0
STALE_ENV = "BETTERDEPTH_CLAIM_STALE"


def stale_seconds() -> float:
    """:data:`STALE_S`, or ``$BETTERDEPTH_CLAIM_STALE`` when set (seconds, > 0)."""
    text = os.environ.get(STALE_ENV, "").strip()
    try:
        value = float(text) if text else STALE_S
    except ValueError:
        value = STALE_S
    return value if value > 0 else STALE_S


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


@dataclass(frozen=True)
class Held:
    """Why a group is not ours: another run holds its claim. ``remote``: on another host and fresh
    (alive as far as can be told now; :meth:`Claims.watch` tells)."""

    reason: str
    remote: bool


def _holder(path: Path) -> tuple[str, int, float] | None:
    """(host, pid, modification time) of a claim file, or None when it is gone. A claim whose text
    cannot be read yet (another run created it and is about to write it) is held by an unknown
    host ("?"): kept while fresh, taken over once stale, as another host's."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    except OSError:
        return "?", 0, 0.0
    try:
        host, pid = path.read_text().split()
        return host, int(pid), mtime
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "?", 0, mtime


class Claims:
    """The claims one run holds in ``out_dir``, kept alive by a heartbeat thread while it holds any."""

    def __init__(self, out_dir: Path, heartbeat: float = HEARTBEAT_S):
        self.root = Path(out_dir) / CLAIMS_DIR
        self.held: list[Path] = []
        self.heartbeat = float(heartbeat)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def path(self, key: str) -> Path:
        return self.root / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".claim")

    def take(self, key: str, label: str) -> Held | None:
        """Claim the group ``key`` for this run; None when claimed, else who holds it and why."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self._held_elsewhere(path, label)
                if held is not None:
                    return held
                continue  # its run is gone: removed, take it
            with os.fdopen(fd, "w") as f:
                f.write(me)
            with self._lock:
                self.held.append(path)
            self._start_heartbeat()
            return None
        return Held(f"{label}: claim {path} could not be taken; skipped", remote=False)

    def _held_elsewhere(self, path: Path, label: str) -> Held | None:
        """Who holds an existing claim, or None after removing it when its run is gone."""
        holder = _holder(path)
        if holder is None:
            return None  # released meanwhile
        host, pid, mtime = holder
        age = time.time() - mtime
        if host == socket.gethostname():
            gone = not _alive(pid)
        else:
            gone = age > stale_seconds()
        if gone:
            with contextlib.suppress(OSError):
                os.remove(path)  # the run that claimed it is gone: take over
            return None
        where = f"{host} pid {pid}"
        if host != socket.gethostname():
            where += f", last sign of life {age:.0f} s ago"
        return Held(f"{label}: being written by another run ({where}); skipped", remote=host != socket.gethostname())

    def watch(self, keys: list[str], poll: float = 1.0, stop: threading.Event | None = None) -> None:
        """Wait until each of these claims (other hosts', fresh when met) has beaten, disappeared or
        gone stale: at most :func:`stale_seconds` (or until ``stop`` is set). Afterwards :meth:`take`
        tells a live run's claim (kept) from a dead one's (taken over)."""
        stop = stop or threading.Event()
        first = {key: _holder(self.path(key)) for key in keys}
        pending = {key for key, h in first.items() if h is not None}
        deadline = time.time() + stale_seconds() + poll
        while pending and time.time() < deadline and not stop.is_set():
            for key in sorted(pending):
                now = _holder(self.path(key))
                if now is None or now[2] != first[key][2] or time.time() - now[2] > stale_seconds():
                    pending.discard(key)
            if pending:
                stop.wait(poll)

    def _start_heartbeat(self) -> None:
        if self._beat is None:
            self._beat = threading.Thread(target=self._beat_loop, name="betterdepth-claims", daemon=True)
            self._beat.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._lock:
                paths = list(self.held)
            for path in paths:
                with contextlib.suppress(OSError):
                    os.utime(path)  # this run is alive

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        self._stop = threading.Event()  # a later take beats again
        with self._lock:
            for path in self.held:
                with contextlib.suppress(OSError):
                    os.remove(path)
            self.held = []
        with contextlib.suppress(OSError):
            self.root.rmdir()  # only when empty (no other run's claims)
