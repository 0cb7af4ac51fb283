"""What ``bench/reproduce.py`` runs: budgets, the experiment planner, run names and recipe overrides.

Pure functions: :func:`plan_experiment` / :func:`plan` (which refiners to train and
which evaluations to run, with which flags), :func:`make_run` (a run named by the
settings that differ from the paper's), :func:`run_overrides` (a run as overrides of
training/recipes/reproduce-refiner.toml).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[2]
RESULTS_FORMAT = "betterdepth-reproduce/1"
EXPERIMENTS = ("ablation", "plug", "steps", "size", "hparams")
DATASETS = ("synthetic", "middlebury", "nyuv2")
METRICS = ("abs_rel", "delta1", "dbe_comp", "dbe_acc", "ep", "er")


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    """How much compute each experiment gets.

    steps: optimizer steps of every refiner run (batch ``batch_size``);
    hparam_steps: steps of the w / eta sweep (the reference is retrained at this
    budget when it differs); sizes: training-set sizes (``None`` = all scenes);
    eval_samples: held-out synthetic scenes per evaluation (the real sets are
    used whole); eval_steps / eval_ensemble: the inference setting of the tables;
    fig7_*: the steps and ensemble sweep; cond_*: the DPT conditioner;
    replicate_seed: a second training seed for the ablation's first and last rows
    (how far seed noise alone moves the numbers).
    """

    mode: str
    steps: int
    batch_size: int = 8
    hparam_steps: int = 0  # 0 = steps
    sizes: tuple = (100, 400, None)
    eval_samples: int = 16
    eval_steps: int = 10
    eval_ensemble: int = 1
    fig7_steps: tuple = (1, 2, 4, 10, 50)
    fig7_ensembles: tuple = (1, 3, 10)
    fig7_ensemble_steps: int = 10
    fig7_samples: int = 8
    patch_sizes: tuple = (8, 16, 32)
    etas: tuple = (0.05, 0.1, 0.2)
    cond_steps: int = 300
    cond_scenes: int = 400
    replicate_seed: int | None = 1  # the ablation's end points retrained with this seed (None: no replicate)

    @property
    def hsteps(self) -> int:
        return self.hparam_steps or self.steps


BUDGETS = {
    "quick": Budget(mode="quick", steps=150, hparam_steps=150, eval_samples=16, fig7_samples=8,
                    cond_steps=300, cond_scenes=400),
    "full": Budget(mode="full", steps=2000, hparam_steps=1000, eval_samples=200, fig7_samples=50,
                   cond_steps=1500, cond_scenes=2000),
    # a few steps of everything: checks the plumbing (minutes), numbers meaningless
    "smoke": Budget(mode="smoke", steps=4, batch_size=2, hparam_steps=4, sizes=(4, None), eval_samples=2,
                    eval_steps=1, fig7_steps=(1, 2), fig7_ensembles=(1, 2), fig7_ensemble_steps=1, fig7_samples=2,
                    patch_sizes=(8, 16), etas=(0.1, 0.2), cond_steps=4, cond_scenes=8),
}


# --------------------------------------------------------------------------- planner


@dataclass(frozen=True)
class RunSpec:
    """One refiner training run: the objective's switches, the data size and the budget."""

    name: str
    depth_conditioning: bool = True
    prealign: bool = True
    patch_mask: bool = True
    patch_size: int = 8
    eta: float = 0.1
    train_size: int | None = None  # None: every training scene
    steps: int = 0
    seed: int = 0

    def flags(self) -> dict[str, Any]:
        return {"depth_conditioning": self.depth_conditioning, "prealign": self.prealign,
                "patch_mask": self.patch_mask, "patch_size": self.patch_size, "eta": self.eta}


def make_run(budget: Budget, *, depth_conditioning: bool = True, prealign: bool = True, patch_mask: bool = True,
             patch_size: int = 8, eta: float = 0.1, train_size: int | None = None, steps: int | None = None,
             seed: int = 0) -> RunSpec:
    """A :class:`RunSpec` whose name spells every setting that differs from the paper's
    (``full``: conditioning + pre-alignment + patch masking, w = 8, eta = 0.1, all data,
    ``budget.steps``), so identical runs of different experiments share one model.

    Without depth conditioning there is nothing to pre-align or mask: those flags are off.
    """
    steps = budget.steps if steps is None else int(steps)
    if not depth_conditioning:
        prealign = patch_mask = False
    if not patch_mask:  # w and eta only matter to the mask
        patch_size, eta = 8, 0.1
    if not depth_conditioning:
        base = "nocond"
    elif prealign and patch_mask:
        base = "full"
    elif prealign:
        base = "cond-prealign"
    elif patch_mask:
        base = "cond-mask"
    else:
        base = "cond"
    parts = [base]
    if patch_size != 8:
        parts.append(f"w{patch_size}")
    if eta != 0.1:
        parts.append(f"eta{eta:g}")
    if train_size is not None:
        parts.append(f"n{train_size}")
    if steps != budget.steps:
        parts.append(f"s{steps}")
    if seed != 0:
        parts.append(f"seed{seed}")
    return RunSpec("-".join(parts), depth_conditioning, prealign, patch_mask, int(patch_size), float(eta),
                   train_size, steps, int(seed))


