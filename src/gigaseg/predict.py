"""Whole-slide inference: a tissue mask TIFF, QuPath GeoJSON, an overlay and a summary per slide.

``predict_slide(model, slide, out_dir)`` reads the slide at the model's training resolution
(``payload["mpp"]`` of its checkpoint) tile by tile, runs the exact tiled forward pass
(:func:`gigaseg.engine.iter_predict`) over it, and writes, per slide ``<stem>``:

- ``<stem>.mask.tiff``: tiled pyramidal 8-bit greyscale TIFF at the slide's level-0 size and
  mpp; 0/255 (tissue = probability >= threshold) or, with ``probabilities=True``, the
  probability * 255. OpenSlide (generic-tiff) and QuPath open it.
- ``<stem>.geojson``: tissue polygons with holes, level-0 pixels, QuPath annotations of class
  "Tissue".
- ``<stem>.overlay.png``: a thumbnail with tissue tinted and outlined.
- ``<stem>.json``: tissue area (mm^2), fraction, pieces, timings and the effective settings.

A model of C >= 2 classes (trained with ``classes``; NOTE [Class outputs]) writes the same four
files: the TIFF holds each pixel's class index (its most probable class, 0..C-1), the GeoJSON
one classification per class (class 0, the background, left out, as in a tissue mask), the
overlay each class in its colour, and the summary each class's area.

Example::

    from gigaseg.predict import predict_slide
    summary = predict_slide("run/checkpoint.pt", "slide.svs", "out/")
    print(summary["tissue_area_mm2"], summary["paths"]["mask"])

# NOTE [Streaming]
Memory stays bounded whatever the slide size. The slide at the model's resolution is an
array-like (``gigaseg.slides.SlideArray``: grid pixel (gx, gy) covers level-0
[gx * s, (gx + 1) * s) with s = model mpp / slide mpp, at fractional origins, NOTE [Slide
grid]), so the crops are exact pieces of one whole-slide resampling and the result equals the
model on the whole resampled slide. ``gigaseg.engine.iter_predict`` tiles it by the engine's
memory plan for the whole slide, reads each tile's crop (core plus halo; best pyramid level,
then resampling) in reader threads ahead of the model, and yields the tiles row by row (NOTE
[Tile order]) as uint8 (round(255 p)). A row of tiles is appended to a temporary raw file as
soon as it is complete; a thread writes the mask TIFF from that file as the rows arrive; the
polygons and the overlay are made from it afterwards, row by row. Peak memory: the engine's
budget (default 1 GiB, which includes the process) plus one row of tiles (tile height x width
bytes) plus a few crops read ahead plus the TIFF writer's strip.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._imagelike import ImageWrapper
from ._interrupt import sigterm_interrupts
from .errors import ConfigError, DistributedError, GigasegError, InputError, OutputError
from .options import DEFAULT_THRESHOLD, PRECISIONS, check_number, check_options
from .outputs import (
    DEFAULT_MIN_AREA,
    SLIDE_SUFFIXES,
    THUMB_SIDE,
    check_batch,
    check_out_dir,
    expand_slide_paths,
    open_with_mpp,
    output_paths,
    output_state,
    require_writers,
    slide_stem,
    sweep_temporaries,
    temp_dir,
    write_outputs,
)

__all__ = [
    "DEFAULT_MIN_AREA",
    "THUMB_SIDE",
    "MAX_GRID_PIXELS",
    "predict_slide",
    "predict_slides",
    "predict_sharded",
    "shard_slides",
    "expand_slide_paths",
    "output_paths",
    "SLIDE_SUFFIXES",
]

#: The most pixels a slide may have at the model's resolution (NOTE [Bounded work]).
MAX_GRID_PIXELS = 2**34

# --- the model and the slide ---------------------------------------------------------------


def _is_model_file(model: Any) -> bool:
    """``model`` names a file of the user's (a checkpoint path, not the built-in model)."""
    from .options import BUILTIN_MODEL

    return isinstance(model, (str, os.PathLike)) and str(model) != BUILTIN_MODEL


def _one_class(net: Any, what: str) -> Any:
    """``net``, checked to be a UNet of 1 to 255 output channels (several: NOTE [Class outputs])."""
    classes = net.config.out_channels
    if not 1 <= classes <= 255:
        raise ConfigError(f"{what} has {classes} output classes; a label TIFF holds at most 255")
    return net


# NOTE [Class outputs]
# A model of C >= 2 classes labels each pixel with its most probable class: the argmax of its C
# logits (the softmax keeps their order; ties go to the lower index), computed on the float
# logits of each tile, so the labels are the whole slide's, as the probabilities of one class are
# (NOTE [Streaming]). The raw grid then holds class indices instead of round(255 p), and the
# writers take it as it is: the TIFF's pyramid samples the nearest grid pixel, so every level
# holds class indices too; the GeoJSON traces each class k >= 1 as the 0/1 mask (label == k), one
# feature per polygon classified with the class's name (QuPath's "classification"), class 0 being
# the background as in a tissue mask; the overlay tints and outlines each class in its colour
# (``_writers.class_colors``). The class names come from the checkpoint ("classes", written by
# gigaseg train), else "class 0" .. "class C-1". A one-channel model's outputs are unchanged.


def _load(model: Any, device: Any) -> tuple[Any, float | None, str]:
    """(UNet in eval mode, its training mpp or None, a description of where it came from).

    ``model`` is a checkpoint path (its mpp is the checkpoint's), None or "builtin" (the built-in
    tissue model), the ``(UNet, mpp)`` pair that ``load_model`` returns, or a UNet (its checkpoint's
    mpp when ``load_model`` made it, else unknown: the caller's ``model_mpp`` says it).
    """
    from .checkpoint import BUILTIN, check_weights, load_model, trained_mpp
    from .model import UNet

    if model is None:
        model = BUILTIN
    if isinstance(model, (str, os.PathLike)):
        net, mpp = load_model(model, device=device if device is not None else "cpu")
        return _one_class(net, str(model)), mpp, str(model)
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], UNet):
        net, mpp = model
        check_weights("(the UNet given as `model`)", net)
        return _one_class(net, "the UNet given as `model`").eval(), (float(mpp) if mpp else None), "UNet object"
    if isinstance(model, UNet):
        check_weights("(the UNet given as `model`)", model)
        # a model that load_model made keeps its resolution, as it keeps its filter and hole width
        return _one_class(model, "the UNet given as `model`").eval(), trained_mpp(model), "UNet object"
    raise ConfigError(f"model must be a gigaseg UNet, a (UNet, mpp) pair or a checkpoint path, "
                      f"got {type(model).__name__}")


#: The ``precision`` choices of prediction.


