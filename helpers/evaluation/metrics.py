"""Metrics for the model comparison, each computed in exactly one place.

- :func:`heldout_nll`: perplexity and bits per byte on held-out book text, in sliding windows.
- :func:`tfidf_similarity`, :func:`stylometry`, :func:`burrows_delta`: how close an answer's
  words and style are to the author's.
- :func:`memorisation` with a :class:`MemorisationIndex`: how much of an answer is copied from
  the training passages rather than written.
- :func:`answer_stats`, :func:`keyword_profile`: lengths, empty answers, keyword rates.
- :func:`bootstrap_ci`: a percentile bootstrap over prompts.
- :func:`score_answers` and :func:`summarise`: one row per answer, then estimates with intervals.

Every text metric reads words through :func:`words`. torch, transformers and sklearn are imported
inside the functions that need them.

The metrics live in their own modules and are all importable from here: ``text`` (words,
sentences, function words), ``perplexity``, ``style``, ``memorisation`` and ``intervals``;
this module keeps the answer statistics, the keyword profile and the per-answer scoring.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from helpers.evaluation.intervals import bootstrap_ci
from helpers.evaluation.memorisation import MemorisationIndex, memorisation
from helpers.evaluation.perplexity import _windows, heldout_nll  # noqa: F401
from helpers.evaluation.style import TTR_WINDOW, _DeltaPool, _mattr, burrows_delta, stylometry, tfidf_similarity  # noqa: F401
from helpers.evaluation.text import _FUNCTION_SET, FUNCTION_WORDS, NAN, sentences, words  # noqa: F401


def answer_stats(answers: Sequence[str]) -> dict:
    """``n``, ``empty`` (blank answers, counted, never dropped), ``empty_rate``, ``mean_words`` and
    ``median_words`` (blank answers count as 0 words). No answers: rates and lengths are nan."""
    lengths = [len(words(a)) for a in answers]
    empty = sum(1 for a in answers if not a.strip())
    n = len(lengths)
    return {"n": n, "empty": empty, "empty_rate": empty / n if n else NAN,
            "mean_words": statistics.fmean(lengths) if n else NAN,
            "median_words": float(statistics.median(lengths)) if n else NAN}


def _count_phrase(ws: Sequence[str], phrase: Sequence[str]) -> int:
    k = len(phrase)
    return sum(1 for i in range(len(ws) - k + 1) if list(ws[i:i + k]) == list(phrase))


def keyword_profile(answers: Sequence[str], keywords: Sequence[str] | None = None, *,
                    top_k: int = 20, reference: Sequence[str] = ()) -> dict[str, float]:
    """Occurrences of each keyword per 1,000 answer words (all answers together).

    A keyword of several words counts as a phrase within one answer. Without ``keywords``, the
    ``top_k`` most frequent words of ``reference`` that are alphabetic, at least 4 letters long and
    not in ``FUNCTION_WORDS`` are used. Answers without any words give nan rates.
    """
    if keywords is None:
        counts = Counter(w for text in reference for w in words(text)
                         if len(w) >= 4 and w.isalpha() and w not in _FUNCTION_SET)
        if not counts:
            raise ValueError("keyword_profile: no keywords given and the reference passages hold "
                             "no content words to choose them from; pass keywords=[...] or "
                             "reference=<the author's passages>.")
        keywords = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    tokenised = [words(a) for a in answers]
    total = sum(len(ws) for ws in tokenised)
    profile: dict[str, float] = {}
    for kw in keywords:
        phrase = words(kw)
        if not phrase:
            raise ValueError(f"keyword_profile: keyword {kw!r} holds no word; remove it.")
        hits = sum(_count_phrase(ws, phrase) for ws in tokenised)
        profile[kw] = hits * 1000 / total if total else NAN
    return profile


# ----------------------------------------------------------------------------- per answer

#: Metrics of :func:`score_answers` that describe the text; nan for answers without words.
TEXT_METRICS = ("tfidf", "delta", "longest_copy_share", "ngram_overlap", "mean_sentence_words",
                "type_token_ratio")


def score_answers(answers: Sequence[str], *, author_passages: Sequence[str],
                  training_passages: Sequence[str] | MemorisationIndex | None = None,
                  index: MemorisationIndex | None = None, prompts: Sequence[str] | None = None,
                  n_words: int = 100) -> list[dict]:
    """One row per answer: ``words``, ``empty``, then the ``TEXT_METRICS``.

    ``tfidf`` is :func:`tfidf_similarity` to ``author_passages``; ``delta`` is
    :func:`burrows_delta` against the author's passages joined, with each passage as another
    document of the pool (so the z-scale is the spread between the author's passages);
    ``longest_copy_share`` and ``ngram_overlap`` come from :func:`memorisation` against
    ``training_passages`` or a prebuilt ``index`` (give one). Answers without words keep
    ``words`` and ``empty`` and get nan for the text metrics, so they count in lengths and the
    empty rate but not in the style means. Rows also hold ``answer`` (and ``prompt`` if given).
    """
    if isinstance(training_passages, MemorisationIndex) and index is None:
        training_passages, index = None, training_passages
    if (training_passages is None) == (index is None):
        raise ValueError("score_answers: give the training text once, as training_passages=<the "
                         "training passages> or index=MemorisationIndex(training_passages).")
    if prompts is not None and len(prompts) != len(answers):
        raise ValueError(f"score_answers: {len(prompts)} prompts for {len(answers)} answers; pass "
                         "one prompt per answer, in the same order, or prompts=None.")
    if index is None:
        index = MemorisationIndex(training_passages)
    sims = tfidf_similarity(answers, author_passages)
    passages = [Counter(words(p)) for p in author_passages]
    author = Counter()
    for c in passages:
        author.update(c)
    pool = _DeltaPool(author, passages, n_words)
    rows = []
    for i, answer in enumerate(answers):
        row: dict[str, Any] = {"prompt": prompts[i]} if prompts is not None else {}
        ws = words(answer)
        row.update(answer=answer, words=len(ws), empty=not answer.strip())
        if not ws:
            row.update({m: NAN for m in TEXT_METRICS})
        else:
            mem = memorisation(answer, index)
            style = stylometry(answer)
            row.update(tfidf=sims[i], delta=pool.delta(answer),
                       longest_copy_share=mem["longest_copy_share"],
                       ngram_overlap=mem["ngram_overlap"],
                       mean_sentence_words=style["mean_sentence_words"],
                       type_token_ratio=style["type_token_ratio"])
        rows.append(row)
    return rows


def summarise(rows: Sequence[Mapping[str, Any]], *, n_boot: int = 2000, alpha: float = 0.05,
              seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``{metric: (estimate, low, high)}`` for every numeric column of ``rows``: the mean over
    answers with its bootstrap interval (:func:`bootstrap_ci`); ``empty`` gives the empty rate.
    nan values (text metrics of empty answers) are left out of their metric only."""
    keys: list[str] = []
    for row in rows:
        for k, v in row.items():
            if k not in keys and isinstance(v, (bool, int, float, np.integer, np.floating)):
                keys.append(k)
    return {k: bootstrap_ci([float(r.get(k, NAN)) for r in rows], n_boot=n_boot, alpha=alpha,
                            seed=seed) for k in keys}
