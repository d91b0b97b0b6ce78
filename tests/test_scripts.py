"""scripts/: every script either runs in a smoke test or says it is frozen; results/ holds data only.

A script that is maintained gets a smoke test (here, or a test of its own that loads it by
path, like tests/test_paper_reproduction.py). A script kept only as the record of an experiment
says so in its docstring, on a line of its own:

    Frozen: kept as the record of <experiment>; not maintained against later code.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, load_script

FROZEN = re.compile(r"^Frozen: kept as the record of [^;]+; not\s+maintained\s+against\s+later\s+code", re.MULTILINE)

# scripts whose smoke test is their --help, run as a program (they need the real slides to do more)
HELP_ONLY = ["scripts/real_slides_eval.py", "scripts/synth_calibration.py"]
# scripts run at a tiny size by a test below
SMOKE = ["scripts/ceiling_study/adipose_distance.py", "scripts/ceiling_study/held_out_gigapixel.py"]


def _scripts() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "scripts").rglob("*.py"))


def _tested_elsewhere(script: str) -> bool:
    """Another test file loads or runs the script by its path."""
    return any(script in p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_scripts.py")


@pytest.mark.parametrize("script", _scripts())
def test_every_script_is_smoke_tested_or_frozen(script):
    doc = ast.get_docstring(ast.parse((ROOT / script).read_text())) or ""
    frozen = bool(FROZEN.search(doc))
    tested = script in HELP_ONLY or script in SMOKE or _tested_elsewhere(script)
    assert frozen or tested, (
        f"{script} has neither a smoke test nor a frozen header: add a test that runs it at a tiny size "
        f"(tests/test_scripts.py), or a docstring line 'Frozen: kept as the record of <experiment>; not "
        f"maintained against later code'"
    )
    assert not (frozen and script in HELP_ONLY + SMOKE), f"{script} is frozen: drop its smoke test"


def test_results_hold_data_only():
    code = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "results").rglob("*.py"))
    assert not code, f"scripts belong in scripts/, not beside their results: {code}"


@pytest.mark.parametrize("script", HELP_ONLY)
def test_help(script):
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.startswith("usage:")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """Two 64 x 96 synthetic regions at 1 um/px, the second in the val split."""
    from gigaseg.prepare import prepare_synthetic
    from gigaseg.store import RegionStore

    store = RegionStore.create(tmp_path_factory.mktemp("scripts") / "regions")
    prepare_synthetic(store, 2, (96, 64), seed=7000, val=1, mpp=1.0, progress=False)
    return store.path


STUDY_CHECKPOINT = ROOT / "results" / "ceiling-study" / "paper-4940" / "checkpoint.pt"


def test_held_out_gigapixel(tiny_store, capsys):
    script = load_script("scripts/ceiling_study/held_out_gigapixel.py")
    assert script.RESULTS / "paper-4940" / "checkpoint.pt" == STUDY_CHECKPOINT  # the default
    assert script.main([str(STUDY_CHECKPOINT), str(tiny_store)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert list(r["dice"]) == ["synth-s7001"] and 0 <= r["held_out_dice_mean"] <= 1
    assert r["held_out_dice_sd"] == 0.0 and set(r) >= {"precision", "recall", "seconds"}


def test_adipose_distance(capsys):
    """The study's checkpoint on one of its regions, rendered 128 px square."""
    script = load_script("scripts/ceiling_study/adipose_distance.py")
    assert (script.RESULTS / "paper-4940" / "checkpoint.pt") == STUDY_CHECKPOINT  # the default
    assert script.main([str(STUDY_CHECKPOINT), "7033", "--size", "128"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("region 7033: ") and "distance to the nearest other tissue (walls), px" in out
