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

from .engine import Plan, plan, tiled_backward, tiled_predict  # noqa: E402
from .losses import bce_dice_loss, bce_loss, dice_loss  # noqa: E402
from .model import PRESETS, UNet, UNetConfig, count_parameters, preset  # noqa: E402

__all__ = [
    "__version__",
    "UNet",
    "UNetConfig",
    "PRESETS",
    "preset",
    "count_parameters",
    "bce_loss",
    "dice_loss",
    "bce_dice_loss",
    "Plan",
    "plan",
    "tiled_backward",
    "tiled_predict",
    "GigasegError",
    "ConfigError",
    "InputError",
    "PlanError",
    "SlideError",
    "UnsupportedModelError",
]
