"""gigaseg: exact, memory-bounded end-to-end deep learning on whole gigapixel pathology images.

The public API is re-exported here; see ``__all__``.
"""

from __future__ import annotations

from .errors import (
    ConfigError,
    GigasegError,
    InputError,
    PlanError,
    SlideError,
    UnsupportedModelError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "GigasegError",
    "ConfigError",
    "InputError",
    "PlanError",
    "SlideError",
    "UnsupportedModelError",
]
