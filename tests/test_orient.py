"""Test-time orientations (gigaseg.engine.orient, NOTE [Orientations]): the oriented views read
exactly the turned or mirrored image, tiled_predict(orientations=N) is the mean of the whole-image
model over the oriented images mapped back, whatever the tiles, and predict_slide writes the
same mean as its mask."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gigaseg import UNet, UNetConfig
from gigaseg.engine import model_input, tiled_predict
from gigaseg.engine.orient import ORIENTATIONS, Oriented, check_orientations
from gigaseg.errors import ConfigError, InputError
from gigaseg.glass import GlassBalanced, glass_gains

CFG = UNetConfig(depth=2, channels=(2, 4), strides=(2, 2), encoder_kernels=(5, 3), decoder_kernels=(3, 3),
                 input_shift=0.8, input_scale=4.0)


def _numpy_orient(a: np.ndarray, o) -> np.ndarray:
    """The orientation written with numpy's own turns and mirrors, as the test's reference."""
    turns = {"as is": a, "turned 180": np.rot90(a, 2), "mirrored left-right": np.fliplr(a),
             "mirrored top-bottom": np.flipud(a), "transposed": a.swapaxes(0, 1),
             "turned 90 clockwise": np.rot90(a, -1), "turned 90 anticlockwise": np.rot90(a, 1),
             "anti-transposed": np.rot90(a, 2).swapaxes(0, 1)}
    return turns[o.name]


def _image(h=45, w=62, seed=0):
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 215, np.uint8)
    img[8:30, 10:40] = rng.integers(40, 200, (22, 30, 3))
    return np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)


def test_views_read_exactly_the_turned_or_mirrored_image_window_by_window():
    img = _image()
    assert len({(o.transpose, o.flip_rows, o.flip_cols) for o in ORIENTATIONS}) == 8
    for o in ORIENTATIONS:
        view, ref = Oriented(img, o), _numpy_orient(img, o)
        assert view.shape == ref.shape and view.dtype == img.dtype
        np.testing.assert_array_equal(view[0:view.shape[0], 0:view.shape[1]], ref)
        np.testing.assert_array_equal(view[3:17, 20:41], ref[3:17, 20:41])
        np.testing.assert_array_equal(view[5:, :9], ref[5:, :9])
        np.testing.assert_array_equal(view.to_image(ref), img)
        rows, cols = view.base_window(slice(3, 17), slice(20, 41))  # only that window of the image is read
        np.testing.assert_array_equal(view.to_view(img[rows, cols]), ref[3:17, 20:41])
    with pytest.raises(TypeError, match=r"view\[y0:y1, x0:x1\]"):
        Oriented(img, ORIENTATIONS[1])[::2, :]


def test_orientation_counts_are_checked():
    assert [check_orientations(n) for n in (1, 2, 4, 8)] == [1, 2, 4, 8]
    for bad in (0, 3, 16, True, 2.0, "8"):
        with pytest.raises(ConfigError, match="orientations .* use one of 1, 2, 4, 8"):
            check_orientations(bad)


@torch.no_grad()
def test_tiled_predict_is_the_mean_of_the_model_over_the_oriented_images():
    torch.manual_seed(0)
    net = UNet(CFG).eval()
    img = _image(70, 90, seed=1)
    per = []
    for o in ORIENTATIONS:  # the whole-image model on each oriented image, mapped back
        p = torch.sigmoid(net(model_input(np.ascontiguousarray(_numpy_orient(img, o)))))[0, 0].numpy()
        per.append(Oriented(img, o).to_image(p))
    for n in (1, 2, 4, 8):
        want = np.mean(per[:n], axis=0)
        for tile in (None, 32):  # the same whatever the tiles
            got = tiled_predict(net, img, orientations=n, tile=tile)
            np.testing.assert_allclose(got, want, atol=2e-6)
    assert not np.allclose(per[0], per[1], atol=1e-3)  # the orientations do differ: the test can fail
    out = np.zeros(img.shape[:2], np.uint8)
    tiled_predict(net, img, orientations=4, out=out)
    np.testing.assert_array_equal(out, np.rint(255 * np.mean(per[:4], axis=0)))
    with pytest.raises(ConfigError, match="orientations 3"):
        tiled_predict(net, img, orientations=3)
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    tiled_predict(net, img)
    one_pass = len(calls)
    with pytest.raises(InputError, match="out must have shape"):  # refused after the first of 8 passes
        tiled_predict(net, img, orientations=8, out=np.zeros((70, 91), np.float32))
    assert len(calls) == 2 * one_pass


@torch.no_grad()
def test_the_glass_balance_is_estimated_once_on_the_image_as_it_is():
    torch.manual_seed(1)
    cfg = dataclasses.replace(CFG, glass_white=250.0)
    net, plain = UNet(cfg).eval(), UNet(CFG).eval()
    plain.load_state_dict(net.state_dict())
    img = _image(64, 80, seed=2) - np.uint8(25)  # grey glass: the balance brightens it
    gains = glass_gains(img, 250)
    assert gains.min() > 1.05
    balanced = np.asarray(GlassBalanced(img, gains)[0:64, 0:80])
    np.testing.assert_allclose(tiled_predict(net, img, orientations=8), tiled_predict(plain, balanced, orientations=8),
                               atol=2e-6)


def test_predict_slide_writes_the_mean_over_orientations(tmp_path):
    from gigaseg.cli import main
    from gigaseg.predict import predict_slide

    torch.manual_seed(2)
    net = UNet(dataclasses.replace(CFG, glass_white=250.0)).eval()
    img = _image(96, 130, seed=3) - np.uint8(20)
    Image.fromarray(img).save(tmp_path / "s.png")
    read = lambda s: np.asarray(Image.open(s["paths"]["mask"]))  # noqa: E731
    for n in (1, 4):
        s = predict_slide((net, 2.0), tmp_path / "s.png", tmp_path / f"o{n}", mpp=2.0, progress=False,
                          probabilities=True, orientations=n)
        assert s["orientations"] == n and s["glass_gains"][0] > 1.05
        want = np.rint(255 * tiled_predict(net, img, orientations=n)).astype(np.int16)
        assert np.abs(read(s).astype(np.int16) - want).max() <= 1  # the uint8 mean of uint8 probabilities
        assert s["tissue_pixels_model_res"] == int(np.count_nonzero(read(s) >= 128))
    assert not np.array_equal(read(json.loads((tmp_path / "o1" / "s.json").read_text())),
                              read(json.loads((tmp_path / "o4" / "s.json").read_text())))
    assert not list(tmp_path.glob("o4/*.grid*"))  # no temporary grid is left behind
    with pytest.raises(ConfigError, match="orientations 5"):
        predict_slide((net, 2.0), tmp_path / "s.png", tmp_path / "bad", mpp=2.0, progress=False, orientations=5)
    # the command line, with the built-in model
    assert main(["predict", str(tmp_path / "s.png"), "--mpp", "4", "--out", str(tmp_path / "cli"),
                 "--orientations", "2", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "cli" / "s.json").read_text())
    assert summary["orientations"] == 2 and summary["model"] == "builtin"


def test_predict_slide_writes_the_exact_rounded_mean_over_many_tiles(tmp_path, monkeypatch):
    """The mask is exactly the rounded mean of the orientations' uint8 predictions, over several
    rows and columns of tiles (64-pixel tiles here)."""
    import gigaseg.engine
    from gigaseg.predict import predict_slide

    plain = gigaseg.engine.iter_predict
    monkeypatch.setattr(gigaseg.engine, "iter_predict", lambda *a, **k: plain(*a, **{**k, "tile": 64}))

    torch.manual_seed(5)
    net = UNet(CFG).eval()
    img = _image(300, 260, seed=6)
    img[200:280, 30:230] = img[8:30, 10:40].mean((0, 1)).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "s.png")
    for n in (2, 8):
        s = predict_slide((net, 2.0), tmp_path / "s.png", tmp_path / f"o{n}", mpp=2.0, progress=False,
                          probabilities=True, orientations=n)
        assert s["n_tiles"] >= 4 * n  # several rows of tiles in every orientation
        total = np.zeros(img.shape[:2], np.int64)
        for o in ORIENTATIONS[:n]:
            view = Oriented(img, o)
            p = tiled_predict(net, np.ascontiguousarray(view[:, :]))
            total += view.to_image(np.rint(np.float32(255) * p).astype(np.uint8))
        got = np.asarray(Image.open(s["paths"]["mask"]))
        np.testing.assert_array_equal(got, (total + n // 2) // n)
        assert s["tissue_pixels_model_res"] == int(np.count_nonzero(got >= 128))


@torch.no_grad()
def test_a_model_of_several_classes_averages_its_class_probabilities():
    torch.manual_seed(3)
    net = UNet(dataclasses.replace(CFG, out_channels=3)).eval()
    img = _image(40, 56, seed=4)
    per = []
    for o in ORIENTATIONS:
        p = torch.softmax(net(model_input(np.ascontiguousarray(_numpy_orient(img, o)))), 1)[0].permute(1, 2, 0)
        per.append(Oriented(img, o).to_image(p.numpy()))
    got = tiled_predict(net, img, orientations=8)
    assert got.shape == (40, 56, 3)
    np.testing.assert_allclose(got, np.mean(per, axis=0), atol=2e-6)
