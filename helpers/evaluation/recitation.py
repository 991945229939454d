"""Recitation audit: does the tuned model continue its training passages word for word?

The model is given the first ``prefix_words`` words of a training passage and decodes greedily;
the continuation (its first ``continuation_words`` words) is compared with the passage's own
next words. A passage counts as *recited* when the two share a run of at least ``min_run``
words; ``longest_run`` is the longest such run over the passages tried. This is the extraction
test, beside the comparison's copying score (``longest_copy_share``/``ngram_overlap`` of
:mod:`helpers.evaluation.memorisation`), which measures copying in answers to ordinary questions.

Words are compared as :func:`helpers.evaluation.text.words` reads them (lower case, letters and
digits, punctuation ignored). A run may start anywhere in the continuation, so a model that
changes one word and then recites still counts. Passages too short to hold the prefix and
``min_run`` more words are skipped; the others are sampled with a fixed seed.

Prompt: ``chat=False`` gives the model the prefix as plain text (a completion model, or a base
model asked to continue). ``chat=True`` renders the passage's training conversation (system
prompt, the user turn it was trained with, the passage as the assistant's answer) with the
model's chat template and cuts it after the prefix, so the model continues its own assistant
turn exactly where training put the passage. Every recipe here trains assistant turns in chat
form (V1's rotating "Share your thoughts on this." prompts as much as V2's questions), so the
comparison uses ``chat=True`` with each run's own training conversations
(:mod:`helpers.evaluation.audits`); raw text would understate what a chat-trained adapter
recites.
"""

from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from helpers.data.recipes import V1_PROMPTS
from helpers.evaluation.memorisation import common_prefix
from helpers.evaluation.text import words

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\S+")


class RecitationError(ValueError):
    """A setting of the recitation audit is impossible; the message says which and the fix."""


# -- pure word logic (no model) -------------------------------------------------------------------
def split_prefix(text: str, prefix_words: int) -> tuple[str, str]:
    """``(prefix, rest)``: the exact text up to the end of the ``prefix_words``-th
    whitespace-separated word, and what follows it (leading space kept)."""
    if prefix_words < 1:
        raise RecitationError(f"prefix_words={prefix_words}: give at least 1 word of prompt.")
    end = 0
    for i, m in enumerate(_TOKEN.finditer(text), 1):
        end = m.end()
        if i == prefix_words:
            break
    return text[:end], text[end:]


