"""Planning an ``export-ply`` batch: the maps under a folder, one per output base, matched to their photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from betterdepth_cli.core.types import InputDataError
from betterdepth_cli.io.pointcloud import IMAGE_EXTS

MAP_EXTS = (".exr", ".npy", ".png")  # preference when one base has several: float first


@dataclass
class ExportJob:
    """One map to export: where it is, where it goes, and its source image if known."""

    map_path: Path
    out_path: Path
    image: Path | None = None
    image_error: str | None = None  # why the image could not be matched (raised when the job runs)


def _is_map_file(p: Path) -> bool:
    from betterdepth_cli.io.outputs import split_frame

    if p.name.startswith(".") or p.suffix.lower() not in MAP_EXTS:
        return False
    stem, _ = split_frame(p.stem)
    return not (stem.endswith("_uncertainty") or stem.endswith("_preview"))


def find_maps(folder: str | Path, bare_png: bool = False) -> tuple[list[Path], list[Path]]:
    """The depth maps under ``folder`` (recursive), one per output base.

    A base written in several formats is read from its EXR, else its NPY, else
    its PNG. Uncertainty maps, previews and hidden files are skipped, and so
    are PNGs without a sidecar unless ``bare_png`` (they are returned second,
    so the caller can say so). Both lists are sorted by path.
    """
    from betterdepth_cli.io.depth_files import sidecar_path

    root = Path(folder)
    best: dict[Path, Path] = {}
    bare: list[Path] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or not _is_map_file(p) or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.suffix.lower() == ".png" and not bare_png and not sidecar_path(p).is_file():
            bare.append(p)
            continue
        base = p.with_suffix("")
        cur = best.get(base)
        if cur is None or MAP_EXTS.index(p.suffix.lower()) < MAP_EXTS.index(cur.suffix.lower()):
            best[base] = p
    bare = [b for b in bare if b.with_suffix("") not in best]
    return [best[b] for b in sorted(best)], bare


def image_index(folder: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            index.setdefault(p.stem, []).append(p)
    return index


def match_image(rel_base: Path, image_dir: Path, index: dict[str, list[Path]]) -> Path | None:
    """The RGB image for a map whose base is ``rel_base`` (relative, no extension).

    First ``image_dir/rel_base.<ext>`` (a mirrored tree), else the one image
    anywhere under ``image_dir`` with the same stem; ``None`` when there is
    none; InputDataError when several share the stem and none mirrors the path.
    """
    for ext in IMAGE_EXTS:
        for cand in (image_dir / rel_base.parent / (rel_base.name + ext),
                     image_dir / rel_base.parent / (rel_base.name + ext.upper())):
            if cand.is_file():
                return cand
    hits = index.get(rel_base.name, [])
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        names = ", ".join(str(h.relative_to(image_dir)) for h in hits[:3])
        raise InputDataError(f"{rel_base}: several images in {image_dir} share its name ({names}); mirror the tree")
    return None


def plan_batch(
    input_dir: str | Path,
    out_dir: str | Path,
    ext: str = ".ply",
    image_dir: str | Path | None = None,
    bare_png: bool = False,
) -> tuple[list[ExportJob], list[Path]]:
    """Jobs for every map under ``input_dir``: ``out_dir/<relpath><ext>``, mirroring the tree.

    Returns (jobs, skipped): ``skipped`` are PNGs without a sidecar left out
    because ``bare_png`` is false (see :func:`find_maps`). NoInputError when
    there is no map at all.
    """
    from betterdepth_cli.core.types import NoInputError

    root, out = Path(input_dir), Path(out_dir)
    maps, bare = find_maps(root, bare_png)
    if not maps:
        hint = f" ({len(bare)} .png without sidecar: pass --assume disparity|depth to read them)" if bare else ""
        raise NoInputError(f"{root}: no depth maps (.png with sidecar, .exr, .npy) found{hint}")
    index = image_index(Path(image_dir)) if image_dir is not None else {}
    jobs = []
    for m in maps:
        rel = m.relative_to(root).with_suffix("")
        target = out / rel.parent / (rel.name + ext)
        img, err = None, None
        if image_dir is not None:
            try:
                img = match_image(rel, Path(image_dir), index)
            except InputDataError as exc:
                err = str(exc)
        jobs.append(ExportJob(m, target, img, err))
    return jobs, bare
