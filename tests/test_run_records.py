"""`refine`'s run record (betterdepth-run.toml) and resume across spellings, the dry run's checks, and
the library's sidecar: what a rerun (from the record, another folder or the library) needs."""

from __future__ import annotations

import json
import os
import tomllib

import pytest
from refine_cli_helpers import refine, write_png


def _record(folder, name="betterdepth-run.toml") -> dict:
    return tomllib.loads((folder / name).read_text())


def test_a_run_that_fails_on_every_input_keeps_the_record_of_the_job_that_wrote_them(tmp_path, models):
    img = write_png(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    assert refine([img, "-o", out, *models, "--steps", "1", "-q"]).exit_code == 0
    for flags in ([], ["--continue-on-error"]):
        res = refine([img, "-o", out, *models, "--steps", "2", *flags])
        assert res.exit_code == 65, res.stderr
        assert "0 to process, 1 that will fail" in res.stderr and "steps 1 -> 2" in res.stderr
        assert "loading" not in res.stderr  # no model is loaded for inputs that cannot be written
        assert _record(out)["steps"] == 1  # the record of the job that wrote the outputs stays
    again = refine(["--config", out / "betterdepth-run.toml"])
    assert again.exit_code == 0 and "1 skipped" in again.stderr


def test_the_record_keeps_every_option_and_absolute_paths_so_it_reruns_from_anywhere(tmp_path, models,
                                                                                     tiny_model_dir, monkeypatch):
    for f in (1001, 1002):
        write_png(tmp_path / "shot" / f"s.{f}.png", seed=f)
    (tmp_path / "list.txt").write_text("shot/s.%04d.png\n")
    from betterdepth_cli.io.images import DEFAULT_PIXEL_LIMIT, PIXEL_LIMIT_ENV

    monkeypatch.setenv(PIXEL_LIMIT_ENV, str(DEFAULT_PIXEL_LIMIT))  # --max-pixels sets it for the process: restored
    monkeypatch.chdir(tmp_path)  # the list and the model given relative to here
    flags = [*models[:2], "--model", os.path.relpath(tiny_model_dir, tmp_path), "--processing-res", "64"]
    res = refine(["@list.txt", "-o", "out", *flags, "--frames", "1001-1003", "--allow-missing",
                  "--max-pixels", "5000000", "-q"])
    assert res.exit_code == 0, res.stderr
    record = _record(tmp_path / "out", "betterdepth-run.frames-1001-1003.toml")
    assert record["inputs"] == [f"@{tmp_path}/list.txt"]
    assert record["model"] == str(tiny_model_dir.resolve())
    assert (record["allow-missing"], record["max-pixels"]) == (True, 5000000)
    monkeypatch.chdir(tmp_path / "shot")  # elsewhere: the record alone reruns the job (all skipped)
    again = refine(["--config", tmp_path / "out" / "betterdepth-run.frames-1001-1003.toml"])
    assert again.exit_code == 0, again.stderr
    assert "2 skipped" in again.stderr
    side = json.loads((tmp_path / "out" / "shot" / "s.1001.json").read_text())
    assert side["model"] == str(tiny_model_dir.resolve())


def test_resume_takes_one_spelling_of_the_model_folder_and_of_the_tile(tmp_path, tiny_dpt_dir, tiny_model_dir,
                                                                       monkeypatch):
    img = write_png(tmp_path / "a.png")
    monkeypatch.chdir(tiny_model_dir.parent)
    cond = ["--conditioner", f"hf:{tiny_dpt_dir}", "--processing-res", "0"]  # native: tiles allowed
    assert refine([img, "-o", tmp_path / "o", *cond, "--model", "model", "--tile", "256", "-q"]).exit_code == 0
    for model, tile in (("./model", "256:32"), (str(tiny_model_dir), "256"), ("model/", "256:32")):
        res = refine([img, "-o", tmp_path / "o", *cond, "--model", model, "--tile", tile])
        assert res.exit_code == 0 and "1 skipped" in res.stderr, res.stderr
    res = refine([img, "-o", tmp_path / "o", *cond, "--model", "model", "--tile", "256:40"])  # another overlap
    assert res.exit_code == 65 and "tile_overlap None -> 40" in res.stderr


def test_a_dry_run_fails_as_the_run_would(tmp_path, models):
    import torch

    img = write_png(tmp_path / "a.png")
    ok = refine([img, "-o", tmp_path / "o", *models, "--dry-run"])
    assert ok.exit_code == 0 and "nothing written" in ok.stderr
    assert refine([img, "-o", tmp_path / "o", *models, "--dry-run", "--dtype", "fp16", "--device", "cpu"]).exit_code == 64
    if not torch.cuda.is_available():
        assert refine([img, "-o", tmp_path / "o", *models, "--dry-run", "--device", "cuda"]).exit_code == 64
    missing = refine([img, "-o", tmp_path / "o", *models[:2], "--model", tmp_path / "nope", "--dry-run"])
    assert missing.exit_code == 69 and "nope: model folder not found" in missing.stderr
    for cond in (f"file:{tmp_path / 'nope'}?kind=depth", f"hf:{tmp_path / 'nope'}"):  # conditioners not found: 69
        gone = refine([img, "-o", tmp_path / "o", "--conditioner", cond, *models[2:], "--dry-run"])
        assert gone.exit_code == 69 and "folder not found" in gone.stderr, gone.stderr
    unknown = refine([img, "-o", tmp_path / "o", "--conditioner", "dtp", *models[2:], "--dry-run"])
    assert unknown.exit_code == 64 and "did you mean 'dpt'" in unknown.stderr  # a misspelt name: usage
    assert not (tmp_path / "o").exists()


def test_the_librarys_sidecar_is_refines_so_refine_resumes_over_it(tmp_path, tiny_dpt_dir, tiny_model_dir):
    from PIL import Image

    from betterdepth_cli import BetterDepthPipeline

    img = write_png(tmp_path / "photos" / "a.png")
    flags = ["--conditioner", f"hf:{tiny_dpt_dir}", "--model", tiny_model_dir, "--processing-res", "64"]
    assert refine([img, "-o", tmp_path / "cli", *flags, "-q"]).exit_code == 0
    pipe = BetterDepthPipeline.from_pretrained(tiny_model_dir, f"hf:{tiny_dpt_dir}")
    pipe(Image.open(img), processing_res=64).save_png16(tmp_path / "lib" / "a.png", source=img)
    cli, lib = (json.loads((tmp_path / d / "a.json").read_text()) for d in ("cli", "lib"))
    assert lib == cli and lib["source"] == "../photos/a.png" and lib["model_card"]
    assert (tmp_path / "lib" / "a.png").read_bytes() == (tmp_path / "cli" / "a.png").read_bytes()
    again = refine([img, "-o", tmp_path / "lib", *flags])
    assert again.exit_code == 0 and "1 skipped" in again.stderr, again.stderr


@pytest.mark.parametrize("spec", ["a/b/c", "./m", "m"])
def test_a_local_looking_model_that_is_not_there_is_not_found(tmp_path, spec, monkeypatch):
    from betterdepth_cli.core.model_names import local_model_folder, model_record_name
    from betterdepth_cli.core.types import ModelNotFoundError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="model folder not found"):
        local_model_folder(spec)
    assert local_model_folder("owner/name") is None  # a hub id
    (tmp_path / "m").mkdir()
    assert model_record_name("./m") == model_record_name("m") == str((tmp_path / "m").resolve())
    assert (model_record_name(None), model_record_name("guided"), model_record_name("owner/x")) == (
        "default", "guided", "owner/x")


