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
from gigaseg.synth import (
    CATEGORIES,
    HOLE_LARGE_UM,
    HOLE_MIN_UM,
    LABELS,
    check_profile,
    make_layout,
    render_labels,
    render_region,
    write_slide,
)

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


# ---------------------------------------------------------------------------- the variety profile


# Profiles that between them hold every category, at several resolutions (NOTE [Determinism]).
_VARIETY = [
    ("ihc,tma,frozen,bg-tinted,jpeg,pen,bubbles", 3, 2.0),
    ("grocott,needle,clot,padding,coverslip,seams,handwriting,dust", 1, 1.0),
    ("alcian,fragments,adipose,bg-dark,focus,dye", 2, 4.0),
    ("trichrome,sections,bg-grey,pen,dye,jpeg", 5, 0.5),
    ("pas,frozen,clot,padding,bubbles,dust", 4, 8.0),
    ("sirius,bg-white,coverslip,handwriting", 6, 3.0),
    ("he-wide,needle,adipose,seams", 7, 1.0),
    ("all", 9, 1.5),
    ("alcian,fragments,smudge,fibre", 5, 4.0),
    ("ihc,sections,fibre,strand,smear", 5, 4.0),
]
VW, VH = 480, 360


@pytest.fixture(scope="module")
def variety():
    out = []
    for profile, seed, mpp in _VARIETY:
        lay = make_layout(seed, VW, VH, mpp, profile=profile)
        out.append((lay, render_labels(lay, 0, 0, VW, VH)))
    return out


def test_variety_profiles_cover_every_category(variety):
    assert set().union(*(lay.categories for lay, _ in variety)) == set(CATEGORIES)


def test_variety_mosaic_equals_whole_bit_for_bit(variety):
    """NOTE [Determinism] for every category: a window equals the mosaic of its sub-windows."""
    xs, ys = [0, 1, 17, 333, 411, VW], [0, 5, 255, 259, VH]
    for lay, (rgb, mask, lab) in variety:
        for y0, y1 in zip(ys[:-1], ys[1:]):
            for x0, x1 in zip(xs[:-1], xs[1:]):
                r, m, lb = render_labels(lay, x0, y0, x1 - x0, y1 - y0)
                assert np.array_equal(r, rgb[y0:y1, x0:x1]), (lay.profile, x0, y0)
                assert np.array_equal(m, mask[y0:y1, x0:x1]), (lay.profile, x0, y0)
                assert np.array_equal(lb, lab[y0:y1, x0:x1]), (lay.profile, x0, y0)
    lay = variety[0][0]  # render_region and threads agree too (JPEG on the global grid)
    r, m = render_region(lay.seed, 0, 0, VW, VH, width=VW, height=VH, mpp=lay.mpp, profile=lay.profile)
    assert np.array_equal(r, variety[0][1][0]) and np.array_equal(m, variety[0][1][1])
    windows = [(x, y, 120, 90) for y in range(0, VH, 90) for x in range(0, VW, 120)]
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda wd: render_labels(lay, *wd), windows))
    for (x, y, w, h), (r, m, lb) in zip(windows, parts):
        assert np.array_equal(r, variety[0][1][0][y : y + h, x : x + w])
        assert np.array_equal(m, variety[0][1][1][y : y + h, x : x + w])
        assert np.array_equal(lb, variety[0][1][2][y : y + h, x : x + w])


