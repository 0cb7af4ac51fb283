"""Rank-aware runs: ``torchrun --nproc_per_node N`` or ``accelerate launch`` start N copies of a command.

Both launchers set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``).
With ``WORLD_SIZE`` > 1 a command decorated with :func:`ranked`:

- takes its share of the inputs (rank r of n is shard r+1/n, after any ``--shard i/n`` of its own:
  a farm job's shard is split again among its ranks), with no extra flag;
- runs on its own device: ``cuda:LOCAL_RANK`` when CUDA is used and ``--device`` names no index;
- meets the other ranks at the end (a ``gloo`` process group, CPU only, so it works with and
  without GPUs): rank 0 prints one merged summary, and every rank exits with the one merged code,
  so the launcher and the farm see one result.

Without those variables (or with ``WORLD_SIZE`` 1) nothing changes.
"""

from __future__ import annotations

import datetime
import functools
import sys
from typing import Any, Callable

import typer

from betterdepth_cli.jobs.ranks import RankInfo, rank_info  # noqa: F401 (the launcher's rank, for commands)

#: Exit codes of a rank that finished its work normally (all done, some inputs failed, bad input).
_NORMAL = (0, 3, 65)
#: How long ranks wait for each other at the end (a slow rank's last plate can take minutes).
MEET_TIMEOUT = datetime.timedelta(hours=12)


# --------------------------------------------------------------------------- the merged end

_recorded: dict[str, Any] = {}
_deferred: dict[str, Any] = {}


def defer(payload: Any, finish: Callable[[list], None]) -> None:
    """Hand this rank's result to rank 0: once every rank has ended normally, rank 0 calls
    ``finish(payloads)`` with every rank's ``payload`` in rank order (e.g. to write one merged file)."""
    _deferred.update(payload=payload, finish=finish)


def record(summary, continue_on_error: bool) -> None:
    """What this rank did (a ``jobs.Summary``), for the merged summary."""
    _recorded.update(total=summary.total, processed=summary.processed, skipped=summary.skipped,
                     failed=summary.failed, seconds=summary.seconds, interrupted=summary.interrupted,
                     continue_on_error=continue_on_error)


def merge(reports: list[dict]) -> tuple[dict, int]:
    """The ranks' reports ({"code", "summary"}) -> (merged summary counts, merged exit code).

    A rank that stopped abnormally (usage, model, output error, interruption) decides the code (the
    lowest such rank); otherwise the code is the batch's rule over the summed counts, and never 0
    when a rank reported a failure it could not count (a bad input found before its run).
    """
    from betterdepth_cli.jobs import Summary, exit_code

    total = Summary()
    keep_going = False
    for r in reports:
        s = r.get("summary") or {}
        total.total += s.get("total", 0)
        total.processed += s.get("processed", 0)
        total.skipped += s.get("skipped", 0)
        total.failed += s.get("failed", 0)
        total.seconds = max(total.seconds, s.get("seconds", 0.0))
        keep_going = keep_going or bool(s.get("continue_on_error"))
    codes = [int(r["code"]) for r in reports]
    abnormal = [c for c in codes if c not in _NORMAL]
    if abnormal:
        code = abnormal[0]
    elif all(c == 0 for c in codes):
        code = 0
    else:
        code = exit_code(total, keep_going) or max(codes)
    return {"total": total.total, "processed": total.processed, "skipped": total.skipped,
            "failed": total.failed, "seconds": total.seconds, "line": total.line()}, code


def _run_one(fn: Callable, info: RankInfo, args, kwargs) -> int:
    from betterdepth_cli.cli.app import error_line
    from betterdepth_cli.core.types import BetterDepthError

    try:
        fn(*args, **kwargs)
        return 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except BetterDepthError as exc:
        error_line(f"rank {info.rank}: {exc}")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        error_line(f"rank {info.rank}: interrupted")
        return 130


def ranked(fn: Callable) -> Callable:
    """Run a command once per rank under a multi-process launcher (module docstring); as is otherwise."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        info = rank_info()
        if info is None:
            return fn(*args, **kwargs)
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=info.rank, world_size=info.world, timeout=MEET_TIMEOUT)
        _recorded.clear()
        _deferred.clear()
        code = _run_one(fn, info, args, kwargs)
        reports: list[Any] = [None] * info.world
        dist.all_gather_object(reports, {"rank": info.rank, "code": code, "summary": dict(_recorded),
                                         "payload": _deferred.get("payload")})
        merged, merged_code = merge(reports)
        if merged_code == 0 and "finish" in _deferred:
            if info.rank == 0:
                merged_code = _run_one(_deferred["finish"], info, ([r["payload"] for r in reports],), {})
            shared = [merged_code]  # the merged end's code (eval: 3 when samples were skipped), on every rank
            dist.broadcast_object_list(shared, src=0)
            merged_code = int(shared[0])
        if info.rank == 0 and _recorded:
            print(f"all {info.world} ranks: {merged['line']}", file=sys.stderr, flush=True)
            for r in reports:
                s = r["summary"] or {}
                print(f"  rank {r['rank']}: exit {r['code']}, {s.get('processed', 0)} processed, "
                      f"{s.get('skipped', 0)} skipped, {s.get('failed', 0)} failed", file=sys.stderr, flush=True)
        dist.barrier()
        dist.destroy_process_group()
        raise typer.Exit(merged_code)

    return wrapper
