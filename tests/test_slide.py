"""Tests for gigaseg.slide: every backend, region and mpp reads, bad input, real slides.

Fixtures are tiny images written at test time; the real slides in ../shared/data/real
are used when present and skipped with a reason otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import need_real

tifffile = pytest.importorskip("tifffile")
Image = pytest.importorskip("PIL.Image")

from gigaseg.errors import ConfigError, GigasegError, SlideError  # noqa: E402
from gigaseg.slides import BACKENDS, Slide, open_slide  # noqa: E402
from gigaseg.slides import base as slide_module  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SVS = REAL / "slides" / "CMU-1-Small-Region.svs"
KIDNEY = REAL / "slides" / "kidney-48-5.tif"
DICOM_DIR = REAL / "dicom" / "cmu-1-small-region"


# -- fixtures ------------------------------------------------------------------------------


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _smooth(h, w):
    """A smooth colour image that survives JPEG compression closely."""
    y, x = np.mgrid[0:h, 0:w]
    r = 128 + 100 * np.sin(x / 23.0)
    g = 128 + 100 * np.cos(y / 19.0)
    b = 128 + 60 * np.sin((x + y) / 31.0)
    return np.stack([r, g, b], -1).round().astype(np.uint8)


def _levels(l0):
    """Level 1 and 2 made distinct from a downsample of level 0, so a test can tell
    which level a read came from."""
    lvl1 = np.zeros((l0.shape[0] // 2, l0.shape[1] // 2, 3), np.uint8)
    lvl1[...] = (10, 200, 30)
    lvl2 = _noise(l0.shape[0] // 4, l0.shape[1] // 4, seed=2)
    return [l0, lvl1, lvl2]


def _write_pyramid(path, levels, *, subifds, mpp=0.25, unit="CENTIMETER", compression=None, tile=(32, 32)):
    res = None
    if mpp is not None:
        per_unit = (1e4 if unit == "CENTIMETER" else 25400.0) / mpp
        res = (per_unit, per_unit)
    with tifffile.TiffWriter(path) as tw:
        kwargs = dict(tile=tile, photometric="rgb", compression=compression)
        if res is not None:
            kwargs.update(resolution=res, resolutionunit=unit)
        tw.write(levels[0], subifds=len(levels) - 1 if subifds else None, **kwargs)
        for lvl in levels[1:]:
            tw.write(lvl, subfiletype=1, tile=tile, photometric="rgb", compression=compression)
    return path


@pytest.fixture
def pyramid(tmp_path):
    """A 3-level tiled uncompressed pyramid in SubIFDs, 0.25 um/px: (path, levels)."""
    levels = _levels(_noise(200, 300))
    return _write_pyramid(tmp_path / "pyr.tif", levels, subifds=True), levels


# -- tiled, pyramidal, strip TIFF ----------------------------------------------------------


@pytest.mark.parametrize("subifds", [True, False], ids=["subifds", "pages"])
def test_tiled_pyramid_reads_exactly(tmp_path, subifds):
    levels = _levels(_noise(200, 300))
    path = _write_pyramid(tmp_path / "p.tif", levels, subifds=subifds)
    with open_slide(path) as s:
        assert isinstance(s, Slide)
        assert s.backend == "tifffile"
        assert s.dimensions == (300, 200)
        assert s.level_count == 3
        assert s.level_dimensions == ((300, 200), (150, 100), (75, 50))
        assert s.level_downsamples == (1.0, 2.0, 4.0)
        assert s.mpp == pytest.approx((0.25, 0.25))
        # Regions crossing tile borders, at the right/bottom edges, a single pixel.
        for (x, y, w, h) in [(0, 0, 300, 200), (31, 17, 70, 50), (250, 160, 50, 40), (299, 199, 1, 1)]:
            np.testing.assert_array_equal(s.read_region((x, y), 0, (w, h)), levels[0][y : y + h, x : x + w])
        # Level 1 at level-0 location (20, 40) is level-1 pixel (10, 20).
        np.testing.assert_array_equal(s.read_region((20, 40), 1, (40, 30)), levels[1][20:50, 10:50])
        np.testing.assert_array_equal(s.read_region((8, 4), 2, (60, 40)), levels[2][1:41, 2:62])
        # A level-0 location inside a level pixel maps to that pixel (floor, not round).
        np.testing.assert_array_equal(s.read_region((23, 43), 1, (7, 5)), levels[1][21:26, 11:18])
        np.testing.assert_array_equal(s.read_region((7, 7), 2, (3, 3)), levels[2][1:4, 1:4])
        out = s.read_region((0, 0), 0, (5, 5))
        assert out.dtype == np.uint8 and out.shape == (5, 5, 3)


@pytest.mark.parametrize("cache_bytes", [0, 3 * 32 * 32 * 3, 2**26], ids=["off", "3-tiles", "64MiB"])
def test_tile_cache_never_changes_pixels(pyramid, monkeypatch, cache_bytes):
    from gigaseg.slides import _tifffile as _slide_tiff

    monkeypatch.setattr(_slide_tiff, "_CACHE_BYTES", cache_bytes)
    path, levels = pyramid
    with open_slide(path) as s:
        for x, y in [(0, 0), (20, 10), (40, 30), (0, 0), (200, 150), (20, 10)]:
            np.testing.assert_array_equal(s.read_region((x, y), 0, (70, 45)), levels[0][y : y + 45, x : x + 70])
        assert s._cache_bytes <= cache_bytes


def test_openslide_and_tifffile_agree_on_a_tiled_tiff(tmp_path):
    pytest.importorskip("openslide")
    levels = _levels(_noise(128, 192))
    path = _write_pyramid(tmp_path / "p.tif", levels, subifds=False)
    with open_slide(path, backend="openslide") as a, open_slide(path, backend="tifffile") as b:
        assert a.backend == "openslide" and b.backend == "tifffile"
        assert a.level_dimensions == b.level_dimensions
        assert a.mpp == pytest.approx(b.mpp)
        for level, (x, y, w, h) in [(0, (5, 7, 100, 60)), (1, (10, 20, 50, 30)), (2, (0, 0, 48, 32))]:
            np.testing.assert_array_equal(a.read_region((x, y), level, (w, h)), b.read_region((x, y), level, (w, h)))


def test_tiled_jpeg_tiff_is_close(tmp_path):
    img = _smooth(160, 224)
    path = _write_pyramid(tmp_path / "j.tif", [img, img[::2, ::2].copy()], subifds=True, compression="jpeg")
    with open_slide(path) as s:
        got = s.read_region((0, 0), 0, (224, 160)).astype(int)
        assert np.abs(got - img).mean() < 3
        assert s.level_count == 2


def test_strip_tiff_exact_and_mpp_from_inch_resolution(tmp_path):
    img = _noise(90, 130)
    path = tmp_path / "strip.tif"
    tifffile.imwrite(path, img, photometric="rgb", rowsperstrip=7, resolution=(50800, 50800), resolutionunit="INCH")
    with open_slide(path) as s:
        assert s.backend == "tifffile"
        assert s.mpp == pytest.approx((0.5, 0.5))  # 25400 um / 50800 px
        assert s._memmaps[0] is not None  # uncompressed: read through a memory map
        np.testing.assert_array_equal(s.read_region((3, 5), 0, (100, 80)), img[5:85, 3:103])


def test_compressed_strip_tiff(tmp_path):
    img = _noise(64, 70)
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, img, photometric="rgb", rowsperstrip=5, compression="zlib")
    with open_slide(path) as s:
        np.testing.assert_array_equal(s.read_region((10, 9), 0, (50, 40)), img[9:49, 10:60])


def test_grey_and_rgba_tiffs(tmp_path):
    grey = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 256
    grey = grey.astype(np.uint8)
    tifffile.imwrite(tmp_path / "grey.tif", grey, photometric="minisblack", tile=(16, 16))
    with open_slide(tmp_path / "grey.tif") as s:
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (64, 48)), np.repeat(grey[..., None], 3, -1))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[:, 16:, 3] = 255  # right half opaque, left half transparent
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"], tile=(16, 16))
    with open_slide(tmp_path / "rgba.tif") as s:
        out = s.read_region((0, 0), 0, (32, 32))
        assert (out[:, :16] == 255).all()
        assert (out[:, 16:] == (200, 10, 10)).all()


def test_ome_bigtiff_pyramid_and_mpp(tmp_path):
    img = _noise(128, 192)
    path = tmp_path / "x.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(
            img,
            subifds=1,
            photometric="rgb",
            tile=(32, 32),
            metadata={"axes": "YXS", "PhysicalSizeX": 500.0, "PhysicalSizeXUnit": "nm",
                      "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "µm"},
        )
        tw.write(img[::2, ::2].copy(), subfiletype=1, photometric="rgb", tile=(32, 32))
    with open_slide(path) as s:
        assert s.backend == "tifffile"
        assert s.mpp == pytest.approx((0.5, 0.5))
        assert s.level_dimensions == ((192, 128), (96, 64))
        assert "ome=True" in repr(s)
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (192, 128)), img)
        np.testing.assert_array_equal(s.read_region((0, 0), 1, (96, 64)), img[::2, ::2])


def test_implausible_resolution_tag_gives_no_mpp(tmp_path):
    path = tmp_path / "dpi72.tif"
    tifffile.imwrite(path, _noise(16, 16), photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    with open_slide(path) as s:
        assert s.mpp is None  # 72 dpi is 353 um/px: an editor default, not a scan


# -- Pillow: PNG, JPEG, transparency -------------------------------------------------------


def test_png_exact_and_jpeg_close(tmp_path):
    img = _noise(50, 70)
    Image.fromarray(img).save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png") as s:
        assert s.backend == "pillow" and s.level_count == 1 and s.mpp is None
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (70, 50)), img)
        np.testing.assert_array_equal(s.read_region((60, 40), 0, (20, 20))[:10, :10], img[40:, 60:])
    smooth = _smooth(64, 96)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    with open_slide(tmp_path / "a.jpg") as s:
        assert s.backend == "pillow"
        assert np.abs(s.read_region((0, 0), 0, (96, 64)).astype(int) - smooth).mean() < 3


def test_rgba_png_transparent_is_white(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (0, 0, 255)
    rgba[:10, :, 3] = 255
    rgba[10:, :15, 3] = 0
    rgba[10:, 15:, 3] = 128
    Image.fromarray(rgba).save(tmp_path / "t.png")
    with open_slide(tmp_path / "t.png") as s:
        out = s.read_region((0, 0), 0, (30, 20))
    assert (out[:10] == (0, 0, 255)).all()
    assert (out[10:, :15] == 255).all()
    assert (out[10:, 15:] == (127, 127, 255)).all()  # half blue over white


def test_pillow_lifts_the_decompression_bomb_limit(tmp_path, monkeypatch):
    Image.fromarray(_noise(40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px is "a bomb" now
    with open_slide(tmp_path / "big.png") as s:
        assert s.dimensions == (40, 40)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored


# -- regions partly or wholly outside, argument checks --------------------------------------


def test_partly_outside_is_white(pyramid):
    path, levels = pyramid
    with open_slide(path) as s:
        out = s.read_region((-10, -5), 0, (30, 20))
        assert (out[:5] == 255).all() and (out[:, :10] == 255).all()
        np.testing.assert_array_equal(out[5:, 10:], levels[0][:15, :20])
        out = s.read_region((290, 190), 0, (20, 20))
        np.testing.assert_array_equal(out[:10, :10], levels[0][190:, 290:])
        assert (out[10:] == 255).all() and (out[:, 10:] == 255).all()


@pytest.mark.parametrize(
    "location, level, size, words",
    [
        ((300, 0), 0, (10, 10), "wholly outside"),
        ((-20, 0), 0, (20, 10), "wholly outside"),
        ((0, 0), 0, (-5, 10), "must be positive"),
        ((0, 0), 0, (10, 0), "must be positive"),
        ((0, 0), 3, (10, 10), "out of range"),
        ((0, 0), -1, (10, 10), "out of range"),
        ((0.5, 0), 0, (10, 10), "integers"),
        ((0, 0), 0, "big", "pair"),
    ],
)
def test_bad_region_arguments(pyramid, location, level, size, words):
    path, _ = pyramid
    with open_slide(path) as s:
        with pytest.raises(SlideError, match=words) as info:
            s.read_region(location, level, size)
    assert str(path) in str(info.value)


def test_closed_slide_refuses_reads(pyramid):
    path, _ = pyramid
    with open_slide(path) as s:
        pass
    with pytest.raises(SlideError, match="the slide is closed"):
        s.read_region((0, 0), 0, (4, 4))
    s.close()  # idempotent
    assert "closed" in repr(s)


def test_best_level_for_downsample(pyramid):
    path, _ = pyramid
    with open_slide(path) as s:
        got = [s.get_best_level_for_downsample(d) for d in (0.5, 1, 1.9, 2, 3.5, 4, 100)]
    assert got == [0, 0, 0, 1, 1, 2, 2]


# -- read_region_at_mpp ----------------------------------------------------------------------


def test_at_mpp_reads_from_the_best_level(pyramid):
    path, levels = pyramid
    with open_slide(path) as s:
        mpps = (0.1, 0.25, 0.4, 0.5, 0.504, 0.99, 1.0, 8)
        assert [s.get_best_level_for_mpp(m) for m in mpps] == [0, 0, 0, 1, 1, 1, 2, 2]
        # 0.5 um/px is level 1 exactly (level 1 is a distinct constant colour here).
        out = s.read_region_at_mpp((40, 20), 0.5, (50, 30))
        np.testing.assert_array_equal(out, levels[1][10:40, 20:70])
        # 0.25 is level 0 exactly.
        np.testing.assert_array_equal(s.read_region_at_mpp((7, 9), 0.25, (33, 21)), levels[0][9:30, 7:40])
        # 0.6 um/px comes from level 1 (0.5 <= 0.6) resampled: still the constant colour.
        out = s.read_region_at_mpp((40, 20), 0.6, (40, 25))
        assert out.shape == (25, 40, 3)
        assert (out == (10, 200, 30)).all()


def test_at_mpp_2x_downsample_of_a_known_pattern(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 64, (64, 96, 3)).astype(np.uint8) * 4  # multiples of 4: exact means
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, img, photometric="rgb", tile=(32, 32), resolution=(1e4 / 0.25,) * 2,
                     resolutionunit="CENTIMETER")
    with open_slide(path) as s:
        assert s.level_count == 1
        out = s.read_region_at_mpp((0, 0), 0.5, (48, 32))
    expected = img.reshape(32, 2, 48, 2, 3).astype(float).mean(axis=(1, 3))
    assert out.shape == (32, 48, 3)
    assert np.abs(out - expected).max() <= 0.5 + 1e-9  # Pillow rounds the exact mean


def test_at_mpp_constant_image_stays_constant(tmp_path):
    img = np.empty((120, 150, 3), np.uint8)
    img[...] = (220, 120, 180)
    path = _write_pyramid(tmp_path / "c.tif", [img, img[::2, ::2].copy()], subifds=True, mpp=0.3)
    with open_slide(path) as s:
        for target, size in [(0.77, (37, 29)), (0.3, (50, 40)), (0.11, (61, 47)), (1.9, (15, 11))]:
            out = s.read_region_at_mpp((12, 8), target, size)
            assert out.shape == (size[1], size[0], 3)
            # Interior only: the resampling window of edge pixels reaches the white glass.
            inner = out[2:-2, 2:-2]
            assert (inner == (220, 120, 180)).all(), target


def test_at_mpp_upsamples_bilinear_only_when_target_is_finer_than_level_0(tmp_path):
    ramp = np.repeat(np.repeat((np.arange(100) * 2).astype(np.uint8)[None, :, None], 60, 0), 3, 2)
    path = _write_pyramid(tmp_path / "ramp.tif", [ramp, ramp[::2, ::2].copy()], subifds=True, mpp=0.25)
    with open_slide(path) as s:
        assert s.get_best_level_for_mpp(0.125) == 0
        out = s.read_region_at_mpp((20, 10), 0.125, (80, 40))
    assert out.shape == (40, 80, 3)
    row = out[20, 2:-2, 0].astype(int)
    # Bilinear 2x of a ramp of step 2 is a ramp of step 1 (nearest would repeat pixels).
    np.testing.assert_array_equal(np.diff(row), 1)
    # Output pixel 2 is centred on level-0 x = 20 + 2.5 * 0.5 = 21.25, where the ramp
    # (value 2 * j at pixel centre j + 0.5) is 41.5.
    assert abs(row[0] - 41.5) <= 0.5


def test_at_mpp_on_a_rounded_level_picks_pixels_without_blur(tmp_path):
    l0 = _noise(201, 301)
    lvl1 = _noise(100, 150, seed=7)  # odd level 0: downsample (301/150 + 201/100) / 2
    path = _write_pyramid(tmp_path / "odd.tif", [l0, lvl1], subifds=True, mpp=0.25)
    with open_slide(path) as s:
        level_ds = s.level_downsamples[1]
        assert 2.005 < level_ds < 2.01
        assert s.get_best_level_for_mpp(0.5) == 1  # 0.502 um/px is within 1%
        out = s.read_region_at_mpp((40, 20), 0.5, (60, 40))
    step = 2 / level_ds  # level-1 pixels per output pixel, just under 1
    cols = np.floor(40 / level_ds + (np.arange(60) + 0.5) * step).astype(int)
    rows = np.floor(20 / level_ds + (np.arange(40) + 0.5) * step).astype(int)
    np.testing.assert_array_equal(out, lvl1[rows][:, cols])  # nearest pixels, no blur


def test_at_mpp_blockwise_equals_whole(tmp_path, monkeypatch):
    img = _noise(150, 210)
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, img, photometric="rgb", tile=(32, 32), resolution=(1e4 / 0.2,) * 2,
                     resolutionunit="CENTIMETER")
    with open_slide(path) as s:
        whole = [s.read_region_at_mpp((3, 5), m, (70, 40)) for m in (0.3, 0.6, 0.13)]
        whole_region = s.read_region((-7, 9), 0, (200, 120))
        monkeypatch.setattr(slide_module, "_BLOCK", 16)  # many blocks in every read
        blocks = [s.read_region_at_mpp((3, 5), m, (70, 40)) for m in (0.3, 0.6, 0.13)]
        np.testing.assert_array_equal(s.read_region((-7, 9), 0, (200, 120)), whole_region)
    for a, b in zip(whole, blocks):
        assert np.abs(a.astype(int) - b).max() <= 1  # float box edges may round differently


def test_at_mpp_large_read_equals_the_mosaic_of_its_halves(tmp_path):
    img = _noise(96, 192)
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, img, photometric="rgb", tile=(32, 32), resolution=(1e4 / 0.25,) * 2,
                     resolutionunit="CENTIMETER")
    with open_slide(path) as s:
        whole = s.read_region_at_mpp((0, 0), 0.75, (64, 32))  # 3x shrink
        left = s.read_region_at_mpp((0, 0), 0.75, (32, 32))
        right = s.read_region_at_mpp((96, 0), 0.75, (32, 32))
    np.testing.assert_array_equal(whole, np.concatenate([left, right], axis=1))
    # Pillow rounds to uint8 after each of its two passes: within 1 grey level.
    np.testing.assert_allclose(whole, img.reshape(32, 3, 64, 3, 3).mean(axis=(1, 3)), atol=1.0)


def test_at_mpp_needs_mpp_and_the_override_supplies_it(tmp_path):
    Image.fromarray(_noise(40, 60)).save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png") as s:
        with pytest.raises(SlideError, match="`mpp`") as info:
            s.read_region_at_mpp((0, 0), 1.0, (10, 10))
        assert "mpp=" in str(info.value) and "a.png" in str(info.value)
        assert s.read_region((0, 0), 0, (10, 10)).shape == (10, 10, 3)  # level reads work
    with open_slide(tmp_path / "a.png", mpp=0.5) as s:
        assert s.mpp == (0.5, 0.5)
        assert "[given]" in repr(s)
        assert s.read_region_at_mpp((0, 0), 1.0, (30, 20)).shape == (20, 30, 3)


def test_mpp_override_replaces_a_wrong_mpp(pyramid):
    path, _ = pyramid
    with open_slide(path, mpp=0.5) as s:  # the file says 0.25
        assert s.mpp == (0.5, 0.5)
        assert s.get_best_level_for_mpp(1.0) == 1
        assert s.get_best_level_for_mpp(0.5) == 0
    with open_slide(path, mpp=(0.5, 0.6)) as s:
        assert s.mpp == (0.5, 0.6)
        assert s.get_best_level_for_mpp(1.0) == 0  # level 1 is 1.2 um/px in y: too coarse
        assert s.get_best_level_for_mpp((1.0, 1.2)) == 1


@pytest.mark.parametrize("bad", [0, -0.25, float("nan"), "0.5", (0.5,), (0.5, -1)])
def test_bad_mpp_values(pyramid, bad):
    path, _ = pyramid
    with pytest.raises(ConfigError, match="mpp must be a positive"):
        open_slide(path, mpp=bad)
    with open_slide(path) as s, pytest.raises(ConfigError, match="target mpp must be a positive"):
        s.read_region_at_mpp((0, 0), bad, (4, 4))


def test_at_mpp_wholly_outside_and_bad_size(pyramid):
    path, _ = pyramid
    with open_slide(path) as s:
        with pytest.raises(SlideError, match="wholly outside"):
            s.read_region_at_mpp((400, 0), 0.5, (10, 10))
        with pytest.raises(SlideError, match="wholly outside"):
            s.read_region_at_mpp((-41, 0), 1.0, (10, 10))  # covers level-0 x in [-41, -1)
        with pytest.raises(SlideError, match="must be positive"):
            s.read_region_at_mpp((0, 0), 0.5, (0, 10))


def test_repr(pyramid):
    path, _ = pyramid
    with open_slide(path) as s:
        text = repr(s)
    for part in [str(path), "tifffile", "(300, 200)", "levels=3", "mpp=(0.25, 0.25)"]:
        assert part in text


# -- bad input: every one a SlideError naming the file --------------------------------------
# (match= phrases hold spaces or colons: pytest's tmp_path names hold the test's name.)


def test_missing_file(tmp_path):
    with pytest.raises(SlideError, match="no such file") as info:
        open_slide(tmp_path / "nope.svs")
    assert "nope.svs" in str(info.value)
    assert isinstance(info.value, GigasegError)


def test_directory_with_no_slide(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SlideError, match="no slide") as info:
        open_slide(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_truncated_tiled_tiff(tmp_path):
    path = _write_pyramid(tmp_path / "t.tif", _levels(_noise(128, 128)), subifds=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SlideError, match="truncated: .*ends at byte") as info:
        open_slide(path)
    assert "t.tif" in str(info.value)


def test_truncated_tiff_through_openslide(tmp_path):
    pytest.importorskip("openslide")
    path = _write_pyramid(tmp_path / "o.tif", _levels(_noise(128, 128)), subifds=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # the coarsest level loses its last tile
    with pytest.raises(SlideError, match="truncated: image data ends at byte"):
        open_slide(path, backend="openslide")


def test_truncated_strip_tiff(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, _noise(64, 64), photometric="rgb", rowsperstrip=8)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(SlideError, match="truncated: .*ends at byte"):
        open_slide(path)


def test_corrupt_tiff_header(tmp_path):
    path = tmp_path / "c.tif"
    path.write_bytes(b"II*\x00" + (8).to_bytes(4, "little") + b"\xff" * 60)  # a garbage directory
    with pytest.raises(SlideError, match="corrupt TIFF") as info:
        open_slide(path)
    assert "c.tif" in str(info.value)
    path.write_bytes(b"II*\x00" + (5000).to_bytes(4, "little") + b"\x00" * 60)  # cut before it
    with pytest.raises(SlideError, match="truncated: its first image directory is at byte 5000"):
        open_slide(path)


def test_corrupt_tile_data_fails_at_open(tmp_path):
    img = _smooth(64, 64)
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, img, photometric="rgb", tile=(32, 32), compression="jpeg")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\x00" * count  # the last tile is zeros now
    path.write_bytes(bytes(data))
    with pytest.raises(SlideError, match="cannot be decoded") as info:
        open_slide(path)
    assert "bad.tif" in str(info.value)


def test_concurrent_reads_are_exact(pyramid):
    from concurrent.futures import ThreadPoolExecutor

    path, levels = pyramid
    rng = np.random.default_rng(11)
    boxes = [(int(rng.integers(0, 250)), int(rng.integers(0, 150)), 50, 50) for _ in range(40)]
    with open_slide(path) as s, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: s.read_region((b[0], b[1]), 0, (b[2], b[3])), boxes))
    for (x, y, w, h), got in zip(boxes, results):
        np.testing.assert_array_equal(got, levels[0][y : y + h, x : x + w])


def test_truncated_png(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(_noise(64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="cannot decode it.*truncated or corrupt") as info:
        open_slide(path)
    assert "p.png" in str(info.value)


def test_unsupported_format_lists_every_backend(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a slide\n" * 10)
    with pytest.raises(SlideError, match="unsupported format") as info:
        open_slide(path)
    message = str(info.value)
    assert "notes.txt" in message
    assert message.index("tifffile:") < message.index("pillow:")  # the first reason first


def test_backend_option(tmp_path, pyramid):
    path, _ = pyramid
    with pytest.raises(ConfigError, match="openslide, tifffile, pillow"):
        open_slide(path, backend="vips")
    Image.fromarray(_noise(8, 8)).save(tmp_path / "a.png")
    with pytest.raises(SlideError, match="tifffile: not a TIFF file"):
        open_slide(tmp_path / "a.png", backend="tifffile")  # its decline is now the error
    with pytest.raises(SlideError, match="only the openslide backend"):
        open_slide(tmp_path, backend="tifffile")
    assert BACKENDS == ("openslide", "tifffile", "pillow")


# -- DICOM JFIF detection (unit) -------------------------------------------------------------


def test_jpeg_colour_marker_detection():
    from gigaseg.slides._openslide import _jpeg_means_ycbcr, _ycbcr_to_rgb

    buf = io.BytesIO()
    Image.fromarray(_smooth(16, 16)).save(buf, format="JPEG")
    assert buf.getvalue()[6:11] == b"JFIF\x00"
    assert _jpeg_means_ycbcr(buf.getvalue())

    def adobe(transform):
        payload = b"Adobe" + b"\x00\x64\x00\x00\x00\x00" + bytes([transform])
        return b"\xff\xd8\xff\xee" + (len(payload) + 2).to_bytes(2, "big") + payload + b"\xff\xc0\x00\x11"

    assert _jpeg_means_ycbcr(adobe(1))
    assert not _jpeg_means_ycbcr(adobe(0))
    assert not _jpeg_means_ycbcr(b"\xff\xd8\xff\xc0\x00\x11")  # no marker: left alone
    assert not _jpeg_means_ycbcr(b"not a jpeg")
    # The transform is JFIF's YCbCr -> RGB, as Pillow (libjpeg's tables) does it.
    ycc = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = np.asarray(Image.frombytes("YCbCr", (32, 32), ycc.tobytes()).convert("RGB"))
    assert np.abs(_ycbcr_to_rgb(ycc).astype(int) - expected).max() <= 1


# -- real slides -----------------------------------------------------------------------------


def _need(path: Path):
    need_real(path)


def test_real_svs():
    _need(SVS)
    pytest.importorskip("openslide")
    with open_slide(SVS) as s:
        assert s.backend == "openslide"
        assert s.dimensions == (2220, 2967)
        assert s.level_count == 1
        assert s.mpp == pytest.approx((0.499, 0.499))
        region = s.read_region((1000, 1000), 0, (256, 256))
        assert region.shape == (256, 256, 3) and region.dtype == np.uint8
        assert region.std() > 5  # tissue, not a blank
        half = s.read_region_at_mpp((0, 0), 0.998, (1110, 1483))
        assert half.shape == (1483, 1110, 3)
        assert "CMU-1-Small-Region.svs" in repr(s) and "openslide" in repr(s)


def test_real_kidney_strip_tiff_via_tifffile():
    _need(KIDNEY)
    with open_slide(KIDNEY) as s:
        assert s.backend == "tifffile"
        assert s.dimensions == (1493, 901)
        assert s.mpp is None
        np.testing.assert_array_equal(s.read_region((0, 0), 0, s.dimensions), tifffile.imread(KIDNEY))


@pytest.fixture(scope="module")
def svs_pixels():
    _need(SVS)
    pytest.importorskip("openslide")
    with open_slide(SVS) as s:
        return s.read_region((0, 0), 0, s.dimensions)


def _mad_and_corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean absolute difference (grey levels) and Pearson correlation of two images."""
    mad = float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
    sub_a, sub_b = a[::2, ::2].astype(np.float32).ravel(), b[::2, ::2].astype(np.float32).ravel()
    return mad, float(np.corrcoef(sub_a, sub_b)[0, 1])


