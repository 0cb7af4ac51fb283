"""The evaluation sets of the reproduction: the held-out synthetic scenes (as an evaluation view)
and the real Middlebury 2005 and NYUv2 samples when present."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from betterdepth_cli.io.files import atomic_write_text
from training.reproduce.plan import ROOT


def real_data_dir(arg: str | None) -> Path:
    """``--real-data``, else ``$BETTERDEPTH_REAL_DATA``, else ``../shared/data/real`` beside the checkout."""
    if arg:
        return Path(arg)
    env = os.environ.get("BETTERDEPTH_REAL_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "real"


def synthetic_view(val_root: Path, out: Path) -> Path:
    """An evaluation ``folder`` dataset over the held-out scenes: dataset.toml + links + split list.

    The generator's folders describe their depth for training (``[depth]``); the
    evaluation loader wants ``[dataset]``, so the script writes one beside links
    to the original rgb/ and depth/ folders (nothing is copied).
    """
    view = out / "data" / "synth-val-eval"
    view.mkdir(parents=True, exist_ok=True)
    for sub in ("rgb", "depth"):
        link = view / sub
        if not link.exists():
            os.symlink(val_root.resolve() / sub, link)
    ids = sorted(p.stem for p in (val_root / "rgb").glob("*.png"))
    depth_ext = {p.stem: p.suffix for p in (val_root / "depth").iterdir()}
    lines = [f"rgb/{i}.png depth/{i}{depth_ext[i]}" for i in ids if i in depth_ext]
    if not lines:
        raise SystemExit(f"{val_root}: no rgb/<id>.png with a depth/<id> map")
    atomic_write_text(view / "split.txt", "\n".join(lines) + "\n")
    atomic_write_text(view / "dataset.toml", "\n".join([
        "# evaluation view of the held-out synthetic scenes (written by bench/reproduce.py)",
        f"# source: {val_root.resolve()}",
        "[dataset]", 'images = "rgb"', 'ground_truth = "depth"', 'kind = "depth"', "scale = 1.0",
        "invalid = 0", "min_depth = 0.001", "max_depth = 80.0", ""]))
    return view


def resolve_datasets(val_root: Path, real_data: str | None, out: Path, log: Callable[[str], None]) -> dict[str, dict]:
    """name -> loader, root, split file, processing resolution, classical fill rule."""
    if not (val_root / "rgb").is_dir():
        raise SystemExit(f"--val-root {val_root}: held-out synthetic scenes not found (betterdepth synth -n 200 "
                         f"--seed 1000000 --size 192 -o {val_root})")
    view = synthetic_view(val_root, out)
    ds = {"synthetic": {"loader": "folder", "root": str(view), "split": str(view / "split.txt"),
                        "processing_res": 0, "fill": "zero", "source": str(val_root)}}
    real = real_data_dir(real_data)
    for name, sub in (("middlebury", "middlebury2005"), ("nyuv2", "nyuv2")):
        if (real / sub).is_dir():
            ds[name] = {"loader": name, "root": str(real / sub), "split": None, "processing_res": None,
                        "fill": "inpaint", "source": str(real / sub)}
        else:
            log(f"real data {real / sub} not found: {name} skipped (set BETTERDEPTH_REAL_DATA)")
    return ds


def load_samples(info: dict, limit: int | None):
    """The evaluation samples of one resolved dataset (the first ``limit``; None = all)."""
    from betterdepth_cli.evaluation.datasets import get_dataset

    return get_dataset(info["loader"], info["root"], split_file=info["split"], limit=limit)
