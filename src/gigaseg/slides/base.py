"""The Slide contract every backend implements: OpenSlide's frames, mpp-based reads, resampling."""

from __future__ import annotations

import abc
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._deps import install_command, require
from ..errors import ConfigError, SlideError
from ..options import SLIDE_BACKENDS as BACKENDS

__all__ = ["BACKENDS", "Slide"]

#: Backend names accepted by ``open_slide(..., backend=...)``, in the default order.

# Largest block edge (level pixels) handed to a backend in one call: bounds the
# intermediate memory of a huge read (OpenSlide returns RGBA) to ~64 MiB per block.
_BLOCK = 4096

# A pyramid level whose mpp is within this relative tolerance of the target counts as
# "not coarser than the target" (pyramid levels are rounded: a nominal 2x level of an
# odd-sized slide has a downsample of 2.0003).
_MPP_TOLERANCE = 0.01

_INSTALL_HINT = f"install the slide extras: {install_command('PIL')}"

# Distinct problems kept per slide; more are counted (NOTE [Slide problems]).
_MAX_PROBLEMS = 20


class _Decline(Exception):
    """Raised by a backend's opener when the file is not in a format it reads."""


class Slide(abc.ABC):
    """A multi-resolution image: the contract every backend implements.

    A backend subclass provides the pyramid geometry (to ``__init__``), ``_read_level``
    (a box wholly inside one level) and ``_close``; everything else (argument checks,
    clipping, white fill, blockwise reads, mpp-based resampling) lives here.

    Frames: ``l0_`` level-0 pixels, ``lvl_`` pixels of one pyramid level. Level ``k``
    pixel ``lvl_x`` covers level-0 ``[lvl_x * d, (lvl_x + 1) * d)`` with ``d`` its
    downsample, so a level-0 location maps to ``floor(l0_x / d)``.
    """

    #: Backend name, one of :data:`BACKENDS`.
    backend: str = ""

    def __init__(
        self,
        path: str | os.PathLike[str],
        level_dimensions: Sequence[tuple[int, int]],
        *,
        mpp: tuple[float, float] | None,
    ) -> None:
        self._path = Path(path)
        self._level_dimensions = tuple((int(w), int(h)) for w, h in level_dimensions)
        l0_w, l0_h = self._level_dimensions[0]
        # Same rule as OpenSlide: the mean of the two axes' ratios.
        self._level_downsamples = tuple(
            1.0 if k == 0 else (l0_w / w + l0_h / h) / 2.0
            for k, (w, h) in enumerate(self._level_dimensions)
        )
        self._mpp = mpp
        self._mpp_given = False
        self._closed = False
        self._problems: list[str] = []
        self._more_problems = 0
        self._problems_lock = threading.Lock()
        self._strict = False

    # -- the backend contract ----------------------------------------------------------

    #: True when ``_read_level`` returns a new array each call, which the caller may keep
    #: and modify (no copy is then made for a box read in one block).
    _FRESH_BLOCKS = False

    @abc.abstractmethod
    def _read_level(self, level: int, lvl_x: int, lvl_y: int, lvl_w: int, lvl_h: int) -> np.ndarray:
        """Read a box wholly inside ``level``: ``(lvl_h, lvl_w, 3)`` uint8 RGB."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the backend's file handles."""

    def _repr_extra(self) -> str:
        return ""

    # -- geometry ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The file (or DICOM directory) this slide was opened from."""
        return self._path

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 size ``(w, h)`` in pixels."""
        return self._level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels (1 for a plain image)."""
        return len(self._level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(w, h)`` of each level, finest first."""
        return self._level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of each level relative to level 0 (OpenSlide's definition)."""
        return self._level_downsamples

    @property
    def mpp(self) -> tuple[float, float] | None:
        """Level-0 microns per pixel ``(x, y)``, or None when the file does not say."""
        return self._mpp

    # NOTE [Slide problems]
    # Decoders pass over some damage in silence: libjpeg's warnings about corrupt data (which
    # Pillow and imagecodecs drop) leave part of an image garbage without an error. Each backend
    # looks for what its decoder does not say (the JPEG check of gigaseg.slides._jpegcheck on JPEG
    # files and JPEG tiles, Pillow's and tifffile's own warnings) and records it here, in words,
    # once per distinct message, as it reads: ``problems`` holds what the reads so far have met
    # (at open, the whole image for Pillow; then each tile or strip when it is first decoded). A
    # conversion by a documented rule (a greyscale or 16-bit image to 8-bit RGB) is recorded too,
    # because a model trained on colour slides sees such an image differently. A slide opened with
    # ``strict=True`` raises SlideError at the first problem instead. Data that no decoder can
    # decode at all stays an error either way (SlideError from the read).
    @property
    def problems(self) -> tuple[str, ...]:
        """What was found wrong with the file's data so far, or converted by a rule, in words
        (NOTE [Slide problems]); empty for a clean read."""
        with self._problems_lock:
            more = (f"and {self._more_problems} more problem(s)",) if self._more_problems else ()
            return (*self._problems, *more)

    @property
    def strict(self) -> bool:
        """Whether a problem of the file's data raises SlideError instead of being recorded."""
        return self._strict

    def _problem(self, message: str) -> None:
        """Record ``message`` (a problem of the data, without the path), or raise it when strict."""
        if self._strict:
            raise SlideError(f"{self._path}: {message} (an error because of `strict=True`; without it, a warning)")
        with self._problems_lock:
            if message in self._problems:
                return
            if len(self._problems) < _MAX_PROBLEMS:
                self._problems.append(message)
            else:
                self._more_problems += 1

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is <= ``downsample`` (0 if none is)."""
        downsample = float(downsample)
        best = 0
        for level, level_ds in enumerate(self._level_downsamples):
            if level_ds <= downsample:
                best = level
        return best

    def get_best_level_for_mpp(self, target_mpp: float | tuple[float, float]) -> int:
        """The coarsest level not coarser than ``target_mpp`` (1% tolerance), else 0.

        Raises:
            SlideError: the slide has no mpp.
        """
        mpp_x, mpp_y = self._require_mpp("get_best_level_for_mpp")
        t_mpp_x, t_mpp_y = self._check_target_mpp(target_mpp)
        best = 0
        for level, level_ds in enumerate(self._level_downsamples):
            if (
                mpp_x * level_ds <= t_mpp_x * (1 + _MPP_TOLERANCE)
                and mpp_y * level_ds <= t_mpp_y * (1 + _MPP_TOLERANCE)
                and level_ds >= self._level_downsamples[best]
            ):
                best = level
        return best

    # -- reading -----------------------------------------------------------------------

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read a region of one level.

        Args:
            location: ``(x, y)`` of the top-left corner in level-0 pixels.
            level: pyramid level, 0 is the finest.
            size: ``(w, h)`` in pixels of ``level``.

        Returns:
            ``(h, w, 3)`` uint8 RGB. The part outside the slide is white (255).

        Raises:
            SlideError: bad level or size, a region wholly outside the slide, a closed
                slide, or a read failure (corrupt data).
        """
        self._check_open()
        l0_x, l0_y = self._int_pair(location, "location")
        lvl_w, lvl_h = self._int_pair(size, "size")
        level = self._check_level(level)
        self._check_size(lvl_w, lvl_h)
        level_ds = self._level_downsamples[level]
        lvl_x, lvl_y = _l0_to_lvl(l0_x, level_ds), _l0_to_lvl(l0_y, level_ds)
        level_w, level_h = self._level_dimensions[level]
        if lvl_x >= level_w or lvl_y >= level_h or lvl_x + lvl_w <= 0 or lvl_y + lvl_h <= 0:
            raise SlideError(
                f"{self._path}: region at level-0 location {(l0_x, l0_y)} of size "
                f"{(lvl_w, lvl_h)} at level {level} lies wholly outside the level "
                f"(its size is {(level_w, level_h)}); pick a location inside the slide "
                f"(level 0 is {self.dimensions})"
            )
        return self._read_box(level, lvl_x, lvl_y, lvl_w, lvl_h)

    def read_region_at_mpp(
        self,
        location: tuple[float, float],
        target_mpp: float | tuple[float, float],
        size: tuple[int, int],
    ) -> np.ndarray:
        """Read a region resampled to a target resolution.

        Reads from the coarsest level not coarser than ``target_mpp`` (no upsampling
        unless the target is finer than level 0), then resamples: area averaging
        (Pillow BOX) when shrinking, bilinear when enlarging by more than 1% (within
        1%, BOX keeps the nearest pixel). Output pixel ``(i, j)``
        covers level-0 ``[x + i * s, x + (i + 1) * s)`` with ``s = target_mpp / mpp``.
        The resampling reads real neighbouring pixels around the region (white beyond
        the slide), so a large read equals the mosaic of its parts, also at fractional
        origins: the box at output pixel ``(i, j)`` of a larger read is read at location
        ``(x + i * s_x, y + j * s_y)`` (``gigaseg.slides.SlideArray`` reads a slide's grid
        at a resolution this way).

        Args:
            location: ``(x, y)`` of the top-left corner in level-0 pixels; fractional
                values are allowed (they are always resampled, even where the target is a
                pyramid level's resolution).
            target_mpp: microns per pixel of the output, one number or ``(x, y)``.
            size: ``(w, h)`` of the output, in target-resolution pixels.

        Returns:
            ``(h, w, 3)`` uint8 RGB.

        Raises:
            SlideError: the slide has no mpp (pass ``mpp=`` to :func:`open_slide`), a bad
                size, or a region wholly outside the slide.
            ConfigError: ``target_mpp`` is not a positive number.
        """
        self._check_open()
        mpp_x, mpp_y = self._require_mpp("read_region_at_mpp")
        t_mpp_x, t_mpp_y = self._check_target_mpp(target_mpp)
        l0_x, l0_y = self._location_pair(location)
        t_w, t_h = self._int_pair(size, "size")
        self._check_size(t_w, t_h)
        # Level-0 pixels per output pixel.
        l0_step_x, l0_step_y = t_mpp_x / mpp_x, t_mpp_y / mpp_y
        l0_w, l0_h = self.dimensions
        if (
            l0_x >= l0_w
            or l0_y >= l0_h
            or l0_x + t_w * l0_step_x <= 0
            or l0_y + t_h * l0_step_y <= 0
        ):
            raise SlideError(
                f"{self._path}: region at level-0 location {(l0_x, l0_y)} of size "
                f"{(t_w, t_h)} at {t_mpp_x:g} um/px lies wholly outside the slide "
                f"(level 0 is {self.dimensions} at {mpp_x:g} um/px); pick a location inside it"
            )
        level = self.get_best_level_for_mpp((t_mpp_x, t_mpp_y))
        level_ds = self._level_downsamples[level]
        # NOTE [Resampling frame]: everything below is in the chosen level's frame,
        # with float coordinates; lvl_step_* is level pixels per output pixel.
        lvl_x0, lvl_y0 = l0_x / level_ds, l0_y / level_ds
        lvl_step_x, lvl_step_y = l0_step_x / level_ds, l0_step_y / level_ds
        if (
            isinstance(l0_x, int)
            and isinstance(l0_y, int)
            and abs(lvl_step_x - 1) < 1e-9
            and abs(lvl_step_y - 1) < 1e-9
            and abs(lvl_x0 - round(lvl_x0)) < 1e-6
            and abs(lvl_y0 - round(lvl_y0)) < 1e-6
        ):
            return self._read_box(level, round(lvl_x0), round(lvl_y0), t_w, t_h)
        return self._resample(level, lvl_x0, lvl_y0, lvl_step_x, lvl_step_y, t_w, t_h)

    def close(self) -> None:
        """Close the file. Idempotent; reads after it raise SlideError."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._mpp is None:
            mpp = "None"
        else:
            mpp = f"({self._mpp[0]:.6g}, {self._mpp[1]:.6g})" + (" [given]" if self._mpp_given else "")
        downsamples = ", ".join(f"{d:.4g}" for d in self._level_downsamples)
        state = ", closed" if self._closed else ""
        return (
            f"Slide('{self._path}', backend={self.backend!r}, "
            f"dimensions={self.dimensions}, levels={self.level_count}, "
            f"downsamples=({downsamples}), mpp={mpp}{self._repr_extra()}{state})"
        )

    # -- internals ---------------------------------------------------------------------

    def _read_box(self, level: int, lvl_x: int, lvl_y: int, lvl_w: int, lvl_h: int) -> np.ndarray:
        """Read any box of a level (white outside it), in blocks of at most _BLOCK."""
        level_w, level_h = self._level_dimensions[level]
        in_x0, in_y0 = max(lvl_x, 0), max(lvl_y, 0)
        in_x1, in_y1 = min(lvl_x + lvl_w, level_w), min(lvl_y + lvl_h, level_h)
        inside = (in_x0, in_y0, in_x1, in_y1) == (lvl_x, lvl_y, lvl_x + lvl_w, lvl_y + lvl_h)
        # one block inside the level (a prediction crop, usually): the backend's array is the box
        single = inside and lvl_w <= _BLOCK and lvl_h <= _BLOCK
        out = None if single else np.full((lvl_h, lvl_w, 3), 255, dtype=np.uint8)
        for b_y in range(in_y0, in_y1, _BLOCK):
            for b_x in range(in_x0, in_x1, _BLOCK):
                b_w, b_h = min(_BLOCK, in_x1 - b_x), min(_BLOCK, in_y1 - b_y)
                try:
                    block = self._read_level(level, b_x, b_y, b_w, b_h)
                except (SlideError, MemoryError):
                    raise
                except Exception as exc:  # a backend's own error: corrupt data, I/O
                    raise SlideError(
                        f"{self._path}: reading level {level} box (x, y, w, h) = "
                        f"{(b_x, b_y, b_w, b_h)} failed with the {self.backend} backend: "
                        f"{type(exc).__name__}: {exc}; the file may be truncated or corrupt"
                    ) from exc
                if out is None:  # a single block
                    if self._FRESH_BLOCKS and block.flags.c_contiguous and block.flags.writeable:
                        return block
                    return np.array(block, dtype=np.uint8, order="C")
                out[b_y - lvl_y : b_y - lvl_y + b_h, b_x - lvl_x : b_x - lvl_x + b_w] = block
        assert out is not None, "a single block returns in the loop"
        return out

    def _resample(
        self,
        level: int,
        lvl_x0: float,
        lvl_y0: float,
        lvl_step_x: float,
        lvl_step_y: float,
        t_w: int,
        t_h: int,
    ) -> np.ndarray:
        require("PIL", "reading a slide at another resolution")
        from PIL import Image

        # A step within the level-choice tolerance below 1 comes from rounded pyramid
        # sizes (downsample 2.0003 for a nominal 2), not from a finer target: BOX then
        # picks the nearest source pixel instead of blurring two with BILINEAR.
        shrinking = min(lvl_step_x, lvl_step_y) >= 1 - _MPP_TOLERANCE
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        max_step = max(lvl_step_x, lvl_step_y)
        if max_step > _BLOCK:
            # one output pixel would average more than a whole block of source pixels: the block
            # below could not bound its memory (a file without the pyramid level it needs, or a
            # header that lies about its size)
            raise SlideError(
                f"{self._path}: reading at this resolution averages {lvl_step_x:.0f} x {lvl_step_y:.0f} pixels of "
                f"level {level} ({self._level_dimensions[level][0]} x {self._level_dimensions[level][1]}) into each "
                f"output pixel, more than {_BLOCK} per axis; the file has no coarser pyramid level: read it at a "
                "finer resolution, or add a pyramid to the file (vips tiffsave does, with its pyramid option)"
            )
        # Source pixels read around each block: Pillow's BOX kernel reaches step / 2
        # source pixels from an output pixel's centre, BILINEAR max(step, 1).
        if shrinking:
            margin = math.ceil(max_step / 2) + 2
        else:
            margin = math.ceil(max(max_step, 1.0)) + 2
        # Output block edge so that one block reads at most ~_BLOCK**2 source pixels.
        t_block = max(1, int(_BLOCK / max(max_step, 1.0)))
        out = np.empty((t_h, t_w, 3), dtype=np.uint8)
        for t_y in range(0, t_h, t_block):
            t_y1 = min(t_y + t_block, t_h)
            box_y0, box_y1 = lvl_y0 + t_y * lvl_step_y, lvl_y0 + t_y1 * lvl_step_y
            src_y = math.floor(box_y0) - margin
            src_h = math.ceil(box_y1) + margin - src_y
            for t_x in range(0, t_w, t_block):
                t_x1 = min(t_x + t_block, t_w)
                box_x0, box_x1 = lvl_x0 + t_x * lvl_step_x, lvl_x0 + t_x1 * lvl_step_x
                src_x = math.floor(box_x0) - margin
                src_w = math.ceil(box_x1) + margin - src_x
                src = self._read_box(level, src_x, src_y, src_w, src_h)
                block = Image.fromarray(src).resize(
                    (t_x1 - t_x, t_y1 - t_y),
                    resample,
                    box=(box_x0 - src_x, box_y0 - src_y, box_x1 - src_x, box_y1 - src_y),
                )
                out[t_y:t_y1, t_x:t_x1] = np.asarray(block)
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise SlideError(f"{self._path}: the slide is closed; open it again with open_slide()")

    def _check_level(self, level: int) -> int:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise SlideError(
                f"{self._path}: level must be an integer, got {level!r}; "
                f"use 0 to {self.level_count - 1}"
            )
        if not 0 <= level < self.level_count:
            raise SlideError(
                f"{self._path}: level {level} is out of range; this slide has "
                f"{self.level_count} level(s), use 0 to {self.level_count - 1}"
            )
        return int(level)

    def _check_size(self, w: int, h: int) -> None:
        if w <= 0 or h <= 0:
            raise SlideError(
                f"{self._path}: region size (w, h) = {(w, h)} must be positive in both axes"
            )

    def _int_pair(self, value: tuple[int, int], name: str) -> tuple[int, int]:
        try:
            a, b = value
        except (TypeError, ValueError):
            raise SlideError(
                f"{self._path}: {name} must be a pair of integers (x, y) / (w, h), got {value!r}"
            ) from None
        pair = []
        for v in (a, b):
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                pair.append(int(v))
            elif isinstance(v, (float, np.floating)) and float(v).is_integer():
                pair.append(int(v))
            else:
                raise SlideError(
                    f"{self._path}: {name} must be a pair of integers, got {value!r}; "
                    f"round it to whole pixels"
                )
        return pair[0], pair[1]

    def _location_pair(self, value: tuple[float, float]) -> tuple[int | float, int | float]:
        """A level-0 location: whole numbers as ints, fractional ones as floats."""
        try:
            a, b = value
        except (TypeError, ValueError):
            raise SlideError(
                f"{self._path}: location must be a pair of numbers (x, y), got {value!r}"
            ) from None
        pair: list[int | float] = []
        for v in (a, b):
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                pair.append(int(v))
            elif isinstance(v, (float, np.floating)) and math.isfinite(v):
                pair.append(int(v) if float(v).is_integer() else float(v))
            else:
                raise SlideError(
                    f"{self._path}: location must be a pair of finite numbers (x, y), got {value!r}"
                )
        return pair[0], pair[1]

    def _require_mpp(self, what: str) -> tuple[float, float]:
        if self._mpp is None:
            raise SlideError(
                f"{self._path}: {what} needs the slide's resolution (microns per pixel), "
                f"which the file does not state; give it as `mpp` of open_slide "
                f"(e.g. `mpp=0.25` for 40x, 0.5 for 20x)"
            )
        return self._mpp

    def _check_target_mpp(self, target_mpp: float | tuple[float, float]) -> tuple[float, float]:
        pair = _mpp_pair(target_mpp)
        if pair is None:
            raise ConfigError(
                f"{self._path}: target mpp must be a positive finite number or a pair "
                f"(x, y) of them, got {target_mpp!r}"
            )
        return pair


def _l0_to_lvl(l0: int, level_ds: float) -> int:
    """Level-0 coordinate to the level pixel that holds it (exact on level 0)."""
    if level_ds == 1.0:
        return l0
    return math.floor(l0 / level_ds + 1e-9)


def _mpp_pair(value: float | tuple[float, float]) -> tuple[float, float] | None:
    """``value`` (a number or an (x, y) pair) as two positive finite floats, else None."""
    if isinstance(value, (str, bytes, bool)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = (value, value)
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0):
        return None
    return x, y


def _composite_over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight (non-premultiplied) RGB + alpha over white: ``(h, w, 3)`` uint8."""
    if alpha.size == 0 or alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint32)[..., None]
    out = (rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)
