"""The model a recipe trains: a new one from the recipe's [model] table, or one fine-tuned from a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from betterdepth_cli.core.types import UsageError
from training.config import Recipe


def build_model(recipe: Recipe, log: Callable[[str], None] | None = None):
    """The model to train: tiny config, Stable Diffusion, or an existing BetterDepth folder."""
    from betterdepth_cli.core.refiner import CARD_FILE, BetterDepthModel, load_model, resolve_model_path

    m, dc = recipe.model, recipe.objective.depth_conditioning
    if m.init == "tiny":
        model = BetterDepthModel.tiny(
            seed=recipe.train.seed, codec=m.codec, factor=m.factor, block_out_channels=tuple(m.block_out_channels),
            layers_per_block=m.layers_per_block, depth_conditioning=dc, residual=m.residual,
            conditioning_filter=m.conditioning_filter or None, raw_conditioning=m.raw_conditioning,
        )
        try:
            model.conditioning_filter  # checks the type
        except ValueError as exc:
            raise UsageError(f"[model] conditioning_filter: {exc}") from None
        return model
    path = Path(m.init).expanduser()
    if path.is_dir() and (path / CARD_FILE).exists():
        model = load_model(path)
        if model.depth_conditioning != dc:
            raise UsageError(
                f"[model] init {m.init}: that model was trained with depth_conditioning={model.depth_conditioning}, "
                f"the recipe asks for {dc}"
            )
        model.card.setdefault("init", {})["betterdepth"] = str(path)
        return model.train()
    if path.is_dir() and not (path / "unet").is_dir():
        raise UsageError(f"[model] init {m.init}: neither a BetterDepth model (no {CARD_FILE}) nor a Stable Diffusion folder (no unet/)")
    root = resolve_model_path(m.init, what="Stable Diffusion model")
    model = BetterDepthModel.from_stable_diffusion(str(root))
    model.card.setdefault("init", {})["stable_diffusion"] = m.init
    if not dc:
        model = _without_depth_conditioning(model)
    return model


def _without_depth_conditioning(model):
    """A Stable Diffusion init with conv_in over cat[z_x, z_t] (2 groups, weight / 2) instead of 3."""
    from torch import nn

    from betterdepth_cli.core.refiner import BetterDepthModel

    unet = model.unet
    old = unet.conv_in
    c = model.codec.depth_channels
    w4 = old.weight[:, :c] * 3.0  # the SD weight (expand_conv_in divided by 3)
    new = nn.Conv2d(2 * c, old.out_channels, old.kernel_size, old.stride, old.padding, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.cat([w4, w4], dim=1) / 2.0)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=2 * c)
    card = {**model.card, "depth_conditioning": False}
    return BetterDepthModel(unet, model.codec, model.scheduler, card, model.text_embedding)


def trained_card(card: dict, r: Recipe, kind: str, metric: bool, steps: int, num_processes: int) -> dict:
    """The card of a trained model: how it was trained, and the inference defaults that follow from it."""
    import copy

    card = copy.deepcopy(card)
    card["depth_conditioning"] = r.objective.depth_conditioning
    card["trained_with"] = {
        "conditioner": r.conditioner.name,
        "kind": kind,
        "metric": metric,
        "data": r.train_sources(),
        "steps": steps,
        "recipe": r.name,
        "effective_batch": r.train.batch_size * r.train.gradient_accumulation_steps * num_processes,
        "flags": {
            "depth_conditioning": r.objective.depth_conditioning,
            "prealign": r.objective.prealign,
            "patch_mask": r.objective.patch_mask,
            "patch_size": r.objective.patch_size,
            "eta": r.objective.eta,
            "mode": r.objective.mode,
        },
        "config": r.to_dict(),
    }
    defaults = dict(card.get("defaults", {}))
    # a simulated conditioner exists only in training: inference defaults to the mixed-in real one
    simulated = r.conditioner.name == "simulated"
    defaults["conditioner"] = (r.conditioner.mix_name or "builtin") if simulated else r.conditioner.name
    res = r.model.processing_res or r.data.processing_res
    if res:
        defaults["processing_res"] = res
    elif r.model.init == "tiny":
        defaults["processing_res"] = 0
    if r.model.max_processing_res:
        defaults["max_processing_res"] = int(r.model.max_processing_res)
        # larger images are refined in tiles at their own pixel scale (core.tiling)
        defaults["tile_above"] = int(r.model.max_processing_res)
        defaults["tile"] = min(1024, int(r.model.max_processing_res))
        defaults["tile_overlap"] = defaults["tile"] // 8
    if r.model.ensemble:
        defaults["ensemble"] = int(r.model.ensemble)
    if r.model.residual_smoothing:
        card["residual_smoothing"] = int(r.model.residual_smoothing)
    if r.model.layout_lowpass:
        card["layout_lowpass"] = float(r.model.layout_lowpass)
    if r.model.edge_gate:
        card["edge_gate"] = [float(v) for v in r.model.edge_gate]
    if r.model.keep_sharp:
        card["keep_sharp"] = [float(v) for v in r.model.keep_sharp]
    if r.model.cascade:
        card["cascade"] = {"blur_above": float(r.model.cascade["blur_above"]), "scale": float(r.model.cascade["scale"])}
    card["defaults"] = defaults
    return card
