"""Rendering synthetic H&E slides: the layout drawn from a seed, and any window of it.

A virtual slide is defined by ``(seed, width, height, mpp)``. Any window of it can be
rendered on its own (:func:`render_region`), and a whole slide can be written as a
pyramidal, JPEG-compressed BigTIFF plus an exact mask (:func:`write_slide`).

    from gigaseg.synth import render_region, write_slide
    rgb, mask = render_region(0, 1000, 2000, 512, 512, width=64000, height=16000)
    write_slide("slide.tiff", width=64000, height=16000, seed=0)

Ground truth (docs/synth.md has the full definition): tissue is every stained
fragment, faint edges, folds and adipose cells included; background is glass, lumens
and tears (always wider than ``HOLE_MIN_UM``), dust and debris, pen ink, bubble
rims and out-of-scan areas. The mask is computed from the same geometry that draws
the pixels.

# NOTE [Determinism]
A pixel depends only on (seed, width, height, mpp) and its global position, never on
the window it is rendered in: the slide layout (fragments, folds, tears, pens, ...) is
drawn once from the seed; smooth fields are evaluated at points of a fixed global
lattice (step ``_STEP`` px) and bilinearly interpolated with exact power-of-two
weights; small objects (nuclei, lumens, dust) live in cells of fixed global grids keyed
by integer hashes of the cell index; textures are periodic tiles looked up by global
position (mod the period). Nothing needs a neighbourhood at render time: blur is
pre-applied to the textures. So a big window equals the mosaic of its sub-windows,
bit for bit, whatever the chunking or the number of threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from ..errors import ConfigError, InputError
from ..options import HOLE_CONVENTIONS
from . import _jpeg, _stains
from . import _noise as _nz
from . import _textures as _tx
from . import _variety as _vy

__all__ = [
    "clear_caches",
    "render_region",
    "SynthLayout",
    "make_layout",
    "render_labels",
    "LABELS",
    "HOLE_MIN_UM",
    "HOLE_CONVENTIONS",
    "check_holes",
    "TISSUE_CODES",
    "HOLE_LARGE_UM",
    "PROFILES",
    "CATEGORIES",
    "boosted_profile",
    "check_profile",
]

HOLE_MIN_UM = 30.0
"""Lumens and tears are at least this wide (um); texture gaps inside tissue are narrower."""

LABELS = {
    0: "glass",
    1: "tissue",
    2: "adipose cell (tissue)",
    3: "fold (tissue)",
    4: "faint edge (tissue)",
    5: "lumen or tear (background)",
    6: "pen ink (background)",
    7: "dust or debris (background)",
    8: "bubble rim (background)",
    9: "out of scan (background)",
    # the variety profile (profile != "he") also draws:
    10: "small hole (tissue)",
    11: "blood clot (tissue)",
    12: "pen ink over tissue (tissue)",
    13: "marking dye on tissue (tissue)",
    14: "marking dye on glass (background)",
    15: "coverslip edge on glass (background)",
    16: "black out-of-scan padding (background)",
    17: "bubble rim over tissue (tissue)",
    18: "dust over tissue (tissue)",
    19: "smudge on glass (background)",
    20: "fibre or hair on glass (background)",
    21: "smudge over tissue (tissue)",
    22: "fibre or hair over tissue (tissue)",
    23: "tissue strand (tissue)",
    24: "smear on glass (background)",
    25: "smear over tissue (tissue)",
}
"""Codes of :func:`render_labels`; ``TISSUE_CODES`` are tissue (mask 1), the others background."""

TISSUE_CODES = (1, 2, 3, 4, 10, 11, 12, 13, 17, 18, 21, 22, 23, 25)
"""The codes of :data:`LABELS` that the mask calls tissue (with ``holes="background"``)."""

HOLE_LARGE_UM = 100.0
"""Variety profile: holes inside tissue at least this wide are background, narrower ones tissue
(../shared/data/real/SOURCES.md); every hole is drawn clear of this width (docs/synth.md)."""

PROFILES = _vy.PROFILES
CATEGORIES = _vy.CATEGORIES
check_profile = _vy.check_profile
boosted_profile = _vy.boosted_profile

_HOLE_JITTER_UM = 8.0  # outline jitter of lumens and tears: +-4 um
_STEP = 8  # lattice spacing of smooth fields, px (a power of two)
_BLOCK_H = 256
_BLOCK_W = 1024

# Stain optical-density unit vectors (Ruifrok & Johnston 2001), RGB order.
# Fitted to CMU-1 (redder eosin than the textbook vectors) and normalised in _appearance.
_V_H = np.array([0.58, 0.72, 0.38])
_V_E = np.array([0.14, 0.88, 0.46])
_INK = {  # colour of dense ink on glass, RGB
    "blue": (45, 75, 160),
    "green": (50, 130, 85),
    "black": (45, 45, 55),
    "red": (185, 45, 60),
}


@dataclass(frozen=True)
class SynthLayout:
    """Slide-level geometry and appearance, drawn once from the seed.

    Coordinates are level-0 px, (x, y). Arrays have one row per object.

    Attributes:
        seed, width, height, mpp: the slide definition.
        frags: (n, 10) fragments: cx, cy, rx, ry, cos, sin, stain factor, 3 spare.
        frag_harm: (n, 4, 2) radial harmonics (cos, sin) of orders 2..5.
        tears: (n, 5) capsules x0, y0, x1, y1, radius (background holes).
        folds: (n, 6) capsules x0, y0, x1, y1, half width, strength.
        blurs: (n, 4) out-of-focus ellipses cx, cy, radius, strength.
        pens: list of (segments (m, 4), half width px, ink OD (3,)).
        bubbles: (n, 5) ellipses cx, cy, rx, ry, rim OD.
        oos: (n, 4) out-of-scan rectangles x0, y0, x1, y1.
        params: scalar appearance parameters (stain vectors, glass colour, ...).
        profile: "he" (the default generator) or a variety profile (``check_profile``).
        variety: the variety profile's per-slide draws (empty for "he"): ``names``, the slide's
            categories, and the settings of each (padding, coverslip, seams, jpeg, dye, ...).
    """

    seed: int
    width: int
    height: int
    mpp: float
    frags: np.ndarray
    frag_harm: np.ndarray
    tears: np.ndarray
    folds: np.ndarray
    blurs: np.ndarray
    pens: list = field(default_factory=list)
    bubbles: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    oos: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    params: dict = field(default_factory=dict)
    profile: str = "he"
    variety: dict = field(default_factory=dict)

    @property
    def categories(self) -> tuple[str, ...]:
        """The slide's categories (variety profile), in vocabulary order; () for "he"."""
        return tuple(self.variety.get("names", ()))

    def __hash__(self) -> int:  # identity: layouts are cached by their arguments
        return id(self)

    def __eq__(self, other) -> bool:
        return self is other


# ---------------------------------------------------------------------------- validation


def _check_geometry(width, height, mpp) -> None:
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"synth: {name}={v!r} is not an integer; give the slide size in level-0 pixels")
        if v <= 0:
            raise ConfigError(f"synth: {name}={v} must be a positive number of pixels")
        if v > 2**31 - 1:
            raise ConfigError(f"synth: {name}={v} is too large (at most {2**31 - 1} pixels)")
    if not isinstance(mpp, (int, float, np.floating)) or isinstance(mpp, bool) or not math.isfinite(mpp) or mpp <= 0:
        raise ConfigError(f"synth: mpp={mpp!r} must be a positive number of micrometres per pixel, e.g. 0.5")
    if mpp < 0.1 or mpp > 10:
        raise ConfigError(f"synth: mpp={mpp} is outside the supported range [0.1, 10] um/px")


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"synth: seed={seed!r} must be a non-negative integer")
    return int(seed)


# ---------------------------------------------------------------------------- layout


def make_layout(seed: int, width: int, height: int, mpp: float = 0.5, *, profile: str = "he") -> SynthLayout:
    """The slide layout defined by ``seed`` (cached; validated).

    ``profile``: "he" (default: the original H&E generator, unchanged), "all" or a comma-separated
    list of categories (:data:`CATEGORIES`): the variety profile (docs/synth.md).
    """
    seed = _check_seed(seed)
    _check_geometry(width, height, mpp)
    profile = check_profile(profile)
    return _layout_cached(seed, int(width), int(height), float(mpp), profile)


def clear_caches() -> None:
    """Drop the cached layouts and texture banks (up to 4 banks of ~100 MB each).

    Rendering stays correct without them; the next render of a slide rebuilds its bank. For a
    process that is done making data and goes on to other work (the demo, before training).
    """
    _layout_cached.cache_clear()
    _tx.texture_bank.cache_clear()
    _tx.clear_variety_caches()


@lru_cache(maxsize=16)
def _layout_cached(seed: int, width: int, height: int, mpp: float, profile: str = "he") -> SynthLayout:
    if profile == "he":
        return _layout_he(seed, width, height, mpp)
    return _layout_variety(seed, width, height, mpp, profile)


