"""The region store: gigapixel training regions on disk, read tile by tile.

A store is a directory::

    STORE/
      store.json            {"format": "gigaseg-store", "version": 1, "regions": [{"name", "split"}, ...]}
      prepare-config.json   effective configuration of the last ``gigaseg prepare`` run
      <region name>/
        region.json         metadata: source path + sha256, level-0 origin, mpp, size, split, seed, ...
        image.npy           (H, W, 3) uint8 RGB          (format "npy", the default)
        mask.npy            (H, W) uint8 0/1, 255 = ignore (a region whose region.json has
                            "classes": [name0, name1, ...]: class indices 0..C-1, 255 = ignore)
        (or image.zarr/ and mask.zarr/ for format "zarr": zarr v3, 512 x 512 chunks, zstd)

``store.json`` is the source of truth: a region folder that it does not list is not
part of the store. Regions are built in a hidden temporary folder (``.tmp-*``) and
renamed into place only when complete, and ``store.json`` is replaced by
write-temp-then-rename under a lock, so an interrupted build never leaves a region
that looks complete.

Arrays are opened lazily and never read whole: ``Region.image`` is a read-only
``np.memmap`` (format "npy") or a ``zarr.Array`` (format "zarr"); both support
``arr[y0:y1, x0:x1]`` -> numpy.

Example::

    store = RegionStore.create("regions/")
    with store.new_region("a", size=(w, h), meta={"mpp": 1.0}) as writer:
        for image_strip, mask_strip in strips:
            writer.append(image_strip, mask_strip)
    store = RegionStore("regions/")
    tile = store["a"].image[0:2048, 0:2048]
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ._atomic import write_json_atomic
from ._deps import require
from ._runinfo import utc_now
from .errors import ConfigError, GigasegError, InputError, OutputError, StoreError
from .options import MPP_RANGE, SPLITS
from .options import STORE_FORMATS as FORMATS

if TYPE_CHECKING:
    from .engine.arrays import ImageLike

__all__ = [
    "STORE_VERSION",
    "FORMATS",
    "SPLITS",
    "StoreError",
    "RegionStore",
    "Region",
    "RegionWriter",
    "sha256_file",
]

STORE_VERSION = 1
_STORE_JSON = "store.json"
_REGION_JSON = "region.json"
_TMP_PREFIX = ".tmp-"
_ZARR_CHUNK = 512
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, streamed in ``chunk``-byte reads.

    A directory (e.g. a DICOM series) hashes its files in sorted order, each as its
    relative path followed by its bytes.
    """
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


#: Names a region cannot take: the store's own files.
_RESERVED = (_STORE_JSON, "prepare-config.json")
_NAME_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. 'slide1-r0')"


def _valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None and name not in _RESERVED


def _check_name(name: str) -> str:
    if not _valid_name(name):
        raise ConfigError(f"region name {name!r} is not valid: use {_NAME_RULE}")
    return name


# NOTE [Names from files]
# store.json and region.json are input like any other: a store may come from elsewhere, or be
# edited by hand. A name read from them is checked by the same rule as a name given to
# new_region (_NAME_RE) before any path is built from it, and a region's folder must be a real
# folder directly inside the store (not a link out of it), so that no crafted entry
# ("../victim", "/etc", a symlink) makes a reader or a writer touch files outside the store.
def _damaged(file: Path, what: str) -> StoreError:
    return StoreError(f"{file} {what}; the store is damaged or was edited by hand: fix or remove that entry, "
                      "or rebuild the store with gigaseg prepare")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not valid: use one of {', '.join(SPLITS)}")
    return split


