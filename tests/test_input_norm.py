"""A model that normalizes its own input (UNetConfig.input_shift / input_scale): the tiled engine
stays exact against whole-image autograd, and the default config is unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gigaseg import UNet, UNetConfig
from gigaseg.engine import model_input, tiled_backward, tiled_predict
from gigaseg.errors import ConfigError
from gigaseg.losses import LOSSES, loss_fn

CFG = UNetConfig(depth=2, channels=(2, 4), strides=(2, 2), encoder_kernels=(5, 3), decoder_kernels=(3, 3),
                 input_shift=0.8, input_scale=4.0)


def _data(h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
    return img, mask


@pytest.mark.parametrize("loss", LOSSES)
def test_normalizing_model_is_exact_against_whole_image_autograd(loss):
    torch.manual_seed(0)
    model = UNet(CFG).double()
    img, mask = _data()
    x = model_input(img, dtype=torch.float64)
    y = torch.from_numpy(mask).double()[None, None]
    model.zero_grad()
    ref_loss = loss_fn(loss)(model(x), y)
    ref_loss.backward()
    ref = [p.grad.clone() for p in model.parameters()]
    for tile in (8, 12, 20):
        model.zero_grad()
        got = tiled_backward(model, img, mask, loss=loss, tile=tile)
        assert abs(float(got) - ref_loss.item()) <= 1e-9 * max(1.0, abs(ref_loss.item()))
        for p, r in zip(model.parameters(), ref):
            assert torch.linalg.norm(p.grad - r) <= 1e-9 * max(torch.linalg.norm(r), 1e-30), (tile, loss)


def test_normalizing_model_predicts_as_whole_image():
    torch.manual_seed(1)
    model = UNet(CFG).double().eval()
    img, _ = _data(45, 31, seed=3)
    with torch.no_grad():
        ref = torch.sigmoid(model(model_input(img, dtype=torch.float64)))[0, 0].numpy()
    for tile in (8, 16):
        np.testing.assert_allclose(tiled_predict(model, img, tile=tile), ref, rtol=0, atol=1e-12)


def test_normalization_is_the_inputs_affine_map_and_defaults_change_nothing():
    torch.manual_seed(2)
    plain = UNet(UNetConfig(depth=2, channels=(2, 4), strides=(2, 2), encoder_kernels=(5, 3),
                            decoder_kernels=(3, 3))).double()
    normed = UNet(CFG).double()
    normed.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)  # a multiple of the stride: no padding
    assert torch.equal(normed(x), plain((x - 0.8) * 4.0))
    assert not UNetConfig().normalizes and CFG.normalizes
    assert UNetConfig.from_dict(CFG.to_dict()) == CFG
    assert "input_shift" in UNetConfig().to_dict()


@pytest.mark.parametrize("field,value", [("input_scale", 0.0), ("input_scale", -1.0), ("input_shift", float("nan")),
                                         ("input_shift", "0.5")])
def test_bad_normalization_is_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        UNetConfig(**{field: value})


def test_a_normalizing_model_repeats_its_edge_to_the_stride():
    """NOTE [Stride padding]: the padded band repeats the last row and column, not the zero of the
    normalized input (a grey band that read as tissue along the whole edge)."""
    import torch.nn.functional as F

    torch.manual_seed(3)
    model = UNet(CFG).double()
    x = torch.rand(1, 3, 17, 23, dtype=torch.float64)  # stride 4: padded to 20 x 24
    padded = F.pad(x, (0, 1, 0, 3), mode="replicate")
    with torch.no_grad():
        assert torch.equal(model(x), model(padded)[..., :17, :23])
