"""Seam correction (gigaseg.glass.seam_field, NOTE [Seam correction]): a scanner's tiles of darker
or tinted glass found and evened out in prediction, read window by window and in every orientation
exactly as the whole image, and never applied to an image without seams or in training."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gigaseg import UNet, UNetConfig
from gigaseg.engine import model_input, tiled_backward, tiled_predict
from gigaseg.engine.orient import oriented_views
from gigaseg.glass import SEAM_MAX_CORRECTION, GlassBalanced, SeamField, balance_for, glass_gains, seam_field

CFG = UNetConfig(depth=2, channels=(2, 4), strides=(2, 2), encoder_kernels=(5, 3), decoder_kernels=(3, 3),
                 input_shift=0.8, input_scale=4.0)
GLASS_CFG = dataclasses.replace(CFG, glass_white=250.0)


def _tiled_slide(h=300, w=400, tile=(100, 90), spread=0.04, seed=0, glass=236):
    """Glass with noise and two textured blobs of tissue, seen through scanner tiles of ``tile``
    (rows, columns) px, each brighter or darker than its neighbours by spread / 2 to spread (and tinted
by up to spread / 4 per channel); and the tile gains."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), float(glass)) + rng.normal(0, 1.0, (h, w, 3))
    yy, xx = np.mgrid[:h, :w]
    for cy, cx, r in ((0.4 * h, 0.3 * w, 0.2 * h), (0.6 * h, 0.75 * w, 0.25 * h)):
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[blob] = rng.uniform(90, 190, (int(blob.sum()), 3))
    ny, nx = -(-h // tile[0]), -(-w // tile[1])
    sign = np.where((np.arange(ny)[:, None] + np.arange(nx)[None, :]) % 2, 1.0, -1.0)[..., None]  # neighbours differ
    tint = rng.uniform(-spread / 4, spread / 4, (ny, nx, 3))
    gains = 1.0 + sign * rng.uniform(spread / 2, spread, (ny, nx, 1)) + tint
    img *= gains[yy // tile[0], xx // tile[1]]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), gains


def _glass_spread(img, tile, field=None):
    """The largest difference between tiles of the median of their glass pixels (per channel)."""
    h, w = img.shape[:2]
    glass = img.mean(-1) > 200
    meds = [np.median(img[y:y + tile[0], x:x + tile[1]][glass[y:y + tile[0], x:x + tile[1]]], axis=0)
            for y in range(0, h, tile[0]) for x in range(0, w, tile[1])]
    return float(np.ptp(np.array(meds), axis=0).max())


def test_the_seams_are_found_where_the_tiles_meet_and_evened_out():
    img, _ = _tiled_slide()
    field = seam_field(img)
    assert field is not None
    assert field.ys == (100, 200) and field.xs == (90, 180, 270, 360)
    assert field.factors.shape == (3, 5, 3)
    assert np.all(np.abs(field.factors - 1) <= SEAM_MAX_CORRECTION + 1e-6)
    model = UNet(GLASS_CFG)
    bal = balance_for(model, img)
    assert isinstance(bal, GlassBalanced) and bal.seams.ys == field.ys and bal.seams.xs == field.xs
    np.testing.assert_array_equal(bal.seams.factors, field.factors)
    before, after = _glass_spread(img, (100, 90)), _glass_spread(bal[:, :], (100, 90))
    assert before > 10 and after <= 3.5  # tiles 10+ levels apart before, within about 1% after
    glass = img.mean(-1) > 200
    np.testing.assert_allclose(np.median(bal[:, :][glass], axis=0), 250, atol=2)  # and the glass is white
    # stripes of a line-scan scanner: seams in one direction only
    stripes, _ = _tiled_slide(tile=(300, 130), seed=1)
    field = seam_field(stripes)
    assert field is not None and field.ys == () and field.xs == (130, 260, 390)


@pytest.mark.parametrize("white_balance", [(1.0, 0.97, 0.88), (0.9, 0.95, 1.0), (1.0, 0.93, 1.0)])
def test_seams_are_found_on_glass_of_any_white_balance(white_balance):
    """Tinted glass, or glass through a scanner's warm or cool white balance, is glass to the seam
    search: the same seams as on grey glass (its colour is measured against the glass's own)."""
    img, _ = _tiled_slide()
    tinted = np.clip(np.rint(img * np.asarray(white_balance)), 0, 255).astype(np.uint8)
    field = seam_field(tinted)
    assert field is not None and field.ys == (100, 200) and field.xs == (90, 180, 270, 360)


def test_an_image_without_seams_is_read_as_before():
    img, _ = _tiled_slide(spread=0.0, seed=2)
    assert seam_field(img) is None
    bal = balance_for(UNet(GLASS_CFG), img)
    assert bal.seams is None
    np.testing.assert_array_equal(bal.gains.ravel(), glass_gains(img, 250))
    white, _ = _tiled_slide(spread=0.0, seed=3, glass=252)
    assert balance_for(UNet(GLASS_CFG), white) is white  # nothing to do: the image itself
    assert seam_field(np.zeros((50, 60, 3), np.uint8)) is None  # no glass at all
    padded = img.copy()  # straight edges of out-of-scan padding, black and white, are no seams
    padded[:, :60] = 0
    padded[:40] = 255
    assert seam_field(padded) is None
    tiles, _ = _tiled_slide(seed=12)
    assert seam_field(tiles) is not None
    clipped = np.clip(tiles * 1.2, 0, 255).astype(np.uint8)
    assert (clipped.min(-1) == 255).mean() > 0.5 and seam_field(clipped) is None  # clipped glass: no level to read
    # seams=False (and a model without a balance) leave them as they are
    tiled, _ = _tiled_slide(seed=4)
    assert balance_for(UNet(GLASS_CFG), tiled, seams=False).seams is None
    assert balance_for(UNet(CFG), tiled) is tiled


def test_a_balanced_image_with_seams_reads_each_window_as_the_whole():
    img, _ = _tiled_slide(seed=5)
    bal = balance_for(UNet(GLASS_CFG), img)
    whole = bal[:, :]
    factors = bal.seams.factors_at(np.arange(img.shape[0]), np.arange(img.shape[1])) * bal.gains
    expected = np.clip(np.rint(img * factors.astype(np.float32)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(whole, expected)
    for key in ((slice(95, 205), slice(85, 275)), (slice(0, 7), slice(None)), (slice(None, None, 3), slice(5, None, 7)),
                (slice(250, 40, -4), slice(None, None, -1)), slice(10, 20)):
        np.testing.assert_array_equal(bal[key], whole[key])
    with pytest.raises(TypeError, match="read by slices"):
        bal[5, 7]


@pytest.mark.parametrize("n", [8])
def test_every_orientation_reads_the_seams_turned_with_the_image(n):
    img, _ = _tiled_slide(h=140, w=170, tile=(50, 40), seed=6)
    bal = balance_for(UNet(GLASS_CFG), img)
    whole = bal[:, :]
    for view, seen in oriented_views(bal, n):
        np.testing.assert_array_equal(seen[:, :], view.to_view(whole))
        np.testing.assert_array_equal(seen[13:77, 21:101], view.to_view(whole)[13:77, 21:101])
        assert isinstance(seen, GlassBalanced) and seen.seams is not None


def test_the_engine_predicts_exactly_as_a_plain_model_on_the_corrected_image():
    torch.manual_seed(0)
    plain = UNet(CFG).double().eval()
    balancing = UNet(GLASS_CFG).double().eval()
    balancing.load_state_dict(plain.state_dict())
    img, _ = _tiled_slide(h=130, w=150, tile=(45, 50), seed=7)
    corrected = balance_for(balancing, img)
    assert corrected.seams is not None
    with torch.no_grad():
        ref = torch.sigmoid(plain(model_input(corrected[:, :], dtype=torch.float64)))[0, 0].numpy()
    for tile in (16, None):
        np.testing.assert_allclose(tiled_predict(balancing, img, tile=tile), ref, rtol=0, atol=1e-12)
    # the mean over orientations: each orientation of the corrected image
    with torch.no_grad():
        views = [torch.sigmoid(plain(model_input(np.ascontiguousarray(view.to_view(corrected[:, :])),
                                                 dtype=torch.float64)))[0, 0].numpy()
                 for view, _ in oriented_views(corrected, 4)]
    mean = np.mean([view.to_image(v) for (view, _), v in zip(oriented_views(corrected, 4), views)], axis=0)
    np.testing.assert_allclose(tiled_predict(balancing, img, tile=16, orientations=4), mean, rtol=0, atol=1e-12)


def test_training_reads_the_seams_as_they_come():
    torch.manual_seed(2)
    plain = UNet(CFG).double()
    balancing = UNet(GLASS_CFG).double()
    balancing.load_state_dict(plain.state_dict())
    img, _ = _tiled_slide(h=128, w=160, tile=(64, 80), seed=8)
    mask = (img.mean(-1) < 200).astype(np.uint8)
    assert seam_field(img) is not None
    only_gains = GlassBalanced(img, glass_gains(img, 250))[:, :]  # the global balance, no seam correction
    plain.zero_grad()
    ref = tiled_backward(plain, only_gains, mask, loss="bce+dice", tile=32)
    balancing.zero_grad()
    got = tiled_backward(balancing, img, mask, loss="bce+dice", tile=16)
    assert abs(got - ref) <= 1e-9 * max(1.0, abs(ref))
    for p, r in zip(balancing.parameters(), [q.grad for q in plain.parameters()]):
        assert torch.linalg.norm(p.grad - r) <= 1e-9 * max(float(torch.linalg.norm(r)), 1e-30)


def test_seam_fields_turn_back_and_forth():
    f = SeamField((10, 30), (5,), np.arange(18, dtype=np.float32).reshape(3, 2, 3))
    shape = (40, 20)
    for args in ((True, False, True), (False, True, True), (True, True, False)):
        turned = f.oriented(shape, *args)
        rows, cols = np.arange(shape[0]), np.arange(shape[1])
        grid = f.factors_at(rows, cols)
        if args[0]:
            grid = grid.swapaxes(0, 1)
        grid = grid[:: -1 if args[1] else 1, :: -1 if args[2] else 1]
        out_shape = grid.shape[:2]
        np.testing.assert_array_equal(turned.factors_at(np.arange(out_shape[0]), np.arange(out_shape[1])), grid)


def test_predict_reports_the_seams_in_level_0_pixels(tmp_path):
    from gigaseg.cli import main
    from gigaseg.predict import predict_slide

    img, _ = _tiled_slide(h=200, w=300, tile=(100, 75), seed=9)
    Image.fromarray(np.repeat(np.repeat(img, 2, 0), 2, 1)).save(tmp_path / "tiles.png")  # level 0 at 1 um/px
    model = UNet(GLASS_CFG).eval()
    s = predict_slide((model, 2.0), tmp_path / "tiles.png", tmp_path / "a", mpp=1.0, progress=False)
    seams = s["seam_correction"]
    assert seams["rows"] == [200] and seams["columns"] == [150, 300, 450]
    lo, hi = seams["correction_range"]
    assert 1 - SEAM_MAX_CORRECTION <= lo <= 1 <= hi <= 1 + SEAM_MAX_CORRECTION and hi - lo > 0.03
    off = predict_slide((model, 2.0), tmp_path / "tiles.png", tmp_path / "b", mpp=1.0, progress=False,
                        seam_correction=False)
    assert off["seam_correction"] is None
    assert main(["predict", str(tmp_path / "tiles.png"), "--model", _saved(tmp_path, model), "--mpp", "1",
                 "--out", str(tmp_path / "c"), "--no-seam-correction", "--no-progress"]) == 0
    assert json.loads((tmp_path / "c" / "tiles.json").read_text())["seam_correction"] is None


def _saved(tmp_path, model) -> str:
    from gigaseg.checkpoint import save_checkpoint

    return str(save_checkpoint(tmp_path / "m.pt", model, mpp=2.0))


def test_the_shared_real_slides_have_no_seams(real_data):
    from gigaseg.slides import SlideArray, open_slide

    for name, mpp in (("CMU-1-Small-Region.svs", None), ("kidney-48-5.tif", 8.0)):
        with open_slide(real_data / "slides" / name, mpp=mpp) as slide:
            grid = np.asarray(SlideArray(slide, 4.0 if mpp is None else mpp)[:, :])
        for k in range(4):
            assert seam_field(np.ascontiguousarray(np.rot90(grid, k))) is None, (name, k)


def test_an_enlarged_slide_is_searched_at_its_own_pixels(tmp_path):
    from gigaseg.glass import SEAM_MIN_SIDE, _mean_sample
    from gigaseg.slides import SlideArray, open_slide

    img, _ = _tiled_slide(h=200, w=260, tile=(100, 65), seed=10)
    Image.fromarray(img).save(tmp_path / "thumb.png")
    with open_slide(tmp_path / "thumb.png", mpp=8.0) as slide:
        grid = SlideArray(slide, 4.0)  # enlarged 2x to the model's resolution
        assert _mean_sample(grid, 2**20)[1] == 2  # read at the slide's own 8 um/px, not the grid's
        field = seam_field(grid)
        assert field.ys == (200,) and field.xs == (130, 260, 390)  # the thumbnail's seams, in grid pixels
        field = seam_field(SlideArray(slide, 1.0))  # 8x: the same seams
        assert field.ys == (800,) and field.xs == (520, 1040, 1560)
    small, _ = _tiled_slide(h=SEAM_MIN_SIDE - 1, w=300, tile=(60, 100), seed=11)
    assert seam_field(small) is None  # too few rows of glass to tell a seam from an edge
    assert seam_field(np.concatenate([small, small[:2]])) is not None


def test_seams_left_as_they_are_stay_so_in_the_engine(tmp_path):
    """balance_for(seams=False) on an image whose glass needs no gain: the engine must not search it
    again (it did: the image came back unwrapped, and tiled_predict's own balance corrected it)."""
    from gigaseg.predict import predict_slide

    torch.manual_seed(3)
    plain = UNet(CFG).double().eval()
    balancing = UNet(GLASS_CFG).double().eval()
    balancing.load_state_dict(plain.state_dict())
    img, _ = _tiled_slide(h=130, w=150, tile=(45, 50), seed=13, glass=247)
    assert np.all(glass_gains(img, 250) == 1) and seam_field(img) is not None  # white enough, with seams
    kept = balance_for(balancing, img, seams=False)
    np.testing.assert_array_equal(kept[:, :], img)
    np.testing.assert_array_equal(tiled_predict(balancing, kept, tile=32), tiled_predict(plain, img, tile=32))
    assert np.abs(tiled_predict(balancing, img, tile=32) - tiled_predict(plain, img, tile=32)).max() > 1e-6
    Image.fromarray(img).save(tmp_path / "w.png")
    read = lambda s: np.asarray(Image.open(s["paths"]["mask"]))  # noqa: E731
    off = predict_slide((balancing.float(), 2.0), tmp_path / "w.png", tmp_path / "off", mpp=2.0, progress=False,
                        probabilities=True, seam_correction=False)
    ref = predict_slide((plain.float(), 2.0), tmp_path / "w.png", tmp_path / "ref", mpp=2.0, progress=False,
                        probabilities=True)
    np.testing.assert_array_equal(read(off), read(ref))
