"""Rebuild the embedded default model from scratch on 2 CPU cores.

    python -m training.build_default [--root .] [--install]

Runs, skipping every stage whose output already exists (so an interrupted
build resumes; each training stage also resumes from its checkpoints):

1. procedural data: ``betterdepth synth`` -> data/synth-train (3000 scenes,
   192 px, seeds 0..2999) and data/synth-val (200 scenes, seeds 1000000..) for
   the conditioner; data/synth384-train (1200 scenes, 384 x 288, 3 x 3 rays per
   pixel, seeds 0..1199) and data/synth384-val (100 scenes, seeds 1000000..) for
   the refiner;
2. the ``builtin`` conditioner: ``python -m training.conditioner`` with
   training/recipes/default-conditioner.toml -> runs/default-conditioner/final,
   installed as ``builtin`` (the refiner trains on its predictions for a quarter
   of its samples);
3. the refiner: ``betterdepth train --recipe training/recipes/default-refiner-guided.toml``
   (a residual refiner over the guided-filtered conditioning, from scratch; about
   an hour on 2 CPU cores);
4. with ``--install``: copies it into betterdepth_cli/weights/ and measures the
   model card (``python -m training.model_card``).

The refiner shipped before 2026-12-06 (four stages: default-refiner, -e2e, -wide,
-long; their recipes stay in training/recipes/) made good depth worse (issue 18)
and is no longer built. Every command is printed before it runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "betterdepth_cli" / "weights"
# the refiner's training stages in order, each initialised from the one before; the last one ships
REFINER_STAGES = ("default-refiner-guided",)
#: (folder, scenes, first seed, size, rays per pixel side)
DATA = (("synth-train", 3000, 0, "192", 1), ("synth-val", 200, 1_000_000, "192", 1),
        ("synth384-train", 1200, 0, "384x288", 3), ("synth384-val", 100, 1_000_000, "384x288", 3))


def run(cmd: list[str], cwd: Path) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def install_conditioner(src: Path) -> None:
    dst = WEIGHTS / "conditioner"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy2(src / name, dst / name)


def install_refiner(src: Path) -> None:
    dst = WEIGHTS / "refiner"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Rebuild the embedded default model")
    ap.add_argument("--root", default=".", help="working folder for data/ and runs/ (default: .)")
    ap.add_argument("--install", action="store_true", help="copy the results into betterdepth_cli/weights/")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    repo = Path(__file__).resolve().parents[1]
    py = sys.executable
    bd = [py, "-m", "betterdepth_cli"]

    for name, n, seed, size, rays in DATA:
        if not (root / "data" / name / "dataset.toml").exists() or len(list((root / "data" / name / "rgb").glob("*.png"))) < n:
            run(bd + ["synth", "-n", str(n), "--seed", str(seed), "--size", size, "--supersample", str(rays),
                      "--workers", "2", "-o", str(root / "data" / name)], root)

    cond = root / "runs" / "default-conditioner"
    if not (cond / "final" / "config.json").exists():
        run([py, "-m", "training.conditioner", "--recipe", str(repo / "training/recipes/default-conditioner.toml"),
             "--output", str(cond), "--resume"], root)
    install_conditioner(cond / "final")

    for stage in REFINER_STAGES:
        out = root / "runs" / stage
        if not (out / "model" / "betterdepth.json").exists():
            run(bd + ["train", "--recipe", str(repo / f"training/recipes/{stage}.toml"), "--output", str(out),
                      "--resume"], root)

    if args.install:
        install_refiner(root / "runs" / REFINER_STAGES[-1] / "model")
        run([py, "-m", "training.model_card", "--data-root", str(root / "data")], root)


if __name__ == "__main__":
    main()
