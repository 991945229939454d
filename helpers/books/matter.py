"""Front and back matter: which units of a book are its title page, copyright page, dedication,
table of contents or index, and are left out of the passages (heuristics at :func:`classify`).
"""

from __future__ import annotations

from helpers.books.headings import Unit
from helpers.books.patterns import CONTENTS, COPYRIGHT_SIGNALS, DEDICATION, INDEX, INDEX_ENTRY, SENTENCE_END, TOC_ENTRY

SHORT_WORDS = 50         # front-matter pieces (title page, half-title) are shorter than this
FRONT_PROSE_LIMIT = 1500  # stop looking for front matter after this many words of kept prose
CHAPTER_MIN_WORDS = 150  # a heading that is not "Chapter N"-like opens the body only if this long


def _first_line(u: Unit) -> str:
    return u.heading or (u.lines[0] if u.lines else "")


def _front_kind(u: Unit, short_ok: bool) -> str | None:
    """The kind of front matter a unit is by its content, or None."""
    first = _first_line(u)
    if CONTENTS.fullmatch(first):
        return "table of contents"
    sample = " ".join([u.heading or ""] + u.lines[:40])
    signals = sum(bool(p.search(sample)) for p in COPYRIGHT_SIGNALS)
    # One signal ("Copyright 2024 ...") on a short page, or two anywhere ("All rights reserved"
    # with an ISBN): a chapter page in the front region that mentions copyright once is kept.
    if signals >= 2 or (signals and u.words <= 150) or (u.heading or "").lower() == "copyright":
        return "copyright page"
    lines = u.lines[:60]
    if len(lines) >= 3 and (u.toc_lines + sum(bool(TOC_ENTRY.fullmatch(line)) for line in lines)
                            ) * 2 >= len(lines):
        return "table of contents"   # most lines end in a page number or are dot leaders
    if short_ok and u.words <= 40 and u.lines and DEDICATION.match(u.lines[0]):
        return "dedication"
    return None


def _looks_like_title(u: Unit) -> bool:
    """Title-page-like: under SHORT_WORDS words in short lines (at most 10 words each, as a
    title, a subtitle, "by Author"), none ending a sentence."""
    return (u.words < SHORT_WORDS and all(len(line.split()) <= 10 for line in u.lines)
            and not any(SENTENCE_END.search(line) for line in u.lines))


def _is_index(u: Unit) -> bool:
    """A page headed "Index", or one whose lines are mostly "term, 12, 45" entries."""
    if INDEX.fullmatch(_first_line(u)):
        return True
    lines = u.lines[:80]
    entries = sum(bool(INDEX_ENTRY.fullmatch(line)) for line in lines)
    return len(lines) >= 4 and entries * 2 >= len(lines)


def _section_words(units: list[Unit], i: int, enough: int) -> int:
    """Words from unit i up to the next heading (counting stops at ``enough``)."""
    total = units[i].words
    for u in units[i + 1:]:
        if u.heading or total >= enough:
            break
        total += u.words
    return total


def classify(units: list[Unit]) -> dict[int, str]:
    """Which units are front or back matter: {unit index: kind}.

    The body starts at the first chapter: a "Chapter N"-like heading (from the outline or the
    text), or another heading followed by at least CHAPTER_MIN_WORDS words (a Markdown title
    followed by a copyright line is not a chapter). Before it, a unit is skipped when its content
    says what it is: a "Contents" heading or mostly page-numbered lines (table of contents),
    copyright signals (copyright page), a short "For ..."/"To ..." (dedication). A short piece
    of short lines without any sentence before the first prose is the title page (or "front
    matter" once other front matter was seen). Without chapters, the search stops at the first
    prose, and a book that is all short pieces keeps them; the search also stops after
    FRONT_PROSE_LIMIT words of kept prose, so a long foreword is never searched through.

    At the back, units are skipped from the end while they look like an index: headed "Index",
    or mostly "term, 12, 45" lines. The search stops at the first unit that is not.
    Chapter pages after the first chapter are never skipped, except by the index test.
    """
    first_chapter = None
    for i, u in enumerate(units):
        if u.kind == "chapter" or (
                u.kind == "section"
                and _section_words(units, i, CHAPTER_MIN_WORDS) >= CHAPTER_MIN_WORDS):
            first_chapter = i
            break
    skipped: dict[int, str] = {}
    seen_other = False
    prose_words = 0
    body_start = first_chapter if first_chapter is not None else len(units)
    for i in range(body_start):
        u = units[i]
        if not u.lines and not u.heading:
            continue
        kind = _front_kind(u, short_ok=prose_words == 0)
        if kind is None and prose_words == 0 and _looks_like_title(u):
            kind = "front matter" if seen_other else "title page"
        if kind:
            skipped[i] = kind
            seen_other = seen_other or kind != "title page"
            continue
        prose_words += u.words
        if first_chapter is None or prose_words >= FRONT_PROSE_LIMIT:
            body_start = i if first_chapter is None else first_chapter
            break
    if not prose_words and first_chapter is None:
        # Nothing but short pieces and no chapter: a tiny book, not a title page. Keep it.
        skipped = {i: kind for i, kind in skipped.items()
                   if kind not in ("title page", "front matter")}
        body_start = 0
    for i in range(len(units) - 1, body_start, -1):
        u = units[i]
        if not u.lines and not u.heading:
            continue
        if not _is_index(u):
            break
        skipped[i] = "index"
    return skipped