@pytest.mark.parametrize("which", ["directory", "level-0 file", "level-2 file"])
def test_real_dicom_in_correct_colours(svs_pixels, which):
    _need(DICOM_DIR)
    pytest.importorskip("openslide")
    pytest.importorskip("pydicom")
    target = {
        "directory": DICOM_DIR,
        "level-0 file": DICOM_DIR / "level-0-frames-0-30.dcm",
        "level-2 file": DICOM_DIR / "level-2-frames-0-4.dcm",
    }[which]
    with open_slide(target) as s:
        assert s.backend == "openslide"
        assert s.dimensions == (2220, 2967)
        assert s.level_count == 12
        assert s.mpp == pytest.approx((0.499, 0.499))
        assert "dicom_jfif_colour_fix=True" in repr(s)
        dicom = s.read_region((0, 0), 0, s.dimensions)
    mad, corr = _mad_and_corr(dicom, svs_pixels)
    assert mad < 5, mad
    assert corr > 0.98, corr


def test_real_dicom_raw_openslide_is_false_colour(svs_pixels):
    """Guards the test above: without the fix the pixels are far from the SVS."""
    _need(DICOM_DIR)
    openslide = pytest.importorskip("openslide")
    osr = openslide.OpenSlide(str(DICOM_DIR / "level-0-frames-0-30.dcm"))
    raw = np.asarray(osr.read_region((0, 0), 0, osr.dimensions))[..., :3]
    osr.close()
    mad, corr = _mad_and_corr(raw, svs_pixels)
    assert mad > 30, mad
    assert corr < 0.6, corr