def test_variety_mask_is_the_tissue_codes(variety):
    """mask == 1 exactly where the label is a tissue code; every new code is drawn somewhere."""
    seen = set()
    for lay, (_, mask, lab) in variety:
        assert np.array_equal(mask == 1, np.isin(lab, synth.TISSUE_CODES)), lay.profile
        assert set(np.unique(lab).tolist()) <= set(LABELS)
        seen |= set(np.unique(lab).tolist())
    assert set(range(10, 19)) <= seen, sorted(set(range(10, 19)) - seen)
    lay, (rgb, mask, lab) = variety[0]  # holes="tissue": large holes filled, nothing else changes
    rgb2, filled, lab2 = render_labels(lay, 0, 0, VW, VH, holes="tissue")
    assert np.array_equal(rgb2, rgb) and np.array_equal(lab2, lab) and (filled >= mask).all()
    grown = (filled == 1) & (mask == 0)
    assert grown.any() and np.isin(lab[grown], (5, 6, 7, 8, 14, 15)).all() and (filled[lab == 5] == 1).all()
    for lay, (rgb, _, lab) in variety:
        g = rgb[lab == 0].astype(float).mean(0)
        if (lab == 16).any():
            assert (rgb[lab == 16] == 0).all()  # black padding
        for code in (12, 13, 14, 15, 17, 18):  # artefacts are drawn (darker than the glass)
            if (lab == code).sum() > 50:
                assert rgb[lab == code].astype(float).mean() < g.mean() - 10, (lay.profile, code)


def test_lookalikes_only_when_listed_and_nothing_else_moves():
    """NOTE [Lookalike stream]: tissue strands (23: tissue) and smears (24 on glass: background; 25
    over tissue: tissue) come only when listed; the same slide without them is the same outside
    them; profile "all" never draws them (its slides, the held-out set, stay as they were)."""
    assert not any({"strand", "smear"} & set(make_layout(s, 64, 64, 4.0, profile="all").categories)
                   for s in range(60))
    W2, H2 = 480, 360
    base = make_layout(5, W2, H2, 4.0, profile="ihc,sections,fibre")
    look = make_layout(5, W2, H2, 4.0, profile="ihc,sections,fibre,strand,smear")
    assert {"strand", "smear"} <= set(look.categories) and not {"strand", "smear"} & set(base.categories)
    rgb0, m0, lab0 = render_labels(base, 0, 0, W2, H2)
    rgb1, m1, lab1 = render_labels(look, 0, 0, W2, H2)
    for code, want in ((23, 1), (24, 0), (25, 1)):
        assert (lab1 == code).sum() > 500 and (m1[lab1 == code] == want).all(), code
    # smears leave the mask as it was; strands only add tissue, on and beside them (where one leaves
    # a fragment, the lattice field fills the angle between the two; a hair over one is labelled 22)
    strands = ndimage.binary_dilation(np.isin(lab1, (22, 23)), iterations=24)
    assert (m1 >= m0).all() and ((lab1 == 23) & (m0 == 0)).sum() > 500 and not (m1 > m0)[~strands].any()
    # pixels change only on or near them (a smear's soft rim, the lattice cells a strand crosses)
    near = ndimage.binary_dilation(np.isin(lab1, (22, 23, 24, 25)), iterations=24)
    assert (np.abs(rgb1.astype(int) - rgb0).max(-1) > 0).any()
    assert np.array_equal(rgb1[~near], rgb0[~near]) and np.array_equal(lab1[~near], lab0[~near])
    # smears are hueless: a grey on glass, nowhere near the tissue's colour
    on_glass = rgb1[lab1 == 24].astype(float)
    assert np.ptp(on_glass.mean(0)) < 6 and on_glass.mean() < rgb1[lab1 == 0].astype(float).mean() - 2


def test_tissue_strands_keep_their_width_at_any_resolution():
    """Strands are measured per pixel, so a 20-um strand stays a strand at 4 um/px: its area in um^2
    at 4 and 2 um/px agree (a field sampled on the 8-px lattice alone would lose the thin ones)."""
    area = []
    for mpp, w, h in ((4.0, 480, 360), (2.0, 960, 720)):
        lay = make_layout(8, w, h, mpp, profile="ihc,sections,strand")
        lab = render_labels(lay, 0, 0, w, h)[2]
        area.append((lab == 23).sum() * mpp * mpp)
    assert area[1] > 20000 and 0.75 < area[0] / area[1] < 1.35, area


