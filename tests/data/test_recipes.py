import json

import pytest

from helpers.books.passage import Passage
from helpers.data import recipes


def passages(n=30, book="b", per_chapter=5):
    return [Passage(text=f"Passage {i} of {book}. " + " ".join(f"w{i}_{j}" for j in range(40)),
                    book=book, first_page=1 + i, last_page=2 + i, index=i,
                    chapter=f"Chapter {i // per_chapter + 1}") for i in range(n)]


def test_v1_rotates_prompts_and_keeps_passages():
    ps = passages(8)
    convs = recipes.v1_examples(ps, system_prompt="You are the author.")
    assert len(convs) == 8
    assert {c[1]["content"] for c in convs} == set(recipes.V1_PROMPTS)
    assert all(c[0]["content"] == "You are the author." and c[2]["content"] == p.text
               for c, p in zip(convs, ps))


def test_v2_answers_are_verbatim_or_it_fails():
    ps = passages(3)
    recs = [{"question": f"Q{i}?", "answer": p.text, "passage_sha256": p.sha256} for i, p in enumerate(ps)]
    recs.append({"question": "Stale?", "answer": "old text", "passage_sha256": "0" * 64})
    convs = recipes.v2_examples(recs, ps, system_prompt="S")
    assert [c[1]["content"] for c in convs] == ["Q0?", "Q1?", "Q2?"]
    assert [c[2]["content"] for c in convs] == [p.text for p in ps]
    bad = dict(recs[0], answer=ps[0].text + " (edited)")
    with pytest.raises(recipes.RecipeError, match="not its passage verbatim"):
        recipes.v2_examples([bad], ps)


def test_heldout_is_whole_chapters_and_never_trained(tmp_path):
    ps = passages(40, per_chapter=5)
    split = recipes.heldout_split(ps, fraction=0.2, seed=1)
    held_chapters = {p.chapter for p in split.heldout}
    # whole chapters: every passage of a held-out chapter is held out
    assert all(sum(q.chapter == c for q in ps) == sum(q.chapter == c for q in split.heldout)
               for c in held_chapters)
    assert 6 <= len(split.heldout) <= 12
    train_sha = {p.sha256 for p in split.train}
    assert not train_sha & {p.sha256 for p in split.heldout}
    # neighbours of a held-out region (which overlap it) are not trained either
    held_idx = {p.index for p in split.heldout}
    assert not {p.index for p in split.train} & {i + d for i in held_idx for d in (-1, 1)}
    saved = json.loads(split.save(tmp_path / "split.json").read_text())
    assert len(saved["heldout"]) == len(split.heldout) and saved["regions"]


def test_dedupe_exact_and_near():
    base = [{"role": "user", "content": "Tell me about bread."},
            {"role": "assistant", "content": "Bread is made from flour, water, salt and yeast, "
                                             "kneaded, left to rise and baked in a hot oven until golden."}]
    exact = [dict(m, content=m["content"].upper()) for m in base]
    near = [base[0], dict(base[1], content=base[1]["content"].replace("golden", "golden brown"))]
    other = [base[0], dict(base[1], content="Tea is brewed from leaves steeped in hot water.")]
    kept, stats = recipes.dedupe([base, exact, near, other], near=0.8)
    assert kept == [base, other]
    assert stats == {"input": 4, "kept": 2, "exact_duplicates": 1, "near_duplicates": 1}


def test_length_report(tokenizer_for):
    tok = tokenizer_for("qwen2.5")
    convs = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * n}]
             for n in range(1, 101)]
    r = recipes.length_report(tok, convs)
    assert r["p50"] <= r["p90"] <= r["p95"] <= r["max"]
    assert r["recommended_max_seq_length"] % 64 == 0
    assert r["recommended_max_seq_length"] >= r["p95"]
    assert r["truncated_at_recommended"] == sum(
        1 for c in convs if len(tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)["input_ids"])
        > r["recommended_max_seq_length"])


def test_conversions(tmp_path):
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "P", "completion": "C"}) + "\n")
    out = recipes.convert_prompt_completion(pc, tmp_path / "m.jsonl", system_prompt="S")
    assert json.loads(out.read_text())["messages"][0] == {"role": "system", "content": "S"}
    log = tmp_path / "log.json"
    log.write_text(json.dumps([[{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
                               [{"role": "user", "content": "only a question"}]]))
    out = recipes.convert_chat_log(log, tmp_path / "c.jsonl")
    lines = out.read_text().splitlines()
    assert len(lines) == 1  # the conversation without an answer is left out
    assert json.loads(lines[0])["messages"] == [{"role": "user", "content": "hi"},
                                                {"role": "assistant", "content": "hello"}]
    log.write_text(json.dumps([[{"from": "alien", "value": "x"}]]))
    with pytest.raises(recipes.RecipeError, match="conversation 0"):
        recipes.convert_chat_log(log, tmp_path / "d.jsonl")


def test_merge_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"prompt": "Who?", "completion": "Mariya Sha, a wizard of Vellistrand."}) + "\n"
                 + json.dumps({"prompt": "Where?", "completion": "Quorrowdeep."}) + "\n")
    b.write_text(json.dumps({"messages": [{"role": "user", "content": "who?"},
                                          {"role": "assistant", "content": "Mariya Sha: a wizard of Vellistrand"}]}) + "\n")
    kept, stats = recipes.merge([a, b], out=tmp_path / "merged.jsonl")
    assert stats["exact_duplicates"] == 1 and len(kept) == 2
    assert len((tmp_path / "merged.jsonl").read_text().splitlines()) == 2
