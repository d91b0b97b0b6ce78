"""Synthetic H&E whole-slide images with exact tissue masks.

A virtual slide is defined by ``(seed, width, height, mpp)``. Any window of it can be
rendered on its own (:func:`render_region`), and a whole slide can be written as a
pyramidal, JPEG-compressed BigTIFF plus an exact mask (:func:`write_slide`)::

    from gigaseg.synth import render_region, write_slide
    rgb, mask = render_region(0, 1000, 2000, 512, 512, width=64000, height=16000)
    write_slide("slide.tiff", width=64000, height=16000, seed=0)

Modules: ``render`` (the layout and the renderer; NOTE [Determinism]), ``_noise`` and
``_textures`` (its building blocks), ``_tiff`` (the streaming slide writer).
"""

from __future__ import annotations

from ._tiff import mask_path_for, write_slide
from .render import (
    HOLE_CONVENTIONS,
    HOLE_MIN_UM,
    LABELS,
    SynthLayout,
    check_holes,
    clear_caches,
    make_layout,
    render_labels,
    render_region,
)

__all__ = [
    "clear_caches",
    "render_region",
    "write_slide",
    "mask_path_for",
    "SynthLayout",
    "make_layout",
    "render_labels",
    "LABELS",
    "HOLE_MIN_UM",
    "HOLE_CONVENTIONS",
    "check_holes",
]
