"""The embedded default model: it loads offline, runs, and reproduces its model card."""

import json
import os
import subprocess
import sys

import pytest
import torch

from betterdepth_cli.core.conditioners import builtin_conditioner_path
from betterdepth_cli.core.refiner import default_model_path, load_model

CARD = default_model_path() / "betterdepth.json"


def test_default_weights_ship_in_the_package_and_stay_small():
    assert CARD.exists(), "the embedded default refiner is missing from betterdepth_cli/weights/refiner"
    assert (builtin_conditioner_path() / "config.json").exists()
    weights = default_model_path().parent
    total = sum(p.stat().st_size for p in weights.rglob("*") if p.is_file())
    assert total <= 25 * 2**20, f"weights are {total / 2**20:.1f} MiB, the budget is 25 MiB"


def test_default_model_reproduces_its_card_on_the_fixed_test_set():
    from training.model_card import test_set_metrics

    card = json.loads(CARD.read_text())
    expected = card["metrics"]["test_set"]
    measured = test_set_metrics()
    for variant in ("conditioner", "refined"):
        for key in ("abs_rel", "delta1"):
            assert measured[variant][key] == pytest.approx(expected[variant][key], rel=0.02, abs=2e-3), (variant, key)


def test_shipped_model_card_is_what_training_renders_from_its_json():
    """MODEL_CARD.md is rendered by training.model_card from the card's JSON (its measured metrics and
    the observations kept in training/model_card.py): an edit made to the Markdown alone would be lost
    at the next `python -m training.model_card`."""
    from training.model_card import WEIGHTS, render_card

    card = json.loads(CARD.read_text())
    rendered = render_card(card, card["metrics"]).splitlines()
    shipped = (WEIGHTS / "MODEL_CARD.md").read_text().splitlines()
    differ = [i + 1 for i, (a, b) in enumerate(zip(rendered, shipped)) if a != b]
    first = differ[0] if differ else min(len(rendered), len(shipped)) + 1
    assert len(rendered) == len(shipped) and not differ, (
        f"MODEL_CARD.md differs from the rendered card from line {first}: edit training/model_card.py "
        "(OBSERVATIONS or the section writers), then re-render")


def test_refine_runs_offline_on_the_default_model(tmp_path):
    from PIL import Image

    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    Image.fromarray((torch.rand(37, 53, 3) * 255).byte().numpy()).save(img)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    out = subprocess.run([sys.executable, "-m", "betterdepth_cli", "refine", str(img.parent), "-o", str(tmp_path / "out"),
                          "-q"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    sidecar = json.loads((tmp_path / "out" / "a.json").read_text())
    assert sidecar["conditioner"] == "builtin" and sidecar["model"] == "default" and sidecar["kind"] == "disparity"
    model = load_model()
    assert model.defaults["conditioner"] == "builtin"


def test_the_shipped_recipe_gives_the_shipped_cards_inference_settings():
    # a rebuild (python -m training.build_default) must ship the same inference-only settings
    from pathlib import Path

    from training.config import load_recipe
    from training.model_setup import trained_card

    root = Path(__file__).resolve().parents[1]
    shipped = json.loads((default_model_path() / "betterdepth.json").read_text())
    recipe = load_recipe(root / "training" / "recipes" / f"{shipped['trained_with']['recipe']}.toml")
    built = trained_card({}, recipe, "disparity", False, recipe.train.max_steps, 1)
    for key in ("residual_smoothing", "layout_lowpass", "edge_gate", "cascade"):
        assert built.get(key) == shipped.get(key), key
    for key in ("ensemble", "max_processing_res", "tile_above", "tile", "tile_overlap"):
        assert built["defaults"].get(key) == shipped["defaults"].get(key), key
    assert shipped["cascade"] == {"blur_above": 11.0, "scale": 0.5}
