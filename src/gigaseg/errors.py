"""The exception hierarchy. Everything gigaseg raises on purpose derives from GigasegError."""

from __future__ import annotations

__all__ = [
    "GigasegError",
    "ConfigError",
    "InputError",
    "PlanError",
    "UnsupportedModelError",
    "SlideError",
    "StoreError",
    "CheckpointError",
    "TrainingError",
]


class GigasegError(Exception):
    """Base class of every error gigaseg raises on purpose."""


class ConfigError(GigasegError, ValueError):
    """A model configuration or an option has a value that cannot work."""


class InputError(GigasegError, ValueError):
    """An image, mask or array given to the engine does not meet its contract."""


class PlanError(GigasegError):
    """No tiling plan fits the memory budget."""


class UnsupportedModelError(GigasegError, TypeError):
    """A model has a layer that is not local (it needs whole-image statistics)."""


class SlideError(GigasegError, OSError):
    """A slide cannot be opened or read."""


class StoreError(GigasegError, OSError):
    """A region store is missing, malformed, or cannot hold what was asked."""


class CheckpointError(GigasegError, OSError):
    """A checkpoint cannot be written, read, or is not a gigaseg checkpoint of this version."""


class TrainingError(GigasegError, ArithmeticError):
    """Training cannot go on (a NaN or infinite loss or gradient)."""
