"""Memory against a budget, measured: a training step and a prediction in fresh processes.

Each subprocess writes a 16-megapixel RGB image and its mask to disk, memory-maps them (their
pages land in the page cache, not in anonymous memory), builds the ``paper`` U-Net, and runs one
``tiled_backward`` or ``tiled_predict`` under ``memory_budget``, while a thread samples RssAnon
every 2 ms. The budget is what the planner promises for the whole process: its estimate counts a
256 MiB floor for Python, PyTorch and the model. The peak must stay within the budget plus
``ALLOWANCE`` (what varies between machines and library builds: numba's code, thread stacks).
Measured 2026-12-04 on the 2-core Xeon with a 400 MiB budget: training 320 MiB, prediction 230
MiB, from a floor of 145 MiB after import. The control, the same training step as one
whole-image tile, peaks at 537 MiB: over the line, so the check can fail.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="RssAnon is read from /proc/self/status")

MiB = 2**20
BUDGET = 400 * MiB
ALLOWANCE = 48 * MiB
SIDE = 4096

_SCRIPT = r"""
import json, sys
import numpy as np, torch
import gigaseg
from gigaseg._memory import MemorySampler, read_status_bytes, trim_heap

mode, budget, side, folder, tile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
tile = None if tile == "plan" else int(tile)
rng = np.random.default_rng(0)
image = np.lib.format.open_memmap(f"{folder}/image.npy", "w+", np.uint8, (side, side, 3))
for y in range(0, side, 512):
    image[y:y + 512] = rng.integers(0, 256, (min(512, side - y), side, 3), dtype=np.uint8)
image.flush()
mask = np.lib.format.open_memmap(f"{folder}/mask.npy", "w+", np.uint8, (side, side))
mask[:, : side // 2] = 1
mask.flush()
del image, mask
image = np.load(f"{folder}/image.npy", mmap_mode="r")
mask = np.load(f"{folder}/mask.npy", mmap_mode="r")
torch.manual_seed(0)
model = gigaseg.UNet(gigaseg.preset("paper"))
trim_heap()
floor = read_status_bytes("RssAnon")
with MemorySampler(0.002) as sampler:
    if mode == "train":
        gigaseg.tiled_backward(model, image, mask, memory_budget=budget, tile=tile, device="cpu")
    else:
        out = np.lib.format.open_memmap(f"{folder}/out.npy", "w+", np.uint8, (side, side))
        gigaseg.tiled_predict(model, image, out=out, memory_budget=budget, tile=tile, device="cpu")
print(json.dumps({"floor": floor, "peak": sampler.peak}))
"""


def _peak(tmp_path, mode: str, tile: str = "plan") -> dict:
    script = tmp_path / "measure.py"
    script.write_text(_SCRIPT)
    done = subprocess.run([sys.executable, str(script), mode, str(BUDGET), str(SIDE), str(tmp_path), tile],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["train", "predict"])
def test_peak_anonymous_memory_stays_within_the_budget(tmp_path, mode):
    m = _peak(tmp_path, mode)
    assert m["floor"] < m["peak"]  # the sampler saw the work
    assert m["peak"] <= BUDGET + ALLOWANCE, f"{mode}: peak {m['peak'] / MiB:.0f} MiB, budget {BUDGET / MiB:.0f} MiB"


def test_the_memory_check_can_fail(tmp_path):
    """The control: one whole-image tile ignores the budget, and the same check catches it."""
    m = _peak(tmp_path, "train", tile=str(SIDE))
    assert m["peak"] > BUDGET + ALLOWANCE, f"whole-image step peaked at only {m['peak'] / MiB:.0f} MiB"
