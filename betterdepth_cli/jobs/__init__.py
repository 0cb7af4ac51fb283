"""Batch jobs (no Typer, no rich): ``refine`` runs on :mod:`.engine` (plan, threaded
engine, writers); ``export-ply`` on :func:`.sequential.run_each`; both report a
:class:`.summary.Summary` whose exit status is :func:`.summary.exit_code`.

    plan.py        inputs -> output files; resume, stale and foreign outputs
    settings.py    a refine job's resolved settings; a model card read without loading weights
    engine.py      reader / compute / writer threads
    writers.py     per-format files, sidecars, shots with one range
    claims.py      several runs sharing one output folder
    sequential.py  one job after another, for jobs without a model
    summary.py     counts and the exit status (the codes: core/exit_codes.py)
"""

import importlib

#: Public names and the module that holds each (loaded on first use: ``betterdepth --help`` imports
#: ``jobs.ranks`` and must not pay for numpy).
_WHERE = {
    **dict.fromkeys(("EXIT_CANTCREAT", "EXIT_DATAERR", "EXIT_INTERRUPTED", "EXIT_NOINPUT", "EXIT_OK", "EXIT_PARTIAL",
                     "EXIT_TERMINATED", "EXIT_UNAVAILABLE", "EXIT_USAGE"), "betterdepth_cli.core.exit_codes"),
    "CLAIMS_DIR": "betterdepth_cli.jobs.claims",
    "Runner": "betterdepth_cli.jobs.engine",
    "run": "betterdepth_cli.jobs.engine",
    **dict.fromkeys(("RUN_CONFIG_NAME", "Group", "Item", "Plan", "check_output_dir", "display_path", "plan_run",
                     "preview_video_path", "remove_stale_temps"), "betterdepth_cli.jobs.plan"),
    **dict.fromkeys(("DEFAULT_FORMATS", "RefineSettings"), "betterdepth_cli.jobs.settings"),
    "read_card": "betterdepth_cli.core.model_names",
    **dict.fromkeys(("Summary", "exit_code"), "betterdepth_cli.jobs.summary"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'betterdepth_cli.jobs' has no attribute {name!r}")
