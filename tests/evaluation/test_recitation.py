"""helpers.evaluation.recitation: the word-run logic (no model), the audit's sampling and
scoring with generation replaced, the chat prompt of each family, and one audit on a
random-weight stand-in."""

import math

import pytest

from helpers.evaluation import recitation


def _passage(tag: str, n: int = 120) -> str:
    return " ".join(f"{tag}{i}" for i in range(n)) + "."


def test_split_prefix_keeps_the_exact_text():
    text = "One,  two\nthree four. Five"
    assert recitation.split_prefix(text, 3) == ("One,  two\nthree", " four. Five")
    assert recitation.split_prefix("short text", 5) == ("short text", "")
    with pytest.raises(recitation.RecitationError, match="prefix_words=0"):
        recitation.split_prefix(text, 0)


def test_word_runs():
    a = "the cat sat on the mat".split()
    assert recitation.leading_run(a, a) == 6
    assert recitation.leading_run("a cat sat".split(), a) == 0
    # one changed word, then recitation: the leading run stops, the longest run does not
    changed = "a cat sat on the mat".split()
    assert recitation.longest_common_run(changed, a) == 5
    assert recitation.longest_common_run(["x", "y"], a) == 0
    assert recitation.longest_common_run([], a) == 0
    # a run anywhere in either sequence counts
    assert recitation.longest_common_run("zz on the mat zz".split(), a) == 3


def test_score_counts_runs_of_at_least_min_run():
    rest = " " + " ".join(f"w{i}" for i in range(70))
    verbatim = " ".join(f"W{i}" for i in range(70))  # case and punctuation do not matter
    drift = " ".join(f"w{i}" for i in range(20)) + " something else entirely"
    r = recitation.score(["p1", "p2", "p3"], [verbatim, drift, ""], [rest, rest, rest],
                         continuation_words=64, min_run=50)
    assert r.n == 3 and r.runs == [64, 20, 0] and r.leading == [64, 20, 0]
    assert r.share_verbatim == pytest.approx(1 / 3)
    assert r.longest_run == 64  # only the first 64 generated words count
    assert [e["run"] for e in r.examples] == [64, 20, 0] and r.examples[0]["prefix"] == "p1"
    m = r.as_metrics()
    assert m == {"recitation_share_verbatim": pytest.approx(1 / 3), "recitation_longest_run": 64.0,
                 "recitation_mean_run": pytest.approx(28.0), "recitation_n": 3.0}
    assert set(r.as_metrics("rec")) == {"rec_share_verbatim", "rec_longest_run", "rec_mean_run", "rec_n"}
    assert recitation.RecitationResult.from_dict(r.to_dict()) == r
    empty = recitation.score([], [], [])
    assert empty.n == 0 and math.isnan(empty.share_verbatim) and empty.longest_run == 0


def test_sampling_is_seeded_and_skips_short_and_repeated_passages():
    passages = [_passage(f"p{i}x") for i in range(30)] + ["too short to hold a run", _passage("p0x")]
    ok = recitation.eligible(passages, 32, 50)
    assert ok == list(range(30))  # the short one and the repeat are left out
    a = recitation.sample(passages, prefix_words=32, min_run=50, max_passages=10, seed=1)
    assert a == recitation.sample(passages, prefix_words=32, min_run=50, max_passages=10, seed=1)
    assert len(a) == 10 and a == sorted(a)
    assert a != recitation.sample(passages, prefix_words=32, min_run=50, max_passages=10, seed=2)


class _Tok:
    """Just enough tokenizer for audit's token budget (generation is replaced)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_audit_scores_what_the_model_generates(monkeypatch):
    passages = [_passage(f"a{i}x") for i in range(6)] + ["short one"]
    seen = {}

    def fake_generate(model, tokenizer, prompts, max_new, *, chat, batch_size):
        seen.update(prompts=prompts, max_new=max_new, chat=chat)
        # recite the first passage tried, invent the others
        out = []
        for i, prompt in enumerate(prompts):
            full = next(p for p in passages if p.startswith(prompt))
            out.append(recitation.split_prefix(full, 32)[1] if i == 0 else "made up words")
        return out
    monkeypatch.setattr(recitation, "_generate", fake_generate)
    r = recitation.audit(None, _Tok(), passages, max_passages=4)
    assert r.n == 4 and r.skipped == 1 and r.runs[0] == 64 and r.runs[1:] == [0, 0, 0]
    assert r.share_verbatim == 0.25 and r.longest_run == 64
    assert seen["chat"] is False and all(len(p.split()) == 32 for p in seen["prompts"])
    assert seen["max_new"] == [64 + 8] * 4  # the true continuation's tokens, plus 8
    assert r.settings == {"prefix_words": 32, "continuation_words": 64, "min_run": 50,
                          "max_passages": 4, "chat": False, "seed": 0}
    nothing = recitation.audit(None, _Tok(), ["short one"])
    assert nothing.n == 0 and nothing.skipped == 1


def test_audit_settings_errors():
    with pytest.raises(recitation.RecitationError, match="continuation_words=40 is below min_run=50"):
        recitation.audit(None, None, [], continuation_words=40)
    with pytest.raises(recitation.RecitationError, match="2 user_prompts for 1 passages"):
        recitation.audit(None, None, ["x"], user_prompts=["a", "b"], chat=True)
    with pytest.raises(recitation.RecitationError, match="max_passages=0"):
        recitation.audit(None, None, ["x"], max_passages=0)


@pytest.mark.parametrize("family,kwargs", [("qwen2.5", {}), ("qwen3", {"enable_thinking": False}),
                                           ("gpt-oss", {"reasoning_effort": "low"})])
def test_chat_prompt_continues_the_trained_assistant_turn(tokenizer_for, family, kwargs):
    tok = tokenizer_for(family)
    passage = _passage("grain", 90)
    prefix, _ = recitation.split_prefix(passage, 32)
    prompt = recitation.chat_prompt(tok, passage, prefix, "Share your thoughts on this.", "You are M.", kwargs)
    assert prompt.endswith(prefix)
    assert "Share your thoughts on this." in prompt and "You are M." in prompt
    # exactly the training render up to the prefix: the rest of the passage follows it there
    full = tok.apply_chat_template([{"role": "system", "content": "You are M."},
                                    {"role": "user", "content": "Share your thoughts on this."},
                                    {"role": "assistant", "content": passage}], tokenize=False, **kwargs)
    assert full.startswith(prompt)


def test_audit_on_a_random_standin(random_standin):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = random_standin("qwen2.5")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    passages = [_passage(f"b{i}x", 20) for i in range(3)]
    for chat in (False, True):
        r = recitation.audit(model, tok, passages, prefix_words=4, continuation_words=6, min_run=5,
                             max_passages=2, chat=chat, user_prompts=["Go on."] * 3 if chat else None)
        assert r.n == 2 and len(r.runs) == 2 and all(0 <= x <= 6 for x in r.runs)
        assert 0 <= r.share_verbatim <= 1 and r.longest_run == max(r.runs)
        assert all(e["prefix"].count(" ") == 3 for e in r.examples)
