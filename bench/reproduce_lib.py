"""The pieces of ``bench/reproduce.py``: budgets, the experiment planner, the
classical conditioner, the DPT conditioner trainer, cached evaluations and the
report renderer.

Everything the tests touch is a pure function: :func:`plan_experiment` /
:func:`plan` (which refiners to train and which evaluations to run, with which
flags), :func:`run_overrides` (a run as recipe overrides), :func:`blur_affine`
(the classical conditioner), :func:`claims` and :func:`render_report` (the
Markdown tables and verdicts from the results JSON).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS_FORMAT = "betterdepth-reproduce/1"
EXPERIMENTS = ("ablation", "plug", "steps", "size", "hparams")
DATASETS = ("synthetic", "middlebury", "nyuv2")
METRICS = ("abs_rel", "delta1", "dbe_comp", "dbe_acc", "ep", "er")
HIGHER_IS_BETTER = frozenset({"delta1", "ep", "er"})
PERCENT = frozenset({"abs_rel", "delta1", "ep", "er"})
METRIC_HEADERS = {
    "abs_rel": "AbsRel % ↓", "delta1": "δ1 % ↑", "dbe_comp": "DBE_comp px ↓", "dbe_acc": "DBE_acc px ↓",
    "ep": "EP % ↑", "er": "ER % ↑",
}
DATASET_TITLES = {
    "synthetic": "held-out synthetic scenes",
    "middlebury": "Middlebury 2005 (real)",
    "nyuv2": "NYUv2 (real)",
}
CONDITIONER_TITLES = {
    "main": "main conditioner",
    "dpt": "DPT, indoor-only (never seen by the refiner)",
    "classical": "classical: GT blurred + affine",
}
DISCUSSION_START = "<!-- discussion:start (hand-written; kept when the report is re-rendered) -->"
DISCUSSION_END = "<!-- discussion:end -->"

#: The paper's numbers the experiments are compared with (docs/PAPER.md).
PAPER = {
    "ablation_nyuv2_abs_rel": {"nocond": 6.1, "cond": 5.2, "cond-prealign": 4.7, "full": 4.2},
    "ablation_kitti_abs_rel": {"nocond": 9.1, "cond": 8.6, "cond-prealign": 7.9, "full": 7.5},
    "size_nyuv2": {"400": (4.6, 97.9), "2K": (4.4, 97.9), "74K": (4.2, 98.0)},
    "plug_nyuv2": {"MiDaS": ((9.5, 91.5), (8.4, 93.4)), "DPT": ((9.1, 91.9), (7.9, 93.7))},
}


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
        # the shipped default refiner (its own recipe, not trained here) over the same conditioners, at its card's 1 step
        evals += [EvalSpec(SHIPPED.name, c, d, 1, 1, "mean", _limit(budget, d)) for c in conds for d in datasets]
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


# --------------------------------------------------------------------------- classical conditioner


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """(H,W) float map blurred by a Gaussian of ``sigma`` px (reflected borders); ``sigma`` 0 = a copy."""
    import cv2

    x = np.asarray(x, np.float32)
    if sigma <= 0:
        return x.copy()
    return cv2.GaussianBlur(x, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def blur_affine(disparity: np.ndarray, known: np.ndarray, sigma: float, scale: float, shift: float,
                fill: str = "inpaint") -> np.ndarray:
    """The classical conditioner: ground-truth disparity, blurred, then ``scale * d + shift``.

    Args:
        disparity: (H,W) ground-truth disparity (inverse depth); only ``known`` pixels are read.
        known: (H,W) bool, where the ground truth exists.
        sigma: Gaussian blur in pixels (0 = none): it removes the fine detail the refiner must restore.
        scale, shift: the affine distortion (the scale must be positive: larger stays nearer).
        fill: unknown pixels before blurring: ``zero`` (disparity 0, the sky of synthetic scenes)
            or ``inpaint`` (a normalised convolution of the known pixels: holes of real ground truth).
    Returns:
        (H,W) float32 map, finite everywhere.
    """
    if scale <= 0:
        raise ValueError(f"`scale` must be > 0, got {scale}")
    if fill not in ("zero", "inpaint"):
        raise ValueError(f"`fill` must be 'zero' or 'inpaint', got {fill!r}")
    d = np.asarray(disparity, np.float64)
    k = np.asarray(known, bool) & np.isfinite(d)
    if d.shape != k.shape or d.ndim != 2:
        raise ValueError(f"`disparity` and `known` must be (H,W) of one shape, got {d.shape} and {k.shape}")
    base = np.where(k, d, 0.0)
    if fill == "inpaint" and not k.all():
        h, w = d.shape
        big = max(4.0 * sigma, 0.05 * max(h, w))
        num = gaussian_blur(base.astype(np.float32), big).astype(np.float64)
        den = gaussian_blur(k.astype(np.float32), big).astype(np.float64)
        fallback = float(np.median(d[k])) if k.any() else 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            filled = np.where(den > 1e-6, num / den, fallback)
        base = np.where(k, d, filled)
    blurred = gaussian_blur(base.astype(np.float32), sigma).astype(np.float64)
    return (scale * blurred + shift).astype(np.float32)


@dataclass(frozen=True)
class ClassicalSettings:
    """sigma = ``sigma_frac`` x the image's longest side; shift = ``shift_frac`` x the median known disparity."""

    sigma_frac: float = 0.02
    scale: float = 0.5
    shift_frac: float = 0.25