#: The refiner that ships in the package (training/recipes/default-refiner-guided.toml), evaluated, not trained here.
SHIPPED = RunSpec("shipped", steps=0)


@functools.lru_cache(maxsize=1)
def shipped_defaults() -> tuple[int, int]:
    """(steps, ensemble) the package's default refiner runs at: its card's defaults, resolved (read once:
    the plan, the report's rows and the claim all ask)."""
    import json

    from betterdepth_cli.core.refiner import default_model_path
    from betterdepth_cli.core.settings import resolve_settings

    run = resolve_settings(json.loads((default_model_path() / "betterdepth.json").read_text()))
    return run.steps, run.ensemble


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation: a refiner run over a conditioner on a dataset at one inference setting.

    conditioner: ``main``, ``dpt`` or ``classical`` (resolved to a spec by the script).
    limit: samples (``None`` = the whole set).
    """

    run: str
    conditioner: str
    dataset: str
    steps: int
    ensemble: int = 1
    reduction: str = "mean"
    limit: int | None = None

    @property
    def key(self) -> str:
        n = "all" if self.limit is None else str(self.limit)
        return f"{self.run}__{self.conditioner}__{self.dataset}__s{self.steps}-e{self.ensemble}-{self.reduction}__n{n}"


def _limit(budget: Budget, dataset: str, fig7: bool = False) -> int | None:
    if dataset != "synthetic":
        return None
    return budget.fig7_samples if fig7 else budget.eval_samples


def _standard_evals(run: RunSpec, budget: Budget, datasets: Iterable[str], conditioner: str = "main") -> list[EvalSpec]:
    return [EvalSpec(run.name, conditioner, d, budget.eval_steps, budget.eval_ensemble, "mean", _limit(budget, d))
            for d in datasets]


def plan_experiment(name: str, budget: Budget, datasets: Iterable[str] = DATASETS) -> dict[str, Any]:
    """Runs, evaluations and extra conditioners of one experiment.

    Returns ``{"runs": [RunSpec], "evals": [EvalSpec], "needs": [conditioner names], "rows": {label: run}}``;
    ``rows`` maps the table's row labels to run names, in table order; the ablation adds
    ``replicates`` (label -> run) for its seed replicate.
    """
    datasets = list(datasets)
    full = make_run(budget)
    if name == "ablation":
        runs = [make_run(budget, depth_conditioning=False),
                make_run(budget, prealign=False, patch_mask=False),
                make_run(budget, patch_mask=False),
                full]
        labels = ["no depth conditioning (Marigold-style)", "+ depth conditioning", "+ global pre-alignment",
                  "+ local patch masking (full)"]
        replicates = {}
        if budget.replicate_seed is not None:
            seed = budget.replicate_seed
            extra = [make_run(budget, depth_conditioning=False, seed=seed), make_run(budget, seed=seed)]
            replicates = {f"{labels[0]}, seed {seed}": extra[0].name, f"{labels[-1]}, seed {seed}": extra[1].name}
            runs = runs + extra
        evals = [e for r in runs for e in _standard_evals(r, budget, datasets)]
        return {"runs": runs, "evals": evals, "needs": [], "rows": dict(zip(labels, [r.name for r in runs])),
                "replicates": replicates}
    if name == "plug":
        conds = ["main", "dpt", "classical"]
        evals = [e for c in conds for e in _standard_evals(full, budget, datasets, c)]
        # the shipped default refiner (its own recipe, not trained here) over the same conditioners, at its card's
        # steps and ensemble (1 step; 2 members, the photo and its mirror image)
        steps, members = shipped_defaults()
        evals += [EvalSpec(SHIPPED.name, c, d, steps, members, "mean", _limit(budget, d)) for c in conds for d in datasets]
        return {"runs": [full, SHIPPED], "evals": evals, "needs": ["dpt", "classical"],
                "rows": {c: full.name for c in conds}, "shipped": {c: SHIPPED.name for c in conds}}
    if name == "steps":
        evals = []
        for d in datasets:
            lim = _limit(budget, d, fig7=True)
            for s in budget.fig7_steps:
                evals.append(EvalSpec(full.name, "main", d, s, 1, "mean", lim))
            for e in budget.fig7_ensembles:
                for red in (("mean",) if e == 1 else ("mean", "median")):
                    spec = EvalSpec(full.name, "main", d, budget.fig7_ensemble_steps, e, red, lim)
                    if spec not in evals:
                        evals.append(spec)
        return {"runs": [full], "evals": evals, "needs": [], "rows": {"full": full.name}}
    if name == "size":
        runs = [make_run(budget, train_size=n) for n in budget.sizes]
        labels = [f"{n} scenes" if n is not None else "all scenes" for n in budget.sizes]
        evals = [e for r in runs for e in _standard_evals(r, budget, datasets)]
        return {"runs": runs, "evals": evals, "needs": [], "rows": dict(zip(labels, [r.name for r in runs]))}
    if name == "hparams":
        runs, labels = [], []
        for w in budget.patch_sizes:
            runs.append(make_run(budget, patch_size=w, steps=budget.hsteps))
            labels.append(f"w = {w}, eta = 0.1")
        for eta in budget.etas:
            if eta == 0.1:
                continue  # the w = 8 row above
            runs.append(make_run(budget, eta=eta, steps=budget.hsteps))
            labels.append(f"w = 8, eta = {eta:g}")
        evals = [e for r in runs for e in _standard_evals(r, budget, datasets)]
        return {"runs": runs, "evals": evals, "needs": [], "rows": dict(zip(labels, [r.name for r in runs]))}
    raise ValueError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")


def plan(experiments: Iterable[str], budget: Budget, datasets: Iterable[str] = DATASETS) -> dict[str, Any]:
    """Every experiment's plan plus the union of their runs and evaluations, each once, in first-use order."""
    experiments = list(experiments)
    per = {name: plan_experiment(name, budget, datasets) for name in experiments}
    runs: dict[str, RunSpec] = {}
    evals: dict[str, EvalSpec] = {}
    needs: list[str] = []
    for p in per.values():
        for r in p["runs"]:
            if r.name in runs and runs[r.name] != r:
                raise AssertionError(f"two different runs named {r.name}")  # a bug in make_run, not user input
            runs.setdefault(r.name, r)
        for e in p["evals"]:
            evals.setdefault(e.key, e)
        needs += [n for n in p["needs"] if n not in needs]
    return {"experiments": per, "runs": list(runs.values()), "evals": list(evals.values()), "needs": needs}


