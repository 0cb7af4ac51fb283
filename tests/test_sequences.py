"""Sequences: synthetic camera paths, the TUM RGB-D loader, the flickering conditioner, shots in refine/eval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from betterdepth_cli.cli.app import app
from betterdepth_cli.core.types import InputDataError, NoInputError
from betterdepth_cli.evaluation.sequences import associate, get_sequence_dataset, tum_clip

runner = CliRunner()


@pytest.fixture(scope="module")
def seq_root(tmp_path_factory):
    """One indoor clip of 4 frames at 64 x 48, moving sideways 0.3 m in all (truck)."""
    from training.sequences import write_sequences

    return write_sequences(tmp_path_factory.mktemp("seq") / "seq", 1, 4, seed0=5, size=(48, 64), motion="truck",
                           amplitude=0.3)


# --------------------------------------------------------------------------- synthetic sequences


def test_synthetic_sequence_layout_and_loader(seq_root):
    clip_dir = seq_root / "clip0000"
    assert sorted(p.name for p in (clip_dir / "rgb").iterdir()) == [f"frame.{i:06d}.png" for i in range(4)]
    cam = json.loads((clip_dir / "camera.json").read_text())
    assert cam["motion"] == "truck" and cam["width"] == 64 and cam["height"] == 48 and len(cam["frames"]) == 4
    (clip,) = get_sequence_dataset("synth-seq", seq_root)
    assert len(clip) == 4 and clip.K.shape == (3, 3) and clip.poses.shape == (4, 4, 4)
    s = clip.frame(2)
    assert s.id == "clip0000/frame.000002" and s.rgb.shape == (48, 64, 3) and s.gt.shape == (48, 64)
    assert s.valid.any() and np.all(s.gt[s.valid] > 0)
    assert not np.allclose(clip.poses[0], clip.poses[3])  # the camera moved
    np.testing.assert_allclose(clip.poses[0][:3, :3] @ clip.poses[0][:3, :3].T, np.eye(3), atol=1e-9)


def test_synthetic_ground_truth_is_consistent_under_its_own_poses(seq_root):
    """Reprojecting frame t's true depth into t+1 matches (rounding to pixels only): K and poses agree."""
    from betterdepth_cli.evaluation.temporal import tae

    (clip,) = get_sequence_dataset("synth-seq", seq_root)
    frames = [clip.frame(i) for i in range(len(clip))]
    gt = np.stack([f.gt for f in frames])
    valid = np.stack([f.valid for f in frames])
    good = tae(gt, clip.poses, clip.K, valid)
    still = np.stack([np.eye(4)] * len(clip))  # ignoring the motion breaks the agreement
    assert good < 3.0 and tae(gt, still, clip.K, valid) > 2 * good


def test_write_sequences_refuses_other_settings_and_resumes(seq_root):
    from betterdepth_cli.core.types import OutputError
    from training.sequences import write_sequences

    before = (seq_root / "clip0000" / "camera.json").stat().st_mtime_ns
    write_sequences(seq_root, 1, 4, seed0=5, size=(48, 64), motion="truck", amplitude=0.3)  # complete: kept
    assert (seq_root / "clip0000" / "camera.json").stat().st_mtime_ns == before
    with pytest.raises(OutputError, match="other sequence settings"):
        write_sequences(seq_root, 1, 5, seed0=5, size=(48, 64), motion="truck", amplitude=0.3)