# NOTE [bfloat16 prediction]
# With --precision bfloat16 the model's weights, inputs and activations are bfloat16 (8-bit
# mantissa); the logits are turned into float32 before the sigmoid. Measured on this project's
# 2-core Xeon (AMX/AVX512-BF16), paper preset: on a 2048 x 8192 window of a held-out synthetic
# region with the model trained for 75 steps, tiled_predict took 2.9 s instead of 4.7 s, the
# probabilities stayed within 0.031 of float32's (mean 3e-4), 0.02% of the mask pixels flipped
# and the Dice against the true mask was 0.9112 instead of 0.9113. Whole-slide prediction of a
# 16000 x 64000 slide (`gigaseg bench predict`, two runs each, quiet machine) gained less,
# because reading and writing share the two cores: model alone 54-64 instead of 42-52 MP/s, end
# to end 35.8-37.5 instead of 33.1-34.9 MP/s. Float32 stays the default: it is the exact one.
def with_precision(net: Any, precision: str) -> Any:
    """``net`` itself for "float32"; a bfloat16 copy (the caller's model is left alone) for "bfloat16"."""
    import copy

    import torch

    if precision == "float32":
        return net
    params = list(net.parameters())
    if params and params[0].dtype == torch.bfloat16:
        return net
    return copy.deepcopy(net).to(torch.bfloat16)


class _RowSink:
    """One row of tiles (uint8) that is appended to a raw file when complete; counts the
    pixels >= ``thr_u8`` (tissue) and lets a gated reader (the TIFF thread) follow. With
    ``classes`` (C >= 2), a tile is its (h, w, C) logits: its labels (argmax) are placed and
    each class's pixels counted (NOTE [Class outputs])."""

    def __init__(self, f, width: int, tile_h: int, thr_u8: int, gate=None, classes: int = 1, trim=None):
        self._f = f
        self._gate = gate
        self._trim = trim  # an EdgeTrim (NOTE [Edge trim]): rows are written trimmed, LAG rows behind
        self.buf = np.empty((tile_h, width), np.uint8)
        self._thr = np.uint8(thr_u8)
        self.tissue = 0
        self.classes = classes
        self.class_pixels = np.zeros(classes, np.int64)
        self.write_s = 0.0

    def put(self, rows: slice, cols: slice, block: np.ndarray) -> None:
        """Place a tile's core; counted while it is still in cache."""
        if self.classes > 1:
            labels = np.argmax(block, axis=-1).astype(np.uint8)
            self.buf[rows, cols] = labels
            self.class_pixels += np.bincount(labels.ravel(), minlength=self.classes)[:self.classes]
            return
        self.buf[rows, cols] = block
        self.tissue += int(np.count_nonzero(block >= self._thr))

    def flush(self, rows: int) -> None:
        self._write(self.buf[:rows] if self._trim is None else self._trim.push(self.buf[:rows]))

    def finish(self) -> None:
        """Write the rows an edge trim still holds; the tissue count is then the trimmed mask's."""
        if self._trim is not None:
            self._write(self._trim.finish())
            self.tissue -= self._trim.trimmed

    def _write(self, rows: np.ndarray) -> None:
        t0 = time.perf_counter()
        try:
            self._f.write(np.ascontiguousarray(rows).data.cast("B"))
        except OSError as exc:
            raise OutputError(f"cannot write the prediction to {self._f.name} ({exc.strerror or exc}); "
                              "free disk space or choose another `out_dir`", cause=exc) from exc
        if self._gate is not None:
            self._f.flush()
            self._gate.advance(len(rows))
        self.write_s += time.perf_counter() - t0


def _predict_to_raw(net, image, raw_path: Path, *, memory_budget, device, progress: bool, thr_u8: int, gate=None,
                    read_workers: int = 1, classes: int = 1, trim=None) -> dict[str, Any]:
    """Predict the whole slide ``image`` (a ``SlideArray``) into ``raw_path`` (its grid, uint8
    round(255 p), row by row; trimmed by ``trim``, an ``EdgeTrim``, when given).

    Returns timings, the tile plan and the number of pixels >= ``thr_u8``.
    """
    from .engine import iter_predict

    grid_h, grid_w = image.shape[:2]
    t0 = time.perf_counter()
    # Rows of tiles (NOTE [Tile order]), each written as soon as it is complete. Three crops more
    # than the readers are read ahead: a slide's crops take uneven times to decode, and this is
    # the depth its reader thread and queue had before the engine read ahead for predict_slide.
    tiles = iter_predict(net, image, order="rows", output="uint8" if classes == 1 else "logits",
                         memory_budget=memory_budget, device=device,
                         read_workers=read_workers, read_ahead=read_workers + 3, progress=progress)
    th, tw = tiles.tile
    _check_row_memory(min(th, grid_h) * grid_w, th, grid_w)
    t_put = 0.0
    with tiles, open(raw_path, "wb") as f:
        sink = _RowSink(f, grid_w, min(th, grid_h), thr_u8, gate, classes, trim)
        for box, block in tiles:
            t1 = time.perf_counter()
            sink.put(slice(0, box.y1 - box.y0), slice(box.x0, box.x1), block)
            t_put += time.perf_counter() - t1
            del block
            if box.x1 == grid_w:
                sink.flush(box.y1 - box.y0)
        sink.finish()
    total = time.perf_counter() - t0
    return {"read_s": image.read_s, "read_wait_s": tiles.timings["read_wait_s"], "write_s": sink.write_s,
            "model_s": tiles.timings["model_s"] + t_put, "predict_s": total,
            "tile": [th, tw], "n_tiles": tiles.n_tiles, "tissue": sink.tissue,
            "class_pixels": [int(v) for v in sink.class_pixels]}


