"""Preference pairs for DPO, built from the V2 training set.

For each V2 example (a question and the author's passage that answers it):

- **prompt**: the conversation up to the question (system prompt included when there is one);
- **chosen**: the author's passage, the V2 answer;
- **rejected**: the base model's own greedy answer to the same question.

So DPO pushes the model away from what it would say anyway and toward the author's text.

The rejected answers cost one generation each, so they are made once and kept in an
append-only cache (:class:`RejectedCache`, ``rejected_answers.jsonl`` in the run folder): every
batch of answers is appended in one write and fsynced, a torn last line (a crash mid-write) is
ignored on reading, and an answer is found again by a key that hashes the model, the system
prompt, the question and the decoding. A rerun, or a run that crashed halfway, only generates
what is missing.

Pairs whose two answers are nearly the same (:func:`near_identical`: word-sequence similarity
>= ``NEAR_IDENTICAL``) teach nothing and are skipped; exact duplicates (same question and same
passage, after normalising case, spaces and punctuation) are dropped first
(:func:`helpers.data.recipes.dedupe`). Then a held-out split by question (:func:`split`): every
pair of one question lands on the same side, so held-out reward accuracy is measured on
questions the run never trained on.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers.core.files import fsync_dir, write_atomic
from helpers.data import recipes

log = logging.getLogger(__name__)

#: word-sequence similarity (difflib ratio over lower-cased words) at or above which the base
#: model's answer counts as the author's passage itself: such a pair has nothing to prefer
NEAR_IDENTICAL = 0.9
#: share of questions held out to measure reward accuracy on pairs never trained on
HELDOUT_FRACTION = 0.1
CACHE_NAME = "rejected_answers.jsonl"


class PreferenceError(ValueError):
    """The pairs cannot be built from what was given; the message says the fix."""


# -- the rejected answers' cache ------------------------------------------------------------
def answer_key(model: str, system_prompt: str | None, question: str, decoding: dict[str, Any]) -> str:
    """What a cached answer depends on: the model (name, source, adapter), the system prompt,
    the question and the decoding settings."""
    text = json.dumps({"model": model, "system_prompt": system_prompt or "", "question": question,
                       "decoding": decoding}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RejectedCache:
    """Append-only JSONL of ``{"key", "question", "answer"}``; crash-safe (see the module text)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.answers: dict[str, str] = {}
        self.torn = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.answers[row["key"]] = row["answer"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.torn += 1   # a line cut short by a crash: its answer is made again
            if self.torn:
                log.warning("%s: %d unreadable line(s) (an interrupted write) ignored; those answers "
                            "are generated again", self.path, self.torn)

    def __len__(self) -> int:
        return len(self.answers)

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def add(self, rows: Sequence[dict]) -> None:
        """Append ``rows`` (each with key, question, answer) in one fsynced write."""
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as fh:   # a torn last line must not swallow the next row
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    payload = "\n" + payload
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            fsync_dir(self.path.parent)
        for r in rows:
            self.answers[r["key"]] = r["answer"]


def rejected_answers(questions: Sequence[str], generate: Callable[[list[str]], list[str]], *,
                     cache: RejectedCache, model: str, system_prompt: str | None,
                     decoding: dict[str, Any], batch: int = 16) -> tuple[list[str], dict[str, int]]:
    """The base model's answer to each question: from ``cache`` when there, else from
    ``generate`` (a batch of questions -> their answers), appended to the cache a batch at a
    time. Returns the answers in order and how many came from each place."""
    keys = [answer_key(model, system_prompt, q, decoding) for q in questions]
    missing = list(dict.fromkeys(q for q, k in zip(questions, keys) if cache.get(k) is None))
    for i in range(0, len(missing), batch):
        chunk = missing[i:i + batch]
        answers = generate(chunk)
        if len(answers) != len(chunk):
            raise PreferenceError(f"generate returned {len(answers)} answers for {len(chunk)} questions")
        cache.add([{"key": answer_key(model, system_prompt, q, decoding), "question": q, "answer": a}
                   for q, a in zip(chunk, answers)])
        log.info("Rejected answers: %d of %d generated", min(i + batch, len(missing)), len(missing))
    return [cache.get(k) or "" for k in keys], {"cached": len(set(questions)) - len(missing),
                                                "generated": len(missing)}


# -- pairs ----------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return recipes._norm(text).split()


def similarity(a: str, b: str) -> float:
    """Word-sequence similarity of two answers, 0..1 (difflib's ratio over lower-cased words)."""
    wa, wb = _words(a), _words(b)
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def near_identical(a: str, b: str, threshold: float = NEAR_IDENTICAL) -> bool:
    return similarity(a, b) >= threshold


def _question(conv: Sequence[dict]) -> str:
    return next((m["content"] for m in reversed(conv) if m["role"] == "user"), "")


def pair(conv: Sequence[dict], rejected: str) -> dict[str, list[dict]]:
    """One pair in TRL's conversational preference format: ``prompt`` (every message before the
    last assistant turn), ``chosen`` (that turn) and ``rejected`` (the base model's answer)."""
    if not conv or conv[-1]["role"] != "assistant":
        raise PreferenceError("A V2 example must end with the assistant's answer (the author's passage).")
    return {"prompt": [dict(m) for m in conv[:-1]],
            "chosen": [{"role": "assistant", "content": conv[-1]["content"]}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def split(pairs: Sequence[dict], fraction: float = HELDOUT_FRACTION, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train, heldout)``: about ``fraction`` of the questions held out, chosen by a hash of the
    normalised question and ``seed`` (stable across runs and machines), all pairs of one question
    on one side. At least one question is held out when there are two or more."""
    if not 0 <= fraction < 1:
        raise PreferenceError(f"heldout_fraction={fraction}: use a share from 0 (none) to below 1.")
    questions = sorted({recipes._norm(_question(p["prompt"])) for p in pairs})
    if fraction == 0 or len(questions) < 2:
        return list(pairs), []
    def rank(q):
        return hashlib.sha256(f"{seed}:{q}".encode()).hexdigest()
    n = min(len(questions) - 1, max(1, round(fraction * len(questions))))
    held = set(sorted(questions, key=rank)[:n])
    train = [p for p in pairs if recipes._norm(_question(p["prompt"])) not in held]
    heldout = [p for p in pairs if recipes._norm(_question(p["prompt"])) in held]
    return train, heldout


@dataclass
class Pairs:
    """The preference pairs of a run, with what was dropped on the way."""

    train: list[dict]
    heldout: list[dict]
    stats: dict[str, int] = field(default_factory=dict)

    def save(self, folder: str | os.PathLike) -> dict[str, Path]:
        """``pairs_train.jsonl`` and ``pairs_heldout.jsonl`` in ``folder``, written atomically."""
        folder = Path(folder)
        out = {}
        for name, rows in (("train", self.train), ("heldout", self.heldout)):
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
            out[name] = write_atomic(folder / f"pairs_{name}.jsonl", text)
        return out

    def table(self, n: int = 3, chars: int = 240):
        """The first ``n`` training pairs: question, chosen and rejected answers, shortened."""
        import pandas as pd

        def cut(t):
            return t[:chars] + ("..." if len(t) > chars else "")
        return pd.DataFrame([{"question": cut(_question(p["prompt"])), "chosen (author)": cut(p["chosen"][0]["content"]),
                              "rejected (base model)": cut(p["rejected"][0]["content"]) or "(empty)"}
                             for p in self.train[:n]])


def system_prompt_of(conversations: Sequence[Sequence[dict]]) -> str | None:
    """The one system prompt the conversations share (None: they have none); the rejected answers
    are generated with it, so that both answers of a pair follow the same prompt."""
    found = {c[0]["content"] if c and c[0]["role"] == "system" else None for c in conversations}
    if len(found) > 1:
        raise PreferenceError(f"The V2 examples carry {len(found)} different system prompts; pairs need one, "
                              "since the base model answers every question with it. Load the data with "
                              "the persona's system_prompt (FineTuneRun.start(system_prompt=...)).")
    return next(iter(found), None)


def build(conversations: Sequence[Sequence[dict]], generate: Callable[[list[str], str | None], list[str]], *,
          cache: RejectedCache, model: str,
          decoding: dict[str, Any] | None = None, max_pairs: int | None = None,
          heldout_fraction: float = HELDOUT_FRACTION, near: float = NEAR_IDENTICAL,
          seed: int = 0) -> Pairs:
    """Pairs from V2 ``conversations``: deduplicated, rejected answers from ``generate(questions,
    system_prompt)`` (through ``cache``; the system prompt is the one the conversations share),
    near-identical pairs skipped, then split by question. ``max_pairs`` keeps the first so many
    examples after deduplication (None: all)."""
    if not conversations:
        raise PreferenceError("No V2 examples to build pairs from: make the persona's V2 set first "
                              "(its DataPrep notebook, or dataprep.training_sets(persona, 'v2')).")
    kept, dedup = recipes.dedupe([list(c) for c in conversations], near=None)
    if max_pairs is not None:
        if max_pairs < 1:
            raise PreferenceError(f"max_pairs={max_pairs}: use a positive number, or None for every example.")
        kept = kept[:max_pairs]
    questions = [_question(c) for c in kept]
    system_prompt = system_prompt_of(kept)
    rejected, sources = rejected_answers(questions, lambda qs: generate(qs, system_prompt), cache=cache,
                                         model=model, system_prompt=system_prompt, decoding=decoding or {})
    pairs, similar = [], 0
    for conv, bad in zip(kept, rejected):
        if near_identical(conv[-1]["content"], bad, near):
            similar += 1
            continue
        pairs.append(pair(conv, bad))
    if not pairs:
        raise PreferenceError(f"All {len(kept)} pairs were skipped: the base model's answers are nearly "
                              "the author's passages, so there is nothing to prefer. Check the data "
                              "(V2 answers must be the passages) or lower `near`.")
    train, heldout = split(pairs, heldout_fraction, seed)
    stats = {"v2_examples": len(conversations), "duplicates": dedup["exact_duplicates"],
             "used": len(kept), "near_identical_skipped": similar, "pairs": len(pairs),
             "train": len(train), "heldout": len(heldout),
             "rejected_cached": sources["cached"], "rejected_generated": sources["generated"],
             "rejected_empty": sum(1 for r in rejected if not r.strip())}
    log.info("Preference pairs: %s", ", ".join(f"{k} {v}" for k, v in stats.items()))
    return Pairs(train, heldout, stats)
