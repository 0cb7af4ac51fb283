"""The rank of a multi-process launch (``torchrun --nproc_per_node N``, ``accelerate launch``): both set
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. A job takes its rank's share of the inputs and runs on its
rank's device; the CLI (``cli/ranks.py``) merges the ranks' summaries and exit codes at the end."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world: int
    local_rank: int

    @property
    def shard(self) -> tuple[int, int]:
        """This rank's shard, 1-based as ``--shard`` counts."""
        return self.rank + 1, self.world


def rank_info(environ: dict | None = None) -> RankInfo | None:
    """The launcher's rank, or ``None`` outside a multi-process launch."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return None
    if world <= 1 or not 0 <= rank < world:
        return None
    return RankInfo(rank, world, local)


def take_share(sources: list, own: tuple[int, int] | None, info: RankInfo | None) -> list:
    """A job's ``--shard`` of ``sources``, then the rank's share of that (a farm job's shard is split again
    among its ranks)."""
    from betterdepth_cli.io.sources import shard

    if own is not None:
        sources = shard(sources, *own)
    if info is not None:
        sources = shard(sources, *info.shard)
    return sources


def rank_device(device: str, requested: str, info: RankInfo | None) -> str:
    """``cuda:LOCAL_RANK`` for a rank whose ``--device`` (``requested``) is CUDA without an index."""
    if info is None or not device.startswith("cuda") or ":" in requested:
        return device
    import torch

    return f"cuda:{info.local_rank % max(1, torch.cuda.device_count())}"
