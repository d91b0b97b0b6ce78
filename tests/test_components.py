"""The component filter (gigaseg/components.py, NOTE [Component filter])."""

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
from gigaseg.checkpoint import builtin_model_path, component_filter
from gigaseg.components import FEATURES, ComponentFilter, apply_component_filter, component_features
from gigaseg.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _scene(seed: int = 0, h: int = 300, w: int = 260):
    """Glass with a textured stained blob (tissue), a smooth grey patch (a smear) and specks, and
    probabilities that call all of them tissue."""
    rng = np.random.default_rng(seed)
    rgb = np.clip(rng.normal(248, 1.5, (h, w, 3)), 0, 255)
    yy, xx = np.mgrid[:h, :w]
    blob = (yy - 80) ** 2 + (xx - 90) ** 2 < 45 ** 2
    rgb[blob] = np.clip(rng.normal([180, 120, 190], 25, (int(blob.sum()), 3)), 0, 255)  # pink-purple, textured
    smear = (np.abs(yy - 210) < 30) & (np.abs(xx - 170) < 50)
    rgb[smear] = 238  # grey, flat
    rgb[5:8, 250:253] = 90  # a speck at the image's edge
    rgb = rgb.astype(np.uint8)
    prob = np.where(blob | smear, 230, 20).astype(np.uint8)
    prob[5:8, 250:253] = 140
    prob[100:103, 20:22] = 129  # a faint one
    return rgb, prob, blob, smear


def _reference_features(rgb: np.ndarray, prob: np.ndarray, thr: int) -> np.ndarray:
    """NOTE [Component filter]'s features computed on the whole image at once, as written there."""
    from gigaseg.glass import glass_colour

    mask = prob >= thr
    lab, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    g = glass_colour(rgb)
    od = np.maximum(-np.log10((rgb.astype(np.float64) + 1) / (g + 1)), 0)
    odm = od.mean(axis=2)
    t = np.abs(odm - ndi.gaussian_filter(odm, 1.5))
    near = ndi.maximum_filter(lab, size=13)
    ring = np.where(mask, 0, near)
    glass = (near == 0)[::4, ::4]
    t_glass = float(np.median(t[::4, ::4][glass])) if glass.any() else 1e-3
    f = rgb.astype(np.float64)
    sat = (f.max(axis=2) - f.min(axis=2)) / np.maximum(f.max(axis=2), 1)
    rows = []
    for i, box in enumerate(ndi.find_objects(lab), start=1):
        c, r = lab == i, ring == i
        odc = np.array([od[..., k][c].mean() for k in range(3)])
        od_mean = odc.mean()
        hue = odc.max() - odc.min()
        ring_od = odm[r].mean() if r.any() else 0.0
        ring_t = t[r].mean() if r.any() else t_glass
        bbox = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
        rows.append([np.log10(c.sum()), (prob[c] / 255).mean(), (prob[c] >= 230).mean(), od_mean, hue,
                     hue / (od_mean + 0.01), sat[c].mean(), np.log((t[c].mean() + 1e-4) / (t_glass + 1e-4)),
                     od_mean - ring_od, c.sum() / bbox, np.log((ring_t + 1e-4) / (t_glass + 1e-4))])
    return np.array(rows).reshape(n, len(FEATURES))


@pytest.mark.parametrize("band,workers", [(512, 1), (37, 2), (7, 3)])
def test_features_are_the_notes_whatever_the_bands(band, workers):
    rgb, prob, _, _ = _scene()
    labels, n, feats = component_features(rgb, prob, 128, band=band, workers=workers)
    assert n == 4 and labels.dtype == np.int32 and feats.shape == (4, len(FEATURES))
    np.testing.assert_allclose(feats, _reference_features(rgb, prob, 128), rtol=1e-5, atol=1e-6)


