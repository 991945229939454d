import math
import random
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers.evaluation import metrics as M

AUTHOR = (
    "I was seventeen when I first pushed open the door of the workshop, and I remember the smell "
    "before I remember anything else. My mother had written a letter for me, and I held it in both "
    "hands as if it might blow away. The old woman read it slowly, folded it twice and put it in "
    "her apron. She did not ask me what I wanted to build. She asked me whether I could sweep, and "
    "I said that I could, and so for the first month I swept. I swept the shavings from under the "
    "benches and the dust from the window ledges, and I was happy in a way I could not explain."
)
PARAPHRASE = (
    "I remember that I was seventeen when I first opened the door of the workshop, and the smell "
    "is what I remember before anything else. I had a letter from my mother, and I held it with "
    "both hands as though the wind might take it. The old woman read it slowly and folded it and "
    "put it away in her apron. She never asked me what I hoped to build; she asked me if I could "
    "sweep, and I told her that I could, so I swept for the first month, and I was glad of it."
)
UNRELATED = (
    "To reset the router, press and hold the recessed button on the back panel for ten seconds. "
    "Wait for the status light to turn amber, then release it. Configuration is restored to "
    "factory defaults, including network names, passwords and firewall rules. Reconnect each "
    "device using the label printed on the underside of the unit. Firmware updates are installed "
    "automatically overnight; manual installation is possible from the administration page."
)
OTHERS = (
    "The council met on Tuesday to discuss the budget. Members voted to increase funding for "
    "roads and libraries, while a proposal to close two swimming pools was postponed until spring.",
    "Mix the flour, salt and water in a large bowl. Knead the dough for ten minutes, cover it, and "
    "leave it somewhere warm until it has doubled in size. Bake at a high heat for forty minutes.",
    "We walked along the river until the path ran out, and then we sat on the stones and ate our "
    "bread. He told me about his brother, who had gone to sea, and I listened to the water.",
    "Results indicate a significant effect of temperature on growth rate. Samples maintained at "
    "higher temperatures showed increased variance, consistent with previous observations.",
)


# ----------------------------------------------------------------------------- words


def test_words_and_sentences():
    assert M.words("It's the Doctor\u2019s 3rd DAY--ok? Yes.") == \
        ["it's", "the", "doctor's", "3rd", "day", "ok", "yes"]
    assert M.words("  ...  ") == []
    assert M.sentences('He said "Go." Then he left! Why?\n\nA new paragraph') == \
        ['He said "Go."', "Then he left!", "Why?", "A new paragraph"]
    assert M.sentences("...") == []


