"""Tests of gigaseg.synth: determinism, the ground-truth definition, the TIFF writer, the CLI."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import ndimage

from gigaseg import synth
from gigaseg.errors import ConfigError, InputError
from gigaseg.synth import HOLE_MIN_UM, make_layout, render_labels, render_region, write_slide

W, H = 1024, 768
TISSUE_CODES = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def whole():
    return render_region(0, 0, 0, W, H, width=W, height=H)


def test_mosaic_equals_whole_bit_for_bit(whole):
    rgb, mask = whole
    # awkward cuts: not multiples of the lattice, the blocks or each other
    xs = [0, 1, 7, 333, 517, 1000, W]
    ys = [0, 5, 259, 260, 700, H]
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            r, m = render_region(0, x0, y0, x1 - x0, y1 - y0, width=W, height=H)
            assert np.array_equal(r, rgb[y0:y1, x0:x1]), (x0, y0)
            assert np.array_equal(m, mask[y0:y1, x0:x1]), (x0, y0)


def test_deterministic_across_calls_and_threads(whole):
    rgb, mask = whole
    r2, m2 = render_region(0, 0, 0, W, H, width=W, height=H)
    assert np.array_equal(r2, rgb) and np.array_equal(m2, mask)
    synth.clear_caches()  # layouts and texture banks are rebuilt the same
    assert synth.render._tx.texture_bank.cache_info().currsize == 0
    r3, m3 = render_region(0, 0, 0, W, H, width=W, height=H)
    assert np.array_equal(r3, rgb) and np.array_equal(m3, mask)
    windows = [(x, y, 256, 192) for y in range(0, H, 192) for x in range(0, W, 256)]
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda wd: render_region(0, *wd, width=W, height=H), windows))
    for (x, y, w, h), (r, m) in zip(windows, parts):
        assert np.array_equal(r, rgb[y : y + h, x : x + w])
        assert np.array_equal(m, mask[y : y + h, x : x + w])


def test_mask_values_and_both_classes(whole):
    rgb, mask = whole
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    assert 0.05 < mask.mean() < 0.95
    # tissue is darker and more saturated than glass
    t, g = rgb[mask == 1].astype(float), rgb[mask == 0].astype(float)
    assert t.mean() < g.mean() - 20
    assert (t.max(1) - t.min(1)).mean() > (g.max(1) - g.min(1)).mean() + 15


def test_different_seeds_differ():
    a, _ = render_region(0, 0, 0, 256, 256, width=W, height=H)
    b, _ = render_region(1, 0, 0, 256, 256, width=W, height=H)
    assert not np.array_equal(a, b)


def _custom_layout():
    """Seed-0 layout with one fragment on the left, mostly fat, plus artefacts on known glass."""
    lay = make_layout(0, W, H)
    frags = lay.frags[:1].copy()
    frags[0, :4] = (300, 384, 230, 260)
    frags[0, 6] = 1.0
    params = dict(lay.params, adip_thr=-0.05, dust_p=0.5, lumen_p=0.6)
    ink = -np.log(np.array(synth.render._INK["blue"]) / 245.0)
    pen = (np.array([[700.0, 80.0, 980.0, 200.0]]), 25.0, ink)
    return dataclasses.replace(
        lay, frags=frags, frag_harm=np.zeros((1, 4, 2)), folds=np.zeros((0, 6)), blurs=np.zeros((0, 4)),
        tears=np.array([[250.0, 300.0, 350.0, 330.0, 20.0]]), pens=[pen],
        bubbles=np.array([[820.0, 500.0, 120.0, 100.0, 0.6]]), oos=np.array([[960.0, 600.0, 1024.0, 768.0]]),
        params=params,
    )


@pytest.fixture(scope="module")
def labelled():
    lay = _custom_layout()
    return lay, render_labels(lay, 0, 0, W, H)


def test_mosaic_with_artefacts_and_labels(labelled):
    lay, (rgb, mask, lab) = labelled
    for x0, y0, w, h in [(0, 0, 517, 389), (517, 0, 507, 389), (0, 389, 1000, 379), (1000, 389, 24, 379)]:
        r, m, lb = render_labels(lay, x0, y0, w, h)
        assert np.array_equal(r, rgb[y0 : y0 + h, x0 : x0 + w])
        assert np.array_equal(m, mask[y0 : y0 + h, x0 : x0 + w])
        assert np.array_equal(lb, lab[y0 : y0 + h, x0 : x0 + w])


def test_mask_follows_the_definition(labelled):
    _, (rgb, mask, lab) = labelled
    # every tissue label is mask 1, every background label mask 0, and nothing else
    assert np.array_equal(mask == 1, np.isin(lab, TISSUE_CODES))
    present = set(np.unique(lab).tolist())
    assert {0, 2, 5, 6, 7, 8, 9} <= present, present


def test_artefacts_are_background_and_visible(labelled):
    _, (rgb, mask, lab) = labelled
    glass = rgb[lab == 0].astype(float).mean(0)
    pen = rgb[lab == 6].astype(float)
    assert (mask[lab == 6] == 0).all()
    assert pen[:, 2].mean() - pen[:, 0].mean() > 40  # blue ink
    dust = rgb[lab == 7].astype(float)
    assert (mask[lab == 7] == 0).all() and dust.mean() < glass.mean() - 20
    assert (mask[lab == 8] == 0).all() and rgb[lab == 8].mean() < glass.mean() - 10  # bubble rim
    assert (rgb[lab == 9] == 255).all() and (mask[lab == 9] == 0).all()  # out of scan
    assert (mask[lab == 5] == 0).all() and rgb[lab == 5].mean() > glass.mean() - 10  # lumens look like glass


def test_adipose_cells_are_tissue(labelled):
    _, (rgb, mask, lab) = labelled
    fat = lab == 2
    assert fat.sum() > 1000
    assert (mask[fat] == 1).all()
    assert rgb[fat].mean() > 200  # white cell interiors, yet tissue


def test_holes_are_wider_than_the_minimum():
    # tissue everywhere, so every lumen and tear is whole (none is cut by the outline)
    lay = make_layout(0, W, H)
    frags = lay.frags[:1].copy()
    frags[0, :4] = (512, 384, 5000, 5000)
    lay = dataclasses.replace(lay, frags=frags, frag_harm=np.zeros((1, 4, 2)), params=dict(lay.params, lumen_p=0.9),
                              oos=np.zeros((0, 4)),
                              tears=np.array([[200.0, 600.0, 700.0, 560.0, 0.5 * HOLE_MIN_UM / lay.mpp + 2]]))
    _, mask, lab = render_labels(lay, 0, 0, W, H)
    holes = mask == 0  # lumens and tears, and artefacts seen through them
    assert np.isin(lab[holes], (5, 6, 7, 8)).all() and (lab[holes] == 5).mean() > 0.8
    comps, n = ndimage.label(holes)
    edt = ndimage.distance_transform_edt(np.pad(holes, 1))[1:-1, 1:-1]
    inner = [i for i in range(1, n + 1) if not _touches_border(comps == i)]
    assert len(inner) >= 2
    for i in inner:
        width_um = 2 * edt[comps == i].max() * lay.mpp
        assert width_um >= HOLE_MIN_UM, (i, width_um)


def _touches_border(a):
    return a[0].any() or a[-1].any() or a[:, 0].any() or a[:, -1].any()


def test_fibre_gaps_are_narrow():
    from gigaseg.synth import _textures as tx

    lay = make_layout(0, W, H)
    bank = tx.texture_bank(lay.seed, lay.mpp, float(lay.params["fibre_theta"]))
    for fib in (bank.fib_a, bank.fib_b):
        edt = tx._wrap_edt(fib < 0.5, 100)
        assert edt.max() * 2 * lay.mpp <= tx.FIBRE_GAP_MAX_UM + 2 * lay.mpp
        assert tx.FIBRE_GAP_MAX_UM < HOLE_MIN_UM


def test_write_slide_opens_in_openslide(tmp_path, whole):
    openslide = pytest.importorskip("openslide")
    tifffile = pytest.importorskip("tifffile")
    out = tmp_path / "s.tiff"
    slide_path, mask_path = write_slide(out, width=W, height=H, seed=0, mpp=0.5, progress=False)
    assert slide_path == out and mask_path == tmp_path / "s.mask.tiff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mask.tiff", "s.tiff"]
    with openslide.OpenSlide(str(out)) as s:
        assert s.dimensions == (W, H)
        assert s.level_count > 1
        assert s.level_dimensions[1] == (W // 4, H // 4)
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-3)
        assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.5, rel=1e-3)
        pix = np.asarray(s.read_region((0, 0), 0, (W, H)).convert("RGB")).astype(float)
        lw, lh = s.level_dimensions[1]
        level1 = np.asarray(s.read_region((0, 0), 1, (lw, lh)).convert("RGB")).astype(float)
    # every row of the reduced level (the last strip's too) is the 4x box average of level 0
    box = pix[: lh * 4, : lw * 4].reshape(lh, 4, lw, 4, 3).mean(axis=(1, 3))
    assert np.abs(level1 - box).mean(axis=(1, 2)).max() < 6
    rgb, mask = whole
    assert np.abs(pix - rgb).mean() < 4  # JPEG q90
    m = tifffile.imread(mask_path)
    assert m.dtype == np.uint8 and np.array_equal(m, mask)


def test_failure_leaves_no_files(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synth.render._render_block

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # 1024 x 768 is 3 blocks: fail in the second strip
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(synth.render, "_render_block", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        write_slide(tmp_path / "x.tiff", width=W, height=H, seed=0, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, cls, text",
    [
        (dict(width=0, height=H, seed=0), ConfigError, "width=0"),
        (dict(width=W, height=-5, seed=0), ConfigError, "height=-5"),
        (dict(width=W, height=H, seed=0, mpp=0.0), ConfigError, "mpp=0.0"),
        (dict(width=W, height=H, seed=0, mpp=-1.0), ConfigError, "mpp=-1.0"),
        (dict(width=W, height=H, seed=-3), ConfigError, "seed=-3"),
        (dict(width=W, height=H, seed=0, quality=0), ConfigError, "quality=0"),
        (dict(width=W, height=H, seed=0, tile=100), ConfigError, "tile=100"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, cls, text):
    with pytest.raises(cls, match=text):
        write_slide(tmp_path / "x.tiff", progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_bad_windows():
    with pytest.raises(ConfigError, match="width=0"):
        render_region(0, 0, 0, 10, 10, width=0, height=H)
    with pytest.raises(ConfigError, match="mpp=-0.5"):
        render_region(0, 0, 0, 10, 10, width=W, height=H, mpp=-0.5)
    with pytest.raises(InputError, match="w=0"):
        render_region(0, 0, 0, 0, 10, width=W, height=H)
    with pytest.raises(InputError, match="outside the slide"):
        render_region(0, W - 5, 0, 10, 10, width=W, height=H)


def test_cli_synth(tmp_path, capsys):
    from gigaseg.cli import main

    out = tmp_path / "c.tiff"
    assert main(["synth", str(out), "--width", "640", "--height", "512", "--seed", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(tmp_path / "c.mask.tiff")]
    cfg = json.loads((tmp_path / "c.json").read_text())
    assert cfg["width"] == 640 and cfg["seed"] == 1 and cfg["mpp"] == 0.5 and "gigaseg_version" in cfg
    assert main(["synth", str(tmp_path / "d.tiff"), "--width", "0", "--height", "512", "--seed", "1"]) == 2
    assert "width=0" in capsys.readouterr().err


def test_cli_bench_synth(capsys):
    from gigaseg.cli import main

    assert main(["bench", "synth", "--width", "600", "--height", "400", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["pixels"] == 240000 and res["seconds"] > 0 and res["peak_rss_bytes"] > 0
    assert res["slide_bytes"] > 0 and res["mask_bytes"] > 0


def test_hole_convention_tissue_fills_lumens_and_tears_only(labelled, tmp_path):
    """NOTE [Hole convention]: holes="tissue" calls lumens and tears inside tissue tissue (the
    hole-filled masks of histolab and others); pixels, the rest of the mask and the glass
    artefacts do not change; a bad name is a clear error."""
    lay, (rgb, mask, lab) = labelled
    rgb2, filled, lab2 = render_labels(lay, 0, 0, W, H, holes="tissue")
    assert np.array_equal(rgb2, rgb) and np.array_equal(lab2, lab)
    grown = (filled == 1) & (mask == 0)
    assert (filled[mask == 1] == 1).all()  # nothing is taken away
    assert grown.sum() > 1000 and (lab[grown] == 5).mean() > 0.8  # lumens and tears
    assert np.isin(lab[grown], (5, 6, 7, 8)).all()  # and glass artefacts seen through them
    assert (filled[lab == 5] == 1).all()
    assert (filled[lab == 9] == 0).all() and (filled[lab == 0] == 0).all()  # out of scan, glass
    # the same through render_region and a region store
    r, m = render_region(0, 0, 0, 256, 192, width=W, height=H, holes="tissue")
    r0, m0 = render_region(0, 0, 0, 256, 192, width=W, height=H)
    assert np.array_equal(r, r0) and (m >= m0).all()
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "st")
    (region,) = prepare_synthetic(store, 1, (256, 192), seed=0, mpp=0.5, progress=False, holes="tissue")
    assert region.meta["mask_source"]["holes"] == "tissue"
    with pytest.raises(ConfigError, match="holes='filled' is not a hole convention: use one of background, tissue"):
        render_region(0, 0, 0, 8, 8, width=W, height=H, holes="filled")


# ---------------------------------------------------------------------------- default profile frozen

# sha256 (first 16 hex digits) of pixels, masks (both hole conventions) and labels of the default
# profile, computed with the generator as it was before the variety profile existed (commit
# deed1e2): published figures were measured on these slides, so no change may touch them.
_GOLDEN = [
    # seed, width, height, mpp, window (x, y, w, h), rgb, mask, mask holes="tissue", labels
    (0, 1024, 768, 0.5, (0, 0, 1024, 768), "1526618559c41a6b", "978e81de308769b8", "3c7de08b5738c1cf",
     "9411c0ec9adba26c"),
    (1, 3000, 1200, 1.0, (700, 100, 1500, 900), "f6cbb2f65992dfb1", "8151f8e779746e16", "edb25d64baa86254",
     "78af5824e83f66e2"),
    (7, 2000, 5000, 2.0, (0, 1500, 2000, 1700), "fe633b4512a7092a", "ee9f869fdbc94b88", "d51e48f53601e113",
     "63fc90b27a0e3c54"),
]


def _h(a):
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("case", _GOLDEN, ids=lambda c: f"seed{c[0]}")
def test_default_profile_is_byte_identical(case):
    seed, width, height, mpp, (x, y, w, h), h_rgb, h_mask, h_filled, h_lab = case
    rgb, mask = render_region(seed, x, y, w, h, width=width, height=height, mpp=mpp)
    assert (_h(rgb), _h(mask)) == (h_rgb, h_mask)
    rgb2, mask2 = render_region(seed, x, y, w, h, width=width, height=height, mpp=mpp, profile="he")
    assert np.array_equal(rgb2, rgb) and np.array_equal(mask2, mask)
    assert _h(render_region(seed, x, y, w, h, width=width, height=height, mpp=mpp, holes="tissue")[1]) == h_filled
    _, _, lab = render_labels(make_layout(seed, width, height, mpp), x, y, w, h)
    assert _h(lab) == h_lab


def test_default_profile_slide_mask_is_byte_identical(tmp_path, monkeypatch):
    """write_slide with the defaults: the mask as before (decoded: the file's bytes depend on the
    zlib build), and the blocks it renders are render_region's."""
    tifffile = pytest.importorskip("tifffile")
    seen = []
    real = synth.render._render_block

    def spy(lay, x, y, w, h, labels, holes):
        out = real(lay, x, y, w, h, labels, holes)
        seen.append((lay, x, y, w, h, out[0]))
        return out

    monkeypatch.setattr(synth.render, "_render_block", spy)
    _, mask = write_slide(tmp_path / "a.tiff", width=1100, height=700, seed=5, mpp=0.5, progress=False)
    assert _h(tifffile.imread(mask)) == "09acde349ecc33cf"
    lay, x, y, w, h, rgb = seen[1]
    assert lay.profile == "he"
    assert np.array_equal(rgb, render_region(5, x, y, w, h, width=1100, height=700, mpp=0.5)[0])
