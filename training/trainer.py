"""The BetterDepth training loop on Hugging Face accelerate.

:func:`train` runs a :class:`~training.config.Recipe` into an output folder::

    OUT/config.toml          the resolved recipe (flags and --set applied); a valid recipe
    OUT/metrics.jsonl        one JSON object per step ({"type": "train", ...}) and per validation
    OUT/checkpoints/step-NNNNNN/   accelerate state (UNet, optimizer, LR scheduler, grad scaler,
                             python/numpy/torch RNG per process, EMA) + trainer_state.json
    OUT/model/               the final model bundle (``load_model(OUT/model)``)

What makes a resumed run identical to an uninterrupted one: every random draw
is a pure function of (seed, optimizer step, micro-step, process): the samples
of a micro-batch (:class:`BatchPlan`), their crops and flips, and the
timesteps and noise of the loss; the rest of the state (weights, Adam moments,
LR schedule, grad scaler, global RNGs, EMA) is in the checkpoint.

Only the UNet trains; the codec is frozen. The conditioner runs once per
sample through :class:`~training.cache.PredictionCache`; crops and flips are
applied afterwards to the cached full-size prediction. Batches draw all their
samples from one source (Marigold's mixing), chosen per micro-batch by the
sources' weights, so sources of different sizes never meet in one batch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from betterdepth_cli.core.types import OutputError, UsageError
from training.config import Recipe, dump_recipe
from training.batches import seed_from, BatchPlan, collate_list, PlanSampler, SourceDatasets, build_dataset, transform_sample
from training.checkpoints import CHECKPOINTS, STATE_FILE, check_resume_compatible, list_checkpoints
from training.model_setup import build_model, trained_card
from training.objective import ObjectiveSettings, training_loss

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
MODEL_DIR = "model"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- learning rate


def make_folder(path: Path, what: str) -> None:
    """``path`` made with its parents, or OutputError (exit 73) naming it and why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create {what} ({exc.strerror or type(exc).__name__})") from None
    if not os.access(path, os.W_OK):
        raise OutputError(f"{path}: cannot write {what} (permission denied)")


