"""``gigaseg bench step`` and ``gigaseg bench exactness``: the engine's benchmarks."""

from __future__ import annotations

import json
import sys

from ..options import DEFAULT_LOSS, DEFAULT_PREDICT_DEVICE, DEFAULT_PRESET, LOSSES, PRESET_NAMES


def register_bench(sub, formatter_class) -> None:
    p = sub.add_parser(
        "step",
        help="time one training step on a synthetic image read from disk",
        description=(
            "Time full training steps (forward, loss, backward, Adam step) of a model on a synthetic "
            "uint8 image memory-mapped from disk, tiled (exact, bounded memory) or naive (whole-image "
            "autograd). Prints one JSON object."
        ),
        formatter_class=formatter_class,
    )
    p.add_argument("--height", type=int, required=True, help="image height in pixels")
    p.add_argument("--width", type=int, required=True, help="image width in pixels")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=PRESET_NAMES, help="model preset")
    p.add_argument("--naive", action="store_true", help="whole-image autograd instead of the tiled engine")
    p.add_argument("--memory-budget", default=None, help="e.g. 4GB or 2GiB; default: the planner's (1 GiB)")
    p.add_argument("--tile", type=int, default=None, help="core tile side (multiple of the stride); overrides the plan")
    p.add_argument("--device", default=DEFAULT_PREDICT_DEVICE, help="cpu, cuda, mps or auto")
    p.add_argument("--loss", default=DEFAULT_LOSS, choices=LOSSES)
    p.add_argument("--steps", type=int, default=3, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--data-dir", default=None, help="keep/reuse the synthetic image here (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=_run_step)

    p = sub.add_parser(
        "exactness",
        help="largest relative gradient error of tiled vs whole-image autograd",
        description="Compare tiled and whole-image gradients over configs, sizes, losses and dtypes.",
        formatter_class=formatter_class,
    )
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.set_defaults(func=_run_exactness)


def _print(result: dict, as_json: bool, summary: str) -> None:
    if not as_json:
        print(summary, file=sys.stderr)
    print(json.dumps(result))


def _run_step(args) -> int:
    import torch

    from .._units import format_bytes
    from ..bench.step import bench_step

    if args.threads:
        torch.set_num_threads(args.threads)
    r = bench_step(
        args.height, args.width, preset_name=args.preset, naive=args.naive, memory_budget=args.memory_budget,
        tile=args.tile, device=args.device, loss=args.loss, steps=args.steps, warmup=args.warmup,
        data_dir=args.data_dir,
    )
    _print(r, args.json, (
        f"{r['mode']} step, {r['height']} x {r['width']} ({r['pixels'] / 1e6:.1f} MP), {r['preset']} preset: "
        f"{r['seconds_per_step']:.2f} s/step, peak anon {format_bytes(r['peak_anon_bytes'])}, "
        f"peak RSS {format_bytes(r['peak_rss_bytes'] or 0)}, tile {r['tile']}"
    ))
    return 0


def _run_exactness(args) -> int:
    from ..bench.step import bench_exactness

    r = bench_exactness()
    worst = r["max_rel_grad_error"]
    _print(r, args.json, f"max relative gradient error: float64 {worst['float64']:.2e}, float32 {worst['float32']:.2e}")
    return 0
