"""Byte sizes: parsing ``"4GB"`` / ``"2GiB"`` and formatting for messages."""

from __future__ import annotations

import re

from .errors import ConfigError

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_bytes(value: int | float | str) -> int:
    """Bytes in ``value``: an integer, or a string such as ``"4GB"`` (10^9) or ``"2GiB"`` (2^30)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"a memory size must be positive, got {value!r}")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(
            f"cannot read the memory size {value!r}; write it like 4GB, 2GiB, 512MB or 1073741824"
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ConfigError(f"a memory size must be positive, got {value!r}")
    return size


def format_bytes(n: float) -> str:
    """``n`` bytes as a short binary-unit string, e.g. ``'1.50 GiB'``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HEIGHTxWIDTH`` (e.g. ``16000x64000``) into (w, h).

    Raises:
        ConfigError: the text is not two positive integers joined by 'x'.
    """
    m = re.fullmatch(r"\s*(\d+)\s*[xX*\u00d7]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ConfigError(
            f"`size={text!r}` is not valid: expected HEIGHTxWIDTH in pixels at the target mpp, "
            "two positive integers such as 16000x64000 (16000 rows, 64000 columns)"
        )
    return int(m.group(2)), int(m.group(1))
