"""Synthetic questions for book passages: the V2 training pairs (question -> passage verbatim).

Asking an API for questions is the only paid step of the pipeline, so it never asks twice for
what it already has and never loses what it was given:

- Every reply is appended to a JSONL cache (``qa_dataset/`` by default) as soon as it arrives, one
  line per question, the questions of a passage in one write, flushed and fsynced
  (``helpers.claude.cache``). A crash, SIGKILL included, loses at most the requests in flight; a torn
  last line is cut off on the next run, with a warning.
- The cache is keyed by content: ``(passage_sha256, prompt_version, model)`` and the number of
  questions asked. New chunking (new hashes) or a new prompt is never served stale answers; other
  keys' records stay in the file untouched. A rerun asks only for what is missing.
- ``estimate()`` says what a run would cost before it spends (list prices to check), and
  ``budget_usd`` stops a run cleanly: no new requests, the ones in flight finish and are saved.

Sources (``source=``, chosen explicitly; records carry it): ``"anthropic"`` (an API model: the
Anthropic Messages API, or the Message Batches API with ``batch=True`` (the OpenAI Batch API
with ``provider="openai"``); with
``provider="openai"`` and ``base_url`` any OpenAI-compatible server instead, whose records say
``source="openai"`` and whose cache keys name the server), ``"local"`` (a transformers model and tokenizer
you pass, falling back per passage to the rule generator when its reply is not a usable JSON
array) and ``"rule"`` (deterministic, no model: "What does the author say about X?").

Record fields: ``question``, ``answer`` (the passage text, verbatim), ``answer_source``
(``"passage"``; ``"generated"`` for :func:`two_pass`), ``book``, ``first_page``, ``last_page``,
``passage_index``, ``chapter``, ``passage_sha256``, ``prompt_version``, ``model``, ``source``,
``kind``, ``n``, ``q_index``, ``group``, ``group_size``, ``created``, ``usage``, ``attempts``.

Where it lives: prompts and parsing in ``prompts``, the rule source in ``rules``, jobs and
results in ``job``, the local model in ``local``, the Anthropic path in ``api`` (on the shared
engine of ``helpers.claude``), transcripts in ``two_pass``; this module is the entry point, the
estimate, the verbatim check and the command line, and every old ``helpers.qa`` name imports here.

Command line: ``python -m helpers.qa --books DIR --cache FILE [--concurrency N]
[--questions-per-passage K] [--model M] [--batch] [--budget-usd X]
[--source anthropic|local|rule] [--provider anthropic|openai] [--base-url URL]``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable

from helpers.books.passage import Passage, text_sha256
from helpers.books.pdf import load_passages
from helpers.claude.backends import backend_for
from helpers.claude.batch_api import batches_for
from helpers.claude.cache import QACache
from helpers.claude.client import DEFAULT_MODEL, NO_KEY_MESSAGE, MalformedReply, QAConfigError, QAError, client_for  # noqa: F401
from helpers.claude.pricing import BATCH_DISCOUNT, PRICES_USD_PER_MTOK, PROMPT_OVERHEAD_TOKENS, cost_usd, prices_for  # noqa: F401
from helpers.claude.providers import PROVIDERS, Provider, choose
from helpers.claude.requests import Ledger, Settings, progress_bar
from helpers.questions.api import run_batch, run_concurrent
from helpers.questions.job import Job, QAResult, default_cache_path, question_key, unique_passages  # noqa: F401
from helpers.questions.local import local_name, run_local
from helpers.questions.prompts import (  # noqa: F401
    OUTPUT_TOKENS_PER_QUESTION,
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    TWO_PASS_ANSWER,
    TWO_PASS_QUESTIONS,
    TWO_PASS_VERSION,
    USER_TEMPLATE,
    build_prompt,
    parse_questions,
    request_tokens,
)
from helpers.questions.rules import RULE_MODEL, rule_questions
from helpers.questions.two_pass import two_pass  # noqa: F401

log = logging.getLogger(__name__)

SOURCES = ("anthropic", "local", "rule")


class VerbatimError(AssertionError):
    """A record's answer is not its passage's text."""


# -- estimates --------------------------------------------------------------------------------

@dataclass
class Estimate:
    model: str
    requests: int              # passages that need a request
    cached: int                # passages already in the cache
    input_tokens: int
    output_tokens: int
    usd: float | None          # None: no list price known for the model
    batch: bool = False
    price: tuple[float, float] | None = None   # (input, output) USD per million tokens

    def __str__(self) -> str:
        price = self.price
        cost = "no list price known for this model" if self.usd is None else (
            f"about ${self.usd:.2f} at list prices (${price[0]:g} in / ${price[1]:g} out per "
            f"million tokens{', batch half price' if self.batch else ''}; check current prices)"
            if price else f"about ${self.usd:.2f}")
        return (f"{self.requests} requests to {self.model} ({self.cached} passages cached): "
                f"~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens, {cost}")


def estimate(passages: Iterable[Passage], n: int = 2, model: str | None = None, *,
             cached: Collection[str] | str | os.PathLike | None = None, batch: bool = False,
             prompt_version: str = PROMPT_VERSION,
             price_per_mtok: tuple[float, float] | None = None, provider: str = "anthropic",
             base_url: str | None = None) -> Estimate:
    """What asking for the passages would cost, before spending anything.

    ``cached``: the passage hashes already done, or the cache file (read for this prompt
    version, model, N and, for ``provider="openai"``, server). Tokens are approximate
    (characters / 4 plus framing)."""
    prov = choose(provider, base_url)
    model = model_for(prov, model)
    unique = unique_passages(passages)
    if isinstance(cached, (str, os.PathLike)):
        with QACache(cached) as cache:
            done = {p.sha256 for p in unique
                    if question_key(p, n, prov.key_model(model), prompt_version) in cache}
    else:
        done = set(cached or ())
    todo = [p for p in unique if p.sha256 not in done]
    tin = sum(request_tokens(p, n)[0] for p in todo)
    tout = sum(request_tokens(p, n)[1] for p in todo)
    return Estimate(model=prov.key_model(model), requests=len(todo),
                    cached=len(unique) - len(todo), input_tokens=tin, output_tokens=tout,
                    usd=cost_usd(model, tin, tout, batch=batch, price_per_mtok=price_per_mtok,
                                 provider=prov.name),
                    batch=batch, price=prices_for(model, price_per_mtok, prov.name))


def model_for(prov: Provider, model: str | None) -> str:
    """The model asked: ``model``, or Claude Haiku on Anthropic; an OpenAI-compatible server's
    model must be named."""
    if model:
        return model
    if prov.openai:
        raise QAConfigError(f"provider='openai' needs model= (--model): the name the server at "
                            f"{prov.url} knows, e.g. gpt-4o-mini (OpenAI), "
                            f"openai/gpt-4o-mini (OpenRouter) or llama3.1 (Ollama).")
    return DEFAULT_MODEL


# -- the entry point --------------------------------------------------------------------------

def generate_questions(
        passages: Iterable[Passage], cache_path: str | os.PathLike | None = None, *, n: int = 2,
        model: str | None = None, concurrency: int = 8, budget_usd: float | None = None,
        source: str = "anthropic", client=None, progress: bool = True,
        prompt_version: str = PROMPT_VERSION, batch: bool = False, batch_wait: bool = True,
        local_model: tuple | None = None, timeout_s: float = 60.0, max_retries: int = 8,
        max_attempts: int = 3, retry_base_s: float = 1.0, retry_max_s: float = 60.0,
        poll_interval_s: float = 30.0, price_per_mtok: tuple[float, float] | None = None,
        max_tokens: int | None = None, provider: str = "anthropic",
        base_url: str | None = None) -> QAResult:
    """N questions per passage, from the cache when it has them, else from ``source``.

    ``client``: an ``anthropic.Anthropic`` to use (tests point one at a fake server); by default
    one is made from ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL (or a ``.env`` file), with the SDK's
    own retries off: 429, 529, 5xx, timeouts and connection errors are retried here
    (``max_retries`` times per passage, exponential backoff with jitter, ``retry-after``
    honoured). A malformed reply is asked again, ``max_attempts`` requests in all. A passage that
    still fails is recorded in ``failed`` and the run goes on. ``provider="openai"`` asks an
    OpenAI-compatible server at ``base_url`` (default OPENAI_BASE_URL, else OpenAI) with
    OPENAI_API_KEY (environment or ``.env``; any string for a local server), or the
    ``openai.OpenAI`` passed as ``client``; replies are asked for by JSON schema where the
    server takes one. ``batch=True`` uses the Message
    Batches API, or with ``provider="openai"`` the OpenAI Batch API (both half price, results
    within 24 h; a server without ``/files`` and ``/batches``, such as a local Ollama, vLLM or
    LM Studio, is an error naming ``batch``); ``batch_wait=False`` submits and returns,
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
    prov = choose(provider, base_url)
    if source == "anthropic":
        model = model_for(prov, model)
    if source == "local" and (not isinstance(local_model, (tuple, list))
                              or len(local_model) not in (2, 3)):
        raise QAConfigError("source='local' needs local_model=(model, tokenizer) (or "
                            "(model, tokenizer, profile)), e.g. from helpers.runtime.loading.load_model().")
    if (source == "anthropic" and budget_usd is not None
            and prices_for(model, price_per_mtok, prov.name) is None):
        raise QAConfigError(f"No list price known for model {model!r}, so budget_usd cannot be "
                            f"enforced: pass price_per_mtok=(input, output) in USD per million "
                            f"tokens (known: {', '.join(PRICES_USD_PER_MTOK)}).")

    unique = unique_passages(passages)
    key_model = {"anthropic": prov.key_model(model), "rule": RULE_MODEL,
                 "local": local_name(local_model) if source == "local" else ""}[source]
    if source == "anthropic" and prov.openai:
        source = "openai"                  # what the records and the summary say
    job = Job(n=n, model=key_model, prompt_version=prompt_version, source=source,
              max_tokens=max_tokens or 0, api_model=model)
    cache_path = Path(cache_path) if cache_path is not None else default_cache_path()
    result = QAResult(source=source, model=key_model, prompt_version=prompt_version,
                      cache_path=str(cache_path))
    with QACache(cache_path) as cache:
        pending = [p for p in unique if job.key(p) not in cache]
        result.reused = len(unique) - len(pending)
        log.info("questions: %d passages, %d in the cache (%s), %d to ask (%s)", len(unique),
                 result.reused, cache_path, len(pending), source)
        api = None
        if pending and source in PROVIDERS:      # no key: a clear error, nothing spent
            api = (batches_for(client, prov, timeout_s) if batch
                   else backend_for(client, prov, timeout_s))
        bar = progress_bar(len(pending), progress and bool(pending), f"questions ({source})")
        try:
            if pending and source == "rule":
                for p in pending:
                    cache.append(job.records(p, rule_questions(p, n)))
                    bar and bar.update(1)
                result.asked = len(pending)
            elif pending and source == "local":
                result.asked = run_local(job, pending, cache, local_model, bar)
            elif pending:
                settings = Settings(
                    concurrency=concurrency, timeout_s=timeout_s, max_retries=max_retries,
                    max_attempts=max_attempts, retry_base_s=retry_base_s,
                    retry_max_s=retry_max_s, poll_interval_s=poll_interval_s,
                    batch_wait=batch_wait)
                ledger = Ledger(model, prices_for(model, price_per_mtok, prov.name), budget_usd,
                                batch=batch)
                runner = run_batch if batch else run_concurrent
                try:
                    runner(job, pending, cache, api, ledger, settings, result, bar)
                finally:
                    result.usage = ledger.usage()
                    result.cost_usd = ledger.cost_usd()
                    result.stopped_by_budget = ledger.stopped_by_budget
        finally:
            if bar is not None:
                bar.close()
        if source not in PROVIDERS:
            result.cost_usd = 0.0
        for p in unique:
            result.records.extend(cache.get(job.key(p)) or [])
    done = {r["passage_sha256"] for r in result.records}
    failed = {sha for sha, _, _ in result.failed}
    result.not_asked = sum(1 for p in unique if p.sha256 not in done and p.sha256 not in failed)
    (log.warning if result.failed or result.not_asked else log.info)("%s", result.summary())
    return result