def parse_only(text: str | None) -> list[str]:
    """``--only ablation,plug`` -> the experiments in canonical order; errors name the bad one."""
    if not text:
        return list(EXPERIMENTS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad or not names:
        raise ValueError(f"--only: unknown experiment {bad[0] if bad else text!r}; "
                         f"choose from {', '.join(EXPERIMENTS)}")
    return [e for e in EXPERIMENTS if e in names]


def run_overrides(run: RunSpec, budget: Budget, *, train_root: str, conditioner: str, cache_dir: str,
                  train_ids: list[str] | None = None) -> dict[str, Any]:
    """Recipe overrides (``training.config.apply_overrides``) that turn reproduce-refiner.toml into ``run``.

    ``train_ids``: the scene ids of the training folder, sorted; the first
    ``run.train_size`` are used when the run asks for a subset.
    """
    spec: dict[str, Any] = {"type": "folder", "root": str(train_root)}
    if run.train_size is not None:
        if train_ids is None or len(train_ids) < run.train_size:
            have = "unknown" if train_ids is None else len(train_ids)
            raise ValueError(f"run {run.name}: needs {run.train_size} training scenes, {train_root} has {have}")
        spec["ids"] = list(train_ids[: run.train_size])
    return {
        "name": f"reproduce-{run.name}",
        "conditioner.name": conditioner,
        "data.datasets": [spec],
        "data.cache_dir": str(cache_dir),
        "train.max_steps": run.steps,
        "train.seed": run.seed,
        "train.batch_size": budget.batch_size,
        "train.checkpoint_every": max(50, run.steps // 4),
        "optim.warmup_steps": min(100, max(1, run.steps // 10)),
        "objective.depth_conditioning": run.depth_conditioning,
        "objective.prealign": run.prealign,
        "objective.patch_mask": run.patch_mask,
        "objective.patch_size": run.patch_size,
        "objective.eta": run.eta,
        "validation.datasets": [],
        "validation.synthetic": {},
    }
