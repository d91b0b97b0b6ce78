"""gigaseg evaluate and the metrics: known Dice on hand-made masks, ignore pixels, resolutions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gigaseg import ConfigError, InputError
from gigaseg.baseline import baseline_mask, otsu_threshold
from gigaseg.cli import main
from gigaseg.metrics import confusion_counts, evaluate_pair, evaluate_pairs, scores


def _png(path, a):
    from PIL import Image

    Image.fromarray(a).save(path)
    return path


def test_known_dice_with_ignore():
    ref = np.zeros((10, 10), np.uint8)
    ref[:, :5] = 1
    pred = np.zeros((10, 10), np.uint8)
    pred[:, 2:7] = 1
    c = confusion_counts(pred, ref)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (30, 20, 20, 30)
    s = scores(c)
    assert s["dice"] == pytest.approx(0.6) and s["iou"] == pytest.approx(30 / 70)
    assert s["precision"] == pytest.approx(0.6) and s["recall"] == pytest.approx(0.6)
    ref[:, 5:7] = 255  # ignore the false positives' columns
    c = confusion_counts(pred, ref)
    assert (c["tp"], c["fp"], c["fn"], c["ignored"]) == (30, 0, 20, 20)
    assert scores(c)["dice"] == pytest.approx(60 / 80)
    empty = confusion_counts(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert scores(empty) == {"dice": 1.0, "iou": 1.0, "precision": None, "recall": None}


def test_files_resolutions_and_mean_sd(tmp_path):
    ref = np.zeros((40, 60), bool)
    ref[10:30, 10:40] = True
    np.save(tmp_path / "ref.npy", ref)
    # prediction at 4x the reference's resolution, 0/255 PNG, exactly the reference upsampled
    big = np.kron(ref.astype(np.uint8), np.ones((4, 4), np.uint8)) * 255
    _png(tmp_path / "same.png", big)
    with pytest.warns(UserWarning, match="differ in resolution"):
        r = evaluate_pair(tmp_path / "same.png", tmp_path / "ref.npy")
    assert r["dice"] == 1.0 and r["resampled"]
    # a half-wrong prediction, 0/1 .npy at the reference's size
    half = ref.copy()
    half[10:30, 25:40] = False
    np.save(tmp_path / "half.npy", half.astype(np.uint8))
    with pytest.warns(UserWarning):
        rep = evaluate_pairs([tmp_path / "same.png", tmp_path / "half.npy"], [tmp_path / "ref.npy"] * 2)
    dices = [1.0, 2 * 300 / (300 + 600)]
    assert rep["mean"]["dice"] == pytest.approx(np.mean(dices))
    assert rep["sd"]["dice"] == pytest.approx(np.std(dices, ddof=1))


def test_aspect_ratio_and_pairing_errors(tmp_path):
    np.save(tmp_path / "ref.npy", np.zeros((40, 60), bool))
    np.save(tmp_path / "square.npy", np.zeros((60, 60), np.uint8))
    with pytest.raises(InputError, match="aspect ratio"):
        evaluate_pair(tmp_path / "square.npy", tmp_path / "ref.npy")
    # a 1/10 scale mask rounds its sides: 2220 x 2967 vs 221 x 296 is the same slide
    np.save(tmp_path / "ref10.npy", np.zeros((296, 221), bool))
    np.save(tmp_path / "full.npy", np.zeros((2967, 2220), np.uint8))
    with pytest.warns(UserWarning):
        assert evaluate_pair(tmp_path / "full.npy", tmp_path / "ref10.npy")["dice"] == 1.0
    with pytest.raises(ConfigError, match=r"one reference \(`refs`\) per prediction"):
        evaluate_pairs([tmp_path / "full.npy"], [])
    with pytest.raises(InputError, match="does not exist"):
        evaluate_pair(tmp_path / "missing.png", tmp_path / "ref.npy")
    np.save(tmp_path / "badref.npy", np.full((40, 60), 7, np.uint8))
    with pytest.raises(InputError, match="255 \\(ignore\\)"):
        evaluate_pair(tmp_path / "square.npy", tmp_path / "badref.npy")


def test_cli_writes_json_and_csv(tmp_path, capsys):
    ref = np.zeros((20, 20), np.uint8)
    ref[5:15, 5:15] = 1
    ref[0, :] = 255
    _png(tmp_path / "ref.png", ref)
    pred = ref.copy()
    pred[pred == 255] = 1  # wrong, but ignored
    _png(tmp_path / "pred.png", pred * 255)
    rc = main(["evaluate", str(tmp_path / "pred.png"), "--reference", str(tmp_path / "ref.png"),
               "--out", str(tmp_path / "ev")])
    assert rc == 0
    assert "1.0000" in capsys.readouterr().out
    rep = json.loads((tmp_path / "ev" / "evaluate.json").read_text())
    assert rep["per_slide"][0]["dice"] == 1.0 and rep["per_slide"][0]["ignored"] == 20
    assert (tmp_path / "ev" / "evaluate.csv").read_text().startswith("prediction,reference,dice")
    np.save(tmp_path / "tall.npy", np.zeros((40, 10), np.uint8))
    assert main(["evaluate", str(tmp_path / "tall.npy"), "--reference", str(tmp_path / "ref.png")]) == 2
    assert "aspect ratio" in capsys.readouterr().err


def test_otsu_and_baseline_masks():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(60, 5, 1000), rng.normal(200, 5, 3000)]).clip(0, 255).astype(np.uint8)
    t = otsu_threshold(values)
    assert 80 < t < 180
    rgb = np.full((64, 64, 3), 240, np.uint8)
    rgb[16:48, 16:48] = (150, 60, 140)  # an H&E-like purple square on glass
    for method in ("otsu", "saturation"):
        m, params = baseline_mask(rgb, method)
        square = np.zeros((64, 64), np.uint8)
        square[16:48, 16:48] = 1
        assert scores(confusion_counts(m, square))["dice"] > 0.98, method  # median blur rounds corners
    with pytest.raises(ConfigError, match="otsu, saturation"):
        baseline_mask(rgb, "kmeans")
