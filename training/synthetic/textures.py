"""Procedural 3D textures: value noise, the tileable noise texture, per-pixel albedo of the patterns."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from training.synthetic.scene import PATTERNS, Material


_NOISE_N = 32  # lattice period of the value-noise table (cells)
_NOISE_TABLE = np.random.default_rng(20240607).random(_NOISE_N ** 3, dtype=np.float32)


def value_noise(p: np.ndarray, salt: np.ndarray | int = 0) -> np.ndarray:
    """3D value noise in [0,1) at points p (N,3) (lattice spacing 1, period 32), smoothstep-interpolated.

    The lattice values come from a fixed table, so the noise is the same on every
    machine; ``salt`` (scalar or (N,)) shifts the lattice per surface."""
    N = _NOISE_N
    p = np.asarray(p, np.float32)
    f = np.floor(p)
    t = p - f
    t = t * t * (3 - 2 * t)
    i = f.astype(np.int32) + (np.asarray(salt, np.int32) * np.array([[7], [13], [19]], np.int32)).T
    x0, y0, z0 = (i[:, 0] & (N - 1)), (i[:, 1] & (N - 1)) * N, (i[:, 2] & (N - 1)) * (N * N)
    x1, y1, z1 = ((i[:, 0] + 1) & (N - 1)), ((i[:, 1] + 1) & (N - 1)) * N, ((i[:, 2] + 1) & (N - 1)) * (N * N)
    tab = _NOISE_TABLE
    tx, ty, tz = t[:, 0], t[:, 1], t[:, 2]
    a = tab[x0 + y0 + z0] + tx * (tab[x1 + y0 + z0] - tab[x0 + y0 + z0])
    b = tab[x0 + y1 + z0] + tx * (tab[x1 + y1 + z0] - tab[x0 + y1 + z0])
    c = tab[x0 + y0 + z1] + tx * (tab[x1 + y0 + z1] - tab[x0 + y0 + z1])
    d = tab[x0 + y1 + z1] + tx * (tab[x1 + y1 + z1] - tab[x0 + y1 + z1])
    ab = a + ty * (b - a)
    cd = c + ty * (d - c)
    return ab + tz * (cd - ab)


def fbm(p: np.ndarray, octaves: int = 3, salt: np.ndarray | int = 0) -> np.ndarray:
    """Fractal value noise in [0,1) at p (N,3)."""
    acc = np.zeros(len(p), np.float32)
    amp, tot = 1.0, 0.0
    for o in range(octaves):
        acc += amp * value_noise(p * (2.0 ** o), salt)
        tot += amp
        amp *= 0.5
    return acc / tot


_OTHER_AXES = np.array([[1, 2], [0, 2], [0, 1]])


def _plane_coords(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """2D coordinates (N,2) on the dominant plane of normals n (triplanar projection)."""
    ax = np.argmax(np.abs(n), axis=1)
    return np.take_along_axis(p, _OTHER_AXES[ax], axis=1)


_TEX_N = 256  # texels per side of the tileable noise texture
_TEX_PER_UNIT = 16.0  # texels per pattern cell (Material.scale metres)
_NOISE_TEX: np.ndarray | None = None


def noise_texture() -> np.ndarray:
    """A fixed, tileable fractal-noise texture (256,256) float32 in [0,1] (1/f^1.3 amplitude
    spectrum between 2 and 96 cycles per tile, from a fixed seed: the same everywhere)."""
    global _NOISE_TEX
    if _NOISE_TEX is None:
        n = _TEX_N
        rng = np.random.default_rng(1234567)
        spec = np.fft.fft2(rng.standard_normal((n, n)))
        f = np.fft.fftfreq(n) * n
        k = np.hypot(f[:, None], f[None, :])
        amp = np.where((k >= 2) & (k <= 96), np.maximum(k, 1) ** -1.3, 0)
        x = np.real(np.fft.ifft2(spec * amp))
        lo, hi = np.percentile(x, [1, 99])
        _NOISE_TEX = np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32)
    return _NOISE_TEX


def sample_noise(uv: np.ndarray) -> np.ndarray:
    """Bilinear samples (N,) of :func:`noise_texture` at pattern coordinates uv (N,2)
    (16 texels per unit, wrapping every 16 units)."""
    import cv2

    tex = noise_texture()
    n = len(uv)
    if n == 0:
        return np.zeros(0, np.float32)
    xy = np.mod(uv * np.float32(_TEX_PER_UNIT), np.float32(_TEX_N)).astype(np.float32)
    cols = 256
    rows = -(-n // cols)
    pad = rows * cols - n
    mx = np.concatenate([xy[:, 0], np.zeros(pad, np.float32)]).reshape(rows, cols)
    my = np.concatenate([xy[:, 1], np.zeros(pad, np.float32)]).reshape(rows, cols)
    out = np.empty((0,), np.float32)
    chunks = []
    for r0 in range(0, rows, 16384):  # cv2.remap needs fewer than 32767 rows
        chunks.append(cv2.remap(tex, mx[r0:r0 + 16384], my[r0:r0 + 16384], cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_WRAP).ravel())
    out = np.concatenate(chunks)
    return out[:n]


def shade_albedo(p: np.ndarray, n: np.ndarray, mesh_id: np.ndarray, materials: Sequence[Material]) -> np.ndarray:
    """Albedo (N,3) float32 of hit points p (N,3) with normals n (N,3) on meshes mesh_id (N,).

    Pattern coordinates are q = (p + offset) / scale; 2D patterns use the
    dominant-axis plane of q (triplanar); noise is a fixed tileable texture."""
    C1 = np.array([m.color for m in materials], np.float32).reshape(-1, 3)
    out = C1[mesh_id]
    codes = np.array([PATTERNS.index(m.pattern) for m in materials], np.int32)
    if not codes.any():
        return out
    sub = np.nonzero(codes[mesh_id] != 0)[0]
    if len(sub) == 0:
        return out
    C2 = np.array([m.color2 for m in materials], np.float32).reshape(-1, 3)
    scale = np.array([m.scale for m in materials], np.float32)
    offs = np.array([m.offset for m in materials], np.float32).reshape(-1, 3)
    dirs = np.array([m.direction for m in materials], np.float32).reshape(-1, 3)
    salt = (np.arange(len(materials), dtype=np.float32) * 5.37)[:, None]  # decorrelate noise per surface
    mid = mesh_id[sub]
    pat = codes[mid]
    q = (p[sub] + offs[mid]) / scale[mid, None]
    uv = _plane_coords(q, n[sub])
    w = np.zeros(len(sub), np.float32)
    present = np.flatnonzero(np.bincount(pat, minlength=len(PATTERNS)))
    for code in present:
        name = PATTERNS[code]
        sel = np.nonzero(pat == code)[0] if len(present) > 1 else slice(None)
        u = uv[sel]
        if name == "checker":
            w[sel] = (np.floor(u).astype(np.int64).sum(1) & 1).astype(np.float32)
        elif name == "stripes":
            w[sel] = (np.mod((q[sel] * dirs[mid[sel]]).sum(1), 1.0) < 0.5).astype(np.float32)
        elif name == "noise":
            w[sel] = sample_noise(u + salt[mid[sel]])
        elif name == "grid":
            w[sel] = (np.mod(u, 1.0) < 0.06).any(1).astype(np.float32)
        elif name == "windows":
            f = np.mod(u, 1.0)
            w[sel] = (((f > 0.22) & (f < 0.78)).all(1) & (np.abs(n[sub][sel][:, 2]) < 0.5)).astype(np.float32)
        elif name == "wood":
            s = (q[sel] * dirs[mid[sel]]).sum(1) * 6 + 1.5 * sample_noise(u * 2 + salt[mid[sel]])
            w[sel] = 0.5 + 0.5 * np.sin(np.float32(2 * np.pi) * s)
    c1 = out[sub]
    out[sub] = c1 + w[:, None] * (C2[mid] - c1)
    return out
