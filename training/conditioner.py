"""Train the small feed-forward conditioner embedded as ``builtin``.

A Depth-Anything-class model from ``transformers`` (DINOv2 backbone + DPT
head; or, with ``[model] arch = "dpt-hybrid"``, a DPT-Hybrid: BiT ResNet stem +
ViT) at a small config, trained from scratch on procedural scenes with a
scale-and-shift-invariant loss in disparity space. It plays the role Depth
Anything plays in the paper: a robust global layout with over-smoothed detail
(its input is resized to ``input_size`` pixels on the short side).

Pixels without a hit (sky) or beyond the generator's range count as disparity
0, as Depth Anything predicts for the sky.

    python -m training.conditioner --recipe training/recipes/default-conditioner.toml --output runs/cond

``[train] device`` ("auto": CUDA when available) places the model and the
whole training set on that device; ``[train] max_minutes`` ends a run at a
checkpoint after that much wall time (``--resume`` continues it), for machines
lent by the slot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from betterdepth_cli.core.align import fit_scale_shift
from betterdepth_cli.core.guided import luminance
from betterdepth_cli.core.types import UsageError

POSITIVE_MARGIN = 0.05  # keep the head's pre-activation above this
POSITIVITY_WEIGHT = 1.0
VAL_MIN_DEPTH, VAL_MAX_DEPTH = 1e-3, 80.0  # the generator's range
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

DEFAULTS = {
    "data": {"train": "", "val": "", "crop": 160},
    "model": {"hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 192,
              "neck_hidden_sizes": [24, 48, 96, 96], "fusion_hidden_size": 32, "head_hidden_size": 16,
              "input_size": 140},
    "train": {"steps": 3000, "batch_size": 16, "lr": 3e-4, "weight_decay": 1e-4, "warmup": 100, "seed": 0,
              "checkpoint_every": 250, "log_every": 25, "threads": 0, "device": "auto", "max_minutes": 0,
              "photometric": 0.0},
}


ARCHS = ("depth-anything", "dpt-hybrid", "dpt")
#: [model] keys besides those of DEFAULTS: the architectures' own (see build_model).
MODEL_KEYS = ("arch", "patch_size", "bit_hidden_sizes", "bit_depths", "bit_embedding_size", "bit_groups")
#: [data] keys that describe scenes to render (``betterdepth synth``'s flags) rather than a folder:
#: training.reproduce renders them and sets ``train``/``val``; alone, they need a rendered ``train``.
RENDER_KEYS = ("kind", "scenes", "seed0", "size")


def build_model(cfg: dict):
    """The conditioner of ``[model]``: ``arch = "depth-anything"`` (default: DINOv2 backbone + DPT
    head), ``"dpt-hybrid"`` (DPT-Hybrid, as MiDaS v3 hybrid: a BiT ResNet stem whose stride-4 and
    stride-8 features feed the DPT neck directly, a ViT over its stride-16 features) or ``"dpt"``
    (the plain-ViT DPT, the class of Intel/dpt-large: ViT patches of ``patch_size``, default 16)."""
    arch = cfg.get("arch", "depth-anything")
    if arch == "depth-anything":
        model = _build_depth_anything(cfg)
    elif arch == "dpt-hybrid":
        model = _build_dpt_hybrid(cfg)
    elif arch == "dpt":
        model = _build_dpt(cfg)
    else:
        raise ValueError(f"[model] arch must be one of {', '.join(repr(a) for a in ARCHS)}, got {arch!r}")
    with torch.no_grad():  # start the final ReLU in its linear range (a dead ReLU never recovers)
        final_conv(model).bias.fill_(1.0)
    return model


def _build_depth_anything(cfg: dict):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    size = int(cfg["input_size"])
    patch = int(cfg.get("patch_size", 14))
    backbone = Dinov2Config(
        image_size=size, patch_size=patch, hidden_size=cfg["hidden_size"], num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"], intermediate_size=cfg["intermediate_size"],
        out_indices=list(range(1, cfg["num_hidden_layers"] + 1))[-4:], apply_layernorm=True,
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=cfg["hidden_size"], patch_size=patch,
        neck_hidden_sizes=list(cfg["neck_hidden_sizes"]), fusion_hidden_size=cfg["fusion_hidden_size"],
        head_hidden_size=cfg["head_hidden_size"], depth_estimation_type="relative",
    )
    return DepthAnythingForDepthEstimation(config)


def _build_dpt_hybrid(cfg: dict):
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation

    size = int(cfg["input_size"])
    bit_sizes = list(cfg.get("bit_hidden_sizes", [32, 64, 128]))
    neck = list(cfg["neck_hidden_sizes"])
    if len(bit_sizes) != 3 or len(neck) != 4 or neck[:2] != bit_sizes[:2]:
        raise ValueError("dpt-hybrid: bit_hidden_sizes has 3 stages and neck_hidden_sizes 4, the first two equal")
    if size % 16:
        raise ValueError(f"dpt-hybrid: input_size must be a multiple of 16, got {size}")
    backbone = BitConfig(
        global_padding="same", layer_type="bottleneck", depths=list(cfg.get("bit_depths", [1, 1, 2])),
        hidden_sizes=bit_sizes, embedding_size=int(cfg.get("bit_embedding_size", 16)),
        out_features=["stage1", "stage2", "stage3"], num_groups=int(cfg.get("bit_groups", 8)),
    )
    config = DPTConfig(
        is_hybrid=True, backbone_config=backbone, image_size=size, patch_size=16, hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"], backbone_out_indices=list(range(cfg["num_hidden_layers"]))[-4:],
        neck_hidden_sizes=neck, reassemble_factors=[1, 1, 1, 0.5], fusion_hidden_size=cfg["fusion_hidden_size"],
        head_in_index=-1, readout_type="project", backbone_featmap_shape=[1, bit_sizes[-1], size // 16, size // 16],
    )
    return DPTForDepthEstimation(config)


def _build_dpt(cfg: dict):
    from transformers import DPTConfig, DPTForDepthEstimation

    n = int(cfg["num_hidden_layers"])
    return DPTForDepthEstimation(DPTConfig(
        image_size=int(cfg["input_size"]), patch_size=int(cfg.get("patch_size", 16)),
        hidden_size=int(cfg["hidden_size"]), num_hidden_layers=n, num_attention_heads=int(cfg["num_attention_heads"]),
        intermediate_size=int(cfg["intermediate_size"]), backbone_out_indices=list(range(n))[-4:],
        neck_hidden_sizes=list(cfg["neck_hidden_sizes"]), fusion_hidden_size=int(cfg["fusion_hidden_size"]),
        head_in_index=-1, readout_type="project",
    ))


def final_conv(model) -> torch.nn.Conv2d:
    """The head's last convolution (its output goes through the final ReLU)."""
    head = model.head
    return head.conv3 if hasattr(head, "conv3") else head.head[-2]


