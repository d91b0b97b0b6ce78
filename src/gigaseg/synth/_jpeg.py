"""JPEG compression artefacts on a fixed global block grid (private).

``roundtrip(rgb, quality)`` does what a baseline JPEG encoder and decoder do to the pixels:
RGB to YCbCr (JFIF) rounded to integers, chroma 4:2:0 (2 x 2 means), 8 x 8 DCT, quantisation
with the IJG tables for ``quality`` (the Annex K tables scaled as libjpeg scales them),
inverse DCT, chroma upsampled by replication, back to RGB, rounded. Huffman coding is lossless
and left out. Each 8 x 8 block is transformed on its own (``C @ B @ C.T`` on a contiguous stack of
blocks: one small matrix product per block, whose result does not depend on how many blocks
are in the stack; tested), so an MCU's result never depends on the array it sits in: the
renderer calls this on arrays aligned to the slide's global 16-pixel grid, which keeps
``# NOTE [Determinism]`` (render.py) true.
"""

from __future__ import annotations

import numpy as np

MCU = 16

_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64).reshape(8, 8)
_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float64).reshape(8, 8)


def _table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling and table clamping (baseline: 1..255)."""
    q = int(quality)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255).astype(np.float32)


_K = np.arange(8)
_DCT = (np.cos((2 * _K[None, :] + 1) * _K[:, None] * np.pi / 16)
        # numpy's stubs type where(cond, x, y) as where(cond)'s tuple of index arrays
        * np.where(_K == 0, np.sqrt(1 / 8), np.sqrt(2 / 8))[:, None]  # type: ignore[call-overload]
        ).astype(np.float32)  # orthonormal DCT-II
_DCT_T = np.ascontiguousarray(_DCT.T)


def _plane(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantise one plane (H, W), H and W multiples of 8, block by block."""
    h, w = p.shape
    b = np.ascontiguousarray((p - np.float32(128)).reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3))
    b = b.reshape(-1, 8, 8)  # (blocks, 8, 8)
    c = np.matmul(np.matmul(_DCT, b), _DCT_T)
    c = np.rint(c / q) * q
    r = np.matmul(np.matmul(_DCT_T, c), _DCT)
    return r.reshape(h // 8, w // 8, 8, 8).transpose(0, 2, 1, 3).reshape(h, w) + np.float32(128)


def roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8, H and W multiples of 16, as a JPEG of ``quality`` would decode it."""
    h, w, _ = rgb.shape
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = np.rint(np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b)
    cb = np.rint(np.float32(-0.168736) * r - np.float32(0.331264) * g + np.float32(0.5) * b + np.float32(128))
    cr = np.rint(np.float32(0.5) * r - np.float32(0.418688) * g - np.float32(0.081312) * b + np.float32(128))

    def sub(c):
        return np.rint(c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3), dtype=np.float32))

    lq, cq = _table(_LUMA, quality), _table(_CHROMA, quality)
    y = _plane(y, lq)
    cb = np.repeat(np.repeat(_plane(sub(cb), cq), 2, axis=0), 2, axis=1) - np.float32(128)
    cr = np.repeat(np.repeat(_plane(sub(cr), cq), 2, axis=0), 2, axis=1) - np.float32(128)
    out = np.empty((h, w, 3), np.uint8)
    for i, v in enumerate((y + np.float32(1.402) * cr,
                           y - np.float32(0.344136) * cb - np.float32(0.714136) * cr,
                           y + np.float32(1.772) * cb)):
        out[..., i] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return out