def test_module_import_is_light():
    code = ("import sys, helpers.metrics, helpers.compare_cache; "
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- perplexity


@pytest.fixture(scope="module")
def tiny_lm(tokenizer_for):
    """A random-weight one-layer Qwen2 over the stand-in tokenizer, on one thread (a model this
    small runs ~40x slower on two busy threads than on one)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    tok = tokenizer_for("qwen2.5")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                      max_position_embeddings=512)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Qwen2ForCausalLM(cfg).eval(), tok
    finally:
        torch.set_num_threads(threads)


def _full_mean_nll(model, ids):
    import torch
    with torch.no_grad():
        x = torch.tensor([ids])
        return model(input_ids=x, labels=x).loss.item()


def test_heldout_nll_full_window_matches_one_forward_pass(tiny_lm):
    model, tok = tiny_lm
    assert tok.bos_token_id is None
    ids = tok(AUTHOR, add_special_tokens=False)["input_ids"]
    out = M.heldout_nll(model, tok, [AUTHOR], window=len(ids) + 5, stride=4)
    assert out["tokens"] == len(ids) - 1  # no BOS: the first token is context only
    assert out["nll_sum"] / out["tokens"] == pytest.approx(_full_mean_nll(model, ids), abs=1e-4)
    assert out["bytes"] == len(AUTHOR.encode("utf-8"))
    assert out["perplexity"] == pytest.approx(math.exp(out["nll_sum"] / out["tokens"]))
    assert out["bits_per_byte"] == pytest.approx(out["nll_sum"] / math.log(2) / out["bytes"])
    # A random model over ~2k tokens: perplexity near the vocabulary size.
    assert 500 < out["perplexity"] < 10 * len(tok)


def test_heldout_nll_small_windows_score_each_token_once(tiny_lm):
    model, tok = tiny_lm
    texts = [AUTHOR, PARAPHRASE, "Hi", ""]
    n_ids = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    full = M.heldout_nll(model, tok, texts, window=1024, stride=512)
    calls = []
    small = M.heldout_nll(model, tok, texts, window=16, stride=5,
                          progress=lambda done, total: calls.append((done, total)))
    assert full["tokens"] == small["tokens"] == sum(max(0, n - 1) for n in n_ids)
    assert small["bytes"] == full["bytes"]
    assert small["nll_sum"] == pytest.approx(full["nll_sum"], rel=0.05)
    assert small["nll_sum"] != full["nll_sum"]  # less context: not the same numbers
    assert calls[-1][0] == calls[-1][1] == len(calls) > 20
    # Each later window scores `stride` tokens: the windows of one text tile it exactly.
    assert M._windows(40, 16, 5) == [(0, 1, 16), (5, 16, 21), (10, 21, 26), (15, 26, 31),
                                     (20, 31, 36), (24, 36, 40)]


def test_heldout_nll_with_bos_scores_every_text_token(tiny_lm):
    model, tok = tiny_lm

    class WithBos:
        bos_token_id = 1

        def __call__(self, text, add_special_tokens=True):
            return tok(text, add_special_tokens=add_special_tokens)

    ids = tok(AUTHOR, add_special_tokens=False)["input_ids"]
    out = M.heldout_nll(model, WithBos(), [AUTHOR], window=40, stride=20)
    assert out["tokens"] == len(ids)
    assert out["nll_sum"] / out["tokens"] > 0


def test_heldout_nll_errors(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(ValueError, match="stride=8 must be .* smaller than window=8"):
        M.heldout_nll(model, tok, [AUTHOR], window=8, stride=8)
    with pytest.raises(ValueError, match="no token to score"):
        M.heldout_nll(model, tok, ["", "a"])


# ----------------------------------------------------------------------------- style


def test_tfidf_similarity():
    reference = [AUTHOR, OTHERS[2]]
    copied, unrelated, empty = M.tfidf_similarity([AUTHOR, UNRELATED, ""], reference)
    assert copied > 0.5 > unrelated
    assert empty == 0.0
    assert M.tfidf_similarity(["zebra quokka"], reference) == [0.0]
    assert M.tfidf_similarity([], reference) == []
    with pytest.raises(ValueError, match="reference passages hold no words"):
        M.tfidf_similarity(["a"], ["", "..."])


def test_stylometry():
    s = M.stylometry("The cat sat. The cat ran away from the dog!")
    assert s["mean_sentence_words"] == 5.0
    assert s["type_token_ratio"] == pytest.approx(7 / 10)  # shorter than a window: plain ratio
    assert s["function_words"]["the"] == pytest.approx(3 / 10)
    assert s["function_words"]["from"] == pytest.approx(1 / 10)
    assert s["function_words"]["of"] == 0.0
    assert set(s["function_words"]) == set(M.FUNCTION_WORDS)
    assert 50 <= len(set(M.FUNCTION_WORDS)) == len(M.FUNCTION_WORDS) <= 120
    # MATTR does not fall with length: the same text repeated keeps (almost) the same ratio.
    once = M.stylometry(AUTHOR)["type_token_ratio"]
    assert M.stylometry(" ".join([AUTHOR] * 5))["type_token_ratio"] == pytest.approx(once, abs=0.05)
    assert M._mattr(["a", "b"] * 50, window=4) == 0.5
    empty = M.stylometry("  ")
    assert math.isnan(empty["mean_sentence_words"]) and math.isnan(empty["type_token_ratio"])


def test_burrows_delta():
    assert M.burrows_delta(AUTHOR, AUTHOR) == 0.0
    assert M.burrows_delta(AUTHOR, AUTHOR, OTHERS) == 0.0
    assert M.burrows_delta(UNRELATED, AUTHOR) > 0
    near = M.burrows_delta(PARAPHRASE, AUTHOR, OTHERS)
    far = M.burrows_delta(UNRELATED, AUTHOR, OTHERS)
    assert 0 < near < far
    assert math.isnan(M.burrows_delta("", AUTHOR, OTHERS))
    with pytest.raises(ValueError, match="author's text has no words"):
        M.burrows_delta(AUTHOR, "")


def test_burrows_delta_by_hand():
    # Two words, three documents: relative frequencies of "a" 1, 0.5, 0 and of "b" 0, 0.5, 1.
    # Each column has mean 0.5 and sample sd 0.5, so z = (1, 0, -1) and (-1, 0, 1).
    assert M.burrows_delta("a a", "a b", ["b b"], n_words=2) == pytest.approx(1.0)
    assert M.burrows_delta("a a", "b b", ["a b"], n_words=2) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- memorisation


TRAINING = ["one two three four five six seven eight nine ten eleven twelve",
            "alpha beta gamma delta epsilon zeta eta theta iota kappa"]


def test_memorisation_exact_numbers():
    index = M.MemorisationIndex(TRAINING, n=8)
    # 5 new words, 10 copied (two to eleven), 5 new: 20 words, 13 8-grams, 3 inside the copy.
    answer = "red green blue cyan pink two three four five six seven eight nine ten eleven " \
             "white black grey brown tan"
    out = M.memorisation(answer, index)
    assert out == {"answer_words": 20, "longest_copy_words": 10, "longest_copy_share": 0.5,
                   "ngram_overlap": 3 / 13}
    assert M.memorisation(answer, TRAINING) == out  # the same without a prebuilt index
    assert M.memorisation(answer, index, n=4)["ngram_overlap"] == pytest.approx(7 / 17)


def test_memorisation_edges():
    index = M.MemorisationIndex(TRAINING)
    same = M.memorisation(TRAINING[0], index)
    assert (same["longest_copy_share"], same["ngram_overlap"]) == (1.0, 1.0)
    disjoint = M.memorisation("nothing here matches the training words at all today", index)
    assert (disjoint["longest_copy_words"], disjoint["longest_copy_share"],
            disjoint["ngram_overlap"]) == (0, 0.0, 0.0)
    short = M.memorisation("three four five", index)  # shorter than n: no n-gram to count
    assert (short["longest_copy_share"], short["ngram_overlap"]) == (1.0, 0.0)
    assert M.memorisation("", index) == {"answer_words": 0, "longest_copy_words": 0,
                                         "longest_copy_share": 0.0, "ngram_overlap": 0.0}
    # No copy across the boundary between two passages.
    across = M.memorisation("eleven twelve alpha beta", index)
    assert across["longest_copy_words"] == 2
    with pytest.raises(ValueError, match="n=0 must be at least 1"):
        M.MemorisationIndex(TRAINING, n=0)


def test_memorisation_matches_brute_force():
    rng = random.Random(3)
    for _ in range(50):
        training = [" ".join(rng.choice("abcd") for _ in range(rng.randint(0, 30)))
                    for _ in range(rng.randint(1, 3))]
        answer = [rng.choice("abcdz") for _ in range(rng.randint(1, 40))]
        index = M.MemorisationIndex(training)
        index._PROBE = rng.choice([1, 2, 32])  # exercise the second, full-length look-up
        expected = []
        for i in range(len(answer)):
            best = 0
            for t in (t.split() for t in training):
                for j in range(len(t)):
                    k = 0
                    while i + k < len(answer) and j + k < len(t) and answer[i + k] == t[j + k]:
                        k += 1
                    best = max(best, k)
            expected.append(best)
        assert index.match_lengths(answer) == expected


def test_memorisation_speed_on_200k_words():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf-like, as in prose
    passages = [" ".join(rng.choices(vocab, weights, k=350)) for _ in range(572)]
    start = time.perf_counter()
    index = M.MemorisationIndex(passages)
    built = time.perf_counter() - start
    answers = [" ".join(rng.choices(vocab, weights, k=150)) + " " + passages[i][:600]
               for i in range(100)]
    start = time.perf_counter()
    rows = [M.memorisation(a, index) for a in answers]
    scored = time.perf_counter() - start
    print(f"\nmemorisation index: {index.words} words built in {built:.2f} s; "
          f"100 answers scored in {scored:.2f} s")
    assert index.words == 572 * 350
    assert all(r["longest_copy_words"] >= 80 for r in rows)


# ----------------------------------------------------------------------------- answers


def test_answer_stats_counts_empty_answers():
    s = M.answer_stats(["one two", "  \n", "one two three four", ""])
    assert s == {"n": 4, "empty": 2, "empty_rate": 0.5, "mean_words": 1.5, "median_words": 1.0}
    assert math.isnan(M.answer_stats([])["mean_words"])


def test_keyword_profile():
    answers = ["The lantern burned by the river.", "A river, a lantern and the old lantern."]
    prof = M.keyword_profile(answers, ["lantern", "river", "old lantern", "sea"])
    assert prof == pytest.approx({"lantern": 3000 / 14, "river": 2000 / 14,
                                  "old lantern": 1000 / 14, "sea": 0.0})
    chosen = M.keyword_profile(answers, reference=["lantern lantern lantern river river the the "
                                                   "that that that there there"], top_k=2)
    assert list(chosen) == ["lantern", "river"]  # function words and short words never chosen
    assert math.isnan(M.keyword_profile([""], ["lantern"])["lantern"])
    with pytest.raises(ValueError, match="pass keywords"):
        M.keyword_profile(answers)


# ----------------------------------------------------------------------------- intervals


def test_bootstrap_ci():
    assert M.bootstrap_ci([0.5] * 10) == (0.5, 0.5, 0.5)
    values = [0.2, 0.9, 0.4, 0.7, 0.1, 0.8, 0.5, 0.3, float("nan")]
    est, lo, hi = M.bootstrap_ci(values)
    assert est == pytest.approx(statistics.fmean(v for v in values if not math.isnan(v)))
    assert lo < est < hi and 0.1 <= lo and hi <= 0.9
    assert M.bootstrap_ci(values) == (est, lo, hi)  # deterministic for a seed
    assert M.bootstrap_ci(values, seed=1) != (est, lo, hi)
    narrow = M.bootstrap_ci(values, alpha=0.5)
    assert lo < narrow[1] < narrow[2] < hi
    assert M.bootstrap_ci(values, stat=np.median)[0] == 0.45
    by_row = M.bootstrap_ci(values, stat=statistics.median)  # no axis=: called row by row
    assert by_row[1:] == M.bootstrap_ci(values, stat=np.median)[1:]
    one = M.bootstrap_ci([3.0, float("nan")])
    assert one[0] == 3.0 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(x) for x in M.bootstrap_ci([]))
    with pytest.raises(ValueError, match="alpha=1.5"):
        M.bootstrap_ci(values, alpha=1.5)


def test_score_answers_and_summarise():
    training = [AUTHOR, OTHERS[2]]
    answers = [AUTHOR, PARAPHRASE, UNRELATED, "   "]
    rows = M.score_answers(answers, author_passages=[AUTHOR, PARAPHRASE, OTHERS[2]],
                           training_passages=training, prompts=["p1", "p2", "p3", "p4"])
    assert [r["prompt"] for r in rows] == ["p1", "p2", "p3", "p4"]
    copied, para, unrelated, empty = rows
    assert copied["longest_copy_share"] == 1.0 and copied["ngram_overlap"] == 1.0
    assert unrelated["ngram_overlap"] == 0.0
    assert copied["tfidf"] > unrelated["tfidf"]
    assert para["delta"] < unrelated["delta"]
    assert empty["empty"] is True and empty["words"] == 0
    assert all(math.isnan(empty[m]) for m in M.TEXT_METRICS)
    index = M.MemorisationIndex(training)
    again = M.score_answers(answers, author_passages=[AUTHOR, PARAPHRASE, OTHERS[2]], index=index)
    assert [r["ngram_overlap"] for r in again[:3]] == [r["ngram_overlap"] for r in rows[:3]]

    summary = M.summarise(rows)
    assert set(summary) == {"words", "empty", *M.TEXT_METRICS}
    assert summary["empty"][0] == 0.25  # the empty answer counts in the empty rate...
    assert summary["words"][0] == pytest.approx(statistics.fmean(r["words"] for r in rows))
    # ...but not in the text metrics' means.
    assert summary["ngram_overlap"][0] == pytest.approx(
        statistics.fmean(r["ngram_overlap"] for r in rows[:3]))

    with pytest.raises(ValueError, match="give the training text once"):
        M.score_answers(answers, author_passages=[AUTHOR])
    with pytest.raises(ValueError, match="2 prompts for 4 answers"):
        M.score_answers(answers, author_passages=[AUTHOR], index=index, prompts=["a", "b"])
