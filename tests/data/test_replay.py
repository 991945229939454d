"""Replay examples: whole sentences, questions apart from the general-knowledge probes."""

import pytest

from helpers.data import replay
from helpers.evaluation import health


def test_answers_are_cut_to_whole_sentences():
    assert replay.whole_sentences("Paris. It is on the Seine and has many") == "Paris."
    assert replay.whole_sentences("Is it? Yes!") == "Is it? Yes!"
    assert replay.whole_sentences("no end at all") == ""


def test_conversations_skip_answers_without_a_sentence_and_carry_the_system_prompt():
    convs = replay.conversations([("Q1?", "A one. And a cut"), ("Q2?", "cut off")], "Be brief.")
    assert convs == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q1?"},
                      {"role": "assistant", "content": "A one."}]]


def test_replay_questions_are_not_the_measured_ones():
    measured = {p["question"] for p in health.GENERAL_PROBES}
    assert not measured & set(replay.REPLAY_QUESTIONS)
    assert len(set(replay.REPLAY_QUESTIONS)) == len(replay.REPLAY_QUESTIONS) >= replay.DEFAULT_REPLAY
    assert replay.questions(3) == list(replay.REPLAY_QUESTIONS[:3])
    with pytest.raises(ValueError, match="replay=-1"):
        replay.questions(-1)
