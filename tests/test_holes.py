"""Hole filling (gigaseg/holes.py, NOTE [Hole filling]): holes of the mask narrower than a width made
tissue, exactly as the NOTE says, in every output of predict_slide, and declared by the built-in model."""

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
from gigaseg.checkpoint import builtin_model_path, hole_width
from gigaseg.errors import CheckpointError, ConfigError
from gigaseg.holes import fill_holes

ROOT = Path(__file__).resolve().parents[1]


def _reference(prob: np.ndarray, thr: int, width: float) -> np.ndarray:
    """NOTE [Hole filling] on the whole grid at once, as written there."""
    out = prob.copy()
    lab, n = ndi.label(prob < thr)
    edge = set(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]).tolist())
    for i in range(1, n + 1):
        if i in edge:
            continue
        hole = lab == i
        d = ndi.distance_transform_edt(np.pad(hole, 1)).max()
        if 2 * d - 1 < width:
            out[hole] = np.maximum(out[hole], thr)
    return out


def _scene(seed: int, h: int = 120, w: int = 150) -> np.ndarray:
    """Probabilities of blobs of tissue with holes of many sizes and shapes, some at the edge."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=(h, w)), 3)
    prob = np.where(field > np.percentile(field, 35), 200, 60).astype(np.uint8)
    prob[rng.random((h, w)) < 0.01] = rng.integers(0, 128)  # specks of background inside the tissue
    yy, xx = np.mgrid[:h, :w]
    prob[(yy - h // 2) ** 2 / 9 + (xx - w // 2) ** 2 < 20 ** 2] = 230  # tissue with a long thin hole
    prob[h // 2 - 1:h // 2 + 1, w // 2 - 15:w // 2 + 15] = 10
    return prob


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("width", [1.5, 3, 8, 25])
def test_holes_are_filled_as_the_note_says(seed, width):
    prob = _scene(seed)
    expected = _reference(prob, 128, width)
    got = prob.copy()
    result = fill_holes(got, 128, width)
    np.testing.assert_array_equal(got, expected)
    changed = (got != prob)
    assert result["filled_pixels"] == int(((prob < 128) & (got >= 128)).sum()) == int(changed.sum())
    assert result["filled"] <= result["holes"]
    assert np.all(got[changed] == 128)  # raised to the threshold, no further


def test_widths_and_the_edge():
    prob = np.full((60, 80), 220, np.uint8)
    prob[10:13, 10:40] = 0  # 3 pixels wide: width 3
    prob[20:24, 10:40] = 5  # 4 pixels wide: width 3 (even widths count one less)
    prob[30:35, 10:40] = 9  # 5 pixels wide
    prob[40:60, 50:60] = 0  # open to the bottom edge: not a hole
    for width, filled in ((3, set()), (3.5, {3, 4}), (5, {3, 4}), (5.5, {3, 4, 5})):
        p = prob.copy()
        r = fill_holes(p, 128, width)
        assert r["holes"] == 3
        got = {k for k, (y0, y1) in {3: (10, 13), 4: (20, 24), 5: (30, 35)}.items() if (p[y0:y1, 10:40] >= 128).all()}
        assert got == filled, width
        assert (p[40:60, 50:60] == 0).all()
    p = prob.copy()
    assert fill_holes(p, 128, 0) == {"holes": 3, "filled": 0, "filled_pixels": 0, "restored": 0, "boxes": []}
    assert (p == prob).all()


def test_a_memmap_is_filled_in_place(tmp_path):
    prob = _scene(3)
    mm = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.uint8, shape=prob.shape)
    mm[:] = prob
    fill_holes(mm, 128, 8)
    mm.flush()
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), _reference(prob, 128, 8))


def test_the_builtin_model_declares_the_definitions_width(tmp_path):
    model, _ = gigaseg.load_model()
    assert hole_width(model) == 100.0  # SOURCES.md: holes under about 100 um inside tissue are tissue
    assert hole_width(gigaseg.UNet(gigaseg.preset("tiny"))) == 0.0
    sys.path.insert(0, str(ROOT / "scripts" / "tissue_model"))
    import ship

    path = tmp_path / "w.npz"
    shutil.copy(builtin_model_path(), path)
    ship.with_holes(path, 40)
    assert hole_width(gigaseg.load_model(path)[0]) == 40.0
    with np.load(builtin_model_path()) as a, np.load(path) as b:  # the weights themselves unchanged
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__meta__")
    with np.load(path) as z:
        meta = json.loads(z["__meta__"].item().decode())
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
    for bad_value in (-1, "100", float("nan")):
        meta["fill_holes_um"] = bad_value
        bad = tmp_path / "bad.npz"
        np.savez(bad, __meta__=np.array(json.dumps(meta).encode()), **arrays)
        with pytest.raises(CheckpointError, match="bad.npz"):
            gigaseg.load_model(bad)


def test_predict_fills_holes_in_every_output_and_says_so(tmp_path):
    """The built-in model on a synthetic slide with lumens: with its 100 um the mask TIFF, the
    probabilities TIFF, the GeoJSON and the summary agree, and differ from the mask without by the
    filled pixels."""
    from gigaseg.synth import render_region

    rgb, _ = render_region(7, 0, 0, 400, 400, width=400, height=400, mpp=4.0, profile="he-wide,sections,bg-white")
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, rgb)
    net, mpp = gigaseg.load_model()
    off = gigaseg.predict_slide((net, mpp), path, tmp_path / "off", mpp=4.0, progress=False, fill_holes=0)
    assert off["holes_filled"] is None
    outs = {}
    for probabilities in (False, True):
        s = gigaseg.predict_slide((net, mpp), path, tmp_path / f"on-{probabilities}", mpp=4.0, progress=False,
                                  probabilities=probabilities)
        h = s["holes_filled"]
        assert h["max_width_um"] == 100.0 and h["filled"] >= 1 and h["filled_pixels_model_res"] > 0
        assert s["tissue_pixels_model_res"] == off["tissue_pixels_model_res"] + h["filled_pixels_model_res"]
        outs[probabilities] = tifffile.imread(s["paths"]["mask"])
    mask_off = tifffile.imread(off["paths"]["mask"]) > 0
    mask_on = outs[False] > 0
    assert (mask_on >= mask_off).all() and int((mask_on & ~mask_off).sum()) == h["filled_pixels_model_res"]
    np.testing.assert_array_equal(outs[True] >= 128, mask_on)  # the probabilities say the same
    holes = lambda s: sum(len(f["geometry"]["coordinates"]) - 1 for f in  # noqa: E731
                          json.loads(Path(s["paths"]["geojson"]).read_text())["features"])
    assert holes(s) <= holes(off)
    # 0 and a width of one's own; a bad width is refused before any work
    wide = gigaseg.predict_slide((net, mpp), path, tmp_path / "wide", mpp=4.0, progress=False, fill_holes=400)
    assert wide["holes_filled"]["filled_pixels_model_res"] >= h["filled_pixels_model_res"]
    with pytest.raises(ConfigError, match="fill_holes"):
        gigaseg.predict_slide((net, mpp), path, tmp_path / "bad", mpp=4.0, progress=False, fill_holes=-5)


def test_the_cli_takes_a_width(tmp_path):
    from gigaseg.cli import main

    img = np.full((96, 96, 3), 240, np.uint8)
    img[20:76, 20:76] = [170, 90, 160]
    img[44:50, 44:50] = 240  # a small gap in the tissue
    Image.fromarray(img).save(tmp_path / "t.png")
    assert main(["predict", str(tmp_path / "t.png"), "--mpp", "4", "--out", str(tmp_path / "a"), "--no-progress",
                 "--fill-holes", "0"]) == 0
    assert json.loads((tmp_path / "a" / "t.json").read_text())["holes_filled"] is None
    assert main(["predict", str(tmp_path / "t.png"), "--mpp", "4", "--out", str(tmp_path / "b"), "--no-progress",
                 "--fill-holes", "60"]) == 0
    assert json.loads((tmp_path / "b" / "t.json").read_text())["holes_filled"]["max_width_um"] == 60.0
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "t.png"), "--mpp", "4", "--out", str(tmp_path / "c"), "--fill-holes", "-1"])


def test_filling_raises_both_shared_real_slides(tmp_path, real_data):
    """The definition's width, on both shared real slides: never lower against the careful reference."""
    from gigaseg.metrics import evaluate_pair

    for rel, mpp, name in (("slides/CMU-1-Small-Region.svs", None, "CMU-1-Small-Region"),
                           ("slides/kidney-48-5.tif", 8.0, "kidney-48-5")):
        slide, ref = real_data / rel, real_data / "masks" / f"{name}.reference.png"
        need_real(slide, ref)
        dice = {}
        for width in (0, None):
            s = gigaseg.predict_slide(None, slide, tmp_path / f"{name}-{width}", mpp=mpp, progress=False,
                                      fill_holes=width)
            dice[width] = evaluate_pair(s["paths"]["mask"], ref)["dice"]
        assert dice[None] >= dice[0], (name, dice)


