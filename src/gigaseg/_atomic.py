"""Files that appear whole or not at all: write to a temporary name, fsync, then rename.

# NOTE [Temporary files]
Every temporary file of gigaseg is made here or in a folder from ``tempfile.mkdtemp``
(``temp_dir``): never at a fixed or guessable name. A file here gets a random name beside its
destination and is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``: if anything (a file, a
symbolic link planted by someone else) already has that name, the open fails instead of
writing through it. The finished file is fsynced and renamed over the destination, which
replaces a link at the destination rather than writing to its target.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import GigasegError, OutputError

__all__ = ["atomic_write", "write_json_atomic", "write_text_atomic", "link_or_copy", "temp_dir", "open_exclusive"]

#: Flags of a new temporary file: created here, never through a link, never an existing file.
_EXCLUSIVE = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def open_exclusive(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> IO[Any]:
    """Create ``path`` (which must not exist, not even as a link) and open it for writing.

    ``mode`` is a write mode ("w" or "wb"); ``open_kwargs`` go to ``open`` (``newline``,
    ``encoding``). Raises FileExistsError when the name is taken.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"open_exclusive writes a new file: mode 'w' or 'wb', got {mode!r}")
    fd = os.open(path, _EXCLUSIVE, 0o644)
    try:
        return open(fd, mode, **open_kwargs)  # the caller closes it
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a new temporary file beside ``path``; on success fsync it and rename it over ``path``.

    The temporary name is random and opened exclusively without following links (NOTE
    [Temporary files]). On an exception the temporary file is removed and ``path`` is left
    as it was; an OSError (a full disk, no permission) becomes an OutputError naming ``path``.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        for _ in range(100):
            candidate = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
            try:
                f = open_exclusive(candidate, mode, **open_kwargs)
            except FileExistsError:
                continue
            tmp = candidate
            break
        else:
            raise FileExistsError(f"no free temporary name beside {path}")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        if isinstance(exc, GigasegError):
            raise
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}); free disk space or write it elsewhere",
                          cause=exc) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_write(path) as f:
        f.write(text)


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Make ``dst`` a whole copy of ``src``, atomically: a hard link made under a random temporary
    name beside ``dst`` (``os.link`` creates the name exclusively and follows no link) and renamed
    over it; where the file system has no hard links, a copy through ``atomic_write``. A file that
    later replaces ``src`` by rename, as ``atomic_write`` does, leaves ``dst`` as it was.

    Raises:
        OSError: ``src`` cannot be read, or ``dst`` written (an OutputError naming ``dst``).
    """
    src, dst = Path(src), Path(dst)
    for _ in range(100):
        tmp = dst.with_name(f".{dst.name}.tmp-{secrets.token_hex(8)}")
        try:
            os.link(src, tmp)
        except FileExistsError:
            continue
        except OSError:
            break  # no hard links here (another device, a file system without them): copy
        try:
            os.replace(tmp, dst)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OutputError(f"cannot write {dst} ({exc.strerror or exc}); free disk space or write it elsewhere",
                              cause=exc) from exc
        return
    with open(src, "rb") as s, atomic_write(dst, "wb") as f:
        shutil.copyfileobj(s, f)


def temp_dir(parent: str | os.PathLike[str], prefix: str, suffix: str = "", *,
             fix: str = "write elsewhere") -> Path:
    """A new private temporary folder in ``parent`` (``tempfile.mkdtemp``: a random name, mode
    0700, created exclusively); an OSError becomes an OutputError naming ``parent`` and ``fix``."""
    try:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot create a temporary folder in {parent} ({exc.strerror or exc}); "
                          f"free disk space or {fix}", cause=exc) from exc
