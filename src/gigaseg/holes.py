"""The definition's two size rules on a predicted tissue mask: holes narrower than its width made
tissue (NOTE [Hole filling]), pieces smaller than its specks dropped (NOTE [Specks]).

The definition of tissue that every real-slide score of this project uses
(``../shared/data/real/SOURCES.md``) counts "holes and lumens under about 100 um across inside
tissue" as tissue and "empty areas inside a section wider than about 100 um" as background. A
model at 4 um/px opens small gaps in loose or pale tissue (a lacy stroma, the space between
fibres) that the definition fills. ``fill_holes`` fills them in a uint8 probability grid, in place:
every enclosed hole of the mask narrower than a given width is raised to the threshold, so the
mask, the probabilities, the GeoJSON and the overlay agree.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["fill_holes", "drop_specks"]

# NOTE [Hole filling]
# A hole is a 4-connected component of the background {round(255 p) < thr} that does not touch the
# grid's edge (so 8-connected tissue closes it in). Its width is the diameter of the largest disc
# inside it: 2 d - 1 pixels, d the largest Euclidean distance from a pixel of the hole to the
# nearest pixel outside it (scipy's distance_transform_edt on the hole's bounding box grown by one
# pixel), so a hole k pixels wide measures k for odd k and k - 1 for even k. A hole narrower than
# max_width pixels is filled: its probabilities are raised to thr (values at or above thr are
# left), so it is tissue in the mask, in the probabilities TIFF thresholded at thr and in the
# GeoJSON. A hole whose bounding box is narrower than max_width on one side is narrower than that
# itself and is filled without the distance transform. The built-in tissue model declares 100 um
# (the definition's width; ``gigaseg.checkpoint.hole_width``), converted to pixels at the model's
# resolution; other models fill nothing unless asked. Measured in results/tissue-model/README.md,
# "Stage 18". Pixels the edge trim dropped (NOTE [Edge trim] in gigaseg/edges.py) count as tissue here:
# holes are found and measured on the mask as the model made it, so trimming a hole's rim cannot
# widen it past the width, and the trimmed pixels next to a filled hole are made tissue with it (on
# CMU-1-Small-Region mirrored, a lacy region's trimmed rim had taken it past 100 um: 0.970 -> 0.954).


def _width(hole: np.ndarray) -> float:
    """The width of one hole given as its bounding box's bool mask (NOTE [Hole filling])."""
    from scipy import ndimage

    d = ndimage.distance_transform_edt(np.pad(hole, 1))
    return float(2.0 * d.max() - 1.0)


def fill_holes(prob: np.ndarray, thr_u8: int, max_width: float, trimmed: Any = None) -> dict[str, Any]:
    """Fill the holes of the mask ``prob >= thr_u8`` narrower than ``max_width`` pixels in the
    uint8 probability grid ``prob`` (an array or a writable memmap), in place (NOTE [Hole filling]).
    ``trimmed``: flat indices of pixels the edge trim dropped, counted as tissue.

    Returns:
        ``holes`` (the mask's holes), ``filled`` (those filled), ``filled_pixels`` (the trimmed pixels
        made tissue with them included, also counted in ``restored``), and ``boxes``: the bounding box
        ``(y0, x0, y1, x1)`` (end exclusive) of each filled hole, grown by a pixel when it has trimmed pixels.
    """
    from scipy import ndimage

    background = np.asarray(prob) < thr_u8
    trimmed = np.zeros(0, np.int64) if trimmed is None else np.asarray(trimmed, np.int64).ravel()
    background.reshape(-1)[trimmed] = False  # NOTE [Hole filling]: the mask as the model made it
    labels, n = ndimage.label(background)
    del background
    boxes = ndimage.find_objects(labels)
    h, w = labels.shape
    holes = filled = pixels = 0
    changed: list[tuple[int, int, int, int]] = []
    done = np.zeros(n + 1, bool)  # the holes filled
    for i, box in enumerate(boxes):
        if box is None:
            continue
        ys, xs = box
        if ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w:
            continue  # touches the edge: open to the outside
        holes += 1
        hole = labels[ys, xs] == i + 1
        if min(hole.shape) >= max_width and _width(hole) >= max_width:
            continue
        crop = prob[ys, xs]
        crop[hole] = np.maximum(crop[hole], thr_u8)
        prob[ys, xs] = crop
        filled += 1
        pixels += int(hole.sum())
        done[i + 1] = True
        grow = 1 if trimmed.size else 0  # a trimmed pixel beside the hole may be made tissue too
        changed.append((max(0, ys.start - grow), max(0, xs.start - grow), min(h, ys.stop + grow),
                        min(w, xs.stop + grow)))
    restored = _restore_trimmed(prob, thr_u8, labels, done, trimmed) if trimmed.size and filled else 0
    return {"holes": holes, "filled": filled, "filled_pixels": pixels + restored, "restored": restored,
            "boxes": changed}


