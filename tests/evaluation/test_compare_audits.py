"""The comparison's recitation audit and robustness probes (helpers.evaluation.audits): the
summary rows next to the copying score, the tables and plot, the data card figures, and one
run on a random-weight stand-in."""

import json
import math

import pytest

from helpers.data import outofscope
from helpers.evaluation import audits, compare, metrics, recitation, robustness
from tests.evaluation.test_compare import _fake_run, _sets

_WORDS = "the bench was swept every morning before the tools came out and a sharp chisel is safer".split()
LONG = [" ".join([t] + [_WORDS[(i * k) % len(_WORDS)] for i in range(85)]) for k, t in ((1, "Oak"), (3, "Ash"), (7, "Elm"))]


def _recited(runs):
    return recitation.score([f"p{i}" for i in range(len(runs))],
                            [" ".join(f"w{j}" for j in range(r)) for r in runs],
                            [" " + " ".join(f"w{j}" for j in range(70))] * len(runs),
                            settings={"min_run": 50, "prefix_words": 32, "continuation_words": 64,
                                      "max_passages": 50, "chat": True, "seed": 0}).to_dict()


def _comparison(tmp_path):
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets"))
    index = metrics.MemorisationIndex(texts.training)
    probes = outofscope.probes("Maren")[:2]
    rows = robustness.score(["I don't know, and I won't guess.", "It was Brazil, in 2034, beating Peru."],
                            probes, author_passages=texts.training, index=index)
    vs, results = [], {}
    for name, version, rec, rob in (("Base", "base", _recited([0, 3, 1, 0]), None),
                                    ("Tuned", "V2", _recited([64, 55, 10, 0]), rows)):
        answers = ["The bench was swept.", "A sharp chisel is safer than a dull one."]
        vs.append(compare.Variant(name=name, model="qwen3-14b", version=version, base="Base"))
        results[name] = {"prompts": ["p0", "p1"], "answers": answers, "general_answers": [],
                         "scores": metrics.score_answers(answers, author_passages=texts.training, index=index),
                         "heldout": {}, "recitation": rec, **({"robustness": {"rows": rob}} if rob else {})}
    return compare.Comparison(variants=vs, results=results, status={n: "computed" for n in results},
                              settings=compare.Settings(), texts=texts, prompts=["p0", "p1"], system_prompt=None)


def test_summary_shows_recitation_beside_the_copying_score(tmp_path):
    c = _comparison(tmp_path)
    s = c.summary().set_index(["variant", "metric"])
    share = s.loc[("Tuned", "recitation_share_verbatim")]
    assert share.value == 0.5 and 0 < share.low < 0.5 < share.high < 1  # 2 of 4, Wilson interval
    assert s.loc[("Tuned", "recitation_longest_run"), "value"] == 64
    assert s.loc[("Base", "recitation_share_verbatim"), "value"] == 0
    assert s.loc[("Tuned", "robust_declined"), "value"] == 0.5
    assert s.loc[("Tuned", "robust_invented"), "value"] == 0.5
    assert ("Base", "robust_declined") not in s.index  # not asked: no row, never a zero
    table = c.table()
    assert {"longest_copy_share", "recitation_share_verbatim", "recitation_longest_run",
            "robust_in_voice"} <= set(table.columns)
    rob = robustness.table(c)
    assert list(rob.variant) == ["Tuned"] and list(rob.category) == ["after_time"]
    assert rob.iloc[0].declined == 0.5 and rob.iloc[0].probes == 2
    assert len(robustness.answers_table(c)) == 2
    ex = audits.examples(c, n=1)
    assert list(ex.variant) == ["Base", "Tuned"] and ex.iloc[1].run == 64
    assert "recitation_share_verbatim" in audits.explain() and "robust_delta" in audits.explain()
    fig = robustness.plot(c.summary())
    assert len(fig.axes) == len(robustness.METRICS)
    assert "no robustness probes" in robustness.plot(c.summary().query("metric == 'words'"))


