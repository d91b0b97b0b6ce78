"""Input files checked before they are opened (regular files or folders only), and the room a
job needs (free disk, available memory) checked before it starts.

# NOTE [Special files]
A path given as an input may name something that is not a file: a FIFO (named pipe), a
socket, a character or block device. Opening a FIFO blocks until someone writes to it (``gigaseg
prepare --masks fifo`` hung), a device may never end (``/dev/zero`` as a mask) and a socket
cannot be read. Every reader of gigaseg (slides, masks, GeoJSON, references, checkpoints, stores)
checks its path with ``check_input`` first: ``os.stat`` follows a symbolic link to what it
names, and only a regular file (or, where the reader takes one, a folder) passes. The check and
the open are two steps, so a path swapped in between is not caught; the point is to turn the
ordinary mistake into a clear error, not to defend against a race.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .errors import GigasegError, InputError, OutputError

__all__ = ["check_input", "file_kind", "check_free_space", "available_memory", "format_bytes"]


def file_kind(mode: int) -> str:
    """What ``st_mode`` is, in words: "a regular file", "a folder", "a FIFO (named pipe)", ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "a special file"


def check_input(path: str | os.PathLike[str], what: str, *, error: type[GigasegError] = InputError,
                folder: bool = False, param: str | None = None) -> Path:
    """``path`` as a Path if it names a regular file (or, with ``folder``, a folder), else ``error``.

    ``what`` names the input in the message ("mask", "checkpoint", ...); ``param`` is the
    parameter that gives it, named in the fix. A missing path raises ``error`` too. See NOTE
    [Special files].
    """
    p = Path(path)
    fix = f"give a regular file as `{param}`" if param else "give a regular file"
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist; check the path") from None
    except OSError as exc:
        raise error(f"{what} {p} cannot be read ({exc.strerror or exc}); check the path and its permissions") from exc
    if stat.S_ISREG(mode) or (folder and stat.S_ISDIR(mode)):
        return p
    kind = file_kind(mode)
    expected = "a regular file or a folder" if folder else "a regular file"
    raise error(f"{what} {p} is {kind}, not {expected}: gigaseg reads only files (a pipe or a device can block "
                f"or never end); {fix}")


def format_bytes(n: float) -> str:
    """``n`` bytes as "1.5 GB" (decimal units, as ``df -H`` shows them)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover - the loop returns


def check_free_space(folder: str | os.PathLike[str], need: int, what: str, fix: str) -> None:
    """Raise an OutputError when ``folder`` has less than ``need`` bytes free for ``what``.

    The message names both numbers and ``fix``. A file system that cannot tell (``disk_usage``
    fails) is not checked: the write itself then reports a full disk.
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free:
        raise OutputError(f"{what} needs {format_bytes(need)} of disk in {folder}, but only {format_bytes(free)} "
                          f"are free; {fix}")


def available_memory() -> int | None:
    """Bytes of memory the system can give a new allocation without swapping (Linux
    ``MemAvailable``; elsewhere free physical pages), or None when it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
