"""Where a training set came from, as checksums: the sha256 of each book read and of each file
written (what :mod:`helpers.training.datacard` puts in a run's data card)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from helpers.data.persona import BOOK_SUFFIXES


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(path: str | os.PathLike) -> dict:
    """``{"file", "sha256", "bytes"}`` of one file (``file``: its name)."""
    path = Path(path)
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}


def book_hashes(folder: str | os.PathLike) -> list[dict]:
    """:func:`file_entry` of every book file in ``folder`` (the types the reader takes), sorted
    by name; a single book file gives itself; a folder without books gives ``[]``."""
    folder = Path(folder)
    if folder.is_file():
        return [file_entry(folder)]
    if not folder.is_dir():
        return []
    return [file_entry(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in BOOK_SUFFIXES]
