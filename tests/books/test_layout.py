"""Cleaning by position (helpers.books.layout) on a hand-built book laid out like a printed one:
alternating odd/even running headers (book title one side, chapter title the other, changing
per chapter), no header on a chapter's first page, page numbers left or right, footnotes with
glued markers, a drop cap, a word hyphenated across a page break. And the cleaning report."""

from __future__ import annotations

import pymupdf
import pytest

from helpers.books import cleanreport, pdf

BOOK = "The Quiet Orchard"
WORDS = ("apple pear branch ladder basket morning orchard river stone garden lantern harvest "
         "winter summer bench window letter road wagon field").split()


def _prose(n: int, seed: int) -> list[str]:
    words = [WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(n)]
    lines, cur = [], []
    for w in words:
        cur.append(w)
        if len(cur) == 10:
            lines.append(" ".join(cur))
            cur = []
    if cur:
        lines.append(" ".join(cur))
    return lines


def make_book(path) -> dict:
    """Two chapters of 5 pages; returns what was put where."""
    doc = pymupdf.open()
    toc, notes, page_no = [], [], 0
    for ch, title in enumerate(("The First Frost", "Letters Home"), 1):
        for k in range(5):
            page_no += 1
            page = doc.new_page(width=420, height=595)
            odd = page_no % 2 == 1
            y = 90
            if k == 0:
                toc.append([1, title, page_no])
                page.insert_text((40, 120), title, fontsize=18)
                y = 160
            else:   # running header: chapter title on odd pages (right), book title on even (left)
                head = title if odd else BOOK
                page.insert_text((260 if odd else 40, 40), head, fontsize=9)
            # page number in the footer, right on odd pages and left on even ones
            page.insert_text((370 if odd else 40, 570), str(page_no), fontsize=9)
            lines = _prose(200, page_no)
            if k == 0 and ch == 1:
                page.insert_text((40, y + 20), "W", fontsize=34)          # drop cap
                lines[0] = "hen " + lines[0]
                x0 = 70
            else:
                x0 = 40
            if k == 1:        # a footnote with its marker glued to a word
                lines[2] = lines[2] + "3"
                notes.append(f"3 Written on the night of the storm {ch}.")
            if k == 2:        # a word hyphenated across the page break
                lines[-1] = lines[-1] + " contin-"
            if k == 3:
                lines[0] = "uing " + lines[0]
            for i, line in enumerate(lines):
                page.insert_text((x0 if i < 2 else 40, y + 14 * i), line, fontsize=10)
            if k == 1:
                page.insert_text((40, 520), notes[-1], fontsize=8)
    doc.set_toc(toc)
    doc.save(path)
    doc.close()
    return {"notes": notes}


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    path = tmp_path_factory.mktemp("layout") / "orchard.pdf"
    made = make_book(path)
    return pdf.load_corpus(path, words=120, overlap=20, min_words=10), made


def test_alternating_running_headers_and_page_numbers_leave(book):
    corpus, _ = book
    text = " ".join(p.text for p in corpus.passages)
    assert BOOK not in text
    # the chapter titles were running headers on odd pages; they stay only as chapter labels
    assert "The First Frost" not in text and "Letters Home" not in text
    assert {p.chapter for p in corpus.passages} >= {"The First Frost", "Letters Home"}
    body = pdf.load_corpus(corpus.path, words=120, overlap=0, min_words=1).passages
    body = " ".join(p.text for p in body).split(" 3 Written")[0]
    assert not any(w.isdigit() for w in body.split())
    counts = corpus.books[0].removed.counts
    assert counts["running header (position)"] == 8 and counts["running footer (position)"] == 10


def test_footnotes_move_to_notes_and_markers_go(book):
    corpus, made = book
    passages = pdf.load_corpus(corpus.path, words=120, overlap=0, min_words=1).passages
    text = " ".join(p.text for p in passages)
    assert text.endswith(" " + " ".join(made["notes"]))        # after the last chapter
    assert text.count("storm") == 2
    body = text.split(" 3 Written")[0]
    assert not any(w[-1].isdigit() for w in body.split())     # no glued "3" left
    assert corpus.books[0].removed.counts["footnote marker"] == 2


def test_drop_cap_and_page_break_hyphenation(book):
    corpus, _ = book
    text = " ".join(p.text for p in corpus.passages)
    assert text.startswith("When ") and "continuing" in text and "contin-" not in text
    assert corpus.books[0].removed.counts["drop cap joined"] == 1