def test_real_dicom_levels_match_the_svs_downsampled(svs_pixels):
    _need(DICOM_DIR)
    pytest.importorskip("openslide")
    with open_slide(DICOM_DIR) as s:
        level2 = s.read_region((0, 0), 2, s.level_dimensions[2]).astype(np.float64)
    h, w = level2.shape[:2]
    ref = svs_pixels[: h * 4, : w * 4].reshape(h, 4, w, 4, 3).mean(axis=(1, 3), dtype=np.float64)
    assert np.abs(level2 - ref).mean() < 8


def test_real_svs_tifffile_backend_equals_openslide():
    _need(SVS)
    pytest.importorskip("openslide")
    with open_slide(SVS, backend="tifffile") as a, open_slide(SVS) as b:
        assert (a.backend, b.backend) == ("tifffile", "openslide")
        assert a.mpp == pytest.approx((0.499, 0.499))  # from the Aperio description
        np.testing.assert_array_equal(a.read_region((900, 1300), 0, (700, 500)),
                                      b.read_region((900, 1300), 0, (700, 500)))


def test_real_svs_truncated_copy(tmp_path):
    _need(SVS)
    pytest.importorskip("openslide")
    data = SVS.read_bytes()
    path = tmp_path / "cut.svs"
    path.write_bytes(data[: len(data) // 2])  # Aperio writes directories after the data
    with pytest.raises(SlideError, match="truncated: ") as info:
        open_slide(path)
    assert "cut.svs" in str(info.value)


# -- DICOM directories (synthetic headers: no pixels needed to pick the file) ------------------


def _write_dicom_header(path, *, series, sop_class="1.2.840.10008.5.1.4.1.1.77.1.6", image_type="VOLUME",
                        size=(64, 64)):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "NONE"]
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = size
    ds.save_as(path, enforce_file_format=True)


def test_dicom_directory_choices(tmp_path):
    from gigaseg.slides._openslide import dicom_file_in_directory

    _write_dicom_header(tmp_path / "a1.dcm", series="1.2.3", size=(128, 64))
    _write_dicom_header(tmp_path / "b0.dcm", series="1.2.3", size=(256, 128))
    _write_dicom_header(tmp_path / "c2.dcm", series="1.2.3", size=(64, 32))
    _write_dicom_header(tmp_path / "label.dcm", series="1.2.3", image_type="LABEL", size=(999, 999))
    _write_dicom_header(tmp_path / "ct.dcm", series="1.2.3", sop_class="1.2.840.10008.5.1.4.1.1.2", size=(999, 999))
    (tmp_path / "readme.txt").write_text("x")
    assert dicom_file_in_directory(tmp_path) == tmp_path / "b0.dcm"  # the largest VOLUME
    _write_dicom_header(tmp_path / "other.dcm", series="1.2.4")
    with pytest.raises(SlideError, match="2 DICOM WSI series") as info:
        open_slide(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_dicom_directory_without_wsi(tmp_path):
    _write_dicom_header(tmp_path / "ct.dcm", series="1.2.3", sop_class="1.2.840.10008.5.1.4.1.1.2")
    _write_dicom_header(tmp_path / "label.dcm", series="1.2.3", image_type="LABEL")
    with pytest.raises(SlideError, match="no slide"):
        open_slide(tmp_path)


# -- fractional origins and SlideArray -------------------------------------------------------


def _flat(tmp_path, img, mpp):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, img, photometric="rgb", tile=(32, 32), resolution=(1e4 / mpp,) * 2,
                     resolutionunit="CENTIMETER")
    return path


@pytest.mark.parametrize("target, at", [(0.75, (3, 5)), (0.375, (1, 3)), (0.75, (4, 2))],
                         ids=["shrink", "enlarge", "whole-origin"])
def test_at_mpp_fractional_origin_is_the_part_of_a_larger_read(tmp_path, target, at):
    """Output pixel (i, j) of a read at (0, 0) is the origin of a read at (i * s, j * s), also
    fractional: here s = 1.5 or 0.75, exact in binary, so the two reads are equal."""
    with open_slide(_flat(tmp_path, _noise(96, 128), 0.5)) as s:
        step = target / 0.5
        whole = s.read_region_at_mpp((0, 0), target, (40, 30))
        i, j = at
        part = s.read_region_at_mpp((i * step, j * step), target, (17, 11))
    np.testing.assert_array_equal(part, whole[j:j + 11, i:i + 17])


def test_at_mpp_fractional_origin_on_a_pyramid_level(pyramid):
    """A fractional origin reads the best level like an integer one, resampled from the level
    at the level's fractional origin (the pixels of Slide._resample, which prediction used)."""
    path, _ = pyramid
    with open_slide(path) as s:
        target = 0.625  # level 1 (0.5 um/px), 2.5 level-0 / 1.25 level-1 pixels per output pixel
        whole = s.read_region_at_mpp((0, 0), target, (60, 40))
        part = s.read_region_at_mpp((5 * 2.5, 3 * 2.5), target, (20, 16))  # (12.5, 7.5)
        np.testing.assert_array_equal(part, whole[3:19, 5:25])
        level = s.get_best_level_for_mpp(target)
        ds = s.level_downsamples[level]
        assert level == 1
        old = s._resample(level, 12.5 / ds, 7.5 / ds, 2.5 / ds, 2.5 / ds, 20, 16)
        np.testing.assert_array_equal(part, old)


def test_at_mpp_whole_number_origins_as_floats_are_integer_origins(pyramid):
    path, levels = pyramid
    with open_slide(path) as s:
        for target in (0.25, 0.5, 0.7):
            np.testing.assert_array_equal(s.read_region_at_mpp((40.0, np.float32(20)), target, (30, 20)),
                                          s.read_region_at_mpp((40, 20), target, (30, 20)))
        # the target is level 1's resolution: a whole origin reads the level, a fractional one resamples
        np.testing.assert_array_equal(s.read_region_at_mpp((40.0, 20.0), 0.5, (50, 30)), levels[1][10:40, 20:70])
        half = s.read_region_at_mpp((41.0, 20.5), 0.5, (50, 30))
        np.testing.assert_array_equal(half, s._resample(1, 20.5, 10.25, 1.0, 1.0, 50, 30))
        for bad in ((1.5, float("nan")), (float("inf"), 0), ("1", 2), (True, 0), (1,)):
            with pytest.raises(SlideError, match="location must be a pair"):
                s.read_region_at_mpp(bad, 0.5, (10, 10))
        with pytest.raises(SlideError, match="pair of integers"):
            s.read_region((1.5, 0), 0, (10, 10))  # a level read stays on whole pixels


def test_slide_array_is_the_slide_grid_at_an_mpp(tmp_path):
    """NOTE [Slide grid]: a[y0:y1, x0:x1] is read at level-0 (x0 * s, y0 * s); separately read
    boxes are the parts of the whole grid; the grid has round(size * mpp / target) pixels."""
    import threading

    from gigaseg.slides import SlideArray

    img = _noise(101, 143, seed=5)
    with open_slide(_flat(tmp_path, img, 0.5)) as s:
        for target, shape in ((0.75, (67, 95)), (0.375, (135, 191)), (0.5, (101, 143)), (1.3, (39, 55)),
                              (0.77, (66, 93))):
            a = SlideArray(s, target)
            assert a.shape == shape + (3,) and a.dtype == np.uint8 and a.ndim == 3 and len(a) == shape[0]
            whole = a[:, :]
            np.testing.assert_array_equal(whole, s.read_region_at_mpp((0, 0), target, shape[::-1]))
            np.testing.assert_array_equal(a[7:30, 9:40, :], s.read_region_at_mpp((9 * a.step[0], 7 * a.step[1]),
                                                                                 target, (31, 23)))
            if target in (0.75, 0.5):
                # shrinking by a step exact in binary: the box is the whole's part (NOTE [Slide grid]:
                # at 0.77 a source pixel centre on a grid pixel edge may go either way, enlarging
                # rounds within 1 grey level)
                np.testing.assert_array_equal(a[7:30, 9:40], whole[7:30, 9:40])
            assert a[5:5, 0:10].shape == (0, 10, 3)
        np.testing.assert_array_equal(SlideArray(s, 0.5)[:, :], img)
        a = SlideArray(s, 0.75)
        boxes = [(y, y + 20, x, x + 30) for y in range(0, 60, 20) for x in range(0, 90, 30)]
        got: dict = {}
        threads = [threading.Thread(target=lambda b=b: got.__setitem__(b, a[b[0]:b[1], b[2]:b[3]])) for b in boxes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        whole = a[:, :]
        for (y0, y1, x0, x1), block in got.items():
            np.testing.assert_array_equal(block, whole[y0:y1, x0:x1])
        assert a.read_s > 0 and "SlideArray" in repr(a)
        with pytest.raises(SlideError, match="sliced by rows and columns"):
            a[3, 4]
        with pytest.raises(SlideError, match="steps of 1"):
            a[::2, :]
        with pytest.raises(ConfigError, match="mpp must be a positive"):
            SlideArray(s, 0)
    Image.fromarray(img).save(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png") as s, pytest.raises(SlideError, match="`mpp`"):
        SlideArray(s, 1.0)