def write_classical_maps(samples: Iterable, out_dir: Path, settings: ClassicalSettings, fill: str) -> dict[str, Any]:
    """Write ``out_dir/<sample id>.npy`` (the ``file:`` conditioner's layout) for evaluation samples.

    ``samples``: :class:`betterdepth_cli.evaluation.datasets.Sample` objects (their
    ``depth()`` and known ground truth, not the evaluation crop). Returns a summary.
    """
    from betterdepth_cli.io.outputs import write_npy

    out_dir.mkdir(parents=True, exist_ok=True)
    n, sigmas = 0, []
    for s in samples:
        depth = s.depth().astype(np.float64)
        known = np.isfinite(depth) & (depth > 0)
        disp = np.where(known, 1.0 / np.where(known, depth, 1.0), 0.0)
        sigma = settings.sigma_frac * max(depth.shape)
        shift = settings.shift_frac * (float(np.median(disp[known])) if known.any() else 1.0)
        m = blur_affine(disp, known, sigma, settings.scale, shift, fill=fill)
        path = out_dir / f"{s.id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npy(path, m)
        n += 1
        sigmas.append(sigma)
    return {"samples": n, "sigma_px": [round(min(sigmas), 2), round(max(sigmas), 2)] if sigmas else None,
            "fill": fill, **asdict(settings)}


# --------------------------------------------------------------------------- DPT conditioner


def dpt_processor(input_size: int):
    """The processor saved with the DPT conditioner: a square resize like Intel/dpt-large's
    (transformers' plain-ViT DPT only takes square inputs), ImageNet mean/std as in its training."""
    from training.conditioner import build_processor

    return build_processor(input_size, patch_size=1, keep_aspect_ratio=False)


def build_dpt(cfg: dict):
    """A DPTForDepthEstimation (ViT backbone, DPT head) from the recipe's [model] table."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation

    from training.conditioner import final_conv

    n = int(cfg["num_hidden_layers"])

    model = DPTForDepthEstimation(DPTConfig(
        image_size=int(cfg["image_size"]), patch_size=int(cfg["patch_size"]), hidden_size=int(cfg["hidden_size"]),
        num_hidden_layers=n, num_attention_heads=int(cfg["num_attention_heads"]),
        intermediate_size=int(cfg["intermediate_size"]), backbone_out_indices=list(range(n))[-4:],
        neck_hidden_sizes=list(cfg["neck_hidden_sizes"]), fusion_hidden_size=int(cfg["fusion_hidden_size"]),
        head_in_index=-1, readout_type="project",
    ))
    with torch.no_grad():  # start the final ReLU in its linear range, as training.conditioner does
        final_conv(model).bias.fill_(1.0)
    return model


def train_dpt_conditioner(recipe: dict, train_root: Path, val_root: Path | None, output: Path,
                          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the plug-and-play DPT with ``training.conditioner``'s SSI disparity loss; save ``output/final``.

    Skips training when ``output/final/config.json`` exists (the summary is read back).
    Returns ``{"path", "steps", "seconds", "val": {abs_rel, delta1, ...}}``.
    """
    import torch

    from training.conditioner import (capture_pre_activation, evaluate, final_conv, load_split, make_optimizer,
                                      random_batch, train_step)

    final = output / "final"
    summary_path = output / "summary.json"
    if (final / "config.json").exists() and summary_path.exists():
        return json.loads(summary_path.read_text())
    mc, tr, dc = recipe["model"], recipe["train"], recipe["data"]
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(tr["seed"]))
    model = build_dpt(mc)
    total = int(tr["steps"])
    opt, sched = make_optimizer(model, float(tr["lr"]), float(tr["weight_decay"]), int(tr["warmup"]), total)
    g = torch.Generator().manual_seed(int(tr["seed"]))
    data = load_split(str(train_root))
    size = int(mc["image_size"])
    log(f"DPT conditioner: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, {len(data[0])} "
        f"{dc.get('kind', '')} scenes, {total} steps")
    # as training.conditioner: train on the final ReLU's input and keep it positive (a dead ReLU never recovers)
    captured = capture_pre_activation(final_conv(model))
    t0 = time.perf_counter()
    losses = []
    model.train()
    for step in range(1, total + 1):
        batch = random_batch(data, int(tr["batch_size"]), int(dc["crop"]), g)
        loss = train_step(model, opt, sched, captured, batch, size)
        losses.append(float(loss.detach()))
        if step % int(tr.get("log_every", 50)) == 0 or step == total:
            log(f"DPT conditioner step {step}/{total} loss {np.mean(losses[-50:]):.4f}")
    seconds = time.perf_counter() - t0
    val = evaluate(model, load_split(str(val_root)), size) if val_root is not None else None
    model.eval()
    tmp = output / ".final.tmp"
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    dpt_processor(size).save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    summary = {"path": str(final), "architecture": "DPTForDepthEstimation", "steps": total,
               "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
               "seconds": round(seconds, 1), "final_loss": float(np.mean(losses[-50:])), "val_synthetic_mixed": val,
               "data": {k: dc[k] for k in ("kind", "scenes", "seed0", "size") if k in dc}}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# --------------------------------------------------------------------------- runs and evaluations


