"""Benchmarks that return JSON-ready dicts: one training step, and tiled-vs-naive exactness.

Run them through the command line, which prints one JSON object per run::

    gigaseg bench step --height 16000 --width 64000 --preset paper --json
    gigaseg bench step --height 4000 --width 16000 --naive --json
    gigaseg bench exactness --json

Each step reads its input from a uint8 ``.npy`` file on disk through a memory map, so the
image sits in the page cache, not in the process's anonymous memory.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._memory import MemorySampler, peak_rss_bytes
from .._runinfo import machine_info
from .._units import parse_bytes
from ..engine import model_input, plan, resolve_device, reuse_freed_memory, tiled_backward
from ..errors import ConfigError
from ..losses import check_loss_name, loss_fn
from ..model import UNet, UNetConfig, count_parameters, preset

__all__ = ["make_synthetic_arrays", "bench_step", "bench_exactness", "machine_info"]


def make_synthetic_arrays(
    directory: str | Path, height: int, width: int, *, seed: int = 0, strip: int = 512
) -> tuple[np.memmap, np.memmap]:
    """Write a blob-pattern ``image.npy`` (H, W, 3) uint8 and ``mask.npy`` (H, W) uint8 to
    ``directory`` strip by strip (bounded memory) and return them memory-mapped read-only.

    Files already there with the right shapes are reused. This is a cheap stand-in for real
    slides, for timing only; ``gigaseg synth`` makes realistic ones.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image_path, mask_path = directory / "image.npy", directory / "mask.npy"
    if image_path.exists() and mask_path.exists():
        image = np.load(image_path, mmap_mode="r")
        mask = np.load(mask_path, mmap_mode="r")
        if image.shape == (height, width, 3) and mask.shape == (height, width):
            return image, mask
    rng = np.random.default_rng(seed)
    cell = 64
    field = rng.random((height // cell + 2, width // cell + 2)) < 0.45
    # written in a private folder of a random name (NOTE [Temporary files] in gigaseg._atomic), then moved
    tmp_dir = Path(tempfile.mkdtemp(prefix=".bench-data-", dir=directory))
    tmp_image, tmp_mask = tmp_dir / "image.npy", tmp_dir / "mask.npy"
    image = np.lib.format.open_memmap(tmp_image, mode="w+", dtype=np.uint8, shape=(height, width, 3))
    mask = np.lib.format.open_memmap(tmp_mask, mode="w+", dtype=np.uint8, shape=(height, width))
    tissue = np.array([200, 120, 170], dtype=np.int16)
    glass = np.array([235, 232, 236], dtype=np.int16)
    for y0 in range(0, height, strip):
        y1 = min(y0 + strip, height)
        rows = np.arange(y0, y1) // cell
        m = np.repeat(field[rows], cell, axis=1)[:, :width]
        noise = rng.integers(-20, 20, size=(y1 - y0, width, 3), dtype=np.int16)
        strip_rgb = np.where(m[..., None], tissue, glass) + noise
        image[y0:y1] = np.clip(strip_rgb, 0, 255).astype(np.uint8)
        mask[y0:y1] = m
    image.flush()
    mask.flush()
    del image, mask
    os.replace(tmp_image, image_path)
    os.replace(tmp_mask, mask_path)
    tmp_dir.rmdir()
    return np.load(image_path, mmap_mode="r"), np.load(mask_path, mmap_mode="r")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _naive_step(model: UNet, image: np.ndarray, mask: np.ndarray, loss: str, device: torch.device) -> float:
    # the whole image in memory, converted exactly as the engine converts a tile
    x = model_input(image, device=device)
    y = torch.from_numpy(np.require(mask, requirements=["C", "W"])).to(device).unsqueeze(0).unsqueeze(0)
    value = loss_fn(loss)(model(x), y)
    value.backward()
    return float(value.detach())


def bench_step(
    height: int,
    width: int,
    *,
    preset_name: str = "paper",
    naive: bool = False,
    memory_budget: str | int | None = None,
    tile: int | None = None,
    device: str = "cpu",
    loss: str = "bce+dice",
    steps: int = 3,
    warmup: int = 1,
    data_dir: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time full training steps (forward, loss, backward, Adam step) on a synthetic image on disk.

    Returns:
        A JSON-ready dict; ``seconds_per_step`` is the median of the timed steps after
        ``warmup`` untimed ones, ``peak_anon_bytes`` the largest RssAnon seen during the steps.
    """
    check_loss_name(loss)
    if steps < 1 or warmup < 0:
        raise ConfigError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    config = preset(preset_name)
    dev = resolve_device(device)
    reuse_freed_memory()  # for naive steps too, so both modes allocate alike
    torch.manual_seed(seed)
    model = UNet(config).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gigaseg-bench-")
        data_dir = tmp.name
    try:
        t0 = time.perf_counter()
        image, mask = make_synthetic_arrays(data_dir, height, width, seed=seed)
        prepare_seconds = time.perf_counter() - t0
        the_plan = None
        if not naive and tile is None:
            the_plan = plan(config, height, width, memory_budget=memory_budget, device=dev)
        times, losses = [], []
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        with MemorySampler() as sampler:
            for i in range(warmup + steps):
                optimizer.zero_grad(set_to_none=True)
                _sync(dev)
                t = time.perf_counter()
                if naive:
                    value = _naive_step(model, image, mask, loss, dev)
                else:
                    value = tiled_backward(
                        model, image, mask, loss=loss, memory_budget=memory_budget, tile=tile, device=dev
                    )
                optimizer.step()
                _sync(dev)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
                    losses.append(value)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result: dict[str, Any] = {
        "benchmark": "step",
        "height": height,
        "width": width,
        "pixels": height * width,
        "preset": preset_name,
        "params": count_parameters(model),
        "mode": "naive" if naive else "tiled",
        "loss": loss,
        "seconds_per_step": statistics.median(times),
        "step_seconds": times,
        "megapixels_per_second": height * width / 1e6 / statistics.median(times),
        "loss_value": losses[-1],
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_anon_bytes": sampler.peak,
        "memory_budget": None if memory_budget is None else parse_bytes(memory_budget),
        "tile": None if naive else list(the_plan.tile) if the_plan else [tile, tile],
        "plan": None if the_plan is None else the_plan.to_dict(),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "warmup_steps": warmup,
        "prepare_seconds": prepare_seconds,
        **machine_info(),
    }
    if dev.type == "cuda":
        result["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
        result["cuda_device"] = torch.cuda.get_device_name(dev)
    return result


# Configurations that cover the engine's corner cases: depths 1-4, strides 2/4/8, kernels 3-15.
_EXACTNESS_CASES = [
    ("paper", preset("paper"), (300, 170), 64),
    ("tiny", preset("tiny"), (37, 91), 8),
    ("depth1-s8-k15", UNetConfig(1, (3,), (8,), (15,), (5,)), (70, 45), 16),
    ("depth4-s2-k3..9", UNetConfig(4, (2, 3, 4, 5), (2, 2, 2, 2), (3, 5, 7, 9), (3, 5, 3, 7)), (101, 77), 32),
]


def _grad(p: torch.nn.Parameter) -> torch.Tensor:
    if p.grad is None:
        raise RuntimeError("a parameter got no gradient")  # every parameter of a UNet takes part in the loss
    return p.grad


def bench_exactness(*, losses: tuple[str, ...] = ("bce", "dice", "bce+dice"), seed: int = 0) -> dict[str, Any]:
    """Largest relative parameter-gradient error ||g_tiled - g_ref|| / ||g_ref|| of tiled vs
    whole-image autograd, in float64 and float32, over a set of configs, sizes and losses."""
    rng = np.random.default_rng(seed)
    cases: list[dict[str, Any]] = []
    for name, config, (h, w), tile in _EXACTNESS_CASES:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
        for dtype in (torch.float64, torch.float32):
            torch.manual_seed(seed)
            model = UNet(config).to(dtype)
            for loss in losses:
                model.zero_grad(set_to_none=True)
                x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).to(dtype) / 255
                ref_loss = loss_fn(loss)(model(x), torch.from_numpy(mask)[None, None])
                ref_loss.backward()
                ref = [_grad(p).clone() for p in model.parameters()]
                model.zero_grad(set_to_none=True)
                value = tiled_backward(model, image, mask, loss=loss, tile=tile)
                err = max(float((_grad(p) - g).norm() / g.norm()) for p, g in zip(model.parameters(), ref))
                cases.append({
                    "config": name, "height": h, "width": w, "tile": tile, "dtype": str(dtype).replace("torch.", ""),
                    "loss": loss, "max_rel_grad_error": err, "loss_abs_error": abs(value - float(ref_loss.detach())),
                })
    worst = {
        dt: max(c["max_rel_grad_error"] for c in cases if c["dtype"] == dt) for dt in ("float64", "float32")
    }
    return {"benchmark": "exactness", "max_rel_grad_error": worst, "cases": cases, **machine_info()}
