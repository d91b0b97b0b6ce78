"""The engine, prediction and training on an accelerator (CUDA, or Apple MPS).

Excluded from the default run (marker ``gpu``); run them on a machine that has one with
``pytest -m gpu``. Each test compares with a float64 whole-image reference computed on the CPU.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from gigaseg import UNet, load_model, preset, tiled_backward, tiled_predict
from gigaseg.engine import resolve_device
from gigaseg.losses import loss_fn


def _accelerator() -> str | None:
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return None


DEVICE = _accelerator()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE is None, reason="no CUDA or MPS device in this PyTorch"),
]


@contextlib.contextmanager
def _ieee_float32():
    """Plain float32 convolutions: cuDNN's default TF32 rounds operands to 10 mantissa bits."""
    if DEVICE != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def _data(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
    return image, mask


def _reference(model: UNet, image: np.ndarray, mask: np.ndarray, loss: str) -> tuple[float, list[torch.Tensor]]:
    """Whole-image autograd in float64 on the CPU."""
    ref = UNet(model.config).double()
    ref.load_state_dict({k: v.detach().cpu().double() for k, v in model.state_dict().items()})
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).double() / 255
    value = loss_fn(loss)(ref(x), torch.from_numpy(mask)[None, None].double())
    value.backward()
    return float(value.detach()), [p.grad for p in ref.parameters()]


@pytest.mark.parametrize("loss", ["bce", "dice", "bce+dice"])
def test_tiled_backward_on_the_accelerator_matches_a_float64_cpu_reference(loss):
    image, mask = _data(300, 460)
    torch.manual_seed(0)
    model = UNet(preset("paper")).to(DEVICE)
    ref_value, ref_grads = _reference(model, image, mask, loss)
    with _ieee_float32():
        value = tiled_backward(model, image, mask, loss=loss, tile=96)
    for p, g in zip(model.parameters(), ref_grads):
        assert p.grad.device.type == DEVICE
        err = float((p.grad.cpu().double() - g).norm() / g.norm())
        assert err < 1e-4, err
    assert value == pytest.approx(ref_value, rel=1e-5)


def test_tiled_backward_on_the_accelerator_equals_whole_image_autograd_there():
    # the same device and dtype on both sides: only the summation order differs
    image, mask = _data(256, 384, seed=1)
    torch.manual_seed(1)
    model = UNet(preset("paper")).to(DEVICE)
    with _ieee_float32():
        x = torch.from_numpy(image).to(DEVICE).permute(2, 0, 1).unsqueeze(0).float() / 255
        y = torch.from_numpy(mask).to(DEVICE)[None, None].float()
        loss_fn("bce+dice")(model(x), y).backward()
        whole = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        tiled_backward(model, image, mask, tile=64)
    for p, g in zip(model.parameters(), whole):
        assert float((p.grad - g).norm() / g.norm()) < 1e-4


def test_tiled_predict_on_the_accelerator_matches_the_cpu():
    image, _ = _data(333, 517, seed=2)
    torch.manual_seed(2)
    model = UNet(preset("paper"))
    on_cpu = tiled_predict(model.double(), image, tile=128)
    model.float().to(DEVICE)
    with _ieee_float32():
        probs = tiled_predict(model, image, tile=96)
        as_uint8 = tiled_predict(model, image, tile=96, out=np.zeros((333, 517), np.uint8))
    assert np.abs(probs - on_cpu).max() < 1e-5
    assert np.abs(as_uint8.astype(int) - np.round(on_cpu * 255)).max() <= 1


def test_device_auto_picks_the_accelerator():
    assert resolve_device("auto").type == DEVICE


def test_bench_step_reports_device_memory():
    from gigaseg.bench.step import bench_step

    r = bench_step(256, 384, device=DEVICE, steps=1, warmup=0, tile=128)
    assert r["device"].startswith(DEVICE)
    if DEVICE == "cuda":
        assert r["cuda_max_allocated_bytes"] > 0
        assert r["cuda_device"]


def test_training_on_the_accelerator_checkpoints_a_model_the_cpu_can_load(tmp_path):
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore
    from gigaseg.training import TrainConfig, train

    store = RegionStore.create(tmp_path / "store")
    prepare_synthetic(store, 3, (160, 128), seed=5, val=1, progress=False)
    result = train(TrainConfig(data=str(store.path), out=str(tmp_path / "run"), preset="tiny", steps=4, lr=0.02,
                               warmup=1, val_every=2, ckpt_every=2, progress=False, device=DEVICE))
    assert result["step"] == 4 and np.isfinite(result["loss"])
    assert result["device"].startswith(DEVICE)
    model, _ = load_model(tmp_path / "run" / "checkpoint.pt", device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())
    image, _ = _data(128, 160, seed=3)
    probs = tiled_predict(model, image)
    assert probs.shape == (128, 160) and np.isfinite(probs).all()

