"""Rank-aware sharding: the rank from the launcher's environment, the split, the merged exit code, and
two CPU processes under torchrun against one process (byte-identical outputs, every input once)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from betterdepth_cli.cli.ranks import merge
from betterdepth_cli.jobs.ranks import RankInfo, rank_device, rank_info, take_share

REPO = Path(__file__).resolve().parent.parent


def test_rank_info_from_the_launchers_environment():
    assert rank_info({}) is None
    assert rank_info({"WORLD_SIZE": "1", "RANK": "0"}) is None  # one process: nothing changes
    assert rank_info({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == RankInfo(2, 4, 0)
    assert rank_info({"WORLD_SIZE": "2", "RANK": "1"}) == RankInfo(1, 2, 1)  # LOCAL_RANK defaults to RANK
    assert rank_info({"WORLD_SIZE": "2", "RANK": "5"}) is None  # not a rank of this world
    assert rank_device("cpu", "auto", RankInfo(1, 2, 1)) == "cpu"
    assert rank_device("cuda:1", "cuda:1", RankInfo(0, 2, 0)) == "cuda:1"  # an explicit index is kept


def test_ranks_and_a_farm_shard_cover_every_input_exactly_once():
    items = [f"img{i:02d}" for i in range(23)]
    seen = []
    for job in (1, 2, 3):  # --shard job/3, each job under torchrun with 2 ranks
        for r in range(2):
            seen += take_share(items, (job, 3), RankInfo(r, 2, r))
    assert sorted(seen) == items
    assert sorted(take_share(items, None, RankInfo(0, 2, 0)) + take_share(items, None, RankInfo(1, 2, 1))) == items


def _report(code, processed=0, failed=0, skipped=0, keep_going=False):
    return {"code": code, "summary": {"total": processed + failed + skipped, "processed": processed,
                                      "failed": failed, "skipped": skipped, "continue_on_error": keep_going}}


def test_merged_exit_code():
    assert merge([_report(0, 3), _report(0, 2)])[1] == 0
    merged, code = merge([_report(0, 3), _report(3, 1, 1, keep_going=True)])
    assert (merged["processed"], merged["failed"], code) == (4, 1, 3)
    assert merge([_report(65, 0, 2, keep_going=True), _report(0, 2, keep_going=True)])[1] == 3  # some done
    assert merge([_report(65, 0, 1), _report(0, 2)])[1] == 65  # halted without --continue-on-error
    assert merge([_report(0, 2), _report(73), _report(69)])[1] == 73  # the first abnormal rank decides
    assert merge([_report(65), _report(0, 1)])[1] == 65  # a bad input found before the run counted nothing


def _write_inputs(folder: Path, n: int) -> None:
    import cv2

    folder.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        img = (rng.random((40 + 8 * (i % 2), 56, 3)) * 255).astype(np.uint8)
        assert cv2.imwrite(str(folder / f"img{i}.png"), img)


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".npy")}


def _one_process_and_torchrun(args: list[str], out_one: list, out_two: list):
    """``betterdepth ARGS`` in one process and under torchrun with 2 CPU processes (gloo); both must succeed."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    runs = []
    for launcher, out in (([], out_one), (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], out_two)):
        cmd = [sys.executable, *launcher, "-m", "betterdepth_cli", *args, *map(str, out)]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr
        runs.append(p)
    return runs


@pytest.mark.slow
def test_two_cpu_processes_under_torchrun_match_one_process(tmp_path, tiny_dpt_dir, tiny_model_dir):
    _write_inputs(tmp_path / "in", 5)
    args = ["refine", str(tmp_path / "in"), "--conditioner", f"hf:{tiny_dpt_dir}", "--model", str(tiny_model_dir),
            "--processing-res", "32", "--format", "png16,npy", "--device", "cpu"]
    one, two = _one_process_and_torchrun(args, ["-o", tmp_path / "one"], ["-o", tmp_path / "two"])
    per_rank = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"rank (\d): exit 0, (\d+) processed", two.stderr)}
    assert per_rank == {0: 3, 1: 2}  # sorted inputs, every other one: 3 and 2, none twice
    assert "all 2 ranks: done: 5 processed, 0 skipped, 0 failed" in two.stderr
    a, b = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert sorted(a) == sorted(f"img{i}.{ext}" for i in range(5) for ext in ("png", "npy"))
    assert a == b  # byte-identical
    assert sorted(p.name for p in (tmp_path / "two").glob("betterdepth-run*.toml")) == [
        "betterdepth-run.rank-0-of-2.toml", "betterdepth-run.rank-1-of-2.toml"]


