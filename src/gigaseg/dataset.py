"""Reading a region store for training: lazy, augmented views of whole regions.

``RegionDataset(store, split="train", augment=True, seed=0)`` gives, for each region,
a ``RegionSample`` whose ``.image`` (H, W, 3) and ``.mask`` (H, W) are array-likes: they
have ``shape``, ``dtype`` (uint8) and ``ndim``, and ``view[y0:y1, x0:x1]`` returns a
numpy array read from disk for that tile only. The whole region is never copied.

# NOTE [Augmentation as index transforms]
The 8 symmetries of the square (the dihedral group: identity, 3 rotations by 90
degrees, 4 flips) are applied as index transforms. Element (transpose, flip_y, flip_x)
means: view = flip(transpose(region)), transpose first (it swaps H and W), then
flip rows, then columns. A view slice [y0:y1, x0:x1] maps to one rectangle of the
stored array; the tile is read, then transposed and flipped (small, in memory).
The colour jitter is per pixel (lookup tables, exact arithmetic), with its
parameters drawn once per sample, so a tile read in pieces equals the tile read
whole, bit for bit, and image and mask stay aligned.

Parameters of sample ``i`` at ``epoch`` come from ``np.random.default_rng([seed,
epoch, i])``: reproducible, and independent of the order in which samples are read.

Example::

    ds = RegionDataset("regions/", split="train", augment=True, seed=0)
    s = ds.sample(0, epoch=3)
    tile = s.image[0:2304, 0:2304]          # (2304, 2304, 3) uint8
    target = s.mask[0:2304, 0:2304]         # (2304, 2304) uint8
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _view_kernels
from .errors import ConfigError, InputError
from .options import JITTERS
from .store import RegionStore, StoreError

__all__ = [
    "Dihedral",
    "DIHEDRAL",
    "StainJitter",
    "RegionView",
    "RegionSample",
    "RegionDataset",
    "JITTERS",
]



class Dihedral(NamedTuple):
    """One of the 8 symmetries of the square: transpose first, then flip rows, then columns."""

    transpose: bool = False
    flip_y: bool = False
    flip_x: bool = False

    def apply(self, arr: np.ndarray) -> np.ndarray:
        """The transform of a whole (small) array (H, W[, C]): the reference definition."""
        if self.transpose:
            arr = np.swapaxes(arr, 0, 1)
        if self.flip_y:
            arr = np.flip(arr, 0)
        if self.flip_x:
            arr = np.flip(arr, 1)
        return arr

    def out_shape(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) of the view of an (h, w) array."""
        return (w, h) if self.transpose else (h, w)


#: The 8 dihedral transforms; index 0 is the identity.
DIHEDRAL = tuple(Dihedral(bool(t), bool(fy), bool(fx)) for t in (0, 1) for fy in (0, 1) for fx in (0, 1))

# Stain vectors of haematoxylin, eosin and DAB (rows: stains, columns: OD in R, G, B),
# Ruifrok & Johnston 2001, as in scikit-image's rgb_from_hed.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float64)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
_OD_STEPS = 2048  # quantisation of optical density for the output table (1/2048 OD)
_OD_MAX = float(np.log(256.0))
_OD_LUT = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)
_OD_OUT = np.clip(
    np.rint(256.0 * np.exp(-np.arange(int(np.ceil(_OD_MAX * _OD_STEPS)) + 1) / _OD_STEPS) - 1.0), 0, 255
).astype(np.uint8)


def _three(values: np.ndarray) -> tuple[float, float, float]:
    """Three numbers, one per colour channel, as Python floats."""
    a, b, c = (float(v) for v in values)
    return a, b, c


