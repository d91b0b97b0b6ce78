"""Reading whole-slide images and plain images through one interface.

``open_slide(path)`` returns a :class:`Slide` with OpenSlide's contract: locations and
sizes are ``(x, y)`` / ``(w, h)``; ``read_region`` takes its location in level-0 pixels
and its size in pixels of the level read, and returns an ``(h, w, 3)`` uint8 RGB array.
Pixels outside the slide are white (255), like out-of-scan glass.

Backends, tried in this order for a file (the first that recognises the format wins):

- ``openslide`` (openslide-python + openslide-bin): vendor formats (SVS, NDPI, MRXS, SCN,
  Philips TIFF, DICOM WSI, ...). A directory is read as a DICOM WSI series.
- ``tifffile``: plain, tiled, pyramidal (pages or SubIFDs) and OME-TIFF, including strip
  TIFFs that OpenSlide refuses. Tried before OpenSlide for files OpenSlide calls
  ``generic-tiff``, because OpenSlide's generic reader ignores SubIFD pyramids.
- ``pillow``: PNG, JPEG and the other formats Pillow reads; one level, held in memory.

A backend that does not recognise the file declines and the next one is tried; a backend
that recognises the file and finds it broken (truncated, corrupt) stops the search, so a
fallback never hides that error. When every backend declines, the error lists each reason,
the first one first.

Example::

    with open_slide("CMU-1-Small-Region.svs") as slide:
        rgb = slide.read_region((0, 0), 0, (512, 512))            # (512, 512, 3) uint8
        rgb_1um = slide.read_region_at_mpp((0, 0), 1.0, (256, 256))
        image = SlideArray(slide, 2.0)                # the slide at 2 um/px, an (H, W, 3) array-like
        box = image[100:612, 200:712]                 # (512, 512, 3) uint8
"""

from __future__ import annotations

from .array import SlideArray
from .base import BACKENDS, Slide
from .open import open_slide

__all__ = ["BACKENDS", "Slide", "SlideArray", "open_slide"]
