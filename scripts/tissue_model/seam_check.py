"""Score the seam correction (NOTE [Seam correction] in gigaseg/glass.py) on fresh synthetic slides.

    python scripts/tissue_model/seam_check.py --seed 91000 --n 96 --out results/tissue-model/stage-17/seam-check.json

Renders ``--n`` synthetic slides of every category (profile "all", seeds ``--seed``.., 1024 x
1024 at the model's resolution; pick seeds no stage has used: 91000.. is new), predicts each with
the model (default the built-in one) as ``predict_slide`` does (glass balance, component filter,
round(255 p) >= 128), once with the seam correction and once without, and writes the Dice of
each slide both ways, the seams found, and the means over all slides, over those drawn with
seams (the generator's ``seams`` category) and over those without, to ``--out`` (JSON). The
slides were never looked at while the correction was made, so the means measure it without bias.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def score(net, mpp: float, seeds: range, side: int = 1024) -> list[dict]:
    """Each slide's Dice with and without the seam correction, and the seams found."""
    import torch
    from tqdm import tqdm

    from gigaseg.checkpoint import component_filter
    from gigaseg.components import apply_component_filter
    from gigaseg.engine import tiled_predict
    from gigaseg.glass import balance_for
    from gigaseg.metrics import confusion_counts, scores
    from gigaseg.synth import make_layout, render_region

    filt = component_filter(net)
    rows = []
    for seed in tqdm(seeds, desc="slides", unit="slide", file=sys.stderr):
        rgb, mask = render_region(seed, 0, 0, side, side, width=side, height=side, mpp=mpp, profile="all")
        truth = np.asarray(mask) == 1
        row: dict = {"seed": seed, "categories": list(make_layout(seed, side, side, mpp, profile="all").categories)}
        for key, seams in (("with", True), ("without", False)):
            seen = balance_for(net, rgb, seams=seams)
            with torch.no_grad():
                p = np.rint(tiled_predict(net, seen) * 255).astype(np.uint8)
            if filt is not None:
                apply_component_filter(seen, p, 128, filt)
            row[key] = scores(confusion_counts(p >= 128, truth))["dice"]
            if seams:
                found = getattr(seen, "seams", None)
                row["seams_found"] = None if found is None else found.summary()
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Means with and without over all slides, those drawn with seams and those without."""
    def part(sel: list[dict]) -> dict:
        if not sel:
            return {"slides": 0}
        w, wo = np.array([r["with"] for r in sel]), np.array([r["without"] for r in sel])
        return {"slides": len(sel), "with": round(float(w.mean()), 4), "without": round(float(wo.mean()), 4),
                "gain": round(float((w - wo).mean()), 4), "largest_loss": round(float(min(0.0, (w - wo).min())), 4),
                "lower_by_over_0.005": int(((wo - w) > 0.005).sum()),
                "seams_found_on": sum(r["seams_found"] is not None for r in sel)}
    drawn = [r for r in rows if "seams" in r["categories"]]
    return {"all": part(rows), "drawn_with_seams": part(drawn),
            "drawn_without_seams": part([r for r in rows if "seams" not in r["categories"]])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default=None, help="checkpoint or weights file (default: the built-in model)")
    ap.add_argument("--seed", type=int, default=91000, help="first seed (default 91000, used by no stage)")
    ap.add_argument("--n", type=int, default=96, help="slides (default 96)")
    ap.add_argument("--side", type=int, default=1024, help="slide side in pixels at the model's resolution")
    ap.add_argument("--out", required=True, help="JSON file")
    args = ap.parse_args(argv)
    if args.n < 1 or args.side < 64:
        ap.error("--n must be >= 1 and --side >= 64")

    from gigaseg import load_model
    from gigaseg._atomic import write_json_atomic

    net, mpp = load_model(args.model)
    net.eval()
    rows = score(net, float(mpp), range(args.seed, args.seed + args.n), args.side)
    result = {"command": "python scripts/tissue_model/seam_check.py " + " ".join(argv if argv is not None
                                                                               else sys.argv[1:]),
              "model": args.model or "builtin", "mpp": mpp, "side": args.side, "summary": summarize(rows),
              "slides": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.out), result)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
