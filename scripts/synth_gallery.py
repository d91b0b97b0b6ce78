"""Render docs/synth-gallery.png: one tile per category of the synthetic slide generator.

    python scripts/synth_gallery.py                      # writes docs/synth-gallery.png
    python scripts/synth_gallery.py --out /tmp/g.png --tile 160x120

Each tile is a slide of the variety profile drawn with that one category
(``profile="<category>"``; the other axes take their defaults: H&E, sections, white glass),
rendered with ``gigaseg.synth.render_labels``: either the whole slide box-averaged to the tile
("whole", how a low-resolution view sees it) or a window at full resolution ("detail") chosen
where the category shows (the most pixels of its label codes, or tissue edges). A small inset
in the corner is the exact mask (white: tissue). The extremes of a range (faded and dark H&E,
DAB-negative and heavy IHC, the lowest JPEG quality) are the most extreme of the first 40 seeds.
Everything is a pure function of fixed seeds: two runs write the same bytes (tested by
tests/test_synth.py on a small version).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# (category, title, profile, seed or (how, key), mpp, view, what the window should show: label
# codes, or a tissue fraction)
TILES = [
    ("he-wide", "H&E, faded", "he-wide", ("min", "amount"), 1.0, "detail", 0.85),
    ("he-wide", "H&E, dark", "he-wide", ("max", "amount"), 1.0, "detail", 0.85),
    ("ihc", "IHC, DAB negative", "ihc", ("min", "dab_level"), 1.0, "detail", 0.85),
    ("ihc", "IHC, DAB heavy", "ihc", ("max", "dab_level"), 1.0, "detail", 0.85),
    ("pas", "PAS", "pas", 3, 1.0, "detail", 0.85),
    ("trichrome", "Masson's trichrome", "trichrome", 3, 1.0, "detail", 0.85),
    ("sirius", "Sirius red", "sirius", 3, 1.0, "detail", 0.85),
    ("alcian", "Alcian blue", "alcian", 3, 1.0, "detail", 0.85),
    ("grocott", "Grocott silver", "grocott", 3, 1.0, "detail", 0.85),
    ("sections", "sections", "sections", 2, 8.0, "whole", ()),
    ("needle", "needle biopsies", "needle", 2, 8.0, "whole", ()),
    ("tma", "TMA cores", "tma", 2, 8.0, "whole", ()),
    ("fragments", "tiny fragments", "fragments", 2, 8.0, "whole", ()),
    ("adipose", "adipose, 2 um/px", "adipose", 2, 2.0, "detail", (2,)),
    ("adipose", "adipose, 8 um/px", "adipose", 2, 8.0, "whole", ()),
    ("frozen", "frozen section", "frozen", 2, 2.0, "detail", (10, 3)),
    ("clot", "blood clot", "clot", 2, 4.0, "detail", (11,)),
    ("bg-white", "white glass", "bg-white", 2, 8.0, "whole", ()),
    ("bg-grey", "grey glass", "bg-grey", 2, 8.0, "whole", ()),
    ("bg-tinted", "tinted glass", "bg-tinted", 2, 8.0, "whole", ()),
    ("bg-dark", "dark background", "bg-dark", 2, 8.0, "whole", ()),
    ("padding", "out-of-scan padding", "padding", 2, 8.0, "whole", ()),
    ("coverslip", "coverslip edge", "coverslip", 2, 4.0, "detail", (15,)),
    ("seams", "tile seams", "seams", 2, 4.0, "whole", ()),
    ("focus", "out of focus", "focus", 2, 1.0, "focus", ()),
    ("jpeg", "JPEG, lowest q", "jpeg", ("min", "jpeg"), 1.0, "zoom", ()),
    ("pen", "pen", "pen", 2, 8.0, "whole", ()),
    ("handwriting", "handwriting", "handwriting", 2, 8.0, "whole", ()),
    ("dust", "dust", "dust", 2, 2.0, "detail", (7, 18)),
    ("bubbles", "bubbles", "bubbles", 2, 8.0, "whole", ()),
    ("dye", "marking dye", "dye", 2, 4.0, "detail", (13, 14)),
    ("smudge", "smudges", "smudge", 2, 8.0, "whole", ()),
    ("fibre", "hairs and fibres", "fibre", 2, 4.0, "detail", (20,)),
    ("strand", "tissue strands", "strand", 2, 4.0, "detail", (23,)),
    ("smear", "smears", "smear", 2, 8.0, "whole", ()),
]
SEARCH = 40  # seeds searched for the extremes of a range


def _value(layout, key: str) -> float:
    if key == "jpeg":
        return float(layout.variety["jpeg"])
    return float(layout.params["stain"][key])


def _pick_seed(spec, profile: str, size, mpp: float) -> int:
    if isinstance(spec, int):
        return spec
    from gigaseg.synth import make_layout

    how, key = spec
    vals = [_value(make_layout(s, size[0], size[1], mpp, profile=profile), key) for s in range(SEARCH)]
    return int(np.argmin(vals) if how == "min" else np.argmax(vals))


def _box(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    a = a[:h, :w].astype(np.float64)
    return a.reshape(h // f, f, w // f, f, *a.shape[2:]).mean(axis=(1, 3))


def _window(lab: np.ndarray, mask: np.ndarray, tw: int, th: int, want) -> tuple[int, int]:
    """Top-left of the tile-sized window that shows the most of the label codes ``want``, or
    whose tissue fraction is nearest ``want`` (a number; () means 0.65)."""
    h, w = mask.shape
    best, at = -1.0, (0, 0)
    target = want if isinstance(want, float) else 0.65
    for y in np.linspace(0, h - th, 7).astype(int):
        for x in np.linspace(0, w - tw, 9).astype(int):
            m = mask[y : y + th, x : x + tw]
            if isinstance(want, tuple) and want:
                score = float(np.isin(lab[y : y + th, x : x + tw], want).mean()) + 0.01 * (m.mean() > 0.2)
            else:
                score = 1.0 - abs(float(m.mean()) - target)
            if score > best:
                best, at = score, (int(x), int(y))
    return at


def _size(tile, tw: int, th: int) -> tuple[int, int]:
    """The virtual slide of a tile: 4x the tile ("whole", box-averaged) or 3x (a window of it)."""
    return (tw * 4, th * 4) if tile[5] == "whole" else (tw * 3, th * 3)


def render_tile(tile, tw: int, th: int) -> tuple[np.ndarray, np.ndarray]:
    """The (th, tw, 3) image and (th, tw) mask of one gallery tile."""
    from gigaseg.synth import make_layout, render_labels

    _, _, profile, spec, mpp, view, want = tile
    f = 4  # "whole": the slide is 4x the tile, box-averaged
    size = _size(tile, tw, th)
    seed = _pick_seed(spec, profile, size, mpp)
    lay = make_layout(seed, size[0], size[1], mpp, profile=profile)
    if view == "whole":
        rgb, mask, _ = render_labels(lay, 0, 0, size[0], size[1])
        return np.rint(_box(rgb, f)).astype(np.uint8), (_box(mask, f) >= 0.5).astype(np.uint8)
    if view == "focus" and lay.blurs.shape[0]:  # where an out-of-focus patch's edge crosses tissue
        rgb, mask, _ = render_labels(lay, 0, 0, size[0], size[1])
        cx, cy, r, _ = lay.blurs[0]
        best, at = -1.0, (0, 0)
        for a in np.linspace(0, 2 * np.pi, 16, endpoint=False):
            x = int(np.clip(cx + 0.75 * r * np.cos(a) - tw / 2, 0, size[0] - tw))
            y = int(np.clip(cy + 0.75 * r * np.sin(a) - th / 2, 0, size[1] - th))
            score = 1.0 - abs(float(mask[y : y + th, x : x + tw].mean()) - 0.7)
            if score > best:
                best, at = score, (x, y)
        x, y = at
        return rgb[y : y + th, x : x + tw], mask[y : y + th, x : x + tw]
    if view == "zoom":  # JPEG blocks at 2x, nearest neighbour
        rgb, mask, lab = render_labels(lay, 0, 0, size[0], size[1])
        x, y = _window(lab, mask, tw // 2, th // 2, want)
        rgb, mask = rgb[y : y + th // 2, x : x + tw // 2], mask[y : y + th // 2, x : x + tw // 2]
        return np.repeat(np.repeat(rgb, 2, 0), 2, 1), np.repeat(np.repeat(mask, 2, 0), 2, 1)
    rgb, mask, lab = render_labels(lay, 0, 0, size[0], size[1])
    x, y = _window(lab, mask, tw, th, want)
    return rgb[y : y + th, x : x + tw], mask[y : y + th, x : x + tw]


def build(tw: int = 256, th: int = 192, tiles=None) -> np.ndarray:
    """The gallery as an (H, W, 3) uint8 array: tiles in a grid, each titled, with a mask inset."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = TILES if tiles is None else tiles
    cols = 6
    pad, head = 4, max(10, th // 12)
    rows = -(-len(tiles) // cols)
    out = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + head + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    done = {}
    # render grouped by (seed, mpp): tiles of one slide texture bank follow each other (cached)
    keys = [(_pick_seed(t[3], t[2], _size(t, tw, th), t[4]), t[4]) for t in tiles]
    for i in sorted(range(len(tiles)), key=lambda k: keys[k]):
        done[i] = render_tile(tiles[i], tw, th)
    for i, tile in enumerate(tiles):
        rgb, mask = done[i]
        x0 = pad + (i % cols) * (tw + pad)
        y0 = pad + (i // cols) * (th + head + pad)
        im = rgb.copy()
        iw, ih = max(8, tw // 5), max(6, th // 5)
        inset = mask[:: max(1, th // ih), :: max(1, tw // iw)][:ih, :iw]
        im[th - inset.shape[0] :, tw - inset.shape[1] :] = (inset * 255)[..., None]
        im[th - inset.shape[0] - 1, tw - inset.shape[1] - 1 :] = 0
        im[th - inset.shape[0] - 1 :, tw - inset.shape[1] - 1] = 0
        out.paste(Image.fromarray(im), (x0, y0 + head))
        draw.text((x0, y0), f"{tile[1]}  [{tile[0]}]", fill=(0, 0, 0), font=font)
    return np.asarray(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "synth-gallery.png"))
    ap.add_argument("--tile", default="256x192", metavar="WxH", help="tile size in pixels")
    args = ap.parse_args(argv)
    from PIL import Image

    tw, th = (int(v) for v in args.tile.lower().split("x"))
    Image.fromarray(build(tw, th)).save(args.out, optimize=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
