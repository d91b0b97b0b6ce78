"""Streaming writer of synthetic slides: pyramidal JPEG BigTIFF + exact mask (private).

Memory stays bounded by one strip of tile rows: level 0 is rendered strip by strip
(blocks in a thread pool) and streamed to tifffile as tiles; each strip is also
box-downsampled by 4 and appended to a raw temporary file, which becomes the source
of the next level (plain file I/O, no memory map, so it never counts as resident
memory). Outputs are written under temporary names and renamed when complete.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from .render import _check_geometry, _check_seed, check_holes

_FACTOR = 4  # downsample between pyramid levels
_MIN_LEVEL_SIDE = 256  # stop adding levels once the longest side is at most this


def mask_path_for(path: Path) -> Path:
    """``OUT.tiff`` -> ``OUT.mask.tiff`` (same folder)."""
    name = path.name
    for ext in (".tiff", ".tif"):
        if name.lower().endswith(ext):
            return path.with_name(name[: -len(ext)] + ".mask" + name[-len(ext):])
    return path.with_name(name + ".mask.tiff")


def level_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """(w, h) of every pyramid level, level 0 first."""
    sizes = [(width, height)]
    while max(sizes[-1]) > _MIN_LEVEL_SIDE and min(sizes[-1]) >= _FACTOR:
        w, h = sizes[-1]
        sizes.append((w // _FACTOR, h // _FACTOR))
    return sizes


def _down(strip: np.ndarray, lvl_w: int) -> np.ndarray:
    """Box-average a (h, w, 3) uint8 strip by _FACTOR (h a multiple of it) to width lvl_w."""
    f = _FACTOR
    h = strip.shape[0] // f * f
    s = strip[:h, : lvl_w * f].reshape(h // f, f, lvl_w, f, 3).astype(np.uint16)
    return ((s.sum(axis=(1, 3)) + (f * f) // 2) // (f * f)).astype(np.uint8)


def _tiles(strip: np.ndarray, tile: int):
    """Tiles of a strip, left to right, edge tiles padded by edge replication."""
    h, w = strip.shape[:2]
    for x in range(0, w, tile):
        t = strip[:, x : x + tile]
        if t.shape[0] != tile or t.shape[1] != tile:
            pad = ((0, tile - t.shape[0]), (0, tile - t.shape[1])) + ((0, 0),) * (t.ndim - 2)
            t = np.pad(t, pad, mode="edge")
        yield np.ascontiguousarray(t)


class _Raw:
    """Append-only raw uint8 (rows, w, 3) file, read back in strips without memory maps."""

    def __init__(self, path: Path, w: int):
        self.path, self.w, self.rows = path, w, 0
        self.f = open(path, "w+b")

    def append(self, a: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(a).tobytes())
        self.rows += a.shape[0]

    def read(self, y: int, n: int) -> np.ndarray:
        row = self.w * 3
        self.f.seek(y * row)
        buf = np.empty((n, self.w, 3), np.uint8)
        self.f.readinto(memoryview(buf).cast("B"))
        return buf

    def close(self) -> None:
        self.f.close()
        self.path.unlink(missing_ok=True)


def _check_options(path, tile, quality):
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 16 or tile % 16:
        raise ConfigError(f"synth: tile={tile!r} must be a positive multiple of 16 (e.g. 512)")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ConfigError(f"synth: quality={quality!r} must be an integer JPEG quality in 1..100")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"synth: output {path} is a directory; give a file name like {path / 'slide.tiff'}")
    if not path.parent.exists():
        raise InputError(f"synth: folder {path.parent} does not exist; create it first")
    return path


def write_slide_tiff(path, *, width, height, seed, mpp, tile, quality, progress, holes="background"):
    import tifffile

    from .render import _render_block, make_layout

    path = _check_options(path, tile, quality)
    mask_path = mask_path_for(path)
    lay = make_layout(seed, width, height, mpp)
    sizes = level_sizes(width, height)
    res = (10000.0 / mpp, 10000.0 / mpp)
    workers = max(1, min(2, os.cpu_count() or 1))
    tmpdir = Path(tempfile.mkdtemp(prefix=".synth-", dir=path.parent))
    tmp_slide = tmpdir / "slide.tiff"
    tmp_mask = tmpdir / "mask.tiff"
    raws: list[_Raw] = []
    bar = None
    try:
        from tqdm import tqdm

        n_strips = sum(-(-h // tile) for _, h in sizes)
        bar = tqdm(total=n_strips, desc="synth", unit="strip", disable=not progress or not sys.stderr.isatty(),
                   file=sys.stderr)
        jpeg = dict(compression="jpeg", compressionargs={"level": int(quality)}, photometric="rgb",
                    subsampling=(2, 2), tile=(tile, tile), resolution=res, resolutionunit="CENTIMETER",
                    maxworkers=workers, metadata=None, buffersize=tile * tile * 3 * 16)
        with tifffile.TiffWriter(tmp_slide, bigtiff=True) as tif, \
                tifffile.TiffWriter(tmp_mask, bigtiff=True) as mtif, \
                ThreadPoolExecutor(workers) as pool:
            raws.append(_Raw(tmpdir / "level1.raw", sizes[1][0]) if len(sizes) > 1 else None)
            mask_q: queue.Queue = queue.Queue(maxsize=256)
            mask_err: list[BaseException] = []
            producer_done = threading.Event()

            def mask_tiles():
                while (t := mask_q.get()) is not None:
                    yield t

            def mask_writer():
                try:
                    mtif.write(mask_tiles(), shape=(height, width), dtype=np.uint8,
                               tile=(tile, tile), compression="zlib", compressionargs={"level": 6},
                               photometric="minisblack", resolution=res, resolutionunit="CENTIMETER",
                               metadata=None, maxworkers=1)
                except BaseException as exc:  # re-raised in the main thread
                    mask_err.append(exc)
                    while not producer_done.is_set():  # drain so the producer never blocks
                        try:
                            mask_q.get(timeout=0.2)
                        except queue.Empty:
                            pass

            mthread = threading.Thread(target=mask_writer, name="synth-mask", daemon=True)
            mthread.start()
            carry = np.zeros((0, width, 3), np.uint8)

            def level0_tiles():
                nonlocal carry
                bw, bh = 1024, 256

                def submit(y):  # all blocks of the strip of tile rows starting at y
                    sh = min(tile, height - y)
                    return [(x, yy, pool.submit(_render_block, lay, x, y + yy, min(bw, width - x),
                                                min(bh, sh - yy), False, holes))
                            for yy in range(0, sh, bh) for x in range(0, width, bw)]

                nxt = submit(0)
                for y in range(0, height, tile):
                    sh = min(tile, height - y)
                    futs, nxt = nxt, None
                    strip = np.empty((sh, width, 3), np.uint8)
                    mstrip = np.empty((sh, width), np.uint8)
                    for i, (x, yy, fut) in enumerate(futs):
                        rgb, m, _ = fut.result()
                        futs[i] = None  # release the block
                        strip[yy : yy + rgb.shape[0], x : x + rgb.shape[1]] = rgb
                        mstrip[yy : yy + rgb.shape[0], x : x + rgb.shape[1]] = m
                        del rgb, m
                    if y + tile < height:
                        nxt = submit(y + tile)  # render ahead while this strip is encoded
                    if mask_err:
                        raise mask_err[0]
                    for t in _tiles(mstrip, tile):
                        mask_q.put(t)
                    # feed the next level BEFORE yielding the tiles: tifffile stops pulling once
                    # it has the last tile, so code after the last yield never runs
                    if raws[0] is not None:
                        both = np.concatenate([carry, strip]) if carry.shape[0] else strip
                        n = both.shape[0] // _FACTOR * _FACTOR
                        if n:
                            raws[0].append(_down(both[:n], sizes[1][0]))
                        carry = both[n:]
                    bar.update(1)
                    yield from _tiles(strip, tile)

            try:
                tif.write(level0_tiles(), shape=(height, width, 3), dtype=np.uint8, subfiletype=0, **jpeg)
            finally:
                # the writer either consumes or drains until producer_done, so this put returns
                mask_q.put(None)
                producer_done.set()
                mthread.join()
            if mask_err:
                raise mask_err[0]

            for lvl in range(1, len(sizes)):
                lw, lh = sizes[lvl]
                src = raws[lvl - 1]
                nxt = _Raw(tmpdir / f"level{lvl + 1}.raw", sizes[lvl + 1][0]) if lvl + 1 < len(sizes) else None
                raws.append(nxt)

                def lvl_tiles(src=src, lw=lw, lh=lh, nxt=nxt, lvl=lvl):
                    carry = np.zeros((0, lw, 3), np.uint8)
                    for y in range(0, lh, tile):
                        sh = min(tile, lh - y)
                        strip = src.read(y, sh)
                        if nxt is not None:  # before the yield, as above
                            both = np.concatenate([carry, strip]) if carry.shape[0] else strip
                            n = both.shape[0] // _FACTOR * _FACTOR
                            if n:
                                nxt.append(_down(both[:n], sizes[lvl + 1][0]))
                            carry = both[n:]
                        bar.update(1)
                        yield from _tiles(strip, tile)

                tif.write(lvl_tiles(), shape=(lh, lw, 3), dtype=np.uint8, subfiletype=1, **jpeg)
        os.replace(tmp_mask, mask_path)
        os.replace(tmp_slide, path)
    finally:
        if bar is not None:
            bar.close()
        for r in raws:
            if r is not None:
                try:
                    r.close()
                except OSError:
                    pass
        for f in (tmp_slide, tmp_mask):
            f.unlink(missing_ok=True)
        try:
            tmpdir.rmdir()
        except OSError:
            pass
    return path, mask_path


def write_slide(path, *, width: int, height: int, seed: int, mpp: float = 0.5, tile: int = 512,
                quality: int = 90, progress: bool = True, holes: str = "background"):
    """Write a synthetic slide as a pyramidal JPEG BigTIFF plus its exact mask.

    Args:
        path: output ``.tiff``; the mask goes to ``<stem>.mask.tiff`` beside it.
        width, height: slide size, level-0 px.
        seed: the slide (see :func:`render_region`).
        mpp: micrometres per pixel, stored as resolution tags (OpenSlide reads it).
        tile: TIFF tile size, px (a multiple of 16).
        quality: JPEG quality, 1-100.
        progress: show a tqdm bar on stderr.
        holes: the mask's hole convention, "background" or "tissue" (see :func:`render_region`).

    Returns:
        ``(slide_path, mask_path)`` as :class:`pathlib.Path`.
    """
    seed = _check_seed(seed)
    _check_geometry(width, height, mpp)
    check_holes(holes)
    return write_slide_tiff(path, width=int(width), height=int(height), seed=seed, mpp=float(mpp),
                            tile=tile, quality=quality, progress=progress, holes=holes)
