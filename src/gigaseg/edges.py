"""Edge trim: the outline of a predicted tissue mask moved in where the tissue ends (NOTE [Edge trim]).

A tissue model at 4 um/px whose first layer has stride 4 places the tissue's outline to about a
pixel. On tissue stained to its very edge it calls part of the band just outside tissue: pixels a
third covered or less, which the definition of tissue (``../shared/data/real/SOURCES.md``) leaves
out. ``EdgeTrim`` looks again at each pixel of the mask's outline, row band by row band as the
model's rows come, and drops those much paler than the tissue beside them; ``trim_edges`` does the
same on a whole grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EdgeTrim", "trim_edges"]

#: Rows of context a row's decisions need on each side: a boundary pixel's 8 neighbours (1 row), the
#: inner pixels of the 5 x 5 box around it (2 rows), and whether those are inner (1 row more).
HALO = 3
_BOX = 2  # the reference box's half width: 5 x 5 pixels


# NOTE [Edge trim]
# Decided on the mask M = {round(255 p) >= thr} as the model made it. A boundary pixel is a pixel of
# M with a pixel outside M among its 8 neighbours (outside the grid counts as outside M); an inner
# pixel is a pixel of M whose 8 neighbours are all in M. Each pixel's optical density is
# OD = mean over R, G, B of max(0, -log10((v + 1) / (g + 1))), v the pixel as the model read it
# (glass-balanced for a model that balances its glass) and g the glass colour of that image. A
# boundary pixel is dropped (its p capped at thr - 1, so the mask, the probabilities, the GeoJSON and
# the overlay agree) when its OD is under `ratio` times the mean OD of the inner pixels within 2
# pixels of it (its 5 x 5 box); one with no inner pixel there (a strand 1-2 pixels wide) is kept.
# One pass: a dropped pixel does not make its neighbours boundary pixels, so the outline moves by at
# most one pixel. A pixel a third covered by tissue has about a third of the OD of the tissue beside
# it, one of a fading rim (the synthetic slides' pale edges, 0.12-0.4 of the stain over several
# pixels) most of its neighbour's. The built-in model declares ratio 0.4 (`edge_trim` in its weights
# file's header; the held-out synthetic slides score alike from 0.3 to 0.4). Streamed (`EdgeTrim`)
# before the component filter, as the model's rows are written, so the mask TIFF written meanwhile
# shows it: a row is decided once the HALO rows below it are there. The component filter then sees
# the trimmed mask (results/tissue-model/README.md, "Stage 21": the same pieces are dropped either
# way on both real slides). Cost: a gather of OD around the outline only.


def _od_luts(glass: Any) -> np.ndarray:
    """(3, 256) float32: the OD of every uint8 value per channel against ``glass`` (NOTE [Edge trim])."""
    g = np.full(3, 250.0) if glass is None else np.asarray(glass, np.float64).reshape(3)
    v = np.arange(256, dtype=np.float64)
    return np.stack([np.maximum(-np.log10((v + 1.0) / (g[c] + 1.0)), 0.0) for c in range(3)]).astype(np.float32)


def _pixels_at(image: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, 3) uint8: ``image``'s pixels at (rows, cols); a ``GlassBalanced`` one balanced."""
    at = getattr(image, "at", None)
    if at is not None:
        return np.asarray(at(rows, cols))
    return np.asarray(image[rows, cols])