def test_no_component_no_features():
    rgb, prob, _, _ = _scene()
    labels, n, feats = component_features(rgb, np.zeros_like(prob), 128)
    assert n == 0 and feats.shape == (0, len(FEATURES)) and not labels.any()
    with pytest.raises(ConfigError, match="differ in size"):
        component_features(rgb[:10], prob, 128)


def _texture_filter() -> ComponentFilter:
    """Keeps a component whose texture is above the glass's by more than log(3): tissue, not a flat smear."""
    k = FEATURES.index("texture")
    coef = tuple(1.0 if i == k else 0.0 for i in range(len(FEATURES)))
    return ComponentFilter(mean=(0.0,) * len(FEATURES), scale=(1.0,) * len(FEATURES), coef=coef, bias=-np.log(3))


def test_a_dropped_component_falls_just_below_the_threshold():
    rgb, prob, blob, smear = _scene()
    before = prob.copy()
    out = apply_component_filter(rgb, prob, 128, _texture_filter(), band=50)
    assert out["components"] == 4 and out["dropped"] >= 1 and out["dropped_pixels"] >= smear.sum()
    big = out["dropped_pieces"][0]  # the largest dropped piece is the smear, its box on the grid
    assert big["box"] == [181, 121, 240, 220] and big["pixels"] == smear.sum()  # |y - 210| < 30, |x - 170| < 50
    assert (prob[smear] == 127).all()  # capped at thr - 1: below the threshold, the rest of its story kept
    np.testing.assert_array_equal(prob[blob], before[blob])  # the textured blob is kept as it was
    assert (prob[before < 128] == before[before < 128]).all()  # background untouched
    same = before.copy()
    out = apply_component_filter(rgb, same, 0, _texture_filter())
    assert out["dropped"] == out["dropped_pixels"] == 0
    np.testing.assert_array_equal(same, before)  # threshold 0: every pixel is tissue, nothing to drop


def test_a_filter_round_trips_and_a_damaged_one_is_refused():
    f = _texture_filter()
    assert ComponentFilter.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    d = f.to_dict()
    with pytest.raises(ConfigError, match="features"):
        ComponentFilter.from_dict({**d, "features": ["area"]})
    with pytest.raises(ConfigError, match="finite"):
        ComponentFilter.from_dict({**d, "coef": [float("nan")] * len(FEATURES)})
    with pytest.raises(ConfigError, match="positive"):
        ComponentFilter.from_dict({**d, "scale": [0.0] * len(FEATURES)})
    with pytest.raises(ConfigError, match="damaged"):
        ComponentFilter.from_dict({k: v for k, v in d.items() if k != "bias"})
    with pytest.raises(ConfigError, match="dict"):
        ComponentFilter.from_dict([1, 2])


def _ship():
    sys.path.insert(0, str(ROOT / "scripts" / "tissue_model"))
    try:
        import ship
    finally:
        sys.path.pop(0)
    return ship


def test_a_weights_file_carries_its_filter(tmp_path):
    path = tmp_path / "w.npz"
    shutil.copy(builtin_model_path(), path)
    _ship().with_filter(path, _texture_filter())
    model, _ = gigaseg.load_model(path)
    assert component_filter(model) == _texture_filter()
    with np.load(builtin_model_path()) as a, np.load(path) as b:  # the weights themselves unchanged
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__meta__")
    # a damaged filter: the file is named, nothing is guessed
    with np.load(path) as z:
        meta = json.loads(z["__meta__"].item().decode())
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    meta["component_filter"]["coef"] = meta["component_filter"]["coef"][:3]
    bad = tmp_path / "bad.npz"
    np.savez(bad, __meta__=np.array(json.dumps(meta).encode()), **arrays)
    with pytest.raises(CheckpointError, match="bad.npz"):
        gigaseg.load_model(bad)


def test_the_builtin_model_has_a_filter():
    model, _ = gigaseg.load_model()
    assert isinstance(component_filter(model), ComponentFilter)


