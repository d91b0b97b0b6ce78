"""Edge trim: the outline of a predicted tissue mask moved in where the tissue ends (NOTE [Edge trim]).

A tissue model at 4 um/px whose first layer has stride 4 places the tissue's outline to about a
pixel. On tissue stained to its very edge it calls part of the band just outside tissue: pixels a
third covered or less, which the definition of tissue (``../shared/data/real/SOURCES.md``) leaves
out. ``EdgeTrim`` looks again at each pixel of the mask's outline, row band by row band as the
model's rows come, and drops those much paler than the tissue beside them; ``trim_edges`` does the
same on a whole grid, and neither opens a hole, cuts a piece or removes one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .components import od_tables

__all__ = ["EdgeTrim", "trim_edges"]

#: Rows of context a row's decisions need on each side: a boundary pixel's 8 neighbours (1 row), the
#: inner pixels of the 5 x 5 box around it (2 rows), and whether those are inner (1 row more).
HALO = 3
_BOX = 2  # the reference box's half width: 5 x 5 pixels


# NOTE [Edge trim]
# Decided on the mask M = {round(255 p) >= thr} as the model made it. An outline pixel is a pixel of
# M with a pixel outside M among its 8 neighbours (outside the grid counts as outside M); an inner
# pixel is a pixel of M whose 8 neighbours are all in M. Each pixel's optical density is
# OD = mean over R, G, B of max(0, -log10((v + 1) / (g + 1))), v the pixel as the model read it
# (glass-balanced for a model that balances its glass) and g the glass colour of that image. An
# outline pixel is a candidate when its OD is under `ratio` times the mean OD of the inner pixels
# within 2 pixels of it (its 5 x 5 box); one with no inner pixel there (a strand 1-2 pixels wide) is
# not. A pixel a third covered by tissue has about a third of the OD of the tissue beside it, one of
# a fading rim (the synthetic slides' pale edges, 0.12-0.4 of the stain over several pixels) most of
# its neighbour's. Candidates are then dropped (p capped at thr - 1, so the mask, the probabilities,
# the GeoJSON and the overlay agree) only where that keeps the mask's topology: a candidate goes when
# it is simple in the mask as it is by then (its neighbours in the mask form one 8-connected piece,
# and those outside it one 4-connected piece that touches it; `_SIMPLE`), in four passes over the
# grid: even rows and even columns, even rows and odd columns, odd rows and even columns, odd rows and
# odd columns. No two pixels of a pass are neighbours, so a pass can drop all of its simple pixels at
# once. So the trim never opens a hole to the glass (a pale neck two pixels wide keeps one of its two
# pixels across), never cuts a piece in two and never removes one, and the outline moves by one pixel at most.
# The built-in model declares ratio 0.4 (`edge_trim` in its weights file's header; the held-out
# synthetic slides score alike from 0.3 to 0.5 and best at 0.4). Streamed (`EdgeTrim`) before the
# component filter, as the model's rows are written, so the mask TIFF written meanwhile shows it: a
# row is decided once the LAG rows below it are there, the even row below an odd row first, so any
# cut of the grid into bands gives the whole grid's result. The component filter then sees the
# trimmed mask (results/tissue-model/README.md, "Stage 21"). Cost: a gather of OD around the
# outline only.


def _pixels_at(image: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, 3) uint8: ``image``'s pixels at (rows, cols); a ``GlassBalanced`` one balanced."""
    at = getattr(image, "at", None)
    if at is not None:
        return np.asarray(at(rows, cols))
    return np.asarray(image[rows, cols])


def _simple_table() -> np.ndarray:
    """(256,) bool: whether a pixel of the mask is simple (NOTE [Edge trim]) for each configuration of
    its 8 neighbours, bit k set when neighbour k of ``_RING`` is in the mask."""
    table = np.zeros(256, bool)

    def components(cells: set, four: bool) -> list[set]:
        out: list[set] = []
        left = set(cells)
        while left:
            todo, comp = [left.pop()], set()
            while todo:
                a = todo.pop()
                comp.add(a)
                near = {b for b in left if (abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 if four
                                            else max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1)}
                left -= near
                todo.extend(near)
            out.append(comp)
        return out

    for config in range(256):
        fg = {_RING[k] for k in range(8) if config >> k & 1}
        bg = set(_RING) - fg
        touching = [c for c in components(bg, four=True) if c & {(-1, 0), (0, 1), (1, 0), (0, -1)}]
        table[config] = len(components(fg, four=False)) == 1 and len(touching) == 1
    return table


