"""Models that are not a gigaseg.UNet in the tiled engine: exactness and geometry, as JSON.

For each of the three models of tests/test_any_model.py (a residual encoder-decoder with
transposed convolutions, a dilated network, a frozen-BatchNorm ResNet-style trunk) and a few
losses, image sizes, tiles and input kinds (3-channel uint8, 5-channel uint16 and float32),
compares ``tiled_backward`` with whole-image autograd in float64 (the model's input zero-padded to
a multiple of its derived total stride, the output cropped back) and records the loss's and every
parameter gradient's relative error, the derived geometry and the time of the analysis.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/any_model.py --out benchmarks/any-model/exactness.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the models are the tests' own, written there once

from test_any_model import _build, _data, _whole  # noqa: E402

from gigaseg import tiled_backward  # noqa: E402
from gigaseg.engine.locality import _CACHE, analyze  # noqa: E402
from gigaseg.losses import loss_fn  # noqa: E402

CASES = [
    # model, loss, (H, W), tile, channels, dtype
    ("resencdec", "bce+dice", (45, 70), 16, 3, "uint8"),
    ("resencdec", "ce+dice", (37, 29), (8, 12), 3, "uint8"),
    ("resencdec", "bce+dice", (39, 52), 16, 5, "uint16"),
    ("resencdec", "bce", (39, 52), 16, 5, "float32"),
    ("dilated", "bce+dice", (53, 41), 12, 3, "uint8"),
    ("dilated", "ce", (40, 40), 16, 3, "uint8"),
    ("dilated", "dice", (61, 77), 20, 5, "uint16"),
    ("resnet", "bce+dice", (61, 50), 24, 3, "uint8"),
    ("resnet", "ce+dice", (35, 70), (16, 32), 3, "uint8"),
    ("resnet", "bce+dice", (70, 90), 32, 5, "uint16"),
]


def _case(name: str, loss: str, size: tuple[int, int], tile: object, channels: int, dtype: str) -> dict[str, object]:
    classes = 3 if loss.startswith("ce") else 1
    model = _build(name, c_in=channels, classes=classes)
    _CACHE.pop(model, None)
    t0 = time.perf_counter()
    g = analyze(model)
    analysis_s = time.perf_counter() - t0
    image, mask = _data(*size, c=channels, dtype=np.dtype(dtype).type, classes=classes)
    params = [p for p in model.parameters() if p.requires_grad]
    logits = _whole(model, image)
    target = torch.from_numpy(mask)[None] if classes > 1 else torch.from_numpy(mask)[None, None]
    ref = loss_fn(loss)(logits, target)
    ref.backward()
    want = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    value = tiled_backward(model, image, mask, loss=loss, tile=tile)
    errors = [float((p.grad - w).norm() / w.norm()) for p, w in zip(params, want)]
    return {
        "model": name, "loss": loss, "size": list(size), "tile": tile if isinstance(tile, int) else list(tile),
        "channels": channels, "dtype": dtype, "classes": classes,
        "geometry": {"total_stride": g.total_stride, "lead": g.lead, "trail": g.trail,
                     "floats_per_pixel": round(g.floats_per_pixel, 3)},
        "analysis_s": round(analysis_s, 4),
        "loss_rel_error": abs(value - float(ref.detach())) / abs(float(ref.detach())),
        "max_rel_grad_error": max(errors),
        "parameters_compared": len(errors),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="JSON written here (else printed)")
    args = p.parse_args()
    cases = [_case(*c) for c in CASES]
    result = {
        "benchmark": "any_model_exactness",
        "dtype": "float64",
        "max_rel_grad_error": max(c["max_rel_grad_error"] for c in cases),  # type: ignore[type-var]
        "max_loss_rel_error": max(c["loss_rel_error"] for c in cases),  # type: ignore[type-var]
        "cases": cases,
        "cpu": platform.processor() or platform.machine(),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    text = json.dumps(result, indent=1)
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}: worst relative gradient error {result['max_rel_grad_error']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
