"""`betterdepth eval` on bad inputs and outputs: files it must not overwrite, samples it skips under
--continue-on-error (and the exit status that says so), predictions without a valid pixel, SIGTERM.

The data is `test_cli_eval.make_folder`'s: sample i (ids 000000, 000001, 000002) has ground truth
2 (i + 1) m everywhere and a metric prediction 1.25 x that, so with --alignment none every sample
scores AbsRel 0.25 and RMSE 0.5 (i + 1) m, and the mean RMSE over samples 0 and 2 is (0.5 + 1.5) / 2.
"""

from __future__ import annotations

import json
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_cli_eval import folder_args, make_folder, read_csv, run

from betterdepth_cli.evaluation import datasets as D
from betterdepth_cli.evaluation import protocol as P


def one_error_line(res) -> str:
    """The one line on stderr besides the progress ("eval: N/M samples ...")."""
    lines = [ln for ln in res.stderr.splitlines() if not (ln.startswith("eval: ") and " samples (" in ln)]
    assert len(lines) == 1 and lines[0].startswith("betterdepth: error: "), res.stderr
    return lines[0]


# --------------------------------------------------------------------------- outputs


def test_output_refuses_a_file_that_is_not_an_eval_result(tmp_path):
    """-o or --csv naming an existing file of the user's (here the dataset's own image) is refused before
    anything runs, the file untouched; a rerun replaces its own earlier results."""
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds)
    image = root / "rgb" / "000000.png"
    before = image.read_bytes()
    res = run(*folder_args(root, preds, "-o", image))
    assert res.exit_code == 64
    assert one_error_line(res) == (f"betterdepth: error: --output {image}: exists and is not a results JSON of "
                                   "betterdepth eval (refusing to overwrite it); choose another path")
    assert image.read_bytes() == before
    notes = tmp_path / "notes.csv"
    notes.write_text("id,comment\n1,mine\n")
    res = run(*folder_args(root, preds, "-o", tmp_path / "r.json", "--csv", notes))
    assert res.exit_code == 64 and f"--csv {notes}: exists and is not a per-sample CSV" in one_error_line(res)
    assert notes.read_text() == "id,comment\n1,mine\n" and not (tmp_path / "r.json").exists()
    # an earlier result of eval (JSON by its format, CSV by its header) is replaced by a rerun
    for k in range(2):
        res = run(*folder_args(root, preds, "-o", tmp_path / "r.json"))
        assert res.exit_code == 0, res.output
        says = ("replaced the earlier results in", "replaced the earlier per-sample metrics in") if k else \
            ("wrote results to", "wrote per-sample metrics to")
        assert f"eval: {says[0]} {tmp_path / 'r.json'}" in res.stderr
        assert f"eval: {says[1]} {tmp_path / 'r_per_sample.csv'}" in res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["format"] == "betterdepth-eval/1"
    assert [r["id"] for r in read_csv(tmp_path / "r_per_sample.csv")] == ["000000", "000001", "000002"]
    res = run(*folder_args(root, preds, "-o", tmp_path / "r2.json", "--csv", tmp_path / "r_per_sample.csv", "-q"))
    assert res.exit_code == 0, res.output
    # but not one kind of result over the other: the JSON is no per-sample CSV
    res = run(*folder_args(root, preds, "-o", tmp_path / "r3.json", "--csv", tmp_path / "r.json"))
    assert res.exit_code == 64 and "exists and is not a per-sample CSV" in one_error_line(res)
    assert json.loads((tmp_path / "r.json").read_text())["format"] == "betterdepth-eval/1"


def test_output_and_csv_naming_one_file_is_a_usage_error(tmp_path):
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds)
    out = tmp_path / "res.json"
    res = run(*folder_args(root, preds, "-o", out, "--csv", tmp_path / "." / "res.json"))
    assert res.exit_code == 64
    assert one_error_line(res) == f"betterdepth: error: --output and --csv are the same file {out}; give --csv another path"
    assert not out.exists()


# --------------------------------------------------------------------------- --continue-on-error


