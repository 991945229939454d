"""EPUB by its structure, through ebooklib: the spine's documents in reading order, chapter
titles from the navigation (EPUB 3 nav or EPUB 2 NCX table of contents).

Each spine document is one "page" of the book; its text is one line per block element
(paragraphs, headings, list items, table cells, preformatted lines), scripts and styles left
out. Spine items marked ``linear="no"`` (pop-ups, notes read out of order) and the navigation
document itself are skipped. The outline has one entry per navigation title, at the document
its link points into, top-level entries as level 1: titles are then matched on that page and
leave the prose, exactly as a PDF outline's (:func:`helpers.books.headings.split_units`).
Without navigation, headings are found by pattern in the text, as in a TXT file.
"""

from __future__ import annotations

import logging
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path

log = logging.getLogger(__name__)

_BLOCKS = ("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "td", "th", "tr",
           "blockquote", "pre", "section", "article", "figcaption", "caption", "br", "table",
           "ul", "ol", "dl", "aside", "header", "footer", "title")


class EpubError(Exception):
    """An EPUB that cannot be used; the message is the reason shown to the user."""


class _Text(HTMLParser):
    """One line per block element; a <pre> keeps its own lines; scripts, styles, head left out."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.cur: list[str] = []
        self.skip = 0
        self.pre = 0

    def flush(self):
        text = "".join(self.cur)
        chunks = text.split("\n") if self.pre else [text]
        self.lines += [" ".join(c.split()) for c in chunks if c.strip()]
        self.cur.clear()

    def handle_starttag(self, tag, attrs):
        tag = tag.rsplit(":", 1)[-1]
        if tag in ("script", "style", "head"):
            self.skip += 1
        elif tag in _BLOCKS:
            self.flush()
            self.pre += tag == "pre"

    def handle_endtag(self, tag):
        tag = tag.rsplit(":", 1)[-1]
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCKS:
            self.flush()
            self.pre = max(0, self.pre - (tag == "pre"))

    def handle_data(self, data):
        if not self.skip:
            self.cur.append(data)


def _doc_text(content: bytes) -> str:
    """One line per block element of an XHTML document."""
    parser = _Text()
    parser.feed(content.decode("utf-8", errors="replace"))
    parser.close()
    parser.flush()
    return "\n".join(parser.lines)


def _toc_entries(toc, level: int = 1):
    """(level, title, href) for every navigation entry, depth first."""
    from ebooklib import epub
    for entry in toc:
        if isinstance(entry, tuple):
            section, children = entry
            if getattr(section, "href", None):
                yield level, section.title, section.href
            yield from _toc_entries(children, level + 1)
        elif isinstance(entry, (epub.Link, epub.Section)) and getattr(entry, "href", None):
            yield level, entry.title, entry.href


def read_epub(file: Path) -> tuple[list[str], list[list]]:
    """(text per spine document, outline [[level, title, page]]); raises :class:`EpubError`."""
    import warnings

    import ebooklib
    from ebooklib import epub
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = epub.read_epub(str(file), options={"ignore_ncx": False})
    except Exception as e:
        raise EpubError(f"corrupt or not an EPUB file: it cannot be opened ({e}); export or "
                        f"download it again") from None
    pages: list[str] = []
    page_of: dict[str, int] = {}
    for idref, linear in book.spine:
        item = book.get_item_with_id(idref)
        if (item is None or item.get_type() != ebooklib.ITEM_DOCUMENT
                or isinstance(item, epub.EpubNav) or str(linear).lower() == "no"):
            continue
        page_of[posixpath.normpath(item.get_name())] = len(pages)
        pages.append(_doc_text(item.get_content()))
    if not pages:
        raise EpubError("no readable documents in its spine (an empty or DRM-protected EPUB?); "
                        "export it again without DRM, or convert it to PDF")
    outline = []
    for level, title, href in _toc_entries(book.toc):
        name = posixpath.normpath(re.sub(r"#.*", "", href))
        if name in page_of and title:
            outline.append([level, " ".join(str(title).split()), page_of[name] + 1])
    log.info("%s: %d spine documents, %d navigation entries", file.name, len(pages), len(outline))
    return pages, outline
