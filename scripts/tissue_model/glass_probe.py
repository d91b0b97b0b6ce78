"""Probe: does scaling a slide's glass to one brightness help the built-in model, without retraining?

    python scripts/tissue_model/glass_probe.py [--model FILE] [--target 242]
    python scripts/tissue_model/glass_probe.py --scale-store SRC DST   # the data of the trained probe

Estimates the glass colour of each image (per channel, the median of the brightest 30% of its
pixels, leaving out near-black and saturated white ones), scales the RGB so that the glass becomes
--target in every channel, and scores the model with and without the scaling on the 48 held-out
synthetic slides (seeds 90000-90047, as scripts/real_slides_eval.py --synthetic 48) and on the two
shared real slides against their reference masks. Prints the groups' Dice and the slides that
change by more than 0.05. A measurement for the next model, not part of prediction
(results/tissue-model/README.md, "A probe for stage 4").

``--scale-store SRC DST`` instead writes a copy of the region store SRC with every image scaled
the same way (masks, splits and metadata kept; ``glass_scaled_to`` added to each region's
metadata), the training data of the model trained on scaled inputs (same section); DST may be
resumed: regions already there are kept.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REAL = HERE.parents[1].parent / "shared" / "data" / "real"


def glass(rgb: np.ndarray) -> np.ndarray:
    """The glass colour of an (H, W, 3) uint8 image (see the module docstring)."""
    f = rgb.reshape(-1, 3).astype(np.float32)
    lum = f.mean(1)
    ok = (lum > 40) & (lum < 254)
    f, lum = f[ok], lum[ok]
    return np.median(f[lum >= np.percentile(lum, 70)], axis=0)


def scaled(rgb: np.ndarray, target: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * (target / glass(rgb)), 0, 255).astype(np.uint8)


def scale_store(src: str, dst: str, target: float) -> int:
    """Write DST: the regions of the store SRC with their images scaled (module docstring); their count."""
    from gigaseg.store import RegionStore

    source, out = RegionStore(src), RegionStore.create(dst, exist_ok=True)
    have = set(out.names)
    for r in source:
        if r.name not in have:
            meta = dict(r.meta, glass_scaled_to=target)
            out.add_region(r.name, scaled(np.asarray(r.image), target), np.asarray(r.mask), meta=meta, split=r.split)
    return len(out.names)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint or weights file (default: the built-in model)")
    ap.add_argument("--target", type=float, default=242.0, help="the glass brightness to scale to")
    ap.add_argument("--slides", type=int, default=48, help="held-out synthetic slides (seeds 90000..)")
    ap.add_argument("--size", type=int, default=1024, help="their side in pixels (at 4 um/px)")
    ap.add_argument("--no-real", action="store_true", help="leave the shared real slides out")
    ap.add_argument("--scale-store", nargs=2, metavar=("SRC", "DST"),
                    help="write a copy of the region store SRC with its images scaled, and stop")
    args = ap.parse_args(argv)
    if args.scale_store:
        print(f"{scale_store(*args.scale_store, args.target)} regions in {args.scale_store[1]}")
        return 0

    import torch
    from evaluate import dice, group_scores, held_out, tissue_od
    from PIL import Image

    import gigaseg
    from gigaseg.engine import tiled_predict
    from gigaseg.metrics import evaluate_pair
    from gigaseg.predict import predict_slide
    from gigaseg.slides import open_slide

    torch.set_num_threads(1)
    net, mpp = gigaseg.load_model(args.model)
    res: dict[str, list[dict]] = {"as is": [], "glass scaled": []}
    for seed, cats, rgb, m, _ in held_out(args.slides, args.size):
        for key, img in (("as is", rgb), ("glass scaled", scaled(rgb, args.target))):
            res[key].append({"seed": seed, "categories": cats, "dice": dice(tiled_predict(net, img) >= 0.5, m == 1),
                             "tissue_od": tissue_od(rgb, m == 1)})
    for key, rows in res.items():
        print(f"synthetic, {key}:", " ".join(f"{g} {v['dice']:.3f}" for g, v in group_scores(rows).items()
                                               if v["dice"] is not None))
    for a, b in zip(res["as is"], res["glass scaled"]):
        if abs(a["dice"] - b["dice"]) > 0.05:
            print(f"  seed {a['seed']}: {a['dice']:.3f} -> {b['dice']:.3f} ({' '.join(a['categories'])})")

    for name, file, slide_mpp in (("CMU-1-Small-Region", "CMU-1-Small-Region.svs", None),
                                  ("kidney-48-5", "kidney-48-5.tif", 8.0)):
        if args.no_real:
            break
        path = REAL / "slides" / file
        if not path.exists():
            print(f"{name}: skipped, {path} is not there")
            continue
        with open_slide(path, mpp=slide_mpp) as s:
            img = np.asarray(s.read_region((0, 0), 0, s.dimensions))[..., :3]
            slide_mpp = s.mpp[0] if s.mpp else None
        line = [f"{name} (glass {glass(img).round().tolist()}):"]
        for key, im in (("as is", img), ("glass scaled", scaled(img, args.target))):
            with tempfile.TemporaryDirectory() as tmp:
                Image.fromarray(im).save(Path(tmp) / "in.png")
                summary = predict_slide(net, Path(tmp) / "in.png", Path(tmp) / "out", mpp=slide_mpp, model_mpp=mpp,
                                        progress=False)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ev = evaluate_pair(summary["paths"]["mask"], REAL / "masks" / f"{name}.reference.png")
            line.append(f"{key} {ev['dice']:.3f}")
        print(" ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
