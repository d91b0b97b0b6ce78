"""The region store's benchmarks: ``gigaseg bench store`` (tile reads through the dataset
views) and ``gigaseg bench prepare`` (peak memory and speed of ``gigaseg prepare``).

    gigaseg bench store --size 4096x8192 --format zarr --json
    gigaseg bench prepare --size 16000x64000 --json
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["bench_store", "bench_prepare"]


def _drop_cache(path: Path) -> None:
    """Ask the kernel to drop the page cache of a file, or of every file under a folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _fill_region(store, size: tuple[int, int], fmt: str, seed: int) -> str:
    """One synthetic region of ``size`` (w, h), 0.5 um/px, rendered strip by strip."""
    from ..synth import render_region

    w, h = size
    rows = 512
    with store.new_region("bench", (w, h), meta={"mpp": 0.5, "seed": seed}, format=fmt) as writer:
        for y0 in range(0, h, rows):
            rgb, m = render_region(seed, 0, y0, w, min(rows, h - y0), width=w, height=h)
            writer.append(rgb, m)
    return "gigaseg.synth.render_region"


def bench_store(
    *,
    store: str | Path | None = None,
    height: int = 4096,
    width: int = 8192,
    format: str = "npy",  # noqa: A002 - the store's word for it
    tile: int = 2048,
    halo: int = 128,
    tiles: int = 8,
    jitter: str = "hed",
    seed: int = 0,
) -> dict[str, Any]:
    """Read random tiles of a region through ``RegionDataset`` views and time them.

    Reads ``tiles`` random squares of ``tile + 2 * halo`` pixels (at most the region's
    shorter side) of the store's first region: plain, under a dihedral transform, and under
    a dihedral transform plus colour ``jitter`` ("hed", "rgb" or "none"), each with the page
    cache dropped for the region's files (cold) and cached (warm).

    Args:
        store: an existing store; default: a temporary one holding one synthetic region of
            ``height`` x ``width`` pixels in ``format`` ("npy" or "zarr").
        seed: the region's and the tiles' seed.

    Returns:
        A JSON-ready dict; ``<mode>_<cold|warm>_MBps`` counts the image and mask bytes of
        the tiles returned, ``<mode>_<cold|warm>_s_per_tile`` the seconds per tile.
    """
    from ..dataset import DIHEDRAL, RegionDataset, RegionView, StainJitter
    from ..store import RegionStore

    tmp = None
    content = "existing store"
    try:
        if store:
            the_store = RegionStore(store)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="gigaseg-bench-store-"))
            the_store = RegionStore.create(tmp / "store")
            content = _fill_region(the_store, (width, height), format, seed)
        ds = RegionDataset(the_store, split=None, augment=False)
        region = ds.regions[0]
        h, w = region.shape
        side = tile + 2 * halo
        if side > min(h, w):
            side = min(h, w)
        rng = np.random.default_rng(seed)
        origins = [(int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))) for _ in range(tiles)]
        colour = StainJitter.draw(np.random.default_rng(seed), jitter, 0.05)
        modes: dict[str, list[tuple[Any, Any]]] = {  # (dihedral transform, colour jitter) per tile
            "plain": [(DIHEDRAL[0], None)] * len(origins),
            "dihedral": [(DIHEDRAL[i % 8], None) for i in range(len(origins))],
            "dihedral+jitter": [(DIHEDRAL[i % 8], colour) for i in range(len(origins))],
        }
        bytes_per_tile = side * side * 4  # image (3 bytes) + mask (1 byte) per pixel
        results = {}
        for mode, params in modes.items():
            for cache in ("cold", "warm"):
                if cache == "cold":
                    _drop_cache(region.path)
                t0 = time.perf_counter()
                for (y0, x0), (t, j) in zip(origins, params):
                    img = RegionView(region.image, t, j)[y0 : y0 + side, x0 : x0 + side]
                    msk = RegionView(region.mask, t, None)[y0 : y0 + side, x0 : x0 + side]
                    del img, msk
                dt = time.perf_counter() - t0
                results[f"{mode}_{cache}_MBps"] = round(bytes_per_tile * len(origins) / dt / 1e6, 1)
                results[f"{mode}_{cache}_s_per_tile"] = round(dt / len(origins), 4)
        return {
            "benchmark": "store",
            "store": str(the_store.path) if store else None,
            "region": region.name,
            "region_hw": [h, w],
            "format": region.format,
            "content": content,
            "tile_side_with_halo": side,
            "tiles": len(origins),
            "jitter": jitter,
            "MB_counts": "image + mask bytes of the tiles returned",
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            **results,
        }
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _write_bench_slide(path: Path, w: int, h: int) -> None:
    """A tiled uncompressed RGB TIFF at 0.5 mpp whose tiles come from a small bank."""
    import tifffile

    tile = 512
    rng = np.random.default_rng(0)
    bank = []
    for k in range(8):
        t = np.full((tile, tile, 3), 235, np.uint8)
        t[:, :, 0] = 230 - 20 * (k % 3)
        noise = rng.integers(0, 40, (tile, tile, 1), dtype=np.uint8)
        t = (t - noise).astype(np.uint8)
        bank.append(t)

    def tiles():
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                yield bank[(ty // tile * 7 + tx // tile) % 8]

    tifffile.imwrite(
        path, tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
        bigtiff=True, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER",
    )


def _write_bench_mask(tmp: Path, kind: str, sw: int, sh: int) -> Path:
    """A mask of the whole slide: an ellipse with a hole (GeoJSON), or an ellipse (a TIFF at 1/16,
    or a smaller scale for a tiny slide: prepare refuses masks under 8 pixels a side)."""
    if kind == "geojson":
        ang = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
        ext = np.stack([sw / 2 + 0.45 * sw * np.cos(ang), sh / 2 + 0.45 * sh * np.sin(ang)], 1)
        hole = np.stack([sw / 2 + 0.1 * sw * np.cos(-ang), sh / 2 + 0.1 * sh * np.sin(-ang)], 1)
        rings = [np.vstack([r, r[:1]]).tolist() for r in (ext, hole)]
        mask = tmp / "mask.geojson"
        mask.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": rings}}]}))
        return mask
    import tifffile

    mask = tmp / "mask.tif"
    k = max(1, min(16, sh // 8, sw // 8))
    mh, mw = max(1, sh // k), max(1, sw // k)
    yy, xx = np.ogrid[0:mh, 0:mw]
    m = ((((xx - mw / 2) / (0.45 * mw)) ** 2 + ((yy - mh / 2) / (0.45 * mh)) ** 2) < 1).astype(np.uint8)
    tifffile.imwrite(mask, m * 255, tile=(256, 256), compression="zlib")
    return mask


_MASK_KINDS = ("geojson", "tiff")


def bench_prepare(
    height: int,
    width: int,
    *,
    slide_height: int | None = None,
    slide_width: int | None = None,
    mpp: float | None = None,
    slide_mpp: float = 0.5,
    mask: str = "geojson",
    format: str = "npy",  # noqa: A002 - the store's word for it
    scratch_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Peak memory and speed of ``prepare_region`` on one region of ``height`` x ``width``
    pixels at ``mpp``.

    Writes a temporary tiled, uncompressed TIFF slide (level 0 at ``slide_mpp``; cheap
    repeated content) and a ``mask`` ("geojson": an ellipse with a hole; "tiff": an ellipse
    at 1/16 scale), then prepares the region into a temporary store of ``format``. Needs
    about 3 bytes per slide pixel plus 4 per region pixel of disk under ``scratch_dir``.

    Args:
        slide_height, slide_width: the slide's size (both or neither; default: the region's
            at ``mpp``).
        mpp: the region's um/px (default: the slide's level 0).

    Returns:
        A JSON-ready dict: seconds, MB/s, peak resident memory (VmHWM reset after writing
        the slide; None where it cannot be reset), peak anonymous memory (sampled) and the
        region's size on disk.
    """
    from .._memory import MemorySampler, peak_rss_bytes, read_status_bytes
    from ..prepare import prepare_region
    from ..store import RegionStore

    if mask not in _MASK_KINDS:
        raise ConfigError(f"bench prepare: mask={mask!r}; use one of {', '.join(_MASK_KINDS)}")
    if (slide_height is None) != (slide_width is None):
        raise ConfigError("bench prepare: give both slide_height and slide_width, or neither (the region's size)")
    w, h = width, height
    ds = 1.0 if mpp is None else mpp / slide_mpp
    if slide_width is not None and slide_height is not None:
        sw, sh = slide_width, slide_height
    else:
        sw, sh = int(np.ceil(w * ds)), int(np.ceil(h * ds))
    tmp = Path(tempfile.mkdtemp(prefix="gigaseg-bench-prepare-", dir=scratch_dir))
    try:
        slide = tmp / "slide.tif"
        t0 = time.perf_counter()
        _write_bench_slide(slide, sw, sh)
        t_slide = time.perf_counter() - t0
        mask_path = _write_bench_mask(tmp, mask, sw, sh)
        reset = True
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
        except OSError:
            reset = False
        rss_before = read_status_bytes("VmRSS")
        store = RegionStore.create(tmp / "store")
        t0 = time.perf_counter()
        with MemorySampler(0.05) as sampler:
            region = prepare_region(store, slide, mask_path, (w, h), mpp=mpp, format=format,
                                    slide_mpp=slide_mpp, progress=False)
        t_prep = time.perf_counter() - t0
        disk = sum(p.stat().st_blocks * 512 for p in region.path.rglob("*") if p.is_file())
        return {
            "benchmark": "prepare",
            "region_hw": [h, w],
            "slide_hw": [sh, sw],
            "mpp": mpp,
            "slide_mpp": slide_mpp,
            "strip_rows": region.meta.get("strip_rows"),
            "strips_exact": region.meta.get("strips_exact"),
            "mask": mask,
            "format": format,
            "slide_write_s": round(t_slide, 1),
            "prepare_s": round(t_prep, 1),
            "prepare_MBps": round(w * h * 4 / t_prep / 1e6, 1),
            "peak_rss_GiB": round((peak_rss_bytes() or 0) / 2**30, 3) if reset else None,
            "peak_anon_GiB": round(sampler.peak / 2**30, 3),
            "rss_before_GiB": round((rss_before or 0) / 2**30, 3),
            "region_disk_GB": round(disk / 1e9, 2),
            "cpu_count": os.cpu_count(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