@dataclass(frozen=True)
class StainJitter:
    """A per-pixel colour transform with fixed parameters (drawn once per sample).

    kind "hed": Tellez et al. (2018) style HED jitter: optical density is unmixed into
    haematoxylin, eosin and DAB, each scaled by ``alpha`` and shifted by ``beta``, and
    mixed back. Computed with lookup tables and float32 multiply-adds in a fixed order,
    so any pixel's result does not depend on the tile it is read in.
    kind "rgb": per-channel gamma, gain and offset, as a 256-entry table per channel.
    """

    kind: str
    alpha: tuple[float, float, float] = (1.0, 1.0, 1.0)
    beta: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gamma: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def draw(cls, rng: np.random.Generator, kind: str, strength: float) -> StainJitter | None:
        """Draw parameters: alpha in [1 - s, 1 + s], beta in [-s, s], gamma in [e^-s, e^s]."""
        if kind == "none" or strength <= 0:
            return None
        s = float(strength)
        alpha = _three(rng.uniform(1 - s, 1 + s, 3))
        beta = _three(rng.uniform(-s, s, 3))
        if kind == "hed":
            return cls("hed", alpha, beta)
        if kind == "rgb":
            gamma = _three(np.exp(rng.uniform(-s, s, 3)))
            return cls("rgb", alpha, beta, gamma)
        raise ConfigError(f"jitter {kind!r} is not valid: use one of {', '.join(JITTERS)}")

    def _tables(self):
        if self.kind == "rgb":
            x = np.arange(256, dtype=np.float64) / 255.0
            luts = [
                np.clip(np.rint(255.0 * ((x ** g) * a + b)), 0, 255).astype(np.uint8)
                for a, b, g in zip(self.alpha, self.beta, self.gamma)
            ]
            return luts
        m = _HED_FROM_RGB @ np.diag(self.alpha) @ _RGB_FROM_HED  # od' = od @ m + c
        c = np.asarray(self.beta) @ _RGB_FROM_HED
        return m.astype(np.float32), c.astype(np.float32)

    def _hed_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """The HED tables in optical-density table steps, float32: od' * STEPS = sum_c od_c *
        (m[c, k] * STEPS) + c_k * STEPS. numpy's per-pixel path and the compiled colour table both
        start from these (NOTE [Colour table, compiled])."""
        m, c = self._tables()
        return m * np.float32(_OD_STEPS), c * np.float32(_OD_STEPS)

    def __call__(self, tile: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        """Apply to an (h, w, 3) uint8 tile (any strides: a transformed view is read in the same
        pass, NOTE [View kernels]); returns a new C-contiguous (h, w, 3) uint8 array. ``table``
        is this jitter's colour table, already built; the bytes are the same without it."""
        if self.kind == "hed" and table is None and tile.shape[0] * tile.shape[1] >= _LUT3_MIN_PIXELS:
            table = _hed_lut3(self)
        if self.kind == "hed" and table is not None:
            out = np.empty(tile.shape, np.uint8)
            if _view_kernels.gather(tile, table, out):
                return out
            return _apply_lut3(table, np.ascontiguousarray(tile))
        return self._compute(np.ascontiguousarray(tile))

    def _compute(self, tile: np.ndarray) -> np.ndarray:
        out = np.empty(tile.shape, np.uint8)
        if self.kind == "rgb":
            for ch, lut in enumerate(self._tables()):
                np.take(lut, tile[..., ch], out=out[..., ch])
            return out
        m, c = self._hed_steps()
        od = [np.take(_OD_LUT, tile[..., ch]) for ch in range(3)]
        acc = np.empty(tile.shape[:2], np.float32)
        tmp = np.empty(tile.shape[:2], np.float32)
        idx = np.empty(tile.shape[:2], np.intp)
        for k in range(3):
            np.multiply(od[0], m[0, k], out=acc)
            np.multiply(od[1], m[1, k], out=tmp)
            np.add(acc, tmp, out=acc)
            np.multiply(od[2], m[2, k], out=tmp)
            np.add(acc, tmp, out=acc)
            np.add(acc, c[k], out=acc)
            np.clip(acc, 0, _OD_OUT.shape[0] - 1, out=acc)
            np.rint(acc, out=acc)
            np.copyto(idx, acc, casting="unsafe")
            out[..., k] = _OD_OUT[idx]
        return out


# NOTE [Colour table]
# The HED jitter is a fixed function of a pixel's (r, g, b), but computing it takes ~20 array
# passes per pixel in numpy; on a 1-gigapixel region, read twice per step by the two-pass
# engine, that was about 40% of a training step. For large tiles it is instead tabulated once
# per jitter for all 2^24 colours (0.4 s, 64 MiB, only the latest kept; built by the same code,
# so the values are identical) and applied as one gather: 4-5x faster per tile.
_LUT3_MIN_PIXELS = 1 << 20


_LUT3_LOCK = threading.Lock()  # parallel crop readers build a step's table once, not each
_LUT3_CACHE: list = []  # [(jitter, table)]: one jitter per training sample, only the latest kept
_LUT3_CHUNK = 16  # blue planes per piece of work: 1 M colours, ~40 MB of temporaries


def _hed_lut3(jitter: StainJitter, threads: int = 1) -> np.ndarray:
    """``jitter`` of every colour, as 2^24 uint32 words r | g << 8 | b << 16 (a zero 4th byte),
    indexed by the same packing of the input colour. Built by the compiled kernel (NOTE [Colour
    table, compiled]) or, without numba, by ``threads`` threads in numpy (which releases the
    GIL), each piece by the same code: the table depends on neither."""
    with _LUT3_LOCK:
        if _LUT3_CACHE and _LUT3_CACHE[0][0] == jitter:
            return _LUT3_CACHE[0][1]
        _LUT3_CACHE.clear()  # free the previous table before building the next
        table = np.empty(1 << 24, np.uint32)
        if _view_kernels.hed_table(*jitter._hed_steps(), _OD_LUT, _OD_OUT, table):
            _LUT3_CACHE.append((jitter, table))  # NOTE [Colour table, compiled]: 6x faster, same bytes
            return table
        lut = np.zeros((256, 256, 256, 4), np.uint8)  # [b, g, r, channel]

        def build(b0: int) -> None:
            b1 = min(256, b0 + _LUT3_CHUNK)
            grid = np.empty((b1 - b0, 256, 256, 3), np.uint8)
            grid[..., 0] = np.arange(256, dtype=np.uint8)[None, None, :]
            grid[..., 1] = np.arange(256, dtype=np.uint8)[None, :, None]
            grid[..., 2] = np.arange(b0, b1, dtype=np.uint8)[:, None, None]
            done = jitter._compute(grid.reshape(-1, 256, 3))
            lut[b0:b1, :, :, :3] = done.reshape(b1 - b0, 256, 256, 3)

        starts = range(0, 256, _LUT3_CHUNK)
        if threads > 1:
            list(_pool(threads).map(build, starts))
        else:
            for b0 in starts:
                build(b0)
        table = lut.view(np.uint32).reshape(-1)
        _LUT3_CACHE.append((jitter, table))
        return table


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` threads for pieces of one read (strips, table planes)."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gigaseg-strip")


# NOTE [Strips]
# On a GPU the model outruns one core reading and colour-jittering a crop (~50 ms per megapixel
# computed per pixel in numpy, ~5 ms with the colour table and NOTE [View kernels]), and a step
# has too few crops (a handful of 5000 x 5000) to keep several crop readers busy: the first crop
# of each pass is read by one thread while the GPU waits. A view with ``threads`` > 1
# therefore splits a large read into strips of rows done in parallel by a process-wide pool, and
# builds the step's colour table in parallel first and hands it to the strips (a strip never takes
# the table's lock nor submits work to the pool it runs in: no deadlock when views with other
# jitters are read at the same time). Every pixel is computed by the same per-pixel code, so the
# bytes equal a one-thread read.
_STRIP_MIN_PIXELS = 1 << 21


def _apply_lut3(lut: np.ndarray, tile: np.ndarray) -> np.ndarray:
    h, w = tile.shape[:2]
    packed = np.zeros((h, w, 4), np.uint8)
    packed[..., :3] = tile
    out = np.take(lut, packed.view(np.uint32).reshape(h, w))
    return np.ascontiguousarray(out.view(np.uint8).reshape(h, w, 4)[..., :3])


def _span(key, n: int, axis: str) -> tuple[int, int, bool]:
    """(start, stop, squeeze) of a step-1 slice or an integer on an axis of length n."""
    if isinstance(key, (int, np.integer)):
        i = int(key)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {int(key)} is out of range for {axis} of size {n}")
        return i, i + 1, True
    if isinstance(key, slice):
        if key.step not in (None, 1):
            raise InputError(f"region views support slices with step 1 only, got step {key.step} on {axis}")
        start, stop, _ = key.indices(n)
        return start, max(start, stop), False
    raise InputError(f"region views take [y0:y1, x0:x1] slices or integers, got {key!r} on {axis}")


class RegionView:
    """A lazy (H, W[, 3]) uint8 view of a stored array under a dihedral transform and an
    optional colour jitter; slicing reads just the tile and returns a C-contiguous,
    writeable numpy array that the caller owns.

    Args:
        base: the stored array-like, (H, W, 3) or (H, W), supporting ``base[y0:y1, x0:x1]``.
        transform: the dihedral transform.
        jitter: a colour transform for images (None for masks or no jitter).
        threads: threads that share the work of one large read, by strips of rows (NOTE
            [Strips]); the bytes do not depend on it.
    """

    def __init__(self, base, transform: Dihedral = DIHEDRAL[0], jitter: StainJitter | None = None,
                 threads: int = 1):
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads!r}")
        self.base = base
        self.transform = transform
        self.jitter = jitter
        self.threads = int(threads)
        h, w = (int(v) for v in base.shape[:2])
        self._base_hw = (h, w)
        self.shape = transform.out_shape(h, w) + tuple(int(v) for v in base.shape[2:])

    dtype = np.dtype(np.uint8)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        transform = tuple(int(v) for v in self.transform)
        return f"RegionView(shape={self.shape}, transform={transform}, jitter={self.jitter})"

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if key and key[-1] is Ellipsis:
            key = key[:-1]
        if len(key) > 2:
            extra = key[2:]
            if self.ndim != 3 or len(extra) != 1 or extra[0] != slice(None):
                raise InputError(f"region views take [y0:y1, x0:x1] (optionally [..., :]), got {key!r}")
            key = key[:2]
        key = key + (slice(None),) * (2 - len(key))
        hv, wv = self.shape[:2]
        y0, y1, sq_y = _span(key[0], hv, "rows")
        x0, x1, sq_x = _span(key[1], wv, "columns")
        rows = y1 - y0
        if self.threads > 1 and rows * (x1 - x0) >= _STRIP_MIN_PIXELS and rows >= 2 * self.threads:
            block = self._read_strips(y0, y1, x0, x1)
        else:
            block = self._read_block(y0, y1, x0, x1)
        if sq_y and sq_x:
            return block[0, 0]
        if sq_y:
            return block[0]
        if sq_x:
            return block[:, 0]
        return block

    def _read_strips(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        table = None
        if self.jitter is not None and self.jitter.kind == "hed":
            table = _hed_lut3(self.jitter, self.threads)  # built here, in parallel, handed to the strips
        out = np.empty((y1 - y0, x1 - x0) + self.shape[2:], np.uint8)
        bounds = np.linspace(y0, y1, self.threads + 1).round().astype(int)

        def strip(i: int) -> None:
            a, b = int(bounds[i]), int(bounds[i + 1])
            out[a - y0:b - y0] = self._read_block(a, b, x0, x1, table)

        list(_pool(self.threads).map(strip, range(self.threads)))
        return out

    def _read_block(self, y0: int, y1: int, x0: int, x1: int, table: np.ndarray | None = None) -> np.ndarray:
        """View rows [y0, y1) and columns [x0, x1), transformed and jittered (with the colour
        ``table`` when given), as an owned array."""
        hv, wv = self.shape[:2]
        t = self.transform
        # View rows/cols -> rows/cols of the transposed array T (before the flips).
        ty0, ty1 = (hv - y1, hv - y0) if t.flip_y else (y0, y1)
        tx0, tx1 = (wv - x1, wv - x0) if t.flip_x else (x0, x1)
        if t.transpose:
            block = np.asarray(self.base[tx0:tx1, ty0:ty1])
            block = np.swapaxes(block, 0, 1)
        else:
            block = np.asarray(self.base[ty0:ty1, tx0:tx1])
        if t.flip_y:
            block = block[::-1]
        if t.flip_x:
            block = block[:, ::-1]
        if self.jitter is not None and block.size:
            return self.jitter(block, table=table)  # reads the transformed block directly
        if t.transpose and block.size:
            out = np.empty(block.shape, np.uint8)
            if _view_kernels.copy(block, out):  # numpy's transposed copy is 4x slower
                return out
        block = np.ascontiguousarray(block)
        if not block.flags.writeable:  # a view into a read-only memmap: hand out an owned copy
            block = block.copy()
        return block

    def __array__(self, dtype=None, copy=None):
        arr = self[:, :]
        return arr if dtype is None else arr.astype(dtype)


@dataclass
class RegionSample:
    """One region as the engine sees it for one epoch.

    Attributes:
        image: (H, W, 3) uint8 view (H, W after the transform).
        mask: (H, W) uint8 view, 0 background, 1 tissue, 255 ignore.
        name: the region's name.
        index: the region's index in the dataset.
        epoch: the epoch the augmentation was drawn for.
        transform: the dihedral transform.
        jitter: the colour transform, or None.
        meta: the region's metadata (``region.json``).
    """

    image: RegionView
    mask: RegionView
    name: str
    index: int
    epoch: int
    transform: Dihedral
    jitter: StainJitter | None
    meta: dict

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the sample's views."""
        h, w = self.mask.shape
        return h, w


class RegionDataset:
    """The regions of one split of a store, as augmented lazy samples.

    Args:
        store: a ``RegionStore`` or the path of one.
        split: "train", "val", or None for every region.
        augment: draw a dihedral transform and a colour jitter per sample.
        seed: base seed of the augmentation draws.
        jitter: "hed" (default), "rgb" or "none".
        jitter_strength: the spread of the jitter parameters (0.05: mild).
        read_threads: threads sharing each large read of the samples' views (NOTE [Strips]).

    Raises:
        StoreError: not a store, no region in the split, or a region without its mask.
    """

    def __init__(
        self,
        store: RegionStore | str | os.PathLike,
        split: str | None = "train",
        *,
        augment: bool = True,
        seed: int = 0,
        jitter: str = "hed",
        jitter_strength: float = 0.05,
        read_threads: int = 1,
    ):
        if jitter not in JITTERS:
            raise ConfigError(f"jitter {jitter!r} is not valid: use one of {', '.join(JITTERS)}")
        if not jitter_strength >= 0:
            raise ConfigError(f"jitter_strength {jitter_strength} must be >= 0")
        self.store = store if isinstance(store, RegionStore) else RegionStore(store)
        self.split = split
        self.regions = self.store.regions if split is None else self.store.split(split)
        if not self.regions:
            raise StoreError(
                f"store {self.store.path} has no regions in split {split!r} ({len(self.store)} regions in all); "
                "add some with gigaseg prepare, or assign one with RegionStore.set_split"
            )
        for region in self.regions:
            for kind in ("image", "mask"):
                if not region._file(kind).exists():
                    raise StoreError(
                        f"region {region.name!r} in {self.store.path} has no {kind} ({region._file(kind)} is "
                        f"missing); rebuild it with gigaseg prepare or remove it with RegionStore.remove"
                    )
        self.augment = bool(augment)
        self.seed = int(seed)
        self.jitter = jitter
        self.jitter_strength = float(jitter_strength)
        self.read_threads = int(read_threads)

    def __len__(self) -> int:
        return len(self.regions)

    def __repr__(self) -> str:
        return (
            f"RegionDataset({str(self.store.path)!r}, split={self.split!r}, regions={len(self)}, "
            f"augment={self.augment}, seed={self.seed})"
        )

    def __getitem__(self, index: int) -> RegionSample:
        return self.sample(index, 0)

    def params(self, index: int, epoch: int = 0) -> tuple[Dihedral, StainJitter | None]:
        """The augmentation of sample ``index`` at ``epoch`` (identity when not augmenting)."""
        if not self.augment:
            return DIHEDRAL[0], None
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        transform = DIHEDRAL[int(rng.integers(8))]
        jitter = StainJitter.draw(rng, self.jitter, self.jitter_strength)
        return transform, jitter

    def sample(self, index: int, epoch: int = 0) -> RegionSample:
        """Region ``index`` with the augmentation drawn for ``epoch``."""
        n = len(self.regions)
        if not -n <= index < n:
            raise IndexError(f"sample {index} is out of range: the dataset has {n} regions")
        index = index % n
        region = self.regions[index]
        transform, jitter = self.params(index, epoch)
        return RegionSample(
            image=RegionView(region.image, transform, jitter, self.read_threads),
            mask=RegionView(region.mask, transform, None, self.read_threads),
            name=region.name,
            index=index,
            epoch=int(epoch),
            transform=transform,
            jitter=jitter,
            meta=region.meta,
        )
