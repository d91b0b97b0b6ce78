"""Classic, non-learned tissue segmentation baselines.

Baselines (``gigaseg baseline``) segment tissue at a working resolution (default 8 um/px)
without learning:

- ``otsu``: grey level (ITU-R 601 luma) below Otsu's threshold is tissue (tissue is darker
  than glass).
- ``saturation``: HSV saturation after a 7 x 7 median blur above Otsu's threshold is
  tissue, then a morphological closing (disc of radius 2 px); the usual recipe of WSI
  pipelines (e.g. CLAM's segment_tissue).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from .errors import ConfigError, GigasegError
from .options import (
    BASELINE_METHODS,
    DEFAULT_BASELINE_METHOD,
    DEFAULT_WORKING_MPP,
    check_number,
    check_options,
)

__all__ = ["BASELINE_METHODS", "otsu_threshold", "baseline_mask", "baseline_slide", "baseline_slides"]



def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values: the t maximizing between-class variance of {< t} vs {>= t}
    (the middle of a plateau of maxima)."""
    hist = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 128
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)[:-1]  # weight of {< t} for t = 1..255
    s0 = np.cumsum(hist * levels)[:-1]
    w1 = total - w0
    mu0 = np.divide(s0, w0, out=np.zeros_like(s0), where=w0 > 0)
    mu1 = np.divide(s0[-1] + hist[-1] * 255 - s0, w1, out=np.zeros_like(s0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    # a gap in the histogram gives a plateau of equal maxima: take its middle
    best = np.flatnonzero(between >= between.max() * (1 - 1e-12))
    return int(round(float(best.mean()))) + 1


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy) <= radius * radius


def baseline_mask(rgb: np.ndarray, method: str) -> tuple[np.ndarray, dict]:
    """Tissue mask (h, w) uint8 0/1 of an RGB image by a non-learned ``method``; and its parameters."""
    require("PIL", "the baselines")
    from PIL import Image

    if method not in BASELINE_METHODS:
        raise ConfigError(f"unknown baseline method {method!r}; choose one of {', '.join(BASELINE_METHODS)}")
    if method == "otsu":
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        t = otsu_threshold(grey)
        return (grey < t).astype(np.uint8), {"grey_threshold": t}
    from scipy import ndimage

    sat = np.asarray(Image.fromarray(rgb).convert("HSV"))[..., 1]
    sat = ndimage.median_filter(sat, size=7, mode="nearest")
    t = otsu_threshold(sat)
    m = sat >= t
    m = ndimage.binary_closing(np.pad(m, 4), structure=_disc(2))[4:-4, 4:-4]
    return m.astype(np.uint8), {"saturation_threshold": t, "median": 7, "closing_radius_px": 2}


def baseline_slide(slide_path: str | os.PathLike, out_dir: str | os.PathLike, *, method: str = "otsu",
                   mpp: float | None = None, working_mpp: float = 8.0, min_area: float | None = None,
                   simplify: float | None = None, overwrite: bool = False) -> dict:
    """Segment tissue with a baseline at ``working_mpp`` (never finer than the slide) and write the
    same four outputs as :func:`gigaseg.predict.predict_slide`."""
    import time

    from . import __version__
    from ._runinfo import utc_now
    from ._writers import MaskGrid
    from .outputs import (
        DEFAULT_MIN_AREA,
        check_batch,
        check_out_dir,
        existing_outputs,
        open_with_mpp,
        output_paths,
        require_writers,
        slide_stem,
        write_outputs,
    )

    _check(method=method, mpp=mpp, working_mpp=working_mpp, min_area=min_area, simplify=simplify)
    t_start = time.perf_counter()
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    stem = slide_stem(slide_path)
    paths = output_paths(out_dir, stem)
    check_batch([slide_path], out_dir)
    if not overwrite and existing_outputs(paths):
        return {"slide": str(slide_path), "skipped": True, "reason": "outputs exist (`overwrite=True` replaces them)",
                "paths": {k: str(v) for k, v in paths.items()}}
    check_out_dir(out_dir)
    require_writers()
    slide = open_with_mpp(slide_path, mpp)
    try:
        mx, my = slide.mpp
        w_mpp = max(float(working_mpp), mx, my)
        l0_w, l0_h = slide.dimensions
        gw, gh = max(1, round(l0_w * mx / w_mpp)), max(1, round(l0_h * my / w_mpp))
        t0 = time.perf_counter()
        rgb = slide.read_region_at_mpp((0, 0), w_mpp, (gw, gh))
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        mask, params = baseline_mask(rgb, method)
        t_seg = time.perf_counter() - t0
        del rgb
        grid = MaskGrid(mask * np.uint8(255), l0_size=slide.dimensions, step=(w_mpp / mx, w_mpp / my))
        tissue = int(np.count_nonzero(mask))
        summary = {
            "command": "baseline",
            "gigaseg_version": __version__,
            "time": utc_now(),
            "slide": str(slide_path),
            "slide_dimensions": list(slide.dimensions),
            "slide_mpp": [mx, my],
            "mpp_given": mpp is not None,
            "method": method,
            "parameters": params,
            "working_mpp": w_mpp,
            "grid_size": [gw, gh],
            "tissue_pixels_working_res": tissue,
            "tissue_area_mm2": round(tissue * w_mpp * w_mpp / 1e6, 6),
            "tissue_fraction": round(tissue / (gw * gh), 6),
            "timings": {"read_s": round(t_read, 3), "segment_s": round(t_seg, 3)},
        }
        write_outputs(slide, grid, out_dir, stem, binary=lambda b: (b >= 128).astype(np.uint8),
                      tiff_transform=None, min_area=DEFAULT_MIN_AREA if min_area is None else min_area,
                      simplify=simplify, summary=summary, overwrite=overwrite)
    finally:
        slide.close()
    summary["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
    return summary


def _check(*, method: str, mpp: float | None, working_mpp: float, min_area: float | None,
           simplify: float | None) -> None:
    if method not in BASELINE_METHODS:
        raise ConfigError(f"unknown baseline method {method!r}; choose one of {', '.join(BASELINE_METHODS)}")
    check_number("working_mpp", working_mpp)
    check_options(mpp=mpp, min_area=min_area, simplify=simplify)


def baseline_slides(slides: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                    **kwargs: Any) -> tuple[list[dict], list[tuple[str, str]]]:
    """Run :func:`baseline_slide` on many slides; one failure does not stop the others.

    The options (``kwargs``) are ``baseline_slide``'s. Every option, and every output path against
    the inputs (two slides with one output name, a slide whose summary would be the run's
    ``baseline-config.json``), is checked before any slide is read. Returns ``(summaries,
    failures)`` with failures as ``(slide, error message)``.
    """
    import inspect

    from .outputs import check_batch, check_out_dir

    slides = [Path(s) for s in slides]
    try:
        inspect.signature(baseline_slide).bind(None, out_dir, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"baseline_slides: {exc}; the options are baseline_slide's") from None
    _check(method=kwargs.get("method", DEFAULT_BASELINE_METHOD), mpp=kwargs.get("mpp"),
           working_mpp=kwargs.get("working_mpp", DEFAULT_WORKING_MPP), min_area=kwargs.get("min_area"),
           simplify=kwargs.get("simplify"))
    check_batch(slides, out_dir, command="baseline")
    check_out_dir(Path(out_dir))
    summaries, failures = [], []
    for s in slides:
        try:
            summaries.append(baseline_slide(s, out_dir, **kwargs))
        except GigasegError as exc:
            failures.append((str(s), str(exc)))
        except (OSError, ValueError, RuntimeError) as exc:
            failures.append((str(s), f"{type(exc).__name__}: {exc}"))
    return summaries, failures
