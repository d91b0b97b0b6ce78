"""The pyramidal TIFFs that gigaseg writes, their shared parts (private).

Three writers make pyramids: synthetic slides (``gigaseg.synth``: JPEG RGB, levels
box-averaged), mask TIFFs (``predict`` and ``baseline`` through ``gigaseg._writers``:
deflate greyscale, levels sampled from a mask grid) and ``benchmarks/big_slide.py`` (a
repeated synthetic patch, laid out as ``gigaseg synth`` lays out its slides). They share:

- :func:`level_sizes`: the (w, h) of every level, each ``factor`` times smaller than the
  one above, with the stopping rule a :class:`LevelRule` (:data:`SLIDE_LEVELS`,
  :data:`MASK_LEVELS`);
- :func:`box_down` and :class:`LevelSpool`: the next level of an RGB pyramid, box-averaged
  strip by strip and spooled to a raw file, so memory stays bounded by one strip;
- :func:`strip_tiles` and :func:`level_tiles`: a level's tiles in the order TIFF stores
  them, edge tiles padded by edge replication;
- :func:`write_level`: one level as a TIFF page (NOTE [Pyramid layout]), with
  :func:`resolution` tags in pixels per centimetre.

Sizes are ``(w, h)``; arrays are ``(h, w)`` or ``(h, w, 3)`` uint8.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FACTOR = 4  # downsample between pyramid levels, every writer


@dataclass(frozen=True)
class LevelRule:
    """When a pyramid stops: levels are added while the last one's longest side is above
    ``max_side`` and the new level's shorter side would be at least ``min_side``."""

    max_side: int
    min_side: int = 1
    factor: int = FACTOR


#: Slides (``gigaseg synth``, ``benchmarks/big_slide.py``): down to a longest side of 256.
SLIDE_LEVELS = LevelRule(max_side=256, min_side=1)
#: Mask TIFFs (``gigaseg predict``, ``gigaseg baseline``): down to 512, no side under 2 px.
MASK_LEVELS = LevelRule(max_side=512, min_side=2)


