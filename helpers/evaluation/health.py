"""Is the tuned model still whole? Collapsed answers, and general knowledge kept after tuning.

A learning rate far too high can leave a model that answers every question with one syllable,
repeated, or with nothing; and fine-tuning on a narrow set can make a model forget what it knew.
Neither shows in a fact-recall score alone, so the report checks both:

- :func:`collapsed` flags an answer that is empty or mostly one short piece repeated;
- :data:`GENERAL_PROBES` are thirty questions a chat model of 0.5B parameters and up mostly
  answers (each with a one-word key fact; thirty, not ten, so that one answer more or less moves
  the share by 3 points, not 10); recall on them is measured before and after tuning
  (``general_knowledge_base`` / ``general_knowledge_tuned``). The stand-ins know none of them.
"""

from __future__ import annotations

import re
from typing import Sequence

from helpers.evaluation import recall

#: general-knowledge questions with the word a right answer contains
GENERAL_PROBES: tuple[dict, ...] = (
    {"question": "What is the capital of France?", "key_fact": "Paris"},
    {"question": "Who wrote Romeo and Juliet?", "key_fact": "Shakespeare"},
    {"question": "Which planet is known as the Red Planet?", "key_fact": "Mars"},
    {"question": "What is the largest ocean on Earth?", "key_fact": "Pacific"},
    {"question": "In which country are the pyramids of Giza?", "key_fact": "Egypt"},
    {"question": "Which language is mainly spoken in Brazil?", "key_fact": "Portuguese"},
    {"question": "Who painted the Mona Lisa?", "key_fact": "Leonardo"},
    {"question": "What is the tallest mountain in the world?", "key_fact": "Everest"},
    {"question": "What is the chemical symbol for gold?", "key_fact": "Au"},
    {"question": "What is the largest planet in our solar system?", "key_fact": "Jupiter"},
    {"question": "What is the capital of the United Kingdom?", "key_fact": "London"},
    {"question": "What is the capital of Austria?", "key_fact": "Vienna"},
    {"question": "Who proposed the theory of evolution by natural selection?", "key_fact": "Darwin"},
    {"question": "What is the largest continent by area?", "key_fact": "Asia"},
    {"question": "What is the capital of Ireland?", "key_fact": "Dublin"},
    {"question": "What is the currency of the United States?", "key_fact": "dollar", "also": ("USD",)},
    {"question": "Who composed The Four Seasons?", "key_fact": "Vivaldi"},
    {"question": "In which country is the Taj Mahal?", "key_fact": "India"},
    {"question": "Who was the first human to travel into space?", "key_fact": "Gagarin"},
    {"question": "Which element has the atomic number 1?", "key_fact": "hydrogen"},
    {"question": "What is the capital of South Korea?", "key_fact": "Seoul"},
    {"question": "Who painted the ceiling of the Sistine Chapel?", "key_fact": "Michelangelo"},
    {"question": "Which animal is called the ship of the desert?", "key_fact": "camel"},
    {"question": "What is the longest river in South America?", "key_fact": "Amazon"},
    {"question": "What is the hottest planet in our solar system?", "key_fact": "Venus"},
    {"question": "What is the capital of Poland?", "key_fact": "Warsaw"},
    {"question": "Who is the ancient Greek poet said to have written the Odyssey?", "key_fact": "Homer"},
    {"question": "What is the main ingredient of hummus?", "key_fact": "chickpea"},
    {"question": "Which bird is famous for imitating human speech?", "key_fact": "parrot"},
    {"question": "What is the largest country in South America?", "key_fact": "Brazil"},
)

def general_score(answers: Sequence[str]) -> float:
    """The share of :data:`GENERAL_PROBES` answered right: an answer holds the probe's key fact or
    one of the other right words it lists under ``also`` ("USD" for the dollar)."""
    if len(answers) != len(GENERAL_PROBES):
        raise ValueError(f"{len(answers)} answers for {len(GENERAL_PROBES)} general questions")
    right = sum(any(recall.contains_fact(a, k) for k in (p["key_fact"], *p.get("also", ())))
                for a, p in zip(answers, GENERAL_PROBES))
    return right / len(GENERAL_PROBES)


#: a piece of up to 12 characters repeated at least 4 more times
_REPEAT = re.compile(r"(.{1,12}?)\1{4,}", re.DOTALL)
#: share of the answer one repeated piece must cover to count as collapsed
COLLAPSE_SHARE = 0.6


def collapsed(answer: str) -> str | None:
    """Why ``answer`` looks collapsed ("empty", or "'iah' repeated"), else None.

    >>> collapsed("iahiahiahiahiahiahiah"), collapsed("Paris is the capital of France.")
    ("'iah' repeated", None)
    """
    text = answer.strip()
    if not text:
        return "empty"
    longest = max(_REPEAT.finditer(text), key=lambda m: len(m.group(0)), default=None)
    if longest is not None and len(longest.group(0)) >= COLLAPSE_SHARE * len(text):
        return f"{longest.group(1)!r} repeated"
    return None


def collapsed_share(answers: Sequence[str]) -> float:
    """The share of ``answers`` that :func:`collapsed` flags."""
    return sum(collapsed(a) is not None for a in answers) / len(answers) if answers else 0.0