def run_summary(run_dir: Path, run: RunSpec) -> dict[str, Any]:
    """What a finished run's ``metrics.jsonl`` says: final loss, kept share of latent cells, seconds."""
    rows = []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get("type") == "train":
                    rows.append(rec)
    tail = rows[-max(1, len(rows) // 5):] if rows else []
    card_path = run_dir / "model" / "betterdepth.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return {
        "name": run.name, **run.flags(), "train_size": run.train_size, "steps": run.steps, "seed": run.seed,
        "logged_steps": len(rows),
        "train_seconds": round(sum(r.get("seconds", 0.0) for r in rows), 1),
        "seconds_per_step": round(float(np.median([r["seconds"] for r in rows])), 4) if rows else None,
        "final_loss": float(np.mean([r["loss"] for r in tail])) if tail else None,
        "kept": float(np.mean([r.get("kept", 1.0) for r in rows])) if rows else None,
        "conditioner": (card.get("trained_with") or {}).get("conditioner"),
        "model": str(run_dir / "model"),
    }


def summarize_eval(result, spec: EvalSpec) -> dict[str, Any]:
    """The compact record of one evaluation (an ``EvalResult``) kept in the experiment JSON."""
    data = result.to_json()
    spi = data["seconds_per_image"]
    per_image: dict[str, Any] = {"ids": []}  # one row per sample and variant, samples in order
    for row in result.rows:
        if row["id"] not in per_image["ids"]:
            per_image["ids"].append(row["id"])
        v = per_image.setdefault(row["variant"], {m: [] for m in METRICS})
        for m in METRICS:
            v[m].append(row.get(m))
    refine_s = sum(spi.get(k, 0.0) or 0.0 for k in ("encode", "sample", "decode"))
    return {
        **asdict(spec), "key": spec.key,
        "samples": data["samples"],
        "metrics": data["metrics"],  # {"conditioner": {...}, "refined": {...}}
        "counts": data["counts"],
        "seconds_per_image": {"conditioner": spi.get("conditioner"), "refiner": refine_s,
                              "refined_total": (spi.get("conditioner") or 0.0) + refine_s,
                              "stages": spi},
        "settings": data["settings"],
        "conditioner_info": data["conditioner"],
        "wall_seconds": data["wall_seconds"],
        "per_image": jsonable(per_image),  # {"ids", "conditioner": {metric: [...]}, "refined": {...}}
    }


# --------------------------------------------------------------------------- report


def _fmt(metric: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    v = float(value)
    return f"{100 * v:.2f}" if metric in PERCENT else f"{v:.2f}"


def _secs(value: Any) -> str:
    if value is None:
        return "–"
    v = float(value)
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _index(evals: list[dict]) -> dict[tuple, dict]:
    return {(e["run"], e["conditioner"], e["dataset"], e["steps"], e["ensemble"], e["reduction"]): e for e in evals}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _metric_cells(metrics: dict | None) -> list[str]:
    return [_fmt(m, (metrics or {}).get(m)) for m in METRICS]


def _better(metric: str, new: float, old: float) -> bool:
    return new > old if metric in HIGHER_IS_BETTER else new < old


def _refined_abs_rel_series(exp: dict, order: list, steps, ens):
    """Per dataset of ``exp``: (dataset, evaluations of the rows in ``order``, their refined
    AbsRel), for the datasets where every row has been evaluated."""
    for d in _exp_datasets(exp):
        es = [_get(exp, r, "main", d, steps, ens) for r in order]
        vals = [(e or {}).get("metrics", {}).get("refined", {}).get("abs_rel") for e in es]
        if not any(v is None for v in vals):
            yield d, es, vals


def _exp_datasets(exp: dict) -> list[str]:
    seen = []
    for e in exp.get("evals", []):
        if e["dataset"] not in seen:
            seen.append(e["dataset"])
    return [d for d in DATASETS if d in seen]


def _std(budget: dict) -> tuple[int, int]:
    """The tables' inference setting: (steps, ensemble members)."""
    return int(budget["eval_steps"]), int(budget["eval_ensemble"])


def render_ablation(exp: dict, budget: dict) -> list[str]:
    idx = _index(exp["evals"])
    steps, ens = _std(budget)
    out = ["## Table 5: ablation of the training objective", "",
           f"Four refiners, identical budget ({budget['steps']} steps x batch {budget['batch_size']}), seeds and data; "
           f"inference {steps} DDIM step(s), ensemble {ens}. Paper: NYUv2 AbsRel "
           + " -> ".join(f"{PAPER['ablation_nyuv2_abs_rel'][k]}" for k in ("nocond", "cond", "cond-prealign", "full"))
           + " %, KITTI " + " -> ".join(f"{PAPER['ablation_kitti_abs_rel'][k]}"
                                         for k in ("nocond", "cond", "cond-prealign", "full")) + " %.", ""]
    rows_def = exp["rows"]
    for d in _exp_datasets(exp):
        out += [f"**{DATASET_TITLES[d]}**", ""]
        rows = []
        first = next((idx.get((r, "main", d, steps, ens, "mean")) for r in rows_def.values()), None)
        if first:
            rows.append(["conditioner alone", *_metric_cells(first["metrics"].get("conditioner")),
                         _secs(first["seconds_per_image"]["conditioner"]), "–"])
        for label, run in [*rows_def.items(), *exp.get("replicates", {}).items()]:
            e = idx.get((run, "main", d, steps, ens, "mean"))
            paper = PAPER["ablation_nyuv2_abs_rel"].get(run) if d == "nyuv2" else None
            rows.append([label, *_metric_cells(e["metrics"].get("refined") if e else None),
                         _secs(e["seconds_per_image"]["refined_total"]) if e else "–",
                         f"{paper}" if paper is not None else "–"])
        out += _table(["refiner", *(METRIC_HEADERS[m] for m in METRICS), "s / image", "paper AbsRel % (NYUv2)"], rows)
        out.append("")
    out += _training_table(exp, [*rows_def.values(), *exp.get("replicates", {}).values()])
    return out


def _training_table(exp: dict, names: list[str]) -> list[str]:
    runs = exp.get("runs", {})
    rows = []
    for n in names:
        r = runs.get(n)
        if not r:
            continue
        rows.append([f"`{n}`", str(r.get("seed", 0)), str(r["steps"]),
                     "all" if r["train_size"] is None else str(r["train_size"]),
                     "–" if r["final_loss"] is None else f"{r['final_loss']:.4f}",
                     "–" if r["kept"] is None else f"{100 * r['kept']:.1f}",
                     "–" if r["seconds_per_step"] is None else f"{r['seconds_per_step']:.3f}",
                     f"{r['train_seconds']:.0f}"])
    if not rows:
        return []
    return ["Training runs (loss: mean of the last fifth of the steps; kept: share of latent cells the "
            "patch mask and the GT-valid mask keep):", "",
            *_table(["run", "seed", "steps", "scenes", "final loss", "kept %", "s / step (median)", "train s"], rows),
            ""]


def render_plug(exp: dict, budget: dict, conditioners: dict) -> list[str]:
    idx = _index(exp["evals"])
    steps, ens = _std(budget)
    run = exp["rows"]["main"]
    p = PAPER["plug_nyuv2"]
    out = ["## Table 3: plug-and-play over conditioners the refiner never saw", "",
           f"The refiner `{run}` (trained with the main conditioner) applied unchanged; inference {steps} step(s), "
           f"ensemble {ens}. Paper (NYUv2 AbsRel / δ1 %): MiDaS {p['MiDaS'][0][0]} / {p['MiDaS'][0][1]} -> "
           f"{p['MiDaS'][1][0]} / {p['MiDaS'][1][1]}, DPT {p['DPT'][0][0]} / {p['DPT'][0][1]} -> "
           f"{p['DPT'][1][0]} / {p['DPT'][1][1]}.", ""]
    for name, info in conditioners.items():
        if name in exp["rows"]:
            out.append(f"- **{name}**: {CONDITIONER_TITLES.get(name, name)} — {_describe_conditioner(info)}")
    out.append("")
    for d in _exp_datasets(exp):
        out += [f"**{DATASET_TITLES[d]}**", ""]
        rows = []
        for c in exp["rows"]:
            e = idx.get((run, c, d, steps, ens, "mean"))
            if not e:
                continue
            rows.append([f"{c} alone", *_metric_cells(e["metrics"].get("conditioner")),
                         _secs(e["seconds_per_image"]["conditioner"])])
            rows.append([f"{c} + refiner", *_metric_cells(e["metrics"].get("refined")),
                         _secs(e["seconds_per_image"]["refined_total"])])
            shipped = (exp.get("shipped") or {}).get(c)
            s = idx.get((shipped, c, d, 1, 1, "mean")) if shipped else None
            if s:
                rows.append([f"{c} + guided filter", *_metric_cells(s["metrics"].get("guided")), "-"])
                rows.append([f"{c} + shipped refiner", *_metric_cells(s["metrics"].get("refined")),
                             _secs(s["seconds_per_image"]["refined_total"])])
        out += _table(["conditioner", *(METRIC_HEADERS[m] for m in METRICS), "s / image"], rows)
        out.append("")
    return out


def _describe_conditioner(info: Any) -> str:
    if not isinstance(info, dict):
        return f"`{info}`"
    parts = [f"`{info.get('spec', '')}`"]
    if info.get("architecture"):
        parts.append(f"{info['architecture']}, {info.get('params_m', '?')} M parameters")
    if info.get("steps"):
        parts.append(f"{info['steps']} training steps")
    data = info.get("data") or {}
    if data.get("kind"):
        parts.append(f"{data.get('scenes')} {data['kind']} scenes (seeds from {data.get('seed0')})")
    if info.get("sigma_frac") is not None:
        parts.append(f"blur sigma {info['sigma_frac']} x longest side, disparity x {info.get('scale')} "
                     f"+ {info.get('shift_frac')} x median")
    return ", ".join(parts)


def render_steps(exp: dict, budget: dict) -> list[str]:
    idx = _index(exp["evals"])
    run = exp["rows"]["full"]
    out = ["## Fig. 7: denoising steps and ensemble size", "",
           f"The refiner `{run}`; synthetic rows over the first {budget['fig7_samples']} held-out scenes. Paper: "
           "2 steps without ensembling are within 0.4 δ1 points of 10 members (BetterDepth; Marigold 1.2), "
           "mean ensembling slightly better than median.", ""]
    for d in _exp_datasets(exp):
        out += [f"**{DATASET_TITLES[d]}**: steps (ensemble 1)", ""]
        rows = []
        cond_row = None
        for s in budget["fig7_steps"]:
            e = idx.get((run, "main", d, s, 1, "mean"))
            if not e:
                continue
            cond_row = cond_row or e
            rows.append([str(s), *_metric_cells(e["metrics"].get("refined")),
                         _secs(e["seconds_per_image"]["refined_total"])])
        if cond_row:
            rows.insert(0, ["conditioner", *_metric_cells(cond_row["metrics"].get("conditioner")),
                            _secs(cond_row["seconds_per_image"]["conditioner"])])
        out += _table(["steps", *(METRIC_HEADERS[m] for m in METRICS), "s / image"], rows)
        out += ["", f"**{DATASET_TITLES[d]}**: ensemble ({budget['fig7_ensemble_steps']} steps)", ""]
        rows = []
        for n in budget["fig7_ensembles"]:
            for red in (("mean",) if n == 1 else ("mean", "median")):
                e = idx.get((run, "main", d, budget["fig7_ensemble_steps"], n, red))
                if e:
                    rows.append([str(n), red if n > 1 else "–", *_metric_cells(e["metrics"].get("refined")),
                                 _secs(e["seconds_per_image"]["refined_total"])])
        out += _table(["members", "reduction", *(METRIC_HEADERS[m] for m in METRICS), "s / image"], rows)
        out.append("")
    return out


def render_rows(title: str, intro: str, exp: dict, budget: dict) -> list[str]:
    idx = _index(exp["evals"])
    steps, ens = _std(budget)
    out = [title, "", intro, ""]
    for d in _exp_datasets(exp):
        out += [f"**{DATASET_TITLES[d]}**", ""]
        rows = []
        for label, run in exp["rows"].items():
            e = idx.get((run, "main", d, steps, ens, "mean"))
            if e:
                rows.append([label, *_metric_cells(e["metrics"].get("refined")),
                             _fmt("abs_rel", e["metrics"].get("conditioner", {}).get("abs_rel"))])
        out += _table(["run", *(METRIC_HEADERS[m] for m in METRICS), "conditioner AbsRel %"], rows)
        out.append("")
    out += _training_table(exp, list(exp["rows"].values()))
    return out


# ---- claims: the paper's statements checked against the numbers


def _get(exp: dict, run: str, cond: str, d: str, steps: int, ens: int, red: str = "mean") -> dict | None:
    return _index(exp["evals"]).get((run, cond, d, steps, ens, red))


def edge_f1(m: dict | None) -> float | None:
    """Harmonic mean of edge precision EP and recall ER (0 when the map has no edges)."""
    if not m or m.get("ep") is None or m.get("er") is None:
        return None
    ep, er = float(m["ep"]), float(m["er"])
    return 0.0 if ep + er <= 0 else 2 * ep * er / (ep + er)


def paired_diff(a: dict, b: dict, metric: str, va: str = "refined", vb: str = "refined") -> dict | None:
    """Per-image paired difference ``b[vb] - a[va]`` of ``metric`` over the images both evaluations scored.

    Returns ``{"mean", "se", "n", "better"}`` (``better``: images where b is better) or None
    without per-image rows or with fewer than two common images.
    """
    pa, pb = a.get("per_image"), b.get("per_image")
    if not pa or not pb or va not in pa or vb not in pb:
        return None
    xa = dict(zip(pa["ids"], pa[va][metric]))
    xb = dict(zip(pb["ids"], pb[vb][metric]))
    common = [i for i in pa["ids"] if i in xb and xa[i] is not None and xb[i] is not None]
    if len(common) < 2:
        return None
    d = np.array([xb[i] - xa[i] for i in common], np.float64)
    better = int(np.sum(d > 0)) if metric in HIGHER_IS_BETTER else int(np.sum(d < 0))
    return {"mean": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d))), "n": len(d), "better": better}


