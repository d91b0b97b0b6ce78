"""The tiled backward pass: the exact gradient of a whole-image loss, tile by tile."""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..losses import DICE_SMOOTH, check_loss_name
from .forward import _core_logits, _fast_cpu
from .planner import _prepare
from .reading import _HEAP, _CropCache, _check_read_workers, _crop_cache_folder, _expensive_to_read, _progress, _read_ahead
from .tiles import _Tile, _as_input, _check_mask, _read_crop, _read_mask, _tile_list


# NOTE [Two-pass Dice]
# Soft Dice couples all pixels through I = sum(p*y), P = sum(p), Y = sum(y). Pass 1 runs the
# forward pass tile by tile without autograd to gather them. Then dDice/dp_i = A*y_i + B with
# A = -2/D, B = (2I + 1)/D^2, D = P + Y + 1, so pass 2 backpropagates, tile by tile, the


# --- the engine --------------------------------------------------------------------------------


def tiled_backward(
    model: nn.Module,
    image: Any,
    mask: Any,
    *,
    loss: str = "bce+dice",
    memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    read_workers: int | None = None,
) -> float:
    """Whole-image loss and its exact gradient, computed tile by tile.

    Accumulates into each parameter's ``.grad`` what ``loss.backward()`` on the whole image
    would, where the model input is ``image / 255`` as (1, 3, H, W) floats of the model's dtype.
    On any error the ``.grad`` of every parameter is left as it was. A float32 model on the CPU
    runs its two full-resolution layers, forward and backward, on compiled kernels when numba is
    installed (``gigaseg._cpu_kernels``: the same gradients up to float32 rounding;
    ``GIGASEG_NO_CPU_KERNELS=1`` turns them off).

    Args:
        model: a ``gigaseg.UNet`` (other models are refused; see ``check_local``).
        image: (H, W, 3) uint8 RGB array-like (numpy array, ``np.memmap``, zarr array); read
            tile by tile, never materialized as floats.
        mask: (H, W) uint8 array-like with values 0 (background) and 1 (tissue).
        loss: ``"bce"``, ``"dice"`` or ``"bce+dice"``.
        memory_budget: bytes or a string such as ``"4GB"``; the planner picks the tile from it.
        tile: core tile size (int or (th, tw)), a multiple of the total stride; overrides the plan.
        device: ``None`` (the model's device), ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``;
            the model is moved there if needed.
        progress: show a progress bar over tiles when a step takes more than a few seconds.
        read_workers: background threads reading crops ahead of the model; default
            ``default_read_workers(device)`` (1 on the CPU). The result does not depend on it.

    Returns:
        The loss value on the whole image.
    """
    check_loss_name(loss)
    config, height, width, dev, dtype, th, tw = _prepare(model, image, tile, memory_budget, device, "train")
    workers = _check_read_workers(read_workers, dev)
    _check_mask(mask, height, width)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no parameter that requires grad; nothing to backpropagate")
    n_pixels = height * width
    use_bce, use_dice = loss in ("bce", "bce+dice"), loss in ("dice", "bce+dice")
    tiles = _tile_list(height, width, th, tw, config)
    folder = _crop_cache_folder(tiles) if use_dice and _expensive_to_read(image) else None
    with _CropCache(folder) if folder is not None else contextlib.nullcontext() as cache:

        def read(t: _Tile) -> tuple[np.ndarray, np.ndarray]:
            return _read_crop(image, t), _read_mask(mask, t)

        def read_and_keep(t: _Tile) -> tuple[np.ndarray, np.ndarray]:
            crop, y_np = read(t)
            if cache is not None:
                cache.put(t, (crop, y_np))
            return crop, y_np

        def read_again(t: _Tile) -> tuple[np.ndarray, np.ndarray]:
            kept = cache.get(t) if cache is not None else None
            return (kept[0], kept[1]) if kept is not None else read(t)

        bce_sum = 0.0
        # float32 on the CPU: compiled kernels for the full-resolution layers, forward and backward
        fast = _fast_cpu(model, dtype, dev)
        from . import _cpu_kernels

        # Pass 1 (Dice only): global sums I = sum(p*y), P = sum(p), Y = sum(y) and the BCE sum.
        if use_dice:
            inter = p_sum = y_sum = 0.0
            with torch.no_grad():
                pass1 = _read_ahead(tiles, read_and_keep, workers)
                for t, (crop, y_np) in _progress(pass1, len(tiles), progress, "dice sums"):
                    _HEAP(t)
                    y_sum += float(y_np.sum(dtype=np.int64))
                    sums = None
                    if fast and (inp := _cpu_kernels.tile_input(model, crop)) is not None:
                        crop = None  # the kernels' form of the crop replaces it
                        sums = _cpu_kernels.core_sums(model, inp, *t.core_in_crop, y_np, use_bce)
                        del inp
                    if sums is None:
                        fast = False  # no kernels (numba could not compile here): PyTorch's from now on
                        if crop is None:
                            crop = read(t)[0]
                        logits = _core_logits(model, crop, t.core_in_crop, dev, dtype, False)
                        y = torch.from_numpy(y_np).to(dev, dtype)
                        p = torch.sigmoid(logits)
                        sums = _sum64(p * y), _sum64(p), float(_bce_sum(logits, y)) if use_bce else 0.0
                    crop = None
                    inter += sums[0]
                    p_sum += sums[1]
                    bce_sum += sums[2]
            denom = p_sum + y_sum + DICE_SMOOTH
            dice_value = 1.0 - (2.0 * inter + DICE_SMOOTH) / denom
            coef_inter = -2.0 / denom
            coef_p = (2.0 * inter + DICE_SMOOTH) / denom**2
        else:
            coef_inter = coef_p = 0.0
        weights = _cpu_kernels.LossWeights(1.0 / n_pixels if use_bce else 0.0, coef_inter, coef_p)

        def logits_grad(z: torch.Tensor, y_np: np.ndarray) -> torch.Tensor:
            """dLoss/dlogits over a tile's core: (p - y) / N for the mean BCE, (A y + B) p (1 - p)
            for Dice (NOTE [Two-pass Dice]); the BCE sum too when there is no first pass."""
            nonlocal bce_sum
            with torch.no_grad():
                y = torch.from_numpy(y_np).to(z.device, z.dtype)
                if use_bce and not use_dice:
                    bce_sum += float(_bce_sum(z, y))
                p = torch.sigmoid(z)
                g = torch.zeros_like(z)
                if use_bce:
                    g.copy_(p).sub_(y).div_(n_pixels)
                if use_dice:
                    g.add_((coef_inter * y + coef_p) * p * (1 - p))
                return g

        # Pass 2: per-tile backward of the tile's exact share of the loss; gradients are summed
        # privately and added to .grad only once every tile has succeeded.
        grads = [torch.zeros_like(p) for p in params]
        pass2 = _read_ahead(tiles, read_again, workers)
        for t, (crop, y_np) in _progress(pass2, len(tiles), progress, "backward"):
            _HEAP(t)
            if fast:
                done = None
                if (inp := _cpu_kernels.tile_input(model, crop)) is not None:
                    crop = None  # the kernels' form of the crop replaces it: the tile holds one copy
                    done = _cpu_kernels.backward_core(model, inp, *t.core_in_crop, y_np, weights,
                                                      bce_sum=use_bce and not use_dice)
                    del inp
                if done is not None:
                    tile_grads, tile_bce = done
                    bce_sum += tile_bce
                    for acc, p in zip(grads, params):
                        acc += tile_grads[p]
                    continue
                fast = False  # numba could not compile here: PyTorch for the rest
                if crop is None:
                    crop = read_again(t)[0]
            logits = model(_as_input(crop, dev, dtype, config.total_stride))
            del crop
            # zero on the halo, whose outputs belong to other tiles
            grad_logits = torch.zeros_like(logits)
            grad_logits[0, 0][t.core_in_crop] = logits_grad(logits.detach()[0, 0][t.core_in_crop], y_np)
            for acc, g in zip(grads, torch.autograd.grad(logits, params, grad_logits, allow_unused=True)):
                if g is not None:
                    acc += g
            del logits, grad_logits

    for p, g in zip(params, grads):
        if p.grad is None:
            p.grad = g
        else:
            p.grad += g
    return (bce_sum / n_pixels if use_bce else 0.0) + (dice_value if use_dice else 0.0)


def _sum64(t: torch.Tensor) -> float:
    """Sum of ``t`` accumulated in float64 (float32 on MPS, which has no float64)."""
    return float(t.sum() if t.device.type == "mps" else t.sum(dtype=torch.float64))


def _bce_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
