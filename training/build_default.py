"""Rebuild the embedded default model from scratch on 2 CPU cores.

    python -m training.build_default [--root .] [--install]

Runs, skipping every stage whose output already exists (so an interrupted
build resumes; each training stage also resumes from its checkpoints):

1. procedural data: ``betterdepth synth`` -> data/synth-train (3000 scenes,
   192 px, seeds 0..2999) and data/synth-val (200 scenes, seeds 1000000..);
2. the ``builtin`` conditioner: ``python -m training.conditioner`` with
   training/recipes/default-conditioner.toml -> runs/default-conditioner/final;
3. the refiner, stage 1 (the paper's diffusion objective):
   ``betterdepth train --recipe training/recipes/default-refiner.toml``;
4. the refiner, stage 2 (end-to-end fine-tuning):
   ``betterdepth train --recipe training/recipes/default-refiner-e2e.toml``;
5. the refiner, stage 3 (end-to-end fine-tuning under a wider patch mask, eta 0.5):
   ``betterdepth train --recipe training/recipes/default-refiner-wide.toml``;
6. the refiner, stage 4 (a long end-to-end fine-tuning without the patch mask, 16000 steps):
   ``betterdepth train --recipe training/recipes/default-refiner-long.toml``;
7. with ``--install``: copies the conditioner and the stage-4 refiner into
   betterdepth_cli/weights/ and measures the model card's metrics
   (``python -m training.model_card``).

Stages 3-6 need the conditioner installed as ``builtin`` first; the script
installs it after stage 2. Every command is printed before it runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

WEIGHTS = Path(__file__).resolve().parents[1] / "betterdepth_cli" / "weights"
# the refiner's training stages in order, each initialised from the one before; the last one ships
REFINER_STAGES = ("default-refiner", "default-refiner-e2e", "default-refiner-wide", "default-refiner-long")


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

    for name, n, seed in (("synth-train", 3000, 0), ("synth-val", 200, 1_000_000)):
        if not (root / "data" / name / "dataset.toml").exists() or len(list((root / "data" / name / "rgb").glob("*.png"))) < n:
            run(bd + ["synth", "-n", str(n), "--seed", str(seed), "--size", "192", "-o", str(root / "data" / name)], root)

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
