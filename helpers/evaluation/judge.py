"""An optional LLM judge for the model comparison: Claude (or, with ``provider="openai"`` and
``base_url``, a model on any OpenAI-compatible server), blind, pairwise, both orders.

Each tuned variant is judged against its own base model, one pair per comparison prompt. A pair
is shown to the judge twice, the tuned answer first and then second, as "Answer 1" and
"Answer 2": the judge never sees which model wrote what. It is asked which answer sounds more
like the persona while answering the question, and replies ``WINNER: 1|2|TIE`` plus a reason.

Paid requests go through ``helpers.claude`` (our retries, the ``Ledger`` budget, threads, key
redaction) and are cached in its append-only JSONL cache (``helpers.claude.cache``), keyed by the
hash of exactly the text sent (persona, question, both answers in the order shown), the prompt
version and the model (with the server's URL for an OpenAI-compatible one): a rerun asks nothing. A reply without a usable ``WINNER`` line is asked
once more, then recorded (and cached) as ``invalid``: counted in the table, never dropped. Two
identical answers are a tie without asking. :func:`estimate` says what a run costs before any
request; without an API key :func:`run` stops with :class:`JudgeError` (unless everything is
cached). Notebooks run it only when their ``judge`` parameter is set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from helpers.books.passage import text_sha256
from helpers.claude.backends import backend_for
from helpers.claude.batch_api import batches_for
from helpers.claude.batch_run import BatchPlan, run_batches
from helpers.claude.cache import QACache
from helpers.claude.client import DEFAULT_MODEL, ClaudeConfigError, MalformedReply
from helpers.claude.pricing import PROMPT_OVERHEAD_TOKENS, cost_usd, prices_for
from helpers.claude.providers import NO_OPENAI_KEY_MESSAGE, Provider, choose
from helpers.claude.requests import Ledger, Settings, Tally, Task, progress_bar, run_tasks
from helpers.core.clock import now
from helpers.core.paths import work_dir
from helpers.evaluation.metrics import bootstrap_ci

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You judge how well answers imitate a particular person. You are shown two answers to the "
    "same question and decide which one sounds more like that person. You are not told who or "
    "what wrote either answer, and the order they are shown in means nothing.")

USER_TEMPLATE = """The person: {name}

How the answering models were told to speak as {name}:
<description>
{description}
</description>

The question put to {name}:
<question>
{question}
</question>

<answer_1>
{answer_1}
</answer_1>

<answer_2>
{answer_2}
</answer_2>

Which answer sounds more like {name} answering this question: their voice, their views, their \
way of speaking, while still answering what was asked? Length alone is not a reason. Say TIE only \
when neither is closer. Reply with two lines and nothing else:
WINNER: 1, 2 or TIE
REASON: one sentence"""

PROMPT_VERSION = "j1-" + hashlib.sha256((SYSTEM_PROMPT + USER_TEMPLATE).encode()).hexdigest()[:8]
MAX_TOKENS = 200
OUTPUT_TOKENS = 60              # "WINNER: 2" and a one-sentence reason
MALFORMED_RETRIES = 1           # a reply without a usable WINNER line is asked once more
EMPTY_ANSWER = "(an empty answer)"

NO_KEY_MESSAGE = (
    "The LLM judge calls the Anthropic API and needs a key: set ANTHROPIC_API_KEY in the "
    "environment or in a .env file in the project root or your home folder. Or leave the "
    "notebook's judge parameter False (the default): everything else in the comparison runs "
    "without a key.")


class JudgeError(ValueError):
    """The judge cannot run as asked; the message says the fix."""


@dataclass(frozen=True)
class Pair:
    """One prompt's answers from a tuned variant and the variant it is judged against."""
    variant: str            # the tuned variant (never shown to the judge)
    against: str            # its base model's variant (never shown either)
    prompt_index: int
    question: str
    answer: str             # the tuned variant's answer
    against_answer: str


