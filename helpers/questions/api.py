"""The API source of questions (Anthropic, or an OpenAI-compatible server): each passage becomes
a request task for the engine in ``helpers.claude.requests`` (many in flight, our retries, the
budget), or goes out in batches (Anthropic's Message Batches, the OpenAI Batch API: half price)
that a rerun resumes polling instead of submitting again."""

from __future__ import annotations

import logging
from collections import Counter

from helpers.books.passage import Passage
from helpers.claude.cache import QACache, read_sidecar, write_sidecar
from helpers.claude.client import MalformedReply
from helpers.claude.requests import Ledger, Run, Settings, Task, run_tasks
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


# -- batches: Anthropic's Message Batches, the OpenAI Batch API ------------------------------

def run_batch(job: Job, pending: list[Passage], cache: QACache, client, ledger: Ledger,
              settings: Settings, result: QAResult, bar) -> None:
    """Submits the passages in batches (custom_id = passage sha256) through ``client``, a
    ``helpers.claude.batch_api`` interface (Anthropic's Message Batches or the OpenAI Batch
    API), polls until they end and saves each result. Submitted batches are listed in
    ``<cache>.batches.json`` (with their passages), so a rerun resumes polling them instead of
    submitting again."""
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
                created = run.call(lambda: client.submit(
                    [(p.sha256, job.params(p), job.schema()) for p in take]),
                    f"submitting a batch ({client.name})")
                if created is None:
                    break
                entry = {**created, "api": client.name, "model": job.model,
                         "prompt_version": job.prompt_version, "n": job.n, "created": now(),
                         "status": "in_progress",
                         "passages": {p.sha256: p.to_dict() for p in take}}
                side["batches"].append(entry)
                write_sidecar(cache.path, side)
                ours.append(entry)
                log.info("submitted batch %s (%d passages, %s)", entry["id"], len(take),
                         client.name)
            to_submit = []
        if not ours:
            break
        if not settings.batch_wait:
            result.batches = [b["id"] for b in ours]
            break
        retry: list[Passage] = []
        for b in list(ours):
            ended = run.call(lambda: client.ended(b), f"polling batch {b['id']}")
            if ended is None:
                return
            if not ended:
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
    items = run.call(lambda: run.client.results(b), f"reading the results of batch {b['id']}")
    for item in items or []:
        d = b["passages"].get(item.custom_id)
        if d is None:
            continue
        p = Passage.from_dict(d)
        est = request_tokens(p, job.n) if p.sha256 in reserved else None
        reserved.discard(p.sha256)
        task = qa_task(job, p)
        if item.ok:
            usage = run.ledger.settle(item.usage, est)
            if job.key(p) in cache:
                continue                 # saved by an earlier collection of this batch
            try:
                qs = parse_questions(item.text, job.n)
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
        run.note(item.error)
        if item.error == "schema":       # asked again without the schema, as live requests are
            retry.append(p)
            continue
        attempts[p.sha256] += 1
        if item.retryable and attempts[p.sha256] < run.settings.max_attempts:
            retry.append(p)
        elif p.sha256 in wanted:
            run.fail(task, f"{item.message} after {attempts[p.sha256]} attempts")
    return retry
