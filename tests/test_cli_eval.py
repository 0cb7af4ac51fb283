"""`betterdepth eval` end to end through typer's CliRunner: tiny real models, fabricated and real data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import real_data_dir
from typer.testing import CliRunner

from betterdepth_cli.cli.app import app
from betterdepth_cli.evaluation.metrics import ALL_METRICS

H, W = 48, 64


def run(*args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def make_nyu(root: Path, n: int = 3) -> list[tuple[str, np.ndarray]]:
    """Marigold's NYUv2 layout: test/<scene>/rgb_XXXX.png + depth_XXXX.png (uint16 mm). Returns (id, depth m)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(1, n + 1):
        scene = root / "test" / f"room_{i:04d}"
        scene.mkdir(parents=True)
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        assert cv2.imwrite(str(scene / f"rgb_{i:04d}.png"), rgb)
        # a depth step 1.5 m | 3 m with the column between at 2 m (the mean inverse depth): one
        # Canny edge without float ties, so float32 predictions find exactly the same edge
        mm = np.full((H, W), 1500, np.uint16)
        mm[:, W // 2 + 1 :] = 3000
        mm[:, W // 2] = 2000
        mm[0, :] = 0  # no data
        assert cv2.imwrite(str(scene / f"depth_{i:04d}.png"), mm)
        out.append((f"test/room_{i:04d}/rgb_{i:04d}", mm / 1000.0))
    return out


def make_folder(root: Path, pred_dir: Path, ids=("000000", "000001", "000002")) -> None:
    """A `folder` dataset (rgb/<id>.png + depth/<id>.npy in metres, as `synth` writes) whose ground truth of
    sample i is 2 (i + 1) m everywhere, and metric predictions 1.25 x the ground truth in ``pred_dir``: with
    --alignment none, AbsRel is 0.25 and RMSE 0.5 (i + 1) m for every sample."""
    rng = np.random.default_rng(0)
    for dirname in ("rgb", "depth"):
        (root / dirname).mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for i, sid in enumerate(ids):
        assert cv2.imwrite(str(root / "rgb" / f"{sid}.png"), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        depth = np.full((H, W), 2.0 * (i + 1), np.float32)
        np.save(root / "depth" / f"{sid}.npy", depth)
        np.save(pred_dir / f"{sid}.npy", 1.25 * depth)
    (root / "dataset.toml").write_text('images = "rgb"\nground_truth = "depth"\nkind = "depth"\nunits = "m"\n')


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_help_lists_the_protocol_flags():
    res = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    for flag in ("--dataset", "--data-root", "--split-file", "--limit", "--conditioner", "--model", "--no-refine",
                 "--compare", "--save-predictions", "--output", "--csv", "--edge-threshold", "--dataset-option"):
        assert flag in res.output, flag


def test_perfect_file_predictions_score_perfectly(tmp_path):
    """Precomputed disparity (1/gt - 0.3) / 2 through the file: conditioner: the protocol must undo it exactly."""
    samples = make_nyu(tmp_path / "nyu")
    pred_dir = tmp_path / "preds"
    for sid, depth in samples:
        disp = np.where(depth > 0, (1.0 / np.maximum(depth, 1e-9) - 0.3) / 2.0, 0.5).astype(np.float32)
        (pred_dir / sid).parent.mkdir(parents=True, exist_ok=True)
        np.save(pred_dir / f"{sid}.npy", disp)
    out = tmp_path / "r.json"
    res = run("--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--conditioner", f"file:{pred_dir}?kind=disparity",
              "--no-refine", "--output", out, "--device", "cpu", "--dataset-option", "eigen_crop=false")
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    m = data["metrics"]["conditioner"]
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert m["rmse"] == pytest.approx(0.0, abs=1e-5)
    assert m["delta1"] == 1.0
    assert m["dbe_acc"] == pytest.approx(0.0, abs=1e-6) and m["dbe_comp"] == pytest.approx(0.0, abs=1e-6)
    assert m["ep"] == 1.0 and m["er"] == 1.0
    assert data["conditioner"]["kind"] == "disparity" and data["model"] is None
    rows = read_csv(tmp_path / "r_per_sample.csv")
    assert [r["id"] for r in rows] == [s for s, _ in samples]
    assert all(float(r["scale"]) == pytest.approx(2.0, rel=1e-4) and float(r["shift"]) == pytest.approx(0.3, rel=1e-4)
               for r in rows)
    assert "abs_rel %" in res.stdout and "100.00" in res.stdout


def test_compare_with_tiny_models_writes_json_and_csv(tmp_path, tiny_dpt_dir, tiny_model_dir):
    make_nyu(tmp_path / "nyu")
    out = tmp_path / "out" / "results.json"
    out.parent.mkdir()
    csv_path = tmp_path / "per_sample.csv"
    preds = tmp_path / "raw"
    res = run("--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--conditioner", f"hf:{tiny_dpt_dir}",
              "--model", tiny_model_dir, "--compare", "--steps", "2", "--ensemble", "1", "--processing-res", "64",
              "--seed", "3", "--batch-size", "2", "--output", out, "--csv", csv_path, "--save-predictions", preds,
              "--device", "cpu")
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["format"] == "betterdepth-eval/1"
    assert data["samples"] == 3 and data["dataset"]["name"] == "nyuv2"
    assert set(data["metrics"]) == {"conditioner", "guided", "refined"}
    for variant in ("conditioner", "guided", "refined"):
        assert set(data["metrics"][variant]) == set(ALL_METRICS)
        assert 0.0 <= data["metrics"][variant]["delta1"] <= 1.0
    assert set(data["improvement"]) == set(ALL_METRICS)
    assert data["settings"] == {"conditioner": f"hf:{tiny_dpt_dir}", "steps": 2, "ensemble": 1, "reduction": "mean",
                                "processing_res": 64, "seed": 3, "device": "cpu", "dtype": "fp32", "batch_size": 2}
    assert {"torch", "numpy", "python", "diffusers", "transformers"} <= set(data["versions"])
    spi = data["seconds_per_image"]
    assert set(spi) == {"load", "conditioner", "encode", "sample", "decode", "score", "score_wait", "total"}
    # the wall-clock share: scoring counts by the time the main loop waited for it
    assert spi["total"] == pytest.approx(sum(v for k, v in spi.items() if k not in ("total", "score")), rel=1e-6)
    rows = read_csv(csv_path)
    assert len(rows) == 9 and [r["variant"] for r in rows[:3]] == ["conditioner", "guided", "refined"]
    assert set(ALL_METRICS) <= set(rows[0])
    # the raw predictions are the conditioner's and the refiner's outputs at image size
    saved = sorted(p.relative_to(preds).as_posix() for p in preds.rglob("*.npy"))
    assert saved == sorted(f"{v}/test/room_{i:04d}/rgb_{i:04d}.npy"
                           for v in ("conditioner", "guided", "refined") for i in (1, 2, 3))
    arr = np.load(preds / "refined/test/room_0001/rgb_0001.npy")
    # the guided variant is the classical filter of the conditioner's map, the photo as the guide
    import torch

    from betterdepth_cli.core.guided import guided_refine

    cond = torch.from_numpy(np.load(preds / "conditioner/test/room_0001/rgb_0001.npy"))[None, None]
    bgr = cv2.imread(str(tmp_path / "nyu" / "test/room_0001/rgb_0001.png"))
    photo = torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255)
    want = guided_refine(cond, photo.permute(2, 0, 1)[None])[0, 0].numpy()
    np.testing.assert_allclose(np.load(preds / "guided/test/room_0001/rgb_0001.npy"), want, rtol=1e-5, atol=1e-6)
    assert arr.shape == (H, W) and arr.dtype == np.float32
    assert json.loads((preds / "refined/test/room_0001/rgb_0001.json").read_text())["kind"] == "disparity"
    assert "change" in res.stdout and "better by" in res.stdout

    # anyone can re-score the saved predictions: the same numbers come back
    again = tmp_path / "again.json"
    res = run("--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--conditioner",
              f"file:{preds / 'refined'}?kind=disparity", "--no-refine", "--output", again, "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    rescored = json.loads(again.read_text())["metrics"]["conditioner"]
    for name in ALL_METRICS:
        assert rescored[name] == pytest.approx(data["metrics"]["refined"][name], rel=1e-5, abs=1e-9), name


def test_scoring_thread_gives_the_inline_results_in_order(tmp_path, tiny_dpt_dir, tiny_model_dir):
    import torch

    make_nyu(tmp_path / "nyu", n=4)
    csvs = {}
    threads = torch.get_num_threads()
    for workers in ("0", "1"):
        out = tmp_path / f"r{workers}.json"
        res = run("--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--conditioner", f"hf:{tiny_dpt_dir}",
                  "--model", tiny_model_dir, "--compare", "--steps", "1", "--processing-res", "64", "--seed", "1",
                  "--score-workers", workers, "--output", out, "--device", "cpu")
        assert res.exit_code == 0, res.output
        csvs[workers] = read_csv(tmp_path / f"r{workers}_per_sample.csv")
        assert torch.get_num_threads() == threads  # the scoring thread's core is given back to torch
    inline, threaded = csvs["0"], csvs["1"]
    assert [(r["id"], r["variant"]) for r in threaded] == [(r["id"], r["variant"]) for r in inline]
    assert len(inline) == 12  # 4 samples x (conditioner, guided, refined)
    for a, b in zip(inline, threaded):  # equal up to summation order (NumPy's SIMD sums depend on alignment)
        if a["variant"] == "guided":
            # the random tiny conditioner's map is nearly constant, so its guided filter is even flatter and
            # the eval's least-squares alignment is ill-conditioned: the 1e-15 that the inference's thread
            # count (one fewer with the scoring thread) changes in the conditioner moves these scores
            continue
        assert [float(a[k]) for k in ALL_METRICS] == pytest.approx([float(b[k]) for k in ALL_METRICS], rel=1e-7, nan_ok=True)
    # inline, the loop waits for all of the scoring
    assert all(r["seconds_score_wait"] == r["seconds_score"] for r in inline)
    assert run("--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--score-workers", "2").exit_code == 64


def test_usage_and_data_errors(tmp_path):
    make_nyu(tmp_path / "nyu", n=1)
    root = tmp_path / "nyu"
    res = run("--dataset", "nyuv2", "--data-root", tmp_path / "missing", "--no-refine", "--device", "cpu")
    assert res.exit_code == 66
    assert "nyuv2: data root" in res.stderr and "does not exist" in res.stderr
    res = run("--dataset", "nyu", "--data-root", root, "--no-refine", "--device", "cpu")
    assert res.exit_code == 64 and "unknown dataset 'nyu'; valid datasets: nyuv2" in res.stderr
    assert "sequences (temporal metrics): synth-seq, tum" in res.stderr
    res = run("--dataset", "nyuv2", "--data-root", root, "--no-refine", "--compare", "--device", "cpu")
    assert res.exit_code == 64 and "--compare" in res.stderr
    res = run("--dataset", "nyuv2", "--data-root", root, "--no-refine", "--dataset-option", "eigen", "--device", "cpu")
    assert res.exit_code == 64 and "`--dataset-option` must be KEY=VALUE" in res.stderr
    res = run("--dataset", "nyuv2", "--data-root", root, "--no-refine", "--metrics", "abs_rel,absrel", "--device", "cpu")
    assert res.exit_code == 64 and "unknown metric 'absrel'" in res.stderr
    res = run("--dataset", "nyuv2", "--data-root", root, "--no-refine", "--output", tmp_path / "nope" / "r.json",
              "--device", "cpu")
    assert res.exit_code == 73 and "does not exist" in res.stderr
    res = run("--data-root", root)
    assert res.exit_code == 64 and "`--dataset` is required" in res.stderr
    (root / "test/room_0001/depth_0001.png").unlink()
    split = tmp_path / "split.txt"
    split.write_text("test/room_0001/rgb_0001.png test/room_0001/depth_0001.png\n")
    res = run("--dataset", "nyuv2", "--data-root", root, "--split-file", split, "--no-refine", "--device", "cpu")
    assert res.exit_code == 65
    assert "depth_0001.png (line 1 of" in res.stderr and "not found, expected" in res.stderr


def test_config_file_supplies_options(tmp_path):
    samples = make_nyu(tmp_path / "nyu", n=1)
    pred_dir = tmp_path / "preds"
    sid, depth = samples[0]
    (pred_dir / sid).parent.mkdir(parents=True)
    np.save(pred_dir / f"{sid}.npy", (1.5 * depth + 0.2).astype(np.float32))
    cfg = tmp_path / "eval.toml"
    cfg.write_text(f'[eval]\ndataset = "nyuv2"\ndata-root = "{tmp_path / "nyu"}"\nno-refine = true\n'
                   f'conditioner = "file:{pred_dir}?kind=depth"\nmetrics = ["abs_rel", "delta1"]\ndevice = "cpu"\n')
    out = tmp_path / "r.json"
    res = run("--config", cfg, "--output", out)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert set(data["metrics"]["conditioner"]) == {"abs_rel", "delta1"}
    assert data["metrics"]["conditioner"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)  # depth-space fit undoes 1.5x + 0.2
    assert data["protocol"]["alignment_space"] == "depth"


@pytest.mark.real_data
@pytest.mark.parametrize("name,folder", [("middlebury", "middlebury2005"), ("nyuv2", "nyuv2")])
def test_real_samples_end_to_end(tmp_path, tiny_dpt_dir, tiny_model_dir, name, folder):
    root = real_data_dir() / folder
    if not root.is_dir():
        pytest.skip(f"real data not found in {root}")
    out = tmp_path / "r.json"
    res = run("--dataset", name, "--data-root", root, "--limit", "2", "--conditioner", f"hf:{tiny_dpt_dir}",
              "--model", tiny_model_dir, "--compare", "--processing-res", "64", "--output", out, "--device", "cpu")
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["samples"] == 2 and data["dataset"]["root"] == str(root)
    for variant in ("conditioner", "refined"):
        m = data["metrics"][variant]
        assert 0.0 < m["abs_rel"] < 1.0 and 0.0 < m["delta1"] <= 1.0
        assert 0.0 <= m["dbe_acc"] <= 10.0
    rows = read_csv(tmp_path / "r_per_sample.csv")
    assert len(rows) == 6 and all(float(r["seconds_total"]) > 0 for r in rows)  # 2 samples x 3 variants


def test_scoring_thread_default_rule():
    from betterdepth_cli.evaluation.runner import scoring_thread_default

    assert scoring_thread_default(on_cpu=False, torch_threads=2, cores=2) == 1  # GPU inference: always overlap
    assert scoring_thread_default(on_cpu=True, torch_threads=1, cores=2) == 1  # a core is idle
    assert scoring_thread_default(on_cpu=True, torch_threads=2, cores=2) == 0  # torch fills both cores
    assert scoring_thread_default(on_cpu=True, torch_threads=16, cores=16) == 1  # one core of many


def test_save_predictions_stay_inside_the_folder_for_a_tar_with_dot_dot_members(tmp_path, tiny_dpt_dir):
    import tarfile

    make_nyu(tmp_path / "nyu", n=1)
    pack = tmp_path / "pack.tar"
    with tarfile.open(pack, "w") as tar:
        for f in sorted((tmp_path / "nyu").rglob("*.png")):
            rel = f.relative_to(tmp_path / "nyu").as_posix()
            tar.add(f, arcname=f"../../escape/{rel}")  # a hostile member name
    preds = tmp_path / "work" / "preds"
    preds.parent.mkdir()
    res = run("--dataset", "nyuv2", "--data-root", pack, "--conditioner", f"hf:{tiny_dpt_dir}", "--no-refine",
              "--save-predictions", preds, "--output", tmp_path / "work" / "r.json", "--device", "cpu")
    assert res.exit_code == 0, res.output
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npy"))
    assert written == ["work/preds/conditioner/escape/test/room_0001/rgb_0001.npy"]


def test_incomplete_middlebury_scene_exit_65_or_skipped_and_counted(tmp_path, tiny_dpt_dir):
    root = tmp_path / "mb"
    rng = np.random.default_rng(1)
    for scene in ("Art", "Books"):
        (root / scene).mkdir(parents=True)
        assert cv2.imwrite(str(root / scene / "view1.png"), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        disp = np.full((H, W), 60, np.uint8)
        disp[:, W // 2:] = 120
        assert cv2.imwrite(str(root / scene / "disp1.png"), disp)
        (root / scene / "dmin.txt").write_text("200\n")
    (root / "Books" / "dmin.txt").unlink()
    args = ("--dataset", "middlebury", "--data-root", root, "--conditioner", f"hf:{tiny_dpt_dir}", "--no-refine",
            "--device", "cpu", "--output", tmp_path / "r.json")
    res = run(*args)
    assert res.exit_code == 65 and "Books/dmin.txt: missing (needed by Books/view1.png)" in res.output
    res = run(*args, "--continue-on-error")
    assert res.exit_code == 3, res.output  # some samples failed (--continue-on-error), as refine's inputs
    assert "skipped" in res.output and "1 sample(s) skipped, 1 scored" in res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["samples"] == 1 and len(data["dataset"]["incomplete"]) == 1


def folder_args(root: Path, pred_dir: Path, *more) -> tuple:
    return ("--dataset", "folder", "--data-root", root, "--conditioner", f"file:{pred_dir}?kind=depth", "--no-refine",
            "--alignment", "none", "--metrics", "abs_rel,rmse", "--device", "cpu", *more)


def test_quiet_prints_the_results_table_on_stdout_and_nothing_on_stderr(tmp_path):
    """-q silences the progress and notes on stderr, never the result: without --output the table is the only one."""
    make_folder(tmp_path / "data", tmp_path / "preds", ids=("a", "b"))
    for more in ((), ("--output", tmp_path / "r.json")):
        res = run(*folder_args(tmp_path / "data", tmp_path / "preds", "-q", *more))
        assert res.exit_code == 0, res.output
        assert res.stderr == ""
        lines = res.stdout.splitlines()
        assert lines[0] == f"folder: 2 samples, conditioner file:{tmp_path / 'preds'}?kind=depth"
        # AbsRel 0.25 for both samples; RMSE 0.5 m and 1.0 m, mean 0.75 m
        assert [ln for ln in lines if "abs_rel" in ln or "rmse" in ln] == ["│ abs_rel % ↓ │       25.00 │",
                                                                         "│ rmse ↓      │      0.7500 │"]
        assert lines[-1].startswith("seconds per image: load ")
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["conditioner"]["rmse"] == pytest.approx(0.75)
    res = run(*folder_args(tmp_path / "data", tmp_path / "preds", "--output", tmp_path / "r.json"))
    # the quiet run above wrote r.json: this one says it replaced it
    assert res.exit_code == 0 and "eval: 2/2 samples" in res.stderr
    assert "eval: replaced the earlier results in" in res.stderr


def test_folder_image_without_ground_truth_exit_65_or_skipped_and_counted(tmp_path):
    """As nyuv2 and middlebury (the test above): the image's missing map is named, not silently dropped."""
    root, preds = tmp_path / "syn", tmp_path / "preds"
    make_folder(root, preds)
    (root / "depth" / "000001.npy").unlink()
    args = folder_args(root, preds, "--output", tmp_path / "r.json")
    missing = f"{root / 'depth' / '000001.npy'}: missing (needed by rgb/000001.png)"
    res = run(*args)
    assert res.exit_code == 65
    assert res.stderr == f"betterdepth: error: folder: {missing}; use --continue-on-error to skip them\n"
    assert not (tmp_path / "r.json").exists()
    res = run(*args, "--continue-on-error")
    assert res.exit_code == 3, res.output
    assert f"eval: warning: skipped {missing}\n" in res.stderr
    assert "eval: 1 sample(s) skipped, 2 scored" in res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["samples"] == 2 and data["dataset"]["incomplete"] == [missing]
    assert data["metrics"]["conditioner"]["abs_rel"] == pytest.approx(0.25)
    assert data["metrics"]["conditioner"]["rmse"] == pytest.approx((0.5 + 1.5) / 2)  # samples 0 and 2
    assert [r["id"] for r in read_csv(tmp_path / "r_per_sample.csv")] == ["000000", "000002"]


def test_the_guided_filter_warns_that_steps_do_not_apply_and_records_its_own(tmp_path, tiny_dpt_dir):
    make_nyu(tmp_path / "nyu", 1)
    res = run("--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--conditioner", f"hf:{tiny_dpt_dir}",
              "--model", "guided", "--steps", "3", "--ensemble", "2", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.stderr
    assert ("eval: warning: the guided filter (--model guided) runs one classical filter at native resolution, "
            "without sampling or tiles; not applied: --steps, --ensemble") in res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["config"]["steps"], data["settings"]["steps"], data["settings"]["ensemble"]) == (3, 1, 1)


def test_reduction_with_one_member_warns(tmp_path, tiny_dpt_dir, tiny_model_dir):
    make_nyu(tmp_path / "nyu", 1)
    res = run("--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--conditioner", f"hf:{tiny_dpt_dir}",
              "--model", tiny_model_dir, "--ensemble", "1", "--reduction", "median", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.stderr
    assert "eval: warning: one ensemble member, nothing to combine; not applied: --reduction" in res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == [
        "one ensemble member, nothing to combine; not applied: --reduction"]


def test_a_deterministic_model_warns_of_members_and_seed_as_refine_notes(tmp_path, tiny_dpt_dir):
    """The embedded model starts from zero noise: --ensemble 5 runs 2, --seed changes nothing; both said."""
    make_nyu(tmp_path / "nyu", 1)
    base = ["--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--conditioner", f"hf:{tiny_dpt_dir}",
            "--metrics", "abs_rel"]
    res = run(*base, "--ensemble", "5", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.stderr
    assert ("eval: warning: this model is deterministic (zero-noise start): --ensemble 5 would repeat its 2 members"
            in res.stderr)
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["config"]["ensemble"], data["settings"]["ensemble"], data["settings"]["seed"]) == (5, 2, 0)
    seeded = run(*base, "--seed", "3", "--ensemble", "1", "--reduction", "median", "-o", tmp_path / "s.json")
    assert "eval: warning: this model is deterministic (zero-noise start): --seed has no effect" in seeded.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["settings"]["seed"] == 3
    assert data["notes"] == ["one ensemble member, nothing to combine; not applied: --reduction",
                             "this model is deterministic (zero-noise start): --seed has no effect"]  # as refine's
    plain = run(*base, "-o", tmp_path / "p.json")
    assert plain.exit_code == 0 and "warning" not in plain.stderr and "--seed" not in plain.stderr


def test_the_change_column_has_its_metrics_precision():
    from betterdepth_cli.cli.eval import fmt_change

    assert fmt_change("abs_rel", 1.236e-5) == "+0.00"  # percent points, 2 decimals as the AbsRel column
    assert fmt_change("abs_rel", -0.0123) == "-1.23"
    assert fmt_change("dbe_acc", -0.5) == "-0.50" and fmt_change("rmse", 0.01234) == "+0.0123"
    assert fmt_change("edge_f1", float("nan")) == "n/a"


def test_no_refine_warns_that_the_sampling_options_do_not_apply(tmp_path, tiny_dpt_dir):
    make_nyu(tmp_path / "nyu", 1)
    res = run("--dataset", "nyuv2", "--data-root", tmp_path / "nyu", "--conditioner", f"hf:{tiny_dpt_dir}",
              "--no-refine", "--ensemble", "3", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.stderr
    assert ("eval: warning: --no-refine scores the conditioner's map alone; not applied: --ensemble"
            in res.stderr)
    assert json.loads((tmp_path / "r.json").read_text())["notes"] == [
        "--no-refine scores the conditioner's map alone; not applied: --ensemble"]