#: The 8 neighbours (row, column offsets) in the order of a configuration's bits.
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
_SIMPLE = _simple_table()
#: Rows after a row that must be pushed before it is decided: HALO for its own test, one more for the
#: even row below it, whose drops come before its own (NOTE [Edge trim]).
LAG = HALO + 1


class EdgeTrim:
    """NOTE [Edge trim], streamed: ``push`` the rows of a uint8 probability grid in order, write what
    it returns (the rows before the last ``LAG``, trimmed), then write what ``finish`` returns.

    Args:
        image: the (H, W, 3) uint8 image the model read, indexable by integer arrays
            (``image[rows, cols]``, a numpy array or memmap, or a ``GlassBalanced`` over one); a
            row's pixels are read when it and the ``LAG`` rows after it have been pushed.
        thr_u8: the mask's threshold on round(255 p).
        ratio: NOTE [Edge trim]; 0 changes nothing.
        glass: the image's glass colour (R, G, B); None: 250 in each channel.
    """

    def __init__(self, image: Any, thr_u8: int, ratio: float, glass: Any = None):
        self.image = image
        self.thr = int(thr_u8)
        self.ratio = float(ratio)
        self.lut = od_tables(glass)
        self.width = int(image.shape[1])
        self._kept = np.zeros((0, self.width), np.uint8)  # untrimmed rows [_base, _pushed)
        self._gone = np.zeros((0, self.width), bool)  # of those, the pixels dropped so far
        self._base = 0
        self._done = 0  # rows returned
        self._even = 0  # even rows before this one have been decided
        self._pushed = 0
        self._where: list[np.ndarray] = []  # the flat indices of the pixels dropped in the rows returned

    def push(self, rows: np.ndarray) -> np.ndarray:
        """The next rows of the grid, as the model gave them; returns the rows now decided, trimmed."""
        rows = np.asarray(rows, np.uint8)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows of width {self.width} expected, got shape {rows.shape}")
        self._kept = np.concatenate([self._kept, rows])
        self._gone = np.concatenate([self._gone, np.zeros(rows.shape, bool)])
        self._pushed += len(rows)
        return self._release(self._pushed - LAG)

    def finish(self) -> np.ndarray:
        """The last rows, decided with the outside of the grid below them."""
        return self._release(self._pushed, last=True)

    @property
    def trimmed(self) -> int:
        """How many pixels were dropped in the rows returned so far."""
        return sum(w.size for w in self._where)

    def dropped(self) -> np.ndarray:
        """The flat indices (row * width + column, ascending, int64) of the pixels dropped in the rows
        returned so far: the hole filling counts them as tissue (NOTE [Hole filling])."""
        return np.concatenate(self._where) if self._where else np.zeros(0, np.int64)

    def _release(self, until: int, last: bool = False) -> np.ndarray:
        lo = self._done
        if until <= lo:
            return np.zeros((0, self.width), np.uint8)
        if self.ratio > 0 and self.thr > 0:
            # candidates of rows [lo, end): the odd rows up to until, the even rows up to and with until
            end = until if last else until + 1
            self._thin(lo, end, until, self._candidates(lo, end, last))
        out_rows = slice(lo - self._base, until - self._base)
        out = self._kept[out_rows].copy()
        gone = self._gone[out_rows]
        out[gone] = np.minimum(out[gone], np.uint8(self.thr - 1))
        if gone.any():
            self._where.append(np.flatnonzero(gone) + lo * self.width)
        self._done = until
        keep = max(0, until - HALO) - self._base
        self._kept, self._gone, self._base = self._kept[keep:], self._gone[keep:], self._base + keep
        return out

    def _candidates(self, lo: int, hi: int, last: bool) -> tuple[np.ndarray, np.ndarray]:
        """Grid rows and columns of the outline pixels of rows [lo, hi) that the ratio test drops, on the
        mask as the model made it."""
        mask = self._kept >= self.thr
        # rows [lo - HALO, hi + HALO) of the mask; outside the grid (above row 0, below the last) not in it
        a, b = lo - HALO, hi + HALO
        top = max(0, self._base - a)
        bottom = max(0, b - self._pushed) if last else 0
        window = np.pad(mask[max(a, self._base) - self._base:b - self._base], ((top, bottom), (0, 0)))
        m = np.pad(window, ((0, 0), (HALO, HALO)))  # columns outside the grid: not in the mask
        inner = np.zeros_like(m)
        c = m[1:-1, 1:-1].copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                c &= m[dy:dy + m.shape[0] - 2, dx:dx + m.shape[1] - 2]
        inner[1:-1, 1:-1] = c
        core = (slice(HALO, m.shape[0] - HALO), slice(HALO, m.shape[1] - HALO))
        by, bx = np.nonzero(m[core] & ~inner[core])  # outline pixels of rows [lo, hi), window's own coordinates
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
        ref_od = self._od(np.concatenate(ry) + a, np.concatenate(rx) - HALO)
        den = np.bincount(i, minlength=by.size)
        num = np.bincount(i, weights=ref_od, minlength=by.size)
        own = self._od(by + a, bx - HALO)
        drop = (den > 0) & (own * den < self.ratio * num)
        return by[drop] + a, bx[drop] - HALO

    def _thin(self, lo: int, hi: int, until: int, cand: tuple[np.ndarray, np.ndarray]) -> None:
        """Drop the candidates that are simple, even rows then odd rows, each by even then odd columns
        (NOTE [Edge trim]): the even rows of [max(lo, even rows done), hi), the odd rows of [lo, until)."""
        ys, xs = cand
        keep = np.where(ys % 2 == 0, ys >= max(lo, self._even), ys < until)
        ys, xs = ys[keep], xs[keep]
        if ys.size:
            # the current mask of rows [lo - 1, hi + 1), columns padded by one (outside the grid: not in it)
            a = lo - 1
            cur = np.zeros((hi + 1 - a, self.width + 2), bool)
            r0, r1 = max(a, self._base), min(hi + 1, self._pushed)
            cur[r0 - a:r1 - a, 1:-1] = (self._kept[r0 - self._base:r1 - self._base] >= self.thr) & \
                ~self._gone[r0 - self._base:r1 - self._base]
            for py, px in ((0, 0), (0, 1), (1, 0), (1, 1)):  # no two pixels of one pass are neighbours
                sel = (ys % 2 == py) & (xs % 2 == px)
                y, x = ys[sel] - a, xs[sel] + 1
                config = np.zeros(y.size, np.int64)
                for k, (dy, dx) in enumerate(_RING):
                    config |= cur[y + dy, x + dx].astype(np.int64) << k
                simple = _SIMPLE[config]
                cur[y[simple], x[simple]] = False
                self._gone[ys[sel][simple] - self._base, xs[sel][simple]] = True
        self._even = max(self._even, hi)

    def _od(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if rows.size == 0:
            return np.zeros(0, np.float64)
        px = _pixels_at(self.image, rows, cols)
        lut = self.lut
        return (lut[0][px[:, 0]].astype(np.float64) + lut[1][px[:, 1]] + lut[2][px[:, 2]]) / 3.0


def trim_edges(image: Any, prob: Any, thr_u8: int, ratio: float, glass: Any = None, *,
               band: int = 512) -> np.ndarray:
    """NOTE [Edge trim] on a whole (H, W) uint8 probability grid ``prob`` (an array or a writable
    memmap), in place, read and written ``band`` rows at a time; ``image`` and ``glass`` as for
    ``EdgeTrim``. Returns the flat indices of the pixels dropped (``EdgeTrim.dropped``)."""
    h = prob.shape[0]
    trim = EdgeTrim(image, thr_u8, ratio, glass)
    y = 0
    for y0 in range(0, h, band):
        out = trim.push(np.asarray(prob[y0:y0 + band]))
        prob[y:y + len(out)] = out
        y += len(out)
    out = trim.finish()
    prob[y:y + len(out)] = out
    return trim.dropped()
