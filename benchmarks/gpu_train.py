"""`gigaseg train` step time on a GPU against the number of crop readers (NOTE [Read ahead]).

    python benchmarks/gpu_train.py --out DIR                     # on a CUDA machine
    python benchmarks/gpu_train.py --out DIR --device cpu --small  # a quick dry run anywhere

On an H100 the engine's tiled step takes ~5 ms per megapixel, while reading an augmented
training crop (dihedral transform, HED colour jitter) costs ~50 ms per megapixel on one core:
with one background reader, `gigaseg train` on a GPU waits for the CPU. This makes one
realistic synthetic region (``gigaseg prepare --synthetic 1``), trains the `paper` preset for a
few steps on it with 1 reader and with N, and times the engine's step without augmentation
(``bench_step`` on a memory-mapped array of the same size) as the floor. It checks that both
trainings end with the same parameters (the readers change the speed, not the result; on a GPU
equality is up to the non-determinism of cuDNN's backward, so the largest difference is
reported). Writes DIR/gpu_train.json.

``--tile-from HxW`` synthesizes a smaller region and repeats it across to ``--size`` (the
paper's 16000 x 64000 takes minutes to synthesize on one core; the step time depends on the
number of pixels, not on what they show).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gigaseg.bench.step import bench_step
from gigaseg.checkpoint import load_checkpoint
from gigaseg.cli import main as gigaseg_main
from gigaseg.engine import default_read_workers
from gigaseg.store import RegionStore
from gigaseg.training import TrainConfig, train


def _train_row(store: Path, run: Path, device: str, workers: int, steps: int, budget: str | None) -> dict:
    t0 = time.perf_counter()
    train(TrainConfig(data=str(store), out=str(run), preset="paper", steps=steps, warmup=1, lr=0.001,
                      device=device, memory_budget=budget, read_workers=workers, val_every=0, ckpt_every=0,
                      progress=False))
    wall = time.perf_counter() - t0
    with open(run / "log.csv") as f:
        seconds = [float(r["seconds_per_step"]) for r in csv.DictReader(f)]
    timed = seconds[1:] or seconds  # the first step includes start-up (cuDNN, the colour table)
    return {"read_workers": workers, "steps": steps, "seconds_per_step": seconds,
            "median_after_first": statistics.median(timed), "wall_seconds": round(wall, 2)}


def _repeat_across(src: Path, dst: Path, h: int, w: int) -> None:
    """A store whose one region is ``src``'s first region repeated across to h x w."""
    region = RegionStore(src)[0]
    sh, sw = region.shape
    if sh != h or w % sw:
        raise SystemExit(f"--tile-from {sh}x{sw} must have the height of --size {h}x{w} and divide its width")
    image, mask = region.image, region.mask
    reps = w // sw
    rows = max(1, (256 << 20) // (w * 3))
    with RegionStore.create(dst).new_region(region.name, (w, h), meta={"mpp": region.meta.get("mpp", 1.0)}) as out:
        for y0 in range(0, h, rows):
            out.append(np.tile(image[y0 : y0 + rows], (1, reps, 1)), np.tile(mask[y0 : y0 + rows], (1, reps)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", default="6000x24000", help="region HEIGHTxWIDTH (default: 144 MP)")
    p.add_argument("--tile-from", default=None, metavar="HxW",
                   help="synthesize a region of this size and repeat it across to --size")
    p.add_argument("--small", action="store_true", help="a 1024 x 2048 region: a dry run of the script")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--workers", default=None, help="comma-separated reader counts (default: 1 and the device default)")
    p.add_argument("--memory-budget", default="4GB")
    args = p.parse_args(argv)
    size = "1024x2048" if args.small else args.size
    h, w = (int(v) for v in size.split("x"))
    workers = ([int(v) for v in args.workers.split(",")] if args.workers
               else sorted({1, default_read_workers("cuda")}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "region": [h, w], "megapixels": h * w / 1e6,
        "memory_budget": args.memory_budget, "train": [],
    }

    def save():
        (out / "gpu_train.json").write_text(json.dumps(result, indent=1))

    with tempfile.TemporaryDirectory(prefix="gigaseg-gpu-train-") as root:
        store = Path(root) / "store"
        t0 = time.perf_counter()
        made = Path(root) / "made" if args.tile_from else store
        rc = gigaseg_main(["prepare", "--synthetic", "1", "--val", "0", "--size", args.tile_from or size,
                           "--out", str(made), "--no-progress"])
        if rc:
            raise SystemExit(f"gigaseg prepare failed with status {rc}")
        if args.tile_from:
            _repeat_across(made, store, h, w)
            result["tile_from"] = args.tile_from
        result["prepare_seconds"] = round(time.perf_counter() - t0, 1)
        save()
        step = bench_step(h, w, device=args.device, memory_budget=args.memory_budget, steps=2, warmup=1,
                          data_dir=Path(root) / "bench")
        result["engine_step_seconds"] = step["seconds_per_step"]
        result["engine_tile"] = step["tile"]
        save()
        finals = []
        for n in workers:
            run = Path(root) / f"run-w{n}"
            result["train"].append(_train_row(store, run, args.device, n, args.steps, args.memory_budget))
            finals.append(load_checkpoint(run / "checkpoint.pt")["state_dict"])
            save()
            print(json.dumps(result["train"][-1]), flush=True)
        diffs = [float((a[k].float() - b[k].float()).abs().max()) for a, b in zip(finals, finals[1:]) for k in a]
        result["max_abs_param_difference"] = max(diffs) if diffs else 0.0
        save()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
