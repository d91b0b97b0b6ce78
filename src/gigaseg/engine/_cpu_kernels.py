"""Compiled CPU kernels for the U-Net's two full-resolution layers, forward and backward.

On a CPU, nearly all of a ``paper`` model's work is in its first convolution (15 x 15, stride 4,
3 -> 2 channels) and its head (the 3 x 3 output convolution over the upsampled features and the
image). PyTorch's kernels run these oddly shaped layers far below the machine's speed. The
kernels here (numba) compute them from the uint8 crop directly, and the head only over the
crop's core, which the engine keeps; the layers in between stay in PyTorch. See NOTE [CPU
kernels] and NOTE [CPU kernels, backward].

Used by the engine for a float32 model on the CPU when numba is installed: ``predict_core``
wherever no gradients are needed (prediction, validation), ``core_sums`` and
``backward_core`` for the two passes of a training step (with the loss's own sums and
gradient fused in). Everything else goes through ``UNet.forward`` and autograd.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, ParamSpec, TypeVar, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from .. import _view_kernels

if TYPE_CHECKING:
    from ..model import UNet, UNetConfig

_P = ParamSpec("_P")
_R = TypeVar("_R")

# The kernels' arrays: uint8 crops and masks, float32 activations and weights, float64 sums.
_U8 = NDArray[np.uint8]
_F32 = NDArray[np.float32]
_F64 = NDArray[np.float64]

# NOTE [CPU kernels]
# Both kernels vectorize along image rows. The uint8 input is rearranged once ("space to depth"
# along x only): xp[r, c, p, j] = crop[r - PR, s (j - PC) + p, c], zero outside the image, so a
# tap of the stride-s first convolution at column offset d reads phase d mod s shifted by
# floor(d / s) low-resolution columns: contiguous memory for every tap. xp stays uint8 (3 bytes
# a pixel, not 12: the memory of a training tile) and the kernels take the weights of the image
# channels divided by 255 (so W x / 255 up to float32 rounding). The first convolution
# groups the taps of one phase (NSH shifts) in the innermost loop so that its accumulators
# stay in registers across them. The head computes, for each output row and column phase u,
#   logit[y, s j + u] = b + sum_{c, dy, dx} W[c, dy, dx] x[y + dy, s j + u + dx]
#                       + sum_{c', m, n} K[(y mod s) s + u, c', m, n] d[y div s + m, j + n]
# with dy, dx, m, n centred on 0, K the model's sub-pixel kernel (NOTE [Decoder convolutions])
# and d the level-1 decoder output: the same sums as the model, in another order: the logits agree with
# ``UNet.forward`` to float32 rounding (tests/test_cpu_kernels.py).

try:  # numba is a dependency, but keep PyTorch's path if it cannot load on some platform
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None  # type: ignore[assignment]  # every use checks for None first (eligible_config)

_BROKEN: list[str] = []  # set when numba failed to compile the kernels in this process


def eligible(model: nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    """True when the kernels can run ``model``: a float32 UNet on the CPU, first stride > 1,
    ReLU or leaky ReLU, no input normalization, one output channel, numba importable."""
    from ..model import UNet

    return isinstance(model, UNet) and eligible_config(model.config, dtype, device)


def eligible_config(config: UNetConfig, dtype: torch.dtype, device: torch.device) -> bool:
    """``eligible`` for a model of this ``UNetConfig`` (the planner asks before any model exists)."""
    if numba is None or _BROKEN or _view_kernels.switched_off():
        return False
    return (device.type == "cpu" and dtype == torch.float32 and not config.normalizes
            and config.strides[0] > 1 and config.activation in ("relu", "leaky_relu")
            and config.out_channels == 1)  # the head and loss kernels compute one logit a pixel


def predict_core(model: nn.Module, crop: _U8, rows: slice, cols: slice) -> torch.Tensor | None:
    """Logits of ``model`` on the uint8 (h, w, C) ``crop``, rows ``rows`` and columns ``cols``
    only: equal to ``model(crop / 255)[0, 0][rows, cols]`` up to float32 rounding.

    Returns None, with a warning and the kernels off for the rest of the process, when numba
    cannot compile them here (the caller then runs the model itself).
    """
    return _guarded(_predict_core, _as_unet(model), crop, rows, cols)


class LossWeights(NamedTuple):
    """dLoss/dlogit = bce (p - y) + (inter y + p_coef) p (1 - p), with p = sigmoid(logit): the
    mean BCE's share (``bce`` = 1 / N, or 0 without BCE) and the two-pass Dice's (NOTE
    [Two-pass Dice] in ``gigaseg.engine``; 0 and 0 without Dice)."""

    bce: float
    inter: float
    p_coef: float


def tile_input(model: nn.Module, crop: _U8) -> TileInput | None:
    """The kernels' form of the uint8 (h, w, C) ``crop`` for ``core_sums`` and ``backward_core``
    (the crop itself is no longer needed: a caller may drop it). None when numba cannot
    compile the kernels here (see ``predict_core``)."""
    return _guarded(TileInput, _as_unet(model), crop)


def core_sums(model: nn.Module, inp: TileInput, rows: slice, cols: slice, y: _U8,
              bce: bool, ignore: bool = False) -> tuple[float, float, float] | None:
    """(sum p y, sum p, sum BCE (0 unless ``bce``)) over ``rows`` x ``cols`` of a crop, with p
    the model's probabilities there and ``y`` the uint8 mask of that window; float64 sums.
    With ``ignore`` (``y`` holds 255s) the sums leave out the pixels where ``y`` is 255.
    None when numba cannot compile the kernels here (see ``predict_core``)."""
    return _guarded(_core_sums, _as_unet(model), inp, rows, cols, y, bce, ignore)


def backward_core(model: nn.Module, inp: TileInput, rows: slice, cols: slice, y: _U8,
                  weights: LossWeights, bce_sum: bool = False, ignore: bool = False,
                  ) -> tuple[dict[torch.Tensor, torch.Tensor], float] | None:
    """Parameter gradients of a loss of ``model``'s logits on a crop, over ``rows`` x ``cols``.

    The loss is the tile's share of a whole-image loss whose gradient with respect to each
    logit z of the window is given by ``weights`` and the uint8 mask ``y`` of the window (the
    rest of the crop's logits do not enter the loss). Returns {parameter: dLoss/dparameter}
    for every parameter of ``model`` that requires grad: what ``torch.autograd.grad`` through
    ``model`` would give, up to float32 rounding, and the sum of the window's BCE when
    ``bce_sum`` (else 0). With ``ignore`` (``y`` holds 255s) the pixels where ``y`` is 255 have
    a zero gradient and no BCE. The full-resolution layers run on compiled kernels (NOTE [CPU
    kernels, backward]), the layers in between on PyTorch's autograd. ``inp`` comes from
    ``tile_input`` for the same model and parameters. None when numba cannot compile the
    kernels here (see ``predict_core``).
    """
    return _guarded(_backward_core, _as_unet(model), inp, rows, cols, y, weights, bce_sum, ignore)


def _guarded(fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R | None:
    try:
        return fn(*args, **kwargs)
    except numba.core.errors.NumbaError as exc:
        import warnings

        _BROKEN.append(str(exc))
        warnings.warn(f"gigaseg: numba could not compile the CPU kernels ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}); using PyTorch's kernels "
                      "instead (slower, same results)", RuntimeWarning, stacklevel=3)
        return None


_THREADS = threading.local()  # numba's thread count is per calling thread


def _match_threads() -> None:
    """Run numba's parallel loops on as many threads as PyTorch's (numba's get and set cost
    ~0.3 and ~1 ms: remembered, set only on change)."""
    # numba.config sets its options from the environment at import time: no static attribute
    threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    if getattr(_THREADS, "n", None) != threads:
        numba.set_num_threads(threads)
        _THREADS.n = threads


class TileInput:
    """The kernels' view of one crop: its planar input, the first convolution's output ``e1``
    (after the activation, (H/s, W/s, c1)), and the geometry both full-resolution layers share."""

    def __init__(self, model: UNet, crop: _U8) -> None:
        cfg = self.config = model.config
        self.s = s = cfg.strides[0]
        self.h, self.w = crop.shape[:2]
        total = cfg.total_stride
        self.hp, self.wp = -(-self.h // total) * total, -(-self.w // total) * total  # the model's padding
        self.r0 = r0 = cfg.encoder_kernels[0] // 2
        rh = cfg.decoder_kernels[0] // 2
        self.pr = max(r0, rh)
        self.lo = -(-max(r0, rh) // s)  # low-resolution columns of zeros each side
        _match_threads()
        self.xp = _planar(np.ascontiguousarray(crop), self.hp, self.wp, self.pr, self.lo, s)
        enc = model.encoder[0]
        conv = _first_conv(model)
        self.slope = np.float32(_slope(enc))
        w4, nsh = _phase_weights(conv.weight.detach().numpy() / np.float32(255), s)  # xp is uint8
        self.nsh = nsh
        self.e1 = np.empty((self.hp // s, self.wp // s, cfg.channels[0]), np.float32)
        _first_conv_kernel(cfg.channels[0], nsh)(
            self.xp, w4, _bias(conv).detach().numpy(), self.slope, s, *self.first_offsets(), self.e1)

    def e1_tensor(self) -> torch.Tensor:
        """``e1`` as the (1, c1, H/s, W/s) tensor the layers in between take (channels-last memory)."""
        return torch.from_numpy(self.e1).permute(2, 0, 1).unsqueeze(0)

    def first_offsets(self) -> tuple[int, int]:
        """Where the first convolution's window starts in ``xp``: (row, low-resolution column)."""
        return self.pr - self.r0, self.lo - (-(-self.r0 // self.s))

    def head(self, model: UNet, d1: torch.Tensor) -> tuple[_F32, _F32, _F32]:
        """The head's inputs: d1 zero-padded by the sub-pixel reach (c1, H/s + 2R, W/s + 2R), the
        sub-pixel kernel of its d1 channels (s*s, c1, 2R + 1, 2R + 1), its image channels' weights."""
        from ..model import subpixel_kernel

        c1 = self.config.channels[0]
        weight = model.head.conv.weight.detach()
        ksub = subpixel_kernel(weight[:, :c1], self.s).contiguous().numpy()
        reach = ksub.shape[-1] // 2
        dp = np.zeros((c1, self.hp // self.s + 2 * reach, self.wp // self.s + 2 * reach), np.float32)
        dp[:, reach:-reach or None, reach:-reach or None] = d1[0].detach().numpy()
        return dp, ksub, (weight[0, c1:] / 255).contiguous().numpy()  # xp is uint8

    def logits(self, model: UNet, dp: _F32, ksub: _F32, ws: _F32, rows: slice, cols: slice,
               out: _F32 | None = None) -> _F32:
        """The logits over ``rows`` x ``cols``, in ``out`` (a float32 array of that shape) if given."""
        y0, y1, _ = rows.indices(self.h)
        x0, x1, _ = cols.indices(self.w)
        if out is None:
            out = np.empty((y1 - y0, x1 - x0), np.float32)
        kernel = _head3 if self.config.decoder_kernels[0] == 3 else _head
        kernel(self.xp, self.pr, self.lo, dp, ws, ksub, np.float32(_bias(model.head.conv).item()), self.s,
               y0, y1, x0, x1, out)
        return out


def _as_unet(model: nn.Module) -> UNet:
    """``model`` as the UNet that ``eligible`` let through (the engine refuses other models)."""
    return cast("UNet", model)


def _first_conv(model: UNet) -> nn.Conv2d:
    """The first convolution, ``model.encoder[0].conv`` (a UNet's blocks: a convolution, an activation)."""
    return cast(nn.Conv2d, model.encoder[0].conv)


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    """``conv.bias``, which every convolution of a UNet has."""
    return cast(torch.Tensor, conv.bias)


def _predict_core(model: UNet, crop: _U8, rows: slice, cols: slice) -> torch.Tensor:
    return torch.from_numpy(_logits(model, TileInput(model, crop), rows, cols))


def _logits(model: UNet, inp: TileInput, rows: slice, cols: slice) -> _F32:
    e1t = inp.e1_tensor()
    with torch.no_grad():
        d1 = model._decode(e1t)
    return inp.logits(model, *inp.head(model, d1), rows, cols)


def _core_sums(model: UNet, inp: TileInput, rows: slice, cols: slice, y: _U8,
               bce: bool, ignore: bool) -> tuple[float, float, float]:
    out = np.zeros(3)
    loss_sums = _loss_sums_ignore if ignore else _loss_sums  # NOTE [Ignore kernels]
    loss_sums(_logits(model, inp, rows, cols), y, bce, out)
    return float(out[0]), float(out[1]), float(out[2])


# NOTE [CPU kernels, backward]
# A training tile runs forward as in prediction, keeping e1 (the first layer's output) as the
# leaf of a PyTorch graph through the layers in between (``UNet._decode``), and then backward:
#  - head: with g = dLoss/dlogit over the core, in the layout of the forward kernel (per row,
#    column phase ux, low-resolution column j), the image weights' gradient is
#    sum g[y, s j + ux] xp[...] over the same taps as the forward pass, the sub-pixel kernel's
#    gradient dK[(y mod s) s + ux, c', m, n] = sum g[y, s j + ux] d[y div s + m, j + n], and the
#    gradient of d the transposed sum. dK goes back to the head's weights through the sub-pixel
#    rearrangement (``subpixel_kernel``, by autograd on the tiny kernel).
#  - layers in between: ``torch.autograd.grad`` of d1 with that gradient, down to e1.
#  - first convolution: through the activation (e1 > 0 exactly where its input is > 0, for
#    ReLU and leaky ReLU alike), then the weights' gradient
#    dW4[co, c, ky, p, t] = sum_{oy, ox} g1[co, oy, ox] xp[row0 + s oy + ky, c, p, col0 + ox + t],
#    the forward kernel's sum with the roles swapped, in the phase layout of ``_phase_weights``.
# Each thread sums its rows into float64 partial sums, added up at the end: the result does
# not depend on the number of threads beyond float32 rounding of each row's dot products.


def _backward_core(model: UNet, inp: TileInput, rows: slice, cols: slice, y: _U8, weights: LossWeights,
                   bce_sum: bool, ignore: bool) -> tuple[dict[torch.Tensor, torch.Tensor], float]:
    cfg = model.config
    s = inp.s
    e1t = inp.e1_tensor().requires_grad_(True)
    middle = [p for name, p in model.named_parameters()
              if p.requires_grad and not name.startswith(("encoder.0.", "head."))]
    with torch.enable_grad():
        d1 = model._decode(e1t)
    dp, ksub, ws = inp.head(model, d1)

    # head. The logits z and then, in the same memory, their gradient by column phase:
    # gq[i, ux, j] = dLoss/dz[i, s (j0 + j) + ux - x0] (zero where that is outside the window)
    y0, y1, _ = rows.indices(inp.h)
    x0, x1, _ = cols.indices(inp.w)
    j0 = x0 // s
    nj = -(-x1 // s) - j0
    buf = np.empty((y1 - y0, s * nj), np.float32)
    z = inp.logits(model, dp, ksub, ws, rows, cols, out=buf[:, x0 - j0 * s:x1 - j0 * s])
    gq = buf.reshape(y1 - y0, s, nj)
    loss_grad = _loss_grad_ignore if ignore else _loss_grad  # NOTE [Ignore kernels]
    g_sum, bce = loss_grad(z, y, np.float32(weights.bce), np.float32(weights.inter), np.float32(weights.p_coef),
                           bce_sum, s, x0 - j0 * s, gq)
    del z
    dws = np.zeros(ws.shape, np.float64)
    dk = np.zeros(ksub.shape, np.float64)
    _head_weight_grad(inp.xp, inp.pr, inp.lo, dp, gq, s, y0, j0, _chunks(y1 - y0), dws, dk)
    ddp = np.zeros_like(dp)
    del dp
    _head_input_grad(gq, ksub, s, y0, j0, ddp)
    del buf, gq  # the tile's peak is up to here: the middle's backward needs none of it
    reach = ksub.shape[-1] // 2
    grad_d1 = torch.from_numpy(np.ascontiguousarray(ddp[:, reach:-reach or None, reach:-reach or None]))[None]
    del ddp

    from ..model import channels_last, subpixel_kernel

    head = model.head.conv
    c1 = cfg.channels[0]
    w_low = head.weight.detach()[:, :c1].clone().requires_grad_(True)
    with torch.enable_grad():
        (g_low,) = torch.autograd.grad(subpixel_kernel(w_low, s), w_low,
                                       torch.from_numpy(dk.astype(np.float32)).reshape(ksub.shape))
    g_head = torch.cat([g_low, torch.from_numpy((dws / 255).astype(np.float32))[None]], dim=1)
    grads = {head.weight: g_head, _bias(head): torch.tensor([g_sum], dtype=torch.float32)}

    # layers in between
    if d1 is e1t:  # depth 1: the head reads e1 itself
        grad_e1 = grad_d1
    else:
        *g_mid, grad_e1 = torch.autograd.grad(d1, middle + [e1t], channels_last(grad_d1), allow_unused=True)
        grads.update((p, gp) for p, gp in zip(middle, g_mid) if gp is not None)

    # first convolution
    g1 = np.ascontiguousarray(grad_e1[0].numpy())  # (c1, H/s, W/s)
    g1 *= np.where(inp.e1.transpose(2, 0, 1) > 0, np.float32(1), inp.slope)
    enc = _first_conv(model)
    k = enc.weight.shape[-1]
    dw4 = np.zeros((c1, cfg.in_channels, k, s, inp.nsh), np.float64)
    _first_conv_weight_grad(inp.xp, g1, s, *inp.first_offsets(), _chunks(g1.shape[1]), dw4)
    phase, shift, _ = _phase_taps(k, s)
    dw = dw4[:, :, :, phase, shift] / 255  # inverse of _phase_weights; xp is uint8
    grads[enc.weight] = torch.from_numpy(dw.astype(np.float32))
    grads[_bias(enc)] = torch.from_numpy(g1.sum(axis=(1, 2), dtype=np.float64).astype(np.float32))
    return {p: g for p, g in grads.items() if p.requires_grad}, bce


def _chunks(rows: int) -> int:
    """How many row blocks the backward kernels split ``rows`` into (each with its own sums)."""
    return max(1, min(rows, 4 * numba.get_num_threads()))


def _slope(block: nn.Module) -> float:
    act = getattr(block, "act", None)
    return float(getattr(act, "negative_slope", 0.0))


def _phase_taps(k: int, s: int) -> tuple[np.ndarray, np.ndarray, int]:
    """For a K-tap stride-s convolution: the phase and the shift of each tap kx (offset
    d = kx - r goes to phase d mod s, shift floor(d / s) + ceil(r / s)), and NSH, the shifts."""
    r = k // 2
    lo = -(-r // s)
    d = np.arange(k) - r
    return d % s, d // s + lo, r // s + lo + 1


def _phase_weights(w: np.ndarray, s: int) -> tuple[np.ndarray, int]:
    """(Co, C, K, K) -> (Co, C, K, s, NSH), the layout of ``_phase_taps`` (zeros elsewhere)."""
    co, c, k, _ = w.shape
    phase, shift, nsh = _phase_taps(k, s)
    w4 = np.zeros((co, c, k, s, nsh), np.float32)
    w4[:, :, :, phase, shift] = w
    return w4, nsh


if numba is not None:

    def _planar(crop: _U8, hp: int, wp: int, pr: int, lo: int, s: int) -> _U8:
        """(h, w, C) uint8 -> (hp + 2 pr, C, s, wp / s + 2 lo) uint8 by column phase, zeros around."""
        return _planar_kernel(s, crop.shape[2])(crop, hp, wp, pr, lo)

    @functools.cache
    def _planar_kernel(s: int, c_in: int) -> Callable[[_U8, int, int, int, int], _U8]:
        """``_planar`` for stride ``s`` and ``c_in`` channels. With both fixed at compile time the
        inner loops unroll: 3.7x faster than with them as arguments (2.3 MP crops, s = 2, 4, 8)."""

        @njit(parallel=True, cache=True)
        def planar(crop: _U8, hp: int, wp: int, pr: int, lo: int) -> _U8:
            h, w, _ = crop.shape
            xp = np.empty((hp + 2 * pr, c_in, s, wp // s + 2 * lo), np.uint8)
            whole = w // s  # groups of s pixels, one per low-resolution column
            for r in prange(xp.shape[0]):
                dst = xp[r]
                y = r - pr
                if y < 0 or y >= h:
                    dst[:] = 0
                    continue
                src = crop[y]
                for c in range(c_in):
                    for p in range(s):
                        dst[c, p, :lo] = 0
                        dst[c, p, lo + whole:] = 0
                for j in range(whole):
                    for p in range(s):
                        for c in range(c_in):
                            dst[c, p, lo + j] = src[s * j + p, c]
                for x in range(whole * s, w):
                    for c in range(c_in):
                        dst[c, x % s, lo + x // s] = src[x, c]
            return xp

        return planar

    @functools.cache
    def _first_conv_kernel(co_n: int, nsh: int) -> Callable[
        [_U8, _F32, _F32, np.float32, int, int, int, _F32], None
    ]:
        """The stride-s first convolution + activation for ``co_n`` outputs and ``nsh`` shifts."""

        @njit(parallel=True, fastmath=True, cache=True)
        def first_conv(xp: _U8, w4: _F32, b: _F32, slope: np.float32, s: int, row0: int, col0: int,
                       out: _F32) -> None:
            # out[oy, ox, co] = act(b[co] + sum w4[co, c, ky, p, t] xp[row0 + s oy + ky, c, p, col0 + ox + t]),
            # with w4 the weights / 255
            c_in = xp.shape[1]
            k = w4.shape[2]
            ho, wq = out.shape[0], out.shape[1]
            for oy in prange(ho):
                acc = np.empty((co_n, wq), np.float32)
                row = np.empty(wq + nsh - 1, np.float32)
                for co in range(co_n):
                    acc[co, :] = b[co]
                for ky in range(k):
                    iy = row0 + s * oy + ky
                    for c in range(c_in):
                        for p in range(s):
                            src = xp[iy, c, p, col0:]
                            for q in range(wq + nsh - 1):  # uint8 -> float once per row use
                                row[q] = src[q]
                            # two output channels per pass: each input load feeds both
                            for co in range(0, co_n - 1, 2):
                                a0, a1 = acc[co], acc[co + 1]
                                w0, w1 = w4[co, c, ky, p], w4[co + 1, c, ky, p]
                                for ox in range(wq):
                                    v0, v1 = a0[ox], a1[ox]
                                    for t in range(nsh):
                                        v0 += w0[t] * row[ox + t]
                                        v1 += w1[t] * row[ox + t]
                                    a0[ox], a1[ox] = v0, v1
                            if co_n % 2:
                                a0 = acc[co_n - 1]
                                w0 = w4[co_n - 1, c, ky, p]
                                for ox in range(wq):
                                    v0 = a0[ox]
                                    for t in range(nsh):
                                        v0 += w0[t] * row[ox + t]
                                    a0[ox] = v0
                for ox in range(wq):
                    for co in range(co_n):
                        v = acc[co, ox]
                        out[oy, ox, co] = v if v > 0 else v * slope

        return first_conv

    @njit(parallel=True, fastmath=True, cache=True)
    def _head(xp: _U8, pr: int, lo: int, dp: _F32, ws: _F32, ksub: _F32, bias: np.float32, s: int,
              y0: int, y1: int, x0: int, x1: int, out: _F32) -> None:
        """out[y - y0, x - x0] = logit[y, x] for y0 <= y < y1, x0 <= x < x1 (NOTE [CPU kernels])."""
        c_in, kh = ws.shape[0], ws.shape[1]
        rh = kh // 2
        c1, n = ksub.shape[1], ksub.shape[2]
        j0 = x0 // s
        nj = -(-x1 // s) - j0
        for y in prange(y0, y1):
            jy = y // s
            uy = y % s
            tmp = np.empty((s, nj), np.float32)
            for ux in range(s):
                a = tmp[ux]
                a[:] = bias
                for c in range(c_in):
                    for dy in range(kh):
                        for dx in range(kh):
                            q = ux + dx - rh
                            wv = ws[c, dy, dx]
                            row = xp[y + dy - rh + pr, c, q % s, j0 + q // s + lo:]
                            for j in range(nj):
                                a[j] += wv * np.float32(row[j])
                for cd in range(c1):
                    for m in range(n):
                        for nn_ in range(n):
                            wv = ksub[uy * s + ux, cd, m, nn_]
                            drow = dp[cd, jy + m, j0 + nn_:]
                            for j in range(nj):
                                a[j] += wv * drow[j]
            _interleave(tmp, out[y - y0], j0 * s - x0, s)

    @njit(parallel=True, fastmath=True, cache=True)
    def _head3(xp: _U8, pr: int, lo: int, dp: _F32, ws: _F32, ksub: _F32, bias: np.float32, s: int,
               y0: int, y1: int, x0: int, x1: int, out: _F32) -> None:
        """``_head`` for a 3 x 3 head (so 3 x 3 sub-pixel taps): the three taps of a kernel row in
        one pass, which keeps the accumulator in registers across them."""
        c_in = ws.shape[0]
        c1 = ksub.shape[1]
        j0 = x0 // s
        nj = -(-x1 // s) - j0
        for y in prange(y0, y1):
            jy = y // s
            uy = y % s
            tmp = np.empty((s, nj), np.float32)
            for ux in range(s):
                a = tmp[ux]
                a[:] = bias
                # column offset dx - 1 of phase ux: phase (ux + dx - 1) mod s, shifted by its floor
                p0, o0 = (ux - 1) % s, j0 + (ux - 1) // s + lo
                p2, o2 = (ux + 1) % s, j0 + (ux + 1) // s + lo
                for c in range(c_in):
                    for dy in range(3):
                        r = y + dy - 1 + pr
                        g0, g1, g2 = xp[r, c, p0, o0:], xp[r, c, ux, j0 + lo:], xp[r, c, p2, o2:]
                        w0, w1, w2 = ws[c, dy, 0], ws[c, dy, 1], ws[c, dy, 2]
                        for j in range(nj):
                            a[j] += w0 * np.float32(g0[j]) + w1 * np.float32(g1[j]) + w2 * np.float32(g2[j])
                for cd in range(c1):
                    for m in range(3):
                        d = dp[cd, jy + m, j0:]
                        k = ksub[uy * s + ux, cd, m]
                        k0, k1, k2 = k[0], k[1], k[2]
                        for j in range(nj):
                            a[j] += k0 * d[j] + k1 * d[j + 1] + k2 * d[j + 2]
            _interleave(tmp, out[y - y0], j0 * s - x0, s)

    @njit(parallel=True, fastmath=True, cache=True)
    def _head_weight_grad(xp: _U8, pr: int, lo: int, dp: _F32, gq: _F32, s: int, y0: int, j0: int,
                          chunks: int, dws: _F64, dk: _F64) -> None:
        """dws[c, dy, dx] += sum g x and dk[u, c', m, n] += sum g d over the core (NOTE [CPU
        kernels, backward]); gq[i, ux, j] = dLoss/dlogit[y0 + i, s (j0 + j) + ux]."""
        ny, nj = gq.shape[0], gq.shape[2]
        c_in, kh = dws.shape[0], dws.shape[1]
        rh = kh // 2
        c1, n = dk.shape[1], dk.shape[2]
        pws = np.zeros((chunks,) + dws.shape)
        pk = np.zeros((chunks,) + dk.shape)
        for ch in prange(chunks):
            aws, ak = pws[ch], pk[ch]
            for i in range(ch * ny // chunks, (ch + 1) * ny // chunks):
                y = y0 + i
                jy, uy = y // s, y % s
                for ux in range(s):
                    g = gq[i, ux]
                    for c in range(c_in):
                        for dy in range(kh):
                            for dx in range(kh):
                                q = ux + dx - rh
                                row = xp[y + dy - rh + pr, c, q % s, j0 + q // s + lo:]
                                v = np.float32(0.0)
                                for j in range(nj):
                                    v += g[j] * np.float32(row[j])
                                aws[c, dy, dx] += v
                    for cd in range(c1):
                        for m in range(n):
                            for nn_ in range(n):
                                drow = dp[cd, jy + m, j0 + nn_:]
                                v = np.float32(0.0)
                                for j in range(nj):
                                    v += g[j] * drow[j]
                                ak[uy * s + ux, cd, m, nn_] += v
        for ch in range(chunks):
            dws += pws[ch]
            dk += pk[ch]

    @njit(parallel=True, fastmath=True, cache=True)
    def _head_input_grad(gq: _F32, ksub: _F32, s: int, y0: int, j0: int, ddp: _F32) -> None:
        """ddp[c', a, b] += sum K[u, c', m, n] g over the core positions that read d[a, b]."""
        ny, nj = gq.shape[0], gq.shape[2]
        c1, n = ksub.shape[1], ksub.shape[2]
        for a in prange(ddp.shape[1]):
            for m in range(n):
                for uy in range(s):
                    i = s * (a - m) + uy - y0
                    if i < 0 or i >= ny:
                        continue
                    for ux in range(s):
                        g = gq[i, ux]
                        for cd in range(c1):
                            for nn_ in range(n):
                                kv = ksub[uy * s + ux, cd, m, nn_]
                                drow = ddp[cd, a, j0 + nn_:]
                                for j in range(nj):
                                    drow[j] += kv * g[j]

    @njit(parallel=True, fastmath=True, cache=True)
    def _first_conv_weight_grad(xp: _U8, g1: _F32, s: int, row0: int, col0: int, chunks: int,
                                dw4: _F64) -> None:
        """dw4[co, c, ky, p, t] += sum_{oy, ox} g1[co, oy, ox] xp[row0 + s oy + ky, c, p, col0 + ox + t]."""
        co_n, ho, wq = g1.shape
        c_in, k, nsh = dw4.shape[1], dw4.shape[2], dw4.shape[4]
        part = np.zeros((chunks,) + dw4.shape)
        for ch in prange(chunks):
            acc = part[ch]
            row = np.empty(wq + nsh - 1, np.float32)
            for oy in range(ch * ho // chunks, (ch + 1) * ho // chunks):
                for ky in range(k):
                    iy = row0 + s * oy + ky
                    for c in range(c_in):
                        for p in range(s):
                            src = xp[iy, c, p, col0:]
                            for q in range(wq + nsh - 1):
                                row[q] = src[q]
                            for co in range(co_n):
                                gr = g1[co, oy]
                                for t in range(nsh):
                                    v = np.float32(0.0)
                                    for ox in range(wq):
                                        v += gr[ox] * row[ox + t]
                                    acc[co, c, ky, p, t] += v
        for ch in range(chunks):
            dw4 += part[ch]

    # NOTE [Vectorized exp and log]
    # The loss kernels take a sigmoid (one exp) and a BCE (one log) per pixel. numba compiles
    # np.exp and np.log to scalar libm calls, which keep the loops from vectorizing (pip's llvmlite
    # has no SVML); these two are plain float32 arithmetic, which LLVM vectorizes: exp(x) =
    # 2^k exp(r) with k = round(x / ln 2) (2^k written straight into the float's exponent bits)
    # and log(1 + e) = 2 atanh(e / (2 + e)), each a short polynomial. Their errors (3e-7 each,
    # relative: tests/test_cpu_kernels.py) are a few float32 roundings; with them the two loss kernels
    # take 2.2x less time (64 MP step, 400 MiB budget: 0.34 -> 0.14 s of 2.6 s).
    @njit(fastmath=True, cache=True, inline="always")
    def _exp_neg(x: np.float32) -> np.float32:
        """exp(x) for float32 x <= 0, within 3e-7 relative (NOTE [Vectorized exp and log])."""
        x = max(x, np.float32(-87.0))  # below, 2^k is no longer a normal float32
        k = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))  # round(x / ln 2)
        r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)  # x - k ln 2, |r| <= ln 2 / 2
        p = np.float32(1.0 / 5040)  # Taylor to r^7 / 7!: truncation below 5e-9
        p = p * r + np.float32(1.0 / 720)
        p = p * r + np.float32(1.0 / 120)
        p = p * r + np.float32(1.0 / 24)
        p = p * r + np.float32(1.0 / 6)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        # * 2^k; numpy's stubs type a scalar's view (and so this product) Any
        return p * np.int32((np.int32(k) + np.int32(127)) << np.int32(23)).view(np.float32)  # type: ignore[no-any-return]

    @njit(fastmath=True, cache=True, inline="always")
    def _log1p_unit(e: np.float32) -> np.float32:
        """log(1 + e) for float32 0 <= e <= 1, within 3e-7 relative: 2 atanh(u), u = e / (2 + e) <= 1/3,
        by its series to u^13 (truncation below 1e-8)."""
        u = e / (np.float32(2.0) + e)
        u2 = u * u
        q = np.float32(1.0 / 13)
        q = q * u2 + np.float32(1.0 / 11)
        q = q * u2 + np.float32(1.0 / 9)
        q = q * u2 + np.float32(1.0 / 7)
        q = q * u2 + np.float32(1.0 / 5)
        q = q * u2 + np.float32(1.0 / 3)
        q = q * u2 + np.float32(1.0)
        return np.float32(2.0) * u * q  # type: ignore[no-any-return]  # numpy's stubs: float32 / float32 is Any

    @njit(fastmath=True, cache=True, inline="always")
    def _sigmoid_bce(v: np.float32, t: np.float32, bce: bool) -> tuple[np.float32, np.float32]:
        """(sigmoid(v), the BCE of logit v against label t if ``bce`` else 0), without overflow:
        max(v, 0) - v t + log(1 + exp(-|v|)), as PyTorch computes it."""
        e = _exp_neg(-abs(v))
        r = np.float32(1.0) / (np.float32(1.0) + e)
        p = r if v >= 0 else e * r
        b = max(v, np.float32(0.0)) - v * t + _log1p_unit(e) if bce else np.float32(0.0)
        return p, b

    @njit(parallel=True, fastmath=True, cache=True)
    def _loss_sums(z: _F32, y: _U8, bce: bool, out: _F64) -> None:
        """out += (sum p y, sum p, sum BCE if ``bce``) over the logits ``z`` and the uint8 mask ``y``."""
        ny, nx = z.shape
        rows = np.zeros((ny, 3))
        for i in prange(ny):
            si = sp = sb = 0.0
            for j in range(nx):
                v = z[i, j]
                t = np.float32(y[i, j])
                p, b = _sigmoid_bce(v, t, bce)
                si += p * t
                sp += p
                sb += b
            rows[i, 0], rows[i, 1], rows[i, 2] = si, sp, sb
        for i in range(ny):
            for k in range(3):
                out[k] += rows[i, k]

    @njit(parallel=True, fastmath=True, cache=True)
    def _loss_grad(z: _F32, y: _U8, w_bce: np.float32, w_inter: np.float32, w_p: np.float32, bce: bool,
                   s: int, off: int, gq: _F32) -> tuple[float, float]:
        """gq[i, ux, j] = dLoss/dz at z[i, s j + ux - off] (``LossWeights``), 0 outside ``z``;
        returns (sum of the gradient, sum of the BCE over ``z`` when ``bce``). Row i of ``gq`` may
        share memory with row i of ``z`` (each row is read first)."""
        ny, nx = z.shape
        nj = gq.shape[2]
        rows = np.zeros((ny, 2))
        for i in prange(ny):
            gi = np.empty(nx, np.float32)  # the row's gradient in image order: a loop that vectorizes
            sg = sb = 0.0
            for x in range(nx):
                v = z[i, x]
                t = np.float32(y[i, x])
                p, b = _sigmoid_bce(v, t, bce)
                gv = w_bce * (p - t) + (w_inter * t + w_p) * p * (np.float32(1.0) - p)
                gi[x] = gv
                sg += gv
                sb += b
            for ux in range(s):  # then by column phase, over z's row, which is read by now
                g = gq[i, ux]
                for j in range(nj):
                    x = s * j + ux - off
                    g[j] = gi[x] if 0 <= x < nx else np.float32(0.0)
            rows[i, 0], rows[i, 1] = sg, sb
        return rows[:, 0].sum(), rows[:, 1].sum()

    # NOTE [Ignore kernels]
    # A tile whose mask holds 255 (ignore) runs these two instead of the two above: the same
    # loops, each pixel's contributions (p y, p, its BCE, its gradient) selected to 0 where the
    # mask is 255. They are separate functions so that the loops of tiles without 255, nearly
    # all tiles of most masks, stay exactly as they were: same speed, same bits.
    @njit(parallel=True, fastmath=True, cache=True)
    def _loss_sums_ignore(z: _F32, y: _U8, bce: bool, out: _F64) -> None:
        """``_loss_sums`` over the pixels where ``y`` is not 255."""
        ny, nx = z.shape
        rows = np.zeros((ny, 3))
        for i in prange(ny):
            si = sp = sb = 0.0
            for j in range(nx):
                keep = y[i, j] != np.uint8(255)
                v = z[i, j]
                t = np.float32(y[i, j]) if keep else np.float32(0.0)
                p, b = _sigmoid_bce(v, t, bce)
                si += p * t
                sp += p if keep else np.float32(0.0)
                sb += b if keep else np.float32(0.0)
            rows[i, 0], rows[i, 1], rows[i, 2] = si, sp, sb
        for i in range(ny):
            for k in range(3):
                out[k] += rows[i, k]

    @njit(parallel=True, fastmath=True, cache=True)
    def _loss_grad_ignore(z: _F32, y: _U8, w_bce: np.float32, w_inter: np.float32, w_p: np.float32, bce: bool,
                          s: int, off: int, gq: _F32) -> tuple[float, float]:
        """``_loss_grad`` with a zero gradient and no BCE where ``y`` is 255."""
        ny, nx = z.shape
        nj = gq.shape[2]
        rows = np.zeros((ny, 2))
        for i in prange(ny):
            gi = np.empty(nx, np.float32)
            sg = sb = 0.0
            for x in range(nx):
                keep = y[i, x] != np.uint8(255)
                v = z[i, x]
                t = np.float32(y[i, x]) if keep else np.float32(0.0)
                p, b = _sigmoid_bce(v, t, bce)
                gv = w_bce * (p - t) + (w_inter * t + w_p) * p * (np.float32(1.0) - p)
                gv = gv if keep else np.float32(0.0)
                gi[x] = gv
                sg += gv
                sb += b if keep else np.float32(0.0)
            for ux in range(s):
                g = gq[i, ux]
                for j in range(nj):
                    x = s * j + ux - off
                    g[j] = gi[x] if 0 <= x < nx else np.float32(0.0)
            rows[i, 0], rows[i, 1] = sg, sb
        return rows[:, 0].sum(), rows[:, 1].sum()

    @njit(cache=True)
    def _interleave(tmp: _F32, orow: _F32, base: int, s: int) -> None:
        """orow[base + s j + u] = tmp[u, j] where that lies inside orow."""
        n = orow.shape[0]
        for u in range(s):
            t = tmp[u]
            for j in range(t.shape[0]):
                x = base + s * j + u
                if 0 <= x < n:
                    orow[x] = t[j]
