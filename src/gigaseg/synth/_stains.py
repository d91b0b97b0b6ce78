"""Stain families of the variety profile (private): optical-density vectors and uptakes.

A slide of the variety profile is coloured by Beer-Lambert absorption, as the default
profile is, but with a per-slide *family* of stains instead of haematoxylin and eosin:

    OD(pixel)[c] = sum_s v_s[c] * amount_s * sum_m uptake[s, m] * material_m(pixel)
    RGB = glass * illumination * exp(-OD)

``v_s`` is a stain's unit optical-density vector (RGB order), ``material_m`` the per-pixel
amount of a tissue material (``MATERIALS``: collagen, muscle, cytoplasm, fat walls, nuclei,
red cells, mucin, the DAB-positive fraction, silver deposits) and ``uptake`` how much of
stain ``s`` one unit of material ``m`` takes up. Everything here is plain data and a draw
from a ``numpy.random.Generator``; the renderer evaluates the sum (``render.py``).

Where the vectors come from (docs/synth.md, "Stains"):
- haematoxylin, eosin and DAB: Ruifrok & Johnston, "Quantification of histochemical
  staining by color deconvolution", Anal Quant Cytol Histol 23 (2001); for H&E the default
  profile's vectors fitted to CMU-1 (``render._V_H``, ``render._V_E``) are used instead,
  so the two profiles' H&E agree;
- PAS with its haematoxylin, methyl blue and ponceau-fuchsin (Masson's trichrome), Alcian
  blue, iron haematoxylin, fast red and light green SF: the built-in
  vectors of G. Landini's Colour Deconvolution plugin for ImageJ/Fiji (measured on slides);
  fast red stands in for nuclear fast red (Kernechtrot), a similar red;
- Sirius red, picric acid, the silver (Grocott) deposits and haemoglobin: ours, from the
  dyes' absorption maxima (Sirius red ~540 nm like ponceau, picric acid ~360-400 nm:
  yellow, reduced silver: grey-black, nearly flat; haemoglobin: Soret band at 415 nm and
  540-575 nm, little red), checked by eye against real slides.
"""

from __future__ import annotations

import numpy as np

MATERIALS = ("str0", "strf", "mus0", "musf", "epi0", "epic", "adi0", "adia", "nuc", "rbc", "muc", "dab", "ag")
"""Per-pixel materials (render.py computes them):
str0/strf collagen-rich stroma (uniform part / fibre texture), mus0/musf smooth muscle,
epi0/epic cellular cytoplasm (uniform / granular), adi0/adia adipose (matrix / cell walls),
nuc nuclei, rbc red blood cells, muc mucin, dab the DAB-positive material (IHC), ag silver."""

_M = {m: i for i, m in enumerate(MATERIALS)}

# Unit optical-density vectors, RGB (normalised below). See the module docstring.
VECTORS = {
    "H": (0.650, 0.704, 0.286),  # Ruifrok & Johnston 2001
    "H_BLUE": (0.636, 0.606, 0.477),  # ours: kidney-48-5's counterstained tissue (mean OD of its darker half)
    "DAB": (0.268, 0.570, 0.776),  # Ruifrok & Johnston 2001
    "H_PAS": (0.644211, 0.716556, 0.266844),  # Landini, "H PAS"
    "PAS": (0.175411, 0.972178, 0.154589),  # Landini, "H PAS"
    "METHYL_BLUE": (0.7995107, 0.5913521, 0.10528667),  # Landini, "Masson Trichrome"
    "PONCEAU": (0.09997159, 0.73738605, 0.6680326),  # Landini, "Masson Trichrome" (ponceau-fuchsin)
    "IRON_H": (0.6588232, 0.66414213, 0.3533655),  # Landini, iron haematoxylin
    "ALCIAN": (0.874622, 0.457711, 0.158256),  # Landini, "Alcian blue & H"
    "FAST_RED": (0.21393921, 0.85112669, 0.47794022),  # Landini, "FastRed FastBlue DAB"
    "LIGHT_GREEN": (0.94705542, 0.25373821, 0.19650764),  # Landini, "Feulgen Light Green"
    "SIRIUS": (0.12, 0.78, 0.61),  # ours: a red azo dye absorbing ~540 nm, near ponceau
    "PICRIC": (0.05, 0.26, 0.96),  # ours: yellow, absorbs blue
    "SILVER": (0.60, 0.58, 0.55),  # ours: reduced silver, grey-black, nearly flat
    "HAEM": (0.06, 0.47, 0.88),  # ours: haemoglobin, absorbs blue and green
}

