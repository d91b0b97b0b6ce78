"""The variety profile of the synthetic slide generator (private): categories and draws.

``profile="he"`` (the default) is the original generator, frozen byte for byte. Any other
profile draws, per slide, from the categories below (docs/synth.md, "The variety profile"):

- ``"all"``: every category may occur; one stain, one layout and one glass colour are drawn
  per slide with the weights in ``_WEIGHTS``, and each other category is present with its
  probability in ``_PROB``;
- a comma-separated list of categories (``"ihc,needle,pen"``): the exclusive axes (stain,
  layout, glass) draw among the listed ones (their default when none is listed: "he-wide",
  "sections", "bg-white"); every listed category of the other axes is present, the others not.

Everything here is plain geometry and numbers drawn from a ``numpy.random.Generator``; the
renderer (render.py) turns them into pixels. Sizes are in micrometres, converted with the mpp.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from ..options import unknown_choice
from . import _noise as _nz
from . import _stains

AXES: dict[str, tuple[str, ...]] = {
    "stain": _stains.STAINS,
    "layout": ("sections", "needle", "tma", "fragments"),
    "tissue": ("adipose", "frozen", "clot"),
    "glass": ("bg-white", "bg-grey", "bg-tinted", "bg-dark"),
    "scanner": ("padding", "coverslip", "seams", "focus", "jpeg"),
    "artefact": ("pen", "handwriting", "dust", "bubbles", "dye"),
    "debris": ("smudge", "fibre"),  # drawn from their own stream: NOTE [Debris stream]
    "lookalike": ("strand", "smear"),  # their own stream, and only when listed: NOTE [Lookalike stream]
}
EXCLUSIVE = ("stain", "layout", "glass")
CATEGORIES: tuple[str, ...] = tuple(c for cats in AXES.values() for c in cats)
PROFILES = ("he", "all")
"""Named profiles; any comma-separated list of ``CATEGORIES`` is a profile too."""
_AXIS_OF = {c: a for a, cats in AXES.items() for c in cats}
_DEFAULT = {"stain": "he-wide", "layout": "sections", "glass": "bg-white"}
_WEIGHTS = {
    "stain": {"he-wide": 0.34, "ihc": 0.26, "pas": 0.08, "trichrome": 0.08, "sirius": 0.08, "alcian": 0.08,
              "grocott": 0.08},
    "layout": {"sections": 0.4, "needle": 0.2, "tma": 0.15, "fragments": 0.25},
    "glass": {"bg-white": 0.55, "bg-grey": 0.2, "bg-tinted": 0.15, "bg-dark": 0.1},
}
_PROB = {"adipose": 0.3, "frozen": 0.15, "clot": 0.15, "padding": 0.2, "coverslip": 0.2, "seams": 0.3,
         "focus": 0.3, "jpeg": 0.3, "pen": 0.3, "handwriting": 0.15, "dust": 0.4, "bubbles": 0.2, "dye": 0.2,
         "smudge": 0.35, "fibre": 0.3, "strand": 0.0, "smear": 0.0}

# Dyes and inks, RGB of a dense deposit on white glass.
_DYES = {"black": (40, 40, 45), "blue": (40, 80, 170), "green": (40, 140, 90), "red": (190, 40, 50),
         "yellow": (225, 200, 40), "orange": (230, 120, 30), "violet": (110, 50, 150)}


def check_profile(profile) -> str:
    """The canonical form of ``profile``: "he", "all", or its categories comma-joined in
    vocabulary order. Accepts a string (comma-separated) or a sequence of category names.

    Raises:
        ConfigError: an unknown name (with the nearest valid one), or an empty profile.
    """
    if isinstance(profile, str):
        names = [n.strip() for n in profile.split(",")]
    elif isinstance(profile, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in profile):
        names = [n.strip() for n in profile]
    else:
        raise ConfigError(f"profile={profile!r} must be 'he', 'all' or category names, e.g. 'ihc,needle,pen'")
    names = [n for n in names if n]
    if not names:
        raise ConfigError(f"profile={profile!r} is empty: use 'he', 'all' or category names, e.g. 'ihc,needle,pen'")
    if len(names) == 1 and names[0] in PROFILES:
        return names[0]
    for n in names:
        if n not in _AXIS_OF:
            if n in PROFILES:
                raise ConfigError(f"profile={profile!r}: {n!r} is a whole profile and cannot be listed with categories")
            raise unknown_choice("synthetic slide category", n, PROFILES + CATEGORIES)
    return ",".join(c for c in CATEGORIES if c in names)


def draw_categories(rng: np.random.Generator, profile: str) -> dict[str, object]:
    """The categories of one slide: ``{axis: name}`` for exclusive axes, ``{axis: (names,)}`` else."""
    listed = None if profile == "all" else set(profile.split(","))
    out: dict[str, object] = {}
    for axis, cats in AXES.items():
        if axis in ("debris", "lookalike"):
            continue  # draw_debris and draw_lookalikes, from their own streams
        if axis in EXCLUSIVE:
            if listed is None:
                w = np.array([_WEIGHTS[axis][c] for c in cats])
                out[axis] = cats[int(rng.choice(len(cats), p=w / w.sum()))]
            else:
                pick = [c for c in cats if c in listed]
                out[axis] = pick[int(rng.integers(0, len(pick)))] if pick else _DEFAULT[axis]
        else:
            u = rng.random(len(cats))  # drawn in both cases: the rest of the stream does not shift
            out[axis] = tuple(c for c, ui in zip(cats, u) if (ui < _PROB[c] if listed is None else c in listed))
    return out


def boosted_profile(rng: np.random.Generator, boost) -> str:
    """A listed profile that always has the ``boost`` categories: one stain, layout and glass drawn
    with profile "all"'s weights, the ``boost`` categories, and each other category with its
    profile-"all" probability. For training on the objects a model gets wrong most.

    Raises:
        ConfigError: a boosted name that is not a category a slide may or may not have (a stain,
            layout or glass is one of several, so it cannot be boosted).
    """
    optional = [c for axis, names in AXES.items() if axis not in EXCLUSIVE for c in names]
    wrong = sorted(set(boost) - set(optional))
    if wrong:
        raise ConfigError(f"boost={sorted(boost)!r}: {', '.join(map(repr, wrong))} cannot be boosted; give categories "
                          f"that a slide may or may not have ({', '.join(sorted(optional))})")
    cats = []
    for axis, names in AXES.items():
        if axis in EXCLUSIVE:
            w = np.array([_WEIGHTS[axis][c] for c in names])
            cats.append(names[int(rng.choice(len(names), p=w / w.sum()))])
        else:
            # a category that profile "all" never draws takes no draw (the stream stays as it was)
            cats += [c for c in names if c in boost or (_PROB[c] > 0 and rng.random() < _PROB[c])]
    return ",".join(cats)


def _own_stream(seed: int, key: int, profile: str, axis: str) -> tuple[np.random.Generator, tuple[str, ...]]:
    """The random stream of an axis drawn apart from the others (the seed and ``key``), and the
    axis's categories on the slide: each with its profile-"all" probability, or the listed ones."""
    rng = np.random.default_rng([seed, key])
    listed = None if profile == "all" else set(profile.split(","))
    cats = AXES[axis]
    u = rng.random(len(cats))
    return rng, tuple(c for c, ui in zip(cats, u) if (ui < _PROB[c] if listed is None else c in listed))


