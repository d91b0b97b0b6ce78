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
from ._interrupt import sigterm_interrupts
from .errors import ConfigError, GigasegError, InputError
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


#: Bytes of memory per working-resolution pixel at the peak of a baseline: the RGB image, its
#: grey or HSV copy, the median filter's output and the masks (NOTE [Bounded work] in gigaseg.predict).
_BYTES_PER_PIXEL = 12


@sigterm_interrupts
def baseline_slide(slide_path: str | os.PathLike, out_dir: str | os.PathLike, *, method: str = "otsu",
                   mpp: float | None = None, working_mpp: float = 8.0, min_area: float | None = None,
                   simplify: float | None = None, overwrite: bool = False, strict: bool = False) -> dict:
    """Segment tissue with a baseline at ``working_mpp`` (never finer than the slide) and write the
    same four outputs as :func:`gigaseg.predict.predict_slide`, with its summary's ``warnings``,
    ``sizes`` and ``redone``; ``strict`` as there (a problem of the slide's data fails it).

    The whole slide at ``working_mpp`` is held in memory: a slide that would need more than the
    available memory is refused before it is read, naming the numbers and a ``working_mpp`` that fits.
    """
    import time

    from . import __version__
    from ._runinfo import utc_now
    from ._writers import MaskGrid
    from .outputs import (
        DEFAULT_MIN_AREA,
        check_batch,
        check_out_dir,
        open_with_mpp,
        output_paths,
        output_state,
        require_writers,
        slide_stem,
        sweep_temporaries,
        write_outputs,
    )

    _check(method=method, mpp=mpp, working_mpp=working_mpp, min_area=min_area, simplify=simplify)
    t_start = time.perf_counter()
    slide_path, out_dir = Path(slide_path), Path(out_dir)
    stem = slide_stem(slide_path)
    paths = output_paths(out_dir, stem)
    check_batch([slide_path], out_dir)
    state, why = output_state(paths)  # NOTE [Complete outputs]
    if not overwrite and state == "complete":
        return {"slide": str(slide_path), "skipped": True, "reason": "outputs exist (`overwrite=True` replaces them)",
                "paths": {k: str(v) for k, v in paths.items()}}
    if not overwrite and state == "foreign":
        raise InputError(f"{why}: it is not replaced without `overwrite=True`; or choose another `out_dir`")
    check_out_dir(out_dir)
    sweep_temporaries(out_dir)  # NOTE [Stale temporaries]
    require_writers()
    slide = open_with_mpp(slide_path, mpp, strict=strict)
    try:
        mx, my = slide.mpp
        w_mpp = max(float(working_mpp), mx, my)
        l0_w, l0_h = slide.dimensions
        gw, gh = max(1, round(l0_w * mx / w_mpp)), max(1, round(l0_h * my / w_mpp))
        _check_work(slide_path, slide, gw, gh, w_mpp)
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
            "strict": bool(strict),
        }
        if state == "partial":
            summary["redone"] = f"the earlier outputs were incomplete: {why}"
        write_outputs(slide, grid, out_dir, stem, binary=lambda b: (b >= 128).astype(np.uint8),
                      tiff_transform=None, min_area=DEFAULT_MIN_AREA if min_area is None else min_area,
                      simplify=simplify, summary=summary, overwrite=overwrite or state == "partial")
    finally:
        slide.close()
    summary["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
    return summary


def _check_work(slide_path: Path, slide: Any, gw: int, gh: int, w_mpp: float) -> None:
    """Refuse a slide whose working-resolution image would not fit in the available memory, or
    that would take decoding more than ``MAX_GRID_PIXELS`` pixels (no pyramid level near it)."""
    import math

    from ._files import available_memory, format_bytes
    from .predict import MAX_GRID_PIXELS

    level = slide.get_best_level_for_mpp(w_mpp)
    lw, lh = slide.level_dimensions[level]
    if lw * lh > MAX_GRID_PIXELS:
        raise InputError(
            f"{slide_path}: reading it at {w_mpp:g} um/px means decoding its level {level} of {lw} x {lh} = "
            f"{lw * lh / 1e9:.1f} gigapixels (the file has no coarser level), more than gigaseg reads for one slide "
            f"({MAX_GRID_PIXELS / 1e9:.1f} gigapixels): check the slide (a header may lie about its size), or add a "
            "pyramid to it (vips tiffsave does, with its pyramid option)"
        )
    need, free = gw * gh * _BYTES_PER_PIXEL, available_memory()
    if free is not None and need > free:
        raise InputError(
            f"{slide_path}: the baseline holds the slide in memory at {w_mpp:g} um/px ({gw} x {gh} pixels), about "
            f"{format_bytes(need)}, but {format_bytes(free)} are available: give a coarser `working_mpp` "
            f"({w_mpp * math.sqrt(need / free) * 1.1:.3g} or more), or free memory"
        )


def _check(*, method: str, mpp: float | None, working_mpp: float, min_area: float | None,
           simplify: float | None) -> None:
    if method not in BASELINE_METHODS:
        raise ConfigError(f"unknown baseline method {method!r}; choose one of {', '.join(BASELINE_METHODS)}")
    check_number("working_mpp", working_mpp)
    check_options(mpp=mpp, min_area=min_area, simplify=simplify)


@sigterm_interrupts
def baseline_slides(slides: Iterable[str | os.PathLike], out_dir: str | os.PathLike,
                    **kwargs: Any) -> tuple[list[dict], list[tuple[str, str]]]:
    """Run :func:`baseline_slide` on many slides; one failure does not stop the others.

    The options (``kwargs``) are ``baseline_slide``'s. Every option, and every output path against
    the inputs (two slides with one output name, a slide whose summary would be the run's
    ``baseline-config.json``), is checked before any slide is read. Returns ``(summaries,
    failures)`` with failures as ``(slide, error message)``; running out of memory on a slide is
    that slide's failure. Ctrl-C and SIGTERM stop the batch (KeyboardInterrupt), temporary files removed.
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
        except MemoryError as exc:  # one slide's failure, not the batch's (NOTE [Bounded work] in gigaseg.predict)
            failures.append((str(s), f"out of memory ({exc}); give a coarser `working_mpp`, or free memory"))
        except (OSError, ValueError, RuntimeError) as exc:
            failures.append((str(s), f"{type(exc).__name__}: {exc}"))
    return summaries, failures
