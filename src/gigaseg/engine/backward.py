"""The tiled backward pass: the exact gradient of a whole-image loss, tile by tile.

``tiled_backward`` checks its input, then runs two passes over the tiles: ``_dice_sums`` (pass
1, only for a loss with a Dice term) gathers the soft Dice's global sums; ``_backward_pass``
(pass 2) backpropagates each tile's exact share of the loss, its logits' gradient given by
``_logits_grad``; ``_accumulate`` adds the summed gradients to ``.grad`` once every tile has
succeeded. A tile runs on the compiled CPU kernels where they apply and on PyTorch otherwise,
through ``_Kernels`` (NOTE [Kernel fallback]).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..glass import balance_for
from ..losses import DICE_SMOOTH, IGNORE, check_loss_name
from .arrays import ImageLike
from .distributed import DistributedError, _Ranks
from .forward import _core_logits, _fast_cpu, _kernel_image
from .locality import geometry_of
from .planner import _prepare
from .reading import (
    _HEAP,
    _check_read_workers,
    _crop_cache_folder,
    _CropCache,
    _expensive_to_read,
    _progress,
    _read_ahead,
)
from .tiles import (
    _as_input,
    _check_mask,
    _check_mask_values,
    _read_crop,
    _read_mask,
    _Tile,
    _tile_list,
    input_channels_last,
    input_multiple,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

    from ._cpu_kernels import LossWeights, TileInput

_R = TypeVar("_R")


# NOTE [Two-pass Dice]
# Soft Dice couples all pixels through I = sum(p*y), P = sum(p), Y = sum(y). Pass 1 runs the
# forward pass tile by tile without autograd to gather them. Then dDice/dp_i = A*y_i + B with
# A = -2/D, B = (2I + 1)/D^2, D = P + Y + 1, so pass 2 backpropagates, tile by tile, the
# surrogate A*sum_t(p*y) + B*sum_t(p) whose gradient is exactly the tile's share.

# NOTE [Ignored pixels]
# Mask value 255 (IGNORE) leaves a pixel out of the loss: the BCE is the mean over the N valid
# pixels, the Dice sums I, P, Y run over them only, and an ignored pixel's logit gets a zero
# gradient. Pass 2 needs N. With a Dice term, pass 1 counts it with the sums (the ranks of a
# group sum it with them). Without one (loss "bce") there is no pass 1: pass 2 divides each
# pixel's BCE gradient by H W, counts N as it reads the masks, and the gradient, linear in that
# divisor, is then scaled by H W / N (one more rounding). Ranks of a group inside a larger
# ``grad_group`` sum their pass-2 numbers over ``grad_group``, not over their group, so they
# count N first, from a read of the whole mask. A tile's 255s are found by the ``max`` its mask
# check takes anyway, and a tile with some runs its own loss kernels (NOTE [Ignore kernels]), so
# a mask without 255 costs nothing more and gives the same bits as before: N = H W, no scaling.
# An image whose every pixel is ignored has N = 0: loss 0 (the BCE of no pixel is taken as 0;
# Dice is 1 - 1/1) and a zero gradient.

# NOTE [Several classes]
# A model of C >= 2 output channels has class logits z_i (C of them at pixel i), p_i =
# softmax(z_i), and a mask of class indices (y_ic = 1 for the pixel's class, else 0; 255 ignored
# as above). Its losses are the mean softmax cross-entropy ("ce") and the multi-class soft Dice
#   L = (1/C) sum_c [1 - (2 I_c + 1) / D_c],   D_c = P_c + Y_c + 1,
# with I_c = sum_i p_ic y_ic, P_c = sum_i p_ic, Y_c = sum_i y_ic over the valid pixels: pass 1
# gathers these 3C sums (and N and the CE sum) tile by tile, and the ranks of a group sum them in
# exchange 2 (NOTE [Distributed step]). Then, as for one class (NOTE [Two-pass Dice]),
#   dL/dp_ic = g_ic = a_c y_ic + b_c,   a_c = -2 / (C D_c),   b_c = (2 I_c + 1) / (C D_c^2),
# depends only on pixel i and the sums, and through the softmax (dp_ic/dz_ik = p_ic (d_ck - p_ik))
#   dL/dz_ik = sum_c g_ic p_ic (d_ck - p_ik) = p_ik (g_ik - sum_c g_ic p_ic).
# The CE's is (p_ik - y_ik) / N. Pass 2 backpropagates their sum over each tile's core, 0 where
# the mask is 255 (tests/test_multiclass.py checks both against autograd on gigaseg.losses).
# One class keeps the sigmoid path, its kernels and its bits; C >= 2 runs on PyTorch's kernels
# (the compiled ones compute one logit a pixel).


# --- the engine --------------------------------------------------------------------------------


def tiled_backward(
    model: nn.Module,
    image: ImageLike,
    mask: ImageLike | int,
    *,
    loss: str = "bce+dice",
    memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    read_workers: int | None = None,
    group: ProcessGroup | None = None,
    grad_group: ProcessGroup | None = None,
) -> float:
    """Whole-image loss and its exact gradient, computed tile by tile.

    Accumulates into each parameter's ``.grad`` what ``loss.backward()`` on the whole image
    would, where the model input is the image as (1, C, H, W) floats of the model's dtype
    (``image / 255`` for uint8; NOTE [Input scaling] in ``tiles``), glass-balanced first for a UNet
    with ``glass_white`` (``gigaseg.glass``, NOTE [Glass balance]).
    On any error the ``.grad`` of every parameter is left as it was. A float32 model on the CPU
    runs its two full-resolution layers, forward and backward, on compiled kernels when numba is
    installed (``gigaseg._cpu_kernels``: the same gradients up to float32 rounding;
    ``GIGASEG_NO_CPU_KERNELS=1`` turns them off).

    Args:
        model: a ``gigaseg.UNet``, or any ``nn.Module`` of local layers whose stride and halo
            ``check_local`` derives (others are refused, the module named).
        image: (H, W, C) uint8, uint16 or float32 array-like, C the model's input channels
            (numpy array, ``np.memmap``, zarr array); read
            tile by tile, never materialized as floats.
        mask: (H, W) uint8 array-like with values 0 (background), 1 (tissue) and 255 (ignore:
            left out of the loss, as in ``gigaseg.losses``; NOTE [Ignored pixels]); for a model
            of C >= 2 output channels, class indices 0..C-1 and 255. For a
            ``gigaseg.SlideClassifier``: the slide's class, an int (NOTE [Slide heads]).
        loss: ``"bce"``, ``"dice"`` or ``"bce+dice"``; for C >= 2 output channels ``"ce"``,
            ``"dice"`` or ``"ce+dice"`` (NOTE [Several classes]).
        memory_budget: bytes or a string such as ``"4GB"``; the planner picks the tile from it.
        tile: core tile size (int or (th, tw)), a multiple of the total stride; overrides the plan.
        device: ``None`` (the model's device), ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``;
            the model is moved there if needed.
        progress: show a progress bar over tiles when a step takes more than a few seconds.
        read_workers: background threads reading crops ahead of the model; default
            ``default_read_workers(device)`` (1 on the CPU). The result does not depend on it.
        group: a ``torch.distributed`` process group whose ranks all call ``tiled_backward`` on
            the same image, mask and model: each computes a share of the tiles, and every rank
            gets the whole image's gradient and loss (NOTE [Distributed step]).
        grad_group: a process group holding ``group`` (several groups, one image each): the
            gradients are summed over all its ranks, so ``.grad`` gets the sum of the groups'
            image gradients; the loss returned is still ``group``'s image's.

    Returns:
        The loss value on the whole image.

    Raises:
        DistributedError: with ``group``, when another rank failed (it raises its own error)
            or the ranks were not given the same image size, tile, loss and model.
    """
    if getattr(model, "tiled_slide_head", False):  # a SlideClassifier: NOTE [Slide heads] in .slide
        if group is not None or grad_group is not None:
            raise ConfigError("a SlideClassifier's step runs in one process; drop `group` and `grad_group`")
        label = cast(int, mask)  # checked there
        head: Any = model
        return cast(float, head._tiled_backward(image, label, loss=loss, memory_budget=memory_budget, tile=tile,
                                                device=device, progress=progress, read_workers=read_workers))
    if isinstance(mask, (int, np.integer)):
        raise InputError(
            f"mask is the integer {int(mask)}: an integer label is for a gigaseg.SlideClassifier; "
            f"a per-pixel {type(model).__name__} needs an (H, W) mask")
    ranks = _Ranks(group, grad_group) if group is not None else None
    if ranks is None and grad_group is not None:
        raise ConfigError("`grad_group` sums the gradients of several `group`s; give `group` too")
    with _joined(ranks):  # with ranks, an error here is reported in exchange 1 (NOTE [Distributed step])
        check_loss_name(loss)
        config, height, width, dev, dtype, th, tw = _prepare(model, image, tile, memory_budget, device, "train",
                                                             ranks.size if ranks is not None else 1)
        # NOTE [Glass balance]: the same input as in prediction, but seams as they come (NOTE [Seam correction])
        image = balance_for(model, image, seams=False)
        classes = config.out_channels
        check_loss_name(loss, classes)  # "bce" for one channel, "ce" for several
        workers = _check_read_workers(read_workers, dev)
        _check_mask(mask, height, width)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the model has no parameter that requires grad; nothing to backpropagate")
        step = _Step(
            model, params, dev, dtype, config.total_stride, n_pixels=height * width,
            use_bce=loss in ("bce", "bce+dice", "ce", "ce+dice"), use_dice=loss in ("dice", "bce+dice", "ce+dice"),
            # without pass 1, pass 2 counts the valid pixels (NOTE [Ignored pixels])
            count_valid=loss in ("bce", "ce") and (ranks is None or not ranks.nested), classes=classes,
            # float32 on the CPU: compiled kernels for the full-resolution layers, forward and backward
            kernels=_Kernels(model, _fast_cpu(model, dtype, dev) and _kernel_image(image)),
        )
        from ._cpu_kernels import LossWeights

        tiles = _tile_list(height, width, th, tw, config)
    if ranks is not None:
        shapes = [tuple(p.shape) for p in params]
        ranks.exchange("checking the inputs", (height, width, th, tw, loss, str(dtype), shapes), [])
        ranks.widen(3 * classes + 2)  # exchange 2's payload; the same model on every rank, just checked
        ranks.next_is_last = not step.use_dice
        tiles = ranks.share(tiles)
    with _joined(ranks):
        folder = _crop_cache_folder(tiles) if step.use_dice and _expensive_to_read(image) else None
        with _CropCache(folder) if folder is not None else contextlib.nullcontext() as cache:
            reader = _Reader(image, mask, cache, classes)
            dice_value = 0.0
            coef_inter = coef_p = [0.0] * classes
            if step.use_dice:
                inter, p_sum, y_sum = _dice_sums(step, tiles, reader, workers, progress)
                if ranks is not None:  # the global sums: I, P, Y (I_c, P_c, Y_c for each class), BCE or CE, N
                    sums = ranks.exchange(
                        "gathering the Dice sums", (height, width, th, tw, loss, str(dtype), shapes),
                        [*inter, *p_sum, *y_sum, step.bce_sum, step.n_valid])
                    c = classes
                    inter, p_sum, y_sum = sums[:c], sums[c:2 * c], sums[2 * c:3 * c]
                    step.bce_sum, n_valid = sums[3 * c:]
                    step.n_valid = round(n_valid)
                    ranks.next_is_last = True
                dice_value, coef_inter, coef_p = _dice_terms(inter, p_sum, y_sum)
            elif not step.count_valid:  # a group inside a larger grad_group (NOTE [Ignored pixels])
                step.n_valid = _count_valid(mask, height, width, classes)
            xent = 1.0 / step.bce_divisor if step.use_bce else 0.0
            weights: LossWeights | _ClassWeights = (
                LossWeights(xent, coef_inter[0], coef_p[0]) if classes == 1
                else _ClassWeights(tuple(coef_inter), tuple(coef_p)))
            grads = _backward_pass(step, weights, tiles, reader, workers, progress)
    if ranks is not None:  # .grad is untouched until the gradients are summed over every rank
        bce_sum, n_valid = ranks.exchange("computing the gradients", (str(dtype), shapes),
                                          [step.bce_sum, step.n_valid], last=True)
        if not step.use_dice:  # else pass 1 had the BCE sum
            step.bce_sum = bce_sum
        if step.count_valid:  # here grad_group is group
            step.n_valid = round(n_valid)
    if step.count_valid and step.n_valid != step.n_pixels:  # the BCE's mean over the valid pixels
        scale = step.n_pixels / step.n_valid if step.n_valid else 0.0
        for g in grads:
            g.mul_(scale)
    if ranks is not None:
        ranks.sum_grads(grads)
    _accumulate(params, grads)
    bce_mean = step.bce_sum / step.n_valid if step.n_valid else 0.0
    return (bce_mean if step.use_bce else 0.0) + (dice_value if step.use_dice else 0.0)


# --- what the passes share -------------------------------------------------------------------


@contextlib.contextmanager
def _joined(ranks: _Ranks | None) -> Iterator[None]:
    """With ``ranks``, an error in the block is first reported to the other ranks, in the
    exchange they wait in (``ranks.fail``); a DistributedError is one they know of already."""
    if ranks is None:
        yield
        return
    try:
        yield
    except DistributedError:
        raise
    except Exception:
        with contextlib.suppress(RuntimeError):  # the first error is the one to see
            ranks.fail()
        raise


# NOTE [Kernel fallback]
# A float32 model on the CPU runs each tile's full-resolution layers on the compiled kernels
# (``_cpu_kernels``), in both passes. Where numba cannot compile them (a CPU or platform it does
# not support), a kernel returns None, warns, and turns the kernels off for the process: the step
# goes on from that tile with PyTorch's, to the same result up to float32 rounding. The kernels'
# form of a crop replaces the crop as soon as it exists (a tile holds one copy), so a tile whose
# kernel fails after that reads its crop again.
class _Kernels:
    """Runs a tile's work on the compiled CPU kernels while they work (NOTE [Kernel fallback])."""

    def __init__(self, model: nn.Module, on: bool) -> None:
        self.model = model
        self.on = on

    def run(self, crop: list[np.ndarray], reread: Callable[[], np.ndarray],
            kernel: Callable[[TileInput], _R | None]) -> _R | None:
        """``kernel`` on the kernels' form of the uint8 crop that ``crop`` holds (a one-item list:
        the crop is taken out of it as soon as that form exists).

        Returns None when the kernels are off or numba cannot compile them here; they are then
        off for the rest of the step, and ``crop`` holds the crop again (read with ``reread``
        if it was taken) for the caller to run PyTorch on.
        """
        if self.on:
            from ._cpu_kernels import tile_input

            inp = tile_input(self.model, crop[0])
            if inp is not None:
                crop.clear()  # the kernels' form of the crop replaces it: the tile holds one copy
                result = kernel(inp)
                del inp
                if result is not None:
                    return result
            self.on = False  # numba could not compile here: PyTorch's kernels from now on
        if not crop:
            crop.append(reread())
        return None


@dataclass
class _Step:
    """What the two passes of one ``tiled_backward`` call share."""

    model: nn.Module
    params: list[nn.Parameter]
    device: torch.device
    dtype: torch.dtype
    total_stride: int
    n_pixels: int
    use_bce: bool  # the cross-entropy term: the BCE of one output channel, the softmax CE of several
    use_dice: bool
    kernels: _Kernels
    count_valid: bool  # pass 2 counts the valid pixels: no pass 1 did (NOTE [Ignored pixels])
    classes: int = 1  # output channels C (NOTE [Several classes])
    bce_sum: float = 0.0  # BCE (CE) summed over the tiles so far: in pass 1 with Dice, else in pass 2
    n_valid: int = 0  # pixels whose mask is not 255 (IGNORE): in pass 1 with Dice, else as count_valid says

    @property
    def bce_divisor(self) -> int:
        """What pass 2 divides each pixel's BCE gradient by: H W while it counts the valid pixels
        (the gradient is scaled after), else their number N (at least 1: with N = 0 every pixel
        is ignored and every gradient zero)."""
        return self.n_pixels if self.count_valid else max(1, self.n_valid)


class _Reader:
    """Reads a tile's crop, its mask (checked for a model of ``classes`` output channels) and the
    mask's count of 255s (ignored pixels). In pass 1 a cache (NOTE [Crop cache]) keeps them for
    pass 2."""

    def __init__(self, image: ImageLike, mask: ImageLike, cache: _CropCache | None, classes: int = 1) -> None:
        self.image, self.mask, self.cache, self.classes = image, mask, cache, classes
        self.ignored: dict[_Tile, int] = {}  # each cached tile's count of 255s

    def read(self, t: _Tile) -> tuple[np.ndarray, np.ndarray, int]:
        crop = _read_crop(self.image, t)
        y_np, ignored = _read_mask(self.mask, t, self.classes)
        return crop, y_np, ignored

    def read_and_keep(self, t: _Tile) -> tuple[np.ndarray, np.ndarray, int]:
        crop, y_np, ignored = self.read(t)
        if self.cache is not None:
            self.cache.put(t, (crop, y_np))
            self.ignored[t] = ignored
        return crop, y_np, ignored

    def read_again(self, t: _Tile) -> tuple[np.ndarray, np.ndarray, int]:
        kept = self.cache.get(t) if self.cache is not None else None
        return (kept[0], kept[1], self.ignored[t]) if kept is not None else self.read(t)


def _count_valid(mask: ImageLike, height: int, width: int, classes: int = 1) -> int:
    """The pixels of ``mask`` that are not 255 (IGNORE), its values checked (class indices of
    ``classes`` output channels), read by strips."""
    rows = max(1, (64 << 20) // width)
    ignored = 0
    for y0 in range(0, height, rows):
        strip = np.asarray(mask[y0:min(height, y0 + rows), 0:width])
        ignored += _check_mask_values(strip, y0, 0, classes)
    return height * width - ignored


# --- pass 1: the Dice sums -------------------------------------------------------------------


def _dice_sums(step: _Step, tiles: Sequence[_Tile], reader: _Reader, workers: int,
               progress: bool) -> tuple[list[float], list[float], list[float]]:
    """Pass 1: the global sums I = sum(p*y), P = sum(p), Y = sum(y) of soft Dice (NOTE
    [Two-pass Dice]) over the valid pixels, without autograd, as lists of one number; for C >= 2
    classes, I_c, P_c and Y_c (NOTE [Several classes]). Adds the BCE (CE) of every tile to
    ``step.bce_sum`` and its count of valid pixels to ``step.n_valid`` (NOTE [Ignored pixels])."""
    c = step.classes
    inter, p_sum, y_sum = [0.0] * c, [0.0] * c, [0.0] * c
    with torch.no_grad():
        pass1 = _read_ahead(tiles, reader.read_and_keep, workers)
        for t, (crop, y_np, ignored) in _progress(pass1, len(tiles), progress, "dice sums"):
            _HEAP(t)
            box = [crop]
            del crop  # the box holds the tile's only reference (NOTE [Kernel fallback])
            step.n_valid += y_np.size - ignored
            if c == 1:
                y_sum[0] += float(y_np.sum(dtype=np.int64) - IGNORE * ignored)
                sums = _tile_sums(step, t, box, y_np, ignored > 0, reader)
                inter[0] += sums[0]
                p_sum[0] += sums[1]
                step.bce_sum += sums[2]
                continue
            counts = np.bincount(y_np.ravel(), minlength=c)  # the 255s count past the classes
            tile_inter, tile_p, tile_ce = _tile_class_sums(step, t, box.pop(), y_np, ignored > 0)
            for k in range(c):
                inter[k] += tile_inter[k]
                p_sum[k] += tile_p[k]
                y_sum[k] += float(counts[k])
            step.bce_sum += tile_ce
    return inter, p_sum, y_sum


def _dice_terms(inter: Sequence[float], p_sum: Sequence[float],
                y_sum: Sequence[float]) -> tuple[float, list[float], list[float]]:
    """(the Dice loss, its coefficients A and B per class) from the global sums: one class's
    ``1 - (2 I + 1) / D``, ``-2 / D``, ``(2 I + 1) / D^2`` with D = P + Y + 1 (NOTE [Two-pass
    Dice]), or for C classes the mean over them, the coefficients divided by C (NOTE [Several
    classes])."""
    c = len(inter)
    values, coef_inter, coef_p = [], [], []
    for i, p, y in zip(inter, p_sum, y_sum):
        denom = p + y + DICE_SMOOTH
        values.append(1.0 - (2.0 * i + DICE_SMOOTH) / denom)
        coef_inter.append(-2.0 / denom / c)
        coef_p.append((2.0 * i + DICE_SMOOTH) / denom**2 / c)
    return sum(values) / c, coef_inter, coef_p


def _tile_sums(step: _Step, t: _Tile, crop: list[np.ndarray], y_np: np.ndarray, ignore: bool,
               reader: _Reader) -> tuple[float, float, float]:
    """(sum p y, sum p, the BCE sum or 0 without BCE) over the core of tile ``t``, with p the
    model's probabilities and ``y_np`` the core's mask, less the pixels where it is 255 when
    ``ignore`` (it has some); ``crop`` holds the tile's crop."""
    from ._cpu_kernels import core_sums

    rows, cols = t.core_in_crop
    sums = step.kernels.run(crop, lambda: reader.read(t)[0],
                            lambda inp: core_sums(step.model, inp, rows, cols, y_np, step.use_bce, ignore))
    if sums is not None:
        return sums
    logits = _core_logits(step.model, crop.pop(), t.core_in_crop, step.device, step.dtype, False)
    y = torch.from_numpy(y_np).to(step.device, step.dtype)
    p = torch.sigmoid(logits)
    keep = None
    if ignore:
        keep = y != IGNORE
        y, p = torch.where(keep, y, 0.0), torch.where(keep, p, 0.0)
    return _sum64(p * y), _sum64(p), float(_bce_sum(logits, y, keep)) if step.use_bce else 0.0


def _tile_class_sums(step: _Step, t: _Tile, crop: np.ndarray, y_np: np.ndarray,
                     ignore: bool) -> tuple[list[float], list[float], float]:
    """(I_c, P_c for each class, the CE sum or 0 without CE) over the core of tile ``t`` for a
    model of C >= 2 classes (NOTE [Several classes]), less the pixels where ``y_np`` is 255 when
    ``ignore`` (it has some); float64 sums."""
    z = _core_logits(step.model, crop, t.core_in_crop, step.device, step.dtype, False)  # (C, h, w)
    y, keep = _class_target(y_np, z.device, ignore)
    p = torch.softmax(z, dim=0)
    if keep is not None:
        p = torch.where(keep, p, 0.0)
    onehot = y == torch.arange(step.classes, device=z.device)[:, None, None]
    ce = _ce_sum(z, y, keep) if step.use_bce else 0.0
    return _class_sums64(torch.where(onehot, p, 0.0)), _class_sums64(p), ce


# --- pass 2: the backward pass ---------------------------------------------------------------


def _backward_pass(step: _Step, weights: LossWeights | _ClassWeights, tiles: Sequence[_Tile], reader: _Reader,
                   workers: int, progress: bool) -> list[torch.Tensor]:
    """Pass 2: backpropagates each tile's exact share of the loss, whose gradient with respect
    to the logits ``weights`` gives, and returns the parameter gradients summed over the tiles
    (kept apart from ``.grad`` until every tile has succeeded)."""
    grads = [torch.zeros_like(p) for p in step.params]
    pass2 = _read_ahead(tiles, reader.read_again, workers)
    for t, (crop, y_np, ignored) in _progress(pass2, len(tiles), progress, "backward"):
        _HEAP(t)
        box = [crop]
        del crop  # the box holds the tile's only reference (NOTE [Kernel fallback])
        if step.count_valid:
            step.n_valid += y_np.size - ignored
        for acc, g in zip(grads, _tile_grads(step, weights, t, box, y_np, ignored > 0, reader)):
            if g is not None:
                acc += g
    return grads


def _tile_grads(step: _Step, weights: LossWeights | _ClassWeights, t: _Tile, crop: list[np.ndarray],
                y_np: np.ndarray, ignore: bool, reader: _Reader) -> Sequence[torch.Tensor | None]:
    """The gradient of tile ``t``'s share of the loss for each of ``step.params`` (None for one
    that the model's output does not depend on); ``crop`` holds the tile's crop, and ``ignore``
    says that ``y_np`` holds 255s. ``weights`` is a ``_ClassWeights`` for C >= 2 classes."""
    from ._cpu_kernels import backward_core

    rows, cols = t.core_in_crop
    if not isinstance(weights, _ClassWeights):  # one class: the kernels may run it
        one = weights
        done = step.kernels.run(crop, lambda: reader.read_again(t)[0],
                                lambda inp: backward_core(step.model, inp, rows, cols, y_np, one,
                                                          bce_sum=step.use_bce and not step.use_dice, ignore=ignore))
        if done is not None:
            tile_grads, tile_bce = done
            step.bce_sum += tile_bce
            return [tile_grads[p] for p in step.params]
    config = geometry_of(step.model)
    logits = step.model(_as_input(crop.pop(), step.device, step.dtype, input_multiple(config),
                                  input_channels_last(config)))
    # zero on the halo, whose outputs belong to other tiles
    grad_logits = torch.zeros_like(logits)
    if isinstance(weights, _ClassWeights):
        grad_logits[0][:, rows, cols] = _class_logits_grad(step, weights, logits.detach()[0][:, rows, cols], y_np,
                                                           ignore)
    else:
        grad_logits[0, 0][t.core_in_crop] = _logits_grad(step, weights, logits.detach()[0, 0][t.core_in_crop], y_np,
                                                         ignore)
    return torch.autograd.grad(logits, step.params, grad_logits, allow_unused=True)


def _logits_grad(step: _Step, weights: LossWeights, z: torch.Tensor, y_np: np.ndarray,
                 ignore: bool) -> torch.Tensor:
    """dLoss/dlogits over a tile's core: (p - y) / N for the mean BCE, (A y + B) p (1 - p) for
    Dice (NOTE [Two-pass Dice]; A and B are ``weights.inter`` and ``weights.p_coef``), 0 where
    ``y_np`` is 255 when ``ignore`` (NOTE [Ignored pixels]). Adds the core's BCE to
    ``step.bce_sum`` when there is no first pass to do it."""
    with torch.no_grad():
        y = torch.from_numpy(y_np).to(z.device, z.dtype)
        keep = None
        if ignore:
            keep = y != IGNORE
            y = torch.where(keep, y, 0.0)
        if step.use_bce and not step.use_dice:
            step.bce_sum += float(_bce_sum(z, y, keep))
        p = torch.sigmoid(z)
        g = torch.zeros_like(z)
        if step.use_bce:
            g.copy_(p).sub_(y).div_(step.bce_divisor)
        if step.use_dice:
            g.add_((weights.inter * y + weights.p_coef) * p * (1 - p))
        if keep is not None:
            g.masked_fill_(~keep, 0.0)
        return g


@dataclass(frozen=True)
class _ClassWeights:
    """The Dice's share of dLoss/dlogits for C >= 2 classes (NOTE [Several classes]): ``inter[c]``
    and ``p_coef[c]`` are a_c and b_c (0s without Dice); the CE's share is (p - y) / N, N being
    ``_Step.bce_divisor``."""

    inter: tuple[float, ...]
    p_coef: tuple[float, ...]


def _class_logits_grad(step: _Step, weights: _ClassWeights, z: torch.Tensor, y_np: np.ndarray,
                       ignore: bool) -> torch.Tensor:
    """dLoss/dlogits over a tile's core for C >= 2 classes, (C, h, w) like the logits ``z``:
    (p - y) / N for the mean CE, p_k (g_k - sum_c g_c p_c) with g_c = a_c y_c + b_c for Dice
    (NOTE [Several classes]), 0 where ``y_np`` is 255 when ``ignore``. Adds the core's CE to
    ``step.bce_sum`` when there is no first pass to do it."""
    with torch.no_grad():
        y, keep = _class_target(y_np, z.device, ignore)
        if step.use_bce and not step.use_dice:
            step.bce_sum += _ce_sum(z, y, keep)
        p = torch.softmax(z, dim=0)
        onehot = y == torch.arange(step.classes, device=z.device)[:, None, None]
        g = torch.zeros_like(z)
        if step.use_bce:
            g.copy_(p).sub_(onehot.to(z.dtype)).div_(step.bce_divisor)
        if step.use_dice:
            a = torch.tensor(weights.inter, dtype=z.dtype, device=z.device)[:, None, None]
            b = torch.tensor(weights.p_coef, dtype=z.dtype, device=z.device)[:, None, None]
            dp = torch.where(onehot, a + b, b)  # dL/dp_c
            g.add_(p * (dp - (dp * p).sum(dim=0, keepdim=True)))
        if keep is not None:
            g.masked_fill_(~keep, 0.0)
        return g


def _class_target(y_np: np.ndarray, device: torch.device, ignore: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the (h, w) int64 class indices of the mask ``y_np``, 0 where it is 255; the mask of
    valid pixels, or None when ``ignore`` says it has no 255)."""
    y = torch.from_numpy(y_np).to(device=device, dtype=torch.int64)
    if not ignore:
        return y, None
    keep = y != IGNORE
    return torch.where(keep, y, 0), keep


def _ce_sum(z: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None) -> float:
    """The softmax cross-entropy of (C, h, w) logits ``z`` against the class indices ``y``,
    summed over the pixels where ``keep`` (all without it), in float64 (but on MPS)."""
    ce = torch.nn.functional.cross_entropy(z.unsqueeze(0), y.unsqueeze(0), reduction="none")[0]
    if keep is not None:
        ce = torch.where(keep, ce, 0.0)
    return _sum64(ce)


def _class_sums64(t: torch.Tensor) -> list[float]:
    """The sums over each class of (C, h, w) ``t``, accumulated in float64 (float32 on MPS)."""
    sums = t.sum(dim=(1, 2)) if t.device.type == "mps" else t.sum(dim=(1, 2), dtype=torch.float64)
    return [float(v) for v in sums.cpu()]


def _accumulate(params: Sequence[nn.Parameter], grads: Sequence[torch.Tensor]) -> None:
    """Adds ``grads`` to the parameters' ``.grad`` (sets it where there is none), as
    ``loss.backward()`` would."""
    for p, g in zip(params, grads):
        if p.grad is None:
            p.grad = g
        else:
            p.grad += g


def _sum64(t: torch.Tensor) -> float:
    """Sum of ``t`` accumulated in float64 (float32 on MPS, which has no float64)."""
    return float(t.sum() if t.device.type == "mps" else t.sum(dtype=torch.float64))


def _bce_sum(logits: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The BCE of ``logits`` against ``y`` summed over the pixels where ``keep`` (all without it)."""
    if keep is None:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return torch.where(keep, bce, 0.0).sum()
