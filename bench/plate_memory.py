"""Peak memory of `betterdepth refine` on a large plate, at the default settings (issue 19 item 9).

Writes a W x H photo-like PNG (smooth gradients + texture), runs `betterdepth refine` on it in a
child process, checks the output has the input's size, and prints the child's peak RSS last.

    python bench/plate_memory.py [--size 6000x4000] [--model PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="6000x4000")
    ap.add_argument("--model", default=None)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    import cv2
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="betterdepth-plate-"))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    img = np.stack([xx / w * 255, yy / h * 255, (np.sin(xx / 37) * np.cos(yy / 23) * 0.5 + 0.5) * 255], -1)
    img = np.clip(img + rng.normal(0, 8, (h, w, 1)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp / "plate.png"), img)
    del img, yy, xx
    cmd = [sys.executable, "-m", "betterdepth_cli", "refine", str(tmp / "plate.png"), "-o", str(tmp / "out"), "-q",
           "-f", "npy"] + (["--model", a.model] if a.model else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if p.returncode != 0:
        print(p.stderr[-2000:], file=sys.stderr)
        return p.returncode
    out = np.load(tmp / "out" / "plate.npy", mmap_mode="r")
    print(f"plate {w} x {h}, output {out.shape[1]} x {out.shape[0]}"
          f" ({'full resolution' if out.shape == (h, w) else 'NOT full resolution'})")
    if peak_kb <= before:
        print("note: ru_maxrss did not grow past an earlier child's; the figure is an upper bound", file=sys.stderr)
    print(f"peak RSS: {peak_kb / 2**20:.2f} GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
