"""QuPath GeoJSON annotations -> tissue masks, rasterized strip by strip.

QuPath exports annotations as a GeoJSON FeatureCollection (or a list of Features, or
a single Feature) whose coordinates are level-0 pixels (x right, y down). Polygons and
MultiPolygons, with holes, are used; other geometries (points, lines) are skipped and
counted. Invalid polygons (self-intersections) are repaired with ``shapely.make_valid``.

# NOTE [Rasterization rule]
A mask pixel is 1 when its centre lies inside the union of the polygons: pixel (col j,
row i) of a region with level-0 origin (ox, oy) and downsample d (level-0 pixels per
region pixel) has its centre at level-0 (ox + (j + 0.5) d, oy + (i + 0.5) d). The fill
is a scanline fill with the nonzero winding rule over polygons oriented so that
exteriors and holes wind opposite ways: holes cancel their exterior, overlapping
polygons add up (union). Edges use half-open rows, so a pixel centre exactly on a
horizontal edge belongs to the polygon below it, and intervals are half-open in x.
Memory is one strip (rows x width bytes) plus the polygon edges.

# NOTE [GeoJSON limits]
A GeoJSON file is read whole (``json``), so its nesting is limited by Python's recursion: a
deeply nested file is refused as an InputError, never a RecursionError. Coordinates must be
finite and, when the slide's size is known, lie within 10**7 pixels of it (no slide is that
large; 1e300 overflowed the rasterizer into an empty mask). A polygon wholly outside the slide
is kept (it rasterizes to nothing) and named in ``GeojsonMask.warnings``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._deps import require
from ._files import check_input
from .errors import InputError

__all__ = ["GeojsonMask", "load_geojson_polygons", "rasterize_geojson", "COORDINATE_MARGIN"]

#: How far outside the slide (level-0 pixels) a GeoJSON coordinate may lie (NOTE [GeoJSON limits]).
COORDINATE_MARGIN = 1e7


def _features(obj: Any, source: str) -> list[dict]:
    if isinstance(obj, list):
        out = []
        for item in obj:
            out.extend(_features(item, source))
        return out
    if not isinstance(obj, dict) or "type" not in obj:
        raise InputError(
            f"{source}: not GeoJSON (expected a FeatureCollection, a Feature or a list of Features); "
            "export annotations from QuPath with File > Export objects as GeoJSON"
        )
    kind = obj["type"]
    if kind == "FeatureCollection":
        return _features(obj.get("features", []), source)
    if kind == "Feature":
        return [obj]
    if kind in ("Polygon", "MultiPolygon", "GeometryCollection", "Point", "MultiPoint", "LineString",
                "MultiLineString"):
        return [{"type": "Feature", "geometry": obj, "properties": {}}]
    raise InputError(f"{source}: unknown GeoJSON type {kind!r}; expected FeatureCollection, Feature or a geometry")


def _class_name(feature: dict) -> str | None:
    """The QuPath classification name of a feature, or None (also where the file puts anything else there)."""
    props = feature.get("properties")
    cls = props.get("classification") if isinstance(props, dict) else None
    if isinstance(cls, dict):
        cls = cls.get("name")
    return cls if isinstance(cls, str) else None


def load_geojson_polygons(
    source: str | os.PathLike | dict | list, *, classes: Iterable[str] | None = None,
    slide_size: tuple[int, int] | None = None,
) -> tuple[list, dict]:
    """Read polygons from GeoJSON.

    Args:
        source: a path to a ``.geojson``/``.json`` file, or the parsed object.
        classes: keep only features whose QuPath classification name is one of these
            (None keeps all).
        slide_size: the slide's level-0 ``(w, h)``: coordinates beyond ``COORDINATE_MARGIN``
            of it are refused (NOTE [GeoJSON limits]); without it, beyond that of the origin.

    Returns:
        (polygons, stats): a list of shapely Polygons in level-0 pixels, and counts of
        features used, skipped (not polygonal, or another class) and repaired.

    Raises:
        InputError: not GeoJSON, nested too deeply, coordinates that are not finite or too far
            out, no polygon.
    """
    require("shapely", "reading GeoJSON masks")

    name = str(source) if isinstance(source, (str, os.PathLike)) else "<geojson object>"
    if isinstance(source, (str, os.PathLike)):
        path = check_input(source, "GeoJSON file")  # NOTE [Special files]
        try:
            obj = json.loads(path.read_text())
        except RecursionError:
            raise InputError(f"{path}: nested too deeply to read (deeper than Python's recursion limit), where a "
                             "QuPath export nests a few levels: is it a GeoJSON export?") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: cannot parse as JSON ({exc}); is it a GeoJSON export?") from exc
    else:
        obj = source
    try:
        return _polygons(obj, name, classes, slide_size)
    except RecursionError:
        raise InputError(f"{name}: nested too deeply to read (deeper than Python's recursion limit), where a QuPath "
                         "export nests a few levels: is it a GeoJSON export?") from None


def _polygons(obj: Any, name: str, classes: Iterable[str] | None,
              slide_size: tuple[int, int] | None) -> tuple[list, dict]:
    import shapely
    from shapely.geometry import shape

    keep = set(classes) if classes is not None else None
    polygons: list[Any] = []  # shapely Polygons
    stats = {"features": 0, "used": 0, "skipped_geometry": 0, "skipped_class": 0, "repaired": 0}
    seen_classes = set()
    for i, feat in enumerate(_features(obj, name)):
        stats["features"] += 1
        seen_classes.add(_class_name(feat))
        if keep is not None and _class_name(feat) not in keep:
            stats["skipped_class"] += 1
            continue
        geom_obj = feat.get("geometry")
        if not geom_obj:
            stats["skipped_geometry"] += 1
            continue
        try:
            with np.errstate(invalid="ignore"):  # NaN coordinates: refused just below, by name
                geom = shape(geom_obj)
        except Exception as exc:  # shapely raises several types
            raise InputError(
                f"{name}: feature {i} has a malformed geometry ({exc}); fix or delete it in QuPath"
            ) from exc
        _check_coordinates(name, i, shapely.get_coordinates(geom), slide_size)  # before GEOS computes with them
        if geom.is_empty:
            stats["skipped_geometry"] += 1
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon", "GeometryCollection"):
            stats["skipped_geometry"] += 1
            continue
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
            stats["repaired"] += 1
        parts = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon", "MultiPolygon")]
        if not parts:
            stats["skipped_geometry"] += 1
            continue
        for part in parts:
            polygons.extend(getattr(part, "geoms", [part]))
        stats["used"] += 1
    if not polygons:
        if keep is not None and stats["skipped_class"]:
            present = sorted(str(c) for c in seen_classes)
            raise InputError(
                f"{name}: no polygon has classification {sorted(keep)}; the classes present are {present}; "
                "fix `classes`"
            )
        raise InputError(
            f"{name}: no Polygon or MultiPolygon among its {stats['features']} features; a mask needs "
            "at least one annotation polygon (export annotations, not only detections or points)"
        )
    return polygons, stats


def _check_coordinates(name: str, i: int, xy: np.ndarray, slide_size: tuple[int, int] | None) -> None:
    """Refuse a feature whose coordinates ``xy`` (n, 2) are not finite or lie too far out (NOTE
    [GeoJSON limits])."""
    if xy.size == 0:
        return
    if not np.isfinite(xy).all():
        bad = xy[~np.isfinite(xy).all(axis=1)][0]
        raise InputError(f"{name}: feature {i} has coordinates that are not finite numbers (e.g. {tuple(bad)}); fix "
                         "or delete it in QuPath")
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    w, h = slide_size if slide_size is not None else (0, 0)
    m = COORDINATE_MARGIN
    if x0 < -m or y0 < -m or x1 > w + m or y1 > h + m:
        where = f"the slide ({w} x {h} pixels)" if slide_size is not None else "the origin"
        raise InputError(
            f"{name}: feature {i} reaches ({x0:.6g}, {y0:.6g}) to ({x1:.6g}, {y1:.6g}), more than {m:.0e} pixels "
            f"outside {where}: its coordinates are not level-0 pixels of this slide; check the file"
        )


def _edges(polygons: list, origin: tuple[float, float], downsample: float) -> np.ndarray:
    """Edges (E, 5) float64: x0, y0, x1, y1 in region pixels and winding direction +-1."""
    from shapely.geometry.polygon import orient

    ox, oy = origin
    chunks = []
    for poly in polygons:
        poly = orient(poly, sign=1.0)
        for ring in [poly.exterior, *poly.interiors]:
            xy = np.asarray(ring.coords, dtype=np.float64)
            if len(xy) < 3:
                continue
            xy = np.stack([(xy[:, 0] - ox) / downsample, (xy[:, 1] - oy) / downsample], axis=1)
            if not np.array_equal(xy[0], xy[-1]):
                xy = np.vstack([xy, xy[:1]])
            e = np.concatenate([xy[:-1], xy[1:]], axis=1)
            e = e[e[:, 1] != e[:, 3]]  # horizontal edges cross no row centre
            d = np.where(e[:, 3] > e[:, 1], 1.0, -1.0)
            chunks.append(np.concatenate([e, d[:, None]], axis=1))
    if not chunks:
        return np.zeros((0, 5))
    return np.concatenate(chunks, axis=0)


class GeojsonMask:
    """A strip-by-strip rasterizer of GeoJSON polygons onto a region's pixel grid.

    Args:
        source: path to the GeoJSON file or the parsed object.
        origin: (x, y) level-0 pixel of the region's top-left corner.
        downsample: level-0 pixels per region pixel (region mpp / slide mpp).
        classes: QuPath classification names to keep (None: all).
        slide_size: the slide's level-0 ``(w, h)``: coordinates far outside it are refused,
            polygons wholly outside it named in ``warnings`` (NOTE [GeoJSON limits]).
    """

    def __init__(
        self,
        source: str | os.PathLike | dict | list,
        *,
        origin: tuple[float, float] = (0.0, 0.0),
        downsample: float = 1.0,
        classes: Iterable[str] | None = None,
        slide_size: tuple[int, int] | None = None,
    ):
        if not downsample > 0:
            raise InputError(f"downsample must be > 0, got {downsample}")
        polygons, self.stats = load_geojson_polygons(source, classes=classes, slide_size=slide_size)
        #: Sentences about polygons wholly outside the slide (they rasterize to nothing).
        self.warnings: list[str] = []
        if slide_size is not None:
            w, h = slide_size
            outside = [p for p in polygons if p.bounds[2] <= 0 or p.bounds[3] <= 0 or p.bounds[0] >= w
                       or p.bounds[1] >= h]
            if outside:
                x0, y0, x1, y1 = outside[0].bounds
                every = "all of them, so the mask is empty" if len(outside) == len(polygons) else \
                    f"of {len(polygons)}"
                self.warnings.append(
                    f"{len(outside)} GeoJSON polygon(s) lie wholly outside the slide ({w} x {h} pixels), {every}; "
                    f"the first spans ({x0:.6g}, {y0:.6g}) to ({x1:.6g}, {y1:.6g}): are its coordinates level-0 "
                    "pixels of this slide?"
                )
        e = _edges(polygons, origin, downsample)
        self._x0, self._y0, self._x1, self._y1, self._dir = (e[:, k] for k in range(5))
        ylo = np.minimum(self._y0, self._y1)
        yhi = np.maximum(self._y0, self._y1)
        # Rows whose centre (i + 0.5) lies in [ylo, yhi): i in [ceil(ylo - 0.5), ceil(yhi - 0.5)).
        self._row_a = np.ceil(ylo - 0.5).astype(np.int64)
        self._row_b = np.ceil(yhi - 0.5).astype(np.int64)

    def __len__(self) -> int:
        return int(self._dir.shape[0])

    def strip(self, y0: int, h: int, w: int) -> np.ndarray:
        """Rows ``y0`` to ``y0 + h`` of the mask, (h, w) uint8 0/1."""
        out = np.zeros((h, w), np.uint8)
        if h <= 0 or w <= 0:
            return out
        sel = (self._row_b > y0) & (self._row_a < y0 + h)
        if not sel.any():
            return out
        a = np.maximum(self._row_a[sel], y0)
        b = np.minimum(self._row_b[sel], y0 + h)
        x0, y0e, x1, y1e, d = self._x0[sel], self._y0[sel], self._x1[sel], self._y1[sel], self._dir[sel]
        counts = b - a
        idx = np.repeat(np.arange(a.shape[0]), counts)
        rows = a[idx] + (np.arange(idx.shape[0]) - np.repeat(np.cumsum(counts) - counts, counts))
        yc = rows + 0.5
        xs = x0[idx] + (yc - y0e[idx]) * (x1[idx] - x0[idx]) / (y1e[idx] - y0e[idx])
        order = np.lexsort((xs, rows))
        rows, xs, dirs = rows[order], xs[order], d[idx][order]
        winding = np.cumsum(dirs)
        inside = (winding[:-1] != 0) & (rows[:-1] == rows[1:])
        k = np.nonzero(inside)[0]
        if k.size == 0:
            return out
        ca = np.clip(np.ceil(xs[k] - 0.5), 0, w).astype(np.int64)
        cb = np.clip(np.ceil(xs[k + 1] - 0.5), 0, w).astype(np.int64)
        r = rows[k] - y0
        keep = cb > ca
        ca, cb, r = ca[keep], cb[keep], r[keep]
        diff = np.zeros((h, w + 1), np.int8)
        np.add.at(diff, (r, ca), 1)
        np.add.at(diff, (r, cb), -1)
        np.cumsum(diff, axis=1, dtype=np.int8, out=diff)
        out[:] = diff[:, :w] > 0
        return out


def rasterize_geojson(
    source: str | os.PathLike | dict | list,
    size: tuple[int, int],
    *,
    origin: tuple[float, float] = (0.0, 0.0),
    downsample: float = 1.0,
    classes: Iterable[str] | None = None,
    strip_rows: int = 1024,
) -> np.ndarray:
    """Rasterize GeoJSON polygons to a whole (h, w) uint8 0/1 mask (for small regions;
    use ``GeojsonMask.strip`` to go strip by strip).

    Args:
        source: path to the GeoJSON file or the parsed object.
        size: (w, h) of the mask in region pixels.
        origin: (x, y) level-0 pixel of the mask's top-left corner.
        downsample: level-0 pixels per mask pixel.
        classes: QuPath classification names to keep (None: all).
        strip_rows: rows rasterized at a time.
    """
    w, h = (int(v) for v in size)
    raster = GeojsonMask(source, origin=origin, downsample=downsample, classes=classes)
    out = np.zeros((h, w), np.uint8)
    step = max(1, int(strip_rows))
    for y in range(0, h, step):
        out[y : y + step] = raster.strip(y, min(step, h - y), w)
    return out
