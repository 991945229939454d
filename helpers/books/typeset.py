"""Typesetting a Markdown book as a printed-looking PDF: ``make_sample_pdf``.

It renders the shipped sample book (``sample_book/the_patient_workshop.md``, :data:`SAMPLE_BOOK`)
or another Markdown book with a title page, a copyright page, a contents page, running headers,
page-number footers, words hyphenated at line ends, an index and an outline: the things the
cleaning in :mod:`helpers.books.pdf` must handle. For tests, benchmarks and the data-preparation
notebook.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from pathlib import Path

from helpers.books.patterns import CONTENTS, COPYRIGHT_SIGNALS, MD_HEADING

SAMPLE_BOOK = Path(__file__).resolve().parents[1] / "sample_book" / "the_patient_workshop.md"
_PAGE_W, _PAGE_H = 420, 595          # A5, in points
_MARGIN_X, _BODY_TOP, _BODY_BOTTOM = 54, 78, 540
_BODY_SIZE, _LEADING = 10.5, 14.5
_STOPWORDS = set("""about after again against among because before being between could every
first great little never other their there these those through under until where which while
would should without within something someone always""".split())


def _source_text(source: str | os.PathLike | None) -> str:
    if source is None:
        return SAMPLE_BOOK.read_text(encoding="utf-8")
    if isinstance(source, str) and "\n" in source:
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Sample source not found: {path}. Pass a Markdown file, the "
                                f"Markdown text itself, or None for the shipped sample book.")
    return path.read_text(encoding="utf-8")


def _parse_markdown_book(text: str) -> dict:
    """Title, title-page lines, copyright lines and chapters [(title, [paragraph, ...])] of a
    Markdown book: the first '#' heading is the title, paragraphs under it are the title page
    (those with copyright signals the copyright page), a 'Contents' section is dropped (it is
    made again with page numbers), and every other '#'/'##' heading starts a chapter."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    para: list[str] = []

    def close():
        if para:
            sections[-1][1].append(" ".join(para))
            para.clear()
    for line in text.splitlines():
        line = line.strip()
        m = MD_HEADING.fullmatch(line) if line.startswith("#") else None
        if m and len(m[1]) <= 2:
            close()
            sections.append((m[2].strip(), []))
        elif not line:
            close()
        else:
            para.append(line)
    close()
    title, title_lines, copyright_lines, chapters = None, [], [], []
    for heading, paras in sections:
        if heading is None:
            title_lines += paras
        elif title is None:
            title = heading
            for p in paras:
                is_copyright = any(s.search(p) for s in COPYRIGHT_SIGNALS)
                (copyright_lines if is_copyright else title_lines).append(p)
        elif CONTENTS.fullmatch(heading):
            continue
        elif heading.lower() == "copyright":
            copyright_lines += paras
        else:
            chapters.append((heading, paras))
    if not chapters:
        raise ValueError("The sample source has no chapters: give it a '# Title' line and then "
                         "'# Chapter 1: ...' headings, each followed by paragraphs.")
    # The copyright block keeps its line breaks (one statement per line in the source).
    copyright_lines = [line.strip() for block in copyright_lines
                       for line in re.split(r"(?<=[.)])\s+(?=[A-Z])", block)]
    return {"title": title or "Untitled", "title_lines": title_lines,
            "copyright": copyright_lines, "chapters": chapters}


class _Typesetter:
    """Greedy line filling in Helvetica. A long word that does not fit is hyphenated at the line
    end when a part of it fits (split at any letter, not at syllables, keeping at least three
    letters each side), so the PDF has words split across lines for the cleaning to repair."""

    def __init__(self, fontname: str = "helv", size: float = _BODY_SIZE):
        import pymupdf
        self._length = pymupdf.get_text_length
        self.fontname, self.size = fontname, size
        self._widths: dict[str, float] = {}

    def width(self, text: str) -> float:
        w = self._widths.get(text)
        if w is None:
            w = self._widths[text] = self._length(text, fontname=self.fontname, fontsize=self.size)
        return w

    def _split(self, word: str, room: float) -> tuple[str, str] | None:
        core = word.rstrip(",.;:!?\"')")
        if len(core) < 7 or not core.isalpha() or not core[1:].islower():
            return None     # short words, numbers and real hyphens ("well-known") never split
        for k in range(len(core) - 3, 2, -1):
            if self.width(word[:k] + "-") <= room:
                return word[:k] + "-", word[k:]
        return None

    def wrap(self, text: str, width: float, indent: str = "") -> list[str]:
        lines: list[str] = []
        cur, cur_w, space = indent, self.width(indent), self.width(" ")
        for word in text.split():
            sep = space if cur.strip() else 0.0
            w = self.width(word)
            if cur_w + sep + w <= width:
                cur, cur_w = (cur + " " + word if cur.strip() else cur + word), cur_w + sep + w
                continue
            split = self._split(word, width - cur_w - sep) if cur.strip() else None
            if split:
                lines.append(cur + " " + split[0])
                word = split[1]
            elif cur.strip():
                lines.append(cur)
            cur, cur_w = word, self.width(word)
        if cur.strip():
            lines.append(cur)
        return lines


def _index_terms(body_pages: list[list[str]], first_page: int, n_terms: int = 30) -> list[str]:
    """"term, 5, 9, 14" lines: the most frequent longer words and the pages they are on."""
    where: dict[str, list[int]] = {}
    counts: Counter = Counter()
    for k, lines in enumerate(body_pages):
        for word in " ".join(lines).lower().split():
            word = word.strip(",.;:!?\"'()")
            if len(word) >= 6 and word.isalpha() and word not in _STOPWORDS:
                counts[word] += 1
                refs = where.setdefault(word, [])
                if not refs or refs[-1] != first_page + k:
                    refs.append(first_page + k)
    terms = sorted(w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n_terms])
    return [f"{t}, " + ", ".join(str(p) for p in where[t][:6]) for t in terms]


