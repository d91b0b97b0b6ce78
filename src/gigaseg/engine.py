"""Exact tiled forward and backward over array-like gigapixel images, and the memory planner.

``tiled_backward`` accumulates into each parameter's ``.grad`` exactly what ``loss.backward()``
on the whole image would, up to floating-point summation order, while reading the image tile by
tile: memory depends on the tile size, not the image size. ``tiled_predict`` does the same for
the forward pass. ``plan`` picks the tile size from a memory budget.

Typical use (one training step on a 16000 x 64000 region stored on disk)::

    image = np.load("image.npy", mmap_mode="r")        # (H, W, 3) uint8
    mask = np.load("mask.npy", mmap_mode="r")          # (H, W) uint8 {0, 1}
    optimizer.zero_grad()
    loss = tiled_backward(model, image, mask, loss="bce+dice", memory_budget="4GB")
    optimizer.step()
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ._memory import glibc
from ._units import format_bytes, parse_bytes
from .errors import ConfigError, InputError, PlanError, UnsupportedModelError
from .losses import DICE_SMOOTH, check_loss_name
from .model import UNet, UNetConfig

__all__ = [
    "Plan",
    "plan",
    "tiled_backward",
    "tiled_predict",
    "resolve_device",
    "check_local",
    "default_read_workers",
    "DEFAULT_MEMORY_BUDGET",
]

#: Budget used when none is given: small tiles are cache-friendly and leave room for the rest.
DEFAULT_MEMORY_BUDGET = 1 * 2**30

# NOTE [Exact tiling]
# Tiles partition the output: each core tile [y0, y1) x [x0, x1) has y0 and x0 on multiples of
# the total stride S, so every strided layer sees the whole-image sampling grid. The model runs
# on a crop that extends the core by a halo on each side (clipped at the image border, where the
# model's own zero padding then matches the whole image's). Outputs within the halo of a crop
# edge that is not an image edge are wrong (they saw zero padding instead of real neighbours)
# but they are discarded: only the core's logits enter the loss. Because the core's logits and
# their whole computation graph are identical to the whole image's, backpropagating the core's
# loss through the crop gives exactly its share of the whole-image gradient. The left/top halo
# is rounded up to a multiple of S to keep the crop origin on the grid.
#
# NOTE [Two-pass Dice]
# Soft Dice couples all pixels through I = sum(p*y), P = sum(p), Y = sum(y). Pass 1 runs the
# forward pass tile by tile without autograd to gather them. Then dDice/dp_i = A*y_i + B with
# A = -2/D, B = (2I + 1)/D^2, D = P + Y + 1, so pass 2 backpropagates, tile by tile, the
# surrogate A*sum_t(p*y) + B*sum_t(p) whose gradient is exactly the tile's share.

_LOCAL_MODULES = (
    nn.Conv2d,
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
    nn.Softplus, nn.Mish, nn.PReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish,
    nn.Sequential, nn.ModuleList,
)
_NON_LOCAL_REASONS = (
    (nn.modules.batchnorm._BatchNorm, "normalizes with statistics of the whole batch/image in training mode"),
    (nn.GroupNorm, "normalizes with statistics over the whole image"),
    (nn.modules.instancenorm._InstanceNorm, "normalizes with statistics over the whole image"),
    (nn.LayerNorm, "normalizes over whole feature maps"),
    (nn.modules.pooling._AdaptiveAvgPoolNd, "pools over the whole image"),
    (nn.modules.pooling._AdaptiveMaxPoolNd, "pools over the whole image"),
    (nn.MultiheadAttention, "attends over all positions"),
    (nn.Linear, "mixes positions along the width axis of an NCHW tensor"),
    (nn.modules.dropout._DropoutNd, "draws random masks that differ between tiles in training mode"),
)


def check_local(model: nn.Module) -> UNetConfig:
    """Check that ``model`` can be tiled exactly and return its config.

    Raises:
        UnsupportedModelError: naming the module path of the first layer that is not local
            (whole-image statistics, global pooling, attention, ...) or not a ``UNet``.
    """
    if not isinstance(model, UNet):
        raise UnsupportedModelError(
            f"the tiled engine needs a gigaseg.UNet (its config gives the stride and halo); "
            f"got {type(model).__name__}"
        )
    for path, module in model.named_modules():
        if path == "" or isinstance(module, _LOCAL_MODULES):
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise UnsupportedModelError(
                    f"module {path!r} (Conv2d) pads with {module.padding_mode!r}; tiling is exact only "
                    "with zero padding"
                )
            continue
        for kind, reason in _NON_LOCAL_REASONS:
            if isinstance(module, kind):
                if kind in (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd) and not module.training:
                    break  # eval-mode BatchNorm is an affine map and eval Dropout the identity
                raise UnsupportedModelError(
                    f"module {path!r} ({type(module).__name__}) {reason}, so the model cannot be "
                    "tiled exactly; remove it or use a local layer (gigaseg's UNet has no normalization)"
                )
        else:
            raise UnsupportedModelError(
                f"module {path!r} ({type(module).__name__}) is not known to be local; the tiled engine "
                "supports convolutions, pointwise activations and the UNet's own containers"
            )
    return model.config


def _parse_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device ("auto": cuda, then mps, then cpu), without checking that it
    is available (the planner may plan for a device this machine lacks)."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from exc


def resolve_device(device: str | torch.device | None, model: nn.Module | None = None) -> torch.device:
    """The torch device for ``device``: ``None`` = the model's, ``"auto"`` = cuda, then mps, then cpu."""
    if device is None:
        if model is not None:
            for p in model.parameters():
                return p.device
        return torch.device("cpu")
    dev = _parse_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but this PyTorch has no CUDA device; use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but MPS is not available here; use --device cpu or auto")
    return dev


