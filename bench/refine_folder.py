"""How much of the model's speed survives the ``refine`` path (decode, batch, write)?

Builds a folder of N images (default 32 at 512 x 512 px) and tiny models
(a tiny DPT conditioner and a tiny BetterDepth refiner, the same classes as the
real ones), then times:

1. the CLI path: ``io.inputs.discover`` -> ``jobs.plan_run`` -> ``jobs.run``
   (decode-ahead thread, same-size batches, write-behind thread writing the
   chosen formats atomically), models loaded beforehand;
2. a bare loop: the same ``refine_batch`` calls (same batch size, seed and
   settings) over tensors decoded beforehand, writing nothing.

Each is run ``--repeats`` times, interleaved, after a warm-up; the best time of
each counts. Prints images/s of both and, last, the ratio CLI / bare loop
(target >= 0.90: IO hidden behind compute).

    python bench/refine_folder.py                      # 32 images at 512 px, CPU or GPU
    python bench/refine_folder.py --n 64 --format png16,exr,preview --device cuda
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models


def make_images(folder: Path, n: int, size: int) -> list[Path]:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for i in range(n):
        rng = np.random.default_rng(i)
        img = np.stack([xx, yy, (xx + yy) / 2], -1) * 180 + rng.random((size, size, 3)) * 75
        path = folder / f"img_{i:04d}.png"
        cv2.imwrite(str(path), img.astype(np.uint8))
        paths.append(path)
    return paths


def make_models(folder: Path, device: str):
    from tiny_models import save_dpt
    from transformers.utils import logging

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.refiner import BetterDepthModel, load_model

    logging.disable_progress_bar()
    save_dpt(folder / "dpt")  # the tests' tiny DPT (64 x 64 processor), seed 0
    BetterDepthModel.tiny(seed=0).save(folder / "model")
    return get_conditioner(f"hf:{folder / 'dpt'}", device=device), load_model(folder / "model", device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--processing-res", type=int, default=512)
    ap.add_argument("--format", default="png16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from betterdepth_cli import jobs as batch
    from betterdepth_cli.cli.options import resolve_device
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.io.images import read_image
    from betterdepth_cli.io.inputs import discover

    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench-refine-"))
    try:
        paths = make_images(work / "images", args.n, args.size)
        cond, model = make_models(work, device)
        formats = tuple(f.strip() for f in args.format.split(","))

        def sync() -> None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        def cli_path(out: Path) -> float:
            settings = batch.RefineSettings(
                out_dir=out, formats=formats, conditioner="tiny-dpt", model="tiny", steps=args.steps,
                processing_res=args.processing_res, batch_size=args.batch_size, seed=0,
            )  # fmt: skip
            t0 = time.perf_counter()
            plan = batch.plan_run(discover([work / "images"]), settings)
            summary = batch.run(plan, settings, cond, model)
            sync()
            elapsed = time.perf_counter() - t0
            assert summary.processed == args.n and summary.failed == 0, summary.line()
            return elapsed

        decoded = [torch.from_numpy(read_image(p)).permute(2, 0, 1) for p in paths]  # [3,H,W] each

        def bare_loop() -> float:
            t0 = time.perf_counter()
            for i in range(0, len(decoded), args.batch_size):
                images = torch.stack(decoded[i : i + args.batch_size])  # [B,3,H,W]
                res = refine_batch(
                    images, conditioner=cond, model=model, steps=args.steps, ensemble=1,
                    processing_res=args.processing_res, generator=torch.Generator().manual_seed(0),
                )  # fmt: skip
                res.refined.cpu().numpy()  # the engine also brings results back to the host
            sync()
            return time.perf_counter() - t0

        # warm-up (allocators, kernels, lazy imports), then interleaved timed runs
        refine_batch(decoded[0][None], conditioner=cond, model=model, steps=args.steps,
                     processing_res=args.processing_res, generator=torch.Generator().manual_seed(0))  # fmt: skip
        cli_times, bare_times = [], []
        for r in range(args.repeats):
            bare_times.append(bare_loop())
            out = work / f"out{r}"
            cli_times.append(cli_path(out))
            shutil.rmtree(out, ignore_errors=True)
        cli_best, bare_best = min(cli_times), min(bare_times)
        print(f"device {device}, {args.n} images {args.size}x{args.size}, batch {args.batch_size}, "
              f"steps {args.steps}, processing-res {args.processing_res}, formats {','.join(formats)}, "
              f"torch threads {torch.get_num_threads()}")  # fmt: skip
        print(f"runs (s): cli {', '.join(f'{t:.2f}' for t in cli_times)}; bare {', '.join(f'{t:.2f}' for t in bare_times)}")
        print(f"bare loop (pre-decoded, no writing): {args.n / bare_best:.2f} images/s")
        print(f"cli path (decode + refine + write):  {args.n / cli_best:.2f} images/s")
        print(f"ratio cli / bare loop: {bare_best / cli_best:.3f}")
        del np
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
