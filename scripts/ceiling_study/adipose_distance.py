"""Where in adipose tissue the model errs: error rate by distance to a wall and to glass.

    python results/ceiling-study/adipose_distance.py CHECKPOINT 7033,7039,7035,7032

For each held-out region (seed; 2048 x 2048 at 1 um/px, as in this study) it renders the region
with its object labels (``gigaseg.synth.render_labels``), predicts it with the checkpoint and
bins the pixels labelled "adipose cell" (the cells' interiors, tissue) by their distance to the
nearest other tissue pixel (the cell walls, mostly) and to the nearest background pixel (glass,
lumens). It prints, per bin, how many such pixels there are and how many the model calls
background.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy import ndimage

from gigaseg import tiled_predict
from gigaseg.checkpoint import load_model
from gigaseg.synth import make_layout, render_labels

BINS = (0, 8, 16, 32, 64, 128, 256, 10**6)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    model, meta = load_model(argv[0])
    counts = {kind: np.zeros((2, len(BINS) - 1), np.int64) for kind in ("wall", "glass")}
    for seed in (int(s) for s in argv[1].split(",")):
        rgb, mask, labels = render_labels(make_layout(seed, 2048, 2048, meta.get("mpp") or 1.0), 0, 0, 2048, 2048)
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
            counts[kind][0] += np.bincount(b, minlength=len(BINS) - 1)[: len(BINS) - 1]
            counts[kind][1] += np.bincount(b, weights=missed[adipose], minlength=len(BINS) - 1)[: len(BINS) - 1].astype(np.int64)
    for kind, (n, wrong) in counts.items():
        print(f"\ndistance to the nearest {'other tissue (walls)' if kind == 'wall' else 'background (glass)'}, px")
        for i in range(len(BINS) - 1):
            if n[i]:
                print(f"  {BINS[i]:>4}-{BINS[i + 1] if BINS[i + 1] < 10**6 else '':<5} {n[i]:>8} px, "
                      f"{wrong[i] / n[i]:6.1%} called background")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
