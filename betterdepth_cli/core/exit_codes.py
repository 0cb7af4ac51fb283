"""Every exit status the tool returns, in one place (sysexits style; the README's table).

The error classes in :mod:`betterdepth_cli.core.types` carry theirs; batch jobs map their
summary to one with :func:`betterdepth_cli.jobs.summary.exit_code`.
"""

EXIT_OK = 0
EXIT_ERROR = 1  # an error without a more specific status
EXIT_PARTIAL = 3  # some inputs failed under --continue-on-error; the others were written
EXIT_USAGE = 64  # a bad option or argument
EXIT_DATAERR = 65  # bad input data (every input failed, or the first one halted the batch)
EXIT_NOINPUT = 66  # an input that does not exist or is unreadable
EXIT_UNAVAILABLE = 69  # a model that cannot be found or loaded
EXIT_SOFTWARE = 70  # a model that crashed while running
EXIT_CANTCREAT = 73  # an output that cannot be written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # 128 + SIGTERM: what a farm scheduler sees after preempting a job
