"""Slide-level heads: a local trunk, a global pooling and a small head, trained end to end on a
whole gigapixel image with the exact gradient (NOTE [Slide heads]).

``SlideClassifier(trunk, head, pool)`` is the model: ``head(pool(trunk(x)))``, the pooling over
every output pixel of the trunk. ``slide_backward`` computes its loss against an integer class
label and the exact gradient of every parameter, trunk and head, reading the image tile by tile;
``slide_predict`` gives its class probabilities in one pass over the tiles. ``tiled_backward``
and ``tiled_predict`` hand a ``SlideClassifier`` to these two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputError, UnsupportedModelError
from .arrays import ImageLike
from .backward import _accumulate
from .planner import _prepare, check_local, plan
from .reading import _HEAP, _check_read_workers, _progress, _read_ahead
from .tiles import _as_input, _read_crop, _Tile, _tile_list, input_channels_last, input_multiple

#: The ``pool`` choices of :class:`SlideClassifier`.
POOLS = ("mean", "max", "attention")
#: The losses of :func:`slide_backward`.
SLIDE_LOSSES = ("ce",)

# NOTE [Slide heads]
# A SlideClassifier's logits are head(f), f = pool(h) the (1, K) pooling over all N = H W output
# pixels of the local trunk's K feature maps h_i. Only f couples the pixels, so, as for the Dice
# sums (NOTE [Two-pass Dice]), pass 1 runs the trunk tile by tile without autograd and gathers
# what f needs from each tile's core; the head then runs once, with autograd, on f as a leaf:
# the loss, the head's parameter gradients and g = dL/df. Pass 2 backpropagates through the
# trunk, tile by tile, a surrogate whose gradient (to the tile's features and, through them,
# the trunk's parameters) is exactly the tile's share of the whole-image gradient:
#   mean:      f = sum_i h_i / N;  the surrogate is g . sum_core(h_i) / N.
#   max:       f_c = h_c at the pixel i_c where channel c is largest (on an exact tie, which
#              continuous features almost never have, the first in row-major order across tiles,
#              where whole-image autograd's max may pick another; copies of one value, as
#              nearest upsampling makes, give the same gradient whichever); pass 1 keeps each channel's
#              max and its pixel, and pass 2 runs only the tiles holding some i_c,
#              with the surrogate sum over those channels of g_c h_c(i_c): at most K tiles.
#   attention: a_i = w . h_i (w a parameter of K numbers), s = softmax(a) over all pixels,
#              f = sum_i s_i h_i. Pass 1 keeps the running max m of a, Z = sum exp(a_i - m) and
#              F = sum exp(a_i - m) h_i (each tile's sums rescaled when m grows), f = F / Z.
#              Since g . df = sum_i s_i g . dh_i + sum_i s_i (g . (h_i - f)) da_i, the surrogate
#              sum_core exp(a_i - m) / Z * (g . (h_i - f)), Z, f, g held constant, has exactly
#              the tile's share of the gradient, for the trunk through h_i and a_i and for w.
# The sums are kept in float64 (on MPS, which has none, in float32). Each tile's core features
# equal the whole image's (NOTE [Exact tiling]), so the result equals autograd on
# ``SlideClassifier(model_input(image))`` up to summation order; the parameters' ``.grad``
# changes only once every tile has succeeded.


class SlideClassifier(nn.Module):
    """A slide-level classifier: ``head(pool(trunk(x)))``, trained by the tiled engine.

    Args:
        trunk: a local ``nn.Module`` (one the tiled engine accepts: ``check_local``) giving K
            feature maps at the input's resolution, e.g. ``gigaseg.UNet(UNetConfig(out_channels=K))``.
        head: an ``nn.Module`` on the pooled (1, K) features giving (1, C) class logits, e.g. an
            MLP; it runs once per step, on the whole image's pooled vector.
        pool: ``"mean"``, ``"max"`` (per channel, over every pixel) or ``"attention"``
            (``softmax(w . h_i)``-weighted mean of the pixels' features, ``w`` the parameter
            ``attention`` of K numbers, zero at first: the mean).
        features: K, the trunk's output channels; derived from the trunk when not given.

    ``forward(x)`` on the whole (1, C_in, H, W) input is the definition the tiled engine is exact
    to: ``tiled_backward(classifier, image, label, loss="ce")`` and ``tiled_predict(classifier,
    image)`` (NOTE [Slide heads]).
    """

    #: How the engine's entry points recognize a slide-level model without importing this module
    #: (it imports them): tiled_backward and tiled_predict call ``_tiled_backward`` and
    #: ``_tiled_predict``; iter_predict and plan refuse it (NOTE [Slide heads]).
    tiled_slide_head = True

    def _tiled_backward(self, image: ImageLike, label: int, **options: Any) -> float:
        return slide_backward(self, image, label, **options)

    def _tiled_predict(self, image: ImageLike, **options: Any) -> np.ndarray:
        return slide_predict(self, image, **options)

    def __init__(self, trunk: nn.Module, head: nn.Module, pool: str = "mean", *, features: int | None = None) -> None:
        super().__init__()
        if not isinstance(trunk, nn.Module):
            raise UnsupportedModelError(
                f"the trunk must be an nn.Module made of local layers (e.g. gigaseg.UNet); got {type(trunk).__name__}")
        if not isinstance(head, nn.Module):
            raise UnsupportedModelError(
                f"the head must be an nn.Module mapping the pooled (1, K) features to (1, C) logits "
                f"(e.g. nn.Sequential(nn.Linear(K, 16), nn.ReLU(), nn.Linear(16, C))); got {type(head).__name__}")
        if not isinstance(pool, str) or pool not in POOLS:
            raise ConfigError(f"pool {pool!r} is not valid: use one of {', '.join(repr(p) for p in POOLS)}")
        self.trunk = trunk
        self.head = head
        self.pool = pool
        self._multiple: int | None = None  # what the whole input is zero-padded to (the engine's multiple)
        if features is None:
            geometry: Any = check_local(trunk)
            k, self._multiple = int(geometry.out_channels), input_multiple(geometry)
        else:
            k = features
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"features must be a positive integer (the trunk's output channels), got {k!r}")
        self.features = int(k)
        if pool == "attention":
            p = next(iter(trunk.parameters()), None)
            self.attention = nn.Parameter(torch.zeros(self.features, dtype=p.dtype if p is not None else None,
                                                      device=p.device if p is not None else None))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The (1, K) pooled features of the whole input ``x`` (1, C_in, H, W): the trunk runs on
        ``x`` zero-padded at the bottom and right to the engine's multiple of its total stride,
        and its output is cropped back to (H, W), as the engine's reference (``model_input``)."""
        if self._multiple is None:
            self._multiple = input_multiple(check_local(self.trunk))
        height, width = x.shape[2], x.shape[3]
        m = self._multiple
        x = nn.functional.pad(x, (0, -width % m, 0, -height % m))
        h: torch.Tensor = self.trunk(x)[:, :, :height, :width].flatten(2)  # (1, K, N)
        if self.pool == "mean":
            return h.mean(dim=2)
        if self.pool == "max":
            return h.max(dim=2).values
        s = torch.softmax(torch.einsum("k,bkn->bn", self.attention, h), dim=1)
        return torch.einsum("bn,bkn->bk", s, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C) class logits of the whole input ``x`` (1, C_in, H, W)."""
        out: torch.Tensor = self.head(self.pooled(x))
        return out

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}, features={self.features}"


# --- the passes ------------------------------------------------------------------------------


@dataclass
class _Pooled:
    """What pass 1 gathers (NOTE [Slide heads]), in float64 (float32 on MPS)."""

    pool: str
    n: int  # output pixels N
    total: torch.Tensor  # mean: sum of h; attention: F = sum exp(a - m) h
    best: torch.Tensor | None = None  # max: each channel's max so far
    where: list[tuple[_Tile, int, int] | None] | None = None  # max: its tile and pixel in the tile's core
    m: float = -math.inf  # attention: the max of a so far
    z: float = 0.0  # attention: sum exp(a - m)

    def features(self) -> torch.Tensor:
        """The pooled (K,) vector f."""
        if self.pool == "mean":
            return self.total / self.n
        if self.pool == "max":
            assert self.best is not None
            return self.best
        return self.total / self.z


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


@dataclass
class _Run:
    """One call's model, device and tiling."""

    model: SlideClassifier
    image: ImageLike
    device: torch.device
    dtype: torch.dtype
    multiple: int
    channels_last: bool  # the input layout the engine gives this trunk (NOTE [Input layout])
    tiles: list[_Tile]
    n: int
    workers: int
    progress: bool

    def features(self, crop: np.ndarray, t: _Tile) -> torch.Tensor:
        """The trunk's (K, h, w) features over tile ``t``'s core (autograd as the caller has it)."""
        rows, cols = t.core_in_crop
        h: torch.Tensor = self.model.trunk(_as_input(crop, self.device, self.dtype, self.multiple,
                                                     self.channels_last))
        return h[0][:, rows, cols]


