"""Fact recall split by phrasing: trained (a training prompt) vs unseen (not in the data)."""

import json
import logging

import pytest

from helpers import data
from helpers.core.paths import ROOT
from helpers.evaluation import recall

MARIYA = ROOT / "NoteBooks" / "Mariya"


def probe(q, k, seen):
    return {"question": q, "key_fact": k, "seen": seen}


def test_normalised_phrasing_ignores_case_spacing_and_punctuation():
    assert recall.normalise_question("Who is  Mariya Sha?") == recall.normalise_question("who is mariya sha")
    assert recall.is_trained(["WHO is Mariya Sha", "Who's Mariya Sha?"], ["Who is Mariya Sha?"]) == [True, False]


def test_recall_split_on_a_hand_computed_case():
    probes = [probe("t1", "Vellistrand", True), probe("t2", "Quorrowdeep", True),
              probe("t3", "Sylvarch", True), probe("u1", "Vellistrand", False),
              probe("u2", "Quorrowdeep", False)]
    answers = ["of vellistrand", "QUORROWDEEP it is", "oak", "no idea", "born in Quorrowdeep"]
    # trained: 2 of 3 answers hold the fact; unseen: 1 of 2
    assert recall.recall_split(answers, probes) == {"trained": pytest.approx(2 / 3), "unseen": 0.5}
    assert recall.recall_split(answers[:3], probes[:3]) == {"trained": pytest.approx(2 / 3), "unseen": None}
    with pytest.raises(ValueError, match="2 answers for 5 probes"):
        recall.recall_split(answers[:2], probes)


def test_the_training_data_decides_what_is_trained(caplog):
    probes = [{"question": "Who is X?", "key_fact": "k"}, probe("Where is X?", "k", True),
              probe("What is X?", "k", False)]
    with caplog.at_level(logging.WARNING, logger="helpers.evaluation.recall"):
        marked = recall.mark_seen(probes, ["who is x", "What is X?"])
    assert [p["seen"] for p in marked] == [True, False, True]
    assert "2 probe(s)" in caplog.text and "Where is X?" in caplog.text
    assert "seen" not in probes[0], "the caller's probes are not changed"
    # without the data: a probe's own mark, trained when it has none
    assert [p["seen"] for p in recall.mark_seen(probes)] == [True, True, False]


def test_recall_table_has_trained_and_unseen_columns():
    probes = [probe("a", "k", True)] * 3 + [probe("b", "k", False)] * 2
    metrics = {"fact_recall_base": 0.0, "fact_recall_base_unseen": 0.0,
               "fact_recall_tuned": 1.0, "fact_recall_tuned_unseen": 0.5, "final_loss": 0.1}
    table = recall.recall_table(metrics, probes)
    assert list(table.index) == ["base", "tuned"]
    assert list(table.columns) == ["trained phrasing (3)", "unseen phrasing (2)"]
    assert table.loc["tuned"].tolist() == [1.0, 0.5]
    assert list(recall.recall_table({"fact_recall_tuned": 1.0}, probes).index) == ["tuned"]


def test_mariya_probes_unseen_phrasings_are_not_in_the_training_data():
    prompts = data.load(MARIYA / "mariya.jsonl").prompts()
    trained = recall.trained_phrasings(prompts)
    probes = data.load_probes(MARIYA / "mariya_probes.jsonl")
    assert all("seen" in p for p in probes)
    seen = [p for p in probes if p["seen"]]
    unseen = [p for p in probes if not p["seen"]]
    assert [p["question"] for p in seen if recall.normalise_question(p["question"]) not in trained] == []
    assert [p["question"] for p in unseen if recall.normalise_question(p["question"]) in trained] == []
    # every fact is asked both ways, each phrasing once
    assert len(seen) == len(unseen) == 30
    assert sorted(p["key_fact"] for p in seen) == sorted(p["key_fact"] for p in unseen)
    assert len({recall.normalise_question(p["question"]) for p in probes}) == len(probes)
    # the data agrees with the file's marks
    assert [p["seen"] for p in recall.mark_seen(probes, prompts)] == [p["seen"] for p in probes]


def test_probe_seen_must_be_a_boolean(tmp_path):
    p = tmp_path / "probes.jsonl"
    p.write_text(json.dumps({"question": "Q", "key_fact": "K", "seen": "yes"}) + "\n")
    msg = str(pytest.raises(data.DataError, data.load_probes, p).value)
    assert f"{p}:1: seen='yes'" in msg and "true" in msg and "false" in msg
