"""Tiled vs whole-image equivalence: loss value, logits and every parameter gradient.

float64: each parameter tensor's relative error ||g_tiled - g_ref|| / ||g_ref|| <= 1e-9;
float32: <= 1e-4.
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np
import pytest
import torch
from torch import nn

from gigaseg import (
    ConfigError,
    InputError,
    PlanError,
    UNet,
    UNetConfig,
    UnsupportedModelError,
    plan,
    preset,
    tiled_backward,
    tiled_predict,
)
from gigaseg.engine import resolve_device
from gigaseg.losses import loss_fn

TOL = {torch.float64: 1e-9, torch.float32: 1e-4}

CONFIGS = {
    "paper": preset("paper"),  # depth 3, strides 4/4/2, kernels 15/11/7
    "tiny": preset("tiny"),  # depth 2, stride 2
    "d1-s8-k15": UNetConfig(1, (3,), (8,), (15,), (5,)),
    "d2-s4-k13": UNetConfig(2, (2, 3), (4, 2), (13, 5), (3, 5), activation="gelu"),
    "d4-s2-k3..9": UNetConfig(4, (2, 3, 4, 5), (2, 2, 2, 2), (3, 5, 7, 9), (3, 5, 3, 7), activation="elu"),
    "d3-s8-k3": UNetConfig(3, (2, 2, 3), (2, 8, 2), (3, 3, 3), (3, 3, 3), activation="tanh"),
}


def _data(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
    return image, mask


def _reference(model: UNet, image: np.ndarray, mask: np.ndarray, loss: str):
    dtype = next(model.parameters()).dtype
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).to(dtype) / 255
    model.zero_grad(set_to_none=True)
    logits = model(x)
    value = loss_fn(loss)(logits, torch.from_numpy(mask)[None, None])
    value.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return float(value.detach()), logits.detach()[0, 0], grads


def _check(model, image, mask, loss, tile, dtype):
    ref_loss, ref_logits, ref_grads = _reference(model, image, mask, loss)
    value = tiled_backward(model, image, mask, loss=loss, tile=tile)
    tol = TOL[dtype]
    assert value == pytest.approx(ref_loss, rel=tol, abs=tol)
    for (name, p), g in zip(model.named_parameters(), ref_grads):
        assert float(g.norm()) > 0, f"{name}: the reference gradient is zero; pick another seed"
        err = float((p.grad - g).norm() / g.norm())
        assert err <= tol, f"{name}: relative gradient error {err:.2e} > {tol:.0e}"
    logits = tiled_predict(model, image, tile=tile, logits=True)
    assert logits.dtype == (np.float64 if dtype == torch.float64 else np.float32)
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("loss", ["bce", "dice", "bce+dice"])
def test_tiled_equals_whole_image_float64(name, loss):
    config = CONFIGS[name]
    s = config.total_stride
    torch.manual_seed(0)
    model = UNet(config).double()
    # not a multiple of the stride, several tiles in both directions, a partial last tile
    h, w = 3 * s + config.halo + 5, 2 * s + 2 * config.halo + 3
    image, mask = _data(h, w)
    _check(model, image, mask, loss, tile=s * max(1, 64 // s), dtype=torch.float64)


@pytest.mark.parametrize("name", ["paper", "d4-s2-k3..9"])
def test_tiled_equals_whole_image_float32(name):
    torch.manual_seed(1)
    model = UNet(CONFIGS[name])
    image, mask = _data(300, 170, seed=1)
    _check(model, image, mask, "bce+dice", tile=64, dtype=torch.float32)


@pytest.mark.parametrize("tile", [32, 64, (96, 32), (32, 160), 512])
def test_several_tile_sizes(tile):
    torch.manual_seed(2)
    model = UNet(preset("paper")).double()
    image, mask = _data(150, 230, seed=2)
    _check(model, image, mask, "bce+dice", tile=tile, dtype=torch.float64)


def test_image_smaller_than_one_tile():
    torch.manual_seed(3)
    model = UNet(preset("paper")).double()
    image, mask = _data(19, 27, seed=3)
    _check(model, image, mask, "bce+dice", tile=64, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(40, 600), (600, 40), (1, 200), (200, 1)])
def test_one_by_n_grids(shape):
    torch.manual_seed(4)
    model = UNet(preset("paper")).double()
    image, mask = _data(*shape, seed=4)
    _check(model, image, mask, "bce+dice", tile=64, dtype=torch.float64)


def test_planner_tile_gives_same_result():
    torch.manual_seed(5)
    model = UNet(preset("paper")).double()
    image, mask = _data(200, 260, seed=5)
    _check(model, image, mask, "bce+dice", tile=None, dtype=torch.float64)


def test_gradients_accumulate_like_backward():
    torch.manual_seed(6)
    model = UNet(preset("tiny")).double()
    image, mask = _data(40, 52, seed=6)
    _, _, ref = _reference(model, image, mask, "bce")
    tiled_backward(model, image, mask, loss="bce", tile=8)
    tiled_backward(model, image, mask, loss="bce", tile=16)
    for p, g in zip(model.parameters(), ref):
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-9, atol=1e-12)


def test_predict_probabilities_and_out_arrays(tmp_path):
    torch.manual_seed(7)
    model = UNet(preset("paper"))
    image, _ = _data(130, 75, seed=7)
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float() / 255
    with torch.no_grad():
        ref = torch.sigmoid(model(x))[0, 0].numpy()
    np.testing.assert_allclose(tiled_predict(model, image, tile=32), ref, rtol=1e-5, atol=1e-6)
    out = np.lib.format.open_memmap(tmp_path / "p.npy", mode="w+", dtype=np.float32, shape=(130, 75))
    assert tiled_predict(model, image, out=out, tile=64) is out
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    out8 = tiled_predict(model, image, out=np.zeros((130, 75), np.uint8), tile=64)
    assert np.abs(out8.astype(int) - np.round(ref * 255)).max() <= 1
    with pytest.raises(InputError, match="shape"):
        tiled_predict(model, image, out=np.zeros((10, 10), np.float32))


class _TileOnly:
    """An array-like that serves slices only up to a size, to prove tile-by-tile reading."""

    def __init__(self, array: np.ndarray, max_pixels: int) -> None:
        self.array, self.max_pixels = array, max_pixels
        self.shape, self.dtype, self.largest = array.shape, array.dtype, 0

    def __getitem__(self, key):
        out = self.array[key]
        pixels = out.shape[0] * out.shape[1]
        self.largest = max(self.largest, pixels)
        if pixels > self.max_pixels:
            raise AssertionError(f"read {pixels} pixels at once")
        return out

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was materialized")


def test_reads_tile_by_tile():
    model = UNet(preset("paper"))
    image, mask = _data(512, 640)
    crop = (128 + 128 + 127) ** 2
    img, msk = _TileOnly(image, crop), _TileOnly(mask, 128 * 128)
    tiled_backward(model, img, msk, tile=128)
    tiled_predict(model, img, tile=128)
    assert 0 < img.largest <= crop


class _CountingReads(_TileOnly):
    def __init__(self, array: np.ndarray) -> None:
        super().__init__(array, array.shape[0] * array.shape[1])
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return super().__getitem__(key)


@pytest.mark.parametrize("case", ["cached", "disk-full", "tmpfs", "no-room", "explicit-folder"])
def test_expensive_images_are_read_once_per_step(monkeypatch, tmp_path, case):
    """NOTE [Crop cache]: pass 2 of the Dice loss takes pass 1's crops from a scratch file
    instead of reading a non-numpy image again; same bytes, so the same gradients bit for bit.
    If the scratch file cannot be written, the temporary folder is in RAM or lacks room, the
    image is read again; GIGASEG_SCRATCH names a folder to use whatever it is."""
    import errno
    from collections import namedtuple

    from gigaseg.engine import reading as engine

    monkeypatch.delenv("GIGASEG_SCRATCH", raising=False)
    if case == "disk-full":
        def no_space(*args):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(engine.os, "pwrite", no_space)
    if case in ("tmpfs", "explicit-folder"):
        monkeypatch.setattr(engine, "_file_system_type", lambda folder: "tmpfs")
    if case == "explicit-folder":
        monkeypatch.setenv("GIGASEG_SCRATCH", str(tmp_path))
    if case == "no-room":
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(engine.shutil, "disk_usage", lambda folder: usage(2**31, 2**31 - 2**20, 2**20))
    torch.manual_seed(3)
    model = UNet(preset("tiny")).double()
    image, mask = _data(70, 90, seed=3)
    tiled_backward(model, image, mask, tile=32)
    direct = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    img, msk = _CountingReads(image), _CountingReads(mask)
    tiles = 3 * 3
    tiled_backward(model, img, msk, tile=32)
    for p, g in zip(model.parameters(), direct):
        assert torch.equal(p.grad, g)
    once = case in ("cached", "explicit-folder")
    assert (img.reads, msk.reads) == ((tiles, tiles) if once else (2 * tiles, 2 * tiles))


def test_memmap_input(tmp_path):
    torch.manual_seed(8)
    model = UNet(preset("tiny")).double()
    image, mask = _data(60, 90, seed=8)
    np.save(tmp_path / "i.npy", image)
    np.save(tmp_path / "m.npy", mask)
    img = np.load(tmp_path / "i.npy", mmap_mode="r")
    msk = np.load(tmp_path / "m.npy", mmap_mode="r")
    _, _, ref = _reference(model, image, mask, "bce+dice")
    tiled_backward(model, img, msk, tile=16)
    for p, g in zip(model.parameters(), ref):
        assert float((p.grad - g).norm() / g.norm()) <= 1e-9


# --- bad input: a clear exception and .grad untouched ------------------------------------


def _model_with_grads(layer: nn.Module | None = None):
    torch.manual_seed(9)
    model = UNet(preset("paper"))
    if layer is not None:
        model.encoder[0].act = layer
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model, [p.grad.clone() for p in model.parameters()]


def _assert_untouched(model, before):
    for p, g in zip(model.parameters(), before):
        assert torch.equal(p.grad, g)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda i, m: (i.astype(np.float64), m), r"uint8 \(/ 255\), uint16 \(/ 65535\) or float32"),
        (lambda i, m: (np.concatenate([i, i[..., :1]], axis=2), m), r"4 channels .* the model takes 3.*alpha"),
        (lambda i, m: (i[..., 0], m), r"\(H, W, C\)"),
        (lambda i, m: (i, m[:-1]), "does not match"),
        (lambda i, m: (i, m.astype(np.float32)), "uint8"),
        (lambda i, m: (i[:0], m[:0]), "empty"),
        (lambda i, m: (i, np.where(m == 1, 7, 0).astype(np.uint8)), "not 0, 1 or 255"),
        (lambda i, m: ([[1, 2, 3]], m), "array-like"),
    ],
    ids=["float-image", "four-channels", "greyscale", "mask-shape", "mask-dtype", "empty", "mask-7", "list"],
)
def test_bad_input_leaves_grad_untouched(make, match):
    model, before = _model_with_grads()
    image, mask = make(*_data(100, 120))
    with pytest.raises(InputError, match=match):
        tiled_backward(model, image, mask, tile=32)
    _assert_untouched(model, before)


@pytest.mark.parametrize("loss", ["bce", "bce+dice"])
def test_error_in_the_last_tile_leaves_grad_untouched(loss):
    model, before = _model_with_grads()
    image, mask = _data(100, 120)
    mask[-1, -1] = 2  # only the last tile holds it: earlier tiles have run
    with pytest.raises(InputError, match=r"mask value 2 at \(x=119, y=99\)"):
        tiled_backward(model, image, mask, tile=32, loss=loss)
    _assert_untouched(model, before)


def test_bad_options():
    model, before = _model_with_grads()
    image, mask = _data(64, 64)
    with pytest.raises(ConfigError, match="unknown loss 'focal'.*bce"):
        tiled_backward(model, image, mask, loss="focal")
    with pytest.raises(ConfigError, match="multiple of the model's total stride 32; use 32"):
        tiled_backward(model, image, mask, tile=40)
    with pytest.raises(ConfigError, match="memory size"):
        tiled_backward(model, image, mask, memory_budget="lots")
    _assert_untouched(model, before)


@pytest.mark.parametrize(
    "layer, match",
    [
        (nn.BatchNorm2d(2), r"'encoder\.0\.act' \(BatchNorm2d\)"),
        (nn.GroupNorm(1, 2), r"'encoder\.0\.act' \(GroupNorm\)"),
        (nn.InstanceNorm2d(2), r"'encoder\.0\.act' \(InstanceNorm2d\)"),
        (nn.AdaptiveAvgPool2d(1), r"'encoder\.0\.act' \(AdaptiveAvgPool2d\)"),
        (nn.Dropout2d(0.1), r"'encoder\.0\.act' \(Dropout2d\)"),
        (nn.Upsample(scale_factor=2, mode="bilinear"), r"'encoder\.0\.act' \(Upsample\) is not known to be local"),
    ],
)
def test_non_local_layers_are_refused(layer, match):
    model, before = _model_with_grads(layer)
    image, mask = _data(64, 64)
    with pytest.raises(UnsupportedModelError, match=match):
        tiled_backward(model, image, mask)
    with pytest.raises(UnsupportedModelError, match=match):
        tiled_predict(model, image)
    _assert_untouched(model, before)


def test_eval_mode_batchnorm_is_tiled_exactly_and_other_models_refused():
    """Eval-mode BatchNorm is an affine map: tiled results equal the whole model's, float64."""
    torch.manual_seed(4)
    model = UNet(preset("tiny")).double()
    bn = nn.BatchNorm2d(2).double()
    with torch.no_grad():  # statistics and affine parameters far from the identity
        bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0]))
        bn.weight.copy_(torch.tensor([1.7, -0.6]))
        bn.bias.copy_(torch.tensor([0.1, 0.4]))
    model.encoder[0].act = bn.eval()
    image, mask = _data(45, 70, seed=4)
    _check(model, image, mask, "bce+dice", tile=16, dtype=torch.float64)
    assert float(bn.weight.grad.norm()) > 0  # its parameters are trained through the tiles too
    # a model of the user's is tiled when its graph is local (tests/test_any_model.py), else refused
    with pytest.raises(UnsupportedModelError, match=r"'1' \(GroupNorm\)"):
        tiled_predict(nn.Sequential(nn.Conv2d(3, 1, 3, padding=1), nn.GroupNorm(1, 1)), _data(16, 16)[0])