# --- the planner ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How the engine tiles an image.

    Attributes:
        height, width: image size in pixels.
        tile: (th, tw) core tile size in pixels, multiples of the total stride.
        grid: (rows, cols) number of tiles.
        halo: receptive-field radius in pixels (each side of a crop).
        keep: what is kept between tiles.
        predicted_peak_bytes: the planner's estimate of the process's peak memory.
        memory_budget: the budget it had, in bytes.
        recompute: total crop pixels / image pixels (the halo overhead of one pass).
        mode: ``"train"`` or ``"predict"``.
        max_crop_pixels: the cap on a crop's pixels the tile was held under, if any
            (CUDA training; NOTE [CUDA crop cap]).
    """

    height: int
    width: int
    tile: tuple[int, int]
    grid: tuple[int, int]
    halo: int
    keep: str
    predicted_peak_bytes: int
    memory_budget: int
    recompute: float
    mode: str
    max_crop_pixels: int | None = None

    @property
    def n_tiles(self) -> int:
        return self.grid[0] * self.grid[1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_tiles"] = self.n_tiles
        return d


# Memory model. Peak = _BASE_BYTES (the Python + PyTorch process itself) + bytes per crop pixel
# * crop pixels. Bytes per pixel come from counting the float tensors alive at the peak of a
# tile's forward + backward (see _floats_per_pixel), calibrated against measured peaks by
# ``gigaseg bench step`` (benchmarks/RESULTS.md).
_BASE_BYTES = 256 * 2**20  # measured: ~150 MiB for Python + PyTorch + a small model
_SAFETY = 1.1  # measured peaks (paper preset, 1k-3k tiles) are 5-10% below the count


def _floats_per_pixel(config: UNetConfig, mode: str, kernels: bool = False) -> float:
    """Floats alive per input pixel of a crop at the peak of one tile (forward + backward);
    ``kernels``: a training tile on the compiled CPU kernels (NOTE [Kernel memory])."""
    c = (config.in_channels, *config.channels)
    if mode == "predict":
        # input and its uint8 crop, upsampled d1, the two partial convolutions of the head and
        # their sum, probabilities and their copy for the output (measured: ~17 for paper)
        full = 2 * (c[0] + c[1]) + 7
        low = 0.0
        jump = 1
        for i in range(config.depth):
            jump *= config.strides[i]
            low += 3 * (c[i + 1] + (c[i + 2] if i + 2 < len(c) else 0)) / jump**2
        return full + low
    # training: every saved activation plus gradients of the largest tensors at the peak of
    # the backward pass. Full resolution: the input, up(d1), the head's two partial outputs,
    # their gradients and up(d1)'s, the logits and their gradient, the mask and probabilities
    # (measured: ~26 floats per pixel for paper, i.e. 104 bytes).
    full = 2 if kernels else c[0] + c[1] + 2 * (c[1] + c[0]) + c[1] + 10
    low = 0.0
    jump = 1
    for i in range(config.depth):
        jump *= config.strides[i]
        deeper = c[i + 2] if i + 2 < len(c) else 0
        # conv out, act out, up(deeper), the skip, decoder conv out, act out, and their gradients
        low += 2 * (2 * c[i + 1] + deeper + (deeper + c[i + 1]) + 2 * c[i + 1]) / jump**2
    return full + low


def _crop_pixels(n: int, tile: int, lead: int, trail: int) -> int:
    """Sum over the tiles along one axis of the crop lengths (core plus clipped halos)."""
    t0 = np.arange(0, n, tile)
    t1 = np.minimum(t0 + tile, n)
    return int((np.minimum(n, t1 + trail) - np.maximum(0, t0 - lead)).sum())


def _halos(config: UNetConfig) -> tuple[int, int]:
    s = config.total_stride
    return math.ceil(config.halo / s) * s, config.halo


def _peak_bytes(config: UNetConfig, th: int, tw: int, itemsize: int, mode: str, kernels: bool = False) -> int:
    lead, trail = _halos(config)
    crop = (th + lead + trail) * (tw + lead + trail)
    # + the uint8 image crop and mask of this tile and of the next one (NOTE [Read ahead])
    per_pixel = _floats_per_pixel(config, mode, kernels) * itemsize * _SAFETY + 8
    return int(_BASE_BYTES + (_KERNELS_BYTES if kernels else 0) + per_pixel * crop)


# NOTE [Kernel memory]
# A training tile on the compiled CPU kernels (``gigaseg._cpu_kernels``) keeps no float tensor
# at full resolution but the logits of the core, which its loss gradient then overwrites: the
# crop itself is replaced by a uint8 copy by column phase (3 bytes a pixel, counted with the
# crop in the 8 bytes above), and everything else is at the first stride's resolution or
# below. numba adds ~50 MiB to the process (its import 25 MiB, LLVM's set-up at the first
# call 26 MiB; measured 2026-11-27), which the 48 MiB here and the safety margin cover, and the
# model a little more for what varies between processes. It counts 2 floats a pixel at full
# resolution, fitted to measured peaks (paper preset, RssAnon, ``gigaseg bench step``,
# 2026-11-27): crops of 1.9, 4.9, 32 and 71 MP peaked at 353, 409-416, 1120 and 2021 MiB,
# against 356, 436, 1174 and 2221 predicted (the per-pixel cost grows a little with the crop;
# a 152 MP crop took 3547 MiB against 4405 predicted).
_KERNELS_BYTES = 48 * 2**20


# NOTE [CUDA crop cap]
# Measured on an H100 (torch 2.11, CUDA 13, paper preset, 64 MP training steps): 0.41 s per
# step with 5440-pixel tiles (crops of about 5694^2 = 2^24.95 pixels) but 2.5 s with
# 5696-pixel tiles (5950^2 = 2^25.1 pixels), 4.4 s with 8000-pixel tiles, and 4.1 s for
# whole-image autograd: past about 2^25 pixels per crop, cuDNN's default heuristics pick a
# backward algorithm 6-10x slower (cudnn.benchmark finds a fast one there, but it takes
# 19.5 GiB of workspace). Forward-only prediction shows no such step (6208-pixel tiles: 406
# MP/s). So for CUDA training the planner also keeps each crop within 2^25 pixels, however
# large the memory budget; a tile given explicitly is used as given.
CUDA_MAX_TRAIN_CROP_PIXELS = 2**25


def plan(
    config: UNetConfig,
    height: int,
    width: int,
    *,
    memory_budget: int | str | None = None,
    mode: str = "train",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> Plan:
    """Choose a tile whose predicted peak memory fits ``memory_budget``: the largest one for
    prediction; for training, of the tiles that fit (for each tile height, the widest), the one
    that recomputes the fewest halo pixels (a step's time follows the crops' total area).

    Args:
        config: the model's config (stride and halo).
        height, width: image size in pixels.
        memory_budget: bytes or a string like ``"4GB"``; default ``DEFAULT_MEMORY_BUDGET``.
        mode: ``"train"`` (forward + backward) or ``"predict"`` (forward only).
        dtype: the model's floating-point type.
        device: where the model runs; for CUDA training the crop is also kept under
            ``CUDA_MAX_TRAIN_CROP_PIXELS`` (NOTE [CUDA crop cap]); CPU training with the
            compiled kernels needs less memory (NOTE [Kernel memory]). ``None``: assume neither.

    Raises:
        PlanError: when even the smallest tile does not fit; names the smallest budget that would.
    """
    if mode not in ("train", "predict"):
        raise ConfigError(f"unknown plan mode {mode!r}; choose 'train' or 'predict'")
    _check_size(height, width)
    budget = parse_bytes(memory_budget if memory_budget is not None else DEFAULT_MEMORY_BUDGET)
    s = config.total_stride
    itemsize = torch.empty((), dtype=dtype).element_size()
    h_max, w_max = _round_up(height, s), _round_up(width, s)
    lead, trail = _halos(config)
    cap = None
    kernels = False
    if mode == "train" and device is not None:
        dev = _parse_device(device)
        if dev.type == "cuda":
            cap = CUDA_MAX_TRAIN_CROP_PIXELS
        from ._cpu_kernels import eligible_config

        kernels = eligible_config(config, dtype, dev)

    def fits(th: int, tw: int) -> bool:
        crop = min(th + lead + trail, height) * min(tw + lead + trail, width)
        return _peak_bytes(config, th, tw, itemsize, mode, kernels) <= budget and (cap is None or crop <= cap)

    def shape_for(side: int) -> tuple[int, int]:
        # a square tile of area side^2, reshaped when the image is thinner than the tile
        th = min(side, h_max)
        tw = min(w_max, _round_up(max(side * side // th, s), s)) if th < side else min(side, w_max)
        if tw < side and th == side:
            th = min(h_max, _round_up(max(side * side // tw, s), s))
        return th, tw

    smallest = _peak_bytes(config, *shape_for(s), itemsize, mode, kernels)
    if smallest > budget:
        raise PlanError(
            f"no tiling fits a memory budget of {format_bytes(budget)}: the smallest tile "
            f"({s} x {s} pixels plus a {config.halo}-pixel halo) needs about {format_bytes(smallest)}; "
            f"give --memory-budget {math.ceil(smallest / 2**20)}MiB or more"
        )
    lo, hi = 1, max(h_max, w_max) // s
    while lo < hi:  # largest side (in strides) that fits
        mid = (lo + hi + 1) // 2
        if fits(*shape_for(mid * s)):
            lo = mid
        else:
            hi = mid - 1
    th, tw = shape_for(lo * s)
    if mode == "train":
        th, tw = _least_recompute(height, width, s, lead, trail, fits, (th, tw))
    return _make_plan(config, height, width, (th, tw), budget, mode, itemsize, cap, kernels)


def _least_recompute(height, width, s, lead, trail, fits, square) -> tuple[int, int]:
    """Of the tiles that fit (for each height, the widest), the one whose crops have the least
    total area: a training step's time follows it (halo pixels are computed again for every
    tile), and a tile that divides the image evenly can beat a larger one. Ties go to the
    larger tile; ``square`` (the largest square-ish tile that fits) is a candidate too."""
    def area(shape: tuple[int, int]) -> int:
        return _crop_pixels(height, shape[0], lead, trail) * _crop_pixels(width, shape[1], lead, trail)

    best, best_area = square, area(square)
    for th in range(s, _round_up(height, s) + 1, s):
        if not fits(th, s):
            break
        lo, hi = 1, _round_up(width, s) // s
        while lo < hi:  # widest tile of this height that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(th, mid * s) else (lo, mid - 1)
        shape = (th, lo * s)
        a = area(shape)
        if a < best_area or (a == best_area and shape[0] * shape[1] > best[0] * best[1]):
            best, best_area = shape, a
    return best


def _make_plan(config, height, width, tile, budget, mode, itemsize, max_crop_pixels=None, kernels=False) -> Plan:
    th, tw = tile
    lead, trail = _halos(config)
    recompute = _crop_pixels(height, th, lead, trail) * _crop_pixels(width, tw, lead, trail) / (height * width)
    return Plan(
        height=height,
        width=width,
        tile=(th, tw),
        grid=(math.ceil(height / th), math.ceil(width / tw)),
        halo=config.halo,
        keep="nothing between tiles: each tile is recomputed from the image with its halo",
        predicted_peak_bytes=_peak_bytes(config, th, tw, itemsize, mode, kernels),
        memory_budget=budget,
        recompute=round(recompute, 4),
        mode=mode,
        max_crop_pixels=max_crop_pixels,
    )


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise InputError(f"the image is empty ({height} x {width} pixels); give an image of at least 1 x 1")


# --- input validation ----------------------------------------------------------------------


def _check_image(image: Any) -> tuple[int, int]:
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(
            f"image must be an (H, W, 3) uint8 array-like (numpy array, np.memmap, zarr array); "
            f"got {type(image).__name__}"
        )
    if len(shape) != 3 or shape[2] != 3:
        raise InputError(
            f"image must have shape (H, W, 3) (RGB, channels last); got shape {tuple(shape)}. "
            "Drop an alpha channel with image[..., :3]; convert greyscale to RGB"
        )
    if np.dtype(dtype) != np.uint8:
        raise InputError(
            f"image must be uint8 (0-255), got dtype {np.dtype(dtype)}; "
            "convert with (image * 255).round().astype(np.uint8) if it holds floats in [0, 1]"
        )
    _check_size(int(shape[0]), int(shape[1]))
    return int(shape[0]), int(shape[1])


def _check_mask(mask: Any, height: int, width: int) -> None:
    shape = getattr(mask, "shape", None)
    dtype = getattr(mask, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(f"mask must be an (H, W) uint8 array-like; got {type(mask).__name__}")
    if tuple(shape) != (height, width):
        raise InputError(
            f"mask shape {tuple(shape)} does not match the image's (H, W) = ({height}, {width})"
        )
    if np.dtype(dtype) != np.uint8:
        raise InputError(f"mask must be uint8 with values 0 and 1, got dtype {np.dtype(dtype)}")


def _check_mask_values(mask_tile: np.ndarray, y0: int, x0: int) -> None:
    if mask_tile.size and mask_tile.max() > 1:
        bad = np.argwhere(mask_tile > 1)[0]
        raise InputError(
            f"mask value {int(mask_tile[bad[0], bad[1]])} at (x={x0 + bad[1]}, y={y0 + bad[0]}) is not "
            "0 or 1; training masks hold 0 (background) and 1 (tissue) - map 255 to 1, or crop out "
            "ignore (255) pixels"
        )


def _tile_size(tile: int | Sequence[int], config: UNetConfig) -> tuple[int, int]:
    th, tw = (tile, tile) if isinstance(tile, (int, np.integer)) else tuple(tile)
    s = config.total_stride
    for t in (th, tw):
        if t < 1 or t % s:
            nearest = max(s, round(t / s) * s)
            raise ConfigError(
                f"tile size {t} is not a positive multiple of the model's total stride {s}; "
                f"use {nearest}"
            )
    return int(th), int(tw)


# --- tiles -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tile:
    y0: int  # core, image pixels
    y1: int
    x0: int
    x1: int
    cy0: int  # crop, image pixels
    cy1: int
    cx0: int
    cx1: int

    @property
    def core_in_crop(self) -> tuple[slice, slice]:
        return (slice(self.y0 - self.cy0, self.y1 - self.cy0), slice(self.x0 - self.cx0, self.x1 - self.cx0))


def _tiles(height: int, width: int, th: int, tw: int, config: UNetConfig) -> Iterator[_Tile]:
    lead, trail = _halos(config)
    for y0 in range(0, height, th):
        y1 = min(y0 + th, height)
        for x0 in range(0, width, tw):
            x1 = min(x0 + tw, width)
            yield _Tile(y0, y1, x0, x1, max(0, y0 - lead), min(height, y1 + trail),
                        max(0, x0 - lead), min(width, x1 + trail))


def _tile_list(height: int, width: int, th: int, tw: int, config: UNetConfig) -> list[_Tile]:
    """The tiles, grouped by crop shape (row-major within a shape) so that consecutive tiles
    allocate alike (NOTE [Heap reuse]); the order changes only the summation order."""
    tiles = list(_tiles(height, width, th, tw, config))
    return sorted(tiles, key=lambda t: (t.cy1 - t.cy0, t.cx1 - t.cx0))


def _read_crop(image: Any, t: _Tile) -> np.ndarray:
    return _owned(image[t.cy0:t.cy1, t.cx0:t.cx1])


def _as_input(crop: np.ndarray, device: torch.device, dtype: torch.dtype, multiple: int) -> torch.Tensor:
    return _to_input(torch.from_numpy(crop).to(device), dtype, multiple)


def _core_logits(model: nn.Module, crop: np.ndarray, core: tuple[slice, slice], device: torch.device,
                 dtype: torch.dtype, fast: bool) -> torch.Tensor:
    """Logits of the uint8 ``crop`` over its ``core`` (no gradients): ``model(crop / 255)`` cropped,
    or the compiled CPU kernels' equal result when ``fast`` (see ``gigaseg._cpu_kernels``)."""
    if fast:
        from ._cpu_kernels import predict_core

        z = predict_core(model, crop, *core)
        if z is not None:
            return z
    return model(_as_input(crop, device, dtype, model.config.total_stride))[0, 0][core]


