"""Writing a synthetic slide: ``gigaseg bench synth``.

    gigaseg bench synth --width 64000 --height 16000 --json
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["bench_synth"]


def bench_synth(
    height: int,
    width: int,
    *,
    seed: int = 0,
    mpp: float = 0.5,
    quality: int = 90,
    keep: str | Path | None = None,
) -> dict[str, Any]:
    """Time ``gigaseg.synth.write_slide`` on a slide of ``height`` x ``width`` level-0 pixels.

    Args:
        seed, mpp, quality: as ``write_slide``'s.
        keep: write ``bench.tiff`` and ``bench.mask.tiff`` into this folder (created) and
            keep them; default: a temporary folder, removed.

    Returns:
        A JSON-ready dict: seconds, megapixels per second, peak resident and anonymous
        memory in bytes, and the sizes of the slide and mask files.
    """
    from .. import __version__
    from .._memory import MemorySampler, peak_rss_bytes
    from ..synth import write_slide

    with tempfile.TemporaryDirectory(prefix="gigaseg-bench-synth-") as tmpd:
        folder = Path(keep) if keep else Path(tmpd)
        folder.mkdir(parents=True, exist_ok=True)
        with MemorySampler(0.05) as sampler:
            t0 = time.perf_counter()
            slide, mask = write_slide(folder / "bench.tiff", width=width, height=height, seed=seed,
                                      mpp=mpp, quality=quality, progress=False)
            seconds = time.perf_counter() - t0
        pixels = width * height
        return {
            "benchmark": "synth",
            "gigaseg_version": __version__,
            "width": width,
            "height": height,
            "mpp": mpp,
            "seed": seed,
            "quality": quality,
            "pixels": pixels,
            "seconds": round(seconds, 3),
            "megapixels_per_second": round(pixels / seconds / 1e6, 3),
            "peak_rss_bytes": peak_rss_bytes(),
            "peak_anon_bytes": sampler.peak,
            "slide_bytes": slide.stat().st_size,
            "mask_bytes": mask.stat().st_size,
            "threads": min(2, os.cpu_count() or 1),
            "cpu_count": os.cpu_count(),
        }
