"""The edge trim (gigaseg/edges.py, NOTE [Edge trim]) and the speck removal (gigaseg/holes.py, NOTE
[Specks]): exactly as the NOTEs say, streamed or whole, in every output of predict_slide, and declared
by the built-in model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import need_real
from PIL import Image
from scipy import ndimage as ndi

import gigaseg
from gigaseg.checkpoint import builtin_model_path, edge_trim, speck_size
from gigaseg.edges import HALO, EdgeTrim, trim_edges
from gigaseg.errors import CheckpointError, ConfigError
from gigaseg.glass import GlassBalanced, SeamField
from gigaseg.holes import drop_specks

ROOT = Path(__file__).resolve().parents[1]
GLASS = np.array([248.0, 246.0, 250.0])


def _od(px: np.ndarray) -> float:
    """NOTE [Edge trim]'s optical density of one pixel against ``GLASS``."""
    return float(np.mean([max(0.0, -np.log10((float(px[c]) + 1) / (GLASS[c] + 1))) for c in range(3)]))


def _simple(m: np.ndarray, y: int, x: int) -> bool:
    """Whether pixel (y, x) of the padded mask ``m`` is simple: its neighbours in the mask form one
    8-connected piece and those outside it one 4-connected piece touching it (counted with scipy)."""
    ring = m[y - 1:y + 2, x - 1:x + 2].copy()
    ring[1, 1] = False
    fg = ndi.label(ring, structure=np.ones((3, 3)))[1]
    bg = ~m[y - 1:y + 2, x - 1:x + 2]
    bg[1, 1] = False
    lab, _ = ndi.label(bg)  # 4-connected
    touching = {int(lab[a, b]) for a, b in ((0, 1), (1, 0), (1, 2), (2, 1)) if lab[a, b]}
    return fg == 1 and len(touching) == 1


def _reference_trim(rgb: np.ndarray, prob: np.ndarray, thr: int, ratio: float) -> np.ndarray:
    """NOTE [Edge trim] pixel by pixel, as written there: the ratio test on the mask as it is, then the
    four passes over the whole grid."""
    h, w = prob.shape
    m = np.pad(prob >= thr, 1)
    out = prob.copy()

    def inner(y: int, x: int) -> bool:  # grid coordinates; outside the grid is outside the mask
        return 0 <= y < h and 0 <= x < w and bool(m[y:y + 3, x:x + 3].all())

    cand = []
    for y in range(h):
        for x in range(w):
            if not m[y + 1, x + 1] or inner(y, x):
                continue
            ods = [_od(rgb[yy, xx]) for yy in range(y - 2, y + 3) for xx in range(x - 2, x + 3) if inner(yy, xx)]
            if ods and _od(rgb[y, x]) < ratio * float(np.mean(ods)):
                cand.append((y, x))
    cur = m.copy()
    for py, px in ((0, 0), (0, 1), (1, 0), (1, 1)):
        now = [(y, x) for y, x in cand if y % 2 == py and x % 2 == px and _simple(cur, y + 1, x + 1)]
        for y, x in now:
            cur[y + 1, x + 1] = False
            out[y, x] = min(out[y, x], thr - 1)
    return out


