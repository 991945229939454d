"""Writing files so that a crash never leaves half of one: the one atomic write of the project.

:func:`write_atomic` writes a temporary file beside the target, fsyncs it, renames it over the
target and fsyncs the folder, so after a crash (SIGKILL, power loss) the target holds either
the old content or the new, never a mix. Everything a run resumes from (run.json, sweep.json,
the question cache's sidecar, comparison results, stand-in builds) goes through it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``data`` in one step (temporary file, fsync, rename, folder fsync)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode(encoding) if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """:func:`write_atomic` of ``obj`` as JSON (``default=str`` for paths, dates and the like)."""
    return write_atomic(path, json.dumps(obj, indent=indent, default=str))
