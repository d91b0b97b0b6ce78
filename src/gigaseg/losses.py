"""Reference loss definitions on whole tensors.

These are the definitions the tiled engine reproduces exactly. The target holds 0
(background), 1 (tissue) and 255 (``IGNORE``): pixels of 255 are left out of every loss, which
runs over the N valid pixels only (batch size 1 in practice):

- ``bce``: mean binary cross-entropy with logits over the valid pixels (0 when N = 0).
- ``dice``: ``1 - (2 sum(p*y) + 1) / (sum(p) + sum(y) + 1)`` with ``p = sigmoid(logits)``, the
  sums over the valid pixels (0 when N = 0).
- ``bce+dice``: their sum.

An ignored pixel's logit gets a zero gradient. A target without 255 takes the same operations
as before ignore labels existed, to the bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .options import LOSSES, check_choice

__all__ = ["LOSSES", "IGNORE", "loss_fn", "bce_loss", "dice_loss", "bce_dice_loss", "check_loss_name"]

#: Smoothing term of the soft Dice loss (added to numerator and denominator).
DICE_SMOOTH = 1.0
#: The target value of pixels left out of the loss.
IGNORE = 255


def _valid(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the target as ``logits``' dtype, 0 where ignored; the mask of valid pixels, or None when
    no pixel is ignored)."""
    if not bool((target == IGNORE).any()):
        return target.to(logits.dtype), None
    keep = target != IGNORE
    return torch.where(keep, target, 0).to(logits.dtype), keep


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over the pixels whose target is not 255."""
    y, keep = _valid(logits, target)
    if keep is None:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="mean")
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return torch.where(keep, bce, 0.0).sum() / max(1, int(keep.sum()))


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Global soft Dice loss ``1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1)``, the sums over the
    pixels whose target is not 255."""
    p = torch.sigmoid(logits)
    y, keep = _valid(logits, target)
    if keep is not None:
        p = torch.where(keep, p, 0.0)
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
