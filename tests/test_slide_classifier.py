"""Slide-level heads (NOTE [Slide heads] in gigaseg/engine/slide.py): the tiled two-pass step of a
SlideClassifier equals whole-image autograd in float64, loss and every parameter's gradient
(trunk, head, attention), for each pooling, several tiles and odd image sizes; its refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from torch import nn

from gigaseg import UNet, preset
from gigaseg.engine import model_input
from gigaseg.engine import slide as slide_module
from gigaseg.engine.slide import SlideClassifier, slide_backward, slide_predict
from gigaseg.engine.tiles import _Tile
from gigaseg.errors import ConfigError, InputError, UnsupportedModelError

K, C = 4, 3
TOL = 1e-9


def _classifier(pool: str, seed: int = 0) -> SlideClassifier:
    torch.manual_seed(seed)
    trunk = UNet(dataclasses.replace(preset("tiny"), out_channels=K)).double()
    head = nn.Sequential(nn.Linear(K, 8), nn.Tanh(), nn.Linear(8, C)).double()
    model = SlideClassifier(trunk, head, pool)
    if pool == "attention":  # away from zero (the mean), so that the attention weights matter
        with torch.no_grad():
            model.attention.copy_(torch.randn(K, dtype=torch.float64))
    return model


def _image(h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reference(model: SlideClassifier, image: np.ndarray, label: int) -> tuple[float, dict[str, torch.Tensor]]:
    """Whole-image autograd: the loss and every parameter's gradient."""
    model.zero_grad(set_to_none=True)
    x = model_input(image, dtype=torch.float64)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([label]))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def _worst(model: SlideClassifier, grads: dict[str, torch.Tensor]) -> float:
    names = {n for n, _ in model.named_parameters()}
    assert set(grads) == names  # every parameter, trunk, head and attention, has a gradient
    return max(float((p.grad - grads[n]).abs().max()) for n, p in model.named_parameters())


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
@pytest.mark.parametrize(("h", "w", "tiles"), [(75, 101, [16, 32, (48, 16)]), (64, 64, [64, 8])])
def test_exact_against_whole_image_autograd(pool: str, h: int, w: int, tiles: list[int | tuple[int, int]]) -> None:
    model = _classifier(pool)
    image = _image(h, w)
    value, grads = _reference(model, image, 2)
    for tile in tiles:
        model.zero_grad(set_to_none=True)
        got = slide_backward(model, image, 2, tile=tile)
        assert abs(got - value) <= TOL, (pool, tile)
        assert _worst(model, grads) <= TOL, (pool, tile)
        probs = slide_predict(model, image, tile=tile)
        want = torch.softmax(model(model_input(image, dtype=torch.float64)), dim=1)[0].detach().numpy()
        assert probs.shape == (C,) and probs.dtype == np.float64
        np.testing.assert_allclose(probs, want, rtol=0, atol=TOL)
        np.testing.assert_allclose(slide_predict(model, image, tile=tile, logits=True),
                                   model(model_input(image, dtype=torch.float64))[0].detach().numpy(), rtol=0, atol=TOL)