def build_processor(input_size: int, patch_size: int = 14, keep_aspect_ratio: bool = True):
    """The image processor saved beside the model (Depth Anything's settings, smaller size).

    ``keep_aspect_ratio=False`` resizes every image to the square ``input_size`` (DPT-Hybrid's
    setting: transformers' hybrid embeddings take only the configured image size)."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(
        size={"height": input_size, "width": input_size}, keep_aspect_ratio=keep_aspect_ratio,
        ensure_multiple_of=patch_size,
        do_pad=False, resample=3, image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
    )


def processor_for(arch: str, input_size: int, patch_size: int):
    """The processor saved with a model of ``[model] arch``: Depth Anything keeps the aspect ratio
    (sides multiples of its patch); DPT-Hybrid and the plain-ViT DPT take only square inputs (the
    plain DPT's like Intel/dpt-large's: a square resize, no multiple)."""
    if arch == "dpt":
        return build_processor(input_size, patch_size=1, keep_aspect_ratio=False)
    return build_processor(input_size, patch_size, keep_aspect_ratio=arch != "dpt-hybrid")


def ssi_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Scale-and-shift-invariant L1 with a positive scale.

    The closed-form least-squares scale and shift (eq. 3) of ``pred`` to
    ``target`` are computed without gradient and the scale is clamped to be
    positive (the shift refitted), so an inverted prediction is penalised
    instead of being aligned by a negative scale. Mean |error| over ``weight``.
    pred, target: (B,1,H,W); weight: bool (B,1,H,W).
    """
    with torch.no_grad():
        s, _ = fit_scale_shift(pred, target, weight)
        s = s.clamp_min(1e-3)
        w = weight.float()
        n = w.sum((1, 2, 3)).clamp_min(1.0)
        b = ((target - s.view(-1, 1, 1, 1) * pred) * w).sum((1, 2, 3)) / n
    aligned = pred * s.view(-1, 1, 1, 1) + b.view(-1, 1, 1, 1)
    w = weight.float()
    return ((aligned - target).abs() * w).sum() / w.sum().clamp_min(1.0)


