"""What a batch job did, and the exit status that says it."""

from __future__ import annotations

from dataclasses import dataclass, field

from betterdepth_cli.core.exit_codes import EXIT_DATAERR, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL

@dataclass
class Summary:
    total: int = 0
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    halted_by: str | None = None  # the error that stopped the batch (without continue_on_error)
    failures: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error_code: int | None = None  # the exit status of the last failure, when the job knows it

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        state = "interrupted" if self.interrupted else "done"
        return (
            f"{state}: {self.processed} processed, {self.skipped} skipped, {self.failed} failed "
            f"in {self.seconds:.1f} s ({self.images_per_second:.2f} images/s)"
        )


def exit_code(summary: Summary, continue_on_error: bool) -> int:
    """0 all done; 130 interrupted; 65 (or the status of the last error, when the job recorded
    one) every input failed (none processed now or skipped as done before) or the first bad input
    halted the batch; 3 some inputs failed under ``continue_on_error``."""
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.failed == 0:
        return EXIT_OK
    if summary.processed + summary.skipped == 0 or not continue_on_error:
        return summary.error_code or EXIT_DATAERR
    return EXIT_PARTIAL

