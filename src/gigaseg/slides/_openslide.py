"""The OpenSlide backend, and DICOM WSI series (directories, the JFIF colour quirk)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SlideError
from .base import _INSTALL_HINT, Slide, _composite_over_white, _Decline

if TYPE_CHECKING:
    from openslide import OpenSlide

_VL_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def detect_vendor(path: Path) -> str | None:
    """OpenSlide's format name for ``path`` ("aperio", "generic-tiff", ...), or None."""
    try:
        import openslide
    except ImportError:
        return None
    try:
        return openslide.OpenSlide.detect_format(str(path))
    except Exception:  # noqa: BLE001 - detection must never be the reason a file fails to open
        return None


class _OpenSlideSlide(Slide):
    backend = "openslide"

    def __init__(self, path: Path, osr: OpenSlide, *, shown_path: Path | None = None,
                 ycbcr_levels: Iterable[int] = ()) -> None:
        mpp: tuple[float, float] | None = None
        try:
            mpp = (float(osr.properties["openslide.mpp-x"]), float(osr.properties["openslide.mpp-y"]))
            if not all(v > 0 and np.isfinite(v) for v in mpp):
                mpp = None
        except (KeyError, ValueError):
            mpp = None
        super().__init__(shown_path or path, osr.level_dimensions, mpp=mpp)
        # Keep OpenSlide's own downsamples: its read_region maps level-0 to level
        # coordinates with them.
        self._level_downsamples = tuple(float(d) for d in osr.level_downsamples)
        self._osr = osr
        self._vendor = osr.properties.get("openslide.vendor")
        self._ycbcr_levels = frozenset(ycbcr_levels)

    def _read_level(self, level: int, lvl_x: int, lvl_y: int, lvl_w: int, lvl_h: int) -> np.ndarray:
        # NOTE [OpenSlide sub-pixel offsets]: OpenSlide places a level-k read at level
        # coordinate l0_x / downsample and resamples when that is fractional. We pass
        # the level-0 integer nearest to lvl_x * downsample, exact on level 0 and on
        # integer downsamples; otherwise the read may be shifted by < 0.5 / downsample
        # level pixels (OpenSlide's own contract).
        level_ds = self._level_downsamples[level]
        l0_x = lvl_x if level == 0 else round(lvl_x * level_ds)
        l0_y = lvl_y if level == 0 else round(lvl_y * level_ds)
        rgba = np.asarray(self._osr.read_region((l0_x, l0_y), level, (lvl_w, lvl_h)))
        rgb = rgba[..., :3]
        if level in self._ycbcr_levels:
            rgb = _ycbcr_to_rgb(rgb)
        return _composite_over_white(rgb, rgba[..., 3])

    def _close(self) -> None:
        self._osr.close()

    def _repr_extra(self) -> str:
        extra = f", vendor={self._vendor!r}" if self._vendor else ""
        if self._ycbcr_levels:
            extra += ", dicom_jfif_colour_fix=True"
        return extra


def open_openslide(path: Path, *, shown_path: Path | None = None) -> Slide:
    """Open ``path`` with OpenSlide; DICOM series get the JFIF colour check.

    Raises:
        _Decline: OpenSlide is missing or does not recognise the format.
        SlideError: OpenSlide recognises the file but cannot open it.
    """
    try:
        import openslide
    except ImportError as exc:
        raise _Decline(f"openslide-python is not installed ({exc}); {_INSTALL_HINT}") from None
    vendor = detect_vendor(path)
    if vendor is None:
        raise _Decline("not a format OpenSlide recognises")
    if vendor != "dicom":
        from ._tifffile import tiff_truncation_problem

        problem = tiff_truncation_problem(path)
        if problem:
            raise SlideError(f"{path}: {problem}")
    try:
        osr = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise _Decline(f"OpenSlide detects {vendor!r} but refuses it ({exc})") from None
    except (openslide.OpenSlideError, OSError) as exc:
        raise SlideError(
            f"{shown_path or path}: OpenSlide recognises it as {vendor!r} but cannot open it: "
            f"{exc}; the file may be truncated or corrupt"
        ) from exc
    try:
        if osr.level_count < 1:
            raise SlideError(f"{shown_path or path}: OpenSlide finds no image levels in it")
        ycbcr_levels = _dicom_ycbcr_levels(path, osr.level_dimensions) if vendor == "dicom" else ()
    except BaseException:
        osr.close()
        raise
    return _OpenSlideSlide(path, osr, shown_path=shown_path, ycbcr_levels=ycbcr_levels)


# NOTE [DICOM JFIF colours]: some DICOM WSI writers (e.g. Google's wsi2dcm, used for
# jcupitt/dicom-wsi-sample) store JFIF JPEG frames, which hold YCbCr, but label them
# PhotometricInterpretation RGB. OpenSlide 4.0.1 trusts the label and tells libjpeg
# the data is already RGB, so it returns the raw Y, Cb, Cr values as R, G, B (salmon
# and teal false colours). libjpeg's chroma upsampling is the same either way, so the
# JFIF YCbCr->RGB transform applied to OpenSlide's output reproduces a correct decode
# (checked: identical to pydicom + Pillow on the CMU-1 sample). We apply it to the
# levels whose file shows the mismatch: PhotometricInterpretation RGB, JPEG baseline
# transfer syntax, and a first frame that carries a JFIF APP0 marker (or an Adobe
# APP14 marker with transform 1, which also means YCbCr).


