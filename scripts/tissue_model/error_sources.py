"""Where a tissue model's held-out synthetic errors come from: per drawn object, per distance, per category.

    python scripts/tissue_model/error_sources.py [--model FILE] [--slides 48] [--first SEED] [--out errors.json]

Predicts the held-out synthetic slides of scripts/real_slides_eval.py --synthetic (profile
"all", seeds 90000.., 1024 x 1024 at the model's resolution) and attributes every wrong pixel
(prediction at threshold 0.5 against the mask; ignored pixels left out) to the object drawn
there (``gigaseg.synth.render.LABELS``: glass, adipose cell, smudge on glass, ...). Prints, per
label, its pixels, the share of them that is wrong and its share of all wrong pixels; then
glass called tissue and adipose cells called glass by their distance to the tissue's edge
(pixels: next to the edge is the outline's precision, far from it a whole area misread); then
the glass called tissue per category of the slides (a slide counts in each of its categories).
With --out, the same as JSON. The numbers are in results/tissue-model/README.md ("Where the
errors are").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Distance bins (pixels at the model's resolution) of the glass and adipose errors.
BINS = (0, 2, 8, 32, None)


def _by_distance(wrong: np.ndarray, dist: np.ndarray) -> list[int]:
    """The count of ``wrong`` pixels in each distance bin (``BINS``: (a, b])."""
    return [int((wrong & (dist > a) & (dist <= (np.inf if b is None else b))).sum()) for a, b in zip(BINS, BINS[1:])]


def attribute(pred: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> dict:
    """The errors of one slide: per label ``[pixels, wrong]``, and the glass called tissue and the
    adipose cells called glass per distance bin to the tissue's edge."""
    from scipy import ndimage

    tissue = mask == 1
    wrong = (pred != tissue) & (mask != 255)
    per_label = {int(k): [int((labels == k).sum()), int((wrong & (labels == k)).sum())] for k in np.unique(labels)}
    outside = ndimage.distance_transform_edt(~tissue) if tissue.any() else np.full(mask.shape, np.inf)
    inside = ndimage.distance_transform_edt(tissue)
    return {"labels": per_label,
            "glass_called_tissue": _by_distance(wrong & (labels == 0), outside),
            "adipose_called_glass": _by_distance(wrong & (labels == 2), inside)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint or weights file (default: the built-in model)")
    ap.add_argument("--slides", type=int, default=48, help="held-out synthetic slides (seeds 90000..)")
    ap.add_argument("--first", type=int, default=None, metavar="SEED",
                    help="first seed (default 90000, the held-out set; 97000 and up: slides no stage has looked at)")
    ap.add_argument("--size", type=int, default=1024, help="their side in pixels")
    ap.add_argument("--out", default=None, help="write the counts as JSON here")
    args = ap.parse_args(argv)

    import torch
    from evaluate import held_out

    import gigaseg
    from gigaseg.engine import tiled_predict
    from gigaseg.synth.render import LABELS

    torch.set_num_threads(1)
    net, mpp = gigaseg.load_model(args.model)
    totals: Counter = Counter()
    wrongs: Counter = Counter()
    glass = np.zeros(len(BINS) - 1, np.int64)
    adipose = np.zeros(len(BINS) - 1, np.int64)
    glass_by_category: Counter = Counter()
    for _seed, categories, rgb, mask, labels in held_out(args.slides, args.size, mpp or 4.0, labels=True,
                                                                  first=args.first):
        a = attribute(tiled_predict(net, rgb) >= 0.5, mask, labels)
        for k, (n, w) in a["labels"].items():
            totals[k] += n
            wrongs[k] += w
        glass += a["glass_called_tissue"]
        adipose += a["adipose_called_glass"]
        for c in categories:
            glass_by_category[c] += sum(a["glass_called_tissue"])
    all_wrong = max(1, sum(wrongs.values()))
    print("| label | pixels | wrong | share wrong | share of all errors |\n|---|---|---|---|---|")
    for k in sorted(totals, key=lambda k: -wrongs[k]):
        print(f"| {k} {LABELS.get(k, '?')} | {totals[k]} | {wrongs[k]} | {wrongs[k] / totals[k]:.3f} | "
              f"{wrongs[k] / all_wrong:.3f} |")
    names = [f"{a}-{b}" if b is not None else f">{a}" for a, b in zip(BINS, BINS[1:])]
    print("\ndistance to the tissue's edge (px):", " ".join(names))
    print("glass called tissue:", " ".join(str(v) for v in glass))
    print("adipose called glass:", " ".join(str(v) for v in adipose))
    print("\nglass called tissue per category:",
          ", ".join(f"{c} {n}" for c, n in glass_by_category.most_common()))
    if args.out:
        Path(args.out).write_text(json.dumps({
            "model": args.model or "builtin", "slides": args.slides, "first_seed": args.first, "size": args.size,
            "mpp": mpp,
            "labels": {LABELS.get(k, str(k)): {"pixels": totals[k], "wrong": wrongs[k]} for k in sorted(totals)},
            "distance_bins_px": names, "glass_called_tissue": glass.tolist(), "adipose_called_glass": adipose.tolist(),
            "glass_called_tissue_per_category": dict(glass_by_category)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
