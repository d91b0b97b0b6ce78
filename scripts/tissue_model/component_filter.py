"""Fit the built-in model's component filter on synthetic slides (gigaseg/components.py).

    python scripts/tissue_model/component_filter.py --work runs/cf --out results/tissue-model/stage-16/filter.json
    python scripts/tissue_model/component_filter.py --work runs/cf --out ... --ship   # into the weights file
    python scripts/tissue_model/component_filter.py --model runs/mine/checkpoint.pt --work runs/cf --out mine.json

1. Renders synthetic slides at the model's resolution (4 um/px), 1024 x 1024 (profile "all"): ``--train`` fitting slides
   (seeds 30000..), ``--val`` validation slides (the seeds after them), a third of both degraded
   as make_data.py degrades, and the 48 held-out slides of every study table (seeds 90000..,
   not degraded). Each is predicted by the model (``--model``, default the built-in one; without a
   filter) and kept in
   ``WORK/slides/SEED.npz`` (image, mask, probabilities; another ``--model``'s in
   ``WORK/slides-HASH/``), so a second run only refits.
2. Computes every predicted component's features (``component_features`` on the image as the
   model reads it, glass-balanced) and labels it tissue when most of its pixels are.
3. Fits a logistic regression (one weight per component, the tissue class weighted by c) for each
   c of ``--weights`` and keeps the smallest c whose filter, on the validation slides, drops no
   tissue component larger than (100 um)^2 and at most 0.1% of their tissue pixels: a filter
   that removes debris but never a piece of tissue that a user would miss.
4. Scores the held-out slides with and without it (Dice per group, as evaluate.py) and writes
   the filter, the choice and the scores to ``--out`` (JSON). ``--ship`` stores the filter in
   the built-in weights file's header (its weights unchanged).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tm_siblings import sibling

_evaluate, _make_data = sibling("evaluate"), sibling("make_data")
HELD_OUT_SEED, group_scores, tissue_od = _evaluate.HELD_OUT_SEED, _evaluate.group_scores, _evaluate.tissue_od
degrade = _make_data.degrade

MPP = 4.0  # the built-in model's resolution; another model's slides are rendered at its own
SIDE = 1024
THR_U8 = 128  # threshold 0.5: round(255 * 0.5)
FIT_SEED = 30000
WEIGHTS = "1,1.5,2,3,5,10"


def slide(seed: int, work: Path, net, *, may_degrade: bool, mpp: float = MPP) -> dict:
    """The slide of ``seed`` with the model's probabilities (cached in ``work``: one folder per model)."""
    path = work / f"{seed}.npz"
    if path.exists():
        with np.load(path) as d:
            return {"rgb": d["rgb"], "mask": d["mask"], "prob": d["prob"], "cats": json.loads(str(d["cats"])),
                    "f": float(d["f"])}
    import torch

    from gigaseg.engine import tiled_predict
    from gigaseg.synth import make_layout, render_region

    rng = np.random.default_rng(seed * 7 + 1)
    f = float(rng.choice([2.0, 3.0, 4.0, 6.0])) if may_degrade and rng.random() < 1 / 3 else 1.0
    rgb, m = render_region(seed, 0, 0, SIDE, SIDE, width=SIDE, height=SIDE, mpp=mpp, profile="all")
    if f > 1:
        rgb = degrade(rgb, f)
    cats = list(make_layout(seed, SIDE, SIDE, mpp, profile="all").categories)
    with torch.no_grad():
        prob = np.round(np.asarray(tiled_predict(net, rgb)) * 255).astype(np.uint8)
    out = {"rgb": rgb, "mask": np.asarray(m) == 1, "prob": prob, "cats": cats, "f": f}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, rgb=rgb, mask=out["mask"], prob=prob, cats=json.dumps(cats), f=f)
    tmp.replace(path)
    return out


