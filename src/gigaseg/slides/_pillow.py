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

    def __init__(self, path: Path, rgb: np.ndarray, image_format: str | None, problems: list[str]) -> None:
        super().__init__(path, [(rgb.shape[1], rgb.shape[0])], mpp=None)
        self._rgb = rgb
        self._format = image_format
        for problem in problems:
            self._problem(problem)

    def _read_level(self, level: int, lvl_x: int, lvl_y: int, lvl_w: int, lvl_h: int) -> np.ndarray:
        return self._rgb[lvl_y : lvl_y + lvl_h, lvl_x : lvl_x + lvl_w]

    def _close(self) -> None:
        self._rgb = np.empty((0, 0, 3), np.uint8)  # the pixels go with the slide

    def _repr_extra(self) -> str:
        return f", format={self._format!r}" if self._format else ""


@contextlib.contextmanager
def _no_bomb_limit() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit while we open a slide-sized image, and make a
    truncated file an error whatever ``ImageFile.LOAD_TRUNCATED_IMAGES`` says elsewhere.

    The limit guards untrusted web uploads; a slide is big on purpose. Restored on exit.
    """
    from PIL import Image, ImageFile

    saved = Image.MAX_IMAGE_PIXELS
    saved_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = None
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # else Pillow fills the missing part with grey, silently
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved
        ImageFile.LOAD_TRUNCATED_IMAGES = saved_truncated


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
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught, _no_bomb_limit():
        warnings.simplefilter("always")
        try:
            image = Image.open(path)
        except UnidentifiedImageError:
            raise _Decline("not an image format Pillow recognises") from None
        except Exception as exc:
            raise SlideError(f"{path}: Pillow cannot open it: {exc}") from exc
        image_format = image.format
        _check_memory(path, image)
        try:
            with image:
                image.load()
                upright = ImageOps.exif_transpose(image)
                rgb = _pillow_to_rgb(upright, path, problems)
        except SlideError:
            raise
        except Exception as exc:
            raise SlideError(
                f"{path}: Pillow recognises it as {image_format} but cannot decode it: {exc}; "
                f"the file may be truncated or corrupt"
            ) from exc
    # Pillow's own warnings about the file (corrupt EXIF, a truncated chunk, ...)
    problems[:0] = [f"Pillow warns: {w.message}" for w in caught
                    if not issubclass(w.category, (DeprecationWarning, Image.DecompressionBombWarning))]
    if image_format in ("JPEG", "MPO"):  # libjpeg's warnings, which Pillow drops (NOTE [Corrupt JPEG data])
        from ._jpegcheck import jpeg_problem

        try:
            problem = jpeg_problem(path.read_bytes())
        except OSError as exc:
            raise SlideError(f"{path}: cannot be read again ({exc}); check the file") from exc
        if problem:
            problems.insert(0, problem)
    return _PillowSlide(path, rgb, image_format, problems)


def _check_memory(path: Path, image: Image.Image) -> None:
    """Refuse, before decoding, an image whose pixels (decoded whole, then as RGB) would not fit in
    the available memory: the header may lie about its size."""
    from .._files import available_memory, format_bytes

    w, h = image.size
    need = w * h * (len(image.getbands()) * (2 if image.mode.startswith("I;16") else 1) + 3)
    free = available_memory()
    if free is not None and need > free:
        image.close()
        raise SlideError(
            f"{path}: the image is {w} x {h} pixels, which the Pillow backend decodes whole: about "
            f"{format_bytes(need)} of memory, but {format_bytes(free)} are available; the header may lie, or save "
            "the image as a tiled pyramidal TIFF, which is read tile by tile"
        )


# NOTE [Image modes]
# Greyscale and high-bit-depth images are converted by fixed rules, each recorded among the
# slide's problems (a model trained on colour slides sees them differently, and a greyscale or
# dark image can give an empty mask): grey (L, 1, LA) is replicated to R = G = B; 16-bit grey
# (I;16) is scaled to 8 bits as round(v * 255 / 65535), the full range of the type, whatever
# range the pixels use (a 12-bit image stored in 16 bits comes out dark; the message gives its
# largest value); palette images take their colours. 32-bit integer (I) and floating-point (F)
# images have no range to scale by and are refused.
_GREY_MODES = ("L", "1", "LA", "La")


def _pillow_to_rgb(image: Image.Image, path: Path, problems: list[str]) -> np.ndarray:
    """A Pillow image as ``(h, w, 3)`` uint8 RGB, transparency composited over white; the
    conversions it took are appended to ``problems`` (NOTE [Image modes])."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if image.mode in ("I", "F"):
        raise SlideError(
            f"{path}: a {'32-bit integer' if image.mode == 'I' else 'floating-point'} image (Pillow mode "
            f"{image.mode}), which has no fixed range to scale to 8 bits; convert it to 8-bit RGB yourself"
        )
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey: scale to 8 bits
        values = np.asarray(image)
        top = int(values.max()) if values.size else 0
        problems.append(f"a 16-bit greyscale image: scaled to 8 bits as round(v * 255 / 65535) and replicated to "
                        f"R = G = B (its largest value is {top} of 65535)")
        grey = ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in _GREY_MODES:
        problems.append(f"a greyscale image (Pillow mode {image.mode}): replicated to R = G = B; a model trained on "
                        "colour slides may find no tissue in it")
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        return _composite_over_white(rgba[..., :3], rgba[..., 3])
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))
