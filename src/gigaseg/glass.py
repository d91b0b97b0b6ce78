"""Glass balance: a model's input brightened so that its glass is white (NOTE [Glass balance]).

A ``UNetConfig`` with ``glass_white`` > 0 declares it; the engine (``tiled_predict``,
``iter_predict``, ``tiled_backward``) then applies it to every image the model is given, in
prediction, validation and training alike, so a model is always trained and used on the same
inputs. ``glass_gains`` is the per-image statistic; ``GlassBalanced`` the balanced image.
``seam_field`` finds a scanner's tiles or stripes of darker or tinted glass, which the balance
then evens out in prediction (NOTE [Seam correction]).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._imagelike import ImageWrapper
from .errors import InputError
from .slides.base import Slide

#: Pixels the glass estimate looks at, at most (the image read coarser: NOTE [Glass sample]).
SAMPLE_PIXELS = 2**18
#: Pixels at least this bright (mean of R, G, B) can be glass; darker ones (out-of-scan padding,
#: pen, dark tissue) never are.
MIN_GLASS_LEVEL = 40.0
#: The brightest share of those pixels is taken as the glass.
GLASS_SHARE = 0.10
#: Largest gain per channel: glass darker than white / MAX_GAIN is brightened only that far.
MAX_GAIN = 1.8
#: An estimate tinted more than this off the blue-yellow line along which a scanner's white balance
#: moves glass (|ln G - (ln R + ln B) / 2|, green or magenta) is not glass but pale tissue (an image
#: with no glass: eosin, PAS): the image is left as it is. 0.16 = ln(1 / 0.85): a pure green or magenta
#: tint is limited as any colour was before (15% of the brightest channel).
MAX_TINT = 0.16

#: Pixels the seam search looks at, at most (an area-mean sample of the image).
SEAM_SAMPLE_PIXELS = 2**20
#: Pixels of that sample on each side of a candidate seam whose mean brightness is compared.
SEAM_WINDOW = 3
#: Smallest step of log brightness across a seam (about 0.6%), and how many times the image's
#: typical step a seam must be.
SEAM_MIN_STEP = 0.006
SEAM_NOISE_FACTOR = 3.0
#: A seam needs glass on both sides in at least this share of the rows, and lies at least SEAM_BORDER
#: sample pixels inside the image (resampling leaves steps at an image's edges).
SEAM_GLASS_ROWS = 0.25
SEAM_BORDER = 2 * SEAM_WINDOW
#: A sample narrower than this (pixels) is not searched: too little glass to tell a seam from an edge.
SEAM_MIN_SIDE = 128
#: Glass for the seam search: within this band of the glass level, at most this coloured.
SEAM_GLASS_BAND = (0.9, 1.1)
SEAM_GLASS_CHROMA = 0.08
#: An image whose pixels brighter than MIN_GLASS_LEVEL are more than this share saturated (255 in
#: every channel) is not searched: its glass is clipped.
SEAM_MAX_SATURATED = 0.5
#: Largest correction of a tile (gains in 1 -/+ this), and smaller ones that are not applied.
SEAM_MAX_CORRECTION = 0.07
SEAM_MIN_CORRECTION = 0.005

# NOTE [Glass balance]
# Scanners differ in exposure and white balance, and slides in the glass itself: the same section
# reads with glass at 250 on one scanner and 225, or bluish, on another. A model trained on slides
# whose glass is mostly white reads dark or tinted glass as faint tissue (the built-in model on
# CMU-1-Small-Region with its RGB scaled by 0.9: Dice 0.958 -> 0.930; results/tissue-model/README.md,
# "Glass balance"). So a model may declare ``glass_white`` W: before the model, each channel of the
# image is multiplied by gain_c = clip(W / g_c, 1, MAX_GAIN), where g is the image's glass colour,
# and rounded back to uint8 (clipped at 255). g is the per-channel median of the brightest
# GLASS_SHARE of the pixels brighter than MIN_GLASS_LEVEL, over a sample of at most SAMPLE_PIXELS:
# the image read s times coarser, area-averaged (a slide from its pyramid, any other image as a
# one-level slide would be: NOTE [Glass sample]). Gains are never below 1: glass
# at W or brighter is left as it is, so white slides are read exactly as before. An estimate tinted
# green or magenta by more than MAX_TINT (|ln g_G - (ln g_R + ln g_B) / 2|) is pale tissue, not
# glass (an image that is all tissue: eosin, PAS), and the image is left as it is. Blue and yellow
# are not limited: that is the way a scanner's white balance moves glass, and tinted glass read
# through a warm white balance is as yellow as pale tissue is pink (held-out synthetic slides with
# a warm white balance: 0.885 with a limit on all colour, 15% of max - min over max, and 0.931
# with this one; results/tissue-model/README.md, "Stage 19"). The statistic is of the whole image,
# so it is computed once per image before the tiles; each tile is then balanced pixel by pixel,
# which keeps the tiled engine exact: the balanced image gives the same tiles whatever the tiling.
# In training the gains come from the stored region (before its flip or rotation, which do not
# change them, and before colour jitter).

# NOTE [Seam correction]
# Scanners image a slide tile by tile or stripe by stripe, and their tiles often differ in
# brightness or tint by a few percent: straight seams across the whole slide. The built-in model
# called whole tiles of darker glass tissue (most of its false tissue on the held-out synthetic
# slides; results/tissue-model/README.md, "Where the errors are" and "Stage 17"). So prediction
# evens them out before the glass balance. The search looks at the image area-averaged s x s to at
# most SEAM_SAMPLE_PIXELS (a slide: its grid read s times coarser from the pyramid, and never finer
# than its level 0, so that an enlarged thumbnail's interpolation is not searched); a sample less
# than SEAM_MIN_SIDE on a side is not searched. Glass there is a pixel within SEAM_GLASS_BAND of the
# glass level (the median of the brightest GLASS_SHARE of the pixels brighter than MIN_GLASS_LEVEL,
# saturated ones left out), no more coloured than SEAM_GLASS_CHROMA once each channel is divided by
# the glass colour (the median colour of those brightest pixels: tinted glass and a scanner's white
# balance are glass too; results: "Stage 19") and not saturated. For every
# column boundary at least SEAM_BORDER inside the sample, the step is |mean log brightness of the
# SEAM_WINDOW columns right of it - of those left of it| in each row where all 2 * SEAM_WINDOW
# pixels are glass; its median over those rows (at least 20 and SEAM_GLASS_ROWS of the rows) is the
# boundary's score. A seam is a local maximum of the score (within SEAM_WINDOW) at least
# SEAM_MIN_STEP and SEAM_NOISE_FACTOR times the median score; rows likewise. Seams cut the image into
# cells. Each cell with glass (at least 20 pixels and 5% of it) gets the median colour of its
# brighter half of glass pixels; its correction is the reference cell's colour / its own, per
# channel, clipped to 1 -/+ SEAM_MAX_CORRECTION, where the reference is the cell with the most
# glass (corrected by exactly 1); corrections within SEAM_MIN_CORRECTION of 1 are 1, and cells
# without glass are left as they are. So an image without seams changes no pixel. The balance's
# glass colour is then taken from the sample with the corrections applied, and each cell's pixels
# are multiplied by its correction times the balance's gains, rounded once: tiles read alike
# whatever the tiling, in every orientation (the seams turned with the image). A seam is placed to
# the sample's pixel, so on a coarse sample the s - 1 image columns nearest it may take the
# neighbouring cell's correction. Straight edges that are not seams can be taken for them: a
# coverslip's edge (whose outside glass does differ), a long straight edge of tissue. Their cells
# are corrected by at most SEAM_MAX_CORRECTION, which can move faint tissue near the threshold
# (results: "Stage 17"). The correction is made in prediction (tiled_predict, iter_predict,
# predict_slide) and not in training (tiled_backward), whose views are turned after the statistic:
# models are trained on seams as they come.


def glass_colour(image: Any, seams: SeamField | None = None) -> np.ndarray | None:
    """The glass colour (R, G, B) of an (H, W, 3) uint8 image-like (NOTE [Glass balance]), of the
    image with ``seams`` corrected when given; None when it has no pixel bright enough to be glass."""
    sample, s = _sample(image)
    f = sample.astype(np.float32)
    if seams is not None:  # each sample pixel (i, j) is the image's (i * s, j * s)
        f *= seams.factors_at(np.arange(f.shape[0]) * s, np.arange(f.shape[1]) * s)
    f = f.reshape(-1, f.shape[-1])
    lum = f.mean(1)
    f, lum = f[lum > MIN_GLASS_LEVEL], lum[lum > MIN_GLASS_LEVEL]
    if lum.size == 0:
        return None
    cut = np.percentile(lum, 100.0 * (1.0 - GLASS_SHARE))
    return np.median(f[lum >= cut], axis=0)


def glass_gains(image: Any, white: float, seams: SeamField | None = None) -> np.ndarray:
    """Per-channel gains (float32, (3,)) that bring the glass of ``image`` (its ``seams`` corrected,
    when given) to ``white`` (NOTE [Glass balance]); all 1 when the glass is already that bright or
    no glass is found."""
    return _gains(glass_colour(image, seams), white)


def _gains(g: np.ndarray | None, white: float) -> np.ndarray:
    """``glass_gains`` of an image whose glass colour is ``g``."""
    ones = np.ones(3, np.float32)
    if g is None or g.shape != (3,):
        return ones
    if g.min() <= 0 or abs(_tint(g)) > MAX_TINT:
        return ones
    return np.clip(float(white) / np.maximum(g, 1.0), 1.0, MAX_GAIN).astype(np.float32)


def _tint(colour: np.ndarray) -> float:
    """Green (> 0) or magenta (< 0) of an RGB colour, off the blue-yellow line: ln G - (ln R + ln B) / 2."""
    r, g, b = (math.log(float(c)) for c in colour)
    return g - (r + b) / 2


def _training_view(image: Any) -> Any:
    """A training view's stored region (before its flips and jitter), None for any other image. A
    RegionView exists only once gigaseg.dataset is imported; prediction does not import it (0.2 s of
    start-up)."""
    dataset = sys.modules.get(f"{__package__}.dataset")
    if dataset is not None and isinstance(image, dataset.RegionView):
        return image.base
    return None


def _coarse_slide(image: Any, s: int) -> np.ndarray:
    """A SlideArray's grid read ``s`` times coarser from its pyramid; any other image read ``s`` times coarser
    as a one-level slide of it would be (NOTE [Glass sample])."""
    from .slides import SlideArray

    slide = getattr(image, "slide", None)
    if slide is None or not hasattr(image, "mpp"):
        return np.asarray(SlideArray(_OneLevel(image), (float(s), float(s)))[:, :])
    mpp = image.mpp if isinstance(image.mpp, tuple) else (image.mpp, image.mpp)
    return np.asarray(SlideArray(slide, (mpp[0] * s, mpp[1] * s))[:, :])


# NOTE [Glass sample]
# The glass balance and the seam correction measure an image on a coarse sample of it. A slide's
# grid is sampled by reading its pyramid s times coarser (area-averaged by Pillow's BOX filter in
# Slide.read_region_at_mpp). Any other image (an array, a memmap, a training view) is sampled the
# same way, as a one-level slide of 1 um/px read at s um/px: so an image and the same pixels saved
# as a PNG and given to `gigaseg predict` are balanced alike, to the bit, and so are a slide and
# its training regions. (Until 2026-12-06 an array was sampled by taking every s-th pixel, and
# real_slides_eval.py's in-memory scores differed from the product's by a few pixels per slide.)
class _OneLevel(Slide):
    """An (H, W, 3) uint8 image-like as a one-level slide of 1 um/px (NOTE [Glass sample]); read in boxes."""

    backend = "array"

    def __init__(self, image: Any) -> None:
        h, w = (int(v) for v in image.shape[:2])
        super().__init__("<image>", [(w, h)], mpp=(1.0, 1.0))
        self._image = image

    def _read_level(self, level: int, lvl_x: int, lvl_y: int, lvl_w: int, lvl_h: int) -> np.ndarray:
        return np.asarray(self._image[lvl_y:lvl_y + lvl_h, lvl_x:lvl_x + lvl_w])

    def _close(self) -> None:
        self._image = None


def _sample(image: Any) -> tuple[np.ndarray, int]:
    """``image`` read s times coarser to at most about ``SAMPLE_PIXELS`` pixels (NOTE [Glass sample]), and s."""
    if isinstance(image, GlassBalanced):
        image = image.image
    base = _training_view(image)  # a training view: its stored region
    image = image if base is None else base
    h, w = (int(v) for v in image.shape[:2])
    s = max(1, math.ceil(math.sqrt(h * w / SAMPLE_PIXELS)))
    if s == 1:
        return np.asarray(image[:, :]), s
    return _coarse_slide(image, s), s  # NOTE [Glass sample]


def _mean_sample(image: Any, pixels: int) -> tuple[np.ndarray, int]:
    """``image`` read s times coarser (area-averaged, NOTE [Glass sample]) to at most about ``pixels``
    pixels (float32), and s; a slide's grid never finer than the slide's level 0 (an enlarged
    thumbnail's seams would be the enlargement's)."""
    h, w = (int(v) for v in image.shape[:2])
    s = max(1, math.ceil(math.sqrt(h * w / pixels)))
    level0 = getattr(getattr(image, "slide", None), "mpp", None)
    if level0 and hasattr(image, "mpp"):  # a slide enlarged to the grid: its own pixels, no finer
        s = max(s, round(min(level0) / min(np.atleast_1d(image.mpp))))
    if s > 1:
        return _coarse_slide(image, s).astype(np.float32), s  # NOTE [Glass sample]
    return np.asarray(image[:, :], np.float32), s  # at most ``pixels`` pixels: one read


@dataclass(frozen=True, eq=False)
class SeamField:
    """A scanner's tiles (NOTE [Seam correction]): the rows ``ys`` and columns ``xs`` where seams lie
    (sorted, each the first row or column past its seam) and each cell's correction per channel,
    ``factors`` (len(ys) + 1, len(xs) + 1, 3), float32."""

    ys: tuple[int, ...]
    xs: tuple[int, ...]
    factors: np.ndarray

    def factors_at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The corrections (len(rows), len(cols), 3) at those rows and columns of the image."""
        cy = np.searchsorted(np.asarray(self.ys, np.int64), rows, side="right")
        cx = np.searchsorted(np.asarray(self.xs, np.int64), cols, side="right")
        return self.factors[cy[:, None], cx[None, :]]

    def oriented(self, shape: tuple[int, int], transpose: bool, flip_rows: bool, flip_cols: bool) -> SeamField:
        """The same field on the image of ``shape`` (rows, columns) seen transposed, then with its
        rows and columns reversed as asked (an ``Orientation``'s view)."""
        h, w = shape
        ys, xs, f = self.ys, self.xs, self.factors
        if transpose:
            ys, xs, f, h, w = xs, ys, f.swapaxes(0, 1), w, h
        if flip_rows:
            ys, f = tuple(h - y for y in reversed(ys)), f[::-1]
        if flip_cols:
            xs, f = tuple(w - x for x in reversed(xs)), f[:, ::-1]
        return SeamField(ys, xs, np.ascontiguousarray(f))

    def summary(self) -> dict[str, Any]:
        """Seams and the corrections' range, for a summary."""
        return {"rows": list(self.ys), "columns": list(self.xs),
                "correction_range": [round(float(self.factors.min()), 4), round(float(self.factors.max()), 4)]}