def rows(seeds, work: Path, net, *, may_degrade: bool, progress: str, mpp: float = MPP) -> list[dict]:
    """Per slide: its components' features, pixels and tissue pixels, and the slide's tissue."""
    from scipy import ndimage as ndi
    from tqdm import tqdm

    from gigaseg.components import component_features
    from gigaseg.glass import balance_for

    out = []
    for seed in tqdm(seeds, desc=progress, unit="slide"):
        s = slide(seed, work, net, may_degrade=may_degrade, mpp=mpp)
        seen = np.asarray(balance_for(net, s["rgb"])[:, :])
        labels, n, feats = component_features(seen, s["prob"], THR_U8)
        idx = np.arange(1, n + 1)
        area = ndi.sum_labels(np.ones(labels.shape), labels, idx) if n else np.zeros(0)
        tissue = ndi.sum_labels(s["mask"].astype(np.float64), labels, idx) if n else np.zeros(0)
        out.append({"seed": seed, "F": feats, "area": area, "tissue": tissue, "ref": float(s["mask"].sum()),
                    "cats": s["cats"], "tissue_od": tissue_od(s["rgb"], s["mask"])})
    return out


def fit(rows_: list[dict], c: float):
    """A ComponentFilter fitted on ``rows_`` (tissue class weight ``c``), by L-BFGS on the mean log-loss."""
    import torch

    from gigaseg.components import ComponentFilter

    x = np.concatenate([r["F"] for r in rows_])
    y = np.concatenate([r["tissue"] > 0.5 * r["area"] for r in rows_])
    mean, scale = x.mean(0), x.std(0) + 1e-9
    xt = torch.tensor((x - mean) / scale, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    wt = torch.tensor(np.where(y, c, 1.0) / len(y), dtype=torch.float64)
    b = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = xt @ b[1:] + b[0]
        loss = (wt * torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")).sum()
        loss = loss + 1e-3 * (b[1:] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    v = b.detach().numpy()
    return ComponentFilter(mean=tuple(mean), scale=tuple(scale), coef=tuple(v[1:]), bias=float(v[0]))


def judge(rows_: list[dict], filt, mpp: float = MPP) -> dict:
    """What ``filt`` does to ``rows_``: Dice per slide before and after, tissue it drops."""
    min_px = (100.0 / mpp) ** 2
    before, after, lost, largest, big, removed, tissue = [], [], 0.0, 0.0, 0, 0.0, 0.0
    for r in rows_:
        keep = filt.scores(r["F"]) > 0 if len(r["area"]) else np.zeros(0, bool)
        for kept, out in ((np.ones_like(keep), before), (keep, after)):
            pred, tp = r["area"][kept].sum(), r["tissue"][kept].sum()
            out.append(1.0 if pred + r["ref"] == 0 else float(2 * tp / (pred + r["ref"])))
        is_tissue = r["tissue"] > 0.5 * r["area"]
        dropped = is_tissue & ~keep
        lost += float(r["tissue"][~keep].sum())
        removed += float((r["area"] - r["tissue"])[~keep].sum())
        tissue += r["ref"]
        if dropped.any():
            largest = max(largest, float(r["area"][dropped].max()))
            big += int((r["area"][dropped] > min_px).sum())
    return {"dice_before": before, "dice_after": after, "tissue_pixels_lost": lost, "tissue_share_lost": lost / tissue,
            "false_pixels_removed": removed, "largest_tissue_component_dropped": largest,
            "tissue_components_over_100um_dropped": big,
            "safe": big == 0 and lost <= 1e-3 * tissue}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="a folder for the rendered slides and their predictions (reused)")
    ap.add_argument("--out", required=True, help="the JSON to write: the filter, the choice and the scores")
    ap.add_argument("--train", type=int, default=320, help="fitting slides (seeds 30000, ...)")
    ap.add_argument("--val", type=int, default=160, help="validation slides (the seeds after the fitting ones)")
    ap.add_argument("--held-out", type=int, default=48, help="held-out slides scored (seeds 90000, ...)")
    ap.add_argument("--weights", default=WEIGHTS,
                    help=f"tissue class weights tried, smallest first (default {WEIGHTS})")
    ap.add_argument("--model", default="builtin",
                    help="the model whose masks the filter is fitted to (default: the built-in one); a checkpoint "
                         "of yours gets its own filter, which ship.py --component-filter stores with its weights")
    ap.add_argument("--ship", action="store_true", help="store the chosen filter in the built-in weights file")
    args = ap.parse_args(argv)

    import torch

    from gigaseg import load_model

    torch.manual_seed(0)
    if args.ship and args.model != "builtin":
        ap.error("--ship stores the filter in the built-in model's file; for another model give this JSON to "
                 "ship.py --component-filter")
    net, trained_mpp = load_model(args.model)
    mpp = float(trained_mpp or MPP)
    work = Path(args.work) / "slides"  # the built-in model's predictions; another model's in a folder of its own
    if args.model != "builtin":
        import hashlib

        work = work.with_name(f"slides-{hashlib.sha256(Path(args.model).read_bytes()).hexdigest()[:12]}")
    fit_rows = rows(range(FIT_SEED, FIT_SEED + args.train), work, net, may_degrade=True, progress="fitting slides",
                    mpp=mpp)
    val_rows = rows(range(FIT_SEED + args.train, FIT_SEED + args.train + args.val), work, net, may_degrade=True,
                    progress="validation slides", mpp=mpp)
    held = rows(range(HELD_OUT_SEED, HELD_OUT_SEED + args.held_out), work, net, may_degrade=False,
                progress="held-out slides", mpp=mpp)
    tried, chosen = [], None
    for c in sorted(float(v) for v in args.weights.split(",")):
        filt = fit(fit_rows, c)
        v = judge(val_rows, filt, mpp)
        tried.append({"tissue_weight": c, "val_dice_before": float(np.mean(v["dice_before"])),
                      "val_dice_after": float(np.mean(v["dice_after"])),
                      **{k: v[k] for k in ("tissue_share_lost", "false_pixels_removed",
                                           "largest_tissue_component_dropped",
                                           "tissue_components_over_100um_dropped", "safe")}})
        print(json.dumps(tried[-1]), file=sys.stderr)
        if v["safe"] and chosen is None:
            chosen = (c, filt)
    if chosen is None:
        raise SystemExit(f"no tissue weight in {args.weights} gives a filter that keeps every piece of tissue on the "
                         "validation slides: try larger ones")
    c, filt = chosen
    h = judge(held, filt, mpp)

    def groups(dices):
        per = [{"dice": d, "categories": r["cats"], "tissue_od": r["tissue_od"]} for d, r in zip(dices, held)]
        return {g: v["dice"] for g, v in group_scores(per).items()}

    result = {
        # the work folder by its name: this machine's folders do not travel
        "command": "python scripts/tissue_model/component_filter.py " + " ".join(
            Path(a).name if a == args.work else a for a in (argv or sys.argv[1:])),
        "slides": {"fitting": args.train, "validation": args.val, "held_out": args.held_out, "mpp": mpp, "side": SIDE},
        "model": args.model,
        "components": {"fitting": int(sum(len(r["area"]) for r in fit_rows)),
                       "validation": int(sum(len(r["area"]) for r in val_rows)),
                       "held_out": int(sum(len(r["area"]) for r in held))},
        "tried": tried, "tissue_weight": c, "filter": filt.to_dict(),
        "held_out": {"groups_before": groups(h["dice_before"]), "groups_after": groups(h["dice_after"]),
                     **{k: h[k] for k in ("tissue_pixels_lost", "tissue_share_lost", "false_pixels_removed",
                                          "largest_tissue_component_dropped",
                                          "tissue_components_over_100um_dropped")},
                     "slides": [{"seed": r["seed"], "before": b, "after": a}
                                for r, b, a in zip(held, h["dice_before"], h["dice_after"])]},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result["held_out"][k] for k in ("groups_before", "groups_after")}, indent=1))
    if args.ship:
        from ship import OUT, with_filter

        with_filter(OUT, filt)
        print(f"stored in {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
