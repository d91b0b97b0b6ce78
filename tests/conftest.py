"""Shared fixtures. Real slides come from ../shared/data/real beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture
def real_data() -> Path:
    """The folder of real slides; the test is skipped when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real slide data not found at {REAL_DATA} (it lives in ../shared/data/real)")
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