def _from_logits(z: torch.Tensor, *, probabilities: bool = True, uint8: bool = False) -> np.ndarray:
    """Logits -> numpy logits, probabilities, or ``round(255 p)`` as uint8 (float32 at least:
    a bfloat16 or float16 model's logits are widened before the sigmoid)."""
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    p = torch.sigmoid(z) if probabilities else z
    if uint8:
        p = (p if probabilities else p.clone()).mul_(255).round_().to(torch.uint8)  # in place: 2x faster
    return p.cpu().numpy()


def _fast_cpu(model: nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether inference of ``model`` runs on the compiled CPU kernels (``gigaseg._cpu_kernels``)."""
    from ._cpu_kernels import eligible

    return eligible(model, dtype, device)


# NOTE [Read ahead]
# Reading a crop is numpy work on one core (a memory-mapped or compressed array, a dihedral
# transform, colour jitter, the mask check) that would leave the other cores idle between
# tiles; the next tiles' crops and masks are read in background threads while the model runs on
# the current one. numpy releases the GIL in its copies and gathers, so several readers run in
# parallel. One reader suffices on the CPU, where the model itself keeps the cores busy. On a GPU
# one reader is the bottleneck: an augmented training view costs ~5 ms per megapixel on one core
# (~50 before NOTE [Colour table] and NOTE [View kernels] in the dataset), as much as the H100's
# tiled step, so accelerators get several (``default_read_workers``).
# Tiles are still yielded in order, so results do not depend on the number of readers. Each
# reader holds one crop in host memory. Errors of a reader are raised in the caller, at the tile
# that caused them.
MAX_READ_WORKERS = 8


def default_read_workers(device: str | torch.device) -> int:
    """Background crop readers for ``device``: 1 on the CPU; on an accelerator one per spare
    core, at most ``MAX_READ_WORKERS``."""
    if torch.device(device).type == "cpu":
        return 1
    return max(1, min(MAX_READ_WORKERS, (os.cpu_count() or 2) - 1))


def _check_read_workers(read_workers: int | None, dev: torch.device) -> int:
    if read_workers is None:
        return default_read_workers(dev)
    if isinstance(read_workers, bool) or not isinstance(read_workers, (int, np.integer)) or read_workers < 1:
        raise ConfigError(f"read_workers must be a positive integer, got {read_workers!r}")
    return int(read_workers)


def _read_ahead(tiles: Sequence[_Tile], read, workers: int = 1) -> Iterator[tuple[_Tile, Any]]:
    """Yield ``(tile, read(tile))`` for each tile in order, with up to ``workers`` reads of the
    following tiles running in background threads."""
    if not tiles:
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gigaseg-read") as pool:
        pending = collections.deque(pool.submit(read, t) for t in tiles[:workers])
        try:
            for i, t in enumerate(tiles):
                box = [pending.popleft().result()]
                if i + workers < len(tiles):
                    pending.append(pool.submit(read, tiles[i + workers]))
                yield t, box.pop()  # keep no reference: the caller may free the crop early
        finally:  # an error or an abandoned generator: drop the reads not yet started
            for f in pending:
                f.cancel()


# NOTE [Crop cache]
# The two-pass Dice reads every crop twice. When a read costs more than a copy (a zarr array
# decompresses; a training view transposes and colour-jitters, ~150 ms per 2400^2 crop on one
# core, a third of a 2-core machine's work in an augmented step) pass 1 also writes its crops
# and masks, byte for byte, to an unlinked temporary file (TMPDIR; page cache, not process
# memory) and pass 2 reads them back from there. If the file cannot be written (disk full),
# the cache turns itself off and pass 2 reads the image again: the same bytes either way. It is
# not used when the temporary folder lacks room for all the crops (plus 1 GiB) or is a RAM
# file system (tmpfs: the crops would then take memory, which the budget promises not to);
# GIGASEG_SCRATCH names another folder.
class _CropCache:
    """Arrays of pass 1 kept by tile in an unlinked temporary file for pass 2. Thread-safe:
    the reader thread may still be writing when an error makes the caller close it."""

    def __init__(self, folder: str) -> None:
        self._lock = threading.Lock()
        self._offset = 0
        self._index: dict[_Tile, list[tuple[int, tuple[int, ...], np.dtype]]] = {}
        try:
            self._file: Any = tempfile.TemporaryFile(prefix="gigaseg-crops-", dir=folder)
        except OSError:
            self._file = None

    def put(self, key: _Tile, arrays: Sequence[np.ndarray]) -> None:
        with self._lock:
            if self._file is None:
                return
            fd, entries = self._file.fileno(), []
            try:
                for a in arrays:
                    view = memoryview(np.ascontiguousarray(a)).cast("B")
                    done = 0
                    while done < len(view):
                        done += os.pwrite(fd, view[done:], self._offset + done)
                    entries.append((self._offset, a.shape, a.dtype))
                    self._offset += len(view)
            except OSError:  # no space left: forget everything, pass 2 reads the image
                self._close()
                return
            self._index[key] = entries

    def get(self, key: _Tile) -> list[np.ndarray] | None:
        with self._lock:
            entries = self._index.get(key) if self._file is not None else None
            if entries is None:
                return None
            out = []
            for offset, shape, dtype in entries:
                a = np.empty(shape, dtype)
                view = memoryview(a).cast("B")
                done = 0
                while done < len(view):
                    n = os.preadv(self._file.fileno(), [view[done:]], offset + done)
                    if n <= 0:
                        return None
                    done += n
                out.append(a)
            return out

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> "_CropCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._index.clear()


def _expensive_to_read(image: Any) -> bool:
    """Whether reading a crop of ``image`` costs more than a copy (NOTE [Crop cache])."""
    return not isinstance(image, np.ndarray)


_RAM_FILE_SYSTEMS = {"tmpfs", "ramfs", "devtmpfs"}


def _file_system_type(folder: str) -> str | None:
    """The type of the file system holding ``folder`` (Linux /proc/self/mounts), else None."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    folder = os.path.realpath(folder)
    best, kind = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (folder == point or folder.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _crop_cache_folder(tiles: Sequence[_Tile]) -> str | None:
    """Where pass 1 may keep its crops (NOTE [Crop cache]), or None when nowhere suits."""
    explicit = os.environ.get("GIGASEG_SCRATCH")
    folder = explicit or tempfile.gettempdir()
    if not explicit and _file_system_type(folder) in _RAM_FILE_SYSTEMS:
        return None
    need = sum((t.cy1 - t.cy0) * (t.cx1 - t.cx0) * 3 + (t.y1 - t.y0) * (t.x1 - t.x0) for t in tiles)  # RGB + mask
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    return folder if free >= need + 2**30 else None


def _owned(block: Any) -> np.ndarray:
    """``block`` as a C-contiguous, writeable numpy array (torch.from_numpy wants one)."""
    block = np.asarray(block)
    if not (block.flags.c_contiguous and block.flags.writeable):
        block = np.array(block, order="C")
    return block


def _to_input(hwc: torch.Tensor, dtype: torch.dtype, multiple: int = 1) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') floats in [0, 1], channels-last, as ``image / 255``,
    zero-padded at the bottom and right to H', W' multiples of ``multiple``.

    Padding here, to the model's total stride, is what the model would do itself (crops start
    on multiples of the stride, so the padded rows are those of the whole image or lie beyond
    the halo), but it saves the model a zero-fill and a copy of its full-resolution input.
    """
    h, w, c = hwc.shape
    hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    x = torch.empty((1, c, hp, wp), dtype=dtype, device=hwc.device, memory_format=torch.channels_last)
    if hp > h:
        x[:, :, h:].zero_()
    if wp > w:
        x[:, :, :h, w:].zero_()
    x[:, :, :h, :w].copy_(hwc.permute(2, 0, 1).unsqueeze(0)).div_(255)
    return x


def _read_mask(mask: Any, t: _Tile) -> np.ndarray:
    m = _owned(mask[t.y0:t.y1, t.x0:t.x1])
    _check_mask_values(m, t.y0, t.x0)
    return m


# NOTE [Heap reuse]
# Every tile allocates the same large tensors again. glibc serves allocations above its mmap
# threshold (at most 32 MiB) with fresh mmap'd pages and unmaps them on free, so each tile
# page-faults its whole working set in again: ~6 million faults in a 256 MP step, ~10% of its
# time. Serving large blocks from the heap and not trimming it keeps the pages of one tile for
# the next. Tiles of another crop shape (at the image's edges) would then split and fragment
# those blocks and grow the heap (+15% peak in a 256 MP step), so when the crop shape changes
# the engine first hands the free pages back (malloc_trim): the next tile faults its working
# set in once, and tiles of one shape reuse it. The setting is process-wide, so it is made
# once, on the first call of the engine, not at import. GIGASEG_NO_HEAP_REUSE=1 leaves glibc's
# defaults (for comparisons: whole-image autograd, ``gigaseg bench step --naive``, then peaks at
# 2.4 GiB instead of 3.4-4.6 GiB at 64 MP, but takes 4.1 s per step instead of 3.0 s).
_LIBC: Any = None
_HEAP_TUNED = False
_NO_HEAP_REUSE = "GIGASEG_NO_HEAP_REUSE"


def reuse_freed_memory() -> bool:
    """Keep freed large blocks in the process heap for the next tile (glibc only; once; not
    with GIGASEG_NO_HEAP_REUSE=1)."""
    global _HEAP_TUNED, _LIBC
    if _HEAP_TUNED:
        return _LIBC is not None
    _HEAP_TUNED = True
    if os.environ.get(_NO_HEAP_REUSE, "") not in ("", "0"):
        return False
    libc = glibc()  # None when not glibc: nothing to do
    m_trim_threshold, m_mmap_max = -1, -4
    if libc is not None and libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**30):
        _LIBC = libc
    return _LIBC is not None


class _HeapShapes:
    """Trims the heap when the crop shape changes (see NOTE [Heap reuse]). One per process,
    so that repeated calls on same-shaped tiles (training steps, strips) keep their pages."""

    def __init__(self) -> None:
        self.shape: tuple[int, int] | None = None

    def __call__(self, t: "_Tile") -> None:
        shape = (t.cy1 - t.cy0, t.cx1 - t.cx0)
        if shape != self.shape:
            self.shape = shape
            if _LIBC is not None:
                _LIBC.malloc_trim(0)


_HEAP = _HeapShapes()


def _prepare(model, image, tile, memory_budget, device, mode):
    reuse_freed_memory()
    config = check_local(model)
    height, width = _check_image(image)
    dev = resolve_device(device, model)
    params = list(model.parameters())
    if params and params[0].device != dev:
        model.to(dev)
        params = list(model.parameters())
    dtype = params[0].dtype if params else torch.float32
    if tile is None:
        th, tw = plan(config, height, width, memory_budget=memory_budget, mode=mode, dtype=dtype, device=dev).tile
    else:
        th, tw = _tile_size(tile, config)
    return config, height, width, dev, dtype, th, tw


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return _counted(iterable, tqdm(total=total, desc=desc, unit="tile", delay=2.0, leave=False))


def _counted(iterable, bar):
    """Yield the items of ``iterable``, advancing ``bar``, without keeping a reference to the
    current one (a tile's crop may be freed by the caller before the next is read)."""
    with bar:
        for box in map(lambda item: [item], iterable):
            yield box.pop()
            bar.update()


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


def tiled_predict(
    model: nn.Module,
    image: Any,
    *,
    out: Any = None,
    memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    logits: bool = False,
    read_workers: int | None = None,
) -> Any:
    """Per-pixel tissue probabilities ``sigmoid(model(image / 255))``, computed tile by tile.

    Args:
        model: a ``gigaseg.UNet``.
        image: (H, W, 3) uint8 RGB array-like, read tile by tile.
        out: optional (H, W) array-like to write into (e.g. ``np.memmap`` or zarr): float
            arrays get probabilities, uint8 arrays get ``round(255 * p)``. Default: a new
            numpy array, float64 for a float64 model, else float32.
        memory_budget, tile, device, progress, read_workers: as for ``tiled_backward``.
        logits: return the logits ``model(image / 255)`` instead of probabilities.

    A bfloat16 or float16 model runs in that dtype; its logits are turned into float32
    before the sigmoid. On the CPU a float32 model runs on gigaseg's compiled kernels where
    numba is installed (``gigaseg._cpu_kernels``: equal to the model to float32 rounding,
    ~1.5x faster); ``GIGASEG_NO_CPU_KERNELS=1`` keeps PyTorch's.

    Returns:
        ``out`` (or the new array), (H, W).
    """
    config, height, width, dev, dtype, th, tw = _prepare(model, image, tile, memory_budget, device, "predict")
    workers = _check_read_workers(read_workers, dev)
    if out is None:
        out = np.empty((height, width), dtype=np.float64 if dtype == torch.float64 else np.float32)
    elif tuple(getattr(out, "shape", ())) != (height, width):
        raise InputError(f"out must have shape (H, W) = ({height}, {width}), got {getattr(out, 'shape', None)}")
    out_dtype = np.dtype(out.dtype)
    if not (out_dtype.kind == "f" or (out_dtype == np.uint8 and not logits)):
        raise InputError(
            f"out must be a float array{'' if logits else ' or a uint8 array (probabilities * 255)'}, "
            f"got dtype {out_dtype}"
        )
    tiles = _tile_list(height, width, th, tw, config)
    fast = _fast_cpu(model, dtype, dev)
    with torch.no_grad():
        for t, crop in _progress(_read_ahead(tiles, lambda t: _read_crop(image, t), workers), len(tiles), progress, "predict"):
            _HEAP(t)
            z = _core_logits(model, crop, t.core_in_crop, dev, dtype, fast)
            del crop
            out[t.y0:t.y1, t.x0:t.x1] = _from_logits(z, probabilities=not logits, uint8=out_dtype == np.uint8)
    return out
