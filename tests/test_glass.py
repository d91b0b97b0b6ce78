"""Glass balance (UNetConfig.glass_white, gigaseg.glass, NOTE [Glass balance]): the per-image
gains, the balanced image, and the engine applying them in prediction and training alike,
exactly as a plain model on the balanced image."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gigaseg import UNet, UNetConfig
from gigaseg.checkpoint import load_model, save_checkpoint
from gigaseg.engine import model_input, tiled_backward, tiled_predict
from gigaseg.errors import ConfigError, InputError
from gigaseg.glass import MAX_GAIN, GlassBalanced, balance_for, glass_colour, glass_gains

CFG = UNetConfig(depth=2, channels=(2, 4), strides=(2, 2), encoder_kernels=(5, 3), decoder_kernels=(3, 3),
                 input_shift=0.8, input_scale=4.0)
GLASS_CFG = dataclasses.replace(CFG, glass_white=250.0)


def _slide_like(glass=(200, 200, 200), h=60, w=80, seed=0):
    """Glass of colour ``glass`` with a darker, textured blob of tissue over a quarter of it."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = glass
    img = np.clip(img.astype(np.int16) + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    blob = (yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 3) ** 2
    img[blob] = rng.integers(60, 160, (int(blob.sum()), 3))
    mask = blob.astype(np.uint8)
    return img, mask


def test_gains_bring_grey_and_tinted_glass_to_white_and_leave_white_glass_alone():
    img, _ = _slide_like((200, 200, 200))
    np.testing.assert_allclose(glass_gains(img, 250), 1.25, atol=0.02)
    tinted, _ = _slide_like((240, 225, 205))
    np.testing.assert_allclose(glass_gains(tinted, 250), [250 / 240, 250 / 225, 250 / 205], atol=0.02)
    white, _ = _slide_like((252, 252, 252))
    assert np.all(glass_gains(white, 250) == 1)  # never darkened
    dark, _ = _slide_like((90, 90, 90))
    assert np.all(glass_gains(dark, 250) == np.float32(MAX_GAIN))  # brightened at most MAX_GAIN
    # no pixel bright enough to be glass (all out-of-scan black) or an image that is all pale tissue
    assert np.all(glass_gains(np.zeros((20, 20, 3), np.uint8), 250) == 1)
    pink = np.empty((40, 40, 3), np.uint8)
    pink[:] = (235, 185, 215)  # eosin: magenta, off the line along which white balance moves glass
    assert np.all(glass_gains(pink, 250) == 1)
    # yellow (tinted glass through a warm white balance) and blue glass are balanced, however tinted
    for colour in ((254, 244, 202), (200, 225, 239), (246, 232, 246)):
        glass, _ = _slide_like(colour)
        np.testing.assert_allclose(glass_gains(glass, 250), np.maximum(250 / np.asarray(colour), 1), atol=0.02)
    # black padding over most of the image does not make the glass look dark
    padded, _ = _slide_like((230, 230, 230), h=100)
    padded[:70] = 0
    np.testing.assert_allclose(glass_colour(padded), 230, atol=3)


def test_balanced_image_reads_each_crop_as_the_whole_image_balanced():
    img, _ = _slide_like((220, 210, 200))
    gains = glass_gains(img, 250)
    bal = GlassBalanced(img, gains)
    whole = bal[:, :]
    expected = np.clip(np.rint(img * gains.reshape(1, 1, 3).astype(np.float32)), 0, 255).astype(np.uint8)
    assert whole.dtype == np.uint8 and bal.shape == img.shape and bal.dtype == np.uint8 and bal.ndim == 3
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(bal[7:31, 11:50], whole[7:31, 11:50])
    glass = img.mean(-1) > 195
    np.testing.assert_allclose(np.median(whole[glass], axis=0), 250, atol=1.5)  # the glass is now white


def test_config_declares_it_and_files_keep_it(tmp_path):
    with pytest.raises(ConfigError, match="glass_white"):
        dataclasses.replace(CFG, glass_white=-1.0)
    with pytest.raises(ConfigError, match="glass_white"):
        dataclasses.replace(CFG, glass_white=300)
    assert "glass_white" not in CFG.to_dict()  # files of models without it are as before
    assert UNetConfig.from_dict(GLASS_CFG.to_dict()) == GLASS_CFG
    path = save_checkpoint(tmp_path / "m.pt", UNet(GLASS_CFG), mpp=4.0)
    loaded, _ = load_model(path)
    assert loaded.config.glass_white == 250.0


def test_engine_predicts_with_the_balance_exactly_as_a_plain_model_on_the_balanced_image():
    torch.manual_seed(0)
    plain = UNet(CFG).double().eval()
    balancing = UNet(GLASS_CFG).double().eval()
    balancing.load_state_dict(plain.state_dict())
    img, _ = _slide_like((205, 215, 225), h=45, w=70)
    balanced = GlassBalanced(img, glass_gains(img, 250))[:, :]
    with torch.no_grad():
        ref = torch.sigmoid(plain(model_input(balanced, dtype=torch.float64)))[0, 0].numpy()
    for tile in (8, 16, None):
        got = tiled_predict(balancing, img, tile=tile)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.abs(tiled_predict(plain, img) - ref).max() > 1e-3  # the balance changes the output
    # white glass: nothing to balance, the same output as the plain model's
    white, _ = _slide_like((253, 253, 253), h=45, w=70)
    np.testing.assert_array_equal(tiled_predict(balancing, white), tiled_predict(plain, white))


def test_training_gradients_are_those_of_the_balanced_image():
    torch.manual_seed(2)
    plain = UNet(CFG).double()
    balancing = UNet(GLASS_CFG).double()
    balancing.load_state_dict(plain.state_dict())
    img, mask = _slide_like((190, 195, 200), h=37, w=53, seed=4)
    balanced = GlassBalanced(img, glass_gains(img, 250))[:, :]
    plain.zero_grad()
    ref = tiled_backward(plain, balanced, mask, loss="bce+dice", tile=16)
    ref_grads = [p.grad.clone() for p in plain.parameters()]
    balancing.zero_grad()
    got = tiled_backward(balancing, img, mask, loss="bce+dice", tile=8)
    assert abs(got - ref) <= 1e-9 * max(1.0, abs(ref))
    for p, r in zip(balancing.parameters(), ref_grads):
        assert torch.linalg.norm(p.grad - r) <= 1e-9 * max(float(torch.linalg.norm(r)), 1e-30)


def test_training_views_take_the_gains_of_their_stored_region(tmp_path):
    from gigaseg.dataset import DIHEDRAL, RegionView

    img, _ = _slide_like((210, 200, 220), h=48, w=64)
    view = RegionView(img, DIHEDRAL[5])  # rotated and flipped: the same glass
    np.testing.assert_array_equal(glass_gains(view, 250), glass_gains(img, 250))
    model = UNet(GLASS_CFG)
    bal = balance_for(model, view)
    assert isinstance(bal, GlassBalanced) and bal.shape == view.shape
    view_gains = glass_gains(img, 250).reshape(1, 1, 3)
    np.testing.assert_array_equal(bal[:, :], np.clip(np.rint(view[:, :] * view_gains), 0, 255).astype(np.uint8))


def test_a_slide_gets_the_gains_of_its_pixels(tmp_path):
    from gigaseg.slides import SlideArray, open_slide

    img, _ = _slide_like((200, 210, 220), h=600, w=800, seed=6)
    Image.fromarray(img).save(tmp_path / "s.png")
    with open_slide(tmp_path / "s.png", mpp=2.0) as slide:
        grid = SlideArray(slide, 2.0)
        np.testing.assert_array_equal(glass_gains(grid, 250), glass_gains(img, 250))  # NOTE [Glass sample]
        coarse = SlideArray(slide, 0.5)  # 4x finer than the file: the statistic comes from a coarser read
        np.testing.assert_allclose(glass_gains(coarse, 250), glass_gains(img, 250), atol=0.01)


@pytest.mark.parametrize("size", [(1024, 1024), (1024, 1536)])  # the second: the seams' sample is coarser too
def test_an_array_and_the_same_pixels_in_a_file_are_read_alike(tmp_path, size):
    """NOTE [Glass sample]: the built-in model on an array (the Python API, the training's validation)
    and gigaseg predict on the same pixels saved as a PNG see the same balanced image, seams corrected,
    and give the same probabilities to the bit, on a synthetic slide whose scanner left seams."""
    import tifffile

    from gigaseg.predict import predict_slide
    from gigaseg.slides import SlideArray, open_slide
    from gigaseg.synth import render_region

    net, mpp = load_model()
    h, w = size
    rgb, _ = render_region(90000, 0, 0, w, h, width=w, height=h, mpp=mpp, profile="all")
    Image.fromarray(rgb).save(tmp_path / "s.png")
    with open_slide(tmp_path / "s.png", mpp=mpp) as slide:
        grid = SlideArray(slide, mpp)
        a, b = balance_for(net, rgb), balance_for(net, grid)
        np.testing.assert_array_equal(a.gains, b.gains)
        np.testing.assert_array_equal(np.asarray(a[:, :]), np.asarray(b[:, :]))
    summary = predict_slide(net, tmp_path / "s.png", tmp_path / "out", mpp=mpp, progress=False, probabilities=True,
                            component_filter=False, edge_trim=0, drop_specks=0, fill_holes=0)
    assert summary["seam_correction"]["columns"]  # the seams were found and corrected
    written = tifffile.imread(summary["paths"]["mask"])
    np.testing.assert_array_equal(written, np.rint(tiled_predict(net, rgb) * 255).astype(np.uint8))


def test_a_balancing_model_refuses_images_that_are_not_8_bit_rgb():
    model = UNet(GLASS_CFG)
    with pytest.raises(InputError, match="8-bit RGB"):
        balance_for(model, np.zeros((16, 16, 3), np.uint16))
    assert balance_for(UNet(CFG), np.zeros((16, 16, 3), np.uint16)) is not None  # no balance: as before



def test_fine_tuning_a_balancing_model_keeps_its_balance(tmp_path):
    from gigaseg import preset
    from gigaseg.cli import main
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path / "store")
    prepare_synthetic(store, 2, (64, 64), seed=1, val=1, progress=False)
    init = save_checkpoint(tmp_path / "init.pt", UNet(dataclasses.replace(preset("tiny"), glass_white=250.0)),
                           mpp=0.5)
    run = tmp_path / "run"
    assert main(["train", "--data", str(store.path), "--out", str(run), "--init", str(init), "--steps", "1",
                 "--val-every", "0", "--device", "cpu", "--no-progress"]) == 0
    assert load_model(run / "checkpoint.pt")[0].config.glass_white == 250.0  # trained and saved with it