def _eval_config(root: Path, dpt: Path, model: Path, shard=None):
    from betterdepth_cli.evaluation.runner import EvalConfig

    return EvalConfig(dataset="nyuv2", data_root=str(root), conditioner=f"hf:{dpt}", model=str(model), compare=True,
                      processing_res=32, score_workers=0, shard=shard)


def _scores(result) -> list[tuple]:
    return [(r["id"], r["variant"], *(r[m] for m in result.config.metrics)) for r in result.rows]


def test_sharded_evaluations_merge_into_the_single_run(tmp_path, tiny_dpt_dir, tiny_model_dir):
    from test_cli_eval import make_nyu

    from betterdepth_cli.evaluation.merge import merge_results
    from betterdepth_cli.evaluation.runner import run_evaluation

    make_nyu(tmp_path / "nyu", n=5)
    whole = run_evaluation(_eval_config(tmp_path / "nyu", tiny_dpt_dir, tiny_model_dir))
    parts = [run_evaluation(_eval_config(tmp_path / "nyu", tiny_dpt_dir, tiny_model_dir, (i, 2))) for i in (1, 2)]
    assert [len({r["id"] for r in p.rows}) for p in parts] == [3, 2]  # samples 1, 3, 5 and 2, 4
    merged = merge_results(parts)
    assert _scores(merged) == _scores(whole)  # same rows, in the dataset's order
    assert merged.means == whole.means and merged.counts == whole.counts
    assert merged.dataset["samples"] == 5 and merged.config.shard is None


@pytest.mark.slow
def test_eval_under_torchrun_writes_one_merged_result(tmp_path, tiny_dpt_dir, tiny_model_dir):
    import json

    from test_cli_eval import make_nyu

    make_nyu(tmp_path / "nyu", n=4)
    args = ["eval", "--dataset", "nyuv2", "--data-root", str(tmp_path / "nyu"), "--conditioner", f"hf:{tiny_dpt_dir}",
            "--model", str(tiny_model_dir), "--processing-res", "32", "--device", "cpu", "-q"]
    one, two = _one_process_and_torchrun(args, ["--output", tmp_path / "one.json"], ["--output", tmp_path / "two.json"])
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert a["metrics"] == b["metrics"] and a["samples"] == b["samples"] == 4
    rows = [[line.split(",")[:-8] for line in (tmp_path / f"{n}_per_sample.csv").read_text().splitlines()]
            for n in ("one", "two")]  # without the 8 seconds_* columns
    assert rows[0] == rows[1] and len(rows[0]) == 5  # the header and 4 samples, in order


@pytest.mark.slow
def test_eval_under_torchrun_every_rank_exits_with_the_merged_code(tmp_path, tiny_dpt_dir, tiny_model_dir):
    """A sample skipped under --continue-on-error: rank 0's merged end says exit 3, and so does every
    rank (before, the other ranks exited 0), while the one merged result is written."""
    import json

    from test_cli_eval import make_nyu

    make_nyu(tmp_path / "nyu", n=4)
    (tmp_path / "nyu" / "test" / "room_0004" / "depth_0004.png").unlink()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "betterdepth_cli", "eval", "--dataset", "nyuv2", "--data-root", str(tmp_path / "nyu"), "--conditioner",
           f"hf:{tiny_dpt_dir}", "--model", str(tiny_model_dir), "--processing-res", "32", "--device", "cpu", "-q",
           "--continue-on-error", "--output", str(tmp_path / "r.json")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode != 0  # torchrun's own code for ranks that exit non-zero (docs/farm.md)
    # torchrun's table has a row per rank that exited non-zero (a rank exiting 0 has none); once one rank
    # has exited, the launcher may stop the other (SIGTERM, -15) before it exits by itself
    rows = dict(re.findall(r"rank\s+:\s+(\d) \(local_rank.*?\n.*?exitcode\s+:\s+(-?\d+) \(pid", p.stderr))
    assert rows.get("0") in ("3", "-15") and rows.get("1") in ("3", "-15") and "3" in rows.values(), p.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())["dataset"]["samples"] == 3
