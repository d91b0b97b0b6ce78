"""Segmentation metrics: Dice, IoU, precision, recall of predicted masks against references.

Metrics count pixels of a predicted mask against a reference mask at the reference's
resolution; reference pixels of value 255 are ignored. Masks load from mask TIFFs
(``gigaseg predict`` output: the pyramid level closest above the reference size is
read), PNG/JPEG and other images, and ``.npy`` (bool or integers).

Example::

    from gigaseg.metrics import evaluate_pairs
    report = evaluate_pairs(["out/a.mask.tiff"], ["ref/a.npy"])
    print(report["mean"]["dice"], report["sd"]["dice"])
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ._deps import require
from .errors import ConfigError, GigasegError, InputError
from .options import METRICS

__all__ = [
    "METRICS",
    "confusion_counts",
    "scores",
    "load_mask",
    "resize_nearest",
    "evaluate_pair",
    "evaluate_pairs",
]

IGNORE = 255


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> dict[str, int]:
    """TP, FP, FN, TN and ignored pixel counts of a 0/1 ``pred`` against ``ref`` (0, 1, 255 = ignore)."""
    if pred.shape != ref.shape:
        raise InputError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    valid = ref != IGNORE
    p = pred.astype(bool) & valid
    r = (ref == 1) & valid
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~p & r))
    n = int(np.count_nonzero(valid))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": n - tp - fp - fn, "ignored": int(ref.size - n)}


def scores(c: dict[str, int]) -> dict[str, float | None]:
    """Dice, IoU, precision, recall from counts. An empty prediction and reference score 1 for
    Dice and IoU; precision (recall) is None when nothing is predicted (present)."""
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0,
        "iou": tp / (tp + fp + fn) if (tp + fp + fn) else 1.0,
        "precision": tp / (tp + fp) if (tp + fp) else None,
        "recall": tp / (tp + fn) if (tp + fn) else None,
    }


# --- loading masks ---------------------------------------------------------------------------


def _tiff_levels(path: Path):
    tifffile = require("tifffile", "reading TIFF masks")
    tif = tifffile.TiffFile(path)
    levels = [p for p in tif.series[0].levels] if tif.series else []
    return tif, levels


def load_mask(path: str | os.PathLike, *, min_size: tuple[int, int] | None = None,
              threshold: float = 0.5, reference: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """Load a mask as (h, w) uint8 0/1 (references keep 255 = ignore).

    Args:
        path: .npy, a TIFF (pyramidal: the smallest level at least ``min_size``), or an image.
        min_size: (w, h) the caller will sample to; picks a TIFF pyramid level.
        threshold: values other than 0/1/255 (probability masks) count as tissue when
            value / 255 >= threshold.
        reference: keep 255 as ignore (reference masks); else 255 is tissue.

    Returns:
        (mask, full (w, h)): the mask and the size of the file's full-resolution level.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask {path} does not exist; check the path")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            full = (a.shape[1], a.shape[0]) if a.ndim >= 2 else None
        elif suffix in (".tif", ".tiff"):
            tif, levels = _tiff_levels(path)
            with tif:
                if not levels:
                    raise InputError(f"mask {path}: the TIFF holds no image")
                shape0 = levels[0].shape
                full = (shape0[1], shape0[0])
                pick = levels[0]
                if min_size is not None:
                    for lv in levels:
                        if lv.shape[1] >= min_size[0] and lv.shape[0] >= min_size[1]:
                            pick = lv
                a = pick.asarray()
        else:
            require("PIL", "reading image masks")
            from PIL import Image

            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as im:
                    if im.mode not in ("L", "1", "P", "I", "I;16"):
                        im = im.convert("RGB")
                    a = np.asarray(im)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
            full = (a.shape[1], a.shape[0])
    except GigasegError:
        raise
    except Exception as exc:  # the readers raise many types
        raise InputError(
            f"mask {path} cannot be read ({type(exc).__name__}: {exc}); give a .npy, TIFF or PNG mask"
        ) from exc
    if a.ndim == 3:
        a = a[..., 0]
    if a.ndim != 2:
        raise InputError(f"mask {path} has shape {a.shape}; a mask is a 2-D (H, W) array")
    if a.dtype == bool:
        return a.astype(np.uint8), full
    if not np.issubdtype(a.dtype, np.integer):
        a = np.round(np.clip(a.astype(np.float64), 0, 1) * 255).astype(np.uint8)
        return (a >= round(255 * threshold)).astype(np.uint8), full
    values = np.unique(a[:: max(1, a.shape[0] // 512), :: max(1, a.shape[1] // 512)])
    if reference:
        if np.all(np.isin(values, (0, 1, 255))) and np.all(np.isin(np.unique(a), (0, 1, 255))):
            return a.astype(np.uint8), full
        raise InputError(
            f"reference mask {path} has values {np.unique(a)[:8].tolist()}...; a reference holds 0 (background), "
            "1 (tissue) and 255 (ignore)"
        )
    if np.all(np.isin(np.unique(a), (0, 1))):
        return a.astype(np.uint8), full
    if np.all(np.isin(np.unique(a), (0, 255))):
        return (a == 255).astype(np.uint8), full
    return (a.astype(np.float64) >= round(255 * threshold)).astype(np.uint8), full


def resize_nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``a`` (h, w) resampled to ``size`` (w, h): each output pixel takes the input pixel under its centre."""
    w, h = size
    gy = np.clip(np.floor((np.arange(h) + 0.5) * a.shape[0] / h).astype(np.int64), 0, a.shape[0] - 1)
    gx = np.clip(np.floor((np.arange(w) + 0.5) * a.shape[1] / w).astype(np.int64), 0, a.shape[1] - 1)
    return a[gy][:, gx]


def _check_aspect(pred_path, pred_full, ref_path, ref_size) -> None:
    pw, ph = pred_full
    rw, rh = ref_size
    # masks made at 1/k scale round each side to whole pixels: allow the aspect-ratio error
    # that half a pixel of rounding on each side of either mask can make, plus 1%
    tolerance = 1.0 / min(pw, ph) + 1.0 / min(rw, rh) + 0.01
    if abs((pw / ph) / (rw / rh) - 1.0) > tolerance:
        raise InputError(
            f"prediction {pred_path} ({pw} x {ph}, w x h) and reference {ref_path} ({rw} x {rh}) have different "
            f"aspect ratios ({pw / ph:.4f} vs {rw / rh:.4f}): they do not cover the same area; pair each "
            "prediction with the reference of the same slide (same order)"
        )


def evaluate_pair(pred_path: str | os.PathLike, ref_path: str | os.PathLike, *, threshold: float = 0.5) -> dict:
    """Scores of one prediction against one reference, at the reference's resolution."""
    ref, ref_full = load_mask(ref_path, reference=True)
    rh, rw = ref.shape
    pred, pred_full = load_mask(pred_path, min_size=(rw, rh), threshold=threshold)
    _check_aspect(pred_path, pred_full, ref_path, (rw, rh))
    resampled = False
    if pred.shape != ref.shape:
        warnings.warn(
            f"{pred_path} ({pred_full[0]} x {pred_full[1]}) and {ref_path} ({rw} x {rh}) differ in resolution: "
            f"comparing at the reference's, nearest neighbour",
            stacklevel=2,
        )
        pred = resize_nearest(pred, (rw, rh))
        resampled = True
    c = confusion_counts(pred, ref)
    return {"prediction": str(pred_path), "reference": str(ref_path), "size": [rw, rh],
            "prediction_size": list(pred_full), "resampled": resampled, **c, **scores(c)}


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return None, None
    mean = float(np.mean(v))
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return mean, sd


def evaluate_pairs(preds: Iterable, refs: Iterable, *, threshold: float = 0.5) -> dict:
    """Per-pair scores and their mean and sample standard deviation (ddof=1) over the set."""
    preds, refs = list(preds), list(refs)
    if len(preds) != len(refs):
        raise ConfigError(f"{len(preds)} predictions but {len(refs)} references: give one reference (`refs`) per "
                          "prediction (`preds`), in order")
    if not preds:
        raise ConfigError("no prediction to evaluate: give prediction files (`preds`) and as many references (`refs`)")
    rows = [evaluate_pair(p, r, threshold=threshold) for p, r in zip(preds, refs)]
    mean, sd = {}, {}
    for k in METRICS:
        mean[k], sd[k] = _mean_sd([r[k] for r in rows])
    return {"n": len(rows), "threshold": threshold, "per_slide": rows, "mean": mean, "sd": sd}


def write_csv(path: Path, report: dict) -> None:
    import csv

    cols = ["prediction", "reference", *METRICS, "tp", "fp", "fn", "tn", "ignored", "resampled"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in report["per_slide"]:
            w.writerow([r[c] if r[c] is not None else "" for c in cols])
        for name in ("mean", "sd"):
            w.writerow([name, ""] + [("" if report[name][k] is None else report[name][k]) for k in METRICS]
                       + [""] * 6)
