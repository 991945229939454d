"""helpers.questions.facts: closed-book fact questions with key facts (rules, a local model, the
fake Messages API), read from a training-set folder and balanced between trained and held-out."""

from __future__ import annotations

import json

import pytest

from helpers.books.passage import Passage
from helpers.claude.client import MalformedReply, QAConfigError
from helpers.questions import facts
from tests.support.anthropic_fixtures import client, fake, no_credentials  # noqa: F401 (fixtures)

TEXT = ("I was seventeen when I first walked into the workshop on Tanner Street. "
        "The owner, Edda Brandt, kept her chisels in a canvas roll. "
        "She sharpened them every morning before the kettle boiled. "
        "Her apprentice Pavel swept the floor, and Pavel never complained. "
        "The workbench was made of beech and stood under a lantern.")


def _p(text=TEXT, book="the_patient_workshop", **kw):
    return Passage(text=text, book=book, first_page=1, last_page=1, **kw)


def test_rule_questions_blank_a_name_then_a_number_then_a_rare_word():
    got = facts.rule_fact_questions(_p(), 5)
    # one per sentence: names first (in order), then rare words of seven letters or more
    assert [f for _, f in got] == [["Tanner Street"], ["Edda Brandt"], ["apprentice"], ["workbench"]]
    q, (fact,) = got[1]
    assert q.startswith('In "The Patient Workshop", what completes this sentence: "The owner, ____, kept')
    assert fact not in q and "____" in q
    # "Pavel" appears twice in its sentence (the question would give it away): that sentence gives
    # a rare word instead; "seventeen" loses to its sentence's name; the kettle sentence has no
    # candidate ("sharpened" and "morning" are inflections)
    assert not any("Pavel" in f for _, (f,) in got)
    assert facts.rule_fact_questions(_p(), 5) == got               # deterministic
    assert len(facts.rule_fact_questions(_p(), 2)) == 2
    number = facts.rule_fact_questions(_p("We left at dawn and walked for twelve miles that day."), 1)
    assert number == [('In "The Patient Workshop", what completes this sentence: "We left at dawn and '
                       'walked for ____ miles that day."? Answer with the missing words.', ["twelve"])]


def _sets(folder, trained, heldout, questions=True):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "v1_train.jsonl", "w") as f:
        for p in trained:
            f.write(json.dumps({"messages": [{"role": "user", "content": "Continue."},
                                             {"role": "assistant", "content": p.text}]}) + "\n")
    (folder / "heldout.json").write_text(json.dumps({"heldout": [p.to_dict() for p in heldout]}))
    if questions:
        with open(folder / "questions.jsonl", "w") as f:
            for p in trained:
                f.write(json.dumps({"question": "q?", "answer": p.text, "book": p.book,
                                    "chapter": p.chapter, "first_page": 3}) + "\n")
    return folder


def _passages(prefix, k, chapter):
    names = ["Alder", "Birch", "Cedar", "Damson", "Elm", "Fir", "Gorse", "Hazel"]
    return [_p(f"On Monday {names[i]} Hollis carried {i + 2} planks to the yard. "
               f"The {prefix} foreman counted them twice.", chapter=chapter, index=i) for i in range(k)]


def test_passages_from_sets_and_a_balanced_set(tmp_path):
    trained, heldout = _passages("north", 6, "Chapter 1"), _passages("south", 3, "Chapter 9")
    folder = _sets(tmp_path / "sets", trained, heldout)
    sets = facts.passages_from_sets(folder)
    assert [p.text for p in sets["trained"]] == [p.text for p in trained]
    assert sets["trained"][0].chapter == "Chapter 1" and sets["trained"][0].first_page == 3
    assert [p.sha256 for p in sets["heldout"]] == [p.sha256 for p in heldout]

    qs = facts.balanced(sets, 4)
    assert [q.split for q in qs] == ["trained"] * 4 + ["heldout"] * 4
    trained_qs = [q for q in qs if q.split == "trained"]
    # spread over the trained passages, one question each
    assert len({q.passage_sha256 for q in trained_qs}) == 4
    assert {q.passage_sha256 for q in trained_qs} <= {p.sha256 for p in trained}
    # three held-out passages for four questions: one passage gives a second question
    held_qs = [q for q in qs if q.split == "heldout"]
    assert len({q.passage_sha256 for q in held_qs}) == 3 and len({q.question for q in held_qs}) == 4
    assert all(q.key_facts and q.source == "rule" for q in qs)
    assert facts.FactQuestion.from_dict(qs[0].to_dict()) == qs[0]


