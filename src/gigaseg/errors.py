"""The exception hierarchy. Everything gigaseg raises on purpose derives from GigasegError.

Messages say what was expected, what came and how to fix it. They name the Python parameter
that fixes a problem between backquotes, alone or with a value (`out_dir`,
`memory_budget='600MiB'`), never a command-line flag: the ``gigaseg`` command shows the same
message with its own option in that place (``--out``, ``--memory-budget 600MiB``); see
``gigaseg.cli.show_flags``.
"""

from __future__ import annotations

__all__ = [
    "GigasegError",
    "ConfigError",
    "InputError",
    "OutputError",
    "MissingDependencyError",
    "PlanError",
    "UnsupportedModelError",
    "SlideError",
    "StoreError",
    "CheckpointError",
    "CheckpointWriteError",
    "TrainingError",
    "DistributedError",
]


class GigasegError(Exception):
    """Base class of every error gigaseg raises on purpose."""


class ConfigError(GigasegError, ValueError):
    """A model configuration or an option has a value that cannot work."""


class InputError(GigasegError, ValueError):
    """An image, mask or array given to the engine does not meet its contract."""


class OutputError(InputError, OSError):
    """An output folder or file cannot be written: no permission, a read-only file system,
    a full disk or quota (``EACCES``, ``EROFS``, ``ENOSPC``, ``EDQUOT``, ...).

    Nothing is wrong with the data: free disk space, fix the permissions or write elsewhere.
    It subclasses InputError for backward compatibility: gigaseg 0.1 raised InputError for
    these, and code that catches InputError keeps catching them. It is also an OSError, the
    failure underneath: ``errno``, ``strerror`` and ``filename`` are those of the OSError it
    was raised from (``cause``), so ``exc.errno == errno.ENOSPC`` works.
    """

    def __init__(self, message: str, *, cause: OSError | None = None):
        super().__init__(message)
        if cause is not None:
            self.errno, self.strerror, self.filename = cause.errno, cause.strerror, cause.filename

    def __str__(self) -> str:  # the message, not OSError's "[Errno N] strerror"
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(GigasegError, ImportError):
    """An optional package that a feature needs is not installed; the message gives the
    ``pip install 'gigaseg[EXTRA]'`` command that installs it.

    An ImportError too, so code that falls back when an import fails keeps doing so.
    """


class PlanError(GigasegError):
    """No tiling plan fits the memory budget."""


class UnsupportedModelError(GigasegError, TypeError):
    """A model has a layer that is not local (it needs whole-image statistics)."""


class SlideError(GigasegError, OSError):
    """A slide cannot be opened or read."""


class StoreError(GigasegError, OSError):
    """A region store is missing, malformed, or cannot hold what was asked."""


class CheckpointError(GigasegError, OSError):
    """A checkpoint cannot be read, or is not a gigaseg checkpoint of this version.

    A checkpoint that cannot be written raises CheckpointWriteError.
    """


class CheckpointWriteError(OutputError, CheckpointError):
    """A checkpoint cannot be written (full disk, no permission): an OutputError, and a
    CheckpointError as in gigaseg 0.1, so either ``except`` catches it."""


class TrainingError(GigasegError, ArithmeticError):
    """Training cannot go on (a NaN or infinite loss or gradient)."""


class DistributedError(GigasegError, RuntimeError):
    """Under ``torch.distributed``, another rank failed, stopped answering (it died, was stopped
    or hangs), was interrupted, or the ranks were not given the same work.

    A rank that fails on its own raises its own error, which says why; the others raise this.
    ``rank`` is the rank that failed first when it is known (else None).
    """

    def __init__(self, message: str, *, rank: int | None = None):
        super().__init__(message)
        self.rank = rank
