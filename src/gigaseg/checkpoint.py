"""Checkpoints: everything needed to rebuild a model, and to resume its training, in one file.

A checkpoint is a ``torch.save`` dict::

    {
        "format": "gigaseg-checkpoint", "version": 1, "gigaseg_version": "0.1.0",
        "config": UNetConfig.to_dict(),       # rebuilds the model from the file alone
        "state_dict": model.state_dict(),
        "mpp": 0.5,                           # the training resolution (um/px) or None
        "classes": ["background", ...],       # a model of C >= 2 classes: their names (optional)
        "step": 1200,                         # optional from here on: training state
        "optimizer": ..., "scheduler": ..., "rng": ..., "data_order": ..., "extra": {...},
    }

It is written to a temporary file in the same folder, flushed and fsynced, then renamed
over the final name, so a crash or a full disk never leaves a half-written checkpoint under
the final name, and the previous checkpoint stays intact until the new one is complete.

A *weights file* (``save_weights``) is the small shipping form of a model: a NumPy ``.npz``
with one array per weight and a JSON ``__meta__`` string (config, mpp, provenance), read with
``allow_pickle=False``. Weights are float16, or with ``bits`` 2-8 quantized per kernel and
bit-packed (NOTE [Quantized weights]). The built-in tissue model (``BUILTIN``) is one, inside
the package; ``load_model()`` with no path loads it, and every function that takes a checkpoint
takes a weights file too.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from . import __version__
from ._atomic import atomic_write
from ._files import check_input
from .errors import CheckpointError, CheckpointWriteError, ConfigError
from .model import UNet, UNetConfig
from .options import BUILTIN_MODEL

__all__ = ["FORMAT", "VERSION", "BUILTIN", "builtin_model_path", "save_checkpoint", "save_weights",
           "load_checkpoint", "load_model", "model_from_checkpoint", "check_weights", "model_classes"]

FORMAT = "gigaseg-checkpoint"
VERSION = 1
WEIGHTS_FORMAT = "gigaseg-weights"
#: Weights files: version 1 holds float16 arrays and its header as a numpy unicode string;
#: version 2 (written now) its header as UTF-8 bytes (a quarter of the size) and maybe quantized arrays.
WEIGHTS_VERSIONS = (1, 2)
#: The suffix of the array that holds a quantized weight's per-kernel scales.
SCALE_SUFFIX = "@scale"
#: The name that stands for the built-in tissue model wherever a model path is taken.
BUILTIN = BUILTIN_MODEL


def builtin_model_path() -> Path:
    """The file of the built-in tissue model (docs/model-card.md), inside the installed package."""
    return Path(__file__).resolve().parent / "weights" / "tissue.npz"


def _resolve(path: str | os.PathLike[str] | None) -> Path:
    """``path`` as a file; None or "builtin" is the built-in model's file, which must be there."""
    if path is not None and str(path) != BUILTIN:
        return Path(path)
    file = builtin_model_path()
    if not file.is_file():
        raise CheckpointError(f"the built-in tissue model {file} is missing from this installation of gigaseg; "
                              "reinstall gigaseg (pip install --force-reinstall gigaseg), or give a model file")
    return file


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


