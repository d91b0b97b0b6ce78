"""Writers of whole-slide masks (private): pyramidal TIFF, QuPath GeoJSON, overlay PNG.

Every writer reads the mask from a :class:`MaskGrid`: a uint8 mask on a regular grid that
covers the slide's level 0 with ``step`` level-0 pixels per grid pixel (the model's
resolution for ``predict``, the working resolution for ``baseline``). Grid pixel
``(gx, gy)`` covers level-0 ``[gx * step_x, (gx + 1) * step_x)`` (same in y), so a
level-0 (or pyramid-level) pixel takes the value of the grid pixel under its centre
(nearest neighbour). The writers read the grid row by row, so a mask on disk larger than
memory is fine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from io import BufferedReader
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from ._pyramid import MASK_LEVELS, level_sizes, level_tiles, write_level

_TILE = 512  # TIFF tile edge
_CONTOUR_MAX_PIXELS = 32_000_000  # contour grid cap (the mask is subsampled above it)
_TISSUE_COLOR = [20, 180, 60]  # QuPath class colour (RGB)
_DROPPED_COLOR = (220, 0, 220)  # the overlay's boxes around the pieces a component filter dropped
# The colours of the classes of a several-class model (RGB), class k taking the k-th (cycled):
# class 0, the background, is never drawn; class 1 is the tissue model's green.
_CLASS_PALETTE = ([128, 128, 128], _TISSUE_COLOR, [40, 80, 230], [240, 130, 0], [0, 190, 230], [210, 40, 170],
                  [230, 210, 0], [150, 90, 40], [120, 0, 200], [230, 30, 30])


def class_colors(n: int) -> list[list[int]]:
    """The RGB colour of each of ``n`` classes in the GeoJSON and the overlay (NOTE [Class outputs])."""
    return [list(_CLASS_PALETTE[k % len(_CLASS_PALETTE)]) for k in range(n)]


class MaskGrid:
    """A uint8 (gh, gw) mask on a grid over level 0, read by rows.

    Args:
        source: an (gh, gw) uint8 numpy array, or the path of a raw row-major uint8 file
            of that shape (read with plain file reads: no memory map, so it never counts
            as resident memory).
        shape: (gh, gw) when ``source`` is a path.
        l0_size: the slide's level-0 (w, h).
        step: level-0 pixels per grid pixel (x, y).
    """

    def __init__(self, source: Any, *, l0_size: tuple[int, int], step: tuple[float, float],
                 shape: tuple[int, int] | None = None, gate: RowGate | None = None):
        self._gate = gate
        self._file: BufferedReader | None
        self._array: np.ndarray | None
        if isinstance(source, (str, os.PathLike)):
            if shape is None:
                raise TypeError("a MaskGrid read from a file needs its shape")
            self._file = open(source, "rb")
            self._array = None
            self.shape = tuple(int(v) for v in shape)
        else:
            self._file = None
            self._array = np.asarray(source)
            self.shape = self._array.shape
        self.l0_size = (int(l0_size[0]), int(l0_size[1]))
        self.step = (float(step[0]), float(step[1]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)``: (y1 - y0, gw) uint8."""
        if self._gate is not None:
            self._gate.wait(y1)
        if self._array is not None:
            return self._array[y0:y1]
        file = self._file
        if file is None:
            raise ValueError("the mask grid is closed")
        gw = self.shape[1]
        buf = np.empty((y1 - y0, gw), np.uint8)
        file.seek(y0 * gw)
        n = file.readinto(buf.data.cast("B"))
        if n != buf.nbytes:
            raise OSError(f"short read of the temporary mask file at row {y0}")
        return buf

    def take_rows(self, idx: np.ndarray) -> np.ndarray:
        """The rows ``idx`` (sorted, may repeat): (len(idx), gw) uint8."""
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        if self._array is not None or hi - lo <= 2 * len(idx):
            return self.rows(lo, hi)[idx - lo]
        uniq, inverse = np.unique(idx, return_inverse=True)
        out = np.empty((len(uniq), self.shape[1]), np.uint8)
        for k, r in enumerate(uniq):
            out[k] = self.rows(int(r), int(r) + 1)[0]
        return out[inverse]

    def index(self, n: int, downsample: float, axis: int) -> np.ndarray:
        """Grid indices under the centres of ``n`` pixels of a level with ``downsample``."""
        step = self.step[axis]
        g = np.floor((np.arange(n, dtype=np.float64) + 0.5) * downsample / step).astype(np.int64)
        return np.clip(g, 0, self.shape[1 - axis] - 1)

    def level_rows(self, lvl_y0: int, lvl_y1: int, lvl_w: int, downsample: float, transform=None) -> np.ndarray:
        """Rows ``[lvl_y0, lvl_y1)`` of a pyramid level of ``downsample``, nearest: (rows, lvl_w).

        ``transform``, an elementwise map of uint8 arrays (e.g. probabilities -> 0/255), is applied
        to the grid's pixels before they are spread over the level's: the same result as applying
        it afterwards, on up to (downsample / step)^2 times fewer pixels (NOTE [Mask compression]).
        """
        gx = self.index(lvl_w, downsample, 0)
        rows = self.grid_rows(lvl_y0, lvl_y1, downsample, transform)
        return rows if _is_range(gx) and gx.size == rows.shape[1] else rows[:, gx]

    def grid_rows(self, lvl_y0: int, lvl_y1: int, downsample: float, transform=None) -> np.ndarray:
        """The grid row under each of a level's rows ``[lvl_y0, lvl_y1)``, ``transform`` applied:
        (rows, gw) uint8, before the columns are spread (``level_rows``)."""
        gy = np.clip(
            np.floor((np.arange(lvl_y0, lvl_y1, dtype=np.float64) + 0.5) * downsample / self.step[1]).astype(np.int64),
            0, self.shape[0] - 1,
        )
        rows = self.take_rows(gy) if not _is_range(gy) else self.rows(int(gy[0]), int(gy[-1]) + 1)
        return rows if transform is None else transform(rows)


