"""The GPU benchmark script, dry-run on the CPU (the real run needs CUDA: benchmarks/gpu/)."""

from __future__ import annotations

import json

import pytest
from conftest import load_script


def test_gpu_check_script_dry_run_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py runs end to end (small images, no time for the step rows)."""
    script = load_script("benchmarks/gpu_check.py")
    assert script.main(["--out", str(tmp_path), "--device", "cpu", "--small", "--seconds", "0"]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {r["mode"] for r in result["exactness"]} == {"float64", "float32", "float32-tf32"}
    for r in result["exactness"]:
        assert r["tiled_vs_cpu_f64"] < (1e-12 if r["mode"] == "float64" else 1e-3), r
    assert all(r["max_uint8_error"] <= 1 for r in result["predict_check"])
    assert result["steps"] and all(r["skipped"] == "out of time" for r in result["steps"])


def test_gpu_train_script_dry_run_on_the_cpu(tmp_path):
    """benchmarks/gpu_train.py runs end to end, and on the CPU the number of crop readers
    leaves the trained parameters bit for bit the same."""
    script = load_script("benchmarks/gpu_train.py")
    assert script.main(["--out", str(tmp_path), "--device", "cpu", "--small", "--workers", "1,3"]) == 0
    result = json.loads((tmp_path / "gpu_train.json").read_text())
    assert [r["read_workers"] for r in result["train"]] == [1, 3]
    assert all(len(r["seconds_per_step"]) == 3 for r in result["train"])
    assert result["max_abs_param_difference"] == 0.0
    assert result["engine_step_seconds"] > 0


def test_gpu_train_tile_from_repeats_the_region_across(tmp_path):
    """--tile-from: the benchmark's region is the synthesized one repeated across, pixel for pixel."""
    import numpy as np

    from gigaseg.store import RegionStore

    script = load_script("benchmarks/gpu_train.py")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 70, 3), dtype=np.uint8)
    mask = rng.integers(0, 2, (300, 70), dtype=np.uint8)
    RegionStore.create(tmp_path / "made").add_region("a", image, mask, meta={"mpp": 0.5})
    script._repeat_across(tmp_path / "made", tmp_path / "big", 300, 280)
    region = RegionStore(tmp_path / "big")[0]
    assert region.meta["mpp"] == 0.5
    np.testing.assert_array_equal(region.image, np.tile(image, (1, 4, 1)))
    np.testing.assert_array_equal(region.mask, np.tile(mask, (1, 4)))
    with pytest.raises(SystemExit, match="divide its width"):
        script._repeat_across(tmp_path / "made", tmp_path / "bad", 300, 250)
