"""Files in and out: checks that name the file and the reason, and atomic writes (a hidden temporary
file in the target folder, renamed over the target with :func:`os.replace`), so a killed run never
leaves a half-written output."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from betterdepth_cli.core.types import InputDataError, NoInputError, OutputError

PathLike = str | os.PathLike
TEMP_MARK = ".tmp-"  # in the names of atomic_write's temporaries: .<name>.tmp-XXXX


def file_ext(path: Path | str) -> str:
    """``photo.JPG`` -> ``jpg`` (no dot, lower case; empty without an extension)."""
    return os.path.splitext(str(path))[1].lower().lstrip(".")


def check_extension(path: Path, allowed: tuple[str, ...]) -> str:
    """The lower-case extension of ``path``, or InputDataError listing ``allowed``."""
    ext = file_ext(path)
    if ext not in allowed:
        shown = f"'.{ext}'" if ext else "(none)"
        raise InputDataError(f"{path}: unsupported extension {shown} (supported: {', '.join(allowed)})")
    return ext


def check_file(path: Path, allow_empty: bool = False) -> None:
    """The checks every reader of an input file makes first, each failure one line naming ``path``.

    Missing: NoInputError; not a regular file, not readable, or empty (unless
    ``allow_empty``): InputDataError.
    """
    if not path.exists():
        raise NoInputError(f"{path}: no such file")
    if not path.is_file():
        raise InputDataError(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        raise InputDataError(f"{path}: permission denied")
    if not allow_empty and path.stat().st_size == 0:
        raise InputDataError(f"{path}: empty file (0 bytes)")


def read_head(path: Path, n: int = 16) -> bytes:
    """Check the file can be used and return its first ``n`` bytes."""
    check_file(path)
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except PermissionError as exc:
        raise InputDataError(f"{path}: permission denied") from exc
    except OSError as exc:
        raise InputDataError(f"{path}: unreadable ({exc.strerror or exc})") from exc


def read_file(path: Path) -> bytes:
    """The whole file after :func:`check_file` (an unreadable file is an InputDataError naming it)."""
    check_file(path)
    try:
        return path.read_bytes()
    except PermissionError as exc:
        raise InputDataError(f"{path}: permission denied") from exc
    except OSError as exc:
        raise InputDataError(f"{path}: unreadable ({exc.strerror or exc})") from exc


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


def temporary_target(name: str) -> str | None:
    """The output name a temporary of :func:`atomic_write` belongs to (``.a.png.tmp-x1.png`` -> ``a.png``), else None."""
    if not name.startswith(".") or TEMP_MARK not in name:
        return None
    return name[1:].split(TEMP_MARK, 1)[0]


def remove_temporaries(folder: PathLike, names: set[str], before: float) -> int:
    """Delete the temporaries (:func:`temporary_target`: ``.<name>.tmp-*`` files, or folders such as
    ``export-ply``'s) of the outputs ``names`` in ``folder`` that nothing has written to since ``before``
    (a killed run's; a live run's are fresh). Symlinks are never followed nor removed. Returns how many."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    removed = 0
    for e in entries:
        try:
            if e.is_symlink() or temporary_target(e.name) not in names or last_written(e) >= before:
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                os.remove(e.path)
            removed += 1
        except OSError:
            pass
    return removed


def last_written(entry: os.DirEntry) -> float:
    """The newest modification time of ``entry`` and (a folder) of what it holds."""
    newest = entry.stat(follow_symlinks=False).st_mtime
    if entry.is_dir(follow_symlinks=False):
        for f in os.scandir(entry.path):
            newest = max(newest, f.stat(follow_symlinks=False).st_mtime)
    return newest


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


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
