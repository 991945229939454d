"""The prompts that ask for questions, their versions, and reading the questions in a reply.

``PROMPT_VERSION`` hashes the prompt text, so a new prompt never reuses answers made for the old
one; the two-pass prompts over a whole transcript have their own ``TWO_PASS_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import re

from helpers.books.passage import Passage
from helpers.claude.client import MalformedReply
from helpers.claude.pricing import PROMPT_OVERHEAD_TOKENS

OUTPUT_TOKENS_PER_QUESTION = 32  # a question is 15 to 25 words; quotes and commas

SYSTEM_PROMPT = (
    "You write questions for a question-answering dataset made from books. The answer to each "
    "question will be the passage you are shown, word for word, so ask only questions that the "
    "passage itself answers.")

USER_TEMPLATE = """Passage from "{book}":

<passage>
{text}
</passage>

Write {n} different questions that a reader might ask the author and that this passage answers. \
Each question must make sense on its own, without the passage in front of the reader: name the \
people, places, ideas or events it is about, and never say "the passage" or "the text". \
Reply with only a JSON array of exactly {n} strings."""

# The version changes by itself whenever the prompt text does: a new prompt never reuses answers
# made for the old one.
PROMPT_VERSION = "q1-" + hashlib.sha256((SYSTEM_PROMPT + USER_TEMPLATE).encode()).hexdigest()[:8]


# -- prompt and parsing ---------------------------------------------------------------------

def build_prompt(passage: Passage, n: int) -> str:
    return USER_TEMPLATE.format(book=passage.book, text=passage.text, n=n)


def parse_questions(reply: str, n: int) -> list[str]:
    """The N questions in a reply. Prose or ```json fences around the array are fine; anything
    else (no array, not exactly N distinct non-empty strings) raises :class:`MalformedReply`."""
    candidates = [m.group(1) for m in re.finditer(r"```(?:json)?\s*(.*?)```", reply, re.DOTALL)]
    candidates.append(reply)
    decoder = json.JSONDecoder()
    problem = "no JSON array in the reply"
    for text in candidates:
        for i, ch in enumerate(text):
            if ch != "[":
                continue
            try:
                value, _ = decoder.raw_decode(text, i)
            except ValueError:
                continue
            if not isinstance(value, list):
                continue
            if not all(isinstance(q, str) for q in value):
                problem = "the array holds something other than strings"
                continue
            qs = [q.strip() for q in value]
            if len(qs) != n:
                problem = f"expected {n} questions, got {len(qs)}"
                continue
            if not all(qs):
                problem = "an empty question"
                continue
            if len({q.lower() for q in qs}) != n:
                problem = "the same question twice"
                continue
            return qs
    snippet = reply.strip().replace("\n", " ")[:80]
    raise MalformedReply(f"{problem} (reply began {snippet!r})")


def request_tokens(passage: Passage, n: int) -> tuple[int, int]:
    """Approximate (input, output) tokens of one request: characters / 4 plus framing."""
    chars = len(SYSTEM_PROMPT) + len(build_prompt(passage, n))
    return chars // 4 + PROMPT_OVERHEAD_TOKENS, OUTPUT_TOKENS_PER_QUESTION * n + 8


# -- two passes over a long transcript --------------------------------------------------------

TWO_PASS_SYSTEM = ("You help build a question-answering dataset from the transcript of a "
                   "speaker.")

TWO_PASS_QUESTIONS = """Here is a transcript:

<transcript>
{text}
</transcript>

Write {n} different questions that someone might ask the speaker and that the speaker answers \
somewhere in this transcript. Each question must make sense on its own. Reply with only a JSON \
array of exactly {n} strings."""

TWO_PASS_ANSWER = """Here is a transcript:

<transcript>
{text}
</transcript>

Question: {question}

Answer as the speaker would, in the first person, using only what the transcript says and \
keeping the speaker's own words where you can. Reply with the answer only."""

TWO_PASS_VERSION = "tp1-" + hashlib.sha256(
    (SYSTEM_PROMPT + TWO_PASS_QUESTIONS + TWO_PASS_ANSWER).encode()).hexdigest()[:8]
