"""Closed-book fact questions, each with the key facts its passage holds: what the "knowledge or
voice?" section of the comparison asks base and tuned models without the book.

Sources, as for the training questions (``rule``, ``local``, ``anthropic`` / ``openai``):

- ``rule`` (deterministic, no model, no key): a sentence of the passage with one span blanked,
  asked as "what completes this sentence?". The span is, in this order of preference, a number
  (digits or a number word), a name (capitalised words not at the start of a sentence), or a rare
  content word (seven letters or more, once in the passage). The span is the key fact; a sentence
  where it appears twice is skipped (the question would give the answer away).
- ``local`` / ``anthropic`` / ``openai``: the model is asked for questions *and* their key facts
  as JSON (:data:`USER_TEMPLATE`); key facts that are not in the passage are dropped, and a reply
  with no usable question is malformed (asked again on the API; the rule questions replace it for
  a local model, and the records say so). Replies are cached in the append-only question cache
  (``helpers.claude.cache``) under their own kind ``"facts"`` and prompt version, so a rerun asks
  nothing. Rule questions are recomputed (milliseconds) and never cached.

:func:`passages_from_sets` reads the passages of a training-set folder (``helpers.data.prep``
writes it): trained ones from ``v1_train.jsonl`` (the same passages V2's questions were made from;
book and chapter from ``questions.jsonl`` when it has them), held-out ones from ``heldout.json``.
:func:`balanced` makes N questions from each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from helpers.books.passage import Passage
from helpers.claude.backends import backend_for
from helpers.claude.cache import QACache
from helpers.claude.client import MalformedReply, QAConfigError
from helpers.claude.pricing import PROMPT_OVERHEAD_TOKENS, prices_for
from helpers.claude.providers import choose
from helpers.claude.requests import Ledger, Settings, Tally, Task, progress_bar, run_tasks
from helpers.core.clock import now
from helpers.questions.generate import model_for
from helpers.questions.job import unique_passages
from helpers.questions.local import local_generate, local_name
from helpers.questions.rules import _STOP

log = logging.getLogger(__name__)

SOURCES = ("rule", "local", "anthropic")
SPLITS = ("trained", "heldout")
RULE_MODEL = "rule-facts-v1"       # the rule source's name in records; bump when it changes
KIND = "facts"                      # the cache kind of fact questions

SYSTEM_PROMPT = (
    "You write closed-book quiz questions about books. A reader who remembers the book must be "
    "able to answer each question from memory, without the book in front of them.")

USER_TEMPLATE = """Passage from "{book}":

<passage>
{text}
</passage>