def pairs(answers: Mapping[str, Sequence[str]], prompts: Sequence[str],
          against: Mapping[str, str], *, missing_ok: bool = False) -> list[Pair]:
    """What to judge: every ``variant -> base`` entry of ``against`` whose two variants are both
    in ``answers``, one pair per prompt. Entries naming themselves (base models) are skipped, so
    ``Comparison.bases()`` can be passed as it is; a tuned variant whose base was not compared is
    skipped with a warning. Nothing to judge is an error naming the fix, or with ``missing_ok``
    (a comparison notebook run before any tuned model exists) an empty list and a log line."""
    for name, got in answers.items():
        if len(got) != len(prompts):
            raise JudgeError(f"{name!r} has {len(got)} answers for {len(prompts)} prompts: pass "
                             f"the answers and prompts of the same comparison "
                             f"(Comparison.answers() and Comparison.prompts).")
    out: list[Pair] = []
    for variant, base in against.items():
        if variant == base or variant not in answers:
            continue
        if base not in answers:
            log.warning("%s is not judged: its base model %s is not among the compared variants",
                        variant, base)
            continue
        out += [Pair(variant, base, i, q, answers[variant][i], answers[base][i])
                for i, q in enumerate(prompts)]
    if not out:
        message = (f"Nothing to judge: no tuned variant has its base model among the answers "
                   f"({', '.join(answers) or 'none'}). Run the fine-tuning notebooks for the "
                   f"missing variants, and keep each base model (e.g. 'qwen3-14b' beside "
                   f"'qwen3-14b:v2') among the comparison's variants.")
        if not missing_ok:
            raise JudgeError(message)
        log.info("%s", message)
    return out


# -- prompt and parsing -----------------------------------------------------------------------