# --- planner and devices --------------------------------------------------------------------


def test_plan_fits_budget_and_grid():
    config = preset("paper")
    p = plan(config, 16000, 64000, memory_budget="2GB")
    assert p.predicted_peak_bytes <= 2e9
    assert p.tile[0] % 32 == 0 and p.tile[1] % 32 == 0
    assert p.grid == (-(-16000 // p.tile[0]), -(-64000 // p.tile[1]))
    bigger = plan(config, 16000, 64000, memory_budget="8GB")
    assert bigger.tile[0] * bigger.tile[1] > p.tile[0] * p.tile[1]
    assert bigger.recompute < p.recompute
    thin = plan(config, 40, 100000, memory_budget="1GB")
    assert thin.tile[0] == 64 and thin.grid[0] == 1 and thin.tile[1] > 1000
    assert plan(config, 100, 100, mode="predict").grid == (1, 1)
    assert "recomputed" in p.keep and p.to_dict()["n_tiles"] == p.n_tiles


def test_plan_counts_crops_clipped_at_the_image_border():
    """NOTE [Clipped crops]: a region of one tile is its own crop, however wide the halo; a large
    image's interior crops carry both halos whole."""
    from gigaseg.engine.planner import _peak_bytes

    deep = UNetConfig(depth=5, channels=(8, 16, 32, 32, 32), strides=(4, 4, 2, 2, 2),
                      encoder_kernels=(15, 11, 7, 5, 5), decoder_kernels=(3, 3, 3, 3, 3),
                      input_shift=0.8, input_scale=4.0)
    assert deep.halo > 500
    one = plan(deep, 1024, 1024)  # the built-in model's training regions, one level deeper
    assert one.grid == (1, 1) and one.recompute == 1.0
    assert one.predicted_peak_bytes == _peak_bytes(deep, 1024, 1024, 4, "train", image=(1024, 1024))
    assert one.predicted_peak_bytes < _peak_bytes(deep, 1024, 1024, 4, "train") <= 1.5 * 2**30
    big = plan(preset("paper"), 16000, 64000)
    assert min(big.grid) >= 3  # interior tiles: the unclipped count
    assert big.predicted_peak_bytes == _peak_bytes(preset("paper"), *big.tile, 4, "train")


def test_plan_caps_cuda_training_crops_but_not_prediction_or_the_cpu():
    from gigaseg.engine import CUDA_MAX_TRAIN_CROP_PIXELS
    from gigaseg.engine.tiles import _halos

    config = preset("paper")
    halo = sum(_halos(config))
    capped = plan(config, 16000, 64000, memory_budget="64GB", device="cuda")
    th, tw = capped.tile
    assert (th + halo) * (tw + halo) <= CUDA_MAX_TRAIN_CROP_PIXELS < (th + 32 + halo) * (tw + 32 + halo)
    assert capped.max_crop_pixels == CUDA_MAX_TRAIN_CROP_PIXELS
    free = plan(config, 16000, 64000, memory_budget="64GB", device="cpu")
    assert free.tile[0] * free.tile[1] > 4 * th * tw and free.max_crop_pixels is None
    assert plan(config, 16000, 64000, memory_budget="64GB", mode="predict", device="cuda").tile > capped.tile
    # a budget smaller than the cap decides alone
    assert plan(config, 16000, 64000, device="cuda").tile == plan(config, 16000, 64000).tile
    assert plan(config, 16000, 64000, memory_budget="64GB", device="auto").tile in (capped.tile, free.tile)
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        plan(config, 100, 100, device="gpu")


def test_plan_error_names_the_smallest_budget():
    with pytest.raises(PlanError, match=r"give `memory_budget='\d+MiB'` or more"):
        plan(preset("paper"), 16000, 64000, memory_budget="100MB")
    with pytest.raises(InputError, match="empty"):
        plan(preset("paper"), 0, 10)
    with pytest.raises(ConfigError, match="mode"):
        plan(preset("paper"), 10, 10, mode="fast")


def test_devices():
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    assert resolve_device(None).type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu9")


def test_read_ahead_keeps_order_and_raises_at_the_failing_tile():
    """NOTE [Read ahead]: with several readers tiles still come in order, a reader's error is
    raised at its tile, and reads not yet started are dropped when the caller stops."""
    import threading
    import time

    from gigaseg.engine.reading import _read_ahead

    tiles = list(range(10))

    def slow_read(t):
        time.sleep(0.02 * ((7 * t) % 3))  # finish out of order
        return t * t

    for workers in (1, 3, 8, 20):
        assert list(_read_ahead(tiles, slow_read, workers)) == [(t, t * t) for t in tiles]

    started = []
    lock = threading.Lock()

    def failing_read(t):
        with lock:
            started.append(t)
        if t == 4:
            raise InputError("bad tile 4")
        return t

    got = []
    with pytest.raises(InputError, match="bad tile 4"):
        for t, _ in _read_ahead(tiles, failing_read, 3):
            got.append(t)
    assert got == [0, 1, 2, 3]
    assert max(started) <= 4 + 3  # at most `workers` reads ahead of the failing tile


def test_read_workers_do_not_change_results_and_are_checked():
    from gigaseg.dataset import DIHEDRAL, RegionView, StainJitter
    from gigaseg.engine import default_read_workers

    torch.manual_seed(4)
    model = UNet(preset("tiny")).double()
    image, mask = _data(150, 170, seed=4)
    jitter = StainJitter.draw(np.random.default_rng(4), "hed", 0.2)
    view, mview = RegionView(image, DIHEDRAL[5], jitter), RegionView(mask, DIHEDRAL[5])
    results = []
    for workers in (1, 4):
        model.zero_grad(set_to_none=True)
        value = tiled_backward(model, view, mview, tile=32, read_workers=workers)
        probs = tiled_predict(model, view, tile=32, read_workers=workers)
        results.append((value, [p.grad.clone() for p in model.parameters()], probs))
    (v1, g1, p1), (v4, g4, p4) = results
    assert v1 == v4 and np.array_equal(p1, p4)
    assert all(torch.equal(a, b) for a, b in zip(g1, g4))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="read_workers must be a positive integer"):
            tiled_backward(model, image, mask, tile=32, read_workers=bad)
    assert default_read_workers("cpu") == 1
    assert 1 <= default_read_workers("cuda") <= 8


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="heap reuse is a glibc setting")
@pytest.mark.parametrize("env, tuned", [("", True), ("1", False)])
def test_heap_reuse_can_be_turned_off(env, tuned):
    """GIGASEG_NO_HEAP_REUSE=1 leaves glibc's allocator settings alone (NOTE [Heap reuse])."""
    import subprocess

    code = "from gigaseg.engine import reuse_freed_memory; print(reuse_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "GIGASEG_NO_HEAP_REUSE": env}).stdout
    assert out.strip() == str(tuned)