def _pd(p: dict | None, metric: str = "abs_rel") -> str:
    """' (Δ -1.23 ± 0.45 pts, 12/16 images better)' in the report's units."""
    if p is None:
        return ""
    k = 100.0 if metric in PERCENT else 1.0
    unit = " pts" if metric in PERCENT else " px"
    return f" (Δ {k * p['mean']:+.2f} ± {k * p['se']:.2f}{unit}, {p['better']}/{p['n']} images better)"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.2f}"


def _verdict(ok: int, n: int) -> str:
    if n == 0:
        return "not measured"
    return "holds" if ok == n else ("does not hold" if ok == 0 else "partly")


def _detail(c: dict, r: dict) -> tuple[bool, str]:
    """Refined edges better than the conditioner's: edge F1 up, EP and DBE_acc not worse."""
    fc, fr = edge_f1(c), edge_f1(r)
    if fc is None or fr is None or c.get("dbe_acc") is None or r.get("dbe_acc") is None:
        return False, "no edge metrics"
    ok = fr > fc and r["ep"] >= c["ep"] and r["dbe_acc"] <= c["dbe_acc"]
    no_edges = c["ep"] == 0 and c["er"] == 0
    note = " (the conditioner's map has no detected edges: DBE capped at 10 px)" if no_edges else ""
    return ok, (f"edge F1 {_pct(fc)} -> {_pct(fr)} (EP {_pct(c['ep'])} -> {_pct(r['ep'])}, ER {_pct(c['er'])} -> "
                f"{_pct(r['er'])}), DBE_acc {c['dbe_acc']:.2f} -> {r['dbe_acc']:.2f} px{note}")


