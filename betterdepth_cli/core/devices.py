"""Devices and precisions by the names the CLI and the library take (no torch needed to check a name)."""

from __future__ import annotations

import re
from typing import Any

from betterdepth_cli.core.types import UsageError

DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def parse_device(text: str | None) -> str:
    """Check the syntax of ``--device`` (no torch needed): returns it lower-cased.

    >>> parse_device("CUDA:1")
    'cuda:1'
    """
    value = (text or "auto").strip().lower()
    match = _DEVICE_RE.match(value)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise UsageError(f"`--device` must be {DEVICE_HELP}, got {text!r}")
    return value


def resolve_device(text: str | None) -> str:
    """``--device`` -> a concrete torch device string that exists on this machine.

    ``auto`` picks ``cuda`` when available, then ``mps``, else ``cpu``. Asking for
    a device that is not there is a usage error naming what is available.
    """
    import torch

    value = parse_device(text)
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if has_mps else "cpu"
    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"`--device {value}`: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        n = torch.cuda.device_count()
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= n:
            raise UsageError(f"`--device {value}`: only {n} CUDA device(s) here (cuda:0..cuda:{n - 1})")
        return value
    if value == "mps" and not has_mps:
        raise UsageError("`--device mps`: Apple MPS is not available here; use --device cpu")
    return value


def check_dtype_for_device(dtype: str, device: str) -> None:
    """fp16 on the CPU is refused (many kernels are missing or very slow there)."""
    if dtype == "fp16" and device == "cpu":
        raise UsageError("`--dtype fp16` needs a GPU (cuda or mps); on the CPU use fp32 (or bf16)")


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}


def parse_dtype(text: str | None) -> str:
    """``--dtype`` -> one of ``fp32``, ``fp16``, ``bf16`` (aliases such as ``float16`` accepted)."""
    value = (text or "fp32").strip().lower()
    value = DTYPE_ALIASES.get(value, value)
    if value not in DTYPES:
        raise UsageError(f"`--dtype` must be fp32, fp16 or bf16, got {text!r}")
    return value


def torch_dtype(name: Any):
    """``fp32|fp16|bf16`` (or an alias, or a torch dtype) -> the torch dtype."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    return getattr(torch, DTYPES[parse_dtype(name)])
