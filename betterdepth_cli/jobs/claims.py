"""Claims that let several runs share one output folder: a group of outputs is written by
the run that holds its claim file (created with O_EXCL, holding ``host pid``); a claim whose
process is gone (same host) is taken over, so a killed run's claims do not block a rerun."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from pathlib import Path

#: Hidden folder of the claims (removed when empty).
CLAIMS_DIR = ".betterdepth-claims"


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


class Claims:
    """The claims one run holds in ``out_dir``."""

    def __init__(self, out_dir: Path):
        self.root = Path(out_dir) / CLAIMS_DIR
        self.held: list[Path] = []

    def path(self, key: str) -> Path:
        return self.root / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".claim")

    def take(self, key: str, label: str) -> str | None:
        """Claim the group ``key`` for this run; None when claimed, else why another run has it."""
        path = self.path(key)
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
                return f"{label}: being written by another run ({host} pid {pid}); skipped"
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self.held.append(path)
            return None
        return f"{label}: claim {path} could not be taken; skipped"

    def release(self) -> None:
        for path in self.held:
            with contextlib.suppress(OSError):
                os.remove(path)
        self.held = []
        with contextlib.suppress(OSError):
            self.root.rmdir()  # only when empty (no other run's claims)