def claims(results: dict) -> list[dict[str, Any]]:
    """Each paper claim the experiments test, with the measured evidence and a verdict.

    Returns ``[{"claim", "evidence", "verdict"}]``; verdict is ``holds`` (on every
    dataset), ``partly``, ``does not hold`` or ``not measured``. Differences carry the
    paired standard error over images where the evaluations kept per-image rows.
    """
    b = results["budget"]
    exps = results.get("experiments", {})
    steps, ens = int(b["eval_steps"]), int(b["eval_ensemble"])
    out = []

    def add(claim: str, ev: list[str], ok: int, n: int) -> None:
        out.append({"claim": claim, "evidence": "; ".join(ev), "verdict": _verdict(ok, n)})

    if "ablation" in exps:
        exp = exps["ablation"]
        order = list(exp["rows"].values())
        reps = exp.get("replicates", {})
        ok = n = 0
        ev = []
        for d, es, vals in _refined_abs_rel_series(exp, order, steps, ens):
            n += 1
            mono = all(vals[i + 1] < vals[i] for i in range(len(vals) - 1))
            ok += mono
            text = f"{d}: " + " -> ".join(_pct(v) for v in vals)
            text += " (monotone)" if mono else (" (full best, not monotone)" if vals[-1] == min(vals) else
                                               " (not monotone)")
            text += _pd(paired_diff(es[0], es[-1], "abs_rel")).replace("Δ", "full - nocond")
            rep = [(_get(exp, r, "main", d, steps, ens) or {}).get("metrics", {}).get("refined", {}).get("abs_rel")
                   for r in reps.values()]
            if reps and all(v is not None for v in rep):
                text += f"; seed {b.get('replicate_seed')}: " + " / ".join(_pct(v) for v in rep)
            ev.append(text)
        add("Table 5: each component (depth conditioning, pre-alignment, patch masking) lowers AbsRel", ev, ok, n)

        full = order[-1]
        acc = [0, 0, []]
        det = [0, 0, []]
        for d in _exp_datasets(exp):
            e = _get(exp, full, "main", d, steps, ens)
            if not e:
                continue
            c, r = e["metrics"].get("conditioner", {}), e["metrics"].get("refined", {})
            if c.get("abs_rel") is not None and r.get("abs_rel") is not None:
                acc[1] += 1
                acc[0] += r["abs_rel"] < c["abs_rel"] and r["delta1"] > c["delta1"]
                acc[2].append(f"{d}: AbsRel {_pct(c['abs_rel'])} -> {_pct(r['abs_rel'])}"
                              + _pd(paired_diff(e, e, "abs_rel", "conditioner", "refined"))
                              + f", δ1 {_pct(c['delta1'])} -> {_pct(r['delta1'])}")
            good, text = _detail(c, r)
            det[1] += 1
            det[0] += good
            det[2].append(f"{d}: {text}")
        add("Tables 1/4: the refiner improves AbsRel and δ1 over its own conditioner", acc[2], acc[0], acc[1])
        add("Table 4: the refiner sharpens edges over its own conditioner (edge F1 up, EP and DBE_acc not worse)",
            det[2], det[0], det[1])
    if "plug" in exps:
        exp = exps["plug"]
        run = exp["rows"]["main"]
        ok = n = 0
        ev = []
        for c in exp["rows"]:
            if c in ("main", "classical"):
                continue
            for d in _exp_datasets(exp):
                e = _get(exp, run, c, d, steps, ens)
                if not e:
                    continue
                a, r = e["metrics"].get("conditioner", {}), e["metrics"].get("refined", {})
                if a.get("abs_rel") is None or r.get("abs_rel") is None:
                    continue
                n += 1
                ok += r["abs_rel"] < a["abs_rel"]
                ev.append(f"{c}/{d}: AbsRel {_pct(a['abs_rel'])} -> {_pct(r['abs_rel'])}"
                          + _pd(paired_diff(e, e, "abs_rel", "conditioner", "refined"))
                          + f", δ1 {_pct(a['delta1'])} -> {_pct(r['delta1'])}")
        add("Table 3: plug-and-play, the refiner improves a conditioner of another architecture it was not "
            "trained with (AbsRel)", ev, ok, n)
        shipped = next(iter((exp.get("shipped") or {}).values()), None)
        if shipped:
            ok = n = 0
            ev = []
            for c in exp["shipped"]:
                if c == "main":
                    continue
                for d in _exp_datasets(exp):
                    e = _get(exp, shipped, c, d, 1, 1)
                    if not e:
                        continue
                    a, r = e["metrics"].get("conditioner", {}), e["metrics"].get("refined", {})
                    good, text = _detail(a, r)
                    n += 1
                    ok += good and r.get("abs_rel", 1) <= 1.05 * a.get("abs_rel", 0)
                    ev.append(f"{c}/{d}: AbsRel {_pct(a.get('abs_rel'))} -> {_pct(r.get('abs_rel'))}; {text}")
            add("Plug-and-play with the shipped refiner (residual over the guided filter, "
                "training/recipes/default-refiner-guided.toml): over conditioners it never saw, edges restored "
                "(edge F1 up, EP and DBE_acc not worse) with AbsRel at most 1.05 x the conditioner's", ev, ok, n)
        if "classical" in exp["rows"]:
            ok = n = 0
            ev = []
            for d in _exp_datasets(exp):
                e = _get(exp, run, "classical", d, steps, ens)
                if not e:
                    continue
                c, r = e["metrics"].get("conditioner", {}), e["metrics"].get("refined", {})
                good, text = _detail(c, r)
                n += 1
                ok += good
                ev.append(f"{d}: {text}; AbsRel {_pct(c.get('abs_rel'))} -> {_pct(r.get('abs_rel'))}")
            add("Detail recovery (Sec. 3.2): over a blurred, affinely distorted ground truth the refiner restores "
                "edges (edge F1 up, EP and DBE_acc not worse)", ev, ok, n)
    if "steps" in exps:
        exp = exps["steps"]
        run = exp["rows"]["full"]
        fs = list(b["fig7_steps"])
        lo_s, hi_s = (2 if 2 in fs else fs[0]), max(fs)
        ok = n = 0
        ev = []
        for d in _exp_datasets(exp):
            e2, e50 = _get(exp, run, "main", d, lo_s, 1), _get(exp, run, "main", d, hi_s, 1)
            if not (e2 and e50):
                continue
            a, z = e2["metrics"]["refined"].get("delta1"), e50["metrics"]["refined"].get("delta1")
            if a is None or z is None:
                continue
            n += 1
            ok += abs(a - z) <= 0.01
            ev.append(f"{d}: δ1 {_pct(a)} at {lo_s} steps vs {_pct(z)} at {hi_s} "
                      f"({_secs(e2['seconds_per_image']['refined_total'])} vs "
                      f"{_secs(e50['seconds_per_image']['refined_total'])} s/image)")
        add(f"Fig. 7: a few steps suffice ({lo_s} steps within 1 δ1 point of {hi_s})", ev, ok, n)
        s, big = int(b["fig7_ensemble_steps"]), max(b["fig7_ensembles"])
        gain = [0, 0, []]
        red = [0, 0, []]
        for d in _exp_datasets(exp):
            e1 = _get(exp, run, "main", d, s, 1)
            em, ed = _get(exp, run, "main", d, s, big, "mean"), _get(exp, run, "main", d, s, big, "median")
            if not (e1 and em and ed):
                continue
            r1, rm, rd = (x["metrics"]["refined"] for x in (e1, em, ed))
            gain[1] += 1
            gain[0] += abs(rm["delta1"] - r1["delta1"]) <= 0.01
            gain[2].append(f"{d}: δ1 {_pct(r1['delta1'])} with 1 member, {_pct(rm['delta1'])} with {big} "
                           f"({_secs(e1['seconds_per_image']['refined_total'])} vs "
                           f"{_secs(em['seconds_per_image']['refined_total'])} s/image)")
            red[1] += 1
            red[0] += rm["abs_rel"] <= rd["abs_rel"]
            red[2].append(f"{d}: AbsRel {_pct(rm['abs_rel'])} mean vs {_pct(rd['abs_rel'])} median ({big} members)")
        add(f"Sec. 4.3: ensembling gains little ({big} members within 1 δ1 point of one; paper: 0.4)", *gain[2:],
            gain[0], gain[1])
        add("Table A5: mean ensembling is at least as good as median (AbsRel)", red[2], red[0], red[1])
    if "size" in exps:
        exp = exps["size"]
        order = list(exp["rows"].values())
        ok = n = 0
        ev = []
        for d, es, vals in _refined_abs_rel_series(exp, order, steps, ens):
            n += 1
            ok += vals[-1] <= min(vals)
            ev.append(f"{d}: " + " -> ".join(_pct(v) for v in vals)
                      + _pd(paired_diff(es[0], es[-1], "abs_rel")).replace("Δ", "all - smallest"))
        add("Table 2: more training data helps, a little (paper, NYUv2 AbsRel: 400 / 2K / 74K pairs 4.6 / 4.4 / 4.2); "
            "here AbsRel %, smallest set first", ev, ok, n)
    if "hparams" in exps:
        exp = exps["hparams"]
        rows = exp["rows"]
        ref = next((r for lbl, r in rows.items() if lbl.startswith("w = 8,")), None)
        ok = n = 0
        ev = []
        for d in _exp_datasets(exp):
            found = {lbl: _get(exp, r, "main", d, steps, ens) for lbl, r in rows.items()}
            vals = {lbl: (e or {}).get("metrics", {}).get("refined", {}).get("abs_rel") for lbl, e in found.items()}
            vals = {k: v for k, v in vals.items() if v is not None}
            if not vals or ref is None:
                continue
            best, worst = min(vals, key=vals.get), max(vals, key=vals.get)
            n += 1
            ok += rows[best] == ref
            ev.append(f"{d}: best {best} ({_pct(vals[best])} %), worst {worst} ({_pct(vals[worst])} %)")
        add("Appendix F: w = 8, eta = 0.1 is the best setting (AbsRel)", ev, ok, n)
    return out