def _ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """JFIF (full-range BT.601) YCbCr to RGB, ``(h, w, 3)`` uint8, with libjpeg's
    fixed-point tables (jdcolor.c), so the result equals a libjpeg RGB decode."""
    y = ycc[..., 0].astype(np.int32)
    cb, cr = ycc[..., 1], ycc[..., 2]
    out = np.empty(ycc.shape, dtype=np.uint8)
    np.clip(y + _CR_R[cr], 0, 255, out=out[..., 0], casting="unsafe")
    np.clip(y + ((_CB_G[cb] + _CR_G[cr]) >> 16), 0, 255, out=out[..., 1], casting="unsafe")
    np.clip(y + _CB_B[cb], 0, 255, out=out[..., 2], casting="unsafe")
    return out


_C = np.arange(256, dtype=np.int64) - 128
_HALF = 1 << 15
_CR_R = ((91881 * _C + _HALF) >> 16).astype(np.int32)  # 1.40200 * 2**16
_CB_B = ((116130 * _C + _HALF) >> 16).astype(np.int32)  # 1.77200 * 2**16
_CB_G = (-22554 * _C).astype(np.int32)  # 0.34414 * 2**16
_CR_G = (-46802 * _C + _HALF).astype(np.int32)  # 0.71414 * 2**16


def _jpeg_means_ycbcr(frame: bytes) -> bool:
    """True when a JPEG stream's markers say its 3 components are YCbCr (JFIF/Adobe)."""
    if frame[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= len(frame):
        if frame[pos] != 0xFF:
            return False
        code = frame[pos + 1]
        if code == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(frame[pos + 2 : pos + 4], "big")
        data = frame[pos + 4 : pos + 2 + length]
        if code == 0xE0 and data[:5] == b"JFIF\x00":
            return True
        if code == 0xEE and data[:5] == b"Adobe" and len(data) >= 12:
            return data[11] == 1
        if code in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xDA):
            return False  # frame header or scan reached without a colour marker
        pos += 2 + length
    return False


def _dicom_file_needs_fix(path: Path) -> tuple[bool, tuple[int, int] | None]:
    """(needs the YCbCr fix, (TotalPixelMatrixColumns, Rows)) for one DICOM file."""
    import pydicom
    from pydicom.encaps import generate_frames

    with open(path, "rb") as fh:
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
        size = None
        if "TotalPixelMatrixColumns" in ds and "TotalPixelMatrixRows" in ds:
            size = (int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows))
        if ds.get("PhotometricInterpretation") != "RGB":
            return False, size
        if str(ds.file_meta.get("TransferSyntaxUID", "")) != _JPEG_BASELINE:
            return False, size
        header = fh.read(12)  # tag, VR "OB", 2 reserved bytes, undefined length
        if header[:4] != _PIXEL_DATA_TAG or header[8:12] != b"\xff\xff\xff\xff":
            return False, size
        frames = generate_frames(fh, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1))
        first = next(iter(frames), b"")
    return _jpeg_means_ycbcr(first), size


def _dicom_ycbcr_levels(path: Path, level_dimensions: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """OpenSlide levels of the series of ``path`` whose frames need the colour fix."""
    try:
        import pydicom
    except ImportError as exc:
        raise SlideError(
            f"{path}: reading DICOM WSI needs pydicom to check its JPEG colour space "
            f"({exc}); {_INSTALL_HINT}"
        ) from None
    try:
        series = pydicom.dcmread(path, stop_before_pixels=True).get("SeriesInstanceUID")
    except Exception as exc:
        raise SlideError(f"{path}: cannot read its DICOM header: {exc}") from exc
    by_size: dict[tuple[int, ...], bool] = {}
    for file in sorted(path.parent.iterdir()):
        if not _has_dicom_magic(file):
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
            if header.get("SeriesInstanceUID") != series:
                continue
            needs_fix, size = _dicom_file_needs_fix(file)
        except Exception:  # noqa: BLE001 - a stray unreadable file: OpenSlide decides about it
            continue
        if size is not None:
            by_size[size] = by_size.get(size, False) or needs_fix
    return tuple(k for k, dims in enumerate(level_dimensions) if by_size.get(tuple(dims), False))


def _has_dicom_magic(path: Path) -> bool:
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def dicom_file_in_directory(directory: Path) -> Path:
    """The level-0 file of the one DICOM WSI series in ``directory``.

    Raises:
        SlideError: no DICOM WSI in the directory, or several series.
    """
    try:
        import pydicom
    except ImportError as exc:
        raise SlideError(
            f"{directory}: reading a DICOM directory needs pydicom ({exc}); {_INSTALL_HINT}"
        ) from None
    entries = sorted(directory.iterdir())
    best: dict[str, tuple[int, Path]] = {}
    for file in entries:
        if not _has_dicom_magic(file):
            continue
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a stray unreadable file is not part of the slide
            continue
        if ds.get("SOPClassUID") != _VL_WSI_SOP_CLASS:
            continue
        if "VOLUME" not in [str(v).upper() for v in ds.get("ImageType", [])]:
            continue  # label, overview or thumbnail image
        pixels = int(ds.get("TotalPixelMatrixColumns", 0)) * int(ds.get("TotalPixelMatrixRows", 0))
        series = str(ds.get("SeriesInstanceUID", ""))
        if series not in best or pixels > best[series][0]:
            best[series] = (pixels, file)
    if not best:
        raise SlideError(
            f"{directory}: is a directory with no slide in it (no DICOM whole-slide "
            f"image among its {len(entries)} entries); pass a slide file, or a directory "
            f"holding one DICOM WSI series"
        )
    if len(best) > 1:
        files = ", ".join(str(p.name) for _, p in best.values())
        raise SlideError(
            f"{directory}: holds {len(best)} DICOM WSI series; pass one file of the "
            f"series you want ({files})"
        )
    return next(iter(best.values()))[1]
