"""Shared fixtures: tiny real models saved to folders and loaded back through user-facing code.

Session-scoped and built once: a tiny DPT conditioner (64 x 64 processor, the
DPT classes of Intel/dpt-large) and a tiny BetterDepth refiner bundle. Add new
fixtures below; do not change what these build (other tests rely on them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


def real_data_dir() -> Path:
    """``$BETTERDEPTH_REAL_DATA`` or ``<repo>/../shared/data/real``."""
    env = os.environ.get("BETTERDEPTH_REAL_DATA")
    return Path(env) if env else TESTS.parent.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def tiny_dpt_dir(tmp_path_factory) -> Path:
    """A tiny DPTForDepthEstimation (image_size 64) + DPTImageProcessor(64 x 64, no aspect keeping)."""
    from tiny_models import save_dpt

    return save_dpt(tmp_path_factory.mktemp("tiny-dpt") / "dpt")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BetterDepth bundle (space-to-depth codec, no attention), seed 0."""
    from betterdepth_cli.core.refiner import BetterDepthModel

    path = tmp_path_factory.mktemp("tiny-refiner") / "model"
    BetterDepthModel.tiny(seed=0).save(path)
    return path


@pytest.fixture()
def models(tiny_dpt_dir, tiny_model_dir) -> list[str]:
    """`refine` flags for the tiny conditioner and refiner at 64 px."""
    return ["--conditioner", f"hf:{tiny_dpt_dir}", "--model", str(tiny_model_dir), "--processing-res", "64"]


@pytest.fixture()
def tree(tmp_path) -> Path:
    """photos/a.png, photos/b.jpg, photos/sub/c.png."""
    from refine_cli_helpers import write_png

    root = tmp_path / "photos"
    write_png(root / "a.png", seed=1)
    write_png(root / "b.jpg", seed=2)
    write_png(root / "sub" / "c.png", 32, 32, seed=3)
    return root