def save_weights(path: str | os.PathLike[str], model: UNet, *, mpp: float | None,
                 info: dict[str, Any] | None = None, bits: int = 16) -> Path:
    """Write ``model``'s config and weights to a ``.npz`` weights file, atomically.

    The file is the shipping form of a trained model: tens to hundreds of kB, read without pickle
    (``load_model`` and ``load_checkpoint`` take it like a checkpoint). ``info`` is any JSON
    (provenance: the run, its step, its scores). ``bits`` 16 stores every weight as float16;
    2-8 stores each convolution kernel's weights as that many bits with one float16 scale per
    kernel (NOTE [Quantized weights]), biases as float16. Loading gives float32 values.

    Raises:
        ConfigError: a weight that float16 cannot hold (|w| > 65504), or ``bits`` not 2-8 or 16.
        CheckpointWriteError: the file cannot be written.
    """
    import numpy as np

    if bits != 16 and not 2 <= bits <= 8:
        raise ConfigError(f"bits={bits!r}: a weights file holds float16 weights (16) or 2 to 8 bits per weight")
    path = Path(path)
    arrays: dict[str, Any] = {}
    packed: dict[str, list[int]] = {}
    for k, v in model.state_dict().items():
        a = v.detach().cpu().numpy()
        if a.dtype.kind == "f":
            if a.size and float(np.abs(a).max()) > float(np.finfo(np.float16).max):
                raise ConfigError(f"weight {k!r} exceeds float16's range; it cannot be saved as a weights file")
            if bits < 16 and a.ndim >= 2:
                if not np.isfinite(a).all():
                    raise ConfigError(f"weight {k!r} holds NaN or infinite values; it cannot be quantized")
                arrays[k], arrays[k + SCALE_SUFFIX] = _quantize(a, bits)
                packed[k] = list(a.shape)
                continue
            a = a.astype(np.float16)
        arrays[k] = a
    meta = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSIONS[-1], "gigaseg_version": __version__,
            "config": model.config.to_dict(), "mpp": mpp, "info": info or {}}
    if packed:
        meta["quantized"] = {"bits": bits, "shapes": packed}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            np.savez(f, __meta__=np.array(json.dumps(meta).encode()), **arrays)
    except OSError as exc:
        raise CheckpointWriteError(f"cannot write weights file {path}: {exc.strerror or exc}; "
                                   "free some disk space or choose another folder", cause=exc) from exc
    return path


# NOTE [Quantized weights]
# `save_weights(bits=b)` with b in 2..8 stores a weight of shape (out, in, *k) as one float16 scale
# per kernel, s = max|w| / (2^(b-1) - 1) over the kernel's k elements (per row for a 2-D weight),
# and each weight as the unsigned integer round(w / s) + 2^(b-1) - 1 in b bits, the bits of all
# weights packed end to end (numpy.packbits, little bit order). Loading gives (u - 2^(b-1) + 1) * s.
# Per kernel, not per output channel: the kernels of one output channel differ in size by up to
# 10x, and one shared scale would round the small ones to a few levels. For the built-in model
# (99k weights) 8 bits per kernel change no held-out synthetic score (0.890) and 6 bits lower it
# by 0.001 with the file at 94 kB instead of 215 (results/tissue-model/README.md, "Weights on disk").
def _kernel_grid(shape: Any) -> tuple[int, ...]:
    """The shape of a quantized weight's scales, one per kernel: (out, in) of a convolution's
    (out, in, *k), (out,) of a 2-D weight's rows (NOTE [Quantized weights])."""
    return tuple(int(d) for d in (shape[:2] if len(shape) > 2 else shape[:1]))


def _top_code(bits: int) -> int:
    """The largest |round(w / s)| of ``bits``-bit codes, and the offset that makes them unsigned."""
    return int(2 ** (bits - 1) - 1)


def _quantize(a: Any, bits: int) -> tuple[Any, Any]:
    """``a`` (out, in, ...) as packed ``bits``-bit codes and per-kernel float16 scales (NOTE [Quantized weights])."""
    import numpy as np

    top = _top_code(bits)
    grid = _kernel_grid(a.shape)
    kernels = a.reshape(math.prod(grid), -1).astype(np.float32)
    scale = (np.abs(kernels).max(axis=1) / top).astype(np.float16)
    scale[scale == 0] = 1  # an all-zero kernel: any scale gives zeros
    codes = np.clip(np.rint(kernels / scale.astype(np.float32)[:, None]), -top, top).astype(np.int64) + top
    bit_planes = (codes.reshape(-1, 1) >> np.arange(bits)) & 1
    packed = np.packbits(bit_planes.astype(np.uint8).ravel(), bitorder="little")
    return packed, scale.reshape(grid)