def test_cleaning_report_rows(book):
    corpus, _ = book
    (row,) = cleanreport.summary(corpus)
    assert row["file"] == "orchard.pdf" and row["pages"] == 10 and row["verdict"] in ("ok", "check")
    rules = {r["rule"]: r for r in cleanreport.rules(corpus)}
    assert rules["running header (position)"]["examples"].count("|") == 2       # three examples
    assert "footnote (moved to Notes)" in rules
    kinds = {r["leftover"] for r in cleanreport.leftovers(corpus)}
    assert kinds <= {"phrase repeated across passages", "lone number in a sentence",
                     "very short line (1-2 words)"}


def _words(n: int, start: int) -> list[str]:
    """``n`` distinct words in a known order (ka kb ... kz la ...), from word number ``start``."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [letters[(start + i) // 26 % 26] + letters[(start + i) % 26] + "ry" for i in range(n)]


@pytest.mark.parametrize("order", ["left-then-right", "right-then-left", "paragraph-by-paragraph"])
def test_two_column_pages_read_left_column_then_right(tmp_path, order):
    """Two-column pages (three paragraphs a column) under a line across both columns: whether the
    PDF lays the text down column by column, right column first, or paragraph by paragraph across
    the columns (as text frames can be), the text reads the left column to its end, then the
    right one."""
    doc, expected, start = pymupdf.open(), [], 0
    for page_no in range(1, 5):
        page = doc.new_page(width=420, height=595)
        page.insert_text((40, 40), "Two Columns, a Study", fontsize=9)      # running header
        page.insert_text((200, 570), str(page_no), fontsize=9)               # page number
        wide = _words(13, 5000 + 13 * page_no)                              # across both columns
        page.insert_text((40, 80), " ".join(wide), fontsize=9)
        # cols[c][k]: paragraph k of column c, 9 lines of 5 words
        cols = [[[_words(5, start + 5 * (27 * c + 9 * k + i)) for i in range(9)] for k in range(3)]
                for c in (0, 1)]
        start += 270

        def put(c, k):
            for i, line in enumerate(cols[c][k]):
                page.insert_text((40 + 190 * c, 110 + 150 * k + 14 * i), " ".join(line), fontsize=9)
        if order == "left-then-right":
            pieces = [(c, k) for c in (0, 1) for k in range(3)]
        elif order == "right-then-left":
            pieces = [(c, k) for c in (1, 0) for k in range(3)]
        else:
            pieces = [(c, k) for k in range(3) for c in (0, 1)]
        for c, k in pieces:
            put(c, k)
        expected += wide + [w for col in cols for para in col for line in para for w in line]
    path = tmp_path / "columns.pdf"
    doc.save(path)
    doc.close()
    corpus = pdf.load_corpus(path, words=100, overlap=0, min_words=1)
    words = " ".join(p.text for p in corpus.passages).split()
    assert words == expected
    read = corpus.books[0].removed.counts["two columns read in order"]
    assert read == (0 if order == "left-then-right" else 4)


def _note_book(path, last_size: int) -> None:
    """Three pages of prose; page 1's footnote stops mid-sentence and runs on at the foot of
    page 2, set as small as the note; page 3 ends with a body-size paragraph at its foot."""
    doc = pymupdf.open()
    for k in range(3):
        page = doc.new_page(width=420, height=595)
        lines = _prose(200, k + 1)
        if k == 0:
            lines[3] = lines[3] + "1"
        for i, line in enumerate(lines):
            page.insert_text((40, 70 + 14 * i), line, fontsize=10)
        if k == 0:
            page.insert_text((40, 510), "1 Grandmother kept the ledger of every harvest in", fontsize=8)
            page.insert_text((40, 520), "a blue book whose spine was mended with", fontsize=8)
        if k == 1:
            page.insert_text((40, 520), "thread from the orchard ladder.", fontsize=last_size)
        page.insert_text((370, 570), str(k + 1), fontsize=9)
    doc.save(path)
    doc.close()


def test_a_footnote_running_onto_the_next_page_is_joined_to_its_note(tmp_path):
    _note_book(tmp_path / "notes.pdf", last_size=8)
    corpus = pdf.load_corpus(tmp_path / "notes.pdf", words=120, overlap=0, min_words=1)
    text = " ".join(p.text for p in corpus.passages)
    body, notes = text.split(" 1 Grandmother")
    assert "thread" not in body and "ledger" not in body
    assert notes.endswith("mended with thread from the orchard ladder.")
    assert corpus.books[0].removed.counts["footnote continued (joined to its note)"] == 1


def test_a_body_size_last_line_is_not_taken_for_a_note(tmp_path):
    _note_book(tmp_path / "body.pdf", last_size=10)
    corpus = pdf.load_corpus(tmp_path / "body.pdf", words=120, overlap=0, min_words=1)
    text = " ".join(p.text for p in corpus.passages)
    body, notes = text.split(" 1 Grandmother")
    assert "thread from the orchard ladder." in body and notes.endswith("mended with")
    assert "footnote continued (joined to its note)" not in corpus.books[0].removed.counts
