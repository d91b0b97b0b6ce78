"""Test-time orientations: an image read turned or mirrored, and the model's outputs turned back.

NOTE [Orientations]
A model trained with flips and rotations still answers a little differently for each of the
eight orientations of an image (the dihedral group D4: four turns, each mirrored or not). Its
stride grid meets the tissue at another phase, and what it learnt is not exactly symmetric.
Averaging the probabilities of several orientations is test-time augmentation, as nnU-Net
does with mirroring. ``orientations`` N in (1, 2, 4, 8) takes the first N of ``ORIENTATIONS``:
the image as it is, turned by 180 degrees, mirrored left-right, mirrored top-bottom (these
four keep the image's shape), then the four that swap its axes.

Each orientation is the engine's exact tiled prediction of the whole oriented image (an
``Oriented`` view that reads the window it is asked for from the image and turns it), mapped
back onto the image's grid. So the average is the same whatever the tiles, and costs N times
the model's time. The glass balance (NOTE [Glass balance]) is estimated once, on the image as
it is, and read through every orientation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from .._imagelike import ImageWrapper
from ..errors import ConfigError
from ..glass import GlassBalanced
from ..options import ORIENTATION_COUNTS


class Orientation(NamedTuple):
    """One of the eight: the view is the image transposed (rows and columns swapped) if
    ``transpose``, then its rows reversed if ``flip_rows`` and its columns if ``flip_cols``."""

    name: str
    transpose: bool
    flip_rows: bool
    flip_cols: bool


ORIENTATIONS: tuple[Orientation, ...] = (
    Orientation("as is", False, False, False),
    Orientation("turned 180", False, True, True),
    Orientation("mirrored left-right", False, False, True),
    Orientation("mirrored top-bottom", False, True, False),
    Orientation("transposed", True, False, False),
    Orientation("turned 90 clockwise", True, False, True),
    Orientation("turned 90 anticlockwise", True, True, False),
    Orientation("anti-transposed", True, True, True),
)


def check_orientations(n: Any) -> int:
    """``n`` as an int of ``ORIENTATION_COUNTS``; ConfigError naming the value otherwise."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) not in ORIENTATION_COUNTS:
        raise ConfigError(f"orientations {n!r} is not valid: use one of {', '.join(map(str, ORIENTATION_COUNTS))} "
                          "(1: the image as it is; NOTE [Orientations])")
    return int(n)


def oriented_views(image: Any, n: int) -> Iterator[tuple[Oriented, Any]]:
    """``(view, what the model reads)`` for each of the first ``n`` of ``ORIENTATIONS``. A
    ``GlassBalanced`` image is turned beneath its balance, so that its gains and seam corrections,
    estimated once on the image as it is, are read through every orientation (the seams turned
    with it); ``view`` maps the outputs back."""
    balanced = isinstance(image, GlassBalanced)
    for o in ORIENTATIONS[:n]:
        view = Oriented(image.image if balanced else image, o)
        if not balanced:
            yield view, view
            continue
        seams = None if image.seams is None else image.seams.oriented(image.shape[:2], *o[1:])
        yield view, GlassBalanced(view, image.gains, seams)


def _span(a: int, b: int, size: int, flip: bool) -> tuple[int, int]:
    return (size - b, size - a) if flip else (a, b)


class Oriented(ImageWrapper):
    """``image`` (an (H, W[, C]) image-like) seen in ``orientation``, read window by window:
    ``view[y0:y1, x0:x1]`` reads only the matching window of ``image``. Other attributes (a
    SlideArray's ``read_s``) are the image's."""

    def __init__(self, image: Any, orientation: Orientation):
        shape: tuple[int, ...] = tuple(int(n) for n in image.shape)
        super().__init__(image, shape=(shape[1], shape[0], *shape[2:]) if orientation.transpose else shape)
        self.orientation = orientation

    def base_window(self, rows: slice, cols: slice) -> tuple[slice, slice]:
        """The window of ``image`` that the view's window ``rows, cols`` shows (steps of 1)."""
        o, (h, w) = self.orientation, self.shape[:2]
        y0, y1, _ = rows.indices(h)
        x0, x1, _ = cols.indices(w)
        ry, rx = _span(y0, max(y0, y1), h, o.flip_rows), _span(x0, max(x0, x1), w, o.flip_cols)
        if o.transpose:
            ry, rx = rx, ry
        return slice(*ry), slice(*rx)

    def to_view(self, block: np.ndarray) -> np.ndarray:
        """A window of ``image`` (rows and columns first) as the view shows it."""
        o = self.orientation
        if o.transpose:
            block = block.swapaxes(0, 1)
        return block[:: -1 if o.flip_rows else 1, :: -1 if o.flip_cols else 1]

    def to_image(self, block: np.ndarray) -> np.ndarray:
        """A window of the view (rows and columns first) as ``image`` lies: ``to_view`` undone."""
        o = self.orientation
        block = block[:: -1 if o.flip_rows else 1, :: -1 if o.flip_cols else 1]
        return block.swapaxes(0, 1) if o.transpose else block

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)
                and all(k.step in (None, 1) for k in key)):
            raise TypeError(f"an Oriented view is read by windows, view[y0:y1, x0:x1]; got {key!r}")
        return np.ascontiguousarray(self.to_view(np.asarray(self.image[self.base_window(*key)])))

    def __repr__(self) -> str:
        return f"Oriented({self.image!r}, {self.orientation.name!r})"


__all__ = ["ORIENTATIONS", "ORIENTATION_COUNTS", "Orientation", "Oriented", "check_orientations", "oriented_views"]