class RowGate:
    """Rows of a raw file that is still being written: readers wait until enough are there.

    The producer calls ``advance(n)`` after writing and flushing ``n`` more rows, and
    ``abort()`` when it fails (waiting readers then raise). ``wait(rows)`` returns once at
    least ``rows`` rows are written.
    """

    def __init__(self) -> None:
        import threading

        self._cond = threading.Condition()
        self._rows = 0
        self._aborted = False

    def advance(self, n: int) -> None:
        with self._cond:
            self._rows += n
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    def wait(self, rows: int) -> None:
        with self._cond:
            while self._rows < rows and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted("the prediction stopped before these rows were written")


class Aborted(Exception):
    pass


def _is_range(idx: np.ndarray) -> bool:
    """True when ``idx`` is a run of consecutive integers (the identity mapping of a slice)."""
    return idx.size > 0 and int(idx[-1]) - int(idx[0]) == idx.size - 1 and bool(np.all(np.diff(idx) == 1))


def write_mask_tiff(path: Path, grid: MaskGrid, *, mpp: tuple[float, float], transform=None,
                    progress_cb=None, workers: int = 1, description: str = "gigaseg tissue mask") -> None:
    """A tiled, pyramidal, deflate-compressed 8-bit greyscale TIFF at the slide's level-0 geometry.

    Levels are separate top-level pages (downsample 4, down to a longest side of 512:
    ``gigaseg._pyramid.MASK_LEVELS``), as OpenSlide's generic-tiff reader and QuPath expect;
    each level's resolution tags carry its own mpp. ``transform``, an elementwise map of uint8
    arrays (e.g. probabilities -> 0/255), is applied to the mask before it is written (to the
    grid's pixels, before they are spread over a level's). ``progress_cb(rows, level)`` is called
    as each strip of a level is read. ``workers`` threads compress tiles; the file is the
    same byte for byte. See NOTE [Mask compression]. ``description`` is level 0's ImageDescription
    (a label TIFF says what its values mean, NOTE [Class outputs] in gigaseg.predict).
    """
    tifffile = require("tifffile", "writing the mask TIFF")
    l0_w, l0_h = grid.l0_size
    sizes = level_sizes(l0_w, l0_h, MASK_LEVELS)
    encode = _zlibng_encoder()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="gigaseg-deflate") if encode and workers > 1 else None
    with contextlib.ExitStack() as stack, tifffile.TiffWriter(path, bigtiff=l0_w * l0_h > 2**31) as tif:
        if pool is not None:
            stack.enter_context(pool)
        for lvl, (lw, lh) in enumerate(sizes):
            ds = (l0_w / lw + l0_h / lh) / 2.0
            lvl_mpp = (mpp[0] * l0_w / lw, mpp[1] * l0_h / lh)

            def read_strip(y0, y1, lw=lw, ds=ds):
                return grid.level_rows(y0, y1, lw, ds, transform)

            def report(strip, y0, y1, lvl=lvl):
                if progress_cb is not None:
                    progress_cb(y1 - y0, lvl)

            if encode is None:
                data = level_tiles(read_strip, lh, _TILE, on_strip=report)
            else:
                data = _encoded(_level_tiles_or_bytes(grid, lw, lh, ds, transform, encode, report), encode, pool)
            write_level(
                tif, data, shape=(lh, lw), level=lvl, tile=_TILE, mpp=lvl_mpp, photometric="minisblack",
                compression="zlib", compressionargs={"level": 1}, maxworkers=workers, buffersize=_TILE * _TILE * 32,
                description=description if lvl == 0 else None,
            )


