"""Scores for answers: fact recall against taught key facts."""

from __future__ import annotations

from typing import Sequence


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
