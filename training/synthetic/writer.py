"""Rendered scenes written in the generic RGB-D folder format (resumable, parallel)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from training.synthetic.scene import INDOOR_MAX_DEPTH, OUTDOOR_MAX_DEPTH, SCENE_KINDS
from training.synthetic.scenes import render_scene


DEPTH_FORMATS = ("npy", "png16")


#: The modules whose code decides what a rendered sample holds; a hash of their source is the
#: generator's version (:func:`generator_digest`).
RENDERING_MODULES = ("builder", "indoor", "meshes", "outdoor", "renderer", "scene", "scenes", "textures", "writer")


def generator_digest(root: str | os.PathLike | None = None) -> str:
    """16 hex digits that change whenever the code of :data:`RENDERING_MODULES` (under ``root``, this
    package by default) does: datasets and caches record it, so samples of two generator versions
    never mix (a folder resumed after the generator changed, a training cache keyed by seeds alone)."""
    folder = Path(root) if root is not None else Path(__file__).parent
    h = hashlib.blake2b(digest_size=8)
    for name in RENDERING_MODULES:
        data = (folder / f"{name}.py").read_bytes()
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _encode_png(arr: np.ndarray) -> bytes:
    import cv2

    if arr.ndim == 3:
        arr = arr[..., ::-1]  # RGB -> BGR for cv2
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    bio = io.BytesIO()
    np.save(bio, arr)
    return bio.getvalue()


def dataset_toml(depth_format: str, scale: float, extra: dict, max_depth: float | None = None) -> str:
    """The ``dataset.toml`` text of the generic folder format.

    ``[depth]`` is read by :mod:`training.datasets`; ``[dataset]`` spells the same
    for the evaluation ``folder`` loader (``betterdepth eval --dataset folder``)."""
    lines = ["# generic RGB-D folder (betterdepth): rgb/<id>.png, depth/<id>.<ext>, meta/<id>.json",
             "# metres = stored * scale; stored 0 = invalid (sky, beyond range)",
             "[depth]", 'units = "m"', f"scale = {scale!r}", 'kind = "depth"', "invalid_value = 0",
             f'format = "{depth_format}"', "", "[dataset]", 'images = "rgb"', 'ground_truth = "depth"',
             'kind = "depth"', f"scale = {scale!r}", "invalid = 0"]
    if max_depth is not None:
        lines.append(f"max_depth = {float(max_depth)!r}")
    lines += ["", "[source]"]
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def _write_one(args: tuple) -> str:
    out_dir, i, seed, size, kind, depth_format, scale, supersample, nthreads = args
    out = Path(out_dir)
    sid = f"{i:06d}"
    dpath = out / "depth" / f"{sid}.{'npy' if depth_format == 'npy' else 'png'}"
    rpath = out / "rgb" / f"{sid}.png"
    if dpath.exists() and rpath.exists() and (out / "meta" / f"{sid}.json").exists():
        return sid  # resume: already written
    s = render_scene(seed, size, kind, nthreads=nthreads, supersample=supersample)
    rgb8 = np.round(s.rgb * 255).astype(np.uint8)
    if depth_format == "npy":
        dbytes = _npy_bytes(np.where(s.valid, s.depth, 0).astype(np.float32))
    else:
        q = np.round(np.where(s.valid, s.depth, 0) / scale)
        q = np.where(s.valid & (q < 1), 1, q)  # keep valid pixels distinct from the invalid value
        dbytes = _encode_png(np.clip(q, 0, 65535).astype(np.uint16))
    _atomic_write_bytes(dpath, dbytes)
    _atomic_write_bytes(rpath, _encode_png(rgb8))
    meta = {"id": sid, **{k: v for k, v in s.meta.items() if k != "timings_ms"}}  # no run-dependent values
    _atomic_write_bytes(out / "meta" / f"{sid}.json", json.dumps(meta).encode())
    return sid


def write_dataset(out_dir: str | os.PathLike, n: int, seed0: int = 0, size: tuple[int, int] | int = (256, 256),
                  kind: str = "mixed", workers: int = 1, depth_format: str = "npy", supersample: int = 1,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Render scenes seed0 .. seed0+n-1 into the generic folder format.

    Layout: ``out_dir/dataset.toml``, ``rgb/<id>.png`` (8-bit), ``depth/<id>.npy``
    (float32 metres, 0 = invalid; exact) or ``depth/<id>.png`` (uint16, scale
    0.001 m for indoor, 0.002 m otherwise, 0 = invalid), ``meta/<id>.json``
    (seed, K, extrinsic, scene kind). ids are ``%06d`` of the index. Existing
    complete samples are kept (an interrupted run resumes; a folder written with
    other settings, or holding more than ``n`` scenes, is refused: OutputError). Every
    argument is checked before anything is written (ValueError naming it; limits in
    :mod:`training.synthetic.settings`: n <= 10,000,000, 8 .. 16384 pixels a side, W x H x
    supersample² <= 4096²). ``workers`` > 1 renders in processes (each ray
    caster single-threaded); the files are the same whatever ``workers`` is. ``supersample`` (odd)
    anti-aliases RGB with s x s rays per pixel (depth unchanged). ``progress(done, n)``
    is called after each sample rendered (``done`` counts the kept ones too). Returns the output folder.

    NPY is the default: 256 KiB per 256x256 sample, exact; png16 is ~3x smaller.
    """
    from training.synthetic.settings import check_request, check_scene_folder, complete_scenes

    if kind not in SCENE_KINDS:
        raise ValueError(f"`kind` must be one of {', '.join(SCENE_KINDS)}, got {kind!r}")
    if depth_format not in DEPTH_FORMATS:
        raise ValueError(f"`depth_format` must be one of {', '.join(DEPTH_FORMATS)}, got {depth_format!r}")
    size = check_request(n, seed0, size, supersample, workers=workers)  # all before anything is written
    out = Path(out_dir)
    source = {"generator": "betterdepth training.synthetic", "seed0": int(seed0), "n": int(n),
              "size": [int(size[0]), int(size[1])], "kind": kind, "supersample": int(supersample),
              "generator_digest": generator_digest()}
    check_scene_folder(out, source, depth_format)
    for sub in ("rgb", "depth", "meta"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    scale = 1.0 if depth_format == "npy" else (0.001 if kind == "indoor" else 0.002)
    toml = dataset_toml(depth_format, scale, source,
                        max_depth=INDOOR_MAX_DEPTH if kind == "indoor" else OUTDOOR_MAX_DEPTH)
    _atomic_write_bytes(out / "dataset.toml", toml.encode())
    nthreads = 0 if workers == 1 else 1  # one process: all cores for ray casting; else one each
    there = complete_scenes(out, n, depth_format)  # a rerun resumes: kept
    jobs = ((str(out), i, int(seed0) + i, tuple(size), kind, depth_format, scale, int(supersample), nthreads)
            for i in range(n) if i not in there)
    _run_jobs(jobs, n - len(there), workers, lambda done: progress and progress(len(there) + done, n))
    return out


def _run_jobs(jobs: Iterator[tuple], count: int, workers: int, after: Callable[[int], None]) -> None:
    """Render the ``count`` samples of ``jobs`` (lazily: a batch at a time in ``workers`` processes);
    ``after(done)`` after each."""
    done = 0
    if workers == 1 or count <= 1:
        for j in jobs:
            _write_one(j)
            done += 1
            after(done)
        return
    import itertools
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, count)) as pool:
        while batch := list(itertools.islice(jobs, 4096)):
            for _ in pool.imap_unordered(_write_one, batch, chunksize=4):
                done += 1
                after(done)
