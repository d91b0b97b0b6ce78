"""SIGTERM handled like Ctrl-C, so that ``finally`` blocks clean up (NOTE [Stop signals])."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

__all__ = ["sigterm_as_interrupt", "sigterm_interrupts"]

P = ParamSpec("P")
R = TypeVar("R")

# NOTE [Stop signals]
# SIGTERM is what ``kill``, systemd, Docker and batch schedulers (SLURM, Kubernetes) send before
# they kill a job. Python's default action for it ends the process at once: no ``finally`` runs,
# so a prediction's temporary folders (a raw grid of gigabytes) stay behind. Within
# ``sigterm_as_interrupt`` it raises KeyboardInterrupt instead, as Ctrl-C does: the work stops
# where it is, temporary files are removed on the way out, and the command exits with status 130.
# Only the main thread can install a handler; elsewhere the block runs unchanged. Training has its
# own copy (gigaseg.training), which also defers a signal until a step is complete.


def _raise_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[bool]:
    """Within the block SIGTERM raises KeyboardInterrupt; yields whether the handler is installed."""
    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or threading.current_thread() is not threading.main_thread():
        yield False
        return
    try:
        previous = signal.signal(sigterm, _raise_interrupt)
    except (ValueError, OSError):
        yield False
        return
    try:
        yield True
    finally:
        signal.signal(sigterm, previous if previous is not None else signal.SIG_DFL)


def sigterm_interrupts(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` run within :func:`sigterm_as_interrupt` (NOTE [Stop signals])."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with sigterm_as_interrupt():
            return func(*args, **kwargs)

    return wrapper