def disparity_target(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """GT disparity scaled to [0, 1] per image by its 98 % quantile; invalid (sky, far) -> 0."""
    disp = torch.where(valid, 1.0 / depth.clamp_min(1e-3), torch.zeros_like(depth))
    out = []
    for d, v in zip(disp, valid):
        vals = d[v]
        hi = torch.quantile(vals, 0.98) if vals.numel() > 0 else torch.tensor(1.0)
        out.append((d / hi.clamp_min(1e-6)).clamp(0, 1.5))
    return torch.stack(out)


def default_load_workers() -> int:
    """:func:`load_split`'s thread count when none is given: one per CPU core, at most 8."""
    return min(8, os.cpu_count() or 1)


def load_split(root: str, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A generic-folder dataset into memory: rgb uint8 (N,3,H,W), depth (N,1,H,W), valid.

    ``workers`` threads decode the files (0: :func:`default_load_workers`); image decoding
    releases the GIL (``python bench/load_split.py data/synth-val``: 1.5x with 2 threads on
    2 cores). The result does not depend on ``workers``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from training.datasets import FolderDataset

    ds = FolderDataset(root)
    first = ds[0]
    # filled in place: lists of per-scene tensors then torch.stack held the data twice and left the
    # heap fragmented (20000 scenes of 192 px took 23 GB resident instead of 6)
    n = len(ds)
    rgb = torch.empty((n, *first["rgb"].shape), dtype=torch.uint8)
    depth = torch.empty((n, *first["depth"].shape), dtype=torch.float32)
    valid = torch.empty((n, *first["valid"].shape), dtype=torch.bool)

    def put(i: int) -> None:
        s = first if i == 0 else ds[i]
        if s["rgb"].shape != rgb.shape[1:]:
            raise ValueError(f"{root}: scene {i} is {tuple(s['rgb'].shape[-2:])}, the first is {tuple(rgb.shape[-2:])}")
        rgb[i] = (s["rgb"] * 255).round()
        depth[i] = s["depth"]
        valid[i] = s["valid"]

    with ThreadPoolExecutor(max_workers=workers or default_load_workers()) as pool:
        for _ in pool.map(put, range(n)):  # in order, so the first bad scene is the one reported
            pass
    return rgb, depth, valid


def model_input(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """(B,3,H,W) [0,1] -> the model's normalised square input (training crops are square)."""
    x = F.interpolate(rgb, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    mean = torch.tensor(IMAGE_MEAN, device=rgb.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=rgb.device).view(1, 3, 1, 1)
    return (x - mean) / std


def random_batch(data, batch: int, crop: int, g: torch.Generator):
    rgb, depth, valid = data
    n, _, h, w = rgb.shape
    idx = torch.randint(0, n, (batch,), generator=g)
    tops = torch.randint(0, h - crop + 1, (batch,), generator=g)
    lefts = torch.randint(0, w - crop + 1, (batch,), generator=g)
    flips = torch.rand(batch, generator=g) < 0.5
    out = [[], [], []]
    for i, t, l, f in zip(idx.tolist(), tops.tolist(), lefts.tolist(), flips.tolist()):
        parts = [x[i, :, t : t + crop, l : l + crop] for x in (rgb, depth, valid)]
        if f:
            parts = [p.flip(-1) for p in parts]
        for o, p in zip(out, parts):
            o.append(p)
    return torch.stack(out[0]).float() / 255.0, torch.stack(out[1]), torch.stack(out[2])


def photometric_jitter(rgb: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and gamma of (B,3,H,W) [0,1] images, each factor
    drawn uniformly in [1 - ``strength``, 1 + ``strength``] from ``g`` (the gamma as ``2 ** u``, u in
    that range less 1); ``strength`` 0 returns ``rgb`` unchanged and draws nothing.

    The procedural scenes are flat-shaded in a narrow range of exposures and colours; photos are
    not. The depth target is untouched: these change how a surface looks, never where it is.
    """
    if strength <= 0:
        return rgb
    b = rgb.shape[0]
    f = 1 + strength * (2 * torch.rand(4, b, 1, 1, 1, generator=g) - 1)
    f = f.to(rgb.device)
    grey = luminance(rgb)
    x = grey + f[0] * (rgb - grey)  # saturation
    mean = grey.mean(dim=(2, 3), keepdim=True)
    x = mean + f[1] * (x - mean)  # contrast
    x = (x * f[2]).clamp(0, 1)  # brightness
    return x ** (2 ** (f[3] - 1))  # gamma


def evaluate(model, data, input_size: int, batch: int = 16) -> dict:
    """AbsRel and delta1 with the eval protocol (``evaluation.protocol.evaluate_sample``:
    least squares in disparity space, 1e-3..80 m), plus the share of images whose
    fitted scale is positive (an inverted model scores 0)."""
    from betterdepth_cli.evaluation.protocol import evaluate_sample

    rgb, depth, valid = data
    device = next(model.parameters()).device
    rels, d1s, signs = [], [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rgb), batch):
            x = rgb[i : i + batch].to(device).float() / 255.0
            pred = model(pixel_values=model_input(x, input_size)).predicted_depth[:, None]
            pred = F.interpolate(pred, size=x.shape[-2:], mode="bicubic", align_corners=False).cpu()
            d, v = depth[i : i + batch], valid[i : i + batch]
            disp = torch.where(v, 1.0 / d.clamp_min(1e-3), torch.zeros_like(d))
            s, _ = fit_scale_shift(pred, disp, v)
            signs.extend((s > 0).float().tolist())
            for j in range(len(d)):
                score = evaluate_sample(pred[j, 0].numpy(), "disparity", d[j, 0].numpy(), v[j, 0].numpy(),
                                        min_depth=VAL_MIN_DEPTH, max_depth=VAL_MAX_DEPTH, metrics=("abs_rel", "delta1"))
                rels.append(score.metrics["abs_rel"])
                d1s.append(score.metrics["delta1"])
    model.train()
    return {"abs_rel": float(np.nanmean(rels)), "delta1": float(np.nanmean(d1s)), "positive_scale": float(np.mean(signs))}


def make_optimizer(model, lr: float, weight_decay: float, warmup: int, total: int):
    """AdamW with a linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    warm = max(1, int(warmup))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    return opt, sched


def capture_pre_activation(conv) -> dict[str, torch.Tensor]:
    """Keep the output of the head's last convolution (the final ReLU's input) in ``["pre"]``.

    Training on it, kept positive by :func:`train_step`, means the ReLU cannot
    die and is the identity at inference.
    """
    captured: dict[str, torch.Tensor] = {}
    conv.register_forward_hook(lambda _m, _i, out: captured.__setitem__("pre", out))
    return captured


def train_step(model, opt, sched, captured: dict, batch, input_size: int) -> torch.Tensor:
    """One optimizer step of the SSI disparity loss on ``batch`` = (rgb [0,1], depth, valid)."""
    rgb, depth, valid = batch
    target = disparity_target(depth, valid)
    model(pixel_values=model_input(rgb, input_size))
    pre = captured["pre"]  # [B,1,h,w] before the final ReLU
    pred = F.interpolate(pre, size=target.shape[-2:], mode="bilinear", align_corners=False)
    loss = ssi_loss(pred, target, torch.ones_like(valid)) + POSITIVITY_WEIGHT * F.relu(POSITIVE_MARGIN - pre).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss.detach()


def training_device(name: str) -> torch.device:
    """``[train] device``: "auto" (CUDA when available, else the CPU), "cpu", "cuda", "cuda:N"."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"[train] device = {name!r}, but this torch sees no CUDA device")
    return device


def train(recipe: dict, output: Path, resume: bool = False, log=print,
          on_step: Callable[[int, float], None] | None = None) -> Path:
    """Train (or resume) a conditioner run in ``output``; returns its ``final`` model folder.

    ``[train] max_minutes`` (0 = no limit) ends the run early at a checkpoint once that much
    wall time has passed in this invocation, and then returns ``output`` itself (no final model
    yet); ``--resume`` continues it. ``on_step(step, loss)``, when given, sees every step's loss.
    """
    cfg = {k: {**DEFAULTS[k], **recipe.get(k, {})} for k in DEFAULTS}
    tr, mc = cfg["train"], cfg["model"]
    if tr["threads"]:
        torch.set_num_threads(int(tr["threads"]))
    device = training_device(str(tr["device"]))
    output.mkdir(parents=True, exist_ok=True)
    (output / "recipe.json").write_text(json.dumps(cfg, indent=2))
    torch.manual_seed(tr["seed"])
    model = build_model(mc).to(device)
    total = int(tr["steps"])
    opt, sched = make_optimizer(model, tr["lr"], tr["weight_decay"], tr["warmup"], total)
    g = torch.Generator().manual_seed(tr["seed"])
    step = 0
    ckpt = output / "checkpoint.pt"
    if resume and ckpt.exists():
        try:  # tensors, numbers and containers only: a planted pickle must not run code
            state = torch.load(ckpt, weights_only=True, map_location=device)
        except pickle.UnpicklingError as exc:
            raise UsageError(f"{ckpt}: not a checkpoint this trainer wrote (refused to unpickle: "
                             f"{str(exc).splitlines()[0][:120]})") from None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"].cpu())
        step = state["step"]
        log(f"resumed from step {step}")
    train_data = tuple(x.to(device) for x in load_split(cfg["data"]["train"]))
    val_data = load_split(cfg["data"]["val"]) if cfg["data"]["val"] else None
    log(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params on {len(train_data[0])} scenes"
        f" ({device})")
    deadline = time.time() + 60 * float(tr["max_minutes"]) if tr["max_minutes"] else math.inf
    metrics_file = (output / "metrics.jsonl").open("a")
    captured = capture_pre_activation(final_conv(model))
    t0 = time.time()
    model.train()
    while step < total:
        rgb, depth, valid = random_batch(train_data, tr["batch_size"], cfg["data"]["crop"], g)
        batch = (photometric_jitter(rgb, float(tr["photometric"]), g), depth, valid)
        loss = train_step(model, opt, sched, captured, batch, mc["input_size"])
        step += 1
        if on_step is not None:
            on_step(step, loss.item())
        if step % tr["log_every"] == 0:
            rec = {"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0], "seconds": time.time() - t0}
            log(json.dumps(rec))
            metrics_file.write(json.dumps(rec) + "\n")
            metrics_file.flush()
        out_of_time = time.time() > deadline
        if step % tr["checkpoint_every"] == 0 or step == total or out_of_time:
            if val_data is not None:
                rec = {"step": step, "val": evaluate(model, val_data, mc["input_size"])}
                log(json.dumps(rec))
                metrics_file.write(json.dumps(rec) + "\n")
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": g.get_state(), "torch_rng": torch.get_rng_state(), "step": step}, tmp)
            tmp.replace(ckpt)
        if out_of_time and step < total:
            log(f"stopped at step {step} of {total}: [train] max_minutes = {tr['max_minutes']} reached (--resume continues)")
            return output
    final = output / "final"
    model.save_pretrained(final)
    processor_for(mc.get("arch", "depth-anything"), mc["input_size"], model.config.patch_size).save_pretrained(final)
    log(f"saved {final}")
    return final


def load_recipe(path: str | os.PathLike) -> dict:
    """Read a conditioner recipe as ``betterdepth train`` reads its own: a missing or unreadable file,
    bad TOML, a table other than [data], [model], [train] or a key they do not take (a typo such as
    ``lrr``) is a UsageError naming the file and the key, in ``betterdepth train``'s words."""
    from training.config import read_recipe_toml

    p, recipe = read_recipe_toml(path)
    for key, value in recipe.items():
        if key not in DEFAULTS:
            raise UsageError(f"{p}: unknown key {key!r} (valid: {', '.join(f'[{s}]' for s in DEFAULTS)})")
        if not isinstance(value, dict):
            raise UsageError(f"{p}: `{key}` must be a table [{key}]")
        names = {*DEFAULTS[key], *(MODEL_KEYS if key == "model" else ()), *(RENDER_KEYS if key == "data" else ())}
        for k in value:
            if k not in names:
                raise UsageError(f"{p}: unknown key [{key}] {k!r} (valid: {', '.join(sorted(names))})")
    jitter = recipe.get("train", {}).get("photometric", 0.0)
    if not isinstance(jitter, (int, float)) or isinstance(jitter, bool) or not 0 <= jitter < 1:
        raise UsageError(f"{p}: [train] photometric must be a number in [0, 1) (the jitter's half-range), got {jitter!r}")
    data = recipe.get("data", {})
    if not data.get("train") and any(k in data for k in RENDER_KEYS):
        d = {"kind": "mixed", "scenes": 3000, "seed0": 0, "size": 192, **data}
        raise UsageError(f"{p}: [data] describes scenes to render, not a folder (python -m training.reproduce renders "
                         f"them): render them with `betterdepth synth --kind {d['kind']} -n {d['scenes']} --seed "
                         f"{d['seed0']} --size {d['size']} -o DIR` and set [data] train = \"DIR\"")
    return recipe


def main(argv: list[str] | None = None) -> None:
    """``python -m training.conditioner``: errors are one line with ``betterdepth``'s exit codes
    (64 usage, a bad recipe key included; 66 no input; 73 cannot write)."""
    from betterdepth_cli.cli.app import script_main

    script_main(_main, argv)


def _main(argv: list[str] | None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    recipe = load_recipe(args.recipe)
    train(recipe, Path(args.output), args.resume, log=lambda m: print(m, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
