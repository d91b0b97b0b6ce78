"""What a user can choose: every option's vocabulary, the model's config and presets, and
``TrainConfig``, without importing torch or numpy.

The command line (``gigaseg.cli``) takes its ``choices=`` and defaults from here, and the library
modules that check these options import their vocabularies from here, so each is defined once::

    from gigaseg.options import LOSSES, TrainConfig, UNetConfig, preset
    config = TrainConfig(data="regions/", out="runs/a", preset=preset("tiny"), loss="dice")
    TrainConfig.from_json("runs/a/config.json")      # a run's configuration, to train again

A wrong value is refused with the valid ones and the nearest of them (``check_choice``)::

    unknown loss 'dic'; did you mean 'dice'? valid: bce, dice, bce+dice

``UNetConfig`` lives here rather than in ``gigaseg.model`` (which re-exports it, with ``PRESETS``
and ``preset``) because ``TrainConfig`` holds one and this module must not import torch: the
config is plain arithmetic on integers; the network it describes is ``gigaseg.model.UNet``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "BUILTIN_MODEL",
    "LOSSES",
    "CLASS_LOSSES",
    "TRAIN_LOSSES",
    "SCHEDULES",
    "JITTERS",
    "ACTIVATIONS",
    "PRECISIONS",
    "ORIENTATION_COUNTS",
    "HOLE_CONVENTIONS",
    "IGNORE_MODES",
    "STORE_FORMATS",
    "SPLITS",
    "BASELINE_METHODS",
    "DEMO_SCALES",
    "SLIDE_BACKENDS",
    "METRICS",
    "MASK_KINDS",
    "DEVICES",
    "PRESET_NAMES",
    "DEFAULT_PRESET",
    "DEFAULT_LOSS",
    "DEFAULT_JITTER",
    "DEFAULT_DEVICE",
    "DEFAULT_PREDICT_DEVICE",
    "DEFAULT_SEED",
    "DEFAULT_THRESHOLD",
    "DEFAULT_PRECISION",
    "DEFAULT_HOLES",
    "DEFAULT_IGNORE",
    "DEFAULT_STORE_FORMAT",
    "DEFAULT_SPLIT",
    "DEFAULT_BASELINE_METHOD",
    "DEFAULT_DEMO_SCALE",
    "DEFAULT_DEMO_OUT",
    "DEFAULT_WORKING_MPP",
    "DEFAULT_SYNTH_MPP",
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_TIFF_TILE",
    "RESUME_CHANGEABLE",
    "REFERENCE_VALUES",
    "DEFAULT_REFERENCE_VALUES",
    "MPP_RANGE",
    "MIN_MEMORY_BUDGET",
    "NumberRule",
    "NUMBER_OPTIONS",
    "check_number",
    "check_memory_budget",
    "parse_memory_budget",
    "check_options",
    "UNetConfig",
    "PRESETS",
    "preset",
    "TrainConfig",
    "closest",
    "check_choice",
    "check_keys",
    "check_class_names",
    "unknown_choice",
]

# --- vocabularies ------------------------------------------------------------------------------

#: The name that stands for the built-in tissue model wherever a model path is taken.
BUILTIN_MODEL = "builtin"

#: Losses over a whole image (``gigaseg.losses`` defines them), for a model of one output channel.
LOSSES = ("bce", "dice", "bce+dice")
#: Losses over a whole image for a model of several output channels (``UNetConfig.out_channels`` > 1):
#: softmax cross-entropy, multi-class soft Dice and their sum.
CLASS_LOSSES = ("ce", "dice", "ce+dice")
#: Every loss ``gigaseg train`` takes: ``LOSSES`` for one channel, ``CLASS_LOSSES`` for several classes.
TRAIN_LOSSES = tuple(dict.fromkeys(LOSSES + CLASS_LOSSES))
#: Learning-rate schedules after the warm-up (``gigaseg.training.lr_factor``).
SCHEDULES = ("cosine", "step", "constant")
#: Colour jitter of the training views (``gigaseg.dataset``).
JITTERS = ("hed", "rgb", "none")
#: Activations of ``UNetConfig``.
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh")
#: Number formats of prediction's forward pass.
PRECISIONS = ("float32", "bfloat16")
#: How many orientations of an image prediction may average (NOTE [Orientations] in ``engine.orient``).
ORIENTATION_COUNTS = (1, 2, 4, 8)
#: What a synthetic mask calls lumens and tears inside tissue.
HOLE_CONVENTIONS = ("background", "tissue")
#: What a mask's 255 (ignore) becomes when a region is prepared.
IGNORE_MODES = ("keep", "background", "tissue")
#: On-disk formats of the region store.
STORE_FORMATS = ("npy", "zarr")
#: Splits of the region store.
SPLITS = ("train", "val")
#: The non-learned tissue baselines.
BASELINE_METHODS = ("otsu", "saturation")
#: Scales of ``gigaseg demo``.
DEMO_SCALES = ("small", "paper")
#: Slide reading backends.
SLIDE_BACKENDS = ("openslide", "tifffile", "pillow")
#: Scores of ``gigaseg evaluate``.
METRICS = ("dice", "iou", "precision", "recall")
#: Kinds of mask of ``gigaseg bench prepare``.
MASK_KINDS = ("geojson", "tiff")
#: Device names (``cuda:N`` stands for any CUDA device index).
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")

# --- defaults shared by the library and the command line --------------------------------------------

DEFAULT_PRESET = "paper"
DEFAULT_LOSS = "bce+dice"
DEFAULT_JITTER = "hed"
#: Training and the demo take the best device there is.
DEFAULT_DEVICE = "auto"
#: Prediction and the benchmarks run on the CPU unless told otherwise.
DEFAULT_PREDICT_DEVICE = "cpu"
DEFAULT_SEED = 0
#: Probability threshold of a tissue pixel (validation Dice, prediction, evaluation).
DEFAULT_THRESHOLD = 0.5
DEFAULT_PRECISION = "float32"
DEFAULT_HOLES = "background"
DEFAULT_IGNORE = "keep"
DEFAULT_STORE_FORMAT = "npy"
DEFAULT_SPLIT = "train"
DEFAULT_BASELINE_METHOD = "otsu"
DEFAULT_DEMO_SCALE = "small"
DEFAULT_DEMO_OUT = "gigaseg-demo"
#: Resolution the baselines run at, um/px.
DEFAULT_WORKING_MPP = 8.0
#: Resolution of synthetic slides and regions, um/px.
DEFAULT_SYNTH_MPP = 0.5
#: JPEG quality and tile side of synthetic slide TIFFs.
DEFAULT_JPEG_QUALITY = 90
DEFAULT_TIFF_TILE = 512

#: How ``gigaseg evaluate`` reads a reference mask's values (NOTE [Mask values] in gigaseg.metrics):
#: "auto" decides from the values and the file, and refuses what is ambiguous; "0/1/255" is
#: 0 background, 1 tissue, 255 ignore; "0/255" is 0 background, 255 tissue.
REFERENCE_VALUES = ("auto", "0/1/255", "0/255")
DEFAULT_REFERENCE_VALUES = "auto"


# --- numbers: the range of every numeric option ------------------------------------------------------

#: Microns per pixel a slide, a region or a model may have, um/px: from 0.01 (finer than any
#: microscope) to 1000 (a 1 mm pixel, a thumbnail of a thumbnail).
MPP_RANGE = (0.01, 1000.0)
#: The smallest memory budget, bytes: the process itself (Python, PyTorch, a small model) takes
#: about this much before the first tile (the planner's base, 256 MiB).
MIN_MEMORY_BUDGET = 256 * 2**20


@dataclass(frozen=True)
class NumberRule:
    """The valid values of a numeric option: finite, of a kind, in a range.

    Attributes:
        what: what the number is, for messages ("microns per pixel").
        low, high: the bounds (None: unbounded).
        low_open, high_open: a bound itself is not valid.
        integer: only integers are valid.
    """

    what: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        """The valid values in words: ``a number in (0, 1) (a probability)``."""
        kind = "an integer" if self.integer else "a number"
        low, high = (None if b is None else (int(b) if float(b).is_integer() else b) for b in (self.low, self.high))
        if low is not None and high is not None:
            span = f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif low is not None:
            span = f"{'>' if self.low_open else '>='} {low}"
        elif high is not None:
            span = f"{'<' if self.high_open else '<='} {high}"
        else:
            span = "that is finite"
        return f"{kind} {span} ({self.what})"

    def valid(self, value: float) -> bool:
        """Whether the number ``value`` is finite and in range (and whole, for an integer rule)."""
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def parse(self, text: str) -> int | float:
        """The number written in ``text`` (a command-line value), checked; ValueError if invalid."""
        try:
            value: int | float = int(text) if self.integer else float(text)
        except (TypeError, ValueError):
            raise ValueError(f"{text!r} is not valid: expected {self.describe()}") from None
        if not self.valid(value):
            raise ValueError(f"{text!r} is not valid: expected {self.describe()}")
        return value


_MPP = NumberRule("microns per pixel", *MPP_RANGE)

#: The rule of each numeric option, by its parameter name (the command line's options take their
#: ``type=`` from here too: a bad value is a usage error before any work).
NUMBER_OPTIONS: Mapping[str, NumberRule] = types.MappingProxyType({
    "threshold": NumberRule("a probability", 0, 1, low_open=True, high_open=True),
    "mpp": _MPP,
    "slide_mpp": _MPP,
    "model_mpp": _MPP,
    "working_mpp": _MPP,
    "min_area": NumberRule("square microns", 0),
    "simplify": NumberRule("microns", 0),
    "fill_holes": NumberRule("microns", 0),
    "drop_specks": NumberRule("microns", 0),
    "edge_trim": NumberRule("a share of the optical density of the tissue beside a pixel", 0, 1),
    "read_workers": NumberRule("threads", 1, 1024, integer=True),
    "count": NumberRule("regions", 1, integer=True),
    "val": NumberRule("regions", 0, integer=True),
    "seed": NumberRule("a seed", 0, 2**63 - 1, integer=True),
    "strip_rows": NumberRule("rows", 1, integer=True),
    "tile": NumberRule("pixels, a multiple of the model's stride", 1, integer=True),
    "jitter_strength": NumberRule("the spread of the colour jitter", 0),
})


def check_number(name: str, value: Any, *, none_ok: bool = False) -> Any:
    """``value`` of the numeric option ``name`` if it is valid (``NUMBER_OPTIONS[name]``), else a
    ConfigError naming the parameter, the value and the valid range. None passes with ``none_ok``."""
    if value is None and none_ok:
        return None
    rule = NUMBER_OPTIONS[name]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's numbers too
    if ok and rule.integer:
        ok = isinstance(value, numbers.Integral)
    if not ok or not rule.valid(float(value)):
        raise ConfigError(f"`{name}={value!r}` is not valid: expected {rule.describe()}")
    return value


def check_memory_budget(value: Any, name: str = "memory_budget") -> Any:
    """``value`` if it is a memory budget (bytes, or a string such as ``"4GB"``) of at least
    ``MIN_MEMORY_BUDGET``, or None (the default); else a ConfigError naming ``name``."""
    if value is None:
        return None
    from ._units import parse_bytes

    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"`{name}={value!r}` is not valid: write it like '4GB', '2GiB', '512MB' or 1073741824")
    try:
        size = parse_bytes(value)
    except ConfigError:
        raise ConfigError(f"`{name}={value!r}` is not valid: write it like '4GB', '2GiB', '512MB' or "
                          "1073741824") from None
    if size < MIN_MEMORY_BUDGET:
        raise ConfigError(f"`{name}={value!r}` is too small: the process alone takes about 256 MiB; "
                          f"give `{name}='256MiB'` or more")
    return value


def parse_memory_budget(text: str) -> str:
    """A command-line memory budget, checked (ValueError if invalid); returned as written."""
    try:
        check_memory_budget(text)
    except ConfigError:
        raise ValueError(f"{text!r} is not valid: expected a memory size of at least 256MiB, written like "
                         "4GB, 2GiB, 512MB or 1073741824") from None
    return text


def check_options(**values: Any) -> None:
    """Check each option given by keyword: numbers by ``NUMBER_OPTIONS`` (None passes: the default),
    ``memory_budget`` by ``check_memory_budget``; a ConfigError names the first invalid one."""
    for name, value in values.items():
        if name == "memory_budget":
            check_memory_budget(value)
        else:
            check_number(name, value, none_ok=True)


#: Options that ``--resume`` may change. Changing ``steps`` or ``lr`` changes the schedule from
#: the resumed step on; the others change nothing in the result on the same device.
RESUME_CHANGEABLE = ("steps", "lr", "device", "memory_budget", "tile", "read_workers", "progress", "val_every",
                     "ckpt_every", "keep_every")


# --- "did you mean" -------------------------------------------------------------------------------


def closest(value: Any, choices: Iterable[Any]) -> str | None:
    """The choice nearest to ``value`` in spelling (``difflib``), or None when none is close."""
    names = [str(c) for c in choices]
    found = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_choice(kind: str, value: Any, choices: Iterable[Any]) -> ConfigError:
    """The error for ``value`` not in ``choices``: ``unknown KIND 'x'; did you mean 'y'? valid: ...``."""
    choices = [str(c) for c in choices]
    match = closest(value, choices)
    hint = f"; did you mean {match!r}?" if match is not None else ";"
    return ConfigError(f"unknown {kind} {value!r}{hint} valid: {', '.join(choices)}")


def check_choice(kind: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``unknown_choice``'s ConfigError."""
    choices = tuple(choices)
    if value not in choices:
        raise unknown_choice(kind, value, choices)
    return value


