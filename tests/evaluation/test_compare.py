"""helpers.compare: variants, fairness, the per-variant cache and the tables (on a random-weight
stand-in; the notebook itself runs in tests/test_notebooks.py)."""

import json
import math

import pytest

from helpers import models
from helpers.data import persona as personas
from helpers.evaluation import cache as compare_cache
from helpers.evaluation import compare, metrics

MH = "NoteBooks/MarenHolloway"


def _sets(folder, heldout=("Held out words about grain and glue.",), train=None):
    folder.mkdir(parents=True, exist_ok=True)
    train = train or ["The bench was swept every morning before the tools came out.",
                      "A sharp chisel is safer than a dull one, because it goes where it is sent."]
    (folder / "heldout.json").write_text(json.dumps({"heldout": [{"text": t} for t in heldout]}))
    with open(folder / "v1_train.jsonl", "w") as f:
        for t in train:
            f.write(json.dumps({"messages": [{"role": "user", "content": "Continue."},
                                             {"role": "assistant", "content": t}]}) + "\n")
    return folder


def _fake_run(folder, model="qwen3-14b", recipe="v2", ran=None, smoke=True):
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "run.json").write_text(json.dumps({
        "parameters": {"model": model, "recipe": recipe},
        "model": {"requested": ran or model, "smoke": smoke}}))
    return folder


def test_variant_specs(tmp_path):
    persona = personas.load(MH)
    run = _fake_run(tmp_path / "run32", model="qwen3-32b", ran="qwen3-14b")
    vs = compare.variants(persona, ["qwen3-14b", "gpt-oss-20b:v1", str(run)], smoke=True)
    base, missing, fell_back = vs
    assert (base.name, base.version, base.adapter) == ("Qwen3-14B", "base", None) and base.ready
    assert missing.version == "V1" and not missing.ready
    assert missing.run_dir.name == "MarenHolloway-v1-gpt-oss-20b-smoke"
    # the 32B run fell back to 14B: named for what was asked, loaded and compared as what ran
    assert (fell_back.name, fell_back.model, fell_back.base) == ("Qwen3-32B V2", "qwen3-14b", "Qwen3-14B")
    with pytest.raises(compare.CompareError, match="Two variants are called 'Qwen3-14B'"):
        compare.variants(persona, ["qwen3-14b", "qwen3-14b"], smoke=True)
    with pytest.raises(models.UnknownModelError):
        compare.variants(persona, ["qwen9"], smoke=True)
    with pytest.raises(compare.CompareError, match="has no run.json"):
        compare.variant_from_run(tmp_path)


def test_settings_and_texts_errors(tmp_path):
    with pytest.raises(compare.CompareError, match="system_prompt='helpful'"):
        compare.Settings(system_prompt="helpful").check()
    with pytest.raises(compare.CompareError, match="decoding='beam'"):
        compare.Settings(decoding="beam").check()
    leak = _sets(tmp_path / "leak", heldout=("same text",), train=["same text", "other text"])
    with pytest.raises(compare.CompareError, match="1 held-out passage"):
        compare.Texts.from_sets(leak)


def test_fingerprint_changes_with_everything_a_result_depends_on(tmp_path):
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets"))
    run = _fake_run(tmp_path / "run")
    v = compare.variant_from_run(run)
    fp = lambda **kw: compare_cache.key_for(v.name, compare.fingerprint(  # noqa: E731
        v, kw.get("settings", compare.Settings()), kw.get("prompts", ["a"]), kw.get("system", "s"), texts))
    key = fp()
    assert fp() == key
    assert fp(prompts=["b"]) != key and fp(system=None) != key
    assert fp(settings=compare.Settings(decoding="sampled")) != key
    assert fp(settings=compare.Settings(max_new_tokens=7)) != key
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"retrained")
    assert fp() != key


