"""The compiled CPU kernels (gigaseg.engine._cpu_kernels), forward and backward, against the model itself."""

import numpy as np
import pytest
import torch

from gigaseg import tiled_backward, tiled_predict
from gigaseg.engine.forward import _fast_cpu
from gigaseg.model import UNet, UNetConfig, preset

K = pytest.importorskip("gigaseg.engine._cpu_kernels")
if K.numba is None:
    pytest.skip("numba is not installed: prediction uses PyTorch's kernels", allow_module_level=True)

CONFIGS = {
    "paper": preset("paper"),
    "tiny": preset("tiny"),
    # one level, ReLU, a 5 x 5 head (the general head kernel), an odd channel count
    "depth1": UNetConfig(depth=1, channels=(3,), strides=(2,), encoder_kernels=(5,), decoder_kernels=(5,),
                         activation="relu"),
    # first stride 8 with a 9 x 9 kernel, 3 x 3 head over 5 channels
    "stride8": UNetConfig(depth=2, channels=(5, 4), strides=(8, 2), encoder_kernels=(9, 3), decoder_kernels=(3, 3)),
}


def _logits(model, crop):
    with torch.no_grad():
        return model(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255)[0, 0]


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("hw", [(37, 45), (96, 128), (211, 300)])
def test_kernels_equal_the_model(name, hw):
    torch.manual_seed(3)
    model = UNet(CONFIGS[name]).eval()
    h, w = hw
    crop = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = _logits(model, crop)
    for rows, cols in [(slice(0, h), slice(0, w)), (slice(5, h - 3), slice(7, w - 2)), (slice(h - 1, h), slice(1, 2))]:
        got = K.predict_core(model, crop, rows, cols)
        assert got.shape == ref[rows, cols].shape
        torch.testing.assert_close(got, ref[rows, cols], rtol=1e-5, atol=1e-5)


def test_vectorized_exp_and_log_are_float32_accurate():
    v = np.concatenate([np.linspace(-87, 0, 100001), -np.logspace(-8, 0, 1001)]).astype(np.float32)
    e = np.array([K._exp_neg(x) for x in v])
    ref = np.exp(v.astype(np.float64))
    assert np.max(np.abs(e - ref) / ref) < 4e-7
    assert K._exp_neg(np.float32(0)) == 1 and 0 <= K._exp_neg(np.float32(-200)) < 1e-37
    u = np.concatenate([np.linspace(0, 1, 100001), np.logspace(-30, 0, 1001)]).astype(np.float32)
    got = np.array([K._log1p_unit(x) for x in u])
    ref = np.log1p(u.astype(np.float64))
    assert np.max(np.abs(got - ref) / np.maximum(ref, 1e-45)) < 4e-7 and K._log1p_unit(np.float32(0)) == 0


@pytest.mark.parametrize("s", [2, 4, 8])
def test_planar_input_is_the_crop_by_column_phase(s):
    crop = np.random.default_rng(s).integers(0, 256, (13, 22, 3), dtype=np.uint8)  # 22: not a multiple of s
    pr, lo = 7, 2
    xp = K._planar(crop, 32, 32, pr, lo, s)  # padded to 32 x 32 like the model's own padding
    assert xp.dtype == np.uint8 and xp.shape == (32 + 2 * pr, 3, s, 32 // s + 2 * lo)
    ref = np.zeros((32, 32, 3), np.uint8)
    ref[:13, :22] = crop
    n = 32 // s
    for p in range(s):
        # xp[r, c, p, j] = crop[r - pr, s (j - lo) + p, c]
        assert np.array_equal(xp[pr : pr + 32, :, p, lo : lo + n], ref[:, p::s, :].transpose(0, 2, 1))
    assert not xp[:pr].any() and not xp[pr + 32 :].any() and not xp[..., :lo].any() and not xp[..., lo + n :].any()


def test_who_gets_the_kernels(monkeypatch):
    cpu = torch.device("cpu")
    paper = UNet(preset("paper"))
    assert _fast_cpu(paper, torch.float32, cpu)
    assert not _fast_cpu(paper, torch.float64, cpu)  # the float64 exactness path stays PyTorch's
    assert not _fast_cpu(paper, torch.bfloat16, cpu)
    assert not _fast_cpu(paper, torch.float32, torch.device("cuda"))
    assert not _fast_cpu(UNet(UNetConfig(activation="gelu")), torch.float32, cpu)
    assert not _fast_cpu(UNet(UNetConfig(depth=1, channels=(2,), strides=(1,), encoder_kernels=(3,),
                                         decoder_kernels=(3,))), torch.float32, cpu)
    monkeypatch.setenv("GIGASEG_NO_CPU_KERNELS", "1")
    assert not _fast_cpu(paper, torch.float32, cpu)


def test_tiled_predict_is_the_same_with_and_without_kernels(monkeypatch):
    torch.manual_seed(5)
    model = UNet(preset("paper")).eval()
    image = np.random.default_rng(5).integers(0, 256, (300, 650, 3), dtype=np.uint8)
    fast = tiled_predict(model, image, tile=128)
    fast8 = tiled_predict(model, image, tile=128, out=np.empty((300, 650), np.uint8))
    monkeypatch.setenv("GIGASEG_NO_CPU_KERNELS", "1")
    slow = tiled_predict(model, image, tile=128)
    slow8 = tiled_predict(model, image, tile=128, out=np.empty((300, 650), np.uint8))
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    assert np.abs(fast8.astype(int) - slow8).max() <= 1
    ref = torch.sigmoid(_logits(model, image)).numpy()
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-6)


