"""The API source of questions (Anthropic, or an OpenAI-compatible server): each passage becomes
a request task for the engine in ``helpers.claude.requests`` (many in flight, our retries, the
budget), or, on Anthropic, goes out in Message Batches (half price) that a rerun resumes polling instead of submitting again."""

from __future__ import annotations

import logging
from collections import Counter

from helpers.books.passage import Passage
from helpers.claude.cache import QACache, read_sidecar, write_sidecar
from helpers.claude.client import MalformedReply
from helpers.claude.requests import RETRYABLE_BATCH_ERRORS, Ledger, Run, Settings, Task, reply_text, run_tasks
from helpers.core.clock import now
from helpers.questions.job import Job, QAResult
from helpers.questions.prompts import parse_questions, request_tokens

log = logging.getLogger(__name__)


def qa_task(job: Job, p: Passage) -> Task:
    return Task(key=job.key(p), sha=p.sha256, book=p.book,
                label=f"{p.book} p.{p.first_page}-{p.last_page}",
                params=job.params(p), est=request_tokens(p, job.n),
                parse=lambda reply: parse_questions(reply, job.n),
                records=lambda qs, usage, attempts: job.records(p, qs, usage=usage,
                                                                attempts=attempts),
                schema=job.schema())


def run_concurrent(job: Job, pending: list[Passage], cache: QACache, client, ledger: Ledger,
                   settings: Settings, result: QAResult, bar) -> None:
    run_tasks([qa_task(job, p) for p in pending], cache, client, ledger, settings, result, bar)


# -- the Message Batches API ------------------------------------------------------------------

def run_batch(job: Job, pending: list[Passage], cache: QACache, client, ledger: Ledger,
              settings: Settings, result: QAResult, bar) -> None:
    """Submits the passages as Message Batches (custom_id = passage sha256), polls until they
    end and saves each result. Submitted batches are listed in ``<cache>.batches.json`` (with
    their passages), so a rerun resumes polling them instead of submitting again."""
    run = Run(client, cache, ledger, settings, result, bar)
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
                         "n": job.n, "created": now(), "status": "in_progress",
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


def _collect(run: Run, job: Job, cache: QACache, b: dict, wanted: set[str],
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
                qs = parse_questions(reply_text(r.message), job.n)
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