def test_run_uses_one_system_prompt_and_reuses_the_cache(tmp_path, random_standin, monkeypatch):
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets"))
    path = str(random_standin("qwen2.5"))
    vs = [compare.Variant(name="A", model=path, version="base", base="A"),
          compare.Variant(name="B", model=path, version="base", base="B")]
    prompts = ["Why sweep the bench?", "What is a chisel for?"]
    seen = []
    real = compare.evaluate

    def spy(v, **kw):
        seen.append(kw["system_prompt"])
        return real(v, **kw)
    monkeypatch.setattr(compare, "evaluate", spy)
    settings = compare.Settings(max_new_tokens=8, retention=False, window=16, stride=8)
    first = compare.run(vs, prompts=prompts, persona_prompt="You are M.", texts=texts,
                        settings=settings, cache_dir=tmp_path / "cache")
    assert seen == ["You are M.", "You are M."] and first.status == {"A": "computed", "B": "computed"}
    assert len(compare_cache.entries(tmp_path / "cache")) == 2
    assert first.results["A"]["heldout"]["tokens"] > 0

    def no_model(*a, **k):
        raise AssertionError("a cached variant was evaluated again")
    monkeypatch.setattr(compare, "evaluate", no_model)
    again = compare.run(vs, prompts=prompts, persona_prompt="You are M.", texts=texts,
                        settings=settings, cache_dir=tmp_path / "cache")
    assert again.status == {"A": "cache", "B": "cache"}
    assert again.results["A"]["answers"] == first.results["A"]["answers"]
    # no system prompt for anyone is a different question: recomputed, never served stale
    monkeypatch.setattr(compare, "evaluate", spy)
    none = compare.run(vs, prompts=prompts, persona_prompt="You are M.", texts=texts,
                       settings=compare.Settings(**{**settings.__dict__, "system_prompt": "none"}),
                       cache_dir=tmp_path / "cache")
    assert none.status == {"A": "computed", "B": "computed"} and seen[-2:] == [None, None]


def _comparison(tmp_path, answers_by_variant, general=None):
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets"))
    index = metrics.MemorisationIndex(texts.training)
    vs, results = [], {}
    for name, (base, version, answers) in answers_by_variant.items():
        v = compare.Variant(name=name, model="qwen3-14b", version=version, base=base)
        vs.append(v)
        results[name] = {"prompts": [f"p{i}" for i in range(len(answers))], "answers": answers,
                         "general_answers": (general or {}).get(name, []),
                         "scores": metrics.score_answers(answers, author_passages=texts.training, index=index),
                         "heldout": {"perplexity": 12.0, "bits_per_byte": 1.5}}
    return compare.Comparison(variants=vs, results=results, status={n: "computed" for n in results},
                              settings=compare.Settings(), texts=texts,
                              prompts=[f"p{i}" for i in range(3)], system_prompt=None)


def test_empty_answers_are_counted_and_shown(tmp_path):
    c = _comparison(tmp_path, {
        "Base": ("Base", "base", ["The bench was swept.", "A chisel cuts wood.", "Glue dries."]),
        "Tuned": ("Base", "V2", ["", "A sharp chisel is safer.", "   "]),
    })
    s = c.summary().set_index(["variant", "metric"])
    assert s.loc[("Tuned", "empty_rate"), "value"] == pytest.approx(2 / 3)
    assert s.loc[("Base", "empty_rate"), "value"] == 0
    assert s.loc[("Tuned", "words"), "value"] == pytest.approx(5 / 3)  # empties count as 0 words
    per = c.per_prompt()
    assert len(per) == 6 and per[per.variant == "Tuned"]["empty"].sum() == 2
    assert math.isnan(per[(per.variant == "Tuned") & (per.prompt_index == 0)].tfidf.iloc[0])
    assert list(c.answers_table()["Tuned"]) == ["(empty)", "A sharp chisel is safer.", "(empty)"]
    assert "n/a" not in c.table().loc["Tuned", "empty_rate"]
    saved = json.loads(c.save(tmp_path / "out").read_text())
    assert saved["status"] == {"Base": "computed", "Tuned": "computed"}
    assert (tmp_path / "out" / "per_prompt.csv").is_file()


def test_retention_compares_each_tuned_model_with_its_own_base(tmp_path):
    c = _comparison(tmp_path, {
        "Base": ("Base", "base", ["a", "b", "c"]),
        "Same": ("Base", "V1", ["a", "b", "c"]),
        "Changed": ("Base", "V2", ["a", "b", "c"]),
        "Orphan": ("Other", "V2", ["a", "b", "c"]),
    }, general={"Base": ["Paris is the capital.", "Seven days."],
                "Same": ["Paris is the capital.", "Seven days."],
                "Changed": ["The bench was swept.", "Seven days."],
                "Orphan": ["x", "y"]})
    assert c.retention_score(c.variants[1]) == 1.0
    assert c.retention_score(c.variants[2]) == pytest.approx((0.25 + 1) / 2)  # only "the" shared, then same
    assert c.retention_score(c.variants[0]) is None and c.retention_score(c.variants[3]) is None
    assert compare._overlap_f1("", "") == 1.0 and compare._overlap_f1("a b", "c d") == 0.0