class _Trunk(nn.Module):
    """A trunk that is not a gigaseg.UNet: a strided residual encoder-decoder (total stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.down = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.out = nn.Conv2d(12, K, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.tanh(self.stem(x))
        d = torch.relu(self.down(s))
        d = d + torch.relu(self.mid(d))
        return self.out(torch.cat([torch.tanh(self.up(d)), s], dim=1))


@pytest.mark.parametrize("pool", ["mean", "max", "attention"])
def test_any_local_trunk(pool: str) -> None:
    """A trunk of the user's own (not a UNet), odd image sizes: the reference is the trunk on the
    input zero-padded to its total stride, cropped back (SlideClassifier.forward does it)."""
    torch.manual_seed(3)
    model = SlideClassifier(_Trunk().double(), nn.Sequential(nn.Linear(K, 5), nn.Tanh(), nn.Linear(5, C)).double(),
                            pool)
    if pool == "attention":
        with torch.no_grad():
            model.attention.copy_(torch.randn(K, dtype=torch.float64))
    image = _image(37, 51, seed=4)
    value, grads = _reference(model, image, 1)
    for tile in (8, (16, 24), 64):
        model.zero_grad(set_to_none=True)
        assert abs(slide_backward(model, image, 1, tile=tile) - value) <= TOL
        assert _worst(model, grads) <= TOL, (pool, tile)


def test_max_pooling_over_upsampled_features() -> None:
    """A trunk ending in nearest upsampling (the worked example's kind): each maximum is tied over
    a 4 x 4 block of copies of one value, and whichever copy gets the gradient, it is the same."""
    torch.manual_seed(5)
    trunk = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(6, K, 3, stride=2, padding=1),
                          nn.Upsample(scale_factor=4, mode="nearest")).double()
    model = SlideClassifier(trunk, nn.Linear(K, C).double(), "max")
    image = _image(50, 66, seed=6)
    value, grads = _reference(model, image, 2)
    for tile in (8, 24):
        model.zero_grad(set_to_none=True)
        assert abs(slide_backward(model, image, 2, tile=tile) - value) <= TOL
        assert _worst(model, grads) <= TOL, tile


def test_float32() -> None:
    """A float32 model: the same loss and gradients up to float32 rounding."""
    model = _classifier("attention").float()
    image = _image(40, 60)
    x = model_input(image)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([1]))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    assert abs(slide_backward(model, image, 1, tile=16) - float(loss.detach())) <= 1e-5
    for n, p in model.named_parameters():
        assert float((p.grad - grads[n]).norm() / grads[n].norm().clamp_min(1e-12)) <= 1e-4, n
    assert slide_predict(model, image, tile=16).dtype == np.float32


def test_planned_tile() -> None:
    """Without ``tile`` the planner picks one (from ``memory_budget``); still exact."""
    model = _classifier("attention")
    image = _image(45, 70)
    value, grads = _reference(model, image, 0)
    assert abs(slide_backward(model, image, 0) - value) <= TOL
    assert _worst(model, grads) <= TOL
    np.testing.assert_allclose(slide_predict(model, image, memory_budget="2GB"),
                               torch.softmax(model(model_input(image, dtype=torch.float64)), dim=1)[0].detach().numpy(),
                               rtol=0, atol=TOL)


def test_gradients_accumulate_like_backward() -> None:
    """A second step adds to .grad, as loss.backward() does."""
    model = _classifier("max")
    image = _image(40, 56)
    _, grads = _reference(model, image, 1)
    slide_backward(model, image, 1, tile=16)
    slide_backward(model, image, 1, tile=24)
    assert _worst(model, {n: 2 * g for n, g in grads.items()}) <= TOL


def test_tiled_entry_points_dispatch() -> None:
    """tiled_backward / tiled_predict hand a SlideClassifier to slide_backward / slide_predict."""
    from gigaseg.engine import tiled_backward, tiled_predict

    model = _classifier("mean")
    image = _image(33, 47)
    value, grads = _reference(model, image, 0)
    got = tiled_backward(model, image, 0, loss="ce", tile=16)  # type: ignore[arg-type]
    assert abs(got - value) <= TOL
    assert _worst(model, grads) <= TOL
    probs = tiled_predict(model, image, tile=16)
    np.testing.assert_allclose(probs, slide_predict(model, image, tile=16), rtol=0, atol=TOL)


def test_map_entry_points_refuse_a_slide_classifier_clearly() -> None:
    """iter_predict and plan tile per-pixel models; given a SlideClassifier they say what to use."""
    from gigaseg.engine import iter_predict, plan

    model = _classifier("mean")
    image = _image(33, 47)
    with pytest.raises(UnsupportedModelError, match="tiled_predict.classifier, image"):
        iter_predict(model, image, tile=16)
    with pytest.raises(UnsupportedModelError, match=r"plan\(classifier.trunk"):
        plan(model, 33, 47)


def test_negative_control_without_halo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Crops without their halo (zero padding at tile borders) must fail the same comparison."""
    model = _classifier("mean")
    image = _image(64, 64)
    value, grads = _reference(model, image, 2)

    def no_halo(height: int, width: int, th: int, tw: int, config: object) -> list[_Tile]:
        return [_Tile(y, min(y + th, height), x, min(x + tw, width), y, min(y + th, height), x, min(x + tw, width))
                for y in range(0, height, th) for x in range(0, width, tw)]

    monkeypatch.setattr(slide_module, "_tile_list", no_halo)
    got = slide_backward(model, image, 2, tile=16)
    assert abs(got - value) > 1e-6 or _worst(model, grads) > 1e-6


def test_max_pass_two_runs_only_the_argmax_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Max pooling's pass 2 visits only the tiles holding a channel's maximum (at most K)."""
    model = _classifier("max")
    image = _image(96, 96)
    seen: list[int] = []
    real = slide_module._Run.features

    def counting(self: slide_module._Run, crop: np.ndarray, t: _Tile) -> torch.Tensor:
        seen.append(int(torch.is_grad_enabled()))
        return real(self, crop, t)

    monkeypatch.setattr(slide_module._Run, "features", counting)
    slide_backward(model, image, 0, tile=16)
    assert seen.count(0) == 36 and 1 <= seen.count(1) <= K


def test_frozen_trunk_skips_pass_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the head trains: no tile runs with autograd, and the head's gradients are exact."""
    model = _classifier("mean")
    model.trunk.requires_grad_(False)
    image = _image(40, 40)
    value, grads = _reference(model, image, 1)
    seen: list[bool] = []
    real = slide_module._Run.features

    def counting(self: slide_module._Run, crop: np.ndarray, t: _Tile) -> torch.Tensor:
        seen.append(torch.is_grad_enabled())
        return real(self, crop, t)

    monkeypatch.setattr(slide_module._Run, "features", counting)
    assert abs(slide_backward(model, image, 1, tile=16) - value) <= TOL
    assert len(seen) == 9 and not any(seen)
    for n, p in model.head.named_parameters():
        assert float((p.grad - grads[f"head.{n}"]).abs().max()) <= TOL


def test_refusals() -> None:
    model = _classifier("mean")
    image = _image(32, 32)
    before = [p.detach().clone() for p in model.parameters()]
    for bad in (1.0, "1", True, None, np.float64(1)):
        with pytest.raises(InputError, match="integer class index"):
            slide_backward(model, image, bad, tile=16)  # type: ignore[arg-type]
    for bad in (-1, C, np.int64(7)):
        with pytest.raises(InputError, match=r"not a class index 0\.\.2"):
            slide_backward(model, image, bad, tile=16)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="loss='ce'"):
        slide_backward(model, image, 0, loss="bce", tile=16)
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(UnsupportedModelError, match="head must be an nn.Module"):
        SlideClassifier(model.trunk, lambda f: f, "mean")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="pool 'sum' is not valid"):
        SlideClassifier(model.trunk, model.head, "sum")
    non_local = nn.Sequential(nn.Conv2d(3, K, 3, padding=1), nn.GroupNorm(1, K))
    with pytest.raises(UnsupportedModelError):
        SlideClassifier(non_local, model.head, "mean")
    with pytest.raises(UnsupportedModelError):
        slide_backward(SlideClassifier(non_local, model.head, "mean", features=K), image, 0, tile=16)
    wrong_head = SlideClassifier(model.trunk, nn.Linear(K, C).double(), "mean")
    wrong_head.head = nn.Flatten(0)  # gives (C,), not (1, C)
    with pytest.raises(UnsupportedModelError, match=r"\(1, C\) class logits"):
        slide_backward(wrong_head, image, 0, tile=16)


