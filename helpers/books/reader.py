"""Reading a book file: the raw text of each page, and the PDF outline.

PyMuPDF for PDF and EPUB; a TXT or Markdown file is one page, or several when it has form-feed
characters (Markdown images, links, rules, quote marks and bold markers are removed first). A
file that cannot be used raises :class:`Unreadable`, whose message is the reason for the user.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

BOOK_EXTENSIONS = (".pdf", ".epub", ".txt", ".md", ".markdown")


class Unreadable(Exception):
    """A book file that cannot be used; the message is the reason shown to the user."""


def read_pages(file: Path) -> tuple[list[str], list[list]]:
    """The raw text of each page and the outline ([level, title, page], empty when none)."""
    suffix = file.suffix.lower()
    if suffix in (".pdf", ".epub"):
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
                pages = [page.get_text(flags=pymupdf.TEXT_MEDIABOX_CLIP) for page in doc]
                toc = doc.get_toc(simple=True)
            except Exception as e:
                raise Unreadable(f"damaged: reading its text failed ({e}); export or "
                                 f"download it again") from None
        if not pages:
            raise Unreadable("no pages")
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
