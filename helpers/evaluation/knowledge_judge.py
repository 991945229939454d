"""The optional LLM grader of the knowledge check: Claude (or a model on an OpenAI-compatible
server) reads a question, the key facts of its correct answer and one model's answer, and grades
it CORRECT, WRONG or DONT_KNOW. It catches what the key-fact rule cannot: the right fact in other
words, or a key fact mentioned while the answer says something else.

Requests go through ``helpers.claude`` (retries, budget, key redaction) and are cached in the
judge's append-only cache under a hash of exactly the text sent, so the same answer is never
graded twice (two variants with the same answer share one request) and a rerun asks nothing. An
empty answer is DONT_KNOW without asking. A reply without a usable GRADE line is asked once more,
then recorded as ``invalid`` (left out of the judge's counts, shown in the per-question table).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from helpers.books.passage import text_sha256
from helpers.claude.backends import backend_for
from helpers.claude.cache import QACache
from helpers.claude.client import ClaudeConfigError, MalformedReply
from helpers.claude.pricing import PROMPT_OVERHEAD_TOKENS, cost_usd, prices_for
from helpers.claude.requests import Ledger, Settings, Tally, Task, progress_bar, run_tasks
from helpers.core.clock import now
from helpers.evaluation import judge
from helpers.evaluation.knowledge import CORRECT, DONT_KNOW, WRONG

SYSTEM_PROMPT = (
    "You grade answers to closed-book quiz questions about a book. You are given the key facts "
    "of the correct answer and decide whether an answer states them. You are not told who or what "
    "wrote the answer.")

USER_TEMPLATE = """<question>
{question}
</question>

Key facts of the correct answer:
<key_facts>
{key_facts}
</key_facts>

<answer>
{answer}
</answer>

