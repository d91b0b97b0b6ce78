"""The region store: layout, atomicity, prepare (slides, masks, GeoJSON, synthetic), the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import need_real

from gigaseg.errors import ConfigError, GigasegError, InputError, SlideError
from gigaseg.geojson import GeojsonMask, load_geojson_polygons, rasterize_geojson
from gigaseg.prepare import parse_origin, parse_size, prepare_region
from gigaseg.store import Region, RegionStore, StoreError, sha256_file

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _tiff_slide(path: Path, rgb: np.ndarray) -> Path:
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(path, rgb, photometric="rgb")
    return path


class _ArraySlide:
    """A slide held in memory (nearest resampling); ``fail_after`` reads raise."""

    def __init__(self, arr, mpp=0.5, fail_after=None):
        self.arr = arr
        self.mpp = (mpp, mpp)
        self.dimensions = (arr.shape[1], arr.shape[0])
        self.reads = 0
        self.fail_after = fail_after

    def _count(self):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise RuntimeError("simulated crash while reading the slide")

    def read_region(self, loc, level, size):
        self._count()
        (x, y), (w, h) = loc, size
        return self.arr[y : y + h, x : x + w].copy()

    def read_region_at_mpp(self, loc, mpp, size):
        self._count()
        ds = mpp / self.mpp[0]
        (x, y), (w, h) = loc, size
        r = np.floor(y + (np.arange(h) + 0.5) * ds).astype(int)
        c = np.floor(x + (np.arange(w) + 0.5) * ds).astype(int)
        return self.arr[np.ix_(r, c)]

    def close(self):
        pass


# -- store layout and API ----------------------------------------------------------------


def test_create_add_open_roundtrip(tmp_path):
    store = RegionStore.create(tmp_path / "s")
    img, mask = _rgb(37, 53), (np.arange(37 * 53).reshape(37, 53) % 2).astype(np.uint8)
    store.add_region("a", img, mask, meta={"mpp": 1.0})
    store.add_region("b", img[:, :20], mask[:, :20], split="val", format="zarr")
    store = RegionStore(tmp_path / "s")
    assert len(store) == 2 and store.names == ["a", "b"]
    a, b = store.regions
    assert isinstance(a, Region) and a.shape == (37, 53) and a.size == (53, 37)
    assert isinstance(a.image, np.memmap) and a.image.mode == "r"
    assert type(b.image).__module__.startswith("zarr")
    assert np.array_equal(a.image[3:30, 5:50], img[3:30, 5:50])
    assert np.array_equal(a.mask[:], mask)
    assert np.array_equal(np.asarray(b.image[:]), img[:, :20])
    assert a.meta["mpp"] == 1.0 and a.meta["name"] == "a" and "created" in a.meta
    assert [r.name for r in store.split("val")] == ["b"]
    store.set_split("a", "val")
    assert [r.name for r in RegionStore(tmp_path / "s").split("val")] == ["a", "b"]
    assert json.loads((tmp_path / "s" / "a" / "region.json").read_text())["split"] == "val"
    with pytest.raises(ConfigError, match="split"):
        store.split("test")
    store.remove("b")
    assert RegionStore(tmp_path / "s").names == ["a"] and not (tmp_path / "s" / "b").exists()


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        RegionStore(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreError, match="not a gigaseg region store"):
        RegionStore(tmp_path / "d")
    (tmp_path / "d" / "store.json").write_text("{broken")
    with pytest.raises(StoreError, match="cannot read"):
        RegionStore(tmp_path / "d")
    (tmp_path / "d" / "store.json").write_text(json.dumps({"format": "gigaseg-store", "version": 99, "regions": []}))
    with pytest.raises(StoreError, match="version 99"):
        RegionStore(tmp_path / "d")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x.txt").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        RegionStore.create(tmp_path / "e")
    RegionStore.create(tmp_path / "f")
    with pytest.raises(StoreError, match="already a region store"):
        RegionStore.create(tmp_path / "f")
    assert len(RegionStore.create(tmp_path / "f", exist_ok=True)) == 0


def test_bad_region_names_and_duplicates(tmp_path):
    store = RegionStore.create(tmp_path / "s")
    for bad in ["", ".hidden", "a/b", "x" * 200]:
        with pytest.raises(ConfigError, match="region name"):
            store.new_region(bad, (4, 4))
    store.add_region("a", _rgb(4, 4), np.zeros((4, 4), np.uint8))
    with pytest.raises(StoreError, match="already has a region"):
        store.new_region("a", (4, 4))
    assert store.unique_name("a") == "a-2"
    assert store.unique_name("my slide.svs") == "my-slide.svs"


def test_interrupted_write_leaves_nothing(tmp_path):
    store = RegionStore.create(tmp_path / "s")
    store.add_region("keep", _rgb(8, 8), np.zeros((8, 8), np.uint8))
    before = (tmp_path / "s" / "store.json").read_bytes()
    with pytest.raises(RuntimeError, match="midway"):
        with store.new_region("broken", (16, 32)) as writer:
            writer.append(_rgb(8, 16), np.zeros((8, 16), np.uint8))
            assert any(p.name.startswith(".tmp-broken") for p in (tmp_path / "s").iterdir())
            raise RuntimeError("midway")
    # too few rows: refused at commit, discarded
    with pytest.raises(StoreError, match="only 8 of 16 rows"):
        with store.new_region("short", (16, 16)) as writer:
            writer.append(_rgb(8, 16), np.zeros((8, 16), np.uint8))
    assert (tmp_path / "s" / "store.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".lock", "keep", "store.json"]
    assert RegionStore(tmp_path / "s").names == ["keep"]


def test_writer_checks_rows(tmp_path):
    store = RegionStore.create(tmp_path / "s")
    with pytest.raises(InputError, match="image rows must be uint8"):
        with store.new_region("r", (10, 4)) as writer:
            writer.append(np.zeros((2, 9, 3), np.uint8), np.zeros((2, 9), np.uint8))
    with pytest.raises(InputError, match="more than its height"):
        with store.new_region("r", (10, 4)) as writer:
            writer.append(_rgb(5, 10), np.zeros((5, 10), np.uint8))
    assert len(RegionStore(tmp_path / "s")) == 0


def test_region_without_mask(tmp_path):
    store = RegionStore.create(tmp_path / "s")
    region = store.add_region("a", _rgb(8, 8), np.zeros((8, 8), np.uint8))
    (region.path / "mask.npy").unlink()
    region = RegionStore(tmp_path / "s")["a"]
    assert not region.has_mask()
    with pytest.raises(StoreError, match="has no mask"):
        _ = region.mask


def test_sha256_streamed(tmp_path):
    p = tmp_path / "f.bin"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    p.write_bytes(data)
    assert sha256_file(p, chunk=1 << 16) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "text, expected", [("16000x64000", (64000, 16000)), (" 5 X 7 ", (7, 5)), ("300x200", (200, 300))]
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["16000", "16000x", "0x5", "-3x4", "axb", "1.5x2", "3x4x5"])
def test_parse_size_bad(text):
    with pytest.raises(ConfigError, match="HEIGHTxWIDTH"):
        parse_size(text)


def test_exact_strip_rows():
    from gigaseg.prepare import _strip_rows

    assert _strip_rows(64000, 1.0) == (393, True)
    rows, exact = _strip_rows(64000, 1.0 / 0.499)  # 0.499 -> 1.0 mpp: downsample 1000 / 499
    assert (rows, exact) == (499, True)
    rows, exact = _strip_rows(1000, 2.5)
    assert exact and rows % 2 == 0
    assert _strip_rows(64000, 1 / 0.2527)[1] is False  # no small denominator: rounded strips


def test_parse_origin():
    assert parse_origin("10, -4") == (10, -4)
    with pytest.raises(ConfigError, match="X,Y"):
        parse_origin("10")


# -- GeoJSON -------------------------------------------------------------------------------


def test_geojson_holes_multipolygon_union_hand_computed():
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
             "geometry": {"type": "Polygon", "coordinates": [_square(2, 2, 8, 8), _square(4, 4, 6, 6)]}},
            {"type": "Feature", "properties": {},
             "geometry": {"type": "MultiPolygon",
                          "coordinates": [[_square(10, 1, 12, 3)], [_square(7, 7, 12, 10), _square(9, 8, 10, 9)]]}},
            {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1, 1]}},
        ],
    }
    expected = np.zeros((10, 14), np.uint8)
    expected[2:8, 2:8] = 1
    expected[4:6, 4:6] = 0
    expected[1:3, 10:12] = 1
    expected[7:10, 7:12] = 1
    expected[8, 9] = 0  # the second MultiPolygon part's hole
    got = rasterize_geojson(fc, (14, 10), strip_rows=3)
    assert np.array_equal(got, expected)
    # A list of Features, and the class filter.
    only_tumor = rasterize_geojson(fc["features"], (14, 10), classes=["Tumor"])
    ref = np.zeros_like(expected)
    ref[2:8, 2:8] = 1
    ref[4:6, 4:6] = 0
    assert np.array_equal(only_tumor, ref)
    _, stats = load_geojson_polygons(fc)
    assert stats["used"] == 2 and stats["skipped_geometry"] == 1


def test_geojson_origin_downsample_and_clockwise_rings():
    # Exterior given clockwise and hole counter-clockwise: orientation must not matter.
    ext = _square(20, 40, 60, 80)[::-1]
    hole = _square(30, 50, 40, 60)
    g = {"type": "Polygon", "coordinates": [ext, hole]}
    # origin (10, 30), downsample 2: region pixel j covers level-0 x in [10 + 2j, 12 + 2j)
    got = rasterize_geojson(g, (30, 30), origin=(10, 30), downsample=2.0)
    expected = np.zeros((30, 30), np.uint8)
    expected[5:25, 5:25] = 1
    expected[10:15, 10:15] = 0
    assert np.array_equal(got, expected)


def test_geojson_random_polygons_match_point_in_polygon():
    mpath = pytest.importorskip("matplotlib.path")
    rng = np.random.default_rng(1)
    for _ in range(3):
        n = 25
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(5, 40, n)
        pts = np.stack([50 + rad * np.cos(ang), 45 + rad * np.sin(ang)], 1)
        pts = np.vstack([pts, pts[:1]])
        got = GeojsonMask({"type": "Polygon", "coordinates": [pts.tolist()]}, origin=(3.0, -2.0))
        mask = np.concatenate([got.strip(y, 7, 100) for y in range(0, 91, 7)])[:91]
        yy, xx = np.mgrid[0:91, 0:100]
        centres = np.stack([xx.ravel() + 0.5 + 3, yy.ravel() + 0.5 - 2], 1)
        ref = mpath.Path(pts).contains_points(centres).reshape(91, 100)
        assert np.array_equal(mask.astype(bool), ref)


def test_geojson_bad_input(tmp_path):
    p = tmp_path / "a.geojson"
    p.write_text("{not json")
    with pytest.raises(InputError, match="cannot parse"):
        rasterize_geojson(p, (4, 4))
    with pytest.raises(InputError, match="not GeoJSON"):
        rasterize_geojson({"features": []}, (4, 4))
    with pytest.raises(InputError, match="does not exist"):
        rasterize_geojson(tmp_path / "missing.geojson", (4, 4))
    with pytest.raises(InputError, match="no Polygon"):
        rasterize_geojson({"type": "FeatureCollection", "features": []}, (4, 4))
    tumor = {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
             "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 2, 2)]}}
    with pytest.raises(InputError, match=r"classes present are \['Tumor'\]"):
        rasterize_geojson([tumor], (4, 4), classes=["Tissue"])


def test_geojson_self_intersecting_is_repaired():
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    _, stats = load_geojson_polygons(bowtie)
    assert stats["repaired"] == 1
    m = rasterize_geojson(bowtie, (10, 10))
    assert m[5, 0] == 1 and m[0, 5] == 0 and m[5, 9] == 1


# -- prepare_region -----------------------------------------------------------------------


def test_prepare_from_tiff_slide_with_mask_image(tmp_path):
    pytest.importorskip("gigaseg.slides")
    from gigaseg.slides import open_slide

    rgb = _rgb(120, 160, seed=3)
    slide_path = _tiff_slide(tmp_path / "slide.tif", rgb)
    low = np.zeros((30, 40), np.uint8)  # the mask at 1/4 resolution, 0/255
    low[5:20, 10:30] = 255
    from PIL import Image

    Image.fromarray(low).save(tmp_path / "mask.png")
    store = RegionStore.create(tmp_path / "s")
    # Level 0 as is (mpp None), origin (16, 8), 50 x 70 (h x w); strips of 7 rows.
    r = prepare_region(store, slide_path, tmp_path / "mask.png", (70, 50), origin=(16, 8), strip_rows=7,
                       slide_mpp=0.5, progress=False)
    assert np.array_equal(r.image[:], rgb[8:58, 16:86])
    rows = (8 + np.arange(50) + 0.5) // 4
    cols = (16 + np.arange(70) + 0.5) // 4
    expected = (low[np.ix_(rows.astype(int), cols.astype(int))] > 0).astype(np.uint8)
    assert np.array_equal(r.mask[:], expected)
    meta = r.meta
    assert meta["source"]["sha256"] == hashlib.sha256(slide_path.read_bytes()).hexdigest()
    assert meta["mask_source"]["sha256"] == hashlib.sha256((tmp_path / "mask.png").read_bytes()).hexdigest()
    assert meta["origin"] == [16, 8] and meta["size"] == [70, 50] and meta["split"] == "train"
    assert meta["source"]["path"] == str(slide_path.resolve())
    # At 1.0 mpp (downsample 2) strip by strip equals one whole read of the slide.
    r2 = prepare_region(store, slide_path, tmp_path / "mask.png", (60, 40), mpp=1.0, origin=(20, 10),
                        strip_rows=9, slide_mpp=0.5, split="val", progress=False)
    with open_slide(slide_path, mpp=0.5) as s:
        whole = s.read_region_at_mpp((20, 10), 1.0, (60, 40))
    assert np.array_equal(r2.image[:], whole)
    assert r2.split == "val" and r2.meta["downsample"] == 2.0
    # Downsample 2.5 (0.4 -> 1.0 mpp): strips of 8 rows start on whole level-0 rows (exact).
    r3 = prepare_region(store, slide_path, tmp_path / "mask.png", (50, 40), mpp=1.0, origin=(3, 5),
                        strip_rows=8, slide_mpp=0.4, progress=False)
    with open_slide(slide_path, mpp=0.4) as s:
        whole = s.read_region_at_mpp((3, 5), 1.0, (50, 40))
    assert r3.meta["strips_exact"] is True and np.array_equal(r3.image[:], whole)
    r4 = prepare_region(store, slide_path, tmp_path / "mask.png", (50, 40), mpp=1.0, origin=(3, 5),
                        strip_rows=9, slide_mpp=0.4, progress=False)
    assert r4.meta["strips_exact"] is False  # 9 rows = 22.5 level-0 rows: rounded strip starts
    assert RegionStore(tmp_path / "s").names == ["slide", "slide-2", "slide-3", "slide-4"]


def test_prepare_geojson_mask_through_prepare(tmp_path):
    slide = _ArraySlide(_rgb(200, 200))
    (tmp_path / "a.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {},
             "geometry": {"type": "Polygon", "coordinates": [_square(40, 40, 120, 100), _square(60, 60, 80, 80)]}}]}))
    store = RegionStore.create(tmp_path / "s")
    r = prepare_region(store, slide, tmp_path / "a.geojson", (50, 40), mpp=1.0, origin=(20, 20), strip_rows=16,
                       name="g", progress=False)
    expected = np.zeros((40, 50), np.uint8)
    expected[10:40, 10:50] = 1  # level-0 [40, 100) x [40, 120) -> region [10, 40) x [10, 50)
    expected[20:30, 20:30] = 0
    assert np.array_equal(r.mask[:], expected)
    assert r.meta["mask_source"]["kind"] == "geojson"


def test_prepare_mask_values(tmp_path):
    slide = _ArraySlide(_rgb(40, 40))
    store = RegionStore.create(tmp_path / "s")
    m = np.zeros((20, 20), np.uint8)
    m[:5] = 1
    m[5:10] = 255  # with 1 present, 255 means ignore and is kept
    np.save(tmp_path / "m01.npy", m)
    r = prepare_region(store, slide, tmp_path / "m01.npy", (40, 40), progress=False)
    assert set(np.unique(r.mask[:]).tolist()) == {0, 1, 255}
    r = prepare_region(store, slide, tmp_path / "m01.npy", (40, 40), ignore="tissue", progress=False)
    assert set(np.unique(r.mask[:]).tolist()) == {0, 1} and (r.mask[10:20] == 1).all()
    r = prepare_region(store, slide, tmp_path / "m01.npy", (40, 40), ignore="background", progress=False)
    assert (r.mask[10:20] == 0).all() and (r.mask[:10] == 1).all()
    np.save(tmp_path / "mb.npy", m.astype(bool))
    r = prepare_region(store, slide, tmp_path / "mb.npy", (40, 40), progress=False)
    assert set(np.unique(r.mask[:]).tolist()) == {0, 1}
    m[0, 0] = 7
    np.save(tmp_path / "bad.npy", m)
    with pytest.raises(InputError, match=r"values \[7\]"):
        prepare_region(store, slide, tmp_path / "bad.npy", (40, 40), progress=False)
    np.save(tmp_path / "rgb.npy", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InputError, match="single-channel"):
        prepare_region(store, slide, tmp_path / "rgb.npy", (40, 40), progress=False)


def test_prepare_mask_other_aspect_ratio(tmp_path):
    slide = _ArraySlide(_rgb(100, 200))
    np.save(tmp_path / "m.npy", np.zeros((50, 50), np.uint8))
    store = RegionStore.create(tmp_path / "s")
    with pytest.raises(InputError, match="aspect ratios differ"):
        prepare_region(store, slide, tmp_path / "m.npy", (20, 20), progress=False)
    assert len(RegionStore(tmp_path / "s")) == 0


def test_prepare_pad_and_refusal(tmp_path):
    rgb = _rgb(30, 40)
    slide = _ArraySlide(rgb)
    np.save(tmp_path / "m.npy", np.ones((30, 40), np.uint8))
    store = RegionStore.create(tmp_path / "s")
    with pytest.raises(InputError, match="`pad=True`"):
        prepare_region(store, slide, tmp_path / "m.npy", (50, 20), progress=False)
    with pytest.raises(InputError, match="outside slide"):
        prepare_region(store, slide, tmp_path / "m.npy", (10, 10), origin=(35, 0), progress=False)
    assert len(RegionStore(tmp_path / "s")) == 0
    r = prepare_region(store, slide, tmp_path / "m.npy", (50, 20), pad=True, strip_rows=6, progress=False)
    # Width 50 > 40: the whole slide width from x = 0, padded right; height 20 < 30: centred (y = 5).
    assert r.meta["origin"] == [0, 5] and r.meta["pad"] is True
    assert np.array_equal(r.image[:, :40], rgb[5:25])
    assert (r.image[:, 40:] == 255).all()
    assert (r.mask[:, :40] == 1).all() and (r.mask[:, 40:] == 0).all()
    # Padding on the top and left with a negative origin.
    r = prepare_region(store, slide, tmp_path / "m.npy", (10, 10), origin=(-4, -3), pad=True, progress=False)
    assert (r.image[:3] == 255).all() and (r.image[:, :4] == 255).all()
    assert np.array_equal(r.image[3:, 4:], rgb[:7, :6]) and (r.mask[:3] == 0).all()


def test_prepare_crash_midway_leaves_no_region(tmp_path):
    store = RegionStore.create(tmp_path / "s")
    np.save(tmp_path / "m.npy", np.ones((64, 64), np.uint8))
    prepare_region(store, _ArraySlide(_rgb(64, 64)), tmp_path / "m.npy", (32, 32), name="ok", progress=False)
    before = (tmp_path / "s" / "store.json").read_bytes()
    slide = _ArraySlide(_rgb(64, 64), fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_region(store, slide, tmp_path / "m.npy", (64, 64), strip_rows=8, name="crash", progress=False)
    assert slide.reads == 3
    assert (tmp_path / "s" / "store.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".lock", "ok", "store.json"]


def test_prepare_needs_mpp_when_slide_has_none(tmp_path):
    slide = _ArraySlide(_rgb(20, 20))
    slide.mpp = None
    np.save(tmp_path / "m.npy", np.ones((20, 20), np.uint8))
    store = RegionStore.create(tmp_path / "s")
    with pytest.raises(InputError, match="`slide_mpp`"):
        prepare_region(store, slide, tmp_path / "m.npy", (10, 10), mpp=1.0, progress=False)


def test_prepare_missing_files(tmp_path):
    store = RegionStore.create(tmp_path / "s")
    np.save(tmp_path / "m.npy", np.ones((20, 20), np.uint8))
    with pytest.raises(SlideError, match="does not exist"):
        prepare_region(store, tmp_path / "missing.svs", tmp_path / "m.npy", (10, 10), progress=False)
    with pytest.raises(InputError, match="mask file"):
        prepare_region(store, _ArraySlide(_rgb(20, 20)), tmp_path / "none.png", (10, 10), progress=False)


def test_prepare_zarr_format(tmp_path):
    pytest.importorskip("zarr")
    rgb = _rgb(40, 600)
    np.save(tmp_path / "m.npy", np.ones((40, 600), np.uint8))
    store = RegionStore.create(tmp_path / "s")
    r = prepare_region(store, _ArraySlide(rgb), tmp_path / "m.npy", (600, 40), strip_rows=7, format="zarr",
                       progress=False)
    assert r.format == "zarr" and np.array_equal(np.asarray(r.image[:]), rgb)


def test_prepare_real_svs(tmp_path):
    svs = REAL / "slides" / "CMU-1-Small-Region.svs"
    mask = REAL / "masks" / "tissue-mask-cmu-1-small-region.npy"
    need_real(svs, mask)
    pytest.importorskip("gigaseg.slides")
    store = RegionStore.create(tmp_path / "s")
    r = prepare_region(store, svs, mask, (512, 256), mpp=2.0, progress=False)
    assert r.meta["source"]["sha256"] == "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
    assert r.image.shape == (256, 512, 3) and 0.1 < float(np.mean(r.mask[:] == 1)) < 0.9
    # The padded whole slide at 4 mpp (about 277 x 371).
    r = prepare_region(store, svs, mask, (400, 400), mpp=4.0, pad=True, progress=False)
    assert (r.image[:, 300:] == 255).all() and (r.mask[:, 300:] == 0).all()


# -- CLI -------------------------------------------------------------------------------------


def _main(argv, capsys):
    from gigaseg.cli import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_prepare_and_list(tmp_path, capsys):
    pytest.importorskip("gigaseg.slides")
    rgb = _rgb(64, 96)
    _tiff_slide(tmp_path / "a.tif", rgb)
    np.save(tmp_path / "a.npy", np.ones((16, 24), np.uint8))
    out = tmp_path / "store"
    rc, stdout, err = _main(["prepare", str(tmp_path / "a.tif"), "--masks", str(tmp_path / "a.npy"),
                             "--size", "32x48", "--origin", "8,4", "--out", str(out), "--split", "val",
                             "--no-progress"], capsys)
    assert rc == 0, err
    store = RegionStore(out)
    assert store.names == ["a"] and store["a"].shape == (32, 48) and store["a"].split == "val"
    assert np.array_equal(store["a"].image[:], rgb[4:36, 8:56])
    config = json.loads((out / "prepare-config.json").read_text())
    assert config["regions"] == ["a"] and config["args"]["size"] == "32x48"
    rc, stdout, _ = _main(["store", str(out), "--set-split", "a", "train", "--json"], capsys)
    assert rc == 0 and json.loads(stdout.splitlines()[0])["split"] == "train"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "64000"], "HEIGHTxWIDTH"),
        (["--size", "8x8", "--masks"], None),  # argparse: --masks needs a value
        (["--size", "8x8"], "one --masks file per SLIDE"),
        (["--size", "8x8", "--masks", "MASK", "--origin", "3"], "X,Y"),
    ],
)
def test_cli_prepare_bad_args(tmp_path, capsys, argv, message):
    np.save(tmp_path / "m.npy", np.ones((8, 8), np.uint8))
    argv = [a.replace("MASK", str(tmp_path / "m.npy")) for a in argv]
    if message is None:
        with pytest.raises(SystemExit):
            _main(["prepare", str(tmp_path / "s.tif"), *argv, "--out", str(tmp_path / "o")], capsys)
        return
    rc, _, err = _main(["prepare", str(tmp_path / "s.tif"), *argv, "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and message in err


def test_cli_missing_slide(tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.ones((8, 8), np.uint8))
    rc, _, err = _main(["prepare", str(tmp_path / "missing.svs"), "--masks", str(tmp_path / "m.npy"),
                        "--size", "8x8", "--out", str(tmp_path / "o"), "--no-progress"], capsys)
    assert rc == 2 and "missing.svs" in err and "does not exist" in err


def test_cli_store_not_a_store(tmp_path, capsys):
    rc, _, err = _main(["store", str(tmp_path)], capsys)
    assert rc == 2 and "not a gigaseg region store" in err


def test_cli_prepare_synthetic(tmp_path, capsys):
    pytest.importorskip("gigaseg.synth")
    out = tmp_path / "store"
    # Each new seed costs the generator a few seconds (its layout): two regions only.
    rc, stdout, err = _main(["prepare", "--synthetic", "2", "--size", "64x96", "--seed", "5", "--val", "1",
                             "--out", str(out), "--no-progress"], capsys)
    assert rc == 0, err
    store = RegionStore(out)
    assert len(store) == 2 and [r.meta["seed"] for r in store.regions] == [5, 6]
    assert [r.split for r in store.regions] == ["train", "val"]
    from gigaseg.synth import render_region

    rgb, mask = render_region(6, 0, 0, 96, 64, width=96, height=64, mpp=0.5)
    assert np.array_equal(store.regions[1].image[:], rgb) and np.array_equal(store.regions[1].mask[:], mask)


def test_errors_are_gigaseg_errors():
    assert issubclass(StoreError, GigasegError)


def test_clean_temporaries_and_pickle(tmp_path):
    import os
    import pickle

    store = RegionStore.create(tmp_path / "s")
    region = store.add_region("a", _rgb(8, 8), np.zeros((8, 8), np.uint8))
    _ = region.image  # opened
    clone = pickle.loads(pickle.dumps(region))
    assert clone._image is None and np.array_equal(clone.image[:], region.image[:])
    dead = tmp_path / "s" / ".tmp-x-999999999-0123abcd"
    alive = tmp_path / "s" / f".tmp-y-{os.getpid()}-0123abcd"
    dead.mkdir()
    alive.mkdir()
    assert store.clean_temporaries() == [dead.name]
    assert alive.exists() and not dead.exists()


def test_two_writers_keep_each_others_regions(tmp_path):
    a = RegionStore.create(tmp_path / "s")
    b = RegionStore(tmp_path / "s")  # opened before a adds anything: a stale index
    a.add_region("from-a", _rgb(4, 4), np.zeros((4, 4), np.uint8))
    b.add_region("from-b", _rgb(4, 4), np.zeros((4, 4), np.uint8))
    assert RegionStore(tmp_path / "s").names == ["from-a", "from-b"]


def test_prepare_real_strip_tiff_and_dicom_folder(tmp_path):
    kidney = REAL / "slides" / "kidney-48-5.tif"
    kidney_mask = REAL / "masks" / "tissue-mask-kidney-48-5.npy"
    dicom = REAL / "dicom" / "cmu-1-small-region"
    cmu_mask = REAL / "masks" / "tissue-mask-cmu-1-small-region.npy"
    need_real(kidney, kidney_mask, dicom, cmu_mask)
    pytest.importorskip("gigaseg.slides")
    store = RegionStore.create(tmp_path / "s")
    # kidney-48-5.tif records no mpp: --mpp needs --slide-mpp; level 0 works without.
    with pytest.raises(InputError, match="`slide_mpp`"):
        prepare_region(store, kidney, kidney_mask, (256, 128), mpp=1.0, progress=False)
    r = prepare_region(store, kidney, kidney_mask, (1493, 901), progress=False)
    assert r.meta["source"]["sha256"] == "2dbe184b45f25624d6fa533b781867b52d0fa8f82741a3f0799dd6738f12c681"
    assert 0.005 < float(np.mean(r.mask[:] == 1)) < 0.05
    r = prepare_region(store, dicom, cmu_mask, (200, 300), mpp=4.0, progress=False)
    assert r.name == "cmu-1-small-region" and len(r.meta["source"]["sha256"]) == 64
    assert r.image.shape == (300, 200, 3)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_prepare_tiff_mask_memmapped_or_tiled(tmp_path, compression):
    tifffile = pytest.importorskip("tifffile")
    rgb = _rgb(64, 128)
    low = np.zeros((16, 32), np.uint8)
    low[4:12, 8:24] = 255
    kwargs = {"tile": (16, 16), "compression": compression} if compression else {}
    tifffile.imwrite(tmp_path / "m.tif", low, **kwargs)
    store = RegionStore.create(tmp_path / "s")
    r = prepare_region(store, _ArraySlide(rgb), tmp_path / "m.tif", (64, 32), mpp=1.0, origin=(0, 0),
                       strip_rows=5, progress=False)
    # region pixel (i, j) at 1.0 mpp has its centre at level-0 (2j + 1, 2i + 1): mask pixel ((2i + 1) // 4, ...)
    rows = (2 * np.arange(32) + 1) // 4
    cols = (2 * np.arange(64) + 1) // 4
    assert np.array_equal(r.mask[:], (low[np.ix_(rows, cols)] > 0).astype(np.uint8))