def patch_mask_tiff(path: Path, grid: MaskGrid, boxes: list[tuple[int, int, int, int]], *, transform=None) -> int:
    """Bring the mask TIFF ``path``, which ``write_mask_tiff`` wrote from ``grid``, up to date after the grid
    pixels in ``boxes`` (grid ``(y0, x0, y1, x1)``, end exclusive) changed: every tile of every level that
    shows one of them is encoded again and appended to the file, and its level's tile offsets and byte
    counts are pointed at it (NOTE [Patched tiles]). Returns how many tiles were rewritten."""
    tifffile = require("tifffile", "writing the mask TIFF")
    encode = _zlibng_encoder() or _zlib_encode
    l0_w, l0_h = grid.l0_size
    sizes = level_sizes(l0_w, l0_h, MASK_LEVELS)
    written = 0
    with tifffile.TiffFile(path, mode="r+b") as tif:
        if len(tif.pages) != len(sizes):
            raise ValueError(f"{path} has {len(tif.pages)} pages, not the {len(sizes)} levels of this grid")
        fh = tif.filehandle
        for lvl, (lw, lh) in enumerate(sizes):
            ds = (l0_w / lw + l0_h / lh) / 2.0
            gx, gy = grid.index(lw, ds, 0), grid.index(lh, ds, 1)  # the grid pixel under each level pixel
            tiles: dict[int, set[int]] = {}
            for y0, x0, y1, x1 in boxes:  # the level's pixels that sample the box: sorted indices, so ranges
                ly0, ly1 = np.searchsorted(gy, [y0, y1])
                lx0, lx1 = np.searchsorted(gx, [x0, x1])
                if ly1 <= ly0 or lx1 <= lx0:
                    continue  # no pixel of this level samples the box
                for ty in range(int(ly0) // _TILE, (int(ly1) - 1) // _TILE + 1):
                    tiles.setdefault(ty, set()).update(range(int(lx0) // _TILE, (int(lx1) - 1) // _TILE + 1))
            if not tiles:
                continue
            page = tif.pages[lvl]
            offsets = list(page.tags["TileOffsets"].value)
            counts = list(page.tags["TileByteCounts"].value)
            across = -(-lw // _TILE)
            uniform: dict[int, bytes] = {}  # a uniform tile's stream, once per value (NOTE [Uniform tiles])
            for ty in sorted(tiles):
                rows = grid.grid_rows(ty * _TILE, min(ty * _TILE + _TILE, lh), ds)
                for tx in sorted(tiles[ty]):
                    gxs = gx[tx * _TILE:tx * _TILE + _TILE]
                    lo, hi = int(gxs[0]), int(gxs[-1]) + 1
                    part = rows[:, lo:hi] if transform is None else transform(rows[:, lo:hi])  # the tile's columns only
                    v = int(part.min())
                    if v == int(part.max()):
                        if v not in uniform:
                            uniform[v] = encode(np.full((_TILE, _TILE), v, np.uint8))
                        data = uniform[v]
                    else:
                        data = encode(_spread(part, np.bincount(gxs - lo, minlength=hi - lo)))
                    fh.seek(0, os.SEEK_END)
                    offsets[ty * across + tx], counts[ty * across + tx] = fh.tell(), len(data)
                    fh.write(data)
                    written += 1
            page.tags["TileOffsets"].overwrite(offsets)
            page.tags["TileByteCounts"].overwrite(counts)
    return written


def _zlib_encode(tile: np.ndarray) -> bytes:
    """A tile as a deflate stream at zlib's level 1, as tifffile writes compression="zlib" (no zlib-ng)."""
    import zlib

    return zlib.compress(tile.tobytes(), 1)


# NOTE [Patched tiles]
# A step after the model that changes a few grid pixels (hole filling, NOTE [Hole filling]; the
# component filter's dropped pieces, NOTE [Component filter]) would
# otherwise mean writing the whole mask TIFF again after the model, which the TIFF thread wrote while
# the model ran: on a 40x slide that is 0.4 s more per slide on 2 cores. Instead only the tiles that
# show a changed grid pixel are made again, exactly as write_mask_tiff makes them (nearest neighbour,
# the transform on the grid's pixels, edge tiles padded by replication), encoded, appended at the
# file's end, and their entries in the level's TileOffsets and TileByteCounts replaced (tifffile's
# TiffTag.overwrite: in place when the new values fit, else appended). The old tiles' bytes stay in
# the file, unused: a few kB. Every level decodes to what write_mask_tiff writes from the changed
# grid (tests/test_holes.py compares them); the file is not the same byte for byte.

# NOTE [Mask compression]
# The mask's tiles are deflate streams (TIFF compression 8, "Adobe deflate"), which every TIFF
# reader decodes. Where imagecodecs has zlib-ng we encode them ourselves with its level 2:
# on 0/255 tissue masks it is ~4x faster than zlib's level 1 and the file is ~2x smaller
# (0.31 s and 3.9 MB per gigapixel against 1.28 s and 8.2 MB, this project's 2-core Xeon),
# which matters on a CPU, where the TIFF thread shares the cores with the model. The transform
# (probabilities -> 0/255) runs on the grid's pixels before nearest-neighbour spreads them over a
# level: on a 40x slide predicted at 4 um/px that is 256 times fewer pixels, and the level-0 TIFF
# of a 64000 x 32000 slide took 5.1 s with it applied after, most of the slide's 5.5 s.
def _zlibng_encoder():
    """``encode(tile) -> bytes`` with zlib-ng's level 2, or None where imagecodecs lacks it."""
    try:
        import imagecodecs

        if not imagecodecs.ZLIBNG.available:
            return None
    except (ImportError, AttributeError):
        return None
    return functools.partial(imagecodecs.zlibng_encode, level=2)


def _encoded(tiles, encode, pool: ThreadPoolExecutor | None, chunk: int = 32):
    """The tiles encoded in order (a tile already given as bytes passes as it is); with a ``pool``,
    ``chunk`` tiles at a time in parallel."""
    def one(t):
        return t if isinstance(t, bytes) else encode(t)

    if pool is None:
        yield from (one(t) for t in tiles)
        return
    batch = []
    for t in tiles:
        batch.append(t)
        if len(batch) == chunk:
            yield from pool.map(one, batch)
            batch = []
    yield from pool.map(one, batch)


def _level_tiles_or_bytes(grid: MaskGrid, lvl_w: int, lvl_h: int, downsample: float, transform, encode, on_strip):
    """A level's tiles, row-major, as ``level_tiles`` gives them, except that a tile whose grid
    pixels are all one value is its encoded bytes, encoded once per value (NOTE [Uniform tiles])."""
    cache: dict[int, bytes] = {}
    gx_all = grid.index(lvl_w, downsample, 0)
    # per tile column: the grid columns [lo, hi) under it and how many of its level columns each
    # spreads over (the index is sorted, so repeating each that often is rows[:, gx], ~8x faster)
    spans = []
    for x0 in range(0, lvl_w, _TILE):
        gx = gx_all[x0:x0 + _TILE]
        lo, hi = int(gx[0]), int(gx[-1]) + 1
        spans.append((lo, hi, np.bincount(gx - lo, minlength=hi - lo)))
    bounds = np.array([b for lo, hi, _ in spans for b in (lo, hi)], np.int64)  # reduceat's [lo, hi) segments
    for y0 in range(0, lvl_h, _TILE):
        y1 = min(y0 + _TILE, lvl_h)
        rows = grid.grid_rows(y0, y1, downsample, transform)
        on_strip(rows, y0, y1)  # NOTE [Last tile]
        # each tile's lowest and highest grid pixel, from the strip's columns: two reductions per strip
        col_lo = np.append(rows.min(axis=0), 0)  # the appended value is never in a segment: hi <= gw
        col_hi = np.append(rows.max(axis=0), 0)
        lows = np.minimum.reduceat(col_lo, bounds)[::2].tolist()
        highs = np.maximum.reduceat(col_hi, bounds)[::2].tolist()
        for (lo, hi, counts), v, top in zip(spans, lows, highs):
            if v == top:
                if v not in cache:
                    cache[v] = encode(np.full((_TILE, _TILE), v, np.uint8))
                yield cache[v]
                continue
            yield _spread(rows[:, lo:hi], counts)


def _spread(part: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """A level's tile from the grid columns under it: each column repeated over its ``counts`` level
    columns, and an edge tile padded to _TILE x _TILE by edge replication, as strip_tiles does."""
    t = np.repeat(part, counts, axis=1)
    if t.shape != (_TILE, _TILE):
        t = np.pad(t, ((0, _TILE - t.shape[0]), (0, _TILE - t.shape[1])), mode="edge")
    return t


# NOTE [Uniform tiles]
# Most tiles of a tissue mask's finer levels lie wholly in glass or wholly in tissue. Such a tile
# is known to be uniform from the few grid pixels under it (nearest neighbour spreads each over
# downsample / step level pixels a side), so it is neither spread, copied nor compressed: its
# deflate stream is made once per value and repeated. The bytes are those of the tile itself, so
# the file is the same byte for byte (tests/test_predict.py compares).


def contour_grid(grid: MaskGrid, binary) -> tuple[np.ndarray, int]:
    """The binary mask on the contour grid: (h, w) uint8 0/1 and the subsampling factor.

    The grid is used as is up to ``_CONTOUR_MAX_PIXELS``; above, every f-th row and column
    (f the smallest integer that fits).
    """
    gh, gw = grid.shape
    f = 1
    while math.ceil(gh / f) * math.ceil(gw / f) > _CONTOUR_MAX_PIXELS:
        f += 1
    out = np.empty((math.ceil(gh / f), math.ceil(gw / f)), np.uint8)
    cols = np.arange(0, gw, f)
    rows_per = max(f, (16 * 2**20 // max(gw, 1)) // f * f)
    k = 0
    for y in range(0, gh, rows_per):
        y1 = min(y + rows_per, gh)
        block = grid.rows(y, y1) if f == 1 else grid.take_rows(np.arange(y, y1, f))
        b = binary(block)[:, cols] if f > 1 else binary(block)
        out[k : k + b.shape[0]] = b
        k += b.shape[0]
    return out, f


def mask_polygons(mask: np.ndarray, *, scale: tuple[float, float], simplify: float, min_area: float) -> list:
    """Polygons with holes of a 0/1 mask, in level-0 pixels.

    Marching squares at 0.5 (contourpy, filled between 0.5 and 1.5 on the zero-padded mask)
    traces boundaries between pixel centres, so a pixel is inside a polygon exactly when its
    value is 1 (see NOTE [Rasterization rule] in gigaseg.geojson). Coordinates are scaled by
    ``scale`` (level-0 pixels per mask pixel), then made valid, simplified (``simplify``
    level-0 pixels; 0 for none), and polygons and holes under ``min_area`` (level-0 pixels
    squared) dropped.
    """
    contourpy = require("contourpy", "tracing the mask's outlines")
    shapely = require("shapely", "the GeoJSON polygons")
    from shapely.geometry import Polygon

    if mask.size == 0 or not mask.any():
        return []
    with _small_pages():
        z = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.float64)
        z[1:-1, 1:-1] = mask
        gen = contourpy.contour_generator(z=z, name="serial", fill_type=contourpy.FillType.OuterOffset,
                                          chunk_size=0)
        points, offsets = gen.filled(0.5, 1.5)
        del gen, z
    sx, sy = scale
    polys = []
    for pts, offs in zip(points, offsets):
        pts = np.asarray(pts, dtype=np.float64)
        # mask pixel j has its centre at contour x = j + 1 (padding) and covers [j, j + 1) * scale
        xy = np.stack([(pts[:, 0] - 0.5) * sx, (pts[:, 1] - 0.5) * sy], axis=1)
        rings = [xy[offs[i] : offs[i + 1]] for i in range(len(offs) - 1)]
        rings = [r for r in rings if len(r) >= 4]
        if not rings:
            continue
        shell, holes = rings[0], rings[1:]
        if min_area > 0:
            holes = [h for h in holes if abs(_ring_area(h)) >= min_area]
        poly = Polygon(shell, holes)
        if simplify > 0:
            poly = poly.simplify(simplify, preserve_topology=True)
        if not poly.is_valid:
            poly = shapely.make_valid(poly)
        for part in getattr(poly, "geoms", [poly]):
            if part.geom_type == "Polygon" and not part.is_empty and part.area >= max(min_area, 1e-12):
                polys.append(shapely.geometry.polygon.orient(part, sign=1.0))
    return polys


@contextlib.contextmanager
def _small_pages():
    """No transparent huge pages for numpy's new large arrays inside the block.

    numpy asks the kernel for huge pages on large arrays (madvise). Where memory is fragmented
    (a full page cache, after a slide was read and a mask written), each 2 MB fault then
    waits for compaction: contourpy's coordinate grids for a 1-gigapixel slide (0.45 GB) took
    0.9 s of system time in ``gigaseg predict`` instead of 0.05 s.
    """
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy < 2
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            _set_madvise_hugepage = None
    if _set_madvise_hugepage is None:
        yield
        return
    previous = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(previous)


def _ring_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def geojson_collection(polygons: list, *, name: str = "Tissue", color: list[int] | None = None) -> dict:
    """A QuPath-importable FeatureCollection of annotations classified ``name``."""
    features = []
    for poly in polygons:
        rings = [poly.exterior, *poly.interiors]
        coords = [[[round(x, 2), round(y, 2)] for x, y in ring.coords] for ring in rings]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": coords},
            "properties": {"objectType": "annotation",
                           "classification": {"name": name, "color": list(color or _TISSUE_COLOR)}},
        })
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: Path, polygons: list | dict[str, list], colors: dict[str, list[int]] | None = None) -> None:
    """The tissue polygons (a list), or each class's (a dict: class name -> polygons, each
    feature classified with its class's name and ``colors``' colour), as one FeatureCollection."""
    if isinstance(polygons, dict):
        features = [feat for name, polys in polygons.items()
                    for feat in geojson_collection(polys, name=name, color=(colors or {}).get(name))["features"]]
        collection = {"type": "FeatureCollection", "features": features}
    else:
        collection = geojson_collection(polygons)
    with open(path, "w") as f:
        json.dump(collection, f, separators=(",", ":"))
        f.write("\n")


def write_overlay(path: Path, thumb: np.ndarray, polygons: list | dict[str, list], *,
                  l0_per_thumb: tuple[float, float], thumb_mask: np.ndarray | None = None,
                  colors: dict[str, list[int]] | None = None, boxes: list | None = None) -> None:
    """A PNG thumbnail with tissue tinted (``thumb_mask``) and the polygon outlines drawn; ``boxes``
    (level-0 ``[x0, y0, x1, y1]``: the pieces a component filter dropped) drawn in magenta.

    With ``polygons`` a dict (class name -> polygons) and ``colors`` (class name -> RGB, in the
    order of the class indices), ``thumb_mask`` holds class indices: each class k >= 1 is tinted
    and outlined in its colour (NOTE [Class outputs] in gigaseg.predict).
    """
    require("PIL", "writing the overlay")
    from PIL import Image, ImageDraw

    img = thumb.copy()
    by_class = isinstance(polygons, dict)
    if thumb_mask is not None and thumb_mask.shape == img.shape[:2]:
        if by_class:
            for k, rgb in enumerate((colors or {}).values()):
                sel = thumb_mask == k
                if k == 0 or not sel.any():
                    continue
                img[sel] = (0.6 * img[sel] + 0.4 * np.array(rgb, np.float32)).astype(np.uint8)
        else:
            sel = thumb_mask.astype(bool)
            tint = np.array(_TISSUE_COLOR, np.float32)
            img[sel] = (0.85 * img[sel] + 0.15 * tint).astype(np.uint8)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    kx, ky = 1.0 / l0_per_thumb[0], 1.0 / l0_per_thumb[1]
    width = max(1, round(max(img.shape[:2]) / 500))
    groups = (list(polygons.items()) if isinstance(polygons, dict) else [(None, polygons)])
    for name, polys in groups:
        outline = None if name is None else tuple((colors or {}).get(name, _TISSUE_COLOR))
        for poly in polys:
            for k, ring in enumerate([poly.exterior, *poly.interiors]):
                xy = [(x * kx, y * ky) for x, y in ring.coords]
                if len(xy) >= 2:
                    fill = outline if outline is not None else ((0, 160, 0) if k == 0 else (230, 120, 0))
                    draw.line(xy, fill=fill, width=width)
    for x0, y0, x1, y1 in boxes or []:  # at least a few pixels across, so that a small piece shows
        cx, cy, hx, hy = (x0 + x1) * kx / 2, (y0 + y1) * ky / 2, (x1 - x0) * kx / 2, (y1 - y0) * ky / 2
        hx, hy = max(hx, 3 * width), max(hy, 3 * width)
        draw.rectangle((cx - hx, cy - hy, cx + hx, cy + hy), outline=_DROPPED_COLOR, width=width)
    pil.save(path, format="PNG", optimize=False)
