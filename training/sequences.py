"""Camera paths through the procedural scenes: RGB-D sequences with intrinsics and poses.

A clip is one scene of :mod:`training.synthetic` (built from its seed alone) seen
from a camera that moves along a smooth path that starts at the seed's own
camera. Motions (``motion``):

- ``orbit``: the eye circles the look-at point, ``amplitude`` metres of arc in all;
- ``dolly``: the eye moves toward the look-at point by ``amplitude`` metres;
- ``truck``: the eye and the look-at point slide sideways by ``amplitude`` metres;
- ``static``: no motion (every frame the same view; the per-frame grain differs);
- ``mixed``: one of orbit, dolly, truck, drawn from the clip's seed.

Each path follows a smooth ease-in/ease-out profile (0 -> 1 over the clip) with a
small handheld sway, so consecutive frames overlap as in a real shot.

Folder layout written by :func:`write_sequences` (``betterdepth synth --sequence``)::

    OUT/sequences.toml                 generator settings (a rerun with others is refused)
    OUT/<clip>/rgb/frame.<%06d>.png    8-bit sRGB (a ``name.<digits>.png`` sequence: ``betterdepth refine OUT/<clip>/rgb``)
    OUT/<clip>/depth/frame.<%06d>.npy  float32 planar depth in metres, 0 = invalid (sky, beyond max_depth)
    OUT/<clip>/camera.json             {"K": 3x3, "width", "height", "max_depth", "seed", "kind", "motion",
                                        "frames": [{"id": "frame.000000", "pose": 4x4 camera-to-world}, ...]}

Conventions: ``K`` uses the pixel-index convention of OpenCV, TUM RGB-D and
ScanNet (the centre of pixel (u, v) is at ((u - cx) / fx, (v - cy) / fy, 1));
``pose`` is camera-to-world with OpenCV camera axes (x right, y down, z forward),
world z-up, metres. Clips are named ``clip<%04d>``; clip i uses seed ``seed0 + i``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from training.synthetic import SCENE_KINDS, look_at, render, scene_setup

MOTIONS = ("orbit", "dolly", "truck", "static", "mixed")
FRAME_NAME = "frame.{:06d}"
CAMERA_FILE = "camera.json"
SEQUENCES_TOML = "sequences.toml"


def ease(t: np.ndarray) -> np.ndarray:
    """Smoothstep 3t^2 - 2t^3 on [0, 1]: zero speed at both ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def camera_path(eye: np.ndarray, target: np.ndarray, n: int, motion: str, amplitude: float,
                rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (eye, target) pairs along ``motion`` (module doc), starting at ``eye``, ``target``."""
    if motion not in MOTIONS or motion == "mixed":
        raise ValueError(f"`motion` must be one of orbit, dolly, truck, static, got {motion!r}")
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    u = ease(np.linspace(0.0, 1.0, n)) if n > 1 else np.zeros(1)
    fwd = target - eye
    dist = float(np.linalg.norm(fwd))
    fwd /= max(dist, 1e-9)
    side = np.cross(fwd, [0.0, 0.0, 1.0])
    side /= max(float(np.linalg.norm(side)), 1e-9)
    sway_phase = rng.uniform(0, 2 * np.pi, 3)
    sway_amp = 0.0 if motion == "static" else 0.01 * amplitude
    direction = rng.choice([-1.0, 1.0])
    out = []
    for k, uk in enumerate(u):
        e, tg = eye.copy(), target.copy()
        if motion == "orbit":
            ang = direction * uk * amplitude / max(dist, 1e-9)
            rel = eye - target
            c, s = math.cos(ang), math.sin(ang)
            e = target + np.array([c * rel[0] - s * rel[1], s * rel[0] + c * rel[1], rel[2]])
        elif motion == "dolly":
            e = eye + fwd * uk * min(amplitude, 0.6 * dist)
        elif motion == "truck":
            e = eye + side * direction * uk * amplitude
            tg = target + side * direction * uk * amplitude
        tt = k / max(n - 1, 1)
        e = e + sway_amp * np.sin(2 * np.pi * tt * np.array([1.3, 0.9, 1.7]) + sway_phase)
        out.append((e, tg))
    return out


def render_sequence(seed: int, n_frames: int, size: tuple[int, int], kind: str = "indoor", motion: str = "mixed",
                    amplitude: float | None = None, nthreads: int = 0):
    """Render clip ``seed``: yields ``(index, rgb (H,W,3) float32, depth (H,W) float32 m (0 invalid),
    pose (4,4) camera-to-world)``; :func:`sequence_camera` gives the clip's intrinsics and settings."""
    setup, motion, path = _clip_path(seed, n_frames, size, kind, motion, amplitude)
    H, W = int(size[0]), int(size[1])
    grain_rng = np.random.default_rng([int(seed), 7])
    gain = grain_rng.uniform(0.85, 1.15)
    for k, (e, tg) in enumerate(path):
        E = look_at(e, tg, roll_deg=setup.roll_deg)
        s = render(setup.meshes, setup.K, E, (H, W), nthreads=nthreads, **setup.render_kwargs)
        noise = np.random.default_rng([int(seed), 8, k]).normal(0, 0.004, s.rgb.shape).astype(np.float32)
        rgb = np.clip(s.rgb * gain + noise, 0, 1).astype(np.float32)
        depth = np.where(s.valid, s.depth, 0).astype(np.float32)
        yield k, rgb, depth, np.linalg.inv(E)


def _clip_path(seed: int, n_frames: int, size: tuple[int, int], kind: str, motion: str, amplitude: float | None):
    if n_frames < 1:
        raise ValueError(f"`n_frames` must be >= 1, got {n_frames}")
    if motion not in MOTIONS:
        raise ValueError(f"`motion` must be one of {', '.join(MOTIONS)}, got {motion!r}")
    setup = scene_setup(seed, size, kind)
    rng = np.random.default_rng([int(seed), 6])
    if motion == "mixed":
        motion = str(rng.choice(["orbit", "dolly", "truck"]))
    if amplitude is None:
        amplitude = float(rng.uniform(0.4, 0.8)) * (1.0 if setup.kind == "indoor" else 3.0)
    return setup, motion, camera_path(setup.eye, setup.target, n_frames, motion, amplitude, rng)


def sequence_camera(seed: int, n_frames: int, size: tuple[int, int], kind: str = "indoor", motion: str = "mixed",
                    amplitude: float | None = None) -> dict:
    """The clip's ``camera.json`` content without the frames (K in the pixel-index convention)."""
    setup, motion, _ = _clip_path(seed, n_frames, size, kind, motion, amplitude)
    K = setup.K.copy()
    K[0, 2] -= 0.5  # open3d's rays pass through pixel centres at u + 0.5: the pixel-index convention
    K[1, 2] -= 0.5
    return {"K": K.tolist(), "width": int(size[1]), "height": int(size[0]),
            "max_depth": float(setup.render_kwargs["max_depth"]), "seed": int(seed), "kind": setup.kind,
            "motion": motion}


def _png_bytes(rgb8: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb8[..., ::-1]))  # RGB -> BGR for cv2
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    bio = io.BytesIO()
    np.save(bio, arr, allow_pickle=False)
    return bio.getvalue()