def _dequantize(key: str, data: Any, scale: Any, shape: list[int], bits: int, path: Path) -> Any:
    """The float32 weight that ``_quantize`` packed, checked against the sizes the header gives."""
    import numpy as np

    n = int(np.prod(shape))
    if len(shape) < 2 or data.dtype != np.uint8 or data.shape != ((n * bits + 7) // 8,) \
            or tuple(scale.shape) != _kernel_grid(shape):
        raise CheckpointError(f"weights file {path}: the quantized weight {key!r} does not match its stated shape "
                              f"{shape} at {bits} bits; the file is damaged: use another copy")
    bit_planes = np.unpackbits(data, bitorder="little")[:n * bits].reshape(n, bits).astype(np.int64)
    codes = bit_planes @ (1 << np.arange(bits)) - _top_code(bits)
    kernels = codes.reshape(scale.size, -1).astype(np.float32) * scale.astype(np.float32).reshape(-1, 1)
    return kernels.reshape(shape)


def _is_weights_file(path: Path) -> bool:
    """A ``save_weights`` file (an npz with ``__meta__``), told apart from a torch checkpoint (also a zip)."""
    try:
        with zipfile.ZipFile(path) as z:
            return "__meta__.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _header_text(header: Any) -> str:
    """A weights file's ``__meta__`` array as text: UTF-8 bytes (version 2) or numpy unicode (version 1)."""
    return header.item().decode() if header.dtype.kind == "S" else str(header)


#: How much larger than the file its arrays may be once unzipped (save_weights stores them as
#: they are, about 1x; a compressed npz of real weights shrinks them little): a bound on what
#: a crafted file (a "zip bomb" of zeros) can make load_model allocate.
_WEIGHTS_MAX_EXPANSION = 16


def _load_weights(path: Path) -> dict[str, Any]:
    """A weights file as a checkpoint payload (config, state_dict, mpp, info), read without pickle."""
    import numpy as np

    with zipfile.ZipFile(path) as z:  # zipfile reads no member past the size its entry states
        stated = sum(i.file_size for i in z.infolist())
    on_disk = path.stat().st_size
    if stated > _WEIGHTS_MAX_EXPANSION * on_disk + 2**20:
        raise CheckpointError(f"weights file {path} unzips to {stated:,} bytes from {on_disk:,}: more than weights "
                              "compress, so it is not a gigaseg weights file (they are stored uncompressed); "
                              "use a file written by save_weights or ship.py")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(_header_text(z["__meta__"]))
            arrays = {k: np.array(z[k]) for k in z.files if k != "__meta__"}
    except Exception as exc:  # zip, npy and json errors alike: the file is damaged
        raise CheckpointError(f"weights file {path} cannot be read ({type(exc).__name__}: {_first_line(exc)}); "
                              "the file is corrupt or truncated: use another copy") from exc
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path} is not a gigaseg weights file (no 'format': '{WEIGHTS_FORMAT}' entry)")
    if meta.get("version") not in WEIGHTS_VERSIONS:
        raise CheckpointError(f"weights file {path} has format version {meta.get('version')!r}; this gigaseg "
                              f"{__version__} reads versions {', '.join(map(str, WEIGHTS_VERSIONS))}")
    quantized = meta.get("quantized") or {}
    try:
        bits, shapes = int(quantized.get("bits", 16)), dict(quantized.get("shapes", {}))
        if shapes and not 2 <= bits <= 8:
            raise ValueError(f"bits {bits}")
        for key, shape in shapes.items():
            arrays[key] = _dequantize(key, arrays[key], arrays.pop(key + SCALE_SUFFIX), [int(d) for d in shape],
                                      bits, path)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"weights file {path}: its quantized weights are damaged ({type(exc).__name__}: "
                              f"{exc}); use another copy") from exc
    state = {k: torch.from_numpy(a) for k, a in arrays.items()}
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return {"format": FORMAT, "version": VERSION, "gigaseg_version": meta.get("gigaseg_version"),
            "config": meta.get("config"), "state_dict": state, "mpp": meta.get("mpp"), "info": meta.get("info", {}),
            **{k: meta[k] for k in ("component_filter", *_DECLARED) if k in meta}}


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


