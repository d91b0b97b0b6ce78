"""Where in adipose tissue the model errs: error rate by distance to a wall and to glass.

    python scripts/ceiling_study/adipose_distance.py results/ceiling-study/paper-4940/checkpoint.pt \\
        7033,7039,7035,7032

For each held-out region (seed; 2048 x 2048 at the checkpoint's mpp, 1 um/px in the ceiling
study: results/ceiling-study/README.md) it renders the region with its object labels
(``gigaseg.synth.render_labels``), predicts it with the checkpoint and bins the pixels labelled
"adipose cell" (the cells' interiors, tissue) by their distance to the nearest other tissue
pixel (the cell walls, mostly) and to the nearest background pixel (glass, lumens). It prints,
per bin, how many such pixels there are and how many the model calls background. The defaults
are the study's checkpoint and regions; --size renders smaller regions for a quick look.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[2] / "results" / "ceiling-study"
BINS = (0, 8, 16, 32, 64, 128, 256, 10**6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(RESULTS / "paper-4940" / "checkpoint.pt"),
                        help="checkpoint (default: the study's 4,940-step model)")
    parser.add_argument("seeds", nargs="?", default="7033,7039,7035,7032",
                        help="comma-separated region seeds (default: the study's four weakest held-out regions)")
    parser.add_argument("--size", type=int, default=2048, help="region side, px (default 2048, the study's)")
    args = parser.parse_args(argv)

    from scipy import ndimage

    from gigaseg import tiled_predict
    from gigaseg.checkpoint import load_model
    from gigaseg.synth import make_layout, render_labels

    model, mpp = load_model(args.checkpoint)
    side = args.size
    counts = {kind: np.zeros((2, len(BINS) - 1), np.int64) for kind in ("wall", "glass")}
    for seed in (int(s) for s in args.seeds.split(",")):
        rgb, mask, labels = render_labels(make_layout(seed, side, side, mpp or 1.0), 0, 0, side, side)
        tissue = mask > 0
        missed = tissue & (tiled_predict(model, rgb) < 0.5)
        adipose = labels == 2
        distances = {
            "wall": ndimage.distance_transform_edt(~(tissue & ~adipose)),
            "glass": ndimage.distance_transform_edt(tissue),
        }
        print(f"region {seed}: {adipose.sum()} adipose-cell pixels, {(missed & adipose).sum()} called background")
        for kind, d in distances.items():
            b = np.digitize(d[adipose], BINS) - 1
            n = len(BINS) - 1
            counts[kind][0] += np.bincount(b, minlength=n)[:n]
            counts[kind][1] += np.bincount(b, weights=missed[adipose], minlength=n)[:n].astype(np.int64)
    for kind, (n, wrong) in counts.items():
        print(f"\ndistance to the nearest {'other tissue (walls)' if kind == 'wall' else 'background (glass)'}, px")
        for i in range(len(BINS) - 1):
            if n[i]:
                print(f"  {BINS[i]:>4}-{BINS[i + 1] if BINS[i + 1] < 10**6 else '':<5} {n[i]:>8} px, "
                      f"{wrong[i] / n[i]:6.1%} called background")
    return 0


if __name__ == "__main__":
    sys.exit(main())
