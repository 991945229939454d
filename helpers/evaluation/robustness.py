"""Persona robustness: out-of-scope and unanswerable questions (the probes of
:mod:`helpers.data.outofscope`: events after the author's time, questions about the model
itself, topics the books never touch), each answer scored by rules:

- ``in_voice``: the answer has text and does not speak as an AI system (no "I am an AI / a
  language model / an assistant", no "trained by OpenAI", no model or lab names such as Qwen);
  ``delta`` (Burrows' Delta to the author, lower is closer) and ``tfidf`` say how close its
  words are to the books.
- ``uncertain``: the answer says it does not know, cannot say or will not guess (a marker list).
- ``invented``: specifics the answer brings in that neither the question nor the books hold:
  numbers and years, and capitalised words inside a sentence (names of people, places, things).
- ``declined``: uncertain and nothing invented, i.e. declined to invent.

A per-variant table (:func:`table`), the summary metrics ``robust_in_voice``,
``robust_declined``, ``robust_invented`` and ``robust_delta`` (:func:`summary_rows`) and a plot
(:func:`plot`) go into the comparison report.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from helpers.data.outofscope import probes as default_probes  # noqa: F401  (the bank, re-exported)
from helpers.evaluation import metrics
from helpers.evaluation.text import words

#: what the summary table and the plot show, in order
METRICS = ("robust_in_voice", "robust_declined", "robust_invented", "robust_delta")

#: one sentence per metric, printed beside the table
EXPLAINED = {
    "robust_in_voice": "share of answers with text that stay in character (no 'I am an AI / a language model', no lab or model names); higher is better",
    "robust_declined": "share of answers that say they do not know or will not guess and invent nothing; higher is better",
    "robust_invented": "share of answers that bring in a number, year or proper name found in neither the question nor the books; lower is better",
    "robust_delta": "Burrows' Delta of these answers to the author's passages (lower: closer to the author's style)",
}

_UNCERTAIN = re.compile(
    r"\b(?:i\s+(?:do\s+not|don't|dont|cannot|can't|can\s*not|couldn't|could\s+not|won't|will\s+not|"
    r"wouldn't|would\s+not|have\s+no|haven't|never)\s+(?:know|say|tell|guess|answer|speak|pretend|"
    r"been|seen|heard|studied|idea|way|knowledge|claim)|not\s+(?:sure|certain|something\s+i)|"
    r"no\s+(?:idea|way\s+of\s+knowing|knowledge)|beyond\s+(?:me|my|what\s+i)|outside\s+(?:my|what\s+i|anything)|"
    r"unable\s+to|i\s+am\s+not\s+able|i'm\s+not\s+able|rather\s+not\s+guess|uncertain|unknown\s+to\s+me)",
    re.IGNORECASE)

_AS_AI = re.compile(
    r"\b(?:(?:i\s+am|i'm|as)\s+(?:an?\s+)?(?:ai\b|artificial\s+intelligence|(?:large\s+)?language\s+model|"
    r"(?:virtual\s+|ai\s+)?assistant|chatbot|neural\s+network)|"
    r"(?:trained|developed|created|built|made)\s+by\s+(?:openai|alibaba|anthropic|google|meta|deepmind|qwen)|"
    r"qwen|openai|chatgpt|gpt-\d|alibaba\s+cloud|tongyi)", re.IGNORECASE)

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITAL = re.compile(r"[A-Z][A-Za-z'\u2019-]+")
_SENTENCE_BREAK = set(".!?:;\"'\u201c\u2018(\n-\u2014")
_ALWAYS_FINE = {"i", "i'm", "i'd", "i've", "i'll", "ai", "ok"}  # words, not invented specifics


def uncertain(answer: str) -> bool:
    """Whether the answer says it does not know, cannot say or will not guess."""
    return bool(_UNCERTAIN.search(answer.replace("\u2019", "'")))


def speaks_as_ai(answer: str) -> bool:
    """Whether the answer speaks as an AI system or names a model or lab (out of character)."""
    return bool(_AS_AI.search(answer.replace("\u2019", "'")))


def invented(answer: str, question: str, vocabulary: set[str], persona_name: str = "") -> list[str]:
    """Numbers and capitalised words inside a sentence that the answer brings in: absent from
    the question, the persona's name and ``vocabulary`` (the books' words, lower case)."""
    known = set(words(question)) | set(words(persona_name)) | vocabulary
    found: list[str] = []
    numbers = set(_NUMBER.findall(question))
    for m in _NUMBER.finditer(answer):
        if m.group() not in numbers and m.group() not in known:
            found.append(m.group())
    for m in _CAPITAL.finditer(answer):
        before = answer[:m.start()].rstrip()
        if not before or before[-1] in _SENTENCE_BREAK:
            continue  # a sentence's first word is capitalised anyway
        ws = words(m.group())
        if ws and not all(w in known or w in _ALWAYS_FINE for w in ws):
            found.append(m.group())
    return list(dict.fromkeys(found))


def vocabulary(passages: Sequence[str]) -> set[str]:
    """The books' words, lower case (what :func:`invented` accepts)."""
    return {w for p in passages for w in words(p)}


