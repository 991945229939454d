"""Headings: chapters from the PDF outline when it has one, else from heading lines ("# Title",
"Chapter 3: ...", "CHAPTER THREE", "Prologue"), and the units pages are split into at them.

A :class:`Unit` is a whole PDF page (split where a heading starts) or, in a text file, a
paragraph; front and back matter are later recognized unit by unit (:mod:`helpers.books.matter`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from helpers.books.patterns import CHAPTER_LINE, HEADING_START, MATTER_LINE, MD_HEADING, NAMED_CHAPTER, PAGE_TAIL


def plain_heading(line: str) -> tuple[str, str, bool] | None:
    """("chapter" | "matter", title, bare) for a heading line, else None. ``bare``: the line is
    only "Chapter 3"-like, with no title after the number."""
    if len(line) > 90 or not HEADING_START.match(line):
        return None
    if MATTER_LINE.fullmatch(line):
        return "matter", line, False
    m = CHAPTER_LINE.fullmatch(line) or NAMED_CHAPTER.fullmatch(line)
    if not m:
        return None
    title = m["title"]
    # "Chapter 3 was the hardest" is prose; "Chapter 3 ..... 41" is a contents line.
    if title and (not (title[0].isupper() or title[0] in "\"'\u2018\u201c(")
                  or PAGE_TAIL.search(line) or len(line.split()) > 12):
        return None
    return "chapter", line, not title


_NON_WORD = re.compile(r"[^\w]+")


def _norm(text: str) -> str:
    """Lower case, words only, one space between them."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def _match_title(lines: list[str], title: str) -> tuple[int, int] | None:
    """Where an outline title is printed on its page: (first line, number of lines)."""
    want = _norm(title)
    if not want:
        return None
    for i, line in enumerate(lines):
        c = line[:1]
        if c.isalnum() and c.lower()[:1] != want[0]:
            continue                      # its first word cannot start the title: skip _norm
        got = _norm(line)
        if not got or not want.startswith(got):
            continue
        j = i + 1
        while got != want and j < len(lines) and want.startswith(f"{got} {_norm(lines[j])}"):
            got = f"{got} {_norm(lines[j])}"
            j += 1
        if got == want:
            return i, j - i
    return None


def _is_subtitle(line: str) -> bool:
    """The line after a bare "CHAPTER THREE": a short title-case line without end punctuation."""
    words = line.split()
    if not words or len(words) > 8 or not line[0].isupper() or line[-1] in ".,;:!?":
        return False
    long_words = [w for w in words if len(w) >= 4]
    return sum(w[0].isupper() for w in long_words) * 2 >= len(long_words)


@dataclass
class Unit:
    """A piece of a page: a whole PDF page (split where a heading starts) or, in a text file, a
    paragraph. Front and back matter are recognized and skipped unit by unit."""

    page: int                         # 0-based
    lines: list[str] = field(default_factory=list)
    heading: str | None = None        # the heading that opens this unit
    kind: str | None = None           # of the heading: "chapter", "section" or "matter"
    toc_lines: int = 0                # lines that were a run of chapter headings (a contents list)

    @cached_property
    def words(self) -> int:
        return sum(len(line.split()) for line in self.lines)


