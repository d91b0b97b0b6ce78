"""Dice on the real CMU-1-Small-Region slide against its pseudo-mask, after giving the model's
mask the pseudo-mask's own post-processing (holes filled, dilated by R pixels at its 1/10 scale).

    python scripts/ceiling_study/real_outline.py CHECKPOINT [CHECKPOINT ...]

Frozen: kept as the record of the ceiling study's outline comparison on the real slide; not
maintained against later code.

The pseudo-mask (``../shared/data/real/masks``) is histolab's algorithmic tissue mask: a
threshold, then dilation and hole filling, at 1/10 of the slide's resolution. A model that draws
the outline tight to the stain loses Dice against it at the margin. This prints, per checkpoint,
the Dice with the model's mask sampled to the pseudo-mask's grid (nearest), holes filled and
dilated by R = 0, 1, 2, 3, 5 and 8 pixels of that grid (about 5 um each).
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

from gigaseg.metrics import load_mask
from gigaseg.predict import predict_slide

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
RADII = (0, 1, 2, 3, 5, 8)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    ref = np.load(REAL / "masks" / "tissue-mask-cmu-1-small-region.npy").astype(bool)
    h, w = ref.shape
    print("checkpoint " + " ".join(f"R={r}" for r in RADII))
    for ckpt in argv:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = predict_slide(ckpt, REAL / "slides" / "CMU-1-Small-Region.svs", Path(tmp) / "p", progress=False)
            mask = load_mask(pred["paths"]["mask"])[0] > 0
        ys = ((np.arange(h) + 0.5) * mask.shape[0] / h).astype(int)
        xs = ((np.arange(w) + 0.5) * mask.shape[1] / w).astype(int)
        small = mask[ys][:, xs]
        dice = []
        for r in RADII:
            q = ndimage.binary_fill_holes(ndimage.binary_dilation(small, iterations=r) if r else small)
            dice.append(2 * (q & ref).sum() / (q.sum() + ref.sum()))
        print(ckpt + " " + " ".join(f"{d:.3f}" for d in dice))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
