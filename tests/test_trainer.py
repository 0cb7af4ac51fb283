"""The training loop, recipes, caches and `betterdepth train` with tiny real models on the CPU.

The conditioner is a tiny random DPT (conftest ``tiny_dpt_dir``) loaded through
``hf:<folder>``; data are a few 32 x 32 procedural scenes rendered once per module.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from betterdepth_cli.core.align import DegenerateAlignmentWarning
from betterdepth_cli.core.types import UsageError
from training.config import apply_overrides, dump_recipe, load_recipe, parse_value, recipe_from_dict
from training.batches import BatchPlan, transform_sample
from training.checkpoints import list_checkpoints
from training.trainer import lr_factor

RECIPES = Path(__file__).resolve().parent.parent / "training" / "recipes"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Six 32 x 32 synthetic scenes in the generic folder format."""
    from training.synthetic import write_dataset

    return write_dataset(tmp_path_factory.mktemp("scenes") / "synth", 6, seed0=0, size=32)


def tiny_recipe(dpt: Path, scenes_dir: Path, cache: Path, **sections) -> dict:
    """A raw recipe table for a seconds-long run (UNet 8/16 channels, 32 px, batch 2)."""
    d = {
        "name": "test",
        "model": {"init": "tiny", "block_out_channels": [8, 16]},
        "conditioner": {"name": f"hf:{dpt}"},
        "data": {"datasets": [{"type": "folder", "root": str(scenes_dir)}], "cache_dir": str(cache)},
        "train": {"batch_size": 2, "max_steps": 6, "checkpoint_every": 3, "checkpoints_total_limit": 0, "log_every": 1},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "schedule": "cosine", "min_lr_ratio": 0.1},
        "validation": {"holdout": 2, "every": 3, "steps": [1, 2]},
    }
    for name, values in sections.items():
        d.setdefault(name, {}).update(values)
    return d


@pytest.fixture(scope="module")
def run_a(tiny_dpt_dir, scenes, tmp_path_factory):
    """An uninterrupted 6-step run with checkpoints at steps 3 and 6 and validation."""
    from training.trainer import train

    root = tmp_path_factory.mktemp("run-a")
    recipe = recipe_from_dict(tiny_recipe(tiny_dpt_dir, scenes, root / "cache"))
    lines: list[str] = []
    result = train(recipe, root / "out", log=lines.append)
    return recipe, result, lines


# --------------------------------------------------------------------------- pure helpers


