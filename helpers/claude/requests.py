"""The request engine shared by the question generator and the judge, for both providers
(Anthropic, OpenAI-compatible servers; ``helpers.claude.backends`` sends): many requests in
flight at once (threads), our own retries, a budget (:class:`Ledger`), each reply saved in the
cache as it arrives.

The SDKs' own retries are off (``max_retries=0``): 429, 529, 5xx, 408/409, timeouts and
connection errors are retried here with exponential backoff and jitter, waiting what a
``retry-after`` header says when there is one (and holding every worker back after a 429/529), so
each retry is counted. 401/402/403/404 stop the run (every request would fail the same way). The
API key is never logged, stored or put in an error message: text from the server is redacted.
No SDK is imported with this module.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from helpers.claude.backends import RUN_FATAL_STATUS, ApiFailure, anthropic_reply, backend_for, sdk_failure  # noqa: F401
from helpers.claude.cache import QACache
from helpers.claude.client import (
    ClaudeConfigError,
    ClaudeError,
    MalformedReply,
    client_for,  # noqa: F401  (client_for: old qa_api name)
    redact,
)
from helpers.claude.pricing import BATCH_DISCOUNT
from helpers.claude.providers import Provider

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 600.0
RETRYABLE_BATCH_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}


# -- waiting ----------------------------------------------------------------------------------

def backoff_s(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): what the server asked for (plus up to
    10 % jitter), else exponential from ``base`` up to ``cap``, jittered down by up to half."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_S) * random.uniform(1.0, 1.1)
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


@dataclass
class Settings:
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 8          # transient errors per passage before it is recorded as failed
    max_attempts: int = 3         # requests per passage when replies are malformed
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0
    poll_interval_s: float = 30.0
    batch_wait: bool = True


class Ledger:
    """Tokens, requests and dollars of this run, and the budget (thread-safe). Requests in flight
    hold their estimated cost, so the budget is never passed by more than estimates miss."""

    def __init__(self, model: str, price: tuple[float, float] | None, budget_usd: float | None,
                 *, batch: bool = False):
        self.model, self.price, self.budget, self.batch = model, price, budget_usd, batch
        self.input_tokens = self.output_tokens = self.requests = 0
        self.reserved = 0.0
        self.stopped_by_budget = False
        self._lock = threading.Lock()

    def usd(self, input_tokens: int, output_tokens: int) -> float:
        if self.price is None:
            return 0.0
        usd = (input_tokens * self.price[0] + output_tokens * self.price[1]) / 1e6
        return usd * (BATCH_DISCOUNT if self.batch else 1.0)

    def spent(self) -> float:
        return self.usd(self.input_tokens, self.output_tokens)

    def reserve(self, est: tuple[int, int]) -> bool:
        """Room for one more request? (False once the budget would be passed: stop asking.)"""
        with self._lock:
            if self.stopped_by_budget:
                return False
            cost = self.usd(*est)
            if self.budget is not None and self.spent() + self.reserved + cost > self.budget:
                self.stopped_by_budget = True
                return False
            self.reserved += cost
            return True

    def release(self, est: tuple[int, int] | None) -> None:
        if est is not None:
            with self._lock:
                self.reserved = max(0.0, self.reserved - self.usd(*est))

    def settle(self, usage, est: tuple[int, int] | None = None) -> dict:
        """Books a reply's usage (a dict or an SDK object; releasing its estimate); returns it
        as a plain dict."""
        get = usage.get if isinstance(usage, dict) else (lambda k, d: getattr(usage, k, d))
        u = {"input_tokens": int(get("input_tokens", 0) or 0),
             "output_tokens": int(get("output_tokens", 0) or 0)}
        with self._lock:
            if est is not None:
                self.reserved = max(0.0, self.reserved - self.usd(*est))
            self.input_tokens += u["input_tokens"]
            self.output_tokens += u["output_tokens"]
            self.requests += 1
        return u

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def usage(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "requests": self.requests}

    def cost_usd(self) -> float | None:
        return None if self.price is None else round(self.spent(), 6)


def reply_text(message) -> str:
    """The text of an Anthropic message (an SDK object or its JSON)."""
    return anthropic_reply(message)[0]


# -- requests in flight -----------------------------------------------------------------------

@dataclass
class Task:
    """One request: its cache key, what to send, how to read the reply, what to store."""
    key: tuple
    sha: str
    book: str
    label: str                      # book and pages (logs)
    params: dict
    est: tuple[int, int]
    parse: Callable[[str], Any]
    records: Callable[[Any, dict, int], list[dict]]   # (parsed, usage, attempts) -> records
    schema: dict | None = None      # JSON schema of the reply, sent where the server takes one


@dataclass
class Tally:
    """What a run reports back (``helpers.qa.QAResult`` carries the same fields)."""
    asked: int = 0                 # tasks answered by requests made in this run
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (sha256, book, reason)
    attempt_errors: dict[str, int] = field(default_factory=dict)  # failed attempts by cause
    batches: list[str] = field(default_factory=list)   # submitted, not yet collected (batch_wait=False)


def progress_bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    import sys

    from tqdm.std import tqdm
    # a text bar, not a widget: it updates live in a terminal and in JupyterLab, and a saved
    # (papermill/nbconvert) notebook shows its final state instead of a dead widget
    return tqdm(total=total, desc=desc, unit="passage", file=sys.stdout, mininterval=2.0, ncols=100)


class Run:
    """Shared state of the workers of one run."""

    def __init__(self, client, cache: QACache, ledger: Ledger, settings: Settings,
                 result: Tally, bar):
        self.client, self.cache, self.ledger, self.settings, self.result, self.bar = (
            client, cache, ledger, settings, result, bar)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pause_until = 0.0
        self.fatal: str | None = None
        self.errors: list[BaseException] = []
        self.errors_seen: Counter = Counter(result.attempt_errors)

    def note(self, cause: str) -> None:
        with self.lock:
            self.errors_seen[cause] += 1
            self.result.attempt_errors = dict(self.errors_seen)

    def fail(self, task: Task, reason: str) -> None:
        reason = redact(reason, self.client)
        with self.lock:
            self.result.failed.append((task.sha, task.book, reason))
            self._tick()
        log.warning("gave up on %s [%s]: %s", task.label, task.sha[:12], reason)

    def done(self, task: Task) -> None:
        with self.lock:
            self.result.asked += 1
            self._tick()

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            cost = self.ledger.cost_usd()
            self.bar.set_postfix(failed=len(self.result.failed),
                                 usd=f"{cost:.4f}" if cost is not None else "?", refresh=False)

    def wait_pause(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                left = self.pause_until - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(left)

    def hold_all(self, seconds: float) -> None:
        with self.lock:
            self.pause_until = max(self.pause_until, time.monotonic() + seconds)

    def call(self, fn: Callable[[], Any], what: str) -> Any:
        """An SDK call (batches) with the same retries; None when the run is stopping."""
        attempt = 0
        provider = getattr(self.client, "provider", Provider())
        while not self.stop.is_set():
            try:
                return fn()
            except Exception as e:  # noqa: BLE001  (either SDK's status/connection errors)
                if not {c.__name__ for c in type(e).__mro__} & {"APIStatusError",
                                                                "APIConnectionError"}:
                    raise
                f = sdk_failure(e, provider)
                text = redact(f.text, self.client)
                if f.cause == "fatal":
                    raise ClaudeConfigError(f"{what}: the API refused the request ({text}). "
                                            f"{provider.hint()}.") from None
                self.note(f.cause)
                attempt += 1
                if not f.retryable or attempt > self.settings.max_retries:
                    raise ClaudeError(f"{what} failed: {text}") from None
                wait = backoff_s(attempt, self.settings.retry_base_s, self.settings.retry_max_s,
                                 f.retry_after)
                log.info("%s: %s; retrying in %.1f s", what, text, wait)
                self.stop.wait(wait)
        return None

    def ask(self, task: Task) -> None:
        """One task to the end: saved, failed, or left (budget, stop)."""
        s = self.settings
        transient = malformed = 0
        while not self.stop.is_set():
            if not self.ledger.reserve(task.est):
                self.stop.set()          # budget: no new requests; those in flight finish
                return
            self.wait_pause()
            try:
                text, usage = self.client.send(task.params, s.timeout_s, task.schema)
            except ApiFailure as f:
                self.ledger.release(task.est)
                self.ledger.count_request()
                reason = redact(f.text, self.client)
                if f.cause == "fatal":
                    with self.lock:
                        self.fatal = self.fatal or reason
                    self.stop.set()
                    return
                self.note(f.cause)
                if f.cause == "schema":
                    continue             # asked again at once, without the schema
                transient += 1
                if not f.retryable or transient > s.max_retries:
                    self.fail(task, f"{reason} (after {transient + malformed} requests)")
                    return
                wait = backoff_s(transient, s.retry_base_s, s.retry_max_s, f.retry_after)
                if f.cause in ("429", "529"):
                    self.hold_all(wait)   # everyone backs off, not just this worker
                log.info("%s: %s; retry %d in %.2f s", task.label, reason, transient, wait)
                self.stop.wait(wait)
                continue
            usage = self.ledger.settle(usage, task.est)
            try:
                parsed = task.parse(text)
            except MalformedReply as e:
                malformed += 1
                self.note("malformed")
                if malformed >= s.max_attempts:
                    self.fail(task, f"malformed reply {malformed} times: {e}")
                    return
                log.info("%s: malformed reply (%s); asking again", task.label, e)
                continue
            self.result_records(task, parsed, usage, transient + malformed + 1)
            return

    def result_records(self, task: Task, parsed, usage: dict, attempts: int) -> None:
        # written before the next request (a killed process loses nothing); the fsync runs on
        # the cache's background thread, and run_tasks waits for it before returning
        self.cache.append(task.records(parsed, usage, attempts), wait=False)
        self.done(task)


def run_tasks(tasks: list[Task], cache: QACache, client, ledger: Ledger, settings: Settings,
              result: Tally, bar) -> None:
    """Up to ``settings.concurrency`` requests in flight; each reply saved as it arrives.
    ``client``: a backend (``helpers.claude.backends.backend_for``) or an SDK client."""
    if not hasattr(client, "send"):
        client = backend_for(client, Provider(), settings.timeout_s)
    run = Run(client, cache, ledger, settings, result, bar)
    todo = iter(tasks)

    def worker():
        try:
            while not run.stop.is_set():
                with run.lock:
                    task = next(todo, None)
                if task is None:
                    return
                run.ask(task)
        except BaseException as e:  # noqa: BLE001  (re-raised in the calling thread)
            with run.lock:
                run.errors.append(e)
            run.stop.set()

    threads = [threading.Thread(target=worker, daemon=True, name=f"qa-{i}")
               for i in range(min(settings.concurrency, len(tasks)))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.1)
    except KeyboardInterrupt:
        run.stop.set()
        log.warning("interrupted: waiting for the requests in flight to finish and be saved")
        for t in threads:
            t.join()
        raise
    finally:
        cache.flush()
    if run.errors:
        raise run.errors[0]
    if run.fatal:
        hint = getattr(client, "provider", Provider()).hint()
        raise ClaudeConfigError(f"the API refused the request ({run.fatal}); nothing more was "
                                f"asked. {hint}; work done so far is saved in {cache.path}.")
