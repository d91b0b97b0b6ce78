"""What a run records about itself: when (UTC) and on which machine."""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["machine_info", "utc_now"]


def utc_now() -> str:
    """The time now in UTC, ISO 8601 to the second (``2026-12-04T20:29:40Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _torch_version() -> str | None:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        try:
            torch = importlib.import_module("torch")
        except ImportError:
            return None
    return str(torch.__version__)


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory and versions, for benchmark records."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_bytes": mem,
        "python": platform.python_version(),
        "torch_version": _torch_version(),
        "gigaseg_version": __version__,
    }
