"""``gigaseg synth`` (write a synthetic slide) and ``gigaseg bench synth``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..options import (
    DEFAULT_HOLES,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_SEED,
    DEFAULT_SYNTH_MPP,
    DEFAULT_TIFF_TILE,
    HOLE_CONVENTIONS,
)


def register(subparsers, formatter_class) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic H&E slide and its exact tissue mask",
        description=(
            "Write a synthetic H&E whole-slide image as a pyramidal JPEG BigTIFF (OUT.tiff), its\n"
            "exact tissue mask (OUT.mask.tiff, uint8 0/1) and the effective configuration (OUT.json).\n"
            "The same --seed, --width, --height and --mpp always give the same slide."
        ),
        formatter_class=formatter_class,
    )
    p.add_argument("out", metavar="OUT.tiff", help="output slide path")
    _geometry_args(p, width=None, height=None)
    p.add_argument("--quality", type=int, default=DEFAULT_JPEG_QUALITY, help="JPEG quality 1..100")
    p.add_argument("--tile", type=int, default=DEFAULT_TIFF_TILE, help="TIFF tile size, px (multiple of 16)")
    p.add_argument("--holes", default=DEFAULT_HOLES, choices=HOLE_CONVENTIONS,
                   help="what the mask calls lumens and tears inside tissue: background (exact outline) or "
                        "tissue (holes filled, like histolab's tissue masks)")
    p.add_argument("--profile", default="he", metavar="PROFILE",
                   help="he (the original H&E slides), all (every stain, tissue kind, glass, scanner effect and "
                        "artefact, drawn per slide) or comma-separated categories, e.g. ihc,needle,pen (docs/synth.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth)


def register_bench(bench_subparsers, formatter_class) -> None:
    p = bench_subparsers.add_parser(
        "synth",
        help="time writing a synthetic slide (JSON)",
        description="Write a synthetic slide to a temporary folder; print speed, memory and file sizes as JSON.",
        formatter_class=formatter_class,
    )
    _geometry_args(p, width=64000, height=16000)
    p.add_argument("--quality", type=int, default=DEFAULT_JPEG_QUALITY, help="JPEG quality 1..100")
    p.add_argument("--json", action="store_true", help="print JSON (always on; accepted for uniformity)")
    p.add_argument("--keep", metavar="DIR", default=None, help="write into DIR and keep the files")
    p.set_defaults(func=run_bench)


def _geometry_args(p: argparse.ArgumentParser, width, height) -> None:
    req = width is None
    none = argparse.SUPPRESS  # no "(default: None)" in --help for required options
    p.add_argument("--width", type=int, default=none if req else width, required=req, help="slide width, level-0 px")
    p.add_argument("--height", type=int, default=none if req else height, required=req,
                   help="slide height, level-0 px")
    p.add_argument("--seed", type=int, default=none if req else DEFAULT_SEED, required=req, help="slide seed (>= 0)")
    p.add_argument("--mpp", type=float, default=DEFAULT_SYNTH_MPP, help="micrometres per pixel")


def run_synth(args) -> int:
    from .. import __version__
    from .._atomic import write_text_atomic
    from ..synth import make_layout, write_slide

    out = Path(args.out)
    slide, mask = write_slide(out, width=args.width, height=args.height, seed=args.seed, mpp=args.mpp,
                              tile=args.tile, quality=args.quality, progress=not args.no_progress, holes=args.holes,
                              profile=args.profile)
    config = {
        "command": "synth",
        "gigaseg_version": __version__,
        "out": str(slide),
        "mask": str(mask),
        "width": args.width,
        "height": args.height,
        "seed": args.seed,
        "mpp": args.mpp,
        "quality": args.quality,
        "tile": args.tile,
        "holes": args.holes,
        "profile": args.profile,
    }
    if args.profile != "he":  # the categories this seed drew (docs/synth.md)
        config["categories"] = list(make_layout(args.seed, args.width, args.height, args.mpp,
                                                profile=args.profile).categories)
    write_text_atomic(slide.with_suffix(".json"), json.dumps(config, indent=2) + "\n")
    print(slide)
    print(mask)
    return 0


def run_bench(args) -> int:
    from ..bench.synth import bench_synth

    result = bench_synth(args.height, args.width, seed=args.seed, mpp=args.mpp, quality=args.quality, keep=args.keep)
    print(json.dumps(result), file=sys.stdout)
    return 0
