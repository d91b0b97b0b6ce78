"""The component filter: a second look at each piece of a predicted tissue mask (NOTE [Component filter]).

A tissue model decides pixel by pixel from what it sees within its receptive field. Some
pieces of glass debris (a grey smear, a smudge, pen on glass) come out as whole connected
components of the mask. ``ComponentFilter`` scores each 8-connected component of the mask from
eleven statistics of the component and the band around it (``FEATURES``), with a logistic
regression fitted on synthetic slides (``scripts/tissue_model/component_filter.py``), and drops
the components it scores as not tissue: their probabilities are capped just below the
threshold, so the mask, the probabilities, the GeoJSON and the overlay agree.

``component_features`` reads the image and the probabilities in bands of rows, so its memory is
the mask and its labels (5 bytes per grid pixel) and a band per thread, whatever the slide's size.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["FEATURES", "ComponentFilter", "component_features", "apply_component_filter"]

#: The statistics of a component that the filter weighs, in this order (NOTE [Component filter]).
FEATURES = ("log_area", "p_mean", "p_high", "od", "hue_abs", "hue_rel", "saturation", "texture", "contrast", "fill",
            "ring_texture")

_RING = 6  # the band around a component: background pixels within this many pixels (a square)
_SIGMA = 1.5  # texture: |OD - OD blurred by a Gaussian of this sigma|
_HALO = 8  # rows read beyond a band: the Gaussian's radius (int(4 sigma + 0.5) = 6) and the ring's
_HIGH = 230  # p_high: the share of a component's pixels with round(255 p) >= this (p >= 0.9)
_BAND = 512  # rows per band
#: How many dropped pieces ``apply_component_filter`` lists (the largest).
MAX_LISTED = 100


# NOTE [Component filter]
# Features of component C of the mask {round(255 p) >= thr} (8-connected), on the image as the
# model reads it (glass-balanced for a model that balances), OD_c = max(0, -log10((v_c + 1) /
# (g_c + 1))) with g the glass colour (gigaseg.glass.glass_colour; 250 when none is found), OD its
# mean over the three channels, T = |OD - gaussian(OD, 1.5)| (scipy, mode reflect) and R the ring:
# pixels outside the mask whose 13 x 13 box holds C (the largest label when it holds several).
#   log_area    log10 of C's pixels
#   p_mean      mean p over C;  p_high  share of C with round(255 p) >= 230
#   od          mean OD over C;  hue_abs  max_c - min_c of C's mean OD_c;  hue_rel  hue_abs / (od + 0.01)
#   saturation  mean (max - min) / max of the RGB values over C
#   texture     log((mean T over C + 1e-4) / (T_glass + 1e-4)), T_glass the median T over every 4th
#               row and column of the pixels with no component within 6 pixels (1e-3 if none)
#   contrast    od - mean OD over R (0 over an empty ring)
#   fill        C's pixels / the area of its bounding box
#   ring_texture  log((mean T over R + 1e-4) / (T_glass + 1e-4)) (T_glass over an empty ring)
# The filter keeps C when bias + coef . ((f - mean) / scale) > 0. Fitted on the 8-connected
# components of the built-in model's masks of 320 synthetic slides (profile "all", a third degraded),
# each labelled tissue when most of its pixels are, with the tissue class weighted so that no tissue
# component larger than (100 um)^2 of 160 validation slides was dropped
# (results/tissue-model/README.md, "Stage 16").


@dataclass(frozen=True)
class ComponentFilter:
    """A logistic regression over ``FEATURES`` that keeps a component when its score is > 0.

    Attributes:
        mean, scale: per-feature centring and scaling.
        coef: per-feature weights; ``bias`` the intercept.
        threshold: the model threshold the filter was fitted at (informational).
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    bias: float
    threshold: float = 0.5

    def __post_init__(self) -> None:
        n = len(FEATURES)
        for name in ("mean", "scale", "coef"):
            v = getattr(self, name)
            if len(v) != n or not all(math.isfinite(float(x)) for x in v):
                raise ConfigError(f"component filter {name} must hold {n} finite numbers (one per feature: "
                                  f"{', '.join(FEATURES)}), got {v!r}")
        if not all(float(s) > 0 for s in self.scale):
            raise ConfigError(f"component filter scale must be positive, got {self.scale!r}")
        if not math.isfinite(float(self.bias)):
            raise ConfigError(f"component filter bias must be a finite number, got {self.bias!r}")

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The logit of "tissue" of each row of ``features`` ((n, len(FEATURES)))."""
        f = np.asarray(features, np.float64).reshape(-1, len(FEATURES))
        z = (f - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.asarray(z @ np.asarray(self.coef) + float(self.bias), np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "mean": [float(x) for x in self.mean],
                "scale": [float(x) for x in self.scale], "coef": [float(x) for x in self.coef],
                "bias": float(self.bias), "threshold": float(self.threshold)}

    @classmethod
    def from_dict(cls, d: Any) -> ComponentFilter:
        """The filter a weights file or checkpoint stores (``to_dict``).

        Raises:
            ConfigError: ``d`` is not such a dict, or names other features than ``FEATURES``.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a component filter is a dict of features, mean, scale, coef and bias, got "
                              f"{type(d).__name__}")
        if list(d.get("features", [])) != list(FEATURES):
            raise ConfigError(f"the component filter was fitted on the features {d.get('features')!r}; this gigaseg "
                              f"computes {list(FEATURES)}")
        try:
            return cls(mean=tuple(float(x) for x in d["mean"]), scale=tuple(float(x) for x in d["scale"]),
                       coef=tuple(float(x) for x in d["coef"]), bias=float(d["bias"]),
                       threshold=float(d.get("threshold", 0.5)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the component filter is damaged ({type(exc).__name__}: {exc})") from exc


def od_tables(glass: Any) -> np.ndarray:
    """(3, 256) float32: the optical density max(0, -log10((v + 1) / (g + 1))) of every uint8 value v
    per channel against the glass colour g (250 in each channel when ``glass`` is None or not 3 values)."""
    g = np.full(3, 250.0) if glass is None or np.shape(glass) != (3,) else np.asarray(glass, np.float64)
    v = np.arange(256, dtype=np.float64)
    return np.stack([np.maximum(-np.log10((v + 1.0) / (g[c] + 1.0)), 0.0) for c in range(3)]).astype(np.float32)


def component_features(image: Any, prob: Any, thr_u8: int, *, band: int = _BAND,
                       workers: int = 2) -> tuple[np.ndarray, int, np.ndarray]:
    """``(labels, n, features)``: the 8-connected components of ``prob >= thr_u8`` (int32 labels
    1..n, 0 background) and their ``FEATURES`` ((n, 11) float64; NOTE [Component filter]).

    ``image`` is the (H, W, 3) uint8 image the model read (an array or an array-like that slices,
    such as a ``SlideArray``), ``prob`` the (H, W) uint8 round(255 p) (an array or memmap). Both
    are read in bands of ``band`` rows, by ``workers`` threads; the result does not depend on either
    (floating-point summation order aside).
    """
    from scipy import ndimage as ndi

    from .glass import glass_colour

    h, w = prob.shape[:2]
    if tuple(image.shape[:2]) != (h, w):
        raise ConfigError(f"image {tuple(image.shape[:2])} and probabilities {(h, w)} differ in size")
    mask = np.empty((h, w), bool)
    for y in range(0, h, band):
        mask[y:y + band] = np.asarray(prob[y:y + band]) >= thr_u8
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    labels = labels.astype(np.int32, copy=False)
    if n == 0:
        return labels, 0, np.zeros((0, len(FEATURES)))
    lut = od_tables(glass_colour(image))  # OD of each uint8 value per channel, looked up
    m = n + 1
    keys = ("area", "p", "high", "od0", "od1", "od2", "sat", "tex", "ring", "ring_od", "ring_tex")

    def one_band(y0: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        y1 = min(h, y0 + band)
        a0, a1 = max(0, y0 - _HALO), min(h, y1 + _HALO)
        core = slice(y0 - a0, y1 - a0)
        rgb = np.asarray(image[a0:a1, 0:w])
        od = [lut[c][rgb[..., c]] for c in range(3)]
        odm = (od[0] + od[1] + od[2]) / 3
        tex = np.abs(odm - ndi.gaussian_filter(odm, _SIGMA))[core].ravel()
        near = ndi.maximum_filter(labels[a0:a1], size=2 * _RING + 1)[core].ravel()
        lab = labels[y0:y1].ravel()
        inside = np.flatnonzero(lab)
        li = lab[inside]
        sums: dict[str, np.ndarray] = {}

        def add(key: str, weights: Any, by: np.ndarray = li) -> None:
            sums[key] = np.bincount(by, weights=weights, minlength=m)[:m]

        p = np.asarray(prob[y0:y1]).ravel()[inside]
        add("area", None)
        add("p", p / 255.0)
        add("high", (p >= _HIGH).astype(np.float64))
        chans = [rgb[core][..., c].ravel()[inside] for c in range(3)]
        for c in range(3):
            add(f"od{c}", lut[c][chans[c]])
        mx = np.maximum(np.maximum(chans[0], chans[1]), chans[2]).astype(np.float32)
        mn = np.minimum(np.minimum(chans[0], chans[1]), chans[2]).astype(np.float32)
        add("sat", (mx - mn) / np.maximum(mx, 1))
        add("tex", tex[inside])
        ring = np.flatnonzero((lab == 0) & (near > 0))
        rl = near[ring]
        add("ring", None, rl)
        add("ring_od", odm[core].ravel()[ring], rl)
        add("ring_tex", tex[ring], rl)
        rows = np.arange(y0, y1) % 4 == 0
        t2, n2 = tex.reshape(y1 - y0, w)[rows, ::4], near.reshape(y1 - y0, w)[rows, ::4]
        return sums, t2[n2 == 0]

    acc = {k: np.zeros(m) for k in keys}
    glass_tex: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # numpy and scipy release the GIL
        for sums, sample in pool.map(one_band, range(0, h, band)):
            for k in keys:
                acc[k] += sums[k]
            glass_tex.append(sample)
    gt = np.concatenate(glass_tex) if glass_tex else np.zeros(0)
    t_glass = float(np.median(gt)) if gt.size else 1e-3
    s = slice(1, m)
    area = acc["area"][s]
    odc = np.stack([acc[f"od{c}"][s] / area for c in range(3)], axis=1)
    od_mean = odc.mean(axis=1)
    hue_abs = odc.max(axis=1) - odc.min(axis=1)
    ring_n = acc["ring"][s]
    with np.errstate(invalid="ignore", divide="ignore"):
        ring_od = np.where(ring_n > 0, acc["ring_od"][s] / ring_n, 0.0)
        ring_tex = np.where(ring_n > 0, acc["ring_tex"][s] / ring_n, t_glass)
    boxes = ndi.find_objects(labels)
    fill = np.array([area[i] / ((b[0].stop - b[0].start) * (b[1].stop - b[1].start)) for i, b in enumerate(boxes)])
    feats = np.stack([
        np.log10(area), acc["p"][s] / area, acc["high"][s] / area, od_mean, hue_abs, hue_abs / (od_mean + 0.01),
        acc["sat"][s] / area, np.log((acc["tex"][s] / area + 1e-4) / (t_glass + 1e-4)), od_mean - ring_od, fill,
        np.log((ring_tex + 1e-4) / (t_glass + 1e-4)),
    ], axis=1)
    return labels, n, feats


def apply_component_filter(image: Any, prob: Any, thr_u8: int, filt: ComponentFilter, *,
                           band: int = _BAND, workers: int = 2,
                           specks: tuple[float, float] | None = None) -> dict[str, Any]:
    """Drop the components of ``prob >= thr_u8`` that ``filt`` scores as not tissue, in place: their
    pixels' ``prob`` become ``min(prob, thr_u8 - 1)``. ``prob`` is a writable (H, W) uint8 array or
    memmap; ``image`` as in ``component_features``. Nothing changes when ``thr_u8`` is 0 (every
    pixel is tissue). With ``specks`` ``(min_pixels, reach)``, the specks among the components kept
    are dropped too, as ``gigaseg.holes.drop_specks`` would after the filter (NOTE [Specks]), from the
    same labels.

    Returns:
        ``{"components": n, "dropped": k, "dropped_pixels": pixels, "dropped_pieces": [...], "boxes":
        [...]}``: ``dropped_pieces`` the largest ``MAX_LISTED`` dropped pieces, largest first, each
        ``{"box": [y0, x0, y1, x1], "pixels": area}`` on the grid (rows and columns, ends excluded);
        ``boxes`` every dropped piece's ``(y0, x0, y1, x1)`` (what changed, for ``patch_mask_tiff``); with
        ``specks``, ``specks``: ``drop_specks``'s result for the components kept.
    """
    nothing: dict[str, Any] = {"dropped": 0, "dropped_pixels": 0, "dropped_pieces": [], "boxes": []}
    no_specks = {"specks": {"pieces": 0, "dropped": 0, "dropped_pixels": 0, "boxes": []}} if specks else {}
    if thr_u8 <= 0:  # the whole grid is one component of tissue
        return {"components": 1, **nothing, **no_specks}
    labels, n, feats = component_features(image, prob, thr_u8, band=band, workers=workers)
    if n == 0:
        return {"components": 0, **nothing, **no_specks}
    from scipy import ndimage as ndi

    drop = np.zeros(n + 1, bool)
    drop[1:] = filt.scores(feats) <= 0
    areas = np.rint(10.0 ** feats[:, 0]).astype(np.int64)
    speck = np.zeros(n + 1, bool)
    boxes = ndi.find_objects(labels, max_label=n) if specks or drop.any() else []
    if specks:
        from .holes import find_specks

        speck[find_specks(labels, boxes, np.concatenate([[0], areas]), ~drop, *specks)] = True
    pixels = 0
    pieces: list[dict[str, Any]] = []
    changed: list[tuple[int, int, int, int]] = []
    speck_boxes: list[tuple[int, int, int, int]] = []
    if drop.any() or speck.any():
        for i in sorted(np.flatnonzero(drop[1:]), key=lambda i: -areas[i])[:MAX_LISTED]:
            b = boxes[i]
            pieces.append({"box": [b[0].start, b[1].start, b[0].stop, b[1].stop], "pixels": int(areas[i])})
        changed = [(b[0].start, b[1].start, b[0].stop, b[1].stop) for b in (boxes[i] for i in np.flatnonzero(drop[1:]))]
        speck_boxes = [(b[0].start, b[1].start, b[0].stop, b[1].stop)
                       for b in (boxes[i] for i in np.flatnonzero(speck[1:]))]
        cap = np.uint8(thr_u8 - 1)
        gone = drop | speck
        for y in range(0, prob.shape[0], band):
            hit = gone[labels[y:y + band]]
            if hit.any():
                part = np.asarray(prob[y:y + band])
                part[hit] = np.minimum(part[hit], cap)
                prob[y:y + band] = part
        pixels = int(areas[drop[1:]].sum())
    out = {"components": int(n), "dropped": int(drop.sum()), "dropped_pixels": pixels, "dropped_pieces": pieces,
           "boxes": changed}
    if specks:
        out["specks"] = {"pieces": int(n - drop.sum()), "dropped": len(speck_boxes),
                         "dropped_pixels": int(areas[speck[1:]].sum()), "boxes": speck_boxes}
    return out
