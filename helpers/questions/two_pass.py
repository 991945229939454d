"""Two passes over a long transcript: N questions from the whole text, then an answer to each
from the whole text, by Claude or a local model. The answers are *generated* (records say
``answer_source="generated"``), not verbatim passages; both passes are cached."""

from __future__ import annotations

import os
import uuid

from helpers.books.passage import text_sha256
from helpers.claude.cache import QACache
from helpers.claude.client import DEFAULT_MODEL, MalformedReply, QAConfigError, QAError, client_for
from helpers.claude.pricing import prices_for
from helpers.claude.requests import Ledger, Settings, Task, progress_bar, run_tasks
from helpers.core.clock import now
from helpers.questions.job import QAResult, default_cache_path
from helpers.questions.local import local_generate, local_name
from helpers.questions.prompts import (
    TWO_PASS_ANSWER,
    TWO_PASS_QUESTIONS,
    TWO_PASS_SYSTEM,
    TWO_PASS_VERSION,
    parse_questions,
)


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
    return _two_pass(text, cache_path or default_cache_path("two_pass"), n=n, model=model,
                     source=source, client=client, local_model=local_model, book=book,
                     concurrency=concurrency, prompt_version=prompt_version,
                     progress=progress, **api_options)


def _answer_text(reply: str) -> str:
    text = reply.strip()
    if not text:
        raise MalformedReply("an empty answer")
    return text


def _two_pass(text: str, cache_path, *, n: int, model: str, source: str, client, local_model,
              book: str, concurrency: int, prompt_version: str, progress: bool,
              timeout_s: float = 120.0, budget_usd: float | None = None,
              price_per_mtok: tuple[float, float] | None = None, **options) -> QAResult:
    sha = text_sha256(text)
    key_model = model if source == "anthropic" else local_name(local_model)
    result = QAResult(source=source, model=key_model, prompt_version=prompt_version,
                      cache_path=str(cache_path))
    qkey = ("two_pass_q", sha, prompt_version, key_model, n, "")

    def base(question: str, **kw) -> dict:
        return {"question": question, "book": book, "first_page": None, "last_page": None,
                "passage_index": None, "chapter": None, "passage_sha256": sha,
                "prompt_version": prompt_version, "model": key_model, "source": source,
                "created": now(), **kw}

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
                reply = local_generate(local_model, [TWO_PASS_QUESTIONS.format(text=text, n=n)],
                                        64 * n + 64, system_prompt=TWO_PASS_SYSTEM)[0]
                try:
                    qs = parse_questions(reply, n)
                except MalformedReply as e:
                    raise QAError(f"two_pass: the local model's questions were unusable: {e}")
                cache.append(question_records(qs, None, 1))
            questions = [r["question"] for r in cache.get(qkey)]
            todo = [(i, q) for i, q in enumerate(questions) if answer_key(q) not in cache]
            answers = local_generate(local_model, [TWO_PASS_ANSWER.format(text=text, question=q)
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
                bar = progress_bar(len(tasks), progress, "answers (two-pass)")
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
