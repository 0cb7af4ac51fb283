"""``betterdepth info``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from betterdepth_cli import __version__
from betterdepth_cli.cli.app import app
from betterdepth_cli.conditioner_registry import HF_MODELS
from betterdepth_cli.core.refiner import default_model_path


def test_info_text_lists_version_devices_registry_and_model():
    import torch

    res = CliRunner().invoke(app, ["info"])
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    assert out.startswith(f"betterdepth {__version__} (python ")
    assert f"torch {torch.__version__}" in out
    assert "devices: auto -> " in out and "  cpu: yes" in out
    for name, hub_id in HF_MODELS.items():
        assert any(line.split()[:2] == [name, hub_id] for line in out.splitlines()), name
    assert "builtin" in out and "dpt" in out
    assert "default model:" in out and str(default_model_path()) in out


def test_info_json_is_parseable_and_consistent():
    import torch

    res = CliRunner().invoke(app, ["info", "--json"])
    assert res.exit_code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["version"] == __version__ and data["torch"] == torch.__version__
    expected_auto = "cuda" if torch.cuda.is_available() else data["devices"]["auto"]
    assert data["devices"]["auto"] == expected_auto and data["devices"]["cpu"] is True
    assert len(data["devices"]["cuda"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    names = {c["name"]: c["target"] for c in data["conditioners"]}
    assert names["depth-anything-v2-large"] == "depth-anything/Depth-Anything-V2-Large-hf"
    assert names["dpt"] == "dpt-large"
    model = data["default_model"]
    assert model["present"] == (default_model_path() / "betterdepth.json").is_file()
    if model["present"]:
        assert set(model["defaults"]) >= {"steps", "ensemble", "processing_res"}


def test_every_command_has_help():
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for command in ("refine", "info"):
        r = CliRunner().invoke(app, [command, "--help"])
        assert r.exit_code == 0 and len(r.stdout) > 100
    r = CliRunner().invoke(app, ["refine", "--help"])
    for flag in ("--conditioner", "--processing-res", "--format", "--shard", "--frames", "--continue-on-error",
                 "--preview-video", "--dry-run", "--overwrite", "--config"):
        assert flag in r.stdout, flag
