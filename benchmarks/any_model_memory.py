"""The planner's memory estimate for models that are not a gigaseg.UNet, against measured peaks.

For two models of tests/test_any_model.py (float32, on the CPU) and a few memory budgets, plans a
training step (``plan(model, H, W, memory_budget=...)``), runs ``tiled_backward`` with that tile
once untimed and once measured, each case in a fresh process, and records the plan's predicted
peak and the measured peak anonymous memory (RssAnon, sampled) and peak RSS of the process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/any_model_memory.py --out benchmarks/any-model/memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [("resencdec", "400MiB"), ("resencdec", "1GiB"), ("resnet", "400MiB"), ("resnet", "1GiB")]
SIZE = (3000, 3000)

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
from test_any_model import _build, _data
from gigaseg import tiled_backward
from gigaseg.engine import plan
from gigaseg._memory import MemorySampler, peak_rss_bytes
name, budget, h, w = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
model = _build(name, classes=1).float()
image, mask = _data(h, w, ignore=False)
p = plan(model, h, w, memory_budget=budget, device="cpu")
tiled_backward(model, image, mask, tile=p.tile)
model.zero_grad(set_to_none=True)
t0 = time.perf_counter()
with MemorySampler() as sampler:
    tiled_backward(model, image, mask, tile=p.tile)
seconds = time.perf_counter() - t0
print(json.dumps({"model": name, "budget": budget, "size": [h, w], "tile": list(p.tile), "grid": list(p.grid),
                  "halo": p.halo, "predicted_peak_bytes": p.predicted_peak_bytes,
                  "peak_anon_bytes": sampler.peak, "peak_rss_bytes": peak_rss_bytes(), "seconds": round(seconds, 2)}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    runs = []
    for name, budget in CASES:
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "tests"), name, budget, *map(str, SIZE)],
                             check=True, capture_output=True, text=True, cwd=ROOT).stdout
        run = json.loads(out.strip().splitlines()[-1])
        run["measured_over_predicted_anon"] = round(run["peak_anon_bytes"] / run["predicted_peak_bytes"], 3)
        runs.append(run)
        print(json.dumps(run))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"benchmark": "any_model_memory", "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
