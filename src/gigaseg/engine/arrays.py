"""What the engine reads and writes: the array-like types of its images, masks and outputs.

The engine never needs a whole image in memory, so it takes any object that reads a window the
way numpy does: ``np.ndarray``, ``np.memmap``, a zarr array, or a view of a slide or a store
that computes its window on demand. These are structural types (``typing.Protocol``): nothing
has to inherit from them. The engine checks shapes and dtypes itself, at the boundary, with
errors that say what came.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, DTypeLike


class ImageLike(Protocol):
    """A 2-D array-like read window by window: an (H, W, C) image (uint8, uint16 or float32) or an (H, W)
    uint8 mask.

    ``a[y0:y1, x0:x1]`` returns the window's pixels as anything ``np.asarray`` turns into an
    array of that window (rows, then columns; the channel axis, if any, last).
    """

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> DTypeLike: ...

    def __getitem__(self, key: tuple[slice, slice], /) -> ArrayLike: ...


class OutSink(Protocol):
    """An (H, W) array-like the engine writes its output into, block by block: ``np.ndarray``,
    ``np.memmap``, a zarr array. ``out[y0:y1, x0:x1] = block`` stores a numpy block of the
    window's shape."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> DTypeLike: ...

    def __setitem__(self, key: tuple[slice, slice], value: np.ndarray[Any, Any], /) -> None: ...


__all__ = ["ImageLike", "OutSink"]
