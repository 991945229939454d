"""A cleaning report per book: what each rule removed, suspicious leftovers, a verdict.

    rows = cleanreport.summary(corpus)      # one row per book: pages, passages, leftovers, verdict
    rows = cleanreport.rules(corpus)        # one row per book and rule: count, three examples
    rows = cleanreport.leftovers(corpus)    # one row per book and kind of leftover: examples

Leftovers are looked for in the passages, not with the cleaning rules:

- **repeated phrases**: runs of ``NGRAM`` words (digits ignored, two of them with letters) found in at least
  ``REPEAT_SHARE`` of a book's passages (and ``REPEAT_MIN`` passages): a header or footer that
  survived repeats like that, prose does not;
- **lone numbers**: a 1-4 digit number between two lower-case words ("the 213 cat"), where a
  page number left in a sentence shows up; counted per 1,000 words;
- **very short lines**: kept lines of one or two words, which a stray header piece, a table
  cell or a figure label leaves behind; as a share of the lines kept.

Verdict: "check" when repeated phrases are found, lone numbers pass ``LONE_PER_1000`` per
1,000 words, short lines pass ``SHORT_SHARE`` of the lines, or the book gave no passage; else
"ok". The reasons are in the row.
"""

from __future__ import annotations

import re
from collections import Counter

NGRAM = 5
REPEAT_SHARE = 0.10
REPEAT_MIN = 3
LONE_PER_1000 = 3.0
SHORT_SHARE = 0.25
_LONE = re.compile(r"(?<![^\s])([a-z][a-z'\u2019]*) (\d{1,4}) ([a-z][a-z'\u2019]*)(?![^\s])")


def _book_passages(corpus, name: str) -> list:
    return [p for p in corpus.passages if p.book == name]


def _repeated(passages, overlap_words: int) -> list[tuple[str, int]]:
    """Phrases of NGRAM words in at least REPEAT_SHARE of the passages (overlaps not counted)."""
    if len(passages) < REPEAT_MIN:
        return []
    seen: Counter = Counter()
    for k, p in enumerate(passages):
        words = re.sub(r"\d+", "#", p.text.lower()).split()
        if k:
            words = words[overlap_words:]
        seen.update({" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)})
    need = max(REPEAT_MIN, REPEAT_SHARE * len(passages))
    return [(g, n) for g, n in seen.most_common(50)
            if n >= need and sum(any(c.isalpha() for c in w) for w in g.split()) >= 2][:20]


def _overlap(passages) -> int:
    """Words neighbouring passages share (the first pair's), 0 for one passage."""
    if len(passages) < 2:
        return 0
    a, b = passages[0].text.split(), passages[1].text.split()
    for n in range(min(len(a), len(b)), 0, -1):
        if a[-n:] == b[:n]:
            return n
    return 0


def _lone_numbers(passages, overlap_words: int) -> tuple[int, int, list[str]]:
    n, words, examples = 0, 0, []
    for k, p in enumerate(passages):
        text = " ".join(p.text.split()[overlap_words if k else 0:])
        words += len(text.split())
        for m in _LONE.finditer(text):
            n += 1
            if len(examples) < 3:
                examples.append(m.group(0))
    return n, words, examples


def _book_rows(corpus):
    for b in corpus.books:
        passages = _book_passages(corpus, b.name)
        ov = _overlap(passages)
        repeated = _repeated(passages, ov)
        lone, words, lone_ex = _lone_numbers(passages, ov)
        yield b, passages, repeated, lone, words, lone_ex


def summary(corpus) -> list[dict]:
    """One row per book: pages, passages, what was removed, leftovers and the verdict."""
    rows = []
    for b, passages, repeated, lone, words, _ in _book_rows(corpus):
        per_1000 = 1000 * lone / words if words else 0.0
        short_share = len(b.short_lines) / b.lines if b.lines else 0.0
        reasons = []
        if not passages:
            reasons.append("no passages")
        if repeated:
            reasons.append(f"{len(repeated)} phrase(s) repeated across passages")
        if per_1000 > LONE_PER_1000:
            reasons.append(f"{per_1000:.1f} lone numbers per 1,000 words")
        if short_share > SHORT_SHARE:
            reasons.append(f"{short_share:.0%} of lines are 1-2 words")
        removed = sum(n for rule, n in b.removed.counts.items() if not rule.startswith("hyphen"))
        rows.append({"file": b.file, "pages": b.pages, "pages_kept": b.pages_kept,
                     "passages": b.passages, "pieces_removed": removed,
                     "repeated_phrases": len(repeated), "lone_numbers_per_1000": round(per_1000, 2),
                     "short_lines": f"{short_share:.1%}",
                     "verdict": "check" if reasons else "ok", "why": "; ".join(reasons)})
    return rows


def rules(corpus) -> list[dict]:
    """One row per book and cleaning rule: how many pieces it removed (or joined), 3 examples."""
    return [{"file": b.file, **row} for b in corpus.books for row in b.removed.rows()]


def leftovers(corpus) -> list[dict]:
    """One row per book and kind of suspicious leftover found, with up to three examples."""
    rows = []
    for b, _, repeated, lone, _, lone_ex in _book_rows(corpus):
        if repeated:
            rows.append({"file": b.file, "leftover": "phrase repeated across passages",
                         "count": len(repeated),
                         "examples": " | ".join(f"{g} ({n} passages)" for g, n in repeated[:3])})
        if lone:
            rows.append({"file": b.file, "leftover": "lone number in a sentence", "count": lone,
                         "examples": " | ".join(lone_ex)})
        if b.short_lines:
            common = Counter(b.short_lines).most_common(3)
            rows.append({"file": b.file, "leftover": "very short line (1-2 words)",
                         "count": len(b.short_lines),
                         "examples": " | ".join(f"{t!r} x{n}" for t, n in common)})
    return rows
