"""Collapsed answers and the general-knowledge probes."""

import pytest

from helpers.evaluation import health
from helpers.pipeline import finetune


@pytest.mark.parametrize("answer, why", [
    ("", "empty"),
    ("   \n", "empty"),
    ("iahiahiahiahiahiahiahiah", "'iah' repeated"),
    ("the the the the the the the", "'the ' repeated"),
    ("!!!!!!!!", "'!' repeated"),
])
def test_collapsed_answers_are_flagged(answer, why):
    assert health.collapsed(answer) == why


@pytest.mark.parametrize("answer", [
    "Paris is the capital of France.",
    "Mariya Sha was born in Quorrowdeep, Quorrowdeep.",       # a word twice is not a collapse
    "Yes. Yes. Yes. And then a long sentence that carries on for a good while after it.",
    "ok",
])
def test_whole_answers_are_not(answer):
    assert health.collapsed(answer) is None


def test_collapsed_share():
    assert health.collapsed_share(["a a a a a a", "Fine.", "", "Good answer."]) == 0.5
    assert health.collapsed_share([]) == 0.0


def test_general_probes_have_one_word_facts_and_distinct_questions():
    qs = [p["question"] for p in health.GENERAL_PROBES]
    assert len(set(qs)) == len(qs) == 30
    assert all(" " not in p["key_fact"] for p in health.GENERAL_PROBES)


def test_before_after_table_flags_collapsed_tuned_answers_only_when_there_are_some():
    ok = finetune.before_after_table(["Q1", "Q2"], ["a", "b"], ["Fine.", "Also fine."])
    assert "tuned answer collapsed" not in ok.columns
    bad = finetune.before_after_table(["Q1", "Q2"], ["a", "b"], ["Fine.", "iahiahiahiahiahiah"])
    assert list(bad["tuned answer collapsed"]) == ["", "'iah' repeated"]


def test_general_score_takes_the_other_right_words():
    right = [p["key_fact"] for p in health.GENERAL_PROBES]
    assert health.general_score(right) == 1.0
    usd = [a if p["key_fact"] != "dollar" else "It is the USD." for a, p in zip(right, health.GENERAL_PROBES)]
    assert health.general_score(usd) == 1.0
    assert health.general_score(["I do not know."] * 30) == 0.0
    with pytest.raises(ValueError, match="3 answers for 30"):
        health.general_score(["a", "b", "c"])
