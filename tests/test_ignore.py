"""Ignore labels: mask value 255 is left out of every loss, exactly (NOTE [Ignored pixels]).

The tiled engine against whole-image autograd on the reference losses (``gigaseg.losses``),
whose own definition is checked against the losses of the valid pixels alone; float64: every
parameter's relative gradient error <= 1e-9, float32 (compiled CPU kernels and PyTorch's) <= 1e-4.
Then training, validation and ``gigaseg prepare --ignore keep`` with masks that hold 255.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import grad_error, spawn_ranks, stamp_ignore

import gigaseg.engine._cpu_kernels as K
from gigaseg import InputError, UNet, UNetConfig, load_model, preset, tiled_backward, tiled_predict
from gigaseg.cli import main
from gigaseg.losses import DICE_SMOOTH, IGNORE, loss_fn
from gigaseg.store import RegionStore
from gigaseg.training import TrainConfig, evaluate_regions, train

LOSSES = ("bce", "dice", "bce+dice")
TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


def _data(h: int, w: int, seed: int = 0, tile: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """An image and a 0/1/255 mask: 255 in blobs, in a band along the tile borders (multiples
    of ``tile``, where it straddles tiles), one whole tile, and scattered single pixels."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
    stamp_ignore(mask, tile, rng)
    return image, mask


def _reference(model: UNet, image: np.ndarray, mask: np.ndarray, loss: str):
    dtype = next(model.parameters()).dtype
    x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).to(dtype) / 255
    model.zero_grad(set_to_none=True)
    value = loss_fn(loss)(model(x), torch.from_numpy(mask)[None, None])
    value.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return float(value.detach()), grads


def _check(model: UNet, image: np.ndarray, mask: np.ndarray, loss: str, tile, dtype) -> float:
    """Tiled vs whole image; returns the largest relative gradient error."""
    ref_loss, ref_grads = _reference(model, image, mask, loss)
    value = tiled_backward(model, image, mask, loss=loss, tile=tile)
    tol = TOL[dtype]
    assert value == pytest.approx(ref_loss, rel=tol, abs=tol)
    return grad_error(model, ref_grads, tol, f"{loss}, tile {tile}")


# --- the reference losses ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_losses_are_those_of_the_valid_pixels_alone(dtype):
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(0, 2, (1, 1, 40, 50))).to(dtype)
    _, mask = _data(40, 50, tile=16)
    keep = torch.from_numpy(mask != IGNORE)[None, None]
    y = torch.from_numpy(mask)[None, None]
    zv, yv = z[keep], y[keep].to(dtype)
    p = torch.sigmoid(zv)
    bce = F.binary_cross_entropy_with_logits(zv, yv)
    dice = 1 - (2 * (p * yv).sum() + DICE_SMOOTH) / (p.sum() + yv.sum() + DICE_SMOOTH)
    for loss, want in [("bce", bce), ("dice", dice), ("bce+dice", bce + dice)]:
        zg = z.clone().requires_grad_(True)
        got = loss_fn(loss)(zg, y)
        assert float(got.detach()) == pytest.approx(float(want), rel=1e-12 if dtype == torch.float64 else 1e-6)
        (grad,) = torch.autograd.grad(got, zg)
        assert torch.all(grad[~keep] == 0) and torch.all(grad[keep] != 0)


def test_reference_losses_without_255_are_unchanged_to_the_bit():
    rng = np.random.default_rng(1)
    z = torch.from_numpy(rng.normal(0, 2, (1, 1, 30, 20)))
    y = torch.from_numpy((rng.random((1, 1, 30, 20)) < 0.5).astype(np.uint8))
    yf = y.double()
    assert torch.equal(loss_fn("bce")(z, y), F.binary_cross_entropy_with_logits(z, yf, reduction="mean"))
    p = torch.sigmoid(z)
    assert torch.equal(loss_fn("dice")(z, y), 1 - (2 * (p * yf).sum() + 1) / (p.sum() + yf.sum() + 1))


