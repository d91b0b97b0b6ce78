"""The package ships its type annotations (PEP 561): ``py.typed`` is installed and in the wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

import gigaseg

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_package_has_py_typed():
    assert resources.files(gigaseg).joinpath("py.typed").is_file()


def test_a_wheel_ships_py_typed(tmp_path):
    pytest.importorskip("setuptools", reason="building a wheel without the network needs setuptools installed")
    pytest.importorskip("wheel", reason="building a wheel without the network needs wheel installed")
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout: no pyproject.toml to build from")
    # a copy, so that the build leaves nothing (build/, *.egg-info) in the checkout
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q", ".",
         "-w", "dist"],
        cwd=tmp_path, check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("gigaseg-*.whl")
    assert "gigaseg/py.typed" in zipfile.ZipFile(wheel).namelist()
