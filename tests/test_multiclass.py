"""Several classes (UNetConfig.out_channels = C >= 2): the losses "ce", "dice" and "ce+dice", the
tiled engine against whole-image autograd, prediction, and what is refused (NOTE [Several
classes] in gigaseg.engine.backward).

float64: every parameter's relative gradient error <= 1e-9 and the loss to 1e-9; the masks hold
class indices with 255 (ignore) in blobs, in bands across tile borders, over a whole tile and
in single pixels, and some classes absent. One output channel (C = 1) keeps its own tests
(test_engine, test_ignore, test_cpu_kernels), which run unchanged.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import grad_error, spawn_ranks, stamp_ignore

from gigaseg import ConfigError, InputError, UNet, UNetConfig, preset, tiled_backward, tiled_predict
from gigaseg.engine import iter_predict, model_input, plan
from gigaseg.losses import CLASS_LOSSES, DICE_SMOOTH, IGNORE, check_loss_name, loss_fn
from gigaseg.model import count_parameters, layer_table

TOL = 1e-9


def _config(name: str, classes: int) -> UNetConfig:
    base = {"tiny": preset("tiny"), "paper": preset("paper"),
            "d2-s4": UNetConfig(2, (2, 3), (4, 2), (13, 5), (3, 5), activation="gelu")}[name]
    return dataclasses.replace(base, out_channels=classes)


def _data(h: int, w: int, classes: int, *, seed: int = 0, tile: int = 32,
          absent: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """An image and a mask of class indices in patches (with some noise) and 255 (ignore) in
    blobs, in bands across the tile borders (multiples of ``tile``), over one whole tile and in
    single pixels; the classes ``absent`` do not occur."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    present = np.array([c for c in range(classes) if c not in absent], np.uint8)
    cells = present[rng.integers(0, len(present), (h // 8 + 1, w // 8 + 1))]
    mask = np.kron(cells, np.ones((8, 8), np.uint8))[:h, :w]
    noise = rng.random((h, w)) < 0.2
    mask[noise] = present[rng.integers(0, len(present), int(noise.sum()))]
    stamp_ignore(mask, tile, rng, radii=(0.12, 0.18))
    return image, mask


def _model(config: UNetConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> UNet:
    torch.manual_seed(seed)
    return UNet(config).to(dtype)


def _reference(model: UNet, image: np.ndarray, mask: np.ndarray, loss: str) -> tuple[float, list[torch.Tensor]]:
    """Whole-image autograd on gigaseg.losses."""
    x = model_input(image, dtype=next(model.parameters()).dtype)
    model.zero_grad(set_to_none=True)
    value = loss_fn(loss)(model(x), torch.from_numpy(mask)[None])
    value.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return float(value.detach()), grads


def _check(model: UNet, image: np.ndarray, mask: np.ndarray, loss: str, tile: Any, tol: float = TOL) -> float:
    """Tiled vs whole image: the loss and every parameter's gradient; the largest relative error."""
    ref_loss, ref_grads = _reference(model, image, mask, loss)
    value = tiled_backward(model, image, mask, loss=loss, tile=tile)
    assert value == pytest.approx(ref_loss, rel=tol, abs=tol)
    return max(abs(value - ref_loss) / max(abs(ref_loss), 1e-300),
               grad_error(model, ref_grads, tol, f"{loss}, tile {tile}"))


# --- the reference losses ---------------------------------------------------------------------


def _logits(classes: int, h: int = 30, w: int = 40, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(0, 2, (1, classes, h, w)))


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_reference_losses_are_those_of_the_valid_pixels_alone(classes):
    z = _logits(classes)
    _, mask = _data(30, 40, classes, tile=16, absent=(classes - 1,))
    t = torch.from_numpy(mask)[None]
    keep = t[0] != IGNORE
    zv = z[0].permute(1, 2, 0)[keep]  # (N, C)
    yv = t[0][keep].long()
    p = torch.softmax(zv, dim=1)
    y = F.one_hot(yv, classes).double()
    ce = F.cross_entropy(zv, yv)
    inter, p_sum, y_sum = (p * y).sum(0), p.sum(0), y.sum(0)
    dice = (1 - (2 * inter + DICE_SMOOTH) / (p_sum + y_sum + DICE_SMOOTH)).mean()
    for loss, want in [("ce", ce), ("dice", dice), ("ce+dice", ce + dice)]:
        zg = z.clone().requires_grad_(True)
        got = loss_fn(loss)(zg, t)
        assert float(got.detach()) == pytest.approx(float(want), rel=1e-12)
        (grad,) = torch.autograd.grad(got, zg)
        assert torch.all(grad[0][:, ~keep] == 0) and torch.all(grad[0][:, keep] != 0)
        assert torch.equal(got, loss_fn(loss)(z, t[:, None]))  # (N, 1, H, W) targets too


def test_the_dice_gradient_through_the_softmax_is_the_closed_form():
    """NOTE [Several classes]: dL/dz_ik = p_ik (g_ik - sum_c g_ic p_ic), g_ic = a_c y_ic + b_c,
    with the engine's own functions against autograd on the reference loss."""
    from gigaseg.engine.backward import _class_logits_grad, _ClassWeights, _dice_terms

    classes = 4
    z = _logits(classes, 37, 29, seed=3)
    _, mask = _data(37, 29, classes, seed=3, tile=16, absent=(2,))
    keep = mask != IGNORE
    p = torch.softmax(z[0], dim=0)
    y = torch.from_numpy(np.stack([(mask == c) & keep for c in range(classes)])).double()
    pk = p * torch.from_numpy(keep)
    sums = [(pk * y).sum((1, 2)).tolist(), pk.sum((1, 2)).tolist(), y.sum((1, 2)).tolist()]
    assert sums[2][2] == 0  # an absent class
    n_valid = int(keep.sum())
    for loss in CLASS_LOSSES:
        value, a, b = _dice_terms(*sums)
        use_ce, use_dice = loss != "dice", loss != "ce"
        step = types.SimpleNamespace(classes=classes, use_bce=use_ce, use_dice=use_dice, bce_divisor=n_valid,
                                     bce_sum=0.0)
        got = _class_logits_grad(step, _ClassWeights(tuple(a), tuple(b)), z[0], mask, ignore=True)
        zg = z.clone().requires_grad_(True)
        ref_loss = loss_fn(loss)(zg, torch.from_numpy(mask)[None])
        (want,) = torch.autograd.grad(ref_loss, zg)
        assert float((got - want[0]).norm() / want.norm()) <= 1e-13, loss
        if loss == "dice":
            assert value == pytest.approx(float(ref_loss.detach()), rel=1e-14)


def test_reference_losses_refuse_what_does_not_fit():
    z3, z1 = _logits(3), _logits(1)
    t = torch.zeros(1, 30, 40, dtype=torch.uint8)
    with pytest.raises(ConfigError, match=r"loss 'bce' is for one output channel, but the model has 3.*`loss='ce'`"):
        loss_fn("bce")(z3, t)
    with pytest.raises(ConfigError, match=r"loss 'bce\+dice' .*`loss='ce\+dice'`"):
        loss_fn("bce+dice")(z3, t)
    with pytest.raises(ConfigError, match=r"loss 'ce' is the softmax loss of several classes.*`loss='bce'`"):
        loss_fn("ce")(z1, t[:, None])
    t[0, 7, 11] = 3
    with pytest.raises(InputError, match=r"target value 3 at \(x=11, y=7\) .* not a class index 0..2 or 255"):
        loss_fn("dice")(z3, t)


def test_loss_names_by_output_channels():
    assert check_loss_name("dice", 1) == check_loss_name("dice", 4) == "dice"
    assert check_loss_name("ce", 2) == "ce" and check_loss_name("bce+dice", 1) == "bce+dice"
    assert check_loss_name("ce+dice") == "ce+dice"
    with pytest.raises(ConfigError, match="did you mean 'ce'"):
        check_loss_name("cee", 3)


# --- the tiled engine ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss", CLASS_LOSSES)
@pytest.mark.parametrize("classes", [3, 5])
@pytest.mark.parametrize("name, shape, tile", [("tiny", (75, 103), 16), ("tiny", (75, 103), (24, 40)),
                                               ("d2-s4", (81, 67), 24), ("paper", (131, 170), 64)])
def test_tiled_equals_whole_image_float64(name, shape, tile, classes, loss):
    model = _model(_config(name, classes))
    t = tile if isinstance(tile, int) else tile[1]
    image, mask = _data(*shape, classes, seed=classes, tile=t, absent=(1,))
    assert 0.1 < (mask == IGNORE).mean() < 0.6
    assert not (mask == 1).any()  # an absent class: Y_1 = 0
    _check(model, image, mask, loss, tile)


@pytest.mark.parametrize("loss", CLASS_LOSSES)
def test_one_class_present_and_one_tile_larger_than_the_image(loss):
    """Y_c = 0 for all classes but one; an image smaller than the tile (one tile, clipped halos)."""
    model = _model(_config("tiny", 3), seed=4)
    image, mask = _data(21, 35, 3, seed=4, tile=16, absent=(0, 2))
    _check(model, image, mask, loss, 48)


@pytest.mark.parametrize("loss", CLASS_LOSSES)
def test_a_wholly_ignored_image_gives_zero_loss_and_gradient(loss):
    model = _model(_config("tiny", 3), seed=2)
    image, _ = _data(40, 52, 3)
    mask = np.full((40, 52), IGNORE, np.uint8)
    value = tiled_backward(model, image, mask, loss=loss, tile=16)
    assert value == 0.0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())
    ref_loss, ref_grads = _reference(model, image, mask, loss)
    assert ref_loss == 0.0 and all(torch.equal(g, torch.zeros_like(g)) for g in ref_grads)


def test_float32_is_close_to_whole_image():
    model = _model(_config("paper", 3), seed=5, dtype=torch.float32)
    image, mask = _data(120, 150, 3, seed=5, tile=64)
    for loss in CLASS_LOSSES:
        _check(model, image, mask, loss, 64, tol=1e-4)


def test_masks_with_other_values_are_refused_and_grad_untouched():
    model = _model(_config("tiny", 3), seed=9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in model.parameters()]
    image, mask = _data(40, 52, 3, tile=16)
    mask[39, 50] = 3  # in the last tile: earlier tiles have run
    for loss in CLASS_LOSSES:
        with pytest.raises(InputError, match=r"mask value 3 at \(x=50, y=39\) is not a class index 0..2 or 255: "
                                             r"the model has 3 output channels"):
            tiled_backward(model, image, mask, tile=16, loss=loss)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


def test_losses_of_the_other_kind_are_refused_before_any_work():
    image, mask = _data(40, 52, 3, tile=16)
    model = _model(_config("tiny", 3))
    with pytest.raises(ConfigError, match=r"loss 'bce\+dice' is for one output channel, but the model has 3 "
                                          r"\(UNetConfig.out_channels = 3\): use `loss='ce\+dice'`"):
        tiled_backward(model, image, mask, tile=16, loss="bce+dice")
    with pytest.raises(ConfigError, match=r"loss 'ce' is the softmax loss of several classes, but the model has one "
                                          r"output channel .*`loss='bce'`.*`out_channels` >= 2"):
        tiled_backward(_model(preset("tiny")), image, mask.clip(0, 1), tile=16, loss="ce")
    assert all(p.grad is None for p in model.parameters())


# --- prediction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, tile", [("tiny", 16), ("tiny", (8, 24)), ("paper", 32)])
def test_tiled_predict_is_the_softmax_of_the_whole_image(name, tile):
    model = _model(_config(name, 4), seed=7).eval()
    image, _ = _data(77, 59, 4, seed=7)
    with torch.no_grad():
        z = model(model_input(image, dtype=torch.float64))[0].permute(1, 2, 0)
    got = tiled_predict(model, image, tile=tile)
    assert got.shape == (77, 59, 4) and got.dtype == np.float64
    np.testing.assert_allclose(got, torch.softmax(z, dim=-1).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(tiled_predict(model, image, tile=tile, logits=True), z.numpy(), rtol=0, atol=1e-12)
    out = np.zeros((77, 59, 4), np.uint8)
    assert tiled_predict(model, image, tile=tile, out=out) is out
    assert np.abs(out.astype(int) - np.round(255 * got)).max() <= 1
    with pytest.raises(InputError, match=r"out must have shape \(H, W, C\) = \(77, 59, 4\)"):
        tiled_predict(model, image, tile=tile, out=np.zeros((77, 59), np.float32))
    with iter_predict(model, image, tile=tile, order="rows") as tiles:
        assert tiles.classes == 4
        for box, block in tiles:
            assert block.shape == (*box.shape, 4)


def test_float32_prediction_sums_to_one():
    model = _model(_config("paper", 3), seed=8, dtype=torch.float32).eval()
    image, _ = _data(70, 90, 3, seed=8)
    got = tiled_predict(model, image)
    assert got.shape == (70, 90, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-5)


# --- the model and its config -------------------------------------------------------------------


def test_out_channels_in_the_config_the_model_and_its_table():
    config = _config("paper", 3)
    model = UNet(config)
    assert model.head.conv.weight.shape[0] == 3
    assert sum(row["params"] for row in layer_table(config)) == count_parameters(model)
    assert layer_table(config)[-1]["c_out"] == 3
    assert UNetConfig.from_dict(config.to_dict()) == config
    old = preset("paper").to_dict()
    del old["out_channels"]  # a checkpoint written before out_channels existed
    assert UNetConfig.from_dict(old) == preset("paper") and preset("paper").out_channels == 1
    assert count_parameters(UNet(preset("paper"))) == 4492


@pytest.mark.parametrize("value", [0, 256, -1, 2.0, True, "3"])
def test_bad_out_channels_are_refused(value):
    with pytest.raises(ConfigError, match=r"UNetConfig.out_channels must be an integer from 1 to 255"):
        UNetConfig(out_channels=value)


def test_a_checkpoint_keeps_its_classes(tmp_path):
    from gigaseg import load_model
    from gigaseg.checkpoint import save_checkpoint

    model = _model(_config("tiny", 3), dtype=torch.float32)
    save_checkpoint(tmp_path / "m.pt", model, mpp=2.0)
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.config.out_channels == 3
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_only_one_output_channel_runs_on_the_compiled_kernels():
    from gigaseg.engine._cpu_kernels import eligible_config

    cpu = torch.device("cpu")
    assert not eligible_config(_config("paper", 3), torch.float32, cpu)
    assert eligible_config(preset("paper"), torch.float32, cpu) == eligible_config(
        dataclasses.replace(preset("paper"), out_channels=1), torch.float32, cpu)


def test_the_plan_counts_the_class_channels():
    one = plan(preset("paper"), 4000, 4000, memory_budget="1GB")
    five = plan(_config("paper", 5), 4000, 4000, memory_budget="1GB")
    assert five.tile[0] * five.tile[1] < one.tile[0] * one.tile[1]
    assert five.predicted_peak_bytes <= five.memory_budget


# --- two processes ------------------------------------------------------------------------------


SHAPE, TILE, CLASSES = (70, 90), 24, 3  # 3 x 4 tiles of the tiny preset


def _ranks(rank: int, world: int) -> dict[str, Any]:
    """Both ranks on one image (the 3C sums exchanged between the passes), then one image each
    with the gradients summed over both; then a bad class index in a tile of rank 1 only."""
    import torch.distributed as dist

    from gigaseg import GigasegError
    from gigaseg.engine import split_by_cost
    from gigaseg.engine.tiles import _tile_list

    out: dict[str, Any] = {}
    own = [dist.new_group([r]) for r in range(world)]
    for loss in CLASS_LOSSES:
        image, mask = _data(*SHAPE, CLASSES, seed=6, tile=TILE, absent=(2,))
        model = _model(_config("tiny", CLASSES))
        value = tiled_backward(model, image, mask, loss=loss, tile=TILE, group=dist.group.WORLD)
        out[loss] = value, [p.grad.clone() for p in model.parameters()]
        image, mask = _data(*SHAPE, CLASSES, seed=10 + rank, tile=TILE)
        model.zero_grad(set_to_none=True)
        value = tiled_backward(model, image, mask, loss=loss, tile=TILE, group=own[rank], grad_group=dist.group.WORLD)
        out["two-" + loss] = value, [p.grad.clone() for p in model.parameters()]
    tiles = _tile_list(*SHAPE, TILE, TILE, _config("tiny", CLASSES))
    split = split_by_cost([(t.cy1 - t.cy0) * (t.cx1 - t.cx0) for t in tiles], world)
    image, mask = _data(*SHAPE, CLASSES, seed=6, tile=TILE)
    mask[tiles[split[1][-1]].y0, tiles[split[1][-1]].x0] = 7  # rank 1's last tile: after pass 1 began
    try:
        tiled_backward(model, image, mask, loss="dice", tile=TILE, group=dist.group.WORLD)
        out["bad mask"] = "no error"
    except GigasegError as exc:
        out["bad mask"] = type(exc).__name__ + ": " + str(exc)
    return out


def test_two_ranks_share_the_class_sums(tmp_path):
    ranks = spawn_ranks(tmp_path, 2, _ranks)
    model = _model(_config("tiny", CLASSES))
    for loss in CLASS_LOSSES:
        want_loss, want = _reference(model, *_data(*SHAPE, CLASSES, seed=6, tile=TILE, absent=(2,)), loss)
        each = [_reference(model, *_data(*SHAPE, CLASSES, seed=10 + r, tile=TILE), loss) for r in range(2)]
        summed = [a + b for a, b in zip(each[0][1], each[1][1])]
        for r, got in enumerate(ranks):
            assert got[loss][0] == pytest.approx(want_loss, rel=TOL)
            assert max(float((g - w).norm() / w.norm()) for g, w in zip(got[loss][1], want)) <= TOL
            if loss != "ce":  # "ce" with several groups returns the loss of the step's sums (as "bce" does)
                assert got["two-" + loss][0] == pytest.approx(each[r][0], rel=TOL)
            assert max(float((g - w).norm() / w.norm()) for g, w in zip(got["two-" + loss][1], summed)) <= TOL
    assert ranks[1]["bad mask"].startswith("InputError: mask value 7"), ranks[1]
    assert ranks[0]["bad mask"].startswith("DistributedError: 1 rank(s) failed while gathering the Dice sums"), ranks[0]


def test_training_without_class_names_refuses_a_several_class_preset():
    """A several-class preset needs class names: given, or named by the store (checked when read)."""
    from gigaseg import TrainConfig
    from gigaseg.errors import ConfigError

    config = TrainConfig(data="d", out="o", preset=UNetConfig(out_channels=3), loss="ce")
    config.check()  # the store may name the classes
    with pytest.raises(ConfigError, match="out_channels=3 but no `classes`"):
        config.check_classes()
