"""Reference loss definitions on whole tensors.

These are the definitions the tiled engine reproduces exactly. All are means over every
pixel of the image (batch size 1 in practice):

- ``bce``: mean binary cross-entropy with logits.
- ``dice``: ``1 - (2 sum(p*y) + 1) / (sum(p) + sum(y) + 1)`` with ``p = sigmoid(logits)``.
- ``bce+dice``: their sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .options import LOSSES, check_choice

__all__ = ["LOSSES", "loss_fn", "bce_loss", "dice_loss", "bce_dice_loss", "check_loss_name"]

#: Smoothing term of the soft Dice loss (added to numerator and denominator).
DICE_SMOOTH = 1.0


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over all pixels."""
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="mean")


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Global soft Dice loss ``1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1)``."""
    p = torch.sigmoid(logits)
    y = target.to(logits.dtype)
    return 1 - (2 * (p * y).sum() + DICE_SMOOTH) / (p.sum() + y.sum() + DICE_SMOOTH)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``bce + dice``."""
    return bce_loss(logits, target) + dice_loss(logits, target)


# The names are gigaseg.options.LOSSES (re-exported here); a test keeps the two equal.
_FUNCTIONS = {"bce": bce_loss, "dice": dice_loss, "bce+dice": bce_dice_loss}


def check_loss_name(name: str) -> str:
    """Return ``name`` if it is one of ``LOSSES``, else raise ConfigError naming the valid ones."""
    return check_choice("loss", name, LOSSES)


def loss_fn(name: str):
    """The reference loss function called ``name`` (one of ``LOSSES``)."""
    return _FUNCTIONS[check_loss_name(name)]
