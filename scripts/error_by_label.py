"""Where a model's errors on a synthetic region come from, by drawn object.

Renders a window of a synthetic region with its map of drawn objects (``gigaseg.synth.
render_labels``: glass, tissue, adipose cells, folds, faint edges, lumens, pen ink, dust,
bubble rims, out of scan), predicts it with a checkpoint (exact tiled forward pass) and prints,
per object, its share of the window, how much of it the model calls tissue, and its share of all
errors (missed tissue or false tissue). It tells whether a held-out Dice below target comes from
an object class the model has not learned or from outlines.

    python scripts/error_by_label.py --checkpoint results/paper-reproduction/checkpoint.pt \\
        --seed 1008 --region 16000x64000 --window 6000,24000,4096,16384

The default window is a 4096 x 16384 piece of held-out region 1008 of the paper reproduction
(16000 x 64000 at the checkpoint's mpp). Prints a table, or one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _window(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 0:
        raise SystemExit(f"error_by_label: --window must be y0,x0,h,w (4 non-negative integers), got {text!r}")
    return values


def error_table(labels: np.ndarray, mask: np.ndarray, predicted: np.ndarray) -> dict:
    """Per-label pixel counts and errors; ``predicted`` and ``mask`` are 0/1 arrays."""
    from gigaseg.synth import LABELS

    errors = int(np.count_nonzero(predicted != mask))
    inter = int(np.count_nonzero(predicted & mask))
    dice = 2 * inter / max(1, int(predicted.sum()) + int(mask.sum()))
    rows = []
    n = labels.size
    for code, name in LABELS.items():
        sel = labels == code
        count = int(np.count_nonzero(sel))
        if not count:
            continue
        called = int(np.count_nonzero(predicted[sel]))
        wrong = int(np.count_nonzero(predicted[sel] != mask[sel]))
        rows.append({
            "label": code, "name": name, "pixels": count, "share_of_window": count / n,
            "called_tissue": called / count, "errors": wrong,
            "share_of_errors": wrong / errors if errors else 0.0,
        })
    return {"dice": dice, "pixels": n, "errors": errors, "labels": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a gigaseg checkpoint (.pt)")
    parser.add_argument("--seed", type=int, default=1008, help="synthetic region seed (default 1008, held out)")
    parser.add_argument("--region", default="16000x64000", help="region size HxW that defines the layout")
    parser.add_argument("--window", default="6000,24000,4096,16384", help="y0,x0,h,w of the rendered window")
    parser.add_argument("--mpp", type=float, default=None, help="default: the checkpoint's training mpp")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from gigaseg import tiled_predict
    from gigaseg.checkpoint import load_model
    from gigaseg.prepare import parse_size
    from gigaseg.synth import make_layout, render_labels

    width, height = parse_size(args.region)
    y0, x0, h, w = _window(args.window)
    model, trained_mpp = load_model(args.checkpoint)
    mpp = args.mpp or trained_mpp
    if not mpp:
        raise SystemExit(f"error_by_label: {args.checkpoint} states no training mpp; give --mpp")
    layout = make_layout(args.seed, width, height, mpp)
    rgb, mask, labels = render_labels(layout, x0, y0, w, h)
    prob = tiled_predict(model, rgb)  # load_model returns it in eval mode
    predicted = (prob >= args.threshold).astype(np.uint8)
    result = {"checkpoint": args.checkpoint, "seed": args.seed, "region": [height, width],
              "window": [y0, x0, h, w], "mpp": mpp, "threshold": args.threshold,
              **error_table(labels, mask.astype(np.uint8), predicted)}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"Dice {result['dice']:.4f} on a {h} x {w} window of region {args.seed} at {mpp} um/px; "
          f"errors: {result['errors'] / result['pixels']:.2%} of pixels")
    print(f"{'object':32} {'share':>8} {'called tissue':>14} {'share of errors':>16}")
    for r in result["labels"]:
        print(f"{r['name']:32} {r['share_of_window']:8.2%} {r['called_tissue']:14.2%} {r['share_of_errors']:16.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