@pytest.mark.parametrize("transform", [None, "binary"])
def test_a_patched_mask_tiff_reads_as_one_written_from_the_changed_grid(tmp_path, transform):
    """NOTE [Patched tiles]: every level of the patched file decodes to what write_mask_tiff writes
    from the changed grid, edge tiles included; the file stays a valid pyramid."""
    from gigaseg._writers import MaskGrid, patch_mask_tiff, write_mask_tiff

    rng = np.random.default_rng(4)
    before = np.where(ndi.gaussian_filter(rng.normal(size=(700, 900)), 6) > 0, 200, 40).astype(np.uint8)
    after = before.copy()
    boxes = [(3, 5, 40, 60), (650, 850, 700, 900), (300, 400, 301, 401)]  # a corner, the far edge, one pixel
    for y0, x0, y1, x1 in boxes:
        after[y0:y1, x0:x1] = 255 - after[y0:y1, x0:x1]
    tf = (lambda b: np.where(b >= 128, np.uint8(255), np.uint8(0))) if transform else None
    kw = {"l0_size": (3590, 2795), "step": (3590 / 900, 2795 / 700)}
    write_mask_tiff(tmp_path / "p.tif", MaskGrid(before, **kw), mpp=(0.5, 0.5), transform=tf)
    n = patch_mask_tiff(tmp_path / "p.tif", MaskGrid(after, **kw), boxes, transform=tf)
    write_mask_tiff(tmp_path / "fresh.tif", MaskGrid(after, **kw), mpp=(0.5, 0.5), transform=tf)
    with tifffile.TiffFile(tmp_path / "p.tif") as p, tifffile.TiffFile(tmp_path / "fresh.tif") as f:
        assert len(p.pages) == len(f.pages) >= 3
        for a, b in zip(p.pages, f.pages):
            np.testing.assert_array_equal(a.asarray(), b.asarray())
    assert n >= len(p.pages)  # at least one tile per level
    # the file before the patch differs from the fresh one: the comparison above can fail
    write_mask_tiff(tmp_path / "old.tif", MaskGrid(before, **kw), mpp=(0.5, 0.5), transform=tf)
    assert not np.array_equal(tifffile.imread(tmp_path / "old.tif"), tifffile.imread(tmp_path / "fresh.tif"))
