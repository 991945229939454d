"""The paid part of ``helpers.qa``: Anthropic requests with our own retries, a budget, many in
flight at once (threads), the Message Batches API, and two passes over a transcript.

The SDK's own retries are off (``max_retries=0``): 429, 529, 5xx, 408/409, timeouts and
connection errors are retried here with exponential backoff and jitter, waiting what a
``retry-after`` header says when there is one (and holding every worker back after a 429/529), so
each retry is counted. 401/402/403/404 stop the run (every request would fail the same way). The
API key is never logged, stored or put in an error message: text from the SDK is redacted.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import anthropic

from helpers.books.passage import Passage, text_sha256
from helpers.questions.generate import (NO_KEY_MESSAGE, TWO_PASS_ANSWER, TWO_PASS_QUESTIONS,
                        Job, MalformedReply, QAConfigError, QAError, QAResult, _local_generate,
                        _local_name, _now, _progress_bar, parse_questions, prices_for,
                        request_tokens)
from helpers.claude.cache import QACache, read_sidecar, write_sidecar
from helpers.core.paths import ROOT

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 600.0
RUN_FATAL_STATUS = {401, 402, 403, 404}   # every request would fail the same way
RETRYABLE_BATCH_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}


# -- credentials ------------------------------------------------------------------------------

def _dotenv_files() -> list[Path]:
    return [ROOT / ".env", Path.home() / ".env"]


def _read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (``export`` and quotes allowed, ``#`` comments); nothing is exported."""
    out: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        k = k.strip().removeprefix("export ").strip()
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        elif " #" in v:
            v = v.split(" #", 1)[0].strip()
        out[k] = v
    return out


def _setting(name: str) -> str | None:
    if os.environ.get(name):
        return os.environ[name]
    for f in _dotenv_files():
        v = _read_dotenv(f).get(name)
        if v:
            return v
    return None


def client_for(client, timeout_s: float):
    """The client to use: the one given (its SDK retries turned off), else one made from
    ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) and ANTHROPIC_BASE_URL, environment first, then
    ``.env`` in the project root, then in the home folder."""
    if client is not None:
        if getattr(client, "max_retries", 0) != 0 and hasattr(client, "with_options"):
            client = client.with_options(max_retries=0)
        return client
    key, token = _setting("ANTHROPIC_API_KEY"), None
    if not key:
        token = _setting("ANTHROPIC_AUTH_TOKEN")
    if not key and not token:
        raise QAConfigError(NO_KEY_MESSAGE)
    return anthropic.Anthropic(api_key=key, auth_token=token if not key else None,
                               base_url=_setting("ANTHROPIC_BASE_URL"), max_retries=0,
                               timeout=timeout_s)


def _secrets(client) -> list[str]:
    return [s for s in (getattr(client, "api_key", None), getattr(client, "auth_token", None))
            if isinstance(s, str) and len(s) >= 6]


def redact(text: str, client) -> str:
    for s in _secrets(client):
        text = text.replace(s, "[redacted]")
    return text


# -- errors and waiting -----------------------------------------------------------------------

def classify(e: BaseException) -> tuple[str, str, bool]:
    """(cause, description, retryable) of an SDK error; cause ``fatal`` stops the run."""
    if isinstance(e, anthropic.APITimeoutError):
        return "timeout", "the request timed out", True
    if isinstance(e, anthropic.APIConnectionError):
        inner = type(e.__cause__).__name__ if e.__cause__ else "no reply"
        return "connection", f"connection error ({inner})", True
    if isinstance(e, anthropic.APIStatusError):
        s = e.status_code
        text = f"HTTP {s} {getattr(e, 'type', None) or ''}: {getattr(e, 'api_message', None) or ''}"
        if s in RUN_FATAL_STATUS:
            return "fatal", text.strip(), False
        return str(s), text.strip(), s in (408, 409, 429) or s >= 500
    raise e


def retry_after_s(e: BaseException) -> float | None:
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            date = email.utils.parsedate_tz(value)
            if date is not None:
                return max(0.0, email.utils.mktime_tz(date) - time.time())
    return None


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
        return usd * (0.5 if self.batch else 1.0)

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
        """Books a reply's usage (releasing its estimate); returns it as a plain dict."""
        u = {"input_tokens": int(getattr(usage, "input_tokens", 0) or 0),
             "output_tokens": int(getattr(usage, "output_tokens", 0) or 0)}
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


