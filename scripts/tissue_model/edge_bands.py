"""Where a tissue model puts the edge of tissue: faded rims against sharp edges (NOTE [Sharp edges]).

    python scripts/tissue_model/edge_bands.py [--model FILE] [--slides 12] [--first 95000] [--out bands.json]

Draws synthetic slides (profile "all", 1024 x 1024 at the model's resolution) twice: as drawn,
each fragment fading to a pale rim (0.12-0.4 of its stain), and with its tissue stained to the
outline (``gigaseg.synth.with_sharp_edges``, pale_min 1). The mask is the same for both. Each is
predicted as ``gigaseg predict`` reads it (glass balance and seam correction, then the model's edge
trim, NOTE [Edge trim]; ``--edge-trim 0`` leaves the network's edge as it is), at the model's
resolution and area-averaged by 2 then enlarged back (as a slide at twice the model's um/px is
read; scored on that coarse grid, each coarse pixel taking the model's pixel under its centre as
the mask TIFF does, against the mask's pixels at least half covered). Reports, per variant and
factor: the share of the 2-pixel band just outside the true edge called tissue (false rim), the
share of the 2-pixel band just inside called background (missed rim) and the Dice. A model whose
edge is right on both kinds of edge has both shares low on both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Width of the bands on either side of the true edge, in pixels of the grid scored.
BAND = 2


def bands(pred: np.ndarray, truth: np.ndarray) -> list[int]:
    """``[false outside, band outside, missed inside, band inside, pred & truth, pred, truth]``."""
    from scipy import ndimage

    outside = ndimage.binary_dilation(truth, iterations=BAND) & ~truth
    inside = truth & ~ndimage.binary_erosion(truth, iterations=BAND)
    return [int((pred & outside).sum()), int(outside.sum()), int((~pred & inside).sum()), int(inside.sum()),
            int((pred & truth).sum()), int(pred.sum()), int(truth.sum())]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint or weights file (default: the built-in model)")
    ap.add_argument("--slides", type=int, default=12, help="synthetic slides")
    ap.add_argument("--first", type=int, default=95000, metavar="SEED", help="their first seed")
    ap.add_argument("--size", type=int, default=1024, help="their side in pixels")
    ap.add_argument("--edge-trim", type=float, default=None, metavar="RATIO",
                    help="the edge trim's ratio (default: the model's, 0.4 for the built-in one; 0: none)")
    ap.add_argument("--out", default=None, help="write the counts and shares as JSON here")
    args = ap.parse_args(argv)
    if args.size % 2:
        raise SystemExit(f"--size {args.size}: give an even size (the slides are also scored at half of it)")

    import torch
    from tm_siblings import sibling

    import gigaseg
    from gigaseg.checkpoint import edge_trim
    from gigaseg.edges import trim_edges
    from gigaseg.engine import tiled_predict
    from gigaseg.glass import balance_for, read_glass
    from gigaseg.synth import make_layout, render_labels, with_sharp_edges

    torch.set_num_threads(1)
    net, mpp = gigaseg.load_model(args.model)
    ratio = edge_trim(net) if args.edge_trim is None else args.edge_trim
    n, half = args.size, args.size // 2
    totals: dict[str, np.ndarray] = {}
    for seed in range(args.first, args.first + args.slides):
        layout = make_layout(seed, n, n, mpp or 4.0, profile="all")
        for variant, lay in (("as drawn", layout), ("sharp", with_sharp_edges(layout, 1.0))):
            rgb, mask, _ = render_labels(lay, 0, 0, n, n)
            truth = mask == 1
            for f in (1, 2):
                x = sibling("make_data").degrade(rgb, f) if f > 1 else rgb
                seen = balance_for(net, x)
                p = np.rint(tiled_predict(net, seen) * 255).astype(np.uint8)
                if ratio > 0:  # as predict_slide trims the rows it writes
                    trim_edges(np.asarray(seen[:, :]), p, 128, ratio, read_glass(seen))
                pred = p >= 128
                if f == 2:
                    pred = pred[1::2, 1::2]  # the model's pixel under each coarse pixel's centre
                    t = truth.reshape(half, 2, half, 2).mean((1, 3)) >= 0.5
                else:
                    t = truth
                key = f"{variant}, x{f}"
                totals[key] = totals.get(key, np.zeros(7, np.int64)) + bands(pred, t)
        print(seed, file=sys.stderr, flush=True)
    rows = {}
    for key, (fo, bo, mi, bi, inter, p, t) in totals.items():
        rows[key] = {"false_outside": round(fo / max(bo, 1), 4), "missed_inside": round(mi / max(bi, 1), 4),
                     "dice": round(2 * inter / max(p + t, 1), 4), "counts": [int(v) for v in (fo, bo, mi, bi)]}
    print(f"| slides {args.first}-{args.first + args.slides - 1} | false in the {BAND} px outside | "
          f"missed in the {BAND} px inside | Dice |\n|---|---|---|---|")
    for key, r in rows.items():
        print(f"| {key} | {r['false_outside']:.3f} | {r['missed_inside']:.3f} | {r['dice']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model or "builtin", "edge_trim": ratio,
                                              "slides": args.slides,
                                              "first_seed": args.first, "size": args.size, "mpp": mpp,
                                              "band_px": BAND, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
