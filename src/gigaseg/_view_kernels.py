"""Compiled copies for the training views: a transposed or flipped crop, colour-jittered through
its table, in one pass (NOTE [View kernels]).

``copy(src, out)`` and ``gather(src, table, out)`` fill the C-contiguous ``out`` from ``src``, a
numpy view with any strides (the stored array seen through a dihedral transform), and return
True; or return False, having done nothing, where numba is missing or the kernels are switched
off (``GIGASEG_NO_CPU_KERNELS=1``), and the caller goes on with numpy. The bytes are the same
either way: a copy is a copy, and the table is the one numpy's path would read.
"""

from __future__ import annotations

import os

import numpy as np

# NOTE [View kernels]
# A training crop is read through one of the 8 dihedral transforms and the HED colour table
# (NOTE [Colour table] in dataset.py). In numpy that is a transposed copy (strided reads of the
# memory map, ~14 ms per megapixel), then four passes for the table: pack each pixel into a
# uint32, np.take, unpack (~14 ms per megapixel). With two passes over each 1.024 GP region per
# step and half the transforms transposing, that was ~55 s of CPU per step, about as much as
# the model's own work on the 2-core CPU. The kernels here read each source pixel once, look its
# colour up, and write the output pixel, in 64 x 64 blocks so that a transposed source's rows
# stay in the cache while a block is read across them. Serial and free of the GIL: crop readers
# and strips supply the parallelism (NOTE [Read ahead], NOTE [Strips] in dataset.py).

_DISABLE = "GIGASEG_NO_CPU_KERNELS"  # set to 1 to force numpy's and PyTorch's paths (comparisons)
_BLOCK = 64

try:  # numba is a dependency, but keep numpy's path if it cannot load on some platform
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is missing
    njit = None  # type: ignore[assignment]  # the kernels below are defined only when njit is not None


def switched_off() -> bool:
    """True when GIGASEG_NO_CPU_KERNELS turns off all of gigaseg's compiled CPU kernels, these and
    the model's (``_cpu_kernels``)."""
    return os.environ.get(_DISABLE, "") not in ("", "0")


def enabled() -> bool:
    """True when the kernels will run (numba importable and not switched off)."""
    return njit is not None and not switched_off()


def copy(src: np.ndarray, out: np.ndarray) -> bool:
    """out[...] = src for (h, w) or (h, w, 3) uint8 arrays; False (nothing done) without numba."""
    if not enabled():
        return False
    if src.ndim == 2:
        src, out = src[:, :, None], out[:, :, None]
    _copy(src, out)
    return True


def hed_table(m: np.ndarray, c: np.ndarray, od_lut: np.ndarray, od_out: np.ndarray, table: np.ndarray) -> bool:
    """Fill the 2^24 uint32 ``table`` with the HED jitter of every colour, packed r | g << 8 |
    b << 16, computed exactly as ``StainJitter._compute`` does (NOTE [Colour table, compiled]);
    False (nothing done) without numba."""
    if not enabled():
        return False
    _hed_table(m, c, od_lut, od_out, np.float32(od_out.shape[0] - 1), table)
    return True


def gather(src: np.ndarray, table: np.ndarray, out: np.ndarray) -> bool:
    """out[y, x] = the colour ``table[r | g << 8 | b << 16]`` of src[y, x] = (r, g, b), for (h, w, 3)
    uint8 arrays and a 2^24 uint32 table (bytes r, g, b, 0); False (nothing done) without numba."""
    if not enabled():
        return False
    _gather3(src, table, out)
    return True


if njit is not None:

    @njit(nogil=True, cache=True)
    def _copy(src, out):
        h, w, c = out.shape
        for i0 in range(0, h, _BLOCK):
            i1 = min(h, i0 + _BLOCK)
            for j0 in range(0, w, _BLOCK):
                j1 = min(w, j0 + _BLOCK)
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        for k in range(c):
                            out[i, j, k] = src[i, j, k]

    @njit(nogil=True, cache=True)
    def _gather3(src, table, out):
        h, w = out.shape[0], out.shape[1]
        for i0 in range(0, h, _BLOCK):
            i1 = min(h, i0 + _BLOCK)
            for j0 in range(0, w, _BLOCK):
                j1 = min(w, j0 + _BLOCK)
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        v = table[np.uint32(src[i, j, 0]) | (np.uint32(src[i, j, 1]) << np.uint32(8))
                                  | (np.uint32(src[i, j, 2]) << np.uint32(16))]
                        out[i, j, 0] = v & np.uint32(255)
                        out[i, j, 1] = (v >> np.uint32(8)) & np.uint32(255)
                        out[i, j, 2] = (v >> np.uint32(16)) & np.uint32(255)

    # NOTE [Colour table, compiled]
    # numpy builds the colour table (NOTE [Colour table] in dataset.py) in ~0.6 s: 2^24 colours
    # through ~20 array passes. On small regions, read whole in a fraction of a second per step,
    # that was most of a training step. This kernel does the same float32 operations in the same
    # order, one colour at a time: optical density from the same table, products and sums
    # rounded one by one (no fused multiply-add: numba leaves fast-math off unless asked), the
    # same clip, round-half-even and output table. tests/test_dataset.py compares all 2^24
    # entries with numpy's.

    @njit(nogil=True, cache=True, inline="always")
    def _hed_channel(o0, o1, o2, m, c, k, od_out, top):
        acc = o0 * m[0, k]
        acc = acc + o1 * m[1, k]
        acc = acc + o2 * m[2, k]
        acc = acc + c[k]
        if acc < np.float32(0.0):
            acc = np.float32(0.0)
        elif acc > top:
            acc = top
        return np.uint32(od_out[np.intp(np.rint(acc))])

    @njit(nogil=True, cache=True)
    def _hed_table(m, c, od_lut, od_out, top, table):
        for b in range(256):
            o2 = od_lut[b]
            for g in range(256):
                o1 = od_lut[g]
                base = (b << 16) | (g << 8)
                for r in range(256):
                    o0 = od_lut[r]
                    table[base | r] = (_hed_channel(o0, o1, o2, m, c, 0, od_out, top)
                                       | (_hed_channel(o0, o1, o2, m, c, 1, od_out, top) << np.uint32(8))
                                       | (_hed_channel(o0, o1, o2, m, c, 2, od_out, top) << np.uint32(16)))
