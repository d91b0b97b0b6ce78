"""Checkpoints: everything needed to rebuild a model, and to resume its training, in one file.

A checkpoint is a ``torch.save`` dict::

    {
        "format": "gigaseg-checkpoint", "version": 1, "gigaseg_version": "0.1.0",
        "config": UNetConfig.to_dict(),       # rebuilds the model from the file alone
        "state_dict": model.state_dict(),
        "mpp": 0.5,                           # the training resolution (um/px) or None
        "step": 1200,                         # optional from here on: training state
        "optimizer": ..., "scheduler": ..., "rng": ..., "data_order": ..., "extra": {...},
    }

It is written to a temporary file in the same folder, flushed and fsynced, then renamed
over the final name, so a crash or a full disk never leaves a half-written checkpoint under
the final name, and the previous checkpoint stays intact until the new one is complete.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from . import __version__
from ._atomic import atomic_write
from ._files import check_input
from .errors import CheckpointError, CheckpointWriteError, ConfigError
from .model import UNet, UNetConfig

__all__ = ["FORMAT", "VERSION", "save_checkpoint", "load_checkpoint", "load_model", "check_weights"]

FORMAT = "gigaseg-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], model: UNet, *, mpp: float | None, **state: Any) -> Path:
    """Write ``model`` (config and weights), its training ``mpp`` and any ``state`` atomically.

    Args:
        path: the checkpoint file (conventionally ``*.pt``).
        model: a ``gigaseg.UNet``.
        mpp: microns per pixel of the training data, or None if unknown.
        **state: more entries (``step``, ``optimizer``, ``scheduler``, ``rng``, ...).

    Raises:
        CheckpointWriteError: an OutputError (and a CheckpointError) when the file cannot be
            written, e.g. a full disk; the previous file is left as it was.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "gigaseg_version": __version__,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "mpp": mpp,
        **state,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            try:
                torch.save(payload, f)
            except RuntimeError as exc:  # torch's zip writer turns a failed write into a RuntimeError
                if not isinstance(exc.__context__, OSError):
                    raise
                err = exc.__context__
                raise OSError(err.errno, err.strerror, err.filename) from exc
    except OSError as exc:
        raise CheckpointWriteError(
            f"cannot write checkpoint {path}: {exc.strerror or exc}; "
            "free some disk space or choose another output folder (the previous checkpoint is intact)",
            cause=exc,
        ) from exc
    return path


