"""Preparing training regions: slides and their masks (or the synthetic generator) into a store.

Regions are cut at a target mpp, strip by strip, with masks from a mask image or TIFF, QuPath
GeoJSON (polygons with holes) or the generator, and written through
:class:`gigaseg.store.RegionWriter` (whole or not at all).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ._deps import require
from ._files import check_free_space, check_input
from ._units import parse_size
from .errors import ConfigError, GigasegError, InputError
from .options import IGNORE_MODES, check_number, check_options
from .outputs import refuse_inputs
from .store import Region, RegionStore, check_split, sha256_file

__all__ = ["IGNORE_MODES", "parse_origin", "parse_size", "prepare_region", "prepare_synthetic"]


_MASK_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GEOJSON_EXTS = (".geojson", ".json")
_TIFF_EXTS = (".tif", ".tiff")
_STRIP_BUDGET = 96 << 20  # bytes of slide pixels read per strip (RGBA at level 0)
_MASK_BLOCK = 64 << 20  # bytes of mask pixels read at a time


def parse_origin(text: str) -> tuple[int, int]:
    """Parse ``X,Y`` (level-0 pixels, integers) into (x, y)."""
    m = re.fullmatch(r"\s*(-?\d+)\s*,\s*(-?\d+)\s*", str(text))
    if not m:
        raise ConfigError(f"`origin={text!r}` is not valid: expected X,Y in level-0 pixels, e.g. 1024,2048")
    return int(m.group(1)), int(m.group(2))


class _MaskImage:
    """A whole-slide mask image at any resolution, sampled nearest onto a region grid.

    Values: 0/1 (255 = ignore) are kept; a mask of only 0/255 (a binary image) maps
    255 to 1; bool maps to 0/1; floats must be whole numbers among those. Anything else is
    refused, naming the values (NOTE [Mask images]). With ``classes`` (C class names), a label
    image: the class indices 0..C-1 and 255 (ignore) are kept, anything else refused.
    """

    def __init__(self, path: Path, slide_dims: tuple[int, int], classes: list[str] | None = None):
        self.path = path
        self.classes = classes
        self.arr = self._open(path, slide_dims)
        if self.arr.ndim == 3 and self.arr.shape[2] == 1:
            self.arr = self.arr[:, :, 0]
        if self.arr.ndim != 2:
            raise InputError(
                f"mask {path} has shape {tuple(self.arr.shape)}; expected a single-channel (H, W) image "
                "with 0/1 or 0/255 values; convert it to greyscale"
            )
        mh, mw = (int(v) for v in self.arr.shape)
        sw, sh = slide_dims
        _check_mask_size(path, (mw, mh), (sw, sh))
        self.sx, self.sy = sw / mw, sh / mh
        self.lut = self._value_lut()

    @staticmethod
    def _open(path: Path, slide_dims: tuple[int, int]):
        suffix = path.suffix.lower()
        check_input(path, "mask", param="mask")  # NOTE [Special files]
        try:
            if suffix == ".npy":
                return np.load(path, mmap_mode="r")
            if suffix in _TIFF_EXTS:
                tifffile = require("tifffile", "a TIFF mask")
                with tifffile.TiffFile(path) as tif:  # its size, before anything is read
                    page = tif.pages[0]
                    _check_mask_size(path, (page.imagewidth, page.imagelength), slide_dims)
                try:
                    return tifffile.memmap(path, mode="r")
                except Exception:  # noqa: BLE001 - compressed or tiled: read lazily through zarr
                    zarr = require("zarr", "a compressed or tiled TIFF mask")
                    return zarr.open_array(tifffile.imread(path, aszarr=True, level=0), mode="r")
            require("PIL", "an image mask")
            from PIL import Image

            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # masks may be large: trust them
            try:
                with Image.open(path) as img:
                    _check_mask_size(path, img.size, slide_dims)  # before decoding what the header says
                    if img.mode in ("RGB", "RGBA", "P", "LA"):
                        img = img.convert("L")
                    return np.asarray(img)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        except FileNotFoundError as exc:
            raise InputError(f"mask file {path} does not exist; check the `mask` path") from exc
        except GigasegError:
            raise
        except MemoryError as exc:
            raise InputError(f"mask {path} does not fit in memory ({exc}); save it as .npy or an uncompressed "
                             "TIFF, which are read without loading them whole") from exc
        except Exception as exc:  # readers raise many types
            raise InputError(f"cannot read mask {path}: {exc}; use a .npy, TIFF or PNG mask") from exc

    def _value_lut(self) -> np.ndarray:
        arr = self.arr
        counts = np.zeros(256, np.int64)
        rows = max(1, _MASK_BLOCK // max(1, arr.shape[1] * np.dtype(arr.dtype).itemsize))
        for y in range(0, arr.shape[0], rows):
            block = np.asarray(arr[y : y + rows])
            if block.dtype == bool:
                block = block.view(np.uint8)
            if block.dtype != np.uint8:
                if block.dtype.kind not in "uif":
                    raise InputError(f"mask {self.path} holds {block.dtype} values; expected numbers 0/1 or 0/255")
                if block.dtype.kind == "f" and block.size:
                    odd = block[~np.isfinite(block) | (block != np.round(block))]
                    if odd.size:  # 0/0.7 would become 0/0 below: all background, without a word
                        shown = ", ".join(f"{v:g}" for v in np.unique(odd)[:5])
                        raise InputError(
                            f"mask {self.path} has values that are not whole numbers ({shown}; {block.dtype}); "
                            "expected 0/1 (255 = ignore) or 0/255: threshold it (e.g. mask > 0.5) and save it again"
                        )
                if block.size and (block.min() < 0 or block.max() > 255):
                    raise InputError(
                        f"mask {self.path} has values outside 0..255 ({block.dtype}); expected 0/1 or 0/255"
                    )
                block = block.astype(np.uint8)
            counts += np.bincount(block.ravel(), minlength=256)
        present = set(np.nonzero(counts)[0].tolist())
        if self.classes is not None:
            allowed = set(range(len(self.classes))) | {255}
            if not present <= allowed:
                bad = sorted(present - allowed)[:5]
                raise InputError(
                    f"mask {self.path} has values {bad}, but {len(self.classes)} classes are given "
                    f"({', '.join(self.classes)}): a label mask holds the class indices 0..{len(self.classes) - 1} "
                    "and 255 (ignore); give every class (`classes`), or map the other values and save it again"
                )
            return np.arange(256, dtype=np.uint8)
        if not present <= {0, 1, 255}:
            bad = sorted(present - {0, 1, 255})[:5]
            raise InputError(
                f"mask {self.path} has values {bad} besides 0/1/255; expected 0/1 (255 = ignore) or 0/255; "
                "threshold it (e.g. mask > 127) and save it again"
            )
        lut = np.arange(256, dtype=np.uint8)
        if 1 not in present:  # a binary 0/255 image: 255 is tissue
            lut[255] = 1
        return lut

    def strip(self, rows_l0: np.ndarray, cols_l0: np.ndarray) -> np.ndarray:
        """Nearest samples at level-0 pixel centres: rows (n,), cols (w,) -> (n, w) uint8."""
        mh, mw = self.arr.shape
        r = np.clip(np.floor(rows_l0 / self.sy).astype(np.int64), 0, mh - 1)
        c = np.clip(np.floor(cols_l0 / self.sx).astype(np.int64), 0, mw - 1)
        c0, c1 = int(c.min()), int(c.max()) + 1
        out = np.empty((r.shape[0], c.shape[0]), np.uint8)
        per = max(1, _MASK_BLOCK // max(1, (c1 - c0) * np.dtype(self.arr.dtype).itemsize))
        i = 0
        while i < r.shape[0]:
            j = i + 1
            while j < r.shape[0] and r[j] - r[i] < per:
                j += 1
            r0, r1 = int(r[i:j].min()), int(r[i:j].max()) + 1
            block = np.asarray(self.arr[r0:r1, c0:c1])
            if block.dtype != np.uint8:
                block = block.astype(np.uint8)
            out[i:j] = block[np.ix_(r[i:j] - r0, c - c0)]
            i = j
        return self.lut[out]


# NOTE [Mask images]
# A mask image covers the whole slide at one scale k (any resolution), each side rounded to whole
# pixels: its (w, h) must be the slide's (W, H) / k to within one pixel on each side for one k
# (with 1% to spare for exports at fractional scales). This also refuses a mask too small to say
# anything (a 1 x 1 mask matches any nearly square slide by rounding alone): a mask needs at least
# 8 pixels on each side, or the slide's own size where that is smaller. A mask larger than 4 times
# the slide's level 0 is refused before it is read (a header that lies about its size).
_MIN_MASK_SIDE = 8


def _check_mask_size(path: Path, mask_size: tuple[int, int], slide_size: tuple[int, int]) -> None:
    mw, mh = (int(v) for v in mask_size)
    sw, sh = slide_size
    if mw < min(_MIN_MASK_SIDE, sw) or mh < min(_MIN_MASK_SIDE, sh):
        raise InputError(
            f"mask {path} is {mw} x {mh} (w x h): too small to outline tissue on the slide of {sw} x {sh}; a mask "
            f"needs at least {_MIN_MASK_SIDE} pixels on each side (any scale): check that it is the right file"
        )
    if mw * mh > 4 * sw * sh:
        raise InputError(
            f"mask {path} is {mw} x {mh} (w x h), more than 4 times the slide's {sw} x {sh} pixels: check that it "
            "belongs to this slide, or save it at the slide's size or smaller"
        )
    # the scales k for which each side rounds to the mask's: |W / k - w| < 1 and |H / k - h| < 1
    k_lo = max(sw / (mw + 1), sh / (mh + 1))
    k_hi = min(sw / (mw - 1) if mw > 1 else math.inf, sh / (mh - 1) if mh > 1 else math.inf)
    if k_lo >= k_hi * 1.01:
        raise InputError(
            f"mask {path} is {mw} x {mh} (w x h) but the slide is {sw} x {sh}: the aspect ratios differ "
            f"(downsample {sw / mw:.3f} in x, {sh / mh:.3f} in y); the mask must cover the whole slide "
            "at one scale (any resolution); check that the mask belongs to this slide"
        )


def _open_slide(slide, slide_mpp, strict: bool = False):
    """(slide object, close?) from a path or an already open slide."""
    if hasattr(slide, "read_region"):
        return slide, False
    from .slides import open_slide

    return open_slide(slide, mpp=slide_mpp, strict=strict), True


def _slide_mpp(slide) -> float | None:
    mpp = getattr(slide, "mpp", None)
    if mpp is None:
        return None
    if isinstance(mpp, (tuple, list)):
        return float(mpp[0])
    return float(mpp)


def _strip_rows(w: int, downsample: float) -> tuple[int, bool]:
    """(rows per strip, exact): rows from a ~96 MB budget of level-0 RGBA pixels.

    # NOTE [Exact strips]
    The slide reader takes integer level-0 locations, so a strip starting at region row r
    starts at level-0 row round(oy + r * d). When the downsample d is a fraction p / q
    (0.499 -> 1.0 mpp is 1000 / 499), strips of a multiple of q rows start exactly on
    level-0 rows and the strips tile the region exactly; q rows are allowed up to 8x the
    budget (measured: peak memory stays under 2 GiB for 64000-pixel-wide regions). Otherwise
    (``exact`` False) a strip may sit up to 0.5 level-0 pixel off.
    """
    rows = int(min(1024, max(16, _STRIP_BUDGET // max(1, int(w * 4 * max(1.0, downsample) ** 2)))))
    frac = Fraction(downsample).limit_denominator(4096)
    if abs(float(frac) - downsample) > 1e-9 * downsample:
        return rows, False
    q = frac.denominator
    if q <= rows:
        return (rows // q) * q, True
    if q * w * 4 * max(1.0, downsample) ** 2 <= 8 * _STRIP_BUDGET:
        return q, True
    return rows, False


def _valid_range(origin: float, extent: int, downsample: float, n: int) -> tuple[int, int]:
    """Region pixels [a, b) whose level-0 footprint lies inside [0, extent)."""
    a = max(0, math.ceil(-origin / downsample - 1e-9))
    b = min(n, math.floor((extent - origin) / downsample + 1e-9))
    return a, max(a, b)


def prepare_region(
    store: RegionStore,
    slide,
    mask,
    size: tuple[int, int],
    *,
    mpp: float | None = None,
    origin: tuple[int, int] | None = None,
    pad: bool = False,
    split: str = "train",
    name: str | None = None,
    format: str = "npy",  # noqa: A002
    slide_mpp: float | None = None,
    mask_classes: list[str] | None = None,
    ignore: str = "keep",
    strip_rows: int | None = None,
    progress: bool = True,
    strict: bool = False,
    classes: list[str] | None = None,
) -> Region:
    """Cut a region of ``size`` (w, h) at ``mpp`` from a slide, with its mask, into ``store``.

    Reads strip by strip (``read_region_at_mpp``), so memory stays bounded by one strip
    whatever the region size.

    Args:
        store: the destination store.
        slide: a slide path (opened with ``gigaseg.slide.open_slide``) or an open Slide.
        mask: a mask covering the whole slide: an image (``.npy``, TIFF, PNG...; 0/1 or
            0/255; any resolution, sampled nearest) or QuPath GeoJSON (``.geojson``/
            ``.json``, level-0 coordinates).
        size: (w, h) of the region in pixels at ``mpp``.
        mpp: target microns per pixel; None reads level 0 as it is.
        origin: (x, y) level-0 pixel of the region's top-left corner. Default: the
            region centred on the slide (at 0 along an axis where it does not fit).
        pad: a region larger than the slide is taken as the whole slide padded with
            background (white image, mask 0) instead of refused.
        split: "train" or "val".
        name: region name (default: the slide's file stem, made unique).
        format: "npy" (default) or "zarr".
        slide_mpp: the slide's level-0 mpp when the file does not say it.
        mask_classes: GeoJSON classification names to use (None: all).
        ignore: what 255 ("ignore") in a 0/1/255 mask image becomes: "keep" (255),
            "background" (0) or "tissue" (1). Training leaves 255 out of the loss.
        strip_rows: rows per strip (default: from a ~96 MB budget).
        progress: show a tqdm bar (on a terminal).
        strict: a warning about the data fails the region (nothing of it is kept) instead of
            being recorded in its ``warnings``: a problem of the slide's data (NOTE [Slide
            problems]) or GeoJSON polygons wholly outside the slide.
        classes: the class names of a label mask (an image whose values are the class indices
            0..C-1, 255 ignore) for a model of several classes; recorded in the region's metadata
            (``classes``), where ``gigaseg train`` reads them. None: a tissue mask.

    The region's metadata holds ``warnings``: what reading the slide met (corrupt data, a
    greyscale or 16-bit image converted to RGB) and GeoJSON polygons wholly outside the slide;
    empty when clean.

    Raises:
        InputError: the region does not fit the slide (without ``pad``), a mask is
            unreadable, has other values, another aspect ratio or is too small, a GeoJSON has
            coordinates that are not finite or far outside the slide; with ``strict``, a warning.
        SlideError: the slide cannot be opened or read (with ``strict``, a problem of its data).
        OutputError: the store's disk has no room for the region (checked before it is read).
    """
    from tqdm import tqdm

    from .errors import SlideError

    check_split(split)
    if ignore not in IGNORE_MODES:
        raise ConfigError(f"ignore={ignore!r} is not valid: use one of {', '.join(IGNORE_MODES)}")
    check_options(mpp=mpp, slide_mpp=slide_mpp, strip_rows=strip_rows)
    if classes is not None:
        from .options import check_class_names

        classes = check_class_names(classes, "`classes`")
        if mask is not None and Path(mask).suffix.lower() in _GEOJSON_EXTS:
            raise InputError(f"`classes` needs a label image as the mask (class indices 0..{len(classes) - 1}, "
                             f"255 ignore); {mask} is GeoJSON, which gives a 0/1 mask: rasterize each class into "
                             "one label image first")
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise ConfigError(f"region size (w={w}, h={h}) must be positive")
    if mask is None:
        raise InputError("a region needs a mask: pass a mask image or GeoJSON as `mask` for each slide")
    mask_path = Path(mask)
    if not mask_path.exists():
        raise InputError(f"mask file {mask_path} does not exist; check the `mask` path")
    slide_path = None if hasattr(slide, "read_region") else Path(slide)
    if slide_path is not None and not slide_path.exists():
        raise SlideError(f"slide file {slide_path} does not exist; check the SLIDE path")
    # the store's index is an output of every region: never a slide or a mask (NOTE [Outputs never
    # replace inputs] in gigaseg.outputs)
    refuse_inputs([store.path / "store.json"], [mask_path, *([slide_path] if slide_path is not None else [])])
    sl, close = _open_slide(slide, slide_mpp, strict)
    label = str(slide_path) if slide_path is not None else repr(sl)
    try:
        sw, sh = (int(v) for v in sl.dimensions)
        native = _slide_mpp(sl)
        if slide_mpp is not None and native is None:
            native = float(slide_mpp)
        if mpp is None:
            ds = 1.0
        else:
            if native is None:
                raise InputError(
                    f"slide {label} does not record its mpp, so `mpp={mpp}` cannot be honoured; "
                    "pass the slide's level-0 mpp as `slide_mpp`, or omit `mpp` to read level 0 as is"
                )
            ds = float(mpp) / native
        l0_w, l0_h = w * ds, h * ds
        if origin is None:
            ox = max(0, (sw - l0_w) // 2) if l0_w <= sw else 0
            oy = max(0, (sh - l0_h) // 2) if l0_h <= sh else 0
            origin = (int(ox), int(oy))
        ox, oy = (int(v) for v in origin)
        xa, xb = _valid_range(ox, sw, ds, w)
        ya, yb = _valid_range(oy, sh, ds, h)
        fits = (xa, xb, ya, yb) == (0, w, 0, h)
        if not fits and not pad:
            fit_w, fit_h = int((sw) / ds), int((sh) / ds)
            raise InputError(
                f"region {h}x{w} (HxW) at {mpp or native or 'level-0'} mpp from level-0 origin ({ox}, {oy}) covers "
                f"{l0_w:.0f} x {l0_h:.0f} level-0 pixels, outside slide {label} of {sw} x {sh} (w x h); "
                f"the whole slide is {fit_h}x{fit_w} (HxW) at this mpp: use a smaller `size`, another `origin`, "
                "or `pad=True` to take the whole slide padded with background"
            )
        if xb <= xa or yb <= ya:
            raise InputError(
                f"region from level-0 origin ({ox}, {oy}) does not overlap slide {label} "
                f"({sw} x {sh}); use another `origin`"
            )
        warnings: list[str] = []
        suffix = mask_path.suffix.lower()
        if suffix in _GEOJSON_EXTS:
            from .geojson import GeojsonMask

            gj = GeojsonMask(mask_path, origin=(ox, oy), downsample=ds, classes=mask_classes, slide_size=(sw, sh))
            mask_src = None
            mask_meta = {"kind": "geojson", "stats": gj.stats}
            warnings.extend(gj.warnings)
        else:
            gj = None
            mask_src = _MaskImage(mask_path, (sw, sh), classes)
            if ignore != "keep" and mask_src.lut[255] == 255:
                mask_src.lut[255] = 0 if ignore == "background" else 1
            mask_meta = {"kind": "image", "shape": list(mask_src.arr.shape), "ignore": ignore}
        mask_meta.update(path=str(mask_path.resolve()), sha256=sha256_file(mask_path))
        if name is None:
            stem = slide_path.name.split(".")[0] if slide_path is not None else "region"
            name = store.unique_name(stem)
        meta = {
            "source": {
                "kind": "slide",
                "path": str(slide_path.resolve()) if slide_path is not None else repr(sl),
                "sha256": sha256_file(slide_path) if slide_path is not None else None,
                "bytes": _path_bytes(slide_path) if slide_path is not None else None,
                "dimensions": [sw, sh],
                "mpp": native,
            },
            "mask_source": mask_meta,
            "origin": [ox, oy],
            "mpp": float(mpp) if mpp is not None else native,
            "downsample": ds,
            "level0_extent": [l0_w, l0_h],
            "pad": bool(pad),
            "content_box": [xa, ya, xb, yb],
            "seed": None,
        }
        if classes is not None:
            meta["classes"] = classes
        rows, exact = _strip_rows(w, ds)
        if strip_rows:
            rows = int(strip_rows)
            exact = abs(rows * ds - round(rows * ds)) < 1e-9
        meta["strip_rows"], meta["strips_exact"] = rows, bool(exact)
        # the region's arrays (RGB and mask, 4 bytes a pixel; zarr compresses H&E about 3x, so only an
        # eighth is asked of it) before anything is read (NOTE [Bounded work] in gigaseg.predict)
        check_free_space(store.path, w * h * 4 // (8 if format == "zarr" else 1),
                         f"region {name!r} ({w} x {h} pixels, {format})",
                         "free disk space, choose another store (`store`), or a smaller `size`")
        cols_l0 = ox + (np.arange(w) + 0.5) * ds
        with store.new_region(name, (w, h), meta=meta, split=split, format=format) as writer, tqdm(
            total=h, unit="row", desc=f"prepare {name}", disable=None if progress else True
        ) as bar:
            for ty in range(0, h, rows):
                n = min(rows, h - ty)
                img = np.full((n, w, 3), 255, np.uint8)
                msk = np.zeros((n, w), np.uint8)
                ra, rb = max(ty, ya), min(ty + n, yb)
                if rb > ra:
                    loc = (int(round(ox + xa * ds)), int(round(oy + ra * ds)))
                    if mpp is None:
                        part = sl.read_region(loc, 0, (xb - xa, rb - ra))
                    else:
                        part = sl.read_region_at_mpp(loc, float(mpp), (xb - xa, rb - ra))
                    part = np.asarray(part)
                    if part.shape[:2] != (rb - ra, xb - xa):
                        raise SlideError(
                            f"slide {label} returned {part.shape} for a {rb - ra}x{xb - xa} read at {loc}"
                        )
                    img[ra - ty : rb - ty, xa:xb] = part[..., :3]
                    if gj is not None:
                        m = gj.strip(ra, rb - ra, w)
                    else:
                        assert mask_src is not None  # a GeoJSON or an image: one of the two is set
                        m = mask_src.strip(oy + (np.arange(ra, rb) + 0.5) * ds, cols_l0)
                    msk[ra - ty : rb - ty, xa:xb] = m[:, xa:xb]
                writer.append(img, msk)
                bar.update(n)
            # what reading met (NOTE [Slide problems]): recorded with the region, or with `strict` an error
            # that discards it
            warnings = list(dict.fromkeys([*warnings, *getattr(sl, "problems", ())]))
            if strict and warnings:
                raise InputError(f"region {name!r} of {label}: {'; '.join(warnings)} (an error because of "
                                 "`strict=True`; without it, a warning)")
            writer.meta["warnings"] = warnings
    finally:
        if close:
            sl.close()
    return store[name]


def _path_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare_synthetic(
    store: RegionStore,
    count: int,
    size: tuple[int, int],
    *,
    seed: int = 0,
    val: int = 0,
    mpp: float = 0.5,
    format: str = "npy",  # noqa: A002
    strip_rows: int | None = None,
    progress: bool = True,
    holes: str = "background",
    profile: str = "he",
) -> list[Region]:
    """Fill ``store`` with ``count`` synthetic regions of ``size`` (w, h), seeds ``seed``,
    ``seed + 1``, ...; the last ``val`` of them go to the "val" split.

    Each region is a whole virtual synthetic slide of that size
    (``gigaseg.synth.render_region``), rendered strip by strip; ``holes`` is the masks' hole
    convention (``render_region``'s), recorded in each region's ``mask_source``; ``profile`` is
    the generator's profile ("he", "all" or a list of categories), recorded in ``source`` with
    the categories drawn for the region.
    """
    from tqdm import tqdm

    from .synth import check_holes, check_profile, make_layout, render_region

    check_holes(holes)
    profile = check_profile(profile)

    check_number("count", count)
    check_number("val", val)
    check_number("seed", seed)
    check_number("mpp", mpp)
    check_options(strip_rows=strip_rows)

    w, h = (int(v) for v in size)
    if not 0 <= val <= count:
        raise ConfigError(f"`val={val}` must be between 0 and the number of regions, `count={count}`")
    rows = int(strip_rows) if strip_rows else _strip_rows(w, 1.0)[0]
    out = []
    for i in range(count):
        s = seed + i
        split = "val" if i >= count - val else "train"
        name = store.unique_name(f"synth-s{s}")
        meta: dict[str, Any] = {
            "source": {"kind": "synthetic", "path": None, "sha256": None, "generator": "gigaseg.synth.render_region",
                       "width": w, "height": h, "profile": profile},
            "mask_source": {"kind": "synthetic", "holes": holes},
            "origin": [0, 0],
            "mpp": float(mpp),
            "downsample": 1.0,
            "pad": False,
            "seed": s,
        }
        if profile != "he":
            meta["source"]["categories"] = list(make_layout(s, w, h, mpp, profile=profile).categories)
        with store.new_region(name, (w, h), meta=meta, split=split, format=format) as writer, tqdm(
            total=h, unit="row", desc=f"synth {name}", disable=None if progress else True
        ) as bar:
            for y0 in range(0, h, rows):
                n = min(rows, h - y0)
                rgb, m = render_region(s, 0, y0, w, n, width=w, height=h, mpp=mpp, holes=holes, profile=profile)
                writer.append(rgb, m)
                bar.update(n)
        out.append(store[name])
    return out
