"""Write a very large synthetic slide fast, for memory checks of ``gigaseg predict``.

``gigaseg synth`` renders every pixel and needs hours for a 100,000 x 100,000 slide on two
cores. This script renders one synthetic patch (``gigaseg.synth.render_region``, default
8192 x 8192) and repeats it over the whole slide, level 0 and every pyramid level (the patch
box-averaged 4x per level, as `gigaseg synth` makes its levels), as a pyramidal JPEG BigTIFF
with the same layout as ``gigaseg synth`` writes (both through ``gigaseg._pyramid``; OpenSlide
and gigaseg read it). Tissue, glass and edges then occur at the patch's density everywhere,
which is what the prediction's memory depends on.

    .venv/bin/python benchmarks/big_slide.py /tmp/s100k.tiff --width 100000 --height 100000
    .venv/bin/gigaseg bench predict --json --slide /tmp/s100k.tiff
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def _wrapped_tiles(patch: np.ndarray, width: int, height: int, tile: int):
    """Tiles (row-major) of a width x height image that repeats ``patch``."""
    ph, pw = patch.shape[:2]
    offsets = np.arange(tile)
    for y in range(0, height, tile):
        rows = patch[(y + offsets) % ph]
        for x in range(0, width, tile):
            yield np.ascontiguousarray(rows[:, (x + offsets) % pw])


def write_big_slide(path: Path, *, width: int, height: int, mpp: float, patch_side: int, seed: int,
                    tile: int = 512, quality: int = 90) -> Path:
    import tifffile

    from gigaseg._pyramid import FACTOR, SLIDE_LEVELS, box_down, level_sizes, write_level
    from gigaseg.synth import render_region

    sizes = level_sizes(width, height, SLIDE_LEVELS)
    deepest = FACTOR ** (len(sizes) - 1)
    patch_side = max(deepest, patch_side // deepest * deepest)  # every level's patch is whole pixels
    patch, _ = render_region(seed, 0, 0, patch_side, patch_side, width=patch_side, height=patch_side, mpp=mpp)
    jpeg = dict(tile=tile, mpp=(mpp, mpp), compression="jpeg", compressionargs={"level": quality}, photometric="rgb",
                subsampling=(2, 2), maxworkers=os.cpu_count() or 1)
    fd, tmp = tempfile.mkstemp(prefix=".big-slide-", suffix=".tiff", dir=path.parent)
    os.close(fd)
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            for level, (lw, lh) in enumerate(sizes):
                if level:  # the next level's patch, box-averaged like gigaseg synth's levels
                    patch = box_down(patch, patch.shape[1] // FACTOR)
                write_level(tif, _wrapped_tiles(patch, lw, lh, tile), shape=(lh, lw, 3), level=level, **jpeg)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the slide is an ordinary file
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output .tiff")
    parser.add_argument("--width", type=int, default=100_000)
    parser.add_argument("--height", type=int, default=100_000)
    parser.add_argument("--mpp", type=float, default=0.5, help="micrometres per pixel (default 0.5)")
    parser.add_argument("--patch", type=int, default=8192, help="side of the repeated patch, px (default 8192)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.width < 1 or args.height < 1:
        parser.error(f"--width and --height must be positive, got {args.width} x {args.height}")
    path = write_big_slide(args.out, width=args.width, height=args.height, mpp=args.mpp,
                           patch_side=args.patch, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
