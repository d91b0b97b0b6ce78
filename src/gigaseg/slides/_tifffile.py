"""The tifffile backend: plain, tiled, pyramidal and OME-TIFF, read tile by tile."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from ..errors import SlideError
from .base import _INSTALL_HINT, Slide, _composite_over_white, _Decline

if TYPE_CHECKING:
    from tifffile import COMPRESSION, PHOTOMETRIC, TiffFile, TiffPage

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# Plausible level-0 resolutions for a slide, microns per pixel. A resolution tag outside
# this range (72 dpi is 353 um/px) is a default written by an image editor, not a scan.
_MPP_RANGE = (0.01, 100.0)

# Decoded tiles/strips kept per open slide (least recently used dropped first): reads
# that overlap (tiles with halos, neighbouring regions) decode each segment once.
_CACHE_BYTES = 64 * 2**20

# The largest tile or strip decoded at once (a header that lies about its tile size, or a whole
# compressed image in one strip, would otherwise allocate without bound at the first read).
_MAX_SEGMENT_BYTES = 2**30

_OME_UNITS_IN_UM = {
    "pm": 1e-6,
    "nm": 1e-3,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


def has_tiff_magic(path: Path) -> bool:
    """True when ``path`` starts like a TIFF or BigTIFF file."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in _TIFF_MAGICS
    except OSError:
        return False


