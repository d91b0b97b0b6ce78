"""scripts/error_by_label.py: per-object error shares of a model on a synthetic region."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("scripts/error_by_label.py")


def test_error_table_counts_by_label(script):
    labels = np.array([[0, 0, 1, 1], [2, 2, 6, 6]], np.uint8)  # glass, tissue, adipose, pen ink
    mask = np.array([[0, 0, 1, 1], [1, 1, 0, 0]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 1]], np.uint8)  # one false glass, both adipose missed, one ink
    t = script.error_table(labels, mask, pred)
    assert t["errors"] == 4 and t["dice"] == pytest.approx(2 * 2 / (4 + 4))
    rows = {r["name"]: r for r in t["labels"]}
    assert rows["glass"]["called_tissue"] == 0.5 and rows["glass"]["share_of_errors"] == 0.25
    assert rows["adipose cell (tissue)"]["errors"] == 2 and rows["adipose cell (tissue)"]["share_of_errors"] == 0.5
    assert rows["tissue"]["errors"] == 0
    assert sum(r["share_of_errors"] for r in t["labels"]) == pytest.approx(1.0)


def test_runs_a_checkpoint_on_a_window(script, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from gigaseg.checkpoint import save_checkpoint
    from gigaseg.model import UNet, preset

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", UNet(preset("tiny")), mpp=2.0)
    assert script.main(["--checkpoint", str(ckpt), "--seed", "5", "--region", "600x900",
                        "--window", "100,200,128,256", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mpp"] == 2.0 and out["pixels"] == 128 * 256 and 0.0 <= out["dice"] <= 1.0
    assert sum(r["pixels"] for r in out["labels"]) == 128 * 256
    with pytest.raises(SystemExit, match="--window"):
        script.main(["--checkpoint", str(ckpt), "--window", "1,2,3"])
