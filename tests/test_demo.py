"""``gigaseg demo``: end to end at a tiny scale; the paper scale's configuration."""

from __future__ import annotations

import json

import pytest

from gigaseg import ConfigError
from gigaseg.cli import main
from gigaseg.demo import demo_config, run_demo

SUMMARY_KEYS = {
    "held_out_dice_mean", "held_out_dice_sd", "held_out_dice", "steps", "wall_seconds", "train_seconds",
    "seconds_per_step", "peak_anon_bytes", "peak_rss_bytes", "machine", "slide_dice", "paths", "config",
}


def test_demo_end_to_end_at_a_tiny_scale(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--regions", "2", "--val-regions", "2", "--size", "96x128",
                 "--slide-size", "256x384", "--steps", "3", "--preset", "tiny", "--no-progress", "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"demo outputs in {out}" in printed and "held-out Dice over 2 regions" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["steps"] == 3 and summary["region_hw"] == [96, 128] and len(summary["held_out_dice"]) == 2
    assert 0 <= summary["held_out_dice_mean"] <= 1 and summary["held_out_dice_sd"] >= 0
    assert summary["machine"]["cpu_count"] >= 1
    for name in ("summary.txt", "curves.png", "overlay.png", "demo-config.json", "run/checkpoint.pt",
                 "run/log.csv", "data/heldout-slide.tiff"):
        assert (out / name).is_file(), name
    assert "held-out Dice" in (out / "summary.txt").read_text()
    assert 0 <= summary["slide_dice"] <= 1
    assert (out / "prediction" / "heldout-slide.mask.tiff").is_file()
    # training and held-out regions come from different seeds, the slide from another one
    store = json.loads((out / "data" / "regions" / "store.json").read_text())
    assert [(r["name"], r["split"]) for r in store["regions"]] == [
        ("synth-s0", "train"), ("synth-s1", "train"), ("synth-s2", "val"), ("synth-s3", "val")]
    assert json.loads((out / "demo-config.json").read_text())["slide_seed"] == 4


def test_demo_refuses_a_foreign_folder_and_replaces_its_own(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not made by gigaseg demo"):
        run_demo(foreign, train_regions=1, val_regions=1, size=(64, 64), slide_size=(64, 64), steps=1,
                 preset="tiny", progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_demo_configurations():
    small = demo_config()
    w, h = small.size
    assert w * h >= 4_000_000 and small.preset == "paper" and small.train_regions >= 2 and small.val_regions >= 2
    paper = demo_config("paper")
    assert paper.size == (64000, 16000)  # (w, h): 16000 rows x 64000 columns, as in the paper
    assert paper.train_regions >= 8 and paper.val_regions >= 4 and paper.steps >= 1000 and paper.preset == "paper"
    assert demo_config("paper", steps=10).steps == 10
    with pytest.raises(ConfigError, match="unknown demo scale"):
        demo_config("huge")
    with pytest.raises(ConfigError, match="unknown demo options"):
        demo_config(batch=2)
    with pytest.raises(ConfigError, match="val_regions"):
        demo_config(val_regions=0)


@pytest.mark.slow
def test_the_default_demo_learns(tmp_path):
    """The README's command as is: minutes on a 2-core CPU."""
    summary = run_demo(tmp_path / "demo", progress=False)
    assert summary["steps"] == demo_config().steps
    assert summary["held_out_dice_mean"] >= 0.9
    assert summary["slide_dice"] >= 0.9
    assert summary["wall_seconds"] < 900