Write {n} different factual questions about things this passage states: a name, a number, a \
place, an object, an event, what someone did or said. Each question must make sense on its own, \
without the passage: name the book, people or things it is about, and never say "the passage" \
or "the text". For each question give its key facts: one to three short phrases (one to four \
words each), copied exactly from the passage, that a correct answer must contain.
Reply with only a JSON array of exactly {n} objects: \
[{{"question": "...", "key_facts": ["...", "..."]}}]"""

PROMPT_VERSION = "f1-" + hashlib.sha256((SYSTEM_PROMPT + USER_TEMPLATE).encode()).hexdigest()[:8]
OUTPUT_TOKENS_PER_QUESTION = 48

_NUMBER_WORDS = set("""two three four five six seven eight nine ten eleven twelve thirteen
fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty
ninety hundred thousand million twenties thirties forties fifties sixties seventies eighties
nineties third fourth fifth sixth seventh eighth ninth tenth dozen""".split())
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class FactQuestion:
    """One closed-book question, the key facts a correct answer contains, and where it is from."""

    question: str
    key_facts: tuple[str, ...]
    split: str                 # "trained" (a passage the tuned models trained on) or "heldout"
    passage_sha256: str
    book: str = ""
    chapter: str | None = None
    source: str = "rule"       # rule, local, anthropic or openai (what really wrote it)

    def to_dict(self) -> dict:
        return {**asdict(self), "key_facts": list(self.key_facts)}

    @classmethod
    def from_dict(cls, d: dict) -> "FactQuestion":
        return cls(**{**d, "key_facts": tuple(d["key_facts"])})


# -- passages -----------------------------------------------------------------------------------

def _passage(d: dict, i: int) -> Passage:
    return Passage(text=d["text"], book=d.get("book") or "", first_page=d.get("first_page") or 0,
                   last_page=d.get("last_page") or 0, index=d.get("index", i), chapter=d.get("chapter"))


def passages_from_sets(folder: str | os.PathLike) -> dict[str, list[Passage]]:
    """``{"trained": [...], "heldout": [...]}`` from a training-set folder: every passage of
    ``v1_train.jsonl`` (the assistant turn; book and chapter from ``questions.jsonl`` where it has
    them) and of ``heldout.json``. A passage in both is an error: its questions would say nothing
    about what training added."""
    folder = Path(folder)
    missing = [n for n in ("v1_train.jsonl", "heldout.json") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} has no {' or '.join(missing)}: make the training sets "
                                "first (the DataPrep notebook, or helpers.data.prep.training_sets).")
    meta: dict[str, dict] = {}
    if (folder / "questions.jsonl").is_file():
        with open(folder / "questions.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and r.get("answer"):
                    meta.setdefault(r["answer"], r)
    trained, seen = [], set()
    with open(folder / "v1_train.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                text = json.loads(line)["messages"][-1]["content"]
                if text not in seen:
                    seen.add(text)
                    trained.append(_passage({**meta.get(text, {}), "text": text}, len(trained)))
    held = json.loads((folder / "heldout.json").read_text()).get("heldout", [])
    heldout = [_passage(d, i) for i, d in enumerate(held)]
    both = seen & {p.text for p in heldout}
    if both:
        raise ValueError(f"{len(both)} passage(s) of {folder} are both trained and held out: "
                         "rebuild the sets (delete the folder's *_train.jsonl and heldout.json).")
    return {"trained": trained, "heldout": heldout}


def title(book: str) -> str:
    """A book's file name as a title ("the_patient_workshop" -> "The Patient Workshop")."""
    words = re.sub(r"[_-]+", " ", book or "").split()
    return " ".join(w[:1].upper() + w[1:] for w in words)


# -- the rule source ---------------------------------------------------------------------------

def _spans(sentence: str, counts: Counter) -> list[tuple[int, int, int]]:
    """Candidate key facts of a sentence as (priority, start, end): names, numbers, rare words."""
    toks = list(_WORD.finditer(sentence))
    out = []
    j = 0
    while j < len(toks):
        t = toks[j].group()
        low = t.lower().strip("'")
        if any(c.isdigit() for c in t) or low in _NUMBER_WORDS:
            out.append((1, toks[j].start(), toks[j].end()))
        elif j > 0 and t[0].isupper() and low not in _STOP:
            k = j + 1
            while k < len(toks) and toks[k].group()[0].isupper() and toks[k].group().lower() not in _STOP:
                k += 1
            end = toks[k - 1].end()
            if sentence[toks[k - 1].start():end].endswith("'s"):
                end -= 2
            first = toks[0].group()
            if not (j == 1 and first.lower() not in _STOP and first[0].isupper()):
                out.append((0, toks[j].start(), end))   # else maybe half a name ("Mara [Quill]")
            j = k
            continue
        elif (len(low) >= 7 and low.isalpha() and low not in _STOP and counts[low] == 1
              and t[0].islower() and not low.endswith(("ed", "ing", "ly"))):
            out.append((2, toks[j].start(), toks[j].end()))
        j += 1
    return out


def _clip(before: str, after: str, words: int = 14) -> tuple[str, str]:
    b, a = before.split(), after.split()
    return ((("... " if len(b) > words else "") + " ".join(b[-words:])),
            (" ".join(a[:words]) + (" ..." if len(a) > words else "")))


