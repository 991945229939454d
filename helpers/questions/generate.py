"""Synthetic questions for book passages: the V2 training pairs (question -> passage verbatim).

Asking an API for questions is the only paid step of the pipeline, so it never asks twice for
what it already has and never loses what it was given:

- Every reply is appended to a JSONL cache (``qa_dataset/`` by default) as soon as it arrives, one
  line per question, the questions of a passage in one write, flushed and fsynced
  (``helpers.qa_cache``). A crash, SIGKILL included, loses at most the requests in flight; a torn
  last line is cut off on the next run, with a warning.
- The cache is keyed by content: ``(passage_sha256, prompt_version, model)`` and the number of
  questions asked. New chunking (new hashes) or a new prompt is never served stale answers; other
  keys' records stay in the file untouched. A rerun asks only for what is missing.
- ``estimate()`` says what a run would cost before it spends (list prices to check), and
  ``budget_usd`` stops a run cleanly: no new requests, the ones in flight finish and are saved.

Sources (``source=``, chosen explicitly; records carry it): ``"anthropic"`` (the Messages API,
or the Message Batches API with ``batch=True``), ``"local"`` (a transformers model and tokenizer
you pass, falling back per passage to the rule generator when its reply is not a usable JSON
array) and ``"rule"`` (deterministic, no model: "What does the author say about X?").

Record fields: ``question``, ``answer`` (the passage text, verbatim), ``answer_source``
(``"passage"``; ``"generated"`` for :func:`two_pass`), ``book``, ``first_page``, ``last_page``,
``passage_index``, ``chapter``, ``passage_sha256``, ``prompt_version``, ``model``, ``source``,
``kind``, ``n``, ``q_index``, ``group``, ``group_size``, ``created``, ``usage``, ``attempts``.

Command line: ``python -m helpers.qa --books DIR --cache FILE [--concurrency N]
[--questions-per-passage K] [--model M] [--batch] [--budget-usd X]
[--source anthropic|local|rule]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Collection, Iterable, Sequence

from helpers.books.passage import Passage, text_sha256
from helpers.claude.cache import QACache

log = logging.getLogger(__name__)

from helpers.core import clock
DEFAULT_MODEL = "claude-haiku-4-5-20251001"
SOURCES = ("anthropic", "local", "rule")
RULE_MODEL = "rule-v1"           # the rule generator's "model" in cache keys; bump when it changes

SYSTEM_PROMPT = (
    "You write questions for a question-answering dataset made from books. The answer to each "
    "question will be the passage you are shown, word for word, so ask only questions that the "
    "passage itself answers.")

USER_TEMPLATE = """Passage from "{book}":

<passage>
{text}
</passage>

