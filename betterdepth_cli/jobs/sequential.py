"""One job after another, for batch work without a model (``export-ply``): the same resume,
failure policy and summary as the refine engine, without its threads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from betterdepth_cli.core.types import BetterDepthError
from betterdepth_cli.jobs.summary import Summary

Job = TypeVar("Job")


def run_each(
    jobs: Sequence[Job],
    work: Callable[[Job], Any],
    *,
    label: Callable[[Job], str] = str,
    skip: Callable[[Job], bool] | None = None,
    continue_on_error: bool = False,
    on_item: Callable[[str, Job, Any], None] | None = None,
) -> Summary:
    """``work(job)`` for every job not ``skip``-ped (resume).

    A :class:`BetterDepthError` stops the run (raised) unless ``continue_on_error``; then it is
    counted with its exit status and the run goes on. ``on_item(status, job, detail)`` is called
    with ``"done"`` (detail: what ``work`` returned), ``"skipped"`` or ``"failed"`` (the message).
    """
    on_item = on_item or (lambda status, job, detail: None)
    summary = Summary(total=len(jobs))
    t0 = time.perf_counter()
    try:
        for job in jobs:
            if skip is not None and skip(job):
                summary.skipped += 1
                on_item("skipped", job, None)
                continue
            try:
                result = work(job)
            except BetterDepthError as exc:
                if not continue_on_error:
                    raise
                summary.failed += 1
                summary.failures.append((label(job), str(exc)))
                summary.error_code = exc.exit_code
                on_item("failed", job, str(exc))
                continue
            summary.processed += 1
            on_item("done", job, result)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        summary.seconds = time.perf_counter() - t0
    return summary