def test_predict_reports_the_gains_it_used(tmp_path):
    from gigaseg.predict import predict_slide

    img, _ = _slide_like((200, 205, 210), h=96, w=128, seed=3)
    Image.fromarray(img).save(tmp_path / "grey.png")
    balancing = UNet(GLASS_CFG).eval()
    s = predict_slide((balancing, 2.0), tmp_path / "grey.png", tmp_path / "a", mpp=2.0, progress=False)
    np.testing.assert_allclose(s["glass_gains"], glass_gains(img, 250), atol=1e-4)
    assert s["glass_gains"][0] > 1.15
    white, _ = _slide_like((253, 253, 253), h=96, w=128)
    Image.fromarray(white).save(tmp_path / "white.png")
    assert predict_slide((balancing, 2.0), tmp_path / "white.png", tmp_path / "b", mpp=2.0,
                         progress=False)["glass_gains"] == [1.0, 1.0, 1.0]
    plain = UNet(CFG).eval()
    assert predict_slide((plain, 2.0), tmp_path / "grey.png", tmp_path / "c", mpp=2.0,
                         progress=False)["glass_gains"] is None


def test_an_image_read_in_steps_of_one_is_sampled_as_an_array_is():
    img, _ = _slide_like((205, 200, 195), h=700, w=900, seed=8)

    class StepsOfOne:  # an array-like that refuses steps, as a SlideArray does
        shape, dtype, ndim = img.shape, img.dtype, 3

        def __getitem__(self, key):
            if any(isinstance(k, slice) and k.step not in (None, 1) for k in key):
                raise IndexError("steps of 1 only")
            return img[key]

    np.testing.assert_array_equal(glass_gains(StepsOfOne(), 250), glass_gains(img, 250))