def _reply_text(message) -> str:
    return "".join(getattr(b, "text", "") for b in (message.content or [])
                   if getattr(b, "type", "") == "text")


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


def qa_task(job: Job, p: Passage) -> Task:
    return Task(key=job.key(p), sha=p.sha256, book=p.book,
                label=f"{p.book} p.{p.first_page}-{p.last_page}",
                params=job.params(p), est=request_tokens(p, job.n),
                parse=lambda reply: parse_questions(reply, job.n),
                records=lambda qs, usage, attempts: job.records(p, qs, usage=usage,
                                                                attempts=attempts))


class _Run:
    """Shared state of the workers of one run."""

    def __init__(self, client, cache: QACache, ledger: Ledger, settings: Settings,
                 result: QAResult, bar):
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
        """An API call (batches) with the same retries; None when the run is stopping."""
        attempt = 0
        while not self.stop.is_set():
            try:
                return fn()
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as e:
                cause, text, retryable = classify(e)
                text = redact(text, self.client)
                if cause == "fatal":
                    raise QAConfigError(f"{what}: the API refused the request ({text}). Check "
                                        f"ANTHROPIC_API_KEY and the model name.") from None
                self.note(cause)
                attempt += 1
                if not retryable or attempt > self.settings.max_retries:
                    raise QAError(f"{what} failed: {text}") from None
                wait = backoff_s(attempt, self.settings.retry_base_s, self.settings.retry_max_s,
                                 retry_after_s(e))
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
                message = self.client.messages.create(**task.params, timeout=s.timeout_s)
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as e:
                self.ledger.release(task.est)
                self.ledger.count_request()
                cause, text, retryable = classify(e)
                text = redact(text, self.client)
                if cause == "fatal":
                    with self.lock:
                        self.fatal = self.fatal or text
                    self.stop.set()
                    return
                self.note(cause)
                transient += 1
                if not retryable or transient > s.max_retries:
                    self.fail(task, f"{text} (after {transient + malformed} requests)")
                    return
                after = retry_after_s(e)
                wait = backoff_s(transient, s.retry_base_s, s.retry_max_s, after)
                if cause in ("429", "529"):
                    self.hold_all(wait)   # everyone backs off, not just this worker
                log.info("%s: %s; retry %d in %.2f s", task.label, text, transient, wait)
                self.stop.wait(wait)
                continue
            usage = self.ledger.settle(message.usage, task.est)
            try:
                parsed = task.parse(_reply_text(message))
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
        self.cache.append(task.records(parsed, usage, attempts))
        self.done(task)


def run_tasks(tasks: list[Task], cache: QACache, client, ledger: Ledger, settings: Settings,
              result: QAResult, bar) -> None:
    """Up to ``settings.concurrency`` requests in flight; each reply saved as it arrives."""
    run = _Run(client, cache, ledger, settings, result, bar)
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
    if run.errors:
        raise run.errors[0]
    if run.fatal:
        raise QAConfigError(f"the API refused the request ({run.fatal}); nothing more was "
                            f"asked. Check ANTHROPIC_API_KEY and the model name; work done so "
                            f"far is saved in {cache.path}.")


def run_concurrent(job: Job, pending: list[Passage], cache: QACache, client, ledger: Ledger,
                   settings: Settings, result: QAResult, bar) -> None:
    run_tasks([qa_task(job, p) for p in pending], cache, client, ledger, settings, result, bar)


# -- the Message Batches API ------------------------------------------------------------------

