"""The memory planner: which tile fits a budget, and the checks that a model can be tiled.

``plan`` picks the core tile size from a memory budget; ``check_local`` refuses a model with
a layer that is not local; ``resolve_device`` turns ``"auto"`` into a device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .._units import format_bytes, parse_bytes
from ..errors import ConfigError, PlanError, UnsupportedModelError
from ..model import UNet, UNetConfig
from .arrays import ImageLike
from .locality import NON_LOCAL, Geometry, analyze
from .reading import reuse_freed_memory
from .tiles import _check_channels, _check_image, _check_size, _halos

#: Budget used when none is given: small tiles are cache-friendly and leave room for the rest.
DEFAULT_MEMORY_BUDGET = 1 * 2**30

_LOCAL_MODULES = (
    nn.Conv2d,
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
    nn.Softplus, nn.Mish, nn.PReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish,
    nn.Sequential, nn.ModuleList,
)


def check_local(model: nn.Module) -> UNetConfig | Geometry:
    """Check that ``model`` can be tiled exactly and return its geometry: a ``gigaseg.UNet``'s
    config, or for any other module the ``Geometry`` that ``locality.analyze`` derives from its
    traced graph (total stride, halo, channels) and checks on the model itself.

    Raises:
        UnsupportedModelError: naming the module path of the first layer that is not local
            (whole-image statistics, global pooling, attention, ...), or a model whose output is
            not at the input's full resolution.
    """
    if getattr(model, "tiled_slide_head", False):  # gigaseg.SlideClassifier (NOTE [Slide heads])
        raise UnsupportedModelError(
            "a SlideClassifier gives one vector per image, not a map: train it with tiled_backward(classifier, "
            "image, label, loss='ce') and predict with tiled_predict(classifier, image); to plan or iterate "
            "its tiles, give its trunk (plan(classifier.trunk, ...))")
    if not isinstance(model, UNet):
        geometry = analyze(model)
        if geometry.out_jump != 1:
            raise UnsupportedModelError(
                f"module '' ({type(model).__name__}) outputs at 1/{geometry.out_jump} of the input's resolution; "
                "tiled_backward and tiled_predict need one output per input pixel (upsample the output, or "
                "use a slide-level model for an image-level label)")
        return geometry
    for path, module in model.named_modules():
        if path == "" or isinstance(module, _LOCAL_MODULES):
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise UnsupportedModelError(
                    f"module {path!r} (Conv2d) pads with {module.padding_mode!r}; tiling is exact only "
                    "with zero padding"
                )
            continue
        for kind, reason in NON_LOCAL:
            if isinstance(module, kind):
                if kind in (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd) and not module.training:
                    break  # eval-mode BatchNorm is an affine map and eval Dropout the identity
                raise UnsupportedModelError(
                    f"module {path!r} ({type(module).__name__}) {reason}, so the model cannot be "
                    "tiled exactly; remove it or use a local layer (gigaseg's UNet has no normalization)"
                )
        else:
            raise UnsupportedModelError(
                f"module {path!r} ({type(module).__name__}) is not known to be local inside a gigaseg.UNet (its "
                "config gives the stride and halo); the UNet takes convolutions and pointwise activations - "
                "write other layers into a model of your own, whose geometry the engine derives"
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
        raise ConfigError(
            "device 'cuda' was asked for but this PyTorch has no CUDA device; use `device='cpu'` or 'auto'"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but MPS is not available here; use `device='cpu'` or 'auto'")
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


def _floats_per_pixel(config: UNetConfig | Geometry, mode: str, kernels: bool = False) -> float:
    """Floats alive per input pixel of a crop at the peak of one tile (forward + backward);
    ``kernels``: a training tile on the compiled CPU kernels (NOTE [Kernel memory])."""
    if isinstance(config, Geometry):
        # a model of the user's: every tensor of its forward pass (the probe's count), its input,
        # and in training their gradients (2.25 x: the count with the gradients measured a little
        # over 2 x on a 340k-pixel crop) and the loss's C-channel temporaries. Measured peaks of
        # training steps are 0.64-0.94 x the prediction (benchmarks/any-model/memory.json); the
        # prediction of a forward pass is not yet measured
        if mode == "predict":
            return config.floats_per_pixel + 2 * config.in_channels + 4 * config.out_channels
        return 2.25 * config.floats_per_pixel + 2 * config.in_channels + 8 * config.out_channels
    c = (config.in_channels, *config.channels)
    # C >= 2 output channels: each full-resolution tensor of the head and the loss holds C floats a
    # pixel (the head's partial outputs, logits, probabilities, their gradients and the loss's
    # temporaries; an estimate, not yet measured), one of the other terms below
    classes = config.out_channels - 1
    if mode == "predict":
        # input and its uint8 crop, upsampled d1, the two partial convolutions of the head and
        # their sum, probabilities and their copy for the output (measured: ~17 for paper)
        full = 2 * (c[0] + c[1]) + 7 + 5 * classes
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
    full = 2 if kernels else c[0] + c[1] + 2 * (c[1] + c[0]) + c[1] + 10 + 12 * classes
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


def _peak_bytes(config: UNetConfig | Geometry, th: int, tw: int, itemsize: int, mode: str,
                kernels: bool = False, image: tuple[int, int] | None = None) -> int:
    """Predicted peak of a tile ``th`` x ``tw``; ``image``: the image's height and width rounded up to
    the stride, which no crop exceeds (halos are clipped at its borders: NOTE [Clipped crops])."""
    lead, trail = _halos(config)
    crop_h, crop_w = th + lead + trail, tw + lead + trail
    if image is not None:
        crop_h, crop_w = min(crop_h, image[0]), min(crop_w, image[1])
    crop = crop_h * crop_w
    # + the uint8 image crop and mask of this tile and of the next one (NOTE [Read ahead])
    per_pixel = _floats_per_pixel(config, mode, kernels) * itemsize * _SAFETY + 8
    return int(_BASE_BYTES + (_KERNELS_BYTES if kernels else 0) + per_pixel * crop)


# NOTE [Clipped crops]
# A tile's crop is its core plus the halo on each side, clipped at the image's borders, so no crop
# is larger than the image (rounded up to the stride, which a model's own padding may add). The
# prediction counts the largest crop, and for an image of one or two tiles a side that is the
# clipped one: counting both halos whole predicted 1.44 GB for one 1024 x 1024 training tile of
# the built-in model deepened to a 1,023-pixel receptive field, which split the region into 3
# tiles (2.6 x the pixels, 3 x the step time) under the 1 GiB default, where one tile peaked at
# 0.4 GB. Images of three or more tiles a side have unclipped interior crops: their plans are
# unchanged.


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
    config: UNetConfig | Geometry | nn.Module,
    height: int,
    width: int,
    *,
    memory_budget: int | str | None = None,
    mode: str = "train",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    ranks: int = 1,
) -> Plan:
    """Choose a tile whose predicted peak memory fits ``memory_budget``: the largest one for
    prediction; for training, of the tiles that fit (for each tile height, the widest), the one
    that recomputes the fewest halo pixels (a step's time follows the crops' total area).

    Args:
        config: the model's config (stride and halo), its ``Geometry``, or the model itself
            (``check_local`` gives the geometry).
        height, width: image size in pixels.
        memory_budget: bytes or a string like ``"4GB"``; default ``DEFAULT_MEMORY_BUDGET``.
        mode: ``"train"`` (forward + backward) or ``"predict"`` (forward only).
        dtype: the model's floating-point type.
        device: where the model runs; for CUDA training the crop is also kept under
            ``CUDA_MAX_TRAIN_CROP_PIXELS`` (NOTE [CUDA crop cap]); CPU training with the
            compiled kernels needs less memory (NOTE [Kernel memory]). ``None``: assume neither.
        ranks: processes that share the tiles of a training step (``tiled_backward``'s
            ``group``): the tile then makes the largest rank's share of crop pixels the
            smallest, rather than the total (NOTE [Balanced tiles]).

    Raises:
        PlanError: when even the smallest tile does not fit; names the smallest budget that would.
    """
    if mode not in ("train", "predict"):
        raise ConfigError(f"unknown plan mode {mode!r}; choose 'train' or 'predict'")
    if isinstance(config, nn.Module):
        config = check_local(config)
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

        kernels = isinstance(config, UNetConfig) and eligible_config(config, dtype, dev)

    def fits(th: int, tw: int) -> bool:
        crop = min(th + lead + trail, height) * min(tw + lead + trail, width)
        return (_peak_bytes(config, th, tw, itemsize, mode, kernels, (h_max, w_max)) <= budget
                and (cap is None or crop <= cap))

    def shape_for(side: int) -> tuple[int, int]:
        # a square tile of area side^2, reshaped when the image is thinner than the tile
        th = min(side, h_max)
        tw = min(w_max, _round_up(max(side * side // th, s), s)) if th < side else min(side, w_max)
        if tw < side and th == side:
            th = min(h_max, _round_up(max(side * side // tw, s), s))
        return th, tw

    smallest = _peak_bytes(config, *shape_for(s), itemsize, mode, kernels, (h_max, w_max))
    if smallest > budget:
        raise PlanError(
            f"no tiling fits a memory budget of {format_bytes(budget)}: the smallest tile "
            f"({s} x {s} pixels plus a {config.halo}-pixel halo) needs about {format_bytes(smallest)}; "
            f"give `memory_budget='{math.ceil(smallest / 2**20)}MiB'` or more"
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
        th, tw = _least_recompute(height, width, s, lead, trail, fits, (th, tw), max(int(ranks), 1))
    return _make_plan(config, height, width, (th, tw), budget, mode, itemsize, cap, kernels)


def _least_recompute(height: int, width: int, s: int, lead: int, trail: int, fits: Callable[[int, int], bool],
                     square: tuple[int, int], ranks: int = 1) -> tuple[int, int]:
    """Of the tiles that fit (for each height, the widest), the one whose crops have the least
    total area: a training step's time follows it (halo pixels are computed again for every
    tile), and a tile that divides the image evenly can beat a larger one. Ties go to the
    larger tile; ``square`` (the largest square-ish tile that fits) is a candidate too. With
    ``ranks`` > 1, the one whose largest share is the smallest (NOTE [Balanced tiles])."""
    def area(shape: tuple[int, int]) -> int:
        return _crop_pixels(height, shape[0], lead, trail) * _crop_pixels(width, shape[1], lead, trail)

    candidates = [square]
    for th in range(s, _round_up(height, s) + 1, s):
        if not fits(th, s):
            break
        lo, hi = 1, _round_up(width, s) // s
        while lo < hi:  # widest tile of this height that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(th, mid * s) else (lo, mid - 1)
        candidates.append((th, lo * s))
        if ranks > 1:  # narrower tiles too, whose count is a small multiple of the ranks
            rows = -(-height // th)
            for k in range(1, 5):
                tw = _round_up(-(-width // -(-k * ranks // rows)), s)
                if tw < lo * s:
                    candidates.append((th, tw))
    if ranks > 1:
        return _balanced(height, width, lead, trail, candidates, ranks)
    best, best_area = square, area(square)
    for shape in candidates[1:]:
        a = area(shape)
        if a < best_area or (a == best_area and shape[0] * shape[1] > best[0] * best[1]):
            best, best_area = shape, a
    return best


# NOTE [Balanced tiles]
# When ``ranks`` processes share a step's tiles (split by cost, NOTE [Distributed step]), the step
# takes as long as the largest share, not the total over ranks: the 3 tiles of a 64 MP step give
# one of 2 ranks 62% of the crop pixels. Of the candidates (for each tile height, the widest that
# fits the budget, and the narrower ones that make the tile count 1-4 times the ranks), the plan
# then takes the one whose largest share of crop pixels, under the same greedy split as the
# engine's, is the smallest; ties go to the least total, then to the larger tile. Candidates are
# tried in the order of a lower bound (the larger of total / ranks and the largest crop) and the
# search stops when the bound passes the best share found.
def _balanced(height: int, width: int, lead: int, trail: int, candidates: list[tuple[int, int]],
              ranks: int) -> tuple[int, int]:
    from .distributed import split_by_cost

    def sides(n: int, t: int) -> np.ndarray:
        t0 = np.arange(0, n, t)
        out: np.ndarray = np.minimum(n, np.minimum(t0 + t, n) + trail) - np.maximum(0, t0 - lead)
        return out

    scored = []
    for shape in candidates:
        costs = np.outer(sides(height, shape[0]), sides(width, shape[1])).ravel()
        total = int(costs.sum())
        scored.append((max(-(-total // ranks), int(costs.max())), total, -shape[0] * shape[1], shape, costs))
    scored.sort(key=lambda c: c[:3])
    best: tuple[int, int, int, tuple[int, int]] | None = None
    for bound, total, neg_size, shape, costs in scored:
        if best is not None and bound > best[0]:
            break
        share = max(int(costs[part].sum()) for part in split_by_cost(costs.tolist(), ranks) if part)
        key = (share, total, neg_size, shape)
        if best is None or key[:3] < best[:3]:
            best = key
    assert best is not None
    return best[3]


def _make_plan(config: UNetConfig | Geometry, height: int, width: int, tile: tuple[int, int], budget: int, mode: str,
               itemsize: int, max_crop_pixels: int | None = None, kernels: bool = False) -> Plan:
    th, tw = tile
    lead, trail = _halos(config)
    stride = config.total_stride
    recompute = _crop_pixels(height, th, lead, trail) * _crop_pixels(width, tw, lead, trail) / (height * width)
    return Plan(
        height=height,
        width=width,
        tile=(th, tw),
        grid=(math.ceil(height / th), math.ceil(width / tw)),
        halo=config.halo,
        keep="nothing between tiles: each tile is recomputed from the image with its halo",
        predicted_peak_bytes=_peak_bytes(config, th, tw, itemsize, mode, kernels,
                                         (_round_up(height, stride), _round_up(width, stride))),
        memory_budget=budget,
        recompute=round(recompute, 4),
        mode=mode,
        max_crop_pixels=max_crop_pixels,
    )


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def check_tile(tile: int | Sequence[int], config: UNetConfig | Geometry) -> tuple[int, int]:
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


def _prepare(
    model: nn.Module, image: ImageLike, tile: int | Sequence[int] | None, memory_budget: int | str | None,
    device: str | torch.device | None, mode: str, ranks: int = 1,
) -> tuple[UNetConfig | Geometry, int, int, torch.device, torch.dtype, int, int]:
    """What a call of the engine starts with: checks ``model`` and ``image``, moves the model
    to ``device``, and returns the model's config (``Geometry`` for a model that is not a
    ``gigaseg.UNet``), the image's height and width, the device, the model's dtype and the core
    tile (th, tw), planned unless ``tile`` gives it."""
    reuse_freed_memory()
    config = check_local(model)
    height, width = _check_image(image)
    _check_channels(image, config.in_channels)
    dev = resolve_device(device, model)
    params = list(model.parameters())
    if params and params[0].device != dev:
        model.to(dev)
        params = list(model.parameters())
    dtype = params[0].dtype if params else torch.float32
    if tile is None:
        th, tw = plan(config, height, width, memory_budget=memory_budget, mode=mode, dtype=dtype, device=dev,
                      ranks=ranks).tile
    else:
        th, tw = check_tile(tile, config)
    return config, height, width, dev, dtype, th, tw