def _haze_rows(rng: np.random.Generator, most: int, r_um, aspect, od, soft, width: int, height: int, mpp: float,
               bend=None, noise=None) -> list[tuple]:
    """1 to ``most - 1`` patches of haze (smudges, smears) as the rows ``smudge_field`` reads: a radius
    ``r_um`` um (at most 30% of the short side), a minor radius ``aspect`` times it, an angle, a
    place, an optical density, a soft edge (a share of the radius), a noise key and, with ``bend``
    and ``noise``, a bend and the outline noise's amplitude; each range drawn uniformly."""
    rows = []
    for _ in range(int(rng.integers(1, most))):
        r = min(rng.uniform(*r_um) * (1.0 / mpp), 0.3 * min(width, height))
        a = rng.uniform(0, np.pi)
        row = (rng.uniform(0, width), rng.uniform(0, height), r, r * rng.uniform(*aspect), np.cos(a), np.sin(a),
               rng.uniform(*od), rng.uniform(*soft), float(rng.integers(0, 2**31)))
        if bend is not None and noise is not None:
            row += (rng.uniform(*bend), rng.uniform(*noise))
        rows.append(row)
    return rows


# NOTE [Debris stream]
# Smudges and fibres (hairs, lint) on the glass came after the other categories. They are drawn
# from a stream of their own (the seed and 0xDEB215), after everything else, so a slide that has
# neither is the same, bit for bit, as before they existed, and one that has them differs only
# where they lie. Both are unstained: a smudge is a soft, nearly neutral grey patch (fingerprint,
# mounting-medium haze, an out-of-focus stain on the coverslip), a fibre a thin curved grey or
# brown line, blurred because it lies above the focal plane. On glass they are background (codes
# 19, 20); over tissue the tissue stays tissue (21, 22). docs/synth.md gives the label rule.
def draw_debris(seed: int, profile: str, width: int, height: int, mpp: float) -> dict:
    """The smudges and fibres of a slide (NOTE [Debris stream]).

    Returns ``{"names": (...), "smudges": (n, 9), "smudge_tint": (3,), "fibres": [(segs, hw, soft,
    od (3,)), ...]}``; smudge rows: cx, cy, rx, ry, cos, sin, od, soft, noise key.
    """
    rng, names = _own_stream(seed, 0xDEB215, profile, "debris")
    um = 1.0 / mpp
    long_len = max(width, height)
    smudges = _haze_rows(rng, 5, (80, 900), (0.3, 1.0), (0.02, 0.2), (0.15, 0.6), width, height, mpp) \
        if "smudge" in names else []
    tint = 1.0 + rng.uniform(-0.12, 0.12, 3)
    fibres = []
    if "fibre" in names:
        for _ in range(int(rng.integers(1, 4))):
            length = min(rng.uniform(300, 4000) * um, 0.8 * long_len)
            hw = max(rng.uniform(4, 40) * um, 0.6)
            soft = max(hw * rng.uniform(0.5, 3.0), 1.0)
            n = int(rng.integers(3, 12))
            step = length / n
            pts = [np.array([rng.uniform(0, width), rng.uniform(0, height)])]
            ang, turn = rng.uniform(0, 2 * np.pi), rng.normal(0, 0.3)
            for _ in range(n):
                ang += turn + rng.normal(0, 0.25)
                pts.append(pts[-1] + step * np.array([np.cos(ang), np.sin(ang)]))
            brown = rng.random() < 0.4  # hairs: brown; lint and dust fibres: grey
            colour = np.array([0.8, 1.0, 1.25]) if brown else 1.0 + rng.uniform(-0.08, 0.08, 3)
            fibres.append((segments(np.array(pts)), hw, soft, rng.uniform(0.15, 0.9) * colour))
    return {"names": names, "smudges": np.array(smudges, dtype=np.float64).reshape(-1, 9),
            "smudge_tint": tint, "fibres": fibres}


# NOTE [Lookalike stream]
# Two things that real slides hold and that look like the other class were added last:
# - tissue strands: long thin strips of stained tissue (20-150 um wide, 0.2-2.5 mm long) trailing
#   from a section or floating free. At low resolution they have the shape of a hair (background);
#   only their stain says tissue. CMU-1-Small-Region has one, which models called glass;
# - smears: unstained, hueless haze with a sharp edge and a curved shape (mounting medium or a wipe
#   on the coverslip), optical density 0.01-0.08. It has the outline of a pale fragment; only its
#   missing hue and texture say background. kidney-48-5 has one, which models called tissue.
# Both are drawn from a stream of their own (the seed and 0x100CA1), after the debris, and only
# when a profile lists them (profile "all" does not draw them, so its slides, and the held-out set
# every published Dice was measured on, are the same bit for bit as before they existed).
# A strand is tissue: it joins the tissue field (per pixel, so it keeps its width at any
# resolution) and takes the slide's stain. A smear is background on glass (24) and leaves the
# tissue under it tissue (25). docs/synth.md gives the label rules.
def draw_lookalikes(seed: int, profile: str, width: int, height: int, mpp: float, frags: np.ndarray) -> dict:
    """The tissue strands and smears of a slide (NOTE [Lookalike stream]).

    Returns ``{"names": (...), "strands": [(segs (m, 4), half-width px, stain factor), ...],
    "smears": (n, 11), "smear_tint": (3,)}``; smear rows as ``smudge_field`` reads them.
    """
    rng, names = _own_stream(seed, 0x100CA1, profile, "lookalike")
    um = 1.0 / mpp
    long_len = max(width, height)
    strands = []
    tissue = np.nonzero(frags[:, 9] == 0)[0] if frags.size else np.zeros(0, np.int64)
    if "strand" in names:
        for _ in range(int(rng.integers(1, 5))):
            hw = max(math.exp(rng.uniform(math.log(10), math.log(75))) * um, 0.75)
            length = min(rng.uniform(200, 2500) * um, 0.45 * long_len)
            n = int(rng.integers(4, 11))
            if tissue.size and rng.random() < 0.75:  # trailing from a fragment's edge
                f = frags[tissue[int(rng.integers(0, tissue.size))]]
                th = rng.uniform(0, 2 * np.pi)
                lu, lv = 0.85 * f[2] * math.cos(th), 0.85 * f[3] * math.sin(th)
                start = np.array([f[0] + lu * f[4] - lv * f[5], f[1] + lu * f[5] + lv * f[4]])
                ang = math.atan2(start[1] - f[1], start[0] - f[0]) + rng.normal(0, 0.4)
                length += 0.15 * min(f[2], f[3])  # the part inside the fragment
                fac = float(f[6])
            else:  # floating free on the glass
                start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
                ang = rng.uniform(0, 2 * np.pi)
                fac = rng.uniform(0.75, 1.15)
            pts, turn = [start], rng.normal(0, 0.15)
            for _ in range(n):
                ang += turn + rng.normal(0, 0.3)
                pts.append(pts[-1] + length / n * np.array([math.cos(ang), math.sin(ang)]))
            strands.append((segments(np.array(pts)), hw, fac))
    smears = _haze_rows(rng, 4, (150, 1200), (0.2, 0.6), (0.01, 0.08), (0.03, 0.12), width, height, mpp,
                        bend=(-0.8, 0.8), noise=(0.1, 0.4)) if "smear" in names else []
    return {"names": names, "strands": strands, "smears": np.array(smears, dtype=np.float64).reshape(-1, 11),
            "smear_tint": 1.0 + rng.uniform(-0.1, 0.1, 3)}


