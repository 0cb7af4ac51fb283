"""The command-line entry point: help texts, exit-code mapping, lazy imports."""

import subprocess
import sys

from typer.testing import CliRunner

from betterdepth_cli.cli.app import app

COMMANDS = ("refine", "train", "synth", "eval", "export-ply", "info")


def test_every_command_has_help_text():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for name in COMMANDS:
        assert name in top.output
        res = runner.invoke(app, [name, "--help"])
        assert res.exit_code == 0, name
        assert len(res.output.strip().splitlines()) > 3, name


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from betterdepth_cli.cli.app import app, _register; _register(); "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'open3d', 'cv2') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_usage_errors_exit_64_and_version():
    out = subprocess.run([sys.executable, "-m", "betterdepth_cli", "refine", "--steps", "abc", "x"],
                         capture_output=True, text=True)
    assert out.returncode == 64
    assert "--steps" in out.stderr
    out = subprocess.run([sys.executable, "-m", "betterdepth_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("betterdepth ")
