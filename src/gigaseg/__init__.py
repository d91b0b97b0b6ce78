"""gigaseg: exact, memory-bounded end-to-end deep learning on whole gigapixel pathology images.

The public API is re-exported here (see ``__all__``). Names are imported lazily on first use
so that ``import gigaseg`` and ``gigaseg --help`` do not pay for importing PyTorch. No submodule
shares a public name's name (the training loop is ``gigaseg.training``), so importing one never
hides a function: ``from gigaseg import train`` is the function whatever was imported before.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# NOTE [Numba threads]: numba sizes its thread pool from NUMBA_NUM_THREADS when it is imported
# (default: every core) and ignores OMP_NUM_THREADS. The engine runs numba's loops on as many
# threads as PyTorch's, but idle pool threads still take cores: under torchrun (which sets
# OMP_NUM_THREADS=1 per process) two ranks on two cores then ran a step 1.5x slower than one
# process with two threads, and 0.8x once each rank's pool had one thread
# (benchmarks/distributed/). So where OMP_NUM_THREADS is set and NUMBA_NUM_THREADS is not, the
# pool follows it. It takes effect if gigaseg is imported before numba.
if "NUMBA_NUM_THREADS" not in os.environ and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() \
        and int(os.environ["OMP_NUM_THREADS"]) >= 1:
    os.environ["NUMBA_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"].strip()

from ._version import __version__
from .errors import (
    CheckpointError,
    ConfigError,
    DistributedError,
    GigasegError,
    InputError,
    MissingDependencyError,
    OutputError,
    PlanError,
    SlideError,
    StoreError,
    TrainingError,
    UnsupportedModelError,
)

# public name -> module that defines it
_LAZY = {
    "UNet": "model",
    "UNetConfig": "options",
    "PRESETS": "options",
    "preset": "options",
    "count_parameters": "model",
    "bce_loss": "losses",
    "dice_loss": "losses",
    "bce_dice_loss": "losses",
    "ce_loss": "losses",
    "class_dice_loss": "losses",
    "ce_dice_loss": "losses",
    "SlideClassifier": "engine.slide",
    "Geometry": "engine",
    "Plan": "engine",
    "plan": "engine",
    "tiled_backward": "engine",
    "tiled_predict": "engine",
    "iter_predict": "engine",
    "open_slide": "slides",
    "Slide": "slides",
    "render_region": "synth",
    "write_slide": "synth",
    "RegionStore": "store",
    "Region": "store",
    "prepare_region": "prepare",
    "prepare_synthetic": "prepare",
    "RegionDataset": "dataset",
    "rasterize_geojson": "geojson",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "predict_slide": "predict",
    "predict_slides": "predict",
    "baseline_slide": "baseline",
    "evaluate_pair": "metrics",
    "evaluate_pairs": "metrics",
    "TrainConfig": "options",
    "train": "training",
    "resume_config": "training",
    "run_demo": "demo",
}

__all__ = [
    "__version__",
    "GigasegError",
    "CheckpointError",
    "ConfigError",
    "DistributedError",
    "InputError",
    "MissingDependencyError",
    "OutputError",
    "PlanError",
    "SlideError",
    "StoreError",
    "TrainingError",
    "UnsupportedModelError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gigaseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
