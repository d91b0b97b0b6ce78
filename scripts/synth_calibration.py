"""Compare the colour statistics of synthetic slides with a real H&E slide.

Renders docs/synth-calibration.png: RGB and HSV histograms of tissue and of glass,
real (CMU-1-Small-Region.svs with its pseudo tissue mask) vs synthetic (a few seeds,
JPEG-compressed at quality 90 like the written slides), plus thumbnails and
full-resolution crops side by side. Prints the summary statistics as JSON.

    .venv/bin/python scripts/synth_calibration.py [--out docs/synth-calibration.png]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    from matplotlib.colors import rgb_to_hsv

    return rgb_to_hsv(rgb.astype(np.float32) / 255.0)


def _jpeg(rgb: np.ndarray, quality: int = 90) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _real():
    import openslide

    slide = openslide.OpenSlide(str(REAL / "slides" / "CMU-1-Small-Region.svs"))
    rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    m = np.load(REAL / "masks" / "tissue-mask-cmu-1-small-region.npy")
    mask = np.repeat(np.repeat(m, 10, 0), 10, 1)
    h, w = mask.shape
    return rgb[:h, :w], mask


def _synth(seeds, size):
    from gigaseg.synth import render_region

    out = []
    for s in seeds:
        rgb, mask = render_region(s, 0, 0, size[0], size[1], width=size[0], height=size[1], mpp=0.5)
        out.append((_jpeg(rgb), mask.astype(bool)))
    return out


def _stats(pix: np.ndarray) -> dict:
    hsv = _rgb_to_hsv(pix[None])[0]
    return {
        "n": int(pix.shape[0]),
        "rgb_mean": [round(float(v), 1) for v in pix.mean(0)],
        "rgb_std": [round(float(v), 1) for v in pix.std(0)],
        "sat_mean": round(float(hsv[:, 1].mean()), 3),
        "val_mean": round(float(hsv[:, 2].mean()), 3),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "synth-calibration.png"))
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--size", default="6000x3000", help="synthetic slide size WxH (px at 0.5 um/px)")
    args = ap.parse_args(argv)
    if not (REAL / "slides" / "CMU-1-Small-Region.svs").exists():
        print(f"real slide not found under {REAL}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = [int(s) for s in args.seeds.split(",")]
    size = tuple(int(v) for v in args.size.lower().split("x"))
    real_rgb, real_mask = _real()
    synth = _synth(seeds, size)
    rng = np.random.default_rng(0)

    def sample(pairs, tissue, n=400_000):
        pix = np.concatenate([rgb[m == tissue] for rgb, m in pairs])
        return pix[rng.choice(pix.shape[0], min(n, pix.shape[0]), replace=False)]

    groups = {
        ("tissue", "real"): sample([(real_rgb, real_mask)], True),
        ("tissue", "synthetic"): sample(synth, True),
        ("glass", "real"): sample([(real_rgb, real_mask)], False),
        ("glass", "synthetic"): sample(synth, False),
    }
    stats = {f"{a}/{b}": _stats(v) for (a, b), v in groups.items()}
    stats["tissue_fraction"] = {"real": round(float(real_mask.mean()), 3),
                                "synthetic": round(float(np.mean([m.mean() for _, m in synth])), 3)}

    fig = plt.figure(figsize=(20, 21))
    gs = fig.add_gridspec(5, 6, height_ratios=[1, 1, 1.5, 2.2, 2.2], hspace=0.3, wspace=0.25, top=0.95, bottom=0.02)
    names = ["R", "G", "B", "H (hue)", "S (saturation)", "V (value)"]
    for row, cls in enumerate(["tissue", "glass"]):
        for j in range(6):
            ax = fig.add_subplot(gs[row, j])
            for src, col in (("real", "k"), ("synthetic", "tab:red")):
                pix = groups[(cls, src)]
                v = pix[:, j].astype(np.float32) if j < 3 else _rgb_to_hsv(pix[None])[0][:, j - 3] * 255.0
                lo = 200 if (cls == "glass" and j in (0, 1, 2, 5)) else 0
                hi = 60 if (cls == "glass" and j == 4) else 256
                ax.hist(v, bins=64, range=(lo, hi), density=True, histtype="step", color=col, label=src, lw=1.4)
            ax.set_title(f"{cls}: {names[j]}", fontsize=10)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.legend(fontsize=8)
    # thumbnails
    ax = fig.add_subplot(gs[2, 0:2])
    ax.imshow(real_rgb[::6, ::6])
    ax.set_title("real: CMU-1-Small-Region (thumbnail)")
    ax.axis("off")
    ax = fig.add_subplot(gs[2, 2:6])
    strip = np.concatenate([rgb[::12, ::12] for rgb, _ in synth[:2]], axis=0)
    ax.imshow(strip)
    ax.set_title(f"synthetic seeds {seeds[:2]} ({size[0]}x{size[1]} at 0.5 um/px, thumbnails)")
    ax.axis("off")
    # full-resolution crops
    real_crops = [(1000, 600), (2000, 1200), (400, 900)]
    for j, (y, x) in enumerate(real_crops):
        ax = fig.add_subplot(gs[3, 2 * j : 2 * j + 2])
        ax.imshow(real_rgb[y : y + 512, x : x + 512])
        ax.set_title(f"real 512x512 crop at ({x}, {y})", fontsize=10)
        ax.axis("off")
    for j in range(3):
        rgb, m = synth[j % len(synth)]
        # pick a crop with tissue and some glass
        frac = [(abs(m[y : y + 512, x : x + 512].mean() - (0.9 if j else 0.6)), y, x)
                for y in range(0, m.shape[0] - 512, 256) for x in range(0, m.shape[1] - 512, 256)]
        _, y, x = min(frac)
        ax = fig.add_subplot(gs[4, 2 * j : 2 * j + 2])
        ax.imshow(rgb[y : y + 512, x : x + 512])
        ax.set_title(f"synthetic seed {seeds[j % len(seeds)]} crop at ({x}, {y})", fontsize=10)
        ax.axis("off")
    fig.suptitle("gigaseg.synth calibration: real H&E (black) vs synthetic (red); synthetic JPEG q90",
                 fontsize=14, y=0.975)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=60, bbox_inches="tight")
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
