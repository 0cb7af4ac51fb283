"""``bench/reproduce.py``'s orchestration: prepare the conditioners, train the planned refiners,
run the planned evaluations (each resumable), write the experiment and results JSON and the report.

:func:`main` takes the script's parsed :class:`Options`; ``bench/reproduce.py`` documents the
experiments, budgets and outputs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from betterdepth_cli.evaluation.runner import jsonable
from betterdepth_cli.io.files import atomic_write_text
from training.reproduce.classical import ClassicalSettings, write_classical_maps
from training.reproduce.datasets import load_samples, resolve_datasets
from training.reproduce.plan import (BUDGETS, EXPERIMENTS, METRICS, RESULTS_FORMAT, ROOT, SHIPPED, Budget, EvalSpec,
                                     RunSpec, parse_only, plan, run_overrides)
from training.reproduce.report import extract_discussion, render_report
from training.reproduce.summary import run_summary, summarize_eval

REFINER_RECIPE = ROOT / "training" / "recipes" / "reproduce-refiner.toml"
DPT_RECIPE = ROOT / "training" / "recipes" / "reproduce-dpt-conditioner.toml"


@dataclass
class Options:
    """``bench/reproduce.py``'s command line (its flags, by the same names)."""

    quick: bool = False
    smoke: bool = False
    out: str | None = None  # default runs/reproduce-<mode>
    only: str | None = None
    conditioner: str = "builtin"
    train_root: str = str(ROOT / "data" / "synth-train")
    val_root: str = str(ROOT / "data" / "synth-val")
    real_data: str | None = None
    threads: int = 0
    report: str | None = None  # default docs/RESULTS.md (OUT/RESULTS.md with --smoke); '' = none
    report_only: bool = False
    results: str | None = None

    @property
    def mode(self) -> str:
        return "smoke" if self.smoke else "quick" if self.quick else "full"

    @property
    def out_dir(self) -> Path:
        return Path(self.out or ROOT / "runs" / f"reproduce-{self.mode}")

    @property
    def report_path(self) -> str:
        if self.report is not None:
            return self.report
        return str(self.out_dir / "RESULTS.md" if self.smoke else ROOT / "docs" / "RESULTS.md")


class Log:
    """Timestamped progress lines to stderr and, when given, appended to a file."""

    def __init__(self, path: Path | None):
        self.t0 = time.perf_counter()
        self.path = path

    def __call__(self, message: str) -> None:
        line = f"[{(time.perf_counter() - self.t0) / 60:6.1f} min] {message}"
        print(line, file=sys.stderr, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(jsonable(data), indent=2) + "\n")


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def git_info() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


# --------------------------------------------------------------------------- conditioners


def prepare_dpt(budget: Budget, opts: Options, out: Path, log: Log) -> dict:
    """Render the DPT's indoor scenes (once) and train it (once); its spec and summary."""
    import tomllib

    from training.reproduce.conditioner import train_dpt_conditioner
    from training.synthetic import write_dataset

    recipe = tomllib.loads(DPT_RECIPE.read_text())
    recipe["train"]["steps"] = budget.cond_steps
    recipe["data"]["scenes"] = budget.cond_scenes
    d = recipe["data"]
    data_dir = out / "data" / f"synth-{d['kind']}-seed{d['seed0']}-n{d['scenes']}-s{d['size']}"
    if not (data_dir / ".complete").exists():
        log(f"rendering {d['scenes']} {d['kind']} scenes (seeds {d['seed0']}+) into {data_dir}")
        write_dataset(data_dir, int(d["scenes"]), seed0=int(d["seed0"]), size=int(d["size"]), kind=d["kind"])
        (data_dir / ".complete").write_text("ok\n")
    output = out / "conditioners" / f"dpt-{d['kind']}-{budget.cond_steps}"
    summary = train_dpt_conditioner(recipe, data_dir, Path(opts.val_root), output, log=log)
    log(f"DPT conditioner ready: {summary['path']} "
        f"(val on mixed held-out scenes: {summary.get('val_synthetic_mixed')})")
    return {"spec": f"hf:{summary['path']}", **summary}