def rule_fact_questions(passage: Passage, n: int) -> list[tuple[str, list[str]]]:
    """Up to ``n`` (question, key facts) pairs from the passage, deterministic: names first,
    then numbers, then rare words, one per sentence, in the passage's order within each kind."""
    counts = Counter(w.lower() for w in _WORD.findall(passage.text))
    book = title(passage.book)
    where = f'In "{book}"' if book else "In the book"
    found = []
    for s_index, sentence in enumerate(s for s in _SENTENCES.split(passage.text.strip()) if s.strip()):
        for prio, start, end in _spans(sentence, counts):
            fact = sentence[start:end].strip(" '-")
            rest = (sentence[:start] + sentence[end:]).lower()
            if len(fact) < 2 or re.search(rf"\b{re.escape(fact.lower())}\b", rest):
                continue
            before, after = _clip(sentence[:start], sentence[end:])
            blank = re.sub(r" ([,.;:!?]|'s\b)", r"\1", f"{before} ____ {after}".strip())
            found.append((prio, s_index, f'{where}, what completes this sentence: "{blank}"? '
                          "Answer with the missing words.", fact))
    out, used = [], set()
    for prio, s_index, question, fact in sorted(found, key=lambda x: (x[0], x[1])):
        if s_index in used or len(out) == n:
            continue
        used.add(s_index)
        out.append((question, [fact]))
    return out


# -- the model sources -------------------------------------------------------------------------

def build_prompt(passage: Passage, n: int) -> str:
    return USER_TEMPLATE.format(book=title(passage.book) or "a book", text=passage.text, n=n)


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def parse_fact_questions(reply: str, n: int, passage_text: str) -> list[tuple[str, list[str]]]:
    """The (question, key facts) pairs of a reply: the first JSON array of objects with a
    ``question`` and ``key_facts``; key facts not found in the passage are dropped, and a question
    left with none is dropped too. No usable question raises :class:`MalformedReply`; more than
    ``n`` are cut to ``n``."""
    decoder = json.JSONDecoder()
    text_norm = f" {_norm(passage_text)} "
    problem = "no JSON array of objects in the reply"
    for i, ch in enumerate(reply):
        if ch != "[":
            continue
        try:
            value, _ = decoder.raw_decode(reply, i)
        except ValueError:
            continue
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            continue
        out, seen = [], set()
        for v in value:
            q, facts = v.get("question"), v.get("key_facts")
            if not isinstance(q, str) or not q.strip() or not isinstance(facts, list):
                continue
            facts = [f.strip() for f in facts if isinstance(f, str) and f.strip()
                     and _norm(f) and f" {_norm(f)} " in text_norm]
            if facts and q.strip().lower() not in seen:
                seen.add(q.strip().lower())
                out.append((q.strip(), facts))
        if out:
            return out[:n]
        problem = "no question whose key facts are in the passage"
    snippet = reply.strip().replace("\n", " ")[:80]
    raise MalformedReply(f"{problem} (reply began {snippet!r})")


def _key(p: Passage, n: int, model: str) -> tuple:
    return (KIND, p.sha256, PROMPT_VERSION, model, n, "")


def _records(p: Passage, pairs, n: int, model: str, source: str, usage=None, attempts: int = 1,
             **extra) -> list[dict]:
    group, created = uuid.uuid4().hex, now()
    return [{"kind": KIND, "question": q, "key_facts": facts, "book": p.book, "chapter": p.chapter,
             "first_page": p.first_page, "passage_sha256": p.sha256, "prompt_version": PROMPT_VERSION,
             "model": model, "source": source, "n": n, "q_index": i, "item": "", "group": group,
             "group_size": len(pairs), "created": created, "usage": usage, "attempts": attempts,
             **extra} for i, (q, facts) in enumerate(pairs)]


def _task(p: Passage, n: int, model: str, api_model: str, source: str) -> Task:
    prompt = build_prompt(p, n)
    return Task(key=_key(p, n, model), sha=p.sha256, book=p.book,
                label=f"facts {p.book} p.{p.first_page}-{p.last_page}",
                params={"model": api_model, "max_tokens": OUTPUT_TOKENS_PER_QUESTION * n + 64,
                        "system": SYSTEM_PROMPT, "messages": [{"role": "user", "content": prompt}]},
                est=((len(SYSTEM_PROMPT) + len(prompt)) // 4 + PROMPT_OVERHEAD_TOKENS,
                     OUTPUT_TOKENS_PER_QUESTION * n + 8),
                parse=lambda reply: parse_fact_questions(reply, n, p.text),
                records=lambda pairs, usage, attempts: _records(p, pairs, n, model, source, usage, attempts))


