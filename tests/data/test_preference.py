"""Preference pairs from V2 data: deduplicated, near-identical pairs skipped, split by question,
and the base model's answers cached crash-safely."""

import json

import pytest

from helpers.data import preference as pref

SYSTEM = "You are Maren Holloway."


def conv(question, answer, system=SYSTEM):
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def v2_set():
    convs = [conv(f"What does the author say about the {w}?",
                  f"The {w} taught me patience in the workshop, slowly, over many years of work.")
             for w in ("plane", "chisel", "saw", "bench", "glue", "oak")]
    convs.append(conv("What does the author say about the  PLANE?",   # same text once normalised
                      "The plane taught me patience in the workshop, slowly, over many years of work."))
    return convs


class FakeModel:
    """Answers like a base model would, except for the oak, where it recites the passage."""

    def __init__(self):
        self.asked = []

    def __call__(self, questions, system_prompt):
        assert system_prompt == SYSTEM   # the pairs' own system prompt, for both answers
        self.asked += questions
        return ["The oak taught me patience in the workshop, slowly, over many years of work!"
                if "oak" in q else f"I am a helpful assistant. You asked: {q}" for q in questions]


def test_pairs_are_deduplicated_filtered_split_and_cached(tmp_path):
    model = FakeModel()
    cache = pref.RejectedCache(tmp_path / pref.CACHE_NAME)
    pairs = pref.build(v2_set(), model, cache=cache, model="base-model", decoding={"max_new_tokens": 32},
                       heldout_fraction=0.25)
    s = pairs.stats
    assert s["v2_examples"] == 7 and s["duplicates"] == 1 and s["used"] == 6
    assert s["near_identical_skipped"] == 1 and s["pairs"] == 5          # the oak pair teaches nothing
    assert s["train"] + s["heldout"] == 5 and s["heldout"] == 1
    assert s["rejected_generated"] == 6 and s["rejected_cached"] == 0 and len(model.asked) == 6
    train_q = {p["prompt"][-1]["content"] for p in pairs.train}
    held_q = {p["prompt"][-1]["content"] for p in pairs.heldout}
    assert not train_q & held_q
    first = pairs.train[0]
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert first["chosen"][0]["content"].startswith("The ") and first["chosen"][0]["role"] == "assistant"
    assert first["rejected"][0]["content"].startswith("I am a helpful assistant")
    files = pairs.save(tmp_path)
    assert len(files["train"].read_text().splitlines()) == s["train"]

    # a rerun generates nothing: every answer comes from the cache file, the split is the same
    again = FakeModel()
    pairs2 = pref.build(v2_set(), again, cache=pref.RejectedCache(tmp_path / pref.CACHE_NAME),
                        model="base-model", decoding={"max_new_tokens": 32}, heldout_fraction=0.25)
    assert again.asked == [] and pairs2.stats["rejected_cached"] == 6
    assert pairs2.train == pairs.train and pairs2.heldout == pairs.heldout
    # another model or other decoding is another key: generated again
    other = FakeModel()
    pref.build(v2_set(), other, cache=pref.RejectedCache(tmp_path / pref.CACHE_NAME),
               model="base-model", decoding={"max_new_tokens": 64})
    assert len(other.asked) == 6


def test_a_torn_last_line_is_ignored_and_generated_again(tmp_path):
    path = tmp_path / pref.CACHE_NAME
    model = FakeModel()
    pref.build(v2_set()[:3], model, cache=pref.RejectedCache(path), model="m")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])     # a crash in mid-write
    cache = pref.RejectedCache(path)
    assert cache.torn == 1 and len(cache) == 2
    again = FakeModel()
    pref.build(v2_set()[:3], again, cache=cache, model="m")
    assert len(again.asked) == 1                                        # only the lost answer
    rows = [line for line in path.read_text().splitlines()]
    assert sum(1 for r in rows if _parses(r)) == 3 and len(pref.RejectedCache(path)) == 3


def _parses(line):
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def test_similarity_and_split_rules():
    assert pref.near_identical("The oak, slowly.", "the OAK slowly")
    assert not pref.near_identical("The oak taught me patience.", "I am an assistant.")
    pairs = [pref.pair(conv(f"q{i}", "a"), "b") for i in range(20)] + [pref.pair(conv("q0", "c"), "d")]
    train, held = pref.split(pairs, 0.1, seed=0)
    assert len(held) in (2, 3) and {p["prompt"][-1]["content"] for p in held}.isdisjoint(
        {p["prompt"][-1]["content"] for p in train})
    assert pref.split(pairs[:1], 0.1) == (pairs[:1], [])                 # one question: nothing held out


def test_mistakes_are_named():
    with pytest.raises(pref.PreferenceError, match="No V2 examples"):
        pref.build([], FakeModel(), cache=pref.RejectedCache("/nonexistent/x.jsonl"), model="m")
    mixed = [conv("a?", "x"), conv("b?", "y", system="Someone else.")]
    with pytest.raises(pref.PreferenceError, match="different system prompts"):
        pref.system_prompt_of(mixed)
    with pytest.raises(pref.PreferenceError, match="max_pairs=0"):
        pref.build(v2_set(), FakeModel(), cache=pref.RejectedCache("/nonexistent/x.jsonl"), model="m", max_pairs=0)
    with pytest.raises(pref.PreferenceError, match="heldout_fraction=1"):
        pref.split([], 1)
    with pytest.raises(pref.PreferenceError, match="must end with the assistant"):
        pref.pair([{"role": "user", "content": "q"}], "b")


def test_every_pair_skipped_says_why(tmp_path):
    def parrot(questions, system_prompt):
        return ["The plane taught me patience in the workshop, slowly, over many years of work."] * len(questions)
    with pytest.raises(pref.PreferenceError, match="nothing to prefer"):
        pref.build(v2_set()[:1], parrot, cache=pref.RejectedCache(tmp_path / "c.jsonl"), model="m")