def _layout_he(seed: int, width: int, height: int, mpp: float) -> SynthLayout:
    rng = np.random.default_rng([seed, 0x5EED])
    um = 1.0 / mpp  # px per um
    long_x = width >= height
    long_len, short_len = (width, height) if long_x else (height, width)

    # Fragments: spread along the long axis, a few harmonics for an irregular outline.
    n = int(rng.integers(2, 4) + min(4, int(long_len / short_len / 1.5)))
    seg = long_len / n
    frags = np.zeros((n, 10))
    harm = np.zeros((n, 4, 2))
    for i in range(n):
        c_long = seg * (i + 0.5 + rng.uniform(-0.18, 0.18))
        c_short = short_len * rng.uniform(0.35, 0.65)
        r_long = seg * rng.uniform(0.25, 0.48)
        r_short = short_len * rng.uniform(0.16, 0.38)
        cx, cy, rx, ry = (c_long, c_short, r_long, r_short) if long_x else (c_short, c_long, r_short, r_long)
        ang = rng.uniform(-0.5, 0.5)
        faint = rng.random() < 0.2
        factor = rng.uniform(0.35, 0.6) if faint else rng.uniform(0.75, 1.15)
        frags[i, :7] = (cx, cy, rx, ry, math.cos(ang), math.sin(ang), factor)
        for k in range(4):
            harm[i, k] = rng.normal(0.0, 0.25 / (k + 1.0), size=2)
    r_min = float(np.min(frags[:, 2:4]))

    # Tears (background cracks inside tissue), folds (doubled tissue).
    tears, folds = [], []
    for i in range(n):
        cx, cy, rx, ry = frags[i, :4]
        for _ in range(int(rng.integers(0, 3))):
            px, py = cx + rng.uniform(-0.6, 0.6) * rx, cy + rng.uniform(-0.6, 0.6) * ry
            a = rng.uniform(0, np.pi)
            ln = rng.uniform(0.1, 0.45) * min(rx, ry)
            rad = max(24.0, rng.uniform(18, 45)) * um  # >= 24 um, as lumens (see _hole_field)
            tears.append((px, py, px + ln * math.cos(a), py + ln * math.sin(a), rad))
        for _ in range(int(rng.random() < 0.5) + int(rng.random() < 0.2)):
            px, py = cx + rng.uniform(-0.5, 0.5) * rx, cy + rng.uniform(-0.5, 0.5) * ry
            a = rng.uniform(0, np.pi)
            ln = rng.uniform(0.3, 0.9) * max(rx, ry)
            hw = min(rng.uniform(40, 160) * um, 0.08 * min(rx, ry) + 10 * um)
            folds.append((px - 0.5 * ln * math.cos(a), py - 0.5 * ln * math.sin(a),
                          px + 0.5 * ln * math.cos(a), py + 0.5 * ln * math.sin(a), hw, rng.uniform(0.6, 1.0)))

    blurs = []
    for _ in range(int(rng.integers(0, 3))):
        blurs.append((rng.uniform(0, width), rng.uniform(0, height),
                      rng.uniform(0.15, 0.5) * short_len, rng.uniform(0.6, 1.0)))

    params = _appearance(rng, mpp, r_min)
    lay = SynthLayout(seed=seed, width=width, height=height, mpp=mpp, frags=frags, frag_harm=harm,
                      tears=np.array(tears).reshape(-1, 5), folds=np.array(folds).reshape(-1, 6),
                      blurs=np.array(blurs).reshape(-1, 4), params=params)

    # Pens, bubbles and out-of-scan areas are placed on glass (away from fragments).
    pens = []
    for _ in range(int(rng.integers(0, 4))):
        colour = ["blue", "green", "black", "red"][int(rng.integers(0, 4))]
        hw = min(rng.uniform(60, 250) * um, 0.02 * short_len + 4)
        pts = _pen_path(lay, rng, hw)
        if pts is None:
            continue
        ink = -np.log(np.array(_INK[colour]) / 245.0) * rng.uniform(0.7, 1.1)
        segs = np.concatenate([pts[:-1], pts[1:]], axis=1)
        pens.append((segs, hw, ink))
    bubbles = []
    for _ in range(int(rng.integers(0, 3))):
        r = rng.uniform(0.05, 0.25) * short_len
        bubbles.append((rng.uniform(0, width), rng.uniform(0, height), r, r * rng.uniform(0.7, 1.0),
                        rng.uniform(0.25, 0.7)))
    oos = []
    if rng.random() < 0.5:
        side = int(rng.integers(0, 4))
        f = rng.uniform(0.02, 0.08)
        along0, along1 = sorted(rng.uniform(0, 1, size=2))
        along0, along1 = (0.0, 1.0) if rng.random() < 0.5 else (along0, max(along1, along0 + 0.2))
        if side == 0:
            oos.append((0, along0 * height, f * width, along1 * height))
        elif side == 1:
            oos.append(((1 - f) * width, along0 * height, width, along1 * height))
        elif side == 2:
            oos.append((along0 * width, 0, along1 * width, f * height))
        else:
            oos.append((along0 * width, (1 - f) * height, along1 * width, height))
    return SynthLayout(seed=seed, width=width, height=height, mpp=mpp, frags=frags, frag_harm=harm,
                       tears=lay.tears, folds=lay.folds, blurs=lay.blurs, pens=pens,
                       bubbles=np.array(bubbles).reshape(-1, 5), oos=np.array(oos).reshape(-1, 4),
                       params=params)


def _appearance(rng: np.random.Generator, mpp: float, r_min: float) -> dict:
    um = 1.0 / mpp

    def unit(v, sd):
        v = np.abs(v + rng.normal(0, sd, 3))
        return v / np.linalg.norm(v)

    glass_l = rng.uniform(239, 251)
    glass = np.clip(glass_l + rng.normal(0, 1.2, 3) + np.array([0.8, 0.0, -0.6]), 225, 253)
    return {
        "v_h": unit(_V_H, 0.05),
        "v_e": unit(_V_E, 0.05),
        "h_scale": rng.uniform(0.7, 1.35),
        "e_scale": rng.uniform(0.65, 1.35),
        "resid": np.abs(rng.normal(0.03, 0.01, 3)),
        "glass": glass,
        "grad": rng.normal(0, 0.012, 2),
        "vig_amp": rng.uniform(0.0, 0.025),
        "fov": (rng.uniform(400, 1600) * um, rng.uniform(400, 1600) * um),
        "noise_sd": rng.uniform(0.8, 2.2),
        "fibre_theta": rng.uniform(0, np.pi),
        "pale_min": rng.uniform(0.18, 0.4),
        "fade_px": rng.uniform(15, 60) * um,
        "adip_thr": rng.uniform(0.08, 0.3),
        "epi_thr": rng.uniform(0.0, 0.2),
        "band_px": rng.uniform(40, 150) * um if rng.random() < 0.5 else 0.0,
        "type_scale": min(rng.uniform(300, 900) * um, 0.8 * r_min),
        "r_min": r_min,
        "lumen_cell": int(round(400 * um)),
        "crumb_cell": int(round(500 * um)),
        "crumb_p": rng.uniform(0.08, 0.3),
        "lumen_p": rng.uniform(0.15, 0.55),
        "dust_p": rng.uniform(0.04, 0.18),
        "dust_od": np.array([0.55, 0.6, 0.68]) * rng.uniform(0.8, 1.4),
        "nuc_a_p": rng.uniform(0.4, 0.65),
        "nuc_c_p": rng.uniform(0.3, 0.55),
        "nuc_b_p": rng.uniform(0.25, 0.5),
        "edge_fine_px": 3.5 * um,
        "edge_fib_px": 5.0 * um,
        # |fbm| <= 0.5: bound of the noise added to the fragment field (see _tissue_field)
        "d_noise_max": 0.5 * (0.2 * r_min + 60 * um * min(1.0, r_min / (600 * um)) + 14 * um) + 1.0,
        "d_floor": -(2.5 * 3.5 * um + 5.0 * um + 12.0) - 50.0,
        "hole_floor": -(12.0 + 1.5 * um * 2.5 + 2.0),
    }


# ---------------------------------------------------------------------------- variety profile: layout


def _in_frag(rng: np.random.Generator, f: np.ndarray, reach: float) -> tuple[float, float]:
    """A random point inside fragment row ``f`` (within ``reach`` of its half-axes), px."""
    u, v = rng.uniform(-reach, reach, size=2)
    return (f[0] + u * f[2] * f[4] - v * f[3] * f[5], f[1] + u * f[2] * f[5] + v * f[3] * f[4])


