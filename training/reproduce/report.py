"""docs/RESULTS.md from the results JSON: provenance, the claims table, one section per experiment."""

from __future__ import annotations

from typing import Any

from training.reproduce.claims import claims
from training.reproduce.plan import METRICS, shipped_defaults
from training.reproduce.results import (exp_datasets, fmt_metric, fmt_seconds, index_evals, md_table, metric_cells,
                                        table_setting)

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


def render_ablation(exp: dict, budget: dict) -> list[str]:
    idx = index_evals(exp["evals"])
    steps, ens = table_setting(budget)
    out = ["## Table 5: ablation of the training objective", "",
           f"Four refiners, identical budget ({budget['steps']} steps x batch {budget['batch_size']}), seeds and data; "
           f"inference {steps} DDIM step(s), ensemble {ens}. Paper: NYUv2 AbsRel "
           + " -> ".join(f"{PAPER['ablation_nyuv2_abs_rel'][k]}" for k in ("nocond", "cond", "cond-prealign", "full"))
           + " %, KITTI " + " -> ".join(f"{PAPER['ablation_kitti_abs_rel'][k]}"
                                         for k in ("nocond", "cond", "cond-prealign", "full")) + " %.", ""]
    rows_def = exp["rows"]
    for d in exp_datasets(exp):
        out += [f"**{DATASET_TITLES[d]}**", ""]
        rows = []
        first = next((idx.get((r, "main", d, steps, ens, "mean")) for r in rows_def.values()), None)
        if first:
            rows.append(["conditioner alone", *metric_cells(first["metrics"].get("conditioner")),
                         fmt_seconds(first["seconds_per_image"]["conditioner"]), "–"])
        for label, run in [*rows_def.items(), *exp.get("replicates", {}).items()]:
            e = idx.get((run, "main", d, steps, ens, "mean"))
            paper = PAPER["ablation_nyuv2_abs_rel"].get(run) if d == "nyuv2" else None
            rows.append([label, *metric_cells(e["metrics"].get("refined") if e else None),
                         fmt_seconds(e["seconds_per_image"]["refined_total"]) if e else "–",
                         f"{paper}" if paper is not None else "–"])
        out += md_table(["refiner", *(METRIC_HEADERS[m] for m in METRICS), "s / image", "paper AbsRel % (NYUv2)"], rows)
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
            *md_table(["run", "seed", "steps", "scenes", "final loss", "kept %", "s / step (median)", "train s"], rows),
            ""]


def render_plug(exp: dict, budget: dict, conditioners: dict) -> list[str]:
    idx = index_evals(exp["evals"])
    steps, ens = table_setting(budget)
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
    for d in exp_datasets(exp):
        out += [f"**{DATASET_TITLES[d]}**", ""]
        rows = []
        for c in exp["rows"]:
            e = idx.get((run, c, d, steps, ens, "mean"))
            if not e:
                continue
            rows.append([f"{c} alone", *metric_cells(e["metrics"].get("conditioner")),
                         fmt_seconds(e["seconds_per_image"]["conditioner"])])
            rows.append([f"{c} + refiner", *metric_cells(e["metrics"].get("refined")),
                         fmt_seconds(e["seconds_per_image"]["refined_total"])])
            shipped = (exp.get("shipped") or {}).get(c)
            s = idx.get((shipped, c, d, *shipped_defaults(), "mean")) if shipped else None
            if s:
                rows.append([f"{c} + guided filter", *metric_cells(s["metrics"].get("guided")), "-"])
                rows.append([f"{c} + shipped refiner", *metric_cells(s["metrics"].get("refined")),
                             fmt_seconds(s["seconds_per_image"]["refined_total"])])
        out += md_table(["conditioner", *(METRIC_HEADERS[m] for m in METRICS), "s / image"], rows)
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
    idx = index_evals(exp["evals"])
    run = exp["rows"]["full"]
    out = ["## Fig. 7: denoising steps and ensemble size", "",
           f"The refiner `{run}`; synthetic rows over the first {budget['fig7_samples']} held-out scenes. Paper: "
           "2 steps without ensembling are within 0.4 δ1 points of 10 members (BetterDepth; Marigold 1.2), "
           "mean ensembling slightly better than median.", ""]
    for d in exp_datasets(exp):
        out += [f"**{DATASET_TITLES[d]}**: steps (ensemble 1)", ""]
        rows = []
        cond_row = None
        for s in budget["fig7_steps"]:
            e = idx.get((run, "main", d, s, 1, "mean"))
            if not e:
                continue
            cond_row = cond_row or e
            rows.append([str(s), *metric_cells(e["metrics"].get("refined")),
                         fmt_seconds(e["seconds_per_image"]["refined_total"])])
        if cond_row:
            rows.insert(0, ["conditioner", *metric_cells(cond_row["metrics"].get("conditioner")),
                            fmt_seconds(cond_row["seconds_per_image"]["conditioner"])])
        out += md_table(["steps", *(METRIC_HEADERS[m] for m in METRICS), "s / image"], rows)
        out += ["", f"**{DATASET_TITLES[d]}**: ensemble ({budget['fig7_ensemble_steps']} steps)", ""]
        rows = []
        for n in budget["fig7_ensembles"]:
            for red in (("mean",) if n == 1 else ("mean", "median")):
                e = idx.get((run, "main", d, budget["fig7_ensemble_steps"], n, red))
                if e:
                    rows.append([str(n), red if n > 1 else "–", *metric_cells(e["metrics"].get("refined")),
                                 fmt_seconds(e["seconds_per_image"]["refined_total"])])
        out += md_table(["members", "reduction", *(METRIC_HEADERS[m] for m in METRICS), "s / image"], rows)
        out.append("")
    return out


def render_rows(title: str, intro: str, exp: dict, budget: dict) -> list[str]:
    idx = index_evals(exp["evals"])
    steps, ens = table_setting(budget)
    out = [title, "", intro, ""]
    for d in exp_datasets(exp):
        out += [f"**{DATASET_TITLES[d]}**", ""]
        rows = []
        for label, run in exp["rows"].items():
            e = idx.get((run, "main", d, steps, ens, "mean"))
            if e:
                rows.append([label, *metric_cells(e["metrics"].get("refined")),
                             fmt_metric("abs_rel", e["metrics"].get("conditioner", {}).get("abs_rel"))])
        out += md_table(["run", *(METRIC_HEADERS[m] for m in METRICS), "conditioner AbsRel %"], rows)
        out.append("")
    out += _training_table(exp, list(exp["rows"].values()))
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
        lines += md_table(["claim", "measured here", "verdict"],
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