def prepare_classical(datasets: dict, budget: Budget, out: Path, log: Log) -> dict:
    """The classical conditioner's maps per dataset (rewritten when their settings change)."""
    settings = ClassicalSettings()
    info = {"spec": f"file:{out / 'conditioners' / 'classical'}/<dataset>?kind=disparity", **vars(settings)}
    per = {}
    for name, ds in datasets.items():
        folder = out / "conditioners" / "classical" / name
        stamp = folder / ".complete.json"
        limit = budget.eval_samples if name == "synthetic" else None
        want = {"settings": vars(settings), "limit": limit, "fill": ds["fill"]}
        if stamp.exists() and json.loads(stamp.read_text()).get("want") == want:
            per[name] = json.loads(stamp.read_text())["summary"]
            continue
        if folder.exists():
            shutil.rmtree(folder)
        summary = write_classical_maps(load_samples(ds, limit), folder, settings, ds["fill"])
        write_json(stamp, {"want": want, "summary": summary})
        per[name] = summary
        log(f"classical conditioner maps for {name}: {summary['samples']} in {folder}")
    info["datasets"] = per
    return info


def conditioner_spec(name: str, dataset: str, conditioners: dict, out: Path) -> str:
    if name == "classical":
        return f"file:{out / 'conditioners' / 'classical' / dataset}?kind=disparity"
    return conditioners[name]["spec"]


def prepare_conditioners(needs: list[str], datasets: dict, budget: Budget, opts: Options, out: Path,
                         log: Log) -> dict:
    conditioners: dict = {"main": {"spec": opts.conditioner}}
    if "dpt" in needs:
        conditioners["dpt"] = prepare_dpt(budget, opts, out, log)
    if "classical" in needs:
        conditioners["classical"] = prepare_classical(datasets, budget, out, log)
    return conditioners


# --------------------------------------------------------------------------- runs and evaluations


def copy_shipped(run_dir: Path, log: Log) -> dict:
    """The shipped refiner is not trained here: the package's default, copied as it is now."""
    from betterdepth_cli.core.refiner import default_model_path

    shutil.rmtree(run_dir / "model", ignore_errors=True)
    shutil.copytree(default_model_path(), run_dir / "model")
    log(f"run {SHIPPED.name}: the package's default refiner ({default_model_path()})")
    card = json.loads((run_dir / "model" / "betterdepth.json").read_text())
    return {"run": SHIPPED.name, "shipped": True, "recipe": card["trained_with"].get("recipe")}


def check_existing_model(run: RunSpec, run_dir: Path, conditioner: str) -> None:
    """Refuse to reuse a model trained with other settings than ``run`` asks for."""
    tw = json.loads((run_dir / "model" / "betterdepth.json").read_text()).get("trained_with") or {}
    have = {"conditioner": tw.get("conditioner"), "steps": tw.get("steps"), **(tw.get("flags") or {})}
    want = {"conditioner": conditioner, "steps": run.steps, **run.flags()}
    diff = [k for k in want if have.get(k) != want[k]]
    if diff:
        raise SystemExit(f"{run_dir}: that model was trained with {diff[0]} = {have.get(diff[0])!r}, this run "
                         f"wants {want[diff[0]]!r}; choose another --out")


def train_run(run: RunSpec, budget: Budget, opts: Options, out: Path, log: Log) -> dict:
    """Train one planned refiner (skipped when its model exists, resumed from a checkpoint); its summary."""
    from training.config import load_recipe
    from training.trainer import list_checkpoints, train

    run_dir = out / "runs" / run.name
    if run.name == SHIPPED.name:
        return copy_shipped(run_dir, log)
    if (run_dir / "model" / "betterdepth.json").exists():
        check_existing_model(run, run_dir, opts.conditioner)
        log(f"run {run.name}: model exists, skipped")
        return run_summary(run_dir, run)
    train_ids = None
    if run.train_size is not None:
        train_ids = sorted(p.stem for p in (Path(opts.train_root) / "rgb").glob("*.png"))
    overrides = run_overrides(run, budget, train_root=opts.train_root, conditioner=opts.conditioner,
                              cache_dir=str(out / "cache"), train_ids=train_ids)
    recipe = load_recipe(REFINER_RECIPE, overrides)
    resume = bool(list_checkpoints(run_dir))
    log(f"run {run.name}: training {run.steps} steps ({'resuming' if resume else 'fresh'}) {run.flags()}"
        + (f", {run.train_size} scenes" if run.train_size else ""))
    t0 = time.perf_counter()
    train(recipe, run_dir, resume=resume, log=lambda m: log(f"  [{run.name}] {m}"))
    log(f"run {run.name}: done in {time.perf_counter() - t0:.0f} s")
    return run_summary(run_dir, run)


