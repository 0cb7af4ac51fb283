"""The paper's claims checked against the measured numbers, each with its evidence and a verdict.

:func:`claims` gathers one group per experiment in the results; each group is a
function of that experiment's record and the tables' inference setting.
"""

from __future__ import annotations

from typing import Any, Iterator

from training.reproduce.plan import shipped_defaults
from training.reproduce.results import (edge_f1, exp_datasets, find_eval, fmt_paired, fmt_pct, fmt_seconds,
                                        paired_diff, table_setting)

Claim = dict[str, Any]


def refined_abs_rel_series(exp: dict, order: list, steps, ens) -> Iterator[tuple[str, list, list]]:
    """Per dataset of ``exp``: (dataset, evaluations of the rows in ``order``, their refined
    AbsRel), for the datasets where every row has been evaluated."""
    for d in exp_datasets(exp):
        es = [find_eval(exp, r, "main", d, steps, ens) for r in order]
        vals = [(e or {}).get("metrics", {}).get("refined", {}).get("abs_rel") for e in es]
        if not any(v is None for v in vals):
            yield d, es, vals


def verdict(ok: int, n: int) -> str:
    if n == 0:
        return "not measured"
    return "holds" if ok == n else ("does not hold" if ok == 0 else "partly")


def make_claim(claim: str, evidence: list[str], ok: int, n: int) -> Claim:
    """One row of the claims table: ``ok`` of ``n`` datasets (or conditioners) agree with the claim."""
    return {"claim": claim, "evidence": "; ".join(evidence), "verdict": verdict(ok, n)}


def edge_detail(c: dict, r: dict) -> tuple[bool, str]:
    """Refined edges better than the conditioner's: edge F1 up, EP and DBE_acc not worse."""
    fc, fr = edge_f1(c), edge_f1(r)
    if fc is None or fr is None or c.get("dbe_acc") is None or r.get("dbe_acc") is None:
        return False, "no edge metrics"
    ok = fr > fc and r["ep"] >= c["ep"] and r["dbe_acc"] <= c["dbe_acc"]
    no_edges = c["ep"] == 0 and c["er"] == 0
    note = " (the conditioner's map has no detected edges: DBE capped at 10 px)" if no_edges else ""
    return ok, (f"edge F1 {fmt_pct(fc)} -> {fmt_pct(fr)} (EP {fmt_pct(c['ep'])} -> {fmt_pct(r['ep'])}, "
                f"ER {fmt_pct(c['er'])} -> {fmt_pct(r['er'])}), DBE_acc {c['dbe_acc']:.2f} -> {r['dbe_acc']:.2f} "
                f"px{note}")


def _variants(e: dict) -> tuple[dict, dict]:
    """An evaluation's conditioner and refined metrics."""
    return e["metrics"].get("conditioner", {}), e["metrics"].get("refined", {})


def ablation_order_claim(exp: dict, budget: dict) -> Claim:
    """Table 5: refined AbsRel falls with each component of the objective."""
    steps, ens = table_setting(budget)
    order = list(exp["rows"].values())
    reps = exp.get("replicates", {})
    ok = n = 0
    ev = []
    for d, es, vals in refined_abs_rel_series(exp, order, steps, ens):
        n += 1
        mono = all(vals[i + 1] < vals[i] for i in range(len(vals) - 1))
        ok += mono
        text = f"{d}: " + " -> ".join(fmt_pct(v) for v in vals)
        text += " (monotone)" if mono else (" (full best, not monotone)" if vals[-1] == min(vals) else
                                           " (not monotone)")
        text += fmt_paired(paired_diff(es[0], es[-1], "abs_rel")).replace("Δ", "full - nocond")
        rep = [(find_eval(exp, r, "main", d, steps, ens) or {}).get("metrics", {}).get("refined", {}).get("abs_rel")
               for r in reps.values()]
        if reps and all(v is not None for v in rep):
            text += f"; seed {budget.get('replicate_seed')}: " + " / ".join(fmt_pct(v) for v in rep)
        ev.append(text)
    return make_claim("Table 5: each component (depth conditioning, pre-alignment, patch masking) lowers AbsRel",
                      ev, ok, n)


def full_refiner_claims(exp: dict, budget: dict) -> list[Claim]:
    """Tables 1/4: the full refiner against its own conditioner, accuracy and edges."""
    steps, ens = table_setting(budget)
    full = list(exp["rows"].values())[-1]
    acc = [0, 0, []]
    det = [0, 0, []]
    for d in exp_datasets(exp):
        e = find_eval(exp, full, "main", d, steps, ens)
        if not e:
            continue
        c, r = _variants(e)
        if c.get("abs_rel") is not None and r.get("abs_rel") is not None:
            acc[1] += 1
            acc[0] += r["abs_rel"] < c["abs_rel"] and r["delta1"] > c["delta1"]
            acc[2].append(f"{d}: AbsRel {fmt_pct(c['abs_rel'])} -> {fmt_pct(r['abs_rel'])}"
                          + fmt_paired(paired_diff(e, e, "abs_rel", "conditioner", "refined"))
                          + f", δ1 {fmt_pct(c['delta1'])} -> {fmt_pct(r['delta1'])}")
        good, text = edge_detail(c, r)
        det[1] += 1
        det[0] += good
        det[2].append(f"{d}: {text}")
    return [make_claim("Tables 1/4: the refiner improves AbsRel and δ1 over its own conditioner", acc[2], acc[0],
                       acc[1]),
            make_claim("Table 4: the refiner sharpens edges over its own conditioner (edge F1 up, EP and DBE_acc not "
                       "worse)", det[2], det[0], det[1])]


