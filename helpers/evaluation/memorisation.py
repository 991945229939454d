"""Memorisation: how much of an answer is copied from the training passages rather than written
(:func:`memorisation` with a :class:`MemorisationIndex`: longest copied run, n-gram overlap)."""

from __future__ import annotations

import bisect
import logging
import time
from typing import Sequence

import numpy as np

from helpers.evaluation.text import words

log = logging.getLogger(__name__)


def _suffix_array(seq: Sequence[int]) -> list[int]:
    """Suffix array of an int sequence by prefix doubling (numpy; O(n log^2 n))."""
    n = len(seq)
    if n == 0:
        return []
    rank = np.unique(np.asarray(seq, dtype=np.int64), return_inverse=True)[1].astype(np.int64) + 1
    k = 1
    while True:
        second = np.zeros(n, dtype=np.int64)  # 0: past the end, before every symbol
        second[:n - k] = rank[k:]
        order = np.lexsort((second, rank))
        r, s = rank[order], second[order]
        step = np.ones(n, dtype=np.int64)
        step[1:] = (r[1:] != r[:-1]) | (s[1:] != s[:-1])
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.cumsum(step)
        if rank[order[-1]] == n or k >= n:
            return order.tolist()
        k *= 2


def common_prefix(a: Sequence, b: Sequence) -> int:
    """How many items ``a`` and ``b`` share from their first on (word ids, or words)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class MemorisationIndex:
    """The training passages' words, indexed once for :func:`memorisation`.

    Words become ids, passages are joined with a separator of their own (so no match runs across
    two passages) and a suffix array of the result finds, for each answer position, the longest
    run of words there that the training text also holds (its matching statistics). The longest
    copy and the n-gram overlap both come from these lengths. About 1 s to build on 200k words.
    """

    _PROBE = 32  # words compared first beyond the previous match

    def __init__(self, training_texts: Sequence[str], n: int = 8):
        if n < 1:
            raise ValueError(f"MemorisationIndex: n={n} must be at least 1 (default 8).")
        start = time.perf_counter()
        self.n = n
        self._vocab: dict[str, int] = {}
        seq: list[int] = []
        self.passages = 0
        for text in training_texts:
            seq.extend(self._vocab.setdefault(w, len(self._vocab)) for w in words(text))
            self.passages += 1
            seq.append(-1 - self.passages)  # -1 is for answer words the training never uses
        self.words = len(seq) - self.passages
        self._seq = seq
        self._sa = _suffix_array(seq)
        log.debug("memorisation index: %d words, built in %.2f s", self.words,
                  time.perf_counter() - start)

    def match_lengths(self, answer_words: Sequence[str]) -> list[int]:
        """For each position, the length of the longest word run starting there that occurs in
        the training text."""
        ids = [self._vocab.get(w, -1) for w in answer_words]
        out: list[int] = []
        for i in range(len(ids)):
            if ids[i] < 0:
                out.append(0)
                continue
            # Compare a little more than the previous match could leave (it is at least that
            # minus one here); a match as long as the probe is looked up again in full.
            rest = len(ids) - i
            k = min(rest, self._PROBE + (out[-1] if out else 0))
            best = self._longest_at(ids, i, k)
            if best == k < rest:
                best = self._longest_at(ids, i, rest)
            out.append(best)
        return out

    def _longest_at(self, ids: list[int], i: int, k: int) -> int:
        seq, sa = self._seq, self._sa
        key = ids[i:i + k]
        pos = bisect.bisect_left(sa, key, key=lambda p: seq[p:p + k])
        best = 0
        for j in (pos - 1, pos):
            if 0 <= j < len(sa):
                best = max(best, common_prefix(key, seq[sa[j]:sa[j] + k]))
        return best


def memorisation(answer: str, training: Sequence[str] | MemorisationIndex, *,
                 n: int | None = None) -> dict:
    """How much of ``answer`` is copied from the training passages.

    ``longest_copy_words``: the longest run of words the answer shares with one training passage;
    ``longest_copy_share``: that over the answer's word count; ``ngram_overlap``: the share of the
    answer's word n-grams (``n``; default the index's, 8) found in a training passage. An answer
    shorter than n words has overlap 0.0; an empty answer gives zeros. Build the index once with
    :class:`MemorisationIndex` when scoring many answers.
    """
    if n is not None and n < 1:
        raise ValueError(f"memorisation: n={n} must be at least 1 (default 8).")
    if isinstance(training, MemorisationIndex):
        index = training
    else:
        index = MemorisationIndex(training, n=8 if n is None else n)
    n = index.n if n is None else n
    ws = words(answer)
    if not ws:
        return {"answer_words": 0, "longest_copy_words": 0, "longest_copy_share": 0.0,
                "ngram_overlap": 0.0}
    lengths = index.match_lengths(ws)
    longest = max(lengths)
    grams = len(ws) - n + 1
    overlap = sum(1 for x in lengths[:max(grams, 0)] if x >= n) / grams if grams > 0 else 0.0
    return {"answer_words": len(ws), "longest_copy_words": longest,
            "longest_copy_share": longest / len(ws), "ngram_overlap": overlap}
