"""The built-in tissue model (issue 18): it ships in the package, loads offline without pickle,
beats Otsu on the shared H&E slide, and gives consistent masks at any input resolution."""

from __future__ import annotations

import json
import warnings
import zipfile

import numpy as np
import pytest
import tifffile
import torch
from conftest import need_real
from PIL import Image

import gigaseg
from gigaseg.checkpoint import builtin_model_path, load_checkpoint
from gigaseg.cli import main


def test_the_builtin_model_ships_small_and_loads_without_pickle():
    path = builtin_model_path()
    assert path.is_file(), "src/gigaseg/weights/tissue.npz is missing (scripts/tissue_model/ship.py makes it)"
    assert path.stat().st_size < 100_000  # tens of kB: 6 bits per weight (NOTE [Quantized weights])
    with zipfile.ZipFile(path) as z:  # only .npy members: arrays and one JSON string, no pickles
        assert all(n.endswith(".npy") for n in z.namelist())
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["__meta__"].item().decode())
    assert meta["format"] == "gigaseg-weights" and 0.25 <= meta["mpp"] <= 50 and meta["quantized"]["bits"] == 6
    model, mpp = gigaseg.load_model()
    assert mpp == meta["mpp"] and not model.training
    same, _ = gigaseg.load_model("builtin")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), same(x))
    # trained on synthetic slides only: the stores scripts/tissue_model/ makes, and no machine's paths
    info = load_checkpoint()["info"]
    assert info["train_config"]["data"] in ("data-4", "data-4d")
    assert "/" not in json.dumps({k: info[k] for k in ("train_config", "result")})


def test_predict_without_a_model_uses_the_builtin_one_and_beats_otsu(tmp_path, real_data):
    from gigaseg.baseline import baseline_slide
    from gigaseg.metrics import evaluate_pair

    slide = real_data / "slides" / "CMU-1-Small-Region.svs"
    ref = real_data / "masks" / "CMU-1-Small-Region.reference.png"
    need_real(slide, ref)
    assert main(["predict", str(slide), "--out", str(tmp_path / "m"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "m" / "CMU-1-Small-Region.json").read_text())
    assert summary["model"] == "builtin"
    otsu = baseline_slide(slide, tmp_path / "o", method="otsu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = evaluate_pair(tmp_path / "m" / "CMU-1-Small-Region.mask.tiff", ref)["dice"]
        theirs = evaluate_pair(otsu["paths"]["mask"], ref)["dice"]
    assert ours > theirs, (ours, theirs)


def _coarse(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 0/255 mask on the coarsest grid: the share of tissue under each coarse pixel, >= 1/2."""
    im = Image.fromarray((mask > 127).astype(np.float32))
    return np.asarray(im.resize(shape[::-1], Image.Resampling.BOX)) >= 0.5


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def test_one_slide_at_four_resolutions_gives_the_same_mask(tmp_path):
    """One synthetic slide (3 x 3 mm) rendered at 0.5, 2, 8 and 32 um/px: the built-in model's masks
    agree within Dice 0.97 of each other on the coarsest grid (the model reads each at its own
    resolution, resampled, down or up)."""
    from gigaseg.synth import render_region

    side_um, seed, profile = 3000, 4, "he-wide,sections,bg-white"
    images = {}
    for mpp in (0.5, 2.0, 8.0):
        n = round(side_um / mpp)
        images[mpp] = render_region(seed, 0, 0, n, n, width=n, height=n, mpp=mpp, profile=profile)[0]
    n8 = images[8.0].shape[0]
    images[32.0] = np.asarray(Image.fromarray(images[8.0]).resize((n8 // 4, n8 // 4), Image.Resampling.BOX))
    coarse = images[32.0].shape[:2]
    masks = {}
    for mpp, rgb in images.items():
        path = tmp_path / f"s{mpp:g}.tif"
        tifffile.imwrite(path, rgb)
        s = gigaseg.predict_slide(None, path, tmp_path / "out", mpp=mpp, progress=False)
        masks[mpp] = _coarse(tifffile.imread(s["paths"]["mask"]), coarse)
    assert all(m.mean() > 0.05 for m in masks.values())  # tissue was found at every resolution
    pairs = {(a, b): _dice(masks[a], masks[b]) for a in masks for b in masks if a < b}
    assert min(pairs.values()) >= 0.97, pairs


def test_an_image_without_a_resolution_is_refused_naming_the_fix(tmp_path):
    path = tmp_path / "thumb.png"
    Image.fromarray(np.full((40, 60, 3), 230, np.uint8)).save(path)
    with pytest.raises(gigaseg.errors.SlideError, match="mpp"):
        gigaseg.predict_slide(None, path, tmp_path / "out", progress=False)


def test_the_builtin_model_balances_its_glass_and_holds_when_a_scanner_darkens_it():
    import dataclasses

    from gigaseg.engine import tiled_predict
    from gigaseg.synth import render_region

    model, mpp = gigaseg.load_model()
    assert model.config.glass_white == 250.0  # NOTE [Glass balance]
    plain, _ = gigaseg.load_model()
    plain.config = dataclasses.replace(plain.config, glass_white=0.0)
    rgb, _ = render_region(3, 0, 0, 384, 384, width=384, height=384, mpp=mpp, profile="he")
    darker = (rgb.astype(np.float32) * 0.88).round().astype(np.uint8)  # a scanner's exposure 12% lower

    def agreement(m):
        a, b = tiled_predict(m, rgb) >= 0.5, tiled_predict(m, darker) >= 0.5
        return 2 * (a & b).sum() / max(1, a.sum() + b.sum())

    balanced, unbalanced = agreement(model), agreement(plain)
    assert balanced >= 0.99 and unbalanced < balanced - 0.03, (balanced, unbalanced)


def test_the_model_that_load_model_returns_runs_at_its_own_resolution(tmp_path):
    """The UNet of load_model() alone, without model_mpp, runs at the 4 um/px it was trained at (as
    "builtin" and the (UNet, mpp) pair do), not at the slide's 8 um/px; a UNet built otherwise still
    runs at the slide's."""
    from gigaseg.checkpoint import trained_mpp
    from gigaseg.synth import render_region

    rgb = render_region(4, 0, 0, 160, 160, width=160, height=160, mpp=8.0, profile="he-wide,sections,bg-white")[0]
    path = tmp_path / "s8.tif"
    tifffile.imwrite(path, rgb)
    net, mpp = gigaseg.load_model()
    assert mpp == trained_mpp(net) == 4.0
    runs = {name: gigaseg.predict_slide(model, path, tmp_path / name, mpp=8.0, progress=False)
            for name, model in (("builtin", None), ("bare", net), ("pair", (net, mpp)))}
    for s in runs.values():
        assert (s["model_mpp"], s["model_mpp_source"]) == (4.0, "checkpoint")
    masks = {name: tifffile.imread(s["paths"]["mask"]) for name, s in runs.items()}
    assert np.array_equal(masks["bare"], masks["builtin"]) and np.array_equal(masks["pair"], masks["builtin"])
    fresh = gigaseg.UNet(net.config)
    assert trained_mpp(fresh) is None
    s = gigaseg.predict_slide(fresh, path, tmp_path / "fresh", mpp=8.0, progress=False)
    assert (s["model_mpp"], s["model_mpp_source"]) == (8.0, "slide level 0")
