"""gigaseg predict / baseline: exact predictions, readable outputs, clear errors, nothing partial."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from gigaseg import CheckpointError, ConfigError, InputError, SlideError, UNet, preset, save_checkpoint
from gigaseg.cli import main
from gigaseg.geojson import rasterize_geojson

MPP = 0.5


def _write_tiff(path, rgb, mpp=MPP):
    import tifffile

    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER", metadata=None)
    return path


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 700 x 520 single-level synthetic H&E TIFF at 0.5 um/px and its exact mask."""
    from gigaseg.synth import render_region

    d = tmp_path_factory.mktemp("slide")
    w, h = 700, 520
    rgb, mask = render_region(3, 0, 0, w, h, width=w, height=h, mpp=MPP)
    np.save(d / "truth.npy", mask.astype(bool))
    return _write_tiff(d / "synth.tif", rgb), d / "truth.npy", rgb


@pytest.fixture(scope="module")
def model(slide):
    """A tiny untrained model whose mask is not trivial: its head bias centres the logits."""
    torch.manual_seed(0)
    net = UNet(preset("tiny")).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
        x = torch.from_numpy(slide[2]).permute(2, 0, 1)[None].float() / 255
        net.head.conv.bias -= net(x).median()
    return net


def _sigmoid(net, rgb):
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
        return torch.sigmoid(net(x))[0, 0].numpy()


def test_prediction_equals_the_whole_image_model(tmp_path, slide, model):
    import tifffile

    from gigaseg.predict import predict_slide

    path, _, rgb = slide
    s = predict_slide(model, path, tmp_path, probabilities=True, memory_budget="270MB", progress=False,
                      model_mpp=MPP)
    assert s["n_tiles"] > 4  # really tiled
    got = tifffile.imread(s["paths"]["mask"])
    want = np.round(_sigmoid(model, rgb) * 255)
    assert got.shape == rgb.shape[:2]
    assert np.abs(got.astype(float) - want).max() <= 1
    assert 0.05 < (got >= 128).mean() < 0.95  # the test is not trivial


def test_fractional_resampling_is_exact_across_tiles(tmp_path, slide, model):
    import tifffile

    from gigaseg.predict import predict_slide
    from gigaseg.slides import SlideArray, open_slide

    path, _, _ = slide
    # finer than the slide: upsampling, fractional tile origins
    s = predict_slide(model, path, tmp_path, probabilities=True, memory_budget="270MB", progress=False,
                      min_area=0, model_mpp=0.37)
    with open_slide(path) as sl:
        gh, gw = SlideArray(sl, 0.37).shape[:2]
        whole = SlideArray(sl, 0.37)[0:gh, 0:gw]
    assert s["grid_size"] == [gw, gh] and s["n_tiles"] > 4
    want = np.round(_sigmoid(model, whole) * 255).astype(np.uint8)
    # the TIFF is at level 0: compare the model-resolution values under level-0 pixel centres
    got = tifffile.imread(s["paths"]["mask"])
    gy = np.floor((np.arange(got.shape[0]) + 0.5) * MPP / 0.37).astype(int)
    gx = np.floor((np.arange(got.shape[1]) + 0.5) * MPP / 0.37).astype(int)
    assert np.abs(got.astype(int) - want[gy][:, gx].astype(int)).max() <= 1


def test_the_mask_is_tiled_predict_on_the_slide_array(tmp_path, slide, model):
    """predict_slide is iter_predict over the slide's SlideArray in row order: its mask (at the
    model's resolution, under level-0 pixel centres) is tiled_predict's uint8 output there, byte
    for byte, whether the grid is level 0 or has fractional origins (0.77 um/px: shrinking; 0.37:
    enlarging)."""
    import tifffile

    from gigaseg import tiled_predict
    from gigaseg.predict import predict_slide
    from gigaseg.slides import SlideArray, open_slide

    path, _, _ = slide
    for t_mpp in (MPP, 0.77, 0.37):
        s = predict_slide(model, path, tmp_path / str(t_mpp), probabilities=True, memory_budget="270MB",
                          progress=False, model_mpp=t_mpp)
        with open_slide(path) as sl:
            image = SlideArray(sl, t_mpp)
            want = tiled_predict(model, image, out=np.empty(image.shape[:2], np.uint8), memory_budget="270MB")
            step = image.step
        assert s["grid_size"] == [want.shape[1], want.shape[0]] and s["n_tiles"] > 1
        got = tifffile.imread(s["paths"]["mask"])
        gy = np.clip(np.floor((np.arange(got.shape[0]) + 0.5) / step[1]).astype(int), 0, want.shape[0] - 1)
        gx = np.clip(np.floor((np.arange(got.shape[1]) + 0.5) / step[0]).astype(int), 0, want.shape[1] - 1)
        assert np.array_equal(got, want[gy][:, gx]), t_mpp


