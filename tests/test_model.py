"""The U-Net family: presets, shapes, config validation, stride and halo arithmetic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gigaseg import ConfigError, UNet, UNetConfig, count_parameters, preset
from gigaseg.model import StridedConv2d, _ConvFunction, layer_table


def test_paper_preset():
    config = preset("paper")
    model = UNet(config)
    assert count_parameters(model) == 4492
    assert sum(row["params"] for row in layer_table(config)) == 4492
    assert min(config.encoder_kernels) >= 7 and config.strides[0] >= 4 and config.total_stride >= 32
    assert not any(isinstance(m, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm)) for m in model.modules())
    assert count_parameters(UNet(preset("tiny"))) < 1000


@pytest.mark.parametrize("name", ["paper", "tiny"])
@pytest.mark.parametrize("hw", [(1, 1), (37, 101), (64, 64), (65, 33)])
def test_full_resolution_logits_for_any_size(name, hw):
    model = UNet(preset(name))
    out = model(torch.rand(2, 3, *hw))
    assert out.shape == (2, 1, *hw)


def test_padding_is_internal_and_cropped():
    """Logits of an image equal the top-left crop of the logits of its zero-padded version."""
    torch.manual_seed(0)
    model = UNet(preset("paper")).double()
    x = torch.rand(1, 3, 50, 70, dtype=torch.float64)
    padded = F.pad(x, (0, 26, 0, 14))  # to 64 x 96, multiples of 32
    torch.testing.assert_close(model(x), model(padded)[..., :50, :70])


@pytest.mark.parametrize(
    "config",
    [
        preset("paper"),
        preset("tiny"),
        UNetConfig(1, (3,), (8,), (15,), (5,)),
        UNetConfig(4, (2, 3, 4, 5), (2, 2, 2, 2), (3, 5, 7, 9), (3, 5, 3, 7)),
        UNetConfig(2, (2, 3), (4, 8), (1, 1), (1, 1)),
        UNetConfig(2, (2, 3), (3, 2), (9, 5), (5, 3)),
    ],
)
def test_halo_matches_the_empirical_receptive_field(config):
    """The analytic halo equals the extent of the input gradient of one output pixel."""
    torch.manual_seed(0)
    model = UNet(config).double()
    size = config.total_stride * 4 + 2 * config.halo + 16
    x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    out = model(x)
    extent = 0
    for c in range(size // 2, size // 2 + config.total_stride):
        (g,) = torch.autograd.grad(out[0, 0, c, c], x, retain_graph=True)
        rows = (g.abs().sum(dim=(0, 1, 3)) > 0).nonzero()[:, 0]
        extent = max(extent, c - int(rows.min()), int(rows.max()) - c)
    assert extent == config.halo
    assert config.receptive_field == 2 * config.halo + 1


@pytest.mark.parametrize("k, s", [(15, 4), (7, 2), (3, 2), (5, 8), (1, 4), (9, 3), (11, 4), (3, 1), (7, 1), (1, 1)])
@pytest.mark.parametrize("hw", [(23, 41), (5, 7), (48, 16)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_conv_gradient(k, s, hw, layout):
    torch.manual_seed(0)
    x = torch.rand(1, 3, *hw, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_(True)
    w = torch.randn(2, 3, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    if hw == (5, 7) and layout == torch.contiguous_format:  # finite differences are slow
        assert torch.autograd.gradcheck(lambda x, w, b: _ConvFunction.apply(x, w, b, s), (x, w, b))
    out = _ConvFunction.apply(x, w, b, s)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, w, b], g)
    ref = torch.autograd.grad(F.conv2d(x, w, b, stride=s, padding=k // 2), [x, w, b], g)
    for a, r in zip(ours, ref):
        assert float((a - r).norm() / r.norm()) < 1e-12
    conv = StridedConv2d(3, 2, k, stride=s, padding=k // 2).double()
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, stride=s, padding=k // 2))


def test_config_validation():
    with pytest.raises(ConfigError, match="channels has 2 entries but depth is 3"):
        UNetConfig(3, (2, 4), (4, 4, 2), (15, 11, 7), (3, 3, 3))
    with pytest.raises(ConfigError, match="odd"):
        UNetConfig(1, (2,), (2,), (4,), (3,))
    with pytest.raises(ConfigError, match="activation 'swish' is unknown"):
        UNetConfig(activation="swish")
    with pytest.raises(ConfigError, match="depth"):
        UNetConfig(0, (), (), (), ())
    with pytest.raises(ConfigError, match=">= 1"):
        UNetConfig(1, (0,), (2,), (3,), (3,))
    with pytest.raises(ConfigError, match="unknown preset 'big'"):
        preset("big")
    with pytest.raises(ConfigError, match="unknown UNetConfig fields"):
        UNetConfig.from_dict({"depth": 1, "colour": 3})


def test_config_round_trip():
    config = UNetConfig(2, [2, 3], [4, 2], [9, 5], [3, 3], activation="silu")
    assert config.channels == (2, 3)
    assert UNetConfig.from_dict(config.to_dict()) == config


def test_presets_are_read_only():
    """A preset cannot be changed or added behind the library's back: build a UNetConfig instead."""
    import dataclasses

    from gigaseg import PRESETS
    from gigaseg.model import PRESETS as MODEL_PRESETS

    assert MODEL_PRESETS is PRESETS and preset("paper") is PRESETS["paper"]
    with pytest.raises(TypeError):
        PRESETS["wide"] = UNetConfig(channels=(8, 16, 32))  # type: ignore[index]
    with pytest.raises(TypeError):
        del PRESETS["tiny"]  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("paper").channels = (8, 16, 32)  # type: ignore[misc]
    wide = dataclasses.replace(preset("paper"), channels=(8, 16, 32))
    assert wide.channels == (8, 16, 32) and preset("paper").channels == (2, 4, 8)
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        preset("tinny")


