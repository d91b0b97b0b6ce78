"""Whole-slide prediction throughput: ``gigaseg bench predict``.

    gigaseg bench predict --size 16000x64000 --preset paper --json
    gigaseg bench predict --slide /tmp/s100k.tiff --json     # a slide of benchmarks/big_slide.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["bench_predict"]

_MPP = 0.5  # the synthetic slide's level 0 and the model's resolution, um/px


def bench_predict(
    height: int,
    width: int,
    *,
    preset_name: str = "paper",
    checkpoint: str | Path | None = None,
    memory_budget: str | int | None = None,
    slide: str | Path | None = None,
    keep_slide: str | Path | None = None,
    scratch_dir: str | Path | None = None,
    device: str = "cpu",
    precision: str = "float32",
    read_workers: int | None = None,
) -> dict[str, Any]:
    """Predict a whole synthetic slide and time it end to end and by part.

    Writes a synthetic slide (``gigaseg.synth.write_slide``, seed 0, 0.5 um/px) of
    ``height`` x ``width`` level-0 pixels, or takes ``slide``, and predicts it with an
    untrained model of ``preset_name`` (or the model of ``checkpoint``) run at 0.5 um/px,
    into a temporary folder under ``scratch_dir``. Then times the model alone on an
    in-memory image of one row of up to four tiles (``width`` wide at most), same process.

    Args:
        height, width: the synthetic slide's size; ``width`` also caps the in-memory row.
        slide: predict this slide instead of writing one (its mpp must be in the file).
        keep_slide: write the synthetic slide here and keep it.
        scratch_dir: where the temporary folder goes (default: the system's).
        memory_budget, device, precision, read_workers: as ``gigaseg predict``'s.

    Returns:
        A JSON-ready dict: megapixels per second at the model resolution end to end
        (``MPps_end_to_end``), of the model (``MPps_model``, ``MPps_model_alone_in_memory``)
        and of reading (``MPps_read``), the seconds of each part, and peak memory in GiB
        (``peak_rss_GiB`` is None where VmHWM cannot be reset).
    """
    import numpy as np
    import torch

    from .._memory import MemorySampler, peak_rss_bytes
    from .._runinfo import machine_info
    from ..engine import tiled_predict
    from ..model import UNet, preset
    from ..predict import predict_slide, with_precision
    from ..synth import write_slide

    w, h = width, height
    tmp = Path(tempfile.mkdtemp(prefix="gigaseg-bench-predict-", dir=scratch_dir))
    try:
        t_synth = None
        if slide:
            slide = Path(slide)
        else:
            slide = Path(keep_slide) if keep_slide else tmp / "slide.tiff"
            t0 = time.perf_counter()
            write_slide(slide, width=w, height=h, seed=0, mpp=_MPP, progress=False)
            t_synth = time.perf_counter() - t0
        if checkpoint:
            from ..checkpoint import load_model

            net, _ = load_model(checkpoint)
        else:
            torch.manual_seed(0)
            net = UNet(preset(preset_name)).eval()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            reset = True
        except OSError:
            reset = False
        t0 = time.perf_counter()
        with MemorySampler(0.05) as sampler:
            s = predict_slide(net, slide, tmp / "out", mpp=None, model_mpp=_MPP, memory_budget=memory_budget,
                              progress=False, overwrite=True, precision=precision, device=device,
                              read_workers=read_workers)
        total = time.perf_counter() - t0
        # the model alone on an in-memory image of one row of tiles, same process, for comparison
        net = with_precision(net, precision)
        th, tw = s["tile"]
        x = np.random.default_rng(0).integers(0, 256, (th, min(4 * tw, w), 3), dtype=np.uint8)
        t1 = time.perf_counter()
        tiled_predict(net, x, out=np.empty(x.shape[:2], np.uint8), tile=(th, tw), memory_budget=memory_budget,
                      device=device)
        model_alone = x.shape[0] * x.shape[1] / 1e6 / (time.perf_counter() - t1)
        mp = s["megapixels_model_res"]
        t = s["timings"]
        return {
            "benchmark": "predict",
            "slide_hw": [s["slide_dimensions"][1], s["slide_dimensions"][0]],
            "model_mpp": s["model_mpp"],
            "model": str(checkpoint) if checkpoint else f"untrained {preset_name}",
            "precision": precision,
            "device": s["device"],
            "read_workers": s["read_workers"],
            "pieces": s["pieces"],
            "tile": s["tile"],
            "megapixels": mp,
            "total_s": round(total, 2),
            "MPps_end_to_end": round(mp / total, 2),
            "read_s": t["read_s"],
            "read_wait_s": t.get("read_wait_s"),
            "model_s": t["model_s"],
            "MPps_model": round(mp / t["model_s"], 2) if t["model_s"] else None,
            "MPps_model_alone_in_memory": round(model_alone, 2),
            "MPps_read": round(mp / t["read_s"], 2) if t["read_s"] else None,
            "raw_write_s": t["write_s"],
            "tiff_wait_s": t.get("tiff_wait_s"),
            "tiff_s": t["tiff_s"],
            "geojson_s": t["geojson_s"],
            "overlay_s": t["overlay_s"],
            "write_after_model_s": round(t.get("tiff_wait_s", 0) + t["geojson_s"] + t["overlay_s"], 2),
            "peak_rss_GiB": round((peak_rss_bytes() or 0) / 2**30, 3) if reset else None,
            "peak_anon_GiB": round(sampler.peak / 2**30, 3),
            "synth_write_s": round(t_synth, 1) if t_synth is not None else None,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": machine_info(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
