"""The training loop: one whole region per step (batch size 1) with the exact tiled engine.

Commands::

    gigaseg prepare --synthetic 6 --val 2 --size 2048x4096 --out regions/
    gigaseg train --data regions/ --preset paper --steps 300 --out runs/a
    gigaseg train --resume runs/a                     # after Ctrl-C: continues exactly
    gigaseg train --resume runs/a --steps 600         # continue further (the schedule stretches)
    torchrun --standalone --nproc-per-node 2 -m gigaseg train --data regions/ --out runs/b
                                                      # 2 processes share each region's tiles

In Python::

    from gigaseg import TrainConfig, train      # or gigaseg.training, this module
    result = train(TrainConfig(data="regions/", out="runs/a", steps=300))
    print(result["val_dice_mean"], result["checkpoint"])

A step reads one training region (its augmented view from ``RegionDataset``), accumulates the
exact whole-region gradient with ``tiled_backward`` and takes one Adam step. Region order is
a permutation per epoch drawn from ``(seed, epoch)``. Under torchrun the processes share each
step's work, ``regions_per_step`` regions per step (NOTE [Distributed training] in
``gigaseg._torchrun``). Every ``val_every`` steps, and at the
end, each held-out region is predicted tile by tile and its Dice computed from counts, never
materializing the region. ``RUN_DIR`` holds ``config.json``, ``log.csv``, ``val.csv``,
``curves.png`` and ``checkpoint.pt`` (the latest, replaced atomically).

# NOTE [Exact resume]
A checkpoint holds the weights, Adam's state, the scheduler's state, the step, the data order
(epoch, position in the epoch's permutation) and the RNG states. Augmentation parameters are
a pure function of (seed, epoch, region), and the permutation of (seed, epoch), so a run that
stops after step k and resumes computes the same steps k+1, ... on the same inputs as one
that ran straight through: on the CPU the parameters are equal bit for bit. Ctrl-C and
SIGTERM stop training with a checkpoint of the last completed step; one that arrives during the
optimizer update is deferred until the update is complete, so the saved state is always that of
a completed step.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import random
import signal
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._atomic import atomic_write, link_or_copy, write_json_atomic
from .errors import (
    CheckpointError,
    CheckpointWriteError,
    ConfigError,
    DistributedError,
    GigasegError,
    InputError,
    OutputError,
    StoreError,
    TrainingError,
)
from .options import LOSSES, RESUME_CHANGEABLE, SCHEDULES, TrainConfig, unknown_choice

__all__ = [
    "TrainConfig",
    "TrainingError",
    "SCHEDULES",
    "LOSSES",
    "LOG_COLUMNS",
    "RESUME_CHANGEABLE",
    "CHECKPOINT_NAME",
    "train",
    "resume_config",
    "lr_factor",
    "DiceCounts",
    "ClassCounts",
    "pooled_class_dice",
    "evaluate_regions",
    "plot_curves",
]

LOG_COLUMNS = (
    "step", "loss", "lr", "seconds_per_step", "peak_anon_bytes", "val_dice_mean", "val_dice_sd", "val_seconds",
    "epoch", "region",
)
CHECKPOINT_NAME = "checkpoint.pt"
_VAL_COLUMNS = ("step", "region", "dice", "intersection", "predicted", "reference")


def lr_factor(step: int, *, steps: int, warmup: int, schedule: str, min_lr_ratio: float,
              decay_every: int | None, decay_gamma: float) -> float:
    """The learning rate of 0-based ``step`` relative to the peak ``lr``.

    Linear warm-up over ``warmup`` steps (``(step + 1) / (warmup + 1)``), then "cosine" decay to
    ``min_lr_ratio`` at ``steps``, "step" decay by ``decay_gamma`` every ``decay_every`` steps
    (default ``steps // 3``), or "constant".
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        every = decay_every or max(1, steps // 3)
        return decay_gamma ** ((step - warmup) // every)
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _schedule_fn(c: TrainConfig):
    # a partial (not a closure): LambdaLR.state_dict then saves no function state, so a resumed
    # run may stretch the schedule (--steps) without the checkpoint overriding it.
    return partial(lr_factor, steps=c.steps, warmup=c.warmup, schedule=c.schedule, min_lr_ratio=c.min_lr_ratio,
                   decay_every=c.decay_every, decay_gamma=c.decay_gamma)


# --- validation --------------------------------------------------------------------------------


class DiceCounts:
    """An ``out`` for ``tiled_predict`` that counts Dice terms instead of storing probabilities.

    Each written slice ``[y0:y1, x0:x1]`` of probabilities is thresholded and compared with the
    same slice of ``mask`` (read from disk then); reference pixels of 255 (ignore) count nowhere.

    Args:
        mask: (H, W) uint8 array-like reference: 0 background, 1 tissue, 255 ignore.
        threshold: a pixel is predicted tissue when its probability is >= threshold.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, mask: Any, threshold: float = 0.5):
        self.mask = mask
        self.shape = tuple(int(v) for v in mask.shape[:2])
        self.threshold = float(threshold)
        self.intersection = 0
        self.predicted = 0
        self.reference = 0

    def __setitem__(self, key: tuple[slice, slice], value: np.ndarray) -> None:
        ref = np.asarray(self.mask[key])
        pred = np.asarray(value) >= self.threshold
        tissue = ref == 1
        if (ref == 255).any():
            pred &= ref != 255
        self.intersection += int(np.count_nonzero(pred & tissue))
        self.predicted += int(np.count_nonzero(pred))
        self.reference += int(np.count_nonzero(tissue))

    @property
    def dice(self) -> float:
        """2 |P & R| / (|P| + |R|); 1.0 when both are empty."""
        return _dice_of(self.intersection, self.predicted, self.reference)


def _dice_of(intersection: int, predicted: int, reference: int) -> float:
    denom = predicted + reference
    return 1.0 if denom == 0 else 2.0 * intersection / denom


class ClassCounts:
    """``DiceCounts`` for a model of C classes: an ``out`` for ``tiled_predict`` ((H, W, C)
    probabilities) that counts, per class, the pixels predicted (the class of highest
    probability), in the reference, and in both; reference pixels of 255 (ignore) count nowhere.

    Args:
        mask: (H, W) uint8 array-like reference: class indices 0..C-1, 255 ignore.
        classes: C, the number of classes.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, mask: Any, classes: int):
        self.mask = mask
        self.classes = int(classes)
        self.shape = (*(int(v) for v in mask.shape[:2]), self.classes)
        self.intersection = np.zeros(self.classes, np.int64)
        self.predicted = np.zeros(self.classes, np.int64)
        self.reference = np.zeros(self.classes, np.int64)

    def __setitem__(self, key: tuple[slice, slice], value: np.ndarray) -> None:
        ref = np.asarray(self.mask[key]).ravel()
        pred = np.asarray(value).argmax(axis=-1).ravel()
        valid = ref != 255
        if not valid.all():
            ref, pred = ref[valid], pred[valid]
        n = self.classes
        self.intersection += np.bincount(ref[ref == pred], minlength=n)[:n]
        self.predicted += np.bincount(pred, minlength=n)[:n]
        self.reference += np.bincount(ref, minlength=n)[:n]

    @property
    def class_dice(self) -> list[float | None]:
        """Each class's Dice; None for a class absent from both the reference and the prediction."""
        return _class_dice(self.intersection, self.predicted, self.reference)

    @property
    def dice(self) -> float:
        """The mean of the classes' Dice over the classes present in the reference or the prediction."""
        return _mean_defined(self.class_dice)


def _class_dice(intersection: Any, predicted: Any, reference: Any) -> list[float | None]:
    return [None if p + r == 0 else 2.0 * int(i) / int(p + r) for i, p, r in zip(intersection, predicted, reference)]


def _mean_defined(values: Sequence[float | None]) -> float:
    defined = [v for v in values if v is not None]
    return float(statistics.fmean(defined)) if defined else 1.0


def _class_row(name: str, counts: Sequence[Any], classes: Sequence[str]) -> dict[str, Any]:
    """A validation row of a several-class model from its per-class counts [I, P, R]."""
    i, p, r = (list(col) for col in zip(*counts))
    dice = _class_dice(i, p, r)
    return {"region": name, "dice": _mean_defined(dice), "counts": [list(map(int, c)) for c in counts],
            **{f"dice_{c}": ("" if d is None else d) for c, d in zip(classes, dice)}}


def pooled_class_dice(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, float | None]:
    """Each class's Dice over all the regions of ``rows`` (``evaluate_regions``'s, of a model of
    several classes): its counts summed over the regions, then 2 I / (P + R); None for a class
    absent from every reference and prediction."""
    total = np.zeros((len(classes), 3), np.int64)
    for r in rows:
        total += np.asarray(r["counts"], np.int64)
    return dict(zip(classes, _class_dice(*total.T)))


def evaluate_regions(model, regions: Sequence, *, threshold: float = 0.5, memory_budget=None, tile=None,
                     device=None, progress: bool = False, read_workers: int | None = None,
                     classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Dice of ``model`` on each region (``.image``, ``.mask``, ``.name``), tile by tile.

    A model of C >= 2 output channels predicts each pixel's most probable class; give the
    ``classes``' names (default "class 0", "class 1", ...).

    Returns:
        One dict per region: ``region``, ``dice``, ``intersection``, ``predicted``, ``reference``
        (pixel counts). For C classes: ``region``, ``dice`` (the mean of the classes' Dice over
        the classes present in the reference or the prediction), ``dice_<class>`` per class
        ("" when absent from both) and ``counts`` ([I, P, R] per class; ``pooled_class_dice``
        sums them over the regions).
    """
    from .engine import tiled_predict

    n_classes = int(getattr(getattr(model, "config", None), "out_channels", 1))
    if n_classes > 1:
        classes = list(classes) if classes is not None else [f"class {k}" for k in range(n_classes)]
        if len(classes) != n_classes:
            raise ConfigError(f"the model has {n_classes} output classes but {len(classes)} class names are given")
    was_training = model.training
    model.eval()
    out = []
    try:
        for region in regions:
            counts: DiceCounts | ClassCounts
            counts = DiceCounts(region.mask, threshold) if n_classes == 1 else ClassCounts(region.mask, n_classes)
            tiled_predict(model, region.image, out=counts, memory_budget=memory_budget, tile=tile, device=device,
                          progress=progress, read_workers=read_workers)
            if isinstance(counts, ClassCounts):
                assert classes is not None
                out.append(_class_row(region.name, list(zip(counts.intersection, counts.predicted, counts.reference)),
                                      classes))
                continue
            out.append({"region": region.name, "dice": counts.dice, "intersection": counts.intersection,
                        "predicted": counts.predicted, "reference": counts.reference})
    finally:
        model.train(was_training)
    return out


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(statistics.fmean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0


# --- data checks ---------------------------------------------------------------------------------


def _val_regions(c: TrainConfig):
    from .store import RegionStore

    if c.val_data:
        store = RegionStore(c.val_data)
        regions = store.split("val") or store.regions
        if not regions:
            raise StoreError(f"validation store {store.path} has no regions; add some with gigaseg prepare")
    else:
        assert c.data is not None  # TrainConfig.check requires it
        regions = RegionStore(c.data).split("val")
    for r in regions:
        for kind in ("image", "mask"):
            if not r._file(kind).exists():
                raise StoreError(
                    f"validation region {r.name!r} in {r.path.parent} has no {kind} ({r._file(kind)} is missing); "
                    "rebuild it with gigaseg prepare or remove it with RegionStore.remove"
                )
    return regions


def _training_mpp(train_regions, val_regions) -> float | None:
    mpps = {r.name: r.meta.get("mpp") for r in train_regions}
    values = set(mpps.values())
    if len(values) > 1:
        raise ConfigError(
            f"the training regions have different resolutions (mpp per region: {mpps}); a model is trained "
            "at one mpp: prepare the regions at one mpp"
        )
    mpp = values.pop()
    for r in val_regions:
        v = r.meta.get("mpp")
        if mpp is not None and v is not None and not math.isclose(v, mpp, rel_tol=1e-6):
            raise ConfigError(
                f"validation region {r.name!r} is at {v} mpp but the training regions are at {mpp} mpp; "
                "prepare the validation regions at the same mpp"
            )
    return mpp


def _check_train_masks(regions, progress: bool, classes: Sequence[str] | None = None) -> None:
    """Refuse, before training, masks holding values other than 0, 1 and 255 (ignore: left out
    of the loss by the engine); with ``classes``, other than 0..C-1 and 255."""
    from tqdm.auto import tqdm

    top = 1 if classes is None else len(classes) - 1
    if classes is None:
        allowed = "0 (background), 1 (tissue) and 255 (ignore)"
    else:
        shown = ", ".join(f"{k} {n}" for k, n in enumerate(classes[:6])) + (", ..." if len(classes) > 6 else "")
        allowed = f"the class indices 0..{top} ({shown}) and 255 (ignore)"
    todo = [r for r in regions if (r.meta.get("mask_source") or {}).get("kind") != "synthetic"]
    if not todo:
        return
    total = sum(r.shape[0] for r in todo)
    with tqdm(total=total, unit="row", desc="check masks", disable=None if progress else True, leave=False) as bar:
        for r in todo:
            h, w = r.shape
            rows = max(1, (64 << 20) // max(1, w))
            for y0 in range(0, h, rows):
                strip = np.asarray(r.mask[y0:y0 + rows])
                bad = (strip > top) & (strip != 255) if strip.size and strip.max() > top else None
                if bad is not None and bad.any():
                    y, x = np.argwhere(bad)[0]
                    raise InputError(
                        f"{r.split} region {r.name!r} ({r.path}) has mask value {int(strip[y, x])} at "
                        f"(x={int(x)}, y={y0 + int(y)}); its masks hold {allowed}: map the other values to "
                        "these and prepare the region again" + ("" if classes is None else ", or give the store "
                                                                 "(its regions' \"classes\") every class")
                    )
                bar.update(min(rows, h - y0))


# --- run folder, logs, curves ----------------------------------------------------------------------


# NOTE [Restart without a checkpoint]
# A run that dies before its first checkpoint (killed, out of memory, a power cut during the
# first `ckpt_every` steps) leaves config.json and the logs but nothing to resume from. Such a
# folder is started again from step 0 by a new run with the same `out`, which says so on stderr
# and replaces the logs; a folder with a checkpoint still needs `resume` (its steps are not thrown
# away unasked), and one whose config.json is not a gigaseg training run's is refused.
def _check_new_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"`out` {run_dir} exists and is not a folder; choose another `out`")
    if (run_dir / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"{run_dir} already holds a training run; continue it with `resume={str(run_dir)!r}` (resume_config), "
            "or choose another `out`"
        )
    if (run_dir / "log.csv").exists() or (run_dir / "config.json").exists():
        if not _is_run_config(run_dir / "config.json"):
            raise ConfigError(f"{run_dir}/config.json is not the configuration of a gigaseg training run; choose "
                              "another `out`")
        if os.environ.get("RANK", "0") == "0":  # once under torchrun
            print(f"gigaseg train: {run_dir} holds a run that stopped before its first checkpoint (no "
                  f"{CHECKPOINT_NAME}): starting it again from step 0, its logs replaced", file=sys.stderr)


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is absent or the config.json of a gigaseg training run."""
    import json

    if not path.exists():
        return True
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(info, dict) and info.get("command") == "train"


def _write_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj)


def _write_csv_atomic(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    with atomic_write(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class _CsvLog:
    """Append-only CSV with a header; rows flushed as they come."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path, self.columns = path, list(columns)
        new = not path.exists() or path.stat().st_size == 0
        with self._writing():
            self._f = open(path, "a", newline="")
            self._w = csv.DictWriter(self._f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                self._w.writeheader()
                self._f.flush()

    def write(self, row: dict) -> None:
        with self._writing():
            self._w.writerow({k: ("" if v is None else v) for k, v in row.items()})
            self._f.flush()

    @contextmanager
    def _writing(self):
        try:
            yield
        except OSError as exc:
            raise OutputError(f"cannot write {self.path} ({exc.strerror or exc}); free disk space", cause=exc) from exc

    def close(self) -> None:
        self._f.close()


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def plot_curves(rows: list[dict], path: str | Path) -> Path | None:
    """Draw loss and validation Dice against step into ``path`` (PNG, written atomically).

    Returns the path, or None when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    path = Path(path)
    steps = [_num(r.get("step")) for r in rows]
    loss = [_num(r.get("loss")) for r in rows]
    val = [(s, _num(r.get("val_dice_mean")), _num(r.get("val_dice_sd"))) for s, r in zip(steps, rows)
           if math.isfinite(_num(r.get("val_dice_mean")))]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(steps, loss, lw=0.8, color="tab:blue", label="loss")
    if len(loss) >= 10:
        k = max(2, len(loss) // 20)
        smooth = np.convolve(np.nan_to_num(loss, nan=float(np.nanmean(loss))), np.ones(k) / k, mode="valid")
        ax1.plot(steps[k - 1:], smooth, lw=1.5, color="tab:orange", label=f"mean of {k}")
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    if all(v > 0 for v in loss if math.isfinite(v)) and loss:
        ax1.set_yscale("log")
    ax1.legend(loc="upper right")
    ax1.grid(alpha=0.3)
    if val:
        vs, vm, vsd = zip(*val)
        ax2.errorbar(vs, vm, yerr=vsd, marker="o", ms=3, capsize=2, color="tab:green")
        ax2.set_title(f"last: {vm[-1]:.4f} +/- {vsd[-1]:.4f}", fontsize=9)
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation Dice (mean +/- sd over regions)")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:  # a random, exclusive temporary name (NOTE [Temporary files])
        fig.savefig(f, format="png")
    return path


# --- resuming ----------------------------------------------------------------------------------------


def resume_config(run_dir: str | Path, **changes: Any) -> TrainConfig:
    """The configuration of the run in ``run_dir``, to continue it with ``train``.

    Args:
        run_dir: a folder written by ``train`` (it holds ``checkpoint.pt``).
        **changes: new values of options in ``RESUME_CHANGEABLE`` (e.g. ``steps=600``); any other
            option must equal the run's.

    Raises:
        CheckpointError: no usable checkpoint in ``run_dir``.
        ConfigError: a change to an option that a resumed run cannot change.
    """
    from .checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT_NAME
    if not ckpt.is_file():
        raise CheckpointError(
            f"cannot resume {run_dir}: it has no {CHECKPOINT_NAME} (a run writes one every `ckpt_every` steps "
            f"and when interrupted); start it again with `out={str(run_dir)!r}` (a run folder without a checkpoint "
            "starts again from step 0), or start a new run with another `out`"
        )
    payload = load_checkpoint(ckpt)
    saved = payload.get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{ckpt} was not written by gigaseg train (no training configuration in it)")
    config = TrainConfig.from_dict(saved)
    bad = {}
    for name, value in changes.items():
        if name in ("resume", "out"):
            if value is not None and Path(value).resolve() != run_dir.resolve():
                bad[name] = value
            continue
        if not hasattr(config, name):
            raise unknown_choice("training option", name, [f.name for f in dataclasses.fields(TrainConfig)])
        if name in ("data", "val_data") and value and getattr(config, name):
            if Path(value).resolve() != Path(getattr(config, name)).resolve():
                bad[name] = value
            continue
        if name in RESUME_CHANGEABLE:
            setattr(config, name, value)
        elif value != getattr(config, name):
            bad[name] = value
    if bad:
        listed = ", ".join(f"{k}={v!r} (the run has {getattr(config, k)!r})" for k, v in bad.items())
        raise ConfigError(
            f"a resumed run keeps its configuration; these options differ from {run_dir}: {listed}. "
            f"Only {', '.join(RESUME_CHANGEABLE)} may change; start a new run with another `out` to change others"
        )
    config.out = str(run_dir)
    config.resume = str(run_dir)
    return config


def _rng_state() -> dict[str, Any]:
    """The RNG states in plain types (a checkpoint holds nothing that needs unpickling code)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached))
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(tuple(state["numpy"]))  # a tuple of ints, or gigaseg 0.1's array
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 7919]).permutation(n)


#: Signals that stop training cleanly: Ctrl-C, and SIGTERM (what schedulers such as SLURM, and
#: ``kill``, send before they kill a job).
_STOP_SIGNALS = tuple(sig for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if sig is not None)


def _raise_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _signals(handler):
    """Install ``handler`` for the stop signals (main thread only); yield whether it was."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {}
    try:
        for sig in _STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except (ValueError, OSError):
        pass
    try:
        yield bool(previous)
    finally:
        for sig, prev in previous.items():
            if prev is None:
                prev = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, prev)


@contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt like Ctrl-C (so it checkpoints too)."""
    with _signals(_raise_interrupt):
        yield


def _ignore_signal(*_: Any) -> None:
    """A stop signal that comes while the last step is being saved: the process is stopping already."""


@contextmanager
def _deferred_interrupt():
    """Hold a Ctrl-C or SIGTERM until the block is done, then raise KeyboardInterrupt."""
    received = []
    with _signals(lambda *_: received.append(True)):
        yield
    if received:
        raise KeyboardInterrupt


def _grads_finite(model) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())


# --- one run: setting up, a step, validation, checkpoints, logs ---------------------------------------


@dataclass
class _Run:
    """A run while it trains: its data, model and optimizer, where it is, and its logs.

    ``step`` counts completed optimizer steps; the next region is ``perm[position]`` of
    ``epoch``. ``unlogged`` is the last step's row until the loop has logged it (an interrupt
    between the update and the log writes it). ``info`` is what ``config.json`` holds.
    """

    c: TrainConfig
    run_dir: Path
    device: Any
    read_workers: int
    train_ds: Any
    val_regions: list
    mpp: float | None
    model: Any
    optimizer: Any
    scheduler: Any
    step: int = 0
    epoch: int = 0
    position: int = 0
    perm: Any = None
    resumes: list = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)
    last_val: list = dataclasses.field(default_factory=list)
    last_ckpt_step: int | None = None
    logged_step: int = 0
    unlogged: dict = dataclasses.field(default_factory=dict)
    log: Any = None
    val_log: Any = None
    ranks: Any = None  # a gigaseg._torchrun.Ranks under torchrun, else None

    @property
    def n_regions(self) -> int:
        return len(self.train_ds)

    @property
    def writer(self) -> bool:
        """Whether this process writes the run folder and shows progress (rank 0, or the only one)."""
        return self.ranks is None or self.ranks.writer

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME


def _resolved(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """A checked copy of ``config`` with absolute data paths, and the checkpoint it resumes (or None)."""
    from .checkpoint import load_checkpoint

    c = dataclasses.replace(config)
    c.check()
    assert c.data is not None and c.out is not None  # check() requires both
    c.data = str(Path(c.data).resolve())  # a run resumes from any working directory
    c.val_data = str(Path(c.val_data).resolve()) if c.val_data else None
    _resolve_classes(c)
    run_dir = Path(c.out)
    if not c.resume:
        if c.init is not None:
            _apply_init(c)
        c.check_classes()
        _check_new_run_dir(run_dir)
        return c, None
    if Path(c.resume).resolve() != run_dir.resolve():
        raise ConfigError(f"`resume={c.resume!r}` and `out={c.out!r}` differ: a run resumes in its own folder")
    payload = load_checkpoint(run_dir / CHECKPOINT_NAME)
    saved = TrainConfig.from_dict(payload.get("train_config") or {})
    saved.data = str(Path(saved.data).resolve()) if saved.data else None
    saved.val_data = str(Path(saved.val_data).resolve()) if saved.val_data else None
    diff = {f.name: (getattr(saved, f.name), getattr(c, f.name)) for f in dataclasses.fields(TrainConfig)
            if f.name not in RESUME_CHANGEABLE + ("resume", "out") and getattr(saved, f.name) != getattr(c, f.name)}
    if diff:
        raise ConfigError(
            f"a resumed run keeps its configuration; these options differ from the checkpoint's in {run_dir}: "
            + ", ".join(f"{k} (run: {a!r}, given: {b!r})" for k, (a, b) in diff.items())
            + "; build the configuration with gigaseg.training.resume_config"
        )
    return c, payload


# NOTE [Classes of a run]
# A run trains one channel (tissue masks 0/1/255) or C >= 2 classes (masks of class indices
# 0..C-1, 255 ignore). The classes' names come from `classes` or, when it is None, from the
# store: every region of a several-class store says them in its region.json ("classes"), and
# all of the training and validation regions must say the same. Given both, they must agree.
# The names are written into the run's configuration, so that a resumed run and its checkpoint
# (whose "classes" entry prediction reads to name the label TIFF's values and the GeoJSON's
# classifications) carry them; an `init` model must have as many output channels as there are
# classes. Every mask is checked against C before the first step (a value >= C is refused with
# the region and the pixel).
def _store_classes(c: TrainConfig) -> list[str] | None:
    """The class names the store's regions (training and validation) say, or None when none does."""
    from .store import RegionStore

    assert c.data is not None
    regions = list(RegionStore(c.data).regions)
    if c.val_data:
        regions += RegionStore(c.val_data).regions
    seen: dict[tuple[str, ...] | None, str] = {}
    for r in regions:
        names = r.classes
        seen.setdefault(tuple(names) if names is not None else None, r.name)
    if len(seen) > 1:
        listed = "; ".join(f"region {name!r}: {list(k) if k is not None else 'none (a tissue region)'}"
                           for k, name in seen.items())
        raise StoreError(f"the regions of {c.data}{' and ' + c.val_data if c.val_data else ''} name different "
                         f"classes ({listed}); a model is trained on one set of classes: prepare the regions with "
                         "the same classes")
    key = next(iter(seen), None)
    return list(key) if key is not None else None


def _resolve_classes(c: TrainConfig) -> None:
    """``c.classes`` from the store when not given, checked against it (NOTE [Classes of a run])."""
    found = _store_classes(c)
    if found is None:
        return
    if c.classes is None:
        c.classes = found
    elif list(c.classes) != found:
        raise ConfigError(f"`classes={list(c.classes)!r}` differ from the classes of the store {c.data}, {found!r}: "
                          "leave `classes` out (the store's are used) or give the store's")


def _apply_init(c: TrainConfig) -> None:
    """``init``: the model's architecture becomes the init file's (a different explicit ``preset`` is
    an error), and a file path becomes absolute, so that a resumed run finds the same weights."""
    from .checkpoint import BUILTIN, load_checkpoint
    from .options import DEFAULT_PRESET, UNetConfig

    assert c.init is not None
    if str(c.init) != BUILTIN:
        c.init = str(Path(c.init).resolve())
    payload = load_checkpoint(c.init)
    init_config = UNetConfig.from_dict(payload["config"])
    init_classes = payload.get("classes")
    wanted = len(c.classes) if c.classes is not None else 1
    if init_config.out_channels != wanted:
        what = "one channel (tissue)" if init_config.out_channels == 1 else (
            f"{init_config.out_channels} classes" + (f" ({', '.join(map(str, init_classes))})"
                                                     if isinstance(init_classes, list) else ""))
        have = f"{wanted} classes ({', '.join(c.classes)})" if c.classes is not None else "one channel (tissue masks)"
        raise ConfigError(f"`init={c.init!r}` is a model of {what}, but the store {c.data} trains {have}: start "
                          "from a model with as many output classes, or without `init`")
    if c.preset != DEFAULT_PRESET and c.model_config() != init_config:
        raise ConfigError(f"`init={c.init!r}` holds a model of another architecture than `preset` says; give "
                          "one of them (with `init` the architecture is the init model's)")
    c.preset = init_config


def _init_weights(c: TrainConfig, model: torch.nn.Module, mpp: float | None) -> None:
    """Load ``c.init``'s weights into ``model``; warn when the data's resolution is not the init model's."""
    from .checkpoint import load_checkpoint

    assert c.init is not None
    payload = load_checkpoint(c.init)
    model.load_state_dict(payload["state_dict"])
    init_mpp = payload.get("mpp")
    if init_mpp and mpp and abs(float(init_mpp) / float(mpp) - 1) > 0.01:
        warnings.warn(f"the init model ({c.init}) works at {init_mpp:g} um/px but the training data is at {mpp:g} "
                      f"um/px; fine-tuning moves it to the data's resolution (prepare the store at `mpp={init_mpp:g}` "
                      "to keep the model's)", stacklevel=3)


def _setup(c: TrainConfig, payload: dict[str, Any] | None, ranks: Any = None) -> _Run:
    """Check the data and build the model and optimizer (restored from ``payload`` when
    resuming); ``_open_run_dir`` comes next. Every check comes before any work; seeds are set
    once, here. Under torchrun (``ranks``) each rank checks its share of the masks."""
    from .dataset import RegionDataset
    from .engine import default_read_workers, resolve_device
    from .model import UNet

    assert c.data is not None and c.out is not None  # a config from _resolved has both
    device = resolve_device(c.device)
    read_workers = c.read_workers or default_read_workers(device)
    train_ds = RegionDataset(c.data, "train", augment=c.augment, seed=c.seed, jitter=c.jitter,
                             jitter_strength=c.jitter_strength, read_threads=read_workers)
    val_regions = _val_regions(c)
    mpp = _training_mpp(train_ds.regions, val_regions)
    if c.tile is not None:
        from .engine import check_tile

        check_tile(c.tile, c.model_config())
    if not c.resume:
        checked = train_ds.regions if c.classes is None else [*train_ds.regions, *val_regions]
        _check_train_masks(_share(ranks, checked), c.progress and (ranks is None or ranks.writer), c.classes)

    torch.manual_seed(c.seed)
    np.random.seed(c.seed % 2**32)
    random.seed(c.seed)
    model = UNet(c.model_config())
    if c.init is not None and payload is None:
        _init_weights(c, model, mpp)
    model = model.to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule_fn(c))
    run = _Run(c=c, run_dir=Path(c.out), device=device, read_workers=read_workers, train_ds=train_ds,
               val_regions=val_regions, mpp=mpp, model=model, optimizer=optimizer, scheduler=scheduler, ranks=ranks)
    if payload is not None:
        _restore(run, payload)
    if run.step >= c.steps:
        raise ConfigError(f"{run.run_dir} has already run {run.step} steps of `steps={c.steps}`; give a larger `steps`")
    run.perm = _permutation(c.seed, run.epoch, run.n_regions)
    return run


def _restore(run: _Run, payload: dict[str, Any]) -> None:
    """Continue from a checkpoint: weights, optimizer, schedule, data order, RNG states."""
    from ._runinfo import utc_now

    c = run.c
    run.model.load_state_dict(payload["state_dict"])
    run.optimizer.load_state_dict(payload["optimizer"])
    run.scheduler.load_state_dict(payload["scheduler"])
    run.step = int(payload["step"])
    order = payload["data_order"]
    run.epoch, run.position = int(order["epoch"]), int(order["position"])
    if list(_permutation(c.seed, run.epoch, run.n_regions)) != list(order["permutation"]):
        raise CheckpointError(
            f"{run.ckpt_path} was trained on a store of {len(order['permutation'])} training regions "
            f"but {c.data} now has {run.n_regions}; resume with the same regions, or start a new run"
        )
    saved_cfg = payload["train_config"]
    if (saved_cfg.get("steps"), saved_cfg.get("lr")) != (c.steps, c.lr):  # the schedule changed
        run.scheduler.base_lrs = [c.lr for _ in run.optimizer.param_groups]
        for g in run.optimizer.param_groups:
            g["initial_lr"] = c.lr
            g["lr"] = c.lr * _schedule_fn(c)(run.step)
    _set_rng_state(payload["rng"])
    run.resumes = list((payload.get("extra") or {}).get("resumes", [])) + [{"step": run.step, "time": utc_now()}]
    run.last_ckpt_step = run.step


def _open_run_dir(run: _Run) -> None:
    """Write config.json and open the logs (a resumed run drops the rows after its checkpoint)."""
    from . import __version__
    from ._runinfo import machine_info, utc_now
    from .model import count_parameters

    c = run.c
    if not run.writer:  # rank 0 writes the run folder (NOTE [Distributed training])
        run.log, run.val_log, run.logged_step = _NoLog(), _NoLog(), run.step
        return
    try:
        run.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"run folder {run.run_dir} cannot be created ({exc.strerror or exc}); "
                          "choose another `out`", cause=exc) from exc
    run.info = {
        "command": "train",
        "config": c.to_dict(),
        "gigaseg_version": __version__,
        "torch_version": torch.__version__,
        "machine": machine_info(),
        "device": str(run.device),
        "model": run.model.config.to_dict(),
        "parameters": count_parameters(run.model),
        "mpp": run.mpp,
        "train_regions": [r.name for r in run.train_ds.regions],
        "val_regions": [r.name for r in run.val_regions],
        "started": utc_now(),
        "resumes": run.resumes,
        "processes": run.ranks.size if run.ranks is not None else 1,
    }
    _write_json(run.run_dir / "config.json", run.info)
    log_path, val_path = run.run_dir / "log.csv", run.run_dir / "val.csv"
    run.history = [r for r in _read_csv(log_path) if _num(r.get("step")) <= run.step]
    val_rows = [r for r in _read_csv(val_path) if _num(r.get("step")) <= run.step]
    # a resumed run drops the rows after its checkpoint; a new one, those of a run that stopped
    # before its first checkpoint (NOTE [Restart without a checkpoint])
    log_columns, val_columns = _columns(c)
    _write_csv_atomic(log_path, log_columns, run.history)
    _write_csv_atomic(val_path, val_columns, val_rows)
    run.log = _CsvLog(log_path, log_columns)
    run.val_log = _CsvLog(val_path, val_columns)
    run.logged_step = run.step


def _columns(c: TrainConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The columns of log.csv and val.csv: a several-class run's have each class's Dice too."""
    if c.classes is None:
        return LOG_COLUMNS, _VAL_COLUMNS
    per_class = tuple(f"val_dice_{name}" for name in c.classes)
    return LOG_COLUMNS + per_class, ("step", "region", "dice", *(f"dice_{name}" for name in c.classes))


def _train_step(run: _Run) -> dict[str, Any]:
    """One Adam step on the next ``regions_per_step`` whole regions (their mean gradient); its log
    row. A Ctrl-C or SIGTERM during the update waits for it, so the run's state is always that of a
    completed step.

    Raises:
        TrainingError: the loss or a gradient is not finite (the update is not applied).
    """
    from ._memory import MemorySampler
    from ._torchrun import mean_grads
    from .engine import tiled_backward

    c = run.c
    if run.position >= run.n_regions:
        run.epoch, run.position = run.epoch + 1, 0
        run.perm = _permutation(c.seed, run.epoch, run.n_regions)
    regions, after = _step_regions(run)
    # under torchrun this rank's group trains on one of the K regions; one process takes all K in turn
    mine = [regions[run.ranks.group_index]] if run.ranks is not None else regions
    names = [run.train_ds.regions[index].name for index, _ in regions]
    lr = run.optimizer.param_groups[0]["lr"]
    t0 = time.perf_counter()
    with MemorySampler(0.05) as mem:
        run.optimizer.zero_grad(set_to_none=True)
        losses = []
        for index, epoch in mine:  # each adds its region's gradient to .grad
            sample = run.train_ds.sample(index, epoch)
            losses.append(tiled_backward(run.model, sample.image, sample.mask, loss=c.loss,
                                         memory_budget=c.memory_budget, tile=c.tile, device=run.device,
                                         progress=c.progress and run.writer, read_workers=run.read_workers,
                                         **_engine_groups(run)))
        loss = losses[0] if len(losses) == 1 else math.fsum(losses) / len(losses)
        if run.ranks is not None:  # K regions: the mean of their losses and gradients
            loss = run.ranks.mean_loss(loss)
            run.ranks.mean_grads(run.model)
        else:  # one process, K regions in turn: the mean of their gradients
            mean_grads(run.model, len(losses))
        row = {"step": run.step + 1, "loss": loss, "lr": lr, "epoch": run.epoch, "region": "+".join(names)}
        if not (math.isfinite(loss) and _grads_finite(run.model)):
            run.log.write(row)
            raise _not_finite(run, row)
        run.unlogged = row
        with _deferred_interrupt():
            run.optimizer.step()
            run.scheduler.step()
            run.step += 1
            if after[0] != run.epoch:
                run.perm = _permutation(c.seed, after[0], run.n_regions)
            run.epoch, run.position = after
    seconds = time.perf_counter() - t0
    return {"step": run.step, "loss": loss, "lr": lr, "seconds_per_step": round(seconds, 4),
            "peak_anon_bytes": mem.peak, "epoch": row["epoch"], "region": row["region"]}


# NOTE [Tiling advice]
# The default memory budget (1 GiB) is what lets a gigapixel region train on a laptop. But a
# model's halo grows with its depth and strides, and for a deep model the tiles that fit in 1 GiB
# can be small beside their halo: a 2048 x 2048 region under a model of total stride 128 (halo 513)
# is cut into 16 x 16 tiles of 128 pixels, and each step computes 71 times the region's pixels,
# 90 times slower than the region in one piece (2.1 GiB). Nothing is wrong with that (the gradient
# is exact either way), but it is silent; so before the first step the run says how many times it
# recomputes and the budget that would take the largest region at once (the planner's prediction,
# plus a tenth, rounded up to a quarter GiB), and leaves the choice to the user, who knows what
# else the machine runs. Not under torchrun, where the ranks share tiles and the plan differs.
#: A step that recomputes more than this many times its region's pixels gets tiling advice.
SLOW_RECOMPUTE = 3.0


def _tiling_advice(run: _Run) -> str | None:
    """Advice when the memory budget makes each step recompute its region many times (NOTE [Tiling
    advice]); None when it does not, when a tile was given, or under torchrun."""
    from ._units import format_bytes, parse_bytes
    from .engine import DEFAULT_MEMORY_BUDGET, plan

    c = run.c
    if c.tile is not None or run.ranks is not None or not run.n_regions:
        return None
    h, w = max((r.shape[:2] for r in run.train_ds.regions), key=lambda hw: hw[0] * hw[1])
    budget = c.memory_budget if c.memory_budget is not None else DEFAULT_MEMORY_BUDGET
    try:
        now = plan(run.model, h, w, memory_budget=budget, device=run.device)
    except GigasegError:  # no tile fits, or a model the planner cannot read: the first step says so
        return None
    if now.recompute <= SLOW_RECOMPUTE:
        return None
    whole = plan(run.model, h, w, memory_budget=2**62, device=run.device)
    need = math.ceil(whole.predicted_peak_bytes * 1.1 / 2**28) / 4  # GiB, up to the next quarter
    return (f"with a memory budget of {format_bytes(parse_bytes(budget))} the {h} x {w} regions are trained "
            f"in {now.grid[0]} x {now.grid[1]} tiles of {now.tile[0]} x {now.tile[1]} pixels, each recomputed with "
            f"the model's {now.halo}-pixel halo: {now.recompute:.1f} times the region's pixels per step. One "
            f"region at once needs about {format_bytes(whole.predicted_peak_bytes)}: give --memory-budget "
            f"{need:g}GiB (memory_budget='{need:g}GiB') if the machine has it, for steps about "
            f"{now.recompute:.0f} times faster")


def _step_regions(run: _Run) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """The step's ``regions_per_step`` (region index, epoch): the next ones of the stream a
    single process takes one per step; and the (epoch, position) after them."""
    epoch, position = run.epoch, run.position
    out = []
    for _ in range(run.c.regions_per_step):
        if position >= run.n_regions:
            epoch, position = epoch + 1, 0
        out.append((int(_permutation(run.c.seed, epoch, run.n_regions)[position]), epoch))
        position += 1
    return out, (epoch, position)


def _not_finite(run: _Run, row: dict[str, Any]) -> TrainingError:
    c, loss = run.c, row["loss"]
    where = (f"the last good checkpoint {run.ckpt_path} (step {run.last_ckpt_step}) is kept; resume from "
             f"it with a lower learning rate: `resume={str(run.run_dir)!r}` and `lr={c.lr / 10:g}` (resume_config)"
             if run.last_ckpt_step is not None else
             f"no checkpoint was written yet; start again with a lower learning rate, e.g. `lr={c.lr / 10:g}`")
    what = "loss" if not math.isfinite(loss) else "gradient"
    return TrainingError(
        f"the training {what} is not finite at step {row['step']} (loss {loss}, region "
        f"{row['region']!r}, epoch {row['epoch']}, lr {row['lr']:.3g}); training stopped; {where}"
    )


def _validate(run: _Run) -> dict[str, Any]:
    """Dice of every held-out region, into val.csv; the log row's validation columns."""
    c = run.c
    t_val = time.perf_counter()
    mine = _share(run.ranks, range(len(run.val_regions)), [r.shape[0] * r.shape[1] for r in run.val_regions])
    with _agreed(run.ranks, "validating"):
        rows = evaluate_regions(run.model, [run.val_regions[i] for i in mine], threshold=c.threshold,
                                memory_budget=c.memory_budget, tile=c.tile, device=run.device,
                                progress=c.progress and run.writer, read_workers=run.read_workers,
                                classes=c.classes)
    run.last_val = rows if run.ranks is None else _gathered(run, mine, rows)
    for r in run.last_val:
        run.val_log.write({"step": run.step, **r})
    mean, sd = _mean_sd([r["dice"] for r in run.last_val])
    seconds = round(time.perf_counter() - t_val, 2)
    out: dict[str, Any] = {"val_dice_mean": mean, "val_dice_sd": sd, "val_seconds": seconds}
    if c.classes is not None:  # each class's Dice over all the validation regions
        for name, dice in pooled_class_dice(run.last_val, c.classes).items():
            out[f"val_dice_{name}"] = "" if dice is None else dice
    return out


def _save(run: _Run) -> None:
    """Checkpoint the run's current step (atomically: the previous checkpoint stays until then)."""
    from .checkpoint import save_checkpoint

    c = run.c
    if not run.writer:
        run.last_ckpt_step = run.step
        return
    try:
        save_checkpoint(
            run.ckpt_path, run.model, mpp=run.mpp, step=run.step, optimizer=run.optimizer.state_dict(),
            scheduler=run.scheduler.state_dict(), rng=_rng_state(),
            data_order={"epoch": run.epoch, "position": run.position,
                        "permutation": [int(v) for v in _permutation(c.seed, run.epoch, run.n_regions)]},
            train_config=c.to_dict(),
            **({} if c.classes is None else {"classes": list(c.classes)}),
            extra={"resumes": run.resumes, "val": run.last_val,
                   "loss": run.history[-1]["loss"] if run.history else None},
        )
    except CheckpointWriteError as exc:
        raise CheckpointWriteError(f"{exc}; training stopped after step {run.step}", cause=exc) from exc
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; training stopped after step {run.step}") from exc
    run.last_ckpt_step = run.step


def _log(run: _Run, row: dict[str, Any]) -> None:
    run.history.append(row)
    run.log.write(row)
    run.logged_step = run.step


def _show(bar: Any, row: dict[str, Any], running: float) -> None:
    postfix = {"loss": f"{running:.4f}", "lr": f"{row['lr']:.2g}"}
    if "val_dice_mean" in row:
        postfix["val_dice"] = f"{row['val_dice_mean']:.4f}"
    bar.set_postfix(postfix, refresh=False)
    bar.update(1)


def _stop(run: _Run, why: str = "interrupted") -> None:
    """After Ctrl-C or SIGTERM (or, under torchrun, when another rank failed or stopped): log and
    checkpoint the last completed step, say how to resume."""
    if not run.writer:
        return
    if run.logged_step < run.step:  # interrupted between the update and the log row
        _log(run, run.unlogged)
    if run.last_ckpt_step != run.step:
        _save(run)
    plot_curves(run.history, run.run_dir / "curves.png")
    print(f"\ngigaseg train: {why}; saved step {run.step} of {run.c.steps} to {run.ckpt_path}. "
          f"Continue with: gigaseg train --resume {run.run_dir}", file=sys.stderr)


def _summary(run: _Run, seconds: float) -> dict[str, Any]:
    """``train``'s result, also written into config.json."""
    from ._runinfo import utc_now
    from .model import count_parameters

    history = run.history
    step_times = [_num(r.get("seconds_per_step")) for r in history if math.isfinite(_num(r.get("seconds_per_step")))]
    peaks = [_num(r.get("peak_anon_bytes")) for r in history if math.isfinite(_num(r.get("peak_anon_bytes")))]
    mean, sd = _mean_sd([r["dice"] for r in run.last_val])
    result = {
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.ckpt_path),
        "step": run.step,
        "steps": run.c.steps,
        "loss": _num(history[-1]["loss"]) if history else None,
        "val_dice_mean": mean if run.last_val else None,
        "val_dice_sd": sd if run.last_val else None,
        "val_dice": {r["region"]: r["dice"] for r in run.last_val},
        "seconds": seconds,
        "seconds_per_step": statistics.median(step_times) if step_times else None,
        "peak_anon_bytes": int(max(peaks)) if peaks else None,
        "mpp": run.mpp,
        "device": str(run.device),
        "parameters": count_parameters(run.model),
        "processes": run.ranks.size if run.ranks is not None else 1,
        "rank": run.ranks.rank if run.ranks is not None else 0,
    }
    if run.c.classes is not None:
        pooled = pooled_class_dice(run.last_val, run.c.classes) if run.last_val else {}
        result["classes"] = list(run.c.classes)
        result["val_class_dice"] = pooled
        result["val_class_dice_mean"] = _mean_defined(list(pooled.values())) if pooled else None
    if run.writer:
        run.info["finished"] = utc_now()
        run.info["result"] = result
        _write_json(run.run_dir / "config.json", run.info)
    return result


KEPT_DIR = "checkpoints"
"""The folder of a run that holds the checkpoints kept every ``keep_every`` steps (step-N.pt)."""


def _keep(run: _Run) -> None:
    """Keep the checkpoint just written as ``checkpoints/step-N.pt``: a hard link where the file
    system allows it (the next save replaces checkpoint.pt by a new file, so the link keeps this
    one), else a copy, made whole or not at all (``link_or_copy``, NOTE [Temporary files])."""
    if not run.writer:
        return
    kept = run.run_dir / KEPT_DIR
    dst = kept / f"step-{run.step}.pt"
    try:
        kept.mkdir(exist_ok=True)
        link_or_copy(run.ckpt_path, dst)
    except OSError as exc:
        reason = exc.__cause__ if isinstance(exc, OutputError) and exc.__cause__ is not None else exc
        raise CheckpointWriteError(f"cannot keep the checkpoint of step {run.step} as {dst} "
                                   f"({getattr(reason, 'strerror', None) or reason}); training stopped after step "
                                   f"{run.step}: free disk space, then continue it "
                                   f"(gigaseg train --resume {run.run_dir})", cause=exc) from exc


def _due(every: int, step: int) -> bool:
    return bool(every) and step % every == 0


# --- the loop ------------------------------------------------------------------------------------------


def train(config: TrainConfig) -> dict[str, Any]:
    """Train a U-Net on whole regions of a store; see the module docstring. Under torchrun
    (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set) the processes train together
    (NOTE [Distributed training]); each returns the summary.

    Returns:
        A summary: ``run_dir``, ``checkpoint``, ``step``, ``steps``, ``loss`` (last step),
        ``val_dice_mean``, ``val_dice_sd``, ``val_dice`` (per region), ``seconds``,
        ``seconds_per_step`` (median), ``peak_anon_bytes`` (max over steps), ``mpp``, ``device``.

    Raises:
        ConfigError, StoreError, InputError: bad options or data, before any training.
        TrainingError: a NaN or infinite loss or gradient; the last checkpoint is kept.
        CheckpointError: a checkpoint could not be written; the previous one is kept.
        KeyboardInterrupt: after saving the last completed step (resume with ``--resume``).
        DistributedError: under torchrun, when another rank failed (it raises its own error).
    """
    from ._torchrun import start_ranks

    config.check()
    ranks = start_ranks(config.regions_per_step, config.device)
    try:
        return _train(config, ranks)
    except BaseException as exc:
        if ranks is not None:  # the others stop at once instead of after the timeout (NOTE [Rank faults])
            ranks.announce_exit(exc)
        raise
    finally:
        if ranks is not None:
            ranks.close()


def _train(config: TrainConfig, ranks: Any) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from ._memory import trim_heap

    with _agreed(ranks, "checking the options and the data"):
        c, payload = _resolved(config)
        run = _setup(c, payload, ranks)
    if ranks is not None:
        ranks.broadcast_parameters(run.model)
    with _agreed(ranks, "opening the run folder"):
        _open_run_dir(run)
    if not run.val_regions and run.writer:
        print(f"gigaseg train: no validation regions (no 'val' split in {c.data} and no --val-data); "
              "training without validation", file=sys.stderr)
    if run.writer and (advice := _tiling_advice(run)):
        print(f"gigaseg train: {advice}", file=sys.stderr)
    t_start = last_plot = time.perf_counter()
    bar = tqdm(total=c.steps, initial=run.step, desc="train", unit="step", disable=not (c.progress and run.writer),
               dynamic_ncols=True)
    running = None
    # The steps' peak memory counts from here: what earlier work in this process (making the
    # data, as the demo does) freed but the allocator kept is handed back first.
    trim_heap()
    with _sigterm_as_interrupt():
        try:
            while run.step < c.steps:
                row = _train_step(run)
                final = run.step == c.steps
                if run.val_regions and (_due(c.val_every, run.step) or final):
                    row.update(_validate(run))
                with _agreed(ranks, "writing the logs and the checkpoint"):  # rank 0's work
                    _log(run, row)
                    keep = _due(c.keep_every, run.step)
                    if _due(c.ckpt_every, run.step) or final or keep:
                        _save(run)
                    if keep:
                        _keep(run)
                    running = row["loss"] if running is None else 0.9 * running + 0.1 * row["loss"]
                    _show(bar, row, running)
                    if run.writer and ("val_dice_mean" in row or final or time.perf_counter() - last_plot > 60):
                        plot_curves(run.history, run.run_dir / "curves.png")
                        last_plot = time.perf_counter()
        except KeyboardInterrupt:
            bar.close()
            with _signals(_ignore_signal):  # a second Ctrl-C, or torchrun's SIGTERM, waits for the save
                _stop(run)
            raise
        except DistributedError:  # another rank failed, stopped or was interrupted: keep what this one has
            bar.close()
            try:
                with _signals(_ignore_signal):  # torchrun stops the others when one fails: not mid-save
                    _stop(run, "stopped because another rank did (see below)")
            except Exception as exc:  # noqa: BLE001 - the first error is the one to raise
                print(f"gigaseg train: could not save the last step: {exc}", file=sys.stderr)
            raise
        finally:
            bar.close()
            run.log.close()
            run.val_log.close()
    return _summary(run, time.perf_counter() - t_start)


# --- under torchrun: small helpers (NOTE [Distributed training] in gigaseg._torchrun) ----------------


class _NoLog:
    """The logs of a rank that does not write them (all but rank 0)."""

    def write(self, row: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _agreed(ranks: Any, what: str) -> Any:
    """``ranks.agreed(what)`` (every rank raises if one fails in the block), or nothing for one process."""
    return contextlib.nullcontext() if ranks is None else ranks.agreed(what)


def _engine_groups(run: _Run) -> dict[str, Any]:
    """``tiled_backward``'s process groups for this rank; none for one process."""
    return {} if run.ranks is None else run.ranks.engine_groups()


def _share(ranks: Any, items: Sequence, costs: Sequence[int] | None = None) -> list:
    """This rank's share of ``items`` (all of them for one process), split by ``costs``
    (default: region pixels)."""
    if ranks is None:
        return list(items)
    costs = costs if costs is not None else [r.shape[0] * r.shape[1] for r in items]
    return [items[i] for i in ranks.share(costs)]


def _gathered(run: _Run, mine: Sequence[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every validation region's row from each rank's ``rows`` of its regions ``mine``: their
    Dice counts summed over the ranks (integers: the Dice is the single process's exactly)."""
    classes = run.c.classes
    if classes is not None:  # [I, P, R] of each class, flattened
        flat = [[0] * (3 * len(classes)) for _ in run.val_regions]
        for i, r in zip(mine, rows):
            flat[i] = [int(v) for row in r["counts"] for v in row]
        return [_class_row(region.name, [row[k:k + 3] for k in range(0, len(row), 3)], classes)
                for region, row in zip(run.val_regions, run.ranks.sum_counts(flat))]
    counts = [[0, 0, 0] for _ in run.val_regions]
    for i, r in zip(mine, rows):
        counts[i] = [r["intersection"], r["predicted"], r["reference"]]
    return [{"region": region.name, "dice": _dice_of(*row), "intersection": row[0], "predicted": row[1],
             "reference": row[2]} for region, row in zip(run.val_regions, run.ranks.sum_counts(counts))]