def make_sample_pdf(out_path: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """Render a Markdown book as a printed-looking A5 PDF and return its path.

    ``source``: a Markdown file, the Markdown text itself (a string with a line break), or None
    for the shipped sample book (``SAMPLE_BOOK``). The PDF has a title page, a copyright page, a
    contents page with dot leaders and page numbers, each chapter from a new page, a running
    header (book title and page number) and a footer page number ("- 17 -") on every body page,
    words hyphenated at line ends, an index at the end, and an outline (bookmarks: Contents,
    each chapter, Index). Deterministic: the same source gives the same bytes.
    """
    import pymupdf
    book = _parse_markdown_book(_source_text(source))
    body = _Typesetter()
    width = _PAGE_W - 2 * _MARGIN_X
    rows = int((_BODY_BOTTOM - _BODY_TOP) // _LEADING)

    # Lay out the chapters first: the contents page needs their page numbers.
    chapter_pages: list[list[str]] = []     # body lines per page
    chapter_first: list[int] = []           # index into chapter_pages
    for title, paras in book["chapters"]:
        chapter_first.append(len(chapter_pages))
        lines: list[str] = []
        for k, para in enumerate(paras):
            lines += body.wrap(para, width, indent="" if k == 0 else "    ")
        first_rows = rows - 3                # the heading takes three rows on the first page
        chapter_pages.append(lines[:first_rows])
        for s in range(first_rows, len(lines), rows):
            chapter_pages.append(lines[s:s + rows])
    toc_rows = rows - 3
    toc_pages = max(1, math.ceil(len(book["chapters"]) / toc_rows))
    first_body = 3 + toc_pages                  # 1-based number of the first chapter page
    index_lines = _index_terms(chapter_pages, first_body)
    index_first = first_body + len(chapter_pages)

    doc = pymupdf.open()
    doc.set_metadata({"title": book["title"], "author": "", "creator": "helpers.pdf",
                      "producer": "helpers.pdf", "creationDate": "", "modDate": ""})

    def new_page():
        return doc.new_page(width=_PAGE_W, height=_PAGE_H)

    def centred(page, y, text, fontname="helv", size=12.0):
        x = (_PAGE_W - pymupdf.get_text_length(text, fontname=fontname, fontsize=size)) / 2
        page.insert_text((x, y), text, fontname=fontname, fontsize=size)

    def furniture(page, number):
        page.insert_text((_MARGIN_X, 40), f"{book['title']}        {number}", fontname="helv",
                         fontsize=8)
        centred(page, 570, f"- {number} -", size=8)

    # Title page and copyright page.
    page = new_page()
    centred(page, 200, book["title"], fontname="hebo", size=22)
    y = 240
    for line in book["title_lines"]:
        centred(page, y, line, size=12)
        y += 22
    page = new_page()
    small = _Typesetter(size=8.5)
    lines = [w for line in book["copyright"] for w in small.wrap(line, width)]
    page.insert_text((_MARGIN_X, _BODY_BOTTOM - 12 * len(lines)), lines, fontname="helv",
                     fontsize=8.5, lineheight=12 / 8.5)
    # Contents: "title . . . . . 5", one string per entry so it reads as one line.
    entries = []
    for (title, _), first in zip(book["chapters"], chapter_first):
        number = str(first_body + first)
        fixed = body.width(title) + body.width(" " + number) + body.width("  ")
        dots = ". " * max(3, int((width - fixed) / body.width(". ")))
        entries.append(f"{title} {dots}{number}")
    entries.append(f"Index {'. ' * 3}{index_first}")
    for s in range(0, len(entries), toc_rows):
        page = new_page()
        if s == 0:
            page.insert_text((_MARGIN_X, _BODY_TOP + 10), "Contents", fontname="hebo", fontsize=15)
        page.insert_text((_MARGIN_X, _BODY_TOP + 3 * _LEADING), entries[s:s + toc_rows],
                         fontname="helv", fontsize=_BODY_SIZE, lineheight=_LEADING / _BODY_SIZE)
    # Chapters.
    starts = {first: title for (title, _), first in zip(book["chapters"], chapter_first)}
    for k, lines in enumerate(chapter_pages):
        page = new_page()
        furniture(page, first_body + k)
        y = _BODY_TOP
        if k in starts:
            page.insert_text((_MARGIN_X, y + 10), starts[k], fontname="hebo", fontsize=15)
            y += 3 * _LEADING
        if lines:
            page.insert_text((_MARGIN_X, y), lines, fontname="helv", fontsize=_BODY_SIZE,
                             lineheight=_LEADING / _BODY_SIZE)
    # Index.
    for s in range(0, len(index_lines), rows - 3):
        page = new_page()
        furniture(page, index_first + s // (rows - 3))
        page.insert_text((_MARGIN_X, _BODY_TOP + 10), "Index", fontname="hebo", fontsize=15)
        page.insert_text((_MARGIN_X, _BODY_TOP + 3 * _LEADING), index_lines[s:s + rows - 3],
                         fontname="helv", fontsize=_BODY_SIZE, lineheight=_LEADING / _BODY_SIZE)
    doc.set_toc([[1, "Contents", 3]]
                + [[1, title, first_body + first]
                   for (title, _), first in zip(book["chapters"], chapter_first)]
                + [[1, "Index", index_first]])
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    doc.save(out_path, garbage=3, deflate=True, no_new_id=True)
    doc.close()
    return out_path