def strand_field(lay, x: np.ndarray, y: np.ndarray, margin: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The tissue strands' field at points (px, > 0 inside: half-width minus the distance to the
    centre line, exact within ``margin`` px of a strand's edge, lower beyond), how far in each point
    is (0 at the edge, 1 on the centre line) and the stain factor of the strand it is in; None when
    the slide has none near."""
    strands = lay.variety.get("strands")
    if not strands:
        return None
    x, y = np.broadcast_arrays(x.astype(np.float64), y.astype(np.float64))
    d = depth = fac = None
    for segs, hw, fi in strands:
        di = hw - seg_dist_near(x, y, segs, hw + margin)
        if di.max() < -margin:
            continue
        if d is None or depth is None or fac is None:
            d, depth, fac = di, np.clip(di / hw, 0.0, 1.0), np.full(di.shape, fi)
        else:
            better = di > d
            d = np.where(better, di, d)
            depth = np.where(better, np.clip(di / hw, 0.0, 1.0), depth)
            fac = np.where(better, fi, fac)
    return None if d is None else (d, depth, fac)


def smudge_field(lay, x: np.ndarray, y: np.ndarray, step: int, key: str = "smudges"
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """At points ``step`` px apart (the lattice for smudges, every pixel for smears): the smudges'
    (or with ``key="smears"``, the smears') summed optical density (before the slide's tint) and
    their coverage (max over them, in [0, 1]); None when none comes near. Each is exactly 0 beyond
    1.3 times its radius plus its bend (the noise is clipped), so skipping one changes nothing.
    Rows: cx, cy, rx, ry, cos, sin, od, soft, noise key and, for smears, the bend (the minor axis's
    offset, in minor radii, at one major radius from the centre) and the noise's amplitude."""
    var = lay.variety
    sm = var.get(key)
    if sm is None or sm.shape[0] == 0:
        return None
    x, y = np.broadcast_arrays(x.astype(np.float64), y.astype(np.float64))
    od = cov = None
    for row in sm:
        cx, cy, rx, ry, c, s, o, soft, k = row[:9]
        bend, amp = (row[9], row[10]) if row.shape[0] > 9 else (0.0, 0.8)
        reach = 1.3 * max(rx, ry) + 1.7 * abs(bend) * ry + 2 * step
        if x.min() > cx + reach or x.max() < cx - reach or y.min() > cy + reach or y.max() < cy - reach:
            continue
        u = ((x - cx) * c + (y - cy) * s) / rx
        v = (-(x - cx) * s + (y - cy) * c) / ry
        if bend:
            v = v - bend * u * u
        rho = np.sqrt(u * u + v * v) + np.clip(amp * _nz.fbm(x, y, 0.7 * ry, int(k), 3), -0.3, 0.3)
        ci = np.clip((1.0 - rho) / soft, 0.0, 1.0)
        ci = ci * ci * (3.0 - 2.0 * ci)
        oi = ci * o * (0.7 + 0.3 * _nz.value_noise(x, y, 0.25 * ry + 1.0, int(k) ^ 0x55))
        od = oi if od is None else od + oi
        cov = ci if cov is None else np.maximum(cov, ci)
    if od is None or cov is None or not cov.max() > 0:
        return None
    return od, cov


def fibre_cover(lay, x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per pixel (global positions x: (1, w) and y: (h, 1), broadcast to the (h, w) block): each
    nearby fibre's coverage in [0, 1] and its optical density (3,)."""
    out = []
    for segs, hw, soft, od in lay.variety.get("fibres", ()):
        m = hw + soft + 2.0
        if x.min() > segs[:, [0, 2]].max() + m or x.max() < segs[:, [0, 2]].min() - m \
                or y.min() > segs[:, [1, 3]].max() + m or y.max() < segs[:, [1, 3]].min() - m:
            continue
        cov = np.clip((hw - seg_dist_near(x, y, segs, m)) / soft + 0.5, 0.0, 1.0)
        if cov.max() > 0:
            out.append((cov.astype(np.float32), np.asarray(od)))
    return out


def category_names(cats: dict[str, object]) -> tuple[str, ...]:
    """All category names of a slide, in vocabulary order."""
    have = {v for v in cats.values() if isinstance(v, str)}
    have |= {c for v in cats.values() if isinstance(v, tuple) for c in v}
    return tuple(c for c in CATEGORIES if c in have)


# ---------------------------------------------------------------------------- tissue geometry

# Fragment rows (n, 10): cx, cy, rx, ry, cos, sin, stain factor, shape (0 ellipse, 1 capsule),
# bend (capsules: sagitta / half length), material (0 tissue, 1 blood clot).
SHAPE_ELLIPSE, SHAPE_CAPSULE = 0.0, 1.0


def draw_fragments(rng: np.random.Generator, layout: str, width: int, height: int, mpp: float, faint_p: float = 0.2):
    """Fragments for a layout kind: (frags (n, 10), harm (n, 4, 2), outline-noise gains (3,))."""
    um = 1.0 / mpp
    long_x = width >= height
    long_len, short_len = (width, height) if long_x else (height, width)
    rows, harms = [], []

    def place(c_long, c_short):
        return (c_long, c_short) if long_x else (c_short, c_long)

    def factor():
        return rng.uniform(0.35, 0.6) if rng.random() < faint_p else rng.uniform(0.75, 1.15)

    gains = (1.0, 1.0, 1.0)  # outline noise: smooth wobble, 250-um ripple, 50-um raggedness
    if layout == "sections":
        n = int(rng.integers(2, 4) + min(4, int(long_len / short_len / 1.5)))
        seg = long_len / n
        for i in range(n):
            cx, cy = place(seg * (i + 0.5 + rng.uniform(-0.18, 0.18)), short_len * rng.uniform(0.35, 0.65))
            r_long, r_short = seg * rng.uniform(0.25, 0.48), short_len * rng.uniform(0.16, 0.38)
            rx, ry = (r_long, r_short) if long_x else (r_short, r_long)
            ang = rng.uniform(-0.5, 0.5)
            rows.append((cx, cy, rx, ry, math.cos(ang), math.sin(ang), factor(), SHAPE_ELLIPSE, 0.0, 0.0))
            harms.append([rng.normal(0.0, 0.25 / (k + 1.0), size=2) for k in range(4)])
    elif layout == "needle":
        n = int(rng.integers(1, 5))
        hw = min(rng.uniform(200, 650) * um, short_len / (2.6 * n))
        base = 0.0 if long_x else math.pi / 2
        for i in range(n):
            c_short = short_len * (i + 0.5) / n + rng.uniform(-0.15, 0.15) * short_len / n
            length = long_len * rng.uniform(0.45, 0.9)
            start = rng.uniform(0.04, 0.96 - length / long_len) * long_len
            pieces = int(rng.integers(1, 4))
            gaps = rng.uniform(100, 700, size=pieces - 1) * um
            part = (length - gaps.sum()) / pieces
            ang = base + rng.uniform(-0.06, 0.06)
            pos = start
            for j in range(pieces):
                if part < 2.5 * hw:
                    break
                c_long = pos + part / 2
                cx, cy = place(c_long, c_short + (c_long - long_len / 2) * math.tan(ang - base))
                w = hw * rng.uniform(0.8, 1.0)
                rows.append((cx, cy, part / 2, w, math.cos(ang), math.sin(ang), factor(), SHAPE_CAPSULE,
                             rng.uniform(-0.04, 0.04), 0.0))
                harms.append([rng.normal(0.0, 0.08 / (k + 1.0), size=2) for k in range(4)])
                pos += part + (gaps[j] if j < len(gaps) else 0.0)
        gains = (0.5, 0.6, 0.8)
    elif layout == "tma":
        d = min(rng.uniform(600, 2000) * um, short_len / 3.0)
        pitch = d * rng.uniform(1.3, 1.8)
        ncol = max(2, min(40, int((width - 0.5 * pitch) // pitch)))
        nrow = max(2, min(40, int((height - 0.5 * pitch) // pitch)))
        pitch = min(pitch, width / (ncol + 0.3), height / (nrow + 0.3))
        d = min(d, pitch / 1.25)
        x0 = (width - (ncol - 1) * pitch) / 2
        y0 = (height - (nrow - 1) * pitch) / 2
        for j in range(nrow):
            for i in range(ncol):
                if rng.random() < 0.08:  # a core lost in sectioning
                    continue
                cx = x0 + i * pitch + rng.normal(0, 0.02) * pitch
                cy = y0 + j * pitch + rng.normal(0, 0.02) * pitch
                r = 0.5 * d * rng.uniform(0.9, 1.0)
                rows.append((cx, cy, r, r, 1.0, 0.0, rng.uniform(0.55, 1.2), SHAPE_ELLIPSE, 0.0, 0.0))
                harms.append([rng.normal(0.0, 0.012 / (k + 1.0), size=2) for k in range(4)])
        gains = (0.12, 0.15, 0.5)
    elif layout == "fragments":
        n = int(rng.integers(8, 41))
        cluster = rng.random() < 0.7
        ccx, ccy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
        spread = rng.uniform(0.15, 0.35)
        for _ in range(n):
            r = min(math.exp(rng.uniform(math.log(50), math.log(600))) * um, 0.12 * short_len)
            if cluster:
                cx = np.clip(ccx + rng.normal(0, spread) * width, r, width - r)
                cy = np.clip(ccy + rng.normal(0, spread) * height, r, height - r)
            else:
                cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            ang = rng.uniform(0, np.pi)
            rows.append((cx, cy, r, r * rng.uniform(0.4, 1.0), math.cos(ang), math.sin(ang), factor(),
                         SHAPE_ELLIPSE, 0.0, 0.0))
            harms.append([rng.normal(0.0, 0.25 / (k + 1.0), size=2) for k in range(4)])
    else:  # pragma: no cover - guarded by check_profile
        raise ValueError(layout)
    if not rows:  # a slide too small for the kind: one small piece in the middle
        r = 0.25 * short_len
        rows.append((width / 2, height / 2, r, r, 1.0, 0.0, 1.0, SHAPE_ELLIPSE, 0.0, 0.0))
        harms.append([np.zeros(2)] * 4)
    return np.array(rows, dtype=np.float64), np.array(harms, dtype=np.float64).reshape(-1, 4, 2), gains


def draw_clots(rng: np.random.Generator, width: int, height: int, mpp: float):
    """1-3 blood clots (fragment rows with material 1) and their harmonics."""
    um = 1.0 / mpp
    short_len = min(width, height)
    rows, harms = [], []
    for _ in range(int(rng.integers(1, 4))):
        r = min(rng.uniform(200, 2500) * um, 0.28 * short_len)
        cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
        ang = rng.uniform(0, np.pi)
        rows.append((cx, cy, r, r * rng.uniform(0.4, 0.9), math.cos(ang), math.sin(ang), rng.uniform(0.8, 1.15),
                     SHAPE_ELLIPSE, 0.0, 1.0))
        harms.append([rng.normal(0.0, 0.3 / (k + 1.0), size=2) for k in range(4)])
    return np.array(rows).reshape(-1, 10), np.array(harms).reshape(-1, 4, 2)


# ---------------------------------------------------------------------------- glass, scanner, artefacts


def draw_glass(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Glass RGB (3,) for a background kind."""
    if kind == "bg-white":
        g = rng.uniform(238, 254) + rng.normal(0, 1.0, 3)
    elif kind == "bg-grey":
        g = rng.uniform(200, 232) + rng.normal(0, 1.5, 3)
    elif kind == "bg-tinted":
        hue = rng.uniform(0, 2 * np.pi)
        tint = np.array([math.cos(hue), math.cos(hue - 2.094), math.cos(hue + 2.094)])
        g = rng.uniform(226, 246) + rng.uniform(6, 16) * tint
    else:  # bg-dark
        g = rng.uniform(140, 200) + rng.normal(0, 2.0, 3)
    return np.clip(g, 120, 254)


def ink_od(rgb, glass=245.0) -> np.ndarray:
    """Optical density (3,) of a deposit that shows ``rgb`` on glass of ``glass``."""
    return -np.log(np.clip(np.asarray(rgb, dtype=np.float64), 4.0, 250.0) / glass)


def draw_pen_colour(rng: np.random.Generator) -> np.ndarray:
    """Any colour of marker ink: black a quarter of the time, else a random hue."""
    if rng.random() < 0.25:
        return np.array(_DYES["black"], dtype=np.float64) + rng.uniform(-10, 15)
    hue = rng.uniform(0, 1)
    sat, val = rng.uniform(0.55, 0.95), rng.uniform(0.35, 0.8)
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p_, q_, t_ = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t_, p_), (q_, val, p_), (p_, val, t_), (p_, q_, val), (t_, p_, val), (val, p_, q_)][i]
    return np.array(rgb) * 255.0


def pen_stroke(rng: np.random.Generator, width: int, height: int, frags: np.ndarray, hw: float) -> np.ndarray:
    """Points (m, 2) of a marker stroke: a wandering line, or an arc around a fragment."""
    long_len = max(width, height)
    if frags.shape[0] and rng.random() < 0.35:  # circle (part of) a fragment, beside and over it
        f = frags[int(rng.integers(0, frags.shape[0]))]
        r = max(f[2], f[3]) * rng.uniform(0.9, 1.35)
        a0 = rng.uniform(0, 2 * np.pi)
        span = rng.uniform(1.0, 5.5)
        t = a0 + np.linspace(0, span, 40)
        pts = np.stack([f[0] + r * np.cos(t), f[1] + r * np.sin(t) * (f[3] / max(f[2], 1.0) if f[3] < f[2] else 1)], 1)
    else:
        p = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        pts = [p]
        ang = rng.uniform(0, 2 * np.pi)
        step = max(4 * hw, 0.012 * long_len)
        turn = rng.normal(0, 0.25)
        for _ in range(int(rng.integers(2, 24))):
            ang += turn + rng.normal(0, 0.2)
            pts.append(pts[-1] + step * np.array([math.cos(ang), math.sin(ang)]))
        pts = np.array(pts)
    return pts


def _letter(kind: str, t: np.ndarray, lw: float, xh: float) -> tuple[np.ndarray, np.ndarray]:
    """One cursive letter form from baseline to baseline: x (0..lw) and y (up is negative)."""
    tau = 2 * np.pi * t
    if kind in ("e", "l"):  # a loop, small or tall
        a = xh * (1.0 if kind == "e" else 2.1)
        return lw * (t + 0.35 * np.sin(tau)), -a * 0.5 * (1 - np.cos(tau))
    if kind == "n":  # one arch
        return lw * t, -xh * np.sin(np.pi * t) ** 0.6
    if kind == "m":  # two arches
        return lw * t, -xh * np.abs(np.sin(2 * np.pi * t)) ** 0.6
    if kind == "u":  # a cup
        return lw * t, -xh * (1 - np.abs(np.sin(2 * np.pi * t)) ** 0.8)
    if kind == "o":  # a closed round letter, up and around
        return lw * (0.5 - 0.5 * np.cos(np.pi * t) * np.cos(tau)), -xh * np.sin(np.pi * t)
    if kind == "g":  # a loop below the baseline
        return lw * (t + 0.3 * np.sin(tau)), 1.1 * xh * 0.5 * (1 - np.cos(tau))
    return lw * t, -xh * 1.9 * np.sin(np.pi * t) ** 8  # "i"/"t": a spike


def handwriting(rng: np.random.Generator, x0: float, y0: float, letter_h: float, n: int, slant: float) -> np.ndarray:
    """Points (m, 2) of a cursive-like scribble of ``n`` letters along a baseline at (x0, y0).

    ``letter_h`` is the x-height (px); tall letters reach about twice as high, some go below.
    """
    pts = []
    x = x0
    for _ in range(n):
        kind = "eeelnnmuuoogi"[int(rng.integers(0, 13))]
        lw = letter_h * rng.uniform(0.5, 0.9) * (1.6 if kind == "m" else 1.0)
        xh = letter_h * rng.uniform(0.8, 1.15)
        t = np.linspace(0, 1, 20, endpoint=False)
        px, py = _letter(kind, t, lw, xh)
        px = x + px - slant * py
        pts.append(np.stack([px, y0 + py], 1))
        x += lw * rng.uniform(1.0, 1.15)
    return np.concatenate(pts)


def segments(points: np.ndarray) -> np.ndarray:
    """Consecutive points (m, 2) as segments (m - 1, 4)."""
    if points.shape[0] == 1:
        points = np.concatenate([points, points + 0.5])
    return np.concatenate([points[:-1], points[1:]], axis=1)


def draw_padding(rng: np.random.Generator, width: int, height: int, mpp: float) -> list:
    """Out-of-scan padding: stepped rectangles (x0, y0, x1, y1, value) along one or two sides."""
    um = 1.0 / mpp
    rects = []
    black = rng.random() < 0.75
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
        along_len = height if side < 2 else width
        across_len = width if side < 2 else height
        depth = rng.uniform(0.02, 0.1) * across_len
        stripe = max(rng.uniform(600, 2500) * um, along_len / 40)
        a = 0.0
        while a < along_len:
            b = min(along_len, a + stripe)
            dd = depth * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else depth
            if side == 0:
                rects.append((0, a, dd, b))
            elif side == 1:
                rects.append((width - dd, a, width, b))
            elif side == 2:
                rects.append((a, 0, b, dd))
            else:
                rects.append((a, height - dd, b, height))
            a = b
    value = 0.0 if black else 255.0
    return [tuple(float(v) for v in r) + (value,) for r in rects]


def draw_coverslip(rng: np.random.Generator, width: int, height: int, mpp: float) -> dict:
    """A coverslip edge: a straight line near one side; glass beyond it is uncovered."""
    um = 1.0 / mpp
    side = int(rng.integers(0, 4))
    f = rng.uniform(0.03, 0.2)
    tilt = rng.uniform(-0.02, 0.02)
    if side < 2:  # vertical line x = c + tilt * (y - h/2); normal points outwards
        c = f * width if side == 0 else (1 - f) * width
        nx, ny = (-1.0, tilt) if side == 0 else (1.0, -tilt)
        px, py = c, height / 2
    else:
        c = f * height if side == 2 else (1 - f) * height
        nx, ny = (tilt, -1.0) if side == 2 else (-tilt, 1.0)
        px, py = width / 2, c
    nn = math.hypot(nx, ny)
    return {"n": (nx / nn, ny / nn), "p": (px, py), "core_px": max(rng.uniform(4, 15) * um, 0.8),
            "core_od": rng.uniform(0.4, 1.2) * (1 if rng.random() < 0.8 else -0.2),
            "halo_px": rng.uniform(15, 60) * um, "halo_gain": rng.uniform(0.03, 0.08),
            "outside_gain": rng.uniform(0.93, 1.06) + rng.normal(0, 0.012, 3)}


def draw_seams(rng: np.random.Generator, mpp: float) -> dict:
    """Scanner tiles or stripes (px) and the gain spread between them."""
    um = 1.0 / mpp
    tw = rng.uniform(400, 1600) * um
    th = rng.uniform(400, 1600) * um
    if rng.random() < 0.4:  # line-scan stripes: one long axis
        if rng.random() < 0.5:
            tw = 1e12
        else:
            th = 1e12
    return {"tile": (tw, th), "sd": rng.uniform(0.012, 0.045), "sd_c": rng.uniform(0.004, 0.015)}


def draw_dyes(rng: np.random.Generator, mpp: float) -> dict:
    """Marking dye at tissue margins: one or two colours, band depth and spill (px)."""
    um = 1.0 / mpp
    names = list(_DYES)
    picks = rng.choice(len(names), size=int(rng.integers(1, 3)), replace=False)
    cols = [ink_od(_DYES[names[i]]) * rng.uniform(0.7, 1.1) for i in picks]
    if len(cols) == 1:
        cols.append(cols[0])
    return {"od": np.array(cols), "names": tuple(names[i] for i in picks), "depth_px": rng.uniform(40, 250) * um,
            "spill_px": rng.uniform(10, 80) * um, "frac": rng.uniform(0.25, 0.6),
            "scale_px": rng.uniform(400, 1500) * um}


# ---------------------------------------------------------------------------- fields at points
# Pure functions of a layout (render.SynthLayout) and global positions x, y (px, float64
# arrays): NOTE [Determinism] in render.py holds for each.

HOLE_JITTER_UM = 8.0  # outline jitter of holes, as render._HOLE_JITTER_UM


def seg_dist(x, y, segs: np.ndarray) -> np.ndarray:
    """Distance (px) from points to the nearest of segments (m, 4)."""
    out = np.full(np.broadcast(x, y).shape, np.inf)
    for x0, y0, x1, y1 in segs:
        dx, dy = x1 - x0, y1 - y0
        ll = dx * dx + dy * dy + 1e-12
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / ll, 0.0, 1.0)
        out = np.minimum(out, np.hypot(x - x0 - t * dx, y - y0 - t * dy))
    return out


def _step(v, thr, k=10.0):
    """A steep ramp from 0 to 1 around ``thr`` (width 1 / k)."""
    return np.clip((v - thr) * k + 0.5, 0.0, 1.0)


def seg_dist_near(x, y, segs: np.ndarray, margin: float) -> np.ndarray:
    """Distance (px) to the nearest of segments (m, 4), exact within ``margin`` of them (else larger)."""
    lo_x, hi_x, lo_y, hi_y = x.min(), x.max(), y.min(), y.max()
    sx0, sx1 = np.minimum(segs[:, 0], segs[:, 2]), np.maximum(segs[:, 0], segs[:, 2])
    sy0, sy1 = np.minimum(segs[:, 1], segs[:, 3]), np.maximum(segs[:, 1], segs[:, 3])
    near = ~((sx0 - margin > hi_x) | (sx1 + margin < lo_x) | (sy0 - margin > hi_y) | (sy1 + margin < lo_y))
    if not near.any():
        return np.full(np.broadcast(x, y).shape, margin + 1.0)
    return np.minimum(seg_dist(x, y, segs[near]), margin + 1.0)


def frag_field(lay, x: np.ndarray, y: np.ndarray):
    """Outline fields of the tissue fragments and of the clots (px, > 0 inside), and the stain factor."""
    p = lay.params
    shape = np.broadcast(x, y).shape
    d_t = np.full(shape, -1e9)
    d_c = np.full(shape, -1e9)
    fac = np.ones(shape)
    f = lay.frags
    extra = p["d_noise_max"] - p["d_floor"]
    r_bound = 1.0 + np.abs(lay.frag_harm).sum(axis=(1, 2))
    lo = np.minimum(f[:, 2], f[:, 3])
    reach = np.where(f[:, 7] == SHAPE_CAPSULE, f[:, 2] * (1.0 + np.abs(f[:, 8])) + f[:, 3] * r_bound + extra + 1.0,
                     np.maximum(f[:, 2], f[:, 3]) * (r_bound + extra / lo))
    near = ~((x.min() > f[:, 0] + reach) | (x.max() < f[:, 0] - reach)
             | (y.min() > f[:, 1] + reach) | (y.max() < f[:, 1] - reach))
    for i in np.nonzero(near)[0]:
        cx, cy, rx, ry, c, s, fi, shp, bend, mat = f[i]
        hm = lay.frag_harm[i]
        if shp == SHAPE_CAPSULE:  # a needle-core strip: a bent capsule of varying width
            u = (x - cx) * c + (y - cy) * s
            v = -(x - cx) * s + (y - cy) * c - bend * u * u / rx
            ang = np.pi * u / rx
            width = ry * (1.0 + hm[0, 0] * np.cos(ang) + hm[0, 1] * np.sin(ang) + hm[1, 0] * np.cos(2 * ang)
                          + hm[1, 1] * np.sin(2 * ang) + hm[2, 0] * np.cos(3 * ang) + hm[3, 0] * np.cos(5 * ang))
            along = np.maximum(np.abs(u) - (rx - ry), 0.0)
            di = width - np.sqrt(along * along + v * v)
        else:
            u = ((x - cx) * c + (y - cy) * s) / rx
            v = (-(x - cx) * s + (y - cy) * c) / ry
            rho = np.sqrt(u * u + v * v) + 1e-12
            c1, s1 = u / rho, v / rho
            r = np.ones_like(rho)
            ck, sk = c1, s1
            for k in range(4):
                ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
                r += hm[k, 0] * ck + hm[k, 1] * sk
            di = (r - rho) * min(rx, ry)
        if mat == 1:
            d_c = np.maximum(d_c, di)
        else:
            better = di > d_t
            d_t = np.where(better, di, d_t)
            fac = np.where(better, fi, fac)
    return d_t, d_c, fac


def cell_draws(lay, x, y, cell: float, key: int, n: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The cell (cx, cy) of a global grid of side ``cell`` (px) that each point lies in, and ``n``
    uniform draws hashed from the cell, the slide's seed and ``key``: one object per cell, the same
    whichever window is rendered (NOTE [Determinism] in render.py)."""
    cx = np.floor(x / cell).astype(np.int64)
    cy = np.floor(y / cell).astype(np.int64)
    k = _nz.key(lay.seed, key)
    return cx, cy, [_nz.uniform2(cx, cy, (k + j) & 0xFFFFFFFF) for j in range(n)]


def cell_ellipse(x, y, cx, cy, cell: float, a, b, room, u: list[np.ndarray]):
    """The ellipse of each point's cell (``cell_draws``): its centre (ox, oy), moved from the cell's
    centre by up to ``room`` px along each axis by the draws ``u[3]``, ``u[4]`` and turned by
    ``u[5]`` half-turns, and the point's radius in it (semi-axes ``a``, ``b`` px; 1 on the outline)."""
    ox = cx * cell + cell / 2 + (u[3] * 2 - 1) * room
    oy = cy * cell + cell / 2 + (u[4] * 2 - 1) * room
    ang = u[5] * np.pi
    c, s = np.cos(ang), np.sin(ang)
    du = ((x - ox) * c + (y - oy) * s) / a
    dv = (-(x - ox) * s + (y - oy) * c) / b
    return ox, oy, np.sqrt(du * du + dv * dv)


def crumb_field(lay, x, y, n3: np.ndarray) -> np.ndarray:
    """Crumbs and strands, small loose bits of tissue (both profiles): at most one ellipse per cell
    of a global grid (``crumb_cell`` px, present with probability ``crumb_p``), its field (px, > 0
    inside) roughened by half the fine noise ``n3``; ``d_floor`` in the cells without one."""
    p = lay.params
    um = 1.0 / lay.mpp
    g = p["crumb_cell"]
    cx, cy, u = cell_draws(lay, x, y, g, 4, 6)
    a = (25 + u[1] * 160) * um
    b = np.maximum(a * (0.08 + 0.5 * u[2]), 8 * um)
    room = g / 2 - a - 20 * um
    rho = cell_ellipse(x, y, cx, cy, g, a, b, room, u)[2]
    return np.where(u[0] < p["crumb_p"], (1.0 - rho) * b + 0.5 * n3, p["d_floor"])


def tissue_field(lay, x, y):
    """Tissue field (px, > 0 inside, floored), stain factor and clot weight (0..1)."""
    p = lay.params
    ks = lay.seed
    d_t, d_c, fac = frag_field(lay, x, y)
    r_min = p["r_min"]
    um = 1.0 / lay.mpp
    g0, g1, g2 = p["gains"]
    n3 = g2 * 14 * um * _nz.fbm(x, y, 50 * um, _nz.key(ks, 3), 2)
    noise = (g0 * 0.2 * r_min * _nz.fbm(x, y, 0.6 * r_min, _nz.key(ks, 1), 2)
             + g1 * 60 * um * min(1.0, r_min / (600 * um)) * _nz.fbm(x, y, 250 * um, _nz.key(ks, 2), 2) + n3)
    d_t = d_t + noise
    d_c = d_c + noise
    if p["crumb_p"] > 0:  # crumbs and strands, as the default profile draws them
        crumb = crumb_field(lay, x, y, n3)
        fac = np.where(crumb > d_t, 1.0, fac)
        d_t = np.maximum(d_t, crumb)
    strand = strand_field(lay, x, y, -p["d_floor"])
    if strand is not None:  # NOTE [Lookalike stream]; the renderer redraws them per pixel
        fac = np.where(strand[0] > d_t, strand[2], fac)
        d_t = np.maximum(d_t, strand[0])
    w_clot = np.clip((d_c - d_t) / (15.0 * um) + 0.5, 0.0, 1.0)
    return np.maximum(np.maximum(d_t, d_c), p["d_floor"]), fac, w_clot


def hole_field(lay, x, y):
    """Large holes (>= HOLE_LARGE_UM wide: background) and small ones (narrower: tissue), px > 0 inside."""
    p = lay.params
    um = 1.0 / lay.mpp
    g = p["lumen_cell"]
    cx, cy, u = cell_draws(lay, x, y, g, 21, 7)
    small = u[6] < p["lumen_small_p"]
    # small: semi-axes 12-40 um (at most 80 um + 15.5 um of jitter wide); large: minor semi-axis
    # >= 62 um (at least 124 - 15.5 um wide): none is drawn near HOLE_LARGE_UM
    a = np.where(small, 12 + u[1] * 28, 62 + u[1] * 88) * um
    b = np.where(small, np.maximum(a * (0.35 + 0.65 * u[2]), 8 * um), np.maximum(a * (0.35 + 0.65 * u[2]), 62 * um))
    room = g / 2 - a - 2
    ox, oy, rho = cell_ellipse(x, y, cx, cy, g, a, b, room, u)
    val = (1.0 - rho) * b
    present = u[0] < p["lumen_p"]
    if present.any():  # no lumen in fat (it would pass for a fat cell) or in a blood clot
        d_t, d_c, _ = frag_field(lay, ox, oy)
        na = _nz.fbm(ox, oy, p["type_scale"] * 1.3, _nz.key(lay.seed, 12), 3)  # as render._type_fields
        present &= (d_c <= d_t) & (na < p["adip_thr"] - 0.05)
    big = np.where(present & ~small, val, -1e6)
    sm = np.where(present & small, val, -1e6)
    for caps, out in ((lay.tears, "big"), (lay.variety["cracks"], "small")):
        for x0, y0, x1, y1, r in caps:
            m = r - p["hole_floor"] + HOLE_JITTER_UM * 0.5 * um + 1.0
            if (x.min() > max(x0, x1) + m or x.max() < min(x0, x1) - m
                    or y.min() > max(y0, y1) + m or y.max() < min(y0, y1) - m):
                continue
            val = r - seg_dist(x, y, np.array([[x0, y0, x1, y1]]))
            if out == "big":
                big = np.maximum(big, val)
            else:
                sm = np.maximum(sm, val)
    jit = HOLE_JITTER_UM * um * _nz.fbm(x, y, 40 * um, _nz.key(lay.seed, 22), 2)  # |fbm| <= 0.5
    return np.maximum(big + jit, p["hole_floor"]), np.maximum(sm + jit, p["hole_floor"])


def seam_gain(lay, xs, ys) -> np.ndarray | None:
    """Per-channel gains (3, h, w) of the scanner's tiles (brightness steps at the seams)."""
    sm = lay.variety["seams"]
    if sm is None:
        return None
    tw, th = sm["tile"]
    tx = np.floor(xs / tw).astype(np.int64)
    ty = np.floor(ys / th).astype(np.int64)
    gx = np.arange(tx[0], tx[-1] + 1)[None, :]
    gy = np.arange(ty[0], ty[-1] + 1)[:, None]
    k = _nz.key(lay.seed, 101)
    base = sm["sd"] * (2.0 * _nz.uniform2(gx, gy, k) - 1.0)
    out = np.empty((3, ys.size, xs.size), np.float32)
    for c in range(3):
        tab = (1.0 + base + sm["sd_c"] * (2.0 * _nz.uniform2(gx, gy, k + 1 + c) - 1.0)).astype(np.float32)
        out[c] = tab[ty - ty[0]][:, tx - tx[0]]
    return out


def coverslip(lay, xs, ys):
    """Coverslip edge: (core OD (h, w), outside gain (3, h, w) or (3, 1, 1)) or None when far."""
    cv = lay.variety["cover"]
    if cv is None:
        return None
    nx, ny = cv["n"]
    px, py = cv["p"]
    reach = 3.0 * (cv["core_px"] + cv["halo_px"]) + 2.0
    corners = [(xs[0] - px) * nx + (ys[0] - py) * ny, (xs[-1] - px) * nx + (ys[0] - py) * ny,
               (xs[0] - px) * nx + (ys[-1] - py) * ny, (xs[-1] - px) * nx + (ys[-1] - py) * ny]
    og = np.asarray(cv["outside_gain"], np.float32)[:, None, None]
    if max(corners) < -reach:
        return None
    if min(corners) > reach:
        return None, og
    s = (((ys - py) * ny).astype(np.float32)[:, None] + ((xs - px) * nx).astype(np.float32)[None, :])
    core = np.clip(1.0 - (s / np.float32(cv["core_px"])) ** 2, 0.0, 1.0)
    u = (np.abs(s) - np.float32(cv["core_px"] + cv["halo_px"])) / np.float32(cv["halo_px"])
    halo = np.exp(-u * u) * np.clip(1.0 - (u / 2.0) ** 2, 0.0, 1.0) ** 2  # exactly 0 beyond 2 halo widths
    side = np.where(s >= 1.0, og, np.where(s <= -1.0, np.float32(1.0), 1.0 + (og - 1.0) * (s * 0.5 + 0.5)))
    gain = side * (1.0 + np.float32(cv["halo_gain"]) * halo)
    return core * np.float32(cv["core_od"]), gain.astype(np.float32)


def extra_fields(lay, x, y, d) -> dict:
    """Variety-only smooth fields at points: muscle and mucin regions, DAB, silver, marking dye."""
    p = lay.params
    ks = lay.seed
    um = 1.0 / lay.mpp
    ch = {}
    ch["mus"] = _step(_nz.fbm(x, y, 400 * um, _nz.key(ks, 91), 2), p["mus_thr"], 12.0)
    ch["muc"] = _step(_nz.fbm(x, y, 300 * um, _nz.key(ks, 92), 2), p["muc_thr"], 12.0)
    fam = p["stain"]
    if fam["name"] == "ihc" and fam["dab_level"] > 0:
        dab = fam["dab_level"] * _step(_nz.fbm(x, y, 350 * um, _nz.key(ks, 93), 2), (0.5 - fam["dab_fraction"]) * 0.4)
        if fam["dab_pattern"] in ("nuclear", "scattered"):  # a share of the cells, one value per cell
            dab = dab * _step(_nz.value_noise(x, y, 9 * um, _nz.key(ks, 94)), 1.0 - p["dab_cells"], 8.0)
        ch["dab"] = dab
    if fam["name"] == "grocott":
        ch["ag"] = _step(_nz.fbm(x, y, 400 * um, _nz.key(ks, 95), 2), p["ag_thr"])
    dye = lay.variety["dye"]
    if dye is not None:
        spill, depth = dye["spill_px"], dye["depth_px"]
        band = np.clip((d + spill) / (0.4 * spill + 1.0), 0.0, 1.0)
        band = band * np.clip((depth - d) / (0.4 * depth + 1.0), 0.0, 1.0)
        if band.max() > 0:
            sector = _step(_nz.fbm(x, y, dye["scale_px"], _nz.key(ks, 96), 2), (0.5 - dye["frac"]) * 0.5)
            ch["dye"] = band * sector * (0.55 + 0.45 * _nz.value_noise(x, y, 40 * um, _nz.key(ks, 97)))
            ch["dyemix"] = np.clip(_nz.fbm(x, y, 0.7 * dye["scale_px"], _nz.key(ks, 98), 2) * 8.0 + 0.5, 0.0, 1.0)
    return ch


def art_fields(lay, x: np.ndarray, y: np.ndarray, step: int) -> dict:
    """Pens and bubble rims at lattice points (spacing ``step`` px).

    Each pen at least ``1.5 * step`` px wide that comes near: ``"pen<i>"``, the signed distance
    to its stroke's edge (px, floored at ``-2 * step``), shaped per pixel with its own ink (no ink
    is interpolated between pens, so a window never depends on which pens it sees); ``"pen_k"``
    the ink's streakiness. A thinner pen (handwriting) would break up between lattice points:
    ``"thin"`` > 0 marks where one passes, and the renderer measures it per pixel (``thin_pens``).
    ``"bub_d"``: the signed distance to the bubbles' union (px, < 0 inside, clipped), whose rims
    are drawn per pixel.
    """
    um = 1.0 / lay.mpp
    x, y = np.broadcast_arrays(x.astype(np.float64), y.astype(np.float64))
    ch = {}
    thin = None
    for i, (segs, hw, _) in enumerate(lay.pens):
        m = max(1.2 * hw + 10 * um + 2 * step, hw + 3 * step + 1)  # beyond m: floored values only
        if x.min() > segs[:, [0, 2]].max() + m or x.max() < segs[:, [0, 2]].min() - m \
                or y.min() > segs[:, [1, 3]].max() + m or y.max() < segs[:, [1, 3]].min() - m:
            continue
        if hw < 1.5 * step:
            near = np.maximum(hw + 2.0 * step - seg_dist_near(x, y, segs, m), -step)
            thin = near if thin is None else np.maximum(thin, near)
            continue
        hw_v = hw * (1.0 + 0.08 * _nz.fbm(x, y, 200 * um, _nz.key(lay.seed, 61), 2))
        sd = np.maximum(hw_v - seg_dist_near(x, y, segs, m), -2.0 * step)
        if sd.max() > -2.0 * step:
            ch[f"pen{i}"] = sd
    if ch:
        ch["pen_k"] = 0.8 + 0.2 * _nz.value_noise(x, y, 150 * um, _nz.key(lay.seed, 62))
    if thin is not None and thin.max() > 0:
        ch["thin"] = thin
    # bubbles: min over bubbles of the pseudo-distance to each rim, clipped to +-reach: a bubble
    # left out here is at least reach away from every point, so it could not change the clip
    bd = None
    reach_px = 4.0 * lay.variety["rim_px"] + 2 * step
    for cx, cy, rx, ry, _ in lay.bubbles:
        reach = max(rx, ry) * (1.0 + reach_px / min(rx, ry))
        if x.min() > cx + reach or x.max() < cx - reach or y.min() > cy + reach or y.max() < cy - reach:
            continue
        rho = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
        dist = (rho - 1.0) * min(rx, ry)
        bd = dist if bd is None else np.minimum(bd, dist)
    if bd is not None:
        bd = np.clip(bd, -reach_px, reach_px)
        if np.abs(bd).min() < reach_px:
            ch["bub_d"] = bd
    return ch


def thin_pens(lay, x: np.ndarray, y: np.ndarray, step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Thin pens at pixels x, y (n,): for each, the signed distance to its stroke's edge (px) and its ink (3,)."""
    out = []
    edge = max(1.0, 2.0 / lay.mpp)  # the renderer's edge width: sd <= -edge / 2 draws nothing
    for segs, hw, ink in lay.pens:
        if hw < 1.5 * step:
            out.append((hw - seg_dist_near(x, y, segs, hw + edge + 2.0), np.asarray(ink)))
    return out
