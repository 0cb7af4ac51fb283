"""What a synthetic-data request may ask, and what a dataset folder already holds.

Shared by :func:`training.synthetic.write_dataset`, :func:`training.sequences.write_sequences` and
``betterdepth synth``: the documented limits, the argument checks (run before anything is
written, each error naming the argument as its caller spells it), the check that a folder was
written with the same settings, and the count of samples a folder holds. Not a rendering module:
editing it leaves :func:`training.synthetic.writer.generator_digest` as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

MIN_SIDE = 8
MAX_SIDE = 16_384  # pixels per side (PNG readers refuse much wider images)
MAX_RAYS = 4096 * 4096  # W x H x supersample^2 primary rays per image: about 4 GB while rendering (~230 bytes a ray)
MAX_SCENES = 10_000_000  # scenes (or clips) per folder
MAX_FRAMES = 100_000  # frames per clip
MAX_WORKERS = 256
MAX_SEED = 2**63 - 1  # dataset.toml records seeds as TOML integers (64-bit signed)

#: How the library's functions name their arguments in errors; ``betterdepth synth`` passes its flags.
LIBRARY_NAMES = {"n": "`n`", "seed0": "`seed0`", "size": "`size`", "supersample": "`supersample`",
                 "frames": "`n_frames`", "workers": "`workers`"}


def check_request(n: int, seed0: int, size: tuple[int, int] | int, supersample: int = 1, frames: int | None = None,
                  workers: int = 1, names: dict[str, str] | None = None) -> tuple[int, int]:
    """Refuse (ValueError naming the argument) what cannot or should not be rendered; returns (H, W).

    ``n`` 0 .. :data:`MAX_SCENES`; seeds ``seed0 .. seed0 + n - 1`` within 0 .. :data:`MAX_SEED`;
    each side of ``size`` (H, W; an int is square) :data:`MIN_SIDE` .. :data:`MAX_SIDE` and
    W x H x supersample² at most :data:`MAX_RAYS`; ``supersample`` odd; ``frames`` (clips only)
    1 .. :data:`MAX_FRAMES`; ``workers`` 1 .. :data:`MAX_WORKERS`."""
    nm = {**LIBRARY_NAMES, **(names or {})}
    if not 0 <= n <= MAX_SCENES:
        raise ValueError(f"{nm['n']} must be {'>= 0' if n < 0 else f'at most {MAX_SCENES:,}'}, got {n:,}")
    if seed0 < 0:
        raise ValueError(f"{nm['seed0']} must be >= 0, got {seed0}")
    if seed0 + max(n - 1, 0) > MAX_SEED:
        raise ValueError(f"{nm['seed0']} {seed0} with {nm['n']} {n} goes past the largest seed, 2**63 - 1 (sample "
                         f"i uses {nm['seed0']} + i): use {nm['seed0']} {MAX_SEED - max(n - 1, 0)} or less")
    if supersample < 1 or supersample % 2 == 0:
        raise ValueError(f"{nm['supersample']} must be odd (1, 3, 5 ...), got {supersample}")
    if frames is not None and not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"{nm['frames']} must be 1 .. {MAX_FRAMES:,}, got {frames:,}")
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"{nm['workers']} must be 1 .. {MAX_WORKERS}, got {workers}")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise ValueError(f"{nm['size']} must be {MIN_SIDE} .. {MAX_SIDE} pixels per side, got {w}x{h} (WxH)")
    rays = h * w * supersample**2
    if rays > MAX_RAYS:
        raise ValueError(f"{nm['size']} {w}x{h} with {nm['supersample']} {supersample} is {rays:,} rays per image, "
                         f"more than the {MAX_RAYS:,} limit (4096x4096 at supersample 1; about 4 GB of memory)")
    return h, w


def refuse_other_settings(out: Path, stored: dict, asked: dict, defaults: dict | None = None,
                          what: str = "settings") -> None:
    """OutputError naming every setting of ``asked`` that ``stored`` (a folder's record) holds otherwise;
    ``defaults`` stands in for what older records lack."""
    from betterdepth_cli.core.types import OutputError

    defaults = defaults or {}
    there = {k: stored.get(k, defaults.get(k)) for k in asked}
    diff = [k for k in asked if there[k] != asked[k]]
    if diff:
        raise OutputError(f"{out}: was written with other {what} ("
                          + ", ".join(f"{k} {there[k]!r} there, {asked[k]!r} asked" for k in diff)
                          + "); use another folder or the same settings")


def indices(folder: Path, prefix: str = "", suffix: str | None = None, digits: int = 6) -> set[int]:
    """The indices ``i`` of the entries ``<prefix><i:0{digits}d><suffix>`` of ``folder`` (``suffix`` None:
    any extension or none); an absent folder has none."""
    import re

    tail = re.escape(suffix) if suffix is not None else r"(?:\..*)?"
    pattern = re.compile(rf"{re.escape(prefix)}(\d+){tail}")
    found: set[int] = set()
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return found
    with entries:
        for e in entries:
            m = pattern.fullmatch(e.name)
            if m and f"{int(m[1]):0{digits}d}" == m[1]:
                found.add(int(m[1]))
    return found


def refuse_fewer(out: Path, held: int, n: int, unit: str = "scenes") -> None:
    """OutputError when ``out`` holds more samples than ``n``: the folder's record would say ``n`` while
    its readers take all ``held`` (nothing is deleted, so the folder stays as it is)."""
    from betterdepth_cli.core.types import OutputError

    if held > n:
        raise OutputError(f"{out}: holds {held:,} {unit}, more than the {n:,} asked (nothing was written); ask for "
                          f"{held:,} or more {unit} to resume or extend it, or write to another folder")


def check_scene_folder(out: Path, source: dict, depth_format: str) -> int:
    """Refuse to write ``source["n"]`` scenes into ``out`` when that would mix or misdescribe samples:
    a non-empty folder without ``dataset.toml``, one of another generator or generator version, one
    written with other settings, one holding more scenes than ``n``. Returns the scenes it holds
    (complete or not; 0 for a new folder)."""
    import tomllib

    from betterdepth_cli.core.types import OutputError

    path = out / "dataset.toml"
    if not path.exists():
        if out.is_dir() and any(out.iterdir()):
            raise OutputError(f"{out}: folder is not empty and has no dataset.toml; use an empty or new folder")
        return 0
    try:
        cfg = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise OutputError(f"{path}: exists but is not a synthetic dataset description; use another folder") from None
    old = cfg.get("source", {})
    if old.get("generator") != source["generator"]:
        raise OutputError(f"{out}: holds a dataset not written by `betterdepth synth`; use another folder")
    old_digest = old.get("generator_digest")
    if old_digest is not None and old_digest != source["generator_digest"]:  # folders written before 2026-12-06 have none
        raise OutputError(f"{out}: was written by another version of the scene generator (digest {old_digest}, this one "
                          f"{source['generator_digest']}): new samples would not match its others; use another folder")
    asked = {**{k: source[k] for k in ("seed0", "size", "kind", "supersample")}, "depth_format": depth_format}
    refuse_other_settings(out, {**old, "depth_format": cfg.get("depth", {}).get("format")}, asked, {"supersample": 1})
    on_disk = set().union(*(indices(out / sub) for sub in ("rgb", "depth", "meta")))
    recorded = old.get("n")
    held = max(recorded if isinstance(recorded, int) else 0, max(on_disk, default=-1) + 1)
    refuse_fewer(out, held, source["n"])
    return held


def complete_scenes(out: Path, n: int, depth_format: str) -> set[int]:
    """The indices below ``n`` whose rgb, depth and meta files are all in ``out``."""
    ext = "npy" if depth_format == "npy" else "png"
    done = indices(out / "rgb", suffix=".png") & indices(out / "depth", suffix=f".{ext}")
    return {i for i in done & indices(out / "meta", suffix=".json") if i < n}