def test_outputs_open_in_openslide_and_round_trip(tmp_path, slide, model):
    import openslide
    import shapely
    import tifffile

    from gigaseg.predict import predict_slide

    path, _, rgb = slide
    s = predict_slide(model, path, tmp_path, min_area=0, simplify=0, progress=False)
    mask = tifffile.imread(s["paths"]["mask"])
    assert set(np.unique(mask)) <= {0, 255}
    with openslide.OpenSlide(s["paths"]["mask"]) as o:
        assert o.dimensions == (rgb.shape[1], rgb.shape[0])
        assert math.isclose(float(o.properties["openslide.mpp-x"]), MPP, rel_tol=1e-6)
        region = np.asarray(o.read_region((0, 0), 0, o.dimensions))[..., 0]
        assert np.array_equal(region, mask)
    gj = json.loads(open(s["paths"]["geojson"]).read())
    assert gj["type"] == "FeatureCollection" and gj["features"]
    for f in gj["features"]:
        assert f["properties"]["objectType"] == "annotation"
        assert f["properties"]["classification"]["name"] == "Tissue"
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid and geom.geom_type == "Polygon"
    back = rasterize_geojson(s["paths"]["geojson"], (rgb.shape[1], rgb.shape[0]))
    assert np.array_equal(back, (mask == 255).astype(np.uint8))
    summary = json.loads(open(s["paths"]["summary"]).read())
    assert summary["pieces"] == len(gj["features"])
    area = (mask == 255).sum() * MPP**2 / 1e6
    assert math.isclose(summary["tissue_area_mm2"], area, rel_tol=1e-6, abs_tol=5e-7)  # rounded to 6 decimals
    assert summary["tissue_fraction"] == pytest.approx((mask == 255).mean(), abs=1e-6)
    from PIL import Image

    assert Image.open(s["paths"]["overlay"]).size[0] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["synth.mask.tiff", "synth.geojson", "synth.overlay.png", "synth.json"])


def test_polygons_with_holes_round_trip():
    from gigaseg._writers import geojson_collection, mask_polygons

    m = np.zeros((60, 80), np.uint8)
    m[5:50, 5:40] = 1
    m[15:25, 15:25] = 0  # a hole
    m[30, 30] = 0  # a one-pixel hole
    m[20:22, 50:75] = 1  # a thin piece
    m[40, 60] = 1  # a single pixel
    m[41, 61] = 1  # touching it diagonally
    m[0:3, 0:3] = 1  # at the border
    polys = mask_polygons(m, scale=(2.0, 2.0), simplify=0, min_area=0)
    for p in polys:
        assert p.is_valid
        for hole in p.interiors:
            assert p.exterior.envelope.contains(hole.envelope)
    assert any(len(p.interiors) == 2 for p in polys)
    gj = geojson_collection(polys)
    assert np.array_equal(rasterize_geojson(gj, (80, 60), downsample=2.0), m)
    # simplified: only pixels within the tolerance of the outline may change
    simple = mask_polygons(m, scale=(2.0, 2.0), simplify=1.0, min_area=0)
    back = rasterize_geojson(geojson_collection(simple), (80, 60), downsample=2.0)
    from scipy import ndimage

    edge = ndimage.binary_dilation(m) & ~ndimage.binary_erosion(m)
    assert not np.any((back != m) & ~edge)
    # min_area drops small pieces and holes
    big = mask_polygons(m, scale=(2.0, 2.0), simplify=0, min_area=50.0)
    assert all(p.area >= 50 for p in big) and len(big) < len(polys)