def test_set_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make the training sets first"):
        facts.passages_from_sets(tmp_path)
    same = _passages("north", 2, "c")
    with pytest.raises(ValueError, match="both trained and held out"):
        facts.passages_from_sets(_sets(tmp_path / "leak", same, same[:1]))
    with pytest.raises(QAConfigError, match="knowledge_source='wiki'"):
        facts.fact_questions([_p()], source="wiki")
    with pytest.raises(QAConfigError, match="knowledge_questions=0"):
        facts.balanced({"trained": [_p()]}, 0)
    with pytest.raises(QAConfigError, match="needs cache_path"):
        facts.fact_questions([_p()], source="anthropic")
    with pytest.raises(QAConfigError, match="needs local_model"):
        facts.fact_questions([_p()], source="local", cache_path=tmp_path / "f.jsonl")


def test_parse_keeps_key_facts_that_are_in_the_passage():
    reply = ('Here you are:\n[{"question": "Where was the workshop?", "key_facts": ["Tanner Street"]},'
             '{"question": "Who owned it?", "key_facts": ["Edda Brandt", "a castle"]},'
             '{"question": "What colour was the sky?", "key_facts": ["purple"]}]')
    assert facts.parse_fact_questions(reply, 3, TEXT) == [
        ("Where was the workshop?", ["Tanner Street"]), ("Who owned it?", ["Edda Brandt"])]
    assert len(facts.parse_fact_questions(reply, 1, TEXT)) == 1
    for bad in ("no json", '["a", "b"]', '[{"question": "Q?", "key_facts": ["purple"]}]'):
        with pytest.raises(MalformedReply):
            facts.parse_fact_questions(bad, 2, TEXT)


def test_api_source_is_cached_and_asks_nothing_twice(fake, client, tmp_path):
    reply = json.dumps([{"question": "What street was Edda Brandt's workshop on?",
                         "key_facts": ["Tanner Street"]}])
    fake.add(reply="prose")                       # malformed first: asked again
    fake.add(reply=reply, times=-1)
    passages = [_p(), _p(TEXT + " It rained.")]
    got = facts.fact_questions(passages, 1, source="anthropic", cache_path=tmp_path / "f.jsonl",
                               client=client, retry_base_s=0.01)
    assert fake.count() == 3
    assert got[passages[0].sha256] == [{"question": "What street was Edda Brandt's workshop on?",
                                        "key_facts": ["Tanner Street"], "source": "anthropic"}]
    sent = fake.log[0]["text"]
    assert "Tanner Street" in sent and "key_facts" in sent and "The Patient Workshop" in sent
    again = facts.fact_questions(passages, 1, source="anthropic", cache_path=tmp_path / "f.jsonl")
    assert again == got and fake.count() == 3      # no key needed: everything cached


def test_local_source_falls_back_to_rules_for_an_unusable_reply(tmp_path, monkeypatch):
    good = json.dumps([{"question": "Who kept chisels in a canvas roll?", "key_facts": ["Edda Brandt"]}])
    monkeypatch.setattr(facts, "local_generate", lambda model, prompts, *a, **k: [good, "nonsense"][:len(prompts)])
    model = type("M", (), {"name_or_path": "tiny"})()
    # "Quill" could be half a name ("Mara" opens the sentence): the number is asked instead
    passages = [_p(), _p("Mara Quill counted seven boats in the harbour at dusk.")]
    got = facts.fact_questions(passages, 1, source="local", local_model=(model, None),
                               cache_path=tmp_path / "f.jsonl")
    assert got[passages[0].sha256][0]["source"] == "local"
    assert got[passages[1].sha256] == [{"question": facts.rule_fact_questions(passages[1], 1)[0][0],
                                        "key_facts": ["seven"], "source": "rule"}]
    monkeypatch.setattr(facts, "local_generate", lambda *a, **k: pytest.fail("asked again"))
    assert facts.fact_questions(passages, 1, source="local", local_model=(model, None),
                                cache_path=tmp_path / "f.jsonl") == got


def test_facts_common_in_the_book_are_asked_last():
    # "Edda" is in every passage (a model that learned only the voice says it everywhere);
    # each passage's other fact is its own
    boats = ["Marigold", "Heron", "Kestrel", "Juniper", "Osprey", "Bramble"]
    colours = ["red", "blue", "green", "grey", "black", "white"]
    passages = [_p(f"Every spring Edda painted the {c} boat. She called the {c} one {b}.")
                for b, c in zip(boats, colours)]
    assert "edda" in facts.common_facts(passages) and "marigold" not in facts.common_facts(passages)
    assert facts.common_facts(passages[:4]) == set()                # too few passages to tell
    got = facts.balanced({"trained": passages}, 7)
    assert sorted(q.key_facts for q in got[:6]) == sorted((b,) for b in boats)
    assert got[6].key_facts == ("Edda",)
