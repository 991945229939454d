"""Style: how close an answer's words and style are to the author's (:func:`tfidf_similarity`,
:func:`stylometry`, :func:`burrows_delta`). sklearn is imported inside the function that needs it."""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Sequence

import numpy as np

from helpers.evaluation.text import _FUNCTION_SET, FUNCTION_WORDS, NAN, sentences, words

#: Window of the moving-average type-token ratio (MATTR) in :func:`stylometry`.
TTR_WINDOW = 50


def tfidf_similarity(answers: Sequence[str], reference: Sequence[str]) -> list[float]:
    """Cosine similarity of each answer's TF-IDF vector to the centroid of the reference passages.

    The vectorizer (words from :func:`words`, term counts damped to 1 + log(count) so that "the"
    and "and" do not decide the score) is fitted on the reference passages; the centroid is the
    mean of their L2-normalised vectors, so the score is the mean cosine to the passages up to
    one constant factor per reference, and lies in [0, 1]. Words the reference never uses are not
    counted; an empty answer scores 0.0.
    """
    if not any(words(r) for r in reference):
        raise ValueError("tfidf_similarity: the reference passages hold no words; pass the "
                         "author's passages (e.g. the held-out chapters' text).")
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer=words, sublinear_tf=True)
    ref = vectorizer.fit_transform(list(reference))
    centroid = np.asarray(ref.mean(axis=0)).ravel()
    centroid /= np.linalg.norm(centroid)
    if not answers:
        return []
    sims = vectorizer.transform(list(answers)) @ centroid
    return [float(s) for s in np.asarray(sims).ravel()]


def _mattr(ws: Sequence[str], window: int = TTR_WINDOW) -> float:
    """Moving-average type-token ratio; the plain ratio for texts shorter than the window."""
    if not ws:
        return NAN
    if len(ws) <= window:
        return len(set(ws)) / len(ws)
    counts = Counter(ws[:window])
    total = len(counts)
    for i in range(window, len(ws)):
        counts[ws[i]] += 1
        old = ws[i - window]
        counts[old] -= 1
        if counts[old] == 0:
            del counts[old]
        total += len(counts)
    return total / (len(ws) - window + 1) / window


def stylometry(text: str) -> dict:
    """Style of one text: ``mean_sentence_words``, ``type_token_ratio`` and ``function_words``.

    The type-token ratio is the moving average over windows of ``TTR_WINDOW`` (50) words (MATTR),
    which does not fall as a text grows; texts shorter than a window get the plain ratio (higher
    than MATTR would be for a longer text). ``function_words`` maps each of ``FUNCTION_WORDS`` to
    its share of the text's words. A text without words gives nan everywhere.
    """
    ws = words(text)
    if not ws:
        return {"mean_sentence_words": NAN, "type_token_ratio": NAN,
                "function_words": {w: NAN for w in FUNCTION_WORDS}}
    counts = Counter(w for w in ws if w in _FUNCTION_SET)
    return {"mean_sentence_words": len(ws) / max(1, len(sentences(text))),
            "type_token_ratio": _mattr(ws),
            "function_words": {w: counts[w] / len(ws) for w in FUNCTION_WORDS}}


class _DeltaPool:
    """The fixed part of a Burrows' Delta pool (the author and the other documents), word counts
    kept so that many texts can be measured against it cheaply."""

    def __init__(self, author: Counter, others: Sequence[Counter], n_words: int):
        if n_words < 1:
            raise ValueError(f"burrows_delta: n_words={n_words} must be at least 1 (default 100).")
        if not author:
            raise ValueError("burrows_delta: the author's text has no words; pass the author's "
                             "passages.")
        self.n_words = n_words
        self.docs = [c for c in (author, *others) if c]  # documents without words carry nothing
        self.totals = [sum(c.values()) for c in self.docs]
        self._columns: dict[str, np.ndarray] = {}  # word -> its rate in each document
        self.pool = Counter(author)
        for c in others:
            self.pool.update(c)
        top = sorted(self.pool.items(), key=lambda kv: (-kv[1], kv[0]))[:n_words]
        self.top = [w for w, _ in top]

    def _column(self, word: str) -> np.ndarray:
        col = self._columns.get(word)
        if col is None:
            col = np.array([c.get(word, 0) / t for c, t in zip(self.docs, self.totals)])
            self._columns[word] = col
        return col

    def delta(self, text: str) -> float:
        counts = Counter(words(text))
        if not counts:
            return NAN
        # A word outside the pool's top n and the text's vocabulary cannot enter the top n.
        candidates = set(self.top) | set(counts)
        mfw = heapq.nsmallest(self.n_words, candidates,
                              key=lambda w: (-(self.pool[w] + counts[w]), w))
        total = sum(counts.values())
        freqs = np.vstack([np.array([counts[w] / total for w in mfw]),
                           np.column_stack([self._column(w) for w in mfw])])
        spread = freqs.max(axis=0) > freqs.min(axis=0)
        if not spread.any():
            return 0.0
        f = freqs[:, spread]
        z = (f - f.mean(axis=0)) / f.std(axis=0, ddof=1)
        return float(np.mean(np.abs(z[0] - z[1])))


def burrows_delta(text: str, author: str, others: Sequence[str] = (), *,
                  n_words: int = 100) -> float:
    """Burrows' Delta between ``text`` and the ``author``'s text (0 for the same word use).

    The ``n_words`` most frequent words of the whole pool (text, author, others) are z-scored by
    the mean and sample standard deviation of their relative frequencies across the pool's
    documents; Delta is the mean absolute z difference between text and author. Words used at the
    same rate in every document carry no information and are skipped (none left: 0.0). Without
    ``others`` every z is +-0.71 and Delta is only sqrt(2) times the share of words whose rates
    differ: pass other documents (for example the author's passages one by one) for a meaningful
    scale. Delta is noisy on texts of a few hundred words; pool a model's answers for a stable
    figure. A text without words gives nan.
    """
    pool = _DeltaPool(Counter(words(author)), [Counter(words(o)) for o in others], n_words)
    return pool.delta(text)