def evaluate(spec: EvalSpec, datasets: dict, conditioners: dict, out: Path, log: Log) -> dict:
    """One planned evaluation (read back when its JSON exists for the same model file and conditioner)."""
    from betterdepth_cli.evaluation.runner import EvalConfig, run_evaluation

    model_dir = out / "runs" / spec.run / "model"
    cond = conditioner_spec(spec.conditioner, spec.dataset, conditioners, out)
    stamp = {"model_mtime_ns": (model_dir / "betterdepth.json").stat().st_mtime_ns, "conditioner": cond,
             "record": 2}  # bump when the record's fields change
    path = out / "evals" / f"{spec.key}.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("stamp") == stamp:
            return old
    ds = datasets[spec.dataset]
    config = EvalConfig(
        dataset=ds["loader"], data_root=ds["root"], split_file=ds["split"], limit=spec.limit, conditioner=cond,
        model=str(model_dir), compare=True, steps=spec.steps, ensemble=spec.ensemble, reduction=spec.reduction,
        processing_res=ds["processing_res"], seed=0, metrics=METRICS,
    )
    result = run_evaluation(config)
    rec = {**summarize_eval(result, spec), "stamp": stamp}
    write_json(path, rec)
    m = rec["metrics"]
    log(f"eval {spec.key}: AbsRel {100 * m['conditioner']['abs_rel']:.2f} -> {100 * m['refined']['abs_rel']:.2f} %, "
        f"δ1 {100 * m['conditioner']['delta1']:.2f} -> {100 * m['refined']['delta1']:.2f} %, "
        f"{rec['seconds_per_image']['refined_total']:.3f} s/image ({rec['samples']} samples)")
    return jsonable(rec)


# --------------------------------------------------------------------------- results and report


def write_report(results: dict, report: Path, log: Log | None = None) -> None:
    """(Re)write the Markdown report, keeping its hand-written discussion block."""
    old = report.read_text() if report.exists() else ""
    atomic_write_text(report, render_report(results, extract_discussion(old)))
    if log:
        log(f"report written to {report}")


def report_only(src: Path, report: Path) -> int:
    """``--report-only``: render the report from an existing results JSON."""
    if not src.exists():
        raise SystemExit(f"--results {src}: not found; run the experiments first")
    results = json.loads(src.read_text())
    try:
        results["results_file"] = str(src.resolve().relative_to(ROOT))
    except ValueError:
        results["results_file"] = str(src)
    write_report(results, report, Log(None))
    return 0


def experiment_records(p: dict, budget: Budget, runs: dict, evals: dict, out: Path) -> dict:
    """``<experiment>.json`` for each planned experiment (written), by name."""
    budget_json = jsonable(budget)
    records = {}
    for name, ep in p["experiments"].items():
        exp = {"experiment": name, "budget": budget_json, "rows": ep["rows"], "replicates": ep.get("replicates", {}),
               "shipped": ep.get("shipped", {}),
               "runs": {r.name: runs[r.name] for r in ep["runs"]},
               "evals": [{k: v for k, v in evals[e.key].items() if k != "stamp"} for e in ep["evals"]]}
        write_json(out / f"{name}.json", exp)
        records[name] = exp
    return records


def merge_previous(results_path: Path, budget_json: dict, records: dict) -> tuple[dict, list]:
    """Experiments and invocation history of an earlier results JSON at the same budget, with ``records`` on top."""
    if results_path.exists():
        old = json.loads(results_path.read_text())
        if old.get("budget") == budget_json:  # keep experiments of an earlier --only run at the same budget
            merged = {**old.get("experiments", {}), **records}
            return {k: merged[k] for k in EXPERIMENTS if k in merged}, old.get("invocations", [])
    return dict(records), []


@dataclass
class Invocation:
    """What this invocation of the script did, for the results' provenance."""

    command: str
    experiments: list[str]
    started: datetime
    t_start: float
    load_start: tuple
    trained: list[str]
    evaluated: int = 0

    def record(self, git: dict, threads: int) -> dict:
        return {"command": self.command, "commit": git["commit"], "dirty": git["dirty"],
                "started": self.started.isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - self.t_start, 1), "experiments": self.experiments,
                "trained": self.trained, "evaluated": self.evaluated, "threads": threads,
                "load_start": round(self.load_start[0], 2), "load_end": round(os.getloadavg()[0], 2)}