def _seam_lines(log_lum: np.ndarray, glass: np.ndarray) -> list[int]:
    """The sample's column boundaries b (between columns b - 1 and b) where a seam lies (NOTE [Seam
    correction])."""
    h, w = log_lum.shape
    win = SEAM_WINDOW
    if w <= 2 * win:
        return []
    b = np.arange(win, w - win + 1)
    cols = [slice(k, w - 2 * win + 1 + k) for k in range(2 * win)]  # column b - win + k for every b
    step = np.abs(sum(log_lum[:, c] for c in cols[win:]) - sum(log_lum[:, c] for c in cols[:win])) / win
    ok = glass[:, cols[0]].copy()
    for c in cols[1:]:
        ok &= glass[:, c]
    n = ok.sum(0)
    score = np.zeros(b.size)
    enough = (n >= max(20, SEAM_GLASS_ROWS * h)) & (b >= SEAM_BORDER) & (b <= w - SEAM_BORDER)
    if not enough.any():
        return []
    # the median of each column's glass rows: sorted with the others (inf) last, the middle of the first n
    ranked = np.sort(np.where(ok, step, np.inf)[:, enough], axis=0)
    m = n[enough]
    at = np.arange(m.size)
    score[enough] = 0.5 * (ranked[(m - 1) // 2, at] + ranked[m // 2, at])
    typical = float(np.median(score[score > 0])) if (score > 0).any() else 0.0
    peak = _running_max(score, 2 * win + 1)
    return b[(score >= max(SEAM_MIN_STEP, SEAM_NOISE_FACTOR * typical)) & (score == peak)].tolist()


def _running_max(v: np.ndarray, size: int) -> np.ndarray:
    """The running maximum of ``v`` over ``size`` neighbours (edges repeated)."""
    half = size // 2
    padded = np.pad(v, half, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, size).max(1)


def seam_field(image: Any) -> SeamField | None:
    """The tiles of darker or tinted glass in an (H, W, 3) uint8 image-like and their corrections
    (NOTE [Seam correction]); None when it has no seam, or is a training view."""
    if isinstance(image, GlassBalanced):
        image = image.image
    if _training_view(image) is not None:
        return None
    sample, s = _mean_sample(image, SEAM_SAMPLE_PIXELS)
    if min(sample.shape[:2]) < SEAM_MIN_SIDE:
        return None
    r, g, b = (np.ascontiguousarray(sample[..., c]) for c in range(3))
    lum = (r + g + b) / np.float32(3)
    bright = lum > MIN_GLASS_LEVEL
    # saturated pixels (white padding, clipped glass) are no guide
    lit = bright & (np.minimum(np.minimum(r, g), b) < 254.5)
    if lit.sum() < 100 or lit.sum() < (1.0 - SEAM_MAX_SATURATED) * bright.sum():
        return None  # mostly clipped: the glass that is left is its noise, not its level
    brightest = lit & (lum >= np.percentile(lum[lit], 100.0 * (1.0 - GLASS_SHARE)))
    level = float(np.median(lum[brightest]))
    # colour measured against the glass's own, so that tinted glass and a scanner's white balance count as glass
    tint = np.maximum(np.median(sample[brightest], axis=0), 1.0).astype(np.float32)
    r, g, b = r / tint[0], g / tint[1], b / tint[2]
    low, top = np.minimum(np.minimum(r, g), b), np.maximum(np.maximum(r, g), b)
    glass = (lit & (lum > SEAM_GLASS_BAND[0] * level) & (lum < SEAM_GLASS_BAND[1] * level)
             & ((top - low) <= SEAM_GLASS_CHROMA * np.maximum(top, 1e-6)))
    log_lum = np.log1p(lum)
    xs = _seam_lines(log_lum, glass)
    ys = _seam_lines(np.ascontiguousarray(log_lum.T), np.ascontiguousarray(glass.T))
    if not xs and not ys:
        return None
    by, bx = [0, *ys, lum.shape[0]], [0, *xs, lum.shape[1]]
    colours: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
    for i in range(len(by) - 1):
        for j in range(len(bx) - 1):
            cell = glass[by[i]:by[i + 1], bx[j]:bx[j + 1]]
            n = int(cell.sum())
            if n < max(20, 0.05 * cell.size):
                continue
            px = sample[by[i]:by[i + 1], bx[j]:bx[j + 1]][cell]
            brightness = px.mean(1)
            colours[i, j] = (n, np.median(px[brightness >= np.median(brightness)], 0))
    factors = np.ones((len(by) - 1, len(bx) - 1, 3), np.float32)
    if not colours:
        return None
    reference = max(colours.values(), key=lambda v: v[0])[1]
    for (i, j), (_, colour) in colours.items():
        f = np.clip(reference / np.maximum(colour, 1.0), 1.0 - SEAM_MAX_CORRECTION, 1.0 + SEAM_MAX_CORRECTION)
        f[np.abs(f - 1.0) < SEAM_MIN_CORRECTION] = 1.0
        factors[i, j] = f
    if np.all(factors == 1.0):
        return None
    return SeamField(tuple(int(y) * s for y in ys), tuple(int(x) * s for x in xs), factors)


class GlassBalanced(ImageWrapper):
    """``image`` (an (H, W, 3) uint8 image-like) with each channel multiplied by ``gains``, read
    tile by tile: slicing returns ``clip(round(crop * gains), 0, 255)`` as uint8; with ``seams``, each
    cell's pixels by its correction times ``gains`` (NOTE [Seam correction]), and then the image is
    read by slices only (``image[y0:y1, x0:x1]``, any steps). ``glass`` is the balanced image's glass
    colour when the balance was made from one (``balance_for``), else None. Other attributes (a
    SlideArray's ``read_s``) are the image's."""

    def __init__(self, image: Any, gains: np.ndarray, seams: SeamField | None = None, *,
                 glass: np.ndarray | None = None):
        super().__init__(image, dtype=np.uint8)
        self.gains = np.asarray(gains, np.float32).reshape(1, 1, -1)
        self.seams = seams
        self.glass = None if glass is None else np.clip(np.asarray(glass, np.float32).ravel() * self.gains.ravel(),
                                                        0, 255)
        # one table of 256 values per channel (and cell): clip(round(v * gain)) for every uint8 v
        self._identity = seams is None and bool(np.all(self.gains == 1.0))
        cells = self.gains if seams is None else seams.factors * self.gains
        levels = np.arange(256, dtype=np.float32)[:, None, None, None] * cells[None]
        self._luts = np.moveaxis(np.clip(np.rint(levels), 0, 255).astype(np.uint8), 0, -1).copy()  # (ny, nx, C, 256)

    def over(self, image: Any) -> GlassBalanced:
        """The same balance over another image of the same size (a record of what was read)."""
        balanced = GlassBalanced(image, self.gains, self.seams)
        balanced.glass = self.glass
        return balanced

    def __getitem__(self, key: Any) -> np.ndarray:
        crop = np.asarray(self.image[key])
        if self._identity:
            return crop
        out = np.empty(crop.shape, np.uint8)
        if self.seams is None:
            for c in range(crop.shape[-1]):
                out[..., c] = self._luts[0, 0, c][crop[..., c]]
            return out
        rows, cols = self._indices(key)
        for ys, cy in _runs(np.searchsorted(np.asarray(self.seams.ys, np.int64), rows, side="right")):
            for xs, cx in _runs(np.searchsorted(np.asarray(self.seams.xs, np.int64), cols, side="right")):
                block = crop[ys, xs]
                for c in range(crop.shape[-1]):
                    out[ys, xs, c] = self._luts[cy, cx, c][block[..., c]]
        return out

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(n, C) uint8: the balanced pixels at (``rows``, ``cols``), the image indexed by integer arrays
        (an array or a memmap: a record of what was read); the same values as slicing gives."""
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        px = np.asarray(self.image[rows, cols])
        if self._identity:
            return px
        cy = cx = np.zeros(rows.shape, np.int64)
        if self.seams is not None:
            cy = np.searchsorted(np.asarray(self.seams.ys, np.int64), rows, side="right")
            cx = np.searchsorted(np.asarray(self.seams.xs, np.int64), cols, side="right")
        out = np.empty(px.shape, np.uint8)
        for c in range(px.shape[-1]):
            out[..., c] = self._luts[cy, cx, c, px[..., c]]
        return out

    def _indices(self, key: Any) -> tuple[np.ndarray, np.ndarray]:
        """The image's rows and columns that ``image[key]`` reads."""
        parts = key if isinstance(key, tuple) else (key,)
        if len(parts) > 2 or not all(isinstance(k, slice) for k in parts):
            raise TypeError(f"an image with seam corrections is read by slices, image[y0:y1, x0:x1]; got {key!r}")
        parts = (*parts, slice(None))[:2]
        return np.arange(*parts[0].indices(self.shape[0])), np.arange(*parts[1].indices(self.shape[1]))

    def __repr__(self) -> str:
        seams = "" if self.seams is None else f", seams={len(self.seams.ys)} rows x {len(self.seams.xs)} columns"
        return f"GlassBalanced({self.image!r}, gains={self.gains.ravel().round(4).tolist()}{seams})"


def _runs(labels: np.ndarray) -> list[tuple[slice, int]]:
    """``labels`` cut into runs of one value: (the run's slice, its value)."""
    cuts = [0, *(np.flatnonzero(np.diff(labels)) + 1).tolist(), labels.size]
    return [(slice(a, b), int(labels[a])) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def model_glass_white(model: Any) -> float:
    """The ``glass_white`` a model declares (its ``config``, through DDP's ``module``); 0 if none."""
    inner = getattr(model, "module", model)
    cfg = getattr(inner, "config", None)
    return float(getattr(cfg, "glass_white", 0.0) or 0.0)


def read_glass(image: Any) -> np.ndarray | None:
    """The glass colour of ``image`` as a model reads it: the colour ``balance_for`` brought its glass
    to (a ``GlassBalanced`` it made), else ``glass_colour(image)``; None when there is no glass."""
    glass = getattr(image, "glass", None)
    return glass if glass is not None else glass_colour(image)


def balance_for(model: Any, image: Any, *, seams: bool = True) -> Any:
    """``image`` as ``model`` reads it: glass-balanced when the model declares ``glass_white``
    (NOTE [Glass balance]), with its scanner's seams corrected unless ``seams`` is False (NOTE [Seam
    correction]; never for a training view), else ``image`` itself.

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
    field = seam_field(image) if seams else None
    glass = glass_colour(image, field)
    gains = _gains(glass, white)
    if seams and field is None and np.all(gains == 1.0):
        return image  # nothing to do, and the engine's own call will find nothing either
    # seams=False: wrapped even with nothing to do, so that the engine does not search it again
    return GlassBalanced(image, gains, field, glass=glass)