def test_predict_can_read_a_slide_as_it_is(tmp_path):
    from gigaseg.cli import main
    from gigaseg.predict import predict_slide

    img, _ = _slide_like((200, 205, 210), h=96, w=128, seed=5)
    Image.fromarray(img).save(tmp_path / "grey.png")
    balancing = UNet(GLASS_CFG).eval()
    plain = UNet(CFG).eval()
    plain.load_state_dict(balancing.state_dict())
    off = predict_slide((balancing, 2.0), tmp_path / "grey.png", tmp_path / "off", mpp=2.0, progress=False,
                        probabilities=True, glass_balance=False)
    assert off["glass_gains"] is None and off["glass_balance"] is False
    assert balancing.config.glass_white == 250.0 and not balancing.training  # the caller's model is as it was
    ref = predict_slide((plain, 2.0), tmp_path / "grey.png", tmp_path / "plain", mpp=2.0, progress=False,
                        probabilities=True)
    read = lambda s: np.asarray(Image.open(s["paths"]["mask"]))  # noqa: E731
    np.testing.assert_array_equal(read(off), read(ref))  # the same as a model without the balance
    on = predict_slide((balancing, 2.0), tmp_path / "grey.png", tmp_path / "on", mpp=2.0, progress=False,
                       probabilities=True)
    assert on["glass_balance"] is True and on["glass_gains"][0] > 1.15
    assert not np.array_equal(read(on), read(off))
    # the command line: --no-glass-balance, with the built-in model
    assert main(["predict", str(tmp_path / "grey.png"), "--mpp", "4", "--out", str(tmp_path / "cli"),
                 "--no-glass-balance", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "cli" / "grey.json").read_text())
    assert summary["glass_gains"] is None and summary["model"] == "builtin"


def test_the_builtin_model_reads_tinted_glass_through_a_white_balance_as_drawn():
    """Held-out synthetic slide 90038 (tinted glass) through a warm white balance: before stage 19 its
    yellow glass was taken for pale tissue, not balanced, and called tissue (Dice 0.971 -> 0.354)."""
    from gigaseg.synth import render_region

    rgb, mask = render_region(90038, 0, 0, 1024, 1024, width=1024, height=1024, mpp=4.0, profile="all")
    net, _ = load_model()
    truth = mask == 1

    def dice(img):
        pred = tiled_predict(net, balance_for(net, img)) >= 0.5
        return 2 * (pred & truth).sum() / (pred.sum() + truth.sum())

    for gains in ((1.0, 0.97, 0.88), (0.9, 0.95, 1.0)):
        shifted = np.clip(np.rint(rgb * np.asarray(gains)), 0, 255).astype(np.uint8)
        assert dice(shifted) > dice(rgb) - 0.02
