"""Streaming writer of synthetic slides: pyramidal JPEG BigTIFF + exact mask (private).

Memory stays bounded by one strip of tile rows: level 0 is rendered strip by strip
(blocks in a thread pool) and streamed to tifffile as tiles; each strip is also
box-downsampled by 4 and appended to a raw temporary file (``gigaseg._pyramid.LevelSpool``),
which becomes the source of the next level. The pyramid's sizes, tiles and page layout are
``gigaseg._pyramid``'s (levels until the longest side is at most 256). Outputs are written
under temporary names and renamed when complete.
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

from .._deps import require
from .._pyramid import SLIDE_LEVELS, LevelSpool, level_sizes, level_tiles, strip_tiles, write_level
from ..errors import ConfigError, GigasegError, InputError, OutputError
from .render import _check_geometry, _check_seed, check_holes, check_profile


def mask_path_for(path: Path) -> Path:
    """``OUT.tiff`` -> ``OUT.mask.tiff`` (same folder)."""
    name = path.name
    for ext in (".tiff", ".tif"):
        if name.lower().endswith(ext):
            return path.with_name(name[: -len(ext)] + ".mask" + name[-len(ext):])
    return path.with_name(name + ".mask.tiff")


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


def write_slide_tiff(path, *, width, height, seed, mpp, tile, quality, progress, holes="background", profile="he"):
    tifffile = require("tifffile", "writing a synthetic slide")
    from .render import _render_block, make_layout

    path = _check_options(path, tile, quality)
    mask_path = mask_path_for(path)
    lay = make_layout(seed, width, height, mpp, profile=profile)
    sizes = level_sizes(width, height, SLIDE_LEVELS)
    workers = max(1, min(2, os.cpu_count() or 1))
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=".synth-", dir=path.parent))
    except OSError as exc:
        raise _cannot_write(path, exc) from exc
    tmp_slide = tmpdir / "slide.tiff"
    tmp_mask = tmpdir / "mask.tiff"
    # spools[k - 1] holds level k, fed by level k - 1 as it is written
    spools: list[LevelSpool] = []
    bar = None
    try:
        from tqdm import tqdm

        n_strips = sum(-(-h // tile) for _, h in sizes)
        bar = tqdm(total=n_strips, desc="synth", unit="strip", disable=not progress or not sys.stderr.isatty(),
                   file=sys.stderr)
        # every level carries level 0's resolution tags
        jpeg = dict(tile=tile, mpp=(mpp, mpp), compression="jpeg", compressionargs={"level": int(quality)},
                    photometric="rgb", subsampling=(2, 2), maxworkers=workers, buffersize=tile * tile * 3 * 16)
        with tifffile.TiffWriter(tmp_slide, bigtiff=True) as tif, \
                tifffile.TiffWriter(tmp_mask, bigtiff=True) as mtif, \
                ThreadPoolExecutor(workers) as pool:
            for k in range(1, len(sizes)):
                spools.append(LevelSpool(tmpdir / f"level{k}.raw", sizes[k][0]))
            mask_q: queue.Queue = queue.Queue(maxsize=256)
            mask_err: list[BaseException] = []
            producer_done = threading.Event()

            def mask_tiles():
                while (t := mask_q.get()) is not None:
                    yield t

            def mask_writer():
                try:  # the mask is one full-resolution page
                    write_level(mtif, mask_tiles(), shape=(height, width), level=None, tile=tile, mpp=(mpp, mpp),
                                compression="zlib", compressionargs={"level": 6}, photometric="minisblack",
                                maxworkers=1)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    mask_err.append(exc)
                    while not producer_done.is_set():  # drain so the producer never blocks
                        try:
                            mask_q.get(timeout=0.2)
                        except queue.Empty:
                            pass

            mthread = threading.Thread(target=mask_writer, name="synth-mask", daemon=True)
            mthread.start()

            def level0_tiles():
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
                    for t in strip_tiles(mstrip, tile):
                        mask_q.put(t)
                    if spools:  # before the yield: NOTE [Last tile] in gigaseg._pyramid
                        spools[0].feed(strip)
                    bar.update(1)
                    yield from strip_tiles(strip, tile)

            try:
                write_level(tif, level0_tiles(), shape=(height, width, 3), level=0, **jpeg)
            finally:
                # the writer either consumes or drains until producer_done, so this put returns
                mask_q.put(None)
                producer_done.set()
                mthread.join()
            if mask_err:
                raise mask_err[0]

            for lvl in range(1, len(sizes)):
                lw, lh = sizes[lvl]
                src = spools[lvl - 1]
                nxt = spools[lvl] if lvl < len(spools) else None

                def fed(strip, y0, y1, nxt=nxt):
                    if nxt is not None:
                        nxt.feed(strip)
                    bar.update(1)

                tiles = level_tiles(lambda y0, y1, src=src: src.read(y0, y1 - y0), lh, tile, on_strip=fed)
                write_level(tif, tiles, shape=(lh, lw, 3), level=lvl, **jpeg)
                src.close()
        os.replace(tmp_mask, mask_path)
        os.replace(tmp_slide, path)
    except OSError as exc:
        if isinstance(exc, GigasegError):
            raise
        raise _cannot_write(path, exc) from exc
    finally:
        if bar is not None:
            bar.close()
        for r in spools:
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


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"synth: cannot write {path} ({exc.strerror or exc}); free disk space or write it elsewhere",
                       cause=exc)


def write_slide(path, *, width: int, height: int, seed: int, mpp: float = 0.5, tile: int = 512,
                quality: int = 90, progress: bool = True, holes: str = "background", profile: str = "he"):
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
        profile: "he" (default), "all" or a list of categories (see :func:`render_region`). A
            variety slide with the "jpeg" category carries its own JPEG artefacts (rendered on
            the global block grid) under the writer's JPEG of ``quality``.

    Returns:
        ``(slide_path, mask_path)`` as :class:`pathlib.Path`.
    """
    seed = _check_seed(seed)
    _check_geometry(width, height, mpp)
    check_holes(holes)
    profile = check_profile(profile)
    return write_slide_tiff(path, width=int(width), height=int(height), seed=seed, mpp=float(mpp),
                            tile=tile, quality=quality, progress=progress, holes=holes,
                            profile=profile)