def test_predict_drops_what_the_filter_drops_and_says_so(tmp_path):
    """A filter that drops every component: the mask TIFF (written again), the probabilities, the
    GeoJSON and the summary all agree; without the filter the same slide has tissue."""
    from gigaseg.synth import render_region

    rgb, _ = render_region(5, 0, 0, 400, 400, width=400, height=400, mpp=4.0, profile="he-wide,sections,bg-white")
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, rgb)
    net, mpp = gigaseg.load_model()
    net.gigaseg_fill_holes_um = 0.0  # holes as the model leaves them: the filter's pixels alone (NOTE [Hole filling])
    plain = gigaseg.predict_slide((net, mpp), path, tmp_path / "plain", mpp=4.0, progress=False,
                                  component_filter=False)
    assert plain["component_filter"] is None and plain["tissue_fraction"] > 0.05
    overlay = np.asarray(Image.open(plain["paths"]["overlay"]).convert("RGB"))
    assert not (overlay == (220, 0, 220)).all(axis=-1).any()  # no box where nothing was dropped
    kept = gigaseg.predict_slide((net, mpp), path, tmp_path / "kept", mpp=4.0, progress=False)
    assert kept["component_filter"]["components"] >= 1
    assert kept["tissue_pixels_model_res"] + kept["component_filter"]["dropped_pixels_model_res"] == \
        plain["tissue_pixels_model_res"]
    n = len(FEATURES)
    net.gigaseg_component_filter = ComponentFilter(mean=(0.0,) * n, scale=(1.0,) * n, coef=(0.0,) * n, bias=-1.0)
    for probabilities in (False, True):
        out = tmp_path / f"none-{probabilities}"
        s = gigaseg.predict_slide((net, mpp), path, out, mpp=4.0, progress=False, probabilities=probabilities)
        f = s["component_filter"]
        assert f["dropped"] == f["components"] >= 1 and f["dropped_pixels_model_res"] == \
            plain["tissue_pixels_model_res"]
        # each dropped piece listed, largest first, with its box in level-0 pixels (here the grid's)
        sizes = [p["pixels_model_res"] for p in f["dropped_pieces"]]
        assert len(sizes) == f["dropped"] and sizes == sorted(sizes, reverse=True) and sum(sizes) == \
            f["dropped_pixels_model_res"]
        assert all(0 <= b[0] < b[2] <= 400 and 0 <= b[1] < b[3] <= 400
                   for b in (p["box_level0"] for p in f["dropped_pieces"]))
        assert s["tissue_pixels_model_res"] == 0 and s["tissue_fraction"] == 0
        mask = tifffile.imread(s["paths"]["mask"])
        assert mask.max() < 128 if probabilities else mask.max() == 0
        assert mask.max() > 0 if probabilities else True  # the probabilities below the threshold are kept
        assert json.loads(Path(s["paths"]["geojson"]).read_text())["features"] == []
        overlay = np.asarray(Image.open(s["paths"]["overlay"]).convert("RGB"))
        assert (overlay == (220, 0, 220)).all(axis=-1).any()  # the dropped pieces boxed in magenta