def _restore_trimmed(prob: np.ndarray, thr_u8: int, labels: np.ndarray, done: np.ndarray, trimmed: np.ndarray) -> int:
    """Make the trimmed pixels next to (8-connected) a filled hole tissue again; returns how many."""
    h, w = labels.shape
    ys, xs = np.divmod(trimmed, w)
    near = np.zeros(trimmed.size, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = ys + dy, xs + dx
            ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            near[ok] |= done[labels[y[ok], x[ok]]]
    ys, xs = ys[near], xs[near]
    for y, x in zip(ys.tolist(), xs.tolist()):  # a few pixels; a memmap is written in place
        prob[y, x] = max(int(prob[y, x]), thr_u8)
    return int(near.sum())


# NOTE [Specks]
# The definition of tissue calls "dust and debris specks smaller than about (100 um)^2" on the
# glass background, and both real slides' reference masks drop their pieces under (100 um)^2. A
# speck is an 8-connected component of the mask {round(255 p) >= thr} (as the component filter's
# pieces) of fewer than min_pixels pixels with no larger piece within `reach` pixels (Euclidean,
# from pixel to pixel); its probabilities are capped at thr - 1, so it is background in every
# output. A small piece near a larger one is kept: a model at 4 um/px breaks a faint strand or a
# lacy edge into bits that the reference masks, at full resolution, join to their tissue (on
# CMU-1-Small-Region all 14 pieces under (100 um)^2 of the DICOM copy's mask lie within 92 um of
# the tissue and are tissue in its reference). The reach is the definition's other size, 100 um:
# a gap narrower than that inside tissue is tissue (NOTE [Hole filling]), so a bit that close is
# part of it. The built-in tissue model declares 100 um for both (``gigaseg.checkpoint.speck_size``):
# 625 pixels and a reach of 25 pixels at its 4 um/px. Dropped after the component filter and before
# the holes are filled (a speck inside a hole fills with it). The synthetic slides label scattered
# crumbs of tissue from 50 um across as tissue, which this drops (results/tissue-model/README.md,
# "Stage 21").


def find_specks(labels: np.ndarray, boxes: list, sizes: np.ndarray, present: np.ndarray, min_pixels: float,
                reach: float) -> np.ndarray:
    """The labels of the specks among the pieces of ``labels`` (int, 0 background) whose ``present`` is
    True (bool, one per label, 0 included): those smaller than ``min_pixels`` (``sizes``: pixels per
    label) with no present piece of at least that size within ``reach`` pixels (NOTE [Specks]).
    ``boxes``: ``scipy.ndimage.find_objects(labels)``, which the caller needs too."""
    from scipy import ndimage

    big = present & (sizes >= min_pixels)
    big[0] = False
    small = present & ~big
    small[0] = False
    ids = np.flatnonzero(small)
    if ids.size == 0:
        return ids
    r = max(0, int(math.ceil(reach)))
    h, w = labels.shape
    specks = []
    for i in ids:
        ys, xs = boxes[i - 1]
        y0, x0, y1, x1 = max(0, ys.start - r), max(0, xs.start - r), min(h, ys.stop + r), min(w, xs.stop + r)
        crop = labels[y0:y1, x0:x1]
        near = big[crop]
        if near.any() and ndimage.distance_transform_edt(~near)[crop == i].min() <= reach:
            continue  # a larger piece within reach: part of its tissue
        specks.append(i)
    return np.asarray(specks, np.int64)


def drop_specks(prob: np.ndarray, thr_u8: int, min_pixels: float, reach: float) -> dict[str, Any]:
    """Drop the pieces of the mask ``prob >= thr_u8`` smaller than ``min_pixels`` pixels with no piece of
    at least that size within ``reach`` pixels from the uint8 probability grid ``prob`` (an array or a
    writable memmap), in place (NOTE [Specks]). ``gigaseg.components.apply_component_filter`` does the
    same on the pieces its filter keeps, with the labels it has already made.

    Returns:
        ``pieces`` (the mask's pieces), ``dropped`` (those dropped), ``dropped_pixels``, and ``boxes``:
        the bounding box ``(y0, x0, y1, x1)`` (end exclusive) of each dropped piece.
    """
    from scipy import ndimage

    if thr_u8 <= 0 or min_pixels <= 1:
        return {"pieces": 0, "dropped": 0, "dropped_pixels": 0, "boxes": []}
    labels, n = ndimage.label(np.asarray(prob) >= thr_u8, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    boxes = ndimage.find_objects(labels)
    ids = find_specks(labels, boxes, sizes, np.ones(n + 1, bool), min_pixels, reach)
    changed: list[tuple[int, int, int, int]] = []
    cap = np.uint8(thr_u8 - 1)
    for i in ids:
        ys, xs = boxes[i - 1]
        piece = labels[ys, xs] == i
        crop = prob[ys, xs]
        crop[piece] = np.minimum(crop[piece], cap)
        prob[ys, xs] = crop
        changed.append((ys.start, xs.start, ys.stop, xs.stop))
    return {"pieces": int(n), "dropped": len(changed), "dropped_pixels": int(sizes[ids].sum()) if ids.size else 0,
            "boxes": changed}
