"""Issue 18's table: does the refiner beat the conditioner and the classical guided filter?

On the real development scenes (``../shared/data/real`` or $BETTERDEPTH_REAL_DATA), split in
a ``dev`` half (settings were chosen there) and a ``report`` half (never used to choose):
conditioner / guided filter / refined / luminance control, over ``builtin`` and over a
simulated strong conditioner at sigma = 0.5, 1 and 2 % of the longest side; then the grid
ratio and plane-texture leakage on the photos. Prints the tables, the gates, and last the
number of gates passed. See training/plug_and_play.py for the protocol.

    python bench/plug_and_play.py [--model PATH|guided] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="refiner folder, 'guided', or the embedded model (default)")
    ap.add_argument("--real", default=os.environ.get("BETTERDEPTH_REAL_DATA", str(ROOT.parent / "shared/data/real")))
    ap.add_argument("--json", default=None, help="also write the scores here")
    ap.add_argument("--halves", default="dev,report", help="halves to print (all are scored)")
    ap.add_argument("--datasets", default="middlebury,nyuv2")
    ap.add_argument("--no-artefacts", action="store_true", help="skip the grid and leakage figures (faster)")
    a = ap.parse_args()

    import torch

    from betterdepth_cli.core.refiner import load_model
    from training import plug_and_play as pp

    real = Path(a.real)
    if not (real / "middlebury2005").is_dir():
        print(f"plug_and_play: no real data under {real} (set --real or BETTERDEPTH_REAL_DATA)", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    model = load_model(a.model)
    photos = sorted((real / "photos").glob("*.*"))
    photos += [real / "middlebury2005" / s / "view1.png" for s in pp.SPLITS["middlebury"]["report"]]
    photos += [real / "nyuv2" / f"{s}.png" for s in pp.SPLITS["nyuv2"]["report"]]
    scores = pp.measure(model, real, datasets=a.datasets.split(","), photos=[] if a.no_artefacts else photos)
    print(f"model: {model.card.get('source')}; {scores.seconds:.0f} s")
    print("\n".join(pp.render(scores, a.halves.split(","))))
    results = pp.gates(scores) if not a.no_artefacts and a.datasets == "middlebury,nyuv2" else []
    print()
    for ok, line in results:
        print(("PASS " if ok else "FAIL ") + line)
    if a.json:
        Path(a.json).write_text(json.dumps(pp.to_json(scores), indent=2) + "\n")
    print(f"gates passed: {sum(ok for ok, _ in results)}/{len(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
