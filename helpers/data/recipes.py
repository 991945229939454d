"""Training sets from passages: the V1 and V2 recipes, held-out regions, merging, length reports
and conversions to ChatML ``messages`` JSONL.

- V1, passage completion: a short rotating user prompt; the assistant turn is the passage.
- V2, synthetic Q&A: the user turn is a generated question; the assistant turn is the passage,
  verbatim (checked when the set is built).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from helpers import data
from helpers.books.passage import Passage

log = logging.getLogger(__name__)

V1_PROMPTS = (
    "Share your thoughts on this.",
    "Tell me what you think.",
    "Go on, in your own words.",
    "What would you say about this?",
    "Explain your view.",
    "Talk to me about it.",
)


class RecipeError(ValueError):
    """A training set could not be built as asked (e.g. a V2 answer is not its passage)."""


def _conv(system_prompt: str | None, user: str, assistant: str) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def v1_examples(passages: Sequence[Passage], system_prompt: str | None = None,
                prompts: Sequence[str] = V1_PROMPTS) -> list[list[dict]]:
    """V1: one conversation per passage; the user prompt rotates through ``prompts``."""
    if not prompts:
        raise RecipeError("prompts is empty: V1 needs at least one user prompt to rotate through.")
    return [_conv(system_prompt, prompts[i % len(prompts)], p.text) for i, p in enumerate(passages)]


def v2_examples(records: Iterable[dict], passages: Sequence[Passage],
                system_prompt: str | None = None) -> list[list[dict]]:
    """V2: one conversation per question record (``question``, ``answer``, ``passage_sha256``).

    Records whose passage is not in ``passages`` (another split, or stale) are left out. Every
    answer must equal its source passage exactly, or :class:`RecipeError` names the first
    mismatch.
    """
    by_sha = {p.sha256: p for p in passages}
    convs, skipped = [], 0
    for r in records:
        p = by_sha.get(r.get("passage_sha256"))
        if p is None:
            skipped += 1
            continue
        if r.get("answer") != p.text:
            raise RecipeError(
                f"V2 answer for question {r.get('question')!r} is not its passage verbatim "
                f"({p.book} p.{p.first_page}-{p.last_page}, sha {p.sha256[:12]}). V2 answers must be "
                "the book's own text: regenerate the records from these passages.")
        convs.append(_conv(system_prompt, r["question"], p.text))
    if skipped:
        log.info("V2: %d question records belong to passages outside this set and were left out", skipped)
    return convs


# -- held-out regions --------------------------------------------------------------------------
@dataclass
class Split:
    train: list[Passage]
    heldout: list[Passage]
    regions: list[dict]  # {"book", "chapter", "first_page", "last_page", "passages"}

    def to_dict(self) -> dict[str, Any]:
        return {"regions": self.regions,
                "train_sha256": [p.sha256 for p in self.train],
                "heldout": [p.to_dict() for p in self.heldout]}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def heldout_split(passages: Sequence[Passage], fraction: float = 0.1, seed: int = 0) -> Split:
    """Hold out whole regions of the books, not random rows: whole chapters where chapters are
    known, else runs of consecutive pages, about ``fraction`` of the passages in all. Passages
    overlap their neighbours, so the passage on each side of a held-out region is dropped from
    training too (nothing held out is seen in training)."""
    if not 0 < fraction < 1:
        raise RecipeError(f"fraction={fraction} must be between 0 and 1 (e.g. 0.1 holds out 10%).")
    if not passages:
        raise RecipeError("no passages to split")
    regions: list[list[int]] = []  # indices into passages, each a contiguous region of one book
    cur_key, cur = None, []
    for i, p in enumerate(passages):
        key = (p.book, p.chapter) if p.chapter else (p.book, (p.first_page - 1) // 10)
        if key != cur_key and cur:
            regions.append(cur)
            cur = []
        cur_key = key
        cur.append(i)
    if cur:
        regions.append(cur)
    rng = random.Random(seed)
    order = list(range(len(regions)))
    rng.shuffle(order)
    target = max(1, round(fraction * len(passages)))
    chosen, count = set(), 0
    for r in order:
        if count >= target:
            break
        if len(regions) - len(chosen) <= 1:
            break  # always leave something to train on
        chosen.add(r)
        count += len(regions[r])
    held = sorted(i for r in chosen for i in regions[r])
    held_set = set(held)
    buffer = set()
    for i in held:
        for j in (i - 1, i + 1):
            if 0 <= j < len(passages) and j not in held_set and passages[j].book == passages[i].book:
                buffer.add(j)
    train = [p for i, p in enumerate(passages) if i not in held_set and i not in buffer]
    info = []
    for r in sorted(chosen):
        ps = [passages[i] for i in regions[r]]
        info.append({"book": ps[0].book, "chapter": ps[0].chapter, "first_page": ps[0].first_page,
                     "last_page": ps[-1].last_page, "passages": len(ps)})
    log.info("Held out %d passages in %d regions; %d kept for training (%d dropped beside regions)",
             len(held), len(info), len(train), len(buffer))
    return Split(train=train, heldout=[passages[i] for i in held], regions=info)


# -- merging -----------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def _shingles(text: str, k: int = 5) -> set[int]:
    words = _norm(text).split()
    if len(words) < k:
        return {hash(" ".join(words))}
    return {int(hashlib.md5(" ".join(words[i:i + k]).encode()).hexdigest()[:12], 16)
            for i in range(len(words) - k + 1)}


def _key_text(conv: list[dict]) -> str:
    return "\n".join(m["content"] for m in conv if m["role"] != "system")


def dedupe(convs: Sequence[list[dict]], near: float | None = 0.85) -> tuple[list[list[dict]], dict[str, int]]:
    """Drop exact duplicates (same text after normalising case, spaces and punctuation) and near
    duplicates (Jaccard similarity of word 5-grams >= ``near``; ``None`` keeps them); the first
    copy is kept."""
    seen_exact: set[str] = set()
    kept: list[list[dict]] = []
    kept_sh: list[set[int]] = []
    index: dict[int, list[int]] = {}
    exact = near_count = 0
    for conv in convs:
        text = _key_text(conv)
        key = hashlib.sha256(_norm(text).encode()).hexdigest()
        if key in seen_exact:
            exact += 1
            continue
        if near is None:
            seen_exact.add(key)
            kept.append(conv)
            continue
        sh = _shingles(text)
        candidates: dict[int, int] = {}
        for s in sh:
            for j in index.get(s, ()):
                candidates[j] = candidates.get(j, 0) + 1
        dup = False
        for j, shared in candidates.items():
            union = len(sh) + len(kept_sh[j]) - shared
            if union and shared / union >= near:
                dup = True
                break
        if dup:
            near_count += 1
            continue
        seen_exact.add(key)
        for s in sh:
            index.setdefault(s, []).append(len(kept))
        kept.append(conv)
        kept_sh.append(sh)
    return kept, {"input": len(convs), "kept": len(kept), "exact_duplicates": exact,
                  "near_duplicates": near_count}


def merge(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
          near: float = 0.85) -> tuple[list[list[dict]], dict[str, int]]:
    """Merge several JSONL sets (prompt/completion or messages), removing exact and near
    duplicates; writes ChatML ``messages`` JSONL to ``out`` when given."""
    convs: list[list[dict]] = []
    for p in paths:
        convs += data.load(p, allow_duplicates=True).conversations
    kept, stats = dedupe(convs, near=near)
    if out:
        export_messages_jsonl(kept, out)
    log.info("Merged %d files: %s", len(paths), stats)
    return kept, stats


# -- lengths -----------------------------------------------------------------------------------
def length_report(tokenizer, convs: Sequence[list[dict]], *, multiple_of: int = 64,
                  **template_kwargs) -> dict[str, Any]:
    """Token lengths of the rendered conversations: P50/P90/P95/max, a recommended
    ``max_seq_length`` (P95, or the maximum when it costs under 25% more, rounded up to
    ``multiple_of``) and how many examples that would truncate."""
    def n_tokens(conv):
        text = tokenizer.apply_chat_template(conv, tokenize=False, **template_kwargs)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    lengths = sorted(n_tokens(c) for c in convs)
    if not lengths:
        raise RecipeError("no examples to measure")

    def pct(q: float) -> int:
        return lengths[min(len(lengths) - 1, math.ceil(q * len(lengths)) - 1)]

    p95, mx = pct(0.95), lengths[-1]
    base = mx if mx <= 1.25 * p95 else p95
    rec = int(math.ceil(base / multiple_of) * multiple_of)
    return {"examples": len(lengths), "p50": pct(0.5), "p90": pct(0.9), "p95": p95, "max": mx,
            "mean": round(sum(lengths) / len(lengths), 1), "recommended_max_seq_length": rec,
            "truncated_at_recommended": sum(1 for n in lengths if n > rec)}


# -- export and conversion ---------------------------------------------------------------------
def export_messages_jsonl(convs: Iterable[list[dict]], path: str | os.PathLike) -> Path:
    """Write conversations as ChatML ``{"messages": [...]}`` JSONL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for conv in convs:
            fh.write(json.dumps({"messages": conv}, ensure_ascii=False) + "\n")
            n += 1
    log.info("Wrote %d conversations to %s", n, path)
    return path


