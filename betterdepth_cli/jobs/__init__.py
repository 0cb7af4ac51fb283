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

from betterdepth_cli.core.exit_codes import (
    EXIT_CANTCREAT,
    EXIT_DATAERR,
    EXIT_INTERRUPTED,
    EXIT_NOINPUT,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from betterdepth_cli.jobs.claims import CLAIMS_DIR
from betterdepth_cli.jobs.engine import Runner, run
from betterdepth_cli.jobs.plan import (
    RUN_CONFIG_NAME,
    Group,
    Item,
    Plan,
    check_output_dir,
    display_path,
    plan_run,
    preview_video_path,
    remove_stale_temps,
)
from betterdepth_cli.jobs.settings import DEFAULT_FORMATS, RefineSettings, read_card
from betterdepth_cli.jobs.summary import Summary, exit_code

__all__ = [
    "CLAIMS_DIR", "DEFAULT_FORMATS", "EXIT_CANTCREAT", "EXIT_DATAERR", "EXIT_INTERRUPTED", "EXIT_NOINPUT", "EXIT_OK",
    "EXIT_PARTIAL", "EXIT_TERMINATED", "EXIT_UNAVAILABLE", "EXIT_USAGE", "RUN_CONFIG_NAME", "Group", "Item", "Plan",
    "RefineSettings", "Runner", "Summary", "check_output_dir", "display_path", "exit_code", "plan_run",
    "preview_video_path", "read_card", "remove_stale_temps", "run",
]
