"""scripts/tissue_model/: the study's data, training, scoring and shipping, at a tiny size."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REAL_DATA, ROOT, load_script, need_real

from gigaseg.checkpoint import builtin_model_path, component_filter, load_checkpoint, load_model
from gigaseg.components import ComponentFilter
from gigaseg.store import RegionStore


def test_data_train_score_and_ship_at_a_tiny_size(tmp_path, monkeypatch):
    make_data = load_script("scripts/tissue_model/make_data.py")
    assert make_data.main(["--mpp", "8", "--out", str(tmp_path / "data-8"), "--size", "96", "--train", "3",
                           "--val", "1", "--degraded", "1"]) == 0
    assert make_data.main(["--mpp", "8", "--out", str(tmp_path / "data-8"), "--size", "96", "--train", "1",
                           "--val", "1", "--append"]) == 0
    store = RegionStore(tmp_path / "data-8")
    assert [r.name for r in store.split("val")] == ["s90000", "s90001"]  # seeds go on where they stopped
    degraded = [r for r in store.split("train") if r.meta["source"]["degraded_by"] > 1]
    assert degraded and all(r.name.endswith(f"-f{r.meta['source']['degraded_by']:g}") for r in degraded)
    assert all(set(np.unique(np.asarray(r.mask))) <= {0, 1} for r in store)

    run = subprocess.run([sys.executable, str(ROOT / "scripts/tissue_model/run_study.py"), "--root", str(tmp_path),
                          "--runs", "paper-8", "--steps", "2"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    model, mpp = load_model(tmp_path / "paper-8" / "checkpoint.pt")
    assert mpp == 8.0 and model.config.input_shift == 0.8  # the study's models are centred on glass

    ship = load_script("scripts/tissue_model/ship.py")
    assert ship.main([str(tmp_path / "paper-8"), "--out", str(tmp_path / "w.npz")]) == 0
    info = load_checkpoint(tmp_path / "w.npz")["info"]
    assert info["step"] == 2 and info["run"] == "paper-8" and "averaged_from" not in info
    assert load_model(tmp_path / "w.npz")[0].config.glass_white == 250.0  # the shipped model balances its glass
    assert ship.main([str(tmp_path / "paper-8"), "--out", str(tmp_path / "w0.npz"), "--glass-white", "0"]) == 0
    assert component_filter(load_model(tmp_path / "w.npz")[0]) is None  # none unless asked for
    filt = ComponentFilter(mean=(0.0,) * 11, scale=(1.0,) * 11, coef=(0.5,) * 11, bias=1.0)
    (tmp_path / "f.json").write_text(json.dumps({"filter": filt.to_dict()}))
    assert ship.main([str(tmp_path / "paper-8"), "--out", str(tmp_path / "wf.npz"), "--component-filter",
                      str(tmp_path / "f.json")]) == 0
    assert component_filter(load_model(tmp_path / "wf.npz")[0]) == filt
    assert load_model(tmp_path / "w0.npz")[0].config.glass_white == 0
    ckpt = str(tmp_path / "paper-8" / "checkpoint.pt")
    # a filter fitted to this model's masks, at its resolution, for ship.py --component-filter
    cf = load_script("scripts/tissue_model/component_filter.py")
    cf_args = ["--work", str(tmp_path / "cf"), "--out", str(tmp_path / "f8.json"), "--train", "2", "--val", "1",
               "--held-out", "1", "--weights", "1e9", "--model", ckpt]
    assert cf.main(cf_args) == 0
    f8 = json.loads((tmp_path / "f8.json").read_text())
    assert f8["model"] == ckpt and f8["slides"]["mpp"] == 8.0 and not (tmp_path / "cf" / "slides").exists()
    assert len(list((tmp_path / "cf").glob("slides-*/*.npz"))) == 4  # its own cache, apart from the built-in's
    with pytest.raises(SystemExit):
        cf.main([*cf_args, "--ship"])  # --ship writes the built-in file only
    assert load_script("scripts/tissue_model/average.py").main([ckpt, ckpt, "--out", str(tmp_path / "avg.pt")]) == 0
    assert ship.main([str(tmp_path / "paper-8"), "--checkpoint", str(tmp_path / "avg.pt"),
                      "--out", str(tmp_path / "w2.npz"), "--bits", "16"]) == 0
    info = load_checkpoint(tmp_path / "w2.npz")["info"]
    assert info["averaged_from"] == ["checkpoint.pt", "checkpoint.pt"] and info["run"] == "paper-8"
    # the default 6 bits per convolution weight against float16: the same model, a smaller file
    assert (tmp_path / "w.npz").stat().st_size < (tmp_path / "w2.npz").stat().st_size

    evaluate = load_script("scripts/tissue_model/evaluate.py")
    scores = evaluate.synthetic_scores(model, tmp_path / "data-8")
    assert scores["groups"]["all"]["n"] == 2 and 0 <= scores["groups"]["all"]["dice"] <= 1
    assert scores["groups"]["faint"]["n"] >= 1

    # the fit check: every 2nd of the first 3 training regions (2 of them) and both held-out ones
    fit = load_script("scripts/tissue_model/fit_check.py")
    assert fit.main(["--data", str(tmp_path / "data-8"), "--model", ckpt, "--first", "3", "--every", "2",
                     "--out", str(tmp_path / "fit.json")]) == 0
    got = json.loads((tmp_path / "fit.json").read_text())
    assert [r["region"] for r in got["train"]["per_slide"]] == [r.name for r in store.split("train")[:3:2]]
    assert got["train"]["slides"] == 2 and got["val"]["slides"] == 2
    assert got["val"]["groups"]["all"]["dice"] == pytest.approx(scores["groups"]["all"]["dice"])
    with pytest.raises(SystemExit, match="at least 1"):
        fit.main(["--data", str(tmp_path / "data-8"), "--every", "0"])


def test_scoring_real_slides(tmp_path):
    need_real(REAL_DATA / "masks" / "CMU-1-Small-Region.reference.png")
    evaluate = load_script("scripts/tissue_model/evaluate.py")
    model, mpp = load_model()
    real = evaluate.real_scores((model, mpp), REAL_DATA, baselines=False)
    assert set(real) == {"CMU-1-Small-Region", "kidney-48-5"}
    assert real["CMU-1-Small-Region"]["model"]["dice"] > 0.9


def test_checkpoint_spread_scores_each_checkpoint_and_sums_up_per_run(tmp_path, capsys):
    """checkpoint_spread.py: one row per checkpoint, named by its run (the folder, less "-snap"),
    the same Dice for the same weights, and each run's lowest, highest and mean."""
    spread = load_script("scripts/tissue_model/checkpoint_spread.py")
    assert spread.run_name(tmp_path / "stage4-snap" / "step-1.pt") == "stage4"
    assert spread.run_name(tmp_path / "stage4" / "checkpoint.pt") == "stage4"
    assert spread.run_name(tmp_path / "stage7" / "checkpoints" / "step-9000.pt") == "stage7"
    rows = [{"run": "a", "checkpoint": "1", "s": 0.5}, {"run": "a", "checkpoint": "2", "s": 0.7},
            {"run": "b", "checkpoint": "1", "s": 0.9}]
    got = spread.spread(rows, ["s"])
    assert got["a"]["s"] == {"min": 0.5, "max": 0.7, "mean": pytest.approx(0.6), "n": 2}
    assert got["b"]["s"]["n"] == 1
    with pytest.raises(SystemExit, match="no such checkpoint"):
        spread.main([str(tmp_path / "missing.pt"), "--data", str(REAL_DATA)])
    need_real(REAL_DATA / "masks" / "CMU-1-Small-Region.reference.png")
    snap = tmp_path / "builtin-snap"
    snap.mkdir()
    weights = ROOT / "src" / "gigaseg" / "weights" / "tissue.npz"
    for name in ("step-1.npz", "step-2.npz"):
        (snap / name).write_bytes(weights.read_bytes())
    out = tmp_path / "spread.json"
    assert spread.main([str(snap / "step-1.npz"), str(snap / "step-2.npz"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [(r["run"], r["checkpoint"]) for r in doc["snapshots"]] == [("builtin", "step-1.npz"),
                                                                        ("builtin", "step-2.npz")]
    cmu = doc["spread"]["builtin"]["CMU-1-Small-Region"]
    assert cmu["n"] == 2 and cmu["min"] == cmu["max"] > 0.9
    assert "builtin: CMU-1-Small-Region" in capsys.readouterr().out


def test_checkpoint_spread_scores_the_eight_orientations(tmp_path, monkeypatch):
    """checkpoint_spread.py --orientations: each slide's Dice in its eight orientations, their mean
    (spread per run too) and the Dice of the mean of 8; here on kidney-48-5 alone, the small one."""
    need_real(REAL_DATA / "masks" / "kidney-48-5.reference.png")
    spread = load_script("scripts/tissue_model/checkpoint_spread.py")
    import evaluate

    monkeypatch.setattr(evaluate, "REAL_SLIDES", [s for s in evaluate.REAL_SLIDES if s[0] == "kidney-48-5"])
    out = tmp_path / "spread.json"
    weights = ROOT / "src" / "gigaseg" / "weights" / "tissue.npz"
    assert spread.main([str(weights), "--orientations", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["snapshots"][0]
    each = row["kidney-48-5 orientations"]
    assert len(each) == 8 and each["as is"] == pytest.approx(row["kidney-48-5"], abs=1e-9)
    assert min(each.values()) < row["kidney-48-5 orientation mean"] < max(each.values())  # they differ
    assert row["kidney-48-5 orientation mean"] == pytest.approx(sum(each.values()) / 8)
    assert 0 < row["kidney-48-5 mean of 8"] <= 1
    assert "kidney-48-5 orientation mean" in json.loads(out.read_text())["spread"]["weights"]


def test_retrain_says_what_it_does():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/tissue_model/retrain.py"), "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("usage:") and "6,000 steps" in out


def test_widening_keeps_the_function_and_trains_the_new_channels(tmp_path):
    widen = load_script("scripts/tissue_model/widen.py")
    out = tmp_path / "wide.pt"
    old, mpp = load_model()
    channels = [c + 4 for c in old.config.channels]
    assert widen.main(["builtin", "--channels", ",".join(map(str, channels)), "--out", str(out)]) == 0
    wide, wide_mpp = load_model(out)
    assert wide_mpp == mpp and list(wide.config.channels) == channels
    assert {k: v for k, v in wide.config.to_dict().items() if k != "channels"} == \
        {k: v for k, v in old.config.to_dict().items() if k != "channels"}
    x = torch.rand(1, 3, 200, 131, dtype=torch.float64)
    with torch.no_grad():
        assert (old.double()(x) - wide.double()(x)).abs().max() < 1e-9
    # the new channels start silent, not dead: the weights out of them get gradients at once, and
    # after one step of training every new weight does
    wide.train()
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        (wide(x) - 1).square().mean().backward()
        if step == 0:
            opt.step()
    for i, block in enumerate(wide.encoder):
        new_rows = block.conv.weight.grad[old.config.channels[i]:]
        assert new_rows.numel() == 0 or new_rows.abs().sum() > 0, f"encoder {i}'s new channels get no gradient"
    with pytest.raises(SystemExit, match="at least"):
        narrow = [c - 1 for c in old.config.channels]
        widen.main(["builtin", "--channels", ",".join(map(str, narrow)), "--out", str(tmp_path / "narrow.pt")])


def test_glass_probe_finds_the_glass_and_runs_at_a_tiny_size(capsys):
    probe = load_script("scripts/tissue_model/glass_probe.py")
    img = np.full((64, 64, 3), (200, 190, 185), np.uint8)  # dark tinted glass
    img[20:40, 20:40] = (120, 60, 140)  # tissue
    img[:, :4] = 0  # black padding
    assert probe.glass(img).tolist() == [200, 190, 185]
    out = probe.scaled(img, 242.0)
    assert out[0, 10].tolist() == [242, 242, 242] and (out[30, 30] > img[30, 30]).all()
    assert probe.main(["--slides", "2", "--size", "128", "--no-real"]) == 0
    printed = capsys.readouterr().out
    assert "synthetic, as is:" in printed and "synthetic, glass scaled:" in printed


def test_glass_probe_writes_a_scaled_copy_of_a_store(tmp_path, capsys):
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    probe = load_script("scripts/tissue_model/glass_probe.py")
    src = RegionStore.create(tmp_path / "src")
    prepare_synthetic(src, 2, (64, 64), seed=1, val=1, progress=False)
    assert probe.main(["--scale-store", str(tmp_path / "src"), str(tmp_path / "dst"), "--target", "230"]) == 0
    assert "2 regions" in capsys.readouterr().out
    dst = RegionStore(tmp_path / "dst")
    for a in src:
        b = dst[a.name]
        assert b.split == a.split and b.meta["glass_scaled_to"] == 230
        assert np.array_equal(np.asarray(b.mask), np.asarray(a.mask))
        assert np.array_equal(np.asarray(b.image), probe.scaled(np.asarray(a.image), 230.0))
    assert probe.scale_store(str(tmp_path / "src"), str(tmp_path / "dst"), 230.0) == 2  # resumed: nothing new


def test_hard_pixels_keeps_the_wrong_pixels_and_a_share_of_the_rest(tmp_path, capsys):
    from gigaseg.engine import tiled_predict
    from gigaseg.prepare import prepare_synthetic

    hard = load_script("scripts/tissue_model/hard_pixels.py")
    src = RegionStore.create(tmp_path / "src")
    prepare_synthetic(src, 3, (64, 64), seed=2, val=1, progress=False)
    assert hard.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--keep", "0.2"]) == 0
    assert "3 regions" in capsys.readouterr().out
    model, _ = load_model("builtin")
    dst = RegionStore(tmp_path / "dst")
    for i, a in enumerate(src):
        b, y = dst[a.name], np.asarray(a.mask)
        assert b.split == a.split and np.array_equal(np.asarray(b.image), np.asarray(a.image))
        got = np.asarray(b.mask)
        if a.split != "train":
            assert np.array_equal(got, y)  # validation scores whole slides
            continue
        p = tiled_predict(model, np.asarray(a.image))
        wrong = np.abs(p - (y == 1)) >= 0.25
        assert np.array_equal(got[got != 255], y[got != 255]) and not (got[wrong] == 255).any()
        assert np.array_equal(got, hard.hard_mask(p, y, 0.2, 0.25, 1000 + i))
        easy = ~wrong
        assert 0.1 < np.mean(got[easy] != 255) < 0.3  # about the share asked for
    with pytest.raises(SystemExit, match="must lie in"):
        hard.main([str(tmp_path / "src"), str(tmp_path / "x"), "--keep", "0"])
    with pytest.raises(SystemExit, match="exists"):
        hard.main([str(tmp_path / "src"), str(tmp_path / "dst")])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert hard.main([str(tmp_path / "src"), str(tmp_path / "dst2") + "/"]) == 0  # a trailing slash
    assert RegionStore(tmp_path / "dst2").names == dst.names


def test_error_sources_attributes_each_wrong_pixel_to_its_object(tmp_path, capsys):
    es = load_script("scripts/tissue_model/error_sources.py")
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 1
    labels = mask.copy()
    labels[15:25, 15:25] = 2  # adipose inside the tissue
    labels[0:4, 36:40] = 19  # a smudge on glass
    mask[0, 0] = 255  # ignored
    pred = mask == 1
    pred[15:25, 15:25] = False  # the adipose called glass: 3 to 5 px inside the edge
    pred[0:4, 36:40] = True  # the smudge called tissue
    pred[0, 0] = True  # ignored: no error
    pred[35, 0:3] = True  # glass called tissue, 5+ px from the tissue
    a = es.attribute(pred, mask, labels)
    assert a["labels"][2] == [100, 100] and a["labels"][19] == [16, 16] and a["labels"][1] == [300, 0]
    assert a["labels"][0][1] == 3
    assert sum(a["glass_called_tissue"]) == 3 and a["glass_called_tissue"][2] == 3  # (8, 32]
    assert a["adipose_called_glass"] == [0, 84, 16, 0]  # 6-10 px inside the edge: the middle 4 x 4 beyond 8
    out = tmp_path / "e.json"
    assert es.main(["--slides", "2", "--size", "128", "--first", "93001", "--out", str(out)]) == 0
    assert "share of all errors" in capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["labels"]["glass"]["pixels"] > 0 and record["first_seed"] == 93001


def test_averaging_checkpoints_gives_the_mean_weights(tmp_path):
    from gigaseg import UNet, UNetConfig
    from gigaseg.checkpoint import save_checkpoint

    avg = load_script("scripts/tissue_model/average.py")
    cfg = UNetConfig(depth=2, channels=(2, 4), strides=(2, 2), encoder_kernels=(3, 3), decoder_kernels=(3, 3))
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        path = tmp_path / f"c{seed}.pt"
        save_checkpoint(path, UNet(cfg), mpp=4.0)
        paths.append(str(path))
    assert avg.main([*paths, "--out", str(tmp_path / "avg.pt")]) == 0
    mean, mpp = load_model(tmp_path / "avg.pt")
    models = [load_model(p)[0] for p in paths]
    assert mpp == 4.0
    for name, p in mean.named_parameters():
        want = sum(dict(m.named_parameters())[name].double() for m in models) / 3
        assert torch.allclose(p.double(), want, atol=1e-7), name
    save_checkpoint(tmp_path / "other.pt", UNet(UNetConfig(depth=2, channels=(2, 8), strides=(2, 2),
                                                           encoder_kernels=(3, 3), decoder_kernels=(3, 3))), mpp=4.0)
    with pytest.raises(SystemExit, match="different architectures"):
        avg.main([paths[0], str(tmp_path / "other.pt"), "--out", str(tmp_path / "bad.pt")])
    save_checkpoint(tmp_path / "coarse.pt", models[0], mpp=8.0)
    with pytest.raises(SystemExit, match="different resolutions"):
        avg.main([paths[0], str(tmp_path / "coarse.pt"), "--out", str(tmp_path / "bad.pt")])
    with pytest.raises(SystemExit, match="at least two"):
        avg.main([paths[0], "--out", str(tmp_path / "bad.pt")])


def test_make_data_boosts_categories_in_training_slides_only(tmp_path):
    make_data = load_script("scripts/tissue_model/make_data.py")
    assert make_data.main(["--mpp", "8", "--out", str(tmp_path / "d"), "--size", "64", "--train", "3", "--val", "1",
                           "--degraded", "0", "--boost", "seams,smudge"]) == 0
    store = RegionStore(tmp_path / "d")
    for r in store.split("train"):
        assert {"seams", "smudge"} <= set(r.meta["source"]["categories"]), r.name
        assert r.meta["source"]["profile"] != "all"
    assert [r.meta["source"]["profile"] for r in store.split("val")] == ["all"]
    with pytest.raises(SystemExit, match="may or may not have"):
        make_data.main(["--mpp", "8", "--out", str(tmp_path / "e"), "--boost", "ihc"])  # a stain: exclusive


def test_held_out_slides_are_the_same_with_or_without_labels():
    evaluate = load_script("scripts/tissue_model/evaluate.py")
    plain = list(evaluate.held_out(2, 96, 8.0))
    labelled = list(evaluate.held_out(2, 96, 8.0, labels=True))
    assert [s[0] for s in plain] == [90000, 90001] and [s[1] for s in plain] == [s[1] for s in labelled]
    for a, b in zip(plain, labelled):
        assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3]) and a[4] is None and b[4].shape == (96, 96)


def test_deepening_adds_a_level_and_keeps_a_relu_models_function(tmp_path):
    from gigaseg import UNet, UNetConfig
    from gigaseg.checkpoint import save_checkpoint

    deepen = load_script("scripts/tissue_model/deepen.py")
    cfg = UNetConfig(depth=2, channels=(3, 5), strides=(2, 2), encoder_kernels=(5, 3), decoder_kernels=(3, 3),
                     activation="relu", input_shift=0.8, input_scale=4.0)
    torch.manual_seed(0)
    old = UNet(cfg).double()
    deep = deepen.deepen(old, 4, stride=2, kernel=3).double()
    assert deep.config.depth == 3 and deep.config.channels == (3, 5, 4) and deep.config.strides == (2, 2, 2)
    assert deep.config.halo > old.config.halo
    x = torch.rand(1, 3, 70, 53, dtype=torch.float64)
    with torch.no_grad():  # ReLU features are never negative: passed through the join, they are unchanged
        assert (old(x) - deep(x)).abs().max() < 1e-12
    deep.train()
    (deep(x) - 1).square().mean().backward()
    join = deep.decoder[1].conv.weight.grad
    assert join[:, :4].abs().sum() > 0, "the join's weights from the new level get no gradient"
    # a leaky ReLU model moves a little; other activations are refused
    torch.manual_seed(0)
    leaky = UNet(dataclasses.replace(cfg, activation="leaky_relu")).double()
    with torch.no_grad():
        d = (torch.sigmoid(leaky(x)) - torch.sigmoid(deepen.deepen(leaky, 4).double()(x))).abs().max()
    assert 0 <= d < 0.05
    with pytest.raises(SystemExit, match="ReLU-like"):
        deepen.deepen(UNet(dataclasses.replace(cfg, activation="gelu")), 4)
    save_checkpoint(tmp_path / "m.pt", UNet(dataclasses.replace(cfg, activation="leaky_relu")), mpp=8.0)
    assert deepen.main([str(tmp_path / "m.pt"), "--channels", "4", "--out", str(tmp_path / "d.pt")]) == 0
    model, mpp = load_model(tmp_path / "d.pt")
    assert mpp == 8.0 and model.config.depth == 3


def test_the_scanner_study_changes_colours_as_scanners_do():
    real = load_script("scripts/real_slides_eval.py")
    rgb = np.full((4, 4, 3), 250, np.uint8)
    rgb[0, 0] = (120, 60, 140)
    assert np.array_equal(real.shifted(rgb, "exposure -10%")[1, 1], [225, 225, 225])
    cool = real.shifted(rgb, "cool white balance")[1, 1]
    assert cool[0] < cool[1] < cool[2] == 250
    warm = real.shifted(rgb, "warm white balance")[1, 1]
    assert warm[0] == 250 > warm[1] > warm[2]
    darker = real.shifted(rgb, "gamma 1.25")
    assert darker[1, 1, 0] < 250 and darker[0, 0, 1] < 60 and darker.dtype == np.uint8
    with pytest.raises(SystemExit):
        real.main(["--shifts", "sepia", "--out", "unused"])


def test_the_orientation_study_turns_the_reference_with_the_slide(tmp_path):
    """real_slides_eval's orientation study: each of the eight orientations is scored against the
    reference turned with the slide (a non-square synthetic slide, whose axes swap in four of them),
    "as is" and "mean of N" are what predict_slide gives directly."""
    import warnings

    from PIL import Image

    from gigaseg.metrics import evaluate_pair
    from gigaseg.predict import predict_slide
    from gigaseg.synth.render import render_region

    real = load_script("scripts/real_slides_eval.py")
    rgb, mask = render_region(7, 0, 0, 512, 768, width=512, height=768, mpp=4.0)
    Image.fromarray(rgb).save(tmp_path / "s.png")
    Image.fromarray((mask == 1).astype(np.uint8)).save(tmp_path / "s.reference.png")

    def run(method, path, od, mpp, orientations=1):
        assert method == "model"
        return predict_slide(None, path, od, mpp=mpp, overwrite=True, progress=False, orientations=orientations)

    def direct(n):
        s = predict_slide(None, tmp_path / "s.png", tmp_path / f"direct{n}", mpp=4.0, progress=False, orientations=n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return evaluate_pair(s["paths"]["mask"], tmp_path / "s.reference.png")["dice"]

    row = real.orientation_study(run, "s.png (synthetic)", tmp_path / "s.png", 4.0, tmp_path / "s.reference.png",
                                  tmp_path / "study")
    assert row["slide"] == "s.png" and len(row["each"]) == 8 and set(row["mean_of"]) == {"2", "4", "8"}
    assert min(row["each"].values()) > 0.9  # each turned mask against its turned reference
    assert row["each"]["as is"] == pytest.approx(direct(1), abs=1e-9)
    assert row["mean_of"]["8"] == pytest.approx(direct(8), abs=1e-9)
    assert row["each_min"] <= row["each_mean"] <= row["each_max"]
    lines = real._orientation_lines({"orientation_study": [row]})
    assert any(line.startswith("| s.png | ") for line in lines)


def test_component_filter_fits_chooses_and_ships_at_a_tiny_size(tmp_path, monkeypatch):
    script = load_script("scripts/tissue_model/component_filter.py")
    args = ["--work", str(tmp_path / "cf"), "--out", str(tmp_path / "f.json"), "--train", "3", "--val", "2",
            "--held-out", "2", "--weights", "1,1000"]
    # fitted on 3 slides, whether a filter keeps every piece of tissue on 2 others is luck (it changed with the
    # packages' versions): the largest weight is made safe, so that the choice and the shipping are tested
    fitted, real_fit, real_judge = [], script.fit, script.judge
    monkeypatch.setattr(script, "fit", lambda rows_, c: fitted.append(c) or real_fit(rows_, c))

    def judge(rows_, filt, mpp=script.MPP):
        v = real_judge(rows_, filt, mpp)
        return v | {"safe": v["safe"] or fitted[-1] == 1000.0}

    monkeypatch.setattr(script, "judge", judge)
    assert script.main(args) == 0
    result = json.loads((tmp_path / "f.json").read_text())
    assert [t["tissue_weight"] for t in result["tried"]] == [1.0, 1000.0]
    chosen = next(t for t in result["tried"] if t["safe"])  # the smallest safe weight is the one chosen
    assert result["tissue_weight"] == chosen["tissue_weight"]
    assert set(result["held_out"]["groups_after"]) == set(result["held_out"]["groups_before"])
    assert len(result["held_out"]["slides"]) == 2 and "--work cf " in result["command"]
    assert len(list((tmp_path / "cf" / "slides").glob("*.npz"))) == 7  # kept: a second run only refits
    # ship.py --component-filter stores it with the weights, which stay as they were
    ship = load_script("scripts/tissue_model/ship.py")
    w = tmp_path / "w.npz"
    shutil.copy(builtin_model_path(), w)
    ship.with_filter(w, ComponentFilter.from_dict(result["filter"]))
    assert component_filter(load_model(w)[0]).to_dict() == result["filter"]
    with np.load(builtin_model_path()) as a, np.load(w) as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "__meta__")


def test_seam_check_scores_each_slide_with_and_without_the_correction(tmp_path):
    script = load_script("scripts/tissue_model/seam_check.py")
    # seeds 90000-90001 at 256 px: neither was drawn with seams; the scores agree both ways
    assert script.main(["--seed", "90000", "--n", "2", "--side", "256", "--out", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert [r["seed"] for r in result["slides"]] == [90000, 90001]
    for r in result["slides"]:
        assert 0 <= r["with"] <= 1 and 0 <= r["without"] <= 1
        if r["seams_found"] is None:  # no seam found: nothing corrected, the same mask
            assert r["with"] == r["without"]
    s = result["summary"]
    assert s["all"]["slides"] == 2 == s["drawn_with_seams"]["slides"] + s["drawn_without_seams"]["slides"]
    rows = [{"categories": ["seams"], "with": 0.9, "without": 0.8, "seams_found": {}},
            {"categories": [], "with": 0.7, "without": 0.71, "seams_found": None}]
    summary = script.summarize(rows)
    assert summary["drawn_with_seams"]["gain"] == 0.1 and summary["drawn_without_seams"]["largest_loss"] == -0.01
    assert summary["drawn_without_seams"]["lower_by_over_0.005"] == 1 and summary["all"]["seams_found_on"] == 1


def test_real_slides_eval_scores_synthetic_slides_of_any_seed_with_scanner_colours(tmp_path):
    """--synthetic-seed picks the synthetic slides, and the scanner study changes their colours as it
    changes the real slides' (shifted before the model's glass balance), into one table per change."""
    from gigaseg.predict import predict_slide

    real = load_script("scripts/real_slides_eval.py")
    net, mpp = load_model()

    def run(method, path, od, at, orientations=1):
        assert method == "model"
        return predict_slide(net, path, od, mpp=at, progress=False, overwrite=True, orientations=orientations)

    as_drawn = real._synthetic(run, mpp, 1, tmp_path, first=93001)
    warm = real._synthetic(run, mpp, 1, tmp_path, shift="warm white balance", first=93001)
    assert as_drawn["seeds"] == [93001, 93001] and as_drawn["slides"][0]["seed"] == 93001
    assert warm["slides"][0]["dice"] != as_drawn["slides"][0]["dice"]  # another image
    assert abs(warm["slides"][0]["dice"] - as_drawn["slides"][0]["dice"]) < 0.05  # balanced back
    results = {"synthetic": as_drawn, "synthetic_shifts": {"warm white balance": warm["groups"]},
               "slides": [{"slide": f"{n}.x", **{m: {"dice": 0.9} for m in ("model", "otsu", "saturation")}}
                          for n in ("CMU-1-Small-Region", "kidney-48-5")]}
    assert real._targets(results)[2].startswith("| synthetic seeds 93001-93001, ")
    lines = real._synthetic_shift_lines(results)
    assert lines[-2].startswith("| as drawn | ") and lines[-1].startswith("| warm white balance | ")


def test_real_slides_eval_reads_synthetic_slides_coarser_than_the_model(tmp_path):
    """--synthetic-downsamples: each slide area-averaged, predicted at its coarser resolution through
    predict_slide, and scored on the coarse grid against its mask averaged the same way."""
    from gigaseg.predict import predict_slide

    real = load_script("scripts/real_slides_eval.py")
    calls = []

    def run(method, path, od, mpp, orientations=1):
        calls.append((method, path.name, mpp))
        return predict_slide(None, path, od, mpp=mpp, overwrite=True, progress=False)

    coarse = real._synthetic_coarse(run, 4.0, 1, [8], tmp_path, first=93001)
    assert calls == [("model", "s93001-x8.png", 32.0)]
    assert coarse["8"]["mpp"] == 32.0 and coarse["8"]["slides"][0]["seed"] == 93001
    assert coarse["8"]["groups"]["all"]["dice"] > 0.5  # the tissue is found on the 128 x 128 thumbnail
    block = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_array_equal(real._area_mean(block, 2), [[2.5, 4.5], [10.5, 12.5]])
    results = {"synthetic": {"mpp": 4.0, "groups": coarse["8"]["groups"]}, "synthetic_coarse": coarse}
    lines = real._coarse_lines(results)
    assert lines[-2].startswith("| 1 (4 um/px, as trained) | ") and lines[-1].startswith("| 8 (32 um/px) | ")


def test_make_data_draws_sharp_edges_in_training_slides_only(tmp_path):
    make_data = load_script("scripts/tissue_model/make_data.py")
    args = ["--mpp", "8", "--size", "64", "--train", "6", "--val", "2", "--degraded", "0"]
    assert make_data.main([*args, "--out", str(tmp_path / "d"), "--sharp-edges", "1"]) == 0
    assert make_data.main([*args, "--out", str(tmp_path / "p")]) == 0
    sharp, plain = RegionStore(tmp_path / "d"), RegionStore(tmp_path / "p")
    for a, b in zip(sharp.split("train"), plain.split("train")):
        assert a.name == b.name + "-e" and 0.6 <= a.meta["source"]["sharp_edges"] <= 1.0
        assert b.meta["source"]["sharp_edges"] is None
        assert np.array_equal(np.asarray(a.mask), np.asarray(b.mask))  # same slide, same mask
    changed = [not np.array_equal(np.asarray(a.image), np.asarray(b.image))
               for a, b in zip(sharp.split("train"), plain.split("train"))]
    assert sum(changed) >= 3  # (a slide with no tissue in its 64 x 64 pixels looks the same)
    for a, b in zip(sharp.split("val"), plain.split("val")):  # held-out slides stay as drawn
        assert a.name == b.name and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    with pytest.raises(SystemExit, match="share from 0 to 1"):
        make_data.main([*args, "--out", str(tmp_path / "x"), "--sharp-edges", "2"])


def test_edge_bands_scores_faded_and_sharp_edges(tmp_path):
    edge_bands = load_script("scripts/tissue_model/edge_bands.py")
    truth = np.zeros((12, 12), bool)
    truth[3:9, 3:9] = True
    pred = truth.copy()
    pred[2, 3:9] = True  # one row of the band outside called tissue
    pred[8, 3:9] = False  # one row of the band inside missed
    fo, bo, mi, bi, inter, p, t = edge_bands.bands(pred, truth)
    # 4-connected bands: the 10 x 10 square around the tissue less its 3-pixel corners, and the rim inside
    assert (fo, mi) == (6, 6) and bo == 100 - 36 - 4 * 3 and bi == 36 - 4 and (inter, p, t) == (30, 36, 36)
    out = tmp_path / "bands.json"
    assert edge_bands.main(["--slides", "1", "--first", "95003", "--size", "96", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"as drawn, x1", "as drawn, x2", "sharp, x1", "sharp, x2"}
    assert all(0 <= r["false_outside"] <= 1 and 0 <= r["missed_inside"] <= 1 and 0 <= r["dice"] <= 1
               for r in rows.values())
    with pytest.raises(SystemExit, match="even size"):
        edge_bands.main(["--size", "95"])


def test_siblings_load_the_tissue_model_scripts_by_path(monkeypatch):
    # another script folder's make_data.py imported first must not answer for the tissue model's
    qc = load_script("scripts/qc_model/make_data.py")
    monkeypatch.setitem(sys.modules, "make_data", qc)
    siblings = load_script("scripts/tissue_model/tm_siblings.py")
    make_data = siblings.sibling("make_data")
    assert hasattr(make_data, "degrade") and not hasattr(qc, "degrade")
    assert siblings.sibling("make_data") is make_data  # loaded once


def test_splitting_the_first_level_keeps_the_rest_of_the_model_exactly(tmp_path, capsys):
    from torch import nn

    from gigaseg import UNet, UNetConfig
    from gigaseg.checkpoint import save_checkpoint

    sf = load_script("scripts/tissue_model/split_front.py")
    cfg = UNetConfig(depth=3, channels=(4, 6, 6), strides=(4, 2, 2), encoder_kernels=(15, 5, 3),
                     decoder_kernels=(3, 3, 3), activation="leaky_relu", input_shift=0.8, input_scale=4.0)
    torch.manual_seed(0)
    old = UNet(cfg).double()
    new = sf.split(old, 8).double()
    assert new.config.depth == 4 and new.config.channels == (8, 4, 6, 6) and new.config.strides == (2, 2, 2, 2)
    assert new.config.halo >= old.config.halo  # the two new levels see at least what the old one saw

    class OldFirstLevel(nn.Module):  # stands in for the new level 2: the old level 1 of the image
        def forward(self, e1):
            return old.encoder[0](image)

    image = (torch.rand(1, 3, 80, 64, dtype=torch.float64) - 0.8) * 4  # as the model normalizes it (no padding)
    new.encoder[1] = OldFirstLevel()
    with torch.no_grad():  # the new level 1 reaches nothing, and the head gets d back from the +/- pair
        # (to float32's rounding: the split model is built in float32 and copies the weights into it)
        assert (old(image / 4 + 0.8) - new(image / 4 + 0.8)).abs().max() < 1e-6
    with pytest.raises(SystemExit, match="twice"):
        sf.split(old, 6)
    with pytest.raises(SystemExit, match="leaky_relu"):
        sf.split(UNet(dataclasses.replace(cfg, activation="relu")), 8)

    # the script: fits the new levels on a store's training slides, writes a checkpoint gigaseg train takes
    make_data = load_script("scripts/tissue_model/make_data.py")
    assert make_data.main(["--mpp", "8", "--out", str(tmp_path / "data"), "--size", "96", "--train", "2",
                           "--val", "1"]) == 0
    save_checkpoint(tmp_path / "m.pt", UNet(cfg), mpp=8.0)
    assert sf.main([str(tmp_path / "m.pt"), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "s.pt"),
                    "--steps", "20", "--crop", "64"]) == 0
    assert "masks agree on" in capsys.readouterr().out
    model, mpp = load_model(tmp_path / "s.pt")
    assert mpp == 8.0 and model.config.strides == (2, 2, 2, 2)
    with pytest.raises(SystemExit, match="smaller"):
        sf.main([str(tmp_path / "m.pt"), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "t.pt"),
                 "--crop", "200"])


def test_a_finer_model_starts_as_the_old_one_on_the_2x2_average(tmp_path, capsys):
    import torch.nn.functional as F

    from gigaseg import UNet, UNetConfig
    from gigaseg.checkpoint import save_checkpoint

    fine = load_script("scripts/tissue_model/finer.py")
    cfg = UNetConfig(depth=3, channels=(4, 6, 6), strides=(4, 2, 2), encoder_kernels=(15, 5, 3),
                     decoder_kernels=(3, 3, 3), activation="leaky_relu", input_shift=0.8, input_scale=4.0)
    torch.manual_seed(0)
    old = UNet(cfg)
    new = fine.finer(old, 8)
    assert new.config.depth == 4 and new.config.channels == (8, 4, 6, 6) and new.config.strides == (2, 4, 2, 2)
    x = torch.rand(1, 3, 64, 96, dtype=torch.float64)  # sides multiples of the total stride (32)
    with torch.no_grad():
        want = F.interpolate(old.double()(F.avg_pool2d(x, 2)), scale_factor=2, mode="nearest")
        assert (new.double()(x) - want).abs().max() < 1e-5  # the weights divided by 1.01 are float32
        # not the old model on the image itself: the new one reads the average, not every other pixel
        assert (new(x) - F.interpolate(old(x[..., ::2, ::2]), scale_factor=2)).abs().max() > 1e-3
    # the free channels start silent, not dead: after a step every weight out of them has moved
    new.float().train()
    opt = torch.optim.SGD(new.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (new(x.float()) - 1).square().mean().backward()
        opt.step()
    assert new.head.conv.weight[0, 2:].abs().sum() > 0 and new.encoder[1].conv.weight[:, 6:].abs().sum() > 0
    with pytest.raises(SystemExit, match="at least 6"):
        fine.finer(old, 4)
    with pytest.raises(SystemExit, match="leaky_relu"):
        fine.finer(UNet(dataclasses.replace(cfg, activation="relu")), 8)

    save_checkpoint(tmp_path / "m.pt", old, mpp=4.0)
    assert fine.main([str(tmp_path / "m.pt"), "--out", str(tmp_path / "f.pt"), "--c0", "8"]) == 0
    assert "2 um/px" in capsys.readouterr().out
    model, mpp = load_model(tmp_path / "f.pt")
    assert mpp == 2.0 and model.config.channels == (8, 4, 6, 6)


def test_real_slides_eval_draws_synthetic_slides_of_another_side(tmp_path, capsys):
    """--synthetic-side: a model at another resolution can be scored on the same slides in microns (a slide
    is drawn for its size, so 2048 px at 2 um/px are the 1024 px at 4 um/px)."""
    from PIL import Image

    from gigaseg.predict import predict_slide

    real = load_script("scripts/real_slides_eval.py")
    sizes = []

    def run(method, path, od, mpp, orientations=1):
        sizes.append(Image.open(path).size)
        return predict_slide(None, path, od, mpp=mpp, overwrite=True, progress=False)

    small = real._synthetic(run, 8.0, 1, tmp_path, first=93001, side=512)
    assert small["side"] == 512 and sizes == [(512, 512)]
    with pytest.raises(SystemExit):
        real.main(["--synthetic", "1", "--synthetic-side", "100", "--out", str(tmp_path / "x")])
    assert "at least 256" in capsys.readouterr().err
