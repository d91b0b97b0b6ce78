"""``gigaseg prepare`` (fill a region store), ``gigaseg store`` (list it) and
``gigaseg bench store`` (tile-read throughput through the dataset views)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..options import (
    DEFAULT_HOLES,
    DEFAULT_IGNORE,
    DEFAULT_JITTER,
    DEFAULT_SEED,
    DEFAULT_SPLIT,
    DEFAULT_STORE_FORMAT,
    DEFAULT_SYNTH_MPP,
    HOLE_CONVENTIONS,
    IGNORE_MODES,
    JITTERS,
    MASK_KINDS,
    SPLITS,
    STORE_FORMATS,
)
from . import feeds, number

_PREPARE_HELP = """\
Cut training regions into a region store (a directory; see docs/store.md).

From slides, one mask per slide (in the same order):
  gigaseg prepare a.svs b.svs --masks a.geojson b.png --size 16000x64000 --mpp 1.0 --out regions/
Synthetic regions (seeds S, S+1, ...; the last K go to the val split):
  gigaseg prepare --synthetic 4 --size 4096x16384 --seed 0 --val 1 --out regions/

--size is HEIGHTxWIDTH (rows x columns) in pixels at the target --mpp: 16000x64000 is
16000 rows by 64000 columns. --origin is the region's top-left corner X,Y in level-0
pixels (default: the region centred on the slide). Masks cover the whole slide: an
image (.npy, .tif, .png, ...; 0/1 or 0/255; any resolution, sampled nearest) or QuPath
GeoJSON (.geojson/.json, Polygons and MultiPolygons with holes, level-0 pixels).
A region that does not fit the slide is refused, or with --pad taken as the whole slide
padded with background (white image, mask 0). Memory stays bounded (strip by strip).
"""


def register(subparsers, formatter_class) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="cut training regions (slides + masks, or synthetic) into a region store",
        description=_PREPARE_HELP,
        formatter_class=formatter_class,
    )
    p.add_argument("slides", nargs="*", metavar="SLIDE", help="slide files (any format gigaseg.slide opens)")
    p.add_argument("--masks", nargs="+", metavar="MASK", default=[], help="one mask per SLIDE, in order")
    p.add_argument("--size", required=True, metavar="HxW",
                   help="region HEIGHTxWIDTH in pixels at --mpp, e.g. 16000x64000")
    p.add_argument("--mpp", type=number("mpp"), default=None,
                   help=f"target microns per pixel (default: slides: level 0 as is; --synthetic: {DEFAULT_SYNTH_MPP})")
    p.add_argument("--out", required=True, metavar="STORE", help="the store directory (created if new)")
    p.add_argument("--origin", default=None, metavar="X,Y",
                   help="top-left corner in level-0 pixels (default: centred)")
    p.add_argument("--pad", action="store_true", help="pad a region larger than the slide with background")
    p.add_argument("--split", default=DEFAULT_SPLIT, choices=SPLITS, help="split of the slide regions")
    p.add_argument("--name", default=None, help="region name (one slide only; default: the slide's file stem)")
    p.add_argument("--format", default=DEFAULT_STORE_FORMAT, choices=STORE_FORMATS,
                   help="on-disk format: npy (memory-mapped, fastest) or zarr (zstd, ~3x smaller, slower)")
    p.add_argument("--slide-mpp", type=number("slide_mpp"), default=None,
                   help="level-0 mpp of slides that do not record it")
    p.add_argument("--mask-class", action="append", default=None, metavar="NAME",
                   help="GeoJSON: use only features of this QuPath classification (repeatable; default: all)")
    p.add_argument("--ignore", default=DEFAULT_IGNORE, choices=IGNORE_MODES,
                   help="mask images with 0/1/255: what 255 (ignore) becomes; keep: 255 stays, and training "
                        "leaves those pixels out of the loss")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                   help="the masks are label images of these classes (values 0..C-1 in this order, 255 ignore) "
                        "for a model of several classes; gigaseg train reads the names from the store")
    p.add_argument("--synthetic", type=number("count"), default=None, metavar="N",
                   help="make N synthetic regions instead of slides")
    p.add_argument("--seed", type=number("seed"), default=DEFAULT_SEED, help="--synthetic: seed of the first region")
    p.add_argument("--val", type=number("val"), default=0, metavar="K",
                   help="--synthetic: the last K regions go to val")
    p.add_argument("--holes", default=DEFAULT_HOLES, choices=HOLE_CONVENTIONS,
                   help="--synthetic: what the mask calls lumens and tears inside tissue: background (exact "
                        "outline) or tissue (holes filled, like histolab's tissue masks)")
    p.add_argument("--profile", default="he", metavar="PROFILE",
                   help="--synthetic: he (the original H&E slides), all (every stain, tissue kind, glass, scanner "
                        "effect and artefact, drawn per region) or comma-separated categories (docs/synth.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="fail a region on any warning about its data (corrupt JPEG data, a decoder's warning, a "
                        "greyscale or 16-bit slide converted to RGB, GeoJSON polygons outside the slide) instead of "
                        "recording it with the region and printing it")
    # messages name the library's parameters: NOTE [Parameters and flags] in gigaseg.cli
    feeds(p, out=("path", "store"), masks="mask", mask_class=("mask_classes", "classes"), synthetic="count")
    p.set_defaults(func=_run_prepare)

    s = subparsers.add_parser(
        "store",
        help="list the regions of a region store, or assign splits",
        description="List a region store's regions (JSON lines with --json), or assign a split.",
        formatter_class=formatter_class,
    )
    s.add_argument("store", metavar="STORE")
    s.add_argument("--set-split", nargs=2, action="append", default=[], metavar=("NAME", "SPLIT"),
                   help="assign region NAME to SPLIT (train or val); repeatable")
    s.add_argument("--json", action="store_true", help="print one JSON object per region")
    s.set_defaults(func=_run_store)


def register_bench(bench_subparsers, formatter_class) -> None:
    b = bench_subparsers.add_parser(
        "store",
        help="tile-read throughput from a region store through the dataset views",
        description=(
            "Read random tiles (TILE + 2 HALO pixels square) of a region through RegionDataset views, "
            "without augmentation and with it (dihedral transform + colour jitter), with the page cache "
            "dropped for the region's files (cold) and cached (warm). Prints one JSON object."
        ),
        formatter_class=formatter_class,
    )
    b.add_argument("--store", default=None, help="an existing store (default: a temporary one with one region)")
    b.add_argument("--size", default="4096x8192", metavar="HxW", help="size of the temporary region")
    b.add_argument("--format", default=DEFAULT_STORE_FORMAT, choices=STORE_FORMATS,
                   help="format of the temporary region")
    b.add_argument("--tile", type=int, default=2048, help="tile side without halo")
    b.add_argument("--halo", type=int, default=128, help="halo on each side")
    b.add_argument("--tiles", type=int, default=8, help="tiles per measurement")
    b.add_argument("--jitter", default=DEFAULT_JITTER, choices=JITTERS, help="colour jitter when augmenting")
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always JSON")
    b.set_defaults(func=_run_bench)

    pm = bench_subparsers.add_parser(
        "prepare",
        help="peak memory and speed of gigaseg prepare on a gigapixel region",
        description=(
            "Write a temporary tiled, uncompressed TIFF slide of SLIDE_SIZE (level 0, 0.5 mpp; cheap repeated "
            "content) and a GeoJSON mask (an ellipse with a hole), then prepare one region of --size at --mpp "
            "from it into a temporary store, measuring peak resident memory (VmHWM, reset after writing the "
            "slide) and peak anonymous memory (RssAnon, sampled). Needs about 3 bytes per slide pixel plus 4 "
            "per region pixel of disk under --dir. Prints one JSON object."
        ),
        formatter_class=formatter_class,
    )
    pm.add_argument("--size", default="16000x64000", metavar="HxW", help="region size at --mpp")
    pm.add_argument("--slide-size", default=None, metavar="HxW", help="slide size (default: the region at --mpp)")
    pm.add_argument("--mpp", type=float, default=None, help="target mpp (default: level 0)")
    pm.add_argument("--slide-mpp", type=float, default=0.5, help="level-0 mpp given to the slide")
    pm.add_argument("--mask", default=MASK_KINDS[0], choices=MASK_KINDS, help="kind of mask")
    pm.add_argument("--format", default=DEFAULT_STORE_FORMAT, choices=STORE_FORMATS, help="store format")
    pm.add_argument("--dir", default=None, help="scratch directory (default: the system temp dir)")
    pm.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always JSON")
    pm.set_defaults(func=_run_bench_prepare)


def _run_prepare(args) -> int:
    from .._runinfo import utc_now
    from ..errors import ConfigError
    from ..outputs import refuse_inputs, run_config_path
    from ..prepare import parse_origin, parse_size, prepare_region, prepare_synthetic
    from ..store import RegionStore

    size = parse_size(args.size)
    origin = parse_origin(args.origin) if args.origin else None
    progress = not args.no_progress
    if args.synthetic is not None:
        if args.slides or args.masks:
            raise ConfigError("--synthetic makes regions without slides: drop the SLIDE and --masks arguments")
        if args.classes:
            raise ConfigError("--synthetic makes tissue masks; --classes names the classes of label-image --masks "
                              "(scripts/qc_model/make_data.py makes a store of the synthetic slides' classes)")
    else:
        if not args.slides:
            raise ConfigError("give SLIDE files (with --masks), or --synthetic N")
        if len(args.masks) != len(args.slides):
            raise ConfigError(
                f"{len(args.slides)} slides but {len(args.masks)} masks: give one --masks file per SLIDE, in order"
            )
        if args.name and len(args.slides) > 1:
            raise ConfigError("--name names one region: use it with one SLIDE only")
        # the store's index and this run's configuration are outputs: never a slide or a mask
        refuse_inputs([Path(args.out) / "store.json", run_config_path(args.out, "prepare")],
                      [*args.slides, *args.masks])
    store = RegionStore.create(args.out, exist_ok=True)
    for name in store.clean_temporaries():
        print(f"removed {name}: the leftover of an interrupted prepare", file=sys.stderr)
    if args.synthetic is not None:
        regions = prepare_synthetic(
            store, args.synthetic, size, seed=args.seed, val=args.val,
            mpp=args.mpp if args.mpp is not None else DEFAULT_SYNTH_MPP, format=args.format, progress=progress,
            holes=args.holes, profile=args.profile,
        )
    else:
        regions = []
        for slide, mask in zip(args.slides, args.masks):
            regions.append(
                prepare_region(
                    store, slide, mask, size, mpp=args.mpp, origin=origin, pad=args.pad, split=args.split,
                    name=args.name, format=args.format, slide_mpp=args.slide_mpp, mask_classes=args.mask_class,
                    ignore=args.ignore, progress=progress, strict=args.strict, classes=args.classes,
                )
            )
    from .. import __version__
    from .._atomic import write_json_atomic

    config = {
        "command": "prepare",
        "gigaseg_version": __version__,
        "time": utc_now(),
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "size_wh": list(size),
        "regions": [r.name for r in regions],
    }
    write_json_atomic(run_config_path(args.out, "prepare"), config)
    for r in regions:
        w, h = r.size
        print(f"{r.name}\t{h}x{w}\t{r.split}\t{r.path}")
        for warning in r.meta.get("warnings", []):  # NOTE [Slide problems]; --strict makes them errors
            print(f"gigaseg prepare: warning: region {r.name} ({r.meta['source'].get('path')}): {warning}",
                  file=sys.stderr)
    return 0


def _run_store(args) -> int:
    from ..store import RegionStore

    store = RegionStore(args.store)
    for name, split in args.set_split:
        if name not in store:
            from ..store import StoreError

            raise StoreError(f"no region {name!r} in {store.path}; it has {store.names}")
        store.set_split(name, split)
    for r in store.regions:
        w, h = r.size
        if args.json:
            print(json.dumps({"name": r.name, "height": h, "width": w, "split": r.split, "format": r.format,
                              "mpp": r.meta.get("mpp"), "source": (r.meta.get("source") or {}).get("path"),
                              "seed": r.meta.get("seed")}))
        else:
            print(f"{r.name}\t{h}x{w}\t{r.split}\t{r.format}\tmpp={r.meta.get('mpp')}")
    if not args.json:
        print(f"{len(store)} regions in {store.path}", file=sys.stderr)
    return 0


def _run_bench(args) -> int:
    from ..bench.store import bench_store
    from ..prepare import parse_size

    w, h = parse_size(args.size)
    print(json.dumps(bench_store(
        store=args.store, height=h, width=w, format=args.format, tile=args.tile, halo=args.halo, tiles=args.tiles,
        jitter=args.jitter, seed=args.seed,
    )))
    return 0


def _run_bench_prepare(args) -> int:
    from ..bench.store import bench_prepare
    from ..prepare import parse_size

    w, h = parse_size(args.size)
    sw, sh = parse_size(args.slide_size) if args.slide_size else (None, None)
    print(json.dumps(bench_prepare(
        h, w, slide_height=sh, slide_width=sw, mpp=args.mpp, slide_mpp=args.slide_mpp, mask=args.mask,
        format=args.format, scratch_dir=args.dir,
    )))
    return 0
