"""The engine's command-line benchmarks, run in-process."""

from __future__ import annotations

import json

import pytest

from gigaseg.cli import main

STEP_KEYS = {
    "height", "width", "pixels", "preset", "params", "mode", "seconds_per_step", "peak_rss_bytes",
    "peak_anon_bytes", "tile", "device", "threads", "torch_version",
}


@pytest.mark.parametrize("naive", [False, True])
def test_bench_step_prints_one_json_object(capsys, tmp_path, naive):
    argv = ["bench", "step", "--height", "70", "--width", "130", "--preset", "tiny", "--steps", "2",
            "--warmup", "0", "--data-dir", str(tmp_path), "--json"]
    assert main(argv + (["--naive"] if naive else [])) == 0
    result = json.loads(capsys.readouterr().out)
    assert STEP_KEYS <= set(result)
    assert result["mode"] == ("naive" if naive else "tiled")
    assert result["pixels"] == 70 * 130 and result["params"] == 384
    assert result["seconds_per_step"] > 0 and result["peak_anon_bytes"] > 0
    assert (result["tile"] is None) == naive
    assert (tmp_path / "image.npy").exists()  # the input was read from disk


def test_bench_step_bad_budget_is_a_clear_error(capsys):
    assert main(["bench", "step", "--height", "64", "--width", "64", "--memory-budget", "1MB", "--json"]) == 2
    assert "give --memory-budget" in capsys.readouterr().err


def test_help_is_instant_and_lists_benchmarks(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "step" in out and "exactness" in out


def test_import_and_help_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, gigaseg, gigaseg.cli\n"
        "parser = gigaseg.cli.build_parser()\n"
        "assert 'torch' not in sys.modules, 'importing gigaseg pulled in torch'\n"
        "assert set(gigaseg.__all__) <= set(dir(gigaseg))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
