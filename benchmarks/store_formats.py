"""Benchmark on-disk formats for gigapixel training regions; prints one JSON object.

Compares raw ``.npy`` files read through ``np.memmap`` with zarr v3 arrays (chunked
512 x 512 x 3, no compressor, zstd, blosc/zstd with byte shuffle). For each format it
writes an RGB region strip by strip (as ``gigaseg prepare`` does), then reads random
tiles with a halo (as the engine does), with the page cache dropped for the region's
files (``posix_fadvise(DONTNEED)``: "cold-ish") and again with the files cached ("warm").

Run (about a minute on 2 cores):

    .venv/bin/python benchmarks/store_formats.py --height 4096 --width 16384 > store_formats.json

The content is a built-in H&E-like texture (fast), or with ``--content synth`` the
synthetic slide of ``gigaseg.synth.render_region`` (realistic, but slow to render:
use a smaller region, e.g. ``--height 1024 --width 4096``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHUNK = 512


def _texture_strip(seed: int, y0: int, h: int, w: int) -> np.ndarray:
    """A deterministic H&E-like strip (h, w, 3) uint8: white glass, pink tissue, purple nuclei."""
    rng = np.random.default_rng([seed, y0])
    # Tissue layout: a smooth analytic field, thresholded.
    gy = np.arange(y0, y0 + h, dtype=np.float32)[:, None]
    gx = np.arange(w, dtype=np.float32)[None, :]
    field = np.sin(gx / 900.0 + seed) + np.cos(gy / 700.0) + 0.5 * np.sin((gx + gy) / 333.0)
    tissue = field > 0.2
    img = np.empty((h, w, 3), np.float32)
    img[...] = (238, 236, 240)
    pink = np.array([225, 150, 190], np.float32)
    img[tissue] = pink
    nuclei = tissue & (rng.random((h, w)) < 0.02)
    img[nuclei] = (110, 60, 150)
    img += rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _content(seed: int, height: int, width: int, kind: str):
    """Return (strip function (y0, h) -> (h, width, 3) uint8, description)."""
    if kind == "texture":
        return (lambda y0, h: _texture_strip(seed, y0, h, width)), "builtin-texture"
    from gigaseg.synth import render_region

    def strip(y0: int, h: int) -> np.ndarray:
        rgb, _ = render_region(seed, 0, y0, width, h, width=width, height=height)
        return rgb

    return strip, "gigaseg.synth.render_region"


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file()]


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in _files(path))


def _drop_cache(path: Path) -> None:
    for p in _files(path):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in _files(path):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Npy:
    name = "npy-memmap"

    def __init__(self, path: Path, shape):
        self.path = path.with_suffix(".npy")
        self.arr = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.uint8, shape=shape)

    def write(self, y0: int, data: np.ndarray) -> None:
        self.arr[y0 : y0 + data.shape[0]] = data

    def close(self) -> None:
        self.arr.flush()
        del self.arr

    def open(self):
        return np.load(self.path, mmap_mode="r")


class _Zarr:
    def __init__(self, path: Path, shape, compressors, name):
        import zarr

        self.name = name
        self.path = path.with_suffix(".zarr")
        self.arr = zarr.create_array(
            store=str(self.path),
            shape=shape,
            chunks=(_CHUNK, _CHUNK, 3),
            dtype="uint8",
            compressors=compressors,
            fill_value=0,
        )

    def write(self, y0: int, data: np.ndarray) -> None:
        self.arr[y0 : y0 + data.shape[0]] = data

    def close(self) -> None:
        del self.arr

    def open(self):
        import zarr

        return zarr.open_array(str(self.path), mode="r")


def _formats():
    import zarr.codecs as zc

    return [
        ("npy-memmap", lambda p, s: _Npy(p, s)),
        ("zarr-raw", lambda p, s: _Zarr(p, s, None, "zarr-raw")),
        ("zarr-zstd3", lambda p, s: _Zarr(p, s, zc.ZstdCodec(level=3), "zarr-zstd3")),
        (
            "zarr-blosc-zstd5-shuffle",
            lambda p, s: _Zarr(
                p,
                s,
                zc.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=1),
                "zarr-blosc-zstd5-shuffle",
            ),
        ),
    ]


def _tile_origins(rng, height: int, width: int, tile: int, n: int):
    return [
        (int(rng.integers(0, max(1, height - tile + 1))), int(rng.integers(0, max(1, width - tile + 1))))
        for _ in range(n)
    ]


def _read_tiles(arr, origins, tile: int) -> float:
    t0 = time.perf_counter()
    total = 0
    for y0, x0 in origins:
        a = np.ascontiguousarray(arr[y0 : y0 + tile, x0 : x0 + tile])  # really read it
        total += int(a[::97, ::89].sum())  # touch the data
    dt = time.perf_counter() - t0
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=4096, help="region height H (pixels)")
    ap.add_argument("--width", type=int, default=16384, help="region width W (pixels)")
    ap.add_argument("--tile", type=int, default=2048, help="tile side without halo")
    ap.add_argument("--halo", type=int, default=128, help="halo on each side")
    ap.add_argument("--tiles", type=int, default=12, help="random tiles per measurement")
    ap.add_argument("--strip", type=int, default=1024, help="strip height for writing (multiple of 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--content", default="texture", choices=("texture", "synth"), help="pixel content")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args(argv)

    h, w = args.height, args.width
    shape = (h, w, 3)
    strip_fn, content = _content(args.seed, h, w, args.content)
    # Render the content once, outside the timed writes (kept in memory: the benchmark
    # region is small by design).
    strips = [(y0, strip_fn(y0, min(args.strip, h - y0))) for y0 in range(0, h, args.strip)]
    raw_bytes = h * w * 3
    side = args.tile + 2 * args.halo
    tile_bytes = side * side * 3
    scratch = Path(tempfile.mkdtemp(prefix="gigaseg-bench-", dir=args.dir))
    results = []
    try:
        for name, make in _formats():
            base = scratch / name
            t0 = time.perf_counter()
            writer = make(base, shape)
            for y0, data in strips:
                writer.write(y0, data)
            writer.close()
            _fsync_tree(writer.path)
            t_write = time.perf_counter() - t0
            arr = writer.open()
            rng = np.random.default_rng(args.seed)
            origins = _tile_origins(rng, h, w, side, args.tiles)
            _drop_cache(writer.path)
            t_cold = _read_tiles(arr, origins, side)
            _read_tiles(arr, origins, side)  # warm up the cache
            t_warm = _read_tiles(arr, origins, side)
            disk = _disk_bytes(writer.path)
            results.append(
                {
                    "format": name,
                    "write_MBps": round(raw_bytes / t_write / 1e6, 1),
                    "read_cold_MBps": round(tile_bytes * len(origins) / t_cold / 1e6, 1),
                    "read_warm_MBps": round(tile_bytes * len(origins) / t_warm / 1e6, 1),
                    "disk_MB": round(disk / 1e6, 1),
                    "ratio": round(raw_bytes / max(disk, 1), 2),
                    "files": len(_files(writer.path)),
                }
            )
            del arr
            shutil.rmtree(writer.path, ignore_errors=True) if writer.path.is_dir() else writer.path.unlink()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = {
        "benchmark": "store_formats",
        "region_hw": [h, w],
        "raw_MB": round(raw_bytes / 1e6, 1),
        "tile_side_with_halo": side,
        "tiles": args.tiles,
        "chunks": [_CHUNK, _CHUNK, 3],
        "content": content,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": __import__("zarr").__version__,
        "results": results,
    }
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
