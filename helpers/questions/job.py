"""What one question run asks for (:class:`Job`: cache keys, prompts, request parameters and
records, shared by every source) and what it gives back (:class:`QAResult`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from helpers.books.passage import Passage
from helpers.core.clock import now
from helpers.core.paths import work_dir
from helpers.questions.prompts import SYSTEM_PROMPT, build_prompt

# -- results ----------------------------------------------------------------------------------

@dataclass
class QAResult:
    records: list[dict] = field(default_factory=list)   # the questions of every passage done
    asked: int = 0                 # passages answered by requests made in this run
    reused: int = 0                # passages served from the cache
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (sha256, book, reason)
    usage: dict[str, int] = field(default_factory=lambda: {
        "input_tokens": 0, "output_tokens": 0, "requests": 0})
    cost_usd: float | None = 0.0   # from the replies' usage; None: no price known
    stopped_by_budget: bool = False
    not_asked: int = 0             # passages left for a later run (budget, batch not waited for)
    attempt_errors: dict[str, int] = field(default_factory=dict)  # failed attempts by cause
    source: str = ""
    model: str = ""
    prompt_version: str = ""
    cache_path: str = ""
    batches: list[str] = field(default_factory=list)   # Message Batch ids still being processed

    @property
    def complete(self) -> bool:
        return not self.failed and not self.not_asked

    def summary(self) -> str:
        total = self.asked + self.reused + len(self.failed) + self.not_asked
        cost = "cost unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        parts = [f"questions ({self.source}, {self.model}): {total} passages: {self.asked} asked, "
                 f"{self.reused} reused from the cache, {len(self.failed)} failed"]
        if self.not_asked:
            parts.append(f"{self.not_asked} not asked"
                         + (" (budget reached)" if self.stopped_by_budget else ""))
        parts.append(f"{self.usage['requests']} requests, {self.usage['input_tokens']:,} input + "
                     f"{self.usage['output_tokens']:,} output tokens, {cost}")
        text = "; ".join(parts)
        if self.attempt_errors:
            text += "; failed attempts: " + ", ".join(f"{k} x{v}" for k, v in
                                              sorted(self.attempt_errors.items()))
        if self.failed:
            text += "\nfailed passages (saved work is kept; rerun to retry them):\n" + "\n".join(
                f"  {book} [{sha[:12]}]: {reason}" for sha, book, reason in self.failed)
        return text

    def __repr__(self) -> str:  # records stay out of the repr (thousands of passages)
        return (f"QAResult(records={len(self.records)}, asked={self.asked}, "
                f"reused={self.reused}, failed={len(self.failed)}, not_asked={self.not_asked}, "
                f"cost_usd={self.cost_usd!r}, stopped_by_budget={self.stopped_by_budget}, "
                f"source={self.source!r}, model={self.model!r})")


# -- records ----------------------------------------------------------------------------------

def question_key(p: Passage, n: int, model: str, prompt_version: str) -> tuple:
    return ("qa", p.sha256, prompt_version, model, n, "")


def unique_passages(passages: Iterable[Passage | dict]) -> list[Passage]:
    seen: set[str] = set()
    out = []
    for p in passages:
        if isinstance(p, dict):
            p = Passage.from_dict(p)
        if not isinstance(p, Passage):
            raise TypeError(f"expected helpers.passage.Passage objects, got {type(p).__name__}")
        if p.sha256 not in seen:
            seen.add(p.sha256)
            out.append(p)
    return out


@dataclass
class Job:
    """What one run asks for; makes prompts and records (shared by every source)."""
    n: int
    model: str
    prompt_version: str
    source: str
    max_tokens: int = 0
    api_model: str = ""          # the model name sent (``model`` is the cache key's name)

    def __post_init__(self):
        self.max_tokens = self.max_tokens or 64 * self.n + 64
        self.api_model = self.api_model or self.model

    def key(self, p: Passage) -> tuple:
        return question_key(p, self.n, self.model, self.prompt_version)

    def prompt(self, p: Passage) -> str:
        return build_prompt(p, self.n)

    def params(self, p: Passage) -> dict[str, Any]:
        """Messages API parameters for one passage."""
        return {"model": self.api_model, "max_tokens": self.max_tokens, "system": SYSTEM_PROMPT,
                "messages": [{"role": "user", "content": self.prompt(p)}]}

    def schema(self) -> dict:
        """The reply as a JSON schema (for servers that take one): exactly N questions."""
        return {"type": "object", "additionalProperties": False, "required": ["questions"],
                "properties": {"questions": {"type": "array", "items": {"type": "string"},
                                             "minItems": self.n, "maxItems": self.n}}}

    def records(self, p: Passage, questions: Sequence[str], *, source: str | None = None,
                usage: dict | None = None, attempts: int = 1, **extra) -> list[dict]:
        group, created = uuid.uuid4().hex, now()
        return [{"question": q, "answer": p.text, "answer_source": "passage", "book": p.book,
                 "first_page": p.first_page, "last_page": p.last_page, "passage_index": p.index,
                 "chapter": p.chapter, "passage_sha256": p.sha256,
                 "prompt_version": self.prompt_version, "model": self.model,
                 "source": source or self.source, "kind": "qa", "n": self.n, "q_index": i,
                 "group": group, "group_size": len(questions), "created": created,
                 "usage": usage, "attempts": attempts, **extra}
                for i, q in enumerate(questions)]


def default_cache_path(name: str = "questions") -> Path:
    return work_dir() / "qa_dataset" / f"{name}.jsonl"