class EdgeTrim:
    """NOTE [Edge trim], streamed: ``push`` the rows of a uint8 probability grid in order, write what
    it returns (the rows before the last ``HALO``, trimmed), then write what ``finish`` returns.

    Args:
        image: the (H, W, 3) uint8 image the model read, indexable by integer arrays
            (``image[rows, cols]``, a numpy array or memmap, or a ``GlassBalanced`` over one); a
            row's pixels are read when it and the ``HALO`` rows after it have been pushed.
        thr_u8: the mask's threshold on round(255 p).
        ratio: NOTE [Edge trim]; 0 changes nothing.
        glass: the image's glass colour (R, G, B); None: 250 in each channel.
    """

    def __init__(self, image: Any, thr_u8: int, ratio: float, glass: Any = None):
        self.image = image
        self.thr = int(thr_u8)
        self.ratio = float(ratio)
        self.lut = _od_luts(glass)
        self.width = int(image.shape[1])
        self._kept = np.zeros((0, self.width), np.uint8)  # untrimmed rows [_done - HALO, _pushed)
        self._done = 0  # rows returned
        self._pushed = 0
        self.trimmed = 0  # pixels dropped so far

    def push(self, rows: np.ndarray) -> np.ndarray:
        """The next rows of the grid, as the model gave them; returns the rows now decided, trimmed."""
        rows = np.asarray(rows, np.uint8)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows of width {self.width} expected, got shape {rows.shape}")
        self._kept = np.concatenate([self._kept, rows]) if len(self._kept) else rows.copy()
        self._pushed += len(rows)
        return self._release(self._pushed - HALO)

    def finish(self) -> np.ndarray:
        """The last rows, decided with the outside of the grid below them."""
        return self._release(self._pushed, last=True)

    def _release(self, until: int, last: bool = False) -> np.ndarray:
        lo = self._done
        if until <= lo:
            return np.zeros((0, self.width), np.uint8)
        first = lo - HALO  # the grid row of _kept[0] once lo >= HALO; before that, _kept starts at row 0
        start = max(first, 0)
        kept = self._kept
        mask = kept >= self.thr
        # rows [lo - HALO, until + HALO) of the mask; outside the grid (above row 0, below the last) not in it
        top = start - first
        bottom = max(0, until + HALO - (start + len(kept))) if last else 0
        window = np.pad(mask[:until + HALO - start], ((top, bottom), (0, 0)))
        out = kept[lo - start:until - start].copy()
        ys, xs = self._decide(window, lo, until)
        if ys.size:
            out[ys - lo, xs] = np.minimum(out[ys - lo, xs], np.uint8(self.thr - 1))
            self.trimmed += int(ys.size)
        self._done = until
        self._kept = kept[max(0, until - HALO - start):]
        return out

    def _decide(self, window: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Grid rows and columns of the pixels of rows [lo, hi) to drop; ``window`` is the mask of rows
        [lo - HALO, hi + HALO), rows outside the grid all False."""
        if self.ratio <= 0 or self.thr <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        m = np.pad(window, ((0, 0), (HALO, HALO)))  # columns outside the grid: not in the mask
        inner = np.zeros_like(m)
        c = m[1:-1, 1:-1].copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                c &= m[dy:dy + m.shape[0] - 2, dx:dx + m.shape[1] - 2]
        inner[1:-1, 1:-1] = c
        core = (slice(HALO, m.shape[0] - HALO), slice(HALO, m.shape[1] - HALO))
        by, bx = np.nonzero(m[core] & ~inner[core])  # boundary pixels of rows [lo, hi), window's own coordinates
        if by.size == 0:
            return by, bx
        by, bx = by + HALO, bx + HALO
        idx, ry, rx = [], [], []
        n = np.arange(by.size)
        for dy in range(-_BOX, _BOX + 1):
            for dx in range(-_BOX, _BOX + 1):
                sel = np.flatnonzero(inner[by + dy, bx + dx])
                idx.append(n[sel])
                ry.append(by[sel] + dy)
                rx.append(bx[sel] + dx)
        i = np.concatenate(idx)
        top = lo - HALO  # the window's first row, on the grid
        ref_od = self._od(np.concatenate(ry) + top, np.concatenate(rx) - HALO)
        den = np.bincount(i, minlength=by.size)
        num = np.bincount(i, weights=ref_od, minlength=by.size)
        own = self._od(by + top, bx - HALO)
        drop = (den > 0) & (own * den < self.ratio * num)
        return by[drop] + top, bx[drop] - HALO

    def _od(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.zeros(0, np.float64)
        px = _pixels_at(self.image, rows, cols)
        lut = self.lut
        return (lut[0][px[:, 0]].astype(np.float64) + lut[1][px[:, 1]] + lut[2][px[:, 2]]) / 3.0


def trim_edges(image: Any, prob: Any, thr_u8: int, ratio: float, glass: Any = None, *, band: int = 512) -> int:
    """NOTE [Edge trim] on a whole (H, W) uint8 probability grid ``prob`` (an array or a writable
    memmap), in place, read and written ``band`` rows at a time; ``image`` and ``glass`` as for
    ``EdgeTrim``. Returns the number of pixels dropped."""
    h = prob.shape[0]
    trim = EdgeTrim(image, thr_u8, ratio, glass)
    y = 0
    for y0 in range(0, h, band):
        out = trim.push(np.asarray(prob[y0:y0 + band]))
        prob[y:y + len(out)] = out
        y += len(out)
    out = trim.finish()
    prob[y:y + len(out)] = out
    return trim.trimmed