def _first_ifd_problem(path: Path) -> str | None:
    """Say so when the TIFF header points past the end of the file (a cut download)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            size = fh.seek(0, 2)
    except OSError:
        return None
    order: Literal["little", "big"] = "little" if head[:2] == b"II" else "big"
    big = int.from_bytes(head[2:4], order) == 43
    offset = int.from_bytes(head[8:16] if big else head[4:8], order)
    if offset >= size:
        return (
            f"truncated: its first image directory is at byte {offset} but the file has "
            f"only {size} bytes; copy or download it again"
        )
    return None


def tiff_truncation_problem(path: Path) -> str | None:
    """A sentence saying how a TIFF-based file is truncated or corrupt, else None.

    Checks that every image's segment data (tiles or strips, SubIFDs included) lies
    inside the file. Files that are not TIFF, or that tifffile cannot parse, give None
    (the backend that opens them reports their problems).
    """
    if not has_tiff_magic(path):
        return None
    problem = _first_ifd_problem(path)
    if problem:
        return problem
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            file_size = tif.filehandle.size
            for series in tif.series:
                for level in series.levels:
                    for page in level.pages:
                        if page is None:
                            continue
                        end = _data_end(page)
                        if end > file_size:
                            return (
                                f"truncated: image data ends at byte {end} but the file has "
                                f"only {file_size} bytes; copy or download it again"
                            )
    except Exception:  # noqa: BLE001 - tifffile raises many types; the backend that opens the file reports them
        return None
    return None


def _data_end(page: TiffPage) -> int:
    ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c > 0]
    return max(ends, default=0)


class _TiffSlide(Slide):
    backend = "tifffile"

    _FRESH_BLOCKS = True  # _read_level builds a new array (or copies the memory map)

    def __init__(self, path: Path, tif: TiffFile, pages: list[TiffPage], mpp: tuple[float, float] | None,
                 problems: list[str]) -> None:
        import tifffile

        super().__init__(path, [(p.imagewidth, p.imagelength) for p in pages], mpp=mpp)
        for problem in problems:
            self._problem(problem)
        self._tif = tif
        self._pages = pages
        # JPEG segments are checked for the corrupt data that imagecodecs decodes in silence
        # (NOTE [Corrupt JPEG data]); NDPI's JPEG headers are not plain streams and are not checked
        self._jpeg = [p.compression == tifffile.COMPRESSION.JPEG and not p.jpegheader for p in pages]
        self._checked: set[tuple[int, int]] = set()  # (level, segment) checked once, however often decoded
        self._lock = threading.RLock()
        self._ome = bool(tif.is_ome)
        # Uncompressed, contiguous levels (typical strip TIFFs) are read through a
        # memory map: a region read touches only its rows, whatever the strip size.
        self._memmaps = [_memmap(path, page) for page in pages]
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_bytes = 0

    def _read_level(self, level: int, lvl_x: int, lvl_y: int, lvl_w: int, lvl_h: int) -> np.ndarray:
        page = self._pages[level]
        memmap = self._memmaps[level]
        if memmap is not None:
            return _to_rgb(np.array(memmap[lvl_y : lvl_y + lvl_h, lvl_x : lvl_x + lvl_w]), page)
        level_w, level_h = page.imagewidth, page.imagelength
        if page.is_tiled:
            seg_w, seg_h = page.tilewidth, page.tilelength
        else:
            seg_w, seg_h = level_w, min(page.rowsperstrip or level_h, level_h)
        n_across = math.ceil(level_w / seg_w)
        t_rows = range(lvl_y // seg_h, (lvl_y + lvl_h - 1) // seg_h + 1)
        t_cols = range(lvl_x // seg_w, (lvl_x + lvl_w - 1) // seg_w + 1)
        indices = [t_row * n_across + t_col for t_row in t_rows for t_col in t_cols]
        samples = page.samplesperpixel
        # the segments cover the box (clipped to the level by the caller): no need to clear it
        out = np.empty((lvl_h, lvl_w, samples), dtype=page.dtype)
        missing = []
        for index, segment in self._segments(level, indices):
            t_row, t_col = divmod(index, n_across)
            seg_x, seg_y = t_col * seg_w, t_row * seg_h
            x0, y0 = max(lvl_x, seg_x), max(lvl_y, seg_y)
            x1 = min(lvl_x + lvl_w, seg_x + seg_w, level_w)
            y1 = min(lvl_y + lvl_h, seg_y + seg_h, level_h)
            dst = (slice(y0 - lvl_y, y1 - lvl_y), slice(x0 - lvl_x, x1 - lvl_x))
            if segment is None:  # sparse file: a tile that was never written is glass
                out[dst] = 0
                missing.append(dst)
            else:
                out[dst] = segment[y0 - seg_y : y1 - seg_y, x0 - seg_x : x1 - seg_x]
        rgb = _to_rgb(out, page)
        for dst in missing:
            rgb[dst] = 255
        return rgb

    def _segments(self, level: int, indices: list[int]) -> Iterator[tuple[int, np.ndarray | None]]:
        """Yield ``(index, (h, w, samples) array or None)`` for segments of a level."""
        page = self._pages[level]
        found: dict[int, np.ndarray] = {}
        wanted: list[int] = []
        raw: list[tuple[bytes | None, int]] = []
        with self._lock:
            for index in indices:
                key = (level, index)
                if key in self._cache:
                    self._cache.move_to_end(key)
                    found[index] = self._cache[key]
                else:
                    wanted.append(index)
            if wanted:
                offsets = [page.dataoffsets[i] for i in wanted]
                counts = [page.databytecounts[i] for i in wanted]
                segments = self._tif.filehandle.read_segments(offsets, counts, wanted, lock=self._lock)
                raw = list(cast("Iterator[tuple[bytes | None, int]]", segments))  # flat: (data, index) pairs
        yield from found.items()
        for data, index in raw:
            if not data:
                yield index, None
                continue
            if self._jpeg[level]:
                self._check_jpeg(level, index, data)
            segment = page.decode(
                data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader
            )[0]
            assert segment is not None, "tifffile decodes data to an array"
            segment = segment.reshape(segment.shape[-3:])  # (h, w, samples)
            self._remember((level, index), segment)
            yield index, segment

    def _check_jpeg(self, level: int, index: int, data: bytes) -> None:
        """Record (or, strict, raise) corrupt JPEG data in segment ``index`` of ``level``, the first
        time it is decoded (a segment dropped from the cache is decoded again, not checked again)."""
        from ._jpegcheck import jpeg_problem

        with self._lock:
            if (level, index) in self._checked:
                return
            self._checked.add((level, index))
        page = self._pages[level]
        problem = jpeg_problem(data, page.jpegtables)
        if problem:
            self._problem(f"level {level} {_segment_name(page, index)}: {problem}")

    def _remember(self, key: tuple[int, int], segment: np.ndarray) -> None:
        with self._lock:
            if key in self._cache or segment.nbytes > _CACHE_BYTES:
                return
            self._cache[key] = segment
            self._cache_bytes += segment.nbytes
            while self._cache_bytes > _CACHE_BYTES:
                _, dropped = self._cache.popitem(last=False)
                self._cache_bytes -= dropped.nbytes

    def _close(self) -> None:
        self._memmaps = [None] * len(self._pages)
        self._cache.clear()
        self._cache_bytes = 0
        self._tif.close()

    def _repr_extra(self) -> str:
        return ", ome=True" if self._ome else ""


def _segment_name(page: TiffPage, index: int) -> str:
    """"tile 7 at (x, y) = (512, 256)" or "strip 3 (rows 48 to 63)", in level pixels."""
    if page.is_tiled:
        n_across = math.ceil(page.imagewidth / page.tilewidth)
        t_row, t_col = divmod(index, n_across)
        return f"tile {index} at (x, y) = ({t_col * page.tilewidth}, {t_row * page.tilelength})"
    rows = min(page.rowsperstrip or page.imagelength, page.imagelength)
    return f"strip {index} (rows {index * rows} to {min((index + 1) * rows, page.imagelength) - 1})"


@contextlib.contextmanager
def _logged_warnings() -> Iterator[list[str]]:
    """Collect what tifffile logs at WARNING or above in this thread (a tag it cannot read, a
    value it coerces) while the block runs."""
    messages: list[str] = []
    thread = threading.get_ident()

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:
                messages.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler = _Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _memmap(path: Path, page: TiffPage) -> np.ndarray | None:
    """A read-only ``(h, w, samples)`` memory map of an uncompressed contiguous page."""
    try:
        if not page.is_memmappable or page.imagedepth != 1:
            return None
        offset = page.dataoffsets[0]
        dtype = np.dtype(page.dtype).newbyteorder(page.parent.byteorder)
        shape = (page.imagelength, page.imagewidth, page.samplesperpixel)
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    except Exception:  # noqa: BLE001 - any failure: fall back to reading segments
        return None


def _to_rgb(arr: np.ndarray, page: TiffPage) -> np.ndarray:
    """Decoded samples ``(h, w, s)`` of ``page`` to ``(h, w, 3)`` uint8 RGB over white."""
    import tifffile

    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        arr = 255 - arr
    samples = arr.shape[-1]
    colour = 1 if page.photometric in (
        tifffile.PHOTOMETRIC.MINISBLACK,
        tifffile.PHOTOMETRIC.MINISWHITE,
    ) else 3
    rgb: np.ndarray = arr[..., :colour]
    if colour == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    if samples > colour:
        alpha = arr[..., colour]
        extra = page.extrasamples[0] if page.extrasamples else 2
        if extra == 1:  # associated (premultiplied) alpha: colour + (1 - a) * white
            out = rgb.astype(np.uint16) + (255 - alpha.astype(np.uint16))[..., None]
            clipped: np.ndarray = np.minimum(out, 255)  # numpy's stubs type a ufunc's result Any
            return clipped.astype(np.uint8)
        return _composite_over_white(rgb, alpha)
    return np.ascontiguousarray(rgb)


def _check_page(path: Path, page: TiffPage, level: int) -> None:
    import tifffile

    def refuse(what: str) -> SlideError:
        return SlideError(
            f"{path}: level {level} has {what}, which gigaseg does not read; convert it to "
            f"an 8-bit RGB TIFF (e.g. with vips or tifffile)"
        )

    if page.dtype not in (np.uint8, np.uint16):
        raise refuse(f"sample type {page.dtype}")
    photometric = cast("PHOTOMETRIC", page.photometric)  # typed int by tifffile, which holds the enum member
    if photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE):
        allowed = (1, 2)
    elif photometric == tifffile.PHOTOMETRIC.RGB or (
        photometric == tifffile.PHOTOMETRIC.YCBCR and page.compression == tifffile.COMPRESSION.JPEG
    ):
        allowed = (3, 4)
    else:
        raise refuse(f"photometric interpretation {photometric.name}")
    if page.samplesperpixel not in allowed:
        raise refuse(f"{page.samplesperpixel} samples per pixel with {photometric.name}")
    if page.planarconfig != tifffile.PLANARCONFIG.CONTIG and page.samplesperpixel > 1:
        raise refuse("separate colour planes (planar configuration 2)")
    if page.imagedepth != 1:
        raise refuse(f"a depth of {page.imagedepth} (a volume)")


def open_tifffile(path: Path) -> Slide:
    """Open a TIFF with tifffile.

    Raises:
        _Decline: tifffile is missing or the file is not a TIFF.
        SlideError: a TIFF that is truncated, corrupt or holds no readable RGB image.
    """
    try:
        import tifffile
    except ImportError as exc:
        raise _Decline(f"tifffile is not installed ({exc}); {_INSTALL_HINT}") from None
    if not has_tiff_magic(path):
        raise _Decline("not a TIFF file")
    problem = _first_ifd_problem(path)
    if problem:
        raise SlideError(f"{path}: {problem}")
    with _logged_warnings() as logged:
        try:
            tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise SlideError(
                f"{path}: corrupt TIFF, tifffile cannot parse it: {exc}; the file may be "
                f"truncated, copy or download it again"
            ) from exc
        try:
            pages = _level_pages(path, tif)
            file_size = tif.filehandle.size
            for level, page in enumerate(pages):
                _check_page(path, page, level)
                if _segment_bytes(page) > _MAX_SEGMENT_BYTES and _memmap(path, page) is None:
                    raise SlideError(
                        f"{path}: level {level} is stored in {'tiles' if page.is_tiled else 'strips'} of "
                        f"{_segment_bytes(page) / 2**30:.1f} GiB each once decoded, more than gigaseg decodes at once "
                        f"({_MAX_SEGMENT_BYTES / 2**30:.0f} GiB); the header may lie, or the image is one huge "
                        "compressed strip: save it tiled (e.g. 512 x 512 tiles)"
                    )
                end = _data_end(page)
                if end > file_size:
                    raise SlideError(
                        f"{path}: truncated: level {level} image data ends at byte {end} but "
                        f"the file has only {file_size} bytes; copy or download it again"
                    )
            problems = _conversions(pages[0])
            probed = _probe_decode(path, tif, pages[-1], len(pages) - 1)
            if probed:
                problems.append(probed)
            try:
                mpp = _tiff_mpp(tif, pages[0])
            except Exception:  # noqa: BLE001 - odd metadata never stops a read; mpp= supplies it
                mpp = None
        except SlideError:
            tif.close()
            raise
        except Exception as exc:
            tif.close()
            raise SlideError(f"{path}: corrupt TIFF: {type(exc).__name__}: {exc}") from exc
    problems[:0] = [f"tifffile warns: {m}" for m in dict.fromkeys(logged)]
    return _TiffSlide(path, tif, pages, mpp, problems)


def _conversions(page: TiffPage) -> list[str]:
    """The conversions to 8-bit RGB that reading ``page`` takes (NOTE [Image modes] in _pillow)."""
    import tifffile

    done = []
    if page.dtype == np.uint16:
        done.append("16-bit samples: scaled to 8 bits as round(v * 255 / 65535), the full range of the type, "
                    "whatever range the pixels use")
    if page.photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE):
        done.append("a greyscale image: replicated to R = G = B; a model trained on colour slides may find no "
                    "tissue in it")
    return done


def _probe_decode(path: Path, tif: TiffFile, page: TiffPage, level: int) -> str | None:
    """Decode the last stored segment of ``page`` so that an unsupported codec or a
    corrupt tail fails at open time, not at the first read. Skipped for segments of
    more than 16 MiB (a whole-page strip). Returns what the JPEG check finds in it, or None."""
    import tifffile

    stored = [i for i, c in enumerate(page.databytecounts) if c > 0]
    if not stored or _segment_bytes(page) > 16 * 2**20:
        return None
    index = stored[-1]
    try:
        fh = tif.filehandle
        fh.seek(page.dataoffsets[index])
        data = fh.read(page.databytecounts[index])
        page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)
    except Exception as exc:
        raise SlideError(
            f"{path}: level {level} segment {index} cannot be decoded "
            f"({cast('COMPRESSION', page.compression).name} compression): {type(exc).__name__}: {exc}; the file "
            f"is corrupt, or its codec is missing (imagecodecs: {_INSTALL_HINT})"
        ) from exc
    if page.compression == tifffile.COMPRESSION.JPEG and not page.jpegheader:
        from ._jpegcheck import jpeg_problem

        problem = jpeg_problem(data, page.jpegtables)
        if problem:
            return f"level {level} {_segment_name(page, index)}: {problem}"
    return None


def _segment_bytes(page: TiffPage) -> int:
    """Bytes of one decoded tile or strip of ``page``."""
    if page.is_tiled:
        seg_bytes = page.tilewidth * page.tilelength
    else:
        seg_bytes = page.imagewidth * min(page.rowsperstrip or page.imagelength, page.imagelength)
    return int(seg_bytes) * page.samplesperpixel * np.dtype(page.dtype).itemsize


def _level_pages(path: Path, tif: TiffFile) -> list[TiffPage]:
    """The one page of each pyramid level of the first image series, finest first."""
    import tifffile

    if not tif.series:
        raise SlideError(
            f"{path}: corrupt TIFF: no readable image directory; the file may be truncated "
            f"or damaged, copy or download it again"
        )
    series = tif.series[0]
    pages = []
    for lvl_series in series.levels:
        lvl_pages = [p for p in lvl_series.pages if p is not None]
        if len(lvl_pages) != 1:
            raise SlideError(
                f"{path}: the first image series has axes {series.axes!r} and shape "
                f"{series.shape}: {len(lvl_pages)} planes per level, but gigaseg reads one "
                f"RGB or grey plane per level; convert it to an RGB TIFF"
            )
        page = lvl_pages[0]
        if not isinstance(page, tifffile.TiffPage):
            page = page.aspage()
        pages.append(page)
    widths = [p.imagewidth for p in pages]
    if widths != sorted(widths, reverse=True):
        raise SlideError(f"{path}: pyramid levels are not ordered finest first: widths {widths}")
    return pages


def _tiff_mpp(tif: TiffFile, page: TiffPage) -> tuple[float, float] | None:
    """Level-0 microns per pixel from OME metadata, an Aperio description or the
    XResolution / YResolution / ResolutionUnit tags; None when absent or implausible."""

    mpp = None
    if tif.is_ome and tif.ome_metadata:
        mpp = _ome_mpp(tif.ome_metadata)
    if mpp is None and tif.is_svs:
        mpp = _aperio_mpp(page.description)
    if mpp is None:
        mpp = _resolution_mpp(page)
    if mpp is None or not all(_MPP_RANGE[0] <= v <= _MPP_RANGE[1] for v in mpp):
        return None
    return mpp


def _aperio_mpp(description: str) -> tuple[float, float] | None:
    """``MPP = 0.499`` from an Aperio ImageDescription (``... |MPP = 0.499|...``)."""
    for field in description.split("|"):
        key, _, value = field.partition("=")
        if key.strip() == "MPP":
            try:
                return float(value), float(value)
            except ValueError:
                return None
    return None


def _resolution_mpp(page: TiffPage) -> tuple[float, float] | None:
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit)  # inch, centimeter
    if um_per_unit is None:
        return None
    values = []
    for name in ("XResolution", "YResolution"):
        value = tags[name].value
        pixels_per_unit = value[0] / value[1] if isinstance(value, tuple) else float(value)
        if not pixels_per_unit > 0:
            return None
        values.append(um_per_unit / pixels_per_unit)
    return values[0], values[1]


def _ome_mpp(xml: str) -> tuple[float, float] | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        values = []
        for axis in ("X", "Y"):
            size = element.get(f"PhysicalSize{axis}")
            unit = element.get(f"PhysicalSize{axis}Unit", "µm")
            if size is None or unit not in _OME_UNITS_IN_UM:
                return None
            try:
                values.append(float(size) * _OME_UNITS_IN_UM[unit])
            except ValueError:
                return None
        return values[0], values[1]
    return None
