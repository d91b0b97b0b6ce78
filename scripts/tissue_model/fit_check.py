"""Does a model fit its training slides better than held-out ones? Short of data, or of capacity.

    python scripts/tissue_model/fit_check.py --data runs/s9/data-4hL --first 432 --every 4 \\
        --out results/tissue-model/capacity/fit-stage4.json                       # the built-in model
    python scripts/tissue_model/fit_check.py --model runs/x/checkpoint.pt --data ... --out ...

Scores the model (Dice at 0.5 per slide, averaged per category group as evaluate.py does) on every
``--every``-th of the store's first ``--first`` training regions (the ones the model was trained on)
and on all its held-out regions. A model that scores its training slides much higher than the held-out
ones is short of data (it memorises); one that scores them no higher is short of capacity or of
training (it cannot fit even what it has seen).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from evaluate import synthetic_scores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the region store (its train and val splits)")
    ap.add_argument("--model", default="builtin", help="a checkpoint or weights file (default: the built-in model)")
    ap.add_argument("--first", type=int, default=None, help="only the first N training regions (default: all)")
    ap.add_argument("--every", type=int, default=4, help="score every K-th of those training regions")
    ap.add_argument("--out", default=None, help="write the scores here as JSON")
    args = ap.parse_args(argv)
    if args.every < 1 or (args.first is not None and args.first < 1):
        raise SystemExit("--every and --first must be at least 1")
    import gigaseg

    model, _ = gigaseg.load_model(args.model)  # "builtin": the built-in model; in eval mode either way
    out: dict = {"model": args.model, "data": args.data, "first": args.first, "every": args.every}
    for split in ("train", "val"):
        scores = synthetic_scores(model, Path(args.data), split=split, every=args.every if split == "train" else 1,
                                  first=args.first if split == "train" else None)
        out[split] = {"slides": len(scores["slides"]),
                      "groups": {k: v for k, v in scores["groups"].items() if v["dice"] is not None},
                      "per_slide": scores["slides"]}
        groups = {k: round(v["dice"], 4) for k, v in out[split]["groups"].items()}
        print(f"{split} ({len(scores['slides'])} slides): {json.dumps(groups)}", flush=True)
    if args.out:
        from gigaseg._atomic import write_json_atomic

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
