"""Score the tissue-model study's runs: held-out synthetic Dice per category, real slides, speed.

    python scripts/tissue_model/evaluate.py --root runs/tissue-model --runs paper-4,wide-4 \
        --out results/tissue-model/study.json

For each run ROOT/ARCH-MPP (scripts/tissue_model/run_study.py), its checkpoint.pt (or --model
FILE for a single model, e.g. the shipped weights file):
- synthetic: the Dice of every held-out slide of ROOT/data-MPP (whole slide, threshold 0.5),
  averaged per category group (``GROUPS``; a slide counts in every group whose category it has);
- real: ``predict_slide`` on the shared real slides, scored against the careful reference
  masks (../shared/data/real/masks/*.reference.png, 255 = ignore) at level 0, with Otsu and
  saturation beside it (``baseline_slide``);
- speed: seconds of the model alone (``tiled_predict``) on a 16 x 8 mm synthetic slide at its
  resolution (the area of a 64000 x 32000 slide at 0.25 um/px), best of 3.
The result is JSON (one entry per run) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"
KIDNEY_MPP = 8.0  # kidney-48-5.tif states no resolution; ~8 um/px judging by its cells (SOURCES.md)

#: Category groups of the table: a held-out slide counts in every group one of its categories is in.
GROUPS = {
    "H&E": ("he-wide",),
    "IHC": ("ihc",),
    "special": ("pas", "trichrome", "sirius", "alcian", "grocott"),
    "fat-rich": ("adipose",),
    "frozen": ("frozen",),
    "small": ("needle", "tma", "fragments"),
    "glass": ("bg-grey", "bg-tinted", "bg-dark", "padding", "coverslip"),
    "artefacts": ("pen", "handwriting", "bubbles", "dye", "dust", "smudge", "fibre"),
}
REAL_SLIDES = [
    ("CMU-1-Small-Region", "slides/CMU-1-Small-Region.svs", None),
    ("kidney-48-5", "slides/kidney-48-5.tif", KIDNEY_MPP),
]


def tissue_od(rgb: np.ndarray, ref: np.ndarray) -> float:
    """Mean optical density of the tissue pixels (how strongly stained the slide is)."""
    od = -np.log10((rgb[ref].astype(np.float64) + 1) / 256)
    return float(od.mean()) if od.size else 0.0


def group_scores(per_slide: list[dict]) -> dict:
    """Mean and worst Dice per group (``GROUPS``, plus "faint": the quarter of the slides with the
    palest tissue, by ``tissue_od``, and "all")."""
    ods = [r["tissue_od"] for r in per_slide]
    faint_cut = float(np.percentile(ods, 25)) if ods else 0.0
    groups = {}
    for g, members in {**GROUPS, "faint": None, "all": None}.items():
        if g == "faint":
            ds = [r["dice"] for r in per_slide if r["tissue_od"] <= faint_cut]
        else:
            ds = [r["dice"] for r in per_slide if members is None or set(members) & set(r["categories"])]
        groups[g] = {"dice": float(np.mean(ds)) if ds else None, "min": float(np.min(ds)) if ds else None,
                     "n": len(ds)}
    groups["faint"]["od_at_most"] = faint_cut
    return groups


#: The held-out synthetic slides of scripts/real_slides_eval.py --synthetic: profile "all", seeds from here.
HELD_OUT_SEED = 90000


def held_out(n: int, side: int = 1024, mpp: float = 4.0, *, labels: bool = False, first: int | None = None):
    """The first ``n`` held-out synthetic slides, each ``side`` x ``side`` pixels at ``mpp``.

    Yields ``(seed, categories, rgb, mask, labels)`` per slide (profile "all", seeds
    ``HELD_OUT_SEED``.., or ``first``..); ``labels`` is the object-label map (``gigaseg.synth.render.LABELS``)
    when asked for, else None. The same pixels as ``render_region(seed, 0, 0, side, side, ...)``.
    """
    from gigaseg.synth import make_layout, render_region
    from gigaseg.synth.render import render_labels

    first = HELD_OUT_SEED if first is None else first
    for seed in range(first, first + n):
        layout = make_layout(seed, side, side, mpp, profile="all")
        lab = None
        if labels:
            rgb, mask, lab = render_labels(layout, 0, 0, side, side)
        else:
            rgb, mask = render_region(seed, 0, 0, side, side, width=side, height=side, mpp=mpp, profile="all")
        yield seed, list(layout.categories), rgb, mask, lab


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    inter = np.logical_and(pred, ref).sum()
    total = pred.sum() + ref.sum()
    return 1.0 if total == 0 else float(2 * inter / total)


def synthetic_scores(model, store_path: Path, *, split: str = "val", every: int = 1, first: int | None = None) -> dict:
    """Dice of ``model`` on every ``every``-th of the first ``first`` regions of the store's ``split``
    (all: None), per slide and per group."""
    from gigaseg.engine import tiled_predict
    from gigaseg.store import RegionStore

    store = RegionStore(store_path)
    per_slide = []
    for region in store.split(split)[:first:every]:
        rgb = np.asarray(region.image)
        prob = tiled_predict(model, rgb)
        ref = np.asarray(region.mask) == 1
        cats = region.meta["source"].get("categories", [])
        per_slide.append({"region": region.name, "dice": dice(prob >= 0.5, ref), "categories": cats,
                          "tissue_fraction": float(ref.mean()), "tissue_od": tissue_od(rgb, ref)})
    return {"groups": group_scores(per_slide), "slides": per_slide}


def real_scores(model_arg, data: Path, *, baselines: bool) -> dict:
    from gigaseg.baseline import baseline_slide
    from gigaseg.metrics import evaluate_pair
    from gigaseg.predict import predict_slide

    out = {}
    with tempfile.TemporaryDirectory(prefix="gigaseg-tm-") as tmp:
        for name, rel, mpp in REAL_SLIDES:
            ref = data / "masks" / f"{name}.reference.png"
            row = {}
            methods = ["model"] + (["otsu", "saturation"] if baselines else [])
            for method in methods:
                od = Path(tmp) / method
                t0 = time.perf_counter()
                if method == "model":
                    s = predict_slide(model_arg, data / rel, od, mpp=mpp, progress=False, overwrite=True)
                else:
                    s = baseline_slide(data / rel, od, method=method, mpp=mpp, overwrite=True)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ev = evaluate_pair(s["paths"]["mask"], ref)
                row[method] = {"dice": ev["dice"], "precision": ev["precision"], "recall": ev["recall"],
                               "seconds": round(time.perf_counter() - t0, 2)}
            out[name] = row
    return out


def speed(model, mpp: float) -> dict:
    import torch

    from gigaseg.engine import tiled_predict
    from gigaseg.synth import render_region

    w, h = round(16000 / mpp), round(8000 / mpp)
    img = np.zeros((h, w, 3), np.uint8)
    tile = render_region(3, 0, 0, min(w, 2048), min(h, 2048), width=w, height=h, mpp=mpp, profile="all")[0]
    img[: tile.shape[0], : tile.shape[1]] = tile
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        tiled_predict(model, img)
        times.append(time.perf_counter() - t0)
    return {"grid": [w, h], "megapixels": w * h / 1e6, "seconds": min(times), "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--runs", required=True, help="comma-separated ARCH-MPP")
    ap.add_argument("--model", default=None, help="score this model file instead of ROOT/RUN/checkpoint.pt")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--out", required=True, help="JSON file (entries of runs already in it are kept)")
    args = ap.parse_args(argv)

    from gigaseg.checkpoint import load_checkpoint, load_model

    root, out = Path(args.root), Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    for name in args.runs.split(","):
        arch, mpp_s = name.rsplit("-", 1)
        src = args.model or str(root / name / "checkpoint.pt")
        model, mpp = load_model(src)
        payload = load_checkpoint(src)  # the step: a checkpoint's, or a weights file's info
        step = payload.get("step", (payload.get("info") or {}).get("step"))
        entry = {"arch": arch, "mpp": mpp, "model": src, "step": step,
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "receptive_field_px": model.config.receptive_field}
        entry["synthetic"] = synthetic_scores(model, root / f"data-{mpp_s}")
        entry["real"] = real_scores((model, mpp), Path(args.data), baselines="baselines" not in results)
        if "baselines" not in results:
            results["baselines"] = {k: {m: v[m] for m in ("otsu", "saturation")} for k, v in entry["real"].items()}
        entry["real"] = {k: v["model"] for k, v in entry["real"].items()}
        entry["speed"] = speed(model, mpp)
        results["runs"][name if args.model is None else f"{name} ({Path(args.model).name})"] = entry
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        g = entry["synthetic"]["groups"]
        print(f"{name}: " + " ".join(f"{k}={v['dice']:.3f}" for k, v in g.items() if v["dice"] is not None)
              + " | " + " ".join(f"{k}={v['dice']:.3f}" for k, v in entry["real"].items())
              + f" | {entry['speed']['seconds']:.2f} s", file=sys.stderr, flush=True)
    print(table(results))
    return 0


def table(results: dict) -> str:
    groups = list(GROUPS) + ["faint", "all"]
    head = ("| run | params | RF (um) | " + " | ".join(groups) + " | CMU-1-Small-Region | kidney-48-5 | "
            "s per 16x8 mm |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, e in results["runs"].items():
        g = e["synthetic"]["groups"]
        cells = [f"{g[k]['dice']:.3f}" if g[k]["dice"] is not None else "-" for k in groups]
        lines.append(f"| {name} | {e['parameters']:,} | {e['receptive_field_px'] * e['mpp']:.0f} | "
                     + " | ".join(cells) + f" | {e['real']['CMU-1-Small-Region']['dice']:.3f} | "
                     f"{e['real']['kidney-48-5']['dice']:.3f} | {e['speed']['seconds']:.2f} |")
    if "baselines" in results:
        for m in ("otsu", "saturation"):
            lines.append(f"| {m} (baseline) | | | " + " | ".join("" for _ in groups) + " | "
                         + " | ".join(f"{results['baselines'][k][m]['dice']:.3f}" for k in
                                      ("CMU-1-Small-Region", "kidney-48-5")) + " | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