def test_figures_go_to_the_runs_data_card(tmp_path):
    c = _comparison(tmp_path)
    run = _fake_run(tmp_path / "run")
    tuned = compare.variant_from_run(run)
    audits.to_card(tuned, c.results["Tuned"])
    card = json.loads((run / "data_card.json").read_text())
    figs = card["figures"]["comparison"]
    assert figs["variant"] == tuned.name
    assert figs["recitation"]["recitation_share_verbatim"] == 0.5 and figs["recitation"]["min_run"] == 50
    copying = figs["copying"]
    expected = sum(s["longest_copy_share"] for s in c.results["Tuned"]["scores"]) / 2
    assert copying["longest_copy_share"] == pytest.approx(expected) and copying["answers"] == 2
    audits.to_card(c.variants[0], c.results["Base"])  # a base model has no run: nothing written
    assert not (tmp_path / "data_card.json").exists()


def test_run_audits_a_standin_and_keys_the_cache_on_the_probes(tmp_path, random_standin):
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets", train=LONG))
    v = compare.Variant(name="A", model=str(random_standin("qwen2.5")), version="base", base="A")
    probes = outofscope.probes("Maren")[:2]
    settings = compare.Settings(max_new_tokens=6, retention=False, window=16, stride=8, recitation=2)
    c = compare.run([v], prompts=["Why sweep?"], persona_prompt="You are M.", texts=texts,
                    settings=settings, cache_dir=tmp_path / "cache", probes=probes)
    res = c.results["A"]
    assert res["recitation"]["n"] == 2 and res["recitation"]["source"] == "v1_train.jsonl"
    assert res["recitation"]["settings"]["chat"] is True and len(res["recitation"]["runs"]) == 2
    assert [r["question"] for r in res["robustness"]["rows"]] == [p["question"] for p in probes]
    metrics_shown = set(c.summary().metric)
    assert {"recitation_share_verbatim", "recitation_longest_run", *robustness.METRICS} <= metrics_shown
    fp = lambda **kw: compare.fingerprint(v, settings, ["Why sweep?"], "You are M.", texts, **kw)  # noqa: E731
    assert fp(probes=probes) != fp() and fp() == fp(probes=())
    off = compare.Settings(**{**settings.__dict__, "recitation": 0})
    assert compare.fingerprint(v, off, ["Why sweep?"], "You are M.", texts) != fp()
    none = compare.run([v], prompts=["Why sweep?"], persona_prompt="You are M.", texts=texts,
                       settings=off, cache_dir=tmp_path / "cache")
    assert "recitation" not in none.results["A"] and "robustness" not in none.results["A"]
    assert not any(m.startswith(("recitation", "robust")) for m in none.summary().metric)
    assert math.isfinite(res["seconds"]["audits"])


def test_each_run_is_audited_on_its_own_training_conversations(tmp_path):
    texts = compare.Texts.from_sets(_sets(tmp_path / "sets"))
    data = tmp_path / "v2_train.jsonl"
    rows = [{"messages": [{"role": "system", "content": "You are M."}, {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]}
            for q, a in (("Why sweep?", "Because dust dulls."), ("Why sweep daily?", "Because dust dulls."),
                         ("What of chisels?", "Keep them sharp."))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"prompt": "Go on.", "completion": "Slowly."}\n')
    run = _fake_run(tmp_path / "run")
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "data": {"path": str(data)}}))
    tuned = compare.variant_from_run(run)
    assert audits.training_file(tuned, texts) == data
    # one conversation per passage (the first question asked of it), prompt/completion rows too
    assert audits.conversations(data) == [
        {"system": "You are M.", "user": "Why sweep?", "passage": "Because dust dulls."},
        {"system": "You are M.", "user": "What of chisels?", "passage": "Keep them sharp."},
        {"system": None, "user": "Go on.", "passage": "Slowly."}]
    base = compare.Variant(name="B", model="qwen3-14b", version="base", base="B")
    assert audits.training_file(base, texts) == texts.folder / "v1_train.jsonl"
    data.unlink()  # the run's file is gone: the persona's V1 set stands in
    assert audits.training_file(tuned, texts) == texts.folder / "v1_train.jsonl"
