"""Load another script of scripts/tissue_model/ by its path (a name no other script folder uses)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def sibling(name: str) -> ModuleType:
    """The module of scripts/tissue_model/NAME.py, loaded by its path: other script folders have a
    make_data.py too, and whichever was imported first would answer a plain ``import make_data``."""
    key = f"tissue_model_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).resolve().parent / f"{name}.py")
        assert spec is not None and spec.loader is not None
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]