# --- iter_predict --------------------------------------------------------------------------


def _blocks(tiles):
    return [(box, block.copy()) for box, block in tiles]


def test_iter_predict_orders_give_the_same_blocks_and_rows_are_row_major():
    """NOTE [Tile order]: the order changes nothing in a block; "rows" yields tiles row by row,
    left to right, so a row is complete at its last tile; the blocks make tiled_predict's output."""
    from gigaseg.engine import TileBox, iter_predict

    torch.manual_seed(9)
    model = UNet(preset("paper"))
    image, _ = _data(170, 230, seed=9)  # edges that are not tile multiples: several crop shapes
    by_order = {}
    for order in ("shape", "rows"):
        tiles = iter_predict(model, image, order=order, output="uint8", tile=64)
        assert tiles.shape == (170, 230) and tiles.tile == (64, 64) and len(tiles) == tiles.n_tiles == 3 * 4
        by_order[order] = _blocks(tiles)
        assert tiles.timings["model_s"] > 0 and tiles.timings["read_wait_s"] >= 0
    shape, rows = by_order["shape"], by_order["rows"]
    assert [b for b, _ in rows] == sorted((b for b, _ in rows), key=lambda b: (b.y0, b.x0))
    assert [b for b, _ in shape] != [b for b, _ in rows]  # really another order
    assert dict((b, k.tobytes()) for b, k in shape) == dict((b, k.tobytes()) for b, k in rows)
    out = np.zeros((170, 230), np.uint8)
    for box, block in rows:
        assert isinstance(box, TileBox) and block.shape == box.shape and block.dtype == np.uint8
        out[box.slices] = block
    assert np.array_equal(out, tiled_predict(model, image, out=np.empty((170, 230), np.uint8), tile=64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_iter_predict_outputs_are_tiled_predicts(dtype):
    from gigaseg.engine import iter_predict

    torch.manual_seed(10)
    model = UNet(preset("tiny")).to(dtype)
    image, _ = _data(90, 70, seed=10)
    want = {
        "probabilities": tiled_predict(model, image, tile=32),
        "logits": tiled_predict(model, image, tile=32, logits=True),
        "uint8": tiled_predict(model, image, tile=32, out=np.empty((90, 70), np.uint8)),
    }
    for output, ref in want.items():
        got = np.full(ref.shape, 7, ref.dtype)
        for box, block in iter_predict(model, image, order="rows", output=output, tile=32, read_workers=2,
                                       read_ahead=5):
            assert block.dtype == ref.dtype
            got[box.slices] = block
        assert np.array_equal(got, ref), output
    assert want["probabilities"].dtype == (np.float64 if dtype == torch.float64 else np.float32)


def test_iter_predict_checks_its_options_first():
    from gigaseg.engine import iter_predict

    model = UNet(preset("tiny"))
    image, _ = _data(20, 20)
    with pytest.raises(ConfigError, match="order 'columns' is not valid: use one of 'shape', 'rows'"):
        iter_predict(model, image, order="columns")
    with pytest.raises(ConfigError, match="output 'mask' is not valid: use one of 'probabilities', 'logits', 'uint8'"):
        iter_predict(model, image, output="mask")
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="read_ahead must be a positive integer"):
            iter_predict(model, image, read_ahead=bad)
        with pytest.raises(ConfigError, match="read_workers must be a positive integer"):
            iter_predict(model, image, read_workers=bad)
    with pytest.raises(InputError, match="uint8"):
        iter_predict(model, image.astype(np.int16))


def test_iter_predict_keeps_grad_mode_and_stops_its_readers_when_closed():
    """The consumer runs with gradients as it was; an abandoned iterator reads no further."""
    import threading

    from gigaseg.engine import iter_predict

    model = UNet(preset("tiny"))
    image, _ = _data(64, 64)
    reads = []

    class Counting:
        shape, dtype = image.shape, image.dtype

        def __getitem__(self, key):
            reads.append(key)
            return image[key]

    with iter_predict(model, Counting(), tile=8, read_ahead=3) as tiles:
        assert not reads  # reading starts at the first tile
        next(tiles)
        assert torch.is_grad_enabled()
        next(tiles)
    assert len(reads) <= 2 + 3  # the two tiles taken and at most three read ahead
    assert not any(t.name.startswith("gigaseg-read") for t in threading.enumerate())
    with pytest.raises(StopIteration):
        next(tiles)