def _start(model: SlideClassifier, image: ImageLike, tile: int | Sequence[int] | None,
           memory_budget: int | str | None, device: str | torch.device | None, progress: bool,
           read_workers: int | None, mode: str) -> _Run:
    if not isinstance(model, SlideClassifier):
        raise UnsupportedModelError(f"expected a gigaseg.SlideClassifier, got {type(model).__name__}")
    if not isinstance(model.head, nn.Module):
        raise UnsupportedModelError(f"the SlideClassifier's head must be an nn.Module, got {type(model.head).__name__}")
    geometry: Any = check_local(model.trunk)
    stride = int(geometry.total_stride)
    # check the image, move the trunk; the tile is planned below when not given
    geometry, height, width, dev, dtype, th, tw = _prepare(model.trunk, image, tile if tile is not None else stride,
                                                           None, device, mode)
    if tile is None:
        # NOTE: planned as a segmentation model's step without the compiled CPU kernels (pass 2
        # runs the trunk with autograd on PyTorch); the head and the pooled sums are small
        th, tw = plan(geometry, height, width, memory_budget=memory_budget, mode=mode, dtype=dtype,
                      device=dev if dev.type == "cuda" else None).tile
    if int(geometry.out_channels) != model.features:
        raise ConfigError(f"the trunk gives {geometry.out_channels} feature maps but the SlideClassifier was "
                          f"built for features={model.features}")
    model.to(dev)
    return _Run(model, image, dev, dtype, input_multiple(geometry), input_channels_last(geometry),
                _tile_list(height, width, th, tw, geometry),
                height * width, _check_read_workers(read_workers, dev), progress)


