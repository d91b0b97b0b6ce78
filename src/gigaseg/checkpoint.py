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
from pathlib import Path
from typing import Any

import torch

from . import __version__
from ._atomic import atomic_write
from .errors import CheckpointError, CheckpointWriteError, ConfigError
from .model import UNet, UNetConfig

__all__ = ["FORMAT", "VERSION", "save_checkpoint", "load_checkpoint", "load_model"]

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


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint written by ``save_checkpoint``.

    Raises:
        CheckpointError: naming the file when it is missing, corrupt, not a gigaseg checkpoint,
            or from an incompatible version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); the file is corrupt or "
            "truncated - use another checkpoint (training keeps the previous one)"
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
        model = UNet(UNetConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (ConfigError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not describe a valid model: {exc}") from exc
    mpp = payload.get("mpp")
    return model.to(device).eval(), (float(mpp) if mpp else None)
