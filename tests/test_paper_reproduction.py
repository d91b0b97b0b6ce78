"""scripts/paper_reproduction.py on a tiny scale: it prepares, trains, resumes, finalizes."""

from __future__ import annotations

import json

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/paper_reproduction.py")


def test_prepare_train_resume_and_finalize(script, tmp_path, capsys):
    work, results = tmp_path / "work", tmp_path / "results"
    common = ["--work", str(work), "--results", str(results), "--size", "96x160", "--train", "2", "--val", "1",
              "--val-every", "2", "--ckpt-every", "2", "--device", "cpu", "--no-progress"]
    assert script.main(common + ["--steps", "2"]) == 0
    assert script.main(common + ["--steps", "4"]) == 0  # resumes the same run and extends it
    m = json.loads((results / "metrics.json").read_text())
    assert m["steps"] == 4 and m["complete"] and m["sessions"] == 2 and m["parameters"] == 4492
    assert [c["step"] for c in m["validation_curve"]] == [2, 4]
    assert 0 <= m["held_out_dice_mean"] <= 1 and m["held_out_at_step"] == 4
    assert list(m["held_out_dice"]) == ["synth-s1002"]
    assert m["peak_anon_bytes"] > 0 and m["seconds_per_step_median"] > 0 and m["compute_hours"] > 0
    assert m["paper"]["held_out_dice_mean"] == 0.989
    for name in ("log.csv", "val.csv", "curves.png", "config.json", "checkpoint.pt", "COMMAND.md"):
        assert (results / name).is_file(), name
    assert "--steps 4" in (results / "COMMAND.md").read_text()
    assert "Status: complete" in (results / "COMMAND.md").read_text()
    # --finalize alone rewrites the evidence from the run
    (results / "metrics.json").unlink()
    assert script.main(common + ["--finalize"]) == 0
    assert json.loads((results / "metrics.json").read_text())["steps"] == 4


def test_finalize_without_a_run_says_what_to_do(script, tmp_path):
    with pytest.raises(SystemExit, match="no run in"):
        script.main(["--work", str(tmp_path), "--results", str(tmp_path / "r"), "--finalize"])


def test_demo_paper_scale_trains_like_the_reproduction(script):
    """`gigaseg demo --scale paper` and the reproduction script run the same experiment: the
    same region size and resolution, and the learning rate that did not collapse on whole
    gigapixel regions (0.003 did, after 22 steps)."""
    from gigaseg.demo import demo_config

    d = demo_config("paper")
    args = script._parser().parse_args([])
    assert (d.lr, d.warmup) == (args.lr, args.warmup) == (0.001, 20)
    assert d.size == (64000, 16000) and d.mpp == 1.0 and d.train_regions == 8 and d.val_regions == 4