def _gather(run: _Run) -> _Pooled:
    """Pass 1: the trunk over every tile without autograd, and what the pooling needs."""
    model, acc = run.model, _acc_dtype(run.device)
    k = model.features
    pooled = _Pooled(model.pool, run.n, torch.zeros(k, dtype=acc, device=run.device))
    if model.pool == "max":
        pooled.best = torch.full((k,), -math.inf, dtype=acc, device=run.device)
        pooled.where = [None] * k
    w = model.attention.detach().to(acc) if model.pool == "attention" else None
    read = lambda t: _read_crop(run.image, t)  # noqa: E731
    with torch.no_grad():
        for t, crop in _progress(_read_ahead(run.tiles, read, run.workers), len(run.tiles), run.progress,
                                 f"{model.pool} pooling"):
            _HEAP(t)
            h = run.features(crop, t).to(acc).flatten(1)  # (K, n)
            del crop
            if model.pool == "mean":
                pooled.total += h.sum(dim=1)
            elif model.pool == "max":
                _merge_max(pooled, t, h)
            else:
                assert w is not None
                a = w @ h  # (n,)
                m_t = float(a.max())
                m = max(pooled.m, m_t)
                e = torch.exp(a - m)
                scale = math.exp(pooled.m - m) if pooled.m > -math.inf else 0.0
                pooled.total.mul_(scale).add_(h @ e)
                pooled.z = pooled.z * scale + float(e.sum())
                pooled.m = m
    return pooled


