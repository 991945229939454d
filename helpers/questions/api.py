"""The API source of questions (Anthropic, or an OpenAI-compatible server): each passage becomes
a request task for the engine in ``helpers.claude.requests`` (many in flight, our retries, the
budget), or goes out in batches (Anthropic's Message Batches, the OpenAI Batch API: half price)
that a rerun resumes polling instead of submitting again."""

from __future__ import annotations

import logging

from helpers.books.passage import Passage
from helpers.claude.batch_run import BatchPlan, run_batches
from helpers.claude.cache import QACache
from helpers.claude.requests import Ledger, Settings, Task, run_tasks
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


def run_batch(job: Job, pending: list[Passage], cache: QACache, client, ledger: Ledger,
              settings: Settings, result: QAResult, bar) -> None:
    """The passages in batches (:func:`helpers.claude.batch_run.run_batches`; custom_id = the
    passage's sha256). The sidecar keeps each passage, so a rerun collects a batch submitted
    before even for passages it no longer asks about."""
    by_sha = {p.sha256: p for p in pending}
    plan = BatchPlan(match={"model": job.model, "prompt_version": job.prompt_version, "n": job.n},
                     stored=lambda t: by_sha[t.sha].to_dict(),
                     restore=lambda kept: qa_task(job, Passage.from_dict(kept)))
    run_batches([qa_task(job, p) for p in pending], plan, cache, client, ledger, settings, result, bar)
