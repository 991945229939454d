"""helpers.evaluation.knowledge / knowledge_run / knowledge_judge: closed-book answers scored
correct, wrong or don't know, Wilson and Newcombe intervals, the verdict rule, the cached run on a
random-weight stand-in, and the optional grader against the fake Messages API."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from helpers.evaluation import compare, knowledge, knowledge_judge, knowledge_run
from helpers.evaluation import judge as llm_judge
from helpers.evaluation.intervals import newcombe, wilson
from helpers.questions.facts import FactQuestion
from tests.support.anthropic_fixtures import client, fake, no_credentials  # noqa: F401 (fixtures)


def test_scoring_correct_wrong_and_dont_know():
    score = lambda a, f: knowledge.score_answer(a, f)["outcome"]  # noqa: E731
    assert score("I was 17 when I went to Edda's workshop.", ["seventeen", "Edda"]) == "correct"
    assert score("EDDA BRANDT, of course!", ["Edda Brandt"]) == "correct"
    assert score("Brandt, Edda, was her name", ["Edda Brandt"]) == "correct"   # content words, any order
    assert score("It was Pavel.", ["Edda Brandt"]) == "wrong"
    partial = knowledge.score_answer("I was seventeen.", ["seventeen", "Edda"])
    assert partial == {"outcome": "wrong", "facts_found": 1, "facts": 2}
    assert score("Eddard", ["Edda"]) == "wrong"                                # whole words only
    assert score("", ["Edda"]) == "dont_know" and score("   ", ["Edda"]) == "dont_know"
    assert score("I don\u2019t know who that was.", ["Edda"]) == "dont_know"
    assert score("I'm not sure, I cannot recall.", ["Edda"]) == "dont_know"
    # an uncertain answer that still gives the fact counts as correct
    assert score("I'm not sure, but I think it was Edda.", ["Edda"]) == "correct"
    with pytest.raises(ValueError, match="without key facts"):
        knowledge.score_answer("x", [])


def test_wilson_and_newcombe_intervals():
    assert wilson(3, 3)[1] == pytest.approx(0.4385, abs=1e-4) and wilson(3, 3)[2] == 1.0
    p, low, high = wilson(0, 10)
    assert (p, low) == (0.0, 0.0) and high == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))
    # Newcombe (1998), table II example: 56/70 - 48/80 = 0.2, interval 0.0524 to 0.3339
    d, low, high = newcombe(56, 70, 48, 80)
    assert d == pytest.approx(0.2) and low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)
    with pytest.raises(ValueError, match="successes=4"):
        wilson(4, 3)


def _rows(variant, base, version, split, correct, wrong, dont_know=0):
    return ([{"variant": variant, "base": base, "version": version, "split": split, "outcome": o}
             for o, k in (("correct", correct), ("wrong", wrong), ("dont_know", dont_know)) for _ in range(k)])


def test_summary_and_the_verdict_rule():
    rows = (_rows("B", "B", "base", "trained", 1, 17, 2) + _rows("B", "B", "base", "heldout", 1, 19)
            + _rows("Facts", "B", "V1", "trained", 15, 5) + _rows("Facts", "B", "V1", "heldout", 2, 18)
            + _rows("Voice", "B", "V2", "trained", 3, 17) + _rows("Voice", "B", "V2", "heldout", 1, 19)
            + _rows("Flat", "B", "V2b", "trained", 2, 18) + _rows("Flat", "B", "V2b", "heldout", 1, 19)
            + _rows("Orphan", "X", "V2", "trained", 20, 0))
    s = knowledge.summarise(rows).set_index(["variant", "split"])
    b = s.loc[("B", "trained")]
    assert (b.questions, b.correct, b.wrong, b.dont_know) == (20, 1, 17, 2)
    assert b.accuracy == 0.05 and b.dont_know_rate == 0.1
    assert (b.low, b.high) == pytest.approx(wilson(1, 20)[1:])
    voice = {"Facts": {"improved": False, "evidence": "-"}, "Voice": {"improved": True, "evidence": "tfidf +0.1"},
             "Flat": {"improved": False, "evidence": "-"}}
    v = knowledge.verdicts(knowledge.summarise(rows), voice).set_index("variant")
    assert v.loc["Facts", "verdict"] == "learned the facts"
    assert v.loc["Facts", "trained_gain"] == pytest.approx(0.70) and v.loc["Facts", "trained_gain_low"] > 0
    assert "held-out chapters still need retrieval" in v.loc["Facts", "recommendation"]
    assert v.loc["Voice", "verdict"] == "only the voice" and v.loc["Voice", "trained_gain_low"] < 0
    assert "RAG over the books" in v.loc["Voice", "recommendation"]
    assert v.loc["Flat", "verdict"] == "neither"
    assert v.loc["Orphan", "verdict"] == "no base model"
    text = knowledge.verdict_text(knowledge.verdicts(knowledge.summarise(rows), voice))
    assert "Facts: LEARNED THE FACTS. Training-chapter facts 75% right vs 5% for B" in text
    assert "Voice: ONLY THE VOICE" in text and "Orphan: no base model" in text
    assert "No verdict" in knowledge.verdict_text(knowledge.verdicts(knowledge.summarise([])))


def test_voice_changes_read_the_paired_delta_table():
    cols = pd.MultiIndex.from_tuples([(m, s) for m in ("tfidf", "delta") for s in ("est", "low", "high", "n")])
    table = pd.DataFrame([[0.1, 0.05, 0.2, 5, 0.0, -0.1, 0.1, 5],
                          [0.0, -0.1, 0.1, 5, -0.3, -0.5, -0.1, 5],
                          [0.0, -0.1, 0.1, 5, 0.0, -0.1, 0.1, 5],
                          [0.1, 0.05, 0.2, 5, 0.1, 0.05, 0.2, 5],
                          [math.nan] * 3 + [0] + [math.nan] * 3 + [0]],
                         index=["Up", "Closer", "Same", "Mixed", "Orphan"], columns=cols)
    got = knowledge.voice_changes(table)
    # Mixed: TF-IDF up but Burrows' Delta up too (further from the author): not an improvement
    assert [got[k]["improved"] for k in ("Up", "Closer", "Same", "Mixed", "Orphan")] == [True, True, False, False, None]
    assert got["Up"]["evidence"].startswith("tfidf +0.1 [+0.05, +0.2]")


QUESTIONS = [FactQuestion("Who owned the workshop?", ("Edda",), "trained", "a" * 64),
             FactQuestion("How old were you?", ("seventeen",), "trained", "b" * 64),
             FactQuestion("Who was the apprentice?", ("Ruth",), "heldout", "c" * 64)]


def _sets(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heldout.json").write_text(json.dumps({"heldout": [{"text": "Later that year came Ruth."}]}))
    (folder / "v1_train.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "Continue."}, {"role": "assistant", "content": "It was Edda who owned it."}]}) + "\n")
    return folder


def test_run_on_a_standin_is_cached_and_makes_the_section(tmp_path, random_standin, monkeypatch):
    path = str(random_standin("qwen2.5"))
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets"))
    vs = [compare.Variant(name="Base", model=path, version="base", base="Base"),
          compare.Variant(name="Tuned", model=path, version="V2", base="Base")]
    settings = compare.Settings(max_new_tokens=6, retention=False, window=16, stride=8)
    result = compare.run(vs, prompts=["Why sweep the bench?", "What is a chisel for?"], persona_prompt="You are M.",
                         texts=texts, settings=settings, cache_dir=tmp_path / "cache")
    seen = []
    real = knowledge_run.evaluate

    def spy(v, qs, **kw):
        seen.append((v.name, kw["system_prompt"]))
        return real(v, qs, **kw)
    monkeypatch.setattr(knowledge_run, "evaluate", spy)
    known = knowledge_run.run(result, QUESTIONS, cache_dir=tmp_path / "cache")
    assert seen == [("Base", "You are M."), ("Tuned", "You are M.")]
    assert known.status == {"Base": "computed", "Tuned": "computed"}
    assert all(len(a) == 3 for a in known.answers.values())
    per = known.per_question()
    assert len(per) == 6 and set(per["outcome"]) <= set(knowledge.OUTCOMES)
    summary = known.summary()
    assert set(summary["split"]) == {"trained", "heldout"} and summary["questions"].sum() == 6
    table = known.table()
    assert list(table.index) == ["Base", "Tuned"] and "trained: accuracy" in table.columns
    verdicts = known.verdicts()
    # the same weights on both sides: no fact gained, and no voice change either (no interval at
    # all when the random model's answers have no scorable words)
    assert list(verdicts["verdict"]) == ["neither"] and verdicts["voice_improved"].iloc[0] is not True
    assert verdicts["trained_gain"].iloc[0] == 0
    assert "Tuned: NEITHER" in known.verdict_text() and "RAG over the books" in known.verdict_text()
    assert known.plot() is not None and len(known.questions_table()) == 3
    saved = json.loads(known.save(tmp_path / "out").read_text())
    assert saved["verdicts"][0]["verdict"] == "neither" and len(saved["questions"]) == 3
    assert (tmp_path / "out" / "knowledge_per_question.csv").is_file()

    monkeypatch.setattr(knowledge_run, "evaluate", lambda *a, **k: pytest.fail("a cached variant was asked again"))
    again = knowledge_run.run(result, QUESTIONS, cache_dir=tmp_path / "cache")
    assert again.status == {"Base": "cache", "Tuned": "cache"} and again.answers == known.answers
    # other questions are another result: asked, never served stale
    monkeypatch.setattr(knowledge_run, "evaluate", spy)
    knowledge_run.run(result, QUESTIONS[:2], cache_dir=tmp_path / "cache")
    assert seen[-2:] == [("Base", "You are M."), ("Tuned", "You are M.")]
    with pytest.raises(ValueError, match="No fact questions"):
        knowledge_run.run(result, [], cache_dir=tmp_path / "cache")


def test_source_follows_smoke_mode_and_the_persona(tmp_path):
    persona = type("P", (), {"data": type("D", (), {"qa_source": "anthropic"})()})()
    assert knowledge_run.resolve_source(persona, None, smoke=True) == "rule"
    assert knowledge_run.resolve_source(persona, None, smoke=False) == "anthropic"
    assert knowledge_run.resolve_source(persona, "local", smoke=True) == "local"
    folder = _sets(tmp_path / "sets")
    qs = knowledge_run.questions(persona, folder, 2, smoke=True)     # rules: nothing paid
    assert [(q.split, q.key_facts, q.source) for q in qs] == [("trained", ("Edda",), "rule"),
                                                               ("heldout", ("Ruth",), "rule")]
    assert not (folder / "facts.jsonl").exists()                     # rule questions are not cached
    with pytest.raises(knowledge_run.facts.QAConfigError, match="list a base model"):
        knowledge_run.questions(persona, folder, 2, source="local", smoke=True)


def _known(answers):
    v = [compare.Variant(name=n, model="qwen3-14b", version="base" if n == "Base" else "V2", base="Base")
         for n in answers]
    return knowledge_run.Knowledge(variants=v, answers=answers, status={}, questions=QUESTIONS)


def test_grader_asks_once_per_distinct_answer_and_caches(fake, client, tmp_path):
    fake.add(match="Edda owned", reply="GRADE: CORRECT", times=-1)
    fake.add(match="No idea", reply="**Grade:** dont_know", times=-1)
    fake.add(reply="I think it is fine.", times=-1)            # malformed, twice: invalid
    known = _known({"Base": ["Edda owned it.", "No idea.", ""],
                    "Tuned": ["Edda owned it.", "No idea.", ""]})
    assert "2 requests" in knowledge_judge.estimate(known, cache_path=tmp_path / "j.jsonl")
    grades = knowledge_judge.grade(known, cache_path=tmp_path / "j.jsonl", client=client, retry_base_s=0.01)
    assert fake.count() == 2                                   # same answers share; empties not asked
    assert grades[("Base", 0)] == grades[("Tuned", 0)] == "correct"
    assert grades[("Tuned", 1)] == "dont_know" and grades[("Base", 2)] == "dont_know"
    sent = [e["text"] for e in fake.log]
    assert any("- Edda\n</key_facts>" in t and "Edda owned it." in t for t in sent)
    assert not any("Base" in t or "Tuned" in t for t in sent)     # blind
    s = known.summary("judge").set_index(["variant", "split"])
    assert s.loc[("Tuned", "trained"), "correct"] == 1 and s.loc[("Tuned", "trained"), "dont_know"] == 1
    again = knowledge_judge.grade(_known(known.answers), cache_path=tmp_path / "j.jsonl")
    assert again == grades and fake.count() == 2               # no key needed: all cached
    odd = _known({"Base": ["Pavel.", "x", "y"]})
    assert knowledge_judge.grade(odd, cache_path=tmp_path / "j.jsonl", client=client,
                                 retry_base_s=0.01)[("Base", 0)] == "invalid"
    assert knowledge.summarise(odd.rows(), outcome="judge").empty     # invalid grades are not counted
    with pytest.raises(llm_judge.JudgeError, match="ANTHROPIC_API_KEY"):
        knowledge_judge.grade(_known({"Base": ["new", "answers", "here"]}), cache_path=tmp_path / "j.jsonl")


def test_parse_grade():
    assert knowledge_judge.parse_grade("GRADE: WRONG") == "wrong"
    assert knowledge_judge.parse_grade("grade - Don't know") == "dont_know"
    for bad in ("It is correct.", "GRADE: CORRECT\nGRADE: WRONG", ""):
        with pytest.raises(knowledge_judge.MalformedReply):
            knowledge_judge.parse_grade(bad)