def convert_prompt_completion(src: str | os.PathLike, out: str | os.PathLike,
                              system_prompt: str | None = None) -> Path:
    """A validated prompt/completion JSONL file as ``messages`` JSONL."""
    return export_messages_jsonl(data.load(src, system_prompt=system_prompt).conversations, out)


_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                 "bot": "assistant", "model": "assistant", "system": "system"}


def convert_chat_log(src: str | os.PathLike, out: str | os.PathLike,
                     system_prompt: str | None = None) -> Path:
    """A chat-log JSON file as ``messages`` JSONL. Accepts a list of conversations, each a list
    of ``{"role", "content"}`` or ShareGPT ``{"from", "value"}`` turns, or an object with a
    ``conversations``/``messages`` list."""
    src = Path(src)
    raw = json.loads(src.read_text(encoding="utf-8"))
    if isinstance(raw, dict):
        raw = raw.get("conversations") or raw.get("messages") or []
    convs = []
    for i, item in enumerate(raw):
        turns = item.get("messages") or item.get("conversations") if isinstance(item, dict) else item
        conv = []
        for t in turns or []:
            role = _ROLE_ALIASES.get(str(t.get("role", t.get("from", ""))).lower())
            text = t.get("content", t.get("value"))
            if role is None or not isinstance(text, str) or not text.strip():
                raise RecipeError(f"{src}: conversation {i} has a turn without a known role and "
                                  f"text: {json.dumps(t)[:80]}")
            conv.append({"role": role, "content": text})
        if system_prompt:
            conv = [{"role": "system", "content": system_prompt}] + [m for m in conv if m["role"] != "system"]
        if any(m["role"] == "assistant" for m in conv):
            convs.append(conv)
    return export_messages_jsonl(convs, out)