# --- the tiled engine ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name, tile", [("paper", 32), ("paper", 64), ("paper", (96, 32)), ("tiny", 16),
                                        ("d2-s4", 24)])
def test_tiled_equals_whole_image_with_ignored_pixels_float64(name, tile, loss):
    config = {"paper": preset("paper"), "tiny": preset("tiny"),
              "d2-s4": UNetConfig(2, (2, 3), (4, 2), (13, 5), (3, 5), activation="gelu")}[name]
    torch.manual_seed(0)
    model = UNet(config).double()
    t = tile if isinstance(tile, int) else tile[1]
    image, mask = _data(150, 230, seed=2, tile=t)
    assert 0.15 < (mask == IGNORE).mean() < 0.6
    _check(model, image, mask, loss, tile, torch.float64)


@pytest.mark.parametrize("kernels", [True, False], ids=["cpu-kernels", "pytorch"])
@pytest.mark.parametrize("loss", LOSSES)
def test_tiled_equals_whole_image_with_ignored_pixels_float32(monkeypatch, kernels, loss):
    if not kernels:
        monkeypatch.setenv("GIGASEG_NO_CPU_KERNELS", "1")
    torch.manual_seed(1)
    model = UNet(preset("paper"))
    image, mask = _data(300, 170, seed=1, tile=64)
    _check(model, image, mask, loss, 64, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss", LOSSES)
def test_a_wholly_ignored_region_gives_zero_loss_and_gradient(dtype, loss):
    torch.manual_seed(2)
    model = UNet(preset("paper")).to(dtype)
    image, _ = _data(100, 120)
    mask = np.full((100, 120), IGNORE, np.uint8)
    value = tiled_backward(model, image, mask, loss=loss, tile=32)
    assert value == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())
    ref_loss, ref_grads = _reference(model, image, mask, loss)
    assert ref_loss == 0.0 and all(torch.equal(g, torch.zeros_like(g)) for g in ref_grads)


def test_a_wholly_ignored_tile_adds_nothing():
    """Ignoring a tile's pixels equals leaving them out: a 0/1 mask with one tile ignored gives
    the gradient of the same mask whose ignored pixels are 0, less that tile's share (BCE sums:
    compared through the loss of the valid pixels, which the reference computes)."""
    torch.manual_seed(3)
    model = UNet(preset("tiny")).double()
    image, _ = _data(64, 96, seed=3)
    mask = (np.random.default_rng(3).random((64, 96)) < 0.5).astype(np.uint8)
    mask[16:32, 32:64] = IGNORE  # exactly tiles (1, 2) and (1, 3) of 16
    for loss in LOSSES:
        _check(model, image, mask, loss, 16, torch.float64)


def test_stray_mask_values_are_refused_and_grad_untouched():
    torch.manual_seed(9)
    model = UNet(preset("paper"))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in model.parameters()]
    image, mask = _data(100, 120)
    mask[99, 119] = 7  # in the last tile: earlier tiles have run
    for loss in LOSSES:
        with pytest.raises(InputError, match=r"mask value 7 at \(x=119, y=99\) is not 0, 1 or 255"):
            tiled_backward(model, image, mask, tile=32, loss=loss)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