def test_every_activation_name_has_its_layer():
    from gigaseg.model import _ACTIVATIONS
    from gigaseg.options import ACTIVATIONS

    assert tuple(_ACTIVATIONS) == ACTIVATIONS
    for name in ACTIVATIONS:
        UNet(UNetConfig(activation=name))


def _plain_forward(model: UNet, x: torch.Tensor) -> torch.Tensor:
    """The architecture written plainly: F.conv2d, nearest interpolation, torch.cat."""
    cfg = model.config
    h, w = x.shape[-2:]
    s = cfg.total_stride
    x = F.pad(x, (0, (-w) % s, 0, (-h) % s))

    def conv(block, t, stride=1):
        k = block.conv.weight.shape[-1]
        return F.conv2d(t, block.conv.weight, block.conv.bias, stride=stride, padding=k // 2)

    skips = [x]
    for i, block in enumerate(model.encoder):
        skips.append(block.act(conv(block, skips[-1], cfg.strides[i])))
    d = skips[-1]
    for level in range(cfg.depth - 1, 0, -1):
        up = F.interpolate(d, scale_factor=cfg.strides[level], mode="nearest")
        block = model.decoder[level - 1]
        d = block.act(conv(block, torch.cat([up, skips[level]], dim=1)))
    up = F.interpolate(d, scale_factor=cfg.strides[0], mode="nearest")
    return conv(model.head, torch.cat([up, x], dim=1))[..., :h, :w]


@pytest.mark.parametrize(
    "config",
    [
        preset("paper"),
        preset("tiny"),
        UNetConfig(4, (2, 3, 4, 5), (2, 2, 2, 2), (3, 5, 7, 9), (3, 5, 3, 7)),
        UNetConfig(2, (2, 3), (3, 8), (9, 5), (11, 1), activation="gelu"),
    ],
)
def test_model_equals_plain_pytorch(config):
    """Outputs and every gradient equal those of the plainly written architecture."""
    torch.manual_seed(0)
    model = UNet(config).double()
    x = torch.rand(1, 3, 77, 130, dtype=torch.float64)
    out = model(x)
    ref = _plain_forward(model, x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, list(model.parameters()), g)
    theirs = torch.autograd.grad(ref, list(model.parameters()), g)
    for a, r in zip(ours, theirs):
        assert float((a - r).norm() / r.norm()) < 1e-12