def _layout_variety(seed: int, width: int, height: int, mpp: float, profile: str) -> SynthLayout:
    """The variety profile's layout: the slide's categories, then the geometry of each.

    Its own random stream (the default profile's draws are not shared, so neither changes the
    other). Holes follow HOLE_LARGE_UM: lumens are small (semi-axes 12-40 um: tissue) or large
    (minor semi-axis >= 62 um: background); tears are large; frozen sections' cracks are thin
    (radius 2-20 um: tissue) or wide (radius >= 62 um: background). See docs/synth.md.
    """
    rng = np.random.default_rng([seed, 0x5EED, 0xA11])
    um = 1.0 / mpp
    short_len = min(width, height)
    cats = _vy.draw_categories(rng, profile)
    names = _vy.category_names(cats)
    kind, mods = cats["layout"], cats["tissue"]
    frozen = "frozen" in mods
    frags, harm, gains = _vy.draw_fragments(rng, kind, width, height, mpp, faint_p=0.3 if frozen else 0.2)
    if "clot" in mods:
        cf, ch = _vy.draw_clots(rng, width, height, mpp)
        frags, harm = np.concatenate([frags, cf]), np.concatenate([harm, ch])
    r_min = float(np.min(frags[:, 2:4]))
    p = _appearance(rng, mpp, r_min)
    # the textures depend on (seed, mpp) alone, so every variety profile of a seed shares them
    p["fibre_theta"] = float(np.random.default_rng([seed, 0x7E27, 1]).uniform(0, np.pi))
    g0, g1, g2 = gains
    p["gains"] = gains
    p["d_noise_max"] = 0.5 * (g0 * 0.2 * r_min + g1 * 60 * um * min(1.0, r_min / (600 * um)) + g2 * 14 * um) + 1.0
    p["type_scale"] = min(rng.uniform(300, 900) * um, 0.8 * max(r_min, 250 * um))
    p["crumb_p"] = {"sections": p["crumb_p"], "needle": rng.uniform(0.0, 0.08), "tma": rng.uniform(0.0, 0.03),
                    "fragments": rng.uniform(0.1, 0.3)}[kind]
    p["lumen_small_p"] = rng.uniform(0.3, 0.7)
    if "adipose" in mods:  # mostly fat: breast, fat around lymph nodes
        p["adip_thr"] = rng.uniform(-0.3, -0.1)
        p["epi_thr"] = rng.uniform(0.1, 0.3)
    p["s_amp"] = 0.6 if frozen else 0.35
    if frozen:
        p["pale_min"] = rng.uniform(0.12, 0.3)
    p["mus_thr"] = rng.uniform(0.0, 0.3)
    p["muc_thr"] = rng.uniform(-0.05, 0.25)
    p["glass"] = _vy.draw_glass(rng, cats["glass"])
    fam = _stains.draw_family(rng, cats["stain"], p["v_h"], p["v_e"])
    p["stain"] = fam
    p["stain_w"] = _stains.channel_weights(fam)
    if fam["name"] == "ihc":
        p["dab_cells"] = rng.uniform(0.3, 0.8) if fam["dab_pattern"] == "nuclear" else rng.uniform(0.05, 0.25)
    if fam["name"] == "grocott":
        p["ag_thr"] = rng.uniform(-0.1, 0.15)
    if fam["name"] == "alcian":  # more mucin-rich epithelium than other stains show
        p["muc_thr"] = rng.uniform(-0.25, 0.0)
    p["dust_p"] = rng.uniform(0.25, 0.7) if "dust" in names else 0.0
    p["dust_od"] = np.array([0.55, 0.6, 0.68]) * rng.uniform(1.0, 2.0)

    tears, folds, cracks = [], [], []
    for i in range(frags.shape[0]):
        f = frags[i]
        if f[9] == 1:  # clots have no tears or folds
            continue
        rr = min(f[2], f[3])
        for _ in range(int(rng.integers(0, 3))):  # tears: always >= 124 um wide, background
            rad = rng.uniform(62, 110) * um
            if rr < 4 * rad:
                continue
            px, py = _in_frag(rng, f, 0.6)
            a, ln = rng.uniform(0, np.pi), rng.uniform(0.1, 0.45) * rr
            tears.append((px, py, px + ln * math.cos(a), py + ln * math.sin(a), rad))
        n_folds = int(rng.random() < 0.5) + int(rng.random() < 0.2) + (int(rng.integers(1, 3)) if frozen else 0)
        for _ in range(n_folds):
            px, py = _in_frag(rng, f, 0.5)
            a, ln = rng.uniform(0, np.pi), rng.uniform(0.3, 0.9) * max(f[2], f[3])
            hw = min(rng.uniform(40, 160) * um, 0.08 * rr + 10 * um)
            folds.append((px - 0.5 * ln * math.cos(a), py - 0.5 * ln * math.sin(a),
                          px + 0.5 * ln * math.cos(a), py + 0.5 * ln * math.sin(a), hw, rng.uniform(0.6, 1.0)))
        if frozen:  # cracks: long and thin (tissue), now and then wide (background)
            for _ in range(int(rng.integers(2, 9))):
                px, py = _in_frag(rng, f, 0.8)
                a, ln = rng.uniform(0, np.pi), rng.uniform(0.2, 0.9) * max(f[2], f[3])
                x1, y1 = px + ln * math.cos(a), py + ln * math.sin(a)
                if rng.random() < 0.2 and rr > 400 * um:
                    tears.append((px, py, x1, y1, rng.uniform(62, 90) * um))
                else:
                    cracks.append((px, py, x1, y1, rng.uniform(2, 20) * um))

    blurs = []
    if "focus" in names:
        for _ in range(int(rng.integers(1, 4))):
            blurs.append((rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.1, 0.45) * short_len,
                          rng.uniform(0.7, 1.0)))
    pens = []
    if "pen" in names:  # markers of any colour, over and beside tissue
        for _ in range(int(rng.integers(1, 5))):
            hw = min(rng.uniform(80, 300) * um, 0.02 * short_len + 4)
            ink = _vy.ink_od(_vy.draw_pen_colour(rng)) * rng.uniform(0.7, 1.1)
            pens.append((_vy.segments(_vy.pen_stroke(rng, width, height, frags, hw)), hw, ink))
    if "handwriting" in names:  # fine pen: words written on the glass or across the tissue
        for _ in range(int(rng.integers(1, 4))):
            lh = min(rng.uniform(500, 2500) * um, 0.25 * short_len)
            n_letters = int(rng.integers(3, 10))
            x_end = max(0.02 * width, width - 0.8 * lh * n_letters)  # the word fits when it can
            pts = _vy.handwriting(rng, rng.uniform(0.02 * width, x_end), rng.uniform(0.15, 0.95) * height, lh,
                                  n_letters, rng.uniform(-0.1, 0.5))
            hw = max(rng.uniform(15, 60) * um, 0.8)
            ink = _vy.ink_od(_vy.draw_pen_colour(rng) * rng.uniform(0.5, 0.9)) * rng.uniform(0.8, 1.1)
            pens.append((_vy.segments(pts), hw, ink))
    bubbles = []
    if "bubbles" in names:
        for _ in range(int(rng.integers(1, 5))):
            r = rng.uniform(0.03, 0.2) * short_len
            bubbles.append((rng.uniform(0, width), rng.uniform(0, height), r, r * rng.uniform(0.7, 1.0),
                            rng.uniform(0.25, 0.7)))
    variety = {
        "categories": cats,
        "names": names,
        "cracks": np.array(cracks).reshape(-1, 5),
        "frozen": frozen,
        "jpeg": int(rng.integers(20, 96)) if "jpeg" in names else 0,
        "pads": _vy.draw_padding(rng, width, height, mpp) if "padding" in names else [],
        "cover": _vy.draw_coverslip(rng, width, height, mpp) if "coverslip" in names else None,
        "seams": _vy.draw_seams(rng, mpp) if "seams" in names else None,
        "dye": _vy.draw_dyes(rng, mpp) if "dye" in names else None,
        "rim_px": rng.uniform(5, 18) * um,
        "rim_od": rng.uniform(0.3, 0.8),
    }
    debris = _vy.draw_debris(seed, profile, width, height, mpp)  # NOTE [Debris stream]
    cats["debris"] = debris.pop("names")
    look = _vy.draw_lookalikes(seed, profile, width, height, mpp, frags)  # NOTE [Lookalike stream]
    cats["lookalike"] = look.pop("names")
    variety["names"] = _vy.category_names(cats)
    variety.update(debris)
    variety.update(look)
    if variety["dye"] is not None:  # the spill onto glass stays where the field is not clamped
        variety["dye"]["spill_px"] = min(variety["dye"]["spill_px"], 0.6 * abs(p["d_floor"]))
    return SynthLayout(seed=seed, width=width, height=height, mpp=mpp, frags=frags, frag_harm=harm,
                       tears=np.array(tears).reshape(-1, 5), folds=np.array(folds).reshape(-1, 6),
                       blurs=np.array(blurs).reshape(-1, 4), pens=pens, bubbles=np.array(bubbles).reshape(-1, 5),
                       oos=np.zeros((0, 4)), params=p, profile=profile, variety=variety)