def plug_claim(exp: dict, budget: dict) -> Claim:
    """Table 3: the full refiner over a learned conditioner of another architecture."""
    steps, ens = table_setting(budget)
    run = exp["rows"]["main"]
    ok = n = 0
    ev = []
    for c in exp["rows"]:
        if c in ("main", "classical"):
            continue
        for d in exp_datasets(exp):
            e = find_eval(exp, run, c, d, steps, ens)
            if not e:
                continue
            a, r = _variants(e)
            if a.get("abs_rel") is None or r.get("abs_rel") is None:
                continue
            n += 1
            ok += r["abs_rel"] < a["abs_rel"]
            ev.append(f"{c}/{d}: AbsRel {fmt_pct(a['abs_rel'])} -> {fmt_pct(r['abs_rel'])}"
                      + fmt_paired(paired_diff(e, e, "abs_rel", "conditioner", "refined"))
                      + f", δ1 {fmt_pct(a['delta1'])} -> {fmt_pct(r['delta1'])}")
    return make_claim("Table 3: plug-and-play, the refiner improves a conditioner of another architecture it was not "
                      "trained with (AbsRel)", ev, ok, n)


def shipped_claim(exp: dict, shipped: str) -> Claim:
    """The shipped refiner (at its card's defaults) over the conditioners it never saw: edges restored, AbsRel kept."""
    ok = n = 0
    ev = []
    for c in exp["shipped"]:
        if c == "main":
            continue
        for d in exp_datasets(exp):
            e = find_eval(exp, shipped, c, d, *shipped_defaults())
            if not e:
                continue
            a, r = _variants(e)
            good, text = edge_detail(a, r)
            n += 1
            ok += good and r.get("abs_rel", 1) <= 1.05 * a.get("abs_rel", 0)
            ev.append(f"{c}/{d}: AbsRel {fmt_pct(a.get('abs_rel'))} -> {fmt_pct(r.get('abs_rel'))}; {text}")
    return make_claim("Plug-and-play with the shipped refiner (residual over the guided filter, "
                      "training/recipes/default-refiner-guided.toml): over conditioners it never saw, edges restored "
                      "(edge F1 up, EP and DBE_acc not worse) with AbsRel at most 1.05 x the conditioner's", ev, ok, n)


def classical_claim(exp: dict, budget: dict) -> Claim:
    """Sec. 3.2: over the blurred, affinely distorted ground truth the refiner restores edges."""
    steps, ens = table_setting(budget)
    run = exp["rows"]["main"]
    ok = n = 0
    ev = []
    for d in exp_datasets(exp):
        e = find_eval(exp, run, "classical", d, steps, ens)
        if not e:
            continue
        c, r = _variants(e)
        good, text = edge_detail(c, r)
        n += 1
        ok += good
        ev.append(f"{d}: {text}; AbsRel {fmt_pct(c.get('abs_rel'))} -> {fmt_pct(r.get('abs_rel'))}")
    return make_claim("Detail recovery (Sec. 3.2): over a blurred, affinely distorted ground truth the refiner "
                      "restores edges (edge F1 up, EP and DBE_acc not worse)", ev, ok, n)


def plug_claims(exp: dict, budget: dict) -> list[Claim]:
    out = [plug_claim(exp, budget)]
    shipped = next(iter((exp.get("shipped") or {}).values()), None)
    if shipped:
        out.append(shipped_claim(exp, shipped))
    if "classical" in exp["rows"]:
        out.append(classical_claim(exp, budget))
    return out


def few_steps_claim(exp: dict, budget: dict) -> Claim:
    """Fig. 7: a few DDIM steps are within 1 δ1 point of the most steps."""
    run = exp["rows"]["full"]
    fs = list(budget["fig7_steps"])
    lo_s, hi_s = (2 if 2 in fs else fs[0]), max(fs)
    ok = n = 0
    ev = []
    for d in exp_datasets(exp):
        e2, e50 = find_eval(exp, run, "main", d, lo_s, 1), find_eval(exp, run, "main", d, hi_s, 1)
        if not (e2 and e50):
            continue
        a, z = e2["metrics"]["refined"].get("delta1"), e50["metrics"]["refined"].get("delta1")
        if a is None or z is None:
            continue
        n += 1
        ok += abs(a - z) <= 0.01
        ev.append(f"{d}: δ1 {fmt_pct(a)} at {lo_s} steps vs {fmt_pct(z)} at {hi_s} "
                  f"({fmt_seconds(e2['seconds_per_image']['refined_total'])} vs "
                  f"{fmt_seconds(e50['seconds_per_image']['refined_total'])} s/image)")
    return make_claim(f"Fig. 7: a few steps suffice ({lo_s} steps within 1 δ1 point of {hi_s})", ev, ok, n)


