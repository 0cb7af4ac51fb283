"""`betterdepth train`: train a BetterDepth refiner from a TOML recipe (accelerate-ready)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from betterdepth_cli.cli.app import app, handle_errors


@app.command("train")
@handle_errors
def train(
    recipe: Annotated[Path, typer.Option("--recipe", "-r", help="Recipe TOML (see training/recipes/).")],
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Run folder (default: the recipe's `output`, else runs/<name>).",
                     show_default=False),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint in the run folder (a rerun of the same command into a folder holding a run does this by itself; another recipe there is refused).")] = False,
    max_steps: Annotated[
        Optional[int], typer.Option("--max-steps", min=0, help="Optimizer steps (overrides train.max_steps).",
                                    show_default=False)
    ] = None,
    init: Annotated[
        Optional[str],
        typer.Option("--init", help="tiny, a Stable Diffusion folder or hub id, or a BetterDepth model folder.",
                     show_default=False),
    ] = None,
    conditioner: Annotated[
        Optional[str], typer.Option("--conditioner", "-c", help="Conditioner (overrides conditioner.name).",
                                    show_default=False)
    ] = None,
    no_depth_conditioning: Annotated[
        bool, typer.Option("--no-depth-conditioning", help="Ablation: the UNet sees the image and the noisy depth only (Marigold-style).")
    ] = False,
    no_prealign: Annotated[bool, typer.Option("--no-prealign", help="Ablation: no global pre-alignment.")] = False,
    no_patch_mask: Annotated[bool, typer.Option("--no-patch-mask", help="Ablation: no local patch masking.")] = False,
    patch_size: Annotated[
        Optional[int], typer.Option("--patch-size", min=1, help="Patch size w of the patch mask.", show_default=False)
    ] = None,
    eta: Annotated[
        Optional[float], typer.Option("--eta", min=0.0, help="Per-pixel tolerance eta of the patch mask.",
                                      show_default=False)
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override any recipe key: section.key=value (TOML value), repeatable.",
                     show_default=False),
    ] = None,
) -> None:
    """Train the diffusion refiner (only the UNet; the autoencoder stays frozen).

    Flags override the recipe; the resolved recipe is written to OUTPUT/config.toml,
    per-step losses and validation scores to OUTPUT/metrics.jsonl, checkpoints to
    OUTPUT/checkpoints/ and the final model to OUTPUT/model (use it with
    `betterdepth refine --model OUTPUT/model`). Several GPUs or machines:
    `accelerate launch -m betterdepth_cli train --recipe ...`.
    """
    overrides: list[str] = list(set_ or [])
    flags: dict[str, object] = {}
    if max_steps is not None:
        flags["train.max_steps"] = max_steps
    if init is not None:
        flags["model.init"] = init
    if conditioner is not None:
        flags["conditioner.name"] = conditioner
    if no_depth_conditioning:
        flags["objective.depth_conditioning"] = False
    if no_prealign:
        flags["objective.prealign"] = False
    if no_patch_mask:
        flags["objective.patch_mask"] = False
    if patch_size is not None:
        flags["objective.patch_size"] = patch_size
    if eta is not None:
        flags["objective.eta"] = float(eta)

    from training.config import apply_overrides, load_recipe, recipe_from_dict

    base = load_recipe(recipe, overrides)  # checks the file and --set
    cfg = recipe_from_dict(apply_overrides(base.to_dict(), flags, where="flag"), where=str(recipe)) if flags else base
    out = output or Path(cfg.output or Path("runs") / cfg.name)
    _patch_mask_note(cfg, patch_size, eta)

    from training.trainer import train as run_training

    result = run_training(cfg, out, resume=resume)
    if result.model_path is not None and result.main_process:
        typer.echo(str(result.model_path))


def _patch_mask_note(cfg, patch_size: int | None, eta: float | None) -> None:
    """With the patch mask off (the flag or the recipe), say that --patch-size and --eta do not apply."""
    if cfg.objective.patch_mask:
        return
    from betterdepth_cli.core.settings import not_applied_note

    note = not_applied_note("the patch mask is off (--no-patch-mask or the recipe)", patch_size=patch_size, eta=eta)
    if note:
        typer.echo(note, err=True)
