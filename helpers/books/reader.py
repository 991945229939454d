"""Reading a book file: the raw text of each page, and the outline.

PDF: PyMuPDF's text blocks with their boxes (:func:`read_book` keeps them for the layout rules of
:mod:`helpers.books.layout`). EPUB: by its structure, through ebooklib (:mod:`helpers.books.epub`):
one "page" per spine document, chapters from its navigation. A TXT or Markdown file is one page,
or several when it has form-feed characters (Markdown images, links, rules, quote marks and bold
markers are removed first). A file that cannot be used raises :class:`Unreadable`, whose message
is the reason for the user.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from helpers.books.epub import EpubError, read_epub

log = logging.getLogger(__name__)

BOOK_EXTENSIONS = (".pdf", ".epub", ".txt", ".md", ".markdown")


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
                # Only text inside the page box; ligatures come out as letters ("fi", not
                # U+FB01). These flags are also ~10% faster than get_text()'s default ones.
                # Blocks cost the same as plain text and say where each piece sits.
                flags = pymupdf.TEXT_MEDIABOX_CLIP
                blocks, heights = [], []
                for page in doc:
                    blocks.append([b[:5] for b in page.get_text("blocks", flags=flags)
                                   if b[6] == 0])
                    heights.append(page.rect.height)
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
