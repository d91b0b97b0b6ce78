"""The tiled forward pass: ``iter_predict`` and ``tiled_predict``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .planner import _prepare
from .reading import _HEAP, _check_read_workers, _progress, _read_ahead
from .tiles import _as_input, _read_crop, _tile_list


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
