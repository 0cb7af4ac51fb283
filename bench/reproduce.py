"""The paper's claims reproduced in miniature with the project's own train and eval (issue 8).

    python bench/reproduce.py [--quick] [--out runs/reproduce-<mode>] [--only ablation,plug,steps,size,hparams]
                              [--conditioner NAME] [--threads N]
    python bench/reproduce.py --report-only [--results runs/reproduce-full/results.json] [--report docs/RESULTS.md]

Experiments (each a function of the budget, planned by ``reproduce_lib.plan``):

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

Budgets (``reproduce_lib.BUDGETS``): ``--quick`` trains 12 refiners of 150
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
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import reproduce_lib as L  # noqa: E402

ROOT = L.ROOT
REFINER_RECIPE = ROOT / "training" / "recipes" / "reproduce-refiner.toml"
DPT_RECIPE = ROOT / "training" / "recipes" / "reproduce-dpt-conditioner.toml"


class Log:
    def __init__(self, path: Path | None):
        self.t0 = time.perf_counter()
        self.path = path

    def __call__(self, message: str) -> None:
        line = f"[{(time.perf_counter() - self.t0) / 60:6.1f} min] {message}"
        print(line, file=sys.stderr, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def _atomic_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(L.jsonable(data), indent=2) + "\n")
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def real_data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("BETTERDEPTH_REAL_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "real"


# --------------------------------------------------------------------------- data


def synthetic_view(val_root: Path, out: Path) -> Path:
    """An evaluation ``folder`` dataset over the held-out scenes: dataset.toml + links + split list.

    The generator's folders describe their depth for training (``[depth]``); the
    evaluation loader wants ``[dataset]``, so the script writes one beside links
    to the original rgb/ and depth/ folders (nothing is copied).
    """
    view = out / "data" / "synth-val-eval"
    (view).mkdir(parents=True, exist_ok=True)
    for sub in ("rgb", "depth"):
        link = view / sub
        if not link.exists():
            os.symlink(val_root.resolve() / sub, link)
    ids = sorted(p.stem for p in (val_root / "rgb").glob("*.png"))
    depth_ext = {p.stem: p.suffix for p in (val_root / "depth").iterdir()}
    lines = [f"rgb/{i}.png depth/{i}{depth_ext[i]}" for i in ids if i in depth_ext]
    if not lines:
        raise SystemExit(f"{val_root}: no rgb/<id>.png with a depth/<id> map")
    _atomic_text(view / "split.txt", "\n".join(lines) + "\n")
    _atomic_text(view / "dataset.toml", "\n".join([
        "# evaluation view of the held-out synthetic scenes (written by bench/reproduce.py)",
        f"# source: {val_root.resolve()}",
        "[dataset]", 'images = "rgb"', 'ground_truth = "depth"', 'kind = "depth"', "scale = 1.0",
        "invalid = 0", "min_depth = 0.001", "max_depth = 80.0", ""]))
    return view


def resolve_datasets(args, out: Path, log: Log) -> dict[str, dict]:
    """name -> loader, root, split file, processing resolution, classical fill rule."""
    val_root = Path(args.val_root)
    if not (val_root / "rgb").is_dir():
        raise SystemExit(f"--val-root {val_root}: held-out synthetic scenes not found (betterdepth synth -n 200 "
                         f"--seed 1000000 --size 192 -o {val_root})")
    view = synthetic_view(val_root, out)
    ds = {"synthetic": {"loader": "folder", "root": str(view), "split": str(view / "split.txt"),
                        "processing_res": 0, "fill": "zero", "source": str(val_root)}}
    real = real_data_dir(args.real_data)
    for name, sub in (("middlebury", "middlebury2005"), ("nyuv2", "nyuv2")):
        if (real / sub).is_dir():
            ds[name] = {"loader": name, "root": str(real / sub), "split": None, "processing_res": None,
                        "fill": "inpaint", "source": str(real / sub)}
        else:
            log(f"real data {real / sub} not found: {name} skipped (set BETTERDEPTH_REAL_DATA)")
    return ds


def load_samples(info: dict, limit: int | None):
    from betterdepth_cli.evaluation.datasets import get_dataset

    return get_dataset(info["loader"], info["root"], split_file=info["split"], limit=limit)


# --------------------------------------------------------------------------- conditioners


def prepare_dpt(budget: L.Budget, args, out: Path, log: Log) -> dict:
    import tomllib

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
    summary = L.train_dpt_conditioner(recipe, data_dir, Path(args.val_root), output, log=log)
    log(f"DPT conditioner ready: {summary['path']} "
        f"(val on mixed held-out scenes: {summary.get('val_synthetic_mixed')})")
    return {"spec": f"hf:{summary['path']}", **summary}


def prepare_classical(datasets: dict, budget: L.Budget, out: Path, log: Log) -> dict:
    settings = L.ClassicalSettings()
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
        summary = L.write_classical_maps(load_samples(ds, limit), folder, settings, ds["fill"])
        _atomic_json(stamp, {"want": want, "summary": summary})
        per[name] = summary
        log(f"classical conditioner maps for {name}: {summary['samples']} in {folder}")
    info["datasets"] = per
    return info


def conditioner_spec(name: str, dataset: str, conditioners: dict, out: Path) -> str:
    if name == "classical":
        return f"file:{out / 'conditioners' / 'classical' / dataset}?kind=disparity"
    return conditioners[name]["spec"]


# --------------------------------------------------------------------------- runs and evaluations


def train_run(run: L.RunSpec, budget: L.Budget, args, out: Path, log: Log) -> dict:
    from training.config import load_recipe
    from training.trainer import list_checkpoints, train

    run_dir = out / "runs" / run.name
    card = run_dir / "model" / "betterdepth.json"
    if run.name == L.SHIPPED.name:  # not trained here: the refiner in the package, copied as it is now
        from betterdepth_cli.core.refiner import default_model_path

        shutil.rmtree(run_dir / "model", ignore_errors=True)
        shutil.copytree(default_model_path(), run_dir / "model")
        log(f"run {run.name}: the package's default refiner ({default_model_path()})")
        return {"run": run.name, "shipped": True, "recipe": json.loads(card.read_text())["trained_with"].get("recipe")}
    if card.exists():
        tw = json.loads(card.read_text()).get("trained_with") or {}
        have = {"conditioner": tw.get("conditioner"), "steps": tw.get("steps"), **(tw.get("flags") or {})}
        want = {"conditioner": args.conditioner, "steps": run.steps, **run.flags()}
        diff = [k for k in want if have.get(k) != want[k]]
        if diff:
            raise SystemExit(f"{run_dir}: that model was trained with {diff[0]} = {have.get(diff[0])!r}, this run "
                             f"wants {want[diff[0]]!r}; choose another --out")
        log(f"run {run.name}: model exists, skipped")
        return L.run_summary(run_dir, run)
    train_ids = None
    if run.train_size is not None:
        train_ids = sorted(p.stem for p in (Path(args.train_root) / "rgb").glob("*.png"))
    overrides = L.run_overrides(run, budget, train_root=args.train_root, conditioner=args.conditioner,
                                cache_dir=str(out / "cache"), train_ids=train_ids)
    recipe = load_recipe(REFINER_RECIPE, overrides)
    resume = bool(list_checkpoints(run_dir))
    log(f"run {run.name}: training {run.steps} steps ({'resuming' if resume else 'fresh'}) {run.flags()}"
        + (f", {run.train_size} scenes" if run.train_size else ""))
    t0 = time.perf_counter()
    train(recipe, run_dir, resume=resume, log=lambda m: log(f"  [{run.name}] {m}"))
    log(f"run {run.name}: done in {time.perf_counter() - t0:.0f} s")
    return L.run_summary(run_dir, run)


def evaluate(spec: L.EvalSpec, datasets: dict, conditioners: dict, out: Path, log: Log) -> dict:
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
        processing_res=ds["processing_res"], seed=0, metrics=L.METRICS,
    )
    result = run_evaluation(config)
    rec = {**L.summarize_eval(result, spec), "stamp": stamp}
    _atomic_json(path, rec)
    m = rec["metrics"]
    log(f"eval {spec.key}: AbsRel {100 * m['conditioner']['abs_rel']:.2f} -> {100 * m['refined']['abs_rel']:.2f} %, "
        f"δ1 {100 * m['conditioner']['delta1']:.2f} -> {100 * m['refined']['delta1']:.2f} %, "
        f"{rec['seconds_per_image']['refined_total']:.3f} s/image ({rec['samples']} samples)")
    return L.jsonable(rec)


# --------------------------------------------------------------------------- report


def write_report(results: dict, report: Path, log: Log | None = None) -> None:
    old = report.read_text() if report.exists() else ""
    _atomic_text(report, L.render_report(results, L.extract_discussion(old)))
    if log:
        log(f"report written to {report}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--quick", action="store_true", help="the small budget (about 17 min on this 2-core machine)")
    ap.add_argument("--smoke", action="store_true", help="a few steps of everything (checks the plumbing)")
    ap.add_argument("--out", default=None, help="output folder, resumable (default runs/reproduce-<mode>)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(L.EXPERIMENTS)}")
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
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    out = Path(args.out or ROOT / "runs" / f"reproduce-{mode}")
    if args.report is None:
        args.report = str(out / "RESULTS.md" if args.smoke else ROOT / "docs" / "RESULTS.md")

    if args.report_only:
        src = Path(args.results) if args.results else out / "results.json"
        if not src.exists():
            raise SystemExit(f"--results {src}: not found; run the experiments first")
        results = json.loads(src.read_text())
        try:
            results["results_file"] = str(src.resolve().relative_to(ROOT))
        except ValueError:
            results["results_file"] = str(src)
        write_report(results, Path(args.report), Log(None))
        return 0

    try:
        experiments = L.parse_only(args.only)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    budget = L.BUDGETS[mode]
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "reproduce.log")
    import torch

    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    command = "python bench/reproduce.py " + " ".join(argv)
    log(f"{command}: mode {budget.mode}, experiments {', '.join(experiments)}, torch threads {torch.get_num_threads()}")

    from betterdepth_cli.conditioner_registry import get_conditioner

    get_conditioner(args.conditioner)  # fail early when the main conditioner is missing
    datasets = resolve_datasets(args, out, log)
    for info in datasets.values():
        info["samples"] = len(load_samples(info, None))
    p = L.plan(experiments, budget, list(datasets))
    log(f"plan: {len(p['runs'])} refiner runs ({', '.join(r.name for r in p['runs'])}), {len(p['evals'])} evaluations")

    conditioners: dict = {"main": {"spec": args.conditioner}}
    if "dpt" in p["needs"]:
        conditioners["dpt"] = prepare_dpt(budget, args, out, log)
    if "classical" in p["needs"]:
        conditioners["classical"] = prepare_classical(datasets, budget, out, log)

    before = {r.name for r in p["runs"] if (out / "runs" / r.name / "model" / "betterdepth.json").exists()}
    runs = {r.name: train_run(r, budget, args, out, log) for r in p["runs"]}
    mtimes = {e.key: _mtime(out / "evals" / f"{e.key}.json") for e in p["evals"]}
    evals = {e.key: evaluate(e, datasets, conditioners, out, log) for e in p["evals"]}
    computed = sum(_mtime(out / "evals" / f"{e.key}.json") != mtimes[e.key] for e in p["evals"])

    budget_json = L.jsonable(budget)
    experiments_json = {}
    for name, ep in p["experiments"].items():
        exp = {"experiment": name, "budget": budget_json, "rows": ep["rows"], "replicates": ep.get("replicates", {}),
               "shipped": ep.get("shipped", {}),
               "runs": {r.name: runs[r.name] for r in ep["runs"]},
               "evals": [{k: v for k, v in evals[e.key].items() if k != "stamp"} for e in ep["evals"]]}
        _atomic_json(out / f"{name}.json", exp)
        experiments_json[name] = exp

    results_path = out / "results.json"
    merged = dict(experiments_json)
    history: list = []
    if results_path.exists():
        old = json.loads(results_path.read_text())
        if old.get("budget") == budget_json:  # keep experiments of an earlier --only run at the same budget
            merged = {**old.get("experiments", {}), **experiments_json}
            merged = {k: merged[k] for k in L.EXPERIMENTS if k in merged}
            history = old.get("invocations", [])
    git = git_info()
    history = history + [{
        "command": command, "commit": git["commit"], "dirty": git["dirty"],
        "started": started.isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - t_start, 1),
        "experiments": experiments, "trained": [n for n in runs if n not in before and n != L.SHIPPED.name],
        "evaluated": computed,
        "threads": torch.get_num_threads(), "load_start": round(load_start[0], 2),
        "load_end": round(os.getloadavg()[0], 2),
    }]
    results = {
        "format": L.RESULTS_FORMAT,
        "command": command,
        "git": git,
        "invocations": history,
        "mode": budget.mode,
        "budget": budget_json,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t_start, 1),
        "machine": {
            "description": f"{os.cpu_count()} CPU core(s), {platform.machine()}, torch {torch.__version__}, "
                           f"{torch.get_num_threads()} torch thread(s); load average {load_start[0]:.1f} at the start, "
                           f"{os.getloadavg()[0]:.1f} at the end (shared machine)",
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "load_start": load_start,
            "load_end": os.getloadavg(), "python": platform.python_version(),
        },
        "conditioners": conditioners,
        "datasets": {k: {"root": v["source"], "samples": v["samples"],
                         "note": "held out: generator seeds 1000000+" if k == "synthetic" else ""}
                     for k, v in datasets.items()},
        "experiments": merged,
    }
    _atomic_json(results_path, results)
    log(f"results written to {results_path}")
    if args.report:
        results["results_file"] = str(results_path)
        write_report(results, Path(args.report), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