class Region:
    """One training region of a store: lazily opened ``image`` and ``mask`` arrays.

    Attributes:
        name: the region's name (its folder name).
        path: the region's folder.
        meta: the contents of ``region.json`` with ``split`` as recorded in ``store.json``.
    """

    def __init__(self, path: Path, meta: dict[str, Any], split: str | None = None) -> None:
        self.path = Path(path)
        self.meta = dict(meta)
        if split is not None:
            self.meta["split"] = split
        self.name = self.meta.get("name", self.path.name)
        self._image: ImageLike | None = None
        self._mask: ImageLike | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickle (e.g. to DataLoader workers) without the open arrays: a pickled memmap
        # would carry a copy of the whole region. Workers reopen them lazily.
        state = dict(self.__dict__)
        state["_image"] = state["_mask"] = None
        return state

    def __repr__(self) -> str:
        w, h = self.size
        return f"Region({self.name!r}, size=(w={w}, h={h}), split={self.split!r}, format={self.format!r})"

    @property
    def split(self) -> str:
        split: str = self.meta.get("split", "train")
        return split

    @property
    def format(self) -> str:
        fmt: str = self.meta.get("format", "npy")
        return fmt

    @property
    def size(self) -> tuple[int, int]:
        """(w, h) in region pixels."""
        w, h = self.meta["size"]
        return int(w), int(h)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in region pixels."""
        w, h = self.size
        return h, w

    @property
    def classes(self) -> list[str] | None:
        """The class names of a several-class region (``meta["classes"]``: its mask holds class
        indices 0..C-1, 255 ignore); None for a tissue region (0/1/255)."""
        from .options import check_class_names

        names = self.meta.get("classes")
        if names is None:
            return None
        try:
            return check_class_names(names, f"region {self.name!r}: region.json's \"classes\"")
        except ConfigError as exc:
            raise StoreError(f"{exc} ({self.path / _REGION_JSON}); fix the file or prepare the region again") from None

    def _file(self, kind: str) -> Path:
        return self.path / (f"{kind}.npy" if self.format == "npy" else f"{kind}.zarr")

    def has_mask(self) -> bool:
        return self._file("mask").exists()

    def _open(self, kind: str) -> ImageLike:
        path = self._file(kind)
        if not path.exists():
            raise StoreError(
                f"region {self.name!r} in {self.path.parent} has no {kind} ({path} is missing); "
                f"rebuild it with gigaseg prepare, or remove it with RegionStore.remove({self.name!r})"
            )
        zarr = require("zarr", f"region {self.name!r} (zarr format)") if self.format == "zarr" else None
        arr: ImageLike
        try:
            if zarr is None:
                arr = np.load(path, mmap_mode="r")
            else:
                arr = zarr.open_array(str(path), mode="r")
        except Exception as exc:  # any reader failure is a broken store
            raise StoreError(f"cannot open {path}: {exc}; rebuild the region with gigaseg prepare") from exc
        h, w = self.shape
        expected = (h, w, 3) if kind == "image" else (h, w)
        if tuple(arr.shape) != expected or np.dtype(arr.dtype) != np.uint8:
            raise StoreError(
                f"{path} holds {arr.dtype} {tuple(arr.shape)}, region.json says uint8 {expected}; "
                "rebuild the region with gigaseg prepare"
            )
        return arr

    @property
    def image(self) -> ImageLike:
        """(H, W, 3) uint8 RGB array-like (read-only memmap or zarr array), opened on first use."""
        if self._image is None:
            self._image = self._open("image")
        return self._image

    @property
    def mask(self) -> ImageLike:
        """(H, W) uint8 array-like: 0 background, 1 tissue, 255 ignore (class indices 0..C-1 and 255
        for a region with ``classes``); opened on first use."""
        if self._mask is None:
            self._mask = self._open("mask")
        return self._mask


class RegionStore:
    """A directory of training regions (see the module docstring for the layout).

    Args:
        path: an existing store directory. Use ``RegionStore.create`` for a new one.

    Raises:
        StoreError: the path does not exist or is not a gigaseg store.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._index = self._read_index()

    # -- opening and creating -------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, exist_ok: bool = False) -> RegionStore:
        """Create an empty store at ``path`` (a new or empty directory).

        Args:
            path: the store directory.
            exist_ok: if ``path`` is already a store, open it instead of failing.
        """
        path = Path(path)
        if (path / _STORE_JSON).exists():
            if exist_ok:
                return cls(path)
            raise StoreError(f"{path} is already a region store; open it with RegionStore({str(path)!r})")
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} exists and is not a directory; choose another `path`")
        if path.is_dir() and any(not p.name.startswith(".") for p in path.iterdir()):
            raise StoreError(
                f"{path} exists, is not empty and is not a region store; choose an empty or new `path`"
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"region store {path} cannot be created ({exc.strerror or exc}); "
                              "choose another `path`", cause=exc) from exc
        write_json_atomic(
            path / _STORE_JSON,
            {"format": "gigaseg-store", "version": STORE_VERSION, "created": utc_now(), "regions": []},
        )
        return cls(path)

    def _read_index(self) -> dict[str, Any]:
        path = self.path
        if not path.exists():
            raise StoreError(f"region store {path} does not exist; create it (RegionStore.create, gigaseg prepare)")
        if not (path / _STORE_JSON).is_file():
            raise StoreError(
                f"{path} is not a gigaseg region store (no {_STORE_JSON}); "
                "create one (RegionStore.create, gigaseg prepare)"
            )
        try:
            index = json.loads((path / _STORE_JSON).read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {path / _STORE_JSON}: {exc}; the store is damaged") from exc
        if not isinstance(index, dict) or index.get("format") != "gigaseg-store":
            raise StoreError(f"{path / _STORE_JSON} is not a gigaseg store index (no \"format\": \"gigaseg-store\")")
        if index.get("version") != STORE_VERSION:
            raise StoreError(
                f"{path / _STORE_JSON} has store version {index.get('version')!r}; this gigaseg reads version "
                f"{STORE_VERSION}; rebuild the store with this version's gigaseg prepare"
            )
        if not isinstance(index.get("regions"), list):
            raise StoreError(f"{path / _STORE_JSON} has no list of regions; the store is damaged")
        seen: set[str] = set()
        for entry in index["regions"]:
            file = path / _STORE_JSON
            if not isinstance(entry, dict) or "name" not in entry:
                raise _damaged(file, f"lists a region entry {entry!r} without a name")
            name = entry["name"]
            if not _valid_name(name):  # NOTE [Names from files]
                raise _damaged(file, f"lists a region named {name!r}, which is not a valid region name ({_NAME_RULE})")
            if name in seen:
                raise _damaged(file, f"lists the region {name!r} twice")
            seen.add(name)
            if entry.get("split", "train") not in SPLITS:
                raise _damaged(file, f"gives region {name!r} the split {entry.get('split')!r}; "
                                     f"valid: {', '.join(SPLITS)}")
        return index

    def reload(self) -> None:
        """Re-read ``store.json`` (another process may have added regions)."""
        self._index = self._read_index()

    def __repr__(self) -> str:
        return f"RegionStore({str(self.path)!r}, regions={len(self)})"

    # -- reading ----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [r["name"] for r in self._index["regions"]]

    @property
    def regions(self) -> list[Region]:
        """All regions, in the order they were added."""
        return [self._region(entry) for entry in self._index["regions"]]

    def _region_dir(self, name: str) -> Path:
        """The folder of region ``name`` (a name from the index): a real folder directly inside
        the store, never a link out of it (NOTE [Names from files])."""
        if not _valid_name(name):
            raise _damaged(self.path / _STORE_JSON, f"lists a region named {name!r}, which is not a valid "
                                                    f"region name ({_NAME_RULE})")
        folder = self.path / name
        if folder.is_symlink() or (folder.exists() and folder.resolve().parent != self.path.resolve()):
            raise StoreError(
                f"region {name!r}: {folder} is a link to {folder.resolve()}, outside the store {self.path}; "
                "a region's folder must be a real folder inside its store: replace the link by the folder, "
                f"or remove the region with RegionStore.remove({name!r})"
            )
        return folder

    def _read_meta(self, name: str) -> dict[str, Any]:
        """The checked contents of region ``name``'s region.json."""
        folder = self._region_dir(name)
        file = folder / _REGION_JSON
        try:
            meta = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"region {name!r} is listed in {self.path / _STORE_JSON} but {file} "
                f"cannot be read ({exc}); remove it with RegionStore.remove({name!r})"
            ) from exc
        if not isinstance(meta, dict):
            raise _damaged(file, f"holds {type(meta).__name__}, not a JSON object of region metadata")
        if "name" in meta and meta["name"] != name:  # NOTE [Names from files]
            raise _damaged(file, f"names the region {meta['name']!r}, but it is listed and stored as {name!r}")
        if meta.get("format", "npy") not in FORMATS:
            raise _damaged(file, f"has the format {meta.get('format')!r}; valid: {', '.join(FORMATS)}")
        size = meta.get("size")
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise _damaged(file, f"has the size {size!r}; expected [width, height], two positive integers")
        mpp = meta.get("mpp")
        if mpp is not None and not (isinstance(mpp, (int, float)) and not isinstance(mpp, bool)
                                    and math.isfinite(mpp) and MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):
            raise _damaged(file, f"has the mpp {mpp!r}; expected microns per pixel in "
                                 f"[{MPP_RANGE[0]}, {MPP_RANGE[1]}], or null")
        return meta

    def _region(self, entry: dict[str, Any]) -> Region:
        name = entry["name"]
        return Region(self._region_dir(name), self._read_meta(name), split=entry.get("split"))

    def __len__(self) -> int:
        return len(self._index["regions"])

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, key: int | str) -> Region:
        if isinstance(key, str):
            for entry in self._index["regions"]:
                if entry["name"] == key:
                    return self._region(entry)
            raise KeyError(f"no region {key!r} in {self.path}; it has {self.names}")
        return self._region(self._index["regions"][key])

    def split(self, split: str) -> list[Region]:
        """The regions of one split ("train" or "val")."""
        check_split(split)
        return [self._region(e) for e in self._index["regions"] if e.get("split", "train") == split]

    # -- changing ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold an exclusive lock on the store index; yields the freshly read index."""
        lock_path = self.path / ".lock"
        try:  # never through a link planted at the lock's name (NOTE [Temporary files] in gigaseg._atomic)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            if lock_path.is_symlink():
                raise StoreError(f"{lock_path} is a link; the store's lock file must be a plain file: "
                                 "remove the link") from exc
            raise OutputError(f"cannot lock the region store {self.path} ({exc.strerror or exc}); "
                              "fix its permissions", cause=exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._index = self._read_index()
                yield self._index
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _commit_index(self, index: dict[str, Any]) -> None:
        index["updated"] = utc_now()
        write_json_atomic(self.path / _STORE_JSON, index)
        self._index = index

    def set_split(self, name: str, split: str) -> None:
        """Assign region ``name`` to ``split`` ("train" or "val")."""
        check_split(split)
        with self._locked() as index:
            for entry in index["regions"]:
                if entry["name"] == name:
                    entry["split"] = split
                    break
            else:
                raise KeyError(f"no region {name!r} in {self.path}; it has {self.names}")
            meta = self._read_meta(name)
            meta["split"] = split
            write_json_atomic(self._region_dir(name) / _REGION_JSON, meta)
            self._commit_index(index)

    def remove(self, name: str) -> None:
        """Remove region ``name``: unlist it from ``store.json`` first, then delete its folder."""
        with self._locked() as index:
            kept = [e for e in index["regions"] if e["name"] != name]
            if len(kept) == len(index["regions"]):
                raise KeyError(f"no region {name!r} in {self.path}; it has {self.names}")
            folder = self.path / name
            if not folder.is_symlink():
                folder = self._region_dir(name)
            index["regions"] = kept
            self._commit_index(index)
        if folder.is_symlink():  # a link is removed, never what it points to
            folder.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)

    def clean_temporaries(self) -> list[str]:
        """Delete the temporary folders of interrupted builds (``.tmp-<name>-<pid>-*``)
        whose process is no longer running on this machine; returns their names."""
        removed = []
        for p in self.path.glob(f"{_TMP_PREFIX}*"):
            m = re.fullmatch(rf"{re.escape(_TMP_PREFIX)}.*-(\d+)-[0-9a-f]{{8}}", p.name)
            if not m or not p.is_dir():
                continue
            try:
                os.kill(int(m.group(1)), 0)
                continue  # still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
        return removed

    def unique_name(self, base: str) -> str:
        """``base`` made valid and not yet used in this store (``base``, ``base-2``, ``base-3``, ...)."""
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "region"
        base = base[:100]
        if not base[0].isalnum():
            base = "r" + base
        taken = set(self.names) | {p.name for p in self.path.iterdir()}
        name, i = base, 2
        while name in taken:
            name, i = f"{base}-{i}", i + 1
        return name

    def new_region(
        self,
        name: str,
        size: tuple[int, int],
        *,
        meta: dict[str, Any] | None = None,
        split: str = "train",
        format: str = "npy",  # noqa: A002 - the store's word for it
    ) -> RegionWriter:
        """Start writing a region of ``size`` (w, h); use as a context manager.

        Rows are appended top to bottom with ``RegionWriter.append``. The region appears
        in the store only when the ``with`` block exits normally with all rows written.
        """
        _check_name(name)
        check_split(split)
        if format not in FORMATS:
            raise ConfigError(f"store format {format!r} is not valid: use one of {', '.join(FORMATS)}")
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise ConfigError(f"region size (w={w}, h={h}) must be positive")
        if name in self.names or (self.path / name).exists():
            raise StoreError(f"{self.path} already has a region {name!r}; choose another name or remove it first")
        return RegionWriter(self, name, (w, h), dict(meta or {}), split, format)

    def add_region(
        self,
        name: str,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        meta: dict[str, Any] | None = None,
        split: str = "train",
        format: str = "npy",  # noqa: A002
    ) -> Region:
        """Add a region from in-memory arrays: ``image`` (H, W, 3) uint8, ``mask`` (H, W) uint8."""
        image = np.asarray(image)
        mask = np.asarray(mask)
        if image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        with self.new_region(name, (w, h), meta=meta, split=split, format=format) as writer:
            step = max(1, (64 << 20) // max(1, w * 3))
            for y0 in range(0, h, step):
                writer.append(image[y0 : y0 + step], mask[y0 : y0 + step])
        return self[name]


class _NpyArrayFile:
    """Writes an ``.npy`` file row block by row block with ``os.pwrite`` (no memory map,
    so writing never grows the process's resident memory)."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path = path
        self.shape = shape
        self.row_bytes = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        header = {"descr": "|u1", "fortran_order": False, "shape": tuple(shape)}
        with open(path, "wb") as f:
            np.lib.format.write_array_header_2_0(f, header)
            self.offset = f.tell()
            f.truncate(self.offset + int(np.prod(shape)))  # sparse until written
        self.fd: int | None = os.open(path, os.O_WRONLY)

    def write_rows(self, y0: int, data: np.ndarray) -> None:
        assert self.fd is not None, "write_rows after close"
        view = np.ascontiguousarray(data, dtype=np.uint8).data.cast("B")
        pos = self.offset + y0 * self.row_bytes
        while len(view):
            n = os.pwrite(self.fd, view, pos)
            view, pos = view[n:], pos + n

    def close(self) -> None:
        if self.fd is not None:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None


class _ZarrArrayFile:
    """Writes a zarr v3 array (512 x 512 chunks, zstd level 3) in row blocks; rows are
    buffered up to a whole chunk row so that no chunk is written twice."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        zarr = require("zarr", "writing a zarr-format region")

        self.path = path
        self.shape = shape
        chunks = (_ZARR_CHUNK, _ZARR_CHUNK) + tuple(shape[2:])
        self.arr = zarr.create_array(
            store=str(path),
            shape=shape,
            chunks=chunks,
            dtype="uint8",
            compressors=zarr.codecs.ZstdCodec(level=3),
            fill_value=0,
        )
        self.buf: list[np.ndarray] = []
        self.buf_y0 = 0
        self.buf_rows = 0

    def write_rows(self, y0: int, data: np.ndarray) -> None:
        if not self.buf:
            self.buf_y0 = y0
        self.buf.append(np.ascontiguousarray(data, dtype=np.uint8))
        self.buf_rows += data.shape[0]
        if self.buf_rows >= _ZARR_CHUNK:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.buf:
            return
        block = np.concatenate(self.buf, axis=0)
        n = block.shape[0] if final else (block.shape[0] // _ZARR_CHUNK) * _ZARR_CHUNK
        if n:
            self.arr[self.buf_y0 : self.buf_y0 + n] = block[:n]
        rest = block[n:]
        self.buf = [rest] if rest.shape[0] else []
        self.buf_y0 += n
        self.buf_rows = rest.shape[0]

    def close(self) -> None:
        self._flush(final=True)


class RegionWriter:
    """Builds one region in a temporary folder; see ``RegionStore.new_region``.

    ``append(image_rows, mask_rows)`` writes the next rows: ``image_rows`` (n, W, 3)
    uint8, ``mask_rows`` (n, W) uint8. On a normal exit with every row written, the
    writer fsyncs the arrays, writes ``region.json``, renames the folder into place and
    lists the region in ``store.json``. On an exception it deletes the folder.
    """

    def __init__(self, store: RegionStore, name: str, size: tuple[int, int], meta: dict[str, Any], split: str,
                 fmt: str) -> None:
        self.store = store
        self.name = name
        self.size = size
        self.meta = meta
        self.split = split
        self.format = fmt
        self.rows = 0
        self.tmp: Path | None = None
        self._arrays: dict[str, _NpyArrayFile | _ZarrArrayFile] = {}

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the region."""
        return self.size[1], self.size[0]

    def __enter__(self) -> RegionWriter:
        tmp = self.store.path / f"{_TMP_PREFIX}{self.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
        except OSError as exc:
            raise self._cannot_write(exc) from exc
        self.tmp = tmp
        try:
            h, w = self.shape
            ext = "npy" if self.format == "npy" else "zarr"
            cls = _NpyArrayFile if self.format == "npy" else _ZarrArrayFile
            self._arrays["image"] = cls(self.tmp / f"image.{ext}", (h, w, 3))
            self._arrays["mask"] = cls(self.tmp / f"mask.{ext}", (h, w))
        except BaseException as exc:
            self._abort()
            if isinstance(exc, OSError) and not isinstance(exc, GigasegError):
                raise self._cannot_write(exc) from exc
            raise
        return self

    def _cannot_write(self, exc: OSError) -> OutputError:
        return OutputError(
            f"cannot write region {self.name!r} in {self.store.path} ({exc.strerror or exc}); nothing of it was "
            "kept; free disk space or choose another `store`", cause=exc
        )

    def append(self, image_rows: np.ndarray, mask_rows: np.ndarray) -> None:
        """Write the next ``n`` rows of the region (top to bottom)."""
        if self.tmp is None:
            raise GigasegError("RegionWriter.append called outside its `with` block")
        h, w = self.shape
        image_rows = np.asarray(image_rows)
        mask_rows = np.asarray(mask_rows)
        n = image_rows.shape[0] if image_rows.ndim else 0
        if image_rows.shape != (n, w, 3) or image_rows.dtype != np.uint8:
            raise InputError(
                f"region {self.name!r}: image rows must be uint8 (n, {w}, 3), got {image_rows.dtype} {image_rows.shape}"
            )
        if mask_rows.shape != (n, w) or mask_rows.dtype != np.uint8:
            raise InputError(
                f"region {self.name!r}: mask rows must be uint8 ({n}, {w}), got {mask_rows.dtype} {mask_rows.shape}"
            )
        if self.rows + n > h:
            raise InputError(f"region {self.name!r}: {self.rows + n} rows written, more than its height {h}")
        try:
            self._arrays["image"].write_rows(self.rows, image_rows)
            self._arrays["mask"].write_rows(self.rows, mask_rows)
        except OSError as exc:  # the with block's exit removes the region's folder
            if isinstance(exc, GigasegError):
                raise
            raise self._cannot_write(exc) from exc
        self.rows += n

    def _abort(self) -> None:
        for arr in self._arrays.values():
            try:
                arr.close()
            except Exception:  # noqa: BLE001 - cleaning up after the first error
                pass
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if exc_type is not None:
            self._abort()
            return False
        try:
            tmp = self.tmp
            if tmp is None:
                raise GigasegError("RegionWriter.__exit__ called outside its `with` block")
            h, w = self.shape
            if self.rows != h:
                raise StoreError(
                    f"region {self.name!r}: only {self.rows} of {h} rows were written; the region was discarded"
                )
            for arr in self._arrays.values():
                arr.close()
            meta = dict(self.meta)
            meta.update(
                {
                    "store_version": STORE_VERSION,
                    "name": self.name,
                    "size": [w, h],
                    "format": self.format,
                    "split": self.split,
                    "created": meta.get("created", utc_now()),
                }
            )
            write_json_atomic(tmp / _REGION_JSON, meta)
            final = self.store.path / self.name
            with self.store._locked() as index:
                if final.exists() or any(e["name"] == self.name for e in index["regions"]):
                    raise StoreError(
                        f"{self.store.path} already has a region {self.name!r}; choose another name"
                    )
                os.rename(tmp, final)
                self.tmp = None
                try:
                    index["regions"].append({"name": self.name, "split": self.split})
                    self.store._commit_index(index)
                except BaseException:
                    shutil.rmtree(final, ignore_errors=True)
                    raise
        except BaseException as exc:
            self._abort()
            if isinstance(exc, OSError) and not isinstance(exc, GigasegError):
                raise self._cannot_write(exc) from exc
            raise
        return False