def _frag_field(lay: SynthLayout, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outline field of the fragments (px, > 0 inside) and the stain factor, before noise."""
    d = np.full(np.broadcast(x, y).shape, -1e9)
    fac = np.ones_like(d)
    for i in range(lay.frags.shape[0]):
        cx, cy, rx, ry, c, s, f = lay.frags[i, :7]
        # Beyond `reach` this fragment's field plus any noise stays below the floor
        # (see _tissue_field), so skipping it changes nothing (# NOTE [Determinism]).
        r_bound = 1.0 + np.abs(lay.frag_harm[i]).sum()
        reach = max(rx, ry) * (r_bound + (lay.params["d_noise_max"] - lay.params["d_floor"]) / min(rx, ry))
        if x.min() > cx + reach or x.max() < cx - reach or y.min() > cy + reach or y.max() < cy - reach:
            continue
        u = ((x - cx) * c + (y - cy) * s) / rx
        v = (-(x - cx) * s + (y - cy) * c) / ry
        rho = np.sqrt(u * u + v * v) + 1e-12
        c1, s1 = u / rho, v / rho
        r = np.ones_like(rho)
        ck, sk = c1, s1
        for k in range(4):  # orders 2..5 by the angle-addition recurrence (no trig)
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
            r += lay.frag_harm[i, k, 0] * ck + lay.frag_harm[i, k, 1] * sk
        di = (r - rho) * min(rx, ry)
        better = di > d
        d = np.where(better, di, d)
        fac = np.where(better, f, fac)
    return d, fac


def _pen_path(lay: SynthLayout, rng: np.random.Generator, hw: float):
    """A smooth stroke on glass, or None when no room is found."""
    margin = hw + 80.0 / lay.mpp
    for _ in range(20):
        p = np.array([rng.uniform(0, lay.width), rng.uniform(0, lay.height)])
        d, _ = _frag_field(lay, np.array([p[0]]), np.array([p[1]]))
        if d[0] > -margin - 0.3 * lay.params["r_min"]:
            continue
        pts = [p.copy()]
        ang = rng.uniform(0, 2 * np.pi)
        step = max(4 * hw, 0.01 * max(lay.width, lay.height))
        turn = rng.normal(0, 0.25)
        for _ in range(int(rng.integers(3, 30))):
            ang += turn + rng.normal(0, 0.15)
            q = pts[-1] + step * np.array([math.cos(ang), math.sin(ang)])
            if not (0 <= q[0] < lay.width and 0 <= q[1] < lay.height):
                break
            d, _ = _frag_field(lay, np.array([q[0]]), np.array([q[1]]))
            if d[0] > -margin - 0.3 * lay.params["r_min"]:
                break
            pts.append(q)
        if len(pts) == 1:  # a dot
            pts.append(pts[0] + 0.5)
        return np.array(pts)
    return None


# ---------------------------------------------------------------------------- fields


def _type_fields(lay: SynthLayout, x, y, d):
    """Tissue-type weights (epithelium, adipose) and the fibre-orientation blend at points.

    ``d`` is the tissue field there (px): an epithelial band may line the outline (skin-like).
    """
    p = lay.params
    ks = lay.seed
    sc = p["type_scale"]
    ne = _nz.fbm(x, y, sc, _nz.key(ks, 11), 3)
    na = _nz.fbm(x, y, sc * 1.3, _nz.key(ks, 12), 3)
    nb = _nz.fbm(x, y, sc * 0.8, _nz.key(ks, 13), 2)
    w_adip = 1.0 / (1.0 + np.exp(-(na - p["adip_thr"]) * 45.0))
    w_epi = 1.0 / (1.0 + np.exp(-(ne - p["epi_thr"]) * 18.0))
    if p["band_px"] > 0:
        nband = _nz.fbm(x, y, 1.5 * sc, _nz.key(ks, 14), 2)
        band = np.clip((p["band_px"] - d) / (0.25 * p["band_px"]), 0.0, 1.0) * np.clip(nband * 12.0 - 0.5, 0.0, 1.0)
        w_adip = np.where(band > 0, w_adip * (1.0 - band), w_adip)
        w_epi = np.maximum(w_epi, band)
    w_adip = np.where(w_adip < 0.01, 0.0, w_adip)  # exact zeros let blocks skip the texture
    w_epi = w_epi * (1.0 - w_adip)
    blend = 1.0 / (1.0 + np.exp(-nb * 14.0))
    return w_epi, w_adip, blend


def _tissue_field(lay: SynthLayout, x, y):
    p = lay.params
    ks = lay.seed
    d, fac = _frag_field(lay, x, y)
    r_min = p["r_min"]
    um = 1.0 / lay.mpp
    d = d + 0.2 * r_min * _nz.fbm(x, y, 0.6 * r_min, _nz.key(ks, 1), 2)
    d = d + 60 * um * min(1.0, r_min / (600 * um)) * _nz.fbm(x, y, 250 * um, _nz.key(ks, 2), 2)
    n3 = 14 * um * _nz.fbm(x, y, 50 * um, _nz.key(ks, 3), 2)
    d = d + n3
    crumb = _vy.crumb_field(lay, x, y, n3)  # crumbs and strands, one at most per cell of a global grid
    fac = np.where(crumb > d, 1.0, fac)
    d = np.maximum(d, crumb)
    return np.maximum(d, p["d_floor"]), fac


def _hole_field(lay: SynthLayout, x, y):
    """Lumens (cell-hashed ellipses) and tears (capsules): px, > 0 inside a hole."""
    p = lay.params
    um = 1.0 / lay.mpp
    g = p["lumen_cell"]
    cx, cy, u = _vy.cell_draws(lay, x, y, g, 21, 6)
    # semi-axes >= 24 um: width >= 48 um, minus 8 um of outline jitter here and 7.5 um per pixel
    a = (24 + u[1] * 66) * um
    b = np.maximum(a * (0.35 + 0.65 * u[2]), 24 * um)
    room = g / 2 - a - 2
    rho = _vy.cell_ellipse(x, y, cx, cy, g, a, b, room, u)[2]
    hole = np.where(u[0] < p["lumen_p"], (1.0 - rho) * b, -1e6)
    if lay.tears.shape[0]:
        for x0, y0, x1, y1, r in lay.tears:
            m = r - p["hole_floor"] + _HOLE_JITTER_UM * 0.5 * um + 1.0
            if (x.min() > max(x0, x1) + m or x.max() < min(x0, x1) - m
                    or y.min() > max(y0, y1) + m or y.max() < min(y0, y1) - m):
                continue
            hole = np.maximum(hole, r - _vy.seg_dist(x, y, np.array([[x0, y0, x1, y1]])))
    hole = hole + _HOLE_JITTER_UM * um * _nz.fbm(x, y, 40 * um, _nz.key(lay.seed, 22), 2)  # |fbm| <= 0.5
    # values below the floor all render the same (# NOTE [Determinism])
    return np.maximum(hole, p["hole_floor"])


# NOTE [Channels]: smooth per-pixel quantities computed on the lattice and interpolated.
_C_D, _C_HOLE, _C_EPI, _C_ADIP, _C_BLEND, _C_WX, _C_WY, _C_S, _C_FOLD, _C_BLUR, _C_ILLUM = range(11)
_NC = 11


def _node_fields(lay: SynthLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(C, ny, nx) float32 smooth fields at lattice points x (1, nx), y (ny, 1)."""
    p = lay.params
    ks = lay.seed
    um = 1.0 / lay.mpp
    x, y = np.broadcast_arrays(x.astype(np.float64), y.astype(np.float64))
    out = np.zeros((_NC,) + x.shape, np.float32)
    d, fac = _tissue_field(lay, x, y)
    out[_C_D] = d
    out[_C_ILLUM] = 1.0 + p["grad"][0] * (x / lay.width - 0.5) + p["grad"][1] * (y / lay.height - 0.5) \
        + 0.012 * _nz.fbm(x, y, 3000 * um, _nz.key(ks, 31), 2)
    if d.max() <= p["d_floor"] + 1.0:  # glass only: the rest is unused
        return out
    out[_C_HOLE] = _hole_field(lay, x, y)
    w_epi, w_adip, blend = _type_fields(lay, x, y, d)
    out[_C_EPI], out[_C_ADIP], out[_C_BLEND] = w_epi, w_adip, blend
    out[_C_WX] = 90 * um * _nz.fbm(x, y, 500 * um, _nz.key(ks, 41), 2)
    out[_C_WY] = 90 * um * _nz.fbm(x, y, 500 * um, _nz.key(ks, 42), 2)
    out[_C_S] = fac * (1.0 + 0.35 * _nz.fbm(x, y, 700 * um, _nz.key(ks, 43), 2))
    if lay.folds.shape[0]:
        out[_C_FOLD] = _fold_field(lay, x, y)
    if lay.blurs.shape[0]:
        out[_C_BLUR] = _blur_field(lay, x, y)
    return out


def _fold_field(lay: SynthLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fold strength (0..1) of the layout's folds (capsules of wavy half-width) at x, y."""
    um = 1.0 / lay.mpp
    fold = np.zeros_like(x)
    for x0, y0, x1, y1, hw, st in lay.folds:
        m = 1.3 * hw + 1.0
        if (x.min() > max(x0, x1) + m or x.max() < min(x0, x1) - m
                or y.min() > max(y0, y1) + m or y.max() < min(y0, y1) - m):
            continue
        hw_v = hw * (1.0 + 0.5 * _nz.fbm(x, y, 300 * um, _nz.key(lay.seed, 51), 2))
        dist = _vy.seg_dist(x, y, np.array([[x0, y0, x1, y1]]))
        fold = np.maximum(fold, st * np.clip((hw_v - dist) / (4 * um), 0.0, 1.0))
    return fold


def _blur_field(lay: SynthLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Out-of-focus strength (0..1) of the layout's blurred discs at x, y."""
    blur = np.zeros_like(x)
    for cx, cy, r, st in lay.blurs:
        dd = np.hypot(x - cx, y - cy) / r
        blur = np.maximum(blur, st * np.clip((1.0 - dd) * 4.0, 0.0, 1.0))
    return blur


def _art_fields(lay: SynthLayout, x: np.ndarray, y: np.ndarray):
    """(4, ny, nx): glass artefact OD (3 channels) and a pen/bubble label (1 pen, 2 bubble)."""
    um = 1.0 / lay.mpp
    x, y = np.broadcast_arrays(x.astype(np.float64), y.astype(np.float64))
    out = np.zeros((4,) + x.shape, np.float32)
    any_ = False
    for segs, hw, ink in lay.pens:
        m = 1.2 * hw + 10 * um
        if x.min() > segs[:, [0, 2]].max() + m or x.max() < segs[:, [0, 2]].min() - m \
                or y.min() > segs[:, [1, 3]].max() + m or y.max() < segs[:, [1, 3]].min() - m:
            continue
        dist = _vy.seg_dist(x, y, segs)
        hw_v = hw * (1.0 + 0.08 * _nz.fbm(x, y, 200 * um, _nz.key(lay.seed, 61), 2))
        cov = np.clip((hw_v - dist) / (6 * um) + 0.5, 0.0, 1.0)
        cov *= 0.8 + 0.2 * _nz.value_noise(x, y, 150 * um, _nz.key(lay.seed, 62))
        out[:3] += cov[None] * ink[:, None, None]
        out[3] = np.where(cov > 0.3, 1.0, out[3])
        any_ = True
    for cx, cy, rx, ry, od in lay.bubbles:
        reach = max(rx, ry) * (1.0 + 50 * um / min(rx, ry))
        if x.min() > cx + reach or x.max() < cx - reach or y.min() > cy + reach or y.max() < cy - reach:
            continue
        rho = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
        dist = (rho - 1.0) * min(rx, ry)
        rim = np.exp(-(dist / (4 * um)) ** 2) + 0.25 * np.exp(-((dist + 12 * um) / (6 * um)) ** 2)
        rim = np.where(np.abs(dist) < 40 * um, rim, 0.0)
        out[:3] += (od * rim)[None] * np.array([1.0, 1.0, 0.95])[:, None, None]
        out[3] = np.where((rim > 0.35) & (out[3] == 0), 2.0, out[3])
        any_ = True
    return out if any_ else None


# ---------------------------------------------------------------------------- render


def _lattice(l0_x, l0_y, w, h):
    nx0, ny0 = l0_x // _STEP, l0_y // _STEP
    nx1 = (l0_x + w - 1) // _STEP + 2
    ny1 = (l0_y + h - 1) // _STEP + 2
    xs = (np.arange(nx0, nx1, dtype=np.float64) * _STEP)[None, :]
    ys = (np.arange(ny0, ny1, dtype=np.float64) * _STEP)[:, None]
    return nx0, ny0, xs, ys


def _up(nodes, nx0, ny0, l0_x, l0_y, w, h):
    """Upsample (C, ny, nx) node fields to (C, h, w), bilinear with exact weights.

    Columns are interpolated first (on node rows), then rows, per lattice interval:
    value = a + (b - a) * f for every pixel, so any window gives the same bits.
    """
    xs = np.arange(l0_x, l0_x + w, dtype=np.int64)
    ix = xs // _STEP - nx0
    fx = (xs % _STEP).astype(np.float32) * np.float32(1.0 / _STEP)
    a = nodes[:, :, ix]
    rows = a + (nodes[:, :, ix + 1] - a) * fx  # (C, ny, w)
    j0 = l0_y // _STEP - ny0
    j1 = (l0_y + h - 1) // _STEP - ny0 + 1
    top = rows[:, j0:j1]
    fy = (np.arange(_STEP, dtype=np.float32) * np.float32(1.0 / _STEP))[None, None, :, None]
    full = top[:, :, None, :] + (rows[:, j0 + 1 : j1 + 1] - top)[:, :, None, :] * fy  # (C, n, STEP, w)
    full = full.reshape(nodes.shape[0], (j1 - j0) * _STEP, w)
    off = l0_y - (ny0 + j0) * _STEP
    return full[:, off : off + h]


def _tex(t: np.ndarray, xs: np.ndarray, ys: np.ndarray, ox: int, oy: int) -> np.ndarray:
    """Periodic texture looked up at global pixel columns xs and rows ys (offsets ox, oy)."""
    m = t.shape[0] - 1
    return t.take((ys + oy) & m, axis=0).take((xs + ox) & m, axis=1)


def _tex_warp(t: np.ndarray, xs, ys, wx: np.ndarray, wy: np.ndarray, ox: int, oy: int) -> np.ndarray:
    n = t.shape[0]
    m = n - 1
    ix = (xs[None, :] + ox + wx) & m
    iy = (ys[:, None] + oy + wy) & m
    return t.ravel().take(iy * n + ix)


def _sprites(bank: np.ndarray, cell: int, ids_fn, l0_x, l0_y, w, h) -> np.ndarray:
    """Layer of sprites, one per cell of a global grid of ``cell`` px; ids_fn(cx, cy) picks them."""
    cx0, cy0 = l0_x // cell, l0_y // cell
    cx1, cy1 = (l0_x + w - 1) // cell + 1, (l0_y + h - 1) // cell + 1
    cx = np.arange(cx0, cx1, dtype=np.int64)[None, :]
    cy = np.arange(cy0, cy1, dtype=np.int64)[:, None]
    ids = ids_fn(cx, cy)
    if not np.any(ids < bank.shape[0] - 1):
        return None
    tiles = bank[ids]  # (ncy, ncx, c, c)
    ncy, ncx = ids.shape
    big = tiles.transpose(0, 2, 1, 3).reshape(ncy * cell, ncx * cell)
    oy, ox = l0_y - cy0 * cell, l0_x - cx0 * cell
    return big[oy : oy + h, ox : ox + w]


def _render_block(lay: SynthLayout, l0_x: int, l0_y: int, w: int, h: int, labels: bool,
                  holes: str = "background"):
    """Render one block: ``(rgb, mask, labels or None)``; the default profile or the variety one."""
    if lay.profile == "he":
        return _draw_block_he(lay, l0_x, l0_y, w, h, labels, holes)
    q = lay.variety.get("jpeg", 0)
    if not q:
        return _draw_block_v(lay, l0_x, l0_y, w, h, labels, holes)
    # JPEG on the slide's global 16-px MCU grid (NOTE [Determinism]): render the aligned box,
    # replicate its last row/column at the slide's edge as an encoder pads, compress, crop.
    m = _jpeg.MCU
    x0, y0 = l0_x // m * m, l0_y // m * m
    x1, y1 = min(-(-(l0_x + w) // m) * m, lay.width), min(-(-(l0_y + h) // m) * m, lay.height)
    rgb, mask, lab = _draw_block_v(lay, x0, y0, x1 - x0, y1 - y0, labels, holes)
    pw, ph = -(-(x1 - x0) // m) * m, -(-(y1 - y0) // m) * m
    if (pw, ph) != (x1 - x0, y1 - y0):
        rgb = np.pad(rgb, ((0, ph - (y1 - y0)), (0, pw - (x1 - x0)), (0, 0)), mode="edge")
    rgb = _jpeg.roundtrip(rgb, q)
    sy, sx = slice(l0_y - y0, l0_y - y0 + h), slice(l0_x - x0, l0_x - x0 + w)
    return np.ascontiguousarray(rgb[sy, sx]), mask[sy, sx], (lab[sy, sx] if labels else None)


def _draw_block_he(lay: SynthLayout, l0_x: int, l0_y: int, w: int, h: int, labels: bool,
                   holes: str = "background"):
    p = lay.params
    bank = _tx.texture_bank(lay.seed, lay.mpp, float(p["fibre_theta"]))
    nx0, ny0, nxs, nys = _lattice(l0_x, l0_y, w, h)
    nodes = _node_fields(lay, nxs, nys)
    xs = np.arange(l0_x, l0_x + w, dtype=np.int64)
    ys = np.arange(l0_y, l0_y + h, dtype=np.int64)
    um = 1.0 / lay.mpp

    # Illumination: lattice field times scanner-tile vignetting (separable, pointwise).
    fx_, fy_ = p["fov"]
    vx = ((xs % int(fx_)) / fx_ - 0.5) ** 2
    vy = ((ys % int(fy_)) / fy_ - 0.5) ** 2
    vig = (1.0 - p["vig_amp"] * 2.0 * (vy[:, None] + vx[None, :])).astype(np.float32)

    lab = np.zeros((h, w), np.uint8) if labels else None
    tissue_possible = nodes[_C_D].max() > p["d_floor"] + 1.0
    chans = [_C_D, _C_ILLUM] if not tissue_possible else list(range(_NC))
    up = _up(nodes[chans], nx0, ny0, l0_x, l0_y, w, h)
    illum = up[chans.index(_C_ILLUM)] * vig

    od = None
    if tissue_possible:
        (d, hole, w_epi, w_adip, blend, wxf, wyf, s, fold, blur) = (up[c] for c in range(10))
        wx = np.rint(wxf).astype(np.int64)
        wy = np.rint(wyf).astype(np.int64)
        fine = _tex(bank.fine, xs, ys, 17, 911)
        has_blur = bool(nodes[_C_BLUR].max() > 0)
        fa = _tex_warp(bank.fib_a, xs, ys, wx, wy, 0, 0)
        fb = _tex_warp(bank.fib_b, xs, ys, wx, wy, 301, 77)
        cyto = _tex(bank.cyto, xs, ys, 5, 13)
        w_str = 1.0 - w_epi - w_adip
        # NOTE [Outline]: the tissue field t, thresholded at 0, IS the ground truth.
        fib_sharp = fa + (fb - fa) * blend
        t = d + p["edge_fine_px"] * np.clip(fine, -2.5, 2.5) + p["edge_fib_px"] * 2.0 * (fib_sharp - 0.5) * w_str
        hole = hole + 1.5 * um * np.clip(fine, -2.5, 2.5)
        mask = (t > 0) & (hole <= 0)  # the tissue itself: glass artefacts are drawn elsewhere
        truth = (t > 0) if holes == "tissue" else mask  # NOTE [Hole convention]
        if has_blur:
            fab = _tex_warp(bank.fib_a_blur, xs, ys, wx, wy, 0, 0)
            fbb = _tex_warp(bank.fib_b_blur, xs, ys, wx, wy, 301, 77)
            fib = fib_sharp + ((fab + (fbb - fab) * blend) - fib_sharp) * blur
            cyto = cyto + (_tex(bank.cyto_blur, xs, ys, 5, 13) - cyto) * blur
        else:
            fib = fib_sharp
        has_adip = bool(nodes[_C_ADIP].max() > 0.0)
        if has_adip:
            adip = _tex_warp(bank.adip, xs, ys, wx, wy, 555, 123)
            if has_blur:
                adip = adip + (_tex_warp(bank.adip_blur, xs, ys, wx, wy, 555, 123) - adip) * blur
        else:
            adip = 0.0
        nuc = _nuclei_layer(lay, bank, l0_x, l0_y, w, h, blur if has_blur else None)

        cE = w_str * (0.06 + 1.7 * fib) + w_epi * (0.5 + 0.45 * cyto) + w_adip * (0.015 + 1.1 * adip)
        cH = w_str * (0.05 + 0.08 * fib) + w_epi * (0.6 + 0.4 * cyto) + w_adip * (0.01 + 0.12 * adip)
        if nuc is not None:
            cH = cH + nuc * 2.1
            cE = cE + nuc * 0.3
        ew = np.float32(1.2) + blur * np.float32(10.0) if has_blur else np.float32(1.2)
        alpha = np.clip(0.5 + t / ew, 0.0, 1.0) * np.clip(0.5 - hole / ew, 0.0, 1.0)
        pale = p["pale_min"] + (1.0 - p["pale_min"]) * np.clip(t / p["fade_px"], 0.0, 1.0)
        amp = alpha * pale * s * (1.0 + fold)
        cH *= amp * np.float32(p["h_scale"])
        cE *= amp * np.float32(p["e_scale"])
        vh, ve, rs = p["v_h"], p["v_e"], p["resid"]
        od = [cH * np.float32(vh[c]) + cE * np.float32(ve[c]) + amp * np.float32(rs[c]) for c in range(3)]
        if labels:
            lab[mask] = 1
            lab[mask & (pale < 0.6)] = 4
            lab[mask & (fold > 0.3)] = 3
            if has_adip:
                lab[mask & (w_adip > 0.6) & (adip < 0.2)] = 2
            lab[(t > 0) & (hole > 0)] = 5
    else:
        mask = truth = np.zeros((h, w), bool)

    # Glass artefacts: only where there is no tissue.
    if not mask.all():
        glass = ~mask
        art = _art_fields(lay, nxs, nys)
        dust = _dust_layer(lay, bank, l0_x, l0_y, w, h)
        if art is not None or dust is not None:
            if od is None:
                od = [np.zeros((h, w), np.float32) for _ in range(3)]
            gm = glass.astype(np.float32)
            if art is not None:
                aup = _up(art, nx0, ny0, l0_x, l0_y, w, h)
                for c in range(3):
                    od[c] += aup[c] * gm
                if labels:
                    lab[glass & (aup[3] > 1.5)] = 8
                    lab[glass & (aup[3] > 0.5) & (aup[3] < 1.5)] = 6
            if dust is not None:
                for c in range(3):
                    od[c] += dust * np.float32(p["dust_od"][c]) * gm
                if labels:
                    lab[glass & (dust > 0.3)] = 7

    rgb = np.empty((h, w, 3), np.uint8)
    noise = _tex(bank.noise, xs, ys, 3, 7)  # (h, w, 3)
    sd = np.float32(p["noise_sd"])
    for c in range(3):
        g = illum * np.float32(p["glass"][c])
        v = g * np.exp(-od[c]) if od is not None else g
        v += noise[..., c] * sd + np.float32(0.5)
        np.clip(v, 0, 255, out=v)
        rgb[..., c] = v.astype(np.uint8)

    m = truth.astype(np.uint8)
    for x0, y0, x1, y1 in lay.oos:
        xa, xb = max(int(x0), l0_x), min(int(x1), l0_x + w)
        ya, yb = max(int(y0), l0_y), min(int(y1), l0_y + h)
        if xa < xb and ya < yb:
            rgb[ya - l0_y : yb - l0_y, xa - l0_x : xb - l0_x] = 255
            m[ya - l0_y : yb - l0_y, xa - l0_x : xb - l0_x] = 0
            if labels:
                lab[ya - l0_y : yb - l0_y, xa - l0_x : xb - l0_x] = 9
    return rgb, m, lab


def _nuclei_fields(lay, px, py):
    """Tissue field and type weights at cell centres: what places nuclei (default profile)."""
    d, _ = _tissue_field(lay, px, py)
    w_epi, w_adip, blend = _type_fields(lay, px, py, d)
    return d, w_epi, w_adip, blend


def _nuclei_layer(lay, bank, l0_x, l0_y, w, h, blur, fields=_nuclei_fields):
    """Nuclear density (h, w) from three cell grids, or None when the window has no nuclei.

    ``fields(lay, px, py)`` gives ``(d, w_epi, w_adip, blend)`` at cell centres.
    """
    p = lay.params
    ca, cb, cc, _ = _tx.nuclei_cells(lay.mpp)

    def round_ids(cell, k, n, prob):
        def ids(cx, cy):
            px, py = (cx + 0.5) * cell, (cy + 0.5) * cell
            d, w_epi, w_adip, _ = fields(lay, px, py)
            u = _nz.uniform2(cx, cy, k)
            pr = prob * w_epi + 0.03 * (1 - w_adip)
            hsh = _nz.hash2(cx, cy, k ^ 0x55AA) % np.uint32(n)
            return np.where((u < pr) & (d > -10), hsh.astype(np.int64), n)
        return ids

    def ids_b(cx, cy):
        k = _nz.key(lay.seed, 72)
        nb = bank.nuc_b.shape[0] - 1
        px, py = (cx + 0.5) * cb, (cy + 0.5) * cb
        d, w_epi, w_adip, blend = fields(lay, px, py)
        u = _nz.uniform2(cx, cy, k)
        pr = p["nuc_b_p"] * (1 - w_epi - w_adip) + 0.05 * w_adip
        half = nb // 2
        hsh = (_nz.hash2(cx, cy, k ^ 0x33CC) % np.uint32(half)).astype(np.int64) + np.where(blend > 0.5, half, 0)
        return np.where((u < pr) & (d > -10), hsh, nb)

    grids = [
        (bank.nuc_a, bank.nuc_a_blur, ca, round_ids(ca, _nz.key(lay.seed, 71), bank.nuc_a.shape[0] - 1, p["nuc_a_p"])),
        (bank.nuc_c, bank.nuc_c_blur, cc, round_ids(cc, _nz.key(lay.seed, 73), bank.nuc_c.shape[0] - 1, p["nuc_c_p"])),
        (bank.nuc_b, bank.nuc_b_blur, cb, ids_b),
    ]
    out = None
    for sharp, soft, cell, ids in grids:
        layer = _sprites(sharp, cell, ids, l0_x, l0_y, w, h)
        if layer is None:
            continue
        if blur is not None:
            layer = layer + (_sprites(soft, cell, ids, l0_x, l0_y, w, h) - layer) * blur
        out = layer if out is None else np.maximum(out, layer)
    return out


def _dust_layer(lay, bank, l0_x, l0_y, w, h):
    cd = _tx.nuclei_cells(lay.mpp)[3]
    k = _nz.key(lay.seed, 81)
    nd = bank.dust.shape[0] - 1

    def ids(cx, cy):
        u = _nz.uniform2(cx, cy, k)
        hsh = (_nz.hash2(cx, cy, k ^ 0x1234) % np.uint32(nd)).astype(np.int64)
        return np.where(u < lay.params["dust_p"], hsh, nd)

    return _sprites(bank.dust, cd, ids, l0_x, l0_y, w, h)


# ---------------------------------------------------------------------------- variety profile: render
# The default profile's functions above are frozen (its slides must not change by a bit); the
# variety profile has its own versions of the ones it changes and shares the rest. Everything
# obeys NOTE [Determinism]: lattice fields, global cell grids, periodic textures, the global
# 16-px JPEG grid, and per-pixel functions of the global position.


def _type_fields_v(lay: SynthLayout, x, y, d, w_clot):
    """The default profile's type weights, with clots taking their share."""
    w_epi, w_adip, blend = _type_fields(lay, x, y, d)
    keep = 1.0 - w_clot
    return w_epi * keep, w_adip * keep, blend


def _nuclei_fields_v(lay, px, py):
    d, _, w_clot = _vy.tissue_field(lay, px, py)
    w_epi, w_adip, blend = _type_fields_v(lay, px, py, d, w_clot)
    return d, w_epi, w_adip + 0.95 * w_clot, blend  # few nuclei in a clot (white cells)


def _node_fields_v(lay: SynthLayout, x: np.ndarray, y: np.ndarray) -> dict:
    """Smooth fields at lattice points x (1, nx), y (ny, 1): {name: (ny, nx)}; names as used below."""
    p = lay.params
    ks = lay.seed
    um = 1.0 / lay.mpp
    x, y = np.broadcast_arrays(x.astype(np.float64), y.astype(np.float64))
    d, fac, w_clot = _vy.tissue_field(lay, x, y)
    ch = {"d": d}
    ch["illum"] = 1.0 + p["grad"][0] * (x / lay.width - 0.5) + p["grad"][1] * (y / lay.height - 0.5) \
        + 0.012 * _nz.fbm(x, y, 3000 * um, _nz.key(ks, 31), 2)
    if d.max() <= p["d_floor"] + 1.0:
        return ch
    ch["hole"], ch["small"] = _vy.hole_field(lay, x, y)
    w_epi, w_adip, blend = _type_fields_v(lay, x, y, d, w_clot)
    ch["epi"], ch["adip"], ch["blend"] = w_epi, w_adip, blend
    if w_clot.max() > 0:
        ch["clot"] = w_clot
    ch["wx"] = 90 * um * _nz.fbm(x, y, 500 * um, _nz.key(ks, 41), 2)
    ch["wy"] = 90 * um * _nz.fbm(x, y, 500 * um, _nz.key(ks, 42), 2)
    ch["s"] = fac * (1.0 + p["s_amp"] * _nz.fbm(x, y, 700 * um, _nz.key(ks, 43), 2))
    if lay.folds.shape[0]:
        fold = _fold_field(lay, x, y)
        if fold.max() > 0:
            ch["fold"] = fold
    if lay.blurs.shape[0]:
        blur = _blur_field(lay, x, y)
        if blur.max() > 0:
            ch["blur"] = blur
    ch.update(_vy.extra_fields(lay, x, y, d))
    return ch


def _upsample(ch: dict, nx0, ny0, l0_x, l0_y, w, h) -> dict:
    if not ch:
        return {}
    names = list(ch)
    up = _up(np.stack([ch[n] for n in names]).astype(np.float32), nx0, ny0, l0_x, l0_y, w, h)
    return dict(zip(names, up))


def _draw_block_v(lay: SynthLayout, l0_x: int, l0_y: int, w: int, h: int, labels: bool,
                  holes: str = "background"):
    """One block of a variety-profile slide (the default profile's _draw_block_he, generalised)."""
    p = lay.params
    var = lay.variety
    bank = _tx.texture_bank(lay.seed, lay.mpp, float(p["fibre_theta"]), False)
    nx0, ny0, nxs, nys = _lattice(l0_x, l0_y, w, h)
    f = _upsample(_node_fields_v(lay, nxs, nys), nx0, ny0, l0_x, l0_y, w, h)
    xs = np.arange(l0_x, l0_x + w, dtype=np.int64)
    ys = np.arange(l0_y, l0_y + h, dtype=np.int64)
    gx, gy = xs[None, :].astype(np.float64), ys[:, None].astype(np.float64)  # for the per-pixel fields
    um = 1.0 / lay.mpp

    fx_, fy_ = p["fov"]
    vx = ((xs % int(fx_)) / fx_ - 0.5) ** 2
    vy = ((ys % int(fy_)) / fy_ - 0.5) ** 2
    illum = f["illum"] * (1.0 - p["vig_amp"] * 2.0 * (vy[:, None] + vx[None, :])).astype(np.float32)
    lab = np.zeros((h, w), np.uint8) if labels else None
    zero = np.float32(0.0)
    od = None
    strand = None
    if "hole" in f:
        d, hole, small = f["d"], f["hole"], f["small"]
        st = _vy.strand_field(lay, gx, gy, -p["d_floor"])  # thin: per pixel, to keep their width at any mpp
        if st is not None:  # (where a strand is the tissue, how far in)
            strand = (st[0] >= d, np.clip(2.0 * st[1], 0.0, 1.0).astype(np.float32))
            d = np.maximum(d, st[0].astype(np.float32))
        w_epi, w_adip, blend = f["epi"], f["adip"], f["blend"]
        w_clot = f.get("clot", zero)
        fold, blur = f.get("fold", zero), f.get("blur")
        wx = np.rint(f["wx"]).astype(np.int64)
        wy = np.rint(f["wy"]).astype(np.int64)
        fine = _tex(bank.fine, xs, ys, 17, 911)
        fa = _tex_warp(bank.fib_a, xs, ys, wx, wy, 0, 0)
        fb = _tex_warp(bank.fib_b, xs, ys, wx, wy, 301, 77)
        cyto = _tex(bank.cyto, xs, ys, 5, 13)
        w_str = 1.0 - w_epi - w_adip - w_clot
        fib_sharp = fa + (fb - fa) * blend
        fine_c = np.clip(fine, -2.5, 2.5)
        t = d + p["edge_fine_px"] * fine_c + p["edge_fib_px"] * 2.0 * (fib_sharp - 0.5) * w_str
        hole = hole + 1.5 * um * fine_c
        small = small + 1.5 * um * fine_c
        mask = (t > 0) & (hole <= 0)
        truth = (t > 0) if holes == "tissue" else mask
        if blur is not None:
            fab = _tex_warp(bank.fib_a_blur, xs, ys, wx, wy, 0, 0)
            fbb = _tex_warp(bank.fib_b_blur, xs, ys, wx, wy, 301, 77)
            fib = fib_sharp + ((fab + (fbb - fab) * blend) - fib_sharp) * blur
            cyto = cyto + (_tex(bank.cyto_blur, xs, ys, 5, 13) - cyto) * blur
        else:
            fib = fib_sharp
        has_adip = bool(w_adip.max() > 0.0)
        if has_adip:
            adip_t, adip_b = _tx.adipose_cover(lay.seed, lay.mpp)
            adip = _tex_warp(adip_t, xs, ys, wx, wy, 555, 123)
            if blur is not None:
                adip = adip + (_tex_warp(adip_b, xs, ys, wx, wy, 555, 123) - adip) * blur
        nuc = _nuclei_layer(lay, bank, l0_x, l0_y, w, h, blur, fields=_nuclei_fields_v)
        ice = None
        if var["frozen"]:
            cell = _tx.ice_cell(lay.mpp)
            ice_bank = _tx.ice_holes(lay.seed, lay.mpp)
            k_ice, n_ice = _nz.key(lay.seed, 111), ice_bank.shape[0] - 1

            def ice_ids(cx, cy):
                u = _nz.uniform2(cx, cy, k_ice)
                hsh = (_nz.hash2(cx, cy, k_ice ^ 0x5A5A) % np.uint32(n_ice)).astype(np.int64)
                return np.where(u < 0.45, hsh, n_ice)

            ice = _sprites(ice_bank, cell, ice_ids, l0_x, l0_y, w, h)

        # materials (_stains.MATERIALS) and their OD per channel
        mus = f["mus"]
        w_col, w_mus = w_str * (1.0 - mus), w_str * mus
        mats = {"str0": w_col, "strf": w_col * fib, "mus0": w_mus, "musf": w_mus * fib, "epi0": w_epi,
                "epic": w_epi * cyto, "muc": w_epi * f["muc"] * (0.4 + 0.6 * cyto)}
        if has_adip:
            mats["adi0"], mats["adia"] = w_adip, w_adip * adip
        if nuc is not None:
            mats["nuc"] = nuc
        if "clot" in f:
            rbc, fibrin = _tx.red_cells(lay.seed, lay.mpp)
            mats["rbc"] = w_clot * _tex(rbc, xs, ys, 7, 3)
            mats["mus0"] = mats["mus0"] + w_clot * (0.15 + 0.6 * _tex(fibrin, xs, ys, 7, 3))
        if "dab" in f:
            pat = p["stain"]["dab_pattern"]
            if pat == "cytoplasmic":
                mats["dab"] = f["dab"] * w_epi * (0.35 + 0.65 * cyto)
            elif pat == "stromal":
                mats["dab"] = f["dab"] * w_str * (0.25 + 0.75 * fib)
            elif pat == "scattered":  # positive cells: nucleus and a rim of cytoplasm
                mats["dab"] = f["dab"] * (0.5 + 0.6 * nuc if nuc is not None else 0.5) * (1.0 - w_adip)
            elif nuc is not None:  # nuclear
                mats["dab"] = f["dab"] * nuc * (1.0 - w_adip)
            if nuc is not None and pat in ("nuclear", "scattered"):  # DAB masks the counterstain
                mats["nuc"] = nuc * (1.0 - 0.6 * np.clip(f["dab"], 0.0, 1.0))
        if "ag" in f:  # silver: fibres (reticulin, membranes) and specks (fungal elements)
            mats["ag"] = f["ag"] * (0.2 * w_str * _tx._smoothstep(fib, 0.8, 0.98) + _tx._smoothstep(fine, 1.8, 2.4))
        wm = p["stain_w"]
        ew = np.float32(1.2) + blur * np.float32(10.0) if blur is not None else np.float32(1.2)
        alpha = np.clip(0.5 + t / ew, 0.0, 1.0) * np.clip(0.5 - hole / ew, 0.0, 1.0)
        alpha = alpha * np.clip(0.5 - small / ew, 0.0, 1.0)
        if ice is not None:
            alpha = alpha * (1.0 - ice)
        tp = t
        if strand is not None:  # a strand is stained across its middle half, not faded as an outline is
            tp = np.where(strand[0], np.maximum(t, strand[1] * np.float32(p["fade_px"])), t)
        pale = p["pale_min"] + (1.0 - p["pale_min"]) * np.clip(tp / p["fade_px"], 0.0, 1.0)
        amp = alpha * pale * f["s"] * (1.0 + fold)
        rs = p["resid"]
        od = []
        for c in range(3):
            acc = None
            for j, name in enumerate(_stains.MATERIALS):
                if name in mats and wm[c, j] != 0:
                    term = mats[name] * wm[c, j]
                    acc = term if acc is None else acc + term
            od.append(amp * (acc + np.float32(rs[c])))
        if labels:
            lab[mask] = 1
            lab[mask & (pale < 0.6)] = 4
            if "fold" in f:
                lab[mask & (fold > 0.3)] = 3
            if has_adip:
                lab[mask & (w_adip > 0.6) & (adip < 0.2)] = 2
            if "clot" in f:
                lab[mask & (w_clot > 0.5)] = 11
            if strand is not None:
                lab[mask & strand[0]] = 23
            sh = small > 0
            if ice is not None:
                sh |= ice > 0.5
            lab[mask & sh] = 10
            lab[(t > 0) & (hole > 0)] = 5
    else:
        mask = truth = np.zeros((h, w), bool)

    # Artefacts: the variety profile draws them over glass and tissue alike.
    art = _upsample(_vy.art_fields(lay, nxs, nys, _STEP), nx0, ny0, l0_x, l0_y, w, h)
    dust = _dust_layer(lay, bank, l0_x, l0_y, w, h) if p["dust_p"] > 0 else None
    cover = _vy.coverslip(lay, xs, ys)
    smudge_nodes = _vy.smudge_field(lay, nxs, nys, _STEP)
    smudge = None if smudge_nodes is None else \
        _upsample({"od": smudge_nodes[0], "cov": smudge_nodes[1]}, nx0, ny0, l0_x, l0_y, w, h)
    # smears have sharp edges: measured per pixel (the lattice would draw their outlines as polygons)
    smear_px = _vy.smudge_field(lay, gx, gy, 1, "smears")
    smear = None if smear_px is None else {"od": smear_px[0].astype(np.float32), "cov": smear_px[1]}
    fibres = _vy.fibre_cover(lay, gx, gy) if var.get("fibres") else []
    if art or dust is not None or "dye" in f or (cover is not None and cover[0] is not None) \
            or smudge is not None or smear is not None or fibres:
        if od is None:
            od = [np.zeros((h, w), np.float32) for _ in range(3)]
        glass = ~mask
        if dust is not None:
            for c in range(3):
                od[c] = od[c] + dust * np.float32(p["dust_od"][c])
            if labels:
                lab[glass & (dust > 0.3)] = 7
                lab[mask & (dust > 0.3)] = 18
        if smudge is not None:  # unstained haze: nearly neutral grey (NOTE [Debris stream])
            for c in range(3):
                od[c] = od[c] + smudge["od"] * np.float32(var["smudge_tint"][c])
            if labels:
                lab[glass & (smudge["cov"] > 0.5)] = 19
                lab[mask & (smudge["cov"] > 0.5)] = 21
        if smear is not None:  # hueless haze with a sharp edge (NOTE [Lookalike stream])
            for c in range(3):
                od[c] = od[c] + smear["od"] * np.float32(var["smear_tint"][c])
            if labels:
                lab[glass & (smear["cov"] > 0.5)] = 24
                lab[mask & (smear["cov"] > 0.5)] = 25
        for cov_f, od_f in fibres:  # hairs and lint, blurred above the focal plane
            for c in range(3):
                od[c] = od[c] + cov_f * np.float32(od_f[c])
            if labels:
                lab[glass & (cov_f > 0.3)] = 20
                lab[mask & (cov_f > 0.3)] = 22
        if "bub_d" in art:  # a dark refraction rim just inside the edge, a fainter one beyond it
            wr = np.float32(max(var["rim_px"], 0.7))
            amp_r = np.float32(min(1.0, var["rim_px"] / 0.7))
            bd = art["bub_d"]
            rim = amp_r * (np.exp(-((bd + wr) / wr) ** 2) + np.float32(0.3) * np.exp(-((bd - 1.5 * wr) / wr) ** 2))
            # exactly 0 well inside the lattice's reach (NOTE [Determinism]: no tails that a
            # window without this bubble would miss)
            rim = rim * np.clip(1.0 - (bd / (3.5 * wr)) ** 2, 0.0, 1.0) ** 2
            for c, k in enumerate((1.0, 1.0, 0.95)):
                od[c] = od[c] + rim * np.float32(var["rim_od"] * k)
            if labels:
                lab[glass & (rim > 0.35)] = 8
                lab[mask & (rim > 0.35)] = 17
        edge = np.float32(max(1.0, 2.0 * um))
        for name in art:
            if name.startswith("pen") and name[3:].isdigit():  # each marker with its own ink
                ink = lay.pens[int(name[3:])][2]
                cov = np.clip(art[name] / edge + 0.5, 0.0, 1.0) * art["pen_k"]
                for c in range(3):
                    od[c] = od[c] + cov * np.float32(ink[c])
                if labels:
                    lab[glass & (art[name] > 0)] = 6
                    lab[mask & (art[name] > 0)] = 12
        if "thin" in art:  # fine pens, measured per pixel where they pass
            rows, cols = np.nonzero(art["thin"] > 0)
            px, py = xs[cols].astype(np.float64), ys[rows].astype(np.float64)
            for sd_t, ink in [] if rows.size == 0 else _vy.thin_pens(lay, px, py, _STEP):
                cov = (np.float32(0.9) * np.clip(sd_t / edge + 0.5, 0.0, 1.0)).astype(np.float32)
                for c in range(3):
                    od[c][rows, cols] += cov * np.float32(ink[c])
                if labels:
                    on = sd_t > 0
                    lab[rows[on], cols[on]] = np.where(mask[rows[on], cols[on]], 12, 6)
        if "dye" in f:  # deposits in flecks (the fine texture) inside the smooth band
            dye_od = var["dye"]["od"]
            mix = f["dyemix"]
            cov = f["dye"] * (0.3 + 0.7 * _tx._smoothstep(_tex(bank.fine, xs, ys, 733, 59), -1.2, 0.9))
            for c in range(3):
                od[c] = od[c] + cov * (np.float32(dye_od[0, c]) + np.float32(dye_od[1, c] - dye_od[0, c]) * mix)
            if labels:
                lab[glass & (cov > 0.3)] = 14
                lab[mask & (cov > 0.3)] = 13
        if cover is not None and cover[0] is not None:
            for c in range(3):
                od[c] = od[c] + cover[0]
            if labels:
                lab[glass & (cover[0] > 0.5 * abs(var["cover"]["core_od"]))
                    & (var["cover"]["core_od"] > 0)] = 15

    rgb = np.empty((h, w, 3), np.uint8)
    noise = _tex(bank.noise, xs, ys, 3, 7)
    sd = np.float32(p["noise_sd"])
    seams = _vy.seam_gain(lay, xs, ys)
    for c in range(3):
        g = illum * np.float32(p["glass"][c])
        if seams is not None:
            g = g * seams[c]
        if cover is not None:
            g = g * cover[1][c]
        v = g * np.exp(-od[c]) if od is not None else g
        v += noise[..., c] * sd + np.float32(0.5)
        np.clip(v, 0, 255, out=v)
        rgb[..., c] = v.astype(np.uint8)

    m = truth.astype(np.uint8)
    for x0, y0, x1, y1, val in var["pads"]:
        xa, xb = max(int(x0), l0_x), min(int(x1), l0_x + w)
        ya, yb = max(int(y0), l0_y), min(int(y1), l0_y + h)
        if xa < xb and ya < yb:
            rgb[ya - l0_y : yb - l0_y, xa - l0_x : xb - l0_x] = int(val)
            m[ya - l0_y : yb - l0_y, xa - l0_x : xb - l0_x] = 0
            if labels:
                lab[ya - l0_y : yb - l0_y, xa - l0_x : xb - l0_x] = 16 if val == 0 else 9
    return rgb, m, lab


def _check_window(lay: SynthLayout, l0_x, l0_y, w, h) -> None:
    for name, v in (("l0_x", l0_x), ("l0_y", l0_y), ("w", w), ("h", h)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"synth: {name}={v!r} is not an integer pixel coordinate")
    if w <= 0 or h <= 0:
        raise InputError(f"synth: window size w={w}, h={h} must be positive")
    if l0_x < 0 or l0_y < 0 or l0_x + w > lay.width or l0_y + h > lay.height:
        raise InputError(
            f"synth: window x=[{l0_x}, {l0_x + w}) y=[{l0_y}, {l0_y + h}) is outside the slide "
            f"{lay.width} x {lay.height}; keep 0 <= x, x + w <= width, 0 <= y, y + h <= height"
        )


def _render(lay: SynthLayout, l0_x: int, l0_y: int, w: int, h: int, labels: bool, holes: str = "background"):
    rgb = np.empty((h, w, 3), np.uint8)
    mask = np.empty((h, w), np.uint8)
    lab = np.empty((h, w), np.uint8) if labels else None
    for by in range(0, h, _BLOCK_H):
        bh = min(_BLOCK_H, h - by)
        for bx in range(0, w, _BLOCK_W):
            bw = min(_BLOCK_W, w - bx)
            r, m, lb = _render_block(lay, l0_x + bx, l0_y + by, bw, bh, labels, holes)
            rgb[by : by + bh, bx : bx + bw] = r
            mask[by : by + bh, bx : bx + bw] = m
            if labels:
                lab[by : by + bh, bx : bx + bw] = lb
    return rgb, mask, lab


def render_region(
    seed: int, l0_x: int, l0_y: int, w: int, h: int, *, width: int, height: int, mpp: float = 0.5,
    holes: str = "background", profile: str = "he",
) -> tuple[np.ndarray, np.ndarray]:
    """Render a window of the virtual slide defined by ``seed``.

    Args:
        seed: the slide (layout, stains, textures); any non-negative integer.
        l0_x, l0_y: top-left corner of the window, level-0 px.
        w, h: window size, px; the window must lie inside the slide.
        width, height: slide size, level-0 px (the layout depends on it).
        mpp: micrometres per pixel (sizes of nuclei, fibres, ... follow it).
        holes: what the mask calls lumens and tears inside tissue: "background" (default) or
            "tissue" (a hole-filled tissue mask); the pixels are the same (NOTE [Hole convention]).
            In the variety profile "background" means holes at least ``HOLE_LARGE_UM`` wide
            (narrower ones are tissue, as in ../shared/data/real/SOURCES.md).
        profile: "he" (default: the original H&E slides, unchanged), "all" (every stain, tissue
            kind, glass and scanner effect and artefact, drawn per slide) or a comma-separated
            list of :data:`CATEGORIES` (e.g. "ihc,needle,pen"); docs/synth.md.

    Returns:
        ``(rgb, mask)``: (h, w, 3) uint8 RGB and (h, w) uint8 mask, 1 tissue, 0 background.
        Deterministic: equal, bit for bit, to the same pixels of any other window.

    Raises:
        ConfigError: bad seed, slide size or mpp.
        InputError: the window is empty or leaves the slide.
    """
    check_holes(holes)
    lay = make_layout(seed, width, height, mpp, profile=profile)
    _check_window(lay, l0_x, l0_y, w, h)
    rgb, mask, _ = _render(lay, int(l0_x), int(l0_y), int(w), int(h), False, holes)
    return rgb, mask


def render_labels(
    layout: SynthLayout, l0_x: int, l0_y: int, w: int, h: int, holes: str = "background"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`render_region` for a given layout, plus a (h, w) uint8 map of :data:`LABELS`.

    Meant for tests and inspection: it shows which drawn object each pixel belongs to,
    so the ground-truth definition can be checked (pen ink is 0, adipose cells are 1...).
    """
    check_holes(holes)
    _check_window(layout, l0_x, l0_y, w, h)
    return _render(layout, int(l0_x), int(l0_y), int(w), int(h), True, holes)


def with_sharp_edges(layout: SynthLayout, pale_min: float = 1.0) -> SynthLayout:
    """``layout`` with its tissue stained nearly to the edge (NOTE [Sharp edges]).

    ``pale_min`` (0 < pale_min <= 1) is the stain's strength at the outline, as a share of its
    strength inside; the layout's own is 0.12-0.4, a pale rim fading in over 15-60 um. Render the
    result with :func:`render_labels`; the mask's rule is unchanged (tissue where the outline
    covers at least half a pixel).
    """
    if isinstance(pale_min, bool) or not isinstance(pale_min, (int, float)) or not 0 < pale_min <= 1:
        raise ConfigError(f"synth: pale_min={pale_min!r} must be a number in (0, 1], e.g. 1.0 (no pale rim)")
    return replace(layout, params={**layout.params, "pale_min": float(pale_min)})


# NOTE [Sharp edges]
# Every drawn fragment fades towards its outline: its stain rises from pale_min (0.12-0.4) at the
# edge to full strength 15-60 um inside (fade_px), and the whole fade is labelled tissue. A real
# section is cut through tissue of even thickness and is often stained to its very edge. A model
# that only saw faded edges learnt that a pixel as dark as a pale rim is tissue, so on a sharp
# edge it calls pixels covered by a third of full-strength tissue tissue (on 12 fresh slides drawn
# with pale_min 1, 41% of the 2-pixel band outside the outline, against 24% as drawn; the 1-2 px
# rim of kidney-48-5's fragment). with_sharp_edges draws such slides for training
# (scripts/tissue_model/make_data.py --sharp-edges); the "all" profile's slides stay as they were.
# Fine-tuning the built-in model on them (results/tissue-model/README.md, stage 20) did not teach it
# the two kinds of edge apart: with a third of the slides sharp the rim barely moved, with all of
# them the edge moved inward on faded edges too.




# NOTE [Hole convention]
# Lumens and tears inside a tissue fragment show glass. Our default ground truth calls them
# background (docs/synth.md). Many tissue masks fill such holes instead: histolab's TissueMask,
# which made the pseudo-masks of the real slides in ../shared/data/real, is an Otsu threshold
# with holes filled. holes="tissue" gives that convention: the mask is the tissue outline field
# alone (t > 0), lumens and tears included; only the label changes, never a pixel (glass
# artefacts stay off the tissue itself, as before). Glass pockets at the ragged outline stay
# background. The two conventions differ by about 1% of the pixels (2.5% of the tissue) on
# 2048 x 2048 regions at 1 um/px.
def check_holes(holes: str) -> str:
    """``holes`` if it names a hole convention, else a ConfigError naming the valid ones."""
    if holes not in HOLE_CONVENTIONS:
        raise ConfigError(f"holes={holes!r} is not a hole convention: use one of {', '.join(HOLE_CONVENTIONS)}")
    return holes
