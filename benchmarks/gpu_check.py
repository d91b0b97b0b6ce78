"""Check and time the engine on a CUDA GPU in one run: correctness first, then speed.

    python benchmarks/gpu_check.py --out DIR [--seconds 330]
    python benchmarks/gpu_check.py --out DIR --device cpu --small    # a dry run of the script itself

1. exactness: ``tiled_backward`` on the GPU against whole-image float64 autograd on the CPU,
   over the configs of ``gigaseg bench exactness`` plus the paper preset on a 1200 x 2000 image,
   for each loss, in float64, float32 (IEEE) and float32 with cuDNN's default TF32; and the
   tiled gradient against whole-image autograd on the GPU in the same dtype.
2. predict: ``tiled_predict`` on the GPU against the CPU in float64.
3. step: training steps (``bench_step``: forward, loss, backward, Adam) at 64 MP, naive and
   tiled, with cuDNN's defaults, with ``cudnn.benchmark`` and without TF32; then at 1.024 GP
   (16000 x 64000, the paper's size) tiled at several memory budgets.
4. predict speed: ``tiled_predict`` of the 1.024 GP image into a uint8 memory-mapped file.

The 1.024 GP image is the 8000 x 8000 one of part 3 repeated 2 x 8 times: the timings do not
depend on the pixel values, and it is written in seconds instead of a minute. Results go to
``DIR/gpu_check.json`` after each part; parts past ``--seconds`` of wall time are skipped and
say so. The last lines printed are a summary table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gigaseg.bench.step import _EXACTNESS_CASES, bench_step, machine_info, make_synthetic_arrays
from gigaseg.engine import plan, tiled_backward, tiled_predict
from gigaseg.losses import loss_fn
from gigaseg.model import UNet, preset

LOSSES = ("bce", "dice", "bce+dice")
MODES = {"float64": (torch.float64, False), "float32": (torch.float32, False), "float32-tf32": (torch.float32, True)}


@contextlib.contextmanager
def cudnn(*, tf32: bool | None = None, benchmark: bool | None = None):
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    if tf32 is not None:
        torch.backends.cudnn.allow_tf32 = tf32
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).norm() / b.norm())


def _whole(model: UNet, image: np.ndarray, mask: np.ndarray, loss: str, dev, dtype) -> tuple[float, list]:
    model.zero_grad(set_to_none=True)
    x = torch.from_numpy(image).to(dev).permute(2, 0, 1).unsqueeze(0).to(dtype) / 255
    value = loss_fn(loss)(model(x), torch.from_numpy(mask).to(dev, dtype)[None, None])
    value.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return float(value.detach()), grads


def exactness(dev: torch.device, small: bool = False) -> list[dict]:
    rows = []
    if small:  # a dry run: one config, few tiles
        cases = [("paper", preset("paper"), (300, 170), 128)]
    else:
        cases = [*_EXACTNESS_CASES, ("paper-1200x2000", preset("paper"), (1200, 2000), 256)]
    rng = np.random.default_rng(0)
    for name, config, (h, w), tile in cases:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
        torch.manual_seed(0)
        base = UNet(config)
        for loss in LOSSES:
            ref_value, ref = _whole(base.double(), image, mask, loss, torch.device("cpu"), torch.float64)
            for mode, (dtype, tf32) in MODES.items():
                model = UNet(config).to(dtype)
                model.load_state_dict(base.state_dict())
                model.to(dev)
                with cudnn(tf32=tf32):
                    t = time.perf_counter()
                    value = tiled_backward(model, image, mask, loss=loss, tile=tile)
                    seconds = time.perf_counter() - t
                    tiled = [p.grad.clone() for p in model.parameters()]
                    _, whole = _whole(model, image, mask, loss, dev, dtype)
                rows.append({
                    "config": name, "height": h, "width": w, "tile": tile, "loss": loss, "mode": mode,
                    "tiled_vs_cpu_f64": max(_rel(a, b) for a, b in zip(tiled, ref)),
                    "whole_gpu_vs_cpu_f64": max(_rel(a, b) for a, b in zip(whole, ref)),
                    "tiled_vs_whole_gpu": max(_rel(a, b) for a, b in zip(tiled, whole)),
                    "loss_abs_error": abs(value - ref_value), "tiled_seconds": seconds,
                })
    return rows


def predict_check(dev: torch.device, small: bool = False) -> list[dict]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 500, 3) if small else (1100, 1700, 3), dtype=np.uint8)
    torch.manual_seed(1)
    model = UNet(preset("paper"))
    ref = tiled_predict(model.double(), image, tile=512)
    rows = []
    for mode, (dtype, tf32) in MODES.items():
        m = UNet(preset("paper")).to(dtype)
        m.load_state_dict(model.state_dict())
        m.to(dev)
        with cudnn(tf32=tf32):
            probs = tiled_predict(m, image, tile=256)
            u8 = tiled_predict(m, image, tile=256, out=np.zeros(image.shape[:2], np.uint8))
        rows.append({"mode": mode, "max_abs_prob_error": float(np.abs(probs - ref).max()),
                     "max_uint8_error": int(np.abs(u8.astype(int) - np.round(ref * 255)).max())})
    return rows


def _tile_to(src: tuple[np.ndarray, np.ndarray], directory: Path, height: int, width: int) -> None:
    """Fill ``directory``/image.npy and mask.npy (the names ``bench_step`` reuses) with ``src`` repeated."""
    directory.mkdir(parents=True, exist_ok=True)
    sh, sw = src[1].shape
    for name, a in zip(("image", "mask"), src):
        out = np.lib.format.open_memmap(directory / f"{name}.npy", mode="w+", dtype=np.uint8,
                                        shape=(height, width) + a.shape[2:])
        for y in range(0, height, sh):
            for x in range(0, width, sw):
                out[y:y + sh, x:x + sw] = a[:height - y, :width - x]
        out.flush()
        del out


def _step_row(label: str, r: dict) -> dict:
    keep = ("height", "width", "mode", "loss", "seconds_per_step", "step_seconds", "megapixels_per_second",
            "peak_anon_bytes", "peak_rss_bytes", "cuda_max_allocated_bytes", "tile", "memory_budget", "loss_value")
    row = {"label": label, **{k: r.get(k) for k in keep}}
    row["predicted_peak_bytes"] = (r.get("plan") or {}).get("predicted_peak_bytes")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check.json")
    p.add_argument("--seconds", type=float, default=330, help="skip the parts that would start after this")
    p.add_argument("--scratch", default=None, help="folder for the synthetic images (default: a temp dir)")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of the script")
    p.add_argument("--small", action="store_true", help="small images: a dry run of the script")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: this PyTorch sees no CUDA device; nothing to check (--device cpu for a dry run)",
              file=sys.stderr)
        return 2
    mid, (big_h, big_w) = (800, (1600, 6400)) if args.small else (8000, (16000, 64000))
    mid_name, big_name = f"{mid * mid / 1e6:g}MP", f"{big_h * big_w / 1e9:g}GP"
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": {**machine_info(), "device": str(dev),
                                "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
                                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                                "cudnn_allow_tf32_default": torch.backends.cudnn.allow_tf32,
                                "cudnn_benchmark_default": torch.backends.cudnn.benchmark}}

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(result, indent=1))

    def left() -> float:
        return args.seconds - (time.perf_counter() - start)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    log(f"{result['machine']['gpu'] or dev}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    result["exactness"] = exactness(dev, args.small)
    save()
    log("exactness done")
    result["predict_check"] = predict_check(dev, args.small)
    save()
    log("predict check done")

    scratch = tempfile.TemporaryDirectory(prefix="gigaseg-gpu-", dir=args.scratch)
    root = Path(scratch.name)
    steps = result["steps"] = []
    try:
        d64 = root / "64mp"
        src = make_synthetic_arrays(d64, mid, mid)
        log(f"{mid} x {mid} image written")
        runs64 = [
            (f"{mid_name} naive", dict(naive=True), {}),
            (f"{mid_name} tiled 1GiB", {}, {}),
            (f"{mid_name} tiled 4GB", dict(memory_budget="4GB"), {}),
            (f"{mid_name} tiled 4GB cudnn.benchmark", dict(memory_budget="4GB"), dict(benchmark=True)),
            (f"{mid_name} tiled 4GB no TF32", dict(memory_budget="4GB"), dict(tf32=False)),
            (f"{mid_name} tiled 16GB", dict(memory_budget="16GB"), {}),
        ]

        def time_steps(runs, height, width, data_dir, n_steps, reserve):
            for label, kw, flags in runs:
                if left() < reserve:
                    steps.append({"label": label, "skipped": "out of time"})
                    continue
                with cudnn(**flags):
                    r = bench_step(height, width, device=args.device, data_dir=data_dir, steps=n_steps, warmup=1, **kw)
                steps.append(_step_row(label, r))
                save()
                log(f"{label}: {r['seconds_per_step']:.3f} s/step")

        time_steps(runs64, mid, mid, d64, 3, 20)

        d1g = root / "1gp"
        t = time.perf_counter()
        _tile_to(src, d1g, big_h, big_w)
        log(f"{big_h} x {big_w} image written in {time.perf_counter() - t:.1f} s")
        runs1g = [
            (f"{big_name} tiled 1GiB", {}, {}),
            (f"{big_name} tiled 4GB", dict(memory_budget="4GB"), {}),
            (f"{big_name} tiled 16GB", dict(memory_budget="16GB"), {}),  # crops capped (NOTE [CUDA crop cap])
            (f"{big_name} tiled 16GB cudnn.benchmark", dict(memory_budget="16GB"), dict(benchmark=True)),
        ]
        time_steps(runs1g, big_h, big_w, d1g, 2, 60)

        preds = result["predict_speed"] = []
        image = np.load(d1g / "image.npy", mmap_mode="r")
        torch.manual_seed(0)
        model = UNet(preset("paper")).to(dev)  # float32
        for budget in (None, "16GB"):
            if left() < 30:
                preds.append({"memory_budget": budget, "skipped": "out of time"})
                continue
            tile = plan(model.config, big_h, big_w, memory_budget=budget, mode="predict").tile
            target = np.lib.format.open_memmap(root / "probs.npy", mode="w+", dtype=np.uint8, shape=(big_h, big_w))
            t = time.perf_counter()
            tiled_predict(model, image, out=target, memory_budget=budget)  # ends with a copy to the host
            seconds = time.perf_counter() - t
            preds.append({"memory_budget": budget, "tile": list(tile), "seconds": seconds,
                          "megapixels_per_second": big_h * big_w / 1e6 / seconds})
            del target
            save()
            log(f"predict {big_h} x {big_w}, budget {budget}: {seconds:.2f} s")
    finally:
        scratch.cleanup()
    result["seconds"] = time.perf_counter() - start
    save()

    worst = {}
    for r in result["exactness"]:
        for key in ("tiled_vs_cpu_f64", "tiled_vs_whole_gpu"):
            worst[(r["mode"], key)] = max(worst.get((r["mode"], key), 0.0), r[key])
    print("\nexactness, largest relative parameter-gradient error over configs and losses:")
    for mode in MODES:
        print(f"  {mode:13s} tiled vs CPU float64 {worst[(mode, 'tiled_vs_cpu_f64')]:.2e}   "
              f"tiled vs whole-image on GPU {worst[(mode, 'tiled_vs_whole_gpu')]:.2e}")
    for r in result["predict_check"]:
        print(f"  predict {r['mode']:13s} max |p - p_cpu64| {r['max_abs_prob_error']:.2e}, "
              f"uint8 {r['max_uint8_error']}")
    print("\nsteps (median s/step; GPU peak allocated; host peak anon):")
    for r in steps:
        if "skipped" in r:
            print(f"  {r['label']:32s} skipped ({r['skipped']})")
            continue
        print(f"  {r['label']:32s} {r['seconds_per_step']:8.3f} s  {r['megapixels_per_second']:7.1f} MP/s  "
              f"gpu {(r['cuda_max_allocated_bytes'] or 0) / 2**30:6.2f} GiB  "
              f"host {r['peak_anon_bytes'] / 2**30:5.2f} GiB  "
              f"tile {r['tile']}")
    for r in result.get("predict_speed", []):
        if "skipped" in r:
            print(f"  predict budget {r['memory_budget']}: skipped")
        else:
            print(f"  predict {big_h} x {big_w}, budget {r['memory_budget']}: {r['seconds']:.2f} s, "
                  f"{r['megapixels_per_second']:.0f} MP/s, tile {r['tile']}")
    print(f"total {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
