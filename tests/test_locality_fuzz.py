"""The geometry that gigaseg.engine.locality derives, on random stacks of local layers.

hypothesis builds networks of strided, dilated and 'same' convolutions, transposed convolutions,
average and max pooling and nearest / bilinear upsampling (a fixed number of examples,
derandomized, so a run is repeatable). For each:

- without activations and max pooling (a linear network: no tap is ever zero), the derived lead
  and trail cover the reach of the input gradient of the output pixels of every phase, measured
  with autograd: the derivation is never short (a short halo would be inexact). It can be loose
  where phases cancel (an upsampling by 2 then a pooling by 2 reads one block, but the per-tensor
  reach, the same for every phase, counts a pixel on each side: NOTE [Receptive field of a
  graph]); on the test models of test_any_model it is tight;
- with activations, ``tiled_predict`` over tiles of one or two strides equals the whole model in
  float64 (<= 1e-12).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import in_ci
from torch import nn

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # the test extra installs it; CI must have it
    if in_ci():
        raise
    pytest.skip("needs hypothesis: pip install 'gigaseg[test]'", allow_module_level=True)

from gigaseg import tiled_predict
from gigaseg.engine import model_input
from gigaseg.engine.locality import analyze

_SETTINGS = {"deadline": None, "derandomize": True, "database": None, "max_examples": 40,
             "suppress_health_check": [HealthCheck.too_slow]}
_C = 2  # channels between layers


def _down(draw: st.DrawFn, linear: bool) -> nn.Module:
    kind = draw(st.sampled_from(["conv", "avgpool"] if linear else ["conv", "avgpool", "maxpool"]))
    if kind == "avgpool":
        return nn.AvgPool2d(2)
    if kind == "maxpool":
        return nn.MaxPool2d(3, stride=2, padding=1)
    k, d = draw(st.integers(1, 5)), draw(st.integers(1, 2))
    return nn.Conv2d(_C, _C, k, stride=2, padding=d * (k - 1) // 2, dilation=d)


def _up(draw: st.DrawFn) -> nn.Module:
    kind = draw(st.sampled_from(["transposed", "nearest", "bilinear"]))
    if kind == "nearest":
        return nn.Upsample(scale_factor=2, mode="nearest")
    if kind == "bilinear":
        return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    k = draw(st.integers(2, 4))
    p = {2: 0, 3: 1, 4: 1}[k]  # output (L - 1) 2 - 2p + k + op = 2L
    return nn.ConvTranspose2d(_C, _C, k, stride=2, padding=p, output_padding=1 + 2 * p - k + 1)


def _same(draw: st.DrawFn) -> nn.Module:
    k, d = draw(st.sampled_from([(1, 1), (3, 1), (3, 2), (5, 1), (3, 3), (2, 2), (4, 2)]))
    return nn.Conv2d(_C, _C, k, padding="same", dilation=d)


@st.composite
def _network(draw: st.DrawFn, linear: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(1, _C, draw(st.sampled_from([1, 3])), padding="same")]
    jump = 1
    for _ in range(draw(st.integers(1, 5))):
        step = draw(st.sampled_from(["down", "up", "same"]))
        if step == "down" and jump < 8:
            layers.append(_down(draw, linear))
            jump *= 2
        elif step == "up" and jump > 1:
            layers.append(_up(draw))
            jump //= 2
        else:
            layers.append(_same(draw))
        if not linear:
            layers.append(nn.Tanh())
    while jump > 1:
        layers.append(_up(draw))
        jump //= 2
    layers.append(nn.Conv2d(_C, 1, 1))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    return nn.Sequential(*layers).double().eval()


def _reach(model: nn.Module, stride: int, lead: int, trail: int) -> tuple[int, int]:
    """(how far before, how far after) the input gradients of output pixels of every phase reach."""
    n = stride * (-(-(lead + trail + 1) // stride) + 4)
    x = torch.zeros(1, 1, n, n, dtype=torch.float64, requires_grad=True)
    out = model(x)
    mid = stride * (n // (2 * stride))
    before = after = 0
    for i in range(mid, mid + stride):
        (grad,) = torch.autograd.grad(out[0, 0, i, mid], x, retain_graph=True)
        rows = torch.nonzero(grad[0, 0].abs().sum(1)).flatten()
        if len(rows):
            before, after = max(before, i - int(rows.min())), max(after, int(rows.max()) - i)
    return before, after


@settings(**_SETTINGS)
@given(_network(linear=True))
def test_derived_halo_is_the_gradients_reach(model):
    g = analyze(model)
    before, after = _reach(model, g.total_stride, g.lead, g.trail)
    assert g.lead >= before and g.trail >= after, (g, before, after, model)


@settings(**_SETTINGS)
@given(_network(linear=False), st.integers(1, 2), st.integers(0, 2**16))
def test_tiles_equal_the_whole_model(model, strides, seed):
    g = analyze(model)
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(g.total_stride, 4 * g.total_stride + g.halo, 2))
    image = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
    with torch.no_grad():
        want = model(model_input(image, dtype=torch.float64, multiple=g.total_stride))[0, 0, :h, :w]
    got = tiled_predict(model, image, tile=strides * g.total_stride, logits=True)
    assert np.abs(got - want.numpy()).max() <= 1e-12, model