def check_keys(kind: str, data: Mapping[str, Any], names: Iterable[str]) -> None:
    """Raise ConfigError naming each key of ``data`` not in ``names``, with the nearest valid one."""
    names = list(names)
    unknown = [k for k in data if k not in names]
    if unknown:
        hints = []
        for k in unknown:
            match = closest(k, names)
            hints.append(f"{k!r}" + (f" (did you mean {match!r}?)" if match else ""))
        raise ConfigError(f"unknown {kind} {', '.join(hints)}; valid: {', '.join(names)}")


# --- the model's configuration -----------------------------------------------------------------------


def _tuple(name: str, value: Any) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError as exc:
        raise ConfigError(f"UNetConfig.{name} must be a sequence of integers, got {value!r}") from exc
    if any(int(v) != v for v in value):
        raise ConfigError(f"UNetConfig.{name} must hold integers, got {value!r}")
    return out


@dataclass(frozen=True)
class UNetConfig:
    """Hyperparameters of a ``gigaseg.UNet``; the config is stored in every checkpoint.

    Attributes:
        depth: number of resolution levels below full resolution (>= 1).
        channels: feature channels at each level, encoder and decoder alike (length ``depth``).
        strides: downsampling factor of each encoder level (length ``depth``).
        encoder_kernels: odd kernel size of each encoder convolution (length ``depth``).
        decoder_kernels: odd kernel size of each decoder convolution, index 0 being the
            full-resolution output convolution (length ``depth``).
        activation: one of ``ACTIVATIONS``.
        in_channels: input channels (3 for RGB).
        input_shift, input_scale: the model's own input normalization: it computes
            ``(x - input_shift) * input_scale`` of its input ``x`` (RGB / 255) before its first
            layer, and its zero padding then applies to the normalized image. The defaults (0, 1)
            leave the input as it is (the ``paper`` preset). Centring the input on glass (e.g. 0.8
            and 4) makes many stains and backgrounds far easier to learn (docs/model-card.md).
        out_channels: output channels C: 1 (the default) gives one logit per pixel (sigmoid,
            losses ``LOSSES``, masks of 0/1); C >= 2 gives C class logits (softmax, losses
            ``CLASS_LOSSES``, masks of class indices 0..C-1), 255 being "ignore" in both.
        glass_white: 0 (the default) reads the image as it is; W > 0 (on the 0-255 scale, e.g.
            250) balances it first: each channel is brightened so that the image's glass
            reaches W, never darkened (``gigaseg.glass``, NOTE [Glass balance]). The engine
            applies it wherever the model is used, prediction and training alike; it takes
            8-bit RGB images.
    """

    depth: int = 3
    channels: tuple[int, ...] = (2, 4, 8)
    strides: tuple[int, ...] = (4, 4, 2)
    encoder_kernels: tuple[int, ...] = (15, 11, 7)
    decoder_kernels: tuple[int, ...] = (3, 3, 3)
    activation: str = "leaky_relu"
    in_channels: int = 3
    input_shift: float = 0.0
    input_scale: float = 1.0
    out_channels: int = 1
    glass_white: float = 0.0

    def __post_init__(self) -> None:
        for name in ("channels", "strides", "encoder_kernels", "decoder_kernels"):
            object.__setattr__(self, name, _tuple(name, getattr(self, name)))
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ConfigError(f"UNetConfig.depth must be an integer >= 1, got {self.depth!r}")
        for name in ("channels", "strides", "encoder_kernels", "decoder_kernels"):
            value = getattr(self, name)
            if len(value) != self.depth:
                raise ConfigError(
                    f"UNetConfig.{name} has {len(value)} entries but depth is {self.depth}: "
                    f"give one per level, e.g. {name}={tuple(value[:1]) * self.depth}"
                )
        for name in ("channels", "strides"):
            if min(getattr(self, name)) < 1:
                raise ConfigError(f"UNetConfig.{name} must be >= 1 everywhere, got {getattr(self, name)}")
        for name in ("encoder_kernels", "decoder_kernels"):
            for k in getattr(self, name):
                if k < 1 or k % 2 == 0:
                    raise ConfigError(
                        f"UNetConfig.{name} must hold odd sizes >= 1 (a centred 'same' convolution), "
                        f"got {getattr(self, name)}; use {k + 1 if k % 2 == 0 else 1} instead of {k}"
                    )
        if self.activation not in ACTIVATIONS:
            match = closest(self.activation, ACTIVATIONS)
            hint = f"did you mean {match!r}? " if match else ""
            raise ConfigError(
                f"UNetConfig.activation {self.activation!r} is unknown; {hint}choose one of {sorted(ACTIVATIONS)}"
            )
        if self.in_channels < 1:
            raise ConfigError(f"UNetConfig.in_channels must be >= 1, got {self.in_channels}")
        for name in ("input_shift", "input_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"UNetConfig.{name} must be a finite number, got {v!r}")
        if self.input_scale <= 0:
            raise ConfigError(f"UNetConfig.input_scale must be > 0, got {self.input_scale}")
        w = self.glass_white
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (w == 0 or 1 <= w <= 255):
            raise ConfigError(f"UNetConfig.glass_white must be 0 (off) or a brightness from 1 to 255 (e.g. 250), "
                              f"got {w!r}")
        c = self.out_channels
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 255:
            raise ConfigError(f"UNetConfig.out_channels must be an integer from 1 to 255 (1: one sigmoid output; "
                              f"C >= 2: C classes, mask values 0..C-1, 255 being ignore), got {c!r}")

    @property
    def normalizes(self) -> bool:
        """Whether the model changes its input before the first layer (``input_shift``/``input_scale``)."""
        return self.input_shift != 0 or self.input_scale != 1

    # --- geometry -----------------------------------------------------------------------
    @property
    def total_stride(self) -> int:
        """Product of the strides: tile origins must sit on multiples of it."""
        return math.prod(self.strides)

    @property
    def halo(self) -> int:
        """How far (in full-resolution pixels, each side) an output pixel's inputs can lie.

        Output pixel ``i`` depends only on input pixels ``[i - halo, i + halo]``. Computed
        by tracking, for every tensor, the span of inputs that one of its elements reads.
        """
        # (jump, left, right): element j of a tensor with this jump reads input pixels
        # [jump * j - left, jump * j + jump - 1 + right]  (see NOTE [Receptive field]).
        enc = [(1, 0, 0)]
        jump, left, right = 1, 0, 0
        for s, k in zip(self.strides, self.encoder_kernels):
            r = k // 2
            # conv of stride s: element j reads elements s*j - r .. s*j + r of the previous tensor
            left, right = left + jump * r, right + jump * r + (jump - 1) - (jump * s - 1)
            jump *= s
            enc.append((jump, left, right))
        jump, left, right = enc[-1]
        for level in range(self.depth - 1, -1, -1):
            s = self.strides[level]
            # nearest upsampling by s: element i reads element i // s
            jump //= s
            left, right = left + jump * (s - 1), right + jump * (s - 1)
            # concatenation with the skip of the same resolution, then a conv of radius r
            r = self.decoder_kernels[level] // 2
            left = max(left, enc[level][1]) + jump * r
            right = max(right, enc[level][2]) + jump * r
        return max(left, right, 0)

    @property
    def receptive_field(self) -> int:
        """Side of the square window of input pixels that can influence one output pixel."""
        return 2 * self.halo + 1

    def to_dict(self) -> dict[str, Any]:
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        if not self.glass_white:  # files of models without it stay as they were, readable by older versions
            del out["glass_white"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            hints = [f"{k!r}" + (f" (did you mean {closest(k, known)!r}?)" if closest(k, known) else "")
                     for k in unknown]
            raise ConfigError(f"unknown UNetConfig fields {', '.join(hints)}; known: {sorted(known)}")
        return cls(**data)


# NOTE [Receptive field]
# Element j of a tensor whose "jump" (stride relative to the input) is J covers input pixels
# [J*j - left, J*j + (J - 1) + right]. A conv of radius r and stride s reads elements
# s*j - r .. s*j + r, so left grows by J*r and right by J*r + (J - 1) - (J*s - 1); nearest
# upsampling by s maps output i to element i // s, which adds (J/s)*(s - 1) on both sides.
# At full resolution (J = 1) the halo is the larger one-sided extent. The tests check it
# against the empirical extent of an input gradient.

#: The preset model configs by name, read-only (a config of your own is a ``UNetConfig``, e.g.
#: ``dataclasses.replace(preset("paper"), channels=(8, 16, 32))``).
PRESETS: Mapping[str, UNetConfig] = types.MappingProxyType({
    # Our reading of the paper's model (its layers were not published): 4,492 parameters,
    # large encoder kernels (15, 11, 7), strides 4, 4, 2 (total 32).
    "paper": UNetConfig(),
    # A small model for fast tests.
    "tiny": UNetConfig(
        depth=2, channels=(2, 4), strides=(2, 2), encoder_kernels=(5, 3), decoder_kernels=(3, 3)
    ),
})
#: The presets' names, for ``choices=``.
PRESET_NAMES = tuple(PRESETS)


def preset(name: str) -> UNetConfig:
    """The preset config called ``name`` (``paper`` or ``tiny``); configs are frozen, so it is shared."""
    return PRESETS[check_choice("preset", name, PRESETS)]


# --- training -------------------------------------------------------------------------------------


def check_class_names(names: Any, what: str) -> list[str]:
    """``names`` as a list of 2 to 255 distinct non-empty strings (class k is ``names[k]``), else
    a ConfigError that names ``what``."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ConfigError(f"{what} must be a list of class names (class k is the k-th), got {names!r}")
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ConfigError(f"{what}: class names must be non-empty strings, got {bad[0]!r}")
    if not 2 <= len(names) <= 255:
        raise ConfigError(f"{what} names {len(names)} class(es); a model of several classes has 2 to 255 "
                          "(one class is the tissue model: give no classes)")
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise ConfigError(f"{what}: the class name {seen[0]!r} appears twice; each class needs its own name")
    return list(names)


@dataclass
class TrainConfig:
    """Every option of a training run; written to ``RUN_DIR/config.json`` and to checkpoints.

    Attributes:
        data: the region store (``gigaseg prepare``); its "train" split is trained on.
        out: the run folder (created; refused if it already holds a run).
        preset: the model: a preset's name ("paper" or "tiny") or a ``UNetConfig`` of your own
            (a dict of its fields is turned into one).
        steps: total optimizer steps (``regions_per_step`` whole regions each).
        regions_per_step: K, whole regions per step, their gradients averaged (batch size K).
            Under torchrun the N processes form K groups, one region each (N a multiple of K);
            see docs/distributed.md. A single process takes the K regions one after another
            (gradient accumulation: the same step, in one region's memory).
        lr: Adam's peak learning rate.
        schedule: "cosine" (warm-up then cosine decay to ``lr * min_lr_ratio``), "step"
            (warm-up then ``lr * decay_gamma ** (n // decay_every)``) or "constant" (warm-up then ``lr``).
        warmup: linear warm-up steps.
        min_lr_ratio: the final learning rate of the cosine schedule, relative to ``lr``.
        decay_every: steps between decays of the "step" schedule (default: a third of ``steps``).
        decay_gamma: the factor of each decay of the "step" schedule.
        weight_decay: Adam's (L2) weight decay.
        loss: "bce", "dice" or "bce+dice" for a one-channel model; "ce", "dice" or "ce+dice" for
            a model of several ``classes``.
        classes: the names of the classes of a several-class model (C >= 2 output channels; the
            masks hold class indices 0..C-1, 255 being ignore); None: the store's (its regions'
            ``classes`` metadata), or one channel (tissue masks 0/1/255) when it has none.
        seed: seeds the model's initialization, the region order and the augmentation.
        augment: random dihedral transform and colour jitter per region and epoch.
        jitter: "hed", "rgb" or "none".
        jitter_strength: the spread of the colour jitter.
        val_data: a store to validate on (its "val" split, or all its regions when it has none);
            default: the "val" split of ``data``.
        val_every: validate every this many steps (0: only at the end).
        ckpt_every: checkpoint every this many steps (0: only at the end).
        keep_every: also keep a copy of the checkpoint every this many steps, as
            ``out/checkpoints/step-N.pt`` (0: none): for weight averaging
            (scripts/tissue_model/average.py) and for how much a score moves from checkpoint to
            checkpoint (scripts/tissue_model/checkpoint_spread.py).
        threshold: probability threshold of the validation Dice.
        device: "auto", "cpu", "cuda", "cuda:N" or "mps".
        memory_budget: the engine's memory budget (e.g. "4GB"); default the engine's (1 GiB).
        tile: core tile side (a multiple of the total stride); overrides the plan.
        read_workers: threads reading and augmenting crops ahead of the model, and sharing each
            large crop by strips; default 1 on the CPU, one per spare core (at most 8) on a GPU.
            Results do not depend on it.
        progress: progress bars (steps; tiles when a step is long).
        init: start from these weights instead of a random initialization: "builtin" (the
            built-in tissue model) or a checkpoint/weights file; the model's architecture is
            then the file's (``preset`` must be left at its default or equal it).
        resume: a run folder to continue (see ``gigaseg.training.resume_config``); ``out`` is then
            that folder.
    """

    data: str | None = None
    out: str | None = None
    preset: str | UNetConfig = DEFAULT_PRESET
    steps: int = 1000
    regions_per_step: int = 1
    lr: float = 0.003
    schedule: str = SCHEDULES[0]
    warmup: int = 10
    min_lr_ratio: float = 0.05
    decay_every: int | None = None
    decay_gamma: float = 0.1
    weight_decay: float = 0.0
    loss: str = DEFAULT_LOSS
    seed: int = DEFAULT_SEED
    augment: bool = True
    jitter: str = DEFAULT_JITTER
    jitter_strength: float = 0.05
    val_data: str | None = None
    val_every: int = 50
    ckpt_every: int = 50
    keep_every: int = 0
    threshold: float = DEFAULT_THRESHOLD
    device: str = DEFAULT_DEVICE
    memory_budget: str | int | None = None
    tile: int | None = None
    read_workers: int | None = None
    progress: bool = True
    resume: str | None = None
    init: str | None = None
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.preset, Mapping):
            self.preset = UNetConfig.from_dict(self.preset)
        if isinstance(self.classes, tuple):
            self.classes = list(self.classes)

    def model_config(self) -> UNetConfig:
        """The ``UNetConfig`` of the model: ``preset`` itself, or the preset it names; with
        ``classes``, its ``out_channels`` is their number."""
        config = self.preset if isinstance(self.preset, UNetConfig) else preset(self.preset)
        if self.classes is not None and config.out_channels != len(self.classes):
            config = dataclasses.replace(config, out_channels=len(self.classes))
        return config

    def check_classes(self) -> None:
        """Check that ``loss`` and the model's output channels fit ``classes`` (once the store's
        classes are known: ``check`` allows either kind of loss before)."""
        if self.classes is None:
            if isinstance(self.preset, UNetConfig) and self.preset.out_channels != 1:
                raise ConfigError(f"`preset` has out_channels={self.preset.out_channels} but no `classes` are given "
                                  "and the store names none: give the class names (`classes`), one per "
                                  "output channel")
            if self.loss not in LOSSES:
                raise ConfigError(f"`loss={self.loss!r}` is a loss of several classes, but the model has one output "
                                  f"channel (no `classes`, and the store names none): use one of {', '.join(LOSSES)}, "
                                  "or give the class names (`classes`)")
            return
        if self.loss not in CLASS_LOSSES:
            raise ConfigError(f"`loss={self.loss!r}` is a one-channel loss, but the model has {len(self.classes)} "
                              f"classes ({', '.join(self.classes)}): use one of {', '.join(CLASS_LOSSES)}, e.g. "
                              "'ce+dice'")

    def to_dict(self) -> dict[str, Any]:
        """Plain types (a ``UNetConfig`` as its dict), for JSON and checkpoints."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(self.preset, UNetConfig):
            out["preset"] = self.preset.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The config of ``to_dict``'s output; an unknown key is an error naming it."""
        check_keys("training options", data, [f.name for f in dataclasses.fields(cls)])
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        """The config in a JSON file: a run's ``config.json`` (its ``"config"`` entry) or a
        ``TrainConfig.to_dict()`` object. An unknown key is an error naming it and the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the configuration file {path}: {exc}") from exc
        if isinstance(data, dict) and data.get("command") == "train" and isinstance(data.get("config"), dict):
            data = data["config"]  # a run's config.json: the options sit beside versions and results
        if not isinstance(data, dict):
            raise ConfigError(f"{path} holds no training options (a JSON object, or a run's config.json)")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    def check(self) -> None:
        """Validate every option; raise ConfigError naming the option and the valid values."""
        if not self.data:
            raise ConfigError("no training data: give `data`, a region store (made by gigaseg prepare)")
        if not self.out:
            raise ConfigError("no run folder: give `out`, a new or empty folder")
        if not isinstance(self.preset, UNetConfig):
            check_choice("preset", self.preset, PRESETS)
        if self.classes is not None:
            check_class_names(self.classes, "`classes`")
            if (isinstance(self.preset, UNetConfig) and self.preset.out_channels != 1
                    and self.preset.out_channels != len(self.classes)):
                raise ConfigError(f"`preset` has out_channels={self.preset.out_channels} but {len(self.classes)} "
                                  f"`classes` are given ({', '.join(self.classes)}): give one class name per output "
                                  "channel")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("loss", self.loss, TRAIN_LOSSES)
        if self.classes is not None:
            self.check_classes()
        check_choice("jitter", self.jitter, JITTERS)
        # every value may come from a file (--config, a checkpoint): types and ranges
        for name in ("lr", "min_lr_ratio", "decay_gamma", "weight_decay", "threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"`{name}={value!r}` must be a finite number")
        for name in ("steps", "regions_per_step"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"`{name}={getattr(self, name)!r}` must be an integer >= 1")
        for name in ("warmup", "val_every", "ckpt_every", "keep_every", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"`{name}={getattr(self, name)!r}` must be an integer >= 0")
        if self.decay_every is not None and (not isinstance(self.decay_every, int) or self.decay_every < 1):
            raise ConfigError(f"`decay_every={self.decay_every!r}` must be an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"`lr={self.lr!r}` must be a positive number, e.g. 0.01")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"`min_lr_ratio={self.min_lr_ratio!r}` must be between 0 and 1")
        if not 0 < self.decay_gamma <= 1:
            raise ConfigError(f"`decay_gamma={self.decay_gamma!r}` must be in (0, 1]")
        if not self.weight_decay >= 0:
            raise ConfigError(f"`weight_decay={self.weight_decay!r}` must be >= 0")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"`threshold={self.threshold!r}` must be strictly between 0 and 1")
        if self.read_workers is not None and (not isinstance(self.read_workers, int) or self.read_workers < 1):
            raise ConfigError(f"`read_workers={self.read_workers!r}` must be an integer >= 1")
        for name in ("data", "out", "val_data", "resume", "init"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                raise ConfigError(f"`{name}={value!r}` must be a path (a string)")
        check_number("jitter_strength", self.jitter_strength)
        check_number("tile", self.tile, none_ok=True)
        for name in ("augment", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}={getattr(self, name)!r}` must be true or false")
        check_memory_budget(self.memory_budget)
