"""The local source of questions: a transformers chat model and tokenizer you pass, asked with
the same prompt as the API; a reply that is not a usable JSON array gets rule-based questions
for its passage instead (records say ``source="rule"`` and why)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from helpers import models
from helpers.books.passage import Passage
from helpers.claude.cache import QACache
from helpers.claude.client import MalformedReply
from helpers.models import generate
from helpers.questions.job import Job
from helpers.questions.prompts import SYSTEM_PROMPT, parse_questions
from helpers.questions.rules import rule_questions

log = logging.getLogger(__name__)


def local_name(local_model) -> str:
    model = local_model[0]
    name = getattr(model, "name_or_path", None) or getattr(
        getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    return f"local:{name}"


def local_generate(local_model, prompts: list[str], max_new_tokens: int, *,
                   system_prompt: str = SYSTEM_PROMPT) -> list[str]:
    """Greedy replies of a local chat model to the prompts, through its chat template."""
    if len(local_model) == 3:
        model, tokenizer, profile = local_model
    else:
        model, tokenizer = local_model
        try:
            profile = models.get_profile(local_name(local_model)[len("local:"):])
        except models.UnknownModelError:   # a model the registry does not know: plain settings
            profile = SimpleNamespace(inference=models.InferenceDefaults())
    return generate.answer(model, tokenizer, prompts, profile, system_prompt=system_prompt,
                           max_new_tokens=max_new_tokens, greedy=True)


def run_local(job: Job, pending: list[Passage], cache: QACache, local_model, bar,
              batch_size: int = 8) -> int:
    fallbacks = 0
    for i in range(0, len(pending), batch_size):
        chunk = pending[i:i + batch_size]
        replies = local_generate(local_model, [job.prompt(p) for p in chunk], job.max_tokens)
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
