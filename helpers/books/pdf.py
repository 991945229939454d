"""Books in, passages out: PDF, EPUB, TXT and Markdown books as cleaned, overlapping passages.

    corpus = pdf.load_corpus("Books/Maren/")     # passages + what was read and what was skipped
    pd.DataFrame(corpus.report())                # one row per file
    passages = pdf.load_passages("Books/Maren/") # the passages only (logs a one-line summary)

    python -m helpers.pdf Books/Maren/ [--words 350] [--overlap 50] [--min-words 100]

What happens to each book, in order:

1. Text per page: PyMuPDF text blocks for PDF; an EPUB by its spine and navigation (ebooklib,
   one "page" per spine document); a TXT or Markdown file is one page, or several when it has
   form-feed characters.
2. Cleaning: for PDF first by position (``helpers.books.layout``: running header/footer bands,
   footnotes moved to a "Notes" chapter after the last one, drop caps); then control characters;
   running headers and footers (a line repeating at the top or the bottom of pages, compared
   with digits removed); page numbers ("17", "xii", "Page 17", "- 17 -"). What each rule removed
   is in ``BookInfo.removed`` (``helpers.books.cleanreport`` makes the per-book report).
3. Headings: chapters from the PDF outline when it has one, else from heading lines ("# Title",
   "Chapter 3: ...", "CHAPTER THREE", "Prologue"). Heading lines leave the prose; each passage
   records the chapter it starts in.
4. Front and back matter: title page, copyright page, dedication, table of contents and index are
   skipped and reported in ``Corpus.skipped_sections`` (heuristics explained at
   ``helpers.books.matter.classify``).
5. Prose: lines joined, hyphenation at line ends repaired ("contin-" + "uing" -> "continuing";
   "well-known" inside a line stays), white space collapsed to single spaces.
6. Passages of ``words`` words; each starts ``overlap`` words before the previous one ended, so
   neighbours share exactly ``overlap`` words. A passage ends early at a sentence end when one lies
   in its last ~15 words. A book's last passage is kept only with at least ``min_words`` words.

A file that cannot be read (encrypted, corrupt, no text layer) is reported in
``Corpus.skipped_files`` with the reason and logged as a warning; the other files go on.

``make_sample_pdf`` renders the shipped sample book (``sample_book/the_patient_workshop.md``) as a
printed-looking PDF, for tests, benchmarks and the data-preparation notebook.

This module is the public face. The steps live beside it in ``helpers.books``: ``reader`` (1),
``cleaning`` (2), ``headings`` (3), ``matter`` (4), ``chunk`` (6), ``patterns`` (their line
patterns) and ``typeset`` (``make_sample_pdf``); step 5 and the files and folders are here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# The constants and make_sample_pdf are re-exported: importable from here as before.
from helpers.books.chunk import SENTENCE_WINDOW, chunk_tokens  # noqa: F401
from helpers.books.cleaning import REPEAT_MIN_PAGES, clean_lines, remove_running_lines  # noqa: F401
from helpers.books.headings import split_units
from helpers.books.layout import Removals, clean_pages
from helpers.books.matter import CHAPTER_MIN_WORDS, FRONT_PROSE_LIMIT, SHORT_WORDS, classify  # noqa: F401
from helpers.books.passage import Passage
from helpers.books.patterns import LINE_END_HYPHEN, LINE_END_HYPHEN_KEEP
from helpers.books.reader import BOOK_EXTENSIONS, Unreadable, read_book
from helpers.books.typeset import SAMPLE_BOOK, make_sample_pdf

log = logging.getLogger(__name__)

__all__ = ["BOOK_EXTENSIONS", "SAMPLE_BOOK", "BookInfo", "Corpus", "load_corpus", "load_passages",
           "make_sample_pdf", "main"]

MIN_BOOK_WORDS = 20      # fewer words in a whole PDF: no text layer (scanned or image-only)


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
    removed: Removals = field(default_factory=Removals, repr=False)  # what each rule removed
    short_lines: list[str] = field(default_factory=list, repr=False)  # kept lines of <= 2 words
    lines: int = 0       # lines kept in the prose


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


def _prose(text: str, removed: Removals | None = None) -> str:
    """Lines joined with hyphenation at line ends repaired (recorded in ``removed``)."""
    if "-\n" in text or "\u00ad" in text:
        if removed is not None:
            for m in LINE_END_HYPHEN.finditer(text):
                removed.add("hyphenation joined (line end)", text[max(0, m.start() - 12):m.end() + 8])
        text = LINE_END_HYPHEN.sub("", text)
        text = LINE_END_HYPHEN_KEEP.sub("-", text).replace("\u00ad", "")
    return text


def _first_words(u, n: int = 8) -> str:
    return " ".join(" ".join([u.heading or ""] + u.lines[:3]).split()[:n])


def _pages_label(first: int, last: int) -> str:
    return f"p{first}" if first == last else f"p{first}-{last}"


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
        except Unreadable as e:
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
# Prose and passages


def _load_book(file: Path, words: int, overlap: int, min_words: int
               ) -> tuple[list[Passage], BookInfo, list[tuple[str, int, int, str]]]:
    book_raw = read_book(file)
    raw, outline = book_raw.pages, book_raw.outline
    suffix = file.suffix.lower()
    text_mode = suffix not in (".pdf", ".epub")
    total = 0
    for t in raw:                      # counting stops once there is enough text
        total += len(t.split())
        if total >= MIN_BOOK_WORDS:
            break
    if total < MIN_BOOK_WORDS:
        if text_mode:
            raise Unreadable(f"empty: {total} words of text")
        raise Unreadable(f"no text layer: {total} words on {len(raw)} page(s) (a scanned or "
                         f"image-only file?); run OCR first, e.g. `ocrmypdf in.pdf out.pdf`")
    removed = Removals()
    notes: list[tuple[int, str]] = []
    if book_raw.blocks is not None:
        titles: dict[int, list[str]] = {}
        for _, title, page in outline:
            titles.setdefault(page - 1, []).append(str(title))
        raw, notes = clean_pages(book_raw.blocks, book_raw.heights, removed, titles)
    pages = clean_lines(raw, keep_blank=text_mode)
    if len(pages) > 1:
        remove_running_lines(pages, removed)
    units = split_units(pages, outline, text_mode, markdown=suffix in (".md", ".markdown"))
    skipped = classify(units)

    book = file.stem
    sections: list[tuple[str, int, int, str]] = []
    for i in sorted(skipped):
        kind, page = skipped[i], units[i].page + 1
        removed.add(f"skipped: {kind}", _first_words(units[i]))
        if sections and sections[-1][3] == kind and sections[-1][2] >= page - 1:
            sections[-1] = (book, sections[-1][1], page, kind)
        else:
            sections.append((book, page, page, kind))

    tokens: list[str] = []
    n_lines, short = 0, []
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
        n_lines += len(u.lines)
        # (lines are stripped with single spaces: the count of spaces rules most out cheaply)
        short += [line for line in u.lines if line.count(" ") <= 1 and len(line.split()) <= 2]
        new = _prose(text, removed).split()
        if not new:
            continue
        if (tokens and not u.heading and tokens[-1].endswith("-") and len(tokens[-1]) > 1
                and tokens[-1][-2].isalpha() and (new[0][0].islower() or new[0][0].isupper())):
            # a word hyphenated across a page (or paragraph piece) break
            removed.add("hyphenation joined (page break)", f"{tokens[-1]} {new[0]}")
            tokens[-1] = tokens[-1][:-1] + new[0] if new[0][0].islower() else tokens[-1] + new[0]
            new = new[1:]
        if not page_of_run or page_of_run[-1] != u.page + 1:
            page_starts.append(len(tokens))
            page_of_run.append(u.page + 1)
        tokens += new

    skipped_pages = {units[i].page for i in skipped} - {u.page for i, u in enumerate(units)
                                                        if i not in skipped and u.lines}
    notes = [(p, text) for p, text in notes if p not in skipped_pages]
    if notes and tokens:                 # footnotes after the last chapter, as endnotes
        chapter_starts.append(len(tokens))
        chapter_titles.append("Notes")
        for p, text in notes:
            page_starts.append(len(tokens))
            page_of_run.append(p + 1)
            tokens += _prose(text).split()

    passages = chunk_tokens(tokens, page_starts, page_of_run, chapter_starts, chapter_titles,
                            book, words, overlap, min_words)
    info = BookInfo(name=book, file=file.name, pages=len(raw),
                    pages_kept=len(set(page_of_run)), words=len(tokens), passages=len(passages),
                    chapters=len({p.chapter for p in passages if p.chapter}),
                    removed=removed, short_lines=short, lines=n_lines)
    log.info("%s: %d pages, %d kept, %d words, %d passages", file.name, info.pages,
             info.pages_kept, info.words, info.passages)
    return passages, info, sections


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