def _write_clip(out: Path, clip: str, seed: int, n_frames: int, size: tuple[int, int], kind: str, motion: str,
                amplitude: float | None, nthreads: int) -> None:
    from betterdepth_cli.io.files import atomic_write_bytes

    d = out / clip
    if (d / CAMERA_FILE).exists():
        return  # resume: camera.json is written last
    for sub in ("rgb", "depth"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    camera = sequence_camera(seed, n_frames, size, kind, motion, amplitude)
    frames = []
    for k, rgb, depth, pose in render_sequence(seed, n_frames, size, kind, motion, amplitude, nthreads):
        name = FRAME_NAME.format(k)
        atomic_write_bytes(d / "rgb" / f"{name}.png", _png_bytes(np.round(rgb * 255).astype(np.uint8)))
        atomic_write_bytes(d / "depth" / f"{name}.npy", _npy_bytes(depth))
        frames.append({"id": name, "pose": pose.tolist()})
    atomic_write_bytes(d / CAMERA_FILE, json.dumps({**camera, "frames": frames}).encode())


def write_sequences(out_dir: str | os.PathLike, n_clips: int, n_frames: int, seed0: int = 0,
                    size: tuple[int, int] = (120, 160), kind: str = "indoor", motion: str = "mixed",
                    amplitude: float | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """Render clips ``seed0 .. seed0 + n_clips - 1`` in the layout of the module doc; returns the folder.

    Complete clips (their ``camera.json`` written) are kept, so an interrupted run resumes; a
    folder written with other settings, or holding more than ``n_clips`` clips, is refused
    (OutputError). Every argument is checked before anything is written (ValueError naming it;
    limits of :func:`training.synthetic.settings.check_request`). ``progress(done, n_clips)`` after
    each clip rendered (``done`` counts the kept ones too).
    """
    from betterdepth_cli.io.files import atomic_write_bytes
    from training.synthetic.settings import check_request

    if kind not in SCENE_KINDS:
        raise ValueError(f"`kind` must be one of {', '.join(SCENE_KINDS)}, got {kind!r}")
    if motion not in MOTIONS:
        raise ValueError(f"`motion` must be one of {', '.join(MOTIONS)}, got {motion!r}")
    size = check_request(n_clips, seed0, size, frames=n_frames, names={"n": "`n_clips`"})
    out = Path(out_dir)
    settings = {"generator": "betterdepth training.sequences", "seed0": int(seed0), "frames": int(n_frames),
                "size": [int(size[0]), int(size[1])], "kind": kind, "motion": motion,
                "amplitude": "auto" if amplitude is None else float(amplitude)}
    text = "# betterdepth synthetic sequences: <clip>/rgb, <clip>/depth, <clip>/camera.json\n[source]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    _check_sequence_folder(out, settings, n_clips)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / SEQUENCES_TOML, text.encode())
    there = complete_clips(out, n_clips)
    for done, i in enumerate((i for i in range(n_clips) if i not in there), len(there) + 1):
        _write_clip(out, f"clip{i:04d}", int(seed0) + i, n_frames, size, kind, motion, amplitude, 0)
        if progress:
            progress(done, n_clips)
    return out


def complete_clips(out: Path, n_clips: int) -> set[int]:
    """The indices below ``n_clips`` of the clips of ``out`` with their ``camera.json`` (written last)."""
    from training.synthetic.settings import indices

    return {i for i in indices(out, prefix="clip", digits=4)
            if i < n_clips and (out / f"clip{i:04d}" / CAMERA_FILE).is_file()}


def _check_sequence_folder(out: Path, settings: dict, n_clips: int) -> None:
    """Refuse a folder whose clips would mix with these: not empty without ``sequences.toml``, of
    another generator, other settings (each named), more clips than ``n_clips``."""
    import tomllib

    from betterdepth_cli.core.types import OutputError
    from training.synthetic.settings import indices, refuse_fewer, refuse_other_settings

    toml = out / SEQUENCES_TOML
    if toml.exists():
        try:
            old = tomllib.loads(toml.read_text()).get("source", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            raise OutputError(f"{toml}: exists but is not a sequences description; use another folder") from None
        if old.get("generator") != settings["generator"]:
            raise OutputError(f"{out}: holds clips not written by `betterdepth synth --sequence`; use another folder")
        refuse_other_settings(out, old, {k: v for k, v in settings.items() if k != "generator"},
                              what="sequence settings")
    elif out.is_dir() and any(out.iterdir()):
        raise OutputError(f"{out}: folder is not empty and has no {SEQUENCES_TOML}; use an empty or new folder")
    refuse_fewer(out, max(indices(out, prefix="clip", digits=4), default=-1) + 1, n_clips, unit="clips")