def test_lr_factor_warmup_then_decay():
    assert [lr_factor(s, 10, warmup=2) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(2, 10, 2, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half way
    assert lr_factor(10, 10, 2, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(6, 10, 2, "linear", 0.0) == pytest.approx(0.5)
    assert lr_factor(6, 10, 2, "exponential", 0.01) == pytest.approx(0.1)


def test_batch_plan_covers_each_epoch_once_across_processes():
    plan = BatchPlan([10], [1.0], batch_size=2, num_processes=2, seed=0)
    first_epoch = [i for g in range(3) for p in range(2) for _, i in plan.batch(g, p)][:10]
    assert sorted(first_epoch) == list(range(10))  # 2 processes x 2 samples, no overlap
    again = BatchPlan([10], [1.0], batch_size=2, num_processes=2, seed=0)
    assert again.batch(7, 1) == plan.batch(7, 1)  # a pure function of (seed, g, process)
    other_seed = [BatchPlan([10], [1.0], 2, 2, seed=1).batch(g, 0) for g in range(3)]
    assert other_seed != [plan.batch(g, 0) for g in range(3)]


def test_batch_plan_mixes_sources_by_weight_one_source_per_batch():
    plan = BatchPlan([50, 7], [0.9, 0.1], batch_size=3, num_processes=1, seed=0)
    sources = [plan.source(g) for g in range(2000)]
    assert 0.87 < sources.count(0) / 2000 < 0.93
    for g in range(40):
        ks = {k for k, _ in plan.batch(g, 0)}
        assert ks == {sources[g]}
    with pytest.raises(UsageError, match="weights"):
        BatchPlan([5, 5], [0, 0], 1, 1, 0)


def test_transform_sample_applies_one_geometry_to_all_maps():
    h, w = 20, 28
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    code = (yy * 100 + xx)[None]  # (1,H,W) unique per pixel
    maps = {"rgb": code.repeat(3, 1, 1), "depth": code + 1, "valid": torch.ones(1, h, w, dtype=torch.bool),
            "cond": code + 2, "cond_valid": (code % 2 == 0)}
    seen_flip = set()
    for seed in range(12):
        out = transform_sample(maps, processing_res=0, crop=[], multiple=8, random_crop=True, hflip=True,
                               generator=torch.Generator().manual_seed(seed))
        assert out["rgb"].shape == (3, 16, 24)
        torch.testing.assert_close(out["depth"], out["rgb"][:1] + 1)
        torch.testing.assert_close(out["cond"], out["rgb"][:1] + 2)
        assert torch.equal(out["cond_valid"], out["rgb"][:1] % 2 == 0)
        seen_flip.add(bool(out["rgb"][0, 0, 0] > out["rgb"][0, 0, 1]))
    assert seen_flip == {True, False}
    centred = transform_sample(maps, processing_res=0, crop=[8, 8], multiple=8, random_crop=False, hflip=False,
                               generator=torch.Generator())
    assert centred["rgb"][0, 0, 0].item() == 6 * 100 + 10
    with pytest.raises(UsageError, match="multiples of 8"):
        transform_sample(maps, processing_res=0, crop=[10, 8], multiple=8, random_crop=False, hflip=False,
                         generator=torch.Generator())


# --------------------------------------------------------------------------- recipes


def test_shipped_recipes_parse_with_the_papers_settings():
    tiny = load_recipe(RECIPES / "tiny-cpu.toml")
    assert tiny.model.init == "tiny" and tiny.train.batch_size == 4 and tiny.optim.lr == 3e-4
    assert tiny.train_sources() == [{"type": "synthetic", "n": 64, "size": 64, "seed": 0}]
    sd2 = load_recipe(RECIPES / "sd2-hypersim-vkitti.toml")
    assert sd2.model.init == "stabilityai/stable-diffusion-2"
    assert sd2.train.batch_size * sd2.train.gradient_accumulation_steps == 32
    assert (sd2.optim.lr, sd2.optim.optimizer, sd2.train.max_steps) == (3e-5, "adam", 5000)
    assert (sd2.objective.patch_size, sd2.objective.eta, sd2.data.processing_res) == (8, 0.1, 768)
    assert (sd2.train.mixed_precision, sd2.train.checkpoint_every) == ("fp16", 500)
    assert sd2.conditioner.name == "depth-anything-large"  # the paper's main model: Depth Anything v1
    assert [(s["type"], s["weight"]) for s in sd2.train_sources()] == [("hypersim", 0.9), ("vkitti2", 0.1)]
    hypersim, vkitti = sd2.train_sources()
    assert hypersim["root"].endswith("hypersim_processed_train.tar")
    assert hypersim["filenames"].endswith("data_split/hypersim_depth/filename_list_train_filtered.txt")
    assert vkitti["kb_crop"] and vkitti["filenames"].endswith("data_split/vkitti_depth/vkitti_train.txt")
    dav2 = load_recipe(RECIPES / "sd2-hypersim-vkitti-dav2.toml")
    assert dav2.conditioner.name == "depth-anything-v2-large"
    for section in ("model", "data", "objective", "train", "optim"):  # otherwise the same run
        assert getattr(dav2, section) == getattr(sd2, section), section


def test_default_refiner_recipe_is_the_shipped_residual_guided_design():
    import json

    from training.build_default import DATA, REFINER_STAGES, WEIGHTS

    (name,) = REFINER_STAGES
    r = load_recipe(RECIPES / f"{name}.toml")
    assert r.name == name and r.model.init == "tiny" and r.objective.mode == "e2e"
    assert r.model.residual and r.model.raw_conditioning and r.model.conditioning_filter["type"] == "guided"
    assert r.objective.prealign and not r.objective.patch_mask  # a documented departure (MODEL_CARD.md)
    assert r.conditioner.name == "simulated" and r.conditioner.mix_name == "builtin"
    train_root = r.train_sources()[0]["root"]
    assert any(train_root == f"data/{folder}" for folder, *_ in DATA)
    card = json.loads((WEIGHTS / "refiner" / "betterdepth.json").read_text())
    assert card["trained_with"]["recipe"] == name and card["residual"] and card["raw_conditioning"]
    assert card["trained_with"]["steps"] == r.train.max_steps
    assert card["defaults"]["conditioner"] == "builtin"


def test_recipe_overrides_round_trip_and_errors(tmp_path):
    r = load_recipe(RECIPES / "tiny-cpu.toml", ["optim.lr=1e-4", "objective.prealign=false", "data.crop=[32, 32]",
                                                 "conditioner.name=hf:/x/y"])
    assert (r.optim.lr, r.objective.prealign, r.data.crop, r.conditioner.name) == (1e-4, False, [32, 32], "hf:/x/y")
    path = tmp_path / "resolved.toml"
    path.write_text(dump_recipe(r, "resolved"))
    assert load_recipe(path) == r
    assert parse_value("{n = 8, size = 32}") == {"n": 8, "size": 32} and parse_value("abc") == "abc"
    with pytest.raises(UsageError, match=r"^--set 'optim.lrr': unknown key \[optim\] 'lrr' \(valid: betas, eps, lr, "):
        load_recipe(RECIPES / "tiny-cpu.toml", ["optim.lrr=1"])  # the override named, not the file
    with pytest.raises(UsageError, match="tiny-cpu.toml with --set: `train.batch_size` must be an integer"):
        load_recipe(RECIPES / "tiny-cpu.toml", ["train.batch_size=1.5"])
    for key in ("objective.e2e_excursion_weight", "objective.e2e_excursion_radius"):
        with pytest.raises(UsageError, match=f"`{key}` must be"):
            load_recipe(RECIPES / "tiny-cpu.toml", [f"{key}=-1"])
    with pytest.raises(UsageError, match="`optim.schedule` must be"):
        load_recipe(RECIPES / "tiny-cpu.toml", ["optim.schedule=step"])
    with pytest.raises(UsageError, match="expected section.key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(UsageError, match="no training data"):
        recipe_from_dict({})
    with pytest.raises(UsageError, match="synthetic: `n` must be"):
        recipe_from_dict({"data": {"synthetic": {"size": 8}}})
    with pytest.raises(UsageError, match="file not found"):
        load_recipe(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- prediction cache


def test_cache_runs_the_conditioner_once_per_sample(tiny_dpt_dir, scenes, tmp_path):
    from betterdepth_cli.conditioner_registry import get_conditioner
    from training.cache import PredictionCache, conditioner_id
    from training.datasets import FolderDataset

    cond = get_conditioner(f"hf:{tiny_dpt_dir}")
    runs = []
    real_predict = cond.predict

    def counting_predict(images, keys=None):  # counts, then runs the real model
        runs.append(images.shape[0])
        return real_predict(images, keys=keys)

    cond.predict = counting_predict
    samples = [FolderDataset(scenes)[i] for i in range(6)]
    cache = PredictionCache(cond, tmp_path, conditioner_id(cond, f"hf:{tiny_dpt_dir}"), batch_size=4)
    first = cache.predict(samples)
    for _ in range(3):  # three more "epochs"
        again = cache.predict(samples[::-1])
    assert sum(runs) == 6 and cache.calls == 6 and cache.hits == 18
    for (v1, m1), (v2, m2) in zip(first, again[::-1]):
        assert torch.equal(v1, v2) and torch.equal(m1, m2)
    direct = real_predict(samples[0]["rgb"][None])
    torch.testing.assert_close(first[0][0], direct.values[0])
    # a new process with the same cache folder does not run the model either
    fresh = PredictionCache(cond, tmp_path, conditioner_id(cond, f"hf:{tiny_dpt_dir}"))
    fresh.predict(samples)
    assert sum(runs) == 6 and fresh.hits == 6
    # other weights (a changed model folder) -> another id -> predicted again
    other = tmp_path / "dpt2"
    shutil.copytree(tiny_dpt_dir, other)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    assert conditioner_id(cond, f"hf:{other}") != conditioner_id(cond, f"hf:{tiny_dpt_dir}")
    # the same weights with the input padded by reflection compute something else -> another id
    from betterdepth_cli.core.conditioners import HFConditioner

    padded = HFConditioner(tiny_dpt_dir, "t", reflect_pad=1 / 12)
    assert conditioner_id(padded, "builtin") != conditioner_id(HFConditioner(tiny_dpt_dir, "t"), "builtin")


def test_latent_cache_returns_the_codec_latents(tmp_path):
    from betterdepth_cli.core.autoencoders import tiny_codec
    from training.cache import LatentCache

    codec = tiny_codec("kl", factor=4, seed=0).eval()
    cache = LatentCache(codec, tmp_path)
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    z1 = cache.encode(rgb)
    z2 = cache.encode(rgb)
    with torch.no_grad():
        direct = codec.encode_image(rgb * 2 - 1)
    torch.testing.assert_close(z1, direct)
    assert torch.equal(z1, z2) and cache.calls == 2 and cache.hits == 2


# --------------------------------------------------------------------------- training runs


def test_run_writes_metrics_checkpoints_and_calls_the_conditioner_once_per_sample(run_a):
    recipe, result, lines = run_a
    out = result.output
    assert result.step == 6 and len(result.losses) == 6 and all(math.isfinite(x) for x in result.losses)
    assert [s for s, _ in list_checkpoints(out)] == [3, 6]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rec = [r for r in records if r["type"] == "train"]
    assert [r["step"] for r in train_rec] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in train_rec] == result.losses
    # each step logs the lr it used: step 1 half the peak (warm-up 2), step 2 the peak
    assert [r["lr"] for r in train_rec[:2]] == pytest.approx([1e-3 * lr_factor(i, 6, 2, "cosine", 0.1) for i in (0, 1)])
    assert [r["lr"] for r in train_rec[:2]] == pytest.approx([5e-4, 1e-3])
    val = [r for r in records if r["type"] == "val"]
    assert [r["step"] for r in val] == [3, 6]
    for r in val:
        assert set(r) >= {"conditioner", "refiner_1", "refiner_2"}
        assert 0 < r["conditioner"]["abs_rel"] and 0 <= r["refiner_2"]["delta1"] <= 1
    # 4 training + 2 held-out samples, 3 epochs and 2 validations: each predicted once
    assert result.conditioner_calls == 6
    assert any(line.startswith("val step 3") and "AbsRel" in line for line in lines)
    assert any(line.startswith("step 6/6 loss") for line in lines)
    assert load_recipe(out / "config.toml") == recipe


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(run_a, tmp_path):
    from betterdepth_cli.core.refiner import load_model
    from training.trainer import train

    recipe, a, _ = run_a
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(a.output / "checkpoints" / "step-000003", out / "checkpoints" / "step-000003")
    shutil.copy(a.output / "metrics.jsonl", out / "metrics.jsonl")  # holds steps 1..6; resume truncates to 3
    b = train(recipe, out, resume=True, log=lambda m: None)
    assert b.resumed_from == 3 and b.step == 6
    assert b.losses == a.losses[3:]  # exact float equality
    ua, ub = load_model(a.model_path).unet.state_dict(), load_model(b.model_path).unet.state_dict()
    assert all(torch.equal(ua[k], ub[k]) for k in ua)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    # a changed objective cannot resume this run
    other = recipe_from_dict(apply_overrides(recipe.to_dict(), {"objective.eta": 0.5}))
    with pytest.raises(UsageError, match="objective.eta"):
        train(other, out, resume=True, log=lambda m: None)


def test_the_last_step_is_a_checkpoint_so_a_longer_rerun_continues(run_a, tmp_path):
    """max_steps 4 with checkpoints every 3: the run also keeps step 4, and the same run asked for 5
    steps resumes there instead of starting over."""
    from training.trainer import train

    recipe = run_a[0]
    short = recipe_from_dict(apply_overrides(recipe.to_dict(), {"train.max_steps": 4, "validation.every": 0}))
    first = train(short, tmp_path / "out", log=lambda m: None)
    assert first.step == 4 and [s for s, _ in list_checkpoints(tmp_path / "out")] == [3, 4]
    longer = recipe_from_dict(apply_overrides(short.to_dict(), {"train.max_steps": 5}))
    lines: list[str] = []
    second = train(longer, tmp_path / "out", log=lines.append)  # a rerun with a larger --max-steps
    assert (second.resumed_from, second.step, len(second.losses)) == (4, 5, 1)
    assert [s for s, _ in list_checkpoints(tmp_path / "out")] == [3, 4, 5]
    assert any(line.startswith("resumed from") and line.endswith("(step 4)") for line in lines)


def test_final_bundle_loads_and_refines(run_a, tiny_dpt_dir):
    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.refiner import load_model

    _, result, _ = run_a
    model = load_model(result.model_path)
    card = model.card
    assert card["trained_with"]["conditioner"] == f"hf:{tiny_dpt_dir}"
    assert card["trained_with"]["steps"] == 6 and card["trained_with"]["recipe"] == "test"
    assert card["trained_with"]["flags"] == {"depth_conditioning": True, "prealign": True, "patch_mask": True,
                                             "patch_size": 8, "eta": 0.1, "mode": "diffusion"}
    assert card["defaults"]["conditioner"] == f"hf:{tiny_dpt_dir}"
    images = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    res = refine_batch(images, conditioner=get_conditioner(f"hf:{tiny_dpt_dir}"), model=model, steps=2,
                       generator=torch.Generator().manual_seed(0))
    assert res.refined.shape == (2, 1, 24, 40) and torch.isfinite(res.refined).all()
    assert res.kind == "disparity" and not torch.equal(res.refined, res.conditioning)


def test_short_run_lowers_the_training_loss(tiny_dpt_dir, scenes, tmp_path):
    from training.trainer import Trainer

    raw = tiny_recipe(tiny_dpt_dir, scenes, tmp_path / "cache",
                      data={"hflip": False, "random_crop": False},
                      objective={"patch_mask": False},
                      train={"batch_size": 4, "max_steps": 24, "checkpoint_every": 0, "log_every": 100},
                      optim={"lr": 2e-3, "warmup_steps": 0, "schedule": "constant"},
                      validation={"holdout": 0, "every": 0})
    trainer = Trainer(recipe_from_dict(raw), tmp_path / "out", log=lambda m: None)
    try:
        batch = trainer.make_batch([trainer.train_sources[0][0][i] for i in range(4)], 0)

        def fixed_batch_loss() -> float:  # same batch, same timesteps and noise
            with torch.no_grad():
                return float(np.mean([trainer.loss(batch, 10**6 + k).loss.item() for k in range(6)]))

        before = fixed_batch_loss()
        result = trainer.run()
        after = fixed_batch_loss()
    finally:
        trainer.close()
    losses = np.array(result.losses)
    assert after < 0.8 * before, (before, after)
    assert losses[-6:].mean() < losses[:6].mean(), losses


def test_step_lines_count_prealignment_fallbacks_instead_of_warning(tiny_dpt_dir, tmp_path):
    """Scenes of a fronto-parallel wall give a constant conditioning: every sample's pre-alignment
    falls back. The trainer counts them in its step lines and metrics, with no Python warning."""
    import warnings

    from training.synthetic import write_dataset
    from training.trainer import train

    walls = write_dataset(tmp_path / "walls", 4, seed0=0, size=32)
    for f in (walls / "depth").glob("*.npy"):
        np.save(f, np.full(np.load(f).shape, 3.0, np.float32))
    # the simulated conditioner without its warps: a blurred constant stays constant
    flat = {"warp": 0.0, "thin": 0.0, "gamma_min": 1.0, "gamma_max": 1.0}
    raw = tiny_recipe(tiny_dpt_dir, walls, tmp_path / "cache", conditioner={"name": "simulated", "simulated": flat},
                      train={"max_steps": 2, "checkpoint_every": 0}, validation={"holdout": 0, "every": 0})
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateAlignmentWarning)
        train(recipe_from_dict(raw), tmp_path / "out", log=lines.append)
    steps = [line for line in lines if line.startswith("step ")]
    assert len(steps) == 2 and all(line.endswith("prealign fallbacks 2") for line in steps), steps
    records = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["prealign_fallbacks"] for r in records if r.get("type") == "train"] == [2, 2]


def test_ablation_switches_reach_the_model_and_the_card(tiny_dpt_dir, scenes, tmp_path):
    from betterdepth_cli.core.refiner import load_model
    from training.trainer import train

    raw = tiny_recipe(tiny_dpt_dir, scenes, tmp_path / "cache",
                      objective={"depth_conditioning": False, "prealign": False, "patch_mask": False},
                      train={"max_steps": 2, "checkpoint_every": 0},
                      validation={"holdout": 0, "every": 0},
                      ema={"enabled": True, "decay": 0.9})
    result = train(recipe_from_dict(raw), tmp_path / "out", log=lambda m: None)
    model = load_model(result.model_path)
    assert model.unet.config.in_channels == 3 * 16 + 16  # cat[z_x, z_t] with the 4x space-to-depth codec
    assert model.card["depth_conditioning"] is False
    assert model.card["trained_with"]["flags"]["prealign"] is False


def test_stable_diffusion_init_trains_with_the_kl_codec(tiny_dpt_dir, scenes, tmp_path):
    from tiny_models import save_fake_stable_diffusion

    from betterdepth_cli.core.refiner import load_model
    from training.model_setup import build_model
    from training.trainer import train

    sd = save_fake_stable_diffusion(tmp_path / "sd")
    raw = tiny_recipe(tiny_dpt_dir, scenes, tmp_path / "cache", model={"init": str(sd)},
                      data={"hflip": False, "random_crop": False},
                      train={"max_steps": 2, "checkpoint_every": 0}, validation={"holdout": 0, "every": 0})
    recipe = recipe_from_dict(raw)
    result = train(recipe, tmp_path / "out", log=lambda m: None)
    model = load_model(result.model_path)
    assert model.codec.kind == "AutoencoderKL" and model.unet.config.in_channels == 12
    assert model.text_embedding is not None
    assert any((tmp_path / "cache" / "latents").rglob("*.safetensors"))  # no augmentation: z_x cached
    # without depth conditioning: conv_in over cat[z_x, z_t] reproduces the SD UNet on equal halves
    plain = recipe_from_dict(apply_overrides(raw, {"objective.depth_conditioning": False}))
    m8 = build_model(plain)
    from diffusers import UNet2DConditionModel

    sd_unet = UNet2DConditionModel.from_pretrained(sd / "unet")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ehs = m8.text_embedding
    with torch.no_grad():
        ref = sd_unet(z, 10, encoder_hidden_states=ehs).sample
        out = m8.unet(torch.cat([z, z], 1), 10, encoder_hidden_states=ehs).sample
    assert m8.unet.config.in_channels == 8
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_another_recipe_in_a_runs_folder_and_bad_data_are_usage_errors(run_a, tiny_dpt_dir, scenes, tmp_path):
    """A run folder is resumed by the same recipe (test_cli_train_end_to_end); another one is refused."""
    from training.trainer import train

    recipe, result, _ = run_a
    other = recipe_from_dict(apply_overrides(recipe.to_dict(), {"optim.lr": 2e-3}))
    with pytest.raises(UsageError, match=r"was trained with optim.lr = 0.001, this run has 0.002 .*it is another run"):
        train(other, result.output, log=lambda m: None)
    bad = tiny_recipe(tiny_dpt_dir, scenes, tmp_path / "cache", data={"crop": [12, 12]},
                      train={"max_steps": 1, "checkpoint_every": 0}, validation={"holdout": 0})
    with pytest.raises(UsageError, match="multiples of 8"):
        train(recipe_from_dict(bad), tmp_path / "bad", log=lambda m: None)
    if not torch.cuda.is_available():
        fp16 = recipe_from_dict(apply_overrides(recipe.to_dict(), {"train.mixed_precision": "fp16"}))
        with pytest.raises(UsageError, match="fp16' needs a GPU"):
            train(fp16, tmp_path / "fp16", log=lambda m: None)


# --------------------------------------------------------------------------- CLI


def test_cli_train_end_to_end(tiny_dpt_dir, scenes, tmp_path):
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    recipe = tmp_path / "r.toml"
    raw = tiny_recipe(tiny_dpt_dir, scenes, tmp_path / "cache", validation={"holdout": 0, "every": 0})
    recipe.write_text(dump_recipe(recipe_from_dict(raw)))
    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--recipe", str(recipe), "--output", str(out), "--max-steps", "2",
                              "--no-prealign", "--patch-size", "4", "--eta", "0.3", "--set", "train.batch_size=1"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == str(out / "model")
    resolved = load_recipe(out / "config.toml")
    assert (resolved.train.max_steps, resolved.objective.prealign, resolved.objective.patch_size,
            resolved.objective.eta, resolved.train.batch_size) == (2, False, 4, 0.3, 1)
    assert json.loads((out / "model" / "betterdepth.json").read_text())["trained_with"]["steps"] == 2
    # errors: one line, sysexits code
    bad = runner.invoke(app, ["train", "--recipe", str(recipe), "--set", "optim.lrr=1"])
    assert bad.exit_code == 64 and "unknown key [optim] 'lrr'" in bad.output
    again = runner.invoke(app, ["train", "--recipe", str(recipe), "--output", str(out)])  # without the flags
    assert again.exit_code == 64 and "objective.eta = 0.3, this run has 0.1" in again.output  # another run
    assert "it is another run" in again.output
    before = (out / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    rerun = runner.invoke(app, ["train", "--recipe", str(recipe), "--output", str(out), "--max-steps", "2",
                                "--no-prealign", "--patch-size", "4", "--eta", "0.3", "--set", "train.batch_size=1"])
    assert rerun.exit_code == 0 and "holds a previous run: resuming it" in rerun.output  # the same command resumes
    assert (out / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    (tmp_path / "afile").write_text("x")
    for args, code, text in (
        (["--output", str(tmp_path / "afile")], 73, "afile: not a folder"),
        (["--output", str(tmp_path / "afile" / "run")], 73, "cannot create the run folder"),
        (["--output", str(tmp_path / "r2"), "--set", f"data.cache_dir='{tmp_path / 'afile' / 'c'}'"], 73,
         "cannot create the cache folder"),
        (["--set", "data.synthetic={n=2, size=16, seed='a'}"], 64, "synthetic: `seed` must be an integer >= 0, got 'a'"),
        (["--set", "data.synthetic={n=2, size=16, kind='forest'}"], 64, "`kind` must be one of indoor, outdoor, mixed"),
        (["--set", "model.codec='foo'"], 64, "model.codec"),
        (["--set", "data.datasets=[{type='folder', root='x', wieght=0.5}]"], 64, "folder: unknown key 'wieght'"),
    ):
        res = runner.invoke(app, ["train", "--recipe", str(recipe), *args])
        assert res.exit_code == code and text in res.output, (args, res.output)
    missing = runner.invoke(app, ["train", "--recipe", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 64 and "file not found" in missing.output


def test_cli_train_says_the_patch_masks_settings_do_not_apply_without_it(tiny_dpt_dir, scenes, tmp_path):
    from typer.testing import CliRunner

    from betterdepth_cli.cli.app import app

    recipe = tmp_path / "r.toml"
    raw = tiny_recipe(tiny_dpt_dir, scenes, tmp_path / "cache", validation={"holdout": 0, "every": 0})
    recipe.write_text(dump_recipe(recipe_from_dict(raw)))
    res = CliRunner().invoke(app, ["train", "--recipe", str(recipe), "--output", str(tmp_path / "run"), "--max-steps",
                                   "1", "--no-patch-mask", "--eta", "0.3", "--set", "train.batch_size=1"])
    assert res.exit_code == 0, res.output
    assert ("note: the patch mask is off (--no-patch-mask or the recipe); not applied: --eta"
            in res.stderr.splitlines())
    assert load_recipe(tmp_path / "run" / "config.toml").objective.eta == 0.3  # recorded as asked


# --------------------------------------------------------------------------- distributed


def test_two_cpu_processes_train_and_save_a_loadable_bundle(tiny_dpt_dir, scenes, tmp_path):
    """`accelerate launch` with 2 processes over gloo on the CPU (torchrun launcher + ACCELERATE_USE_CPU;
    accelerate's `--cpu --num_processes 2` alone starts ONE process unless MPI is set up)."""
    from betterdepth_cli.core.refiner import load_model

    recipe = tmp_path / "r.toml"
    raw = tiny_recipe(tiny_dpt_dir, scenes, tmp_path / "cache", train={"max_steps": 3, "checkpoint_every": 2},
                      validation={"holdout": 2, "every": 0, "steps": [1]})
    recipe.write_text(dump_recipe(recipe_from_dict(raw)))
    out = tmp_path / "run"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    port = 29500 + os.getpid() % 1000
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "betterdepth_cli", "train", "--recipe", str(recipe), "--output", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 process(es) = 4" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out / "model")  # printed once, by the main process
    ckpt = out / "checkpoints" / "step-000002"
    assert (ckpt / "random_states_0.pkl").exists() and (ckpt / "random_states_1.pkl").exists()
    model = load_model(out / "model")
    assert model.card["trained_with"]["effective_batch"] == 4 and model.card["trained_with"]["steps"] == 3
