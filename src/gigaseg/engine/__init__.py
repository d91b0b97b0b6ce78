"""Exact tiled forward and backward over array-like gigapixel images, and the memory planner.

``tiled_backward`` accumulates into each parameter's ``.grad`` exactly what ``loss.backward()``
on the whole image would, up to floating-point summation order, while reading the image tile by
tile: memory depends on the tile size, not the image size. ``tiled_predict`` does the same for
the forward pass, and ``iter_predict`` yields its tiles one by one. ``plan`` picks the tile size
from a memory budget. With ``group=`` (``torch.distributed``), the ranks of a process group share
one ``tiled_backward``'s tiles (NOTE [Distributed step] in ``distributed``).

Typical use (one training step on a 16000 x 64000 region stored on disk)::

    image = np.load("image.npy", mmap_mode="r")        # (H, W, 3) uint8
    mask = np.load("mask.npy", mmap_mode="r")          # (H, W) uint8 {0, 1}
    optimizer.zero_grad()
    loss = tiled_backward(model, image, mask, loss="bce+dice", memory_budget="4GB")
    optimizer.step()

Modules: ``planner`` (tile sizes, the locality check, devices), ``locality`` (the total stride
and halo of any local ``nn.Module``, derived from its traced graph), ``tiles`` (tile geometry and input
checks), ``reading`` (read-ahead, the crop cache, heap reuse), ``forward``, ``backward``,
``arrays`` (``ImageLike`` and ``OutSink``, the types of what the engine reads and writes),
``distributed`` (a step's tiles shared between ranks), ``watch`` (collectives that name a rank
that died or hangs: NOTE [Rank faults]) and ``_cpu_kernels`` (compiled CPU kernels for the
full-resolution layers).
"""

from __future__ import annotations

from .arrays import ImageLike, OutSink
from .backward import tiled_backward
from .distributed import DistributedError, split_by_cost
from .forward import TileBox, TilePredictions, iter_predict, tiled_predict
from .locality import Geometry, analyze
from .planner import (
    CUDA_MAX_TRAIN_CROP_PIXELS,
    DEFAULT_MEMORY_BUDGET,
    Plan,
    check_local,
    check_tile,
    plan,
    resolve_device,
)
from .reading import MAX_READ_WORKERS, check_read_workers, default_read_workers, reuse_freed_memory
from .slide import SlideClassifier, slide_backward, slide_predict
from .tiles import model_input

__all__ = [
    "Plan",
    "plan",
    "tiled_backward",
    "DistributedError",
    "split_by_cost",
    "tiled_predict",
    "iter_predict",
    "TileBox",
    "TilePredictions",
    "ImageLike",
    "OutSink",
    "resolve_device",
    "check_local",
    "Geometry",
    "SlideClassifier",
    "slide_backward",
    "slide_predict",
    "analyze",
    "check_tile",
    "model_input",
    "default_read_workers",
    "check_read_workers",
    "reuse_freed_memory",
    "DEFAULT_MEMORY_BUDGET",
    "CUDA_MAX_TRAIN_CROP_PIXELS",
    "MAX_READ_WORKERS",
]