def test_a_script_runs_a_job_from_inputs_and_output_alone(tmp_path, tiny_dpt_dir, tiny_model_dir):
    """The jobs API as the README shows it: the options a script leaves out take the flags' defaults."""
    from betterdepth_cli import jobs
    from betterdepth_cli.jobs import refine_job

    img = write_png(tmp_path / "a.png")
    models = {"conditioner": f"hf:{tiny_dpt_dir}", "model": str(tiny_model_dir), "processing_res": 64}
    job = refine_job.prepare({"inputs": [str(img)], "output": str(tmp_path / "api"), **models}, info=print,
                             error=print)
    refine_job.check_device(job)
    cond, model = refine_job.load_models(job, info=print)
    assert refine_job.finish(job, jobs.run(job.plan, job.settings, cond, model), info=print) == 0
    flags = ["--conditioner", models["conditioner"], "--model", tiny_model_dir, "--processing-res", "64"]
    assert refine([img, "-o", tmp_path / "cli", *flags, "-q"]).exit_code == 0
    assert (tmp_path / "api" / "a.png").read_bytes() == (tmp_path / "cli" / "a.png").read_bytes()
    job = refine_job.prepare({"inputs": [str(img)], "output": str(tmp_path / "two"), "format": "npy,exr", **models},
                             info=print, error=print)
    assert job.settings.formats == ("npy", "exr")


