"""The Pillow backend: PNG, JPEG and other single-level images, decoded once, in memory."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SlideError
from .base import _INSTALL_HINT, Slide, _composite_over_white, _Decline

if TYPE_CHECKING:
    from PIL import Image


class _PillowSlide(Slide):
    backend = "pillow"

    def __init__(self, path: Path, rgb: np.ndarray, image_format: str | None) -> None:
        super().__init__(path, [(rgb.shape[1], rgb.shape[0])], mpp=None)
        self._rgb = rgb
        self._format = image_format

    def _read_level(self, level: int, lvl_x: int, lvl_y: int, lvl_w: int, lvl_h: int) -> np.ndarray:
        return self._rgb[lvl_y : lvl_y + lvl_h, lvl_x : lvl_x + lvl_w]

    def _close(self) -> None:
        self._rgb = np.empty((0, 0, 3), np.uint8)  # the pixels go with the slide

    def _repr_extra(self) -> str:
        return f", format={self._format!r}" if self._format else ""


@contextlib.contextmanager
def _no_bomb_limit() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit while we open a slide-sized image.

    The limit guards untrusted web uploads; a slide is big on purpose. Restored on exit.
    """
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_pillow(path: Path) -> Slide:
    """Open an image with Pillow and decode it to RGB over white.

    Raises:
        _Decline: Pillow is missing or does not recognise the file.
        SlideError: Pillow recognises the file but cannot decode it (truncated, corrupt).
    """
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError as exc:
        raise _Decline(f"Pillow is not installed ({exc}); {_INSTALL_HINT}") from None
    try:
        with _no_bomb_limit():
            image = Image.open(path)
    except UnidentifiedImageError:
        raise _Decline("not an image format Pillow recognises") from None
    except Exception as exc:
        raise SlideError(f"{path}: Pillow cannot open it: {exc}") from exc
    image_format = image.format
    try:
        with image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _pillow_to_rgb(upright)
    except Exception as exc:
        raise SlideError(
            f"{path}: Pillow recognises it as {image_format} but cannot decode it: {exc}; "
            f"the file may be truncated or corrupt"
        ) from exc
    return _PillowSlide(path, rgb, image_format)


def _pillow_to_rgb(image: Image.Image) -> np.ndarray:
    """A Pillow image as ``(h, w, 3)`` uint8 RGB, transparency composited over white."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if image.mode in ("I;16", "I;16B", "I;16L"):  # 16-bit grey: scale to 8 bits
        grey = ((np.asarray(image).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        return _composite_over_white(rgba[..., :3], rgba[..., 3])
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))
