"""Scores for answers: fact recall against taught key facts, split by whether the question's
phrasing was in the training data (recall of trained questions) or not (recall of the facts)."""

from __future__ import annotations

import logging
import re
from typing import Iterable, Sequence

log = logging.getLogger(__name__)

#: the two kinds of question phrasing, in display order
PHRASINGS = ("trained", "unseen")


def contains_fact(answer: str, key_fact: str) -> bool:
    """Whether ``answer`` contains ``key_fact`` (case-insensitive, whitespace-normalised)."""
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return norm(key_fact) in norm(answer)


def fact_recall(answers: Sequence[str], key_facts: Sequence[str]) -> float:
    """The share of answers that contain their key fact."""
    if len(answers) != len(key_facts):
        raise ValueError(f"{len(answers)} answers for {len(key_facts)} key facts")
    if not answers:
        return 0.0
    return sum(contains_fact(a, k) for a, k in zip(answers, key_facts)) / len(answers)


def normalise_question(text: str) -> str:
    """A question's phrasing for comparison: lower case, words only (punctuation and spacing
    dropped), so "Who is Mariya Sha?" and "who is  mariya sha" are the same phrasing."""
    return " ".join(re.findall(r"\w+", text.lower()))


def trained_phrasings(prompts: Iterable[str]) -> set[str]:
    """The normalised phrasings of the training prompts (user turns)."""
    return {normalise_question(p) for p in prompts}


def is_trained(questions: Sequence[str], prompts: Iterable[str]) -> list[bool]:
    """Per question: whether its phrasing (normalised) is one of the training prompts."""
    trained = trained_phrasings(prompts)
    return [normalise_question(q) in trained for q in questions]


def mark_seen(probes: Sequence[dict], prompts: Iterable[str] | None = None) -> list[dict]:
    """The probes, each with ``seen`` (its phrasing is a training prompt) set. With the training
    ``prompts`` the data decides, and a probe file's own ``seen`` that disagrees is logged;
    without them a probe's ``seen`` is kept, and a probe without one counts as trained (what probe
    files held before the split)."""
    if prompts is None:
        return [{**p, "seen": bool(p.get("seen", True))} for p in probes]
    flags = is_trained([p["question"] for p in probes], prompts)
    wrong = [p["question"] for p, f in zip(probes, flags) if "seen" in p and bool(p["seen"]) != f]
    if wrong:
        log.warning("%d probe(s) marked seen/unseen against the training data, which decides: %s",
                    len(wrong), "; ".join(wrong[:3]))
    return [{**p, "seen": f} for p, f in zip(probes, flags)]


def recall_split(answers: Sequence[str], probes: Sequence[dict]) -> dict[str, float | None]:
    """Fact recall on the trained phrasings and on the unseen ones, separately: ``{"trained":
    ..., "unseen": ...}``, ``None`` where there is no probe of that kind. Each probe needs
    ``key_fact`` and ``seen`` (see :func:`mark_seen`)."""
    if len(answers) != len(probes):
        raise ValueError(f"{len(answers)} answers for {len(probes)} probes")
    out: dict[str, float | None] = {}
    for kind, seen in zip(PHRASINGS, (True, False)):
        pairs = [(a, p["key_fact"]) for a, p in zip(answers, probes) if bool(p["seen"]) is seen]
        out[kind] = fact_recall(*zip(*pairs)) if pairs else None
    return out


def split_table(metrics: dict, name: str, seen: Sequence[bool], labels: Sequence[str] = ("base", "tuned")):
    """A pandas DataFrame, one row per label (base, tuned), one column per phrasing: the
    ``<name>_<label>`` (trained) and ``<name>_<label>_unseen`` metrics; the column names carry
    how many questions each holds."""
    import pandas as pd
    n = sum(bool(s) for s in seen)
    cols = (f"trained phrasing ({n})", f"unseen phrasing ({len(seen) - n})")
    rows = {label: dict(zip(cols, (metrics.get(f"{name}_{label}"), metrics.get(f"{name}_{label}_unseen"))))
            for label in labels if f"{name}_{label}" in metrics or f"{name}_{label}_unseen" in metrics}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def recall_table(metrics: dict, probes: Sequence[dict], labels: Sequence[str] = ("base", "tuned")):
    """Fact recall as :func:`split_table`: ``fact_recall_<label>`` (trained phrasings) and
    ``fact_recall_<label>_unseen``, one row per label."""
    return split_table(metrics, "fact_recall", [p["seen"] for p in probes], labels)
