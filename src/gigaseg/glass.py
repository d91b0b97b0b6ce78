"""Glass balance: a model's input brightened so that its glass is white (NOTE [Glass balance]).

A ``UNetConfig`` with ``glass_white`` > 0 declares it; the engine (``tiled_predict``,
``iter_predict``, ``tiled_backward``) then applies it to every image the model is given, in
prediction, validation and training alike, so a model is always trained and used on the same
inputs. ``glass_gains`` is the per-image statistic; ``GlassBalanced`` the balanced image.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from ._imagelike import ImageWrapper
from .errors import InputError

#: Pixels the glass estimate looks at, at most (a regular sample of the image).
SAMPLE_PIXELS = 2**18
#: Pixels at least this bright (mean of R, G, B) can be glass; darker ones (out-of-scan padding,
#: pen, dark tissue) never are.
MIN_GLASS_LEVEL = 40.0
#: The brightest share of those pixels is taken as the glass.
GLASS_SHARE = 0.10
#: Largest gain per channel: glass darker than white / MAX_GAIN is brightened only that far.
MAX_GAIN = 1.8
#: An estimate more coloured than this ((max - min) / max of its R, G, B) is not glass but pale
#: tissue (an image with no glass): the image is left as it is.
MAX_CHROMA = 0.15

# NOTE [Glass balance]
# Scanners differ in exposure and white balance, and slides in the glass itself: the same section
# reads with glass at 250 on one scanner and 225, or bluish, on another. A model trained on slides
# whose glass is mostly white reads dark or tinted glass as faint tissue (the built-in model on
# CMU-1-Small-Region with its RGB scaled by 0.9: Dice 0.958 -> 0.930; results/tissue-model/README.md,
# "Glass balance"). So a model may declare ``glass_white`` W: before the model, each channel of the
# image is multiplied by gain_c = clip(W / g_c, 1, MAX_GAIN), where g is the image's glass colour,
# and rounded back to uint8 (clipped at 255). g is the per-channel median of the brightest
# GLASS_SHARE of the pixels brighter than MIN_GLASS_LEVEL, over a regular sample of at most
# SAMPLE_PIXELS (a numpy-like image: every s-th row and column; a slide: its grid read s times
# coarser from the pyramid, the same statistic up to resampling). Gains are never below 1: glass
# at W or brighter is left as it is, so white slides are read exactly as before. An estimate more
# coloured than MAX_CHROMA is pale tissue, not glass (an image that is all tissue), and the image
# is left as it is. The statistic is of the whole image, so it is computed once per image before
# the tiles; each tile is then balanced pixel by pixel, which keeps the tiled engine exact: the
# balanced image gives the same tiles whatever the tiling. In training the gains come from the
# stored region (before its flip or rotation, which do not change them, and before colour jitter).


def glass_colour(image: Any) -> np.ndarray | None:
    """The glass colour (R, G, B) of an (H, W, 3) uint8 image-like (NOTE [Glass balance]); None
    when it has no pixel bright enough to be glass."""
    sample = _sample(image)
    f = sample.reshape(-1, sample.shape[-1]).astype(np.float32)
    lum = f.mean(1)
    f, lum = f[lum > MIN_GLASS_LEVEL], lum[lum > MIN_GLASS_LEVEL]
    if lum.size == 0:
        return None
    cut = np.percentile(lum, 100.0 * (1.0 - GLASS_SHARE))
    return np.median(f[lum >= cut], axis=0)


def glass_gains(image: Any, white: float) -> np.ndarray:
    """Per-channel gains (float32, (3,)) that bring the glass of ``image`` to ``white`` (NOTE
    [Glass balance]); all 1 when the glass is already that bright or no glass is found."""
    ones = np.ones(3, np.float32)
    g = glass_colour(image)
    if g is None or g.shape != (3,):
        return ones
    top = float(g.max())
    if top <= 0 or (top - float(g.min())) / top > MAX_CHROMA:
        return ones
    return np.clip(float(white) / np.maximum(g, 1.0), 1.0, MAX_GAIN).astype(np.float32)


def _sample(image: Any) -> np.ndarray:
    """A regular sample of at most about ``SAMPLE_PIXELS`` pixels of ``image``."""
    if isinstance(image, GlassBalanced):
        image = image.image
    # a training view: its stored region, before flips and jitter. A RegionView exists only once
    # gigaseg.dataset is imported; prediction does not import it (0.2 s of start-up)
    dataset = sys.modules.get(f"{__package__}.dataset")
    if dataset is not None and isinstance(image, dataset.RegionView):
        image = image.base
    h, w = (int(v) for v in image.shape[:2])
    s = max(1, math.ceil(math.sqrt(h * w / SAMPLE_PIXELS)))
    slide = getattr(image, "slide", None)
    if slide is not None and hasattr(image, "mpp"):  # a SlideArray: its grid s times coarser
        from .slides import SlideArray

        if s == 1:
            return np.asarray(image[:, :])
        mpp = image.mpp if isinstance(image.mpp, tuple) else (image.mpp, image.mpp)
        coarse = SlideArray(slide, (mpp[0] * s, mpp[1] * s))
        return np.asarray(coarse[:, :])
    try:
        return np.asarray(image[::s, ::s])
    except (TypeError, ValueError, IndexError, InputError):  # an array-like read in steps of 1 only: row by row
        return np.stack([np.asarray(image[y:y + 1, :])[0, ::s] for y in range(0, h, s)])


class GlassBalanced(ImageWrapper):
    """``image`` (an (H, W, 3) uint8 image-like) with each channel multiplied by ``gains``, read
    tile by tile: slicing returns ``clip(round(crop * gains), 0, 255)`` as uint8. Other attributes
    (a SlideArray's ``read_s``) are the image's."""

    def __init__(self, image: Any, gains: np.ndarray):
        super().__init__(image, dtype=np.uint8)
        self.gains = np.asarray(gains, np.float32).reshape(1, 1, -1)
        # one table of 256 values per channel: clip(round(v * gain)) for every uint8 v
        levels = np.arange(256, dtype=np.float32)[:, None] * self.gains.reshape(1, -1)
        self._lut = np.clip(np.rint(levels), 0, 255).astype(np.uint8).T.copy()  # (C, 256)

    def __getitem__(self, key: Any) -> np.ndarray:
        crop = np.asarray(self.image[key])
        out = np.empty(crop.shape, np.uint8)
        for c in range(crop.shape[-1]):
            out[..., c] = self._lut[c][crop[..., c]]
        return out

    def __repr__(self) -> str:
        return f"GlassBalanced({self.image!r}, gains={self.gains.ravel().round(4).tolist()})"


def model_glass_white(model: Any) -> float:
    """The ``glass_white`` a model declares (its ``config``, through DDP's ``module``); 0 if none."""
    inner = getattr(model, "module", model)
    cfg = getattr(inner, "config", None)
    return float(getattr(cfg, "glass_white", 0.0) or 0.0)


def balance_for(model: Any, image: Any) -> Any:
    """``image`` as ``model`` reads it: glass-balanced when the model declares ``glass_white``
    (NOTE [Glass balance]), else ``image`` itself.

    Raises:
        InputError: the model balances its glass and the image is not uint8 RGB.
    """
    white = model_glass_white(model)
    if white <= 0 or isinstance(image, GlassBalanced):
        return image
    dtype = np.dtype(getattr(image, "dtype", np.uint8))
    shape = tuple(getattr(image, "shape", ()))
    if dtype != np.uint8 or len(shape) != 3 or shape[2] != 3:
        raise InputError(
            f"this model balances its input's glass (glass_white {white:g}) and takes (H, W, 3) uint8 RGB images; "
            f"got dtype {dtype} and shape {shape}: convert the image to 8-bit RGB"
        )
    gains = glass_gains(image, white)
    if np.all(gains == 1.0):
        return image
    return GlassBalanced(image, gains)