def load_checkpoint(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint written by ``save_checkpoint``, or a weights file
    (``save_weights``: config, weights, mpp and ``info``, no training state). No path, or
    ``"builtin"``, reads the built-in tissue model.

    Raises:
        CheckpointError: naming the file when it is missing, corrupt, not a gigaseg checkpoint,
            or from an incompatible version.
    """
    path = _resolve(path)
    check_input(path, "checkpoint", error=CheckpointError)  # NOTE [Special files]
    if _is_weights_file(path):
        return _load_weights(path)
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


def load_model(path: str | os.PathLike[str] | None = None, *,
               device: str | torch.device = "cpu") -> tuple[UNet, float | None]:
    """Rebuild the model stored in a checkpoint or weights file, and the resolution it was trained at.

    Example::

        model, mpp = gigaseg.load_model()                     # the built-in tissue model
        model, mpp = gigaseg.load_model("runs/a/checkpoint.pt")
        gigaseg.predict_slide(model, "slide.svs", "out/", model_mpp=mpp)

    ``path`` None (or ``"builtin"``) is the built-in tissue model (docs/model-card.md).

    Returns:
        ``(model, mpp)``: the ``UNet`` in eval mode on ``device`` with the stored weights, and
        the microns per pixel of its training data (None when the checkpoint does not say).
        The rest of the checkpoint (step, optimizer, ...) is ``load_checkpoint(path)``.
    """
    path = _resolve(path)
    return model_from_checkpoint(load_checkpoint(path), path, device=device)


def model_from_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str], *,
                          device: str | torch.device = "cpu") -> tuple[UNet, float | None]:
    """``load_model`` for a checkpoint already read by ``load_checkpoint(path)``: the file is read once
    when both its model and its other entries are wanted. ``path`` names the file in errors."""
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
    classes = _checked_classes(path, payload.get("classes", (payload.get("info") or {}).get("classes")), config)
    if classes is not None:
        setattr(model, _CLASSES_ATTR, classes)  # read by model_classes
    if payload.get("component_filter") is not None:
        from .components import ComponentFilter

        try:
            setattr(model, _FILTER_ATTR, ComponentFilter.from_dict(payload["component_filter"]))
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc}; the file is damaged: use another copy") from exc
    for key, (attr, what, top) in _DECLARED.items():  # NOTE [Hole filling], [Specks], [Edge trim]
        v = payload.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= top:
            raise CheckpointError(f"checkpoint {path}: its {what} {key} {v!r} is not a number from 0 to {top:g}; "
                                  "the file is damaged: use another copy")
        setattr(model, attr, float(v))
    mpp = _checked_mpp(path, payload.get("mpp"))
    if mpp is not None:
        setattr(model, _MPP_ATTR, mpp)  # read by trained_mpp: the model alone still knows its resolution
    return model.to(device).eval(), mpp


#: The attribute of a UNet loaded by ``load_model`` that holds its checkpoint's class names.
_CLASSES_ATTR = "gigaseg_classes"
#: The attribute of a UNet loaded by ``load_model`` that holds its component filter (NOTE [Component filter]).
_FILTER_ATTR = "gigaseg_component_filter"


#: The attribute of a UNet loaded by ``load_model`` that holds the hole width it declares (NOTE [Hole filling]).
_HOLES_ATTR = "gigaseg_fill_holes_um"
#: ... the speck size it declares (NOTE [Specks] in gigaseg/holes.py).
_SPECKS_ATTR = "gigaseg_drop_specks_um"
#: ... the edge trim ratio it declares (NOTE [Edge trim] in gigaseg/edges.py).
_TRIM_ATTR = "gigaseg_edge_trim"
#: The mask's post-processing a weights file or checkpoint may declare: its key, the attribute that holds it on the
#: loaded model, what it is, and its largest valid value.
_DECLARED = {"fill_holes_um": (_HOLES_ATTR, "hole width", math.inf),
             "drop_specks_um": (_SPECKS_ATTR, "speck size", math.inf),
             "edge_trim": (_TRIM_ATTR, "edge trim ratio", 1.0)}
#: The attribute of a UNet loaded by ``load_model`` that holds the resolution it was trained at.
_MPP_ATTR = "gigaseg_mpp"


def trained_mpp(model: Any) -> float | None:
    """The microns per pixel ``model`` was trained at, as the checkpoint or weights file that
    ``load_model`` read it from says (the built-in tissue model: 4); None for a model built otherwise
    (through DDP's ``module``)."""
    mpp = getattr(getattr(model, "module", model), _MPP_ATTR, None)
    return None if mpp is None else float(mpp)


def hole_width(model: Any) -> float:
    """The width in microns under which the holes of ``model``'s masks are filled, as its weights file
    declares it (the built-in tissue model: 100, the definition of tissue's; NOTE [Hole filling] in
    ``gigaseg.holes``); 0 when it declares none (through DDP's ``module``)."""
    return float(getattr(getattr(model, "module", model), _HOLES_ATTR, 0.0))


def speck_size(model: Any) -> float:
    """The side in microns of the square under which ``model``'s masks drop a piece, as its weights file
    declares it (the built-in tissue model: 100, the definition of tissue's specks under (100 um)^2; NOTE
    [Specks] in ``gigaseg.holes``); 0 when it declares none (through DDP's ``module``)."""
    return float(getattr(getattr(model, "module", model), _SPECKS_ATTR, 0.0))


def edge_trim(model: Any) -> float:
    """The edge trim ratio of ``model``'s masks, as its weights file declares it (the built-in tissue
    model: 0.4; NOTE [Edge trim] in ``gigaseg.edges``); 0 (no trim) when it declares none (through DDP's
    ``module``)."""
    return float(getattr(getattr(model, "module", model), _TRIM_ATTR, 0.0))


def component_filter(model: Any) -> Any:
    """The ``ComponentFilter`` that ``model``'s weights file or checkpoint stores (the built-in tissue
    model's), or None (through DDP's ``module``)."""
    return getattr(getattr(model, "module", model), _FILTER_ATTR, None)


def _checked_classes(path: str | os.PathLike[str], classes: Any, config: UNetConfig) -> list[str] | None:
    """A checkpoint's class names, checked against its model's output channels (None: not recorded)."""
    from .options import check_class_names

    if classes is None:
        return None
    try:
        names = check_class_names(classes, f"checkpoint {path}'s \"classes\"")
    except ConfigError as exc:
        raise CheckpointError(f"{exc}; the file is damaged: use another checkpoint") from None
    if len(names) != config.out_channels:
        raise CheckpointError(f"checkpoint {path} names {len(names)} classes but its model has {config.out_channels} "
                              "output channels; the file is damaged: use another checkpoint")
    return names


def model_classes(model: Any) -> list[str] | None:
    """The class names of a model of C >= 2 output channels: its checkpoint's (``load_model``
    keeps them on the model), else "class 0" .. "class C-1"; None for a one-channel model."""
    n = int(getattr(getattr(model, "config", None), "out_channels", 1))
    if n == 1:
        return None
    names = getattr(model, _CLASSES_ATTR, None)
    if isinstance(names, list) and len(names) == n:
        return list(names)
    return [f"class {k}" for k in range(n)]


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
