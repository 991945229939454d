"""A passage of a book: the unit that training examples and synthetic questions are made from."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Passage:
    """About 350 words of cleaned book text and where it came from.

    ``sha256`` is the hash of ``text`` (UTF-8): caches are keyed by it, so changed cleaning or
    chunking never reuses answers made for other text.
    """

    text: str
    book: str                 # file name without extension
    first_page: int           # 1-based, inclusive
    last_page: int            # 1-based, inclusive
    index: int = 0            # position of the passage within its book
    chapter: str | None = None  # chapter title when known (for held-out splits by region)
    sha256: str = field(default="")

    def __post_init__(self):
        if not self.sha256:
            object.__setattr__(self, "sha256", text_sha256(self.text))

    @property
    def words(self) -> int:
        return len(self.text.split())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Passage":
        return cls(**{k: d[k] for k in ("text", "book", "first_page", "last_page", "index",
                                         "chapter", "sha256") if k in d})
