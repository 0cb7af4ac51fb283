"""What the trainer feeds the model: sources mixed per batch by weight (:class:`BatchPlan`, every draw a pure
function of seed and step, so a resumed run sees the same batches), and each sample's resize, crop and flip."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from betterdepth_cli.core.types import UsageError


def seed_from(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class SourceDatasets(torch.utils.data.Dataset):
    """Several datasets addressed by (source, index) pairs."""

    def __init__(self, datasets: Sequence):
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        k, i = key
        item = self.datasets[k][i]
        return {**item, "source": k, "index": i}


def collate_list(items: list) -> list:
    return items


class BatchPlan:
    """Which samples each micro-batch holds, as a pure function of (seed, micro-batch, process).

    Micro-batch ``g`` (global, ``step * accumulation + micro``) draws its source
    from ``weights`` (the same on every process), then the next ``batch_size``
    items of that source's stream for this process; a source's stream is its
    epochs, each a seeded permutation, shared by the processes without overlap.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], batch_size: int, num_processes: int, seed: int):
        if any(n < 1 for n in sizes):
            raise UsageError("every training source must hold at least one sample")
        w = np.asarray(weights, np.float64)
        if w.sum() <= 0:
            raise UsageError("the training sources' weights must not all be 0")
        self.sizes = list(sizes)
        self.probs = w / w.sum()
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.seed = seed
        self._counts: list[np.ndarray] = [np.zeros(len(sizes), np.int64)]  # counts before micro-batch g
        self._choices: list[int] = []
        self._perm: dict[tuple[int, int], torch.Tensor] = {}

    def source(self, g: int) -> int:
        while len(self._choices) <= g:
            j = len(self._choices)
            if len(self.sizes) == 1:
                k = 0
            else:
                k = int(np.random.default_rng(seed_from(self.seed, 1, j)).choice(len(self.sizes), p=self.probs))
            self._choices.append(k)
            c = self._counts[-1].copy()
            c[k] += 1
            self._counts.append(c)
        return self._choices[g]

    def _permutation(self, k: int, epoch: int) -> torch.Tensor:
        key = (k, epoch)
        if key not in self._perm:
            if len(self._perm) > 8:
                self._perm.clear()
            gen = torch.Generator().manual_seed(seed_from(self.seed, 2, k, epoch))
            self._perm[key] = torch.randperm(self.sizes[k], generator=gen)
        return self._perm[key]

    def batch(self, g: int, process: int) -> list[tuple[int, int]]:
        """(source, index) of each sample of micro-batch ``g`` on process ``process``."""
        k = self.source(g)
        c = int(self._counts[g][k])  # earlier micro-batches from source k
        n = self.sizes[k]
        base = (c * self.num_processes + process) * self.batch_size
        out = []
        for j in range(self.batch_size):
            pos = base + j
            out.append((k, int(self._permutation(k, pos // n)[pos % n])))
        return out


class PlanSampler:
    def __init__(self, plan: BatchPlan, start: int, process: int):
        self.plan, self.start, self.process = plan, start, process

    def __iter__(self):
        g = self.start
        while True:
            yield self.plan.batch(g, self.process)
            g += 1


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    from betterdepth_cli.core.pipeline import resize

    if mode == "nearest":
        return torch.nn.functional.interpolate(x[None].float(), size=size, mode="nearest-exact")[0].to(x.dtype)
    return resize(x[None].float(), size)[0]


def transform_sample(
    maps: dict[str, torch.Tensor],
    *,
    processing_res: int,
    crop: Sequence[int],
    multiple: int,
    random_crop: bool,
    hflip: bool,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Resize, crop and flip the maps of one sample together.

    Args:
        maps: ``rgb`` (3,H,W), ``depth`` (1,H,W), ``valid`` (1,H,W) bool, ``cond`` (1,H,W),
            ``cond_valid`` (1,H,W) bool.
        processing_res: longest side after resizing (0 = keep); RGB and the
            conditioning bilinear, depth and masks nearest.
        crop: (h, w), multiples of ``multiple``; empty: the largest multiples of
            ``multiple`` that fit. Images smaller than the crop are padded (invalid).
        random_crop: random window position from ``generator`` (else centred).
        hflip: mirror with probability 1/2 (one draw from ``generator``).
    Returns:
        the transformed maps, same keys.
    """
    from betterdepth_cli.core.pipeline import processing_size

    H, W = maps["rgb"].shape[-2:]
    out = dict(maps)
    if processing_res:
        size = processing_size(H, W, processing_res)
        if size != (H, W):
            for key in ("rgb", "cond", "cond_raw"):
                if key in out:
                    out[key] = _resize(out[key], size, "bilinear")
            for key in ("depth", "valid", "cond_valid"):
                out[key] = _resize(out[key], size, "nearest")
            H, W = size
    if crop:
        ch, cw = int(crop[0]), int(crop[1])
        if ch % multiple or cw % multiple:
            raise UsageError(f"[data] crop {list(crop)} must be multiples of {multiple} for this model")
    else:
        ch, cw = max(multiple, H // multiple * multiple), max(multiple, W // multiple * multiple)
    ph, pw = max(0, ch - H), max(0, cw - W)
    if ph or pw:
        for key, x in out.items():
            out[key] = torch.nn.functional.pad(x.float(), (0, pw, 0, ph)).to(x.dtype)
        H, W = H + ph, W + pw
    if random_crop:
        top = int(torch.randint(0, H - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, W - cw + 1, (1,), generator=generator))
    else:
        top, left = (H - ch) // 2, (W - cw) // 2
    out = {k: v[..., top : top + ch, left : left + cw] for k, v in out.items()}
    if hflip and bool(torch.rand((1,), generator=generator) < 0.5):
        out = {k: torch.flip(v, dims=[-1]) for k, v in out.items()}
    return out


def build_dataset(spec: dict, cache_dir: Path, log: Callable[[str], None] | None = None):
    """One dataset from a data spec (see :mod:`training.config`)."""
    from training.datasets import FolderDataset, HypersimDataset, VirtualKITTI2Dataset

    spec = dict(spec)
    kind = spec.pop("type")
    spec.pop("weight", None)
    try:
        if kind == "synthetic":
            from training.synthetic import write_dataset
            from training.synthetic.writer import generator_digest

            n, size = int(spec["n"]), int(spec["size"])
            seed, skind = int(spec.get("seed", 0)), str(spec.get("kind", "mixed"))
            # the generator's version in the name: a changed generator renders afresh instead of reusing old scenes
            folder = cache_dir / "synthetic" / f"n{n}-s{size}-seed{seed}-{skind}-g{generator_digest()}"
            complete = folder / ".complete"
            if not complete.exists():
                if log:
                    log(f"rendering {n} synthetic {size}x{size} scenes (seed {seed}) into {folder}")
                write_dataset(folder, n, seed0=seed, size=size, kind=skind, workers=int(spec.get("workers", 1)))
                complete.write_text("ok\n")
            return FolderDataset(folder)
        root = spec.pop("root")
        archive = str(root).endswith(".tar") or str(spec.get("depth_root", "")).endswith(".tar")
        if kind == "folder":
            if archive:
                from training.split_datasets import TarFolderDataset

                return TarFolderDataset(root, **spec)
            return FolderDataset(root, **spec)
        if kind == "hypersim":
            if archive or "filenames" in spec or not any(Path(root).glob("ai_*/images")):
                from training.split_datasets import marigold_hypersim

                return marigold_hypersim(root, **spec)  # Marigold's preprocessed PNGs, folder or tar
            return HypersimDataset(root, **spec)
        if kind == "vkitti2":
            from training.split_datasets import marigold_vkitti, vkitti2_archive

            if "filenames" in spec:
                return marigold_vkitti(root, **spec)
            return vkitti2_archive(root, **spec) if archive else VirtualKITTI2Dataset(root, **spec)
    except TypeError as exc:
        raise UsageError(f"[data] {kind} dataset: {exc}") from None
    raise UsageError(f"[data] unknown dataset type {kind!r}")