def _invocation_lines(history: list[dict]) -> list[str]:
    out = []
    for i, h in enumerate(history, 1):
        trained = h.get("trained") or []
        out.append(f"- invocation {i}: {h.get('started', '?')}, commit `{str(h.get('commit', '?'))[:12]}`"
                   + (" (dirty)" if h.get("dirty") else "") + f", {float(h.get('seconds', 0)) / 60:.1f} min, trained "
                   f"{len(trained)} refiner(s){' (' + ', '.join(trained) + ')' if trained else ''}, ran "
                   f"{h.get('evaluated', 0)} evaluation(s), {h.get('threads', '?')} thread(s), load average "
                   f"{h.get('load_start', '?')} -> {h.get('load_end', '?')}")
    return out


def compute_seconds(results: dict) -> float:
    """Training (every run once), evaluation (every evaluation once) and DPT-conditioner seconds in the results."""
    runs, evals = {}, {}
    for exp in results.get("experiments", {}).values():
        for name, r in exp.get("runs", {}).items():
            runs[name] = float(r.get("train_seconds") or 0.0)
        for e in exp.get("evals", []):
            evals[e.get("key") or (e["run"], e["conditioner"], e["dataset"], e["steps"], e["ensemble"],
                                   e["reduction"], e.get("limit"))] = float(e.get("wall_seconds") or 0.0)
    dpt = float((results.get("conditioners", {}).get("dpt") or {}).get("seconds") or 0.0)
    return sum(runs.values()) + sum(evals.values()) + dpt


