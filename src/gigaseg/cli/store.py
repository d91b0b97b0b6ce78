"""``gigaseg prepare`` (fill a region store), ``gigaseg store`` (list it) and
``gigaseg bench store`` (tile-read throughput through the dataset views)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
    p.add_argument("--size", required=True, metavar="HxW", help="region HEIGHTxWIDTH in pixels at --mpp, e.g. 16000x64000")
    p.add_argument("--mpp", type=float, default=None,
                   help="target microns per pixel (default: slides: level 0 as is; --synthetic: 0.5)")
    p.add_argument("--out", required=True, metavar="STORE", help="the store directory (created if new)")
    p.add_argument("--origin", default=None, metavar="X,Y", help="top-left corner in level-0 pixels (default: centred)")
    p.add_argument("--pad", action="store_true", help="pad a region larger than the slide with background")
    p.add_argument("--split", default="train", choices=("train", "val"), help="split of the slide regions")
    p.add_argument("--name", default=None, help="region name (one slide only; default: the slide's file stem)")
    p.add_argument("--format", default="npy", choices=("npy", "zarr"),
                   help="on-disk format: npy (memory-mapped, fastest) or zarr (zstd, ~3x smaller, slower)")
    p.add_argument("--slide-mpp", type=float, default=None, help="level-0 mpp of slides that do not record it")
    p.add_argument("--mask-class", action="append", default=None, metavar="NAME",
                   help="GeoJSON: use only features of this QuPath classification (repeatable; default: all)")
    p.add_argument("--ignore", default="keep", choices=("keep", "background", "tissue"),
                   help="mask images with 0/1/255: what 255 (ignore) becomes; training accepts only 0/1")
    p.add_argument("--synthetic", type=int, default=None, metavar="N", help="make N synthetic regions instead of slides")
    p.add_argument("--seed", type=int, default=0, help="--synthetic: seed of the first region")
    p.add_argument("--val", type=int, default=0, metavar="K", help="--synthetic: the last K regions go to val")
    p.add_argument("--holes", default="background", choices=("background", "tissue"),
                   help="--synthetic: what the mask calls lumens and tears inside tissue: background (exact "
                        "outline) or tissue (holes filled, like histolab's tissue masks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    b.add_argument("--format", default="npy", choices=("npy", "zarr"), help="format of the temporary region")
    b.add_argument("--tile", type=int, default=2048, help="tile side without halo")
    b.add_argument("--halo", type=int, default=128, help="halo on each side")
    b.add_argument("--tiles", type=int, default=8, help="tiles per measurement")
    b.add_argument("--jitter", default="hed", choices=("hed", "rgb", "none"), help="colour jitter when augmenting")
    b.add_argument("--seed", type=int, default=0)
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
    pm.add_argument("--mask", default="geojson", choices=("geojson", "tiff"), help="kind of mask")
    pm.add_argument("--format", default="npy", choices=("npy", "zarr"), help="store format")
    pm.add_argument("--dir", default=None, help="scratch directory (default: the system temp dir)")
    pm.add_argument("--json", action="store_true", help="accepted for symmetry: the output is always JSON")
    pm.set_defaults(func=_run_bench_prepare)


def _run_prepare(args) -> int:
    from ..errors import ConfigError
    from .._runinfo import utc_now
    from ..prepare import parse_origin, parse_size, prepare_region, prepare_synthetic
    from ..store import RegionStore

    size = parse_size(args.size)
    origin = parse_origin(args.origin) if args.origin else None
    progress = not args.no_progress
    if args.synthetic is not None:
        if args.slides or args.masks:
            raise ConfigError("--synthetic makes regions without slides: drop the SLIDE and --masks arguments")
    else:
        if not args.slides:
            raise ConfigError("give SLIDE files (with --masks), or --synthetic N")
        if len(args.masks) != len(args.slides):
            raise ConfigError(
                f"{len(args.slides)} slides but {len(args.masks)} masks: give one --masks file per SLIDE, in order"
            )
        if args.name and len(args.slides) > 1:
            raise ConfigError("--name names one region: use it with one SLIDE only")
    store = RegionStore.create(args.out, exist_ok=True)
    for name in store.clean_temporaries():
        print(f"removed {name}: the leftover of an interrupted prepare", file=sys.stderr)
    if args.synthetic is not None:
        regions = prepare_synthetic(
            store, args.synthetic, size, seed=args.seed, val=args.val,
            mpp=args.mpp if args.mpp is not None else 0.5, format=args.format, progress=progress, holes=args.holes,
        )
    else:
        regions = []
        for slide, mask in zip(args.slides, args.masks):
            regions.append(
                prepare_region(
                    store, slide, mask, size, mpp=args.mpp, origin=origin, pad=args.pad, split=args.split,
                    name=args.name, format=args.format, slide_mpp=args.slide_mpp, mask_classes=args.mask_class,
                    ignore=args.ignore, progress=progress,
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
    write_json_atomic(Path(args.out) / "prepare-config.json", config)
    for r in regions:
        w, h = r.size
        print(f"{r.name}\t{h}x{w}\t{r.split}\t{r.path}")
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


def _drop_cache(path: Path) -> None:
    import os

    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _fill_region(store, size, fmt, seed):
    """One region of ``size`` (w, h): a synthetic slide when gigaseg.synth is there."""
    import numpy as np

    w, h = size
    try:
        from ..synth import render_region
    except ImportError:
        render_region = None
    rows = 512
    with store.new_region("bench", (w, h), meta={"mpp": 0.5, "seed": seed}, format=fmt) as writer:
        for y0 in range(0, h, rows):
            n = min(rows, h - y0)
            if render_region is not None:
                rgb, m = render_region(seed, 0, y0, w, n, width=w, height=h)
            else:
                rng = np.random.default_rng([seed, y0])
                rgb = rng.integers(0, 256, (n, w, 3), dtype=np.uint8)
                m = (rgb[..., 0] > 127).astype(np.uint8)
            writer.append(rgb, m)
    return "gigaseg.synth.render_region" if render_region is not None else "random"


def _run_bench(args) -> int:
    import os
    import platform
    import shutil
    import tempfile
    import time

    import numpy as np

    from ..dataset import DIHEDRAL, RegionDataset, RegionView, StainJitter
    from ..prepare import parse_size
    from ..store import RegionStore

    tmp = None
    content = "existing store"
    try:
        if args.store:
            store = RegionStore(args.store)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="gigaseg-bench-store-"))
            store = RegionStore.create(tmp / "store")
            content = _fill_region(store, parse_size(args.size), args.format, args.seed)
        ds = RegionDataset(store, split=None, augment=False)
        region = ds.regions[0]
        h, w = region.shape
        side = args.tile + 2 * args.halo
        if side > min(h, w):
            side = min(h, w)
        rng = np.random.default_rng(args.seed)
        origins = [(int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))) for _ in range(args.tiles)]
        jitter = StainJitter.draw(np.random.default_rng(args.seed), args.jitter, 0.05)
        modes = {
            "plain": [(DIHEDRAL[0], None)] * len(origins),
            "dihedral": [(DIHEDRAL[i % 8], None) for i in range(len(origins))],
            "dihedral+jitter": [(DIHEDRAL[i % 8], jitter) for i in range(len(origins))],
        }
        bytes_per_tile = side * side * 4  # image (3 bytes) + mask (1 byte) per pixel
        results = {}
        for mode, params in modes.items():
            for cache in ("cold", "warm"):
                if cache == "cold":
                    _drop_cache(region.path)
                t0 = time.perf_counter()
                for (y0, x0), (t, j) in zip(origins, params):
                    img = RegionView(region.image, t, j)[y0 : y0 + side, x0 : x0 + side]
                    msk = RegionView(region.mask, t, None)[y0 : y0 + side, x0 : x0 + side]
                    del img, msk
                dt = time.perf_counter() - t0
                results[f"{mode}_{cache}_MBps"] = round(bytes_per_tile * len(origins) / dt / 1e6, 1)
                results[f"{mode}_{cache}_s_per_tile"] = round(dt / len(origins), 4)
        out = {
            "benchmark": "store",
            "store": str(store.path) if args.store else None,
            "region": region.name,
            "region_hw": [h, w],
            "format": region.format,
            "content": content,
            "tile_side_with_halo": side,
            "tiles": len(origins),
            "jitter": args.jitter,
            "MB_counts": "image + mask bytes of the tiles returned",
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            **results,
        }
        print(json.dumps(out))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _write_bench_slide(path: Path, w: int, h: int) -> None:
    """A tiled uncompressed RGB TIFF at 0.5 mpp whose tiles come from a small bank."""
    import numpy as np
    import tifffile

    tile = 512
    rng = np.random.default_rng(0)
    bank = []
    for k in range(8):
        t = np.full((tile, tile, 3), 235, np.uint8)
        t[:, :, 0] = 230 - 20 * (k % 3)
        noise = rng.integers(0, 40, (tile, tile, 1), dtype=np.uint8)
        t = (t - noise).astype(np.uint8)
        bank.append(t)

    def tiles():
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                yield bank[(ty // tile * 7 + tx // tile) % 8]

    tifffile.imwrite(
        path, tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
        bigtiff=True, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER",
    )


def _run_bench_prepare(args) -> int:
    import os
    import shutil
    import tempfile
    import time

    import numpy as np

    from .._memory import MemorySampler, peak_rss_bytes, read_status_bytes
    from ..prepare import parse_size, prepare_region
    from ..store import RegionStore

    w, h = parse_size(args.size)
    ds = 1.0 if args.mpp is None else args.mpp / args.slide_mpp
    if args.slide_size:
        sw, sh = parse_size(args.slide_size)
    else:
        sw, sh = int(np.ceil(w * ds)), int(np.ceil(h * ds))
    tmp = Path(tempfile.mkdtemp(prefix="gigaseg-bench-prepare-", dir=args.dir))
    try:
        slide = tmp / "slide.tif"
        t0 = time.perf_counter()
        _write_bench_slide(slide, sw, sh)
        t_slide = time.perf_counter() - t0
        if args.mask == "geojson":
            ang = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
            ext = np.stack([sw / 2 + 0.45 * sw * np.cos(ang), sh / 2 + 0.45 * sh * np.sin(ang)], 1)
            hole = np.stack([sw / 2 + 0.1 * sw * np.cos(-ang), sh / 2 + 0.1 * sh * np.sin(-ang)], 1)
            rings = [np.vstack([r, r[:1]]).tolist() for r in (ext, hole)]
            mask = tmp / "mask.geojson"
            mask.write_text(json.dumps({"type": "FeatureCollection", "features": [
                {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": rings}}]}))
        else:
            import tifffile

            mask = tmp / "mask.tif"
            mh, mw = max(1, sh // 16), max(1, sw // 16)
            yy, xx = np.ogrid[0:mh, 0:mw]
            m = ((((xx - mw / 2) / (0.45 * mw)) ** 2 + ((yy - mh / 2) / (0.45 * mh)) ** 2) < 1).astype(np.uint8)
            tifffile.imwrite(mask, m * 255, tile=(256, 256), compression="zlib")
        reset = True
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
        except OSError:
            reset = False
        rss_before = read_status_bytes("VmRSS")
        store = RegionStore.create(tmp / "store")
        t0 = time.perf_counter()
        with MemorySampler(0.05) as sampler:
            region = prepare_region(store, slide, mask, (w, h), mpp=args.mpp, format=args.format,
                                    slide_mpp=args.slide_mpp, progress=False)
        t_prep = time.perf_counter() - t0
        disk = sum(p.stat().st_blocks * 512 for p in region.path.rglob("*") if p.is_file())
        out = {
            "benchmark": "prepare",
            "region_hw": [h, w],
            "slide_hw": [sh, sw],
            "mpp": args.mpp,
            "slide_mpp": args.slide_mpp,
            "strip_rows": region.meta.get("strip_rows"),
            "strips_exact": region.meta.get("strips_exact"),
            "mask": args.mask,
            "format": args.format,
            "slide_write_s": round(t_slide, 1),
            "prepare_s": round(t_prep, 1),
            "prepare_MBps": round(w * h * 4 / t_prep / 1e6, 1),
            "peak_rss_GiB": round((peak_rss_bytes() or 0) / 2**30, 3) if reset else None,
            "peak_anon_GiB": round(sampler.peak / 2**30, 3),
            "rss_before_GiB": round((rss_before or 0) / 2**30, 3),
            "region_disk_GB": round(disk / 1e9, 2),
            "cpu_count": os.cpu_count(),
        }
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