def run_batch(job: Job, pending: list[Passage], cache: QACache, client, ledger: Ledger,
              settings: Settings, result: QAResult, bar) -> None:
    """Submits the passages as Message Batches (custom_id = passage sha256), polls until they
    end and saves each result. Submitted batches are listed in ``<cache>.batches.json`` (with
    their passages), so a rerun resumes polling them instead of submitting again."""
    run = _Run(client, cache, ledger, settings, result, bar)
    side = read_sidecar(cache.path)
    ours = [b for b in side["batches"] if b.get("status") != "collected"
            and (b.get("model"), b.get("prompt_version"), b.get("n"))
            == (job.model, job.prompt_version, job.n)]
    waiting = {sha for b in ours for sha in b["passages"]}
    if ours:
        log.info("resuming %d submitted batch(es): %s", len(ours), ", ".join(b["id"] for b in ours))
    wanted = {p.sha256 for p in pending}
    reserved: set[str] = set()       # passages whose estimated cost this run holds
    attempts: Counter = Counter()
    to_submit = [p for p in pending if p.sha256 not in waiting]
    while True:
        if to_submit:
            take = [p for p in to_submit if ledger.reserve(request_tokens(p, job.n))]
            reserved.update(p.sha256 for p in take)
            if take:
                created = run.call(lambda: client.messages.batches.create(requests=[
                    {"custom_id": p.sha256, "params": job.params(p)} for p in take]),
                    "submitting a message batch")
                if created is None:
                    break
                entry = {"id": created.id, "model": job.model, "prompt_version": job.prompt_version,
                         "n": job.n, "created": _now(), "status": "in_progress",
                         "passages": {p.sha256: p.to_dict() for p in take}}
                side["batches"].append(entry)
                write_sidecar(cache.path, side)
                ours.append(entry)
                log.info("submitted batch %s (%d passages)", created.id, len(take))
            to_submit = []
        if not ours:
            break
        if not settings.batch_wait:
            result.batches = [b["id"] for b in ours]
            break
        retry: list[Passage] = []
        for b in list(ours):
            batch = run.call(lambda: client.messages.batches.retrieve(b["id"]),
                             f"polling batch {b['id']}")
            if batch is None:
                return
            if batch.processing_status != "ended":
                continue
            retry += _collect(run, job, cache, b, wanted, attempts, reserved)
            b["status"] = "collected"
            write_sidecar(cache.path, side)
            ours.remove(b)
        to_submit = retry
        if ours and not to_submit:
            run.stop.wait(settings.poll_interval_s)
        if run.stop.is_set():
            break


def _collect(run: _Run, job: Job, cache: QACache, b: dict, wanted: set[str],
             attempts: Counter, reserved: set[str]) -> list[Passage]:
    """Saves the results of an ended batch; returns the passages to submit again."""
    retry = []
    items = run.call(lambda: run.client.messages.batches.results(b["id"]),
                     f"reading the results of batch {b['id']}")
    for item in items or []:
        d = b["passages"].get(item.custom_id)
        if d is None:
            continue
        p = Passage.from_dict(d)
        est = request_tokens(p, job.n) if p.sha256 in reserved else None
        reserved.discard(p.sha256)
        r = item.result
        task = qa_task(job, p)
        if r.type == "succeeded":
            usage = run.ledger.settle(r.message.usage, est)
            if job.key(p) in cache:
                continue                 # saved by an earlier collection of this batch
            try:
                qs = parse_questions(_reply_text(r.message), job.n)
            except MalformedReply as e:
                attempts[p.sha256] += 1
                run.note("malformed")
                if attempts[p.sha256] >= run.settings.max_attempts:
                    run.fail(task, f"malformed reply {attempts[p.sha256]} times: {e}")
                else:
                    retry.append(p)
                continue
            cache.append(job.records(p, qs, usage=usage, attempts=attempts[p.sha256] + 1,
                                     batch_id=b["id"]))
            if p.sha256 in wanted:
                run.done(task)
            continue
        run.ledger.release(est)
        run.ledger.count_request()
        err = getattr(getattr(getattr(r, "error", None), "error", None), "type", None) or r.type
        run.note(str(err))
        attempts[p.sha256] += 1
        if (err in RETRYABLE_BATCH_ERRORS or r.type in ("expired", "canceled")) \
                and attempts[p.sha256] < run.settings.max_attempts:
            retry.append(p)
        elif p.sha256 in wanted:
            run.fail(task, f"batch result {r.type} ({err}) after {attempts[p.sha256]} attempts")
    return retry


# -- two passes over a transcript -------------------------------------------------------------

TWO_PASS_SYSTEM = ("You help build a question-answering dataset from the transcript of a "
                   "speaker.")


def _answer_text(reply: str) -> str:
    text = reply.strip()
    if not text:
        raise MalformedReply("an empty answer")
    return text


