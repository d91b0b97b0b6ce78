"""Reading crops ahead of the model, the pass-1 crop cache, and heap reuse between tiles."""

from __future__ import annotations

import collections
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from .._memory import glibc
from ..errors import ConfigError
from .tiles import _Tile

if TYPE_CHECKING:
    from tqdm import tqdm

_T = TypeVar("_T")

# NOTE [Read ahead]
# Reading a crop is numpy work on one core (a memory-mapped or compressed array, a dihedral
# transform, colour jitter, the mask check) that would leave the other cores idle between
# tiles; the next tiles' crops and masks are read in background threads while the model runs on
# the current one. numpy releases the GIL in its copies and gathers, so several readers run in
# parallel. One reader suffices on the CPU, where the model itself keeps the cores busy. On a GPU
# one reader is the bottleneck: an augmented training view costs ~5 ms per megapixel on one core
# (~50 before NOTE [Colour table] and NOTE [View kernels] in the dataset), as much as the H100's
# tiled step, so accelerators get several (``default_read_workers``).
# Tiles are still yielded in order, so results do not depend on the number of readers. Each
# reader holds one crop in host memory. Errors of a reader are raised in the caller, at the tile
# that caused them.
MAX_READ_WORKERS = 8


def default_read_workers(device: str | torch.device) -> int:
    """Background crop readers for ``device``: 1 on the CPU; on an accelerator one per spare
    core, at most ``MAX_READ_WORKERS``."""
    if torch.device(device).type == "cpu":
        return 1
    return max(1, min(MAX_READ_WORKERS, (os.cpu_count() or 2) - 1))


def check_read_workers(read_workers: int | None, device: str | torch.device) -> int:
    """``read_workers`` checked (a positive integer), or ``default_read_workers(device)`` when None.

    Raises:
        ConfigError: not a positive integer.
    """
    return _check_read_workers(read_workers, torch.device(device))


def _check_read_workers(read_workers: int | None, dev: torch.device) -> int:
    if read_workers is None:
        return default_read_workers(dev)
    if isinstance(read_workers, bool) or not isinstance(read_workers, (int, np.integer)) or read_workers < 1:
        raise ConfigError(f"read_workers must be a positive integer, got {read_workers!r}")
    return int(read_workers)