def test_relative_paths_in_a_config_file_are_relative_to_the_file(tmp_path, tiny_model_dir, monkeypatch):
    """refine's inputs, output, model and file: conditioner folder, and eval's data root, outputs,
    model and conditioner, written relative to a job file, work from any folder."""
    import shutil

    import numpy as np
    from test_cli_eval import make_folder
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    img = write_png(tmp_path / "photos" / "a.png")
    (tmp_path / "maps").mkdir()
    np.save(tmp_path / "maps" / "a.npy", np.linspace(1, 2, 48 * 64, dtype=np.float32).reshape(48, 64))
    shutil.copytree(tiny_model_dir, tmp_path / "cfg" / "myrefiner")
    (tmp_path / "cfg" / "rel.toml").write_text(
        'inputs = ["../photos"]\noutput = "../out"\nmodel = "myrefiner"\nconditioner = "file:../maps?kind=disparity"\n'
        'format = "npy"\n')
    monkeypatch.chdir(tmp_path / "photos")
    res = refine(["--config", tmp_path / "cfg" / "rel.toml", "-q"])
    assert res.exit_code == 0, res.stderr
    side = json.loads((tmp_path / "out" / "a.json").read_text())
    assert side["model"] == str((tmp_path / "cfg" / "myrefiner").resolve()) and img.exists()
    assert side["conditioner"] == f"file:{tmp_path / 'maps'}?kind=disparity"
    make_folder(tmp_path / "ds", tmp_path / "preds")
    (tmp_path / "cfg" / "ev.toml").write_text(
        '[eval]\ndataset = "folder"\ndata-root = "../ds"\noutput = "../ev.json"\nno-refine = true\n'
        'conditioner = "file:../preds?kind=depth&metric=1"\nalignment = "none"\n')
    res = CliRunner().invoke(app, ["eval", "--config", str(tmp_path / "cfg" / "ev.toml"), "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ev.json").read_text())["metrics"]["conditioner"]["abs_rel"] == pytest.approx(0.25)


def test_a_pixel_limit_of_zero_or_less_is_a_usage_error(tmp_path, models, monkeypatch):
    from betterdepth_cli.io.images import PIXEL_LIMIT_ENV

    img = write_png(tmp_path / "a.png")
    (tmp_path / "t.toml").write_text(f'inputs = ["{img}"]\noutput = "{tmp_path / "o"}"\nmax-pixels = 0\n')
    res = refine(["--config", tmp_path / "t.toml", *models, "--dry-run"])
    assert res.exit_code == 64 and "`max-pixels` must be a positive number" in res.stderr
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "-5")
    res = refine([img, "-o", tmp_path / "o", *models])
    assert res.exit_code == 64 and "expected a positive number of pixels" in res.stderr


def test_a_model_retrained_into_the_same_folder_makes_its_outputs_stale(tmp_path):
    """The card records its weights' SHA-256 when saved: the same weights saved again keep the digest
    (outputs are skipped), other weights in the same folder change it (refine redoes the outputs
    instead of keeping the old model's maps)."""
    import numpy as np
    import torch
    from PIL import Image
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app
    from betterdepth_cli.core.model_names import read_card
    from betterdepth_cli.core.refiner import BetterDepthModel
    from betterdepth_cli.core.settings import card_digest

    model = BetterDepthModel.tiny(seed=0)
    model.save(tmp_path / "m")
    first = card_digest(read_card(str(tmp_path / "m")))
    model.save(tmp_path / "m")
    assert card_digest(read_card(str(tmp_path / "m"))) == first  # the same weights: the same card
    (tmp_path / "in").mkdir()
    Image.fromarray((np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)).save(tmp_path / "in" / "p.png")
    args = ["refine", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "m"),
            "--conditioner", "builtin", "-q"]
    assert CliRunner().invoke(app, args).exit_code == 0
    with torch.no_grad():
        next(model.unet.parameters()).add_(0.5)  # "retrained"
    model.save(tmp_path / "m")
    assert card_digest(read_card(str(tmp_path / "m"))) != first
    res = CliRunner().invoke(app, [a for a in args if a != "-q"])
    assert res.exit_code == 65 and "outputs exist from other settings (model_card" in res.output  # not kept silently
