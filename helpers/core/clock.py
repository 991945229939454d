"""Time stamps: UTC with the zone written out, everywhere the project records a time."""

from __future__ import annotations

import datetime as _dt


def now() -> str:
    """The current time as ISO 8601 in UTC, to the second: ``2026-12-01T22:14:55+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def stamp() -> str:
    """A UTC time for file and folder names: ``20261201-221455Z``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%SZ")
