"""What ``betterdepth refine`` processes: discovery of images, sequences and videos.

``discover(specs)`` turns the command line's input specs into a list of
:class:`Source` objects:

- a file: an image (:data:`IMAGE_EXTENSIONS`) or a video (:data:`VIDEO_EXTENSIONS`);
  any other extension is an error;
- a folder: its images (``recursive`` descends into subfolders; hidden files and
  folders are skipped). ``extensions`` narrows or widens the set; videos in
  folders are only picked up when ``extensions`` names them;
- a glob (``photos/*.jpg``, ``shots/**/*.exr``): the matching supported files;
  neither ``**`` nor ``recursive`` follows symbolic links to folders (a link
  loop cannot hang discovery or nest outputs); links to files are read;
- ``@list.txt``: one spec per line, relative to the list file's folder; blank
  lines and lines starting with ``#`` are ignored;
- ``-``: specs read one per line from the ``stdin`` text stream, relative to the
  current folder;
- an image sequence ``shot.%04d.png`` / ``shot.####.exr`` / ``shot.$F4.exr`` (``%d``, ``$F``: no padding):
  the frames on disk, or those of ``frames`` (``"1001-1100"``, ``"1001-1100x2"``,
  ``"1,5,10-12"``). Files named ``<name>.<digits>.<ext>`` found in a folder or
  glob are grouped into a sequence the same way (two or more frames).
  For videos, ``frames`` selects 0-based frame indices; single images ignore it.
  Requested frames that do not exist are listed in ``Source.missing``.

Every :class:`Entry` has an output base ``relpath`` (no extension) that mirrors
the input's path relative to the folder, glob root or list folder the user
gave (a single file: its stem). Sequence frames keep their real numbers
(``shot.1001``); video frames are numbered from 0 inside a folder named after
the video (``clip.mp4`` -> ``clip/clip.0000``, 4 digits or more). ``key`` is the
file stem used to find precomputed maps (``file:`` conditioner).

A Source is one ``group`` (a shot: a sequence or a video; or a single image),
lists its entries without decoding anything, and ``read(entries)`` yields
``(entry, image float32 (H,W,3))``, videos decoded as a stream.
"""

from __future__ import annotations

import glob as globlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TextIO


from betterdepth_cli.core.types import InputDataError, NoInputError, UsageError
from betterdepth_cli.io.images import IMAGE_EXTENSIONS
from betterdepth_cli.io.files import file_ext
from betterdepth_cli.io.sources import (
    Entry,
    ImageSource,
    SequenceSource,
    Source,
    VideoSource,
    format_frames,
    parse_frames,
)
from betterdepth_cli.io.video import VIDEO_EXTENSIONS

SUPPORTED_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
_SEQ_TOKEN = re.compile(r"%0?(\d*)d|#+|\$F(\d*)")  # printf, Nuke's ####, Houdini's $F4 ($F: no padding)
_FRAME_NAME = re.compile(r"^(?P<prefix>.+)\.(?P<digits>\d+)$")
_GLOB_MAGIC = re.compile(r"[*?\[]")
_EXT_ALIAS = {"jpeg": "jpg", "tiff": "tif"}


# --------------------------------------------------------------------------- frames and shards


# --------------------------------------------------------------------------- entries and sources


# --------------------------------------------------------------------------- discovery


def _norm_extensions(extensions: Iterable[str] | None) -> tuple[str, ...]:
    if extensions is None:
        return IMAGE_EXTENSIONS
    if isinstance(extensions, str):
        extensions = extensions.split(",")
    out: list[str] = []
    for ext in extensions:
        ext = ext.strip().lower().lstrip(".")
        if not ext:
            continue
        if ext not in SUPPORTED_EXTENSIONS:
            raise UsageError(f"`extensions`: {ext!r} is not supported (supported: {', '.join(SUPPORTED_EXTENSIONS)})")
        if ext not in out:
            out.append(ext)
    if not out:
        raise UsageError("`extensions` is empty")
    # jpg and jpeg, tif and tiff are the same thing
    for a, b in (("jpg", "jpeg"), ("tif", "tiff")):
        if (a in out) != (b in out):
            out.append(b if a in out else a)
    return tuple(out)


