"""Tiles and crops: the exact tiling's geometry, and the checks of what the engine reads."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import InputError
from ..losses import IGNORE
from ..model import UNetConfig
from .arrays import ImageLike
from .locality import Geometry

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


def _halos(config: UNetConfig | Geometry) -> tuple[int, int]:
    """(lead, trail): a crop's halo before its core (rounded up to the total stride, so that the
    crop starts on the grid) and after it."""
    s = config.total_stride
    if isinstance(config, Geometry):
        return math.ceil(config.lead / s) * s, config.trail
    return math.ceil(config.halo / s) * s, config.halo


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise InputError(f"the image is empty ({height} x {width} pixels); give an image of at least 1 x 1")


# --- input validation ----------------------------------------------------------------------


#: The image dtypes the engine reads, and the number each is divided by to give the model's input
#: (NOTE [Input scaling]).
INPUT_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.float32): 1.0}

# NOTE [Input scaling]
# The model's input is the image as floats: uint8 / 255 (as always: RGB in [0, 1]), uint16 /
# 65535 (a fluorescence or multiplexed image's full range in [0, 1]), float32 as it is. Any
# further normalization (per-channel means and spreads, a log transform) is the model's own: a
# UNet's ``input_shift`` / ``input_scale``, or the first layers of a model of the user's, which
# then also sees its zero padding in the normalized space, on the whole image as on every tile.


def _check_image(image: object) -> tuple[int, int]:
    shape = getattr(image, "shape", None)
    dtype = getattr(image, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(
            f"image must be an (H, W, C) array-like of uint8, uint16 or float32 (numpy array, np.memmap, zarr "
            f"array); got {type(image).__name__}"
        )
    if len(shape) != 3:
        raise InputError(
            f"image must have shape (H, W, C) (channels last); got shape {tuple(shape)}. "
            "Give a one-channel image as image[..., None]"
        )
    if np.dtype(dtype) not in INPUT_SCALES:
        raise InputError(
            f"image must be uint8 (/ 255), uint16 (/ 65535) or float32 (as it is), got dtype {np.dtype(dtype)}; "
            "convert it to one of these (NOTE [Input scaling] in gigaseg.engine.tiles)"
        )
    _check_size(int(shape[0]), int(shape[1]))
    return int(shape[0]), int(shape[1])


def _check_channels(image: ImageLike, channels: int) -> None:
    """Refuse an image whose channel count is not the model's ``channels``."""
    got = int(image.shape[2])
    if got != channels:
        hint = " Drop an alpha channel with image[..., :3]." if got == 4 and channels == 3 else ""
        raise InputError(
            f"the image has {got} channels (shape {tuple(image.shape)}) but the model takes {channels} "
            f"(its first convolution's in_channels); give an (H, W, {channels}) image or a model of {got} "
            f"input channels.{hint}"
        )


