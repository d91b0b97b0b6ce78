"""Shared fixtures. Real slides come from ../shared/data/real beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``), where nothing that the checks need may be missing."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need_real(*paths: Path) -> None:
    """Skip the test when a real-data file is absent, with the path named; under ``CI=true`` fail
    instead, so that the real-slide checks cannot vanish from CI unnoticed."""
    for path in paths:
        if not Path(path).exists():
            message = f"real data not found: {path} (it lives in ../shared/data/real; see SOURCES.md there)"
            if in_ci():
                pytest.fail(message + "; CI=true needs it", pytrace=False)
            pytest.skip(message)


@pytest.fixture
def real_data() -> Path:
    """The folder of real slides; the test is skipped when it is absent (fails under CI=true)."""
    need_real(REAL_DATA)
    return REAL_DATA


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str):
    """Import a script of the repository (``scripts/...`` or ``benchmarks/...``) as a module."""
    import importlib.util

    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
