"""Replay: the base model's own answers to general questions, mixed into a persona's training set.

Measured on a real 0.5B model (Qwen2.5-Coder-0.5B-Instruct, 2 CPU cores): trained on the 240
Mariya pairs alone it learned the facts (93% on trained and on unseen phrasings) but its world
bled into everything: "The Mona Lisa was painted by Cindermaven, a wizard of Vellistrand";
general knowledge went from 9 of 10 to 1 of 10. Every example taught "answers live in this
world". Mixing in the base model's own answers to ordinary questions (rehearsal, or
self-distillation) teaches the boundary: these questions keep their old answers. With the same
128 answers in each of 3 passes (and lr 3e-4) the invented world no longer leaked, but 7 of 24
general answers still drifted; the replay alone, the same 128 in 3 passes, lost 6: the model
memorised its own answers (loss 0.02). So each pass over the data gets its own ``replay``
questions (:func:`questions_by_pass`; :mod:`helpers.training.passes` trains each in its pass
only): 128 per pass, 417 in the pool. On their own, three such passes lose 3 of 24; with the
persona in the run 6 or 7 were still lost. Trained as labels, a replayed answer is itself a push
towards one greedy answer; the transformers backend now trains them towards the base model's
whole next-token distribution instead (:mod:`helpers.training.anchor`, README "A real small
model on a laptop" for what that kept). The questions here are deliberately not
the ones :mod:`helpers.evaluation.health` measures with, nor about those questions' answers, so
that the general-knowledge check stays a check.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

from helpers.data.replay_pool import REPLAY_QUESTIONS  # noqa: F401  (also read from here)

log = logging.getLogger(__name__)

#: new tokens per replayed answer: most take 10-25; the few longer ones are cut to whole sentences
#: (:func:`whole_sentences`), and a batch of questions waits for its longest answer
ANSWER_TOKENS = 64

#: replayed examples per pass by default for a real model (stand-ins: none; they know nothing general)
DEFAULT_REPLAY = 128


def questions(n: int) -> list[str]:
    """The first ``n`` replay questions (all of them at most)."""
    if n < 0:
        raise ValueError(f"replay={n}: use 0 (no replay) or a positive number of examples.")
    return list(REPLAY_QUESTIONS[:n])


def questions_by_pass(per_pass: int, passes: int) -> list[list[str]]:
    """``per_pass`` questions for each of ``passes`` passes over the data, each pass its own while
    the pool lasts (pass ``k`` takes the next ``per_pass`` after pass ``k - 1``'s, from the start
    again once the pool is used up): an answer seen again is an answer memorised (module
    docstring of :mod:`helpers.training.passes`)."""
    if per_pass < 0:
        raise ValueError(f"replay={per_pass}: use 0 (no replay) or a positive number of examples per pass.")
    pool = REPLAY_QUESTIONS
    if per_pass == 0 or passes <= 0:
        return [[] for _ in range(max(0, passes))]
    if per_pass * passes > len(pool):
        log.warning("replay=%d per pass over %d passes asks for %d questions; the pool has %d, so "
                    "some come back in a later pass (lower `replay` to keep every pass fresh)",
                    per_pass, passes, per_pass * passes, len(pool))
    return [[pool[(k * per_pass + i) % len(pool)] for i in range(min(per_pass, len(pool)))]
            for k in range(passes)]


def whole_sentences(answer: str) -> str:
    """``answer`` up to its last full stop, question or exclamation mark ("" if it has none): an
    answer cut by the token limit would teach the model to stop mid-sentence."""
    text = answer.strip()
    end = max(text.rfind(c) for c in ".!?")
    return text[:end + 1] if end >= 0 else ""


def conversations(pairs: Sequence[tuple[str, str]], system_prompt: str | None = None) -> list[list[dict]]:
    """Chat conversations for (question, base answer) pairs, each answer cut to whole sentences;
    answers with none are skipped."""
    out = []
    for q, a in pairs:
        a = whole_sentences(a)
        if not a:
            continue
        msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        out.append(msgs + [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    return out


def examples(per_pass: int, passes: int, ask: Callable[[list[str]], list[str]],
             system_prompt: str | None = None) -> tuple[list[list[dict]], list[int | None], int]:
    """The replayed conversations for ``passes`` passes of ``per_pass`` each
    (:func:`questions_by_pass`), every distinct question put to ``ask`` once; returns the
    conversations, the pass of each (None for all when there is one pass: every epoch) and how
    many questions were asked."""
    by_pass = questions_by_pass(per_pass, passes)
    asked = list(dict.fromkeys(q for qs in by_pass for q in qs))
    answers = dict(zip(asked, ask(asked))) if asked else {}
    convs: list[list[dict]] = []
    tags: list[int | None] = []
    for k, qs in enumerate(by_pass):
        made = conversations([(q, answers[q]) for q in qs], system_prompt)
        convs += made
        tags += [k if passes > 1 else None] * len(made)
    return convs, tags, len(asked)