# NOTE [Safe loading]
# A checkpoint is read with torch.load(weights_only=True): PyTorch's restricted unpickler rebuilds
# tensors, dicts, lists, tuples, strings and numbers, and refuses every other class or function,
# so a crafted file cannot run code (a plain pickle.load would run whatever its __reduce__ names).
# gigaseg writes only such plain values (numpy's RNG state as a tuple of ints). Checkpoints of
# gigaseg 0.1 hold that state as a numpy array; to read them through the same path exactly three
# more names are allowed: numpy's array reconstructor, ndarray and dtype, which rebuild an array
# from its bytes and call nothing else.
def _numpy_array_globals() -> list[Any]:
    """The allow-list for the numpy arrays in gigaseg 0.1 checkpoints (NOTE [Safe loading])."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    # numeric dtypes only (numpy >= 1.25 pickles a dtype by its class, numpy.dtypes.UInt32DType);
    # no object dtype, whose elements would be whatever the file says
    numeric = [type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                           np.uint32, np.uint64, np.float16, np.float32, np.float64)]
    # a file pickled under numpy 1.x names the reconstructor by its old module path
    return [np.ndarray, np.dtype, reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), *numeric]


def _first_line(exc: BaseException) -> str:
    """The line of ``exc``'s message that says what was wrong (PyTorch's refusal of a global
    comes after several lines of general advice, some of which would be wrong here)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "but got" in line or "Unsupported global" in line or "Unsupported operand" in line:
            return line[:300]
    return lines[0][:300] if lines else type(exc).__name__


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint written by ``save_checkpoint``.

    Raises:
        CheckpointError: naming the file when it is missing, corrupt, not a gigaseg checkpoint,
            or from an incompatible version.
    """
    path = Path(path)
    check_input(path, "checkpoint", error=CheckpointError)  # NOTE [Special files]
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a plain pickle: refused below
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain values, and gigaseg never "
            "unpickles code (NOTE [Safe loading]); it was not written by gigaseg, or it was altered: "
            f"use a checkpoint from a source you trust ({_first_line(exc)})"
        ) from exc
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {_first_line(exc)}); the file is "
            "corrupt or truncated - use another checkpoint (training keeps the previous one)"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a gigaseg checkpoint (no 'format': '{FORMAT}' entry); "
            "give a file written by gigaseg train"
        )
    version = payload.get("version")
    if version != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r} (written by gigaseg "
            f"{payload.get('gigaseg_version', '?')}); this gigaseg {__version__} reads version {VERSION}"
        )
    for key in ("config", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks its {key!r} entry; the file is damaged")
    return payload


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> tuple[UNet, float | None]:
    """Rebuild the model stored in a checkpoint, and the resolution it was trained at.

    Example::

        model, mpp = gigaseg.load_model("runs/a/checkpoint.pt")
        gigaseg.predict_slide(model, "slide.svs", "out/", model_mpp=mpp)

    Returns:
        ``(model, mpp)``: the ``UNet`` in eval mode on ``device`` with the stored weights, and
        the microns per pixel of its training data (None when the checkpoint does not say).
        The rest of the checkpoint (step, optimizer, ...) is ``load_checkpoint(path)``.
    """
    payload = load_checkpoint(path)
    try:
        config = UNetConfig.from_dict(payload["config"])
        # the config's shapes, built on the meta device (no memory), must be the weights' before the
        # model is allocated: a damaged config could ask for billions of parameters
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in UNet(config).state_dict().items()}
        weights = payload["state_dict"]
        stored = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for k, v in weights.items()}
        if stored != expected:
            wrong = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
            raise CheckpointError(
                f"checkpoint {path} does not describe a valid model: its configuration and its weights disagree "
                f"({len(wrong)} entries, e.g. {wrong[0]!r}: the configuration makes {expected.get(wrong[0])}, the "
                f"file holds {stored.get(wrong[0])}); the file is damaged: use another checkpoint"
            )
        model = UNet(config)
        model.load_state_dict(weights)
    except (ConfigError, RuntimeError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} does not describe a valid model: {exc}") from exc
    check_weights(path, model)
    return model.to(device).eval(), _checked_mpp(path, payload.get("mpp"))


def check_weights(path: str | os.PathLike[str], model: UNet) -> None:
    """Raise CheckpointError if a weight of ``model`` is NaN or infinite (``path`` names the model in
    the message): such a model gives NaN logits, which threshold to an empty mask without a word."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"checkpoint {path} has {bad} NaN or infinite value(s) in {name!r} (of {tensor.numel()}): its model "
                "can only give NaN probabilities; use an earlier checkpoint of the run, or train again with a lower "
                "learning rate"
            )


def _checked_mpp(path: str | os.PathLike[str], mpp: Any) -> float | None:
    """The training mpp stored in a checkpoint, checked: None, or a number in ``MPP_RANGE``."""
    from .options import MPP_RANGE

    if mpp is None or (isinstance(mpp, (int, float)) and mpp == 0):  # 0: unknown, as gigaseg 0.1 read it
        return None
    low, high = MPP_RANGE
    if isinstance(mpp, bool) or not isinstance(mpp, (int, float)) or not low <= float(mpp) <= high:
        raise CheckpointError(
            f"checkpoint {path} says the model was trained at {mpp!r} microns per pixel, which is not a resolution "
            f"(expected a number in [{low:g}, {high:g}]); the file is damaged: use another checkpoint"
        )
    return float(mpp)
