"""Any local model in the tiled engine (issue 21, items 1 and 5): the geometry derived from the
module (gigaseg.engine.locality), exactness against whole-image autograd in float64 for models
that are not a gigaseg.UNet, N-channel uint16 / float32 inputs, and what is refused.

The reference is whole-image autograd on the model's input (``model_input``) zero-padded at the
bottom and right to a multiple of the derived total stride, the output cropped back: what the
engine promises for a model of the user's (docs/engine.md, "Any local model").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import grad_error, spawn_ranks
from torch import nn

from gigaseg import InputError, UnsupportedModelError, tiled_backward, tiled_predict
from gigaseg.engine import check_local, model_input, plan
from gigaseg.engine.locality import Geometry, analyze
from gigaseg.losses import IGNORE, loss_fn

TOL = 1e-9


# --- models written here (torchvision is not a dependency) ------------------------------------


class ResEncDec(nn.Module):
    """A residual encoder-decoder: strided convolutions down, transposed convolutions up, a
    residual sum at every level and a concatenated skip at full resolution."""

    def __init__(self, c_in: int = 3, classes: int = 1) -> None:
        super().__init__()
        self.stem = nn.Conv2d(c_in, 4, 3, padding=1)
        self.down1 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.res1 = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.GELU(), nn.Conv2d(6, 6, 3, padding=1))
        self.down2 = nn.Conv2d(6, 8, 4, stride=2, padding=1)
        self.res2 = nn.Conv2d(8, 8, 5, padding=2)
        self.up2 = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.head = nn.Conv2d(8, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = F.leaky_relu(self.stem(x))
        e1 = torch.relu(self.down1(e0))
        e1 = e1 + self.res1(e1)
        e2 = torch.tanh(self.down2(e1))
        e2 = e2 + F.silu(self.res2(e2))
        d1 = self.up2(e2) + e1
        d0 = F.relu(self.up1(d1))
        return self.head(torch.cat([d0, e0], dim=1))


class Dilated(nn.Module):
    """A dilated-convolution network (context module style) with a strided stem, max pooling and
    bilinear upsampling back to full resolution."""

    def __init__(self, c_in: int = 3, classes: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, 5, 3, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(5, 5, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(5, 5, 3, padding=4, dilation=4), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(5, 6, 3, padding="same", dilation=3), nn.Softplus(),
            nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False),
            nn.Conv2d(6, classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Block(nn.Module):
    """A ResNet basic block with frozen BatchNorm (eval mode, no gradient)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNetSeg(nn.Module):
    """A ResNet-style trunk (7 x 7 stride-2 stem, frozen BatchNorm, 3 x 3 stride-2 max pool,
    basic blocks) with a 1 x 1 head upsampled back to full resolution: torchvision's resnet
    layers, written here."""

    def __init__(self, c_in: int = 3, classes: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, 6, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = Block(6, 6, 1)
        self.layer2 = Block(6, 8, 2)
        self.head = nn.Conv2d(8, classes, 1)
        self.up = nn.Upsample(scale_factor=8, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.up(self.head(self.layer2(self.layer1(x))))


def _frozen_bn(model: nn.Module, seed: int) -> nn.Module:
    """Eval-mode BatchNorm with statistics and affine parameters far from the identity, frozen."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.randn(n, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
            m.eval()
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    return model


def _build(name: str, c_in: int = 3, classes: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model: nn.Module = {"resencdec": ResEncDec, "dilated": Dilated, "resnet": ResNetSeg}[name](c_in, classes)
    return _frozen_bn(model.double(), seed)


# --- the reference ---------------------------------------------------------------------------


def _data(h: int, w: int, c: int = 3, dtype: Any = np.uint8, classes: int = 1, seed: int = 0,
          ignore: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        image = rng.normal(0.0, 1.0, (h, w, c)).astype(np.float32)
    else:
        image = rng.integers(0, np.iinfo(dtype).max, (h, w, c), dtype=dtype, endpoint=True)
    cells = rng.integers(0, max(2, classes), (h // 6 + 1, w // 6 + 1)).astype(np.uint8)
    mask = np.kron(cells, np.ones((6, 6), np.uint8))[:h, :w].copy()
    if ignore:
        mask[rng.random((h, w)) < 0.05] = IGNORE
        mask[h // 3:h // 3 + 5, :] = IGNORE  # a band across tile borders
    return image, mask


def _whole(model: nn.Module, image: np.ndarray) -> torch.Tensor:
    """Whole-image logits as the engine defines them for a model of the user's."""
    s = analyze(model).total_stride
    h, w = image.shape[:2]
    x = model_input(image, dtype=torch.float64, multiple=s).contiguous()  # NOTE [Input layout]
    out: torch.Tensor = model(x)[..., :h, :w]
    return out


def _check(model: nn.Module, image: np.ndarray, mask: np.ndarray, loss: str, tile: Any) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    logits = _whole(model, image)
    target = torch.from_numpy(mask)[None] if logits.shape[1] > 1 else torch.from_numpy(mask)[None, None]
    ref = loss_fn(loss)(logits, target)
    ref.backward()
    ref_grads = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    value = tiled_backward(model, image, mask, loss=loss, tile=tile)
    assert value == pytest.approx(float(ref.detach()), rel=TOL, abs=TOL)
    return grad_error(model, ref_grads, TOL, f"{loss}, tile {tile}")


# --- the geometry ----------------------------------------------------------------------------


def test_derived_geometry_matches_hand_arithmetic():
    """(jump, lead, trail) per layer by hand (NOTE [Receptive field of a graph])."""
    g = analyze(_build("dilated"))
    # stem k3 s2 -> (2, 1, 0); d2 -> (2, 5, 4); d4 -> (2, 13, 12); max pool 2 -> (4, 13, 12);
    # 'same' d3 (pads 3) -> (4, 25, 24); bilinear x4 (phases read -1..0 or 0..1) -> (1, 30, 29)
    assert (g.total_stride, g.lead, g.trail, g.in_channels, g.out_channels, g.out_jump) == (4, 30, 29, 3, 1, 1)
    # stem k7 s2 -> (2, 3, 2); max pool 3 s2 -> (4, 5, 2); block 1 -> (4, 13, 10); block 2 (3 x 3 s2,
    # 3 x 3; 1 x 1 s2 shortcut) -> (8, 25, 18); nearest x8 -> (1, 32, 25)
    r = analyze(_build("resnet", c_in=4, classes=3))
    assert (r.total_stride, r.lead, r.trail, r.in_channels, r.out_channels) == (8, 32, 25, 4, 3)
    from gigaseg import UNet, preset

    unet = UNet(preset("tiny"))
    assert check_local(unet) is unet.config  # a UNet keeps its config's closed form


def test_derived_halo_is_tight_on_the_receptive_field():
    """The derived halo is what the input gradient of one output pixel reaches (a 1-channel
    linear network, so no activation hides a tap), not more."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 1, 5, stride=2, padding=2), nn.Conv2d(1, 1, 3, padding=2, dilation=2),
                          nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1)).double()
    g = analyze(model)
    n = 64
    x = torch.zeros(1, 1, n, n, dtype=torch.float64, requires_grad=True)
    reach_before, reach_after = 0, 0
    for i in (30, 31):  # both phases of the transposed convolution
        (grad,) = torch.autograd.grad(model(x)[0, 0, i, i], x)
        rows = torch.nonzero(grad[0, 0].abs().sum(1)).flatten()
        reach_before = max(reach_before, i - int(rows.min()))
        reach_after = max(reach_after, int(rows.max()) - i)
    assert (g.lead, g.trail) == (reach_before, reach_after)


def test_the_probe_refuses_a_halo_that_is_too_short():
    """NOTE [Probing the halo]: the check that guards the derivation fails on a geometry one
    stride short on either side, and passes on the derived one."""
    from gigaseg.engine.locality import _check_halo

    model = _build("dilated", seed=4)
    g = analyze(model)
    _check_halo(model, g)
    s = g.total_stride
    for lead, trail in ((g.lead - s, g.trail), (g.lead, g.trail - s)):
        short = Geometry(s, lead, trail, g.in_channels, g.out_channels, 1, g.floats_per_pixel)
        with pytest.raises(UnsupportedModelError, match="differ from the whole image's"):
            _check_halo(model, short)


# --- exactness -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, loss, size, tile", [
    ("resencdec", "bce+dice", (45, 70), 16),
    ("resencdec", "ce+dice", (37, 29), (8, 12)),
    ("dilated", "bce+dice", (53, 41), 12),
    ("dilated", "ce", (40, 40), 16),
    ("resnet", "bce+dice", (61, 50), 24),
    ("resnet", "ce+dice", (35, 70), (16, 32)),
])
def test_tiled_backward_equals_whole_image_autograd(name, loss, size, tile):
    classes = 3 if loss.startswith("ce") else 1
    model = _build(name, classes=classes)
    image, mask = _data(*size, classes=classes)
    _check(model, image, mask, loss, tile)


@pytest.mark.parametrize("name", ["resencdec", "dilated", "resnet"])
def test_tiled_predict_equals_the_whole_model(name):
    model = _build(name, classes=1, seed=1)
    image, _ = _data(47, 66, seed=1)
    with torch.no_grad():
        want = torch.sigmoid(_whole(model, image))[0, 0].numpy()
    got = tiled_predict(model, image, tile=16 if name != "resnet" else 24)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-12


def test_a_tile_without_halo_would_be_wrong():
    """Negative control: with the trailing halo cut by one stride the tiles disagree with the
    whole image, so the comparisons above can fail."""
    from gigaseg.engine import tiles

    model = _build("resencdec", seed=2)
    image, _ = _data(40, 40, seed=2)
    with torch.no_grad():
        want = torch.sigmoid(_whole(model, image))[0, 0].numpy()
    g = analyze(model)
    short = Geometry(g.total_stride, g.lead, g.trail - g.total_stride, g.in_channels, g.out_channels, 1,
                     g.floats_per_pixel)
    real = tiles._halos
    try:
        tiles._halos = lambda config: real(short) if config == g else real(config)  # type: ignore[assignment]
        got = tiled_predict(model, image, tile=8)
    finally:
        tiles._halos = real  # type: ignore[assignment]
    assert np.abs(got - want).max() > 1e-9  # against ~1e-16 with the derived halo


def test_float32_models_are_exact_to_float32_rounding():
    model = _build("resnet", classes=3, seed=7).float()
    image, mask = _data(45, 60, classes=3, seed=7)
    logits = model(model_input(image, multiple=8))[..., :45, :60]
    ref = loss_fn("ce+dice")(logits, torch.from_numpy(mask)[None])
    ref.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    want = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    assert tiled_backward(model, image, mask, loss="ce+dice", tile=16) == pytest.approx(float(ref.detach()), rel=1e-5)
    for p, g in zip(params, want):
        assert float((p.grad - g).norm() / g.norm()) <= 1e-4


def _ranks(rank: int, world: int) -> dict[str, Any]:
    import torch.distributed as dist

    model = _build("resencdec", c_in=5, classes=3, seed=8)
    image, mask = _data(41, 53, c=5, dtype=np.uint16, classes=3, seed=8)
    value = tiled_backward(model, image, mask, loss="ce+dice", tile=12, group=dist.group.WORLD)
    return {"loss": value, "grads": [p.grad.clone() for p in model.parameters() if p.requires_grad]}


def test_two_ranks_share_a_models_tiles(tmp_path):
    """A model of the user's, a 5-channel uint16 image and three classes over two gloo ranks."""
    model = _build("resencdec", c_in=5, classes=3, seed=8)
    image, mask = _data(41, 53, c=5, dtype=np.uint16, classes=3, seed=8)
    ref = loss_fn("ce+dice")(_whole(model, image), torch.from_numpy(mask)[None])
    ref.backward()
    want = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    for got in spawn_ranks(tmp_path, 2, _ranks):
        assert got["loss"] == pytest.approx(float(ref.detach()), rel=TOL)
        assert max(float((g - w).norm() / w.norm()) for g, w in zip(got["grads"], want)) <= TOL


def test_a_users_model_gets_contiguous_nchw_input():
    """NOTE [Input layout]: channels-last input made PyTorch's CPU weight gradient of a 1 x 1
    stride-2 convolution crash the process; a model of the user's gets NCHW, a UNet channels-last."""
    from gigaseg import UNet, preset

    seen: list[bool] = []
    hook = lambda module, args: seen.append(args[0].is_contiguous())  # noqa: E731
    image, mask = _data(40, 40)
    for model, want in ((_build("resnet"), True), (UNet(preset("tiny")).double(), False)):
        seen.clear()
        handle = model.register_forward_pre_hook(hook)
        tiled_backward(model, image, mask, tile=16)
        tiled_predict(model, image, tile=16)
        handle.remove()
        assert seen and all(v == want for v in seen)


# --- inputs: N channels, uint16, float32 -------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.uint8])
def test_five_channel_inputs_are_exact(dtype):
    model = _build("resencdec", c_in=5, classes=1, seed=3)
    image, mask = _data(39, 52, c=5, dtype=dtype, seed=3)
    _check(model, image, mask, "bce+dice", 16)


def test_uint16_is_scaled_to_its_full_range_and_float32_taken_as_it_is():
    image = np.array([[[0, 65535, 32768]]], np.uint16)
    assert model_input(image, dtype=torch.float64).flatten().tolist() == [0.0, 1.0, 32768 / 65535]
    f = np.array([[[-2.5, 7.0]]], np.float32)
    assert model_input(f, dtype=torch.float64).flatten().tolist() == [-2.5, 7.0]


def test_a_unet_takes_five_channel_uint16_too():
    import dataclasses

    from gigaseg import UNet, preset

    torch.manual_seed(5)
    model = UNet(dataclasses.replace(preset("tiny"), in_channels=5)).double()
    image, mask = _data(33, 47, c=5, dtype=np.uint16, seed=5)
    model.zero_grad(set_to_none=True)
    ref = loss_fn("bce+dice")(model(model_input(image, dtype=torch.float64)), torch.from_numpy(mask)[None, None])
    ref.backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    assert tiled_backward(model, image, mask, tile=16) == pytest.approx(float(ref.detach()), rel=TOL)
    for p, g in zip(model.parameters(), want):
        assert float((p.grad - g).norm() / g.norm()) <= TOL


def test_wrong_channels_and_dtypes_are_refused():
    model = _build("dilated", c_in=5)
    image, mask = _data(16, 16, c=3)
    with pytest.raises(InputError, match=r"3 channels .* the model takes 5"):
        tiled_backward(model, image, mask)
    with pytest.raises(InputError, match=r"uint8 \(/ 255\), uint16 .* or float32"):
        tiled_predict(model, np.zeros((16, 16, 5), np.int32))
    with pytest.raises(InputError, match=r"\(H, W, C\)"):
        tiled_predict(model, np.zeros((16, 16), np.uint8))


# --- what is refused -------------------------------------------------------------------------


class _Global(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.inner = nn.Sequential(nn.ReLU(), layer)
        self.out = nn.Conv2d(2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.inner(self.conv(x)))


class _MeanNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=(2, 3), keepdim=True)


class _Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if x.shape[-1] > 8 else -self.conv(x)


class _Positional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.pos = nn.Parameter(torch.zeros(1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + F.interpolate(self.pos, scale_factor=4)


@pytest.mark.parametrize("model, match", [
    (_Global(nn.BatchNorm2d(2)), r"'inner\.1' \(BatchNorm2d\) normalizes"),
    (_Global(nn.GroupNorm(1, 2)), r"'inner\.1' \(GroupNorm\)"),
    (_Global(nn.InstanceNorm2d(2)), r"'inner\.1' \(InstanceNorm2d\)"),
    (_Global(nn.AdaptiveAvgPool2d(1)), r"'inner\.1' \(AdaptiveAvgPool2d\) pools over the whole image"),
    (_Global(nn.Dropout2d(0.1)), r"'inner\.1' \(Dropout2d\) draws random masks"),
    (_Global(nn.Upsample(size=(8, 8))), r"'inner\.1' \(Upsample\) resizes to a fixed size"),
    (_Global(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)), "align_corners=True"),
    (_Global(nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")), "circular"),
    (_Global(nn.Conv2d(2, 2, 3)), r"'inner\.1' \(Conv2d\) gives shape .* shifts or trims the grid"),
    (_Global(_MeanNorm()), r"'inner\.1' \(_MeanNorm\), operation 'mean' reduces over dim"),
    (_Global(nn.Upsample(scale_factor=2)), "above the input.s resolution"),
    (_Branching(), "cannot be traced by torch.fx"),
    (_Positional(), "depend on absolute positions"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)), r"outputs at 1/2 of the input's resolution"),
])
def test_non_local_models_are_refused_with_the_module_named(model, match):
    model = model.double()
    model.train()
    image, mask = _data(16, 16)
    with pytest.raises(UnsupportedModelError, match=match):
        tiled_backward(model, image, mask)
    with pytest.raises(UnsupportedModelError, match=match):
        tiled_predict(model, image)
    assert all(p.grad is None for p in model.parameters())


class _WithOptions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        return self.conv(x) * scale


class _TwoInputs(_WithOptions):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.conv(x) + y


def test_arguments_with_defaults_are_left_to_them_and_a_second_input_refused():
    model = _WithOptions().double()
    image, _ = _data(20, 20)
    want = _whole(model, image)[0, 0].detach().numpy()
    assert np.abs(tiled_predict(model, image, tile=8, logits=True) - want).max() <= 1e-12
    with pytest.raises(UnsupportedModelError, match=r"takes more than one input \('y'\)"):
        analyze(_TwoInputs().double())


def test_eval_mode_makes_batchnorm_local_and_the_plan_takes_a_model():
    model = _global_bn_eval()
    assert check_local(model).total_stride == 1
    p = plan(model, 4000, 6000, memory_budget="1GB")
    assert p.halo == analyze(model).halo and p.grid[0] * p.grid[1] >= 1


def _global_bn_eval() -> nn.Module:
    return _Global(nn.BatchNorm2d(2)).double().eval()