def _check_mask(mask: object, height: int, width: int) -> None:
    shape = getattr(mask, "shape", None)
    dtype = getattr(mask, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(f"mask must be an (H, W) uint8 array-like; got {type(mask).__name__}")
    if tuple(shape) != (height, width):
        raise InputError(
            f"mask shape {tuple(shape)} does not match the image's (H, W) = ({height}, {width})"
        )
    if np.dtype(dtype) != np.uint8:
        raise InputError(f"mask must be uint8 with values 0, 1 (or class indices) and 255 (ignore), "
                         f"got dtype {np.dtype(dtype)}")


def _check_mask_values(mask_tile: np.ndarray, y0: int, x0: int, classes: int = 1) -> int:
    """Refuse a mask tile holding values other than 0, 1 and 255 (ignore), or for a model of
    ``classes`` >= 2 output channels other than 0..classes-1 and 255; return how many of its
    pixels are 255. A tile without 255 costs one ``max``, as before ignore labels existed."""
    top = max(1, classes - 1)  # the largest class index (a single channel's masks hold 0 and 1)
    if not mask_tile.size or mask_tile.max() <= top:
        return 0
    ignored = mask_tile == IGNORE
    bad = (mask_tile > top) & ~ignored
    if bad.any():
        y, x = np.argwhere(bad)[0]
        where = f"mask value {int(mask_tile[y, x])} at (x={x0 + int(x)}, y={y0 + int(y)})"
        if classes == 1:
            raise InputError(
                f"{where} is not 0, 1 or 255; "
                "training masks hold 0 (background), 1 (tissue) and 255 (ignore: left out of the loss) - "
                "map the other values to one of these"
            )
        raise InputError(
            f"{where} is not a class index 0..{top} or 255: the model has {classes} output channels "
            f"(UNetConfig.out_channels), so masks hold class indices 0..{top} and 255 (ignore: left out of "
            "the loss) - map the other values to one of these, or give the model more `out_channels`"
        )
    return int(np.count_nonzero(ignored))


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


def _tiles(height: int, width: int, th: int, tw: int, config: UNetConfig | Geometry) -> Iterator[_Tile]:
    lead, trail = _halos(config)
    for y0 in range(0, height, th):
        y1 = min(y0 + th, height)
        for x0 in range(0, width, tw):
            x1 = min(x0 + tw, width)
            yield _Tile(y0, y1, x0, x1, max(0, y0 - lead), min(height, y1 + trail),
                        max(0, x0 - lead), min(width, x1 + trail))


def _tile_list(height: int, width: int, th: int, tw: int, config: UNetConfig | Geometry) -> list[_Tile]:
    """The tiles, grouped by crop shape (row-major within a shape) so that consecutive tiles
    allocate alike (NOTE [Heap reuse]); the order changes only the summation order."""
    tiles = list(_tiles(height, width, th, tw, config))
    return sorted(tiles, key=lambda t: (t.cy1 - t.cy0, t.cx1 - t.cx0))


def _read_crop(image: ImageLike, t: _Tile) -> np.ndarray:
    return _owned(image[t.cy0:t.cy1, t.cx0:t.cx1])


def input_multiple(config: UNetConfig | Geometry) -> int:
    """What the engine pads a crop's input to: the model's total stride (saving the model its own
    padding), or 1 for a model that normalizes its input, which must pad after normalizing."""
    return 1 if config.normalizes else config.total_stride


def _as_input(crop: np.ndarray, device: torch.device, dtype: torch.dtype, multiple: int,
              channels_last: bool = True) -> torch.Tensor:
    return _to_input(torch.from_numpy(crop).to(device), dtype, multiple, channels_last)


# NOTE [Input layout]
# A gigaseg.UNet gets its input channels-last (NOTE [Channels last] in gigaseg.model: its CPU
# convolutions are several times faster so). A model of the user's gets the usual contiguous
# NCHW tensor, the layout it was written and tested with: with channels-last input, PyTorch
# 2.13's CPU weight gradient of a 1 x 1, stride-2 convolution (a ResNet block's shortcut) ends
# the process with a segmentation fault (benchmarks/any_model_memory.py found it on a 776 x 1072
# crop; a 194 x 268 input to that convolution alone repeats it).
def input_channels_last(config: UNetConfig | Geometry) -> bool:
    """Whether the engine hands the model its input channels-last (NOTE [Input layout])."""
    return not isinstance(config, Geometry)


def _owned(block: ArrayLike) -> np.ndarray:
    """``block`` as a C-contiguous, writeable numpy array (torch.from_numpy wants one)."""
    array = np.asarray(block)
    if not (array.flags.c_contiguous and array.flags.writeable):
        array = np.array(array, order="C")
    return array


def _to_input(hwc: torch.Tensor, dtype: torch.dtype, multiple: int = 1, channels_last: bool = True) -> torch.Tensor:
    """(H, W, C) uint8, uint16 or float32 -> (1, C, H', W') floats, channels-last, as
    ``image / 255``, ``image / 65535`` or the image itself (NOTE [Input scaling]), zero-padded at
    the bottom and right to H', W' multiples of ``multiple``.

    Padding here, to the model's total stride, is what the model would do itself (crops start
    on multiples of the stride, so the padded rows are those of the whole image or lie beyond
    the halo), but it saves the model a zero-fill and a copy of its full-resolution input.
    """
    h, w, c = hwc.shape
    hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.empty((1, c, hp, wp), dtype=dtype, device=hwc.device, memory_format=layout)
    if hp > h:
        x[:, :, h:].zero_()
    if wp > w:
        x[:, :, :h, w:].zero_()
    x[:, :, :h, :w].copy_(hwc.permute(2, 0, 1).unsqueeze(0))
    if hwc.dtype == torch.uint8:
        x[:, :, :h, :w].div_(255)
    elif hwc.dtype == torch.uint16:
        x[:, :, :h, :w].div_(65535)
    return x


def _read_mask(mask: ImageLike, t: _Tile, classes: int = 1) -> tuple[np.ndarray, int]:
    """The mask over tile ``t``'s core, checked (class indices for ``classes`` output channels),
    and how many of its pixels are 255 (ignore)."""
    m = _owned(mask[t.y0:t.y1, t.x0:t.x1])
    return m, _check_mask_values(m, t.y0, t.x0, classes)


def model_input(image: ArrayLike, *, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32, multiple: int = 1) -> torch.Tensor:
    """A whole (H, W, C) image as the model input the engine's results refer to: ``image / 255``
    (uint8), ``image / 65535`` (uint16) or the image (float32) as (1, C, H, W) floats of ``dtype``,
    channels-last (NOTE [Input scaling]). Whole-image autograd on this equals ``tiled_backward``;
    for a model that is not a ``gigaseg.UNet``, on this zero-padded at the bottom and right to a
    multiple of its total stride (``multiple=``), the output cropped back to (H, W)."""
    return _as_input(_owned(image), torch.device(device), dtype, multiple)
