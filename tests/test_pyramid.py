"""gigaseg._pyramid: the parts every pyramidal TIFF writer of gigaseg shares."""

from __future__ import annotations

import numpy as np
import pytest

from gigaseg._pyramid import (
    MASK_LEVELS,
    SLIDE_LEVELS,
    LevelRule,
    LevelSpool,
    box_down,
    level_sizes,
    level_tiles,
    strip_tiles,
    write_level,
)


def test_level_sizes_stop_by_the_rule():
    # slides: down to a longest side of 256; masks: down to 512, no side under 2
    assert level_sizes(2500, 1700, SLIDE_LEVELS) == [(2500, 1700), (625, 425), (156, 106)]
    assert level_sizes(2000, 1700, MASK_LEVELS) == [(2000, 1700), (500, 425)]
    assert level_sizes(2000, 1700, SLIDE_LEVELS) == [(2000, 1700), (500, 425), (125, 106)]
    assert level_sizes(256, 10, SLIDE_LEVELS) == [(256, 10)]
    assert level_sizes(3000, 7, SLIDE_LEVELS) == [(3000, 7), (750, 1)]  # a 1-px level is a slide level
    assert level_sizes(3000, 7, MASK_LEVELS) == [(3000, 7)]  # but not a mask level
    assert level_sizes(100, 100, LevelRule(max_side=10, factor=2)) == [(100, 100), (50, 50), (25, 25), (12, 12),
                                                                       (6, 6)]


def test_box_down_rounds_half_up_and_drops_partial_rows():
    strip = np.zeros((9, 8, 3), np.uint8)
    strip[:4, :4] = 1
    strip[0, 0] = 9  # a 4x4 block of fifteen 1s and one 9: 24 / 16 = 1.5 -> 2
    out = box_down(strip, 2)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [2, 2, 2] and out[0, 1].tolist() == [0, 0, 0]


def test_strip_tiles_pad_edges_by_replication():
    strip = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5)
    tiles = list(strip_tiles(strip, 4))
    assert [t.shape for t in tiles] == [(4, 4), (4, 4)] and all(t.flags.c_contiguous for t in tiles)
    assert tiles[0][3].tolist() == strip[2, :4].tolist()  # last row repeated
    assert tiles[1][:3, 1].tolist() == strip[:, 4].tolist()  # last column repeated


def test_level_tiles_call_on_strip_before_the_strip_s_tiles():
    seen = []
    strip_rows = np.zeros((10, 6), np.uint8)

    def read(y0, y1):
        seen.append(("read", y0, y1))
        return strip_rows[y0:y1]

    gen = level_tiles(read, 10, 4, on_strip=lambda s, y0, y1: seen.append(("strip", y0, y1)))
    tiles = []
    for t in gen:
        tiles.append(t)
        if len(tiles) == 6:  # the last tile: a consumer that stops here still saw every strip
            break
    assert seen == [("read", 0, 4), ("strip", 0, 4), ("read", 4, 8), ("strip", 4, 8), ("read", 8, 10),
                    ("strip", 8, 10)]


def test_level_spool_feeds_whole_row_groups_and_carries_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    level = rng.integers(0, 256, (22, 16, 3), dtype=np.uint8)
    spool = LevelSpool(tmp_path / "l1.raw", 4)
    for y0, y1 in ((0, 7), (7, 13), (13, 22)):
        spool.feed(level[y0:y1])
    assert spool.rows == 5
    assert np.array_equal(spool.read(0, 5), box_down(level, 4))
    spool.close()
    assert not (tmp_path / "l1.raw").exists()


def test_write_level_layout(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    img = np.random.default_rng(1).integers(0, 256, (40, 70), dtype=np.uint8)
    sizes = level_sizes(70, 40, LevelRule(max_side=20))
    with tifffile.TiffWriter(tmp_path / "p.tiff") as tif:
        for lvl, (lw, lh) in enumerate(sizes):
            a = img[:: 70 // lw, :: 40 // lh][:lh, :lw]
            write_level(tif, level_tiles(lambda y0, y1, a=a: a[y0:y1], lh, 16), shape=(lh, lw), level=lvl, tile=16,
                        mpp=(0.5 * 70 / lw, 0.5 * 40 / lh), photometric="minisblack")
        write_level(tif, strip_tiles(img[:16, :16], 16), shape=(16, 16), level=None, tile=16, mpp=(1.0, 1.0))
    with tifffile.TiffFile(tmp_path / "p.tiff") as tif:
        pages = list(tif.pages)
        assert [p.shape for p in pages[:2]] == [(40, 70), (10, 17)] and all(p.is_tiled for p in pages)
        assert [p.tags["NewSubfileType"].value for p in pages[:2]] == [0, 1]
        assert "NewSubfileType" not in pages[2].tags  # a single-page TIFF's page
        assert np.array_equal(pages[0].asarray(), img)
        x = pages[1].tags["XResolution"].value
        assert x[0] / x[1] == pytest.approx(1e4 / (0.5 * 70 / 17))  # pixels per cm of that level
        assert str(pages[0].tags["ResolutionUnit"].value) in ("3", "RESUNIT.CENTIMETER")
        assert "ImageDescription" not in pages[0].tags  # no tifffile metadata


@pytest.mark.parametrize("step", [(16.0, 16.0), (8.0, 8.0), (3.3, 2.7), (1.0, 1.0)])
def test_uniform_tiles_are_the_bytes_of_the_tiles_themselves(step):
    """NOTE [Uniform tiles]: the mask TIFF's shortcut for tiles of one value gives, tile for tile,
    the bytes that spreading, padding and compressing them gives (fractional steps, edge tiles)."""
    from gigaseg._pyramid import level_tiles
    from gigaseg._writers import _TILE, MaskGrid, _encoded, _level_tiles_or_bytes, _zlibng_encoder

    encode = _zlibng_encoder()
    if encode is None:
        pytest.skip("imagecodecs without zlib-ng: the shortcut is not used")
    rng = np.random.default_rng(0)
    g = np.zeros((90, 130), np.uint8)
    g[20:60, 30:100] = 200
    g[70:75, 5:9] = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    l0 = (int(130 * step[0]) + 7, int(90 * step[1]) + 5)
    grid = MaskGrid(g, l0_size=l0, step=step)
    thr = lambda s: np.where(s >= 128, np.uint8(255), np.uint8(0))  # noqa: E731
    for transform in (thr, None):
        for ds in (1.0, 4.0):
            lw, lh = max(1, round(l0[0] / ds)), max(1, round(l0[1] / ds))
            def read(y0, y1, lw=lw, ds=ds, transform=transform):
                return grid.level_rows(y0, y1, lw, ds, transform)

            plain = list(_encoded(level_tiles(read, lh, _TILE), encode, None))
            fast = list(_encoded(_level_tiles_or_bytes(grid, lw, lh, ds, transform, encode, lambda *a: None),
                                 encode, None))
            assert fast == plain
