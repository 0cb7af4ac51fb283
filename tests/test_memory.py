"""Allocator tuning: applied once on glibc Linux, opt-out by environment."""

import subprocess
import sys

import pytest

CODE = "from betterdepth_cli.core.memory import keep_freed_memory as k; print(k(), k())"


def run(env_value: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "BETTERDEPTH_MALLOC"}
    if env_value is not None:
        env["BETTERDEPTH_MALLOC"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_applied_once_on_glibc_and_skipped_on_request():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert run(None) == "True True"  # the second call reports the first one's result
    assert run("default") == "False False"
