"""The quality-control model's results (results/qc-model/README.md) from its run folder.

    python scripts/qc_model/report.py --run runs/qc/run --data runs/qc/data --out results/qc-model

Writes into OUT: ``qc-model.json`` (the classes and the label mapping, the run's options and
summary, each class's Dice over the held-out slides at each validation, each held-out slide's
per-class Dice at the end, each class's pixel counts over the held-out slides at the end
(``val_class_counts``: intersection, predicted, reference), the classes' pixel shares),
``log.csv``, ``val.csv`` and ``curves.png`` (the run's), ``class-curves.png`` (each class's
held-out Dice against step), and the outputs of ``gigaseg predict`` with the checkpoint on one
held-out slide (``--example``, written as a TIFF at the store's resolution): its summary,
GeoJSON and overlay. Its label TIFF is compared with the reference, and its per-class Dice with
the run's last validation of that slide (they must be equal: the same model on the same pixels).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def class_curves(log: list[dict], classes: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name in classes:
        pts = [(int(r["step"]), _num(r.get(f"val_dice_{name}"))) for r in log]
        pts = [(s, d) for s, d in pts if d is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=name)
    pts = [(int(r["step"]), _num(r.get("val_dice_mean"))) for r in log if _num(r.get("val_dice_mean")) is not None]
    ax.plot(*zip(*pts), color="black", lw=2, ls="--", label="mean over a slide's classes")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out Dice (each class: over all held-out slides)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def _final_counts(run: Path, classes: list[str]) -> dict[str, list[int]]:
    from gigaseg import load_checkpoint

    rows = load_checkpoint(run / "checkpoint.pt")["extra"]["val"]
    total = np.sum([r["counts"] for r in rows], axis=0)
    return {c: [int(v) for v in row] for c, row in zip(classes, total)}


def main(argv=None) -> int:
    import tifffile

    from gigaseg.store import RegionStore

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_data import QC_CLASSES, qc_class

    from gigaseg.synth import LABELS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--example", default="s95015", help="the held-out slide to predict with gigaseg predict")
    args = ap.parse_args(argv)
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = json.loads((run / "config.json").read_text())
    result = info["result"]
    classes = result["classes"]
    log = _rows(run / "log.csv")
    val = _rows(run / "val.csv")
    for name in ("log.csv", "val.csv", "curves.png"):
        shutil.copyfile(run / name, out / name)
    class_curves([r for r in log if r.get("val_dice_mean")], classes, out / "class-curves.png")

    store = RegionStore(args.data)
    shares = {}
    for split in ("train", "val"):
        counts = np.zeros(len(classes), np.int64)
        for r in store.split(split):
            m = np.asarray(r.mask)
            counts += np.bincount(m[m != 255].ravel(), minlength=len(classes))[:len(classes)]
        shares[split] = dict(zip(classes, (counts / counts.sum()).round(6).tolist()))
    slides_with = {c: sum(1 for r in store.split("val") if k in np.unique(np.asarray(r.mask)))
                   for k, c in enumerate(classes)}

    # one held-out slide through gigaseg predict
    region = store[args.example]
    ex = out / "example"
    tmp = run.parent / f"{args.example}.tif"
    tifffile.imwrite(tmp, np.asarray(region.image), tile=(256, 256), photometric="rgb", compression="zlib",
                     resolution=(1e4 / region.meta["mpp"],) * 2, resolutionunit="CENTIMETER", metadata=None)
    pred_dir = run.parent / "predict"
    cmd = [sys.executable, "-m", "gigaseg", "predict", str(tmp), "--model", str(run / "checkpoint.pt"), "--out",
           str(pred_dir), "--overwrite", "--no-progress"]
    print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    ex.mkdir(exist_ok=True)
    for suffix in (".json", ".geojson", ".overlay.png"):
        shutil.copyfile(pred_dir / f"{args.example}{suffix}", ex / f"{args.example}{suffix}")
    labels = tifffile.imread(pred_dir / f"{args.example}.mask.tiff", key=0)
    ref = np.asarray(region.mask)
    valid = ref != 255
    n = len(classes)
    inter = np.bincount(ref[valid & (ref == labels)], minlength=n)[:n]
    pred_c = np.bincount(labels[valid], minlength=n)[:n]
    ref_c = np.bincount(ref[valid], minlength=n)[:n]
    last = [r for r in val if r["region"] == args.example and int(r["step"]) == result["step"]][0]
    tiff_dice = {c: (None if p + q == 0 else round(2 * int(i) / int(p + q), 6))
                 for c, i, p, q in zip(classes, inter, pred_c, ref_c)}
    val_dice = {c: (None if last[f"dice_{c}"] == "" else round(float(last[f"dice_{c}"]), 6)) for c in classes}

    report = {
        "classes": classes,
        "label_mapping": {name: QC_CLASSES[qc_class(name)] for name in LABELS.values()},
        "config": info["config"],
        "model": info["model"],
        "parameters": info["parameters"],
        "machine": info.get("machine"),
        "train_regions": len(info["train_regions"]),
        "val_regions": len(info["val_regions"]),
        "class_pixel_share": shares,
        "val_slides_with_class": slides_with,
        "result": result,
        # each class's [intersection, predicted, reference] pixels over the held-out slides at the end
        "val_class_counts": _final_counts(run, classes),
        "val_class_dice_by_step": [{"step": int(r["step"]), "mean": _num(r["val_dice_mean"]),
                                    **{c: _num(r.get(f"val_dice_{c}")) for c in classes}}
                                   for r in log if r.get("val_dice_mean")],
        "val_final": [{k: v for k, v in r.items() if k != "step"} for r in val if int(r["step"]) == result["step"]],
        "example": {"slide": args.example, "command": " ".join(cmd),
                    "label_tiff_dice": tiff_dice, "validation_dice": val_dice,
                    "label_tiff_equals_validation": tiff_dice == val_dice},
    }
    (out / "qc-model.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"val_class_dice": result["val_class_dice"], "mean": result["val_class_dice_mean"],
                      "example": report["example"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
