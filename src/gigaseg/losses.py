"""Reference loss definitions on whole tensors.

These are the definitions the tiled engine reproduces exactly. Pixels whose target is 255
(``IGNORE``) are left out of every loss, which runs over the N valid pixels only (batch size 1
in practice). An ignored pixel's logits get a zero gradient.

One output channel (logits (N, 1, H, W), ``LOSSES``; the target holds 0 background, 1 tissue
and 255):

- ``bce``: mean binary cross-entropy with logits over the valid pixels (0 when N = 0).
- ``dice``: ``1 - (2 sum(p*y) + 1) / (sum(p) + sum(y) + 1)`` with ``p = sigmoid(logits)``, the
  sums over the valid pixels (0 when N = 0).
- ``bce+dice``: their sum.

A target without 255 takes the same operations as before ignore labels existed, to the bit.

C >= 2 output channels (logits (N, C, H, W), ``CLASS_LOSSES``; the target holds class indices
0..C-1 and 255, as (N, H, W) or (N, 1, H, W)):

- ``ce``: mean softmax cross-entropy over the valid pixels (0 when N = 0).
- ``dice``: the multi-class soft Dice, the mean over the classes c of
  ``1 - (2 I_c + 1) / (P_c + Y_c + 1)`` with ``I_c = sum(p_c y_c)``, ``P_c = sum(p_c)``,
  ``Y_c = sum(y_c)`` over the valid pixels, ``p = softmax(logits)`` over the channels and
  ``y_c`` the pixels of class c (1, else 0). A class absent from the target and the prediction
  scores 0 loss; with N = 0 every class does.
- ``ce+dice``: their sum.

``dice_loss`` takes either kind and tells them apart by the logits' channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError, InputError
from .options import CLASS_LOSSES, LOSSES, check_choice

__all__ = ["LOSSES", "CLASS_LOSSES", "IGNORE", "loss_fn", "bce_loss", "dice_loss", "bce_dice_loss", "ce_loss",
           "class_dice_loss", "ce_dice_loss", "check_loss_name"]

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


def _classes(logits: torch.Tensor) -> int:
    """The output channels C of (N, C, H, W) ``logits`` (1 for logits of another rank)."""
    return int(logits.shape[1]) if logits.ndim == 4 else 1


def _binary_only(name: str, logits: torch.Tensor) -> None:
    if _classes(logits) > 1:
        check_loss_name(name, _classes(logits))  # raises, naming the losses of several classes


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over the pixels whose target is not 255."""
    _binary_only("bce", logits)
    y, keep = _valid(logits, target)
    if keep is None:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="mean")
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return torch.where(keep, bce, 0.0).sum() / max(1, int(keep.sum()))


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Global soft Dice loss ``1 - (2 sum(p y) + 1) / (sum(p) + sum(y) + 1)``, the sums over the
    pixels whose target is not 255; for (N, C, H, W) logits with C >= 2, ``class_dice_loss``."""
    if _classes(logits) > 1:
        return class_dice_loss(logits, target)
    p = torch.sigmoid(logits)
    y, keep = _valid(logits, target)
    if keep is not None:
        p = torch.where(keep, p, 0.0)
    return 1 - (2 * (p * y).sum() + DICE_SMOOTH) / (p.sum() + y.sum() + DICE_SMOOTH)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``bce + dice``."""
    _binary_only("bce+dice", logits)
    return bce_loss(logits, target) + dice_loss(logits, target)


def _class_target(logits: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """The (N, H, W) int64 class indices of ``target`` for (N, C, H, W) ``logits`` with C >= 2,
    checked: values 0..C-1 and 255 (IGNORE)."""
    c = _classes(logits)
    if c < 2:
        check_loss_name(name, c)  # raises, naming the losses of one channel
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    n, _, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise InputError(f"the target of {n} x {c} x {h} x {w} logits must be ({n}, {h}, {w}) or ({n}, 1, {h}, {w}) "
                         f"class indices, got shape {tuple(target.shape)}")
    if target.is_floating_point() and bool((target != target.round()).any()):
        raise InputError("the target must hold class indices (whole numbers 0..C-1 and 255), not fractions")
    t = target.long()
    bad = ((t < 0) | (t >= c)) & (t != IGNORE)
    if bool(bad.any()):
        i, y, x = (int(v) for v in bad.nonzero()[0])
        raise InputError(f"target value {int(t[i, y, x])} at (x={x}, y={y}) of image {i} is not a class index "
                         f"0..{c - 1} or {IGNORE} (ignore): the logits have {c} channels")
    return t


def ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy of (N, C, H, W) ``logits`` (C >= 2) over the pixels whose
    target (class indices 0..C-1) is not 255; 0 when every pixel is."""
    t = _class_target(logits, target, "ce")
    n_valid = int((t != IGNORE).sum())
    return F.cross_entropy(logits, t, ignore_index=IGNORE, reduction="sum") / max(1, n_valid)


def class_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-class soft Dice of (N, C, H, W) ``logits`` (C >= 2): the mean over the classes of
    ``1 - (2 I_c + 1) / (P_c + Y_c + 1)``, the sums over the pixels whose target is not 255
    (see the module docstring)."""
    t = _class_target(logits, target, "dice")
    c = _classes(logits)
    keep = (t != IGNORE).unsqueeze(1)
    y = F.one_hot(torch.where(keep[:, 0], t, 0), c).movedim(-1, 1).to(logits.dtype) * keep
    p = torch.where(keep, torch.softmax(logits, dim=1), 0.0)
    dims = (0, 2, 3)
    inter, p_sum, y_sum = (p * y).sum(dims), p.sum(dims), y.sum(dims)
    return (1 - (2 * inter + DICE_SMOOTH) / (p_sum + y_sum + DICE_SMOOTH)).mean()


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``ce + dice`` for C >= 2 output channels."""
    return ce_loss(logits, target) + class_dice_loss(logits, target)


# The names are gigaseg.options.LOSSES and CLASS_LOSSES (re-exported here); a test keeps them equal.
_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "bce": bce_loss, "dice": dice_loss, "bce+dice": bce_dice_loss, "ce": ce_loss, "ce+dice": ce_dice_loss}


def check_loss_name(name: str, classes: int | None = None) -> str:
    """Return ``name`` if it is a loss for a model of ``classes`` output channels (``LOSSES`` for
    1, ``CLASS_LOSSES`` for more; either when None), else raise ConfigError naming the valid ones
    (a loss of the other kind: the ones to use instead)."""
    if classes is None:
        return check_choice("loss", name, dict.fromkeys((*LOSSES, *CLASS_LOSSES)))
    if classes == 1 and name in CLASS_LOSSES and name not in LOSSES:
        raise ConfigError(
            f"loss {name!r} is the softmax loss of several classes, but the model has one output channel "
            f"(UNetConfig.out_channels = 1): use `loss='{name.replace('ce', 'bce')}'` (sigmoid), or a model "
            "with `out_channels` >= 2")
    if classes > 1 and name in LOSSES and name not in CLASS_LOSSES:
        raise ConfigError(
            f"loss {name!r} is for one output channel, but the model has {classes} "
            f"(UNetConfig.out_channels = {classes}): use `loss='{name.replace('bce', 'ce')}'` (softmax over the "
            "classes), or a model with `out_channels=1`")
    return check_choice("loss", name, LOSSES if classes == 1 else CLASS_LOSSES)


def loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The reference loss function called ``name`` (one of ``LOSSES`` or ``CLASS_LOSSES``): a
    function of (logits, target) that returns the loss as a 0-d tensor."""
    return _FUNCTIONS[check_loss_name(name)]