def test_unreadable_ground_truth_is_exit_65_or_skipped_with_exit_3(tmp_path):
    """A broken file (an empty .npy) stops the run (65), or under --continue-on-error skips that sample
    with a warning naming the file; the others are scored and written, and the exit status is 3."""
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds)
    broken = root / "depth" / "000001.npy"
    broken.write_bytes(b"")
    args = folder_args(root, preds, "-o", tmp_path / "r.json")
    res = run(*args)
    assert res.exit_code == 65 and str(broken) in one_error_line(res)
    assert not (tmp_path / "r.json").exists()
    res = run(*args, "--continue-on-error")
    assert res.exit_code == 3, res.output
    warned = [ln for ln in res.stderr.splitlines() if ln.startswith("eval: warning: skipped ")]
    assert len(warned) == 1 and str(broken) in warned[0]
    assert "eval: 1 sample(s) skipped, 2 scored" in res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["samples"] == 2 and data["dataset"]["samples"] == 2
    assert data["dataset"]["incomplete"] == [warned[0][len("eval: warning: skipped "):]]
    assert data["metrics"]["conditioner"]["abs_rel"] == pytest.approx(0.25)
    assert data["metrics"]["conditioner"]["rmse"] == pytest.approx((0.5 + 1.5) / 2)
    assert [r["id"] for r in read_csv(tmp_path / "r_per_sample.csv")] == ["000000", "000002"]


def test_middlebury_dmin_that_is_not_a_number_is_skipped(tmp_path):
    """The loaders' own checks (here dmin.txt holding "abc") fail that sample alone under --continue-on-error."""
    import cv2

    root, maps = tmp_path / "mb", tmp_path / "maps"
    for scene in ("Art", "Books"):
        (root / scene).mkdir(parents=True)
        (maps / scene).mkdir(parents=True)
        assert cv2.imwrite(str(root / scene / "view1.png"), np.zeros((6, 8, 3), np.uint8))
        assert cv2.imwrite(str(root / scene / "disp1.png"), np.full((6, 8), 100, np.uint8))
        (root / scene / "dmin.txt").write_text("200\n")
        np.save(maps / scene / "view1.npy", np.full((6, 8), 3.0, np.float32))
    (root / "Books" / "dmin.txt").write_text("abc\n")
    args = ("--dataset", "middlebury", "--data-root", root, "--conditioner", f"file:{maps}?kind=depth&metric=1",
            "--no-refine", "--alignment", "none", "--metrics", "abs_rel", "--device", "cpu")
    res = run(*args)
    assert res.exit_code == 65
    assert one_error_line(res) == f"betterdepth: error: {root / 'Books' / 'dmin.txt'}: expected one number (dmin), got 'abc'"
    res = run(*args, "--continue-on-error", "-o", tmp_path / "r.json")
    assert res.exit_code == 3, res.output
    assert f"eval: warning: skipped {root / 'Books' / 'dmin.txt'}: expected one number (dmin)" in res.stderr
    # Art: disparity 100 + 200 = 300 -> 3740 px x 0.16 m / 300 = 1.99467 m; the map says 3 m
    gt = 3740 * 0.160 / 300
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["conditioner"]["abs_rel"] == pytest.approx(
        (3.0 - gt) / gt, rel=1e-5)


@pytest.mark.parametrize("batch", ["1", "3"])
def test_missing_file_map_is_exit_65_or_skipped_with_exit_3(tmp_path, batch):
    """A `file:` prediction missing for one sample fails that sample alone (also inside a batch: the
    others of the batch are still scored, with the same numbers)."""
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds)
    (preds / "000001.npy").unlink()
    args = folder_args(root, preds, "--batch-size", batch, "-o", tmp_path / "r.json")
    res = run(*args)
    assert res.exit_code == 65 and "no precomputed map for '000001'" in one_error_line(res)
    res = run(*args, "--continue-on-error")
    assert res.exit_code == 3, res.output
    assert f"eval: warning: skipped {preds}: no precomputed map for '000001'" in res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["samples"] == 2 and len(data["dataset"]["incomplete"]) == 1
    assert data["metrics"]["conditioner"]["rmse"] == pytest.approx((0.5 + 1.5) / 2)
    assert [r["id"] for r in read_csv(tmp_path / "r_per_sample.csv")] == ["000000", "000002"]


def test_every_sample_skipped_is_exit_65(tmp_path):
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds, ids=("a",))
    (preds / "a.npy").unlink()
    res = run(*folder_args(root, preds, "-o", tmp_path / "r.json", "--continue-on-error"))
    assert res.exit_code == 65
    assert res.stderr.splitlines()[-1] == "betterdepth: error: folder: every sample failed (1 skipped), none scored"
    assert not (tmp_path / "r.json").exists()