def test_variety_holes_follow_the_reference_definition():
    """Holes inside tissue narrower than HOLE_LARGE_UM are tissue (label 10), wider ones
    background (label 5), as ../shared/data/real/SOURCES.md defines; none is drawn near the limit."""
    W2, H2 = 1200, 900
    for mpp in (0.5, 1.0):
        lay = make_layout(3, W2, H2, mpp, profile="frozen")
        frags = lay.frags[:1].copy()
        frags[0, :4] = (W2 / 2, H2 / 2, 1e5, 1e5)  # tissue everywhere
        frags[0, 6:] = (1.0, 0, 0, 0)
        lay = dataclasses.replace(lay, frags=frags, frag_harm=np.zeros((1, 4, 2)),
                                  tears=np.array([[200.0, 300.0, 800.0, 450.0, 70 / mpp]]),
                                  params=dict(lay.params, lumen_p=0.9, adip_thr=0.6))  # no fat
        _, mask, lab = render_labels(lay, 0, 0, W2, H2)
        assert (mask[lab == 10] == 1).all() and (mask[lab == 5] == 0).all()
        # a hole's edge is ragged by +-3.75 um: close the specks of a large hole's rim onto it first
        jag = int(np.ceil(2 * 3.75 / mpp))
        for region, ok, close in ((lab == 5, lambda w: w >= HOLE_LARGE_UM, True),
                                  (lab == 10, lambda w: w < HOLE_LARGE_UM, False)):
            closed = ndimage.binary_closing(region, iterations=jag) | region if close else region
            comps, n = ndimage.label(closed)
            edt = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
            widths = ndimage.maximum(edt, comps, index=np.arange(1, n + 1)) * 2 * mpp
            inner = [i for i in range(1, n + 1) if not _touches_border(comps == i)]
            assert len(inner) >= (1 if close else 20)
            for i in inner:
                assert ok(widths[i - 1]), (mpp, i, widths[i - 1])


def _tissue_rgb(profile, seeds=(0, 1, 2), mpp=2.0, codes=synth.TISSUE_CODES):
    px = []
    for s in seeds:
        lay = make_layout(s, 400, 300, mpp, profile=profile)
        rgb, _, lab = render_labels(lay, 0, 0, 400, 300)
        px.append(rgb[np.isin(lab, codes)].astype(float))
    return np.concatenate(px).mean(0)


def test_stain_families_move_the_tissue_colour_the_expected_way():
    from gigaseg.synth.render import _layout_cached

    r, g, b = _tissue_rgb("he-wide")
    he = {"b-r": b - r, "r-b": r - b, "g-r": g - r, "b-g": b - g}

    # DAB-positive tissue is brown (R > G > B, red well over blue): many such pixels on heavy IHC
    # slides, next to none on DAB-negative ones or on H&E (pink: green lowest)
    def brown(profile, seeds):
        px = []
        for s in seeds:
            rgb, _, lab = render_labels(make_layout(s, 400, 300, 2.0, profile=profile), 0, 0, 400, 300)
            px.append(rgb[np.isin(lab, synth.TISSUE_CODES)].astype(int))
        q = np.concatenate(px)
        return np.mean((q[:, 0] > q[:, 1]) & (q[:, 1] > q[:, 2]) & (q[:, 0] - q[:, 2] > 20))

    fam = {s: _layout_cached(s, 400, 300, 2.0, "ihc").params["stain"] for s in range(60)}
    heavy = [s for s, f in fam.items() if f["dab_level"] > 1.0 and f["dab_fraction"] > 0.5
             and f["dab_pattern"] in ("cytoplasmic", "stromal")]
    assert brown("ihc", heavy[:3]) > 0.1
    assert brown("ihc", [s for s, f in fam.items() if f["dab_level"] < 0.03][:3]) < 0.01
    assert brown("he-wide", (0, 1, 2)) < 0.01
    r2, g2, b2 = _tissue_rgb("trichrome")  # collagen blue (or green): less red
    assert b2 - r2 > he["b-r"]
    r3, g3, b3 = _tissue_rgb("sirius")  # red collagen on yellow: blue absorbed
    assert b3 - g3 < he["b-g"] and r3 > b3
    r4, g4, b4 = _tissue_rgb("grocott")  # pale green counterstain
    assert g4 - r4 > he["g-r"]
    r5, g5, b5 = _tissue_rgb("pas")  # magenta: green absorbed most
    assert g5 < r5 and g5 < b5 and b5 - r5 > he["b-r"]
    r6, g6, b6 = _tissue_rgb("alcian", codes=(1,))  # blue mucins among pink
    assert b6 - r6 > he["b-r"]
    amount = {s: _layout_cached(s, 400, 300, 2.0, "he-wide").params["stain"]["amount"] for s in range(40)}
    faded = _tissue_rgb("he-wide", seeds=[s for s in amount if amount[s] < 0.4][:3])
    dark = _tissue_rgb("he-wide", seeds=[s for s in amount if amount[s] > 1.3][:3])
    assert faded.mean() > dark.mean() + 30  # H&E from faded to dark


