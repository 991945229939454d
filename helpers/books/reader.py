"""Reading a book file: the raw text of each page, and the outline.

PDF: PyMuPDF's text blocks with their boxes (:func:`read_book` keeps them for the layout rules of
:mod:`helpers.books.layout`); a long PDF is read by several processes side by side, one share of
its pages each (:func:`processes_for`: forked processes only, ``FINETUNING_PDF_PROCESSES=1``
reads in one). EPUB: by its structure, through ebooklib (:mod:`helpers.books.epub`):
one "page" per spine document, chapters from its navigation. A TXT or Markdown file is one page,
or several when it has form-feed characters (Markdown images, links, rules, quote marks and bold
markers are removed first). A file that cannot be used raises :class:`Unreadable`, whose message
is the reason for the user.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers.books.epub import EpubError, read_epub

log = logging.getLogger(__name__)

BOOK_EXTENSIONS = (".pdf", ".epub", ".txt", ".md", ".markdown")
#: a PDF is read by one more process for each this many pages (up to the cores) ...
PAGES_PER_PROCESS = 300
#: ... and by at most this many processes
MAX_PROCESSES = 4
#: the environment variable that caps them (1: read in this process only)
PROCESSES_ENV = "FINETUNING_PDF_PROCESSES"


class Unreadable(Exception):
    """A book file that cannot be used; the message is the reason shown to the user."""


@dataclass
class RawBook:
    """A book as read: raw text per page, the outline ([level, title, page 1-based]) and, for
    a PDF, each page's text blocks ``(x0, y0, x1, y1, text)`` and height in points."""

    pages: list[str]
    outline: list[list]
    blocks: list[list[tuple]] | None = None
    heights: list[float] | None = None


def page_blocks(doc, start: int, stop: int) -> tuple[list[list[tuple]], list[float]]:
    """Text blocks ``(x0, y0, x1, y1, text)`` and height of pages ``start``..``stop - 1``. Only
    text inside the page box; ligatures come out as letters ("fi", not U+FB01); these flags are
    also ~10% faster than get_text()'s default ones, and blocks cost the same as plain text."""
    import pymupdf
    flags = pymupdf.TEXT_MEDIABOX_CLIP
    blocks, heights = [], []
    for i in range(start, stop):
        page = doc[i]
        blocks.append([b[:5] for b in page.get_text("blocks", flags=flags) if b[6] == 0])
        heights.append(page.rect.height)
    return blocks, heights


def _blocks_of_file(path: str, start: int, stop: int) -> tuple[list[list[tuple]], list[float]]:
    """:func:`page_blocks` in a worker process, which opens the file itself."""
    import pymupdf
    with pymupdf.open(path) as doc:
        return page_blocks(doc, start, stop)


def processes_for(n_pages: int) -> int:
    """How many processes read a PDF of ``n_pages`` pages: one per :data:`PAGES_PER_PROCESS`
    pages, at most one per CPU core and :data:`MAX_PROCESSES`; 1 outside Linux (workers are
    forked: a spawned one would run the caller's script again, and forking is not safe on macOS)
    or where ``FINETUNING_PDF_PROCESSES`` says so."""
    asked = os.environ.get(PROCESSES_ENV)
    if asked is not None:
        try:
            cap = max(1, int(asked))
        except ValueError:
            raise ValueError(f"{PROCESSES_ENV}={asked!r}: give a whole number of processes (1 reads "
                             "in this process only).") from None
    else:
        cap = MAX_PROCESSES
    if not sys.platform.startswith("linux"):   # macOS and Windows start workers by spawning
        return 1
    return max(1, min(cap, os.cpu_count() or 1, n_pages // PAGES_PER_PROCESS))


def _pages(doc, file: Path) -> tuple[list[list[tuple]], list[float]]:
    """Every page's blocks and height; a long PDF is read by several processes side by side
    (:func:`processes_for`), this one taking the first share. Should a worker fail, its pages
    are read here."""
    n = doc.page_count
    k = processes_for(n)
    if k == 1:
        return page_blocks(doc, 0, n)
    cuts = [n * i // k for i in range(k + 1)]
    from concurrent.futures import ProcessPoolExecutor
    blocks, heights = [], []
    with ProcessPoolExecutor(k - 1, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_blocks_of_file, str(file), a, b) for a, b in zip(cuts[1:-1], cuts[2:])]
        b0, h0 = page_blocks(doc, 0, cuts[1])
        blocks += b0
        heights += h0
        for (a, b), fut in zip(zip(cuts[1:-1], cuts[2:]), futures):
            try:
                more, more_h = fut.result()
            except Exception as e:         # a worker that could not start or read: read here
                log.debug("pages %d-%d of %s read here (worker failed: %s)", a + 1, b, file.name, e)
                more, more_h = page_blocks(doc, a, b)
            blocks += more
            heights += more_h
    return blocks, heights


def _outline(doc) -> list[list]:
    """The outline as ``doc.get_toc(simple=True)`` gives it ([level, title, page], page -1 when it
    points nowhere in the file), walked from the copy PyMuPDF loaded when it opened the file
    (``get_toc`` loads it again)."""
    out: list[list] = []

    def walk(item, level: int) -> None:
        while item and item.this.m_internal:
            if item.is_external or not item.uri:
                page = -1
            else:
                page = (doc.resolve_link(item.uri)[0] if item.page == -1 else item.page) + 1
            out.append([level, item.title or " ", page])
            if item.down:
                walk(item.down, level + 1)
            item = item.next
    walk(doc.outline, 1)
    return out


def read_pages(file: Path) -> tuple[list[str], list[list]]:
    """The raw text of each page and the outline ([level, title, page], empty when none)."""
    book = read_book(file)
    return book.pages, book.outline


def read_book(file: Path) -> RawBook:
    """Read a book file (see the module docstring); raises :class:`Unreadable`."""
    suffix = file.suffix.lower()
    if suffix == ".epub":
        try:
            pages, outline = read_epub(file)
        except EpubError as e:
            raise Unreadable(str(e)) from None
        return RawBook(pages, outline)
    if suffix == ".pdf":
        import pymupdf
        try:
            doc = pymupdf.open(file, filetype=suffix[1:])
        except Exception as e:  # pymupdf.FileDataError and friends
            raise Unreadable(f"corrupt or not a {suffix[1:].upper()} file: it cannot be opened "
                             f"({e}); export or download it again") from None
        with doc:
            if doc.needs_pass:
                raise Unreadable("encrypted: it needs a password to open; save an unencrypted "
                                 "copy (for example print it to PDF, or `qpdf --decrypt "
                                 "--password=PW in.pdf out.pdf`) and use that instead")
            try:
                blocks, heights = _pages(doc, file)
                toc = _outline(doc)
            except Exception as e:
                raise Unreadable(f"damaged: reading its text failed ({e}); export or "
                                 f"download it again") from None
        if not blocks:
            raise Unreadable("no pages")
        pages = ["".join(b[4] for b in page) for page in blocks]
        return RawBook(pages, toc, blocks, heights)
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
    return RawBook(text.split("\f"), [])