def _merge_max(pooled: _Pooled, t: _Tile, h: torch.Tensor) -> None:
    """Channel maxima of a tile's (K, n) core features merged into ``pooled``: a tile's max
    replaces the one so far if larger, or equal and earlier in row-major order (NOTE [Slide heads])."""
    assert pooled.best is not None and pooled.where is not None
    values, idx = h.max(dim=1)
    width = t.x1 - t.x0
    for c in np.flatnonzero((values >= pooled.best).cpu().numpy()):
        y, x = divmod(int(idx[c]), width)
        old = pooled.where[c]
        if values[c] == pooled.best[c] and old is not None and (old[0].y0 + old[1], old[0].x0 + old[2]) < (t.y0 + y,
                                                                                                       t.x0 + x):
            continue
        pooled.best[c] = values[c]
        pooled.where[c] = (t, y, x)


def _head(model: SlideClassifier, f: torch.Tensor, label: int | None, dtype: torch.dtype,
          params: Sequence[nn.Parameter]) -> tuple[torch.Tensor, float, torch.Tensor | None, list[torch.Tensor | None]]:
    """The head on the pooled features ``f`` (K,): (the (C,) logits, the CE loss against
    ``label`` (0 without one), g = dL/df and the head's parameter gradients (None without one))."""
    leaf = f.to(dtype).unsqueeze(0).detach().requires_grad_(label is not None)
    with torch.set_grad_enabled(label is not None):
        logits = _logits(model, leaf)
        if label is None:
            return logits.detach()[0], 0.0, None, []
        loss = nn.functional.cross_entropy(logits, torch.tensor([label], device=logits.device))
        grads = torch.autograd.grad(loss, [leaf, *params], allow_unused=True)
    return logits.detach()[0], float(loss.detach()), grads[0], list(grads[1:])