def level_sizes(width: int, height: int, rule: LevelRule) -> list[tuple[int, int]]:
    """(w, h) of every pyramid level, level 0 first; level k is level k-1 floor-divided by
    ``rule.factor``, and levels stop by ``rule``."""
    f = rule.factor
    sizes = [(width, height)]
    while max(sizes[-1]) > rule.max_side and min(sizes[-1]) // f >= rule.min_side:
        w, h = sizes[-1]
        sizes.append((w // f, h // f))
    return sizes


def box_down(strip: np.ndarray, lvl_w: int, factor: int = FACTOR) -> np.ndarray:
    """Box-average a (h, w, C) uint8 strip by ``factor`` to (h // factor, lvl_w, C), rounding
    half up; rows past the last whole group of ``factor`` are dropped."""
    f = factor
    h = strip.shape[0] // f * f
    c = strip.shape[2:]
    s = strip[:h, : lvl_w * f].reshape(h // f, f, lvl_w, f, *c).astype(np.uint16)
    return ((s.sum(axis=(1, 3)) + (f * f) // 2) // (f * f)).astype(np.uint8)


def strip_tiles(strip: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """The tiles of a strip of at most ``tile`` rows, left to right, each (tile, tile[, C])
    and C-contiguous; edge tiles are padded by edge replication."""
    w = strip.shape[1]
    for x in range(0, w, tile):
        t = strip[:, x : x + tile]
        if t.shape[0] != tile or t.shape[1] != tile:
            pad = ((0, tile - t.shape[0]), (0, tile - t.shape[1])) + ((0, 0),) * (t.ndim - 2)
            t = np.pad(t, pad, mode="edge")
        yield np.ascontiguousarray(t)


def level_tiles(
    read_strip: Callable[[int, int], np.ndarray],
    lvl_h: int,
    tile: int,
    *,
    on_strip: Callable[[np.ndarray, int, int], Any] | None = None,
) -> Iterator[np.ndarray]:
    """A level's tiles, row-major, read one strip of tile rows at a time.

    Args:
        read_strip: ``read_strip(lvl_y0, lvl_y1)`` -> rows ``[lvl_y0, lvl_y1)`` of the level,
            (rows, lvl_w[, C]) uint8.
        lvl_h: the level's height.
        tile: tile side, px.
        on_strip: ``on_strip(strip, lvl_y0, lvl_y1)``, called with each strip before its
            tiles are yielded (NOTE [Last tile]).
    """
    for y0 in range(0, lvl_h, tile):
        y1 = min(y0 + tile, lvl_h)
        strip = read_strip(y0, y1)
        if on_strip is not None:
            on_strip(strip, y0, y1)
        yield from strip_tiles(strip, tile)


# NOTE [Last tile]
# tifffile stops pulling tiles from a generator once it has the last one, so code after a
# generator's last ``yield`` never runs. Whatever must happen for every strip (feeding the
# next level, reporting progress) happens before the strip's tiles are yielded.


class LevelSpool:
    """The next level of an RGB pyramid, built on disk from the strips of the level above.

    :meth:`feed` takes the level above's strips in order (any number of rows), box-averages
    every whole group of ``factor`` rows (:func:`box_down`) and appends them to a raw
    row-major (rows, lvl_w, 3) uint8 file, carrying the leftover rows to the next strip.
    :meth:`read` reads rows back with plain file reads (no memory map, so they never count
    as resident memory). :meth:`close` deletes the file.
    """

    def __init__(self, path: str | Path, lvl_w: int, *, factor: int = FACTOR):
        self.path, self.w, self.factor, self.rows = Path(path), lvl_w, factor, 0
        self._carry: np.ndarray | None = None
        self._f = open(self.path, "w+b")

    def feed(self, strip: np.ndarray) -> None:
        """Rows of the level above, (rows, lvl_w * factor or more, 3) uint8."""
        carry = self._carry
        both = np.concatenate([carry, strip]) if carry is not None and carry.shape[0] else strip
        n = both.shape[0] // self.factor * self.factor
        if n:
            self._append(box_down(both[:n], self.w, self.factor))
        self._carry = both[n:]

    def _append(self, a: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(a).tobytes())
        self.rows += a.shape[0]

    def read(self, lvl_y: int, n: int) -> np.ndarray:
        """Rows ``[lvl_y, lvl_y + n)``: (n, lvl_w, 3) uint8."""
        row = self.w * 3
        self._f.seek(lvl_y * row)
        buf = np.empty((n, self.w, 3), np.uint8)
        self._f.readinto(buf.data.cast("B"))
        return buf

    def close(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


def resolution(mpp: tuple[float, float]) -> dict[str, Any]:
    """TIFF resolution tags for ``(mpp_x, mpp_y)`` micrometres per pixel (as tifffile
    keywords), in pixels per centimetre: what OpenSlide and QuPath read as the mpp."""
    return {"resolution": (1e4 / mpp[0], 1e4 / mpp[1]), "resolutionunit": "CENTIMETER"}


# NOTE [Pyramid layout]
# Every level is a top-level page of its own, tiled, in order from level 0: level 0 with
# NewSubfileType 0, the others 1 (reduced image). OpenSlide's generic-tiff reader, QuPath,
# tiffslide and gigaseg.slides read that layout (SubIFDs are not needed). No tifffile or
# ImageJ metadata is written (``metadata=None``), so a file depends only on its pixels and
# tags, and the same input gives the same bytes.
def write_level(
    tif: Any,
    tiles: Any,
    *,
    shape: tuple[int, ...],
    level: int | None,
    tile: int,
    mpp: tuple[float, float],
    **options: Any,
) -> None:
    """Write one pyramid level as a tiled page of ``tif`` (a ``tifffile.TiffWriter``).

    Args:
        tiles: the level's tiles in row-major order (:func:`level_tiles`), or their
            encoded bytes.
        shape: (lvl_h, lvl_w) or (lvl_h, lvl_w, 3); uint8.
        level: 0, 1, ...; None for a single-page TIFF (no NewSubfileType tag).
        tile: tile side, px.
        mpp: this level's (mpp_x, mpp_y), for the resolution tags.
        options: tifffile's (compression, photometric, ...).
    """
    subfiletype = None if level is None else 0 if level == 0 else 1
    tif.write(tiles, shape=shape, dtype=np.uint8, tile=(tile, tile), subfiletype=subfiletype, metadata=None,
              **resolution(mpp), **options)
