"""The `betterdepth` command line: a Typer app with one thin module per command.

Command modules import only Typer and the standard library at import time, so
`betterdepth --help` stays instant; torch and friends load inside the commands.
Library errors (``BetterDepthError``) become one line on stderr and the exit
code they carry; Ctrl-C exits 130.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from typing import Callable, TypeVar

import typer

F = TypeVar("F", bound=Callable)

app = typer.Typer(
    name="betterdepth",
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from betterdepth_cli import __version__

        print(f"betterdepth {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Batch monocular depth refinement with BetterDepth (diffusion detail over any depth model).

    Exit codes: 0 done; 3 some inputs failed (--continue-on-error); 64 usage error;
    65 bad input data; 66 no input; 69 model unavailable; 70 model failed; 73 cannot write output;
    130 interrupted (Ctrl-C); 143 terminated (SIGTERM). A rerun of the same command resumes.
    """


def error_line(message: str) -> None:
    """Print one error line on stderr."""
    print(f"betterdepth: error: {message}", file=sys.stderr, flush=True)


def handle_errors(fn: F) -> F:
    """Map library exceptions to a message and an exit code (see README: exit codes)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from betterdepth_cli.core.types import BetterDepthError

        try:
            return fn(*args, **kwargs)
        except BetterDepthError as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def stopping_cleanly(fn: Callable, *args, **kwargs) -> None:
    """``fn(*args, **kwargs)`` with SIGTERM (farm preemption) a clean stop like Ctrl-C: one line
    ("terminated" or "interrupted") and exit 143 or 130 (``eval``, ``export-ply``; ``refine`` adds its
    summary and how to resume)."""
    from betterdepth_cli.core.exit_codes import EXIT_INTERRUPTED, EXIT_TERMINATED

    terminated: list = []
    try:
        with on_sigterm(terminated):
            fn(*args, **kwargs)
    except KeyboardInterrupt:
        error_line("terminated" if terminated else "interrupted")
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None


@contextlib.contextmanager
def on_sigterm(flag: list):
    """Turn SIGTERM (farm preemption) into the same clean stop as Ctrl-C while the batch runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        flag.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _register() -> None:
    import importlib

    for name in ("refine", "train", "synth", "eval", "export_ply", "info"):
        importlib.import_module(f"betterdepth_cli.cli.{name}")


def _metavar(param) -> str | None:
    """TEXT / N / X / PATH for an option's value, NAME... for an argument; None for flags and choices."""
    import pathlib
    import typing

    desc = getattr(param, "type_descriptor", None)
    if getattr(param, "is_flag", False) or desc is None or desc.is_choice:
        return None
    if type(param).__name__.endswith("Argument"):
        name = param.name.upper()
        param.display_type_rich = lambda ctx: None  # the name says it: no "<list[str]>" after it
        usage = name if param.required else f"[{name}]"  # Typer writes a required one as {NAME}
        param._usage_display_name = lambda: usage + ("..." if param.nargs != 1 else "")
        return name
    ann = desc.annotation
    inner = (typing.get_args(ann) or (ann,))[0] if desc.is_list else ann
    name = {int: "N", float: "X", pathlib.Path: "PATH", bool: None}.get(inner, "TEXT")
    return None if name is None else name + ("..." if desc.is_list else "")


def build_command():
    """The command behind ``app`` with plain help: Click's formatter (no boxes that cut text,
    ``rich_markup_mode=None``) and TEXT / N / PATH placeholders instead of Typer 0.29's
    ``<str>``, ``<list[str]>``, ``<bool>``."""
    cmd = typer.main.get_command(app)
    for command in [*getattr(cmd, "commands", {}).values(), cmd]:
        for param in command.params:
            if param.metavar is None:
                param.metavar = _metavar(param)
    return cmd


def main() -> None:
    """Console entry point: Typer/Click usage errors (exit 2) become sysexits EX_USAGE (64)."""
    try:
        build_command()(prog_name="betterdepth")
    except SystemExit as exc:
        if exc.code == 2:
            raise SystemExit(64) from None
        raise


_register()


def script_main(main, argv: list[str] | None = None) -> None:
    """Run an argparse ``main(argv)`` of a ``python -m`` script as the commands run: errors are one
    line with ``betterdepth``'s exit codes (argparse's usage errors, its exit 2, become 64)."""
    try:
        handle_errors(main)(argv)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except SystemExit as exc:
        raise SystemExit(64 if exc.code == 2 else exc.code) from None