def test_ignore_kernels_equal_autograd():
    """The compiled loss kernels of tiles with 255 (NOTE [Ignore kernels]) on one crop."""
    if not K.eligible(UNet(preset("paper")), torch.float32, torch.device("cpu")):
        pytest.skip("the compiled CPU kernels do not run here")
    torch.manual_seed(4)
    model = UNet(preset("paper"))
    params = list(model.parameters())
    h, w = 97, 131
    crop, mask = _data(h, w, seed=5, tile=40)
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    weights = K.LossWeights(bce=1 / 3000, inter=-0.02, p_coef=0.003)
    rows, cols = slice(5, h - 3), slice(7, w - 2)
    y_np = np.ascontiguousarray(mask[rows, cols])
    got, bce = K.backward_core(model, K.tile_input(model, crop), rows, cols, y_np, weights, bce_sum=True, ignore=True)
    z = model(x)[0, 0][rows, cols]
    keep = torch.from_numpy(y_np != IGNORE)
    y = torch.from_numpy(np.where(y_np == IGNORE, 0, y_np)).float()
    p = torch.sigmoid(z.detach())
    grad_z = (weights.bce * (p - y) + (weights.inter * y + weights.p_coef) * p * (1 - p)) * keep
    want = torch.autograd.grad(z, params, grad_z)
    for q, g in zip(params, want):
        assert float((got[q] - g).norm() / g.norm()) <= 2e-5
    zd, yd = z.detach().double(), y.double()
    bce_ref = F.binary_cross_entropy_with_logits(zd, yd, reduction="none")[keep].sum()
    assert bce == pytest.approx(float(bce_ref), rel=1e-5)
    sums = K.core_sums(model, K.tile_input(model, crop), rows, cols, y_np, bce=True, ignore=True)
    pd = torch.sigmoid(zd) * keep
    assert sums == pytest.approx((float((pd * yd).sum()), float(pd.sum()), float(bce_ref)), rel=1e-5)


# --- several processes ----------------------------------------------------------------------------


def _ranks(rank: int, world: int) -> dict[str, Any]:
    """Both ranks on one image (the valid pixels counted in pass 1, or in pass 2 and summed
    after it), then one image each with the gradients summed over both (bce: counted first)."""
    import torch.distributed as dist

    out: dict[str, Any] = {}
    own = [dist.new_group([r]) for r in range(world)]
    for loss in LOSSES:
        image, mask = _data(70, 90, seed=6, tile=24)
        torch.manual_seed(0)
        model = UNet(preset("tiny")).double()
        value = tiled_backward(model, image, mask, loss=loss, tile=24, group=dist.group.WORLD)
        out[loss] = value, [p.grad.clone() for p in model.parameters()]
        image, mask = _data(70, 90, seed=10 + rank, tile=24)
        model.zero_grad(set_to_none=True)
        value = tiled_backward(model, image, mask, loss=loss, tile=24, group=own[rank], grad_group=dist.group.WORLD)
        out["two-" + loss] = value, [p.grad.clone() for p in model.parameters()]
    return out


def test_two_ranks_leave_out_the_same_pixels(tmp_path):
    ranks = spawn_ranks(tmp_path, 2, _ranks)
    torch.manual_seed(0)
    model = UNet(preset("tiny")).double()
    for loss in LOSSES:
        want_loss, want = _reference(model, *_data(70, 90, seed=6, tile=24), loss)
        each = [_reference(model, *_data(70, 90, seed=10 + r, tile=24), loss) for r in range(2)]
        summed = [a + b for a, b in zip(each[0][1], each[1][1])]
        for r, got in enumerate(ranks):
            assert got[loss][0] == pytest.approx(want_loss, rel=1e-9)
            assert max(float((g - w).norm() / w.norm()) for g, w in zip(got[loss][1], want)) <= 1e-9
            if loss != "bce":  # "bce" with several groups: see the report of issue 21 (the loss value)
                assert got["two-" + loss][0] == pytest.approx(each[r][0], rel=1e-9)
            assert max(float((g - w).norm() / w.norm()) for g, w in zip(got["two-" + loss][1], summed)) <= 1e-9


# --- training, validation, prepare ------------------------------------------------------------------


