"""The paper's claims reproduced in miniature with the project's own train and eval (issue 8).

    python bench/reproduce.py [--quick] [--out runs/reproduce-<mode>] [--only ablation,plug,steps,size,hparams]
                              [--conditioner NAME] [--threads N]
    python bench/reproduce.py --report-only [--results runs/reproduce-full/results.json] [--report docs/RESULTS.md]

Experiments (each a function of the budget, planned by ``training.reproduce.plan``):

- ``ablation`` (paper Table 5): four refiners with the same budget, seed and
  data: no depth conditioning (Marigold-style), + depth conditioning,
  + global pre-alignment, + local patch masking (the full objective);
- ``plug`` (Table 3): the full refiner, unchanged, over conditioners it never
  saw: a small DPT (another architecture) trained here on indoor-only scenes
  of another seed range, and a classical one, the ground-truth disparity
  blurred and affinely distorted (``file:`` maps);
- ``steps`` (Fig. 7): 1, 2, 4, 10, 50 DDIM steps; ensembles of 1, 3, 10 with
  mean and median reduction; seconds per image;
- ``size`` (Table 2): the full recipe on 100, 400 and all training scenes;
- ``hparams`` (Appendix F): w in {8, 16, 32}, eta in {0.05, 0.1, 0.2}.

Every model is evaluated with ``betterdepth eval``'s runner (compare mode: the
conditioner alone and refined from one pass) on held-out synthetic scenes
(``data/synth-val``, seeds 1000000+, never used in training) and on the real
Middlebury 2005 and NYUv2 samples (``../shared/data/real`` or
``$BETTERDEPTH_REAL_DATA``; skipped when absent): AbsRel, delta1, DBE_comp,
DBE_acc, EP, ER and seconds per image.

Resumable: a run whose ``model/`` exists is skipped, an interrupted one resumes
from its newest checkpoint, an evaluation whose JSON exists (for the same
model file) is read back. Outputs under ``--out``: ``runs/<name>/`` (one
training run each), ``evals/<key>.json``, ``<experiment>.json``,
``results.json`` (command, commit, budgets, machine, every experiment) and
``reproduce.log``; the report goes to ``--report`` (docs/RESULTS.md), keeping
its hand-written discussion block.

Budgets (``training.reproduce.plan.BUDGETS``): ``--quick`` trains 12 refiners of 150
steps (batch 8; the ablation's end points twice, seeds 0 and 1) and a 300-step
DPT, and evaluates on 16 synthetic scenes: 17 minutes measured on this 2-core
machine with one torch thread under nice (docs/results/quick.json). The full
mode trains 8 refiners of 2000 steps and 5 of 1000 (the w / eta sweep) and a
1500-step DPT, and evaluates on 200 synthetic scenes: about 2 to 3 hours on 2
idle cores, estimated from the quick run's step and image times (a background
run; it resumes where it stopped). ``--smoke`` runs a few steps of everything
(about a minute) to check the plumbing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.reproduce.plan import EXPERIMENTS, ROOT  # noqa: E402
from training.reproduce.runner import Options, main as reproduce  # noqa: E402


def parse_args(argv: list[str]) -> Options:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--quick", action="store_true", help="the small budget (about 17 min on this 2-core machine)")
    ap.add_argument("--smoke", action="store_true", help="a few steps of everything (checks the plumbing)")
    ap.add_argument("--out", default=None, help="output folder, resumable (default runs/reproduce-<mode>)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(EXPERIMENTS)}")
    ap.add_argument("--conditioner", default="builtin", help="the main conditioner (any --conditioner name)")
    ap.add_argument("--train-root", default=str(ROOT / "data" / "synth-train"), help="training scenes (folder format)")
    ap.add_argument("--val-root", default=str(ROOT / "data" / "synth-val"), help="held-out scenes (folder format)")
    ap.add_argument("--real-data", default=None,
                    help="real samples (default $BETTERDEPTH_REAL_DATA or ../shared/data/real)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: $OMP_NUM_THREADS or torch's default)")
    ap.add_argument("--report", default=None,
                    help="Markdown report to (re)write (default docs/RESULTS.md; OUT/RESULTS.md with --smoke); "
                         "'' = none")
    ap.add_argument("--report-only", action="store_true", help="only render --report from --results")
    ap.add_argument("--results", default=None, help="results JSON for --report-only (default OUT/results.json)")
    return Options(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return reproduce(parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