def test_limit_counts_only_the_first_samples_skipped_ones_included(tmp_path):
    """--limit N takes the first N samples found, a sample lacking its map among them: the ones after it are
    neither scored nor warned about, and without --continue-on-error they are no error either."""
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds, ids=("a", "b", "c", "d"))
    (root / "depth" / "b.npy").unlink()
    (root / "depth" / "d.npy").unlink()
    missing_b = f"{root / 'depth' / 'b.npy'}: missing (needed by rgb/b.png)"
    res = run(*folder_args(root, preds, "--limit", "2", "--continue-on-error", "-o", tmp_path / "r.json"))
    assert res.exit_code == 3, res.output
    assert [ln for ln in res.stderr.splitlines() if "warning" in ln] == [f"eval: warning: skipped {missing_b}"]
    assert "eval: 1 sample(s) skipped, 1 scored" in res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["samples"] == 1 and data["dataset"]["incomplete"] == [missing_b]
    res = run(*folder_args(root, preds, "--limit", "1", "-q"))
    assert res.exit_code == 0, res.output  # b and d lie beyond the limit
    # the library: the first N samples found, in order; shards split them, each lacking one in one shard
    ds = D.get_dataset("folder", root, limit=3, skip_incomplete=True)
    assert [e.id for e in ds.candidates] == ["a", "b", "c"] and [e.id for e in ds.entries] == ["a", "c"]
    assert ds.incomplete == [missing_b]
    from betterdepth_cli.evaluation.merge import shard_entries

    for shard, ids, found, lacking in ((1, ["a", "c"], ["a", "c"], []), (2, ["b", "d"], [], ["b", "d"])):
        ds = D.get_dataset("folder", root, skip_incomplete=True)
        shard_entries(ds, shard, 2)
        assert [e.id for e in ds.candidates] == ids and [e.id for e in ds.entries] == found
        assert ds.incomplete == [f"{root / 'depth' / i}.npy: missing (needed by rgb/{i}.png)" for i in lacking]


# --------------------------------------------------------------------------- predictions without valid pixels


def test_all_nan_file_map_is_bad_input_never_scored(tmp_path):
    """A `file:` map with no valid pixel is that sample's bad input naming the map (exit 65; skipped and
    counted under --continue-on-error), with no raw Python warning and never scored."""
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds)
    np.save(preds / "000001.npy", np.full((48, 64), np.nan, np.float32))
    args = folder_args(root, preds, "--alignment", "auto", "-o", tmp_path / "r.json")
    want = f"{preds / '000001.npy'}: the precomputed map has no valid pixel (every value NaN, infinite or masked)"
    res = run(*args)
    assert res.exit_code == 65
    assert one_error_line(res) == f"betterdepth: error: {want}"
    res = run(*args, "--continue-on-error")
    assert res.exit_code == 3, res.output
    assert "Warning" not in res.stderr and "[0]" not in res.stderr
    assert f"eval: warning: skipped {want}\n" in res.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["samples"] == 2 and data["dataset"]["incomplete"] == [want]
    assert [r["id"] for r in read_csv(tmp_path / "r_per_sample.csv")] == ["000000", "000002"]


