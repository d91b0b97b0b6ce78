"""A copy of a region store whose training masks weigh the pixels a model gets wrong (stage 12).

    python scripts/tissue_model/hard_pixels.py runs/s9/data-4hL runs/hard/data-4hL-hard --keep 0.1
    gigaseg train --data runs/hard/data-4hL-hard --init builtin --loss bce ...

Every training region's mask keeps the pixels where the model (``--model``, default the built-in
one) is wrong or unsure, |p - y| >= ``--margin`` (0.25), and a random ``--keep`` share of the
others (drawn per region from its index, so the copy is the same every time); the rest become 255,
which ``gigaseg train`` leaves out of the loss. With loss ``bce`` (the mean over the pixels kept)
that weighs a hard pixel about 1 / keep times an easy one: hard-example mining done once, with
the engine's exact gradient and no new loss code. Held-out regions are copied as they are, so
validation scores the whole slides. Images are copied as they are, the split too.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np


def hard_mask(prob: np.ndarray, mask: np.ndarray, keep: float, margin: float, seed: int) -> np.ndarray:
    """``mask`` (0/1) with 255 where ``prob`` is within ``margin`` of it, but for a random ``keep`` share."""
    hard = np.abs(prob - (mask == 1)) >= margin
    kept = np.random.default_rng(seed).random(mask.shape) < keep
    return np.where(hard | kept, mask, np.uint8(255)).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="the region store to copy")
    ap.add_argument("dst", help="the new store (must not exist)")
    ap.add_argument("--model", default="builtin", help="checkpoint or weights file (default: the built-in model)")
    ap.add_argument("--keep", type=float, default=0.1, help="share of the easy pixels kept in the loss")
    ap.add_argument("--margin", type=float, default=0.25, help="a pixel is hard when |p - y| is at least this")
    args = ap.parse_args(argv)
    if not 0 < args.keep <= 1 or not 0 < args.margin <= 1:
        raise SystemExit(f"--keep {args.keep} and --margin {args.margin} must lie in (0, 1]")

    from tqdm import tqdm

    from gigaseg import load_model
    from gigaseg._atomic import temp_dir
    from gigaseg.engine import tiled_predict
    from gigaseg.store import RegionStore

    dst = Path(args.dst)
    if dst.exists():
        raise SystemExit(f"{dst} exists: give a new folder")
    model, _ = load_model(args.model)
    source = RegionStore(args.src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = temp_dir(dst.parent, f".{dst.name}-", ".partial")  # renamed when complete: no half store looks whole
    try:
        out = RegionStore.create(part)
        shares = []
        for i, r in enumerate(tqdm(list(source), desc="masks", unit="region")):
            image, mask = np.asarray(r.image), np.asarray(r.mask)
            meta = dict(r.meta)
            if r.split == "train":
                mask = hard_mask(tiled_predict(model, image), mask, args.keep, args.margin, 1000 + i)
                meta["hard_pixels"] = {"model": str(args.model), "keep": args.keep, "margin": args.margin}
                shares.append(float(np.mean(mask != 255)))
            out.add_region(r.name, image, mask, meta=meta, split=r.split)
        part.rename(dst)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    print(f"{len(out.names)} regions in {dst}; training masks keep {np.mean(shares or [0]):.1%} of their pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
