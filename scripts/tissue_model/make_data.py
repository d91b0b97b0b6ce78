"""Region stores for the tissue-model study (results/tissue-model/README.md).

    python scripts/tissue_model/make_data.py --mpp 4 --out runs/tissue-model/data-4

One store per operating resolution: whole synthetic slides of the "all" profile (every stain,
tissue kind, glass, scanner effect and artefact; docs/synth.md), SIZE x SIZE pixels at MPP.
A third of the training slides are degraded the way a coarser slide reaches the model: the image
is area-averaged by a factor f (2 to 6) and enlarged back with bilinear interpolation, exactly
what ``read_region_at_mpp`` does when a slide's finest level is coarser than the model's
resolution. Their masks stay exact at MPP. The held-out slides (other seeds) are not degraded.
Each region's categories and degradation factor are in its metadata (``source``).

``--boost CATS`` (comma-separated categories, e.g. seams,adipose,smudge) makes slides that always
have those (``gigaseg.synth.boosted_profile``): each slide's profile lists one stain, layout and
glass, drawn with the weights of profile "all", the boosted categories, and each other category
with its probability in profile "all". For training on the objects a model gets wrong most
(``error_sources.py``); the held-out slides stay profile "all" whatever --boost says.

``--sharp-edges SHARE`` draws that share of the training slides with their tissue stained to its
outline (``gigaseg.synth.with_sharp_edges``, 0.6-1 of the interior's stain at the edge instead of a
pale rim; NOTE [Sharp edges]; ``-e`` in the name, ``sharp_edges`` in the metadata). The choice and
the strength come from a stream of their own, so every other slide is the one the store would hold
without the option, and the held-out slides are never changed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

from gigaseg.errors import ConfigError
from gigaseg.store import RegionStore
from gigaseg.synth import boosted_profile, make_layout, render_labels, render_region, with_sharp_edges


def degrade(rgb: np.ndarray, f: float) -> np.ndarray:
    """``rgb`` area-averaged by ``f`` then enlarged back to its size (bilinear), as a coarse slide reads."""
    h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    small = im.resize((max(1, round(w / f)), max(1, round(h / f))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mpp", type=float, required=True, help="the operating resolution (um/px)")
    ap.add_argument("--out", required=True, help="the store directory (new)")
    ap.add_argument("--size", type=int, default=1024, help="region side in pixels")
    ap.add_argument("--train", type=int, default=72, help="training slides (seeds 20000, 20001, ...)")
    ap.add_argument("--val", type=int, default=24, help="held-out slides (seeds 90000, 90001, ...)")
    ap.add_argument("--degraded", type=float, default=1 / 3, help="share of training slides degraded")
    ap.add_argument("--append", action="store_true",
                    help="add slides to an existing store: its seeds go on where its own stop")
    ap.add_argument("--boost", default=None, help="categories every training slide has (e.g. seams,adipose,smudge)")
    ap.add_argument("--sharp-edges", type=float, default=0.0,
                    help="share of training slides whose tissue is stained to its edge (NOTE [Sharp edges])")
    args = ap.parse_args(argv)
    boost = set(args.boost.split(",")) if args.boost else set()
    if not 0 <= args.sharp_edges <= 1:
        raise SystemExit(f"--sharp-edges {args.sharp_edges:g}: give a share from 0 to 1 (e.g. 0.4)")
    try:
        boosted_profile(np.random.default_rng(0), boost)
    except ConfigError as exc:
        raise SystemExit(f"--boost {args.boost}: {exc}") from None

    store = RegionStore.create(args.out, exist_ok=args.append)
    have = {split: len(store.split(split)) for split in ("train", "val")}
    rng = np.random.default_rng(12345 + have["train"])
    n = args.size
    jobs = ([("train", 20000 + have["train"] + i) for i in range(args.train)]
            + [("val", 90000 + have["val"] + i) for i in range(args.val)])
    for k, (split, seed) in enumerate(jobs):
        f = 1.0
        if split == "train" and rng.random() < args.degraded:
            f = float(rng.choice([2.0, 3.0, 4.0, 6.0]))
        profile = boosted_profile(rng, boost) if boost and split == "train" else "all"
        # its own stream, so that the other draws (and a store made without the option) stay as they were
        edge_rng = np.random.default_rng([seed, 0x5EA7])
        sharp = split == "train" and edge_rng.random() < args.sharp_edges
        pale_min = float(edge_rng.uniform(0.6, 1.0)) if sharp else None
        layout = make_layout(seed, n, n, args.mpp, profile=profile)
        if pale_min is None:
            rgb, m = render_region(seed, 0, 0, n, n, width=n, height=n, mpp=args.mpp, profile=profile)
        else:
            rgb, m, _ = render_labels(with_sharp_edges(layout, pale_min), 0, 0, n, n)
        if f > 1:
            rgb = degrade(rgb, f)
        cats = list(layout.categories)
        meta = {
            "source": {"kind": "synthetic", "path": None, "sha256": None, "generator": "gigaseg.synth.render_region",
                       "width": n, "height": n, "profile": profile, "categories": cats, "degraded_by": f,
                       "sharp_edges": pale_min},
            "mask_source": {"kind": "synthetic", "holes": "background"},
            "origin": [0, 0], "mpp": float(args.mpp), "downsample": 1.0, "pad": False, "seed": seed,
        }
        name = f"s{seed}" + (f"-f{f:g}" if f > 1 else "") + ("-e" if pale_min is not None else "")
        with store.new_region(name, (n, n), meta=meta, split=split) as writer:
            writer.append(rgb, m)
        print(f"[{k + 1}/{len(jobs)}] {name} {split} {','.join(cats)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