# -- checks -----------------------------------------------------------------------------------

def verify_verbatim(records: Iterable[dict], passages: Iterable[Passage]) -> int:
    """Every record's answer is its source passage's text, exactly. Returns how many were
    checked; raises :class:`VerbatimError` naming the first mismatch. Two-pass records
    (``answer_source="generated"``, :func:`two_pass`) are not verbatim by design and skipped."""
    texts = {p.sha256: p.text for p in unique_passages(passages)}
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
    ap.add_argument("--model", default=None,
                    help=f"the model that asks (default {DEFAULT_MODEL} on Anthropic; needed "
                         f"with --provider openai)")
    ap.add_argument("--batch", action="store_true", help="Message Batches API, or the OpenAI Batch API with --provider openai "
                         "(half price, results within 24 h)")
    ap.add_argument("--budget-usd", type=float, default=None)
    ap.add_argument("--source", choices=SOURCES, default="anthropic")
    ap.add_argument("--provider", choices=PROVIDERS, default="anthropic",
                    help="which API asks (--source anthropic): anthropic (ANTHROPIC_API_KEY) or "
                         "openai, any OpenAI-compatible server (OPENAI_API_KEY, --base-url)")
    ap.add_argument("--base-url", default=None,
                    help="the server's API root for --provider openai, e.g. "
                         "http://localhost:11434/v1 (default OPENAI_BASE_URL, else OpenAI)")
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
        passages = load_passages(books)
    except (ImportError, OSError, ValueError) as e:
        print(f"error: cannot load passages from {books}: {e}", flush=True)
        return 2
    if not passages:
        print(f"error: no passages found in {books}", flush=True)
        return 2
    if args.source == "anthropic":
        try:
            print(estimate(passages, args.questions_per_passage, args.model, cached=cache,
                           batch=args.batch, provider=args.provider, base_url=args.base_url),
                  flush=True)
        except QAConfigError as e:
            print(f"error: {e}", flush=True)
            return 2
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
            batch=args.batch, local_model=local, progress=True, provider=args.provider,
            base_url=args.base_url)
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
    # run helpers.qa's main, not this __main__ copy's (one set of module objects)
    from helpers.questions.generate import main as _main
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(_main())
