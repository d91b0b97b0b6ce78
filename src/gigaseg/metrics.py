"""Segmentation metrics: Dice, IoU, precision, recall of predicted masks against references.

Metrics count pixels of a predicted mask against a reference mask at the reference's
resolution; ignored reference pixels (255 of a 0/1/255 reference) are left out. Masks load
from mask TIFFs (``gigaseg predict`` output: the pyramid level closest above the reference
size is read), PNG/JPEG and other images, and ``.npy`` (bool or integers). Their values are
read by a fixed rule, and what it cannot settle is refused (NOTE [Mask values]).

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
from typing import IO, Any

import numpy as np

from ._deps import require
from .errors import ConfigError, GigasegError, InputError
from .options import (
    DEFAULT_REFERENCE_VALUES,
    DEFAULT_THRESHOLD,
    METRICS,
    REFERENCE_VALUES,
    check_choice,
    check_number,
)

__all__ = [
    "METRICS",
    "REFERENCE_VALUES",
    "confusion_counts",
    "scores",
    "load_mask",
    "load_reference",
    "load_prediction",
    "evaluation_paths",
    "write_evaluation",
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


# NOTE [Mask values]
# A mask file's numbers mean different things in different tools: 0/1 (tissue 1), 0/255 (a
# binary image, tissue 255), 0/1/255 (gigaseg's references: 255 = ignore), round(255 p) (a
# probability mask). Reading one as another gives a score that looks fine and is wrong (a 0/255
# reference read as 0/1/255 is all "ignore": Dice 0, or 1 against itself). So the reading is
# decided by a fixed rule from the values the file holds (all of them, not a sample) and the
# file's kind, it is recorded in the report, and what the rule cannot settle is refused with
# the question spelled out.
#
# References (``reference_values``):
#   "auto"     bool: 0/1. Values in {0, 1} or {0, 1, 255} with a 1: 0/1/255 (255 = ignore).
#              Values in {0, 255} with a 255 and no 1: gigaseg's own mask TIFF (``gigaseg predict``
#              and ``baseline``, ImageDescription "gigaseg tissue mask") is 0/255 = background/tissue;
#              any other file is ambiguous (a binary 0/255 image, or background and ignore
#              pixels?) and refused, naming both readings and the option that chooses.
#   "0/1/255"  0 background, 1 tissue, 255 ignore.
#   "0/255"    0 background, 255 tissue (a file holding a 1 is refused).
#   Any other value (2..254, negative, above 255, fractions) is refused with the values seen.
# Predictions (no ignore value):
#   bool: 0/1. gigaseg's mask TIFF: round(255 p), tissue when >= round(255 threshold) (its 0/255
#   masks and its --probabilities masks alike). Integers: {0, 1}: 0/1; {0, 255}: 0/255; 0, 1 and
#   255 together (a reference's layout, with ignore) refused; any other values in 0..255 a
#   probability mask round(255 p), thresholded. Floats: probabilities in [0, 1], thresholded;
#   anything outside [0, 1] or NaN refused.

#: The ImageDescription of gigaseg's mask TIFFs (gigaseg._writers.write_mask_tiff).
_GIGASEG_MASK = "gigaseg tissue mask"


def _tiff_levels(path: Path) -> tuple[Any, list[Any], bool]:
    tifffile = require("tifffile", "reading TIFF masks")
    tif = tifffile.TiffFile(path)
    levels = [p for p in tif.series[0].levels] if tif.series else []
    description = tif.pages[0].description if len(tif.pages) else ""
    return tif, levels, str(description).startswith(_GIGASEG_MASK)


def _read(path: Path, min_size: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int], bool]:
    """(the mask's array as stored, the (w, h) of its full resolution, whether it is gigaseg's mask TIFF)."""
    from ._files import check_input

    check_input(path, "mask")  # a FIFO or a device: refused by name (NOTE [Special files])
    suffix = path.suffix.lower()
    ours = False
    try:
        if suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            full = (a.shape[1], a.shape[0]) if a.ndim >= 2 else (0, 0)
        elif suffix in (".tif", ".tiff"):
            tif, levels, ours = _tiff_levels(path)
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
    if a.size == 0:  # a 0 x 0 reference divided by zero in the aspect check
        raise InputError(f"mask {path} is empty ({a.shape[1]} x {a.shape[0]} pixels); check that it is the right file")
    return a, full, ours


def _values(a: np.ndarray) -> np.ndarray:
    """The distinct values of ``a``, sorted (all of them: the whole array is counted)."""
    if a.dtype == np.uint8:
        return np.flatnonzero(np.bincount(a.ravel(), minlength=256))
    return np.unique(a)


def _shown(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:8].tolist())
    return shown + (f", ... ({len(values)} values)" if len(values) > 8 else "")


def load_reference(path: str | os.PathLike[str], *,
                   values: str = DEFAULT_REFERENCE_VALUES) -> tuple[np.ndarray, tuple[int, int], str]:
    """Load a reference mask as (h, w) uint8 0/1 with 255 = ignore, by NOTE [Mask values].

    Args:
        path: .npy, a TIFF (full resolution) or an image.
        values: how to read the file's values: "auto", "0/1/255" or "0/255".

    Returns:
        (mask, full (w, h), the reading used: "0/1/255" or "0/255").

    Raises:
        InputError: values that no reading allows, or (``values="auto"``) 0/255 values that
            could be either reading.
    """
    check_choice("reference_values", values, REFERENCE_VALUES)
    path = Path(path)
    a, full, ours = _read(path, None)
    if a.dtype == bool:
        return a.astype(np.uint8), full, "0/1/255"
    seen = _values(a)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isin(seen, (0, 1, 255))):
            raise InputError(
                f"reference mask {path} holds {a.dtype} values {_shown(seen)}; a reference holds whole numbers: "
                "0 (background), 1 (tissue), 255 (ignore), or 0/255 for background/tissue; threshold it "
                "(e.g. mask > 0.5) and save it as integers"
            )
        a = a.astype(np.uint8)
    present = set(seen.tolist())
    if not present <= {0, 1, 255}:
        bad = sorted(present - {0, 1, 255})
        raise InputError(
            f"reference mask {path} holds the values {_shown(np.asarray(bad))} besides 0/1/255; a reference holds "
            "0 (background), 1 (tissue) and 255 (ignore), or 0 and 255 (background, tissue): threshold it "
            "(e.g. mask > 127) and save it again"
        )
    reading = values
    if values == "auto":
        if 1 in present or 255 not in present:
            reading = "0/1/255"
        elif ours:
            reading = "0/255"  # gigaseg's own mask TIFF: 0 background, 255 tissue
        else:
            ignored = float(np.count_nonzero(a == 255)) / max(1, a.size)
            raise InputError(
                f"reference mask {path} holds only 0 and 255, which reads two ways: as a binary image "
                f"(255 = tissue) or as background and ignore pixels (255 = ignore: {ignored:.1%} of it ignored and "
                "no tissue at all). Say which: `reference_values='0/255'` (255 = tissue) or "
                "`reference_values='0/1/255'` (255 = ignore)"
            )
    if reading == "0/255":
        if 1 in present:
            raise InputError(
                f"reference mask {path} holds 1s, which a 0/255 mask (255 = tissue) does not: it reads as 0/1/255 "
                "(1 = tissue, 255 = ignore); give `reference_values='0/1/255'` or 'auto'"
            )
        return (a == 255).astype(np.uint8), full, "0/255"
    return np.ascontiguousarray(a, dtype=np.uint8), full, "0/1/255"


def load_prediction(path: str | os.PathLike[str], *, min_size: tuple[int, int] | None = None,
                    threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, tuple[int, int], str]:
    """Load a predicted mask as (h, w) uint8 0/1, by NOTE [Mask values].

    Args:
        path: .npy, a TIFF (pyramidal: the smallest level at least ``min_size``), or an image.
        min_size: (w, h) the caller will sample to; picks a TIFF pyramid level.
        threshold: a probability mask's tissue is p >= threshold (round(255 p) >=
            round(255 threshold) on uint8 masks).

    Returns:
        (mask, full (w, h), the reading used: "0/1", "0/255" or "probability").
    """
    check_number("threshold", threshold)
    path = Path(path)
    a, full, ours = _read(path, min_size)
    thr_u8 = round(255 * threshold)
    if a.dtype == bool:
        return a.astype(np.uint8), full, "0/1"
    if ours and a.dtype == np.uint8:
        return (a >= thr_u8).astype(np.uint8), full, "probability"
    seen = _values(a)
    if not np.issubdtype(a.dtype, np.integer):
        if seen.size and not (np.all(np.isfinite(seen)) and seen[0] >= 0 and seen[-1] <= 1):
            raise InputError(
                f"predicted mask {path} holds {a.dtype} values {_shown(seen)}; a floating-point mask holds "
                "probabilities in [0, 1]: scale it (e.g. mask / 255) or save it as integers"
            )
        a8 = np.round(a.astype(np.float64) * 255)
        return (a8 >= thr_u8).astype(np.uint8), full, "probability"
    present = set(seen.tolist())
    if present <= {0, 1}:
        return a.astype(np.uint8), full, "0/1"
    if present <= {0, 255}:
        return (a == 255).astype(np.uint8), full, "0/255"
    if seen[0] < 0 or seen[-1] > 255:
        raise InputError(
            f"predicted mask {path} holds the values {_shown(seen)}; a mask holds 0/1, 0/255 or probabilities "
            "round(255 p) in 0..255"
        )
    if present <= {0, 1, 255}:
        raise InputError(
            f"predicted mask {path} holds 0, 1 and 255, the layout of a reference with ignore pixels; a prediction "
            "has no ignore value: give the predicted mask (0/1, 0/255 or probabilities round(255 p)), or check "
            "that predictions and references are not swapped"
        )
    return (a >= thr_u8).astype(np.uint8), full, "probability"


def load_mask(path: str | os.PathLike[str], *, min_size: tuple[int, int] | None = None,
              threshold: float = DEFAULT_THRESHOLD, reference: bool = False,
              reference_values: str = DEFAULT_REFERENCE_VALUES) -> tuple[np.ndarray, tuple[int, int]]:
    """Load a mask as (h, w) uint8 0/1 (references keep 255 = ignore): ``load_reference`` with
    ``reference`` (and ``reference_values``), else ``load_prediction``. Returns (mask, full (w, h))."""
    if reference:
        mask, full, _ = load_reference(path, values=reference_values)
    else:
        mask, full, _ = load_prediction(path, min_size=min_size, threshold=threshold)
    return mask, full


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


def evaluate_pair(pred_path: str | os.PathLike[str], ref_path: str | os.PathLike[str], *,
                  threshold: float = DEFAULT_THRESHOLD,
                  reference_values: str = DEFAULT_REFERENCE_VALUES) -> dict[str, Any]:
    """Scores of one prediction against one reference, at the reference's resolution.

    The masks' values are read by NOTE [Mask values]; the readings used are in the result
    (``reference_values``, ``prediction_values``).
    """
    ref, ref_full, ref_reading = load_reference(ref_path, values=reference_values)
    rh, rw = ref.shape
    pred, pred_full, pred_reading = load_prediction(pred_path, min_size=(rw, rh), threshold=threshold)
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
            "prediction_size": list(pred_full), "resampled": resampled, "reference_values": ref_reading,
            "prediction_values": pred_reading, **c, **scores(c)}


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return None, None
    mean = float(np.mean(v))
    sd = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return mean, sd


def evaluate_pairs(preds: Iterable[str | os.PathLike[str]], refs: Iterable[str | os.PathLike[str]], *,
                   threshold: float = DEFAULT_THRESHOLD,
                   reference_values: str = DEFAULT_REFERENCE_VALUES) -> dict[str, Any]:
    """Per-pair scores and their mean and sample standard deviation (ddof=1) over the set.

    ``threshold`` and ``reference_values`` are checked before any mask is read; see
    ``evaluate_pair``.
    """
    preds, refs = list(preds), list(refs)
    check_number("threshold", threshold)
    check_choice("reference_values", reference_values, REFERENCE_VALUES)
    if len(preds) != len(refs):
        raise ConfigError(f"{len(preds)} predictions but {len(refs)} references: give one reference (`refs`) per "
                          "prediction (`preds`), in order")
    if not preds:
        raise ConfigError("no prediction to evaluate: give prediction files (`preds`) and as many references (`refs`)")
    rows = [evaluate_pair(p, r, threshold=threshold, reference_values=reference_values) for p, r in zip(preds, refs)]
    mean, sd = {}, {}
    for k in METRICS:
        mean[k], sd[k] = _mean_sd([r[k] for r in rows])
    return {"n": len(rows), "threshold": threshold, "reference_values": reference_values, "per_slide": rows,
            "mean": mean, "sd": sd}


#: The files ``write_evaluation`` writes into its folder.
EVALUATION_FILES = {"json": "evaluate.json", "csv": "evaluate.csv"}
_CSV_COLUMNS = ["prediction", "reference", *METRICS, "tp", "fp", "fn", "tn", "ignored", "resampled",
                "reference_values", "prediction_values"]


def evaluation_paths(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The report files of ``write_evaluation`` in ``out_dir``."""
    return {k: Path(out_dir) / name for k, name in EVALUATION_FILES.items()}