Grade the answer. CORRECT: it states every key fact (in any words). WRONG: it misses one, \
states something else, or contradicts them. DONT_KNOW: it declines, says it does not know, or \
does not attempt the question. Reply with one line and nothing else:
GRADE: CORRECT, WRONG or DONT_KNOW"""

PROMPT_VERSION = "k1-" + hashlib.sha256((SYSTEM_PROMPT + USER_TEMPLATE).encode()).hexdigest()[:8]
MAX_TOKENS = 20
OUTPUT_TOKENS = 8
_GRADE = re.compile(r"^\W*grade\W*(correct|wrong|dont[_ ]?know|don't know)\W*$", re.IGNORECASE | re.MULTILINE)


def parse_grade(reply: str) -> str:
    """``correct``, ``wrong`` or ``dont_know`` from a reply; :class:`MalformedReply` without one
    GRADE line (or with lines that disagree)."""
    found = {re.sub(r"[^a-z]", "", m.group(1).lower()).replace("dontknow", DONT_KNOW)
             for m in _GRADE.finditer(reply)}
    if len(found) != 1:
        snippet = reply.strip().replace("\n", " ")[:80]
        raise MalformedReply(f"{'no GRADE line' if not found else 'GRADE lines that disagree'} "
                             f"(reply began {snippet!r})")
    return found.pop()


@dataclass(frozen=True)
class _Grading:
    where: tuple                 # (variant, question index)
    empty: bool
    sha: str
    params: dict
    est: tuple[int, int]
    key_model: str

    @property
    def key(self) -> tuple:
        return ("knowledge_judge", self.sha, PROMPT_VERSION, self.key_model, 1, "")


def _plan(known, model: str, prov) -> list[_Grading]:
    out = []
    for v in known.variants:
        for i, (q, a) in enumerate(zip(known.questions, known.answers.get(v.name, []))):
            out.append(_grading((v.name, i), q.question, q.key_facts, a, model, prov))
    return out


def _grading(where: tuple, question: str, key_facts, answer: str, model: str, prov) -> _Grading:
    user = USER_TEMPLATE.format(question=question.strip(), key_facts="\n".join(f"- {f}" for f in key_facts),
                                answer=answer.strip() or "(an empty answer)")
    params = {"model": model, "max_tokens": MAX_TOKENS, "system": SYSTEM_PROMPT,
              "messages": [{"role": "user", "content": user}]}
    return _Grading(where, not answer.strip(),
                    text_sha256(json.dumps([SYSTEM_PROMPT, user])), params,
                    ((len(SYSTEM_PROMPT) + len(user)) // 4 + PROMPT_OVERHEAD_TOKENS, OUTPUT_TOKENS),
                    prov.key_model(model))


def default_cache_path() -> Path:
    return judge.default_cache_path()


def estimate(known, *, model: str | None = None, provider: str = "anthropic",
             base_url: str | None = None, cache_path: str | os.PathLike | None = None) -> str:
    """What :func:`grade` would ask and cost, as a sentence (nothing is sent)."""
    prov, model = judge._provider(provider, base_url, model)
    plan = _plan(known, model, prov)
    with QACache(Path(cache_path) if cache_path else default_cache_path()) as cache:
        todo = {g.key: g for g in plan if not g.empty and g.key not in cache}
    tin, tout = sum(g.est[0] for g in todo.values()), sum(g.est[1] for g in todo.values())
    usd = cost_usd(model, tin, tout, provider=prov.name)
    cost = "no list price known" if usd is None else f"about ${usd:.2f} at list prices"
    return (f"Knowledge grader: {len(todo)} requests to {prov.key_model(model)} for {len(plan)} "
            f"answers (the rest cached or empty): ~{tin:,} input + ~{tout:,} output tokens, {cost}")


def grade(known, *, model: str | None = None, provider: str = "anthropic", base_url: str | None = None,
          cache_path: str | os.PathLike | None = None, budget_usd: float | None = None, client=None,
          concurrency: int = 4, timeout_s: float = 60.0, progress: bool = False, **options) -> dict:
    """Grades every answer of ``known`` (a :class:`helpers.evaluation.knowledge_run.Knowledge`),
    stores the grades in ``known.grades`` and returns them: ``(variant, question index) ->
    correct | wrong | dont_know | invalid | None`` (None: failed or not asked, e.g. budget).
    Raises :class:`helpers.evaluation.judge.JudgeError` without an API key when something is
    left to ask."""
    prov, model = judge._provider(provider, base_url, model)
    plan = _plan(known, model, prov)
    path = Path(cache_path) if cache_path else default_cache_path()
    tries: dict[tuple, int] = {}

    def task(g: _Grading) -> Task:
        def parse(reply: str) -> str:
            try:
                return parse_grade(reply)
            except MalformedReply:
                tries[g.key] = tries.get(g.key, 0) + 1
                if tries[g.key] > judge.MALFORMED_RETRIES:
                    return "invalid"
                raise

        def records(parsed, usage, attempts):
            return [{"kind": "knowledge_judge", "passage_sha256": g.sha, "prompt_version": PROMPT_VERSION,
                     "model": g.key_model, "n": 1, "item": "", "q_index": 0, "group": uuid.uuid4().hex,
                     "group_size": 1, "grade": parsed, "usage": usage, "attempts": attempts,
                     "created": now()}]
        return Task(key=g.key, sha=g.sha, book="knowledge", params=g.params, est=g.est,
                    label=f"grade {g.where[0]}, question {g.where[1]}", parse=parse, records=records)

    with QACache(path) as cache:
        tasks = {g.key: task(g) for g in plan if not g.empty and g.key not in cache}
        if tasks:
            try:
                api = backend_for(client, prov, timeout_s)
            except ClaudeConfigError as e:
                raise judge.JudgeError(judge._no_key(str(e))) from None
            bar = progress_bar(len(tasks), progress, "knowledge grader")
            try:
                run_tasks(list(tasks.values()), cache, api,
                          Ledger(model, prices_for(model, None, prov.name), budget_usd),
                          Settings(concurrency=concurrency, timeout_s=timeout_s, **options), Tally(), bar)
            finally:
                bar and bar.close()
        grades = {}
        for g in plan:
            rec = (cache.get(g.key) or [None])[0]
            grades[g.where] = DONT_KNOW if g.empty else (rec["grade"] if rec else None)
    known.grades = grades
    return grades


__all__ = ["CORRECT", "WRONG", "DONT_KNOW", "grade", "estimate", "parse_grade", "PROMPT_VERSION"]