_WINNER = re.compile(r"^\W*winner\W*(?:answer\s*)?(1|2|tie)\W*$", re.IGNORECASE | re.MULTILINE)
_REASON = re.compile(r"^\W*reason\W*[:=-]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def parse_verdict(reply: str) -> tuple[str, str]:
    """``("1" | "2" | "tie", reason)`` from a reply; :class:`MalformedReply` when it has no
    ``WINNER`` line or lines that disagree. Markdown around the line is fine; the reason may be
    missing (it is only read by people)."""
    found = {m.group(1).lower() for m in _WINNER.finditer(reply)}
    if len(found) != 1:
        snippet = reply.strip().replace("\n", " ")[:80]
        problem = "no 'WINNER: 1|2|TIE' line" if not found else "WINNER lines that disagree"
        raise MalformedReply(f"{problem} (reply began {snippet!r})")
    reason = _REASON.search(reply)
    return found.pop(), reason.group(1) if reason else ""


@dataclass(frozen=True)
class _Judgement:
    """One pair in one order, and the request that judges it."""
    pair: Pair
    tuned_first: bool
    identical: bool
    sha: str
    params: dict
    est: tuple[int, int]
    key_model: str          # the model as the cache names it (with the server, for openai)

    @property
    def key(self) -> tuple:
        return ("judge", self.sha, PROMPT_VERSION, self.key_model, 1, "")


def _no_key(error: str) -> str:
    """The judge's words for a missing key (or another setting's error as it is)."""
    if error == NO_OPENAI_KEY_MESSAGE:
        return ("The LLM judge on provider='openai' needs a key: set OPENAI_API_KEY in the "
                "environment or in a .env file in the project root or your home folder (a local "
                "server such as Ollama, vLLM or LM Studio accepts any non-empty string, e.g. "
                "OPENAI_API_KEY=local). Or leave the notebook's judge parameter False (the "
                "default).")
    return NO_KEY_MESSAGE if "ANTHROPIC_API_KEY" in error else error


def _provider(provider: str, base_url: str | None, model: str | None) -> tuple[Provider, str]:
    try:
        prov = choose(provider, base_url)
    except ClaudeConfigError as e:
        raise JudgeError(str(e)) from None
    if not model and prov.openai:
        raise JudgeError(f"The judge on provider='openai' needs model= (judge_model in the "
                         f"notebook): the name the server at {prov.url} knows, e.g. gpt-4o-mini.")
    return prov, model or DEFAULT_MODEL


def _plan(pairs_: Sequence[Pair], name: str, description: str, model: str,
          prov: Provider = Provider()) -> list[_Judgement]:
    out = []
    for p in pairs_:
        for tuned_first in (True, False):
            first, second = ((p.answer, p.against_answer) if tuned_first
                             else (p.against_answer, p.answer))
            first, second = first.strip() or EMPTY_ANSWER, second.strip() or EMPTY_ANSWER
            user = USER_TEMPLATE.format(name=name, description=description.strip(),
                                        question=p.question.strip(), answer_1=first,
                                        answer_2=second)
            params = {"model": model, "max_tokens": MAX_TOKENS, "system": SYSTEM_PROMPT,
                      "messages": [{"role": "user", "content": user}]}
            est = ((len(SYSTEM_PROMPT) + len(user)) // 4 + PROMPT_OVERHEAD_TOKENS, OUTPUT_TOKENS)
            out.append(_Judgement(p, tuned_first, first == second, text_sha256(json.dumps(
                [SYSTEM_PROMPT, user])), params, est, prov.key_model(model)))
    return out


def default_cache_path() -> Path:
    return work_dir() / "comparison_cache_all_models" / "judge.jsonl"


# -- the estimate -----------------------------------------------------------------------------

@dataclass
class Estimate:
    model: str
    judgements: int            # pairs x 2 orders
    requests: int              # judgements that need a request
    cached: int                # judgements already in the cache
    identical: int             # identical answers: a tie, not asked
    input_tokens: int
    output_tokens: int
    usd: float | None          # None: no list price known for the model

    def __str__(self) -> str:
        if not self.judgements:
            return ("LLM judge: nothing to judge (no tuned variant beside its base model): run the "
                    "fine-tuning notebooks for the missing variants listed above.")
        cost = ("no list price known for this model" if self.usd is None else
                f"about ${self.usd:.2f} at the list prices in helpers.qa (check current prices)")
        return (f"LLM judge: {self.requests} requests to {self.model} for {self.judgements} "
                f"judgements ({self.cached} cached, {self.identical} identical answers not "
                f"asked): ~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens, "
                f"{cost}")


def estimate(pairs_: Sequence[Pair], *, persona_name: str, persona_description: str,
             model: str | None = None, cache_path: str | os.PathLike | None = None,
             price_per_mtok: tuple[float, float] | None = None, provider: str = "anthropic",
             base_url: str | None = None, batch: bool = False) -> Estimate:
    """What :func:`run` would ask and cost, before any request (tokens: characters / 4;
    ``batch``: at the batch APIs' half price)."""
    prov, model = _provider(provider, base_url, model)
    plan = _plan(pairs_, persona_name, persona_description, model, prov)
    path = Path(cache_path) if cache_path else default_cache_path()
    with QACache(path) as cache:
        cached = {j.key for j in plan if not j.identical and j.key in cache}
    todo = {j.key: j for j in plan if not j.identical and j.key not in cached}
    tin = sum(j.est[0] for j in todo.values())
    tout = sum(j.est[1] for j in todo.values())
    return Estimate(model=prov.key_model(model), judgements=len(plan), requests=len(todo),
                    cached=sum(j.key in cached for j in plan),
                    identical=sum(j.identical for j in plan), input_tokens=tin,
                    output_tokens=tout,
                    usd=cost_usd(model, tin, tout, price_per_mtok=price_per_mtok,
                                 provider=prov.name, batch=batch))


# -- running ----------------------------------------------------------------------------------

def _parser():
    """Reply -> (winner, reason); one malformed reply is asked again, the next is ``invalid``."""
    malformed = [0]

    def parse(reply: str) -> tuple[str, str]:
        try:
            return parse_verdict(reply)
        except MalformedReply:
            malformed[0] += 1
            if malformed[0] > MALFORMED_RETRIES:
                return "invalid", reply.strip()[:500]
            raise
    return parse


def _task(j: _Judgement):
    def records(parsed, usage, attempts):
        return [{"kind": "judge", "passage_sha256": j.sha, "prompt_version": PROMPT_VERSION,
                 "model": j.key_model, "n": 1, "item": "", "q_index": 0,
                 "group": uuid.uuid4().hex, "group_size": 1, "winner": parsed[0],
                 "reason": parsed[1], "usage": usage, "attempts": attempts, "created": now()}]

    order = "tuned first" if j.tuned_first else "base first"
    return Task(key=j.key, sha=j.sha, book="judge", params=j.params, est=j.est,
                label=f"judge {j.pair.variant} vs {j.pair.against}, prompt {j.pair.prompt_index} "
                      f"({order})", parse=_parser(), records=records)


def _outcome(shown: str, tuned_first: bool) -> str:
    """The tuned variant's outcome from the winner as shown ("1", "2", "tie", "invalid")."""
    if shown in ("tie", "invalid"):
        return shown
    return "win" if (shown == "1") == tuned_first else "loss"


def run(pairs_: Sequence[Pair], *, persona_name: str, persona_description: str,
        cache_path: str | os.PathLike | None = None, model: str | None = None,
        budget_usd: float | None = None, concurrency: int = 4, client=None,
        timeout_s: float = 60.0, price_per_mtok: tuple[float, float] | None = None,
        progress: bool = False, provider: str = "anthropic", base_url: str | None = None,
        batch: bool = False, **options) -> "JudgeResult":
    """Judges every pair in both orders (cached judgements are not asked again). ``options``
    go to ``helpers.claude.requests.Settings`` (``max_retries``, ``retry_base_s``,
    ``poll_interval_s``, ``batch_wait``, ...). ``batch=True`` sends the requests as batches
    (Anthropic's Message Batches, or the OpenAI Batch API with ``provider="openai"``: half the
    price, answered within 24 hours; :mod:`helpers.claude.batch_run`); with ``batch_wait=False``
    it submits and returns, and running again collects (``result.batches``). Raises
    :class:`JudgeError` without an API key when something is left to ask. ``model`` None:
    Claude Haiku; with ``provider="openai"`` name the server's model (``base_url``: default
    OPENAI_BASE_URL, else OpenAI; key OPENAI_API_KEY)."""
    prov, model = _provider(provider, base_url, model)
    plan = _plan(pairs_, persona_name, persona_description, model, prov)
    path = Path(cache_path) if cache_path else default_cache_path()
    result = JudgeResult(model=prov.key_model(model), prompt_version=PROMPT_VERSION,
                         cache_path=str(path))
    with QACache(path) as cache:
        before = {j.key for j in plan if j.key in cache}
        tasks = {j.key: _task(j) for j in plan if not j.identical and j.key not in before}
        done = Tally()
        ledger = Ledger(model, prices_for(model, price_per_mtok, prov.name), budget_usd, batch=batch)
        if tasks:
            try:
                api = (batches_for if batch else backend_for)(client, prov, timeout_s)
            except ClaudeConfigError as e:
                raise JudgeError(_no_key(str(e))) from None
            bar = progress_bar(len(tasks), progress, "LLM judge")
            settings = Settings(concurrency=concurrency, timeout_s=timeout_s, **options)
            try:
                if batch:
                    kept = BatchPlan(match={"kind": "judge", "model": prov.key_model(model),
                                            "prompt_version": PROMPT_VERSION},
                                     stored=lambda t: {}, restore=lambda kept: None)
                    run_batches(list(tasks.values()), kept, cache, api, ledger, settings, done, bar)
                else:
                    run_tasks(list(tasks.values()), cache, api, ledger, settings, done, bar)
            finally:
                bar and bar.close()
        failed = {sha: reason for sha, _, reason in done.failed}
        for j in plan:
            row = {"variant": j.pair.variant, "against": j.pair.against,
                   "prompt_index": j.pair.prompt_index, "question": j.pair.question,
                   "tuned_first": j.tuned_first}
            rec = (cache.get(j.key) or [None])[0]
            if j.identical:
                row.update(shown="tie", how="identical", reason="identical answers (not asked)")
            elif rec is not None:
                row.update(shown=rec["winner"], reason=rec.get("reason", ""),
                           how="cache" if j.key in before else "asked")
            elif j.sha in failed:
                row.update(shown=None, how="failed", reason=failed[j.sha])
            else:
                row.update(shown=None, how="not asked",
                           reason="in a submitted batch: run again to collect" if done.batches else "")
            row["outcome"] = _outcome(row["shown"], j.tuned_first) if row["shown"] else None
            result.verdicts.append(row)
    result.usage, result.cost_usd = ledger.usage(), ledger.cost_usd()
    result.stopped_by_budget = ledger.stopped_by_budget
    result.attempt_errors = dict(done.attempt_errors)
    result.batches = list(done.batches)
    return result


# -- results ----------------------------------------------------------------------------------

@dataclass
class JudgeResult:
    verdicts: list[dict] = field(default_factory=list)   # one per pair and order
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = 0.0
    stopped_by_budget: bool = False
    attempt_errors: dict[str, int] = field(default_factory=dict)
    model: str = ""
    prompt_version: str = ""
    cache_path: str = ""
    batches: list[str] = field(default_factory=list)     # submitted, to collect by running again

    def count(self, how: str) -> int:
        """Judgements that were "asked", came from the "cache", were "identical", "failed" or
        were "not asked" (budget)."""
        return sum(v["how"] == how for v in self.verdicts)

    @property
    def complete(self) -> bool:
        return not self.count("failed") and not self.count("not asked")

    def summary(self) -> str:
        cost = "cost unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        text = (f"LLM judge ({self.model}): {len(self.verdicts)} judgements: "
                f"{self.count('asked')} asked, {self.count('cache')} from the cache, "
                f"{self.count('identical')} identical answers, {self.count('failed')} failed, "
                f"{self.count('not asked')} not asked"
                + (" (budget reached)" if self.stopped_by_budget else "")
                + f"; {self.usage.get('requests', 0)} requests, {cost}")
        if self.batches:
            text += (f". Waiting for batch(es) {', '.join(self.batches)}: run again to collect "
                     "them (nothing is submitted twice)")
        elif not self.complete:
            text += f". Rerun to finish; judgements so far are kept in {self.cache_path}"
        return text

    def per_prompt(self):
        """Every judgement: variant, prompt, order, the winner as shown, the tuned variant's
        outcome, how it was obtained and the judge's reason."""
        import pandas as pd
        return pd.DataFrame(self.verdicts, columns=[
            "variant", "against", "prompt_index", "question", "tuned_first", "shown", "outcome",
            "how", "reason"])

    def table(self, *, n_boot: int = 2000, seed: int = 0):
        """One row per tuned variant. Counts are over judgements (two per prompt): ``wins``,
        ``losses``, ``ties``, ``invalid``, ``not_judged`` (failed or not asked). ``win_rate``: per
        prompt, wins + half the ties over its valid judgements, averaged over prompts, with a 95%
        bootstrap interval over prompts (``low``, ``high``). ``consistency``: share of prompts
        judged in both orders where both orders agree. ``position_bias``: share of judgements
        with a winner that "Answer 1" won (0.5 = no preference for the first answer)."""
        import pandas as pd
        score = {"win": 1.0, "tie": 0.5, "loss": 0.0}
        rows = []
        for (variant, against), group in self.per_prompt().groupby(["variant", "against"],
                                                                 sort=False):
            valid = group[group["outcome"].isin(list(score))]
            per_prompt = valid.groupby("prompt_index")["outcome"].agg(
                lambda o: o.map(score).mean()).reindex(group["prompt_index"].unique())
            est, low, high = bootstrap_ci(per_prompt.tolist(), n_boot=n_boot, seed=seed)
            both = [g for _, g in valid[valid["how"] != "identical"].groupby("prompt_index")
                    if len(g) == 2]
            decided = valid[valid["shown"].isin(["1", "2"])]
            rows.append({
                "variant": variant, "against": against, "prompts": group["prompt_index"].nunique(),
                "wins": int((group["outcome"] == "win").sum()),
                "losses": int((group["outcome"] == "loss").sum()),
                "ties": int((group["outcome"] == "tie").sum()),
                "invalid": int((group["outcome"] == "invalid").sum()),
                "not_judged": int(group["outcome"].isna().sum()),
                "win_rate": est, "low": low, "high": high,
                "consistency": (sum(g["outcome"].nunique() == 1 for g in both) / len(both)
                                if both else math.nan),
                "position_bias": ((decided["shown"] == "1").mean() if len(decided)
                                  else math.nan)})
        return pd.DataFrame(rows, columns=[
            "variant", "against", "prompts", "wins", "losses", "ties", "invalid", "not_judged",
            "win_rate", "low", "high", "consistency", "position_bias"])