def _store_with_ignore(path: Path, *, stray: int | None = None) -> RegionStore:
    """2 training and 1 held-out region of 64 x 96 whose masks hold 0/1/255 (as from images)."""
    store = RegionStore.create(path)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:64, :96]
    for i, split in enumerate(["train", "train", "val"]):
        image = np.full((64, 96, 3), 225, np.uint8)
        tissue = (yy - 32) ** 2 + (xx - 30 - 10 * i) ** 2 < 18**2
        image[tissue] = (170, 90, 150)
        image = np.clip(image + rng.integers(-15, 16, image.shape), 0, 255).astype(np.uint8)
        mask = tissue.astype(np.uint8)
        mask[:, 70:] = IGNORE  # unannotated
        mask[10:20, 10:20] = IGNORE
        if stray is not None and i == 1:
            mask[40, 50] = stray
        with store.new_region(f"r{i}", (96, 64), split=split,
                              meta={"mpp": 1.0, "mask_source": {"kind": "image"}}) as w:
            w.append(image, mask)
    return store


def _config(store: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(data=str(store), out=str(out), preset="tiny", steps=4, lr=0.02, warmup=1,
                                val_every=4, ckpt_every=4, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _valid_dice(p: np.ndarray, ref: np.ndarray) -> float:
    pred = (p >= 0.5) & (ref != IGNORE)
    return 2 * np.count_nonzero(pred & (ref == 1)) / (np.count_nonzero(pred) + np.count_nonzero(ref == 1))


def test_training_with_ignored_pixels_and_validation_dice_leaves_them_out(tmp_path):
    store = _store_with_ignore(tmp_path / "store")
    result = train(_config(store.path, tmp_path / "run"))
    assert result["step"] == 4 and math.isfinite(result["loss"])
    model, _ = load_model(tmp_path / "run" / "checkpoint.pt")
    (val,) = store.split("val")
    ref = np.asarray(val.mask[:])
    assert result["val_dice_mean"] == pytest.approx(_valid_dice(tiled_predict(model, val.image[:]), ref), rel=1e-12)
    with torch.no_grad():  # every pixel predicted tissue: the ignored ones would lower the Dice
        model.head.conv.bias.fill_(30.0)
    (row,) = evaluate_regions(model, [val])
    assert row["dice"] == pytest.approx(_valid_dice(np.ones(ref.shape), ref), rel=1e-12)
    tissue = np.count_nonzero(ref == 1)
    assert row["dice"] == pytest.approx(2 * tissue / (np.count_nonzero(ref != IGNORE) + tissue), rel=1e-12)
    assert row["dice"] > 2 * tissue / (ref.size + tissue) + 0.05


def test_training_refuses_other_mask_values_before_it_starts(tmp_path):
    store = _store_with_ignore(tmp_path / "store", stray=7)
    with pytest.raises(InputError, match=r"r1.*mask value 7 at \(x=50, y=40\).*255 \(ignore\)"):
        train(_config(store.path, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_prepare_ignore_keep_store_trains(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[:64, :96]
    tissue = (yy - 32) ** 2 + (xx - 48) ** 2 < 20**2
    for name, split in [("a", "train"), ("b", "val")]:
        rgb = np.where(tissue[..., None], (170, 90, 150), (230, 228, 232)) + rng.integers(-10, 11, (64, 96, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
        mask = tissue.astype(np.uint8)
        mask[:, :12] = IGNORE
        np.save(tmp_path / f"{name}.npy", mask)
        assert main(["prepare", str(tmp_path / f"{name}.png"), "--masks", str(tmp_path / f"{name}.npy"),
                     "--size", "64x96", "--slide-mpp", "1", "--out", str(tmp_path / "store"), "--split", split,
                     "--ignore", "keep", "--no-progress"]) == 0
    regions = RegionStore(tmp_path / "store").regions
    assert all(set(np.unique(r.mask[:]).tolist()) == {0, 1, IGNORE} for r in regions)
    result = train(_config(tmp_path / "store", tmp_path / "run", steps=2, val_every=2, ckpt_every=2))
    assert result["step"] == 2 and math.isfinite(result["loss"]) and math.isfinite(result["val_dice_mean"])