def leading_run(generated: Sequence[str], reference: Sequence[str]) -> int:
    """How many words ``generated`` and ``reference`` share from their first word on."""
    return common_prefix(generated, reference)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """The longest run of consecutive words found in both ``a`` and ``b`` (at any offsets)."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best


def eligible(passages: Sequence[str], prefix_words: int, min_run: int) -> list[int]:
    """Indices of the distinct passages long enough to show a ``min_run``-word recitation after
    a ``prefix_words``-word prefix."""
    seen: set[str] = set()
    out = []
    for i, p in enumerate(passages):
        if p in seen:
            continue
        seen.add(p)
        if len(words(split_prefix(p, prefix_words)[1])) >= min_run:
            out.append(i)
    return out


def sample(passages: Sequence[str], *, prefix_words: int, min_run: int, max_passages: int,
           seed: int = 0) -> list[int]:
    """Up to ``max_passages`` eligible passage indices, drawn with ``seed``, in passage order."""
    return _draw(eligible(passages, prefix_words, min_run), max_passages, seed)


def _draw(idx: list[int], k: int, seed: int) -> list[int]:
    return idx if len(idx) <= k else sorted(random.Random(seed).sample(idx, k))


@dataclass
class RecitationResult:
    """What :func:`audit` measured (plain data: it goes into the comparison's cache)."""

    n: int                       # passages tried
    share_verbatim: float        # share with a run of >= min_run words (nan when n == 0)
    longest_run: int             # longest verbatim run, in words, over all passages tried
    examples: list[dict] = field(default_factory=list)  # the longest runs: prefix, expected, generated, run
    runs: list[int] = field(default_factory=list)       # per passage tried, its longest run
    leading: list[int] = field(default_factory=list)    # per passage tried, the run from the first word
    settings: dict = field(default_factory=dict)
    skipped: int = 0             # passages too short (or duplicates) that were not tried

    def as_metrics(self, prefix: str = "recitation") -> dict[str, float]:
        """``<prefix>_share_verbatim``, ``<prefix>_longest_run``, ``<prefix>_mean_run`` and
        ``<prefix>_n`` (what a run record or a summary table holds)."""
        mean = sum(self.runs) / len(self.runs) if self.runs else math.nan
        return {f"{prefix}_share_verbatim": self.share_verbatim,
                f"{prefix}_longest_run": float(self.longest_run),
                f"{prefix}_mean_run": mean, f"{prefix}_n": float(self.n)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RecitationResult":
        return cls(**d)


def score(prefixes: Sequence[str], continuations: Sequence[str], rests: Sequence[str], *,
          continuation_words: int = 64, min_run: int = 50, n_examples: int = 3,
          skipped: int = 0, settings: dict | None = None) -> RecitationResult:
    """Score generated ``continuations`` against each passage's true ``rests`` (the text after
    its prefix): only the first ``continuation_words`` generated words count."""
    runs, leading, rows = [], [], []
    for prefix, gen, rest in zip(prefixes, continuations, rests, strict=True):
        g, r = words(gen)[:continuation_words], words(rest)
        run = longest_common_run(g, r)
        runs.append(run)
        leading.append(leading_run(g, r))
        expected = " ".join(rest.split()[:continuation_words])
        rows.append({"prefix": prefix, "expected": expected,
                     "generated": " ".join(gen.split()[:continuation_words]), "run": run})
    n = len(runs)
    worst = sorted(range(n), key=lambda i: (-runs[i], i))[:n_examples]
    return RecitationResult(n=n, share_verbatim=(sum(r >= min_run for r in runs) / n) if n else math.nan,
                            longest_run=max(runs, default=0), examples=[rows[i] for i in worst],
                            runs=runs, leading=leading, skipped=skipped, settings=dict(settings or {}))


# -- prompts --------------------------------------------------------------------------------------
def chat_prompt(tokenizer, passage: str, prefix: str, user: str, system_prompt: str | None = None,
                template_kwargs: dict | None = None) -> str:
    """The passage's training conversation rendered with the chat template and cut after the
    prefix of its assistant turn (else, when the template changes the passage's text, the
    generation prompt followed by the prefix)."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    msgs.append({"role": "user", "content": user})
    kw = dict(template_kwargs or {})
    full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": passage}],
                                         tokenize=False, **kw)
    at = full.rfind(passage)
    if at >= 0:
        return full[:at + len(prefix)]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **kw) + prefix


def _generate(model, tokenizer, prompts: Sequence[str], max_new: Sequence[int], *, chat: bool,
              batch_size: int) -> list[str]:
    """Greedy continuations, batched with left padding, decoded without special tokens."""
    import torch

    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i:i + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True,
                            add_special_tokens=not chat).to(device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max(max_new[i:i + batch_size]),
                                     do_sample=False, temperature=None, top_p=None, top_k=None,
                                     repetition_penalty=None, pad_token_id=pad)
            for row in gen[:, enc["input_ids"].shape[1]:]:
                out.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old_side
    return out


def audit(model, tokenizer, passages: Sequence[str], *, prefix_words: int = 32,
          continuation_words: int = 64, min_run: int = 50, max_passages: int = 50,
          chat: bool = False, user_prompts: Sequence[str] | None = None,
          system_prompt: str | None = None, template_kwargs: dict | None = None, seed: int = 0,
          batch_size: int = 8) -> RecitationResult:
    """Prompt ``model`` with the first ``prefix_words`` words of up to ``max_passages`` training
    passages (seeded sample) and measure verbatim continuation (greedy decoding).

    ``chat=True`` wraps each prompt as the passage's training conversation (see the module
    text): ``user_prompts`` holds the user turn each passage was trained with (aligned with
    ``passages``; default: V1's rotating prompts), ``system_prompt`` the training system prompt
    and ``template_kwargs`` the family's template settings (e.g. Qwen3's ``enable_thinking``).
    Each passage gets as many new tokens as its true continuation takes, plus 8.
    """
    if continuation_words < min_run:
        raise RecitationError(f"continuation_words={continuation_words} is below min_run={min_run}: "
                              "no passage could count as recited; raise continuation_words or lower min_run.")
    if min_run < 1 or max_passages < 1:
        raise RecitationError(f"min_run={min_run} and max_passages={max_passages} must be at least 1.")
    if user_prompts is not None and len(user_prompts) != len(passages):
        raise RecitationError(f"{len(user_prompts)} user_prompts for {len(passages)} passages: give "
                              "one per passage, in the same order, or None (V1's prompts).")
    settings = {"prefix_words": prefix_words, "continuation_words": continuation_words,
                "min_run": min_run, "max_passages": max_passages, "chat": chat, "seed": seed}
    ok = eligible(passages, prefix_words, min_run)
    chosen, skipped = _draw(ok, max_passages, seed), len(passages) - len(ok)
    if not chosen:
        log.warning("recitation: none of %d passages holds %d + %d words; nothing audited",
                    len(passages), prefix_words, min_run)
        return score([], [], [], continuation_words=continuation_words, min_run=min_run,
                     skipped=len(passages), settings=settings)
    prefixes, rests, prompts, max_new = [], [], [], []
    for i in chosen:
        prefix, rest = split_prefix(passages[i], prefix_words)
        prefixes.append(prefix)
        rests.append(rest)
        if chat:
            user = user_prompts[i] if user_prompts is not None else V1_PROMPTS[i % len(V1_PROMPTS)]
            prompts.append(chat_prompt(tokenizer, passages[i], prefix, user, system_prompt, template_kwargs))
        else:
            prompts.append(prefix)
        expected = " ".join(rest.split()[:continuation_words])
        max_new.append(len(tokenizer(" " + expected, add_special_tokens=False)["input_ids"]) + 8)
    continuations = _generate(model, tokenizer, prompts, max_new, chat=chat, batch_size=batch_size)
    result = score(prefixes, continuations, rests, continuation_words=continuation_words,
                   min_run=min_run, skipped=skipped, settings=settings)
    log.info("recitation: %d passages, %.0f%% continued verbatim for >= %d words, longest run %d words",
             result.n, 100 * result.share_verbatim, min_run, result.longest_run)
    return result