def test_error_in_a_tile_leaves_grad_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _classifier("attention")
    image = _image(48, 48)
    calls = {"n": 0}
    real = slide_module._Run.features

    def failing(self: slide_module._Run, crop: np.ndarray, t: _Tile) -> torch.Tensor:
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("tile failed")
        return real(self, crop, t)

    monkeypatch.setattr(slide_module._Run, "features", failing)
    with pytest.raises(RuntimeError, match="tile failed"):
        slide_backward(model, image, 1, tile=16)
    assert all(p.grad is None for p in model.parameters())


def test_worked_example_and_benchmark_smoke(tmp_path: Path) -> None:
    """scripts/slide_classifier_example.py and benchmarks/slide_classifier.py at a tiny size."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(root / "scripts/slide_classifier_example.py"), "--out", str(out),
                    "--cache", str(tmp_path / "cache"), "--size", "192", "--train", "2", "--heldout", "2",
                    "--steps", "2", "--eval-every", "1", "--tile", "96"],
                   check=True, capture_output=True, text=True, timeout=300, env=env)
    result = json.loads((out / "results.json").read_text())
    assert len(result["curve"]) == 2 and len(result["heldout"]) == 2
    assert {p.name for p in out.iterdir()} >= {"README.md", "curve.png", "examples.png", "results.json"}
    bench = load_script("benchmarks/slide_classifier.py")
    bench.BASE, bench.CACHE = 64, tmp_path / "base.npy"  # a small base slide, not the shared /tmp one
    for kind in ("tiled", "whole"):
        row = bench.one(kind, 80, "max", 32, 1)
        assert row["megapixels"] == 80 * 80 / 1e6 and row["peak_rss_mib"] > 0
    base = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(bench.RepeatedTile(base, 5, 7)[1:4, 2:6], np.tile(base, (3, 3, 1))[1:4, 2:6])


def test_an_integer_label_for_a_per_pixel_model_is_refused() -> None:
    """An int is a SlideClassifier's label; a segmentation model given one is told what it needs."""
    from gigaseg import UNet, preset
    from gigaseg.engine import tiled_backward
    from gigaseg.errors import InputError

    with pytest.raises(InputError, match="integer label is for a gigaseg.SlideClassifier"):
        tiled_backward(UNet(preset("tiny")), np.zeros((32, 32, 3), np.uint8), 1)
