"""Process memory as the kernel reports it (Linux ``/proc/self/status``), for benchmarks.

``peak_rss_bytes`` is VmHWM, the high-water mark of resident memory. ``MemorySampler`` samples
RssAnon (anonymous memory: heap and tensors, not the page cache that memory-mapped input lands
in) from a background thread and keeps the maximum. ``trim_heap`` hands the allocator's free
pages back to the system, so that RssAnon measured afterwards counts live memory, not what
earlier work freed but glibc kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from pathlib import Path
from typing import Any

__all__ = ["read_status_bytes", "peak_rss_bytes", "MemorySampler", "trim_heap"]

_STATUS = Path("/proc/self/status")


def read_status_bytes(key: str) -> int | None:
    """The ``key`` line of /proc/self/status (e.g. ``"RssAnon"``) in bytes, or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int | None:
    """VmHWM: the process's peak resident memory so far."""
    return read_status_bytes("VmHWM")


@functools.lru_cache(maxsize=1)
def glibc() -> Any:
    """The C library through ctypes when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def trim_heap() -> bool:
    """Return the heap's free pages to the system (glibc ``malloc_trim(0)``, a few ms).

    Memory that Python or numpy freed in the middle of the heap stays resident, and counted in
    RssAnon, until then. False (nothing done) where the C library is not glibc.
    """
    libc = glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


class MemorySampler:
    """Context manager sampling RssAnon every ``interval`` seconds; ``.peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = read_status_bytes("RssAnon") or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        value = read_status_bytes("RssAnon")
        if value is not None and value > self.peak:
            self.peak = value

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