def test_a_compile_failure_falls_back_to_pytorch(monkeypatch):
    torch.manual_seed(2)
    model = UNet(preset("paper")).eval()
    image = np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    want = tiled_predict(model, image, tile=32)

    def broken(*args):
        raise K.numba.core.errors.TypingError("no implementation for this CPU")

    monkeypatch.setattr(K, "_planar", broken)
    monkeypatch.setattr(K, "_BROKEN", [])
    with pytest.warns(RuntimeWarning, match="could not compile the CPU kernels.*PyTorch's kernels"):
        got = tiled_predict(model, image, tile=32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not _fast_cpu(model, torch.float32, torch.device("cpu"))  # off for the rest of the process


@pytest.mark.parametrize("loss, kernel", [
    ("bce", "_planar"),  # the crop's rearrangement fails: no kernel at all
    ("bce", "_head_weight_grad"),  # the backward fails after the crop was handed over
    ("bce+dice", "_loss_sums"),  # the first pass fails after the crop was handed over
])
def test_a_compile_failure_in_training_falls_back_to_pytorch(monkeypatch, loss, kernel):
    torch.manual_seed(2)
    model = UNet(preset("paper"))
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    mask = (rng.random((70, 90)) < 0.5).astype(np.uint8)
    want_value = tiled_backward(model, image, mask, loss=loss, tile=32)
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    def broken(*args):
        raise K.numba.core.errors.TypingError("no implementation for this CPU")

    monkeypatch.setattr(K, kernel, broken)
    monkeypatch.setattr(K, "_BROKEN", [])
    with pytest.warns(RuntimeWarning, match="could not compile the CPU kernels"):
        got_value = tiled_backward(model, image, mask, loss=loss, tile=32)
    assert got_value == pytest.approx(want_value, rel=1e-6)
    for p, g in zip(model.parameters(), want):
        assert _rel(p.grad, g) <= 1e-5


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("hw", [(37, 45), (211, 300)])
def test_backward_kernels_equal_autograd(name, hw):
    torch.manual_seed(4)
    model = UNet(CONFIGS[name])
    params = list(model.parameters())
    h, w = hw
    crop = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = (np.random.default_rng(1).random((h, w)) < 0.4).astype(np.uint8)
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    weights = K.LossWeights(bce=1 / 3000, inter=-0.02, p_coef=0.003)
    # the whole crop, an off-stride window, one pixel at the edge
    for rows, cols in [(slice(0, h), slice(0, w)), (slice(5, h - 3), slice(7, w - 2)), (slice(h - 1, h), slice(1, 2))]:
        y_np = np.ascontiguousarray(mask[rows, cols])
        got, bce = K.backward_core(model, K.tile_input(model, crop), rows, cols, y_np, weights, bce_sum=True)
        z = model(x)[0, 0][rows, cols]
        y = torch.from_numpy(y_np).float()
        p = torch.sigmoid(z.detach())
        grad_z = weights.bce * (p - y) + (weights.inter * y + weights.p_coef) * p * (1 - p)
        want = torch.autograd.grad(z, params, grad_z)
        assert set(got) == set(params)
        for p, g in zip(params, want):
            assert got[p].shape == p.shape and got[p].dtype == torch.float32
            assert _rel(got[p], g) <= 2e-5
        bce_ref = torch.nn.functional.binary_cross_entropy_with_logits(z.detach().double(), y.double(), reduction="sum")
        assert bce == pytest.approx(float(bce_ref), rel=1e-5)
        sums = K.core_sums(model, K.tile_input(model, crop), rows, cols, y_np, bce=True)
        p = torch.sigmoid(z.detach().double())
        assert sums == pytest.approx((float((p * y).sum()), float(p.sum()), float(bce_ref)), rel=1e-5)


@pytest.mark.parametrize("loss", ["bce", "dice", "bce+dice"])
def test_tiled_backward_is_the_same_with_and_without_kernels(monkeypatch, loss):
    torch.manual_seed(6)
    model = UNet(preset("paper"))
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, (200, 330, 3), dtype=np.uint8)
    mask = (rng.random((200, 330)) < 0.5).astype(np.uint8)

    def run():
        model.zero_grad(set_to_none=True)
        value = tiled_backward(model, image, mask, loss=loss, tile=96)
        return value, [p.grad.clone() for p in model.parameters()]

    fast_value, fast = run()
    monkeypatch.setenv("GIGASEG_NO_CPU_KERNELS", "1")
    slow_value, slow = run()
    assert fast_value == pytest.approx(slow_value, rel=1e-6)
    for g_fast, g_slow in zip(fast, slow):
        assert _rel(g_fast, g_slow) <= 1e-5


def test_backward_kernels_with_frozen_layers():
    """Frozen parameters get no gradient; the others the same as with everything trainable."""
    torch.manual_seed(7)
    model = UNet(preset("paper"))
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (150, 170, 3), dtype=np.uint8)
    mask = (rng.random((150, 170)) < 0.5).astype(np.uint8)
    tiled_backward(model, image, mask, tile=64)
    want = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(("encoder.1.", "decoder.")))
    tiled_backward(model, image, mask, tile=64)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert _rel(p.grad, want[name]) <= 1e-6, name
        else:
            assert p.grad is None, name
