"""Held-out Dice of a checkpoint on the whole held-out regions of a store (by default the paper
reproduction's four 16000 x 64000 regions), with precision and recall per region.

    python scripts/ceiling_study/held_out_gigapixel.py results/ceiling-study/paper-4940/checkpoint.pt \\
        runs/paper/regions > results/ceiling-study/paper-4940/gigapixel-held-out.json

It predicts every region of the store's "val" split whole, tile by tile, as `gigaseg train`'s
validation does, and prints one JSON object. The defaults are the ceiling study's 4,940-step
checkpoint and the store that ``scripts/paper_reproduction.py`` prepares (runs/paper/regions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results" / "ceiling-study"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=str(RESULTS / "paper-4940" / "checkpoint.pt"),
                        help="checkpoint (default: the ceiling study's 4,940-step model)")
    parser.add_argument("store", nargs="?", default=str(ROOT / "runs" / "paper" / "regions"),
                        help="region store whose 'val' regions are predicted (default: the paper reproduction's)")
    args = parser.parse_args(argv)

    from gigaseg.checkpoint import load_model
    from gigaseg.store import RegionStore
    from gigaseg.training import evaluate_regions

    model, _ = load_model(args.checkpoint)
    regions = RegionStore(args.store).split("val")
    if not regions:
        print(f"held_out_gigapixel: {args.store} has no 'val' regions", file=sys.stderr)
        return 2
    t = time.perf_counter()
    res = evaluate_regions(model, regions)
    dice = [r["dice"] for r in res]
    print(json.dumps({
        "checkpoint": args.checkpoint, "store": args.store, "held_out_dice_mean": statistics.fmean(dice),
        "held_out_dice_sd": statistics.stdev(dice) if len(dice) > 1 else 0.0,
        "seconds": round(time.perf_counter() - t, 1),
        "dice": {r["region"]: r["dice"] for r in res},
        "precision": {r["region"]: r["intersection"] / max(1, r["predicted"]) for r in res},
        "recall": {r["region"]: r["intersection"] / max(1, r["reference"]) for r in res},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