def _abs(path: Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _rel(path: Path, roots: Sequence[Path | None]) -> PurePosixPath:
    """``path`` (without extension) relative to the first root that contains it, else its stem."""
    for root in roots:
        if root is None:
            continue
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if rel.parts:
            return PurePosixPath(*rel.parts).with_suffix("")
    return PurePosixPath(path.stem)


@dataclass
class _Ctx:
    recursive: bool
    extensions: tuple[str, ...]
    frames: list[int] | None
    stdin: TextIO | None
    sources: list[Source] = field(default_factory=list)
    seen: set = field(default_factory=set)
    lists: set = field(default_factory=set)
    stdin_used: bool = False
    on_error: Callable[[Exception], None] | None = None  # bad specs reported one by one instead of raised

    def expand_each(self, lines: Iterable[str], base: Path, list_root: Path | None) -> None:
        """Expand the specs of a list or stdin; with ``on_error`` a bad one is reported and skipped."""
        for line in lines:
            try:
                _expand(line, base, list_root, self)
            except (InputDataError, NoInputError) as exc:
                if self.on_error is None:
                    raise
                self.on_error(exc)

    def add(self, identity: Any, source: Source) -> None:
        if identity not in self.seen:
            self.seen.add(identity)
            self.sources.append(source)


def discover(
    specs: Iterable[str | os.PathLike],
    recursive: bool = False,
    extensions: Iterable[str] | None = None,
    frames: str | Iterable[int] | None = None,
    stdin: TextIO | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> list[Source]:
    """Find the inputs of ``refine`` (see the module docstring). Returns Sources in spec order.

    ``on_error``: called with each bad spec's error (a line of a list or of stdin
    too), which is then skipped, instead of the first one raising (``--continue-on-error``).

    Raises NoInputError for a missing path, an empty folder, a glob or sequence
    without matches; InputDataError for an unsupported file or a video without
    frames; UsageError for bad parameters or two inputs mapping to the same
    output name (a file of the tool's own, :func:`is_own_output`, does not count:
    a rerun with ``-o`` = the input folder finds the last run's outputs there).
    """
    frame_list = parse_frames(frames) if isinstance(frames, str) else (sorted(set(frames)) if frames is not None else None)
    ctx = _Ctx(bool(recursive), _norm_extensions(extensions), frame_list, stdin, on_error=on_error)
    specs = [os.fspath(s) for s in specs]
    if not specs:
        raise NoInputError("no input given (files, folders, globs, @list.txt or - for stdin)")
    cwd = _abs(Path.cwd())
    for spec in specs:
        try:
            _expand(spec, cwd, None, ctx, top=True)
        except (InputDataError, NoInputError) as exc:
            if on_error is None:
                raise
            on_error(exc)
    sources = [s for s in ctx.sources if s.entries()]
    if not sources:
        wanted = f" in frames {format_frames(frame_list)}" if frame_list else ""
        raise NoInputError(f"no images found{wanted} in {', '.join(specs)}")
    _check_collisions(sources)
    return sources


def iter_entries(sources: Iterable[Source]) -> Iterator[Entry]:
    """All entries of all sources, in order."""
    for source in sources:
        yield from source.entries()


def _check_collisions(sources: list[Source]) -> None:
    """Refuse two inputs that would be written under one output name. A file this tool wrote (its
    sidecar is ours, e.g. the last run's ``a.png`` beside ``a.jpg`` under ``-o`` = the input folder)
    does not count: ``plan_run`` leaves it out (or refuses it as an input like any other)."""
    owner: dict[PurePosixPath, str] = {}
    for source in sources:
        for entry in source.entries():
            previous = owner.setdefault(entry.relpath, entry.source)
            if previous == entry.source or is_own_output(entry.source):
                continue
            if is_own_output(previous):  # the input takes the name back from an earlier output
                owner[entry.relpath] = entry.source
                continue
            raise UsageError(_collision_message(previous, entry.source, entry.relpath))


def is_own_output(path: str | os.PathLike) -> bool:
    """A file ``refine`` wrote, so not an input: named as an output of a sidecar of ours (``a.png``,
    ``a.exr``, ``a.npy``, ``a_preview.jpg``, ``a_uncertainty.exr`` for ``a.json``) and not the file
    that sidecar names as its source. So the ``a.jpg`` (or the ``a.png`` of an npy run) that an
    ``a.json`` beside it was made from stays an input; a user's file with no sidecar of ours too."""
    from betterdepth_cli.io.depth_files import read_sidecar
    from betterdepth_cli.io.outputs import OUTPUT_FORMATS, output_paths, sidecar_of

    path = Path(path)
    side = sidecar_of(path)
    try:
        names = output_paths(side.parent, side.stem, OUTPUT_FORMATS)
        meta = read_sidecar(side)
    except (UsageError, InputDataError):
        return False
    if path.name not in {p.name for key, p in names.items() if key != "sidecar"}:
        return False
    source = meta.get("source")
    return not (isinstance(source, str) and source and _same_file(side.parent / source, path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _collision_message(first: str | os.PathLike, second: str | os.PathLike, relpath: PurePosixPath | str) -> str:
    """One line: two inputs map to ``relpath``, and what to do about it. Side by side in one folder
    (``a.jpg``, ``a.png``) a common parent cannot tell them apart: one must be renamed or left out."""
    a, b = Path(first), Path(second)
    head = f"inputs {a} and {b} would both be written as {relpath}; "
    if a.parent != b.parent:
        return head + "give their common parent folder instead"
    exts = [file_ext(a), file_ext(b)]
    same_kind = len({_EXT_ALIAS.get(e, e) for e in exts}) == 1  # --ext jpg takes .jpeg too
    hint = "" if same_kind else f" (e.g. --ext {exts[0]} or --ext {exts[1]})"
    return head + f"they are in the same folder: rename one, or leave one out{hint}"


def _read_spec_lines(lines: Iterable[str]) -> list[str]:
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _expand(spec: str, base: Path, list_root: Path | None, ctx: _Ctx, top: bool = False) -> None:
    """Add the sources of one spec; ``base`` resolves relative paths, ``list_root`` anchors relpaths."""
    if spec == "-":
        _expand_stdin(base, ctx, top)
        return
    if spec.startswith("@") and len(spec) > 1:
        _expand_list(_abs(base / spec[1:]), ctx)
        return
    path = _abs(base / spec)
    if path.is_dir():
        _expand_folder(path, [list_root, path], ctx)
    elif path.exists():
        _expand_file(path, [list_root, path.parent], ctx, explicit=True)
    elif _SEQ_TOKEN.search(path.name):
        _expand_sequence(spec, path, list_root, ctx)
    elif _GLOB_MAGIC.search(spec):
        _expand_glob(spec, path, list_root, ctx)
    else:
        raise NoInputError(f"{spec}: no such file or folder")


def _expand_stdin(base: Path, ctx: _Ctx, top: bool) -> None:
    if not top:
        raise UsageError("`-` (paths from stdin) is only allowed on the command line, not inside a list")
    if ctx.stdin is None:
        raise UsageError("`-` reads paths from stdin, but no stdin stream was given")
    if ctx.stdin_used:
        raise UsageError("`-` (stdin) may be given only once")
    ctx.stdin_used = True
    lines = _read_spec_lines(ctx.stdin)
    if not lines:
        raise NoInputError("-: no paths on stdin")
    ctx.expand_each(lines, base, base)


def _expand_list(list_path: Path, ctx: _Ctx) -> None:
    if not list_path.is_file():
        raise NoInputError(f"{list_path}: no such list file")
    if list_path in ctx.lists:
        return  # already read (a list that includes itself)
    ctx.lists.add(list_path)
    try:
        lines = _read_spec_lines(list_path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{list_path}: cannot read the list ({exc})") from exc
    if not lines:
        raise NoInputError(f"{list_path}: the list is empty")
    ctx.expand_each(lines, list_path.parent, list_path.parent)


def _expand_file(path: Path, roots: list[Path | None], ctx: _Ctx, explicit: bool = False) -> None:
    ext = file_ext(path)
    if ext in IMAGE_EXTENSIONS:
        ctx.add(("file", os.path.realpath(path)), ImageSource(path, _rel(path, roots)))
    elif ext in VIDEO_EXTENSIONS:
        source = VideoSource(path, _rel(path, roots), ctx.frames)
        entries = source.entries()  # counts frames: unreadable or empty videos fail at discovery
        if explicit and not entries:
            raise NoInputError(
                f"{path}: none of frames {format_frames(ctx.frames or [])} exist "
                f"(the video has frames 0-{source.nframes - 1})"
            )
        ctx.add(("file", os.path.realpath(path)), source)
    else:
        shown = f"'.{ext}'" if ext else "(none)"
        raise InputDataError(f"{path}: unsupported extension {shown} (supported: {', '.join(SUPPORTED_EXTENSIONS)})")


def _walk(folder: Path, recursive: bool) -> tuple[list[Path], bool]:
    """Non-hidden files under ``folder`` (sorted) and whether unsearched subfolders exist."""
    files: list[Path] = []
    skipped_dirs = False
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
        if not recursive:
            skipped_dirs = bool(dirnames)
            break
    return sorted(files), skipped_dirs


def _expand_folder(folder: Path, roots: list[Path | None], ctx: _Ctx) -> None:
    files, skipped_dirs = _walk(folder, ctx.recursive)
    chosen = [f for f in files if file_ext(f) in ctx.extensions]
    if not chosen:
        hint = "; subfolders were not searched (recursive is off)" if skipped_dirs else ""
        raise NoInputError(f"{folder}: no images found (extensions: {', '.join(ctx.extensions)}){hint}")
    _add_files(chosen, roots, ctx)


def _glob_root(pattern: Path) -> Path:
    parts = pattern.parts
    for i, part in enumerate(parts):
        if _GLOB_MAGIC.search(part):
            return Path(*parts[:i])
    return pattern.parent


def _glob_regex(pattern: str) -> re.Pattern:
    """A glob over '/'-separated relative paths as a regex: ``**`` any number of folders (none
    too), ``*``, ``?`` and ``[...]`` within one name (:func:`_name_regex`)."""
    parts = pattern.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_name_regex(part) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z")


def _name_regex(name: str) -> str:
    """One path component's glob as a regex that never crosses '/'."""
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = name.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
            else:
                inner = name[i + 1 : j]
                inner = "^" + inner[1:] if inner.startswith("!") else inner
                out.append(f"[{inner.replace(chr(92), chr(92) * 2)}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def glob_files(pattern: Path) -> list[Path]:
    """Files matching ``pattern`` (``**`` = any subfolders), found WITHOUT following directory links:
    a symlink loop cannot hang discovery or nest outputs; linked files are taken as files."""
    if "**" not in pattern.parts:
        return sorted(Path(p) for p in globlib.glob(str(pattern)))
    root = _glob_root(pattern)
    rel_pattern = pattern.relative_to(root).as_posix() if root.parts else pattern.as_posix()
    rx = _glob_regex(rel_pattern)
    out = []
    for dirpath, dirnames, filenames in os.walk(root or Path("."), followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # as glob: ** skips hidden folders
        rel_dir = os.path.relpath(dirpath, root or Path(".")).replace(os.sep, "/")
        for f in filenames:
            rel = f if rel_dir == "." else f"{rel_dir}/{f}"
            if rx.match(rel):
                out.append(Path(dirpath) / f)
    return sorted(out)


def _expand_glob(spec: str, pattern: Path, list_root: Path | None, ctx: _Ctx) -> None:
    allowed = ctx.extensions
    if file_ext(pattern) in VIDEO_EXTENSIONS:  # clips/*.mp4 names videos explicitly
        allowed = allowed + (file_ext(pattern),)
    matches = glob_files(pattern)
    files = [p for p in matches if p.is_file() and file_ext(p) in allowed and not p.name.startswith(".")]
    if not files:
        raise NoInputError(f"{spec}: no images or videos match")
    _add_files(files, [list_root, _glob_root(pattern)], ctx)


def _add_files(files: list[Path], roots: list[Path | None], ctx: _Ctx) -> None:
    """Group ``name.<digits>.ext`` images into sequences; the rest become images or videos."""
    groups: dict[tuple[Path, str, str], dict[int, Path]] = {}
    for f in files:
        match = _FRAME_NAME.match(f.stem)
        if match and file_ext(f) in IMAGE_EXTENSIONS:
            frames = groups.setdefault((f.parent, match.group("prefix"), f.suffix), {})
            frames.setdefault(int(match.group("digits")), f)  # shot.1 beside shot.01: the 2nd stays single
    grouped = {p for frames in groups.values() if len(frames) > 1 for p in frames.values()}
    done: set[tuple[Path, str, str]] = set()
    for f in files:
        if f not in grouped:
            _expand_file(f, roots, ctx)
            continue
        match = _FRAME_NAME.match(f.stem)
        gkey = (f.parent, match.group("prefix"), f.suffix)
        if gkey in done:
            continue
        done.add(gkey)
        frames = groups[gkey]
        pattern = f"{gkey[1]}.#{gkey[2]}"
        source = _sequence(pattern, _rel(f.parent / "x", roots).parent, frames, ctx.frames)
        ctx.add(("seq", os.path.realpath(f.parent), pattern), source)


def _sequence(pattern: str, reldir: PurePosixPath, files: dict[int, Path], wanted: list[int] | None) -> SequenceSource:
    on_disk = sorted(files)
    if wanted is None:
        return SequenceSource(pattern, reldir, files, on_disk)
    return SequenceSource(pattern, reldir, files, [n for n in wanted if n in files], [n for n in wanted if n not in files])


def _sequence_regex(name: str) -> tuple[re.Pattern, int]:
    """``shot.%04d.png`` / ``shot.####.png`` / ``shot.$F4.png`` -> (regex with one digits group, padding)."""
    tokens = list(_SEQ_TOKEN.finditer(name))
    if len(tokens) != 1:
        raise UsageError(f"{name}: a sequence pattern needs exactly one %04d, #### or $F4 frame token")
    token = tokens[0]
    text = token.group(0)
    pad = len(text) if text.startswith("#") else int(token.group(1) or token.group(2) or 0)
    regex = re.compile(re.escape(name[: token.start()]) + r"(\d+)" + re.escape(name[token.end():]) + r"$")
    return regex, pad


def _expand_sequence(spec: str, pattern: Path, list_root: Path | None, ctx: _Ctx) -> None:
    ext = file_ext(pattern)
    if ext not in IMAGE_EXTENSIONS:
        raise InputDataError(f"{spec}: unsupported extension '.{ext}' for an image sequence (supported: {', '.join(IMAGE_EXTENSIONS)})")
    folder = pattern.parent
    if not folder.is_dir():
        raise NoInputError(f"{spec}: no such folder {folder}")
    regex, pad = _sequence_regex(pattern.name)
    files: dict[int, Path] = {}
    for name in sorted(os.listdir(folder)):
        match = regex.match(name)
        if match and (folder / name).is_file():
            digits = match.group(1)
            if digits == (f"{int(digits):0{pad}d}" if pad else str(int(digits))):
                files[int(digits)] = folder / name
    if not files:
        raise NoInputError(f"{spec}: no frames found")
    source = _sequence(pattern.name, _rel(folder / "x", [list_root, folder]).parent, files, ctx.frames)
    if not source.selected:
        raise NoInputError(
            f"{spec}: none of frames {format_frames(ctx.frames or [])} exist (on disk: {format_frames(files)})"
        )
    ctx.add(("seq", os.path.realpath(folder), pattern.name), source)