def fact_questions(passages: Iterable[Passage], n: int = 1, *, source: str = "rule",
                   cache_path: str | os.PathLike | None = None, model: str | None = None,
                   client=None, local_model: tuple | None = None, budget_usd: float | None = None,
                   provider: str = "anthropic", base_url: str | None = None, concurrency: int = 8,
                   timeout_s: float = 60.0, progress: bool = False, **options) -> dict[str, list[dict]]:
    """Passage sha256 -> its fact questions (dicts with ``question``, ``key_facts``, ``source``).

    ``source="rule"`` needs nothing; ``"local"`` needs ``local_model=(model, tokenizer)``;
    ``"anthropic"`` asks the API (``provider="openai"`` and ``base_url``: an OpenAI-compatible
    server), at most ``budget_usd``. Model replies are cached in ``cache_path`` (required for those
    sources) and never asked again. A passage that failed is left out (logged)."""
    if source not in SOURCES:
        raise QAConfigError(f"knowledge_source={source!r}: choose one of {', '.join(SOURCES)} "
                            "(None: the persona's qa_source, rule in smoke mode).")
    if not isinstance(n, int) or n < 1:
        raise QAConfigError(f"n (fact questions per passage) must be a positive integer, got {n!r}.")
    unique = unique_passages(passages)
    if source == "rule":
        return {p.sha256: [{"question": q, "key_facts": f, "source": "rule"}
                           for q, f in rule_fact_questions(p, n)] for p in unique}
    if cache_path is None:
        raise QAConfigError(f"source={source!r} needs cache_path= (where the replies are kept, so "
                            "that a rerun asks nothing again).")
    if source == "local" and (not isinstance(local_model, (tuple, list)) or len(local_model) not in (2, 3)):
        raise QAConfigError("knowledge_source='local' needs local_model=(model, tokenizer), e.g. "
                            "from helpers.runtime.loading.load_model().")
    prov = choose(provider, base_url)
    if source == "anthropic":
        model = model_for(prov, model)
        key_model, shown = prov.key_model(model), ("openai" if prov.openai else "anthropic")
    else:
        key_model, shown = local_name(local_model), "local"
    out: dict[str, list[dict]] = {}
    with QACache(cache_path) as cache:
        pending = [p for p in unique if _key(p, n, key_model) not in cache]
        log.info("fact questions: %d passages, %d in the cache (%s), %d to ask (%s)", len(unique),
                 len(unique) - len(pending), cache_path, len(pending), shown)
        if pending and source == "local":
            replies = local_generate(local_model, [build_prompt(p, n) for p in pending],
                                     OUTPUT_TOKENS_PER_QUESTION * n + 64, system_prompt=SYSTEM_PROMPT)
            bad = 0
            for p, reply in zip(pending, replies):
                try:
                    cache.append(_records(p, parse_fact_questions(reply, n, p.text), n, key_model, "local"))
                except MalformedReply as e:
                    bad += 1
                    cache.append(_records(p, rule_fact_questions(p, n), n, key_model, "rule",
                                          fallback_reason=f"local reply malformed: {e}"))
            if bad:
                log.warning("local model: %d of %d fact-question replies were unusable; those "
                            "passages got rule questions (source='rule')", bad, len(pending))
        elif pending:
            tally = Tally()
            ledger = Ledger(model, prices_for(model, None, prov.name), budget_usd)
            api = backend_for(client, prov, timeout_s)
            bar = progress_bar(len(pending), progress, f"fact questions ({shown})")
            try:
                run_tasks([_task(p, n, key_model, model, shown) for p in pending], cache, api, ledger,
                          Settings(concurrency=concurrency, timeout_s=timeout_s, **options), tally, bar)
            finally:
                bar and bar.close()
            for sha, book, reason in tally.failed:
                log.warning("fact questions: gave up on %s [%s]: %s", book, sha[:12], reason)
            if ledger.stopped_by_budget:
                log.warning("fact questions: budget_usd=%s reached; the passages not asked are "
                            "left out (rerun with a larger budget to add them)", budget_usd)
        for p in unique:
            recs = cache.get(_key(p, n, key_model))
            if recs:
                out[p.sha256] = [{"question": r["question"], "key_facts": list(r["key_facts"]),
                                  "source": r.get("source", shown)} for r in recs]
    return out