Write {n} different questions that a reader might ask the author and that this passage answers. \
Each question must make sense on its own, without the passage in front of the reader: name the \
people, places, ideas or events it is about, and never say "the passage" or "the text". \
Reply with only a JSON array of exactly {n} strings."""

# The version changes by itself whenever the prompt text does: a new prompt never reuses answers
# made for the old one.
PROMPT_VERSION = "q1-" + hashlib.sha256((SYSTEM_PROMPT + USER_TEMPLATE).encode()).hexdigest()[:8]

# (input, output) USD per million tokens. LIST PRICES AS OF WRITING: check
# https://www.anthropic.com/pricing before relying on them; pass price_per_mtok= to override.
PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
}
BATCH_DISCOUNT = 0.5             # the Message Batches API bills half the list price
PROMPT_OVERHEAD_TOKENS = 12      # message framing the API adds to the text we send
OUTPUT_TOKENS_PER_QUESTION = 32  # a question is 15 to 25 words; quotes and commas


class QAError(RuntimeError):
    """Question generation stopped (the work done so far is saved in the cache)."""


class QAConfigError(QAError, ValueError):
    """A setting is wrong or missing (no API key, unknown source, ...)."""


class MalformedReply(ValueError):
    """A reply that is not a JSON array of exactly N distinct non-empty strings."""


class VerbatimError(AssertionError):
    """A record's answer is not its passage's text."""


NO_KEY_MESSAGE = (
    "source='anthropic' needs an Anthropic API key: set ANTHROPIC_API_KEY in the environment or "
    "in a .env file in the project root or your home folder. Without a key, choose a source "
    "explicitly: qa_source=\"rule\" (deterministic questions, no model; source='rule' here, "
    "--source rule on the command line) or qa_source=\"local\" (a local transformers model: "
    "source='local', local_model=(model, tokenizer)). Records carry their source.")


# -- prompt and parsing ---------------------------------------------------------------------

def build_prompt(passage: Passage, n: int) -> str:
    return USER_TEMPLATE.format(book=passage.book, text=passage.text, n=n)


def parse_questions(reply: str, n: int) -> list[str]:
    """The N questions in a reply. Prose or ```json fences around the array are fine; anything
    else (no array, not exactly N distinct non-empty strings) raises :class:`MalformedReply`."""
    candidates = [m.group(1) for m in re.finditer(r"```(?:json)?\s*(.*?)```", reply, re.DOTALL)]
    candidates.append(reply)
    decoder = json.JSONDecoder()
    problem = "no JSON array in the reply"
    for text in candidates:
        for i, ch in enumerate(text):
            if ch != "[":
                continue
            try:
                value, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            if not isinstance(value, list):
                continue
            if not all(isinstance(q, str) for q in value):
                problem = "the array holds something other than strings"
                continue
            qs = [q.strip() for q in value]
            if len(qs) != n:
                problem = f"expected {n} questions, got {len(qs)}"
                continue
            if not all(qs):
                problem = "an empty question"
                continue
            if len({q.lower() for q in qs}) != n:
                problem = "the same question twice"
                continue
            return qs
    snippet = reply.strip().replace("\n", " ")[:80]
    raise MalformedReply(f"{problem} (reply began {snippet!r})")


# -- the rule-based generator -----------------------------------------------------------------

_STOP = set("""a about above after again against all also although am an and any are as at be
because been before being below between both but by can could did do does doing down during each
even ever every few for from further had has have having he her here hers herself him himself his
how i if in into is it its itself just like many may me might more most much must my myself never
no nor not now of off often on once one only or other our ours ourselves out over own perhaps
rather same she should since so some still such than that the their theirs them themselves then
there these they this those though through thus to too under until up upon us very was we were
what when where whether which while who whom whose why will with within without would yet you
your yours yourself yourselves chapter page""".split())
_QUESTION_FORMS = ("What does the author say about {t}?", "How does the author describe {t}?",
                   "What does the author tell us about {t}?", "What is the author's view of {t}?")


def _topics(text: str) -> list[str]:
    """Key phrases of a text, most frequent first (ties: first seen first): capitalised names
    not at the start of a sentence, then longer content words ("the harbour")."""
    names: Counter = Counter()
    words: Counter = Counter()
    first: dict[str, int] = {}
    pos = 0
    for sent in re.split(r"(?<=[.!?;:])\s+", text):
        toks = re.findall(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]", sent)
        j = 0
        while j < len(toks):
            tok = toks[j]
            pos += 1
            if j > 0 and tok[0].isupper() and tok.lower() not in _STOP:
                k = j + 1
                while k < len(toks):
                    if toks[k][0].isupper() and toks[k].lower() not in _STOP:
                        k += 1
                    elif (toks[k] in ("of", "de", "von") and k + 1 < len(toks)
                          and toks[k + 1][0].isupper() and toks[k + 1].lower() not in _STOP):
                        k += 2            # "Lighthouse of Varn"
                    else:
                        break
                phrase = " ".join(toks[j:k])
                phrase = phrase[:-2] if phrase.endswith("'s") else phrase
                names[phrase] += 1
                first.setdefault(phrase, pos)
                j = k
                continue
            low = tok.lower()
            if (len(low) >= 6 and low not in _STOP and tok[0].islower()
                    and not low.endswith(("ed", "ing", "ly", "'s"))):
                words[low] += 1
                first.setdefault(low, pos)
            j += 1
    rank = lambda c: sorted(c, key=lambda t: (-c[t], first[t]))  # noqa: E731
    lowered = {x.lower() for x in names}
    return rank(names) + [f"the {w}" for w in rank(words) if w not in lowered]


def rule_questions(passage: Passage, n: int) -> list[str]:
    """N distinct questions made from the passage without a model (deterministic)."""
    out: list[str] = []
    for i, t in enumerate(_topics(passage.text)):
        if len(out) == n:
            break
        out.append(_QUESTION_FORMS[i % len(_QUESTION_FORMS)].format(t=t))
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", passage.text.strip()) if s.split()]
    for s in sentences:
        if len(out) >= n:
            break
        opening = " ".join(s.split()[:8]).rstrip(".,;:!?")
        q = f'What does the author mean by "{opening}"?'
        if q not in out:
            out.append(q)
    k = 1
    while len(out) < n:
        out.append(f"What does the author write on page {passage.first_page} of {passage.book} "
                   f"(part {k})?")
        k += 1
    return out


# -- prices and estimates ---------------------------------------------------------------------

def prices_for(model: str, price_per_mtok: tuple[float, float] | None = None
               ) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for a model id (dated ids match their family)."""
    if price_per_mtok is not None:
        return tuple(price_per_mtok)  # type: ignore[return-value]
    for name, price in PRICES_USD_PER_MTOK.items():
        if model.startswith(name):
            return price
    return None


def cost_usd(model: str, input_tokens: int, output_tokens: int, *, batch: bool = False,
             price_per_mtok: tuple[float, float] | None = None) -> float | None:
    price = prices_for(model, price_per_mtok)
    if price is None:
        return None
    usd = (input_tokens * price[0] + output_tokens * price[1]) / 1e6
    return usd * (BATCH_DISCOUNT if batch else 1.0)


def request_tokens(passage: Passage, n: int) -> tuple[int, int]:
    """Approximate (input, output) tokens of one request: characters / 4 plus framing."""
    chars = len(SYSTEM_PROMPT) + len(build_prompt(passage, n))
    return chars // 4 + PROMPT_OVERHEAD_TOKENS, OUTPUT_TOKENS_PER_QUESTION * n + 8


@dataclass
class Estimate:
    model: str
    requests: int              # passages that need a request
    cached: int                # passages already in the cache
    input_tokens: int
    output_tokens: int
    usd: float | None          # None: no list price known for the model
    batch: bool = False

    def __str__(self) -> str:
        price = prices_for(self.model)
        cost = "no list price known for this model" if self.usd is None else (
            f"about ${self.usd:.2f} at list prices (${price[0]:g} in / ${price[1]:g} out per "
            f"million tokens{', batch half price' if self.batch else ''}; check current prices)"
            if price else f"about ${self.usd:.2f}")
        return (f"{self.requests} requests to {self.model} ({self.cached} passages cached): "
                f"~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens, {cost}")


def estimate(passages: Iterable[Passage], n: int = 2, model: str = DEFAULT_MODEL, *,
             cached: Collection[str] | str | os.PathLike | None = None, batch: bool = False,
             prompt_version: str = PROMPT_VERSION,
             price_per_mtok: tuple[float, float] | None = None) -> Estimate:
    """What asking for the passages would cost, before spending anything.

    ``cached``: the passage hashes already done, or the cache file (read for this prompt
    version, model and N). Tokens are approximate (characters / 4 plus framing)."""
    unique = _unique(passages)
    if isinstance(cached, (str, os.PathLike)):
        with QACache(cached) as cache:
            done = {p.sha256 for p in unique
                    if _key(p, n, model, prompt_version) in cache}
    else:
        done = set(cached or ())
    todo = [p for p in unique if p.sha256 not in done]
    tin = sum(request_tokens(p, n)[0] for p in todo)
    tout = sum(request_tokens(p, n)[1] for p in todo)
    return Estimate(model=model, requests=len(todo), cached=len(unique) - len(todo),
                    input_tokens=tin, output_tokens=tout,
                    usd=cost_usd(model, tin, tout, batch=batch, price_per_mtok=price_per_mtok),
                    batch=batch)


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

def _now() -> str:
    return clock.now()


def _key(p: Passage, n: int, model: str, prompt_version: str) -> tuple:
    return ("qa", p.sha256, prompt_version, model, n, "")


def _unique(passages: Iterable[Passage | dict]) -> list[Passage]:
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

    def __post_init__(self):
        self.max_tokens = self.max_tokens or 64 * self.n + 64

    def key(self, p: Passage) -> tuple:
        return _key(p, self.n, self.model, self.prompt_version)

    def prompt(self, p: Passage) -> str:
        return build_prompt(p, self.n)

    def params(self, p: Passage) -> dict[str, Any]:
        """Messages API parameters for one passage."""
        return {"model": self.model, "max_tokens": self.max_tokens, "system": SYSTEM_PROMPT,
                "messages": [{"role": "user", "content": self.prompt(p)}]}

    def records(self, p: Passage, questions: Sequence[str], *, source: str | None = None,
                usage: dict | None = None, attempts: int = 1, **extra) -> list[dict]:
        group, created = uuid.uuid4().hex, _now()
        return [{"question": q, "answer": p.text, "answer_source": "passage", "book": p.book,
                 "first_page": p.first_page, "last_page": p.last_page, "passage_index": p.index,
                 "chapter": p.chapter, "passage_sha256": p.sha256,
                 "prompt_version": self.prompt_version, "model": self.model,
                 "source": source or self.source, "kind": "qa", "n": self.n, "q_index": i,
                 "group": group, "group_size": len(questions), "created": created,
                 "usage": usage, "attempts": attempts, **extra}
                for i, q in enumerate(questions)]


def default_cache_path(name: str = "questions") -> Path:
    from helpers.core.paths import work_dir
    return work_dir() / "qa_dataset" / f"{name}.jsonl"


def _progress_bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    import sys

    from tqdm.std import tqdm
    # a text bar, not a widget: it updates live in a terminal and in JupyterLab, and a saved
    # (papermill/nbconvert) notebook shows its final state instead of a dead widget
    return tqdm(total=total, desc=desc, unit="passage", file=sys.stdout, mininterval=2.0, ncols=100)


# -- the entry point --------------------------------------------------------------------------

def generate_questions(
        passages: Iterable[Passage], cache_path: str | os.PathLike | None = None, *, n: int = 2,
        model: str = DEFAULT_MODEL, concurrency: int = 8, budget_usd: float | None = None,
        source: str = "anthropic", client=None, progress: bool = True,
        prompt_version: str = PROMPT_VERSION, batch: bool = False, batch_wait: bool = True,
        local_model: tuple | None = None, timeout_s: float = 60.0, max_retries: int = 8,
        max_attempts: int = 3, retry_base_s: float = 1.0, retry_max_s: float = 60.0,
        poll_interval_s: float = 30.0, price_per_mtok: tuple[float, float] | None = None,
        max_tokens: int | None = None) -> QAResult:
    """N questions per passage, from the cache when it has them, else from ``source``.

    ``client``: an ``anthropic.Anthropic`` to use (tests point one at a fake server); by default
    one is made from ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL (or a ``.env`` file), with the SDK's
    own retries off: 429, 529, 5xx, timeouts and connection errors are retried here
    (``max_retries`` times per passage, exponential backoff with jitter, ``retry-after``
    honoured). A malformed reply is asked again, ``max_attempts`` requests in all. A passage that
    still fails is recorded in ``failed`` and the run goes on. ``batch=True`` uses the Message
    Batches API (half price, results within 24 h); ``batch_wait=False`` submits and returns,
    and a later call collects. ``budget_usd`` stops before the spend (from the replies' usage
    plus estimates of the requests in flight) would pass it.
    """
    if source not in SOURCES:
        raise QAConfigError(f"Unknown qa source {source!r}: choose one of {', '.join(SOURCES)}.")
    if not isinstance(n, int) or n < 1:
        raise QAConfigError(f"n (questions per passage) must be a positive integer, got {n!r}.")
    if concurrency < 1:
        raise QAConfigError(f"concurrency must be at least 1, got {concurrency!r}.")
    if budget_usd is not None and budget_usd < 0:
        raise QAConfigError(f"budget_usd must be positive or None, got {budget_usd!r}.")
    if batch and source != "anthropic":
        raise QAConfigError("batch=True needs source='anthropic' (the Message Batches API).")
    if source == "local" and (not isinstance(local_model, (tuple, list))
                              or len(local_model) not in (2, 3)):
        raise QAConfigError("source='local' needs local_model=(model, tokenizer) (or "
                            "(model, tokenizer, profile)), e.g. from helpers.models.load().")
    if (source == "anthropic" and budget_usd is not None
            and prices_for(model, price_per_mtok) is None):
        raise QAConfigError(f"No list price known for model {model!r}, so budget_usd cannot be "
                            f"enforced: pass price_per_mtok=(input, output) in USD per million "
                            f"tokens (known: {', '.join(PRICES_USD_PER_MTOK)}).")

    unique = _unique(passages)
    key_model = {"anthropic": model, "rule": RULE_MODEL,
                 "local": _local_name(local_model) if source == "local" else ""}[source]
    job = Job(n=n, model=key_model, prompt_version=prompt_version, source=source,
              max_tokens=max_tokens or 0)
    cache_path = Path(cache_path) if cache_path is not None else default_cache_path()
    result = QAResult(source=source, model=key_model, prompt_version=prompt_version,
                      cache_path=str(cache_path))
    with QACache(cache_path) as cache:
        pending = [p for p in unique if job.key(p) not in cache]
        result.reused = len(unique) - len(pending)
        log.info("questions: %d passages, %d in the cache (%s), %d to ask (%s)", len(unique),
                 result.reused, cache_path, len(pending), source)
        api = None
        if pending and source == "anthropic":
            from helpers.claude import requests as qa_api
            api = qa_api.client_for(client, timeout_s)   # no key: a clear error, nothing spent
        bar = _progress_bar(len(pending), progress and bool(pending), f"questions ({source})")
        try:
            if pending and source == "rule":
                for p in pending:
                    cache.append(job.records(p, rule_questions(p, n)))
                    bar and bar.update(1)
                result.asked = len(pending)
            elif pending and source == "local":
                result.asked = _run_local(job, pending, cache, local_model, bar)
            elif pending:
                settings = qa_api.Settings(
                    concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries,
                    max_attempts=max_attempts, retry_base_s=retry_base_s,
                    retry_max_s=retry_max_s, poll_interval_s=poll_interval_s,
                    batch_wait=batch_wait)
                ledger = qa_api.Ledger(model, prices_for(model, price_per_mtok), budget_usd,
                                       batch=batch)
                runner = qa_api.run_batch if batch else qa_api.run_concurrent
                try:
                    runner(job, pending, cache, api, ledger, settings, result, bar)
                finally:
                    result.usage = ledger.usage()
                    result.cost_usd = ledger.cost_usd()
                    result.stopped_by_budget = ledger.stopped_by_budget
        finally:
            if bar is not None:
                bar.close()
        if source != "anthropic":
            result.cost_usd = 0.0
        for p in unique:
            result.records.extend(cache.get(job.key(p)) or [])
    done = {r["passage_sha256"] for r in result.records}
    failed = {sha for sha, _, _ in result.failed}
    result.not_asked = sum(1 for p in unique if p.sha256 not in done and p.sha256 not in failed)
    (log.warning if result.failed or result.not_asked else log.info)("%s", result.summary())
    return result


# -- the local source -------------------------------------------------------------------------

def _local_name(local_model) -> str:
    model = local_model[0]
    name = getattr(model, "name_or_path", None) or getattr(
        getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    return f"local:{name}"


def _local_generate(local_model, prompts: list[str], max_new_tokens: int, *,
                    system_prompt: str = SYSTEM_PROMPT) -> list[str]:
    """Greedy replies of a local chat model to the prompts, through its chat template."""
    from helpers import models
    from helpers.models import generate
    if len(local_model) == 3:
        model, tokenizer, profile = local_model
    else:
        model, tokenizer = local_model
        try:
            profile = models.get_profile(_local_name(local_model)[len("local:"):])
        except models.UnknownModelError:   # a model the registry does not know: plain settings
            profile = SimpleNamespace(inference=models.InferenceDefaults())
    return generate.answer(model, tokenizer, prompts, profile, system_prompt=system_prompt,
                           max_new_tokens=max_new_tokens, greedy=True)


def _run_local(job: Job, pending: list[Passage], cache: QACache, local_model, bar,
               batch_size: int = 8) -> int:
    fallbacks = 0
    for i in range(0, len(pending), batch_size):
        chunk = pending[i:i + batch_size]
        replies = _local_generate(local_model, [job.prompt(p) for p in chunk], job.max_tokens)
        for p, reply in zip(chunk, replies):
            try:
                recs = job.records(p, parse_questions(reply, job.n))
            except MalformedReply as e:
                fallbacks += 1
                recs = job.records(p, rule_questions(p, job.n), source="rule",
                                   fallback_reason=f"local reply malformed: {e}")
            cache.append(recs)
            bar and bar.update(1)
    if fallbacks:
        log.warning("local model: %d of %d replies were not a usable JSON array; those passages "
                    "got rule-based questions (records say source='rule')", fallbacks,
                    len(pending))
    return len(pending)


# -- checks -----------------------------------------------------------------------------------

def verify_verbatim(records: Iterable[dict], passages: Iterable[Passage]) -> int:
    """Every record's answer is its source passage's text, exactly. Returns how many were
    checked; raises :class:`VerbatimError` naming the first mismatch. Two-pass records
    (``answer_source="generated"``, :func:`two_pass`) are not verbatim by design and skipped."""
    texts = {p.sha256: p.text for p in _unique(passages)}
    checked = 0
    for i, r in enumerate(records):
        if r.get("answer_source") == "generated" or r.get("kind", "qa") != "qa":
            continue
        where = (f"record {i} ({r.get('book')} p.{r.get('first_page')}-{r.get('last_page')}, "
                 f"question {r.get('question')!r})")
        sha = r.get("passage_sha256")
        if sha not in texts:
            raise VerbatimError(f"{where}: its passage {str(sha)[:12]} is not among the passages "
                                f"given (stale cache or other chunking?)")
        answer, text = r.get("answer"), texts[sha]
        if answer != text:
            if not isinstance(answer, str):
                raise VerbatimError(f"{where}: answer is {type(answer).__name__}, not the text")
            at = next((k for k, (a, b) in enumerate(zip(answer, text)) if a != b),
                      min(len(answer), len(text)))
            raise VerbatimError(
                f"{where}: answer differs from the passage text at character {at} "
                f"(answer {answer[at:at + 30]!r} vs passage {text[at:at + 30]!r}; lengths "
                f"{len(answer)} and {len(text)})")
        if text_sha256(answer) != sha:
            raise VerbatimError(f"{where}: answer does not hash to passage_sha256")
        checked += 1
    return checked


# -- two passes over a long transcript --------------------------------------------------------

TWO_PASS_QUESTIONS = """Here is a transcript:

<transcript>
{text}
</transcript>

Write {n} different questions that someone might ask the speaker and that the speaker answers \
somewhere in this transcript. Each question must make sense on its own. Reply with only a JSON \
array of exactly {n} strings."""

TWO_PASS_ANSWER = """Here is a transcript:

<transcript>
{text}
</transcript>

Question: {question}

Answer as the speaker would, in the first person, using only what the transcript says and \
keeping the speaker's own words where you can. Reply with the answer only."""

TWO_PASS_VERSION = "tp1-" + hashlib.sha256(
    (SYSTEM_PROMPT + TWO_PASS_QUESTIONS + TWO_PASS_ANSWER).encode()).hexdigest()[:8]


def two_pass(text: str, cache_path: str | os.PathLike | None = None, *, n: int = 10,
             model: str = DEFAULT_MODEL, source: str = "anthropic", client=None,
             local_model: tuple | None = None, book: str = "transcript",
             concurrency: int = 8, prompt_version: str = TWO_PASS_VERSION,
             progress: bool = False, **api_options) -> QAResult:
    """For long transcripts: N questions from the whole text, then an answer to each from the
    whole text. The answers are *generated* (records say ``answer_source="generated"``), not
    verbatim passages. Cached like :func:`generate_questions` (pass one and each answer)."""
    if source not in ("anthropic", "local"):
        raise QAConfigError(f"two_pass needs source 'anthropic' or 'local' (a model writes the "
                            f"answers), got {source!r}.")
    from helpers.claude import requests as qa_api
    return qa_api.two_pass(text, cache_path or default_cache_path("two_pass"), n=n, model=model,
                           source=source, client=client, local_model=local_model, book=book,
                           concurrency=concurrency, prompt_version=prompt_version,
                           progress=progress, **api_options)


# -- command line -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m helpers.qa",
                                 description="Synthetic questions for the passages of books.")
    ap.add_argument("--books", required=True,
                    help="folder of books, or one book file (helpers.pdf.load_passages)")
    ap.add_argument("--cache", default=None,
                    help="JSONL cache (default qa_dataset/<books folder>.questions.jsonl)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--questions-per-passage", type=int, default=2)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--batch", action="store_true", help="Message Batches API (half price)")
    ap.add_argument("--budget-usd", type=float, default=None)
    ap.add_argument("--source", choices=SOURCES, default="anthropic")
    ap.add_argument("--local-model", default=None, help="model folder or hub id (--source local)")
    ap.add_argument("--estimate-only", action="store_true", help="print the estimate and stop")
    args = ap.parse_args(argv)

    books = Path(args.books)
    if not books.exists():
        print(f"error: --books {books} does not exist", flush=True)
        return 2
    cache = Path(args.cache) if args.cache else default_cache_path(
        f"{books.stem if books.is_file() else books.name}.questions")
    try:
        from helpers.books.pdf import load_passages
        passages = load_passages(books)
    except (ImportError, OSError, ValueError) as e:
        print(f"error: cannot load passages from {books}: {e}", flush=True)
        return 2
    if not passages:
        print(f"error: no passages found in {books}", flush=True)
        return 2
    if args.source == "anthropic":
        print(estimate(passages, args.questions_per_passage, args.model, cached=cache,
                       batch=args.batch), flush=True)
        if args.estimate_only:
            return 0
    local = None
    if args.source == "local":
        if not args.local_model:
            print("error: --source local needs --local-model (a model folder or hub id)")
            return 2
        from transformers import AutoModelForCausalLM, AutoTokenizer
        local = (AutoModelForCausalLM.from_pretrained(args.local_model),
                 AutoTokenizer.from_pretrained(args.local_model))
    try:
        result = generate_questions(
            passages, cache, n=args.questions_per_passage, model=args.model,
            concurrency=args.concurrency, budget_usd=args.budget_usd, source=args.source,
            batch=args.batch, local_model=local, progress=True)
    except QAConfigError as e:
        print(f"error: {e}", flush=True)
        return 2
    except QAError as e:
        print(f"stopped: {e}", flush=True)
        return 1
    print(result.summary())
    print(f"cache: {cache}")
    return 0 if result.complete else 1


if __name__ == "__main__":
    # run helpers.qa's main, not this __main__ copy's: helpers.qa_api raises helpers.qa's errors
    from helpers.questions.generate import main as _main
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(_main())
