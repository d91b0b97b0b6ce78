"""Files that appear whole or not at all: write to a temporary name, fsync, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import GigasegError, OutputError

__all__ = ["atomic_write", "write_json_atomic"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was; an OSError
    (a full disk, no permission) becomes an OutputError naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if isinstance(exc, GigasegError):
            raise
        raise OutputError(f"cannot write {path} ({exc.strerror or exc}); free disk space or write it elsewhere",
                          cause=exc) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
