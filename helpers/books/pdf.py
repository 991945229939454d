"""Books in, passages out: PDF, EPUB, TXT and Markdown books as cleaned, overlapping passages.

    corpus = pdf.load_corpus("Books/Maren/")     # passages + what was read and what was skipped
    pd.DataFrame(corpus.report())                # one row per file
    passages = pdf.load_passages("Books/Maren/") # the passages only (logs a one-line summary)

    python -m helpers.pdf Books/Maren/ [--words 350] [--overlap 50] [--min-words 100]

What happens to each book, in order:

1. Text per page: PyMuPDF for PDF and EPUB; a TXT or Markdown file is one page, or several when
   it has form-feed characters.
2. Cleaning: control characters; running headers and footers (a line repeating at the top or the
   bottom of pages, compared with digits removed); page numbers ("17", "xii", "Page 17", "- 17 -").
3. Headings: chapters from the PDF outline when it has one, else from heading lines ("# Title",
   "Chapter 3: ...", "CHAPTER THREE", "Prologue"). Heading lines leave the prose; each passage
   records the chapter it starts in.
4. Front and back matter: title page, copyright page, dedication, table of contents and index are
   skipped and reported in ``Corpus.skipped_sections`` (heuristics explained at ``_classify``).
5. Prose: lines joined, hyphenation at line ends repaired ("contin-" + "uing" -> "continuing";
   "well-known" inside a line stays), white space collapsed to single spaces.
6. Passages of ``words`` words; each starts ``overlap`` words before the previous one ended, so
   neighbours share exactly ``overlap`` words. A passage ends early at a sentence end when one lies
   in its last ~15 words. A book's last passage is kept only with at least ``min_words`` words.

A file that cannot be read (encrypted, corrupt, no text layer) is reported in
``Corpus.skipped_files`` with the reason and logged as a warning; the other files go on.

``make_sample_pdf`` renders the shipped sample book (``sample_book/the_patient_workshop.md``) as a
printed-looking PDF, for tests, benchmarks and the data-preparation notebook.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from helpers.books.passage import Passage

log = logging.getLogger(__name__)

__all__ = ["BOOK_EXTENSIONS", "SAMPLE_BOOK", "BookInfo", "Corpus", "load_corpus", "load_passages",
           "make_sample_pdf", "main"]

BOOK_EXTENSIONS = (".pdf", ".epub", ".txt", ".md", ".markdown")
SAMPLE_BOOK = Path(__file__).resolve().parents[1] / "sample_book" / "the_patient_workshop.md"

SENTENCE_WINDOW = 15     # a passage may end this many words early, at a sentence end
MIN_BOOK_WORDS = 20      # fewer words in a whole PDF: no text layer (scanned or image-only)
REPEAT_MIN_PAGES = 3     # a top/bottom line on at least this many pages is a running header/footer
SHORT_WORDS = 50         # front-matter pieces (title page, half-title) are shorter than this
FRONT_PROSE_LIMIT = 1500  # stop looking for front matter after this many words of kept prose
CHAPTER_MIN_WORDS = 150  # a heading that is not "Chapter N"-like opens the body only if this long

# ---------------------------------------------------------------------------------------------
# Line patterns

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\ufeff]")
_DIGITS = re.compile(r"\d+")
_ROMAN = r"(?=[mdclxvi])m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})"
# A line that is only a page number: "17", "xii", "Page 17", "17 of 300", "- 17 -".
_PAGE_NUMBER = re.compile(
    rf"(?:page\s+)?(?:\d{{1,4}}|{_ROMAN})(?:\s*(?:of|/)\s*\d{{1,4}})?"
    r"|[-\u2013\u2014]\s*\d{1,4}\s*[-\u2013\u2014]", re.I)
_NUM_WORDS = ("one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
              "fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|"
              "seventy|eighty|ninety|hundred")
# "Chapter 3", "CHAPTER THREE", "Part II: The Road", "Chapter Twenty-One. Home"
_CHAPTER_LINE = re.compile(
    r"(?:chapter|part|book)\s+"
    rf"(?:\d{{1,3}}|[ivxlc]{{1,7}}|(?:{_NUM_WORDS})(?:[\s-](?:{_NUM_WORDS}))*)"
    r"(?!\w)\s*[:.\-\u2013\u2014]?\s*(?P<title>.*)", re.I)
_NAMED_CHAPTER = re.compile(
    r"(?:prologue|epilogue|introduction|preface|foreword|afterword|conclusion|interlude)"
    r"(?!\w)\s*[:.\-\u2013\u2014]?\s*(?P<title>.*)", re.I)
# Headings of front and back matter: they split the text but are not chapters of the body.
_MATTER_LINE = re.compile(
    r"(?:table of )?contents|index|copyright(?: page)?|dedication|title(?: page)?|cover|"
    r"half[- ]title|acknowledge?ments|about the authors?|also by\b.{0,60}", re.I)
_CONTENTS = re.compile(r"(?:table of )?contents", re.I)
_INDEX = re.compile(r"(?:\w+ )?index(?: of \w+)?", re.I)    # "Index", "Concept Index"
_MD_HEADING = re.compile(r"(#{1,6})\s+(.*?)(?:\s+#+)?\s*")
# A title that ends in dot leaders and a page number: a contents line, not a heading. (Contents
# lines without leaders, "Chapter 1 The Bench 4", are caught as a run of headings instead.)
_PAGE_TAIL = re.compile(r"(?:\.{2,}|(?:\.\s){2,})\s*\d{1,4}\s*$")
# Contents lines: "Chapter 1: The Bench ...... 5", a dot-leader line, a lone page number.
_TOC_ENTRY = re.compile(r".*(?:\.{2,}|(?:\.\s){2,}|\s)\d{1,4}|[.\s]*\.{3,}[.\s]*|\d{1,4}")
# Index lines: "apprentice, 12, 45-47" (and wrapped continuations "88, 102").
_INDEX_ENTRY = re.compile(
    r"(?:[^\d\W].{0,80}?[,\s]\s*)?\d{1,4}(?:\s*[-\u2013]\s*\d{1,4})?"
    r"(?:\s*[,;]\s*\d{1,4}(?:\s*[-\u2013]\s*\d{1,4})?)*\.?")
_COPYRIGHT_SIGNALS = [re.compile(p, re.I) for p in (
    r"copyright|\u00a9|\(c\)\s*\d{4}", r"all rights reserved", r"\bisbn\b",
    r"first (?:published|edition|printing)",
    r"printed in|published by|library of congress|catalogu?e record|cataloging")]
_DEDICATION = re.compile(r"(?:for|to|dedicated to|in (?:loving )?memory of)\b", re.I)
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "e.g.", "i.e.", "vs.", "cf.", "etc.",
                  "no.", "p.", "pp.", "vol.", "ch."}
# Hyphenation at a line end: a letter, a hyphen (or soft hyphen), the line break, then a
# lowercase letter. "Jean-" + "Paul" keeps its hyphen (capital after the break).
# (The look-behind comes after the literal "-\n" so the search is fast.)
_LINE_END_HYPHEN = re.compile(
    r"[-\u00ad]\n(?<=[^\W\d_][-\u00ad]\n)(?=[a-z\u00df-\u00f6\u00f8-\u00ff])")
_LINE_END_HYPHEN_KEEP = re.compile(r"-\n(?<=[^\W\d_]-\n)(?=[A-Z])")
# Cheap test before the heading patterns: the first word a heading line can start with.
_HEADING_START = re.compile(
    r"(?:chapter|part|book|prologue|epilogue|introduction|preface|foreword|afterword|conclusion|"
    r"interlude|table|contents|index|copyright|dedication|title|cover|half|acknowledg|about|also)",
    re.I)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class BookInfo:
    """What was read from one book file."""

    name: str            # the file stem, as in Passage.book
    file: str            # the file name
    pages: int           # pages in the file (1 for a TXT/MD file without form feeds)
    pages_kept: int      # pages that gave at least one word to the passages
    words: int           # words kept after cleaning and skipping front/back matter
    passages: int = 0
    chapters: int = 0    # distinct chapter titles among the passages


@dataclass
class Corpus:
    """Passages of every book in a file or folder, and an account of what was left out."""

    passages: list[Passage] = field(default_factory=list)
    books: list[BookInfo] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)        # (file, reason)
    skipped_sections: list[tuple[str, int, int, str]] = field(default_factory=list)
    # (book, first_page, last_page, kind), kind: "title page", "copyright page", "dedication",
    # "table of contents", "front matter" or "index"; pages 1-based, inclusive
    path: Path | None = None      # the file or folder that was read

    def report(self) -> list[dict]:
        """One row per file (for ``pandas.DataFrame(corpus.report())``)."""
        rows = []
        for b in self.books:
            sections = [f"{kind} {_pages_label(first, last)}"
                        for book, first, last, kind in self.skipped_sections if book == b.name]
            rows.append({"file": b.file, "status": "loaded", "pages": b.pages,
                         "pages_kept": b.pages_kept, "words": b.words, "passages": b.passages,
                         "chapters": b.chapters, "skipped": "; ".join(sections), "reason": ""})
        for name, reason in self.skipped_files:
            rows.append({"file": name, "status": "skipped", "pages": "", "pages_kept": "",
                         "words": "", "passages": "", "chapters": "", "skipped": "",
                         "reason": reason})
        return rows

    def summary(self) -> str:
        """One line: passages, books, pages kept, and what was skipped."""
        pages = sum(b.pages for b in self.books)
        kept = sum(b.pages_kept for b in self.books)
        where = f" in {self.path}" if self.path is not None else ""
        line = (f"{len(self.passages)} passages from {len(self.books)} book(s){where} "
                f"({kept} of {pages} pages kept)")
        if self.skipped_sections:
            kinds = Counter(kind for *_, kind in self.skipped_sections)
            line += "; skipped sections: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
        if self.skipped_files:
            line += "; skipped files: " + ", ".join(f"{n} ({r.split(':')[0]})"
                                                    for n, r in self.skipped_files)
        return line


def _pages_label(first: int, last: int) -> str:
    return f"p{first}" if first == last else f"p{first}-{last}"


class _Unreadable(Exception):
    """A book file that cannot be used; the message is the reason shown to the user."""


# ---------------------------------------------------------------------------------------------
# Public API


def load_passages(path: str | os.PathLike, words: int = 350, overlap: int = 50,
                  min_words: int = 100) -> list[Passage]:
    """Passages of a book file (PDF, EPUB, TXT, Markdown) or of every book in a folder.

    Same as ``load_corpus(...).passages``, and logs a one-line summary of what was skipped.
    """
    corpus = load_corpus(path, words=words, overlap=overlap, min_words=min_words)
    log.info("%s", corpus.summary())
    return corpus.passages


def load_corpus(path: str | os.PathLike, words: int = 350, overlap: int = 50,
                min_words: int = 100) -> Corpus:
    """Read a book file or a folder of them (sorted by name; subfolders are not read).

    ``words``: words per passage; ``overlap``: words shared by neighbouring passages (smaller
    than ``words``); ``min_words``: the shortest last passage of a book that is kept (at most
    ``words``). Unreadable files are reported in ``skipped_files``; raises
    ``FileNotFoundError`` when the path does not exist or a folder holds no book files, and
    ``ValueError`` for bad settings or when no book at all could be read.
    """
    _check_settings(words, overlap, min_words)
    path = Path(path)
    corpus = Corpus(path=path)
    for file in _book_files(path, corpus):
        try:
            passages, info, sections = _load_book(file, words, overlap, min_words)
        except _Unreadable as e:
            log.warning("Skipped %s: %s", file.name, e)
            corpus.skipped_files.append((file.name, str(e)))
            continue
        corpus.passages += passages
        corpus.books.append(info)
        corpus.skipped_sections += sections
        if not passages:
            log.warning("%s gave no passages: %d words kept after cleaning, fewer than "
                        "min_words=%d", file.name, info.words, min_words)
    if not corpus.books:
        where = f"the folder {path}" if path.is_dir() else str(path)
        reasons = "; ".join(f"{n}: {r}" for n, r in corpus.skipped_files)
        raise ValueError(f"No book in {where} could be read ({reasons}). Fix or replace "
                         f"these files as each reason says.")
    return corpus


def _check_settings(words: int, overlap: int, min_words: int) -> None:
    for name, value in (("words", words), ("overlap", overlap), ("min_words", min_words)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"`{name}` must be a whole number of words, got {value!r}.")
    if words < 1:
        raise ValueError(f"`words` must be at least 1 (got {words}): it is the number of words "
                         f"per passage; the default is 350.")
    if not 0 <= overlap < words:
        raise ValueError(f"`overlap` must be at least 0 and smaller than `words` (got "
                         f"overlap={overlap}, words={words}): each passage starts "
                         f"words - overlap words after the previous one. Lower `overlap` or "
                         f"raise `words`.")
    if not 1 <= min_words <= words:
        raise ValueError(f"`min_words` must be between 1 and `words` (got min_words={min_words}, "
                         f"words={words}): it is the shortest last passage of a book that is "
                         f"kept. Lower `min_words` or raise `words`.")


def _book_files(path: Path, corpus: Corpus) -> list[Path]:
    """The book files to read; other files in a folder go to ``corpus.skipped_files``."""
    supported = ", ".join(BOOK_EXTENSIONS)
    if not path.exists():
        raise FileNotFoundError(
            f"Book path not found: {path} (absolute: {path.resolve()}). Point it at a book file "
            f"({supported}) or a folder of them, e.g. Books/<Persona>/.")
    if path.is_file():
        if path.suffix.lower() not in BOOK_EXTENSIONS:
            raise ValueError(f"{path} is not a book file this loader reads ({supported}). "
                             f"Convert it to PDF or plain text, or point at a folder of books.")
        return [path]
    files, others = [], []
    for p in sorted(path.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            others.append(p.name + "/")
            corpus.skipped_files.append((p.name + "/", "a folder: subfolders are not read; move "
                                         "its books up into " + str(path)))
        elif p.stem.lower() == "readme":
            others.append(p.name)
            corpus.skipped_files.append((p.name, "a README, not a book"))
        elif p.suffix.lower() in BOOK_EXTENSIONS:
            files.append(p)
        else:
            others.append(p.name)
            corpus.skipped_files.append((p.name, f"not a book file: {p.suffix or 'no extension'}"
                                         f" is not read ({supported}); convert it to PDF or "
                                         f"plain text"))
    if not files:
        found = f"found only: {', '.join(others)}" if others else "it is empty"
        raise FileNotFoundError(
            f"No book files in the folder {path} (looked for {supported}; {found}). Put the "
            f"persona's books in Books/<Persona>/ and point the path at that folder.")
    return files


# ---------------------------------------------------------------------------------------------
# Reading


def _read_pages(file: Path) -> tuple[list[str], list[list]]:
    """The raw text of each page and the outline ([level, title, page], empty when none)."""
    suffix = file.suffix.lower()
    if suffix in (".pdf", ".epub"):
        import pymupdf
        try:
            doc = pymupdf.open(file, filetype=suffix[1:])
        except Exception as e:  # pymupdf.FileDataError and friends
            raise _Unreadable(f"corrupt or not a {suffix[1:].upper()} file: it cannot be opened "
                              f"({e}); export or download it again") from None
        with doc:
            if doc.needs_pass:
                raise _Unreadable("encrypted: it needs a password to open; save an unencrypted "
                                  "copy (for example print it to PDF, or `qpdf --decrypt "
                                  "--password=PW in.pdf out.pdf`) and use that instead")
            try:
                # Only text inside the page box; ligatures come out as letters ("fi", not
                # U+FB01). These flags are also ~10% faster than get_text()'s default ones.
                pages = [page.get_text(flags=pymupdf.TEXT_MEDIABOX_CLIP) for page in doc]
                toc = doc.get_toc(simple=True)
            except Exception as e:
                raise _Unreadable(f"damaged: reading its text failed ({e}); export or "
                                  f"download it again") from None
        if not pages:
            raise _Unreadable("no pages")
        return pages, toc
    data = file.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        log.info("%s is not UTF-8; read it as Windows-1252", file.name)
        text = data.decode("cp1252", errors="replace")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if suffix in (".md", ".markdown"):
        text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)            # images
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)        # links: keep their text
        text = re.sub(r"(?m)^\s*(?:[-*_]\s*){3,}$", "", text)       # horizontal rules
        text = re.sub(r"(?m)^>\s?", "", text).replace("**", "").replace("__", "")
    return text.split("\f"), []


def _clean_lines(raw_pages: list[str], keep_blank: bool) -> list[list[str]]:
    """Each page as stripped lines with control characters gone and white space collapsed.
    Blank lines are kept for text files (they end paragraphs), dropped for PDF pages."""
    pages = []
    for text in raw_pages:
        lines = [" ".join(line.split()) if "  " in line or "\t" in line or "\xa0" in line
                 else line.strip() for line in _CONTROL.sub("", text).split("\n")]
        pages.append(lines if keep_blank else [line for line in lines if line])
    return pages


def _repeat_key(line: str) -> str:
    """A line compared with digits removed: "Chapter 2   17" and "Chapter 2 18" are the same."""
    return " ".join(_DIGITS.sub(" ", line.lower()).split())


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


def _remove_running_lines(pages: list[list[str]]) -> None:
    """Remove running headers and footers and page numbers, in place.

    A running header (footer) is a line among the first (last) two non-blank lines of a page
    whose digit-free form appears there on at least REPEAT_MIN_PAGES pages and has at most 12
    words. Body text never repeats like that, while a page number in the same line ("Chapter 2
    17") is ignored by the comparison. A chapter heading that matches is kept on the first page
    it appears on (a book whose running header is the chapter title also prints it as the
    heading). Then a line that is only a page number is removed when it is among the first or
    last three non-blank lines of a page.
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
                h = _plain_heading(lines[i])
                if h and h[0] == "chapter" and lines[i] not in seen_headings:
                    seen_headings.add(lines[i])
                    drop.discard(i)
            if drop:
                lines[:] = [line for i, line in enumerate(lines) if i not in drop]
    for lines in pages:
        head, tail = _edges(lines, 3)
        drop = {i for i in head + tail if _PAGE_NUMBER.fullmatch(lines[i])}
        if drop:
            lines[:] = [line for i, line in enumerate(lines) if i not in drop]


# ---------------------------------------------------------------------------------------------
# Headings and units


def _plain_heading(line: str) -> tuple[str, str, bool] | None:
    """("chapter" | "matter", title, bare) for a heading line, else None. ``bare``: the line is
    only "Chapter 3"-like, with no title after the number."""
    if len(line) > 90 or not _HEADING_START.match(line):
        return None
    if _MATTER_LINE.fullmatch(line):
        return "matter", line, False
    m = _CHAPTER_LINE.fullmatch(line) or _NAMED_CHAPTER.fullmatch(line)
    if not m:
        return None
    title = m["title"]
    # "Chapter 3 was the hardest" is prose; "Chapter 3 ..... 41" is a contents line.
    if title and (not (title[0].isupper() or title[0] in "\"'\u2018\u201c(")
                  or _PAGE_TAIL.search(line) or len(line.split()) > 12):
        return None
    return "chapter", line, not title


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _match_title(lines: list[str], title: str) -> tuple[int, int] | None:
    """Where an outline title is printed on its page: (first line, number of lines)."""
    want = _norm(title)
    for i, line in enumerate(lines):
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
class _Unit:
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
        kind = "chapter" if (_plain_heading(title) or ("",))[0] == "chapter" else "section"
        if hit:
            marks[hit[0]] = (kind, title, hit[1])
        else:
            start_title = (kind, title)
    found: list[tuple[int, tuple[str, str, bool]]] = []
    for i, line in enumerate(lines):
        if not line or i in marks:
            continue
        m = _MD_HEADING.fullmatch(line) if markdown and line[0] == "#" else None
        if m:
            text = m[2].strip()
            if len(m[1]) > 2:
                marks[i] = ("minor", text, 1)    # ### and deeper: dropped, not a chapter
            elif text:
                h = _plain_heading(text)
                found.append((i, (h[0] if h else "section", text, False)))
            continue
        h = _plain_heading(line)
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


def _units(pages: list[list[str]], outline: list[list], text_mode: bool,
           markdown: bool) -> list[_Unit]:
    """Split pages into units at headings (and at blank lines in text files).

    With an outline (PDF bookmarks), its entries are the chapters: each title is looked up on its
    page and that line leaves the prose (when it is not printed, the chapter starts at the top of
    the page). Without one, heading lines are found by pattern. A run of three or more
    "Chapter N" lines in a row is a contents list, not three chapters.
    """
    chapters: dict[int, list[str]] = {}
    for level, title, page in outline:
        title = " ".join(str(title).split())
        if level <= 2 and 1 <= page <= len(pages) and title and not _MATTER_LINE.fullmatch(title):
            chapters.setdefault(page - 1, []).append(title)
    units: list[_Unit] = []
    for p, lines in enumerate(pages):
        marks, toc_lines, start_title = _page_headings(lines, chapters.get(p, []),
                                                       not chapters, markdown)
        cur = _Unit(p, heading=start_title[1] if start_title else None,
                    kind=start_title[0] if start_title else None)
        skip_to = -1
        for i, line in enumerate(lines):
            if i < skip_to:
                continue
            if not line:
                if text_mode and cur.lines:
                    units.append(cur)
                    cur = _Unit(p)
                continue
            if i in marks:
                kind, title, span = marks[i]
                skip_to = i + span
                if kind == "minor":
                    continue
                if cur.lines or cur.heading:
                    units.append(cur)
                cur = _Unit(p, heading=title, kind=kind)
                continue
            cur.lines.append(line)
            if i in toc_lines:
                cur.toc_lines += 1
        if cur.lines or cur.heading:
            units.append(cur)
    return units


# ---------------------------------------------------------------------------------------------
# Front and back matter


def _first_line(u: _Unit) -> str:
    return u.heading or (u.lines[0] if u.lines else "")


def _front_kind(u: _Unit, short_ok: bool) -> str | None:
    """The kind of front matter a unit is by its content, or None."""
    first = _first_line(u)
    if _CONTENTS.fullmatch(first):
        return "table of contents"
    sample = " ".join([u.heading or ""] + u.lines[:40])
    signals = sum(bool(p.search(sample)) for p in _COPYRIGHT_SIGNALS)
    # One signal ("Copyright 2024 ...") on a short page, or two anywhere ("All rights reserved"
    # with an ISBN): a chapter page in the front region that mentions copyright once is kept.
    if signals >= 2 or (signals and u.words <= 150) or (u.heading or "").lower() == "copyright":
        return "copyright page"
    lines = u.lines[:60]
    if len(lines) >= 3 and (u.toc_lines + sum(bool(_TOC_ENTRY.fullmatch(line)) for line in lines)
                            ) * 2 >= len(lines):
        return "table of contents"   # most lines end in a page number or are dot leaders
    if short_ok and u.words <= 40 and u.lines and _DEDICATION.match(u.lines[0]):
        return "dedication"
    return None


def _looks_like_title(u: _Unit) -> bool:
    """Title-page-like: under SHORT_WORDS words in short lines (at most 10 words each, as a
    title, a subtitle, "by Author"), none ending a sentence."""
    return (u.words < SHORT_WORDS and all(len(line.split()) <= 10 for line in u.lines)
            and not any(_SENTENCE_END.search(line) for line in u.lines))


def _is_index(u: _Unit) -> bool:
    """A page headed "Index", or one whose lines are mostly "term, 12, 45" entries."""
    if _INDEX.fullmatch(_first_line(u)):
        return True
    lines = u.lines[:80]
    entries = sum(bool(_INDEX_ENTRY.fullmatch(line)) for line in lines)
    return len(lines) >= 4 and entries * 2 >= len(lines)


def _section_words(units: list[_Unit], i: int, enough: int) -> int:
    """Words from unit i up to the next heading (counting stops at ``enough``)."""
    total = units[i].words
    for u in units[i + 1:]:
        if u.heading or total >= enough:
            break
        total += u.words
    return total


def _classify(units: list[_Unit]) -> dict[int, str]:
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


# ---------------------------------------------------------------------------------------------
# Prose and passages


def _load_book(file: Path, words: int, overlap: int, min_words: int
               ) -> tuple[list[Passage], BookInfo, list[tuple[str, int, int, str]]]:
    raw, outline = _read_pages(file)
    suffix = file.suffix.lower()
    text_mode = suffix not in (".pdf", ".epub")
    total = 0
    for t in raw:                      # counting stops once there is enough text
        total += len(t.split())
        if total >= MIN_BOOK_WORDS:
            break
    if total < MIN_BOOK_WORDS:
        if text_mode:
            raise _Unreadable(f"empty: {total} words of text")
        raise _Unreadable(f"no text layer: {total} words on {len(raw)} page(s) (a scanned or "
                          f"image-only file?); run OCR first, e.g. `ocrmypdf in.pdf out.pdf`")
    pages = _clean_lines(raw, keep_blank=text_mode)
    if len(pages) > 1:
        _remove_running_lines(pages)
    units = _units(pages, outline, text_mode, markdown=suffix in (".md", ".markdown"))
    skipped = _classify(units)

    book = file.stem
    sections: list[tuple[str, int, int, str]] = []
    for i in sorted(skipped):
        kind, page = skipped[i], units[i].page + 1
        if sections and sections[-1][3] == kind and sections[-1][2] >= page - 1:
            sections[-1] = (book, sections[-1][1], page, kind)
        else:
            sections.append((book, page, page, kind))

    tokens: list[str] = []
    page_starts: list[int] = []     # token offset where each page run starts ...
    page_of_run: list[int] = []     # ... and its 1-based page
    chapter_starts: list[int] = []
    chapter_titles: list[str | None] = []
    for i, u in enumerate(units):
        if u.heading and u.kind in ("chapter", "section", "matter"):
            chapter_starts.append(len(tokens))
            chapter_titles.append(u.heading)
        if i in skipped or not u.lines:
            continue
        text = "\n".join(u.lines)
        if "-\n" in text or "\u00ad" in text:
            text = _LINE_END_HYPHEN.sub("", text)
            text = _LINE_END_HYPHEN_KEEP.sub("-", text).replace("\u00ad", "")
        new = text.split()
        if not new:
            continue
        if (tokens and not u.heading and tokens[-1].endswith("-") and len(tokens[-1]) > 1
                and tokens[-1][-2].isalpha() and (new[0][0].islower() or new[0][0].isupper())):
            # a word hyphenated across a page (or paragraph piece) break
            tokens[-1] = tokens[-1][:-1] + new[0] if new[0][0].islower() else tokens[-1] + new[0]
            new = new[1:]
        if not page_of_run or page_of_run[-1] != u.page + 1:
            page_starts.append(len(tokens))
            page_of_run.append(u.page + 1)
        tokens += new

    passages = _chunk(tokens, page_starts, page_of_run, chapter_starts, chapter_titles, book,
                      words, overlap, min_words)
    info = BookInfo(name=book, file=file.name, pages=len(raw),
                    pages_kept=len(set(page_of_run)), words=len(tokens), passages=len(passages),
                    chapters=len({p.chapter for p in passages if p.chapter}))
    log.info("%s: %d pages, %d kept, %d words, %d passages", file.name, info.pages,
             info.pages_kept, info.words, info.passages)
    return passages, info, sections


def _ends_sentence(token: str) -> bool:
    """"word." / 'word!"' / "word?)" end a sentence; "Dr." and "e.g." do not."""
    return (bool(_SENTENCE_END.search(token))
            and token.lower().strip("\"'(\u201c\u2018") not in _ABBREVIATIONS)


def _chunk(tokens: list[str], page_starts: list[int], page_of_run: list[int],
           chapter_starts: list[int], chapter_titles: list[str | None], book: str,
           words: int, overlap: int, min_words: int) -> list[Passage]:
    """Passages of ``words`` words; each starts ``overlap`` words before the previous one
    ended. A passage ends early after a sentence end found in its last ``window`` words (never
    so early that it would hold ``overlap`` words or fewer). The tail of the book becomes the
    last passage when it has at least ``min_words`` words and something new."""
    def page(k: int) -> int:
        return page_of_run[bisect.bisect_right(page_starts, k) - 1]

    def chapter(k: int) -> str | None:
        j = bisect.bisect_right(chapter_starts, k) - 1
        return chapter_titles[j] if j >= 0 else None

    window = min(SENTENCE_WINDOW, words // 4)
    n, start, out = len(tokens), 0, []
    while start < n:
        end = start + words
        if end >= n:
            end = n
            if end - start < min_words or (out and end - start <= overlap):
                break
        else:
            for j in range(end - 1, max(end - window, start + overlap + 1) - 1, -1):
                if _ends_sentence(tokens[j]):
                    end = j + 1
                    break
        out.append(Passage(text=" ".join(tokens[start:end]), book=book, first_page=page(start),
                           last_page=page(end - 1), index=len(out), chapter=chapter(start)))
        if end == n:
            break
        start = end - overlap
    return out


# ---------------------------------------------------------------------------------------------
# The sample PDF

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
        m = _MD_HEADING.fullmatch(line) if line.startswith("#") else None
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
                is_copyright = any(s.search(p) for s in _COPYRIGHT_SIGNALS)
                (copyright_lines if is_copyright else title_lines).append(p)
        elif _CONTENTS.fullmatch(heading):
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


# ---------------------------------------------------------------------------------------------
# Command line


def _format_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[k]) for row in cells)) for k, c in enumerate(cols)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols)] + [fmt.format(*row) for row in cells])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.pdf",
        description="Read books (PDF, EPUB, TXT, Markdown) into passages and report what was "
                    "read and skipped.")
    parser.add_argument("path", help="a book file or a folder of them, e.g. Books/<Persona>/")
    parser.add_argument("--words", type=int, default=350, help="words per passage (350)")
    parser.add_argument("--overlap", type=int, default=50,
                        help="words shared by neighbouring passages (50)")
    parser.add_argument("--min-words", type=int, default=100,
                        help="shortest last passage of a book that is kept (100)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        corpus = load_corpus(args.path, words=args.words, overlap=args.overlap,
                             min_words=args.min_words)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_format_table(corpus.report()))
    print()
    print(corpus.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
