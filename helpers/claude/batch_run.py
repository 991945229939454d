"""Request tasks sent as batches (Anthropic's Message Batches or the OpenAI Batch API, both behind
:mod:`helpers.claude.batch_api`: half the price, answered within 24 hours), shared by the
questions and the judge.

:func:`run_batches` submits the tasks (custom_id = the task's sha256), polls until each batch ends
and saves every result through the task's own ``parse`` and ``records``, as the concurrent engine
(:func:`helpers.claude.requests.run_tasks`) does: the same cache, budget, retries of the SDK
calls, progress bar and result tally. A malformed reply or a retryable error is submitted again
(up to ``max_attempts``). Submitted batches are listed in ``<cache>.batches.json`` with what each
task needs to be rebuilt (:class:`BatchPlan`), so a rerun, even after a crash, resumes polling
them instead of submitting (and paying) again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from helpers.claude.cache import QACache, read_sidecar, write_sidecar
from helpers.claude.client import MalformedReply
from helpers.claude.requests import Ledger, Run, Settings, Tally, Task
from helpers.core.clock import now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPlan:
    """What the sidecar keeps so that a later run finds its batches and rebuilds their tasks."""
    match: dict                               # fields that mark a sidecar batch as this job's
    stored: Callable[[Task], dict]            # what the sidecar keeps of a task
    restore: Callable[[dict], Task | None]    # the task from what was kept (None: drop its result)


def run_batches(tasks: list[Task], plan: BatchPlan, cache: QACache, client, ledger: Ledger,
                settings: Settings, result: Tally, bar) -> None:
    """Submits ``tasks`` in batches through ``client`` (a ``batch_api`` interface), polls until
    they end and saves each result; with ``settings.batch_wait`` False, submits and returns
    (``result.batches`` lists the batches to collect by running again)."""
    run = Run(client, cache, ledger, settings, result, bar)
    side = read_sidecar(cache.path)
    ours = [b for b in side["batches"] if b.get("status") != "collected"
            and all(b.get(k) == v for k, v in plan.match.items())]
    waiting = {sha for b in ours for sha in b["passages"]}
    if ours:
        log.info("resuming %d submitted batch(es): %s", len(ours), ", ".join(b["id"] for b in ours))
    wanted = {t.sha: t for t in tasks}
    reserved: set[str] = set()       # tasks whose estimated cost this run holds
    attempts: Counter = Counter()
    to_submit = [t for t in tasks if t.sha not in waiting]
    while True:
        if to_submit:
            take = [t for t in to_submit if ledger.reserve(t.est)]
            reserved.update(t.sha for t in take)
            if take:
                created = run.call(lambda: client.submit([(t.sha, t.params, t.schema) for t in take]),
                                   f"submitting a batch ({client.name})")
                if created is None:
                    break
                entry = {**created, "api": client.name, **plan.match, "created": now(),
                         "status": "in_progress", "passages": {t.sha: plan.stored(t) for t in take}}
                side["batches"].append(entry)
                write_sidecar(cache.path, side)
                ours.append(entry)
                log.info("submitted batch %s (%d requests, %s)", entry["id"], len(take), client.name)
            to_submit = []
        if not ours:
            break
        if not settings.batch_wait:
            result.batches = [b["id"] for b in ours]
            break
        retry: list[Task] = []
        for b in list(ours):
            ended = run.call(lambda: client.ended(b), f"polling batch {b['id']}")
            if ended is None:
                return
            if not ended:
                continue
            retry += _collect(run, plan, b, wanted, attempts, reserved)
            b["status"] = "collected"
            write_sidecar(cache.path, side)
            ours.remove(b)
        to_submit = retry
        if ours and not to_submit:
            run.stop.wait(settings.poll_interval_s)
        if run.stop.is_set():
            break


def _collect(run: Run, plan: BatchPlan, b: dict, wanted: dict[str, Task], attempts: Counter,
             reserved: set[str]) -> list[Task]:
    """Saves the results of an ended batch; returns the tasks to submit again."""
    retry = []
    items = run.call(lambda: run.client.results(b), f"reading the results of batch {b['id']}")
    for item in items or []:
        kept = b["passages"].get(item.custom_id)
        if kept is None:
            continue
        task = wanted.get(item.custom_id) or plan.restore(kept)
        if task is None:
            log.info("batch %s: result for %s dropped (not asked in this run)", b["id"],
                     item.custom_id[:12])
            continue
        est = task.est if task.sha in reserved else None
        reserved.discard(task.sha)
        if item.ok:
            usage = run.ledger.settle(item.usage, est)
            if task.key in run.cache:
                continue                 # saved by an earlier collection of this batch
            try:
                parsed = task.parse(item.text)
            except MalformedReply as e:
                attempts[task.sha] += 1
                run.note("malformed")
                if attempts[task.sha] >= run.settings.max_attempts:
                    run.fail(task, f"malformed reply {attempts[task.sha]} times: {e}")
                else:
                    retry.append(task)
                continue
            records = task.records(parsed, usage, attempts[task.sha] + 1)
            run.cache.append([{**r, "batch_id": b["id"]} for r in records])
            if task.sha in wanted:
                run.done(task)
            continue
        run.ledger.release(est)
        run.ledger.count_request()
        run.note(item.error)
        if item.error == "schema":       # asked again without the schema, as live requests are
            retry.append(task)
            continue
        attempts[task.sha] += 1
        if item.retryable and attempts[task.sha] < run.settings.max_attempts:
            retry.append(task)
        elif task.sha in wanted:
            run.fail(task, f"{item.message} after {attempts[task.sha]} attempts")
    return retry
