"""Position-keyed noise for the synthetic slide generator (private).

Everything here is a pure function of integer global coordinates and a key, so a
value never depends on the chunk it is computed in (see ``# NOTE [Determinism]`` in
``synth.py``). Integer hashing is done in uint32 with wrap-around arithmetic.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint32(0x85EBCA6B)
_M2 = np.uint32(0xC2B2AE35)
_PX = np.uint32(0x8DA6B343)
_PY = np.uint32(0xD8163841)
_PK = np.uint32(0xCB1AB31F)


def _u32(a) -> np.ndarray:
    """Integer array (any sign) to uint32, wrapping."""
    return (np.asarray(a, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)


def hash2(ix, iy, key: int) -> np.ndarray:
    """A uint32 hash of integer lattice coordinates and a key (murmur3 finaliser)."""
    with np.errstate(over="ignore"):
        h = (_u32(ix) * _PX) ^ (_u32(iy) * _PY) ^ (np.uint32(key & 0xFFFFFFFF) * _PK)
        h ^= h >> np.uint32(16)
        h *= _M1
        h ^= h >> np.uint32(13)
        h *= _M2
        h ^= h >> np.uint32(16)
    return h


def uniform2(ix, iy, key: int) -> np.ndarray:
    """Uniform float64 in [0, 1) keyed by integer coordinates."""
    return (hash2(ix, iy, key) >> np.uint32(8)).astype(np.float64) * (1.0 / (1 << 24))


def key(seed: int, *parts: int) -> int:
    """Combine a seed and small integers into one 32-bit key."""
    h = int(seed) & 0xFFFFFFFFFFFFFFFF
    for p in parts:
        h = (h * 0x100000001B3 ^ (int(p) & 0xFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 29
    h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    h ^= h >> 32
    return h & 0xFFFFFFFF


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, k: int) -> np.ndarray:
    """Smooth value noise in [0, 1] at float64 points (px), feature size ``scale`` px."""
    gx = x / scale
    gy = y / scale
    ix = np.floor(gx)
    iy = np.floor(gy)
    fx = gx - ix
    fy = gy - iy
    fx = fx * fx * (3.0 - 2.0 * fx)
    fy = fy * fy * (3.0 - 2.0 * fy)
    ix = ix.astype(np.int64)
    iy = iy.astype(np.int64)
    v00 = uniform2(ix, iy, k)
    v10 = uniform2(ix + 1, iy, k)
    v01 = uniform2(ix, iy + 1, k)
    v11 = uniform2(ix + 1, iy + 1, k)
    a = v00 + (v10 - v00) * fx
    b = v01 + (v11 - v01) * fx
    return a + (b - a) * fy


def fbm(x: np.ndarray, y: np.ndarray, scale: float, k: int, octaves: int = 3, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of value noise, roughly zero-mean, amplitude about +-0.5."""
    total = np.zeros(np.broadcast(x, y).shape, dtype=np.float64)
    amp = 1.0
    norm = 0.0
    s = scale
    for o in range(octaves):
        total += amp * (value_noise(x, y, s, (k + 7919 * o) & 0xFFFFFFFF) - 0.5)
        norm += amp
        amp *= gain
        s *= 0.5
    return total / norm
