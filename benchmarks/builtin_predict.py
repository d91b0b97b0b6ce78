"""The built-in tissue model's speed on 40x slides, end to end, in a batch (issue 18's target).

    .venv/bin/python benchmarks/builtin_predict.py --slides 4 --out benchmarks/builtin/run.json

Writes one synthetic 40x slide (64000 x 32000 level-0 pixels at 0.25 um/px, pyramidal JPEG
BigTIFF with levels at 1, 4, 16, ... um/px like a scanner's), then runs ``gigaseg predict`` once
over --slides copies of it (links with other names): pyramid read at the level nearest the
model's resolution, the model, mask TIFF, GeoJSON and overlay for each. Reports the seconds per
slide in the batch (the batch's wall time less one process start, over the slide count, and
each slide's own ``seconds`` from its summary JSON) and the start-up separately: ``python -c
"import torch"`` and ``gigaseg --version`` and a whole ``gigaseg predict`` of one tiny image.

The slide is synthetic slide --seed (``gigaseg.synth``, profile "he"), rendered at 2 um/px;
levels finer than that (0.25 and 1 um/px) repeat its pixels (nearest), coarser ones are box
averages. The model reads the level nearest its resolution, which is 2 um/px or coarser, so
the fine levels only have to exist and be the right size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RENDER_MPP = 2.0
L0_MPP = 0.25


def _tiles(src: np.ndarray, scale: float, width: int, height: int, tile: int):
    """Row-major tiles of a width x height level made from ``src`` (at RENDER_MPP) by ``scale``
    level pixels per source pixel (> 1: repeated, nearest; <= 1: box-averaged beforehand)."""
    for y in range(0, height, tile):
        rows = np.minimum((np.arange(y, y + tile) / scale).astype(np.int64), src.shape[0] - 1)
        band = src[rows]
        for x in range(0, width, tile):
            cols = np.minimum((np.arange(x, x + tile) / scale).astype(np.int64), src.shape[1] - 1)
            yield np.ascontiguousarray(band[:, cols])


def write_40x_slide(path: Path, *, width: int, height: int, seed: int, tile: int = 512, quality: int = 90) -> Path:
    import tifffile
    from PIL import Image

    from gigaseg._pyramid import SLIDE_LEVELS, level_sizes, write_level
    from gigaseg.synth import render_region

    k = round(RENDER_MPP / L0_MPP)
    sw, sh = width // k, height // k
    src, _ = render_region(seed, 0, 0, sw, sh, width=sw, height=sh, mpp=RENDER_MPP)
    sizes = level_sizes(width, height, SLIDE_LEVELS)
    jpeg = dict(tile=tile, mpp=(L0_MPP, L0_MPP), compression="jpeg", compressionargs={"level": quality},
                photometric="rgb", subsampling=(2, 2), maxworkers=os.cpu_count() or 1)
    tmp = path.with_name(path.name + ".part")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for level, (lw, lh) in enumerate(sizes):
            scale = lw / sw  # level pixels per source pixel
            if scale >= 1:
                tiles = _tiles(src, scale, lw, lh, tile)
            else:  # coarser than the rendering: area averages (Pillow BOX), as a scanner's levels
                small = np.asarray(Image.fromarray(src).resize((lw, lh), Image.Resampling.BOX))
                tiles = _tiles(small, 1.0, lw, lh, tile)
            write_level(tif, tiles, shape=(lh, lw, 3), level=level, **jpeg)
    os.replace(tmp, path)
    return path


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slides", type=int, default=4, help="slides in the batch (copies of one)")
    ap.add_argument("--width", type=int, default=64000)
    ap.add_argument("--height", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--model", default=None, help="a model file instead of the built-in one")
    ap.add_argument("--slide", default=None, help="reuse this slide (written by an earlier run) instead of writing one")
    ap.add_argument("--dir", default=None, help="scratch folder (default: the system's)")
    ap.add_argument("--orientations", type=int, choices=(1, 2, 4, 8), default=1,
                    help="gigaseg predict --orientations N: the mean over N orientations of each slide")
    ap.add_argument("--no-component-filter", action="store_true",
                    help="gigaseg predict --no-component-filter: the model's masks without its component filter")
    ap.add_argument("--no-seam-correction", action="store_true",
                    help="gigaseg predict --no-seam-correction: the scanner's tiles of glass as they are")
    ap.add_argument("--fill-holes", type=float, default=None, metavar="UM",
                    help="gigaseg predict --fill-holes UM (default: the model's width; 0: none)")
    ap.add_argument("--drop-specks", type=float, default=None, metavar="UM",
                    help="gigaseg predict --drop-specks UM (default: the model's size; 0: none)")
    ap.add_argument("--edge-trim", type=float, default=None, metavar="RATIO",
                    help="gigaseg predict --edge-trim RATIO (default: the model's ratio; 0: none)")
    ap.add_argument("--out", required=True, help="JSON file")
    args = ap.parse_args(argv)
    if args.slides < 1:
        ap.error("--slides must be >= 1")

    from gigaseg._runinfo import machine_info, utc_now

    py = sys.executable
    gig = [py, "-m", "gigaseg"]
    with tempfile.TemporaryDirectory(prefix="gigaseg-builtin-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        slide = Path(args.slide) if args.slide else write_40x_slide(tmp / "s40x.tiff", width=args.width,
                                                                    height=args.height, seed=args.seed)
        write_s = time.perf_counter() - t0
        batch = []
        for i in range(args.slides):  # hard links: each its own name (symbolic links would resolve to one)
            link = tmp / f"slide{i}.tiff"
            try:
                os.link(slide, link)
            except OSError:  # another file system: a copy
                shutil.copyfile(slide, link)
            batch.append(str(link))
        tiny = tmp / "tiny.png"
        from PIL import Image

        Image.fromarray(np.full((64, 64, 3), 240, np.uint8)).save(tiny)
        model = ["--model", args.model] if args.model else []
        model += ["--orientations", str(args.orientations)] if args.orientations > 1 else []
        model += ["--no-component-filter"] if args.no_component_filter else []
        model += ["--no-seam-correction"] if args.no_seam_correction else []
        model += ["--fill-holes", f"{args.fill_holes:g}"] if args.fill_holes is not None else []
        model += ["--drop-specks", f"{args.drop_specks:g}"] if args.drop_specks is not None else []
        model += ["--edge-trim", f"{args.edge_trim:g}"] if args.edge_trim is not None else []
        startup = {
            "import_torch_s": statistics.median(_timed([py, "-c", "import torch"]) for _ in range(3)),
            "gigaseg_version_s": statistics.median(_timed([*gig, "--version"]) for _ in range(3)),
            "predict_tiny_image_s": statistics.median(
                _timed([*gig, "predict", str(tiny), "--mpp", "8", "--out", str(tmp / f"t{j}"), *model,
                        "--no-progress"]) for j in range(3)),
        }
        out_dir = tmp / "masks"
        wall = _timed([*gig, "predict", *batch, "--out", str(out_dir), *model, "--no-progress"])
        summaries = [json.loads((out_dir / f"slide{i}.json").read_text()) for i in range(args.slides)]
    per_slide = [s["timings"] for s in summaries]
    result = {
        "command": "python benchmarks/builtin_predict.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "when": utc_now(), "machine": machine_info(),
        "slide": {"width": args.width, "height": args.height, "mpp": L0_MPP, "seed": args.seed,
                  "rendered_at_mpp": RENDER_MPP, "write_seconds": round(write_s, 1)},
        "model": args.model or "builtin", "orientations": args.orientations,
        "component_filter": summaries[0].get("component_filter"),
        "seam_correction": summaries[0].get("seam_correction"),
        "holes_filled": summaries[0].get("holes_filled"), "specks_dropped": summaries[0].get("specks_dropped"),
        "edge_trim": summaries[0].get("edge_trim"), "model_mpp": summaries[0].get("model_mpp"),
        "grid": summaries[0].get("grid_size"), "pieces": summaries[0].get("pieces"),
        "slides": args.slides, "batch_wall_s": round(wall, 3),
        "startup": {k: round(v, 3) for k, v in startup.items()},
        "seconds_per_slide_in_batch": round((wall - startup["predict_tiny_image_s"]) / args.slides, 3),
        "timings_per_slide": per_slide,  # each slide's own, from its summary JSON
        "load_average": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds_per_slide_in_batch", "startup", "batch_wall_s")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