# -- balanced sets -----------------------------------------------------------------------------

def spread(items: Sequence, k: int) -> list:
    """``k`` items spread evenly over the sequence (all of them when there are fewer)."""
    k = min(max(k, 0), len(items))
    return [items[i * len(items) // k] for i in range(k)] if k else []


def common_facts(passages: Sequence[Passage], share: float = 0.2) -> set[str]:
    """Normalised words and names found in more than ``share`` of the passages (at least 5
    passages): a fact such as the main character's name or "two" that a model which learned only
    the voice says everywhere, so an answer holding it proves little."""
    if len(passages) < 5:
        return set()
    df: Counter = Counter()
    for p in passages:
        words = _norm(p.text).split()
        df.update({" ".join(words[i:i + k]) for k in (1, 2, 3) for i in range(len(words) - k + 1)})
    return {w for w, c in df.items() if c > share * len(passages)}


def pick(passages: Sequence[Passage], split: str, n: int, questions: dict[str, list[dict]],
         common: set[str] = frozenset()) -> list[FactQuestion]:
    """``n`` questions of one split, round-robin over the passages (one from each before a
    second from any), so that they cover as many chapters as there are. The same question twice
    (neighbouring passages overlap) is asked once; a question whose key facts another one already
    has, or whose key facts are all ``common`` (:func:`common_facts`), waits until the others run
    out."""
    per = [[FactQuestion(q["question"], tuple(q["key_facts"]), split, p.sha256, p.book, p.chapter,
                         q.get("source", "rule")) for q in questions.get(p.sha256, [])]
           for p in passages]
    order = [qs[r] for r in range(max((len(x) for x in per), default=0)) for qs in per if r < len(qs)]
    out: list[FactQuestion] = []
    asked, facts = set(), set()
    for strict in (2, 1, 0):
        for q in order:
            fact = tuple(sorted(_norm(f) for f in q.key_facts))
            if (len(out) == n or q.question in asked or (strict and fact in facts)
                    or (strict == 2 and all(f in common for f in fact))):
                continue
            asked.add(q.question)
            facts.add(fact)
            out.append(q)
    return out


def balanced(sets: dict[str, Sequence[Passage]], n: int, *, source: str = "rule", **kw) -> list[FactQuestion]:
    """``n`` questions from trained passages and ``n`` from held-out ones (fewer where a split
    has too few passages or facts; logged). Passages are spread evenly over each split; with
    fewer than ``n`` passages, a passage gives more than one question. Questions whose key facts
    are common in the book (:func:`common_facts`) come last. ``kw`` goes to
    :func:`fact_questions` (cache, model, client, budget...)."""
    if not isinstance(n, int) or n < 1:
        raise QAConfigError(f"knowledge_questions={n!r}: ask at least 1 question per split (e.g. 20).")
    out = []
    common = common_facts([p for split in SPLITS for p in sets.get(split, [])])
    for split in SPLITS:
        passages = list(sets.get(split, []))
        if not passages:
            log.warning("no %s passages: the knowledge check has no %s questions", split, split)
            continue
        per = max(1, min(3, math.ceil(n / len(passages))))
        chosen = spread(passages, math.ceil(n / per))
        if source == "rule":   # free: every passage (the spread ones first), spares for duplicates
            chosen += [p for p in passages if p not in chosen]
            per += 2
        got = pick(chosen, split, n, fact_questions(chosen, per, source=source, **kw), common)
        if len(got) < n:
            log.warning("%d %s fact questions of the %d asked for (%d passages)", len(got), split, n,
                        len(passages))
        out += got
    return out
