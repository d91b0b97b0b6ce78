"""Optional dependencies: imported where they are used, or a MissingDependencyError that names
the package and the ``pip install 'gigaseg[EXTRA]'`` command that installs it.

The core (numpy, torch, scipy, numba, tqdm) is always installed. Everything else belongs to
an extra of ``pyproject.toml``; :data:`OPTIONAL` says which (a test keeps the two equal).
Usage, at the point of use::

    zarr = require("zarr", "a zarr-format region")
    require("PIL", "reading PNG masks")
    from PIL import Image
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["OPTIONAL", "install_command", "require"]

#: Top-level import name -> (distribution on PyPI, the gigaseg extra that installs it).
OPTIONAL: dict[str, tuple[str, str]] = {
    "openslide": ("openslide-python", "slides"),
    "tifffile": ("tifffile", "slides"),
    "imagecodecs": ("imagecodecs", "slides"),
    "PIL": ("pillow", "slides"),
    "pydicom": ("pydicom", "slides"),
    "zarr": ("zarr", "store"),
    "shapely": ("shapely", "geo"),
    "contourpy": ("contourpy", "geo"),
    "matplotlib": ("matplotlib", "plot"),
}


def install_command(module: str) -> str:
    """The command that installs optional ``module`` (an import name): ``pip install 'gigaseg[EXTRA]'``."""
    return f"pip install 'gigaseg[{OPTIONAL[module.partition('.')[0]][1]}]'"


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import optional ``module`` (``"zarr"``, ``"PIL.Image"``) and return it.

    Args:
        module: an import name whose top-level package is in :data:`OPTIONAL`.
        purpose: what needs it, for the message (``"writing the mask TIFF"``).

    Raises:
        MissingDependencyError: the package is missing or cannot be imported; the message
            names the package and the pip command that installs it.
    """
    top = module.partition(".")[0]
    dist, extra = OPTIONAL[top]
    try:
        importlib.import_module(top)  # first: a cached submodule must not hide a missing package
        return importlib.import_module(module)
    except ImportError as exc:
        need = f"{purpose} needs" if purpose else "this needs"
        named = dist if dist.lower() == top.lower() else f"{dist} (import {top})"
        raise MissingDependencyError(
            f"{need} the optional package {named}, which cannot be imported ({exc}); "
            f"install it with: pip install 'gigaseg[{extra}]'",
            name=top,
        ) from exc
