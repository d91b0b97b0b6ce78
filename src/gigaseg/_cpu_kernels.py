"""Compiled CPU kernels for prediction: the U-Net's two full-resolution layers.

On a CPU, nearly all of a ``paper`` model's forward pass is spent in its first convolution
(15 x 15, stride 4, 3 -> 2 channels) and its head (the 3 x 3 output convolution over the
upsampled features and the image). PyTorch's kernels run these oddly shaped layers far below
the machine's speed. The kernels here (numba) compute them from the uint8 crop directly and
the head only over the crop's core, which the engine keeps; the layers in between stay in
PyTorch. See NOTE [CPU kernels].

Used by the engine wherever no gradients are needed (prediction, validation, the first pass
of an exact-Dice training step) for a float32 model on the CPU when numba is installed;
everything else goes through ``UNet.forward``.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch
from torch import nn

# NOTE [CPU kernels]
# Both kernels vectorize along image rows. The input is rearranged once ("space to depth"
# along x only): xp[r, c, p, j] = x[r - PR, s (j - PC) + p, c] / 255, zero outside the image,
# so a tap of the stride-s first convolution at column offset d reads phase d mod s shifted by
# floor(d / s) low-resolution columns: contiguous memory for every tap. The first convolution
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
    numba = None

_DISABLE = "GIGASEG_NO_CPU_KERNELS"  # set to 1 to force PyTorch's kernels (comparisons, debugging)


_BROKEN: list[str] = []  # set when numba failed to compile the kernels in this process


def eligible(model: nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    """True when ``predict_core`` can run ``model``: a float32 UNet on the CPU, first stride > 1,
    ReLU or leaky ReLU, numba importable."""
    if numba is None or _BROKEN or os.environ.get(_DISABLE, "") not in ("", "0"):
        return False
    cfg = getattr(model, "config", None)
    return (device.type == "cpu" and dtype == torch.float32 and cfg is not None
            and cfg.strides[0] > 1 and cfg.activation in ("relu", "leaky_relu"))


def predict_core(model: nn.Module, crop: np.ndarray, rows: slice, cols: slice) -> torch.Tensor | None:
    """Logits of ``model`` on the uint8 (h, w, C) ``crop``, rows ``rows`` and columns ``cols``
    only: equal to ``model(crop / 255)[0, 0][rows, cols]`` up to float32 rounding.

    Returns None, with a warning and the kernels off for the rest of the process, when numba
    cannot compile them here (the caller then runs the model itself).
    """
    try:
        return _predict_core(model, crop, rows, cols)
    except numba.core.errors.NumbaError as exc:
        import warnings

        _BROKEN.append(str(exc))
        warnings.warn(f"gigaseg: numba could not compile the CPU kernels ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}); using PyTorch's kernels "
                      "instead (slower, same results)", RuntimeWarning, stacklevel=2)
        return None


def _predict_core(model: nn.Module, crop: np.ndarray, rows: slice, cols: slice) -> torch.Tensor:
    cfg = model.config
    s = cfg.strides[0]
    h, w = crop.shape[:2]
    total = cfg.total_stride
    hp, wp = -(-h // total) * total, -(-w // total) * total  # the model's own padding
    enc = model.encoder[0]
    r0 = cfg.encoder_kernels[0] // 2
    rh = cfg.decoder_kernels[0] // 2
    pr = max(r0, rh)
    lo = -(-max(r0, rh) // s)  # low-resolution columns of zeros each side
    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    xp = _planar(np.ascontiguousarray(crop), hp, wp, pr, lo, s)

    w4, nsh = _phase_weights(enc.conv.weight.detach().numpy(), s)
    slope = np.float32(_slope(enc))
    first = _first_conv_kernel(cfg.channels[0], nsh)
    e1 = np.empty((hp // s, wp // s, cfg.channels[0]), np.float32)
    first(xp, w4, enc.conv.bias.detach().numpy(), slope, s, pr - r0, lo - (-(-r0 // s)), e1)
    e1t = torch.from_numpy(e1).permute(2, 0, 1).unsqueeze(0)  # (1, c1, H/s, W/s), channels-last memory
    with torch.no_grad():
        d1 = model._decode(e1t)

    from .model import _subpixel_kernel

    head = model.head.conv
    c1 = cfg.channels[0]
    weight = head.weight.detach()
    ksub = _subpixel_kernel(weight[:, :c1], s).contiguous().numpy()  # (s*s, c1, n, n)
    reach = ksub.shape[-1] // 2
    dp = np.zeros((c1, hp // s + 2 * reach, wp // s + 2 * reach), np.float32)
    dp[:, reach:-reach or None, reach:-reach or None] = d1[0].numpy()
    y0, y1, _ = rows.indices(h)
    x0, x1, _ = cols.indices(w)
    out = np.empty((y1 - y0, x1 - x0), np.float32)
    head_kernel = _head3 if cfg.decoder_kernels[0] == 3 else _head
    head_kernel(xp, pr, lo, dp, weight[0, c1:].contiguous().numpy(), ksub, np.float32(head.bias.item()), s,
                y0, y1, x0, x1, out)
    return torch.from_numpy(out)


def _slope(block: nn.Module) -> float:
    act = getattr(block, "act", None)
    return float(getattr(act, "negative_slope", 0.0))


def _phase_weights(w: np.ndarray, s: int) -> tuple[np.ndarray, int]:
    """(Co, C, K, K) -> (Co, C, K, s, NSH): tap kx at offset d = kx - r goes to phase d mod s,
    shift floor(d / s) + ceil(r / s)."""
    co, c, k, _ = w.shape
    r = k // 2
    lo = -(-r // s)
    nsh = r // s + lo + 1
    w4 = np.zeros((co, c, k, s, nsh), np.float32)
    for kx in range(k):
        d = kx - r
        w4[:, :, :, d % s, d // s + lo] = w[:, :, :, kx]
    return w4, nsh


if numba is not None:

    @njit(parallel=True, cache=True)
    def _planar(crop, hp, wp, pr, lo, s):
        """(h, w, C) uint8 -> (hp + 2 pr, C, s, wp / s + 2 lo) float32 / 255, zeros around."""
        h, w, c_in = crop.shape
        wq = wp // s
        lut = np.arange(256).astype(np.float32) / np.float32(255.0)  # exactly torch's x / 255
        xp = np.empty((hp + 2 * pr, c_in, s, wq + 2 * lo), np.float32)
        for r in prange(hp + 2 * pr):
            y = r - pr
            for c in range(c_in):
                for p in range(s):
                    row = xp[r, c, p]
                    if y < 0 or y >= h:
                        row[:] = 0.0
                        continue
                    # x = s (j - lo) + p lies in [0, w) for lo <= j < lo + ceil((w - p) / s)
                    j1 = lo + (w - p + s - 1) // s
                    row[:lo] = 0.0
                    src = crop[y, p::s, c]
                    for j in range(j1 - lo):
                        row[lo + j] = lut[src[j]]
                    row[j1:] = 0.0
        return xp

    @functools.lru_cache(maxsize=None)
    def _first_conv_kernel(co_n: int, nsh: int):
        """The stride-s first convolution + activation for ``co_n`` outputs and ``nsh`` shifts."""

        @njit(parallel=True, fastmath=True, cache=True)
        def first_conv(xp, w4, b, slope, s, row0, col0, out):
            # out[oy, ox, co] = act(b[co] + sum w4[co, c, ky, p, t] xp[row0 + s oy + ky, c, p, col0 + ox + t])
            c_in = xp.shape[1]
            k = w4.shape[2]
            ho, wq = out.shape[0], out.shape[1]
            for oy in prange(ho):
                acc = np.empty((co_n, wq), np.float32)
                for co in range(co_n):
                    acc[co, :] = b[co]
                for ky in range(k):
                    iy = row0 + s * oy + ky
                    for c in range(c_in):
                        for p in range(s):
                            row = xp[iy, c, p, col0:]
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
    def _head(xp, pr, lo, dp, ws, ksub, bias, s, y0, y1, x0, x1, out):
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
                                a[j] += wv * row[j]
                for cd in range(c1):
                    for m in range(n):
                        for nn_ in range(n):
                            wv = ksub[uy * s + ux, cd, m, nn_]
                            drow = dp[cd, jy + m, j0 + nn_:]
                            for j in range(nj):
                                a[j] += wv * drow[j]
            _interleave(tmp, out[y - y0], j0 * s - x0, s)

    @njit(parallel=True, fastmath=True, cache=True)
    def _head3(xp, pr, lo, dp, ws, ksub, bias, s, y0, y1, x0, x1, out):
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
                            a[j] += w0 * g0[j] + w1 * g1[j] + w2 * g2[j]
                for cd in range(c1):
                    for m in range(3):
                        d = dp[cd, jy + m, j0:]
                        k = ksub[uy * s + ux, cd, m]
                        k0, k1, k2 = k[0], k[1], k[2]
                        for j in range(nj):
                            a[j] += k0 * d[j] + k1 * d[j + 1] + k2 * d[j + 2]
            _interleave(tmp, out[y - y0], j0 * s - x0, s)

    @njit(cache=True)
    def _interleave(tmp, orow, base, s):
        """orow[base + s j + u] = tmp[u, j] where that lies inside orow."""
        n = orow.shape[0]
        for u in range(s):
            t = tmp[u]
            for j in range(t.shape[0]):
                x = base + s * j + u
                if 0 <= x < n:
                    orow[x] = t[j]
