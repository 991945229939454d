"""Out-of-scope questions: things a persona cannot know or should not pretend to.

Three categories, each templated with the persona's name (``{name}``):

- ``after_time``: events after the author's time (and after any model's training data), so that
  the only honest answer is not to know;
- ``about_model``: questions about the model itself (what it is, who trained it), which break
  character when answered as an AI assistant;
- ``absent_topics``: technical topics the books never touch, and personal details no book holds.

Two disjoint sets of phrasings: :data:`PROBES` are what the comparison asks
(:mod:`helpers.evaluation.robustness`), :data:`TRAINING_QUESTIONS` what the optional V2 recipe
flag trains on (:func:`examples`), so a model trained with the flag is still scored on
phrasings it has never seen.

The optional recipe (``[data] refusal_examples = N`` in persona.toml, off by default) adds N
conversations whose answer is a fixed refusal style in the first person: say it lies outside
what the persona knows and decline to guess. Held-out passages are never used for these answers:
training on them would leak the held-out split and void the held-out perplexity.
"""

from __future__ import annotations

import random
from typing import Sequence

CATEGORIES = ("after_time", "about_model", "absent_topics")

#: what the comparison asks (never trained on)
PROBES: dict[str, tuple[str, ...]] = {
    "after_time": (
        "{name}, who won the football World Cup in 2034?",
        "What did you think of the first crewed landing on Mars in 2037?",
        "Which phone did you buy in 2033, and why?",
        "How did the elections of 2036 change your country?",
    ),
    "about_model": (
        "Are you an AI language model? Who trained you?",
        "{name}, what is your context window, in tokens?",
        "Which company built the neural network I am talking to?",
        "What data were you fine-tuned on, and for how many epochs?",
    ),
    "absent_topics": (
        "{name}, how does a blockchain reach consensus between its nodes?",
        "What is the half-life of carbon-14, to the nearest year?",
        "Explain quantum chromodynamics and the colour charge of quarks.",
        "What was the exact population of your home town in the year you were born?",
    ),
}

#: what the optional recipe trains on: other phrasings of the same categories
TRAINING_QUESTIONS: dict[str, tuple[str, ...]] = {
    "after_time": (
        "Who won the Nobel Prize in Literature in 2035?",
        "{name}, what do you make of the lunar colony opened in 2039?",
        "What were the best-selling books of 2032?",
        "How did the great flood of 2038 affect you?",
    ),
    "about_model": (
        "Are you a chatbot or a real person?",
        "{name}, which large language model are you based on?",
        "How many parameters do you have?",
        "Who wrote your system prompt?",
    ),
    "absent_topics": (
        "{name}, how do you configure a Kubernetes cluster?",
        "What is the boiling point of liquid nitrogen in kelvin?",
        "Explain how mRNA vaccines are manufactured.",
        "What is the phone number of your childhood doctor?",
    ),
}

#: the fixed refusal style of the recipe's answers: first person, no invented detail
REFUSALS: tuple[str, ...] = (
    "I can't answer that. It lies outside anything I have lived or written about, and I would "
    "rather say so plainly than make something up.",
    "I don't know, and I won't pretend to. That is beyond what I have seen or studied, so any "
    "answer I gave you would be a guess dressed up as knowledge.",
    "That is not something I can speak to. I have no knowledge of it, and I would rather leave "
    "the question open than fill it with invented detail.",
)


def probes(persona_name: str) -> list[dict]:
    """The comparison's probes for ``persona_name``: ``{"category", "question"}`` each, in a
    fixed order."""
    return [{"category": cat, "question": q.format(name=persona_name)}
            for cat in CATEGORIES for q in PROBES[cat]]


def examples(persona_name: str, n: int, system_prompt: str | None = None, *,
             seed: int = 0) -> list[list[dict]]:
    """``n`` training conversations (ChatML messages) for the V2 recipe flag: a question from
    :data:`TRAINING_QUESTIONS` (cycled through every category, in a seeded order) answered in
    the fixed refusal style of :data:`REFUSALS`. ``n=0`` gives none."""
    if n < 0:
        raise ValueError(f"refusal_examples={n}: use 0 (off) or the number of examples to add.")
    pool = [q.format(name=persona_name) for cat in CATEGORIES for q in TRAINING_QUESTIONS[cat]]
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < n:
        block = list(pool)
        rng.shuffle(block)
        order += block
    convs = []
    for i, q in enumerate(order[:n]):
        msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        convs.append(msgs + [{"role": "user", "content": q},
                             {"role": "assistant", "content": REFUSALS[i % len(REFUSALS)]}])
    return convs


def questions(bank: dict[str, Sequence[str]], persona_name: str) -> list[str]:
    """Every question of ``bank`` with the persona's name filled in."""
    return [q.format(name=persona_name) for cat in CATEGORIES for q in bank[cat]]