def test_thumbnail_png_with_mpp_is_upsampled(tmp_path, slide, model):
    from PIL import Image

    from gigaseg.predict import predict_slide

    _, _, rgb = slide
    png = tmp_path / "thumb.png"
    Image.fromarray(rgb[::4, ::4]).save(png)  # 175 x 130 at 2 um/px
    with pytest.raises(SlideError, match="`mpp`"):
        predict_slide(model, png, tmp_path / "out", progress=False, model_mpp=MPP)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    s = predict_slide(model, png, tmp_path / "out", mpp=2.0, progress=False, model_mpp=MPP)
    assert s["grid_size"] == [700, 520]  # read at the model's 0.5 um/px
    import tifffile

    assert tifffile.imread(s["paths"]["mask"]).shape == (130, 175)  # level 0 of the PNG


def test_bad_checkpoints_and_folders(tmp_path, slide):
    from gigaseg.predict import predict_slide

    path, _, _ = slide
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        predict_slide(junk, path, tmp_path / "o1", progress=False)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(CheckpointError, match="not a gigaseg checkpoint"):
        predict_slide(other, path, tmp_path / "o1", progress=False)
    future = tmp_path / "future.pt"
    save_checkpoint(future, UNet(preset("tiny")), mpp=MPP, version=99)
    with pytest.raises(CheckpointError, match="version 99"):
        predict_slide(future, path, tmp_path / "o1", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ok = tmp_path / "ok.pt"
    save_checkpoint(ok, UNet(preset("tiny")), mpp=MPP)
    with pytest.raises(InputError, match="cannot be created"):
        predict_slide(ok, path, blocker / "out", progress=False)


def test_failure_leaves_no_partial_outputs(tmp_path, slide, model, monkeypatch):
    from gigaseg import _writers
    from gigaseg.predict import predict_slide

    path, _, _ = slide

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_writers, "write_overlay", boom)
    with pytest.raises(InputError, match="free disk space"):
        predict_slide(model, path, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # no final names, no temporaries
    monkeypatch.undo()
    monkeypatch.setattr(_writers, "write_mask_tiff", boom)  # fails in the concurrent TIFF writer
    with pytest.raises(InputError, match="mask TIFF"):
        predict_slide(model, path, tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_model_resolution_is_passed_explicitly(tmp_path, slide, model):
    """A checkpoint path, or load_model's (model, mpp) pair, runs at the training mpp; a UNet at
    model_mpp= (else the slide's level 0). Nothing rides on the model object."""
    from gigaseg import load_model
    from gigaseg.predict import predict_slide, predict_slides

    path, _, _ = slide
    ck = save_checkpoint(tmp_path / "m.pt", model, mpp=2 * MPP)
    by_path = predict_slide(ck, path, tmp_path / "a", progress=False)
    by_pair = predict_slide(load_model(ck), path, tmp_path / "b", progress=False)
    by_arg = predict_slide(model, path, tmp_path / "c", progress=False, model_mpp=2 * MPP)
    bare = predict_slide(model, path, tmp_path / "d", progress=False)
    (many,), failures = predict_slides(ck, [path], tmp_path / "e", progress=False)
    assert not failures
    for s, source in ((by_path, "checkpoint"), (by_pair, "checkpoint"), (by_arg, "argument"), (many, "checkpoint")):
        assert s["model_mpp"] == 2 * MPP and s["model_mpp_source"] == source
    assert bare["model_mpp"] == MPP and bare["model_mpp_source"] == "slide level 0"
    assert not hasattr(model, "mpp")


def test_cli_many_slides_skip_existing_and_report_failures(tmp_path, slide, capsys):
    path, _, _ = slide
    ck = tmp_path / "m.pt"
    save_checkpoint(ck, UNet(preset("tiny")), mpp=MPP)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    rc = main(["predict", str(broken), str(path), "--model", str(ck), "--out", str(out), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.tif" in err and "1 slide(s) failed" in err
    assert (out / "synth.json").is_file() and (out / "predict-config.json").is_file()
    first = (out / "synth.json").read_text()
    rc = main(["predict", str(path), "--model", str(ck), "--out", str(out), "--no-progress"])
    assert rc == 0 and "kept" in capsys.readouterr().err
    assert (out / "synth.json").read_text() == first
    rc = main(["predict", str(path), "--model", str(ck), "--out", str(out), "--no-progress", "--overwrite"])
    assert rc == 0 and (out / "synth.json").read_text() != first


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".npz"])
def test_a_model_given_first_as_in_gigaseg_0_1_is_refused_with_the_new_form(tmp_path, slide, capsys, suffix):
    """gigaseg 0.1 read ``gigaseg predict MODEL SLIDE...``; the model is now ``--model PATH``."""
    path, _, _ = slide
    ck = save_checkpoint(tmp_path / f"m{suffix}", UNet(preset("tiny")), mpp=MPP)
    out = tmp_path / "out"
    assert main(["predict", str(ck), str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{ck} is a model, not a slide" in err and "--model" in err
    assert f"gigaseg predict {path} --model {ck} --out {out}" in err  # the command to run instead
    assert not out.exists()  # refused before any work


def test_the_model_option_takes_a_checkpoint_and_without_it_the_builtin_model_is_used(tmp_path, slide, model,
                                                                                     monkeypatch):
    import tifffile

    import gigaseg.checkpoint

    path, _, _ = slide
    ck = save_checkpoint(tmp_path / "m.pt", model, mpp=MPP)
    assert main(["predict", str(path), "--model", str(ck), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert summary["model"] == str(ck) and summary["model_mpp_source"] == "checkpoint"
    assert json.loads((tmp_path / "a" / "predict-config.json").read_text())["args"]["model"] == str(ck)
    # no --model: the built-in model, here a stand-in for the file the package ships (the test does not need it)
    monkeypatch.setattr(gigaseg.checkpoint, "builtin_model_path", lambda: ck)
    assert main(["predict", str(path), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "b" / "synth.json").read_text())["model"] == "builtin"
    assert np.array_equal(tifffile.imread(tmp_path / "b" / "synth.mask.tiff"),
                          tifffile.imread(tmp_path / "a" / "synth.mask.tiff"))


def test_baselines_on_a_synthetic_slide(tmp_path, slide):
    from gigaseg.metrics import evaluate_pair

    path, truth, _ = slide
    for method, floor in (("otsu", 0.5), ("saturation", 0.7)):
        out = tmp_path / method
        rc = main(["baseline", str(path), "--method", method, "--working-mpp", "2", "--out", str(out)])
        assert rc == 0
        assert {p.name for p in out.iterdir()} >= {"synth.mask.tiff", "synth.geojson", "synth.json",
                                                  "synth.overlay.png", "baseline-config.json"}
        r = evaluate_pair(out / "synth.mask.tiff", truth)
        assert r["dice"] > floor, (method, r)


def test_expand_slide_paths(tmp_path):
    from gigaseg.predict import expand_slide_paths

    (tmp_path / "a.svs").write_bytes(b"x")
    (tmp_path / "b.tif").write_bytes(b"x")
    (tmp_path / "b.mask.tiff").write_bytes(b"x")  # an output: skipped in folders and globs
    (tmp_path / "notes.txt").write_text("x")
    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "level-0.dcm").write_bytes(b"x")
    got = expand_slide_paths([tmp_path, str(tmp_path / "*.tif*"), tmp_path / "a.svs"])
    assert [p.name for p in got] == ["a.svs", "b.tif", "series"]
    with pytest.raises(InputError, match="matches no file"):
        expand_slide_paths([str(tmp_path / "*.ndpi")])


def test_a_model_failure_stops_the_tiff_writer(tmp_path, slide, model, monkeypatch):
    from gigaseg.engine import forward as engine
    from gigaseg.predict import predict_slide

    path, _, _ = slide

    real, calls = engine._core_logits, []

    def fails_later(*args):
        calls.append(1)
        if len(calls) > 3:  # a few tiles (a row of them at least) predicted, then fail
            raise RuntimeError("out of memory")
        return real(*args)

    monkeypatch.setattr(engine, "_core_logits", fails_later)
    with pytest.raises(RuntimeError, match="out of memory"):
        # returns: the writer thread does not hang
        predict_slide(model, path, tmp_path, progress=False, memory_budget="270MB")
    assert list(tmp_path.iterdir()) == []


def test_real_slides_baselines_and_model_outputs(tmp_path, real_data, model):
    """CMU-1-Small-Region (SVS and DICOM): outputs at the slide's geometry, baselines near the pseudo-mask."""
    import openslide

    from gigaseg.baseline import baseline_slide
    from gigaseg.metrics import evaluate_pair
    from gigaseg.predict import predict_slide

    ref = real_data / "masks" / "tissue-mask-cmu-1-small-region.npy"
    for path in (real_data / "slides" / "CMU-1-Small-Region.svs", real_data / "dicom" / "cmu-1-small-region"):
        s = baseline_slide(path, tmp_path / "sat", method="saturation")
        with pytest.warns(UserWarning, match="differ in resolution"):
            assert evaluate_pair(s["paths"]["mask"], ref)["dice"] > 0.75
    s = predict_slide(model, real_data / "slides" / "CMU-1-Small-Region.svs", tmp_path / "model", progress=False,
                      model_mpp=2.0)  # cheap: the tiny model at 2 um/px
    with openslide.OpenSlide(s["paths"]["mask"]) as o:
        assert o.dimensions == (2220, 2967)
        assert float(o.properties["openslide.mpp-x"]) == pytest.approx(0.499)


def test_bfloat16_prediction_runs_a_bfloat16_copy_through_the_same_pipeline(tmp_path, slide, model):
    # how close bfloat16 comes to float32 with a trained model is measured in NOTE [bfloat16
    # prediction]; this fixture's logits are all near 0, where any rounding flips pixels
    import tifffile

    from gigaseg import ConfigError, tiled_predict
    from gigaseg.predict import predict_slide

    path, _, rgb = slide
    s = predict_slide(model, path, tmp_path, probabilities=True, progress=False, precision="bfloat16", model_mpp=MPP)
    assert s["precision"] == "bfloat16"
    assert next(model.parameters()).dtype == torch.float32  # predicted on a copy
    got = tifffile.imread(s["paths"]["mask"]).astype(int)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    want = tiled_predict(bf16, rgb, out=np.empty(rgb.shape[:2], np.uint8)).astype(int)
    assert np.abs(got - want).max() <= 1
    assert np.abs(got / 255 - _sigmoid(model, rgb)).mean() < 0.01
    with pytest.raises(ConfigError, match="precision 'half' is not valid"):
        predict_slide(model, path, tmp_path / "x", precision="half", progress=False)


def test_several_slide_readers_give_the_same_outputs(tmp_path, slide, model, monkeypatch):
    """read_workers > 1 decodes several crops of the slide at once (for GPUs); crops still
    reach the model in order, so the mask is the same byte for byte; a read error is still
    reported as the error of the slide."""
    import tifffile

    from gigaseg.predict import predict_slide

    path, _, _ = slide
    masks = []
    for workers in (1, 3):
        s = predict_slide(model, path, tmp_path / f"w{workers}", probabilities=True, memory_budget="270MB",
                          progress=False, read_workers=workers, model_mpp=MPP)
        assert s["read_workers"] == workers and s["n_tiles"] > 4
        masks.append(tifffile.imread(s["paths"]["mask"]))
    assert np.array_equal(masks[0], masks[1])
    from gigaseg.slides import SlideArray

    real = SlideArray.read
    calls = []

    def failing(image, y0, y1, x0, x1):
        calls.append(y0)
        if len(calls) == 3:
            raise OSError("tile 3 is corrupt")
        return real(image, y0, y1, x0, x1)

    monkeypatch.setattr(SlideArray, "read", failing)
    with pytest.raises(OSError, match="tile 3 is corrupt"):
        predict_slide(model, path, tmp_path / "bad", probabilities=True, memory_budget="270MB", progress=False,
                      read_workers=3)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    with pytest.raises(ConfigError, match="read_workers must be a positive integer"):
        predict_slide(model, path, tmp_path / "zero", read_workers=0, progress=False)


def test_mask_tiff_compressed_by_several_threads_is_the_same_file(tmp_path):
    """On a GPU the mask TIFF's tiles are compressed by several threads; the file must not change."""
    import filecmp

    from gigaseg._writers import MaskGrid, write_mask_tiff

    rng = np.random.default_rng(1)
    mask = (rng.random((700, 1900)) < 0.3).astype(np.uint8) * 255
    raw = tmp_path / "raw.u8"
    mask.tofile(raw)
    grid = MaskGrid(raw, shape=mask.shape, l0_size=(1900 * 2, 700 * 2), step=(2.0, 2.0))
    for workers in (1, 3):
        write_mask_tiff(tmp_path / f"w{workers}.tiff", grid, mpp=(0.5, 0.5), workers=workers)
    assert filecmp.cmp(tmp_path / "w1.tiff", tmp_path / "w3.tiff", shallow=False)
