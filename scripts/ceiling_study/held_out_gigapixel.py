"""Held-out Dice of a checkpoint on the whole held-out regions of a store (by default the paper
reproduction's four 16000 x 64000 regions), with precision and recall per region.

    python results/ceiling-study/held_out_gigapixel.py results/ceiling-study/paper-4940/checkpoint.pt \\
        [runs/paper/regions] > results/ceiling-study/paper-4940/gigapixel-held-out.json

It predicts every region of the store's "val" split whole, tile by tile, as `gigaseg train`'s
validation does, and prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gigaseg.checkpoint import load_model
from gigaseg.store import RegionStore
from gigaseg.train import _mean_sd, evaluate_regions

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    store = argv[1] if len(argv) > 1 else str(ROOT / "runs" / "paper" / "regions")
    model, _ = load_model(argv[0])
    regions = RegionStore(store).split("val")
    if not regions:
        print(f"held_out_gigapixel: {store} has no 'val' regions", file=sys.stderr)
        return 2
    t = time.perf_counter()
    res = evaluate_regions(model, regions)
    mean, sd = _mean_sd([r["dice"] for r in res])
    print(json.dumps({
        "checkpoint": argv[0], "store": store, "held_out_dice_mean": mean, "held_out_dice_sd": sd,
        "seconds": round(time.perf_counter() - t, 1),
        "dice": {r["region"]: r["dice"] for r in res},
        "precision": {r["region"]: r["intersection"] / max(1, r["predicted"]) for r in res},
        "recall": {r["region"]: r["intersection"] / max(1, r["reference"]) for r in res},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
