"""The region store of the quality-control model (results/qc-model/README.md).

    python scripts/qc_model/make_data.py --out runs/qc/data --train 64 --val 16

Whole synthetic slides of the "all" profile (every stain, tissue kind, glass, scanner effect
and artefact; docs/synth.md), SIZE x SIZE pixels at MPP, whose masks are not tissue/background
but the quality-control class of every pixel: ``gigaseg.synth.render_labels`` says which drawn
object each pixel shows (``gigaseg.synth.LABELS``), and ``qc_class`` maps each label to one of
``QC_CLASSES`` by its name, so labels added to the generator later are mapped too. Training
seeds 30000, 30001, ...; held-out seeds 95000, 95001, ... Each region's ``classes`` metadata
names the classes (what ``gigaseg train`` reads), and its ``source`` the pixels of each label.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from gigaseg.store import RegionStore
from gigaseg.synth import LABELS, make_layout, render_labels

#: The model's classes, in the order of the masks' class indices.
QC_CLASSES = ["background", "tissue", "pen or dye", "fold", "bubble", "dust or debris"]

#: Keywords of a label's name that make it an artefact class, tried in this order (pen ink over a
#: fold is pen; a bubble rim over tissue is bubble).
_ARTEFACT_KEYWORDS = (("pen", 2), ("dye", 2), ("marker", 2), ("fold", 3), ("bubble", 4), ("dust", 5),
                      ("debris", 5), ("fibre", 5), ("hair", 5))


def qc_class(label_name: str) -> int:
    """The QC class index of a ``gigaseg.synth.LABELS`` name.

    Pen ink, marking dye -> "pen or dye"; folds -> "fold"; bubble rims -> "bubble"; dust, debris,
    fibres and hairs -> "dust or debris" (over glass or over tissue alike); any other label is "tissue"
    when it is tissue (its name says "(tissue)", or is "tissue") and "background" otherwise
    (glass, lumens and tears, out of scan, padding, the coverslip's edge, smudges on glass...).
    """
    name = label_name.lower()
    for word, index in _ARTEFACT_KEYWORDS:
        if word in name:
            return index
    return 1 if (name == "tissue" or "(tissue)" in name) else 0


def label_lut() -> np.ndarray:
    """A 256-entry table: ``gigaseg.synth.LABELS`` code -> QC class index (255 for codes that are
    not labels: ignored, never met)."""
    lut = np.full(256, 255, np.uint8)
    for code, name in LABELS.items():
        lut[int(code)] = qc_class(name)
    return lut


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the store directory (new)")
    ap.add_argument("--mpp", type=float, default=4.0, help="the resolution (um/px)")
    ap.add_argument("--size", type=int, default=1024, help="region side in pixels")
    ap.add_argument("--train", type=int, default=64, help="training slides (seeds 30000, 30001, ...)")
    ap.add_argument("--val", type=int, default=16, help="held-out slides (seeds 95000, 95001, ...)")
    args = ap.parse_args(argv)

    store = RegionStore.create(args.out)
    lut = label_lut()
    n = args.size
    mapping = {name: QC_CLASSES[qc_class(name)] for name in LABELS.values()}
    print("label -> class: " + "; ".join(f"{k} -> {v}" for k, v in mapping.items()), file=sys.stderr)
    jobs = [("train", 30000 + i) for i in range(args.train)] + [("val", 95000 + i) for i in range(args.val)]
    for k, (split, seed) in enumerate(jobs):
        layout = make_layout(seed, n, n, args.mpp, profile="all")
        rgb, _, labels = render_labels(layout, 0, 0, n, n)
        mask = lut[labels]
        codes, counts = np.unique(labels, return_counts=True)
        meta = {
            "source": {"kind": "synthetic", "path": None, "sha256": None, "generator": "gigaseg.synth.render_labels",
                       "width": n, "height": n, "profile": "all", "categories": list(layout.categories),
                       "label_pixels": {LABELS[int(c)]: int(v) for c, v in zip(codes, counts)}},
            "mask_source": {"kind": "synthetic-labels", "mapping": mapping},
            "classes": QC_CLASSES,
            "origin": [0, 0], "mpp": float(args.mpp), "downsample": 1.0, "pad": False, "seed": seed,
        }
        store.add_region(f"s{seed}", rgb, mask, meta=meta, split=split)
        present = [QC_CLASSES[int(c)] for c in np.unique(mask) if c != 255]
        print(f"[{k + 1}/{len(jobs)}] s{seed} {split} {','.join(layout.categories)} | {', '.join(present)}",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
