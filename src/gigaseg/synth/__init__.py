"""Synthetic whole-slide images with exact tissue masks (H&E by default; any stain with a profile).

A virtual slide is defined by ``(seed, width, height, mpp)``. Any window of it can be
rendered on its own (:func:`render_region`), and a whole slide can be written as a
pyramidal, JPEG-compressed BigTIFF plus an exact mask (:func:`write_slide`)::

    from gigaseg.synth import render_region, write_slide
    rgb, mask = render_region(0, 1000, 2000, 512, 512, width=64000, height=16000)
    write_slide("slide.tiff", width=64000, height=16000, seed=0)

``profile="he"`` (the default) gives the original H&E slides, unchanged; ``profile="all"`` or a
list of categories (``CATEGORIES``: stains, tissue kinds, glass and scanner effects, artefacts)
gives the variety profile (docs/synth.md)::

    rgb, mask = render_region(3, 0, 0, 2048, 2048, width=8000, height=4000, mpp=2.0, profile="all")

Modules: ``render`` (the layout and the renderer; NOTE [Determinism]), ``_noise`` and
``_textures`` (its building blocks), ``_variety`` and ``_stains`` (the variety profile's
categories and stain families), ``_jpeg`` (JPEG artefacts on the global block grid), ``_tiff``
(the streaming slide writer).
"""

from __future__ import annotations

from ._tiff import mask_path_for, write_slide
from .render import (
    CATEGORIES,
    HOLE_CONVENTIONS,
    HOLE_LARGE_UM,
    HOLE_MIN_UM,
    LABELS,
    PROFILES,
    TISSUE_CODES,
    SynthLayout,
    boosted_profile,
    check_holes,
    check_profile,
    clear_caches,
    make_layout,
    render_labels,
    render_region,
    with_sharp_edges,
)

__all__ = [
    "clear_caches",
    "render_region",
    "write_slide",
    "mask_path_for",
    "SynthLayout",
    "make_layout",
    "render_labels",
    "with_sharp_edges",
    "LABELS",
    "HOLE_MIN_UM",
    "HOLE_CONVENTIONS",
    "check_holes",
    "TISSUE_CODES",
    "HOLE_LARGE_UM",
    "PROFILES",
    "CATEGORIES",
    "check_profile",
    "boosted_profile",
]