def test_tma_cores_are_round_and_on_a_grid():
    lay = make_layout(2, 1200, 900, 8.0, profile="tma")
    _, mask, _ = render_labels(lay, 0, 0, 1200, 900)
    comps, n = ndimage.label(mask)
    big = [i for i in range(1, n + 1) if (comps == i).sum() > 1000]
    assert len(big) >= 6
    cx, cy = [], []
    for i in big:
        ys, xs = np.nonzero(comps == i)
        w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        assert 0.85 < w / h < 1.18  # round
        assert 0.72 < len(xs) / (np.pi * w * h / 4) < 1.08  # fills its circle (lumens aside)
        cx.append(xs.mean())
        cy.append(ys.mean())
    pitch = np.median(np.diff(np.unique(np.round(np.array(cx) / 20))))
    for c in (np.array(cx), np.array(cy)):  # centres fall into columns and rows
        s = np.sort(c)
        gaps = np.diff(s)
        assert (gaps[gaps > 0.3 * np.max(gaps)] > 0).all()
        col = np.split(s, np.nonzero(gaps > 0.3 * np.max(gaps))[0] + 1)
        assert all(np.ptp(k) < 0.12 * np.max(gaps) for k in col), col
    assert pitch > 0


def test_needle_biopsies_are_long_thin_strips():
    lay = make_layout(2, 1600, 800, 8.0, profile="needle")
    _, mask, _ = render_labels(lay, 0, 0, 1600, 800)
    comps, n = ndimage.label(mask)
    big = [i for i in range(1, n + 1) if (comps == i).sum() > 2000]
    assert big
    for i in big:
        ys, xs = np.nonzero(comps == i)
        ev = np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))
        assert np.sqrt(ev[1] / ev[0]) > 4, np.sqrt(ev[1] / ev[0])  # long axis / short axis


def test_adipose_fades_at_low_resolution_and_stays_tissue():
    for mpp, floor in ((2.0, 200), (8.0, 215)):
        lay = make_layout(3, 600, 450, mpp, profile="adipose")
        rgb, mask, lab = render_labels(lay, 0, 0, 600, 450)
        fat = lab == 2
        assert fat.sum() > 2000 and (mask[fat] == 1).all()
        assert rgb[fat].mean() > floor


def test_profile_names_are_checked():
    assert check_profile("he") == "he" and check_profile("all") == "all"
    assert check_profile("pen, ihc,needle") == "ihc,needle,pen"  # vocabulary order
    assert check_profile(["tma", "dust"]) == "tma,dust"
    with pytest.raises(ConfigError, match="did you mean 'trichrome'"):
        check_profile("trichrom")
    with pytest.raises(ConfigError, match="whole profile"):
        check_profile("he,pen")
    with pytest.raises(ConfigError, match="empty"):
        check_profile(" , ")
    with pytest.raises(ConfigError, match="did you mean"):
        render_region(0, 0, 0, 8, 8, width=64, height=64, profile="needles")
    lay = make_layout(0, 64, 64, profile="ihc,needle")
    assert lay.categories == ("ihc", "needle", "bg-white") and lay.profile == "ihc,needle"


