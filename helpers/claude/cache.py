"""The question cache behind ``helpers.qa``: an append-only JSONL file that survives crashes.

One line per question. The lines made by one request (a *group*: the N questions of a passage)
share a ``group`` id and carry ``group_size``, and go to the file in one ``write``, so a crash
(SIGKILL included) leaves at most one torn group, always at the end. ``append`` fsyncs before it
returns; ``append(..., wait=False)`` (the request engine's) leaves the fsync to a background
thread that syncs whatever was written since its last one (a killed process loses nothing
written: the kernel has it; a machine crash may lose the last milliseconds), and ``flush`` /
``close`` wait for it, so no request waits for the disk. Opening
the cache repairs that: a last line without its newline or that is not JSON, and any incomplete
group before it at the end of the file, are cut off with a warning (their passage is asked
again). Nothing else in the file is ever rewritten.

A group is found by its key ``(kind, passage_sha256, prompt_version, model, n, item)``; the first
complete group of a key wins, so records are never duplicated even if two runs raced.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable

from helpers.core.files import fsync_dir, write_json

log = logging.getLogger(__name__)

Key = tuple  # (kind, passage_sha256, prompt_version, model, n, item)
_REQUIRED = {"group", "passage_sha256", "prompt_version", "model"}


def record_key(r: dict[str, Any]) -> Key:
    return (r.get("kind", "qa"), r["passage_sha256"], r["prompt_version"], r["model"],
            int(r.get("n", 0)), r.get("item", ""))


class QACache:
    """``QACache(path).open()``; ``get(key)`` -> the records of a complete group or None;
    ``append(records)`` writes one group durably."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._groups: dict[Key, list[dict]] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._opened = False
        self.repaired_bytes = 0       # bytes cut from the end by the last open()
        self.unreadable_lines = 0     # bad lines in the middle of the file (kept, ignored)
        self.duplicate_groups = 0     # complete groups whose key was already there (ignored)
        self._dirty = threading.Event()   # written since the background fsync last ran
        self._syncer: threading.Thread | None = None
        self._closing = False

    # -- reading and repair -----------------------------------------------------------------
    def open(self) -> "QACache":
        """Reads (and repairs) the file; a missing file is made by the first append."""
        self._opened = True
        if not self.path.exists():
            return self
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            data = self.path.read_bytes()
            cut, entries = self._scan(data)
            if cut < len(data):
                os.ftruncate(self._fd, cut)
                os.fsync(self._fd)
                self.repaired_bytes = len(data) - cut
                log.warning(
                    "%s: cut %d bytes from the end (a torn or incomplete last write left by an "
                    "interrupted run); the passage it belonged to will be asked again",
                    self.path, self.repaired_bytes)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._index(entries)
        return self

    def _scan(self, data: bytes) -> tuple[int, list[tuple[int, dict | None]]]:
        """(the length to keep, [(line start, parsed record or None)] of the kept lines)."""
        entries: list[tuple[int, dict | None]] = []
        pos, cut = 0, len(data)
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl == -1:                      # no newline: the last write was torn
                cut = pos
                break
            line = data[pos:nl]
            if line.strip():
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict) or not _REQUIRED <= obj.keys():
                        obj = None
                except (ValueError, UnicodeDecodeError):
                    obj = None
                entries.append((pos, obj))
            pos = nl + 1
        while entries and entries[-1][1] is None:   # unreadable lines at the end: torn too
            cut = entries.pop()[0]
        if entries:                                  # an incomplete group at the very end
            gid = entries[-1][1]["group"]
            size = int(entries[-1][1].get("group_size", 1))
            members = [i for i, (_, o) in enumerate(entries) if o is not None and o["group"] == gid]
            tail = list(range(len(entries) - len(members), len(entries)))
            if len(members) < size and members == tail:
                cut = entries[members[0]][0]
                del entries[members[0]:]
        return cut, entries

    def _index(self, entries: Iterable[tuple[int, dict | None]]) -> None:
        groups: dict[str, list[dict]] = {}
        bad = 0
        for _, obj in entries:
            if obj is None:
                bad += 1
                continue
            groups.setdefault(obj["group"], []).append(obj)
        incomplete = 0
        for gid, recs in groups.items():
            size = int(recs[0].get("group_size", 1))
            idx = sorted(int(r.get("q_index", 0)) for r in recs)
            if len(recs) != size or idx != list(range(size)):
                incomplete += 1
                continue
            key = record_key(recs[0])
            if key in self._groups:
                self.duplicate_groups += 1
                continue
            self._groups[key] = sorted(recs, key=lambda r: int(r.get("q_index", 0)))
        self.unreadable_lines = bad
        if bad or incomplete:
            log.warning("%s: ignored %d unreadable line(s) and %d incomplete group(s) in the "
                        "middle of the file (left as they are)", self.path, bad, incomplete)
        if self.duplicate_groups:
            log.info("%s: %d duplicate group(s) ignored (the first of each key is used)",
                     self.path, self.duplicate_groups)

    # -- lookups ----------------------------------------------------------------------------
    def get(self, key: Key) -> list[dict] | None:
        with self._lock:
            return self._groups.get(key)

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            return key in self._groups

    def __len__(self) -> int:
        with self._lock:
            return len(self._groups)

    def records(self) -> list[dict]:
        """Every record of every complete group, in file order of the groups."""
        with self._lock:
            return [r for recs in self._groups.values() for r in recs]

    # -- writing ----------------------------------------------------------------------------
    def append(self, records: list[dict], *, wait: bool = True) -> None:
        """Writes one group (all lines in a single write), then fsyncs; returns once durable
        (``wait=False``: once written, the fsync follows on a background thread)."""
        if not self._opened:
            raise RuntimeError("QACache.open() first")
        if not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        with self._lock:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                fsync_dir(self.path.parent)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view):]
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            key = record_key(records[0])
            self._groups.setdefault(key, sorted(records, key=lambda r: int(r.get("q_index", 0))))
            if not wait and self._syncer is None:
                self._closing = False
                self._syncer = threading.Thread(target=self._sync_loop, daemon=True,
                                                name="qa-cache-fsync")
                self._syncer.start()
        if wait:
            os.fsync(self._fd)
        else:
            self._dirty.set()

    def _sync_loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._closing:
                return
            self._dirty.clear()
            os.fsync(self._fd)

    def flush(self) -> None:
        """Waits until everything written is on disk (stops the background fsync thread)."""
        if self._syncer is not None:
            self._closing = True
            self._dirty.set()
            self._syncer.join()
            self._syncer = None
            self._dirty.clear()
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._opened = False

    def __enter__(self) -> "QACache":
        return self if self._opened else self.open()

    def __exit__(self, *exc) -> None:
        self.close()


# -- the batch sidecar: which Message Batches were submitted for this cache -----------------

def sidecar_path(cache_path: str | os.PathLike) -> Path:
    p = Path(cache_path)
    return p.with_name(p.name + ".batches.json")


def read_sidecar(cache_path: str | os.PathLike) -> dict:
    p = sidecar_path(cache_path)
    if not p.exists():
        return {"batches": []}
    try:
        data = json.loads(p.read_text())
    except ValueError as e:
        raise ValueError(f"{p} is not valid JSON ({e}); it lists submitted Message Batches. Fix "
                         f"or delete it (deleting it means unfinished batches are submitted "
                         f"again).") from None
    data.setdefault("batches", [])
    return data


def write_sidecar(cache_path: str | os.PathLike, data: dict) -> None:
    """Atomic: a temporary file, fsynced, renamed over the old one."""
    write_json(sidecar_path(cache_path), data, indent=1)
