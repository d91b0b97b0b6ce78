"""Training-step time against tile size, and prediction speed, on a CUDA GPU (follow-up of gpu_check.py).

    python benchmarks/gpu_tiles.py --out DIR

gpu_check.py found whole-image autograd and 8000 x 8000 or larger tiles ~14x slower per pixel
than 4928 x 4928 tiles on an H100. This sweeps the tile side at 64 MP to find where that
happens, then times tiled_predict of a 1.024 GP image (the 8000 x 8000 one repeated).
Writes DIR/gpu_tiles.json after each row. ``--cudnn benchmark`` (autotuned algorithms) or
``--cudnn disabled`` (PyTorch's own convolutions) time the sweep with another cuDNN setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import _step_row, _tile_to

from gigaseg.bench.step import bench_step, make_synthetic_arrays
from gigaseg.engine import plan, tiled_predict
from gigaseg.model import UNet, preset


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=200)
    p.add_argument("--tiles", default="4928,5440,5952,6464,6976,7488")
    p.add_argument("--cudnn", default="default", choices=("default", "benchmark", "disabled"))
    p.add_argument("--no-predict", action="store_true", help="only the step sweep")
    args = p.parse_args(argv)
    if args.cudnn == "benchmark":
        torch.backends.cudnn.benchmark = True
    elif args.cudnn == "disabled":
        torch.backends.cudnn.enabled = False
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cudnn": args.cudnn,
                    "steps": [], "predict": []}

    def save():
        (out / "gpu_tiles.json").write_text(json.dumps(result, indent=1))

    with tempfile.TemporaryDirectory(prefix="gigaseg-gpu-") as root:
        d64 = Path(root) / "64mp"
        src = make_synthetic_arrays(d64, 8000, 8000)
        for tile in (int(t) for t in args.tiles.split(",")):
            if time.perf_counter() - start > args.seconds:
                break
            r = bench_step(8000, 8000, device="cuda", data_dir=d64, steps=2, warmup=1, tile=tile)
            result["steps"].append(_step_row(f"64MP tile {tile}", r))
            save()
            print(f"tile {tile}: {r['seconds_per_step']:.3f} s/step, "
                  f"gpu {r['cuda_max_allocated_bytes'] / 2**30:.2f} GiB", flush=True)
        if args.no_predict:
            return 0
        d1g = Path(root) / "1gp"
        _tile_to(src, d1g, 16000, 64000)
        image = np.load(d1g / "image.npy", mmap_mode="r")
        model = UNet(preset("paper")).cuda()
        for budget in (None, "4GB"):
            tile = plan(model.config, 16000, 64000, memory_budget=budget, mode="predict").tile
            target = np.lib.format.open_memmap(Path(root) / "p.npy", mode="w+", dtype=np.uint8, shape=(16000, 64000))
            t = time.perf_counter()
            tiled_predict(model, image, out=target, memory_budget=budget)
            s = time.perf_counter() - t
            result["predict"].append({"memory_budget": budget, "tile": list(tile), "seconds": s,
                                      "megapixels_per_second": 1024 / s})
            save()
            print(f"predict 1.024 GP budget {budget} tile {tile}: {s:.2f} s, {1024 / s:.0f} MP/s", flush=True)
            del target
    return 0


if __name__ == "__main__":
    sys.exit(main())