def _read_ahead(tiles: Sequence[_Tile], read: Callable[[_Tile], _T], workers: int = 1,
                ahead: int | None = None) -> Generator[tuple[_Tile, _T], None, None]:
    """Yield ``(tile, read(tile))`` for each tile in order, with the reads of the following
    ``ahead`` tiles (default and at least ``workers``) done by ``workers`` background threads."""
    if not tiles:
        return
    ahead = max(workers, ahead or workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gigaseg-read") as pool:
        pending = collections.deque(pool.submit(read, t) for t in tiles[:ahead])
        try:
            for i, t in enumerate(tiles):
                box = [pending.popleft().result()]
                if i + ahead < len(tiles):
                    pending.append(pool.submit(read, tiles[i + ahead]))
                yield t, box.pop()  # keep no reference: the caller may free the crop early
        finally:  # an error or an abandoned generator: drop the reads not yet started
            for f in pending:
                f.cancel()


# NOTE [Crop cache]
# The two-pass Dice reads every crop twice. When a read costs more than a copy (a zarr array
# decompresses; a training view transposes and colour-jitters, ~150 ms per 2400^2 crop on one
# core, a third of a 2-core machine's work in an augmented step) pass 1 also writes its crops
# and masks, byte for byte, to an unlinked temporary file (TMPDIR; page cache, not process
# memory) and pass 2 reads them back from there. If the file cannot be written (disk full),
# the cache turns itself off and pass 2 reads the image again: the same bytes either way. It is
# not used when the temporary folder lacks room for all the crops (plus 1 GiB) or is a RAM
# file system (tmpfs: the crops would then take memory, which the budget promises not to);
# GIGASEG_SCRATCH names another folder.
class _CropCache:
    """Arrays of pass 1 kept by tile in an unlinked temporary file for pass 2. Thread-safe:
    the reader thread may still be writing when an error makes the caller close it."""

    def __init__(self, folder: str) -> None:
        self._lock = threading.Lock()
        self._offset = 0
        self._index: dict[_Tile, list[tuple[int, tuple[int, ...], np.dtype]]] = {}
        try:
            self._file: IO[bytes] | None = tempfile.TemporaryFile(prefix="gigaseg-crops-", dir=folder)
        except OSError:
            self._file = None

    def put(self, key: _Tile, arrays: Sequence[np.ndarray]) -> None:
        with self._lock:
            if self._file is None:
                return
            fd, entries = self._file.fileno(), []
            try:
                for a in arrays:
                    view = np.ascontiguousarray(a).data.cast("B")
                    done = 0
                    while done < len(view):
                        done += os.pwrite(fd, view[done:], self._offset + done)
                    entries.append((self._offset, a.shape, a.dtype))
                    self._offset += len(view)
            except OSError:  # no space left: forget everything, pass 2 reads the image
                self._close()
                return
            self._index[key] = entries

    def get(self, key: _Tile) -> list[np.ndarray] | None:
        with self._lock:
            file = self._file
            entries = self._index.get(key) if file is not None else None
            if file is None or entries is None:
                return None
            out = []
            for offset, shape, dtype in entries:
                a = np.empty(shape, dtype)
                view = a.data.cast("B")
                done = 0
                while done < len(view):
                    n = os.preadv(file.fileno(), [view[done:]], offset + done)
                    if n <= 0:
                        return None
                    done += n
                out.append(a)
            return out

    def close(self) -> None:
        with self._lock:
            self._close()

    def __enter__(self) -> _CropCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._index.clear()


def _expensive_to_read(image: Any) -> bool:
    """Whether reading a crop of ``image`` costs more than a copy (NOTE [Crop cache])."""
    return not isinstance(image, np.ndarray)


_RAM_FILE_SYSTEMS = {"tmpfs", "ramfs", "devtmpfs"}


def _file_system_type(folder: str) -> str | None:
    """The type of the file system holding ``folder`` (Linux /proc/self/mounts), else None."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    folder = os.path.realpath(folder)
    best, kind = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (folder == point or folder.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _crop_cache_folder(tiles: Sequence[_Tile]) -> str | None:
    """Where pass 1 may keep its crops (NOTE [Crop cache]), or None when nowhere suits."""
    explicit = os.environ.get("GIGASEG_SCRATCH")
    folder = explicit or tempfile.gettempdir()
    if not explicit and _file_system_type(folder) in _RAM_FILE_SYSTEMS:
        return None
    need = sum((t.cy1 - t.cy0) * (t.cx1 - t.cx0) * 3 + (t.y1 - t.y0) * (t.x1 - t.x0) for t in tiles)  # RGB + mask
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    return folder if free >= need + 2**30 else None


# NOTE [Heap reuse]
# Every tile allocates the same large tensors again. glibc serves allocations above its mmap
# threshold (at most 32 MiB) with fresh mmap'd pages and unmaps them on free, so each tile
# page-faults its whole working set in again: ~6 million faults in a 256 MP step, ~10% of its
# time. Serving large blocks from the heap and not trimming it keeps the pages of one tile for
# the next. Tiles of another crop shape (at the image's edges) would then split and fragment
# those blocks and grow the heap (+15% peak in a 256 MP step), so when the crop shape changes
# the engine first hands the free pages back (malloc_trim): the next tile faults its working
# set in once, and tiles of one shape reuse it. The setting is process-wide, so it is made
# once, on the first call of the engine, not at import. GIGASEG_NO_HEAP_REUSE=1 leaves glibc's
# defaults (for comparisons: whole-image autograd, ``gigaseg bench step --naive``, then peaks at
# 2.45 GiB instead of 3.4-4.7 GiB at 64 MP, but takes 4.17 s per step instead of 3.04-3.18 s).
_LIBC: Any = None
_HEAP_TUNED = False
_NO_HEAP_REUSE = "GIGASEG_NO_HEAP_REUSE"


def reuse_freed_memory() -> bool:
    """Keep freed large blocks in the process heap for the next tile (glibc only; once; not
    with GIGASEG_NO_HEAP_REUSE=1)."""
    global _HEAP_TUNED, _LIBC
    if _HEAP_TUNED:
        return _LIBC is not None
    _HEAP_TUNED = True
    if os.environ.get(_NO_HEAP_REUSE, "") not in ("", "0"):
        return False
    libc = glibc()  # None when not glibc: nothing to do
    m_trim_threshold, m_mmap_max = -1, -4
    if libc is not None and libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**30):
        _LIBC = libc
    return _LIBC is not None


class _HeapShapes:
    """Trims the heap when the crop shape changes (see NOTE [Heap reuse]). One per process,
    so that repeated calls on same-shaped tiles (training steps, strips) keep their pages."""

    def __init__(self) -> None:
        self.shape: tuple[int, int] | None = None

    def __call__(self, t: _Tile) -> None:
        shape = (t.cy1 - t.cy0, t.cx1 - t.cx0)
        if shape != self.shape:
            self.shape = shape
            if _LIBC is not None:
                _LIBC.malloc_trim(0)


_HEAP = _HeapShapes()


def _progress(iterable: Generator[_T, None, None], total: int, enabled: bool,
              desc: str) -> Generator[_T, None, None]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return _counted(iterable, tqdm(total=total, desc=desc, unit="tile", delay=2.0, leave=False))


def _counted(iterable: Iterable[_T], bar: tqdm) -> Generator[_T, None, None]:
    """Yield the items of ``iterable``, advancing ``bar``, without keeping a reference to the
    current one (a tile's crop may be freed by the caller before the next is read)."""
    with bar:
        for box in map(lambda item: [item], iterable):
            yield box.pop()
            bar.update()
