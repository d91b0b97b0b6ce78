"""``gigaseg demo``: synthetic whole-slide data to a predicted slide, end to end, in minutes.

Commands::

    gigaseg demo                         # ./gigaseg-demo/, a few minutes on a 2-core CPU
    gigaseg demo --out /tmp/demo --device cuda
    gigaseg demo --scale paper           # the paper's experiment: 16000 x 64000 regions (days on a CPU)

Steps: (1) synthetic H&E regions (``gigaseg.store.prepare_synthetic``, one virtual slide per
region, training and held-out seeds differ) into a region store; (2) a held-out synthetic
whole-slide image (``gigaseg.synth.write_slide``, another seed); (3) ``gigaseg.training.train`` of
the ``paper`` U-Net on whole regions; (4) ``gigaseg.predict.predict_slide`` of the held-out
slide with the final checkpoint, and its Dice against the slide's exact mask; (5)
``summary.json`` and ``summary.txt`` (written last), ``curves.png`` and ``overlay.png``.

Layout of the output folder::

    OUT/
      .gigaseg-demo          marks the folder as the demo's (a rerun replaces its contents)
      demo-config.json       the effective configuration, versions, machine
      data/regions/          the region store (train and val splits)
      data/heldout-slide.tiff, data/heldout-slide.mask.tiff
      run/                   the training run (config.json, log.csv, val.csv, curves.png, checkpoint.pt)
      prediction/            predict_slide's outputs for the held-out slide
      curves.png, overlay.png, summary.json, summary.txt
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, OutputError
from .options import (
    DEFAULT_DEMO_OUT,
    DEFAULT_DEMO_SCALE,
    DEFAULT_DEVICE,
    DEFAULT_PRESET,
    DEFAULT_SEED,
    DEFAULT_SYNTH_MPP,
    DEMO_SCALES,
    check_choice,
    check_keys,
)

__all__ = ["DemoConfig", "SCALES", "demo_config", "run_demo"]

SCALES = DEMO_SCALES
_MARKER = ".gigaseg-demo"
_OWNED = ("data", "run", "prediction", "curves.png", "overlay.png", "summary.json", "summary.txt",
          "demo-config.json")


@dataclass
class DemoConfig:
    """What the demo makes and trains.

    Attributes:
        scale: "small" or "paper".
        train_regions, val_regions: how many synthetic regions of each split.
        size: (w, h) of each region, pixels at ``mpp``.
        slide_size: (w, h) of the held-out whole-slide image, level-0 pixels.
        steps, lr, warmup, val_every, ckpt_every: training (see ``gigaseg.options.TrainConfig``).
        preset: the model preset.
        memory_budget: the engine's memory budget (None: the engine's default).
        mpp: resolution of the synthetic data, um/px.
    """

    scale: str = DEFAULT_DEMO_SCALE
    train_regions: int = 8
    val_regions: int = 3
    size: tuple[int, int] = (2048, 2048)
    slide_size: tuple[int, int] = (6144, 3072)
    steps: int = 300
    lr: float = 0.003
    warmup: int = 10
    val_every: int = 25
    ckpt_every: int = 25
    preset: str = DEFAULT_PRESET
    memory_budget: str | int | None = None
    mpp: float = DEFAULT_SYNTH_MPP

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SCALES = {
    "small": DemoConfig(),
    # The paper: 16000 x 64000 (rows x columns) areas, batch size 1, 4,940 steps; at 1.0 um/px
    # (16 x 64 mm, a slide's tissue area), as in scripts/paper_reproduction.py, with its Adam
    # peak rate: 0.003, right for the small scale, collapsed a gigapixel run after 22 steps
    # (each step's gradient is almost noise-free there; see the README).
    "paper": DemoConfig(
        scale="paper", train_regions=8, val_regions=4, size=(64000, 16000), slide_size=(64000, 32000),
        steps=4940, lr=0.001, warmup=20, val_every=250, ckpt_every=10, mpp=1.0,
    ),
}


def demo_config(scale: str = DEFAULT_DEMO_SCALE, **overrides: Any) -> DemoConfig:
    """The configuration of ``scale`` ("small" or "paper") with ``overrides`` applied."""
    check_choice("demo scale", scale, SCALES)
    check_keys("demo options", overrides, [f.name for f in dataclasses.fields(DemoConfig)])
    cfg = dataclasses.replace(_SCALES[scale], **overrides)
    for name in ("train_regions", "steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"demo {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.val_regions < 1:
        raise ConfigError(f"demo val_regions must be >= 1 (the held-out Dice needs one), got {cfg.val_regions}")
    for name in ("size", "slide_size"):
        w, h = getattr(cfg, name)
        if w < 1 or h < 1:
            raise ConfigError(f"demo {name} must be positive, got (w={w}, h={h})")
    return cfg


def _prepare_out(out: Path) -> None:
    """Create ``out``, or clear a previous demo's outputs from it; refuse a foreign folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"`out` {out} exists and is not a folder; choose another `out`")
    if out.is_dir() and any(out.iterdir()) and not (out / _MARKER).exists():
        raise ConfigError(
            f"`out` {out} is not empty and was not made by gigaseg demo; choose a new or empty folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / _MARKER).write_text("made by gigaseg demo; a rerun replaces the demo's files here\n")
    except OSError as exc:
        raise OutputError(f"`out` {out} cannot be written ({exc.strerror or exc}); choose another `out`",
                          cause=exc) from exc
    for name in ("summary.json", "summary.txt") + _OWNED:  # the summary first: it marks completion
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _read_mask_tiff(path: str | Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[0].asarray() if tif.series[0].levels else tif.pages[0].asarray()


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    pred = pred > 0
    tissue = ref == 1 if ref.max() <= 1 else ref > 127
    denom = int(pred.sum()) + int(tissue.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(pred & tissue)) / denom


def _fmt_bytes(n: float | None) -> str:
    from ._units import format_bytes

    return "?" if n is None else format_bytes(n)


def run_demo(out: str | Path = DEFAULT_DEMO_OUT, *, scale: str = DEFAULT_DEMO_SCALE, device: str = DEFAULT_DEVICE,
             seed: int = DEFAULT_SEED, progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Run the demo into ``out``; see the module docstring.

    Args:
        out: the output folder (created; a previous demo's outputs in it are replaced; any other
            non-empty folder is refused).
        scale: "small" (minutes on a laptop CPU) or "paper" (the paper's full-size experiment).
        device: "auto", "cpu", "cuda" or "mps".
        seed: data seeds ``seed``, ``seed + 1``, ... and the training seed.
        progress: progress bars on stderr.
        **overrides: ``DemoConfig`` fields (``train_regions``, ``size``, ``steps``, ...).

    Returns:
        The summary (also in ``summary.json``) plus ``text`` (``summary.txt``) and ``out``.
    """
    import torch

    from . import __version__
    from ._atomic import write_json_atomic, write_text_atomic
    from ._memory import peak_rss_bytes
    from ._runinfo import machine_info, utc_now
    from .predict import predict_slide
    from .prepare import prepare_synthetic
    from .store import RegionStore
    from .synth import clear_caches, write_slide
    from .training import TrainConfig, train

    cfg = demo_config(scale, **overrides)
    t_start = time.perf_counter()
    out = Path(out)
    _prepare_out(out)
    n_total = cfg.train_regions + cfg.val_regions
    slide_seed = seed + n_total
    write_json_atomic(out / "demo-config.json", {
        "command": "demo", "demo": cfg.to_dict(), "seed": seed, "slide_seed": slide_seed, "device": device,
        "gigaseg_version": __version__, "torch_version": torch.__version__, "machine": machine_info(),
        "time": utc_now(),
    })

    def say(msg: str) -> None:
        if progress:
            print(f"gigaseg demo: {msg}", file=sys.stderr, flush=True)

    # 1. Data: training and held-out regions (each a whole virtual slide), and a held-out slide.
    w, h = cfg.size
    say(f"making {cfg.train_regions} training and {cfg.val_regions} held-out synthetic regions of "
        f"{h} x {w} pixels (seeds {seed}..{seed + n_total - 1})")
    t0 = time.perf_counter()
    store = RegionStore.create(out / "data" / "regions")
    prepare_synthetic(store, n_total, cfg.size, seed=seed, val=cfg.val_regions, mpp=cfg.mpp, progress=progress)
    sw, sh = cfg.slide_size
    say(f"making a held-out synthetic slide of {sh} x {sw} pixels (seed {slide_seed})")
    slide_path, slide_mask_path = write_slide(out / "data" / "heldout-slide.tiff", width=sw, height=sh,
                                              seed=slide_seed, mpp=cfg.mpp, progress=progress)
    t_data = time.perf_counter() - t0
    clear_caches()  # the synthetic textures are not needed again: training's memory counts without them

    # 2. Training on whole regions.
    say(f"training the {cfg.preset!r} U-Net for {cfg.steps} steps, one whole region per step")
    run = train(TrainConfig(
        data=str(store.path), out=str(out / "run"), preset=cfg.preset, steps=cfg.steps, lr=cfg.lr,
        warmup=cfg.warmup, val_every=cfg.val_every, ckpt_every=cfg.ckpt_every, seed=seed, device=device,
        memory_budget=cfg.memory_budget, progress=progress,
    ))
    if (out / "run" / "curves.png").exists():
        shutil.copyfile(out / "run" / "curves.png", out / "curves.png")

    # 3. The held-out slide, through the whole-slide predictor.
    t0 = time.perf_counter()
    say(f"predicting the held-out slide {slide_path.name}")
    pred = predict_slide(run["checkpoint"], slide_path, out / "prediction", device=device,
                         memory_budget=cfg.memory_budget, overwrite=True, progress=progress)
    slide_dice = _dice(_read_mask_tiff(pred["paths"]["mask"]), _read_mask_tiff(slide_mask_path))
    shutil.copyfile(pred["paths"]["overlay"], out / "overlay.png")
    prediction: dict[str, Any] = {"slide": str(slide_path), "slide_hw": [sh, sw], "dice": slide_dice,
                                  "tissue_fraction": pred.get("tissue_fraction"), "paths": pred.get("paths")}
    prediction["seconds"] = time.perf_counter() - t0

    # 4. Summary (written last).
    wall = time.perf_counter() - t_start
    summary = {
        "held_out_dice_mean": run["val_dice_mean"],
        "held_out_dice_sd": run["val_dice_sd"],
        "held_out_dice": run["val_dice"],
        "held_out_regions": cfg.val_regions,
        "train_regions": cfg.train_regions,
        "region_hw": [h, w],
        "steps": run["step"],
        "final_loss": run["loss"],
        "wall_seconds": wall,
        "data_seconds": t_data,
        "train_seconds": run["seconds"],
        "seconds_per_step": run["seconds_per_step"],
        "predict_seconds": prediction["seconds"],
        "peak_anon_bytes": run["peak_anon_bytes"],
        "peak_rss_bytes": peak_rss_bytes(),
        "slide_dice": prediction.get("dice"),
        "prediction": prediction,
        "preset": cfg.preset,
        "parameters": run["parameters"],
        "device": run["device"],
        "machine": machine_info(),
        "scale": cfg.scale,
        "config": cfg.to_dict(),
        "paths": {"out": str(out), "run": str(out / "run"), "checkpoint": run["checkpoint"],
                  "curves": str(out / "curves.png"), "overlay": str(out / "overlay.png"),
                  "store": str(store.path), "slide": str(slide_path)},
        "finished": utc_now(),
    }
    m = summary["machine"]
    slide_line = f"held-out slide ({sh} x {sw} px) Dice: {prediction['dice']:.4f}\n"
    text = (
        f"gigaseg demo ({cfg.scale}): {cfg.preset} U-Net, {run['parameters']:,} parameters, trained on whole "
        f"{h} x {w} regions\n"
        f"held-out Dice over {cfg.val_regions} regions: {run['val_dice_mean']:.4f} +/- {run['val_dice_sd']:.4f}\n"
        f"{slide_line}"
        f"steps: {run['step']} ({cfg.train_regions} training regions), {run['seconds_per_step']:.2f} s per step, "
        f"training {run['seconds']:.0f} s\n"
        f"wall time: {wall:.0f} s (data {t_data:.0f} s, prediction {prediction['seconds']:.0f} s)\n"
        f"peak memory: {_fmt_bytes(run['peak_anon_bytes'])} anonymous during training steps, "
        f"{_fmt_bytes(summary['peak_rss_bytes'])} resident (process peak)\n"
        f"machine: {m['cpu']}, {m['cpu_count']} CPUs, device {run['device']}, torch {m['torch_version']}\n"
        f"outputs: {out}\n"
    )
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.txt", text)
    return {**summary, "text": text, "out": str(out)}
