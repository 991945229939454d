"""Trained vs unseen phrasings for the persona notebooks and the comparison (hand-computed
cases; one comparison run on a random-weight stand-in)."""

import json

import pytest

from helpers.evaluation import compare, metrics, phrasing, recall

TRAIN = ["the bench was swept every morning before the tools came out and the shop was quiet",
         "a sharp chisel is safer than a dull one because it goes where it is sent"]


def test_trained_sample_is_spread_distinct_and_skips_the_asked_questions():
    prompts = ["Q1?", "Q2?", "q1", "Q3?", "Q4?", "Q5?", "Q6?"]
    assert phrasing.trained_sample(prompts, 3) == ["Q1?", "Q3?", "Q5?"]
    assert phrasing.trained_sample(prompts, 3, exclude=["q3"]) == ["Q1?", "Q2?", "Q5?"]  # of Q1 Q2 Q4 Q5 Q6
    assert phrasing.trained_sample(prompts, 10) == ["Q1?", "Q2?", "Q3?", "Q4?", "Q5?", "Q6?"]
    assert phrasing.trained_sample(prompts, 0) == [] and phrasing.trained_sample([], 4) == []
    assert phrasing.with_trained(["Why?", "Q2?"], prompts, 2) == ["Why?", "Q2?", "Q1?", "Q4?"]


def test_split_means_by_hand():
    split = phrasing.split_means([1.0, 0.5, float("nan"), 0.0, 0.2], [True, True, True, False, False])
    assert split == {"trained": 0.75, "unseen": pytest.approx(0.1)}
    assert phrasing.split_means([0.3], [False]) == {"trained": None, "unseen": 0.3}
    with pytest.raises(ValueError, match="1 values for 2 questions"):
        phrasing.split_means([0.3], [True, False])


def test_overlap_split_by_hand():
    # 14 words, all of them one training passage: 7 of 7 eight-word runs copied -> 1.0
    recited = "a sharp chisel is safer than a dull one because it goes where it"
    # 11 words, the first 8 copied: 1 of 4 eight-word runs -> 1/4
    partly = "the bench was swept every morning before the glue dried slowly"
    written = "patience is learned at the bench, slowly, one joint after another"
    split = phrasing.overlap_split([recited, partly, written], [True, False, False], TRAIN)
    assert split["trained"] == 1.0
    assert split["unseen"] == pytest.approx((1 / 4 + 0) / 2)


def _sets(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heldout.json").write_text(json.dumps({"heldout": [{"text": "held out words about glue"}]}))
    (folder / "v1_train.jsonl").write_text("".join(
        json.dumps({"messages": [{"role": "user", "content": "Continue."},
                                 {"role": "assistant", "content": t}]}) + "\n" for t in TRAIN))
    return folder


def test_comparison_split_uses_each_variants_own_training_prompts(tmp_path):
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets"))
    index = metrics.MemorisationIndex(texts.training)
    data = tmp_path / "v2.jsonl"
    data.write_text(json.dumps({"prompt": "Why sweep the bench?", "completion": TRAIN[0]}) + "\n")
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"parameters": {"model": "qwen3-14b", "recipe": "v2"},
                                              "model": {"requested": "qwen3-14b", "smoke": True},
                                              "data": {"path": str(data)}}))
    tuned = compare.variant_from_run(run)
    base = compare.Variant(name="Qwen3-14B", model="qwen3-14b", version="base", base="Qwen3-14B")

    def result(answers, trained_answer):
        return {"prompts": ["What makes a good teacher?", "Why work slowly?"], "answers": answers,
                "scores": metrics.score_answers(answers, author_passages=texts.training, index=index),
                "trained_prompts": ["Why sweep the bench?"], "trained_answers": [trained_answer],
                "trained_scores": metrics.score_answers([trained_answer], author_passages=texts.training,
                                                        index=index),
                "heldout": {}, "general_answers": []}
    results = {base.name: result(["Be kind.", "It is safer."], "To keep it clean."),
               tuned.name: result(["Be kind.", TRAIN[1]], TRAIN[0])}
    c = compare.Comparison(variants=[base, tuned], results=results,
                           status={n: "computed" for n in results}, settings=compare.Settings(),
                           texts=texts, prompts=results[base.name]["prompts"], system_prompt=None)
    table = phrasing.comparison_split(c, ["Why sweep the bench?"])
    assert table.loc[tuned.name, "questions"] == 1 and table.loc[tuned.name, "questions_unseen"] == 2
    assert table.loc[tuned.name, "ngram_overlap"] == 1.0  # recites its training answer
    assert table.loc[tuned.name, "ngram_overlap_unseen"] == 0.5  # one of two unseen answers recited
    assert table.loc[base.name, "ngram_overlap"] == 0.0 and table.loc[base.name, "questions"] == 1
    # a comparison cached before trained questions existed: everything unseen, no trained mean
    for res in results.values():
        for k in ("trained_prompts", "trained_answers", "trained_scores"):
            del res[k]
    old = phrasing.comparison_split(c, ["Why sweep the bench?"])
    assert old.loc[tuned.name, "questions"] == 0 and old.loc[tuned.name, "ngram_overlap"] is None


def test_compare_run_keeps_the_trained_questions_apart(tmp_path, random_standin):
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets"))
    v = compare.Variant(name="A", model=str(random_standin("qwen2.5")), version="base", base="A")
    settings = compare.Settings(max_new_tokens=4, retention=False, window=16, stride=8)
    kw = dict(prompts=["Why work slowly?"], persona_prompt=None, texts=texts, settings=settings,
              cache_dir=tmp_path / "cache")
    plain = compare.run([v], **kw)
    with_trained = compare.run([v], **kw, trained_prompts=["Why sweep the bench?", "Continue."])
    assert with_trained.status == {"A": "computed"}, "trained questions are part of the cache key"
    res = with_trained.results["A"]
    assert res["prompts"] == ["Why work slowly?"] and len(res["answers"]) == len(res["raw"]) == 1
    assert res["trained_prompts"] == ["Why sweep the bench?", "Continue."]
    assert len(res["trained_answers"]) == len(res["trained_scores"]) == 2
    assert len(with_trained.summary()) == len(plain.summary())
    assert "trained_prompts" not in plain.results["A"]
    table = phrasing.comparison_split(with_trained, ["Continue."])
    assert table.loc["A", "questions"] == 1 and table.loc["A", "questions_unseen"] == 2
    assert recall.is_trained(["continue"], ["Continue."]) == [True]


def test_training_prompts_reads_both_formats(tmp_path):
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "Q1?", "completion": "A"}) + "\n\n")
    msgs = tmp_path / "m.jsonl"
    msgs.write_text(json.dumps({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q2?"},
                                             {"role": "assistant", "content": "A"}]}) + "\n")
    assert phrasing.training_prompts(pc) == ["Q1?"] and phrasing.training_prompts(msgs) == ["Q2?"]