def _logits(model: SlideClassifier, f: torch.Tensor) -> torch.Tensor:
    logits = model.head(f)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != 1:
        raise UnsupportedModelError(
            f"the SlideClassifier's head must map the pooled (1, {model.features}) features to (1, C) class "
            f"logits; it gave {tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    return logits


def _check_label(model: SlideClassifier, label: object, dtype: torch.dtype, device: torch.device) -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise InputError(f"label must be an integer class index (a slide-level label), got {label!r} "
                         f"({type(label).__name__}); pass e.g. int(label)")
    with torch.no_grad():
        classes = _logits(model, torch.zeros((1, model.features), dtype=dtype, device=device)).shape[1]
    if not 0 <= int(label) < classes:
        raise InputError(f"label {int(label)} is not a class index 0..{classes - 1}: the head gives {classes} logits")
    return int(label)


def _backward_tiles(run: _Run, pooled: _Pooled, g: torch.Tensor,
                    params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    """Pass 2: each tile's exact share of the gradient of the trunk's (and the attention's)
    parameters, summed over the tiles (NOTE [Slide heads])."""
    model = run.model
    grads = [torch.zeros_like(p) for p in params]
    tiles = run.tiles
    channels: dict[_Tile, list[tuple[int, int, int]]] = {}
    if model.pool == "max":
        assert pooled.where is not None
        for c, spot in enumerate(pooled.where):
            assert spot is not None
            channels.setdefault(spot[0], []).append((c, spot[1], spot[2]))
        tiles = [t for t in tiles if t in channels]
    g = g.to(run.dtype)
    f = pooled.features().to(run.dtype)
    read = lambda t: _read_crop(run.image, t)  # noqa: E731
    for t, crop in _progress(_read_ahead(tiles, read, run.workers), len(tiles), run.progress, "backward"):
        _HEAP(t)
        h = run.features(crop, t)  # (K, h, w), with autograd
        del crop
        if model.pool == "mean":
            surrogate = torch.einsum("k,khw->", g, h) / pooled.n
        elif model.pool == "max":
            surrogate = sum((g[c] * h[c, y, x] for c, y, x in channels[t]), torch.zeros((), dtype=run.dtype,
                                                                                     device=run.device))
        else:
            a = torch.einsum("k,khw->hw", model.attention, h)
            s = torch.exp(a - pooled.m) / pooled.z
            surrogate = (s * (torch.einsum("k,khw->hw", g, h) - g @ f)).sum()
        for acc, gp in zip(grads, torch.autograd.grad(surrogate, params, allow_unused=True)):
            if gp is not None:
                acc += gp
    return grads


# --- the entry points ------------------------------------------------------------------------


def slide_backward(
    model: SlideClassifier,
    image: ImageLike,
    label: int,
    *,
    loss: str = "ce",
    memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    read_workers: int | None = None,
) -> float:
    """The slide-level loss of ``model`` on the whole ``image`` against ``label`` and its exact
    gradient, computed tile by tile (NOTE [Slide heads]); ``tiled_backward`` calls this for a
    ``SlideClassifier``.

    Accumulates into every parameter's ``.grad`` (trunk, head, attention) what
    ``cross_entropy(model(model_input(image)), [label]).backward()`` would, up to summation
    order; on any error ``.grad`` is left as it was.

    Args:
        model: a ``SlideClassifier``.
        image: (H, W, C) array-like, read tile by tile (as for ``tiled_backward``).
        label: the slide's class, an integer 0..C-1 (C: the head's logits).
        loss: ``"ce"`` (softmax cross-entropy), the only one.
        memory_budget, tile, device, progress, read_workers: as for ``tiled_backward``.

    Returns:
        The loss value.
    """
    if loss not in SLIDE_LOSSES:
        raise ConfigError(f"loss {loss!r} is not a slide-level loss: a SlideClassifier trains with loss='ce' "
                          "(softmax cross-entropy against the slide's class index)")
    run = _start(model, image, tile, memory_budget, device, progress, read_workers, "train")
    label = _check_label(model, label, run.dtype, run.device)
    head_params = [p for p in model.head.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head_params}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    if not params and not head_params:
        raise ConfigError("the model has no parameter that requires grad; nothing to backpropagate")
    pooled = _gather(run)
    _, value, g, head_grads = _head(model, pooled.features(), label, run.dtype, head_params)
    assert g is not None
    grads = _backward_tiles(run, pooled, g[0], params) if params else []
    _accumulate(head_params, [torch.zeros_like(p) if gp is None else gp for p, gp in zip(head_params, head_grads)])
    _accumulate(params, grads)
    return value


def slide_predict(
    model: SlideClassifier,
    image: ImageLike,
    *,
    memory_budget: int | str | None = None,
    tile: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    read_workers: int | None = None,
    logits: bool = False,
) -> np.ndarray:
    """The class probabilities ``softmax(model(model_input(image)))`` of the whole ``image``, a
    (C,) numpy array (float64 for a float64 model, else float32), from one pass over the tiles;
    with ``logits``, ``model(model_input(image))`` itself. ``tiled_predict`` calls this for a
    ``SlideClassifier``. The other arguments as for ``slide_backward``."""
    run = _start(model, image, tile, memory_budget, device, progress, read_workers, "predict")
    pooled = _gather(run)
    z, _, _, _ = _head(model, pooled.features(), None, run.dtype, [])
    z = z.double() if run.dtype == torch.float64 else z.float()
    return (z if logits else torch.softmax(z, dim=0)).cpu().numpy()
