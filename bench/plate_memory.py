"""Peak memory of `betterdepth refine` on a large plate, at the default settings (issues 19 and 22).

Writes a W x H photo-like PNG (smooth gradients + texture) in a child process, runs `betterdepth
refine` on it in another, checks the output has the input's size, and prints that child's peak RSS
last (its own ``ru_maxrss`` from ``wait4``). The plate is made in a separate process so the
refine child does not inherit a large parent: a forked child's peak counts the pages it shares with
its parent until it execs, which is what earlier versions of this script measured (6.1 GB at
12000 x 8000 was the plate generator's footprint, not refine's).

    python bench/plate_memory.py [--size 6000x4000] [--model PATH] [--format npy] [-- extra refine flags]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def write_plate(path: str, w: int, h: int) -> None:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    img = np.empty((h, w, 3), np.uint8)
    xx = np.arange(w, dtype=np.float32)
    for y0 in range(0, h, 512):  # by bands: the generator stays small too
        yy = np.arange(y0, min(h, y0 + 512), dtype=np.float32)[:, None]
        band = np.stack([np.broadcast_to(xx / w * 255, (len(yy), w)), np.broadcast_to(yy / h * 255, (len(yy), w)),
                         (np.sin(xx / 37) * np.cos(yy / 23) * 0.5 + 0.5) * 255], -1)
        band += rng.normal(0, 8, (len(yy), w, 1)).astype(np.float32)
        img[y0 : y0 + len(yy)] = np.clip(band, 0, 255).astype(np.uint8)
    cv2.imwrite(path, img)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="6000x4000")
    ap.add_argument("--model", default=None)
    ap.add_argument("--format", default="npy")
    ap.add_argument("--write-plate", default=None, help=argparse.SUPPRESS)
    a, extra = ap.parse_known_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    if a.write_plate:
        write_plate(a.write_plate, w, h)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="betterdepth-plate-"))
    subprocess.run([sys.executable, __file__, "--size", a.size, "--write-plate", str(tmp / "plate.png")], check=True)
    cmd = [sys.executable, "-m", "betterdepth_cli", "refine", str(tmp / "plate.png"), "-o", str(tmp / "out"), "-q",
           "-f", a.format] + (["--model", a.model] if a.model else []) + [x for x in extra if x != "--"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    _, status, usage = os.wait4(p.pid, 0)
    err = p.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err[-2000:], file=sys.stderr)
        return code
    import numpy as np

    if a.format == "npy":
        out = np.load(tmp / "out" / "plate.npy", mmap_mode="r")
        oh, ow = out.shape
    else:
        import json

        meta = json.loads((tmp / "out" / "plate.json").read_text())
        oh, ow = meta["height"], meta["width"]
    print(f"plate {w} x {h}, output {ow} x {oh} ({'full resolution' if (oh, ow) == (h, w) else 'NOT full resolution'}),"
          f" format {a.format}, flags {' '.join(extra) or 'default'}")
    print(f"peak RSS: {usage.ru_maxrss / 2**20:.2f} GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