def test_degenerate_alignment_is_one_line_naming_the_sample(tmp_path):
    """A constant prediction has no scale to fit: the fallback (scale 0, shift = the mean ground truth)
    scores it, reported as one line with the sample's id instead of a Python warning. Here every ground
    truth is constant too, so the fallback is exact: AbsRel 0."""
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds, ids=("a", "b"))
    res = run(*folder_args(root, preds, "--alignment", "auto", "-o", tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    assert "DegenerateAlignmentWarning" not in res.stderr and "protocol.py" not in res.stderr
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("eval: warning:")]
    assert notes == [f"eval: warning: {i} (conditioner): degenerate alignment (constant prediction), scored with the "
                     "defined fallback" for i in ("a", "b")]
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["metrics"]["conditioner"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert len(data["notes"]) == 2


def test_fit_reports_degenerate_cases_instead_of_warning():
    """With on_degenerate the fit calls it (no Python warning) and gives the core aligner's fallback."""
    heard = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert P.fit_scale_shift_values(np.full(5, 2.0), np.arange(5.0), heard.append) == (0.0, 2.0)
        assert P.fit_scale_shift_values(np.array([1.0]), np.array([4.0]), heard.append) == (1.0, 3.0)
        assert P.fit_scale_shift_values(np.array([]), np.array([]), heard.append) == (1.0, 0.0)
        s, b = P.fit_scale_shift_values(np.array([1.0, 2.0, 4.0]), np.array([3.0, 5.0, 9.0]), heard.append)
    assert (s, b) == (pytest.approx(2.0), pytest.approx(1.0))
    assert heard == ["constant prediction", "1 valid pixel to fit", "0 valid pixels to fit"]


# --------------------------------------------------------------------------- signals


@pytest.fixture()
def sigterm_guard():
    """SIGTERM that eval does not handle fails the test instead of killing pytest."""

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the default handler")

    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_is_one_line_and_exit_143_ctrl_c_130(tmp_path, monkeypatch, sigterm_guard):
    import os

    from betterdepth_cli.evaluation import runner

    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds, ids=("a",))

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not stopped")

    monkeypatch.setattr(runner, "run_evaluation", terminated)
    res = run(*folder_args(root, preds))
    assert res.exit_code == 143 and res.stderr == "betterdepth: error: terminated\n"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_evaluation", interrupted)
    res = run(*folder_args(root, preds))
    assert res.exit_code == 130 and res.stderr == "betterdepth: error: interrupted\n"
    assert signal.getsignal(signal.SIGTERM).__name__ == "unhandled"  # eval's handler is gone again


def test_skips_are_reported_in_the_dataset_order(tmp_path):
    """Samples skipped at different stages (a missing map, an unreadable file, no valid pixel) are listed
    in the dataset's order."""
    root, preds = tmp_path / "data", tmp_path / "preds"
    make_folder(root, preds, ids=("a", "b", "c", "d"))
    np.save(preds / "a.npy", np.full((48, 64), np.nan, np.float32))
    (root / "depth" / "c.npy").write_bytes(b"")
    (root / "depth" / "b.npy").unlink()
    res = run(*folder_args(root, preds, "--continue-on-error", "-o", tmp_path / "r.json", "--batch-size", "2"))
    assert res.exit_code == 3, res.output
    skipped = json.loads((tmp_path / "r.json").read_text())["dataset"]["incomplete"]
    assert [Path(s.split(":")[0]).name for s in skipped] == ["a.npy", "b.npy", "c.npy"]
    assert str(preds) in skipped[0] and str(root / "depth") in skipped[1] and str(root / "depth") in skipped[2]


def test_split_line_naming_a_missing_file_is_exit_65_or_skipped(tmp_path):
    """A --split-file line whose file is missing is that sample's failure like a discovered one: an error
    naming the line, or skipped and counted under --continue-on-error (its place kept for --limit)."""
    from test_eval_datasets import rgb_image, write_grey, write_rgb

    from betterdepth_cli.core.types import InputDataError

    root = tmp_path / "flat"
    for i in (0, 2):
        write_rgb(root / f"image_{i}.png", rgb_image(6, 8))
        write_grey(root / f"depth_{i}.png", np.full((6, 8), 2000, np.uint16))
    split = tmp_path / "split.txt"
    split.write_text("image_0.png depth_0.png\nimage_1.png depth_1.png\nimage_2.png depth_2.png\n")
    want = f"image_1.png (line 2 of {split}) not found, expected {root / 'image_1.png'}"
    with pytest.raises(InputDataError) as err:
        D.get_dataset("nyuv2", root, split_file=split)
    assert str(err.value) == f"nyuv2: {want}; use --continue-on-error to skip them"
    assert [e.id for e in D.get_dataset("nyuv2", root, split_file=split, limit=1).entries] == ["image_0"]
    ds = D.get_dataset("nyuv2", root, split_file=split, skip_incomplete=True)
    assert [e.id for e in ds.entries] == ["image_0", "image_2"] and ds.incomplete == [want]
    ds = D.get_dataset("nyuv2", root, split_file=split, limit=2, skip_incomplete=True)
    assert [e.id for e in ds.entries] == ["image_0"] and ds.incomplete == [want]