def machine_info(load_start: tuple) -> dict:
    import torch

    return {
        "description": f"{os.cpu_count()} CPU core(s), {platform.machine()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} torch thread(s); load average {load_start[0]:.1f} at the start, "
                       f"{os.getloadavg()[0]:.1f} at the end (shared machine)",
        "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "load_start": load_start,
        "load_end": os.getloadavg(), "python": platform.python_version(),
    }


def assemble_results(inv: Invocation, budget: Budget, records: dict, results_path: Path, conditioners: dict,
                     datasets: dict) -> dict:
    """results.json: command, commit, every invocation, budget, machine, conditioners, data, experiments."""
    import torch

    budget_json = jsonable(budget)
    merged, history = merge_previous(results_path, budget_json, records)
    git = git_info()
    history = history + [inv.record(git, torch.get_num_threads())]
    return {
        "format": RESULTS_FORMAT,
        "command": inv.command,
        "git": git,
        "invocations": history,
        "mode": budget.mode,
        "budget": budget_json,
        "started": inv.started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - inv.t_start, 1),
        "machine": machine_info(inv.load_start),
        "conditioners": conditioners,
        "datasets": {k: {"root": v["source"], "samples": v["samples"],
                         "note": "held out: generator seeds 1000000+" if k == "synthetic" else ""}
                     for k, v in datasets.items()},
        "experiments": merged,
    }


# --------------------------------------------------------------------------- the script


def start(opts: Options, experiments: list[str], budget: Budget, out: Path, argv: list[str]) -> tuple[Log, Invocation]:
    """The log, torch's thread count and this invocation's provenance."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "reproduce.log")
    threads = opts.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    inv = Invocation(command="python bench/reproduce.py " + " ".join(argv), experiments=experiments,
                     started=datetime.now(timezone.utc), t_start=time.perf_counter(), load_start=os.getloadavg(),
                     trained=[])
    log(f"{inv.command}: mode {budget.mode}, experiments {', '.join(experiments)}, "
        f"torch threads {torch.get_num_threads()}")
    return log, inv


def run_experiments(opts: Options, experiments: list[str], budget: Budget, out: Path, argv: list[str]) -> int:
    """Plan, prepare the conditioners, train, evaluate, then write the JSON files and the report."""
    from betterdepth_cli.conditioner_registry import get_conditioner

    log, inv = start(opts, experiments, budget, out, argv)
    get_conditioner(opts.conditioner)  # fail early when the main conditioner is missing
    datasets = resolve_datasets(Path(opts.val_root), opts.real_data, out, log)
    for info in datasets.values():
        info["samples"] = len(load_samples(info, None))
    p = plan(experiments, budget, list(datasets))
    log(f"plan: {len(p['runs'])} refiner runs ({', '.join(r.name for r in p['runs'])}), {len(p['evals'])} evaluations")
    conditioners = prepare_conditioners(p["needs"], datasets, budget, opts, out, log)

    before = {r.name for r in p["runs"] if (out / "runs" / r.name / "model" / "betterdepth.json").exists()}
    runs = {r.name: train_run(r, budget, opts, out, log) for r in p["runs"]}
    mtimes = {e.key: _mtime(out / "evals" / f"{e.key}.json") for e in p["evals"]}
    evals = {e.key: evaluate(e, datasets, conditioners, out, log) for e in p["evals"]}
    inv.evaluated = sum(_mtime(out / "evals" / f"{e.key}.json") != mtimes[e.key] for e in p["evals"])
    inv.trained = [n for n in runs if n not in before and n != SHIPPED.name]

    records = experiment_records(p, budget, runs, evals, out)
    results_path = out / "results.json"
    results = assemble_results(inv, budget, records, results_path, conditioners, datasets)
    write_json(results_path, results)
    log(f"results written to {results_path}")
    if opts.report_path:
        results["results_file"] = str(results_path)
        write_report(results, Path(opts.report_path), log)
    return 0


def main(opts: Options, argv: list[str]) -> int:
    """What ``bench/reproduce.py`` runs once its flags are parsed; ``argv`` is recorded as the command."""
    out = opts.out_dir
    if opts.report_only:
        return report_only(Path(opts.results) if opts.results else out / "results.json", Path(opts.report_path))
    try:
        experiments = parse_only(opts.only)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return run_experiments(opts, experiments, BUDGETS[opts.mode], out, list(argv))