def lr_factor(step: int, total: int, warmup: int = 0, schedule: str = "constant", min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr before optimizer step ``step`` (0-based).

    Linear warm-up over ``warmup`` steps (from 1/warmup to 1), then ``schedule``
    over the remaining steps down to ``min_ratio``: constant, linear, cosine or
    exponential (``min_ratio ** progress``).
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "exponential":
        return min_ratio**progress
    raise ValueError(f"unknown schedule {schedule!r}")


# --------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """What :func:`train` returns (on every process)."""

    output: Path
    model_path: Path | None
    step: int
    resumed_from: int
    losses: list[float] = field(default_factory=list)  # mean training loss of each step this run made
    conditioner_calls: int = 0  # samples the conditioner ran on (this process)
    cache_hits: int = 0
    validation: list[dict] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)  # per step: total, data, unet seconds
    main_process: bool = True


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """One training run. Use :func:`train`; the methods are public for the benchmark."""

    def __init__(
        self,
        recipe: Recipe,
        output: str | os.PathLike,
        resume: bool = False,
        log: Callable[[str], None] | None = None,
        conditioner=None,
    ):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        self.recipe = recipe
        self.output = Path(output)
        self.resume = resume
        self._log = log or _stderr
        t = recipe.train
        try:
            self.accelerator = Accelerator(
                mixed_precision=t.mixed_precision,
                gradient_accumulation_steps=t.gradient_accumulation_steps,
                step_scheduler_with_optimizer=False,
                project_config=ProjectConfiguration(project_dir=str(self.output)),
            )
        except ValueError as exc:
            raise UsageError(f"[train] mixed_precision = {t.mixed_precision!r}: {exc}".splitlines()[0]) from None
        try:
            self._setup(conditioner)
        except BaseException:
            self._reset_accelerate_state()
            raise

    def _setup(self, conditioner) -> None:
        t, acc = self.recipe.train, self.accelerator
        if acc.device.type == "cpu" and t.mixed_precision == "fp16":
            raise UsageError("[train] mixed_precision = 'fp16' needs a GPU; on the CPU use 'bf16' or 'no'")
        self.device = acc.device
        self.process = acc.process_index
        self.num_processes = acc.num_processes
        self._check_output()
        acc.wait_for_everyone()

        torch.manual_seed(t.seed)
        np.random.seed(t.seed % 2**32)
        import random

        random.seed(t.seed)
        self._setup_model()
        self._setup_conditioner(conditioner)
        self.train_sources, self.val_samples = self._build_data()
        sizes = [len(ds) for ds, _ in self.train_sources]
        self.plan = BatchPlan(sizes, [w for _, w in self.train_sources], t.batch_size, self.num_processes, t.seed)
        self._setup_optimizer()
        self.step = 0
        self.resumed_from = 0
        if self.resume:
            self._load_latest()
        self.result = TrainResult(self.output, None, self.step, self.resumed_from, main_process=acc.is_main_process)

    def _setup_model(self) -> None:
        """The model to train (only the UNet trains; the codec is frozen) and the objective's settings."""
        recipe, t = self.recipe, self.recipe.train
        self.model = build_model(recipe, self.log)
        if recipe.model.residual_base:  # what the residual rides on, for a new model or a fine-tuned one
            self.model.card["residual_base"] = recipe.model.residual_base
        if recipe.objective.mode == "e2e":  # validation and the saved card sample as trained
            self.model.card["zero_noise"] = True
            self.model.card.setdefault("defaults", {})["steps"] = 1
        self.model.to(self.device)
        self.model.codec.requires_grad_(False).eval()
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(t.mixed_precision, torch.float32)
        if any(True for _ in self.model.codec.parameters()):
            self.model.codec.to(self.weight_dtype)
        self.codec_dtype = self.weight_dtype if any(True for _ in self.model.codec.parameters()) else torch.float32
        self.unet = self.model.unet
        self.unet.train()
        if t.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.multiple = self.model.pad_multiple
        o = recipe.objective
        self.settings = ObjectiveSettings(prealign=o.prealign, patch_mask=o.patch_mask, patch_size=o.patch_size,
                                          eta=o.eta)

    def _setup_conditioner(self, conditioner) -> None:
        """The conditioner (given, simulated or by name), its prediction cache, the mixed-in one, the latent cache."""
        from betterdepth_cli.conditioner_registry import get_conditioner
        from training.cache import LatentCache, PredictionCache, conditioner_id

        recipe, c = self.recipe, self.recipe.conditioner
        self.cache_dir = recipe.cache_dir()
        if recipe.data.cache_predictions or any(s["type"] == "synthetic" for s in
                                                 recipe.train_sources() + recipe.validation_sources()):
            make_folder(self.cache_dir, "the cache folder ($BETTERDEPTH_CACHE or [data] cache_dir)")
        if conditioner is None and c.name == "simulated":
            from training.simulated_conditioner import SimulatedConditioner

            try:
                conditioner = SimulatedConditioner(**c.simulated)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"[conditioner] simulated: {exc}") from None
        elif conditioner is None:
            conditioner = get_conditioner(c.name, device=c.device or self.device)
        self.conditioner = conditioner
        cache_root = self.cache_dir if recipe.data.cache_predictions else None
        self.pred_cache = None
        if not getattr(conditioner, "online", False):
            self.pred_cache = PredictionCache(conditioner, cache_root, conditioner_id(conditioner, c.name))
        self.mix_cache = None
        if c.mix_name and c.mix_share > 0:
            mix = get_conditioner(c.mix_name, device=c.device or self.device)
            if mix.kind != conditioner.kind:
                raise UsageError(f"[conditioner] mix_name {c.mix_name} predicts {mix.kind}, {c.name} {conditioner.kind}")
            self.mix_cache = PredictionCache(mix, cache_root, conditioner_id(mix, c.mix_name))
        self.kind, self.metric = conditioner.kind, bool(conditioner.metric)
        d = recipe.data
        deterministic = not d.hflip and not d.random_crop
        self.latent_cache = None
        if d.cache_latents and deterministic and self.model.codec.kind != "space-to-depth":
            self.latent_cache = LatentCache(self.model.codec, self.cache_dir, dtype=self.codec_dtype)

    def _setup_optimizer(self) -> None:
        """Optimizer, LR schedule, accelerate's wrapping and the EMA."""
        recipe, t, acc, o = self.recipe, self.recipe.train, self.accelerator, self.recipe.optim
        opt_cls = torch.optim.AdamW if o.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(
            self.unet.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
        )
        total, warm, sched, mr = t.max_steps, o.warmup_steps, o.schedule, o.min_lr_ratio
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warm, sched, mr)
        )
        self.wrapped, self.optimizer, self.lr_scheduler = acc.prepare(self.unet, self.optimizer, self.lr_scheduler)
        self.ema = None
        if recipe.ema.enabled:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.unet.parameters(), decay=recipe.ema.decay, model_cls=type(self.unet),
                                model_config=self.unet.config)
            self.ema.to(self.device)
            acc.register_for_checkpointing(self.ema)

    # ------------------------------------------------------------------ helpers
    def log(self, message: str) -> None:
        if getattr(self, "accelerator", None) is None or self.accelerator.is_main_process:
            self._log(message)

    def _check_output(self) -> None:
        """The run folder, made (OutputError, exit 73, when it cannot be); a previous run in it is resumed
        (a rerun of the same command continues; other settings are refused when its checkpoint loads)."""
        if self.output.exists() and not self.output.is_dir():
            raise OutputError(f"{self.output}: not a folder (the run folder of --output)")
        if not self.resume and (list_checkpoints(self.output) or (self.output / MODEL_DIR).exists()):
            if not list_checkpoints(self.output):  # a model without checkpoints: its run's recipe must be this one
                self._check_previous_recipe()
            self.log(f"{self.output} holds a previous run: resuming it (another --output, or delete it, to start over)")
            self.resume = True
        if self.accelerator.is_main_process:
            make_folder(self.output, "the run folder (--output)")

    def _check_previous_recipe(self) -> None:
        """The recipe a finished run without checkpoints recorded (its config.toml) against this run's."""
        import tomllib

        from training.config import recipe_from_dict

        path = self.output / CONFIG_FILE
        try:
            saved = recipe_from_dict(tomllib.loads(path.read_text()), where=str(path)).to_dict()
        except (OSError, ValueError, UsageError):
            raise UsageError(f"{self.output}: holds a model of an unknown run (no readable {CONFIG_FILE}); choose "
                             "another --output") from None
        check_resume_compatible(saved, self.recipe, path)

    def _build_data(self):
        r = self.recipe
        specs = r.train_sources()
        datasets = []
        with self.accelerator.main_process_first():
            for spec in specs:
                datasets.append((build_dataset(spec, self.cache_dir, self.log), float(spec.get("weight", 1.0))))
            val_specs = r.validation_sources()
            val_sets = [build_dataset(s, self.cache_dir, self.log) for s in val_specs]
        if not val_sets and r.validation.holdout > 0:
            first, w = datasets[0]
            n = len(first)
            if r.validation.holdout >= n:
                raise UsageError(f"[validation] holdout = {r.validation.holdout} leaves no training samples (the first source has {n})")
            datasets[0] = (torch.utils.data.Subset(first, range(n - r.validation.holdout)), w)
            val_sets = [torch.utils.data.Subset(first, range(n - r.validation.holdout, n))]
        val = []
        for ds in val_sets:
            for i in range(len(ds)):
                if len(val) >= r.validation.max_samples:
                    break
                val.append(ds[i])
        return datasets, val

    def _loader(self, start_micro: int):
        nw = self.recipe.data.num_workers
        return iter(
            torch.utils.data.DataLoader(
                SourceDatasets([ds for ds, _ in self.train_sources]),
                batch_sampler=PlanSampler(self.plan, start_micro, self.process),
                collate_fn=collate_list,
                num_workers=nw,
                prefetch_factor=2 if nw else None,
            )
        )

    # ------------------------------------------------------------------ batches
    def predictions(self, items: list[dict], seeds: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The conditioning of each full-size sample, (values (1,H,W), valid (1,H,W)).

        A cached conditioner's predictions; an online one (``simulated``) draws its
        degradation from ``seeds``; with ``mix_name``, a ``mix_share`` of the samples
        (drawn from the same seeds) take the mixed conditioner's cached prediction.
        Unfiltered: :meth:`make_batch` applies the card's conditioning filter at full size.
        """
        if self.pred_cache is not None:
            preds = self.pred_cache.predict(items)
        else:
            preds = [self.conditioner.predict_sample(it, np.random.default_rng([s, 0])) for it, s in zip(items, seeds)]
        if self.mix_cache is not None:
            share = self.recipe.conditioner.mix_share
            pick = [i for i, s in enumerate(seeds) if np.random.default_rng([s, 1]).uniform() < share]
            for i, p in zip(pick, self.mix_cache.predict([items[i] for i in pick])):
                preds[i] = p
        return preds

    def make_batch(self, items: list[dict], g: int) -> dict[str, torch.Tensor]:
        """Full-size samples -> predictions -> crops/flips -> stacked tensors on the device."""
        d = self.recipe.data
        t = self.recipe.train
        preds = self.predictions(items, [seed_from(t.seed, 5, g, self.process, j) for j in range(len(items))])
        keys = ["rgb", "depth", "valid", "cond", "cond_valid"] + (["cond_raw"] if self.model.raw_conditioning else [])
        out: dict[str, list] = {k: [] for k in keys}
        for j, (item, (cv, cm)) in enumerate(zip(items, preds)):
            gen = torch.Generator().manual_seed(seed_from(self.recipe.train.seed, 3, g, self.process, j))
            # the conditioning filter sees the whole image, as at inference (its radius is relative to the size)
            raw, cv = cv, self.model.filter_conditioning(cv[None], item["rgb"][None])[0]
            maps = transform_sample(
                {"rgb": item["rgb"], "depth": item["depth"], "valid": item["valid"], "cond": cv, "cond_valid": cm,
                 **({"cond_raw": raw} if self.model.raw_conditioning else {})},
                processing_res=d.processing_res, crop=d.crop, multiple=self.multiple,
                random_crop=d.random_crop, hflip=d.hflip, generator=gen,
            )
            for k in out:
                out[k].append(maps[k])
        shapes = {tuple(x.shape[-2:]) for x in out["rgb"]}
        if len(shapes) > 1:
            ids = ", ".join(str(it.get("id")) for it in items)
            raise UsageError(
                f"samples of one batch have different sizes {sorted(shapes)} ({ids}); set [data] crop = [h, w] "
                "or processing_res so that they match"
            )
        batch = {k: torch.stack(v).to(self.device) for k, v in out.items()}
        return batch

    def denoise(self, z_x, z_c, z_t, t):
        """v-prediction through the accelerate-wrapped UNet (DDP, autocast)."""
        x = self.model.unet_input(z_x, z_c, z_t)  # [B,Ci+2Cd,h,w]
        ehs = None
        if self.model.text_embedding is not None:
            ehs = self.model.text_embedding.to(x.dtype).expand(x.shape[0], -1, -1)
        return self.wrapped(x, t, encoder_hidden_states=ehs).sample

    def loss(self, batch: dict[str, torch.Tensor], g: int, timing: dict | None = None):
        """The objective on one prepared micro-batch (noise from (seed, g, process))."""
        gen = torch.Generator().manual_seed(seed_from(self.recipe.train.seed, 4, g, self.process))
        z_image = self.latent_cache.encode(batch["rgb"]) if self.latent_cache is not None else None

        def timed_denoise(*args):
            t0 = time.perf_counter()
            v = self.denoise(*args)
            if timing is not None:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                timing["unet"] = timing.get("unet", 0.0) + time.perf_counter() - t0
            return v

        if self.recipe.objective.mode == "e2e":
            from training.e2e import e2e_loss

            return e2e_loss(
                self.model, batch["rgb"], batch["cond"], batch["cond_valid"], batch["depth"], batch["valid"],
                self.kind, self.settings, denoise=timed_denoise, z_image=z_image, codec_dtype=self.codec_dtype,
                loss=self.recipe.objective.e2e_loss, gradient_weight=self.recipe.objective.e2e_gradient_weight,
                gradient_scales=self.recipe.objective.e2e_gradient_scales,
                excursion_weight=self.recipe.objective.e2e_excursion_weight,
                excursion_radius=self.recipe.objective.e2e_excursion_radius, cond_raw=batch.get("cond_raw"),
            )
        return training_loss(
            self.model, batch["rgb"], batch["cond"], batch["cond_valid"], batch["depth"], batch["valid"],
            self.kind, gen, self.settings, denoise=timed_denoise, z_image=z_image, codec_dtype=self.codec_dtype,
            cond_raw=batch.get("cond_raw"),
        )

    # ------------------------------------------------------------------ checkpoints
    def _load_latest(self) -> None:
        ckpts = list_checkpoints(self.output)
        if not ckpts:
            self.log(f"--resume: no checkpoint in {self.output / CHECKPOINTS}; starting from step 0")
            return
        step, folder = ckpts[-1]
        state = json.loads((folder / STATE_FILE).read_text())
        check_resume_compatible(state.get("recipe", {}), self.recipe, folder)
        self.accelerator.load_state(str(folder))
        self.step = self.resumed_from = int(state["step"])
        if self.accelerator.is_main_process:
            self._truncate_metrics(self.step)
        self.log(f"resumed from {folder} (step {self.step})")

    def _truncate_metrics(self, step: int) -> None:
        path = self.output / METRICS_FILE
        if not path.exists():
            return
        keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        root = self.output / CHECKPOINTS
        final = root / f"step-{self.step:06d}"
        tmp = root / f".tmp-step-{self.step:06d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {"step": self.step, "recipe": self.recipe.to_dict(), "time": time.time()}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            limit = self.recipe.train.checkpoints_total_limit
            if limit:
                for _, old in list_checkpoints(self.output)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        self.log(f"checkpoint {final}")
        return final

    def _metrics(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.output / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict | None:
        """AbsRel and delta1 (aligned in the conditioner's space) of the conditioner and the refiner."""
        from training.validation import validate

        return validate(self)

    # ------------------------------------------------------------------ loop
    def train_step(self, loader) -> tuple[float, dict]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches."""
        acc, t = self.accelerator, self.recipe.train
        timing: dict[str, float] = {}
        t_start = time.perf_counter()
        losses, kept, degenerate = [], [], 0
        for micro in range(t.gradient_accumulation_steps):
            g = self.step * t.gradient_accumulation_steps + micro
            t0 = time.perf_counter()
            batch = self.make_batch(next(loader), g)
            timing["data"] = timing.get("data", 0.0) + time.perf_counter() - t0
            with acc.accumulate(self.wrapped):
                out = self.loss(batch, g, timing)
                t0 = time.perf_counter()
                acc.backward(out.loss)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                timing["unet"] = timing.get("unet", 0.0) + time.perf_counter() - t0
                if acc.sync_gradients and self.recipe.optim.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.wrapped.parameters(), self.recipe.optim.max_grad_norm)
                self.optimizer.step()
                if acc.sync_gradients:
                    self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            losses.append(out.loss.detach())
            kept.append(out.kept)
            degenerate += out.degenerate
        self.step += 1
        if self.ema is not None:
            self.ema.step(self.unet.parameters())
        loss = acc.reduce(torch.stack(losses).mean().to(self.device), reduction="mean")
        timing["total"] = time.perf_counter() - t_start
        return float(loss), {"kept": float(np.mean(kept)), "degenerate": degenerate, **timing}

    def run(self) -> TrainResult:
        r, acc = self.recipe, self.accelerator
        t = r.train
        if acc.is_main_process:
            if self.resumed_from == 0 and (self.output / METRICS_FILE).exists():
                (self.output / METRICS_FILE).unlink()  # a fresh run starts a fresh log
            header = (f"resolved recipe of this run ({r.name}); rerun (from {Path.cwd()}: relative data paths are "
                      f"relative to it) with: betterdepth train --recipe {(self.output / CONFIG_FILE).absolute()} "
                      f"--output {self.output.absolute()}")
            tmp = self.output / f".{CONFIG_FILE}.tmp"
            tmp.write_text(dump_recipe(r, header))
            os.replace(tmp, self.output / CONFIG_FILE)
        eff = t.batch_size * t.gradient_accumulation_steps * self.num_processes
        self.log(
            f"training {r.name}: {t.max_steps} steps from step {self.step}, batch {t.batch_size} x {t.gradient_accumulation_steps} "
            f"accumulation x {self.num_processes} process(es) = {eff}, {sum(len(d) for d, _ in self.train_sources)} "
            f"training samples, conditioner {r.conditioner.name} ({self.kind}), device {self.device}, "
            f"prealign={r.objective.prealign} patch_mask={r.objective.patch_mask} "
            f"depth_conditioning={r.objective.depth_conditioning}"
        )
        loader = self._loader(self.step * t.gradient_accumulation_steps) if self.step < t.max_steps else None
        window: list[float] = []
        fallbacks = 0  # this process's pre-alignments that fell back since the last step line
        while self.step < t.max_steps:
            lr = float(self.lr_scheduler.get_last_lr()[0])  # this step's (the scheduler steps after it)
            loss, info = self.train_step(loader)
            self.result.losses.append(loss)
            self.result.timings.append({k: info[k] for k in ("total", "data", "unet") if k in info})
            window.append(loss)
            fallbacks += info["degenerate"]
            self._metrics({"type": "train", "step": self.step, "loss": loss, "lr": lr, "kept": round(info["kept"], 4),
                           "prealign_fallbacks": info["degenerate"],
                           "seconds": round(info["total"], 4), "data_seconds": round(info.get("data", 0.0), 4),
                           "unet_seconds": round(info.get("unet", 0.0), 4)})
            if self.step % t.log_every == 0 or self.step == t.max_steps:
                self.log(f"step {self.step}/{t.max_steps} loss {np.mean(window):.4f} lr {lr:.2e} "
                         f"{info['total']:.2f} s/step kept {info['kept']:.2f}"
                         + (f" prealign fallbacks {fallbacks}" if fallbacks else ""))
                window, fallbacks = [], 0
            if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                self.save_checkpoint()
            if r.validation.every and self.step % r.validation.every == 0 and self.step < t.max_steps:
                self.validate()
        del loader
        if t.checkpoint_every and self.step % t.checkpoint_every and self.step > self.resumed_from:
            self.save_checkpoint()  # the last step too, so a rerun with a larger --max-steps continues from it
        self.validate()
        self.result.model_path = self.save_model()
        self.result.step = self.step
        cache = self.pred_cache or self.mix_cache
        self.result.conditioner_calls = cache.calls if cache else 0
        self.result.cache_hits = cache.hits if cache else 0
        self._metrics({"type": "end", "step": self.step, "conditioner_calls": self.result.conditioner_calls,
                       "cache_hits": self.result.cache_hits, "model": str(self.result.model_path)})
        return self.result

    def save_model(self) -> Path:
        """Write the final bundle to OUT/model (EMA weights when enabled) with its card."""
        acc, r = self.accelerator, self.recipe
        acc.wait_for_everyone()
        path = self.output / MODEL_DIR
        if acc.is_main_process:
            import copy

            unet = acc.unwrap_model(self.wrapped)
            if self.ema is not None and r.ema.use_for_final:
                unet = copy.deepcopy(unet)
                self.ema.copy_to(unet.parameters())
            from betterdepth_cli.core.refiner import BetterDepthModel

            card = trained_card(self.model.card, r, self.kind, self.metric, self.step, self.num_processes)
            codec = self.model.codec.to(torch.float32)
            bundle = BetterDepthModel(unet, codec, self.model.scheduler, card, self.model.text_embedding)
            bundle.save(path)
            codec.to(self.codec_dtype)
            self.log(f"model saved to {path}")
        acc.wait_for_everyone()
        return path

    def close(self, failed: bool = False) -> None:
        """Release the accelerator (a later run in this process may use other settings). ``failed``: this
        process is ending on an error: no barrier (the other processes may be inside a collective that
        never completes; the launcher ends them when this one exits)."""
        if not failed:
            self.accelerator.wait_for_everyone()
        self.accelerator.free_memory()
        self._reset_accelerate_state()

    def _reset_accelerate_state(self) -> None:
        from accelerate.state import AcceleratorState, GradientState

        if self.accelerator.num_processes == 1:
            AcceleratorState._reset_state()
            GradientState._reset_state()


def train(
    recipe: Recipe,
    output: str | os.PathLike,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    conditioner=None,
) -> TrainResult:
    """Train a BetterDepth refiner as the recipe says; see the module docstring.

    Args:
        recipe: the resolved :class:`~training.config.Recipe`.
        output: the run folder.
        resume: continue from the newest checkpoint in ``output`` (start fresh when there is none).
        log: where console lines go (default: stderr, main process only).
        conditioner: an already loaded conditioner instead of ``recipe.conditioner.name``.
    Returns:
        :class:`TrainResult`.
    """
    trainer = Trainer(recipe, output, resume=resume, log=log, conditioner=conditioner)
    try:
        result = trainer.run()
    except BaseException:
        trainer.close(failed=True)
        raise
    trainer.close()
    return result


__all__ = ["train", "Trainer", "TrainResult", "BatchPlan", "lr_factor", "transform_sample", "build_model",
           "build_dataset", "list_checkpoints", "seed_from"]