def _scene(seed: int, h: int = 48, w: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """An image of stained blobs with pale and sharp edges and glass around, and a model's probabilities
    that reach a pixel or two past the blobs in places."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=(h, w)), 2.5)
    tissue = field > np.percentile(field, 50)
    stain = np.clip(ndi.gaussian_filter(tissue.astype(float), rng.uniform(0.3, 1.5)), 0, 1)
    stain *= rng.uniform(0.3, 1.0, size=(h, w))
    rgb = np.clip(GLASS * (1 - 0.6 * stain[..., None] * np.array([0.4, 0.9, 0.5])) + rng.normal(0, 1.5, (h, w, 3)),
                  0, 255).astype(np.uint8)
    grown = ndi.binary_dilation(tissue, iterations=int(rng.integers(0, 3)))
    prob = np.where(grown, rng.integers(128, 256, (h, w)), rng.integers(0, 128, (h, w))).astype(np.uint8)
    prob[0:3, 0:3] = 250  # tissue at the grid's corner and a 1-pixel strand: the edges of the rule
    prob[h // 2, :] = np.maximum(prob[h // 2, :], 200)
    return rgb, prob


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("ratio", [0.4, 0.8])
def test_the_trim_is_the_note(seed, ratio):
    rgb, prob = _scene(seed)
    expected = _reference_trim(rgb, prob, 128, ratio)
    got = prob.copy()
    where = trim_edges(rgb, got, 128, ratio, GLASS)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(where, np.flatnonzero((prob >= 128) & (got < 128)))
    assert where.size > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_rows_pushed_in_any_bands_give_the_whole_grid_s_trim(seed):
    """Bands of 1 row, fewer rows than HALO, or uneven: the same rows out, in order, as the whole grid's."""
    rgb, prob = _scene(seed, h=40)
    whole = prob.copy()
    trim_edges(rgb, whole, 128, 0.5, GLASS, band=10_000)
    rng = np.random.default_rng(seed)
    for sizes in ([1] * 40, [2, HALO - 1, 1, 7, 29], list(rng.integers(1, 9, size=40))):
        trim = EdgeTrim(rgb, 128, 0.5, GLASS)
        out, y = [], 0
        for k in sizes:
            if y >= len(prob):
                break
            out.append(trim.push(prob[y:y + int(k)]))
            y += int(k)
        out.append(trim.finish())
        np.testing.assert_array_equal(np.concatenate(out), whole)
        assert trim.trimmed == int(((whole < 128) & (prob >= 128)).sum())


def test_what_the_trim_drops_and_keeps():
    """A sharp edge's rim a third covered goes; a fading rim, a thin strand and glass-white fat stay."""
    img = np.full((40, 60, 3), 250, np.uint8)
    img[10:30, 5:25] = 120  # tissue stained to its edge ...
    img[10:30, 25] = 210  # ... and its rim a third covered
    img[10:30, 35:55] = 120  # tissue fading out over 4 pixels
    for k, v in enumerate((150, 180, 200, 215)):
        img[10:30, 55 - 4 + k] = v
    prob = np.zeros((40, 60), np.uint8)
    prob[10:30, 5:26] = 200
    prob[10:30, 35:55] = 200
    prob[35, 5:55] = 200  # a strand one pixel wide, as pale as the glass
    got = prob.copy()
    trim_edges(img, got, 128, 0.4, [250, 250, 250])
    assert (got[10:30, 25] < 128).all() and (got[11:29, 24] >= 128).all()
    assert (got[11:29, 51:55] >= 128).all()
    assert (got[35, 5:55] >= 128).all()
    white = np.full((20, 20, 3), 250, np.uint8)  # a mask on glass-white pixels (fat cells): nothing to compare
    p = np.full((20, 20), 200, np.uint8)
    assert trim_edges(white, p, 128, 0.4, [250, 250, 250]).size == 0
    assert trim_edges(img, prob.copy(), 128, 0.0).size == 0  # ratio 0: no trim


def test_the_trim_never_opens_a_hole_or_cuts_a_piece():
    """A pale wall two pixels thick between a hole and the glass: both its pixels pass the ratio test,
    but only one may go, so the hole stays closed (and fills) and the piece stays whole."""
    img = np.full((44, 44, 3), 250, np.uint8)
    img[5:36, 5:36] = 120
    img[18:22, 30:34] = 250  # the hole
    img[18:22, 34:36] = 232  # its pale wall to the glass
    prob = np.zeros((44, 44), np.uint8)
    prob[5:36, 5:36] = 200
    prob[18:22, 30:34] = 40
    got = prob.copy()
    trim_edges(img, got, 128, 0.4, [250, 250, 250])
    assert (got[18:22, 34:36] < 128).any() and (got[18:22, 35] >= 128).all()
    lab, n = ndi.label(got < 128)
    assert n == 2 and lab[20, 31] != lab[0, 0]  # the hole apart from the glass
    assert ndi.label(got >= 128, structure=np.ones((3, 3)))[1] == 1
    np.testing.assert_array_equal(got, _reference_trim_gray(img, prob))


def _reference_trim_gray(img: np.ndarray, prob: np.ndarray) -> np.ndarray:
    global GLASS
    saved, GLASS = GLASS, np.array([250.0, 250.0, 250.0])
    try:
        return _reference_trim(img, prob, 128, 0.4)
    finally:
        GLASS = saved


def test_a_hole_is_measured_and_filled_as_the_model_made_it():
    """A hole just under the width whose pale rim the trim drops: the hole filling counts the trimmed
    pixels as tissue, so the hole is still under the width, and fills it with its rim."""
    from gigaseg.holes import fill_holes

    img = np.full((40, 40, 3), 120, np.uint8)
    img[14:25, 14:25] = 250  # the hole, 11 pixels across ...
    img[13, 13:26] = img[25, 13:26] = 235  # ... in a pale rim
    img[13:26, 13] = img[13:26, 25] = 235
    prob = np.full((40, 40), 200, np.uint8)
    prob[14:25, 14:25] = 30
    got = prob.copy()
    where = trim_edges(img, got, 128, 0.4, [250, 250, 250])
    assert where.size > 0 and (got[13, 14:25] < 128).any()  # the rim trimmed: the hole now 13 across
    plain = got.copy()
    assert fill_holes(plain, 128, 12)["filled"] == 0
    r = fill_holes(got, 128, 12, where)
    assert r["filled"] == 1 and r["restored"] == where.size
    assert r["filled_pixels"] == 121 + where.size and (got >= 128).all()


def test_a_balanced_record_is_read_pixel_by_pixel_as_sliced():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    seams = SeamField((20,), (33, 50), rng.uniform(0.93, 1.07, (2, 3, 3)).astype(np.float32))
    for balanced in (GlassBalanced(img, np.array([1.1, 1.05, 1.2])), GlassBalanced(img, np.ones(3), seams),
                     GlassBalanced(img, np.array([1.2, 1.0, 1.1]), seams)):
        rows, cols = rng.integers(0, 50, 500), rng.integers(0, 70, 500)
        np.testing.assert_array_equal(balanced.at(rows, cols), balanced[:, :][rows, cols])


def _reference_specks(prob: np.ndarray, thr: int, min_px: float, reach: float) -> np.ndarray:
    """NOTE [Specks] on the whole grid, as written there."""
    out = prob.copy()
    lab, n = ndi.label(prob >= thr, structure=np.ones((3, 3)))
    sizes = np.bincount(lab.ravel())
    big = np.isin(lab, [i for i in range(1, n + 1) if sizes[i] >= min_px])
    dist = ndi.distance_transform_edt(~big) if big.any() else np.full(prob.shape, np.inf)
    for i in range(1, n + 1):
        if sizes[i] < min_px and dist[lab == i].min() > reach:
            out[lab == i] = np.minimum(out[lab == i], thr - 1)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_px,reach", [(10, 0), (30, 5), (30, 12.5), (200, 3)])
def test_specks_are_dropped_as_the_note_says(seed, min_px, reach):
    rng = np.random.default_rng(seed)
    prob = np.where(ndi.gaussian_filter(rng.normal(size=(90, 110)), 1.5) > 0.35, 200, 40).astype(np.uint8)
    expected = _reference_specks(prob, 128, min_px, reach)
    got = prob.copy()
    result = drop_specks(got, 128, min_px, reach)
    np.testing.assert_array_equal(got, expected)
    assert result["dropped_pixels"] == int(((prob >= 128) & (got < 128)).sum())
    assert result["dropped"] == len(result["boxes"]) and result["pieces"] >= result["dropped"]


def test_a_speck_near_tissue_stays_one_far_from_it_goes():
    prob = np.zeros((100, 100), np.uint8)
    prob[10:40, 10:40] = 200  # tissue, 900 pixels
    prob[20:23, 45:48] = 200  # a bit 6 pixels from it
    prob[80:83, 80:83] = 200  # a speck far away
    got = prob.copy()
    r = drop_specks(got, 128, 625, 25)
    assert r == {"pieces": 3, "dropped": 1, "dropped_pixels": 9, "boxes": [(80, 80, 83, 83)]}
    assert (got[20:23, 45:48] >= 128).all() and (got[80:83, 80:83] < 128).all()
    assert drop_specks(prob.copy(), 128, 0, 25)["dropped"] == 0  # 0: none


def test_the_builtin_model_declares_its_trim_and_speck_size(tmp_path):
    model, _ = gigaseg.load_model()
    assert edge_trim(model) == 0.4 and speck_size(model) == 100.0
    plain = gigaseg.UNet(gigaseg.preset("tiny"))
    assert edge_trim(plain) == 0.0 and speck_size(plain) == 0.0
    sys.path.insert(0, str(ROOT / "scripts" / "tissue_model"))
    import ship

    path = tmp_path / "w.npz"
    shutil.copy(builtin_model_path(), path)
    assert ship.main(["--update", str(path), "--edge-trim", "0.25", "--drop-specks", "50"]) == 0
    loaded = gigaseg.load_model(path)[0]
    assert edge_trim(loaded) == 0.25 and speck_size(loaded) == 50.0
    with np.load(path) as z:
        meta = json.loads(z["__meta__"].item().decode())
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    for key, bad_value in (("edge_trim", 1.5), ("edge_trim", "0.4"), ("drop_specks_um", -1)):
        bad = tmp_path / "bad.npz"
        np.savez(bad, __meta__=np.array(json.dumps({**meta, key: bad_value}).encode()), **arrays)
        with pytest.raises(CheckpointError, match=key):
            gigaseg.load_model(bad)


def _slide(tmp_path: Path) -> Path:
    from gigaseg.synth import render_region

    rgb, _ = render_region(11, 0, 0, 360, 300, width=360, height=300, mpp=4.0,
                           profile="he-wide,fragments,bg-white,dust")
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, rgb)
    return path