def _page_headings(lines: list[str], outline_titles: list[str], use_patterns: bool,
                   markdown: bool) -> tuple[dict[int, tuple[str, str, int]], set[int],
                                            tuple[str, str] | None]:
    """Headings on one page: ({line: (kind, title, lines it spans)}, contents-list lines, the
    outline chapter that starts at the top of the page without a printed title, if any)."""
    marks: dict[int, tuple[str, str, int]] = {}
    start_title = None
    for title in outline_titles:
        hit = _match_title(lines, title)
        kind = "chapter" if (plain_heading(title) or ("",))[0] == "chapter" else "section"
        if hit:
            first, span = hit
            # A bare "Chapter 3" / "CHAPTER" + "FOUR" label printed above the title goes too.
            for back in (1, 2):
                label = " ".join(lines[first - back:first])
                if first - back >= 0 and (plain_heading(label) or ("", "", False))[2]:
                    first, span = first - back, span + back
                    break
            marks[first] = (kind, title, span)
        else:
            start_title = (kind, title)
    found: list[tuple[int, tuple[str, str, bool]]] = []
    for i, line in enumerate(lines):
        if not line or i in marks:
            continue
        m = MD_HEADING.fullmatch(line) if markdown and line[0] == "#" else None
        if m:
            text = m[2].strip()
            if len(m[1]) > 2:
                marks[i] = ("minor", text, 1)    # ### and deeper: dropped, not a chapter
            elif text:
                h = plain_heading(text)
                found.append((i, (h[0] if h else "section", text, False)))
            continue
        if len(line) > 90 or not HEADING_START.match(line):
            continue                      # plain_heading's own first test, without the call
        h = plain_heading(line)
        if h and (use_patterns or h[0] == "matter"):
            found.append((i, h))
    toc_lines: set[int] = set()
    if not found:
        return marks, toc_lines, start_title
    # A run of >= 3 chapter lines with nothing but blank lines between is a contents list.
    nonblank = [i for i, line in enumerate(lines) if line]
    pos = {i: k for k, i in enumerate(nonblank)}
    run: list[int] = []
    for i, h in found + [(-1, ("", "", False))]:
        if h[0] == "chapter" and run and pos[i] == pos[run[-1]] + 1:
            run.append(i)
            continue
        if len(run) >= 3:
            toc_lines.update(run)
        run = [i] if h[0] == "chapter" else []
    found_at = {i for i, _ in found}
    for i, (kind, title, bare) in found:
        if i in toc_lines:
            continue
        span = 1
        if bare and pos[i] + 1 < len(nonblank):   # "CHAPTER THREE" / "The Long Road"
            j = nonblank[pos[i] + 1]
            if j not in marks and j not in found_at and _is_subtitle(lines[j]):
                title, span = f"{title}: {lines[j]}", j - i + 1
        marks[i] = (kind, title, span)
    return marks, toc_lines, start_title


def split_units(pages: list[list[str]], outline: list[list], text_mode: bool,
                markdown: bool) -> list[Unit]:
    """Split pages into units at headings (and at blank lines in text files).

    With an outline (PDF bookmarks), its entries are the chapters: each title is looked up on its
    page and that line leaves the prose (when it is not printed, the chapter starts at the top of
    the page). Without one, heading lines are found by pattern. A run of three or more
    "Chapter N" lines in a row is a contents list, not three chapters.
    """
    chapters: dict[int, list[str]] = {}
    for level, title, page in outline:
        title = " ".join(str(title).split())
        if level <= 2 and 1 <= page <= len(pages) and title and not MATTER_LINE.fullmatch(title):
            chapters.setdefault(page - 1, []).append(title)
    units: list[Unit] = []
    for p, lines in enumerate(pages):
        marks, toc_lines, start_title = _page_headings(lines, chapters.get(p, []),
                                                       not chapters, markdown)
        cur = Unit(p, heading=start_title[1] if start_title else None,
                   kind=start_title[0] if start_title else None)
        skip_to = -1
        for i, line in enumerate(lines):
            if i < skip_to:
                continue
            if not line:
                if text_mode and cur.lines:
                    units.append(cur)
                    cur = Unit(p)
                continue
            if i in marks:
                kind, title, span = marks[i]
                skip_to = i + span
                if kind == "minor":
                    continue
                if cur.lines or cur.heading:
                    units.append(cur)
                cur = Unit(p, heading=title, kind=kind)
                continue
            cur.lines.append(line)
            if i in toc_lines:
                cur.toc_lines += 1
        if cur.lines or cur.heading:
            units.append(cur)
    return units