def test_the_cli_turns_the_filter_off(tmp_path):
    from PIL import Image

    from gigaseg.cli import main

    img = np.full((64, 64, 3), 240, np.uint8)
    img[20:40, 20:40] = [170, 90, 160]
    Image.fromarray(img).save(tmp_path / "t.png")
    assert main(["predict", str(tmp_path / "t.png"), "--mpp", "8", "--out", str(tmp_path / "a"), "--no-progress",
                 "--no-component-filter"]) == 0
    assert json.loads((tmp_path / "a" / "t.json").read_text())["component_filter"] is None
    assert main(["predict", str(tmp_path / "t.png"), "--mpp", "8", "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "b" / "t.json").read_text())["component_filter"] is not None


@pytest.mark.parametrize("orientations", [1, 2])
@pytest.mark.parametrize("exposure", [1.0, 1.25])
def test_what_the_model_reads_is_recorded_whole(orientations, exposure):
    """predict_slide keeps the slide's pixels that the model read for the filter (not reading the
    slide twice): every pixel of the grid is recorded, in every orientation path, and the model's
    output is the same as without the record (its glass balanced once, not twice)."""
    from gigaseg.engine import tiled_predict
    from gigaseg.glass import GlassBalanced, balance_for
    from gigaseg.predict import _recorded
    from gigaseg.synth import render_region

    rgb, _ = render_region(2, 0, 0, 500, 300, width=500, height=300, mpp=4.0, profile="he-wide,sections,bg-grey")
    rgb = np.clip(rgb * exposure, 0, 255).astype(np.uint8)  # 1.25: glass white enough to be read as it is
    net, _ = gigaseg.load_model()
    image = balance_for(net, rgb)  # as predict_slide has it
    assert isinstance(image, GlassBalanced) == (exposure == 1.0)  # 1.25: glass of 255
    record = np.zeros_like(rgb)
    seen = _recorded(image, record, balanced=True)
    assert isinstance(seen, GlassBalanced)  # the balance is not estimated again
    p = tiled_predict(net, seen, tile=128, orientations=orientations)  # several tiles
    np.testing.assert_array_equal(record, rgb)
    np.testing.assert_array_equal(p, tiled_predict(net, image, tile=128, orientations=orientations))


def test_a_grid_too_large_to_label_is_predicted_without_the_filter_and_says_so(tmp_path, monkeypatch):
    import gigaseg._files

    img = np.full((64, 64, 3), 240, np.uint8)
    img[20:40, 20:40] = [170, 90, 160]
    tifffile.imwrite(tmp_path / "t.tif", img)
    # a row of tiles fits, twice 5 bytes per pixel do not
    monkeypatch.setattr(gigaseg._files, "available_memory", lambda: 100_000)
    skipped = "component filter, speck removal and hole filling skipped"
    with pytest.warns(UserWarning, match=skipped):
        s = gigaseg.predict_slide(None, tmp_path / "t.tif", tmp_path / "out", mpp=8.0, progress=False)
    assert s["component_filter"] is None and s["holes_filled"] is None and s["specks_dropped"] is None
    assert any(skipped in w for w in s["warnings"])
    # the filter and the specks off: the hole filling alone is skipped
    with pytest.warns(UserWarning, match="^(?!.*component filter)(?!.*speck).*: hole filling skipped"):
        s = gigaseg.predict_slide(None, tmp_path / "t.tif", tmp_path / "out2", mpp=8.0, progress=False,
                                  component_filter=False, drop_specks=0)


def test_the_builtin_filter_never_lowers_a_shared_real_slide(tmp_path, real_data):
    """On both shared real slides the built-in model's filter keeps or raises the Dice against the
    careful reference: it keeps CMU-1-Small-Region's pieces, and drops kidney-48-5's smear, not its tissue."""
    import warnings

    from gigaseg.metrics import evaluate_pair

    for name, rel, mpp in (("CMU-1-Small-Region", "slides/CMU-1-Small-Region.svs", None),
                           ("kidney-48-5", "slides/kidney-48-5.tif", 8.0)):
        slide, ref = real_data / rel, real_data / "masks" / f"{name}.reference.png"
        need_real(slide, ref)
        dice = {}
        for on in (False, True):
            s = gigaseg.predict_slide(None, slide, tmp_path / f"{name}-{on}", mpp=mpp, progress=False,
                                      component_filter=on)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ev = evaluate_pair(s["paths"]["mask"], ref)
            dice[on] = ev["dice"]
            if on:
                assert ev["recall"] > 0.9, (name, ev["recall"])  # the tissue stays
        assert dice[True] >= dice[False] - 1e-9, (name, dice)
