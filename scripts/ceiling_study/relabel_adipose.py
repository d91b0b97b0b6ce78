"""Copy the ceiling study's store with adipose-cell interiors labelled background (mask 0).

    python scripts/ceiling_study/relabel_adipose.py regions regions-adipose-bg

Frozen: kept as the record of the ceiling study's adipose-background run; not maintained against
later code.

Each region's layout is made again from its seed (``gigaseg.synth.render_labels``); its mask
must equal the stored one, then the pixels labelled "adipose cell" become 0.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from gigaseg.synth import make_layout, render_labels

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copytree(src, dst)
changed = total = 0
for reg in json.loads((dst / "store.json").read_text())["regions"]:
    d = dst / reg["name"]
    meta = json.loads((d / "region.json").read_text())
    h, w = meta["source"]["height"], meta["source"]["width"]
    layout = make_layout(meta["seed"], w, h, meta["mpp"])
    _, mask, labels = render_labels(layout, 0, 0, w, h)
    old = np.load(d / "mask.npy")
    assert np.array_equal(old, mask.astype(old.dtype)), reg["name"]
    new = old.copy()
    new[labels == 2] = 0
    changed += int((new != old).sum())
    total += new.size
    np.save(d / "mask.npy", new)
print(f"relabelled {changed} of {total} pixels ({changed / total:.2%})")
