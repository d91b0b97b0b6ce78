"""Memory and time of one training step of a slide-level classifier (issue 21, item 4): the tiled
engine's exact two-pass step (``slide_backward``, NOTE [Slide heads]) against whole-image autograd
(``cross_entropy(model(model_input(image)), label).backward()``), side by side at the sizes where
whole-image autograd fits this machine, and the tiled step alone up to 1.024 GP (32000 x 32000).

Every measurement runs in a fresh process and reports its peak RSS (``ru_maxrss``) and the RSS
just before the step (Python, PyTorch, the model and, for whole-image autograd, the image it
must hold in memory), and the wall time of each step. The image is a repeated-tile array: a
2048 x 2048 synthetic H&E slide tiled over the whole size and produced crop by crop, never held
whole (never written to disk); whole-image autograd reads it whole first. Whole-image autograd at
sizes that do not fit is extrapolated from its measured bytes per pixel (labelled as such). The
machine is shared: each row records the load average after it (times are wall times).

    OMP_NUM_THREADS=1 python benchmarks/slide_classifier.py > benchmarks/slide-classifier/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BASE = 2048
K = 8  # the trunk's feature maps
CACHE = Path("/tmp/gigaseg-bench-slide-base.npy")


class RepeatedTile:
    """An (H, W, 3) uint8 array-like: ``base`` repeated, produced by the slice asked for."""

    def __init__(self, base: np.ndarray, height: int, width: int) -> None:
        self.base, self.shape, self.dtype = base, (height, width, 3), np.dtype(np.uint8)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = key[0].indices(self.shape[0]), key[1].indices(self.shape[1])
        rows = np.arange(*ys) % self.base.shape[0]
        cols = np.arange(*xs) % self.base.shape[1]
        return self.base[rows[:, None], cols[None, :]]


def _base() -> np.ndarray:
    if CACHE.exists():
        return np.load(CACHE)
    from gigaseg.synth import render_region

    rgb, _ = render_region(7, 0, 0, BASE, BASE, width=BASE, height=BASE, mpp=1.0, profile="he")
    np.save(CACHE, rgb)
    return rgb


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one(kind: str, side: int, pool: str, tile: int, steps: int) -> dict[str, Any]:
    """One measurement, in this process: ``steps`` training steps of ``kind`` ("tiled" or
    "whole") on a ``side`` x ``side`` image."""
    import torch
    from torch import nn

    from gigaseg import UNet, UNetConfig
    from gigaseg.engine import model_input
    from gigaseg.engine.slide import SlideClassifier, slide_backward

    torch.manual_seed(0)
    trunk = UNetConfig(depth=3, channels=(8, 16, 16), strides=(2, 2, 2), encoder_kernels=(5, 3, 3),
                       decoder_kernels=(3, 3, 3), out_channels=K, input_shift=0.93, input_scale=4.0)
    model = SlideClassifier(UNet(trunk), nn.Sequential(nn.Linear(K, 16), nn.ReLU(), nn.Linear(16, 2)), pool)
    image = RepeatedTile(_base(), side, side)
    times = []
    if kind == "whole":
        whole = np.ascontiguousarray(image[0:side, 0:side])  # whole-image autograd holds the image
    before = _rss_kib()
    for _ in range(steps):
        model.zero_grad()
        t0 = time.perf_counter()
        if kind == "tiled":
            loss = slide_backward(model, image, 1, tile=tile)
        else:
            x = model_input(whole)
            out = nn.functional.cross_entropy(model(x), torch.tensor([1]))
            out.backward()
            loss = float(out.detach())
            del x, out
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"kind": kind, "pool": pool, "side": side, "megapixels": side * side / 1e6,
            "tile": tile if kind == "tiled" else None, "steps": steps, "loss": loss,
            "seconds_per_step": [round(t, 3) for t in times],
            "rss_before_step_mib": round(before / 1024, 1), "peak_rss_mib": round(peak / 1024, 1),
            "step_peak_above_before_mib": round((peak - before) / 1024, 1),
            "load_average_1min_after": round(os.getloadavg()[0], 2)}


def _run(kind: str, side: int, pool: str, tile: int, steps: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", json.dumps([kind, side, pool, tile, steps])]
    print(f"running {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "pool": pool, "side": side, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode:
        return {"kind": kind, "pool": pool, "side": side, "error": done.stderr.strip().splitlines()[-1:],
                "returncode": done.returncode}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {result['seconds_per_step']} s, peak {result['peak_rss_mib']} MiB "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--side-by-side", default="1000,2000,4000", help="sides where both run")
    parser.add_argument("--tiled-only", default="8000,16000,32000", help="sides where only the tiled step runs")
    parser.add_argument("--pools", default="max,attention")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--rows-from", help="a JSON this script wrote: summarize its rows, measure nothing")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*json.loads(args.one))))
        return
    import torch

    import gigaseg

    rows: list[dict[str, Any]] = []
    if args.rows_from:  # the summary again, from the rows an earlier run measured
        rows = json.loads(Path(args.rows_from).read_text())["rows"]
    else:
        _base()
        for side in [int(s) for s in args.side_by_side.split(",") if s]:
            for pool in args.pools.split(","):
                rows.append(_run("tiled", side, pool, args.tile, 2, args.timeout))
                rows.append(_run("whole", side, pool, args.tile, 2, args.timeout))
        for side in [int(s) for s in args.tiled_only.split(",") if s]:
            rows.append(_run("tiled", side, "max", args.tile, 1, args.timeout))
    # bytes per pixel of whole-image autograd at its largest measured size (smaller sizes carry
    # fixed costs that inflate it), for each pooling
    per_pixel: dict[str, float] = {}
    for r in sorted((r for r in rows if r.get("kind") == "whole" and "error" not in r), key=lambda r: r["side"]):
        per_pixel[r["pool"]] = r["step_peak_above_before_mib"] * 2**20 / r["side"] ** 2
    giga = 32000 * 32000
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({
        "command": "OMP_NUM_THREADS=1 python benchmarks/slide_classifier.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "one" and v is not None),
        "commit": commit, "gigaseg": gigaseg.__version__, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "model": "SlideClassifier (float32): a UNet trunk (depth 3, channels 8, 16, 16, strides 2, 2, 2, kernels "
                 "5, 3, 3 / 3, 3, 3, input_shift 0.93, input_scale 4) with K = 8 output maps, MLP head 8-16-2",
        "image": f"a {BASE} x {BASE} synthetic H&E slide (render_region seed 7, mpp 1.0) repeated to the size, "
                 "produced crop by crop",
        "rows": rows,
        "whole_image_extrapolation": {
            "what": "EXTRAPOLATION, not a measurement: whole-image autograd's step memory at 1.024 GP "
                    "(32000 x 32000) from its bytes per pixel at the largest size measured (step peak above "
                    "the RSS before the step, over the image's pixels), and with the uint8 image it holds",
            **{pool: {"bytes_per_pixel": round(b, 1), "step_gib_at_1024_mp": round(b * giga / 2**30, 1),
                      "with_image_gib_at_1024_mp": round((b + 3) * giga / 2**30, 1)}
               for pool, b in per_pixel.items()},
        },
    }, indent=1))


if __name__ == "__main__":
    main()