def render_report(results: dict, discussion: str = "") -> str:
    """docs/RESULTS.md from ``results.json``: provenance, claims, one section per experiment.

    ``discussion``: the hand-written text kept between the discussion markers.
    """
    b = results["budget"]
    exps = results.get("experiments", {})
    git = results.get("git", {})
    lines = ["# BetterDepth's claims, reproduced in miniature", "",
             "Every number below comes from the JSON written by `bench/reproduce.py` "
             f"({results.get('results_file', 'results.json')}); regenerate this page with "
             "`python bench/reproduce.py --report-only --results <results.json>`.", "",
             "## Provenance", "",
             f"- command: `{results.get('command', '?')}`",
             f"- commit: `{git.get('commit', '?')}`" + (" (with uncommitted changes)" if git.get("dirty") else ""),
             f"- finished: {results.get('finished', '?')}; this invocation {results.get('seconds', 0) / 60:.1f} min; "
             f"compute behind the numbers (training and evaluation, whichever invocation did it) "
             f"{compute_seconds(results) / 60:.1f} min",
             f"- machine: {results.get('machine', {}).get('description', '?')}",
             *_invocation_lines(results.get("invocations", [])),
             f"- mode `{b['mode']}`: refiners {b['steps']} steps x batch {b['batch_size']} "
             f"(w / eta sweep {b.get('hparam_steps') or b['steps']} steps), training sizes "
             f"{', '.join('all' if s is None else str(s) for s in b['sizes'])}; tables at {b['eval_steps']} "
             f"DDIM step(s), ensemble {b['eval_ensemble']}; {b['eval_samples']} held-out synthetic scenes, "
             "all real samples",
             f"- main conditioner: {_describe_conditioner(results.get('conditioners', {}).get('main'))}",
             ]
    for name, info in (results.get("datasets") or {}).items():
        lines.append(f"- data `{name}`: {info.get('samples', '?')} samples from `{info.get('root', '?')}`"
                     + (f" ({info['note']})" if info.get("note") else ""))
    lines += ["", "Metrics: AbsRel and δ1 after least-squares scale-and-shift alignment in the conditioner's "
              "space (disparity), evaluated in depth; DBE_comp / DBE_acc (depth boundary errors, px) and EP / ER "
              "(edge precision / recall) on the aligned maps; per image, then averaged. Seconds per image are "
              "wall-clock on this shared CPU (conditioner, and conditioner + refiner), not GPU figures.", ""]
    cl = claims(results)
    if cl:
        lines += ["## The paper's claims against these numbers", ""]
        lines += _table(["claim", "measured here", "verdict"],
                        [[c["claim"], c["evidence"] or "–", c["verdict"]] for c in cl])
        lines.append("")
    lines += ["## Discussion", "", DISCUSSION_START, discussion.strip() or "(not written yet)", DISCUSSION_END, ""]
    conds = results.get("conditioners", {})
    if "ablation" in exps:
        lines += render_ablation(exps["ablation"], b)
    if "plug" in exps:
        lines += render_plug(exps["plug"], b, conds)
    if "steps" in exps:
        lines += render_steps(exps["steps"], b)
    if "size" in exps:
        lines += render_rows("## Table 2: training-set size",
                             f"The full recipe on the first N training scenes, same steps ({b['steps']}): at a fixed "
                             "budget a smaller set is simply seen more often.", exps["size"], b)
    if "hparams" in exps:
        lines += render_rows("## Appendix F: patch size w and threshold eta",
                             f"The full recipe at {b.get('hparam_steps') or b['steps']} steps, one parameter varied "
                             "at a time (kept % shows how much of the loss the mask leaves).", exps["hparams"], b)
    return "\n".join(lines).rstrip() + "\n"


def extract_discussion(text: str) -> str:
    """The hand-written block between the discussion markers of an existing report ('' if none)."""
    if DISCUSSION_START not in text or DISCUSSION_END not in text:
        return ""
    body = text.split(DISCUSSION_START, 1)[1].split(DISCUSSION_END, 1)[0].strip()
    return "" if body == "(not written yet)" else body


from betterdepth_cli.evaluation.runner import jsonable  # noqa: E402,F401  (one JSON-safe converter)