def test_synth_sequence_command_and_bad_motion(tmp_path):
    out = tmp_path / "s"
    r = runner.invoke(app, ["synth", "--sequence", "-n", "1", "--frames", "2", "--size", "24x16", "--motion",
                            "static", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    cam = json.loads((out / "clip0000" / "camera.json").read_text())
    np.testing.assert_allclose(cam["frames"][0]["pose"], cam["frames"][1]["pose"])  # static
    r = runner.invoke(app, ["synth", "--sequence", "-n", "1", "--motion", "spin", "-o", str(tmp_path / "t")])
    assert r.exit_code == 64 and "--motion" in r.output


def test_camera_paths_start_at_the_seed_camera_and_dolly_moves_toward_the_target():
    from training.sequences import camera_path

    eye, target = np.array([0.0, 0, 1]), np.array([4.0, 0, 1])
    path = camera_path(eye, target, 5, "dolly", 1.0, np.random.default_rng(0))
    np.testing.assert_allclose(path[0][0], eye, atol=0.011)  # up to the 1 % sway
    assert path[-1][0][0] == pytest.approx(1.0, abs=0.011)
    orbit = camera_path(eye, target, 5, "orbit", 1.0, np.random.default_rng(0))
    dist = [np.linalg.norm(e[:2] - target[:2]) for e, _ in orbit]
    assert max(dist) - min(dist) < 0.03  # circles the target


# --------------------------------------------------------------------------- TUM RGB-D


def _write_tum(root, depth_offsets=(0.01, 0.005, 0.05)):
    import cv2

    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines = ["# color images"], ["# depth maps"]
    for i, off in enumerate(depth_offsets):
        t = 100.0 + i * 0.1
        cv2.imwrite(str(root / "rgb" / f"{t:.6f}.png"), np.full((6, 8, 3), 40 * i, np.uint8))
        cv2.imwrite(str(root / "depth" / f"{t + off:.6f}.png"), np.full((6, 8), 5000 * (i + 1), np.uint16))
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + off:.6f} depth/{t + off:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    s = math.sin(math.pi / 4)
    (root / "groundtruth.txt").write_text("# timestamp tx ty tz qx qy qz qw\n"
                                          "100.001 1 2 3 0 0 0 1\n"
                                          f"100.101 1 2 3.5 0 0 {s} {s}\n"
                                          "100.201 0 0 0 0 0 0 1\n")


def test_associate_pairs_closest_timestamps_one_to_one():
    assert associate([1.0, 1.1, 1.2], [1.005, 1.099, 1.5], 0.02) == [(0, 0), (1, 1)]
    assert associate([1.0, 1.001], [1.0008], 0.02) == [(1, 0)]  # the closer of two candidates takes it


def test_tum_loader_associates_frames_and_reads_depth_poses_and_intrinsics(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    _write_tum(root)
    clip = tum_clip(root)
    assert clip.ids == ["100.000000", "100.100000"]  # the third depth is 0.05 s off: dropped
    np.testing.assert_allclose(clip.K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])
    np.testing.assert_allclose(clip.poses[0][:3, 3], [1, 2, 3])
    np.testing.assert_allclose(clip.poses[1][:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    s = clip.frame(1)
    assert s.gt == pytest.approx(np.full((6, 8), 2.0)) and s.valid.all() and s.rgb.shape == (6, 8, 3)
    (clip2,) = get_sequence_dataset("tum", tmp_path, intrinsics="500,501,3.5,2.5", max_frames=1)
    assert len(clip2) == 1 and clip2.K[1, 1] == 501


def test_tum_loader_errors_name_the_file(tmp_path):
    root = tmp_path / "seq"
    _write_tum(root)
    (root / "groundtruth.txt").write_text("100.0 1 2 3\n")
    with pytest.raises(InputDataError, match="groundtruth.txt: line 1 has 4 fields, expected 8"):
        tum_clip(root)
    with pytest.raises(NoInputError, match="no sequences"):
        get_sequence_dataset("tum", tmp_path / "seq" / "rgb")


# --------------------------------------------------------------------------- flickering conditioner


def test_flicker_conditioner_is_one_degradation_per_clip_plus_a_documented_affine_jitter():
    from training.flicker_conditioner import FlickerConditioner, apply_jitter

    d = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(apply_jitter(d, 1.1, 0.05), 1.1 * d + 0.05 * 0.96, rtol=1e-6)  # p98 - p2 = 0.96
    cond = FlickerConditioner(seed=0)
    depth = np.random.default_rng(0).uniform(1, 4, (24, 32)).astype(np.float32)
    valid = np.ones_like(depth, bool)
    m0, m1 = cond.predict(depth, valid, 0, 0), cond.predict(depth, valid, 0, 1)
    (a0, c0), (a1, c1) = cond.jitter(0, 0), cond.jitter(0, 1)
    assert 0.9 <= a0 <= 1.1 and -0.05 <= c0 <= 0.05 and (a0, c0) != (a1, c1)
    base0 = (m0 - c0 * np.subtract(*np.quantile(m0 / a0, [0.98, 0.02]))) / a0  # undo frame 0's jitter
    base1 = (m1 - c1 * np.subtract(*np.quantile(m1 / a1, [0.98, 0.02]))) / a1
    np.testing.assert_allclose(base0, base1, rtol=1e-4, atol=1e-5)  # the same degradation under both


# --------------------------------------------------------------------------- refine and eval on shots


def _jittered_sequence(tmp_path):
    """A 3-frame sequence of one image whose precomputed maps are affine jitters of one map."""
    import cv2

    seq, maps = tmp_path / "shot", tmp_path / "maps"
    seq.mkdir()
    maps.mkdir()
    rng = np.random.default_rng(0)
    img = (rng.uniform(0, 255, (24, 32, 3))).astype(np.uint8)
    base = rng.uniform(0.5, 1.5, (24, 32)).astype(np.float32)
    for i, (a, c) in enumerate([(1.0, 0.0), (1.1, 0.05), (0.9, -0.03)]):
        cv2.imwrite(str(seq / f"frame.{i:04d}.png"), img)
        np.save(maps / f"frame.{i:04d}.npy", (a * base + c).astype(np.float32))
    return seq, maps, base


@pytest.mark.parametrize("per_frame,batch", [(False, 1), (False, 3), (True, 1)])
def test_refine_co_aligns_a_shot_unless_per_frame(tmp_path, per_frame, batch):
    seq, maps, base = _jittered_sequence(tmp_path)
    out = tmp_path / "out"
    args = ["refine", str(seq / "frame.%04d.png"), "--conditioner", f"file:{maps}?kind=disparity", "--no-refine",
            "-o", str(out), "--format", "npy", "-q", "--batch-size", str(batch)] + (["--per-frame"] if per_frame else [])
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    got = [np.load(out / f"frame.{i:04d}.npy") for i in range(3)]
    if per_frame:
        np.testing.assert_allclose(got[1], 1.1 * base + 0.05, rtol=1e-6)
    else:
        for g in got:  # every frame in frame 0's units: the jitter is gone
            np.testing.assert_allclose(g, base, rtol=0, atol=1e-5)
    side = json.loads((out / "frame.0001.json").read_text())
    assert side["shot_aligned"] is (not per_frame)


def test_eval_synth_seq_prints_temporal_metrics(seq_root, tmp_path):
    out = tmp_path / "t.json"
    r = runner.invoke(app, ["eval", "--dataset", "synth-seq", "--data-root", str(seq_root), "--no-refine",
                            "--conditioner", "file:/nonexistent?kind=disparity", "-o", str(out)])
    assert r.exit_code == 69 and "folder not found" in r.output  # a conditioner not found
    from training.flicker_conditioner import write_flicker_maps

    write_flicker_maps("synth-seq", str(seq_root), str(tmp_path / "maps"))
    r = runner.invoke(app, ["eval", "--dataset", "synth-seq", "--data-root", str(seq_root), "--no-refine",
                            "--conditioner", f"file:{tmp_path / 'maps'}?kind=disparity", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "TAE %" in r.output
    res = json.loads(out.read_text())
    assert res["variants"] == ["conditioner", "conditioner-shot"]
    assert res["means"]["conditioner-shot"]["tae"] < res["means"]["conditioner"]["tae"]


def test_eval_tum_scores_a_hand_made_sequence(tmp_path):
    root = tmp_path / "tum" / "seq"
    _write_tum(root, depth_offsets=(0.01, 0.005, 0.001))
    maps = tmp_path / "maps" / "seq"
    maps.mkdir(parents=True)
    for i, stem in enumerate(["100.000000", "100.100000", "100.200000"]):
        np.save(maps / f"{stem}.npy", np.full((6, 8), 1.0 / (i + 1), np.float32))  # exact disparity
    out = tmp_path / "t.json"
    r = runner.invoke(app, ["eval", "--dataset", "tum", "--data-root", str(tmp_path / "tum"), "--no-refine",
                            "--conditioner", f"file:{tmp_path / 'maps'}?kind=disparity", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["clips"][0]["frames"] == 3
    assert res["means"]["conditioner"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    # -q hides the progress on stderr, not the result on stdout
    assert r.stdout.startswith("tum: 1 clips, clip-level alignment") and r.stderr == ""


def test_an_interrupted_shot_resumes_to_the_same_co_aligned_maps(tmp_path):
    seq, maps, base = _jittered_sequence(tmp_path)
    out = tmp_path / "out"
    args = ["refine", str(seq / "frame.%04d.png"), "--conditioner", f"file:{maps}?kind=disparity", "--no-refine",
            "-o", str(out), "--format", "npy", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    first = [np.load(out / f"frame.{i:04d}.npy") for i in range(3)]
    (out / "frame.0002.npy").unlink()  # as if the run stopped before the last frame
    (out / "frame.0002.json").unlink()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    for i in range(3):
        np.testing.assert_array_equal(np.load(out / f"frame.{i:04d}.npy"), first[i])


def _jittered_frames(folder, names, shape=(24, 32)):
    """Precomputed maps ``<name>.npy`` that are one map under a different scale and shift each, and that map."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    jitter = [(1.0, 0.0), (1.1, 0.05), (0.9, -0.03), (1.2, 0.1), (0.8, -0.05)]
    folder.mkdir(exist_ok=True)
    for name, (a, c) in zip(names, jitter):
        np.save(folder / f"{name}.npy", (a * base + c).astype(np.float32))
    return base


@pytest.mark.parametrize("kind", ["sequence", "video"])
def test_a_frames_chunk_of_a_shot_gets_the_whole_shots_units(tmp_path, kind):
    """`--frames` chunks of one shot, each its own run: every frame equals the whole shot's run, so a
    render farm's chunks share units; a one-frame chunk too."""
    import cv2
    from refine_cli_helpers import write_mp4

    if kind == "video":
        src = write_mp4(tmp_path / "clip.mp4", n=5, h=24, w=32)
        names, first = [f"clip.{i:04d}" for i in range(5)], 0
        outputs = lambda out: [out / "clip" / f"{n}.npy" for n in names]  # noqa: E731
    else:
        (tmp_path / "shot").mkdir()
        img = (np.random.default_rng(0).uniform(0, 255, (24, 32, 3))).astype(np.uint8)
        names, first = [f"frame.{1001 + i}" for i in range(5)], 1001
        for n in names:
            cv2.imwrite(str(tmp_path / "shot" / f"{n}.png"), img)
        src = tmp_path / "shot" / "frame.%04d.png"
        outputs = lambda out: [out / f"{n}.npy" for n in names]  # noqa: E731
    base = _jittered_frames(tmp_path / "maps", names)

    def run(out, *flags):
        r = runner.invoke(app, ["refine", str(src), "--conditioner", f"file:{tmp_path / 'maps'}?kind=disparity",
                                "--no-refine", "-o", str(out), "--format", "npy", *flags])
        assert r.exit_code == 0, r.output
        return r

    run(tmp_path / "whole", "-q")
    whole = [np.load(f) for f in outputs(tmp_path / "whole")]
    np.testing.assert_allclose(whole[3], base, rtol=0, atol=1e-5)  # the jitter is gone in the whole run
    chunks = tmp_path / "chunks"
    for frames in (f"{first}-{first + 1}", f"{first + 2}", f"{first + 3}-{first + 4}"):
        r = run(chunks, "--frames", frames)
        assert ("co-aligning from the shot's first frame" in r.output) is (frames != f"{first}-{first + 1}")
    for f, want in zip(outputs(chunks), whole):
        np.testing.assert_array_equal(np.load(f), want)
    assert json.loads(outputs(chunks)[2].with_suffix(".json").read_text())["shot_aligned"] is True
    # each chunk keeps its own run record in the shared folder, and it reruns that chunk
    records = sorted(p.name for p in chunks.glob("betterdepth-run*.toml"))
    assert records == sorted(f"betterdepth-run.frames-{f}.toml"
                             for f in (f"{first}-{first + 1}", f"{first + 2}", f"{first + 3}-{first + 4}"))
    rerun = runner.invoke(app, ["refine", "--config", str(chunks / f"betterdepth-run.frames-{first + 2}.toml")])
    assert rerun.exit_code == 0 and "0 processed, 1 skipped" in rerun.output, rerun.output


def test_the_run_records_name_says_which_part_of_the_work_it_is():
    from betterdepth_cli.jobs.ranks import RankInfo
    from betterdepth_cli.jobs.refine_job import run_config_name

    assert run_config_name(None, None, None) == "betterdepth-run.toml"
    assert run_config_name((3, 8), None, None) == "betterdepth-run.shard-3-of-8.toml"
    assert run_config_name(None, "1001-1100x2, 1200", None) == "betterdepth-run.frames-1001-1100x2_1200.toml"
    assert (run_config_name((1, 2), "7", RankInfo(rank=0, world=2, local_rank=0))
            == "betterdepth-run.frames-7.shard-1-of-2.rank-0-of-2.toml")


def test_a_chunk_leaves_an_unreadable_earlier_frame_out_as_a_whole_run_does(tmp_path):
    import cv2

    (tmp_path / "shot").mkdir()
    img = (np.random.default_rng(0).uniform(0, 255, (24, 32, 3))).astype(np.uint8)
    names = [f"frame.{1001 + i}" for i in range(5)]
    for n in names:
        cv2.imwrite(str(tmp_path / "shot" / f"{n}.png"), img)
    (tmp_path / "shot" / "frame.1002.png").write_bytes(b"not a png")
    _jittered_frames(tmp_path / "maps", names)
    common = [str(tmp_path / "shot" / "frame.%04d.png"), "--conditioner", f"file:{tmp_path / 'maps'}?kind=disparity",
              "--no-refine", "--format", "npy"]
    whole = runner.invoke(app, ["refine", *common, "-o", str(tmp_path / "whole"), "--continue-on-error", "-q"])
    assert whole.exit_code == 3, whole.output  # frame 1002 failed, the others were written
    chunk = runner.invoke(app, ["refine", *common, "-o", str(tmp_path / "chunk"), "--frames", "1004-1005"])
    assert chunk.exit_code == 0, chunk.output
    assert "left out of the co-alignment" in chunk.output and "frame.1002.png" in chunk.output
    for n in names[3:]:
        np.testing.assert_array_equal(np.load(tmp_path / "chunk" / f"{n}.npy"), np.load(tmp_path / "whole" / f"{n}.npy"))
    # an earlier frame without a precomputed map is left out the same way (a whole run fails that frame)
    (tmp_path / "maps" / "frame.1003.npy").unlink()
    whole = runner.invoke(app, ["refine", *common, "-o", str(tmp_path / "whole2"), "--continue-on-error", "-q"])
    chunk = runner.invoke(app, ["refine", *common, "-o", str(tmp_path / "chunk2"), "--frames", "1004-1005"])
    assert whole.exit_code == 3 and chunk.exit_code == 0, chunk.output
    assert chunk.output.count("co-aligning from the shot's first frame") == 1
    assert "no precomputed map for 'frame.1003'" in chunk.output
    for n in names[3:]:
        np.testing.assert_array_equal(np.load(tmp_path / "chunk2" / f"{n}.npy"), np.load(tmp_path / "whole2" / f"{n}.npy"))


def test_a_batch_across_two_shots_co_aligns_both(tmp_path):
    """With --batch-size 4 a batch can hold the end of one shot and the start of the next: both stay aligned."""
    import cv2

    img = (np.random.default_rng(0).uniform(0, 255, (24, 32, 3))).astype(np.uint8)
    (tmp_path / "in").mkdir()
    for shot in ("a", "b"):  # two sequences in one folder
        for i in range(3):
            cv2.imwrite(str(tmp_path / "in" / f"{shot}.{i:04d}.png"), img)
    base_a = _jittered_frames(tmp_path / "maps", [f"a.{i:04d}" for i in range(3)])
    _jittered_frames(tmp_path / "maps", [f"b.{i:04d}" for i in (2, 0, 1)])  # b's first frame is 1.1 x + 0.05
    out = tmp_path / "out"
    r = runner.invoke(app, ["refine", str(tmp_path / "in"), "--conditioner", f"file:{tmp_path / 'maps'}?kind=disparity",
                            "--no-refine", "-o", str(out), "--format", "npy", "-q", "--batch-size", "4"])
    assert r.exit_code == 0, r.output
    for i in range(3):  # every frame of a in a.0000's units, and of b in b.0000's
        np.testing.assert_allclose(np.load(out / f"a.{i:04d}.npy"), base_a, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.load(out / f"b.{i:04d}.npy"), 1.1 * base_a + 0.05, rtol=0, atol=1e-5)


def test_eval_of_a_sequence_dataset_refuses_per_sample_options(seq_root, tmp_path):
    r = runner.invoke(app, ["eval", "--dataset", "synth-seq", "--data-root", str(seq_root), "--no-refine",
                            "--csv", str(tmp_path / "x.csv")])
    assert r.exit_code == 64 and "--csv: not available for the sequence dataset synth-seq" in r.output


def test_eval_synth_seq_never_overwrites_a_file_that_appeared_while_it_ran(seq_root, tmp_path, monkeypatch):
    """-o of a sequence dataset was checked when eval started, not again before writing (as the image
    datasets' is): a user's file written there meanwhile was replaced by the results."""
    import betterdepth_cli.evaluation.temporal_runner as temporal_runner
    from training.flicker_conditioner import write_flicker_maps

    write_flicker_maps("synth-seq", str(seq_root), str(tmp_path / "maps"))
    out = tmp_path / "notes.json"
    real = temporal_runner.run_temporal_evaluation

    def user_saves_meanwhile(cfg, progress=None):
        result = real(cfg, progress=progress)
        out.write_text('{"mine": 1}')
        return result

    monkeypatch.setattr(temporal_runner, "run_temporal_evaluation", user_saves_meanwhile)
    r = runner.invoke(app, ["eval", "--dataset", "synth-seq", "--data-root", str(seq_root), "--no-refine",
                            "--conditioner", f"file:{tmp_path / 'maps'}?kind=disparity", "-o", str(out), "-q"])
    assert r.exit_code == 64
    assert r.stderr.strip().endswith(f"--output {out}: exists and is not a results JSON of betterdepth eval "
                                     "(refusing to overwrite it); choose another path")
    assert out.read_text() == '{"mine": 1}'
