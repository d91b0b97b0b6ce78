"""A slide at one resolution as a plain (H, W, 3) uint8 array-like: ``SlideArray``."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from ..errors import ConfigError, SlideError
from .base import Slide, _mpp_pair

__all__ = ["SlideArray"]


# NOTE [Slide grid]
# The slide at a target resolution t (um/px) is a grid of pixels: grid pixel (gx, gy) covers
# level-0 [gx * s_x, (gx + 1) * s_x) x [gy * s_y, (gy + 1) * s_y) with s = t / (the slide's
# level-0 mpp), at fractional level-0 origins where s is not a whole number. A box of the grid is
# read with ``read_region_at_mpp`` at its own origin (gx * s_x, gy * s_y), so boxes read
# separately are pieces of one whole-slide resampling: a crop read by the engine equals the same
# part of the whole resampled slide, and the model's output on it equals the model on the whole
# resampled slide. Two exceptions, both of float rounding (measured on noise at 0.5 um/px): when
# shrinking, Pillow's BOX filter takes a source pixel whose centre lies in the output pixel, and
# where a centre falls exactly on a grid pixel's edge (s = 1.54: every 25th edge) the last bit of
# each read's scale decides which side gets it, so two reads may differ there by a whole source
# pixel's weight; when enlarging (bilinear) they may differ by 1 grey level. Shrinking by a step
# exact in binary (s = 1.5, 2, 4) is exact. The grid has round(level-0 size * mpp / t) pixels on
# each axis (at least one), so the last pixels may reach a little past the slide's edge (white).
class SlideArray:
    """A slide at ``mpp`` microns per pixel as an (H, W, 3) uint8 RGB array-like.

    Slicing ``a[y0:y1, x0:x1]`` reads that box of the slide's grid at ``mpp`` (NOTE [Slide
    grid]) through ``Slide.read_region_at_mpp`` and returns a new (y1 - y0, x1 - x0, 3) uint8
    array: the engine (``tiled_predict``, ``iter_predict``) takes it like a numpy array. Reads
    are thread-safe (several readers may slice at once) and timed.

    Args:
        slide: an open ``Slide`` with an mpp (it stays open: close it yourself).
        mpp: the grid's resolution, um/px, one number or ``(x, y)``.

    Attributes:
        slide, mpp: as given.
        shape: ``(grid_h, grid_w, 3)``.
        dtype: uint8.
        step: ``(s_x, s_y)``, level-0 pixels per grid pixel.
        read_s: seconds spent reading so far, summed over the threads that read.

    Raises:
        SlideError: the slide has no mpp. ConfigError: ``mpp`` is not a positive number.

    Example::

        with open_slide("slide.svs") as slide:
            image = SlideArray(slide, 2.0)            # the slide at 2 um/px
            probabilities = tiled_predict(model, image)
    """

    def __init__(self, slide: Slide, mpp: float | tuple[float, float]) -> None:
        m_x, m_y = slide._require_mpp("SlideArray")
        pair = _mpp_pair(mpp)
        if pair is None:
            raise ConfigError(f"mpp must be a positive finite number or a pair (x, y) of them, got {mpp!r}")
        self.slide = slide
        self.mpp = mpp
        t_x, t_y = pair
        l0_w, l0_h = slide.dimensions
        self.step = (t_x / m_x, t_y / m_y)
        grid_w, grid_h = max(1, round(l0_w * m_x / t_x)), max(1, round(l0_h * m_y / t_y))
        self.shape = (grid_h, grid_w, 3)
        self.dtype = np.dtype(np.uint8)
        self._lock = threading.Lock()
        self._read_s = 0.0

    @property
    def ndim(self) -> int:
        return 3

    @property
    def read_s(self) -> float:
        with self._lock:
            return self._read_s

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Grid box rows [y0, y1), columns [x0, x1) (inside the grid): (y1 - y0, x1 - x0, 3) uint8."""
        gh, gw = y1 - y0, x1 - x0
        if gh <= 0 or gw <= 0:
            return np.empty((max(gh, 0), max(gw, 0), 3), np.uint8)
        s_x, s_y = self.step
        t0 = time.perf_counter()
        try:
            return self.slide.read_region_at_mpp((x0 * s_x, y0 * s_y), self.mpp, (gw, gh))
        finally:
            with self._lock:
                self._read_s += time.perf_counter() - t0

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) == 3 and key[2] == slice(None):
            key = key[:2]
        if len(key) == 1:
            key = (key[0], slice(None))
        if len(key) != 2 or not all(isinstance(k, slice) for k in key):
            raise SlideError(
                f"{self.slide.path}: a SlideArray is sliced by rows and columns, a[y0:y1, x0:x1], "
                f"got [{key!r}]; read the box and index the numpy array it returns"
            )
        (y0, y1, sy), (x0, x1, sx) = key[0].indices(self.shape[0]), key[1].indices(self.shape[1])
        if sy != 1 or sx != 1:
            raise SlideError(f"{self.slide.path}: a SlideArray is read in steps of 1, got [{key!r}]")
        return self.read(y0, y1, x0, x1)

    def __repr__(self) -> str:
        return f"SlideArray({self.slide.path.name!r}, mpp={self.mpp!r}, shape={self.shape})"
