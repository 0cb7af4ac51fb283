"""The GPU path of an SD2-size refiner (issue 22): seconds per image, peak GPU memory, and what batching,
SDPA and torch.compile buy. Random weights (timing only); run where a GPU is lent.

The model is the paper's refiner shape: Stable Diffusion 2's UNet (block channels 320/640/1280/1280,
attention heads 5/10/20/20, cross-attention 1024, a zero text embedding), 12 input channels
(image latent + conditioning latent + noisy depth latent), and SD's KL autoencoder, through
``refine_batch`` at 768 x 768, 2 steps. For each dtype (fp16, bf16): batch 1 and ``--batch``, with
diffusers' SDPA attention (its default) and with the classic attention processor, then torch.compile
of the UNet; then one tiled plate (``--plate``) for the peak memory of tiling. Prints one line per
setting and, last, the speed-up of the best setting over fp16 batch 1 with classic attention.

    python bench/gpu_refiner.py [--size 768] [--steps 2] [--batch 4] [--plate 4096x2160] [--no-compile]
    python bench/gpu_refiner.py --smoke      # tiny shapes on the CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(smoke: bool, device, dtype):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from betterdepth_cli.core.autoencoders import KLCodec
    from betterdepth_cli.core.refiner import BetterDepthModel, new_card

    torch.manual_seed(0)
    if smoke:
        unet = UNet2DConditionModel(sample_size=8, in_channels=12, out_channels=4, block_out_channels=(32, 64),
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                    cross_attention_dim=32, attention_head_dim=4)
        vae = AutoencoderKL(latent_channels=4, block_out_channels=(32, 32), layers_per_block=1,
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
        ctx = 32
    else:  # Stable Diffusion 2's UNet and VAE configurations
        unet = UNet2DConditionModel(sample_size=96, in_channels=12, out_channels=4,
                                    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                                    cross_attention_dim=1024, use_linear_projection=True, layers_per_block=2)
        vae = AutoencoderKL(latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            scaling_factor=0.18215)
        ctx = 1024
    card = new_card()
    card["zero_noise"] = False
    model = BetterDepthModel(unet, KLCodec(vae), card=card, text_embedding=torch.zeros(1, 77, ctx))
    return model.to(device=device, dtype=dtype).eval()


def timed(fn, device, repeats: int) -> tuple[float, float]:
    """(seconds per call after a warm-up, peak memory in GiB) for ``fn``."""
    import torch

    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return (time.perf_counter() - t0) / repeats, peak


def run_settings(a, device, dtype_name: str, results: dict) -> None:
    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from betterdepth_cli.core.pipeline import refine_batch, seeded_generators
    from betterdepth_cli.core.types import DepthPrediction

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    model = build(a.smoke, device, dtype)
    for batch in (1, a.batch):
        images = torch.rand(batch, 3, a.size, a.size, generator=torch.Generator().manual_seed(0)).to(device)
        cond = torch.rand(batch, 1, a.size, a.size, generator=torch.Generator().manual_seed(1)).to(device) + 0.5
        pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")

        def once():
            refine_batch(images, model=model, prediction=pred, steps=a.steps, processing_res=a.size,
                         generator=seeded_generators(0, batch))

        for attn, proc in (("sdpa", AttnProcessor2_0()), ("classic", AttnProcessor())):
            model.unet.set_attn_processor(proc)
            sec, peak = timed(once, device, a.repeats)
            results[(dtype_name, batch, attn)] = sec / batch
            print(f"{dtype_name} batch {batch} {attn}: {sec / batch:.3f} s/image, peak {peak:.2f} GiB", flush=True)
        model.unet.set_attn_processor(AttnProcessor2_0())
        if a.compile and batch == a.batch:
            plain = model.unet.forward
            model.unet.forward = torch.compile(plain)
            try:
                sec, peak = timed(once, device, a.repeats)
                results[(dtype_name, batch, "sdpa+compile")] = sec / batch
                print(f"{dtype_name} batch {batch} sdpa+compile: {sec / batch:.3f} s/image, peak {peak:.2f} GiB",
                      flush=True)
            except Exception as exc:  # noqa: BLE001 - report and go on: compile support varies by build
                print(f"{dtype_name} torch.compile failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            finally:
                model.unet.forward = plain
    if a.plate and dtype_name == a.dtypes.split(",")[0]:
        plate(a, model, device)


def plate(a, model, device) -> None:
    """Peak GPU memory of one tiled plate (tiles of ``--tile``, the anchor at ``--size``)."""
    import torch

    from betterdepth_cli.core.tiled import refine_tiled
    from betterdepth_cli.core.types import DepthPrediction

    w, h = (int(v) for v in a.plate.lower().split("x"))
    image = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8).numpy()
    cond = torch.rand(1, 1, h // 8, w // 8) + 0.5
    pred = DepthPrediction(cond, torch.ones_like(cond, dtype=torch.bool), "disparity")
    model.card.setdefault("defaults", {})["max_processing_res"] = a.size
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    refine_tiled(image, model=model, prediction=pred, tile=a.tile, overlap=a.tile // 8, steps=a.steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(f"tiled plate {w} x {h} (tiles {a.tile}): {time.perf_counter() - t0:.1f} s, peak GPU {peak:.2f} GiB",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=768)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--plate", default="4096x2160", help="a tiled plate for peak memory ('' to skip)")
    ap.add_argument("--tile", type=int, default=768)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (fp32): checks the script runs")
    a = ap.parse_args()
    import torch

    if a.smoke:
        a.size, a.batch, a.repeats, a.dtypes, a.plate, a.tile, a.compile = 64, 2, 1, "fp32", "160x96", 64, False
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_refiner: no CUDA device here (use --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__})", flush=True)
    results: dict = {}
    for name in a.dtypes.split(","):
        run_settings(a, device, name, results)
    first = a.dtypes.split(",")[0]
    base = results[(first, 1, "classic")]
    best_key = min(results, key=results.get)
    print(f"speed-up of {' '.join(map(str, best_key))} over {first} batch 1 classic attention: "
          f"{base / results[best_key]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
