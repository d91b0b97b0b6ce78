"""``ImageWrapper``: the base of the image-likes that read through another one.

The engine reads images by slicing (``image[y0:y1, x0:x1]``) and asks for ``shape``, ``dtype``,
``ndim`` and ``len``. A wrapper that changes what a slice returns (a glass balance, an
orientation, a record of what was read) keeps every other attribute of the image it wraps (a
``SlideArray``'s ``read_s``, its ``slide``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ImageWrapper:
    """An (H, W[, C]) image-like over ``image``: ``shape`` and ``dtype`` are the image's unless
    given; other attributes are the image's. Subclasses define ``__getitem__``."""

    def __init__(self, image: Any, *, shape: Any = None, dtype: Any = None) -> None:
        self.image = image
        self.shape: tuple[int, ...] = tuple(int(n) for n in (image.shape if shape is None else shape))
        self.dtype = np.dtype(image.dtype if dtype is None else dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getattr__(self, name: str) -> Any:
        if name == "image":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.image, name)
