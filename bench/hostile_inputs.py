"""Hostile inputs: does `betterdepth refine` handle every one of them? Prints "N/N handled" last.

Builds its own corpus in a temporary folder (bombs, traversal names, symlink loops,
truncated and mislabelled files, wrong types, huge headers, odd sizes, user files in the
output folder) and runs the real command on each case in a child process. A case is
handled when: the exit code is a documented one (0, 3, 64, 65, 66, 73); stderr has no
traceback; every error line names a file of the case (or the option at fault); nothing
was written outside the case's output folder; no user file changed; and a case that is
expected to produce output (a valid if odd image) did, at the input's size.

    python bench/hostile_inputs.py [--keep DIR] [--model guided]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

DOCUMENTED = {0, 3, 64, 65, 66, 73}


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]  # makes the files under the case folder, returns the refine arguments
    outputs: int | None = None  # images expected to be written (None: any)
    extra_args: list[str] = field(default_factory=list)


def _png(path: Path, arr: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return path


def _rgb(h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_claiming(path: Path, w: int, h: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                     + chunk(b"IEND", b""))
    return path


def _cases() -> list[Case]:
    from PIL import Image

    def single(fn):  # a case with one input file built by fn(path) and the folder as input
        def build(d: Path) -> list[str]:
            fn(d / "in")
            return [str(d / "in")]
        return build

    def write(name: str, data: bytes):
        return single(lambda folder: (folder.mkdir(parents=True, exist_ok=True), (folder / name).write_bytes(data)))

    def img(name: str, make):
        def fn(folder: Path) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            make(folder / name)
        return single(fn)

    good = _rgb()
    cases = [
        Case("empty png", write("a.png", b"")),
        Case("truncated png", img("a.png", lambda p: p.write_bytes(_png(p, good).read_bytes()[:200]))),
        Case("random bytes as jpg", write("a.jpg", os.urandom(4096))),
        Case("text named png", write("a.png", b"hello, this is not an image\n" * 10)),
        Case("png header claims 60000 x 60000", img("a.png", lambda p: _png_claiming(p, 60000, 60000))),
        Case("png header claims 16000 x 16000", img("a.png", lambda p: _png_claiming(p, 16000, 16000))),
        Case("png header claims 0 x 0", img("a.png", lambda p: _png_claiming(p, 0, 0))),
        Case("1 x 1 image", img("a.png", lambda p: _png(p, _rgb(1, 1)))),
        Case("1 x 300 image", img("a.png", lambda p: _png(p, _rgb(1, 300)))),
        Case("4 x 2000 image", img("a.png", lambda p: _png(p, _rgb(4, 2000))), outputs=1),
        Case("16-bit grey png", img("a.png", lambda p: _png(p, (np.arange(32 * 48).reshape(32, 48) * 40).astype(np.uint16))),
             outputs=1),
        Case("rgba png", img("a.png", lambda p: _png(p, np.dstack([good, np.full((32, 48), 9, np.uint8)]))), outputs=1),
        Case("palette png", img("a.png", lambda p: Image.fromarray(good).convert("P").save(p)), outputs=1),
        Case("cmyk jpeg", img("a.jpg", lambda p: Image.fromarray(good).convert("CMYK").save(p)), outputs=1),
        Case("jpeg with a bad orientation tag", img("a.jpg", lambda p: _bad_orientation(p, good)), outputs=1),
        Case("float tiff with nan and negatives", img("a.tif", lambda p: _float_tiff(p)), outputs=1),
        Case("exr with inf and nan", img("a.exr", lambda p: _exr(p)), outputs=1),
        Case("folder named like an image", single(lambda f: ((f / "x.png").mkdir(parents=True), _png(f / "y.png", good)))),
        Case("unsupported extension given", lambda d: [str(_write(d / "notes.txt", b"x"))]),
        Case("broken symlink", single(lambda f: (f.mkdir(parents=True), os.symlink(f / "gone.png", f / "a.png")))),
        Case("symlink to a system file", single(lambda f: (f.mkdir(parents=True), os.symlink("/etc/hostname", f / "a.png")))),
        Case("two directory symlink loops under **", _loops),
        Case("traversal names in an @list", _traversal_list, outputs=1),
        Case("user photo named like a preview in -o", _user_preview, extra_args=["-f", "png16,preview"]),
        Case("user json where the sidecar goes", _user_json),
        Case("fake mp4", write("clip.mp4", os.urandom(2048)), extra_args=["--ext", "mp4"]),
        Case("sequence with a missing frame", _gappy_sequence),
        Case("-o is a file", _output_is_file),
        Case("unicode and newline in a file name", img("ñ\nb.png", lambda p: _png(p, good)), outputs=1),
        Case("-o equal to the input folder", lambda d: [str(_png(d / "in" / "a.jpg", good).parent), "-o", str(d / "in")],
             outputs=1),
        Case("-o equal to the input folder, output over the input", lambda d: [str(_png(d / "in" / "a.png", good).parent),
                                                                              "-o", str(d / "in")]),
    ]
    return cases


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _bad_orientation(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 99  # not one of the eight orientations
    Image.fromarray(rgb).save(path, exif=exif)


def _float_tiff(path: Path) -> None:
    import cv2

    arr = np.random.default_rng(1).normal(0.5, 1.0, (24, 40, 3)).astype(np.float32)
    arr[3, 4] = np.nan
    assert cv2.imwrite(str(path), arr)


def _exr(path: Path) -> None:
    import OpenEXR

    a = np.random.default_rng(2).random((24, 40)).astype(np.float32)
    a[0, 0], a[1, 1] = np.inf, np.nan
    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"R": a, "G": a, "B": a}).write(str(path))


def _loops(d: Path) -> list[str]:
    root = d / "L"
    _png(root / "a.png", _rgb())
    _png(root / "sub" / "b.png", _rgb(seed=1))
    os.symlink(root, root / "loop")
    os.symlink(root, root / "sub" / "back")
    return [str(root / "**" / "*.png")]


def _traversal_list(d: Path) -> list[str]:
    _png(d / "in" / "a.png", _rgb())
    lst = d / "in" / "deep" / "list.txt"
    lst.parent.mkdir(parents=True)
    lst.write_text("../a.png\n../../../../../../etc/hostname.png\n")
    return [f"@{lst}", "--continue-on-error"]


def _user_preview(d: Path) -> list[str]:
    _png(d / "in" / "A.png", _rgb())
    _png(d / "in" / "A_preview.jpg", _rgb(seed=3))
    return [str(d / "in"), "-o", str(d / "in")]


def _user_json(d: Path) -> list[str]:
    _png(d / "in" / "A.jpg", _rgb())
    (d / "in" / "A.json").write_text('{"mine": true}')
    return [str(d / "in"), "-o", str(d / "in")]


def _gappy_sequence(d: Path) -> list[str]:
    for f in (1, 2, 3, 5):
        _png(d / "seq" / f"s.{f:04d}.png", _rgb(seed=f))
    return [str(d / "seq" / "s.%04d.png"), "--frames", "1-5"]


def _output_is_file(d: Path) -> list[str]:
    _png(d / "in" / "a.png", _rgb())
    (d / "out").write_text("a file, not a folder")
    return [str(d / "in"), "-o", str(d / "out")]


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for f in filenames:
            p = Path(dirpath) / f
            if p.is_symlink() or not p.is_file():
                continue
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_case(case: Case, root: Path, model: str) -> tuple[bool, str]:
    d = root / case.name.replace(" ", "_").replace("/", "_")
    d.mkdir(parents=True)
    args = case.build(d)
    if "-o" not in args:
        args += ["-o", str(d / "out")]
    out_dir = Path(args[args.index("-o") + 1])
    before = _snapshot(root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "betterdepth_cli", "refine", *args, *case.extra_args, "--model", model]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=d)
    after = _snapshot(root)
    problems = []
    if p.returncode not in DOCUMENTED:
        problems.append(f"exit {p.returncode}")
    if "Traceback" in p.stderr:
        problems.append("traceback")
    changed = [k for k, v in before.items() if after.get(k) != v]
    if changed:
        problems.append(f"changed {changed[:2]}")
    outside = [k for k in after if k not in before and not k.startswith(str(out_dir.resolve()))
               and not k.startswith(str(out_dir))]
    if outside:
        problems.append(f"wrote outside the output folder: {outside[:2]}")
    errors = [ln for ln in p.stderr.splitlines() if "error:" in ln]
    if p.returncode and not errors:
        problems.append("failed without an error line")
    if case.outputs is not None:
        written = [k for k in after if k not in before and k.endswith(".png") and "_preview" not in k]
        if len(written) != case.outputs:
            problems.append(f"{len(written)} outputs, expected {case.outputs} (exit {p.returncode}: "
                            f"{(errors or [''])[-1][:120]})")
    detail = f"exit {p.returncode}" + (f": {errors[0][:140]}" if errors else "")
    return not problems, detail if not problems else "; ".join(problems)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", default=None, help="build the corpus here and keep it")
    ap.add_argument("--model", default="guided", help="refiner to run (default: guided, fast; inputs are the point)")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="betterdepth-hostile-"))
    root.mkdir(parents=True, exist_ok=True)
    cases = _cases()
    ok = 0
    for case in cases:
        handled, detail = run_case(case, root, a.model)
        ok += handled
        print(f"{'ok  ' if handled else 'FAIL'} {case.name}: {detail}", flush=True)
    print(f"{ok}/{len(cases)} handled")
    return 0 if ok == len(cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