def test_variety_jpeg_matches_a_real_encoder():
    Image = pytest.importorskip("PIL.Image")
    import io

    from gigaseg.synth import _jpeg

    rgb, _ = render_region(0, 0, 0, 256, 192, width=W, height=H)
    for q in (25, 60, 90):
        ours = _jpeg.roundtrip(rgb, q).astype(int)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=q, subsampling=2)
        real = np.asarray(Image.open(buf)).astype(int)
        assert abs(np.abs(ours - rgb).mean() - np.abs(real - rgb).mean()) < 0.3
        assert np.abs(ours - real).mean() < 1.0  # libjpeg's smooth chroma upsampling aside


def test_variety_profile_through_write_slide_prepare_and_cli(tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    from gigaseg.cli import main
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    prof = "ihc,needle,jpeg,pen"
    rgb, mask = render_region(1, 0, 0, 320, 256, width=320, height=256, mpp=2.0, profile=prof)
    _, mpath = write_slide(tmp_path / "v.tiff", width=320, height=256, seed=1, mpp=2.0, progress=False,
                           profile=prof)
    assert np.array_equal(tifffile.imread(mpath), mask)
    store = RegionStore.create(tmp_path / "st")
    (region,) = prepare_synthetic(store, 1, (320, 256), seed=1, mpp=2.0, progress=False, profile=prof)
    assert region.meta["source"]["profile"] == prof
    assert region.meta["source"]["categories"] == ["ihc", "needle", "bg-white", "jpeg", "pen"]
    assert np.array_equal(np.asarray(region.image), rgb) and np.array_equal(np.asarray(region.mask), mask)
    out = tmp_path / "c.tiff"
    assert main(["synth", str(out), "--width", "320", "--height", "256", "--seed", "1", "--mpp", "2",
                 "--profile", "pen,ihc,needle,jpeg", "--no-progress"]) == 0
    cfg = json.loads((tmp_path / "c.json").read_text())
    assert cfg["profile"] == "pen,ihc,needle,jpeg" and cfg["categories"][:2] == ["ihc", "needle"]
    capsys.readouterr()
    assert main(["synth", str(tmp_path / "d.tiff"), "--width", "64", "--height", "64", "--seed", "1",
                 "--profile", "needel"]) == 2
    assert "did you mean 'needle'" in capsys.readouterr().err


def test_gallery_is_deterministic_and_complete():
    """scripts/synth_gallery.py: every category has a tile; two renders are identical."""
    pytest.importorskip("PIL")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "synth_gallery.py"
    spec = importlib.util.spec_from_file_location("synth_gallery", path)
    gallery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gallery)
    assert {t[0] for t in gallery.TILES} == set(CATEGORIES)
    a = gallery.build(48, 36)
    synth.clear_caches()  # rebuilt from nothing, the same
    b = gallery.build(48, 36)
    assert a.shape[2] == 3 and np.array_equal(a, b)


def test_sharp_edges_stain_the_rim_and_keep_the_mask():
    # NOTE [Sharp edges]: the same slide, its tissue stained to the outline instead of fading in
    lay = make_layout(95003, 384, 384, 4.0, profile="all")
    rgb, mask, lab = render_labels(lay, 0, 0, 384, 384)
    sharp = synth.with_sharp_edges(lay, 1.0)
    rgb2, mask2, lab2 = render_labels(sharp, 0, 0, 384, 384)
    assert lay.params["pale_min"] < 0.5 and sharp.params["pale_min"] == 1.0
    assert np.array_equal(mask, mask2)  # the label rule is the outline's, not the stain's
    assert (lab == 4).sum() > 100 and not (lab2 == 4).any()  # no faint rim left
    rim = (mask == 1) & ~ndimage.binary_erosion(mask == 1, iterations=3)
    od = lambda im: -np.log(np.maximum(im[rim].astype(float), 1) / 255).sum(1).mean()  # noqa: E731
    assert od(rgb2) > 1.5 * od(rgb)  # the 3-px rim inside the outline is darker
    assert np.array_equal(render_labels(lay, 0, 0, 384, 384)[0], rgb)  # the layout itself is unchanged
    for bad in (0, 1.5, True, "1"):
        with pytest.raises(ConfigError, match="pale_min"):
            synth.with_sharp_edges(lay, bad)