def score(answers: Sequence[str], probes: Sequence[dict], *, author_passages: Sequence[str],
          index: "metrics.MemorisationIndex | None" = None, persona_name: str = "") -> list[dict]:
    """One row per probe answer: ``category``, ``question``, ``answer``, ``in_voice``,
    ``uncertain``, ``invented`` (the specifics, as text), ``invented_any``, ``declined``,
    ``delta`` and ``tfidf`` (nan for an empty answer)."""
    if len(answers) != len(probes):
        raise ValueError(f"robustness.score: {len(answers)} answers for {len(probes)} probes; "
                         "pass one answer per probe, in order.")
    vocab = vocabulary(author_passages)
    style = metrics.score_answers(answers, author_passages=author_passages,
                                  index=index or metrics.MemorisationIndex(author_passages))
    rows = []
    for probe, ans, st in zip(probes, answers, style):
        made_up = invented(ans, probe["question"], vocab, persona_name)
        unsure = uncertain(ans)
        rows.append({"category": probe["category"], "question": probe["question"], "answer": ans,
                     "in_voice": bool(ans.strip()) and not speaks_as_ai(ans), "uncertain": unsure,
                     "invented": ", ".join(made_up), "invented_any": bool(made_up),
                     "declined": unsure and not made_up, "delta": st["delta"], "tfidf": st["tfidf"]})
    return rows


def summary_rows(rows: Sequence[dict]) -> list[tuple[str, float, float, float]]:
    """``(metric, estimate, low, high)`` for :data:`METRICS`: means over the probe answers with
    95% bootstrap intervals."""
    if not rows:
        return []
    keys = {"robust_in_voice": "in_voice", "robust_declined": "declined",
            "robust_invented": "invented_any", "robust_delta": "delta"}
    out = []
    for name, col in keys.items():
        est, lo, hi = metrics.bootstrap_ci([float(r[col]) for r in rows])
        out.append((name, est, lo, hi))
    return out


def table(comparison) -> Any:
    """Per variant and category: the share of answers in voice, declining and inventing, and
    the mean delta (a DataFrame; empty when the comparison asked no probes)."""
    import pandas as pd
    out = []
    for v in comparison.done:
        rows = comparison.results[v.name].get("robustness", {}).get("rows", [])
        for cat in dict.fromkeys(r["category"] for r in rows):
            mine = [r for r in rows if r["category"] == cat]
            deltas = [r["delta"] for r in mine if not math.isnan(r["delta"])]
            out.append({"variant": v.name, "category": cat, "probes": len(mine),
                        "in_voice": sum(r["in_voice"] for r in mine) / len(mine),
                        "declined": sum(r["declined"] for r in mine) / len(mine),
                        "invented": sum(r["invented_any"] for r in mine) / len(mine),
                        "delta": sum(deltas) / len(deltas) if deltas else math.nan})
    return pd.DataFrame(out)


def answers_table(comparison) -> Any:
    """Every probe answer with its scores: probes down, one row per variant and probe."""
    import pandas as pd
    out = [{"variant": v.name, **{k: r[k] for k in ("category", "question", "answer", "in_voice",
                                                      "declined", "invented")}}
           for v in comparison.done
           for r in comparison.results[v.name].get("robustness", {}).get("rows", [])]
    return pd.DataFrame(out)


def explain() -> str:
    """One sentence per metric, as lines to print beside the table."""
    return "\n".join(f"{k}: {v}." for k, v in EXPLAINED.items())


def plot(summary):
    """Grouped bars of the robustness metrics per variant; a sentence instead when no variant
    was asked the probes."""
    from helpers.evaluation.summary_plots import grouped_bars
    present = [m for m in METRICS if m in set(summary["metric"])]
    if not present:
        return "no robustness probes were asked (compare.run(..., probes=...))"
    return grouped_bars(summary, present)
