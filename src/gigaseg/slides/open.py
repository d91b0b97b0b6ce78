"""Opening a slide: the backend that recognises the file reads it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .._files import check_input
from ..errors import ConfigError, SlideError
from .base import BACKENDS, Slide, _Decline, _mpp_pair

__all__ = ["open_slide"]


def open_slide(
    path: str | os.PathLike[str],
    *,
    mpp: float | tuple[float, float] | None = None,
    backend: str | None = None,
    strict: bool = False,
) -> Slide:
    """Open a whole-slide image, a plain image, or a DICOM WSI series directory.

    Args:
        path: a slide or image file, or a directory holding one DICOM WSI series.
        mpp: microns per pixel of level 0, one number or ``(x, y)``; replaces what the
            file says (or supplies it when the file says nothing).
        backend: force one of :data:`BACKENDS`; None tries them in a sensible order.
        strict: raise SlideError at the first problem of the file's data (corrupt JPEG data
            that a decoder would pass over, a decoder's warning, a greyscale or 16-bit image
            converted to 8-bit RGB) instead of recording it in ``Slide.problems`` (NOTE [Slide
            problems]).

    Returns:
        An open :class:`Slide`; use it as a context manager or call ``close()``.

    Raises:
        SlideError: missing file, a directory with no slide, a FIFO, socket or device, a
            truncated or corrupt file, or a format no backend reads.
        ConfigError: a bad ``mpp`` or ``backend`` value.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"slide path must be a string or a path, got {path!r}")
    path = Path(path).expanduser()
    mpp_override = None
    if mpp is not None:
        mpp_override = _mpp_pair(mpp)
        if mpp_override is None:
            raise ConfigError(
                f"{path}: mpp must be a positive finite number of microns per pixel or a "
                f"pair (x, y) of them, got {mpp!r} (e.g. 0.25 for 40x, 0.5 for 20x)"
            )
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)} or None, got {backend!r}")
    if not path.exists():
        raise SlideError(f"{path}: no such file or directory; check the path")
    check_input(path, "slide", error=SlideError, folder=True)  # NOTE [Special files]

    if path.is_dir():
        if backend not in (None, "openslide"):
            raise SlideError(
                f"{path}: is a directory, which only the openslide backend reads (as a "
                f"DICOM WSI series); pass a file, or backend='openslide' or None"
            )
        from ._openslide import dicom_file_in_directory, open_openslide

        slide = open_openslide(dicom_file_in_directory(path), shown_path=path)
    else:
        slide = _open_file(path, backend)

    if mpp_override is not None:
        slide._mpp = mpp_override
        slide._mpp_given = True
    if strict:
        found = slide.problems
        if found:
            slide.close()
            raise SlideError(f"{path}: {'; '.join(found)} (an error because of `strict=True`; without it, a warning)")
        slide._strict = True
    return slide


def _open_file(path: Path, backend: str | None) -> Slide:
    if not path.is_file():
        raise SlideError(f"{path}: not a regular file; pass a slide or image file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise SlideError(f"{path}: cannot be read ({exc}); check its permissions") from exc

    order: tuple[str, ...]
    if backend is not None:
        order = (backend,)
    else:
        from ._openslide import detect_vendor

        vendor = detect_vendor(path)
        if vendor is None:
            order = ("tifffile", "pillow", "openslide")
        elif vendor == "generic-tiff":
            order = ("tifffile", "openslide", "pillow")
        else:
            order = ("openslide", "tifffile", "pillow")

    declines: list[str] = []
    for name in order:
        opener = _opener(name)
        try:
            return opener(path)
        except _Decline as exc:
            declines.append(f"{name}: {exc}")
    reasons = "; ".join(declines)
    raise SlideError(
        f"{path}: unsupported format, no backend reads it ({reasons}); gigaseg reads "
        f"SVS, NDPI, MRXS, SCN, DICOM WSI, TIFF/OME-TIFF, PNG and JPEG"
    )


def _opener(name: str) -> Callable[[Path], Slide]:
    if name == "openslide":
        from ._openslide import open_openslide

        return open_openslide
    if name == "tifffile":
        from ._tifffile import open_tifffile

        return open_tifffile
    from ._pillow import open_pillow

    return open_pillow
