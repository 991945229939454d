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
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import re
import statistics
import time
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

NAN = float("nan")

#: English function words: the stylometric profile of :func:`stylometry`, and the words
#: :func:`keyword_profile` never picks as keywords.
FUNCTION_WORDS: tuple[str, ...] = (
    "a", "an", "the",
    "i", "me", "my", "we", "us", "our", "you", "your", "he", "him", "his", "she", "her",
    "it", "its", "they", "them", "their", "this", "that", "these", "those",
    "who", "whom", "whose", "which", "what",
    "of", "to", "in", "on", "at", "by", "for", "with", "from", "into", "upon", "about", "over",
    "under", "between", "through", "after", "before", "without", "within", "against", "among",
    "up", "down", "out",
    "and", "but", "or", "nor", "so", "yet", "if", "then", "than", "because", "as", "while",
    "although", "though", "when", "where", "whether",
    "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did",
    "have", "has", "had", "will", "would", "shall", "should", "can", "could", "may", "might",
    "must",
    "not", "no", "there", "here", "all", "any", "some", "each", "every", "more", "most", "other",
    "such", "only", "very", "also", "just", "too",
)
_FUNCTION_SET = frozenset(FUNCTION_WORDS)

#: Window of the moving-average type-token ratio (MATTR) in :func:`stylometry`.
TTR_WINDOW = 50

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|(?<=[.!?\u2026][\"'\u201d\u2019)\]])\s+|\n\s*\n")


# ----------------------------------------------------------------------------- words


def words(text: str) -> list[str]:
    """Lower-case word tokens: runs of letters and digits, joined by inner apostrophes."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def sentences(text: str) -> list[str]:
    """Sentences split after . ! ? or an ellipsis (closing quotes kept) and at blank lines;
    pieces without words are dropped. Abbreviations such as "Dr." also end a sentence."""
    parts = (p.strip() for p in _SENTENCE_END.split(text))
    return [p for p in parts if p and _WORD.search(p)]


# ----------------------------------------------------------------------------- perplexity


def _windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, first, end)`` per forward pass: input ``ids[begin:end]``, targets ``first..end-1``.

    The first pass scores every token but the first; each later one scores the next ``stride``
    tokens with the ``window - stride`` tokens before them as context only. Every target has at
    least one token of context because ``stride < window``.
    """
    if n < 2:
        return []
    end = min(window, n)
    out = [(0, 1, end)]
    while end < n:
        new_end = min(end + stride, n)
        out.append((max(0, new_end - window), end, new_end))
        end = new_end
    return out


def heldout_nll(model: Any, tokenizer: Any, texts: Sequence[str], *, window: int = 512,
                stride: int = 256, progress: Callable[[int, int], Any] | None = None) -> dict:
    """Negative log-likelihood of held-out texts, scored in sliding windows.

    Each text is tokenized on its own without special tokens. With a BOS token it is prepended
    and every text token is scored; without one (Qwen) the first token of each text is context
    only. Windows of ``window`` tokens advance by ``stride``; every later token is scored exactly
    once, with up to ``window - stride`` tokens of context (the usual strided perplexity; the sum
    is taken from the logits, which is what labels of -100 on the context tokens would give).
    ``bytes`` counts all UTF-8 bytes of the texts, so without a BOS token ``bits_per_byte`` runs a
    little high (one unscored token per text): pass long texts, such as whole chapters.

    Returns ``nll_sum`` (nats), ``tokens`` (scored), ``bytes``, ``perplexity`` and
    ``bits_per_byte``. ``progress(done, total)`` is called after each window.
    """
    if window < 2:
        raise ValueError(f"heldout_nll: window={window} is too small; use at least 2 "
                         "(default 512).")
    if not 1 <= stride < window:
        raise ValueError(f"heldout_nll: stride={stride} must be at least 1 and smaller than "
                         f"window={window} so that every scored token has context; use "
                         f"stride=window // 2 (the default is 256 for 512).")
    import torch

    bos = getattr(tokenizer, "bos_token_id", None)
    seqs: list[list[int]] = []
    n_bytes = 0
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        seqs.append(([bos] if bos is not None else []) + ids)
        n_bytes += len(text.encode("utf-8"))
    plans = [_windows(len(ids), window, stride) for ids in seqs]
    total = sum(len(p) for p in plans)
    if total == 0:
        raise ValueError(f"heldout_nll: the {len(seqs)} held-out texts hold no token to score "
                         "(empty or one token each); pass the held-out passages' text.")

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum, tokens, done = 0.0, 0, 0
    try:
        with torch.no_grad():
            for ids, plan in zip(seqs, plans):
                for begin, first, end in plan:
                    x = torch.tensor([ids[begin:end]], dtype=torch.long, device=device)
                    logits = model(input_ids=x, attention_mask=torch.ones_like(x),
                                   use_cache=False).logits[0]
                    pred = logits[first - 1 - begin:end - 1 - begin].float()
                    target = x[0, first - begin:end - begin]
                    nll_sum += torch.nn.functional.cross_entropy(pred, target,
                                                                 reduction="sum").item()
                    tokens += end - first
                    done += 1
                    if progress is not None:
                        progress(done, total)
    finally:
        if was_training:
            model.train()
    return {"nll_sum": nll_sum, "tokens": tokens, "bytes": n_bytes,
            "perplexity": math.exp(nll_sum / tokens),
            "bits_per_byte": nll_sum / math.log(2) / n_bytes if n_bytes else NAN}


# ----------------------------------------------------------------------------- style


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


# ----------------------------------------------------------------------------- memorisation


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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
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
                best = max(best, _common_prefix(key, seq[sa[j]:sa[j] + k]))
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


# ----------------------------------------------------------------------------- answers


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


# ----------------------------------------------------------------------------- intervals


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0, stat: Callable = np.mean) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``stat`` of the values and its percentile bootstrap interval.

    Values (one per prompt) are resampled with replacement ``n_boot`` times; nan values are left
    out first. ``stat`` is called as ``stat(array, axis=1)`` (numpy reductions), else row by row.
    The same seed gives the same interval. Fewer than two values: ``(value or nan, nan, nan)``.
    """
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot={n_boot} must be at least 1 (default 2000).")
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: alpha={alpha} must lie between 0 and 1 (0.05 gives a 95% "
                         "interval).")
    v = np.asarray([float(x) for x in values], dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (NAN, NAN, NAN)
    if len(v) == 1:
        return (float(v[0]), NAN, NAN)
    estimate = float(stat(v))
    rng = np.random.default_rng(seed)
    samples = v[rng.integers(0, len(v), size=(n_boot, len(v)))]
    try:
        boots = np.asarray(stat(samples, axis=1), dtype=float)
    except TypeError:
        boots = np.array([stat(row) for row in samples], dtype=float)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return (estimate, float(low), float(high))


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