def ensemble_claims(exp: dict, budget: dict) -> list[Claim]:
    """Sec. 4.3 and Table A5: the largest ensemble against one member, mean against median."""
    run = exp["rows"]["full"]
    s, big = int(budget["fig7_ensemble_steps"]), max(budget["fig7_ensembles"])
    gain = [0, 0, []]
    red = [0, 0, []]
    for d in exp_datasets(exp):
        e1 = find_eval(exp, run, "main", d, s, 1)
        em, ed = find_eval(exp, run, "main", d, s, big, "mean"), find_eval(exp, run, "main", d, s, big, "median")
        if not (e1 and em and ed):
            continue
        r1, rm, rd = (x["metrics"]["refined"] for x in (e1, em, ed))
        gain[1] += 1
        gain[0] += abs(rm["delta1"] - r1["delta1"]) <= 0.01
        gain[2].append(f"{d}: δ1 {fmt_pct(r1['delta1'])} with 1 member, {fmt_pct(rm['delta1'])} with {big} "
                       f"({fmt_seconds(e1['seconds_per_image']['refined_total'])} vs "
                       f"{fmt_seconds(em['seconds_per_image']['refined_total'])} s/image)")
        red[1] += 1
        red[0] += rm["abs_rel"] <= rd["abs_rel"]
        red[2].append(f"{d}: AbsRel {fmt_pct(rm['abs_rel'])} mean vs {fmt_pct(rd['abs_rel'])} median ({big} members)")
    return [make_claim(f"Sec. 4.3: ensembling gains little ({big} members within 1 δ1 point of one; paper: 0.4)",
                       gain[2], gain[0], gain[1]),
            make_claim("Table A5: mean ensembling is at least as good as median (AbsRel)", red[2], red[0], red[1])]


def size_claim(exp: dict, budget: dict) -> Claim:
    """Table 2: the whole training set gives the lowest refined AbsRel."""
    steps, ens = table_setting(budget)
    ok = n = 0
    ev = []
    for d, es, vals in refined_abs_rel_series(exp, list(exp["rows"].values()), steps, ens):
        n += 1
        ok += vals[-1] <= min(vals)
        ev.append(f"{d}: " + " -> ".join(fmt_pct(v) for v in vals)
                  + fmt_paired(paired_diff(es[0], es[-1], "abs_rel")).replace("Δ", "all - smallest"))
    return make_claim("Table 2: more training data helps, a little (paper, NYUv2 AbsRel: 400 / 2K / 74K pairs 4.6 / "
                      "4.4 / 4.2); here AbsRel %, smallest set first", ev, ok, n)


def hparams_claim(exp: dict, budget: dict) -> Claim:
    """Appendix F: w = 8, eta = 0.1 gives the lowest refined AbsRel."""
    steps, ens = table_setting(budget)
    rows = exp["rows"]
    ref = next((r for lbl, r in rows.items() if lbl.startswith("w = 8,")), None)
    ok = n = 0
    ev = []
    for d in exp_datasets(exp):
        found = {lbl: find_eval(exp, r, "main", d, steps, ens) for lbl, r in rows.items()}
        vals = {lbl: (e or {}).get("metrics", {}).get("refined", {}).get("abs_rel") for lbl, e in found.items()}
        vals = {k: v for k, v in vals.items() if v is not None}
        if not vals or ref is None:
            continue
        best, worst = min(vals, key=vals.get), max(vals, key=vals.get)
        n += 1
        ok += rows[best] == ref
        ev.append(f"{d}: best {best} ({fmt_pct(vals[best])} %), worst {worst} ({fmt_pct(vals[worst])} %)")
    return make_claim("Appendix F: w = 8, eta = 0.1 is the best setting (AbsRel)", ev, ok, n)


def claims(results: dict) -> list[Claim]:
    """Each paper claim the experiments test, with the measured evidence and a verdict.

    Returns ``[{"claim", "evidence", "verdict"}]``; verdict is ``holds`` (on every
    dataset), ``partly``, ``does not hold`` or ``not measured``. Differences carry the
    paired standard error over images where the evaluations kept per-image rows.
    """
    b = results["budget"]
    exps = results.get("experiments", {})
    out: list[Claim] = []
    if "ablation" in exps:
        out += [ablation_order_claim(exps["ablation"], b), *full_refiner_claims(exps["ablation"], b)]
    if "plug" in exps:
        out += plug_claims(exps["plug"], b)
    if "steps" in exps:
        out += [few_steps_claim(exps["steps"], b), *ensemble_claims(exps["steps"], b)]
    if "size" in exps:
        out.append(size_claim(exps["size"], b))
    if "hparams" in exps:
        out.append(hparams_claim(exps["hparams"], b))
    return out
