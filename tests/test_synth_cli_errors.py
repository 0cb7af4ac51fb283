"""`betterdepth synth` and the training scripts around it refuse bad requests up front, in one line.

Every argument is checked before anything is written (no folder for a refused command), limits are
documented, a folder is never described as holding fewer samples than it does, and the
`python -m training.*` scripts give `betterdepth`'s one-line errors and exit codes.
"""

from __future__ import annotations

import json
import tomllib

import pytest
from typer.testing import CliRunner

from betterdepth_cli.cli.app import app

pytest.importorskip("open3d")


def synth(*args: str):
    return CliRunner().invoke(app, ["synth", *args])


def error_of(res) -> str:
    """The one error line of a refused command (and nothing else on stderr)."""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("betterdepth: error: "), res.stderr
    return lines[0].removeprefix("betterdepth: error: ")


# --------------------------------------------------------------------------- checked before writing


def test_a_negative_seed_is_refused_by_name_and_nothing_is_written(tmp_path):
    out = tmp_path / "X"
    res = synth("-n", "1", "--size", "16", "--seed", "-1", "-o", str(out))
    assert res.exit_code == 64
    assert error_of(res) == "--seed must be >= 0, got -1"
    assert not out.exists()  # no folder, no dataset.toml: the corrected rerun is not locked out
    res = synth("-n", "1", "--size", "16", "--seed", "0", "-o", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert tomllib.loads((out / "dataset.toml").read_text())["source"]["seed0"] == 0


@pytest.mark.parametrize("size, supersample, message", [
    ("100000x100000", "1", "--size must be 8 .. 16384 pixels per side, got 100000x100000 (WxH)"),
    ("1000000000", "1", "--size must be 8 .. 16384 pixels per side, got 1000000000x1000000000 (WxH)"),
    ("16385x8", "1", "--size must be 8 .. 16384 pixels per side, got 16385x8 (WxH)"),
    ("7", "1", "--size must be 8 .. 16384 pixels per side, got 7x7 (WxH)"),
    # 4097 * 4097 = 16,785,409 rays, one row and column past 4096 * 4096 = 16,777,216
    ("4097", "1", "--size 4097x4097 with --supersample 1 is 16,785,409 rays per image, more than the 16,777,216 "
                  "limit (4096x4096 at supersample 1; about 4 GB of memory)"),
    # 2000 * 1000 * 3**2 = 18,000,000
    ("2000x1000", "3", "--size 2000x1000 with --supersample 3 is 18,000,000 rays per image, more than the "
                       "16,777,216 limit (4096x4096 at supersample 1; about 4 GB of memory)"),
    ("4x", "1", "--size must be N or WxH, got '4x'"),
])
def test_huge_or_bad_sizes_are_refused_up_front(tmp_path, size, supersample, message):
    out = tmp_path / "Y"
    res = synth("-n", "1", "--size", size, "--supersample", supersample, "-o", str(out))
    assert res.exit_code == 64
    assert error_of(res) == message
    assert not out.exists()


def test_the_limits_themselves_are_accepted():
    from training.synthetic.settings import MAX_SEED, check_request

    assert check_request(10_000_000, 0, (4096, 4096)) == (4096, 4096)  # exactly 16,777,216 rays
    assert check_request(1, 0, (1365, 1365), supersample=3) == (1365, 1365)  # 1365² * 9 = 16,769,025
    assert check_request(1, 0, (16384, 8)) == (16384, 8)  # 131,072 rays
    assert check_request(10, MAX_SEED - 9, 16) == (16, 16)  # seeds up to 2**63 - 1 exactly
    with pytest.raises(ValueError, match=r"`seed0` 9223372036854775799 with `n` 10 goes past the largest seed"):
        check_request(10, MAX_SEED - 8, 16)


def test_absurd_counts_and_seeds_past_the_largest_are_refused_up_front(tmp_path):
    out = tmp_path / "H"
    res = synth("-n", "100000000000", "--size", "16", "-o", str(out))  # hung before
    assert res.exit_code == 64 and error_of(res) == "-n must be at most 10,000,000, got 100,000,000,000"
    # 2**63 - 5 + 9 > 2**63 - 1; the largest first seed for 10 scenes is 2**63 - 1 - 9
    res = synth("-n", "10", "--seed", str(2**63 - 5), "--size", "16", "-o", str(out))
    assert res.exit_code == 64
    assert error_of(res) == ("--seed 9223372036854775803 with -n 10 goes past the largest seed, 2**63 - 1 (sample i "
                             "uses --seed + i): use --seed 9223372036854775798 or less")
    for args, message in ((["--workers", "257"], "--workers must be 1 .. 256, got 257"),
                          (["--sequence", "--frames", "100001"], "--frames must be 1 .. 100,000, got 100,001"),
                          (["--sequence", "--seed", "-3"], "--seed must be >= 0, got -3")):
        res = synth("-n", "1", "--size", "16", "-o", str(out), *args)
        assert res.exit_code == 64 and error_of(res) == message
    assert not out.exists()
    # the largest seed itself renders (numpy seeds take any non-negative integer) and is recorded exactly
    res = synth("-n", "1", "--size", "8", "--seed", str(2**63 - 1), "-o", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert tomllib.loads((out / "dataset.toml").read_text())["source"]["seed0"] == 2**63 - 1
    assert json.loads((out / "meta" / "000000.json").read_text())["seed"] == 2**63 - 1


def test_the_library_checks_before_writing_too(tmp_path):
    from training.sequences import write_sequences
    from training.synthetic import write_dataset

    with pytest.raises(ValueError, match=r"^`seed0` must be >= 0, got -1$"):
        write_dataset(tmp_path / "a", 1, seed0=-1, size=16)
    with pytest.raises(ValueError, match=r"^`n` must be at most 10,000,000, got 10,000,001$"):
        write_dataset(tmp_path / "a", 10_000_001, size=16)
    with pytest.raises(ValueError, match=r"^`n_frames` must be 1 \.\. 100,000, got 0$"):
        write_sequences(tmp_path / "a", 1, 0, size=(16, 16))
    with pytest.raises(ValueError, match=r"^`n_clips` must be >= 0, got -1$"):
        write_sequences(tmp_path / "a", -1, 2, size=(16, 16))
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- a folder's count stays true


def test_fewer_scenes_than_the_folder_holds_are_refused_and_nothing_changes(tmp_path):
    out = tmp_path / "Z"
    assert synth("-n", "3", "--size", "8", "-o", str(out), "-q").exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    res = synth("-n", "2", "--size", "8", "-o", str(out))
    assert res.exit_code == 73
    assert error_of(res) == (f"{out}: holds 3 scenes, more than the 2 asked (nothing was written); ask for 3 or more "
                             "scenes to resume or extend it, or write to another folder")
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert tomllib.loads((out / "dataset.toml").read_text())["source"]["n"] == 3
    res = synth("-n", "3", "--size", "8", "-o", str(out))  # the same count: nothing to do, said so
    assert res.exit_code == 0 and res.stderr.strip() == f"synth: nothing to do: {out} already holds the 3 scenes"
    # a folder whose dataset.toml under-counts (as the old rerun left it): the files on disk count
    toml = (out / "dataset.toml").read_text()
    (out / "dataset.toml").write_text(toml.replace("n = 3", "n = 1"))
    res = synth("-n", "2", "--size", "8", "-o", str(out))
    assert res.exit_code == 73 and "holds 3 scenes, more than the 2 asked" in error_of(res)
    # an interrupted run of 3 that finished 1 scene still holds a 3-scene dataset
    (out / "dataset.toml").write_text(toml)
    for sub, ext in (("rgb", "png"), ("depth", "npy"), ("meta", "json")):
        for i in (1, 2):
            (out / sub / f"{i:06d}.{ext}").unlink()
    res = synth("-n", "2", "--size", "8", "-o", str(out))
    assert res.exit_code == 73 and "holds 3 scenes, more than the 2 asked" in error_of(res)
    res = synth("-n", "3", "--size", "8", "-o", str(out))  # resumes: 2 written, 1 kept
    assert res.exit_code == 0 and "wrote 2 scenes" in res.stderr and "(1 were there already)" in res.stderr


# --------------------------------------------------------------------------- --sequence


def test_sequence_reruns_name_the_setting_the_count_and_a_no_op(tmp_path):
    out = tmp_path / "S"
    base = ["--sequence", "--frames", "2", "--size", "16", "--kind", "indoor", "--motion", "static", "-o", str(out)]
    assert synth("-n", "2", *base, "-q").exit_code == 0
    res = synth("-n", "2", *base)
    assert res.exit_code == 0
    assert res.stderr.strip() == f"synth: nothing to do: {out} already holds the 2 clips"
    res = synth("-n", "2", *base, "--frames", "3")
    assert res.exit_code == 73
    assert error_of(res) == (f"{out}: was written with other sequence settings (frames 2 there, 3 asked); use another "
                             "folder or the same settings")
    res = synth("-n", "2", *base, "--motion", "orbit", "--size", "24x16")
    assert res.exit_code == 73
    assert "(size [16, 16] there, [16, 24] asked, motion 'static' there, 'orbit' asked)" in error_of(res)
    res = synth("-n", "1", *base)
    assert res.exit_code == 73 and error_of(res).startswith(f"{out}: holds 2 clips, more than the 1 asked")


# --------------------------------------------------------------------------- python -m training.*


def test_flicker_conditioner_missing_input_is_one_line_exit_66(tmp_path, capsys):
    from training.flicker_conditioner import main

    for root, message in ((tmp_path / "nope", f"synth-seq: data root {tmp_path / 'nope'} does not exist or is not "
                                              "a folder"),
                          (tmp_path, f"synth-seq: no clips (folders with camera.json) in {tmp_path}")):
        with pytest.raises(SystemExit) as exc:
            main(["synth-seq", str(root), str(tmp_path / "maps")])
        assert exc.value.code == 66
        assert capsys.readouterr().err == f"betterdepth: error: {message}\n"
    with pytest.raises(SystemExit) as exc:
        main(["synth-seq", str(tmp_path), str(tmp_path / "maps"), "--scale-jitter", "1.5"])
    assert exc.value.code == 64
    assert capsys.readouterr().err == "betterdepth: error: --scale-jitter must be in [0, 1), got 1.5\n"
    assert not (tmp_path / "maps").exists()


def test_conditioner_recipe_typos_are_refused_like_betterdepth_train(tmp_path, capsys):
    from training.conditioner import load_recipe, main

    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\ntrain = "x"\n[train]\nlrr = 1e-3\n')
    with pytest.raises(SystemExit) as exc:
        main(["--recipe", str(recipe), "--output", str(tmp_path / "out")])
    assert exc.value.code == 64
    assert capsys.readouterr().err == (
        f"betterdepth: error: {recipe}: unknown key [train] 'lrr' (valid: batch_size, checkpoint_every, device, "
        "log_every, lr, max_minutes, photometric, seed, steps, threads, warmup, weight_decay)\n")
    assert not (tmp_path / "out").exists()
    for text, shown in (("1.0", "1.0"), ("-0.1", "-0.1"), ('"0.3"', "'0.3'")):
        recipe.write_text(f'[data]\ntrain = "x"\n[train]\nphotometric = {text}\n')
        with pytest.raises(SystemExit) as exc:
            main(["--recipe", str(recipe), "--output", str(tmp_path / "out")])
        assert exc.value.code == 64
        assert capsys.readouterr().err == (f"betterdepth: error: {recipe}: [train] photometric must be a number in "
                                           f"[0, 1) (the jitter's half-range), got {shown}\n")
    recipe.write_text("[optim]\nlr = 1e-3\n")
    with pytest.raises(SystemExit) as exc:
        main(["--recipe", str(recipe), "--output", str(tmp_path / "out")])
    assert exc.value.code == 64
    assert capsys.readouterr().err == (f"betterdepth: error: {recipe}: unknown key 'optim' "
                                       "(valid: [data], [model], [train])\n")
    with pytest.raises(SystemExit) as exc:
        main(["--recipe", str(tmp_path / "none.toml"), "--output", str(tmp_path / "out")])
    assert exc.value.code == 64 and "--recipe" in capsys.readouterr().err
    from pathlib import Path

    recipes = Path(__file__).resolve().parent.parent / "training" / "recipes"
    for name in ("default-conditioner.toml", "gpu-conditioner.toml", "default-conditioner-photometric.toml"):
        # the shipped recipes and the experiment still load
        assert set(load_recipe(recipes / name)) == {"data", "model", "train"}


def test_reproduce_conditioner_recipe_alone_says_how_to_render_its_scenes(tmp_path, capsys):
    """The plug-and-play DPT recipe describes scenes (kind, scenes, seed0, size) that training.reproduce
    renders; `python -m training.conditioner` on it said "unknown key [data] 'kind'"."""
    from pathlib import Path

    from training.conditioner import load_recipe, main

    shipped = Path(__file__).resolve().parent.parent / "training" / "recipes" / "reproduce-dpt-conditioner.toml"
    with pytest.raises(SystemExit) as exc:
        main(["--recipe", str(shipped), "--output", str(tmp_path / "out")])
    assert exc.value.code == 64
    assert capsys.readouterr().err == (
        f"betterdepth: error: {shipped}: [data] describes scenes to render, not a folder (python -m "
        "training.reproduce renders them): render them with `betterdepth synth --kind indoor -n 2000 --seed "
        '5000000 --size 192 -o DIR` and set [data] train = "DIR"\n')
    assert not (tmp_path / "out").exists()
    recipe = tmp_path / "r.toml"  # with the folder set, the scene keys are a description and load
    recipe.write_text(shipped.read_text().replace('kind = "indoor"', 'kind = "indoor"\ntrain = "scenes"'))
    assert load_recipe(recipe)["data"]["train"] == "scenes"


def test_flags_the_chosen_mode_would_ignore_are_refused(tmp_path):
    """--supersample, --depth-format and --workers were ignored with --sequence (clips came out at one ray
    per pixel, npy depth, one process); --frames and --motion without --sequence were ignored too."""
    out = tmp_path / "M"
    for args, message in (
            (["--sequence", "--supersample", "3"], "`--supersample` does not apply with --sequence (clips: one ray "
                                                   "per pixel, npy depth, one process)"),
            (["--sequence", "--depth-format", "png16"], "`--depth-format` does not apply with --sequence (clips: one "
                                                        "ray per pixel, npy depth, one process)"),
            (["--sequence", "--workers", "2"], "`--workers` does not apply with --sequence (clips: one ray per "
                                               "pixel, npy depth, one process)"),
            (["--frames", "4"], "`--frames` applies only with --sequence (clips)"),
            (["--motion", "orbit"], "`--motion` applies only with --sequence (clips)")):
        res = synth("-n", "1", "--size", "16", "-o", str(out), *args)
        assert res.exit_code == 64 and error_of(res) == message, res.output
    assert not out.exists()
    # the defaults given explicitly are what the mode does, and pass
    res = synth("-n", "1", "--size", "8", "--supersample", "1", "--depth-format", "npy", "--workers", "1",
                "--sequence", "--frames", "1", "--motion", "static", "-o", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*/rgb/*.png")) == ["frame.000000.png"]
