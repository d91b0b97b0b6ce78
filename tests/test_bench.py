"""gigaseg.bench: every benchmark of ``gigaseg bench`` is a function that returns a JSON-ready
dict, with the keys the command prints. Tiny sizes: these check the wiring, not the speed."""

from __future__ import annotations

import json

import pytest

from gigaseg.cli import main

_MACHINE = ["cpu", "cpu_count", "memory_bytes", "python", "torch_version", "gigaseg_version"]

STEP_KEYS = [
    "benchmark", "height", "width", "pixels", "preset", "params", "mode", "loss", "seconds_per_step",
    "step_seconds", "megapixels_per_second", "loss_value", "peak_rss_bytes", "peak_anon_bytes", "memory_budget",
    "tile", "plan", "device", "threads", "warmup_steps", "prepare_seconds", *_MACHINE,
]
EXACTNESS_KEYS = ["benchmark", "max_rel_grad_error", "cases", *_MACHINE]
PREDICT_KEYS = [
    "benchmark", "slide_hw", "model_mpp", "model", "precision", "device", "read_workers", "pieces", "tile",
    "megapixels", "total_s", "MPps_end_to_end", "read_s", "read_wait_s", "model_s", "MPps_model",
    "MPps_model_alone_in_memory", "MPps_read", "raw_write_s", "tiff_wait_s", "tiff_s", "geojson_s", "overlay_s",
    "write_after_model_s", "peak_rss_GiB", "peak_anon_GiB", "synth_write_s", "threads", "cpu_count", "machine",
]
STORE_KEYS = [
    "benchmark", "store", "region", "region_hw", "format", "content", "tile_side_with_halo", "tiles", "jitter",
    "MB_counts", "cpu_count", "python",
    *(f"{mode}_{cache}_{unit}" for mode in ("plain", "dihedral", "dihedral+jitter") for cache in ("cold", "warm")
      for unit in ("MBps", "s_per_tile")),
]
PREPARE_KEYS = [
    "benchmark", "region_hw", "slide_hw", "mpp", "slide_mpp", "strip_rows", "strips_exact", "mask", "format",
    "slide_write_s", "prepare_s", "prepare_MBps", "peak_rss_GiB", "peak_anon_GiB", "rss_before_GiB",
    "region_disk_GB", "cpu_count",
]
SYNTH_KEYS = [
    "benchmark", "gigaseg_version", "width", "height", "mpp", "seed", "quality", "pixels", "seconds",
    "megapixels_per_second", "peak_rss_bytes", "peak_anon_bytes", "slide_bytes", "mask_bytes", "threads",
    "cpu_count",
]


def _is_json(result: dict) -> dict:
    return json.loads(json.dumps(result))


def test_bench_package_imports_no_torch():
    """``import gigaseg.bench`` is free: the benchmarks import their heavy modules when run."""
    import subprocess
    import sys

    code = "import sys, gigaseg.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_bench_step():
    from gigaseg.bench.step import bench_step

    r = _is_json(bench_step(40, 72, preset_name="tiny", steps=1, warmup=0, tile=16))
    assert list(r) == STEP_KEYS
    assert r["benchmark"] == "step" and r["mode"] == "tiled" and r["tile"] == [16, 16]


def test_bench_exactness():
    """The smoke test of ``gigaseg bench exactness`` (~10 s with one loss): every configuration
    runs and the errors are what the README quotes (float64 ~1e-14, float32 ~1e-6)."""
    from gigaseg.bench.step import bench_exactness

    r = _is_json(bench_exactness(losses=("bce",)))
    assert list(r) == EXACTNESS_KEYS
    assert r["max_rel_grad_error"]["float64"] < 1e-10
    assert r["max_rel_grad_error"]["float32"] < 1e-4


def test_bench_predict(tmp_path):
    pytest.importorskip("tifffile")
    from gigaseg.bench.predict import bench_predict

    keep = tmp_path / "slide.tiff"
    r = _is_json(bench_predict(96, 160, preset_name="tiny", keep_slide=keep, scratch_dir=tmp_path))
    assert list(r) == PREDICT_KEYS
    assert r["benchmark"] == "predict" and r["slide_hw"] == [96, 160] and r["model"] == "untrained tiny"
    assert keep.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["slide.mask.tiff", "slide.tiff"]
    # the slide again, read instead of written
    r = _is_json(bench_predict(96, 160, preset_name="tiny", slide=keep, scratch_dir=tmp_path))
    assert r["synth_write_s"] is None and r["slide_hw"] == [96, 160]


def test_bench_store(tmp_path):
    from gigaseg.bench.store import bench_store

    r = _is_json(bench_store(height=96, width=160, tile=32, halo=8, tiles=2))
    assert list(r) == STORE_KEYS
    assert r["store"] is None and r["region_hw"] == [96, 160] and r["tile_side_with_halo"] == 48


def test_bench_prepare(tmp_path):
    pytest.importorskip("tifffile")
    from gigaseg.bench.store import bench_prepare

    r = _is_json(bench_prepare(48, 80, scratch_dir=tmp_path))
    assert list(r) == PREPARE_KEYS
    assert r["region_hw"] == [48, 80] and r["slide_hw"] == [48, 80] and r["mask"] == "geojson"
    r = _is_json(bench_prepare(48, 80, slide_height=120, slide_width=200, mpp=1.0, mask="tiff",
                               scratch_dir=tmp_path))
    assert r["slide_hw"] == [120, 200] and r["mask"] == "tiff"
    assert list(tmp_path.iterdir()) == []  # the scratch folder is removed


def test_bench_prepare_refuses_half_a_slide_size():
    from gigaseg.bench.store import bench_prepare
    from gigaseg.errors import ConfigError

    with pytest.raises(ConfigError, match="both"):
        bench_prepare(48, 80, slide_height=120)


def test_bench_synth(tmp_path):
    pytest.importorskip("tifffile")
    from gigaseg.bench.synth import bench_synth

    r = _is_json(bench_synth(120, 200, keep=tmp_path / "kept"))
    assert list(r) == SYNTH_KEYS
    assert (r["width"], r["height"], r["pixels"]) == (200, 120, 24000)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["bench.mask.tiff", "bench.tiff"]


@pytest.mark.parametrize("argv, keys", [
    (["bench", "predict", "--size", "96x160", "--preset", "tiny"], PREDICT_KEYS),
    (["bench", "prepare", "--size", "48x80", "--mask", "tiff"], PREPARE_KEYS),
])
def test_cli_prints_the_function_s_dict(argv, keys, tmp_path, capsys):
    """The runners the other bench tests do not run: one JSON object with the function's keys."""
    pytest.importorskip("tifffile")
    assert main([*argv, "--dir", str(tmp_path), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == keys