def test_predict_trims_and_drops_specks_in_every_output_and_says_so(tmp_path):
    """The mask TIFF (written while the model runs), the probabilities TIFF and the summary agree with
    the trim applied to the model's own probabilities; 0 turns each off."""
    path = _slide(tmp_path)
    net, mpp = gigaseg.load_model()
    probs = gigaseg.predict_slide((net, mpp), path, tmp_path / "p", mpp=4.0, progress=False, edge_trim=0,
                                  drop_specks=0, component_filter=False, fill_holes=0, probabilities=True)
    assert probs["edge_trim"] is None and probs["specks_dropped"] is None
    raw = tifffile.imread(probs["paths"]["mask"])
    rgb = tifffile.imread(path)
    expected = raw.copy()
    n = trim_edges(np.asarray(gigaseg.glass.balance_for(net, rgb)[:, :]), expected, 128, 0.4,
                   gigaseg.glass.balance_for(net, rgb).glass).size
    assert n > 0
    for probabilities in (False, True):
        s = gigaseg.predict_slide((net, mpp), path, tmp_path / f"on-{probabilities}", mpp=4.0, progress=False,
                                  component_filter=False, fill_holes=0, drop_specks=0, probabilities=probabilities)
        assert s["edge_trim"] == {"ratio": 0.4, "trimmed_pixels_model_res": n}
        mask = tifffile.imread(s["paths"]["mask"])
        np.testing.assert_array_equal(mask >= 128, expected >= 128)
        assert s["tissue_pixels_model_res"] == int((expected >= 128).sum())
    for bad in ({"edge_trim": 1.5}, {"edge_trim": -0.1}, {"drop_specks": -5}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            gigaseg.predict_slide((net, mpp), path, tmp_path / "bad", mpp=4.0, progress=False, **bad)


def test_predict_drops_specks_far_from_tissue(tmp_path):
    img = np.full((300, 300, 3), 244, np.uint8)
    img[40:160, 40:160] = [170, 90, 160]  # tissue
    img[100:116, 172:188] = [150, 70, 140]  # a bit 12 pixels (48 um) from it
    img[240:256, 240:256] = [150, 70, 140]  # a speck, 64 x 64 um, far from it
    Image.fromarray(img).save(tmp_path / "t.png")
    net, mpp = gigaseg.load_model()
    kw = {"mpp": 4.0, "progress": False, "edge_trim": 0, "component_filter": False, "fill_holes": 0}
    off = gigaseg.predict_slide((net, mpp), tmp_path / "t.png", tmp_path / "off", drop_specks=0, **kw)
    before = tifffile.imread(off["paths"]["mask"]) > 0
    assert before[248, 248] and before[108, 180] and off["pieces"] == 3
    on = gigaseg.predict_slide((net, mpp), tmp_path / "t.png", tmp_path / "on", **kw)
    d = on["specks_dropped"]
    assert d["size_um"] == 100.0 and d["pieces"] == 3 and d["dropped"] == 1
    after = tifffile.imread(on["paths"]["mask"]) > 0
    assert not after[230:270, 230:270].any() and after[108, 180]
    assert int((before & ~after).sum()) == d["dropped_pixels_model_res"]
    assert on["tissue_pixels_model_res"] == off["tissue_pixels_model_res"] - d["dropped_pixels_model_res"]


def test_the_trim_is_the_same_in_orientations(tmp_path):
    """With --orientations the rows are trimmed as they are written too: the mask agrees with its
    probabilities and the summary's counts."""
    path = _slide(tmp_path)
    s = gigaseg.predict_slide(None, path, tmp_path / "o", mpp=4.0, progress=False, orientations=2,
                              probabilities=True)
    assert s["edge_trim"]["trimmed_pixels_model_res"] > 0
    assert s["tissue_pixels_model_res"] == int((tifffile.imread(s["paths"]["mask"]) >= 128).sum())


def test_the_cli_takes_a_trim_and_a_speck_size(tmp_path):
    from gigaseg.cli import main

    img = np.full((96, 96, 3), 240, np.uint8)
    img[20:76, 20:76] = [170, 90, 160]
    Image.fromarray(img).save(tmp_path / "t.png")
    assert main(["predict", str(tmp_path / "t.png"), "--mpp", "4", "--out", str(tmp_path / "a"), "--no-progress",
                 "--edge-trim", "0", "--drop-specks", "0"]) == 0
    s = json.loads((tmp_path / "a" / "t.json").read_text())
    assert s["edge_trim"] is None and s["specks_dropped"] is None
    assert main(["predict", str(tmp_path / "t.png"), "--mpp", "4", "--out", str(tmp_path / "b"), "--no-progress",
                 "--edge-trim", "0.3", "--drop-specks", "40"]) == 0
    s = json.loads((tmp_path / "b" / "t.json").read_text())
    assert s["edge_trim"]["ratio"] == 0.3 and s["specks_dropped"]["size_um"] == 40.0
    for bad in (["--edge-trim", "2"], ["--drop-specks", "-1"]):
        with pytest.raises(SystemExit):
            main(["predict", str(tmp_path / "t.png"), "--mpp", "4", "--out", str(tmp_path / "c"), *bad])


def test_the_builtin_model_beats_both_baselines_on_both_shared_real_slides(tmp_path, real_data):
    """Issue 18's real-slide targets: CMU-1-Small-Region >= 0.96, kidney-48-5 >= 0.93, each above Otsu and
    saturation against its careful reference."""
    from gigaseg.baseline import baseline_slide
    from gigaseg.metrics import evaluate_pair

    for rel, mpp, name, target in (("slides/CMU-1-Small-Region.svs", None, "CMU-1-Small-Region", 0.96),
                                   ("slides/kidney-48-5.tif", 8.0, "kidney-48-5", 0.93)):
        slide, ref = real_data / rel, real_data / "masks" / f"{name}.reference.png"
        need_real(slide, ref)
        s = gigaseg.predict_slide(None, slide, tmp_path / name, mpp=mpp, progress=False)
        model = evaluate_pair(s["paths"]["mask"], ref)["dice"]
        assert model >= target, (name, model)
        for method in ("otsu", "saturation"):
            b = baseline_slide(slide, tmp_path / f"{name}-{method}", method=method, mpp=mpp)
            assert model > evaluate_pair(b["paths"]["mask"], ref)["dice"], (name, method)
