"""The model comparison's on-disk cache: one pickle of plain data per variant and fingerprint.

Files are ``<folder>/<key>_results.pkl``. The key is the variant's name made readable plus a short
sha256 of everything the result depends on (:func:`key_for`), so a changed prompt, setting or
adapter gives a new file and an old result is never reused by mistake; old files are listed by
:func:`stale` and left for the user to delete.

Results hold plain data only (dict, list, tuple, set, frozenset, str, bytes, int, float, bool,
None), which pickle protocol 4 and later write without naming any class or function. :func:`save`
refuses anything else and :func:`load` reads with an unpickler that imports nothing, so a file
that names code (written by something else, or tampered with) is refused before any of it runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable

from helpers.core.files import write_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SUFFIX = "_results.pkl"
PROTOCOL = max(4, pickle.HIGHEST_PROTOCOL)

_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CacheError(Exception):
    """A comparison cache file or result that cannot be used; the message says what to do."""


def key_for(variant_name: str, fingerprint: dict) -> str:
    """``<slug of the name>-<12 hex of sha256>`` over the name and a canonical JSON of
    ``fingerprint`` (prompts, system prompt, decoding, adapter checksums, model id, metric
    settings...). Values must be JSON data; tuples count as lists."""
    try:
        canonical = json.dumps({"variant": variant_name, "fingerprint": fingerprint},
                               sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                               allow_nan=True)
    except TypeError as e:
        raise CacheError(f"comparison fingerprint of {variant_name!r} holds a value JSON cannot "
                         f"write ({e}); put str/int/float/bool/None/list/dict values in it (e.g. "
                         "str(path), a checksum instead of the object).") from e
    slug = re.sub(r"[^a-z0-9]+", "-", variant_name.lower()).strip("-")[:60].strip("-") or "variant"
    return f"{slug}-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:12]}"


def adapter_checksum(folder: str | os.PathLike | None) -> str:
    """sha256 over an adapter's ``adapter_model.safetensors`` and ``adapter_config.json``;
    ``"base"`` for ``None`` (the model without an adapter)."""
    if folder is None:
        return "base"
    folder = Path(folder)
    names = ("adapter_config.json", "adapter_model.safetensors")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"adapter folder {folder} has no {' or '.join(missing)}, so the comparison cannot "
            "fingerprint it. Point it at the `adapter` folder of a finished run (train the variant "
            "first), or pass None for the base model.")
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}\0{(folder / name).stat().st_size}\0".encode())
        with open(folder / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _type_name(obj: Any) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def check_plain(obj: Any, path: str = "result") -> None:
    """Raise :class:`CacheError` naming the first place in ``obj`` that is not plain data."""
    stack: set[int] = set()

    def walk(x: Any, where: str) -> None:
        t = type(x)
        if t in _PLAIN_SCALARS:
            return
        if t not in (dict, list, tuple, set, frozenset):
            raise CacheError(f"{where}: {_type_name(x)} is not plain data; the comparison cache "
                             "holds dict/list/tuple/set/str/bytes/int/float/bool/None only. "
                             "Convert it before saving (e.g. float(x) for numpy numbers, .tolist() for "
                             "arrays, str(path)).")
        if id(x) in stack:
            raise CacheError(f"{where}: the result contains itself; the cache stores trees of "
                             "plain data only.")
        stack.add(id(x))
        if t is dict:
            for k, v in x.items():
                walk(k, f"{where} key {k!r}")
                walk(v, f"{where}[{k!r}]")
        elif t in (list, tuple):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")
        else:
            for v in x:
                walk(v, f"{where} element {v!r}")
        stack.discard(id(x))

    walk(obj, path)


def _path(folder: str | os.PathLike, key: str) -> Path:
    if not _KEY.fullmatch(key):
        raise CacheError(f"comparison cache key {key!r} is not a plain file name; make keys with "
                         "helpers.compare_cache.key_for(variant_name, fingerprint).")
    return Path(folder) / f"{key}{SUFFIX}"


def save(folder: str | os.PathLike, key: str, result: dict) -> Path:
    """Write ``result`` (a dict of plain data) for ``key`` atomically; returns the file's path."""
    if type(result) is not dict:
        raise CacheError(f"comparison result for {key!r} is a {_type_name(result)}; save a dict.")
    check_plain(result)
    path = _path(folder, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps({"format": FORMAT_VERSION, "key": key, "result": result},
                        protocol=PROTOCOL)
    write_atomic(path, data)
    log.debug("comparison cache: wrote %s (%d bytes)", path, len(data))
    return path


class _PlainUnpickler(pickle.Unpickler):
    """Reads plain data only: every class or function a pickle names is refused."""

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module: str, name: str):
        raise CacheError(
            f"comparison cache file {self.path} refers to {module}.{name}; the cache holds plain "
            "data only, so this file was not written by helpers.compare (or was tampered with). "
            "Delete it to recompute.")

    def persistent_load(self, pid):
        raise CacheError(f"comparison cache file {self.path} refers to an outside object; it was "
                         "not written by helpers.compare. Delete it to recompute.")


def load(folder: str | os.PathLike, key: str) -> dict | None:
    """The result saved for ``key``, or None when there is none (or it is of an older format)."""
    path = _path(folder, key)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        payload = _PlainUnpickler(data, path).load()
    except CacheError:
        raise
    except Exception as e:
        raise CacheError(f"comparison cache file {path} is truncated or corrupt "
                         f"({type(e).__name__}: {e}). Delete it to recompute.") from e
    if type(payload) is not dict or "format" not in payload:
        raise CacheError(f"comparison cache file {path} is not a comparison result (no format "
                         "version). Delete it to recompute.")
    if payload["format"] != FORMAT_VERSION:
        log.warning("comparison cache file %s has format %r, not %d: it will be recomputed and "
                    "overwritten", path, payload["format"], FORMAT_VERSION)
        return None
    if payload.get("key") != key or type(payload.get("result")) is not dict:
        raise CacheError(f"comparison cache file {path} holds the result for key "
                         f"{payload.get('key')!r}, not {key!r} (renamed or copied by hand). "
                         "Delete it to recompute.")
    return payload["result"]


def entries(folder: str | os.PathLike) -> list[str]:
    """Keys with a result file in ``folder`` (none when the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    keys = (p.name[:-len(SUFFIX)] for p in folder.iterdir()
            if p.is_file() and p.name.endswith(SUFFIX))
    return sorted(k for k in keys if _KEY.fullmatch(k))


def stale(folder: str | os.PathLike, keep_keys: Iterable[str]) -> list[str]:
    """Keys in ``folder`` that are not in ``keep_keys``: results of old settings, to show the user
    (never deleted here)."""
    keep = set(keep_keys)
    return [k for k in entries(folder) if k not in keep]