def write_evaluation(out_dir: str | os.PathLike[str], report: dict[str, Any], *,
                     extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report`` (``evaluate_pairs``'s) as ``evaluate.json`` (with ``extra`` entries first) and
    ``evaluate.csv`` into ``out_dir`` (created), each atomically; returns their paths.

    Raises:
        ConfigError: a report file would replace one of the evaluated masks.
        OutputError: the folder or the files cannot be written.
    """
    from ._atomic import atomic_write, write_json_atomic
    from .outputs import check_out_dir, refuse_inputs

    paths = evaluation_paths(out_dir)
    refuse_inputs(paths.values(), [p for r in report["per_slide"] for p in (r["prediction"], r["reference"])])
    check_out_dir(Path(out_dir))
    write_json_atomic(paths["json"], {**(extra or {}), **report})
    with atomic_write(paths["csv"], newline="") as f:
        _write_csv(f, report)
    return paths


def _write_csv(f: IO[str], report: dict[str, Any]) -> None:
    import csv

    w = csv.writer(f)
    w.writerow(_CSV_COLUMNS)
    for r in report["per_slide"]:
        w.writerow([r[c] if r[c] is not None else "" for c in _CSV_COLUMNS])
    for name in ("mean", "sd"):
        w.writerow([name, ""] + [("" if report[name][k] is None else report[name][k]) for k in METRICS]
                   + [""] * (len(_CSV_COLUMNS) - 2 - len(METRICS)))


def write_csv(path: str | os.PathLike[str], report: dict[str, Any]) -> None:
    """Write ``report``'s table as CSV to ``path``, atomically."""
    from ._atomic import atomic_write

    with atomic_write(path, newline="") as f:
        _write_csv(f, report)