def _predict_oriented_to_raw(net, image, raw_path: Path, orientations: int, *, memory_budget, device, progress: bool,
                             thr_u8: int, gate=None, read_workers: int = 1, classes: int = 1,
                             trim=None) -> dict[str, Any]:
    """``_predict_to_raw`` for the mean of ``orientations`` orientations of ``image`` (NOTE
    [Orientations] in ``gigaseg.engine.orient``): each orientation's round(255 p) is summed into a
    temporary uint16 grid beside ``raw_path``, whose rounded mean is then written to ``raw_path``
    row by row. A model of C >= 2 classes sums its softmax into a float32 (H, W, C) grid instead,
    and each pixel gets the class of the largest mean (NOTE [Class outputs]).
    """
    from .engine import iter_predict
    from .engine.orient import oriented_views

    grid_h, grid_w = image.shape[:2]
    t0 = time.perf_counter()
    total = np.lib.format.open_memmap(raw_path.with_name("orientations.npy"), mode="w+",
                                      dtype=np.uint16 if classes == 1 else np.float32,
                                      shape=(grid_h, grid_w) if classes == 1 else (grid_h, grid_w, classes))
    model_s = read_wait_s = 0.0
    n_tiles = 0
    tile: list[int] = []
    for view, seen in oriented_views(image, orientations):  # a balanced image: its gains in every orientation
        tiles = iter_predict(net, seen, order="shape", output="uint8" if classes == 1 else "probabilities",
                             memory_budget=memory_budget, device=device, read_workers=read_workers,
                             read_ahead=read_workers + 3, progress=progress)
        tile = tile or list(tiles.tile)
        with tiles:
            for box, block in tiles:
                t1 = time.perf_counter()
                total[view.base_window(slice(box.y0, box.y1), slice(box.x0, box.x1))] += view.to_image(block)
                model_s += time.perf_counter() - t1
        model_s += tiles.timings["model_s"]
        read_wait_s += tiles.timings["read_wait_s"]
        n_tiles += tiles.n_tiles
    rows = max(1, min(grid_h, (64 << 20) // (4 * classes * max(grid_w, 1))))  # rows per write: about 64 MiB of work
    with open(raw_path, "wb") as f:
        sink = _RowSink(f, grid_w, rows, thr_u8, gate, classes, trim)
        for y in range(0, grid_h, rows):
            part = total[y:y + rows]
            mean = (((part.astype(np.uint32) + orientations // 2) // orientations).astype(np.uint8) if classes == 1
                    else np.asarray(part))  # the sink labels each pixel by its largest sum: the same class
            sink.put(slice(0, len(part)), slice(0, grid_w), mean)
            sink.flush(len(part))
        sink.finish()
    del total
    return {"read_s": image.read_s, "read_wait_s": read_wait_s, "write_s": sink.write_s, "model_s": model_s,
            "predict_s": time.perf_counter() - t0, "tile": tile, "n_tiles": n_tiles, "tissue": sink.tissue,
            "class_pixels": [int(v) for v in sink.class_pixels]}


# NOTE [Bounded work]
# What a slide, an mpp and a checkpoint imply is checked before anything is allocated or
# written, and refused with the numbers and the fix, instead of a MemoryError, a full disk or a
# job of days: the slide at the model's resolution (its grid) must be at least one pixel and at
# most MAX_GRID_PIXELS (2**34, 17.2 gigapixels: a 131,072 x 131,072 slide at the model's
# resolution; a lying header of 10**6 x 10**6 pixels, or `model_mpp` 100 times finer than the
# slide, asks for far more); the temporary raw grid (1 byte per grid pixel) must fit in the free
# disk of `out_dir`, with 64 MiB to spare; one row of tiles (tile height x grid width bytes, known
# once the engine has planned the tiles) must fit in the available memory. A MemoryError that
# happens anyway fails that slide, not the batch.
def _check_grid(slide_path: Path, slide: Any, t_mpp: float, grid: tuple[int, int], out_dir: Path,
                orientations: int = 1, classes: int = 1, recorded: bool = False) -> None:
    from ._files import check_free_space, format_bytes

    grid_w, grid_h = grid
    l0_w, l0_h = slide.dimensions
    exact_w, exact_h = l0_w * slide.mpp[0] / t_mpp, l0_h * slide.mpp[1] / t_mpp
    if min(exact_w, exact_h) < 0.5:
        raise ConfigError(
            f"{slide_path}: the slide ({l0_w} x {l0_h} pixels at {slide.mpp[0]:g} um/px) is {exact_w:.3g} x "
            f"{exact_h:.3g} pixels at the model's {t_mpp:g} um/px, less than one pixel: check the slide's `mpp` "
            "and the model's resolution (`model_mpp`)"
        )
    pixels = grid_w * grid_h
    if pixels > MAX_GRID_PIXELS:
        factor = math.sqrt(pixels / MAX_GRID_PIXELS)
        raise ConfigError(
            f"{slide_path}: the slide ({l0_w} x {l0_h} pixels at {slide.mpp[0]:g} um/px) is {grid_w} x {grid_h} = "
            f"{pixels / 1e9:.1f} gigapixels at the model's {t_mpp:g} um/px, more than gigaseg predicts in one job "
            f"({MAX_GRID_PIXELS / 1e9:.1f} gigapixels; it would need {format_bytes(pixels)} of temporary disk): check "
            f"the slide's `mpp` and size, or run the model at a coarser `model_mpp` ({t_mpp * factor:.3g} or more)"
        )
    # and the sum of the orientations (NOTE [Orientations]): uint16, or float32 per class
    per_pixel = 1 if orientations == 1 else 3 if classes == 1 else 1 + 4 * classes
    per_pixel += 3 if recorded else 0  # the image the model read, for the component filter (RGB)
    check_free_space(out_dir, per_pixel * pixels + (64 << 20), f"predicting {slide_path.name} ({grid_w} x {grid_h} "
                     f"pixels at {t_mpp:g} um/px: a temporary grid of {per_pixel} byte{'s' if per_pixel > 1 else ''} "
                     "per pixel, then the mask TIFF)", "free disk space, or choose another `out_dir`")


def _label_description(classes: Sequence[str]) -> str:
    """The label TIFF's ImageDescription: what its values mean (NOTE [Class outputs])."""
    return "gigaseg class labels: " + "; ".join(f"{k} {name}" for k, name in enumerate(classes))


def _check_row_memory(nbytes: int, tile_h: int, grid_w: int) -> None:
    from ._files import available_memory, format_bytes

    free = available_memory()
    if free is not None and nbytes > free:
        raise InputError(
            f"one row of tiles ({tile_h} x {grid_w} pixels at the model's resolution) needs {format_bytes(nbytes)} "
            f"of memory, but {format_bytes(free)} are available: run the model at a coarser `model_mpp`, or give a "
            "smaller `memory_budget` (smaller tiles)"
        )


# --- outputs ---------------------------------------------------------------------------------


#: Memory the component filter needs per grid pixel: its int32 labels and the mask (NOTE [Component filter]).
FILTER_BYTES_PER_PIXEL = 5


def _filter_fits(pixels: int) -> bool:
    """Whether labelling a grid of ``pixels`` fits in half the memory available now (True when unknown)."""
    from ._files import available_memory

    free = available_memory()
    return free is None or FILTER_BYTES_PER_PIXEL * pixels <= free // 2


def _recorded(image: Any, record: np.ndarray, *, balanced: bool) -> Any:
    """``image`` (what ``balance_for`` gave) read through a ``_Recorded`` beneath its glass balance:
    the record holds the slide's pixels, and a model that balances its glass finds the balance
    already there (gains of 1 when ``balance_for`` left the image as it is), not estimated again."""
    from .glass import GlassBalanced

    if isinstance(image, GlassBalanced):
        return image.over(_Recorded(image.image, record))
    if balanced:
        return GlassBalanced(_Recorded(image, record), np.ones(3, np.float32))
    return _Recorded(image, record)


class _Recorded(ImageWrapper):
    """``image`` (an (H, W, 3) image-like) read through: every window read is also stored in ``record``
    (an (H, W, 3) uint8 array of the same size), so that what the model read can be used again
    without reading the slide twice. Other attributes (``read_s``) are the image's."""

    def __init__(self, image: Any, record: np.ndarray):
        super().__init__(image, dtype=np.uint8)
        self.record = record

    def __getitem__(self, key: Any) -> np.ndarray:
        crop = np.asarray(self.image[key])
        self.record[key] = crop
        return crop


def _level0_piece(piece: dict[str, Any], step: tuple[float, float]) -> dict[str, Any]:
    """A dropped piece of ``apply_component_filter`` (grid box, pixels) with its box in the slide's
    level-0 pixels, ``[x0, y0, x1, y1]`` (NOTE [Component filter]; for review in a viewer)."""
    y0, x0, y1, x1 = piece["box"]
    return {"box_level0": [math.floor(x0 * step[0]), math.floor(y0 * step[1]), math.ceil(x1 * step[0]),
                           math.ceil(y1 * step[1])], "pixels_model_res": piece["pixels"]}


def _level0_seams(seams: Any, step: tuple[float, float]) -> dict[str, Any] | None:
    """The seams a glass balance corrected (NOTE [Seam correction]), with their rows and columns in the
    slide's level-0 pixels; None when it found none."""
    if seams is None:
        return None
    out = seams.summary()
    out["rows"] = [round(y * step[1]) for y in out["rows"]]
    out["columns"] = [round(x * step[0]) for x in out["columns"]]
    return out


def _edit_raw(raw_path: Path, shape: tuple[int, int], edit: Any) -> dict[str, Any]:
    """``edit(prob)`` on the raw probability grid, a writable memory map, flushed after: the component
    filter (NOTE [Component filter]) and the hole filling (NOTE [Hole filling]) change it in place."""
    prob = np.memmap(raw_path, dtype=np.uint8, mode="r+", shape=shape)
    try:
        result = edit(prob)
        prob.flush()
    finally:
        del prob
    return result


class _TiffThread(threading.Thread):
    """Writes the mask TIFF from a gated grid while the prediction fills it."""

    def __init__(self, path: Path, grid, mpp, transform, workers: int = 1, description: str | None = None):
        super().__init__(name="gigaseg-predict-tiff", daemon=True)
        self.path, self.grid, self.mpp, self.transform = path, grid, mpp, transform
        self.workers = workers
        self.description = description
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.start()

    def run(self) -> None:
        from ._writers import Aborted, write_mask_tiff

        t0 = time.perf_counter()
        try:
            kw = {} if self.description is None else {"description": self.description}
            write_mask_tiff(self.path, self.grid, mpp=self.mpp, transform=self.transform, workers=self.workers, **kw)
        except Aborted:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised by predict_slide
            self.error = exc
        self.seconds = time.perf_counter() - t0


# --- the public entry points ---------------------------------------------------------------


@sigterm_interrupts
def predict_slide(
    model: Any,
    slide_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    mpp: float | None = None,
    threshold: float = 0.5,
    probabilities: bool = False,
    min_area: float = DEFAULT_MIN_AREA,
    simplify: float | None = None,
    memory_budget: int | str | None = None,
    device: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    model_mpp: float | None = None,
    precision: str = "float32",
    read_workers: int | None = None,
    strict: bool = False,
    glass_balance: bool = True,
    orientations: int = 1,
    component_filter: bool = True,
    seam_correction: bool = True,
    fill_holes: float | None = None,
    drop_specks: float | None = None,
    edge_trim: float | None = None,
) -> dict:
    """Segment tissue on one slide and write its four outputs into ``out_dir``.

    Args:
        model: a checkpoint path (loaded with ``load_model``; run at its training mpp), the
            ``(model, mpp)`` pair that ``load_model`` returns, or a ``gigaseg.UNet`` (one that
            ``load_model`` returned runs at its checkpoint's mpp, as the pair does; give another's
            resolution as ``model_mpp``).
        slide_path: any slide ``gigaseg.slide.open_slide`` reads (a DICOM folder too).
        out_dir: output folder (created).
        mpp: level-0 microns per pixel of the slide, replacing what the file says (needed
            for PNG/JPEG thumbnails and files without resolution tags).
        threshold: tissue is probability >= threshold (on the uint8 probability
            round(255 p) >= round(255 threshold)); a model of several classes labels each pixel
            with its most probable class instead (NOTE [Class outputs]).
        probabilities: the mask TIFF holds round(255 p) instead of 0/255 (one-channel models).
        min_area: smallest polygon and hole kept in the GeoJSON, square microns.
        simplify: GeoJSON simplification tolerance in microns (None: half a pixel of the
            contour grid; 0: none).
        memory_budget: engine memory budget (bytes or "1GB"); default the engine's.
        device: "cpu", "cuda", "mps", "auto" or None (cpu).
        overwrite: replace existing outputs (else the slide is skipped).
        progress: tqdm bar on stderr.
        model_mpp: resolution the model runs at, um/px; default the checkpoint's (or the
            pair's) training mpp; for a UNet that does not know it, the slide's level 0.
        precision: "float32" (the model as it is) or "bfloat16": the forward pass runs on a
            bfloat16 copy of the model with PyTorch's kernels, 1.2-1.6x faster than PyTorch's
            float32 ones on a CPU with AVX512-BF16 or AMX, with probabilities within a few
            hundredths of float32's (NOTE [bfloat16 prediction]); likely slower on CPUs without
            bfloat16 instructions (not measured). Float32 on the CPU runs gigaseg's compiled
            kernels (``gigaseg._cpu_kernels``), which are faster than either.
        read_workers: threads decoding slide crops ahead of the model; default 1 on the CPU,
            one per spare core (at most 8) on a GPU. The outputs do not depend on it.
        strict: a problem of the slide's data (corrupt JPEG data that the decoder passes over, a
            decoder's warning, a greyscale or 16-bit image converted to RGB) fails the slide with a
            SlideError instead of a warning in the summary (NOTE [Slide problems]).
        glass_balance: False reads the slide as it is even when the model declares a glass balance
            (``glass_white``, NOTE [Glass balance]): for an image with no glass, a crop wholly
            inside tissue, whose palest tissue the balance would take for glass.
        orientations: 1, 2, 4 or 8: the mask is the mean probability of the model over that many
            orientations of the slide (test-time augmentation, NOTE [Orientations] in
            ``gigaseg.engine.orient``), at that many times the model's time; a model of several
            classes labels each pixel with the class of the largest mean probability.
        component_filter: False keeps every component of the mask even when the model has a
            component filter (the built-in model has one: it drops pieces that it takes for debris on
            the glass; NOTE [Component filter] in ``gigaseg.components``). Models without one are not
            affected.
        seam_correction: False leaves a scanner's tiles of darker or tinted glass as they are, which a
            model with a glass balance otherwise evens out (NOTE [Seam correction] in ``gigaseg.glass``).
        fill_holes: holes of the mask narrower than this many microns are made tissue (NOTE [Hole
            filling] in ``gigaseg.holes``); None: the width the model declares (the built-in model:
            100, the definition of tissue's; a checkpoint of ``gigaseg train``: none), 0: none.
        drop_specks: pieces of the mask smaller than a square of this many microns are dropped (NOTE
            [Specks] in ``gigaseg.holes``); None: the size the model declares (the built-in model: 100,
            the definition's specks under (100 um)^2; a checkpoint of ``gigaseg train``: none), 0: none.
        edge_trim: pixels of the mask's outline with less than this share of the optical density of the
            tissue beside them are dropped (NOTE [Edge trim] in ``gigaseg.edges``); None: the ratio the
            model declares (the built-in model: 0.4; a checkpoint of ``gigaseg train``: none), 0: none.

    Returns:
        The summary dict (also written as ``<stem>.json``): ``tissue_area_mm2``,
        ``tissue_fraction``, ``pieces``, ``timings`` (read, model, write, ...), ``paths``,
        ``sizes`` (bytes of the mask, GeoJSON and overlay), ``glass_gains`` (the gain per channel of
        the model's glass balance, NOTE [Glass balance]; None when none is applied: a model without
        one, or ``glass_balance=False``), ``seam_correction`` (the scanner seams found, as level-0
        rows and columns, and the range of the tiles' corrections; None when none was found or
        applied), ``holes_filled`` (the width used, the mask's holes, those filled and their pixels;
        None when none was asked for), ``specks_dropped`` (the size used, the pieces dropped and their
        pixels; None when none was asked for), ``edge_trim`` (the ratio used and the pixels trimmed;
        None when none was asked for); for a model of several classes,
        ``classes`` (their names), ``class_pixels_model_res``, ``class_area_mm2``,
        ``class_fraction`` and ``class_pieces`` (per class name) instead of the ``tissue_*`` entries
        (NOTE [Class outputs]); ``component_filter`` (the mask's components, those dropped, their
        pixels at the model's resolution, and the largest 100 dropped with their boxes in level-0
        pixels, ``dropped_pieces``; None when no filter ran); ``warnings`` (what reading the slide
        met: corrupt data, conversions; empty when clean); ``redone`` when earlier outputs were
        incomplete (NOTE [Complete outputs]); ``skipped: True`` when complete outputs existed and
        ``overwrite`` is False.

    Raises:
        CheckpointError, SlideError, InputError, ConfigError: bad model, slide, folder, option;
            a slide too large for one job or for the free disk (NOTE [Bounded work]).
        OutputError: the outputs cannot be written (no permission, a full disk).
        KeyboardInterrupt: on Ctrl-C or SIGTERM, after removing the temporary files.
    """
    from . import __version__
    from ._runinfo import utc_now
    from .checkpoint import component_filter as component_filter_of
    from .checkpoint import edge_trim as edge_trim_of
    from .checkpoint import hole_width, speck_size
    from .engine import check_read_workers, default_read_workers, resolve_device
    from .glass import GlassBalanced, balance_for, model_glass_white, read_glass
    from .slides import SlideArray

    check_number("threshold", threshold)
    check_number("min_area", min_area)
    check_number("fill_holes", fill_holes, none_ok=True)
    check_number("drop_specks", drop_specks, none_ok=True)
    check_number("edge_trim", edge_trim, none_ok=True)
    from .engine.orient import check_orientations

    orientations = check_orientations(orientations)
    check_options(mpp=mpp, model_mpp=model_mpp, simplify=simplify, memory_budget=memory_budget)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not valid: use one of {', '.join(PRECISIONS)}")
    require_writers()
    t_start = time.perf_counter()
    slide_path = Path(slide_path)
    out_dir = Path(out_dir)
    stem = slide_stem(slide_path)
    paths = output_paths(out_dir, stem)
    check_batch([slide_path], out_dir, inputs=[model] if _is_model_file(model) else [])
    state, why = output_state(paths)
    if not overwrite and state == "complete":
        return {"slide": str(slide_path), "skipped": True, "reason": "outputs exist (`overwrite=True` replaces them)",
                "paths": {k: str(v) for k, v in paths.items()}}
    if not overwrite and state == "foreign":
        raise InputError(f"{why}: it is not replaced without `overwrite=True`; or choose another `out_dir`")
    redo = state == "partial"  # leftovers of an interrupted run: done again (NOTE [Complete outputs])
    dev = resolve_device(device or "cpu")
    read_workers = check_read_workers(read_workers, dev)
    was_training = getattr(model, "training", False)
    net, trained_mpp, model_source = _load(model, dev)
    owner = net  # put back in the mode it came in, at the end
    if not glass_balance and model_glass_white(net) > 0:  # the same weights, reading the slide as it is
        net = copy.copy(net)
        net.config = dataclasses.replace(net.config, glass_white=0.0)
    from .checkpoint import model_classes

    class_names = model_classes(net)
    n_classes = 1 if class_names is None else len(class_names)
    try:
        if class_names is not None and probabilities:
            raise ConfigError(f"`probabilities=True` writes one class's probability; {model_source} has "
                              f"{n_classes} classes ({', '.join(class_names)}), whose TIFF holds each pixel's class "
                              "index: leave `probabilities` out (gigaseg.tiled_predict gives the classes' "
                              "probabilities)")
        check_out_dir(out_dir)
        sweep_temporaries(out_dir)  # NOTE [Stale temporaries]
        slide = open_with_mpp(slide_path, mpp, strict=strict)
    except BaseException:
        owner.train(was_training)
        raise
    thr_u8 = int(round(255 * float(threshold)))
    try:
        t_mpp = float(model_mpp or trained_mpp or math.sqrt(slide.mpp[0] * slide.mpp[1]))
        image = SlideArray(slide, t_mpp)
        grid_h, grid_w = image.shape[:2]
        filt = component_filter_of(net) if component_filter and class_names is None else None
        hole_um = (hole_width(net) if fill_holes is None else float(fill_holes)) if class_names is None else 0.0
        speck_um = (speck_size(net) if drop_specks is None else float(drop_specks)) if class_names is None else 0.0
        trim_ratio = (edge_trim_of(net) if edge_trim is None else float(edge_trim)) if class_names is None else 0.0
        filter_note = None
        if (filt is not None or hole_um > 0 or speck_um > 0) and not _filter_fits(grid_w * grid_h):
            # NOTE [Component filter]
            steps = (("component filter", filt is not None), ("speck removal", speck_um > 0),
                     ("hole filling", hole_um > 0))
            names = [name for name, on in steps if on]
            skipped = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            filter_note = (f"{skipped} skipped: the {grid_w} x {grid_h} grid needs about "
                           f"{FILTER_BYTES_PER_PIXEL * grid_w * grid_h / 2**30:.1f} GiB of memory to label its "
                           "components; the mask is the model's as it is")
            warnings.warn(f"{slide_path}: {filter_note}", stacklevel=2)
            filt, hole_um, speck_um = None, 0.0, 0.0
        # NOTE [Bounded work]
        _check_grid(slide_path, slide, t_mpp, (grid_w, grid_h), out_dir, orientations, n_classes,
                    recorded=filt is not None or trim_ratio > 0)
        # NOTE [Glass balance], NOTE [Seam correction]: once, after the checks; reported below
        t_balance = time.perf_counter()
        image = balance_for(net, image, seams=seam_correction)
        balance_s = time.perf_counter() - t_balance
        tmp = temp_dir(out_dir, stem, ".grid")
        try:
            from ._writers import MaskGrid, RowGate, patch_mask_tiff
            from .components import apply_component_filter
            from .edges import EdgeTrim
            from .holes import drop_specks as drop_mask_specks
            from .holes import fill_holes as fill_mask_holes

            raw_path = tmp / "probabilities.u8"
            raw_path.touch()
            seen, record, read, trim, filtered, specks, holes = image, None, None, None, None, None, None
            if filt is not None or trim_ratio > 0:  # the slide's pixels the model reads, kept (not read twice)
                record = np.lib.format.open_memmap(tmp / "image.npy", mode="w+", dtype=np.uint8,
                                                   shape=(grid_h, grid_w, 3))
                seen = _recorded(image, record, balanced=model_glass_white(net) > 0)
                # the filter and the trim read what the model read: the recorded pixels, balanced as they were
                read = seen.over(record) if isinstance(seen, GlassBalanced) else record
            if trim_ratio > 0:  # NOTE [Edge trim]: as the rows are written, before the TIFF thread reads them
                trim = EdgeTrim(read, thr_u8, trim_ratio, read_glass(image))
            step = (t_mpp / slide.mpp[0], t_mpp / slide.mpp[1])

            def binary(block):
                return (block >= thr_u8).astype(np.uint8)

            def to_tiff(block):
                return block if probabilities else np.where(block >= thr_u8, np.uint8(255), np.uint8(0))

            tiff_transform: Any = to_tiff if class_names is None else None  # labels as they are

            # NOTE [Concurrent TIFF]: the mask TIFF is written by a thread that follows the
            # prediction row by row (level 0), then writes the smaller levels once it is done.
            gate = RowGate()
            tiff_grid = MaskGrid(raw_path, shape=(grid_h, grid_w), l0_size=slide.dimensions, step=step, gate=gate)
            tiff_path = tmp / paths["mask"].name
            # On a GPU the CPU cores are idle: compress the TIFF's tiles with several threads too.
            tiff_thread = _TiffThread(tiff_path, tiff_grid, slide.mpp, tiff_transform,
                                      workers=1 if dev.type == "cpu" else default_read_workers(dev),
                                      description=None if class_names is None else _label_description(class_names))
            try:
                if orientations > 1:  # NOTE [Orientations]
                    timings = _predict_oriented_to_raw(with_precision(net, precision), seen, raw_path, orientations,
                                                       memory_budget=memory_budget, device=dev, progress=progress,
                                                       thr_u8=thr_u8, gate=gate, read_workers=read_workers,
                                                       classes=n_classes, trim=trim)
                else:
                    timings = _predict_to_raw(with_precision(net, precision), seen, raw_path,
                                              memory_budget=memory_budget, device=dev, progress=progress,
                                              thr_u8=thr_u8, gate=gate, read_workers=read_workers, classes=n_classes,
                                              trim=trim)
                timings["balance_s"] = balance_s
                # NOTE [Specks]: after the filter (from its labels when there is one) and before the holes
                speck_px = ((speck_um / t_mpp) ** 2, speck_um / t_mpp) if speck_um > 0 else None
                if filt is not None:  # NOTE [Component filter], while the TIFF thread finishes its levels
                    t1 = time.perf_counter()
                    filtered = _edit_raw(raw_path, (grid_h, grid_w),
                                         lambda prob, f=filt, r=read: apply_component_filter(r, prob, thr_u8, f,
                                                                                             specks=speck_px))
                    specks = filtered.pop("specks", None)
                    timings["filter_s"] = time.perf_counter() - t1
                elif speck_px is not None:
                    t1 = time.perf_counter()
                    specks = _edit_raw(raw_path, (grid_h, grid_w),
                                       lambda prob: drop_mask_specks(prob, thr_u8, *speck_px))
                    timings["specks_s"] = time.perf_counter() - t1
                del record, read
                if hole_um > 0:  # NOTE [Hole filling], after the filter: a dropped piece leaves a hole
                    t1 = time.perf_counter()
                    holes = _edit_raw(raw_path, (grid_h, grid_w),
                                      lambda prob: fill_mask_holes(prob, thr_u8, hole_um / t_mpp,
                                                                   None if trim is None else trim.dropped()))
                    timings["holes_s"] = time.perf_counter() - t1
            except BaseException:
                gate.abort()
                raise
            finally:
                t0 = time.perf_counter()
                tiff_thread.join()
                tiff_grid.close()
            timings["tiff_wait_s"] = time.perf_counter() - t0
            err = tiff_thread.error
            if isinstance(err, OSError) and not isinstance(err, GigasegError):
                raise OutputError(f"cannot write the mask TIFF of {stem} in {out_dir} ({err.strerror or err}); "
                                  "free disk space or choose another `out_dir`", cause=err) from err
            if err is not None:
                raise err
            tissue_px = timings.pop("tissue")
            # pieces the filter dropped and holes filled leave the TIFF written meanwhile behind: its tiles
            # that show them are written again below
            dropped = filtered["dropped_pixels"] if filtered is not None else 0
            dropped += specks["dropped_pixels"] if specks is not None else 0
            filled = holes["filled_pixels"] if holes is not None else 0
            tissue_px += filled - dropped
            grid = MaskGrid(raw_path, shape=(grid_h, grid_w), l0_size=slide.dimensions, step=step)
            changed = [*(filtered["boxes"] if filtered is not None else []), *(specks["boxes"] if specks else []),
                       *(holes["boxes"] if holes else [])]
            if changed:  # NOTE [Patched tiles]: the tiles of the dropped pieces and filled holes, not the whole TIFF
                t1 = time.perf_counter()
                patch_mask_tiff(tiff_path, grid, changed, transform=tiff_transform)
                timings["tiff_patch_s"] = time.perf_counter() - t1
            class_px = timings.pop("class_pixels")

            summary = {
                "command": "predict",
                "gigaseg_version": __version__,
                "time": utc_now(),
                "slide": str(slide_path),
                "slide_dimensions": list(slide.dimensions),
                "slide_mpp": list(slide.mpp),
                "mpp_given": mpp is not None,
                "model": model_source,
                "model_mpp": t_mpp,
                "model_mpp_source": "argument" if model_mpp else ("checkpoint" if trained_mpp else "slide level 0"),
                "grid_size": [grid_w, grid_h],
                "threshold": float(threshold),
                "probabilities": bool(probabilities),
                "device": str(dev),
                "precision": precision,
                "memory_budget": memory_budget,
                "read_workers": read_workers,
                "tissue_pixels_model_res": tissue_px,
                "tissue_area_mm2": round(tissue_px * t_mpp * t_mpp / 1e6, 6),
                "tissue_fraction": round(tissue_px / (grid_w * grid_h), 6),
                "megapixels_model_res": round(grid_w * grid_h / 1e6, 3),
                "tile": timings.pop("tile"),
                "n_tiles": timings.pop("n_tiles"),
                "timings": {k: round(v, 3) for k, v in timings.items()},
                "strict": bool(strict),
                "glass_balance": bool(glass_balance),
                "orientations": orientations,  # NOTE [Orientations]
                # the model's glass balance (NOTE [Glass balance]): the gain per channel, None when none is applied
                "glass_gains": ([round(float(g), 4) for g in image.gains.ravel()] if isinstance(image, GlassBalanced)
                                else [1.0, 1.0, 1.0] if model_glass_white(net) > 0 else None),
                "seam_correction": _level0_seams(image.seams, step) if isinstance(image, GlassBalanced) else None,
                # NOTE [Component filter]: the mask's components and those the model's filter dropped
                "component_filter": (None if filtered is None else
                                     {"components": filtered["components"], "dropped": filtered["dropped"],
                                      "dropped_pixels_model_res": filtered["dropped_pixels"],
                                      "dropped_pieces": [_level0_piece(piece, step)
                                                         for piece in filtered["dropped_pieces"]]}),
                # NOTE [Hole filling]: the mask's holes and those narrower than the width, made tissue
                "holes_filled": (None if holes is None else
                                 {"max_width_um": hole_um, "holes": holes["holes"], "filled": holes["filled"],
                                  "filled_pixels_model_res": holes["filled_pixels"],
                                  "trimmed_pixels_restored": holes["restored"]}),
                # NOTE [Specks]: the mask's pieces smaller than a square of the size, dropped
                "specks_dropped": (None if specks is None else
                                   {"size_um": speck_um, "pieces": specks["pieces"], "dropped": specks["dropped"],
                                    "dropped_pixels_model_res": specks["dropped_pixels"]}),
                # NOTE [Edge trim]: pixels of the outline much paler than the tissue beside them, dropped
                "edge_trim": (None if trim is None else
                              {"ratio": trim_ratio, "trimmed_pixels_model_res": trim.trimmed}),
            }
            if class_names is not None:  # NOTE [Class outputs]: each class's area instead of the tissue's
                for key in ("threshold", "probabilities", "tissue_pixels_model_res", "tissue_area_mm2",
                            "tissue_fraction"):
                    del summary[key]
                summary["classes"] = list(class_names)
                summary["class_pixels_model_res"] = dict(zip(class_names, class_px))
                pairs = list(zip(class_names, class_px))
                summary["class_area_mm2"] = {n: round(v * t_mpp * t_mpp / 1e6, 6) for n, v in pairs}
                summary["class_fraction"] = {n: round(v / (grid_w * grid_h), 6) for n, v in pairs}
            if filter_note is not None:
                summary["warnings"] = [filter_note]
            if redo:
                summary["redone"] = f"the earlier outputs were incomplete: {why}"
            summary["timings"]["tiff_s"] = round(tiff_thread.seconds, 3)
            try:
                write_outputs(slide, grid, out_dir, stem, binary=binary, tiff_transform=tiff_transform,
                              min_area=min_area, simplify=simplify, summary=summary, overwrite=overwrite or redo,
                              tiff_done=tiff_path, classes=class_names)
            finally:
                grid.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        slide.close()
        owner.train(was_training)  # a UNet object goes back to the mode it came in
    summary["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
    return summary


@sigterm_interrupts
def predict_slides(model: Any, slides: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *,
                   progress: bool = True, **kwargs: Any) -> tuple[list[dict], list[tuple[str, str]]]:
    """Run :func:`predict_slide` on many slides; one failure does not stop the others.

    ``model`` and the options (``model_mpp=`` among them) are :func:`predict_slide`'s; a
    checkpoint (or weights file) is loaded once; None (or ``"builtin"``) is the built-in tissue
    model. Returns ``(summaries, failures)`` with failures as
    ``(slide, error message)``; running out of memory on a slide is that slide's failure. Ctrl-C
    and SIGTERM stop the batch (KeyboardInterrupt) after removing the slide's temporary files.
    """
    import inspect

    from .checkpoint import load_model
    from .engine import resolve_device

    slides = list(slides)
    # Every option, and every output path against the inputs, is checked before the model loads:
    # a bad value is one error up front, not one per slide (NOTE [Outputs never replace inputs]).
    try:
        inspect.signature(predict_slide).bind(model, None, out_dir, progress=progress, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"predict_slides: {exc}; the options are predict_slide's") from None
    check_number("threshold", kwargs.get("threshold", DEFAULT_THRESHOLD))
    check_number("min_area", kwargs.get("min_area", DEFAULT_MIN_AREA))
    for name in ("fill_holes", "drop_specks", "edge_trim"):
        check_number(name, kwargs.get(name), none_ok=True)
    check_options(**{k: kwargs.get(k) for k in ("mpp", "model_mpp", "simplify", "memory_budget", "read_workers")})
    if "orientations" in kwargs:
        from .engine.orient import check_orientations

        check_orientations(kwargs["orientations"])
    if kwargs.get("precision", "float32") not in PRECISIONS:
        raise ConfigError(f"precision {kwargs['precision']!r} is not valid: use one of {', '.join(PRECISIONS)}")
    from .checkpoint import BUILTIN

    if model is None:
        model = BUILTIN
    is_path = isinstance(model, (str, os.PathLike))
    check_batch(slides, out_dir, command="predict", inputs=[model] if _is_model_file(model) else [])
    check_out_dir(Path(out_dir))
    require_writers()
    if is_path:
        dev = resolve_device(kwargs.get("device") or "cpu")
        net = load_model(model, device=dev)  # the (model, training mpp) pair
        source = str(model)
    else:
        net, source = model, None
    summaries, failures = [], []
    bar = None
    if progress and len(slides) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(slides), desc="slides", unit="slide", file=sys.stderr)
    for s in slides:
        try:
            summary = predict_slide(net, s, out_dir, progress=progress, **kwargs)
            if source is not None and not summary.get("skipped"):
                summary["model"] = source
                from ._atomic import write_json_atomic

                write_json_atomic(Path(summary["paths"]["summary"]), summary)
            summaries.append(summary)
        except GigasegError as exc:
            failures.append((str(s), str(exc)))
        except MemoryError as exc:  # NOTE [Bounded work]: one slide's, not the batch's
            failures.append((str(s), _out_of_memory(exc)))
        except (OSError, ValueError, RuntimeError) as exc:
            failures.append((str(s), f"{type(exc).__name__}: {exc}"))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return summaries, failures


def _out_of_memory(exc: MemoryError) -> str:
    """A slide's failure message for a MemoryError (numpy's names the array it could not make)."""
    detail = f" ({exc})" if str(exc) else ""
    return (f"out of memory{detail}; give a smaller `memory_budget`, run the model at a coarser `model_mpp`, or "
            "free memory")


# --- many slides over many processes -----------------------------------------------------------

# NOTE [Sharded prediction]
# Slides are independent, so N processes (torchrun's ranks, or the tasks of a SLURM job array
# given ``shard=(i, N)``) each predict a share of the list: ``shard_slides`` splits it by cost
# (file bytes, a folder's summed: what a slide costs to read, and roughly its pixels) with the
# same greedy longest-processing-time rule as the tiles of a step (``split_by_cost``), the same
# on every process, which needs only the list and the files' sizes. Each slide is predicted by
# exactly one process, by the same ``predict_slide`` as in one process, so its outputs are the
# same bytes (the summary's time and timings apart); a slide's failure is that slide's. The whole
# list is checked first by every process (two slides with one output name would collide on two
# processes just as on one). Under torchrun the ranks share no tensors: each leaves its
# summaries and failures in the process group's store and waits for the others (a watched wait:
# a rank that dies or hangs is named within GIGASEG_DIST_TIMEOUT, NOTE [Rank faults]); then every
# rank has every slide's result in the list's order, and rank 0 writes the run's report. A rank
# that stopped before reporting makes its slides failures of the run ("run it again": complete
# outputs are kept, NOTE [Complete outputs]); the others' results stand.


def shard_slides(slides: Sequence[str | os.PathLike], count: int) -> list[list[int]]:
    """The indices of ``slides`` split into ``count`` shares of about equal total file size
    (NOTE [Sharded prediction]); deterministic, each share in the list's order."""
    from .engine import split_by_cost

    if count < 1:
        raise ConfigError(f"cannot split the slides into {count} shares; give at least 1")
    return split_by_cost([_file_bytes(Path(s)) for s in slides], count)


def _file_bytes(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _check_shard(shard: Any) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ConfigError(f"`shard={shard!r}` must be a pair (index, count) with 0 <= index < count, "
                          "e.g. (0, 4)") from None
    if not 0 <= index < count:
        raise ConfigError(f"`shard={shard!r}` must be (index, count) with 0 <= index < count, "
                          f"e.g. (0, {max(count, 1)})")
    return index, count


@sigterm_interrupts
def predict_sharded(model: Any, slides: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *,
                    shard: tuple[int, int] | None = None, progress: bool = True,
                    **kwargs: Any) -> tuple[list[dict], list[tuple[str, str]]]:
    """:func:`predict_slides` over this process's share of ``slides`` (NOTE [Sharded prediction]).

    Args:
        shard: ``(index, count)``: predict share ``index`` of ``count`` (0-based) and return its
            results, with no process group (the tasks of a SLURM job array). None: under torchrun
            (``WORLD_SIZE`` > 1), rank r of N predicts share r and, once every rank is done,
            returns every slide's results; in a single process, all the slides.
        model, out_dir, progress, kwargs: as :func:`predict_slides` (progress on rank 0 only).

    Returns:
        ``(summaries, failures)`` as :func:`predict_slides`, in the order of ``slides``.

    Raises:
        ConfigError: a bad ``shard``, option or batch (checked over the whole list).
        DistributedError: under torchrun, when the ranks cannot start together.
        KeyboardInterrupt: on Ctrl-C or SIGTERM (the other ranks then stop too).
    """
    slides = list(slides)
    if shard is not None:
        index, count = _check_shard(shard)
    check_batch(slides, out_dir, command="predict", inputs=[model] if _is_model_file(model) else [])
    if shard is not None:
        mine = shard_slides(slides, count)[index]
        return predict_slides(model, [slides[i] for i in mine], out_dir, progress=progress, **kwargs)
    from ._torchrun import start_world

    world = start_world(kwargs.get("device"))
    if world is None:
        return predict_slides(model, slides, out_dir, progress=progress, **kwargs)
    try:
        shares = shard_slides(slides, world.size)
        summaries, failures = predict_slides(model, [slides[i] for i in shares[world.rank]], out_dir,
                                             progress=progress and world.rank == 0, **kwargs)
        return _gathered(world, slides, shares, summaries, failures)
    except BaseException as exc:
        world.watch.announce_exit(exc)
        raise
    finally:
        world.close()


def _gathered(world: Any, slides: list, shares: list[list[int]], summaries: list[dict],
              failures: list[tuple[str, str]]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Every rank's results, in the order of ``slides``, once all ranks are done."""
    import json

    from .engine.watch import barrier

    world.watch.put(f"predict/{world.rank}", json.dumps({"summaries": summaries, "failures": failures}).encode())
    lost = None
    try:
        barrier(what="waiting for the other ranks' slides")
    except DistributedError as exc:  # a rank stopped: the others' results stand
        lost = exc
    results: dict[str, tuple[str, Any]] = {}
    for rank, data in enumerate(world.watch.collect([f"predict/{r}" for r in range(world.size)])):
        if data is None:
            why = f"; {lost}" if lost is not None else ""
            for i in shares[rank]:
                results[str(slides[i])] = ("failed", f"no result from rank {rank}, which had this slide: it stopped "
                                                     f"before reporting{why}; run the command again: complete outputs "
                                                     "are kept, the rest is done again")
            continue
        part = json.loads(data)
        for s in part["summaries"]:
            results[s["slide"]] = ("done", s)
        for slide, message in part["failures"]:
            results[slide] = ("failed", message)
    out_summaries = [results[str(s)][1] for s in slides if results.get(str(s), ("",))[0] == "done"]
    out_failures = [(str(s), results[str(s)][1]) for s in slides if results.get(str(s), ("",))[0] == "failed"]
    return out_summaries, out_failures


def reports_here() -> bool:
    """Whether this process writes a run's report: always, but under torchrun rank 0 alone."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True