# Uptake of each stain by each material (unlisted: 0). "HAEM" is the red cells' own colour,
# present whatever the stain. The H&E rows are the default profile's coefficients
# (render.py, _draw_block_he: cH and cE), so the variety profile's H&E is the same model.
FAMILIES: dict[str, dict[str, dict[str, float]]] = {
    "he-wide": {
        "H": dict(str0=0.05, strf=0.08, mus0=0.05, musf=0.06, epi0=0.6, epic=0.4, adi0=0.01, adia=0.12, nuc=2.1,
                  rbc=0.03, muc=0.35),
        "E": dict(str0=0.06, strf=1.7, mus0=0.9, musf=0.5, epi0=0.5, epic=0.45, adi0=0.015, adia=1.1, nuc=0.3,
                  rbc=1.4, muc=0.12),
        "HAEM": dict(rbc=0.35),
    },
    "ihc": {
        "H": dict(str0=0.14, strf=0.3, mus0=0.2, musf=0.12, epi0=0.45, epic=0.3, adi0=0.01, adia=0.2, nuc=1.5,
                  muc=0.2),
        "DAB": dict(dab=1.0),
        "HAEM": dict(rbc=0.55),
    },
    "pas": {
        "H_PAS": dict(nuc=1.8, epi0=0.08, str0=0.02, strf=0.03),
        "PAS": dict(str0=0.12, strf=0.55, mus0=0.35, musf=0.2, epi0=0.3, epic=0.35, adi0=0.01, adia=0.7, nuc=0.12,
                    rbc=0.35, muc=1.6),
        "HAEM": dict(rbc=0.35),
    },
    "trichrome": {
        "IRON_H": dict(nuc=2.3, epi0=0.05, str0=0.02),
        "PONCEAU": dict(mus0=1.1, musf=0.5, epi0=0.65, epic=0.4, adi0=0.01, adia=0.25, rbc=1.4, str0=0.02,
                        strf=0.06, nuc=0.2),
        "COLLAGEN": dict(str0=0.08, strf=1.35, adi0=0.01, adia=0.8, muc=0.35, musf=0.05),  # methyl blue or light green
        "HAEM": dict(rbc=0.3),
    },
    "sirius": {
        "SIRIUS": dict(str0=0.1, strf=1.6, adi0=0.01, adia=0.9, mus0=0.03, musf=0.08, epi0=0.03),
        "PICRIC": dict(str0=0.12, mus0=0.55, musf=0.2, epi0=0.45, epic=0.2, rbc=1.0, nuc=0.25, muc=0.1),
        "IRON_H": dict(nuc=0.9),
        "HAEM": dict(rbc=0.3),
    },
    "alcian": {
        "ALCIAN": dict(muc=1.9, str0=0.06, strf=0.16, adia=0.05),
        "FAST_RED": dict(nuc=1.25, epi0=0.25, epic=0.15, str0=0.05, strf=0.22, mus0=0.2, musf=0.1, adi0=0.01,
                         adia=0.35, rbc=0.4),
        "HAEM": dict(rbc=0.3),
    },
    "grocott": {
        "LIGHT_GREEN": dict(str0=0.05, strf=0.16, mus0=0.15, musf=0.08, epi0=0.16, epic=0.1, adi0=0.01, adia=0.3,
                            nuc=0.3, rbc=0.2, muc=0.1),
        "SILVER": dict(ag=2.0, nuc=0.04),
        "HAEM": dict(rbc=0.25),
    },
}
STAINS = tuple(FAMILIES)

# Overall amount of stain per slide (log-uniform range): H&E from faded to dark.
_AMOUNT = {"he-wide": (0.18, 1.9), "ihc": (0.6, 1.4), "pas": (0.6, 1.4), "trichrome": (0.6, 1.4),
           "sirius": (0.6, 1.4), "alcian": (0.6, 1.4), "grocott": (0.6, 1.4)}
IHC_PATTERNS = ("cytoplasmic", "nuclear", "scattered", "stromal")


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def draw_family(rng: np.random.Generator, name: str, v_h: np.ndarray, v_e: np.ndarray) -> dict:
    """One slide's stain family ``name``: vectors, uptake matrix and IHC settings.

    Args:
        rng: the slide's generator.
        name: one of ``STAINS``.
        v_h, v_e: the slide's haematoxylin and eosin vectors (the default profile's draw),
            used by "he-wide".

    Returns:
        A dict: ``vec`` (k, 3) unit OD vectors, ``uptake`` (k, len(MATERIALS)) with the
        per-slide amounts folded in, ``names`` the k stain names, ``amount`` the overall
        amount, and for IHC ``dab_level`` (0 = negative .. ~1.6 heavy), ``dab_pattern`` and
        ``dab_fraction`` (the share of the tissue where the marker is expressed).
    """
    spec = FAMILIES[name]
    lo, hi = _AMOUNT[name]
    amount = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    names, vecs, rows = [], [], []
    for stain, up in spec.items():
        if stain == "H" and name == "he-wide":
            vec = v_h
        elif stain == "H":  # IHC counterstain: between the textbook vector and a blued one
            a = rng.uniform(0.0, 1.0)
            vec = np.abs((1 - a) * _unit(VECTORS["H"]) + a * _unit(VECTORS["H_BLUE"]) + rng.normal(0, 0.02, 3))
        elif stain == "E":
            vec = v_e
        elif stain == "COLLAGEN":  # Masson's: aniline/methyl blue, or light green in some labs
            vec = VECTORS["METHYL_BLUE"] if rng.random() < 0.7 else VECTORS["LIGHT_GREEN"]
            vec = np.abs(_unit(vec) + rng.normal(0, 0.03, 3))
        else:
            vec = np.abs(_unit(VECTORS[stain]) + rng.normal(0, 0.03, 3))
        row = np.zeros(len(MATERIALS))
        for m, u in up.items():
            row[_M[m]] = u
        scale = 1.0 if stain == "HAEM" else amount * rng.uniform(0.8, 1.25)
        names.append(stain)
        vecs.append(_unit(vec))
        rows.append(row * scale)
    out = {"name": name, "names": tuple(names), "vec": np.array(vecs), "uptake": np.array(rows), "amount": amount}
    if name == "ihc":
        r = rng.random()  # none to heavy: a third nearly negative
        level = rng.uniform(0.0, 0.06) if r < 0.3 else rng.uniform(0.15, 0.8) if r < 0.7 else rng.uniform(0.8, 1.7)
        out["dab_level"] = float(level)
        out["dab_pattern"] = IHC_PATTERNS[int(rng.integers(0, len(IHC_PATTERNS)))]
        out["dab_fraction"] = float(rng.uniform(0.1, 0.9))
    return out


def channel_weights(fam: dict) -> np.ndarray:
    """(3, len(MATERIALS)) float32: the OD of one unit of each material in R, G, B."""
    return (fam["vec"].T @ fam["uptake"]).astype(np.float32)