def two_pass(text: str, cache_path, *, n: int, model: str, source: str, client, local_model,
             book: str, concurrency: int, prompt_version: str, progress: bool,
             timeout_s: float = 120.0, budget_usd: float | None = None,
             price_per_mtok: tuple[float, float] | None = None, **options) -> QAResult:
    sha = text_sha256(text)
    key_model = model if source == "anthropic" else _local_name(local_model)
    result = QAResult(source=source, model=key_model, prompt_version=prompt_version,
                      cache_path=str(cache_path))
    qkey = ("two_pass_q", sha, prompt_version, key_model, n, "")

    def base(question: str, **kw) -> dict:
        return {"question": question, "book": book, "first_page": None, "last_page": None,
                "passage_index": None, "chapter": None, "passage_sha256": sha,
                "prompt_version": prompt_version, "model": key_model, "source": source,
                "created": _now(), **kw}

    def question_records(qs, usage, attempts):
        group = uuid.uuid4().hex
        return [base(q, answer=None, answer_source=None, kind="two_pass_q", n=n, q_index=i,
                     group=group, group_size=n, usage=usage, attempts=attempts)
                for i, q in enumerate(qs)]

    def answer_key(q: str) -> tuple:
        return ("two_pass", sha, prompt_version, key_model, 1, text_sha256(q)[:16])

    def answer_task(i: int, q: str) -> Task:
        params = {"model": model, "max_tokens": 1024, "system": TWO_PASS_SYSTEM,
                  "messages": [{"role": "user",
                                "content": TWO_PASS_ANSWER.format(text=text, question=q)}]}
        return Task(key=answer_key(q), sha=sha, book=book, label=f"{book}: {q[:60]}",
                    params=params,
                    est=(len(text) // 4 + 40, 300), parse=_answer_text,
                    records=lambda a, usage, attempts: [base(
                        q, answer=a, answer_source="generated", kind="two_pass", n=1,
                        item=answer_key(q)[-1], q_index=0, question_index=i,
                        group=uuid.uuid4().hex, group_size=1, usage=usage,
                        attempts=attempts)])

    with QACache(cache_path) as cache:
        if source == "local":
            if cache.get(qkey) is None:
                reply = _local_generate(local_model, [TWO_PASS_QUESTIONS.format(text=text, n=n)],
                                        64 * n + 64, system_prompt=TWO_PASS_SYSTEM)[0]
                try:
                    qs = parse_questions(reply, n)
                except MalformedReply as e:
                    raise QAError(f"two_pass: the local model's questions were unusable: {e}")
                cache.append(question_records(qs, None, 1))
            questions = [r["question"] for r in cache.get(qkey)]
            todo = [(i, q) for i, q in enumerate(questions) if answer_key(q) not in cache]
            answers = _local_generate(local_model, [TWO_PASS_ANSWER.format(text=text, question=q)
                                                    for _, q in todo], 512,
                                      system_prompt=TWO_PASS_SYSTEM) if todo else []
            for (i, q), a in zip(todo, answers):
                if a.strip():
                    cache.append(answer_task(i, q).records(a.strip(), None, 1))
                    result.asked += 1
                else:
                    result.failed.append((sha, book, f"empty local answer to {q!r}"))
            result.cost_usd = 0.0
        else:
            settings = Settings(concurrency=concurrency, timeout_s=timeout_s, **options)
            ledger = Ledger(model, prices_for(model, price_per_mtok), budget_usd)
            api = None
            if cache.get(qkey) is None:
                api = client_for(client, timeout_s)
                params = {"model": model, "max_tokens": 64 * n + 64, "system": TWO_PASS_SYSTEM,
                          "messages": [{"role": "user", "content":
                                        TWO_PASS_QUESTIONS.format(text=text, n=n)}]}
                first = Task(key=qkey, sha=sha, book=book, label=f"{book} (questions)",
                             params=params,
                             est=(len(text) // 4 + 40, 32 * n), records=question_records,
                             parse=lambda reply: parse_questions(reply, n))
                run_tasks([first], cache, api, ledger, settings, result, None)
                if cache.get(qkey) is None:
                    result.usage, result.cost_usd = ledger.usage(), ledger.cost_usd()
                    return result
                result.asked = 0
            questions = [r["question"] for r in cache.get(qkey)]
            tasks = [answer_task(i, q) for i, q in enumerate(questions)
                     if answer_key(q) not in cache]
            if tasks:
                api = api or client_for(client, timeout_s)
                bar = _progress_bar(len(tasks), progress, "answers (two-pass)")
                try:
                    run_tasks(tasks, cache, api, ledger, settings, result, bar)
                finally:
                    bar and bar.close()
            result.usage, result.cost_usd = ledger.usage(), ledger.cost_usd()
            result.stopped_by_budget = ledger.stopped_by_budget
        for q in [r["question"] for r in cache.get(qkey) or []]:
            result.records.extend(cache.get(answer_key(q)) or [])
    result.reused = len(result.records) - result.asked
    return result
