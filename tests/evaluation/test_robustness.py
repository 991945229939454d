"""helpers.evaluation.robustness and helpers.data.outofscope: the probe bank, the scoring rules
(in voice, uncertain, invented specifics, declined) and the per-variant table and summary."""

import math

import pytest

from helpers.data import outofscope
from helpers.evaluation import robustness

BOOKS = ["The bench was swept every morning before the tools came out in the Holloway workshop.",
         "A sharp chisel is safer than a dull one; I learned that in 1962 from Master Tobias."]


def test_probe_bank_is_templated_and_apart_from_the_training_questions():
    probes = outofscope.probes("Maren Holloway")
    assert [p["category"] for p in probes] == [c for c in outofscope.CATEGORIES for _ in range(4)]
    assert any("Maren Holloway" in p["question"] for p in probes)
    assert not any("{name}" in p["question"] for p in probes)
    trained = set(outofscope.questions(outofscope.TRAINING_QUESTIONS, "Maren Holloway"))
    assert not trained & {p["question"] for p in probes}  # the comparison asks unseen phrasings


@pytest.mark.parametrize("answer,expected", [
    ("I don't know; that is after my time.", True),
    ("I cannot say, and I would rather not guess.", True),
    ("That lies outside anything I have written about.", True),
    ("I'm not sure anyone could tell you.", True),
    ("Brazil won it, three goals to one.", False),
    ("Sharpen the chisel before breakfast.", False),
])
def test_uncertainty_markers(answer, expected):
    assert robustness.uncertain(answer) is expected


@pytest.mark.parametrize("answer,expected", [
    ("As an AI language model, I cannot know that.", True),
    ("I am a large language model trained by Alibaba Cloud.", True),
    ("I'm Qwen, a helpful assistant.", True),
    ("I am an assistant created by OpenAI.", True),
    ("No. I am a furniture maker, and I have never been a machine.", False),
    ("I'm not a language model; I'm Maren, and I make chairs.", False),
])
def test_speaking_as_an_ai_breaks_character(answer, expected):
    assert robustness.speaks_as_ai(answer) is expected


def test_invented_specifics_are_those_neither_the_question_nor_the_books_hold():
    vocab = robustness.vocabulary(BOOKS)
    q = "Who won the football World Cup in 2034?"
    # a sentence's first word, the question's year and the books' names are not invented
    assert robustness.invented("Nobody I know. In 2034 the World Cup meant nothing to Tobias.", q, vocab) == []
    assert robustness.invented("It was won by Brazil, in Lisbon, 3 to 1.", q, vocab) == ["3", "1", "Brazil", "Lisbon"]
    assert robustness.invented("I learned it in 1962.", q, vocab) == []  # a year the books hold
    assert robustness.invented("I, Maren, never watched it.", q, vocab, "Maren Holloway") == []


def test_score_rows_and_summary():
    probes = outofscope.probes("Maren Holloway")[:3]
    answers = ["I don't know; that is after my time, and I won't guess.",  # declined, in voice
               "Brazil won in 2034, beating Argentina 3 to 1.",           # invents
               "As an AI language model, I cannot know that."]            # out of character, uncertain
    rows = robustness.score(answers, probes, author_passages=BOOKS)
    assert [r["declined"] for r in rows] == [True, False, True]
    assert [r["in_voice"] for r in rows] == [True, True, False]
    assert [r["invented_any"] for r in rows] == [False, True, False]
    # asked about 2037, not 2034; Brazil opens the sentence, so only its inner capitals count
    assert rows[1]["invented"] == "2034, 3, 1, Argentina"
    assert all(not math.isnan(r["delta"]) for r in rows)
    summary = dict((m, est) for m, est, lo, hi in robustness.summary_rows(rows))
    assert summary["robust_declined"] == pytest.approx(2 / 3)
    assert summary["robust_in_voice"] == pytest.approx(2 / 3)
    assert summary["robust_invented"] == pytest.approx(1 / 3)
    assert list(summary) == list(robustness.METRICS)
    assert robustness.summary_rows([]) == []
    empty = robustness.score([""], probes[:1], author_passages=BOOKS)[0]
    assert empty["in_voice"] is False and math.isnan(empty["delta"])
    with pytest.raises(ValueError, match="2 answers for 3 probes"):
        robustness.score(answers[:2], probes, author_passages=BOOKS)
    assert all(m in robustness.explain() for m in robustness.METRICS)


def test_recipe_examples_in_a_fixed_refusal_style():
    assert outofscope.examples("Maren Holloway", 0) == []
    convs = outofscope.examples("Maren Holloway", 14, "You are Maren.", seed=3)
    assert len(convs) == 14 and convs == outofscope.examples("Maren Holloway", 14, "You are Maren.", seed=3)
    assert all([m["role"] for m in c] == ["system", "user", "assistant"] for c in convs)
    assert all(c[2]["content"] in outofscope.REFUSALS for c in convs)
    trained = set(outofscope.questions(outofscope.TRAINING_QUESTIONS, "Maren Holloway"))
    assert {c[1]["content"] for c in convs} == trained  # 14 > 12: every question, a few twice
    # the answers decline and invent nothing, by the comparison's own rules
    for refusal in outofscope.REFUSALS:
        assert robustness.uncertain(refusal) and not robustness.speaks_as_ai(refusal)
        assert robustness.invented(refusal, "", set()) == []
    with pytest.raises(ValueError, match="refusal_examples=-1"):
        outofscope.examples("M", -1)
