"""The GPU benchmark script, dry-run on the CPU (the real run needs CUDA: benchmarks/gpu/)."""

from __future__ import annotations

import json

import pytest
from conftest import load_script


@pytest.mark.slow  # ~25 s of CPU: float64 convolutions of the paper preset
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
