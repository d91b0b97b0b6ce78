"""Hole filling: gaps narrower than the definition's width inside a predicted tissue mask made tissue
(NOTE [Hole filling]).

The definition of tissue that every real-slide score of this project uses
(``../shared/data/real/SOURCES.md``) counts "holes and lumens under about 100 um across inside
tissue" as tissue and "empty areas inside a section wider than about 100 um" as background. A
model at 4 um/px opens small gaps in loose or pale tissue (a lacy stroma, the space between
fibres) that the definition fills. ``fill_holes`` fills them in a uint8 probability grid, in place:
every enclosed hole of the mask narrower than a given width is raised to the threshold, so the
mask, the probabilities, the GeoJSON and the overlay agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fill_holes"]

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
# "Stage 18".


def _width(hole: np.ndarray) -> float:
    """The width of one hole given as its bounding box's bool mask (NOTE [Hole filling])."""
    from scipy import ndimage

    d = ndimage.distance_transform_edt(np.pad(hole, 1))
    return float(2.0 * d.max() - 1.0)


def fill_holes(prob: np.ndarray, thr_u8: int, max_width: float) -> dict[str, Any]:
    """Fill the holes of the mask ``prob >= thr_u8`` narrower than ``max_width`` pixels in the
    uint8 probability grid ``prob`` (an array or a writable memmap), in place (NOTE [Hole filling]).

    Returns:
        ``holes`` (the mask's holes), ``filled`` (those filled), ``filled_pixels``, and ``boxes``: the
        bounding box ``(y0, x0, y1, x1)`` (end exclusive) of each filled hole.
    """
    from scipy import ndimage

    background = np.asarray(prob) < thr_u8
    labels, n = ndimage.label(background)
    del background
    boxes = ndimage.find_objects(labels)
    h, w = labels.shape
    holes = filled = pixels = 0
    changed: list[tuple[int, int, int, int]] = []
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
        changed.append((ys.start, xs.start, ys.stop, xs.stop))
    return {"holes": holes, "filled": filled, "filled_pixels": pixels, "boxes": changed}
