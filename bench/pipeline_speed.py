"""Pipeline overhead over the raw network forwards (issue: core library).

Refines 512 px images with tiny models (a tiny DPT conditioner through its
transformers processor, the tiny space-to-depth refiner) and compares the whole
`refine_batch` time to the sum of the raw forwards it has to run: conditioner
model forward + autoencoder encodes + UNet x steps + decode, on the same inputs.
`refine_batch` runs the networks image by image by default (batch-invariant
results), so the raw forwards are timed image by image too; the batched
pipeline (`batch_invariant=False`) against batched raw forwards, and the cost of
batch invariance on these tiny models (batched raw / per-image raw), are printed
for information.

    python bench/pipeline_speed.py [--size 512] [--steps 2] [--repeats 5]

Prints the time per stage and, last, the ratio pipeline / raw forwards
(target <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 avoids stalls on a busy machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from tiny_models import save_dpt

    from betterdepth_cli.conditioner_registry import get_conditioner
    from betterdepth_cli.core.pipeline import refine_batch
    from betterdepth_cli.core.refiner import BetterDepthModel

    tmp = Path(tempfile.mkdtemp())
    cond = get_conditioner(f"hf:{save_dpt(tmp / 'dpt', image_size=256)}")
    model = BetterDepthModel.tiny(seed=0).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    res = args.size

    def pipeline(invariant: bool = True):
        return refine_batch(images, conditioner=cond, model=model, steps=args.steps, ensemble=1,
                            processing_res=res, generator=torch.Generator().manual_seed(0), batch_invariant=invariant)

    # the raw forwards on identical inputs, prepared outside the timing
    proc_inputs = cond.processor(images=images, return_tensors="pt", do_rescale=False)["pixel_values"]
    x = images * 2 - 1
    d = torch.rand(args.batch, 1, res, res) * 2 - 1
    z_i, z_c = model.codec.encode_image(x), model.codec.encode_depth(d)
    z = torch.randn_like(z_c)

    @torch.no_grad()
    def raw(items: slice):
        cond.model(pixel_values=proc_inputs[items])
        model.codec.encode_image(x[items])
        model.codec.encode_depth(d[items])
        for _ in range(args.steps):
            model.denoise(z_i[items], z_c[items], z[items], 999)
        model.codec.decode_depth(z[items])

    def raw_per_image():
        for i in range(args.batch):
            raw(slice(i, i + 1))

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    with torch.no_grad():
        pipeline(), pipeline(False), raw_per_image(), raw(slice(None))  # warm-up
        ratios, batched_ratios, invariance_costs, stages = [], [], [], []
        for _ in range(args.repeats):  # interleaved so machine noise hits all alike
            t0 = time.perf_counter()
            out = pipeline()
            t_pipe = time.perf_counter() - t0
            t_raw = timed(raw_per_image)
            t_pipe_batched = timed(lambda: pipeline(False))
            t_raw_batched = timed(lambda: raw(slice(None)))
            ratios.append(t_pipe / t_raw)
            batched_ratios.append(t_pipe_batched / t_raw_batched)
            invariance_costs.append(t_raw / t_raw_batched)
            stages.append(out.timings)
    for k in stages[0]:
        print(f"{k:12s} {statistics.median(s[k] for s in stages) * 1000:8.1f} ms")
    print(f"images {args.batch} x {args.size}px, steps {args.steps}")
    print(f"batched pipeline / batched raw forwards: {statistics.median(batched_ratios):.3f}")
    print(f"cost of batch invariance (raw forwards image by image / batched): {statistics.median(invariance_costs):.3f}")
    print(f"pipeline / raw forwards: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
