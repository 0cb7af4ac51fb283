"""training.reproduce (behind bench/reproduce.py): the planner, recipe overrides, the classical
conditioner, the DPT conditioner, the report, and the script end to end."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from betterdepth_cli.evaluation.runner import jsonable
from training.reproduce.claims import claims
from training.reproduce.classical import blur_affine
from training.reproduce.plan import (BUDGETS, EXPERIMENTS, RESULTS_FORMAT, make_run, parse_only, plan,
                                     plan_experiment, run_overrides)
from training.reproduce.report import extract_discussion, render_report
from training.reproduce.results import edge_f1, paired_diff

ROOT = Path(__file__).resolve().parents[1]
QUICK = BUDGETS["quick"]
FULL = BUDGETS["full"]


# --------------------------------------------------------------------------- planner


def _flags(run):
    return (run.depth_conditioning, run.prealign, run.patch_mask)


def test_ablation_plans_four_runs_with_the_paper_switches():
    p = plan_experiment("ablation", QUICK)
    assert [r.name for r in p["runs"]] == ["nocond", "cond", "cond-prealign", "full", "nocond-seed1", "full-seed1"]
    assert [_flags(r) for r in p["runs"]] == [(False, False, False), (True, False, False), (True, True, False),
                                              (True, True, True), (False, False, False), (True, True, True)]
    assert [r.seed for r in p["runs"]] == [0, 0, 0, 0, 1, 1]
    assert {(r.steps, r.patch_size, r.eta, r.train_size) for r in p["runs"]} == {(150, 8, 0.1, None)}
    assert p["needs"] == []
    assert p["replicates"] == {"no depth conditioning (Marigold-style), seed 1": "nocond-seed1",
                               "+ local patch masking (full), seed 1": "full-seed1"}
    assert [r.name for r in plan_experiment("ablation", replace(QUICK, replicate_seed=None))["runs"]] == [
        "nocond", "cond", "cond-prealign", "full"]
    # every run on every dataset, main conditioner, the table's inference setting
    assert len(p["evals"]) == 6 * 3
    assert {(e.conditioner, e.steps, e.ensemble, e.reduction) for e in p["evals"]} == {("main", 10, 1, "mean")}
    limits = {e.dataset: e.limit for e in p["evals"]}
    assert limits == {"synthetic": 16, "middlebury": None, "nyuv2": None}
    assert list(p["rows"].values()) == ["nocond", "cond", "cond-prealign", "full"]
    assert run_overrides(p["runs"][-1], QUICK, train_root="t", conditioner="c", cache_dir="d")["train.seed"] == 1


def test_plug_reuses_the_full_refiner_over_three_conditioners_and_adds_the_shipped_one():
    p = plan_experiment("plug", QUICK, datasets=["synthetic", "nyuv2"])
    assert [r.name for r in p["runs"]] == ["full", "shipped"]
    assert p["needs"] == ["dpt", "classical"]
    pairs = sorted((c, d) for c in ("main", "dpt", "classical") for d in ("synthetic", "nyuv2"))
    assert sorted((e.conditioner, e.dataset) for e in p["evals"] if e.run == "full") == pairs
    shipped = [e for e in p["evals"] if e.run == "shipped"]
    assert sorted((e.conditioner, e.dataset) for e in shipped) == pairs
    assert {(e.steps, e.ensemble) for e in shipped} == {(1, 2)}  # the shipped card's defaults: two mirrored members
    assert p["shipped"] == {"main": "shipped", "dpt": "shipped", "classical": "shipped"}


def test_steps_sweep_and_ensembles():
    p = plan_experiment("steps", QUICK, datasets=["synthetic", "middlebury"])
    syn = [e for e in p["evals"] if e.dataset == "synthetic"]
    assert [e.steps for e in syn if e.ensemble == 1] == [1, 2, 4, 10, 50]
    ens = [(e.ensemble, e.reduction) for e in syn if e.steps == QUICK.fig7_ensemble_steps]
    # (1, mean) at 10 steps is the sweep's 10-step point, planned once
    assert ens == [(1, "mean"), (3, "mean"), (3, "median"), (10, "mean"), (10, "median")]
    assert {e.limit for e in syn} == {QUICK.fig7_samples}
    assert {e.limit for e in p["evals"] if e.dataset == "middlebury"} == {None}
    assert len(p["evals"]) == 2 * (5 + 4)


def test_size_runs_use_subsets_of_the_same_recipe():
    p = plan_experiment("size", QUICK)
    assert [(r.name, r.train_size) for r in p["runs"]] == [("full-n100", 100), ("full-n400", 400), ("full", None)]
    assert all(_flags(r) == (True, True, True) and r.steps == QUICK.steps for r in p["runs"])


def test_hparams_at_a_reduced_budget_get_their_own_reference():
    p = plan_experiment("hparams", FULL)
    got = [(r.name, r.patch_size, r.eta, r.steps) for r in p["runs"]]
    assert got == [("full-s1000", 8, 0.1, 1000), ("full-w16-s1000", 16, 0.1, 1000), ("full-w32-s1000", 32, 0.1, 1000),
                   ("full-eta0.05-s1000", 8, 0.05, 1000), ("full-eta0.2-s1000", 8, 0.2, 1000)]
    assert list(p["rows"]) == ["w = 8, eta = 0.1", "w = 16, eta = 0.1", "w = 32, eta = 0.1", "w = 8, eta = 0.05",
                               "w = 8, eta = 0.2"]
    # at the quick budget the reference is the shared full run
    assert plan_experiment("hparams", QUICK)["runs"][0].name == "full"


def test_plan_deduplicates_runs_and_evals_across_experiments():
    p = plan(EXPERIMENTS, QUICK)
    names = [r.name for r in p["runs"]]
    assert names == ["nocond", "cond", "cond-prealign", "full", "nocond-seed1", "full-seed1", "shipped", "full-n100",
                     "full-n400", "full-w16", "full-w32", "full-eta0.05", "full-eta0.2"]
    keys = [e.key for e in p["evals"]]
    assert len(keys) == len(set(keys))
    # the full refiner's standard evaluation is shared by ablation, plug and size
    assert keys.count("full__main__nyuv2__s10-e1-mean__nall") == 1
    assert len(plan(EXPERIMENTS, FULL)["runs"]) == 8 + 5 + 1  # + the shipped refiner (evaluated, not trained)


def test_make_run_names_and_normalises_unused_switches():
    r = make_run(QUICK, depth_conditioning=False, patch_size=16, eta=0.2)
    assert (r.name, r.prealign, r.patch_mask, r.patch_size, r.eta) == ("nocond", False, False, 8, 0.1)
    assert make_run(QUICK, prealign=False).name == "cond-mask"
    assert make_run(QUICK, train_size=400, steps=75).name == "full-n400-s75"
    assert make_run(QUICK, depth_conditioning=False, seed=2).name == "nocond-seed2"


def test_parse_only():
    assert parse_only(None) == list(EXPERIMENTS)
    assert parse_only("steps, ablation") == ["ablation", "steps"]
    with pytest.raises(ValueError, match="unknown experiment 'table9'"):
        parse_only("ablation,table9")


def test_run_overrides_make_a_valid_recipe():
    from training.config import load_recipe

    run = make_run(QUICK, prealign=False, patch_mask=False, train_size=3)
    ids = [f"{i:06d}" for i in range(10)]
    ov = run_overrides(run, QUICK, train_root="/data/train", conditioner="hf:/c", cache_dir="/tmp/c", train_ids=ids)
    recipe = load_recipe(ROOT / "training" / "recipes" / "reproduce-refiner.toml", ov)
    ob = recipe.objective
    assert (ob.depth_conditioning, ob.prealign, ob.patch_mask, ob.patch_size, ob.eta) == (True, False, False, 8, 0.1)
    assert recipe.train_sources() == [{"type": "folder", "root": "/data/train", "ids": ["000000", "000001", "000002"]}]
    assert (recipe.train.max_steps, recipe.train.batch_size, recipe.optim.warmup_steps) == (150, 8, 15)
    assert recipe.conditioner.name == "hf:/c" and recipe.data.cache_dir == "/tmp/c"
    assert recipe.validation_sources() == []
    assert recipe.model.block_out_channels == [32, 64, 128]
    with pytest.raises(ValueError, match="needs 3 training scenes"):
        run_overrides(run, QUICK, train_root="/d", conditioner="c", cache_dir="/c", train_ids=ids[:2])


# --------------------------------------------------------------------------- classical conditioner


def _fit(x, y, mask):
    a = np.stack([x[mask], np.ones(mask.sum())], 1)
    return np.linalg.lstsq(a, y[mask], rcond=None)[0]


def test_blur_affine_recovers_the_known_affine_on_smooth_ground_truth():
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float64)
    gt = 0.5 + 0.01 * xx + 0.02 * yy  # linear: a Gaussian blur keeps it away from the borders
    m = blur_affine(gt, np.ones_like(gt, bool), sigma=2.0, scale=0.5, shift=0.3)
    inner = np.zeros_like(gt, bool)
    inner[8:-8, 8:-8] = True
    s, b = _fit(gt, m.astype(np.float64), inner)
    assert s == pytest.approx(0.5, abs=1e-4) and b == pytest.approx(0.3, abs=1e-4)
    # and the map's least-squares alignment back to the GT inverts it: 1/0.5, -0.3/0.5
    s2, b2 = _fit(m.astype(np.float64), gt, inner)
    assert s2 == pytest.approx(2.0, abs=1e-3) and b2 == pytest.approx(-0.6, abs=1e-3)


def test_blur_affine_without_blur_is_exactly_affine_and_zero_fills():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.1, 2.0, (16, 20))
    known = rng.uniform(size=gt.shape) > 0.3
    m = blur_affine(gt, known, sigma=0.0, scale=2.0, shift=-0.5, fill="zero")
    np.testing.assert_allclose(m[known], 2.0 * gt[known] - 0.5, atol=1e-6)  # float32 output
    np.testing.assert_allclose(m[~known], -0.5)  # disparity 0 (sky), then the shift
    s, b = _fit(gt, m.astype(np.float64), known)
    assert (s, b) == (pytest.approx(2.0, abs=1e-5), pytest.approx(-0.5, abs=1e-5))


def test_blur_affine_blurs_edges_and_inpaints_holes():
    step = np.zeros((32, 32))
    step[:, 16:] = 1.0
    m = blur_affine(step, np.ones_like(step, bool), sigma=2.0, scale=1.0, shift=0.0)
    assert 0.05 < m[10, 15] < 0.5 < m[10, 16] < 0.95  # the edge is now a ramp
    hole = np.ones((32, 32), bool)
    hole[10:20, 10:20] = False
    flat = np.full((32, 32), 3.0)
    flat[~hole] = 1e6  # unknown values must not leak in
    m = blur_affine(flat, hole, sigma=1.0, scale=1.0, shift=0.0, fill="inpaint")
    assert np.isfinite(m).all()
    np.testing.assert_allclose(m, 3.0, rtol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        blur_affine(flat, hole, 1.0, -1.0, 0.0)


# --------------------------------------------------------------------------- report


def _metrics(abs_rel, delta1, dbe_comp=3.0, dbe_acc=2.0, ep=0.3, er=0.2):
    return {"abs_rel": abs_rel, "delta1": delta1, "dbe_comp": dbe_comp, "dbe_acc": dbe_acc, "ep": ep, "er": er}


def _eval(run, cond, dataset, steps, ens, red, refined, conditioner=None, seconds=0.5, per_image=None):
    out = {"run": run, "conditioner": cond, "dataset": dataset, "steps": steps, "ensemble": ens, "reduction": red,
           "limit": None, "samples": 5,
           "metrics": {"conditioner": conditioner or _metrics(0.08, 0.93, 5.0), "refined": refined},
           "seconds_per_image": {"conditioner": 0.02, "refiner": seconds, "refined_total": seconds + 0.02}}
    if per_image is not None:  # {variant: [abs_rel per image]} over images a, b, c
        out["per_image"] = {"ids": ["a", "b", "c"], **{v: {"abs_rel": x} for v, x in per_image.items()}}
    return out


def _run(name, **kw):
    base = {"name": name, "depth_conditioning": True, "prealign": True, "patch_mask": True, "patch_size": 8,
            "eta": 0.1, "train_size": None, "steps": 150, "train_seconds": 60.0, "seconds_per_step": 0.4,
            "final_loss": 0.05, "kept": 0.75}
    return {**base, **kw}


@pytest.fixture()
def results():
    b = jsonable(replace(QUICK, fig7_steps=(1, 2, 50), fig7_ensembles=(1, 10), fig7_ensemble_steps=2))
    ablation = {
        "rows": {"no depth conditioning (Marigold-style)": "nocond", "+ depth conditioning": "cond",
                 "+ global pre-alignment": "cond-prealign", "+ local patch masking (full)": "full"},
        "replicates": {"no depth conditioning (Marigold-style), seed 1": "nocond-seed1"},
        "runs": {"nocond": _run("nocond", kept=1.0), "full": _run("full"),
                 "nocond-seed1": _run("nocond-seed1", seed=1)},
        "evals": [_eval("nocond", "main", "nyuv2", 10, 1, "mean", _metrics(0.061, 0.90),
                        per_image={"refined": [0.05, 0.06, 0.073], "conditioner": [0.07, 0.08, 0.09]}),
                  _eval("cond", "main", "nyuv2", 10, 1, "mean", _metrics(0.052, 0.92)),
                  _eval("cond-prealign", "main", "nyuv2", 10, 1, "mean", _metrics(0.047, 0.95)),
                  _eval("full", "main", "nyuv2", 10, 1, "mean", _metrics(0.042, 0.97, 2.5, 1.5, 0.35, 0.3),
                        per_image={"refined": [0.04, 0.04, 0.046], "conditioner": [0.07, 0.08, 0.09]}),
                  _eval("nocond-seed1", "main", "nyuv2", 10, 1, "mean", _metrics(0.063, 0.90))],
    }
    plug = {"rows": {"main": "full", "dpt": "full", "classical": "full"},
            "evals": [_eval("full", "main", "nyuv2", 10, 1, "mean", _metrics(0.042, 0.97)),
                      _eval("full", "dpt", "nyuv2", 10, 1, "mean", _metrics(0.12, 0.85),
                            conditioner=_metrics(0.10, 0.88)),
                      _eval("full", "classical", "nyuv2", 10, 1, "mean", _metrics(0.03, 0.98, 4.0, 2.0, 0.3, 0.6),
                            conditioner=_metrics(0.01, 0.99, 6.0, 5.0, 0.4, 0.1))]}
    steps = {"rows": {"full": "full"},
             "evals": [_eval("full", "main", "nyuv2", 1, 1, "mean", _metrics(0.05, 0.950)),
                       _eval("full", "main", "nyuv2", 2, 1, "mean", _metrics(0.045, 0.965), seconds=0.1),
                       _eval("full", "main", "nyuv2", 50, 1, "mean", _metrics(0.044, 0.968), seconds=2.0),
                       _eval("full", "main", "nyuv2", 2, 10, "mean", _metrics(0.043, 0.97)),
                       _eval("full", "main", "nyuv2", 2, 10, "median", _metrics(0.0435, 0.97))]}
    size = {"rows": {"100 scenes": "full-n100", "all scenes": "full"},
            "runs": {"full-n100": _run("full-n100", train_size=100)},
            "evals": [_eval("full-n100", "main", "nyuv2", 10, 1, "mean", _metrics(0.040, 0.97)),
                      _eval("full", "main", "nyuv2", 10, 1, "mean", _metrics(0.042, 0.97))]}
    hparams = {"rows": {"w = 8, eta = 0.1": "full", "w = 16, eta = 0.1": "full-w16"},
               "evals": [_eval("full", "main", "nyuv2", 10, 1, "mean", _metrics(0.042, 0.97)),
                         _eval("full-w16", "main", "nyuv2", 10, 1, "mean", _metrics(0.05, 0.96))]}
    return {"format": RESULTS_FORMAT, "command": "python bench/reproduce.py --quick", "git": {"commit": "abc123"},
            "budget": b, "seconds": 600, "finished": "2025-01-01T00:00:00+00:00",
            "machine": {"description": "2 CPU cores"},
            "invocations": [{"started": "2025-01-01T00:00:00+00:00", "commit": "abc123", "seconds": 540.0,
                             "trained": ["nocond", "full"], "evaluated": 7, "threads": 1, "load_start": 2.5,
                             "load_end": 2.0}],
            "conditioners": {"main": {"spec": "builtin"},
                             "dpt": {"spec": "hf:/x", "architecture": "DPTForDepthEstimation", "params_m": 1.2,
                                     "steps": 300, "data": {"kind": "indoor", "scenes": 400, "seed0": 5000000}}},
            "experiments": {"ablation": ablation, "plug": plug, "steps": steps, "size": size, "hparams": hparams}}


def test_report_renders_every_table_from_the_json(results):
    text = render_report(results)
    assert "commit: `abc123`" in text and "`python bench/reproduce.py --quick`" in text
    assert ("- invocation 1: 2025-01-01T00:00:00+00:00, commit `abc123`, 9.0 min, trained 2 refiner(s) (nocond, full), "
            "ran 7 evaluation(s), 1 thread(s), load average 2.5 -> 2.0") in text
    # compute: runs 60 + 60 + 60 + 60 s (nocond, full, nocond-seed1, full-n100) + evals without wall time
    assert ("this invocation 10.0 min; compute behind the numbers (training and evaluation, whichever invocation "
            "did it) 4.0 min") in text
    # Table 5: conditioner row then the four refiners, percent with 2 decimals, DBE in px, the paper's column
    assert "| conditioner alone | 8.00 | 93.00 | 5.00 | 2.00 | 30.00 | 20.00 | 0.020 | – |" in text
    assert "| + local patch masking (full) | 4.20 | 97.00 | 2.50 | 1.50 | 35.00 | 30.00 | 0.520 | 4.2 |" in text
    assert "| no depth conditioning (Marigold-style) | 6.10 | 90.00 |" in text
    assert "| `nocond` | 0 | 150 | all | 0.0500 | 100.0 | 0.400 | 60 |" in text
    assert "| no depth conditioning (Marigold-style), seed 1 | 6.30 | 90.00 |" in text
    assert "| `nocond-seed1` | 1 | 150 |" in text
    # Table 3: alone and refined rows per conditioner
    assert "| dpt alone | 10.00 | 88.00 |" in text and "| dpt + refiner | 12.00 | 85.00 |" in text
    assert "| classical + refiner | 3.00 | 98.00 | 4.00 | 2.00 | 30.00 | 60.00 | 0.520 |" in text
    assert "DPTForDepthEstimation, 1.2 M parameters, 300 training steps, 400 indoor scenes" in text
    # Fig. 7: steps rows with seconds, ensembles with reductions
    assert "| 50 | 4.40 | 96.80 | 3.00 | 2.00 | 30.00 | 20.00 | 2.020 |" in text
    assert "| 10 | median | 4.35 | 97.00 |" in text
    # size and hparams tables
    assert "| 100 scenes | 4.00 | 97.00 | 3.00 | 2.00 | 30.00 | 20.00 | 8.00 |" in text
    assert "| w = 16, eta = 0.1 | 5.00 | 96.00 |" in text


def test_report_claims_are_computed_verdicts(results):
    got = {c["claim"].split(":")[0]: c for c in claims(results)}
    assert got["Table 5"]["verdict"] == "holds"
    # full - nocond per image: -0.01, -0.02, -0.027 -> mean -1.90 pts, sample SE 0.49 pts
    assert got["Table 5"]["evidence"] == ("nyuv2: 6.10 -> 5.20 -> 4.70 -> 4.20 (monotone) "
                                          "(full - nocond -1.90 ± 0.49 pts, 3/3 images better); seed 1: 6.30")
    assert got["Tables 1/4"]["verdict"] == "holds"
    assert got["Tables 1/4"]["evidence"] == ("nyuv2: AbsRel 8.00 -> 4.20 (Δ -3.80 ± 0.42 pts, 3/3 images better), "
                                             "δ1 93.00 -> 97.00")
    assert got["Table 4"]["verdict"] == "holds"  # F1 24.00 -> 32.31, EP up, DBE_acc down
    assert got["Table 4"]["evidence"] == ("nyuv2: edge F1 24.00 -> 32.31 (EP 30.00 -> 35.00, ER 20.00 -> 30.00), "
                                          "DBE_acc 2.00 -> 1.50 px")
    assert got["Table 3"]["verdict"] == "does not hold"  # dpt 10.00 -> 12.00
    assert got["Table 3"]["evidence"] == "dpt/nyuv2: AbsRel 10.00 -> 12.00, δ1 88.00 -> 85.00"
    # more recall but less precision is not detail: F1 16 -> 40 yet EP 40 -> 30
    assert got["Detail recovery (Sec. 3.2)"]["verdict"] == "does not hold"
    assert got["Detail recovery (Sec. 3.2)"]["evidence"] == (
        "nyuv2: edge F1 16.00 -> 40.00 (EP 40.00 -> 30.00, ER 10.00 -> 60.00), DBE_acc 5.00 -> 2.00 px; "
        "AbsRel 1.00 -> 3.00")
    assert got["Fig. 7"]["verdict"] == "holds"  # 96.5 vs 96.8
    assert got["Sec. 4.3"]["verdict"] == "holds"
    assert got["Sec. 4.3"]["evidence"] == "nyuv2: δ1 96.50 with 1 member, 97.00 with 10 (0.120 vs 0.520 s/image)"
    assert got["Table A5"]["verdict"] == "holds"  # mean 4.30 <= median 4.35
    assert got["Table 2"]["verdict"] == "does not hold"  # 100 scenes beat all
    assert got["Appendix F"]["verdict"] == "holds"
    assert got["Appendix F"]["evidence"] == "nyuv2: best w = 8, eta = 0.1 (4.20 %), worst w = 16, eta = 0.1 (5.00 %)"
    # the ablation turns partial when one step goes the wrong way
    results["experiments"]["ablation"]["evals"][2]["metrics"]["refined"]["abs_rel"] = 0.055
    got = {c["claim"].split(":")[0]: c for c in claims(results)}
    assert got["Table 5"]["verdict"] == "does not hold"
    assert "(full best, not monotone)" in got["Table 5"]["evidence"]


def test_paired_diff_and_edge_f1():
    a = {"per_image": {"ids": ["x", "y", "z"], "refined": {"delta1": [0.9, 0.8, None]}}}
    b = {"per_image": {"ids": ["z", "y", "x"], "refined": {"delta1": [0.5, 0.9, 0.95]}}}
    p = paired_diff(a, b, "delta1")  # z is missing in a: pairs x (+0.05) and y (+0.1)
    assert p["n"] == 2 and p["better"] == 2
    assert p["mean"] == pytest.approx(0.075) and p["se"] == pytest.approx(0.025)
    assert paired_diff(a, {"metrics": {}}, "delta1") is None
    assert edge_f1({"ep": 0.5, "er": 0.25}) == pytest.approx(1 / 3)
    assert edge_f1({"ep": 0.0, "er": 0.0}) == 0.0 and edge_f1({}) is None


def test_report_keeps_the_hand_written_discussion(results):
    text = render_report(results, "The numbers disagree because the budget is tiny.")
    assert extract_discussion(text) == "The numbers disagree because the budget is tiny."
    again = render_report(results, extract_discussion(text))
    assert again == text
    assert extract_discussion(render_report(results)) == ""
    assert extract_discussion("no markers") == ""


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_smoke_run_trains_evaluates_reports_and_resumes(tmp_path, tiny_dpt_dir):
    """The whole script at the smoke budget on tiny rendered data (no real data): plumbing, not numbers."""
    import importlib.util
    import json

    from training.synthetic import write_dataset

    spec = importlib.util.spec_from_file_location("reproduce_script", ROOT / "bench" / "reproduce.py")
    reproduce = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reproduce)  # the script itself: its flags, then training.reproduce.runner

    train = write_dataset(tmp_path / "train", 6, seed0=0, size=64)
    val = write_dataset(tmp_path / "val", 3, seed0=1000000, size=64)
    out, report = tmp_path / "out", tmp_path / "RESULTS.md"
    argv = ["--smoke", "--out", str(out), "--conditioner", f"hf:{tiny_dpt_dir}", "--train-root", str(train),
            "--val-root", str(val), "--real-data", str(tmp_path / "no-real-data"), "--only", "ablation,plug,size",
            "--report", str(report)]
    assert reproduce.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["experiments"]) == ["ablation", "plug", "size"]
    assert list(res["datasets"]) == ["synthetic"]
    abl = res["experiments"]["ablation"]
    assert sorted(abl["runs"]) == ["cond", "cond-prealign", "full", "full-seed1", "nocond", "nocond-seed1"]
    assert abl["runs"]["full-seed1"]["seed"] == 1
    assert abl["runs"]["nocond"]["depth_conditioning"] is False and abl["runs"]["full"]["kept"] <= 1.0
    assert {e["dataset"] for e in abl["evals"]} == {"synthetic"}
    assert all(set(e["metrics"]) == {"conditioner", "guided", "refined"} for e in abl["evals"])
    assert all(len(e["per_image"]["ids"]) == len(e["per_image"]["refined"]["abs_rel"]) == 2 for e in abl["evals"])
    plug = res["experiments"]["plug"]
    assert {e["conditioner"] for e in plug["evals"]} == {"main", "dpt", "classical"}
    assert plug["runs"]["shipped"]["shipped"] is True
    assert {e["run"] for e in plug["evals"]} == {"full", "shipped"}
    assert res["conditioners"]["dpt"]["architecture"] == "DPTForDepthEstimation"
    assert res["experiments"]["size"]["runs"]["full-n4"]["train_size"] == 4
    text = report.read_text()
    assert "## Table 5: ablation of the training objective" in text and "| dpt + refiner |" in text
    assert "| dpt + shipped refiner |" in text and "| classical + guided filter |" in text
    # a second run trains nothing and re-evaluates nothing; the report keeps its discussion
    report.write_text(text.replace("(not written yet)", "kept"))
    assert reproduce.main(argv) == 0
    log = (out / "reproduce.log").read_text().split("plan:")[-1]
    assert log.count("model exists, skipped") == 7 and "eval " not in log
    inv = json.loads((out / "results.json").read_text())["invocations"]
    # 6 ablation evaluations, plug's dpt and classical (its main one is the ablation's full) and the shipped
    # refiner's three, size's full-n4
    assert len(inv) == 2 and len(inv[0]["trained"]) == 7 and inv[0]["evaluated"] == 6 + 2 + 3 + 1
    assert inv[1]["trained"] == [] and inv[1]["evaluated"] == 0
    assert extract_discussion(report.read_text()) == "kept"
    # --report-only renders the same tables from the JSON
    assert reproduce.main(["--report-only", "--out", str(out), "--report", str(tmp_path / "again.md")]) == 0
    assert "| dpt + refiner |" in (tmp_path / "again.md").read_text()


TINY_DPT = {"arch": "dpt", "input_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 4,
            "num_attention_heads": 2, "intermediate_size": 64, "neck_hidden_sizes": [8, 16, 32, 32],
            "fusion_hidden_size": 16}


def test_dpt_conditioner_trains_through_the_conditioner_loop_once_and_loads(tmp_path):
    """The plug-and-play DPT: training.conditioner.train on the recipe, a summary, skipped when done."""
    import json

    import torch

    from betterdepth_cli.conditioner_registry import get_conditioner
    from training.reproduce.conditioner import train_dpt_conditioner
    from training.synthetic import write_dataset

    data = write_dataset(tmp_path / "scenes", 3, seed0=5000000, size=40, kind="indoor")
    recipe = {"data": {"kind": "indoor", "scenes": 3, "seed0": 5000000, "size": 40, "crop": 32},
              "model": TINY_DPT,
              "train": {"steps": 3, "batch_size": 2, "lr": 3e-4, "weight_decay": 1e-4, "warmup": 1, "seed": 0,
                        "log_every": 1, "device": "cpu"}}
    logs = []
    s = train_dpt_conditioner(recipe, data, data, tmp_path / "dpt", log=logs.append)
    assert s["path"] == str(tmp_path / "dpt" / "final") and s["architecture"] == "DPTForDepthEstimation"
    assert s["steps"] == 3 and s["data"] == {"kind": "indoor", "scenes": 3, "seed0": 5000000, "size": 40}
    assert set(s["val_synthetic_mixed"]) == {"abs_rel", "delta1", "positive_scale"}
    assert np.isfinite(s["final_loss"]) and s["final_loss"] > 0
    # the loop logged every step; one checkpoint (the last step), evaluated once on the held-out scenes
    rows = [json.loads(line) for line in (tmp_path / "dpt" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3] and [r["step"] for r in rows if "val" in r] == [3]
    assert torch.load(tmp_path / "dpt" / "checkpoint.pt", weights_only=True)["step"] == 3
    model = torch.load(tmp_path / "dpt" / "checkpoint.pt", weights_only=True)["model"]
    assert s["params_m"] == round(sum(v.numel() for v in model.values()) / 1e6, 3)
    assert all(m.startswith("DPT conditioner: ") for m in logs)
    # done: read back, not retrained
    mtime = (tmp_path / "dpt" / "final" / "model.safetensors").stat().st_mtime_ns
    assert train_dpt_conditioner(recipe, data, data, tmp_path / "dpt", log=logs.append) == s
    assert (tmp_path / "dpt" / "final" / "model.safetensors").stat().st_mtime_ns == mtime
    cond = get_conditioner(f"hf:{s['path']}")
    assert cond.predict(torch.rand(1, 3, 30, 40)).values.shape == (1, 1, 30, 40)


def test_dpt_recipe_builds_the_plain_vit_dpt():
    import tomllib

    from training.conditioner import build_model

    recipe = tomllib.loads((ROOT / "training" / "recipes" / "reproduce-dpt-conditioner.toml").read_text())
    model = build_model(recipe["model"])
    assert type(model).__name__ == "DPTForDepthEstimation" and not model.config.is_hybrid
    assert (model.config.image_size, model.config.patch_size, model.config.hidden_size) == (160, 16, 96)
    # the size docs/RESULTS.md reports for it
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == 0.822
