"""Cleaning page text: control characters, white space, running headers and footers, and page
numbers.

A running header (footer) is a short line repeating at the top (bottom) of pages, compared with
its digits removed; a page number is a line like "17", "xii", "Page 17" or "- 17 -" near a page
edge (details at :func:`remove_running_lines`).
"""

from __future__ import annotations

from collections import Counter

from helpers.books.headings import plain_heading
from helpers.books.patterns import CONTROL, DIGITS, PAGE_NUMBER

REPEAT_MIN_PAGES = 3     # a top/bottom line on at least this many pages is a running header/footer


def clean_lines(raw_pages: list[str], keep_blank: bool) -> list[list[str]]:
    """Each page as stripped lines with control characters gone and white space collapsed.
    Blank lines are kept for text files (they end paragraphs), dropped for PDF pages."""
    pages = []
    for text in raw_pages:
        lines = [" ".join(line.split()) if "  " in line or "\t" in line or "\xa0" in line
                 else line.strip() for line in CONTROL.sub("", text).split("\n")]
        pages.append(lines if keep_blank else [line for line in lines if line])
    return pages


def _repeat_key(line: str) -> str:
    """A line compared with digits removed: "Chapter 2   17" and "Chapter 2 18" are the same."""
    return " ".join(DIGITS.sub(" ", line.lower()).split())


def _edges(lines: list[str], k: int) -> tuple[list[int], list[int]]:
    """Indices of the first k and the last k non-blank lines."""
    head = []
    for i, line in enumerate(lines):
        if line:
            head.append(i)
            if len(head) == k:
                break
    tail = []
    for i in range(len(lines) - 1, -1, -1):
        if lines[i]:
            tail.append(i)
            if len(tail) == k:
                break
    return head, tail[::-1]


def remove_running_lines(pages: list[list[str]], removed=None) -> None:
    """Remove running headers and footers and page numbers, in place.

    A running header (footer) is a line among the first (last) two non-blank lines of a page
    whose digit-free form appears there on at least REPEAT_MIN_PAGES pages and has at most 12
    words. Body text never repeats like that, while a page number in the same line ("Chapter 2
    17") is ignored by the comparison. A chapter heading that matches is kept on the first page
    it appears on (a book whose running header is the chapter title also prints it as the
    heading). Then a line that is only a page number is removed when it is among the first or
    last three non-blank lines of a page. ``removed`` (a :class:`helpers.books.layout.Removals`)
    records what went.
    """
    if len(pages) >= REPEAT_MIN_PAGES:
        top: Counter = Counter()
        bottom: Counter = Counter()
        for lines in pages:
            head, tail = _edges(lines, 2)
            top.update({_repeat_key(lines[i]) for i in head})
            bottom.update({_repeat_key(lines[i]) for i in tail})
        top_keys = {k for k, n in top.items()
                    if n >= REPEAT_MIN_PAGES and k and len(k.split()) <= 12}
        bottom_keys = {k for k, n in bottom.items()
                       if n >= REPEAT_MIN_PAGES and k and len(k.split()) <= 12}
        seen_headings: set[str] = set()
        for lines in pages:
            head, tail = _edges(lines, 2)
            drop = {i for i in head if _repeat_key(lines[i]) in top_keys}
            drop |= {i for i in tail if _repeat_key(lines[i]) in bottom_keys}
            for i in sorted(drop):
                h = plain_heading(lines[i])
                if h and h[0] == "chapter" and lines[i] not in seen_headings:
                    seen_headings.add(lines[i])
                    drop.discard(i)
            if drop:
                if removed is not None:
                    for i in sorted(drop):
                        removed.add("running header/footer (repeated line)", lines[i])
                lines[:] = [line for i, line in enumerate(lines) if i not in drop]
    for lines in pages:
        head, tail = _edges(lines, 3)
        drop = {i for i in head + tail if PAGE_NUMBER.fullmatch(lines[i])}
        if drop:
            if removed is not None:
                for i in sorted(drop):
                    removed.add("page number", lines[i])
            lines[:] = [line for i, line in enumerate(lines) if i not in drop]
