"""helpers.pdf: books (PDF, EPUB, TXT, Markdown) to cleaned, overlapping passages. CPU, fast.

Most checks run on PDFs made here: the shipped sample book rendered by make_sample_pdf (title,
copyright and contents pages, running headers, page-number footers, hyphenated line ends, an
index) and small hand-built ones whose exact text is known.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import re
import zipfile
from pathlib import Path

import pymupdf
import pytest

from helpers.books import pdf

SAMPLE_MD = pdf.SAMPLE_BOOK
CHAPTERS = [line[2:].strip() for line in SAMPLE_MD.read_text().splitlines()
            if line.startswith("# Chapter")]


def write_pdf(path: Path, pages: list[list[str]], toc: list | None = None) -> Path:
    """A PDF with the given lines on each page, one line per row, top to bottom."""
    doc = pymupdf.open()
    for lines in pages:
        page = doc.new_page(width=420, height=595)
        for k, line in enumerate(lines):
            page.insert_text((40, 40 + 14 * k), line, fontsize=10)
    if toc:
        doc.set_toc(toc)
    doc.save(path)
    doc.close()
    return path


def raw_pages(path: Path) -> list[str]:
    with pymupdf.open(path) as doc:
        return [page.get_text() for page in doc]


def words_of(passages) -> list[str]:
    """The book's words in order, from passages made with overlap=0."""
    return [w for p in passages for w in p.text.split()]


@pytest.fixture(scope="module")
def sample_pdf(tmp_path_factory) -> Path:
    return pdf.make_sample_pdf(tmp_path_factory.mktemp("sample") / "sample.pdf")


@pytest.fixture(scope="module")
def sample(sample_pdf) -> pdf.Corpus:
    return pdf.load_corpus(sample_pdf)


@pytest.fixture(scope="module")
def sample_md() -> pdf.Corpus:
    return pdf.load_corpus(SAMPLE_MD)


# --- the sample PDF: cleaning, front and back matter, chapters ---------------------------------


def test_sample_pdf_is_a_printed_looking_book(sample_pdf):
    pages = raw_pages(sample_pdf)
    with pymupdf.open(sample_pdf) as doc:
        toc = doc.get_toc()
    assert 18 <= len(pages) <= 30
    assert "Maren Holloway" in pages[0] and "All rights reserved" in pages[1]
    assert pages[2].startswith("Contents") and ". . ." in pages[2]
    assert [t for _, t, _ in toc] == ["Contents", *CHAPTERS, "Index"]
    body = pages[3]
    assert "The Patient Workshop" in body and re.search(r"- 4 -", body)     # header and footer
    assert pages[-1].count(", ") > 1 and "Index" in raw_pages(sample_pdf)[toc[-1][2] - 1]
    assert pdf.make_sample_pdf(sample_pdf.with_name("again.pdf")).read_bytes() \
        == sample_pdf.read_bytes()                                          # deterministic


def test_pdf_text_after_cleaning_equals_the_markdown_source(sample, sample_md):
    """Headers, footers, page numbers, hyphenation and chapter titles all cleaned away: the PDF
    gives exactly the passages of the Markdown it was rendered from."""
    assert len(sample.passages) >= 10
    assert [p.text for p in sample.passages] == [p.text for p in sample_md.passages]


def test_running_headers_and_page_numbers_removed(sample, sample_pdf):
    raw = "\n".join(raw_pages(sample_pdf)[3:-2])
    assert raw.count("The Patient Workshop") > 10 and len(re.findall(r"- \d+ -", raw)) > 10
    text = " ".join(p.text for p in sample.passages)
    assert "The Patient Workshop" not in text
    assert not re.search(r"- \d+ -", text)
    assert not [w for w in text.split() if w.strip(".,;:") .isdigit()]  # the book has no numbers


def test_line_end_hyphenation_repaired(sample, sample_pdf):
    raw = "\n".join(raw_pages(sample_pdf)[3:-2])
    split = re.findall(r"([A-Za-z]+)-\n([a-z]+)", raw)
    assert len(split) >= 10                       # the typesetter really hyphenated words
    words = {w.strip(".,;:!?\"'()") for p in sample.passages for w in p.text.split()}
    for head, tail in split:
        assert head + tail in words, f"{head}-/{tail} not rejoined"
        assert head + "-" not in words
    assert "well-known" in words                  # a real hyphen inside a line stays


def test_front_matter_and_index_skipped_and_reported(sample, sample_pdf):
    with pymupdf.open(sample_pdf) as doc:
        n_pages = doc.page_count
        index_page = doc.get_toc()[-1][2]
    assert sample.skipped_sections == [
        ("sample", 1, 1, "title page"), ("sample", 2, 2, "copyright page"),
        ("sample", 3, 3, "table of contents"), ("sample", index_page, n_pages, "index")]
    first = sample.passages[0]
    assert first.text.startswith("I was seventeen when I first pushed open the door of Edda")
    assert (first.first_page, first.chapter) == (4, CHAPTERS[0])
    text = " ".join(p.text for p in sample.passages)
    for gone in ("All rights reserved", "ISBN", "Contents", "Notes on Craft", ". . .",
                 "workshop, 4"):
        assert gone not in text
    assert text.rstrip().endswith("as somebody was once patient with you.")
    [row] = sample.report()
    assert row["skipped"] == (f"title page p1; copyright page p2; table of contents p3; "
                              f"index p{index_page}-{n_pages}")
    assert (row["pages"], row["pages_kept"], row["chapters"]) == (n_pages, index_page - 4, 6)


def test_chapters_from_the_pdf_outline(sample):
    assert [p.chapter for p in sample.passages] == sorted(
        (p.chapter for p in sample.passages), key=CHAPTERS.index)
    assert {p.chapter for p in sample.passages} == set(CHAPTERS)
    third = next(p for p in sample.passages if "Wood is not a uniform material" in p.text)
    assert third.chapter in CHAPTERS[1:3]


def test_pages_of_the_sample_passages(sample, sample_pdf):
    pages = [" ".join(t.replace("-\n", "").split()) for t in raw_pages(sample_pdf)]
    for p in sample.passages:
        words = p.text.split()
        assert 1 <= p.first_page <= p.last_page <= len(pages)
        assert " ".join(words[:3]) in pages[p.first_page - 1] + " " + pages[p.first_page]
        assert words[-1] in pages[p.last_page - 1]


# --- passages: sizes, overlaps, pages, sha256 ---------------------------------------------------


def test_passage_sizes_and_overlaps_exact(tmp_path):
    """No sentence ends: every passage is exactly `words` long, starts words - overlap words
    after the previous one, and the last one is kept only with >= min_words words."""
    book = tmp_path / "plain.txt"
    book.write_text(" ".join(f"w{i}" for i in range(1000)))
    ps = pdf.load_passages(book, words=100, overlap=20, min_words=30)
    starts = list(range(0, 1000, 80))[:13]                    # 0, 80, ..., 960
    assert [p.text.split()[0] for p in ps] == [f"w{s}" for s in starts]
    assert [p.words for p in ps] == [100] * 12 + [40]
    assert [p.index for p in ps] == list(range(13))
    for a, b in zip(ps, ps[1:]):
        assert a.text.split()[-20:] == b.text.split()[:20]
    assert ps[-1].text.split()[-1] == "w999"
    assert len(pdf.load_passages(book, words=100, overlap=20, min_words=50)) == 12   # tail < 50


def test_passage_ends_early_at_a_sentence_end(tmp_path):
    words = [f"w{i}" for i in range(300)]
    words[80] = "w80."            # 20 words before the limit: too early, ignored
    words[95] = 'w95!"'           # 5 words before: the passage ends here (closing quote too)
    words[98] = "Dr."             # an abbreviation is not a sentence end
    (tmp_path / "s.txt").write_text(" ".join(words))
    ps = pdf.load_passages(tmp_path / "s.txt", words=100, overlap=10, min_words=10)
    assert ps[0].text.split()[-1] == 'w95!"' and ps[0].words == 96
    assert ps[1].text.split()[:10] == words[86:96]           # still overlaps by exactly 10
    for a, b in zip(ps, ps[1:]):
        assert a.text.split()[-10:] == b.text.split()[:10]
        assert 100 - pdf.SENTENCE_WINDOW <= a.words <= 100


def test_sample_passages_overlap_and_hash(sample_md):
    ps = sample_md.passages
    for a, b in zip(ps, ps[1:]):
        assert a.text.split()[-50:] == b.text.split()[:50]
        assert 350 - pdf.SENTENCE_WINDOW <= a.words <= 350
    assert ps[-1].words >= 100
    for p in ps:
        assert p.sha256 == hashlib.sha256(p.text.encode("utf-8")).hexdigest()
        assert p.book == "the_patient_workshop"
    assert sum(1 for p in ps if re.search(r"[.!?][\"')]*$", p.text)) >= len(ps) // 2


def test_headers_footers_page_numbers_and_exact_pages(tmp_path):
    """Five pages of known words with a header "Chapter 2   <n>" and page numbers in four
    styles: the text is exactly the body words, and each passage's pages are right."""
    def roman(n):
        return ["i", "ii", "iii", "iv", "v", "vi"][n - 1]
    footers = [lambda k: f"Page {k}", lambda k: f"- {k} -", roman, str, lambda k: f"{k} of 5"]
    pages = []
    for k in range(1, 6):
        body = [" ".join(f"p{k}w{j}" for j in range(i, i + 10)) for i in range(0, 80, 10)]
        pages.append([f"Chapter 2   {16 + k}", *body, footers[k - 1](k)])
    path = write_pdf(tmp_path / "known.pdf", pages)
    corpus = pdf.load_corpus(path, words=100, overlap=20, min_words=10)
    tokens = [f"p{k}w{j}" for k in range(1, 6) for j in range(80)]
    ps = corpus.passages
    assert words_of([ps[0]]) == tokens[:100]
    assert all(re.fullmatch(r"p\d+w\d+", w) for p in ps for w in p.text.split())
    for p in ps:
        ws = p.text.split()
        assert (p.first_page, p.last_page) == (int(ws[0][1]), int(ws[-1][1]))
    assert [(p.first_page, p.last_page) for p in ps[:3]] == [(1, 2), (2, 3), (3, 4)]
    assert corpus.skipped_sections == []
    assert corpus.books[0].pages == corpus.books[0].pages_kept == 5
    assert corpus.books[0].words == 400


def test_hyphenation_within_and_across_pages(tmp_path):
    filler = "plain words that pad the page so it reads as prose " * 3
    pages = [[filler, "we kept contin-", "uing along a well-known road with Jean-",
              "Paul and his exam-"],
             ["ple of patience " + filler]]
    ps = pdf.load_passages(write_pdf(tmp_path / "h.pdf", pages), words=200, overlap=0,
                           min_words=5)
    text = " ".join(p.text for p in ps)
    assert "kept continuing along a well-known road with Jean-Paul and his example of" in text
    assert "contin-" not in text and "exam-" not in text


def test_control_characters_and_white_space(tmp_path):
    (tmp_path / "c.txt").write_text("Bells\x07 and\x00 nulls\u200b here,\t\ttabs   and  "
                                    "spaces\nacross lines.\n" + "more words " * 60)
    [p] = pdf.load_passages(tmp_path / "c.txt", words=350, overlap=50, min_words=20)
    assert p.text.startswith("Bells and nulls here, tabs and spaces across lines. more words")
    assert not re.search(r"[\x00-\x1f\u200b]|  ", p.text)


# --- chapters found without an outline; TXT and Markdown --------------------------------------


_LINE = itertools.count()


def prose(n: int, word: str = "steady") -> list[str]:
    """n lines of ten words each, no sentence ends; the last word tags the line in letters,
    since identical lines (digits aside) at the top of several pages are a running header."""
    def tag(k: int) -> str:
        return chr(97 + k % 26) + chr(97 + k // 26 % 26)
    return [" ".join([word] * 9 + [word + tag(next(_LINE))]) for _ in range(n)]


def test_chapter_headings_found_without_an_outline(tmp_path):
    pages = [["CHAPTER ONE", "The Long Road", *prose(20, "road")],
             [*prose(8, "road"), "Chapter 3 was the hardest part of the whole road to walk",
              *prose(8, "road")],
             ["Chapter 2: Rivers", *prose(20, "river")],
             [*prose(2, "river")]]          # a short last page of a chapter stays
    corpus = pdf.load_corpus(write_pdf(tmp_path / "noout.pdf", pages), words=50, overlap=0,
                             min_words=5)
    ps = corpus.passages
    assert [p.chapter for p in ps][0] == "CHAPTER ONE: The Long Road"
    assert {p.chapter for p in ps} == {"CHAPTER ONE: The Long Road", "Chapter 2: Rivers"}
    assert all(p.chapter == "Chapter 2: Rivers" for p in ps if p.text.startswith("river"))
    text = " ".join(p.text for p in ps)
    assert "Chapter 3 was the hardest part" in text              # prose, not a heading
    assert "CHAPTER ONE" not in text and "Long Road" not in text and "Rivers" not in text
    assert corpus.skipped_sections == [] and corpus.books[0].pages_kept == 4


def test_chapters_from_a_hand_built_outline(tmp_path):
    """Outline titles that no heading pattern would find; one chapter starts mid-page, one has
    no printed title (it starts at the top of its page)."""
    pages = [["The Beginning", *prose(20, "dawn")],
             prose(20, "dawn"),
             [*prose(5, "dawn"), "The Middle Part", *prose(10, "noon")],
             prose(20, "dusk")]
    toc = [[1, "The Beginning", 1], [1, "The Middle Part", 3], [1, "Unprinted Finale", 4]]
    ps = pdf.load_passages(write_pdf(tmp_path / "outline.pdf", pages, toc), words=10, overlap=0,
                           min_words=1)
    expected = {"dawn": "The Beginning", "noon": "The Middle Part", "dusk": "Unprinted Finale"}
    assert [p.chapter for p in ps] == [expected[p.text.split()[0]] for p in ps]
    assert len(ps) == 75 and all(p.text.startswith(p.text.split()[-1][:4]) for p in ps)
    assert [p.first_page for p in ps if p.text.startswith("noon")] == [3] * 10


def test_front_and_back_matter_without_an_outline(tmp_path):
    """Title page, dedication, copyright, contents and a two-page index found by their content;
    a chapter page that mentions copyright and ends on a short page is kept."""
    pages = [["A Small Book", "Stories of the Orchard", "by Ann Author"],
             ["For my mother, who taught me patience."],
             ["Copyright 2021 Ann Author", "All rights reserved.", "ISBN 978-0-00-000000-0"],
             ["Contents", "Chapter 1: Start .......... 5", "Chapter 2: Finish .......... 6",
              "Index .......... 8"],
             ["Chapter 1: Start", *prose(20, "apple")],
             ["Chapter 2: Finish", *prose(10, "pear"),
              "We argued about copyright and the law of the orchard for an hour",
              *prose(10, "pear")],
             prose(2, "plum"),
             ["Index", "apple, 5", "orchard, 5, 6", "pear, 6-7", "plum, 7"],
             ["quince, 5, 7", "rowan, 6", "sloe, 6, 7", "walnut, 5"]]
    corpus = pdf.load_corpus(write_pdf(tmp_path / "small.pdf", pages), words=10, overlap=0,
                             min_words=1)
    assert corpus.skipped_sections == [
        ("small", 1, 1, "title page"), ("small", 2, 2, "dedication"),
        ("small", 3, 3, "copyright page"), ("small", 4, 4, "table of contents"),
        ("small", 8, 9, "index")]
    ps = corpus.passages
    assert ps[0].text.startswith("apple") and ps[0].first_page == 5
    assert "We argued about copyright" in " ".join(p.text for p in ps)
    assert ps[-1].text.startswith("plum") and ps[-1].last_page == 7
    assert corpus.books[0].pages_kept == 3
    assert {p.chapter for p in ps} == {"Chapter 1: Start", "Chapter 2: Finish"}


def test_chapter_title_as_running_header(tmp_path):
    """The running header is the chapter title, printed the same as the heading on the
    chapter's first page: the heading is kept as a chapter, the headers go."""
    pages = [[title, *prose(20, word)] for title, word in
             [("Chapter 1: Rivers", "river")] * 3 + [("Chapter 2: Stones", "stone")] * 3]
    ps = pdf.load_passages(write_pdf(tmp_path / "rh.pdf", pages), words=10, overlap=0,
                           min_words=1)
    assert len(ps) == 120 and not any("Rivers" in p.text or "Stones" in p.text for p in ps)
    assert [p.chapter for p in ps] == ["Chapter 1: Rivers"] * 60 + ["Chapter 2: Stones"] * 60


def test_txt_with_form_feeds_contents_and_chapters(tmp_path):
    """Pages at form feeds; a contents list without a heading or dot leaders (a run of chapter
    lines) is skipped; "Chapter Three" + "Endings" on the next line is one title."""
    contents = "A Quiet Book\n\nChapter 1 Beginnings 2\nChapter 2 Middles 3\nChapter 3 Endings 4\n"
    ch1 = "Chapter 1\n\n" + " ".join(["alpha"] * 150) + ".\n"
    ch2 = "CHAPTER TWO\n\n" + " ".join(["beta"] * 150) + "\n"
    ch3 = "Chapter Three\nEndings\n\n" + " ".join(["gamma"] * 60) + "\n"
    (tmp_path / "quiet.txt").write_text("\f".join([contents, ch1, ch2, ch3]))
    corpus = pdf.load_corpus(tmp_path / "quiet.txt", words=100, overlap=0, min_words=10)
    assert corpus.skipped_sections == [("quiet", 1, 1, "title page"),
                                       ("quiet", 1, 1, "table of contents")]
    ps = corpus.passages
    assert [(p.first_page, p.last_page, p.chapter, p.text.split()[0]) for p in ps] == [
        (2, 2, "Chapter 1", "alpha"), (2, 3, "Chapter 1", "alpha"),
        (3, 3, "CHAPTER TWO", "beta"), (4, 4, "Chapter Three: Endings", "gamma")]
    assert ps[-1].words == 60 and "Endings" not in ps[-1].text
    assert (corpus.books[0].pages, corpus.books[0].pages_kept, corpus.books[0].words) == (4, 3, 360)


def test_markdown_sample_front_matter_and_chapters(sample_md):
    assert sample_md.skipped_sections == [("the_patient_workshop", 1, 1, kind) for kind in
                                          ("title page", "copyright page", "table of contents")]
    first = sample_md.passages[0]
    assert first.text.startswith("I was seventeen when I first pushed open the door")
    assert (first.first_page, first.last_page) == (1, 1)
    assert {p.chapter for p in sample_md.passages} == set(CHAPTERS)
    assert 4000 <= sample_md.books[0].words <= 5000


def test_each_passage_is_labelled_with_the_chapter_it_starts_in():
    ps = pdf.load_passages(SAMPLE_MD, words=60, overlap=0, min_words=1)
    stream = words_of(ps)
    text = SAMPLE_MD.read_text()
    starts = []     # where each chapter's first paragraph begins in the word stream
    for title in CHAPTERS:
        first_words = text.split(f"# {title}\n\n", 1)[1].split()[:8]
        at = next(i for i in range(len(stream)) if stream[i:i + 8] == first_words)
        starts.append(at)
    assert starts == sorted(starts) and starts[0] == 0
    offset = 0
    for p in ps:
        expected = CHAPTERS[max(k for k, s in enumerate(starts) if s <= offset)]
        assert p.chapter == expected, (p.index, offset)
        offset += p.words


def test_markdown_headings_and_markup(tmp_path):
    md = ("# Field Journal\n\nby Someone\n\n## Early Days\n\n" + "We **walked** far. " * 40
          + "\n\n### A small note\n\n" + "See [the map](http://x.y) again. " * 20
          + "\n\n## Later\n\n" + "Then we rested. " * 40 + "\n")
    (tmp_path / "journal.md").write_text(md)
    corpus = pdf.load_corpus(tmp_path / "journal.md", words=50, overlap=0, min_words=5)
    text = " ".join(p.text for p in corpus.passages)
    assert text.startswith("We walked far.") and "**" not in text and "http" not in text
    assert "A small note" not in text and "See the map again." in text
    assert [s[3] for s in corpus.skipped_sections] == ["title page"]
    assert {p.chapter for p in corpus.passages} == {"Early Days", "Later"}


def test_epub(tmp_path):
    path = tmp_path / "tiny.epub"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml",
                   '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:'
                   'opendocument:xmlns:container"><rootfiles><rootfile full-path="c.opf" '
                   'media-type="application/oebps-package+xml"/></rootfiles></container>')
        z.writestr("c.opf",
                   '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" '
                   'version="2.0" unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/'
                   'elements/1.1/"><dc:title>Tiny</dc:title>'
                   '<dc:identifier id="id">t</dc:identifier></metadata><manifest><item id="a" href="a.xhtml" media-type="application/'
                   'xhtml+xml"/></manifest><spine><itemref idref="a"/></spine></package>')
        body = "".join(f"<h1>Chapter {n}: Part {n}</h1><p>{' '.join(['oak'] * 200)}.</p>"
                       for n in (1, 2))
        z.writestr("a.xhtml", '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml">'
                              f"<body>{body}</body></html>")
    ps = pdf.load_passages(path, words=100, overlap=0, min_words=10)
    assert {p.chapter for p in ps} == {"Chapter 1: Part 1", "Chapter 2: Part 2"}
    assert sum(p.words for p in ps) == 400 and set(" ".join(p.text for p in ps).split()) == {
        "oak", "oak."}


# --- bad input ----------------------------------------------------------------------------------


def make_bad_folder(folder: Path) -> Path:
    folder.mkdir()
    pdf.make_sample_pdf(folder / "good.pdf")
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret text " * 30)
    doc.save(folder / "locked.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner",
             user_pw="user")
    (folder / "corrupt.pdf").write_bytes(random.Random(0).randbytes(4096))
    doc = pymupdf.open()
    page = doc.new_page()
    page.draw_rect(pymupdf.Rect(50, 50, 300, 400), color=(0, 0, 0), fill=(0.8, 0.8, 0.8))
    pix = pymupdf.Pixmap(pymupdf.csRGB, pymupdf.IRect(0, 0, 40, 40), False)
    pix.set_rect(pix.irect, (120, 60, 30))
    page.insert_image(pymupdf.Rect(60, 60, 200, 200), pixmap=pix)
    doc.save(folder / "scan.pdf")
    return folder


def test_folder_with_encrypted_corrupt_and_image_only_pdfs(tmp_path, caplog):
    folder = make_bad_folder(tmp_path / "Books")
    (folder / "notes.docx").write_bytes(b"PK")
    (folder / "README.md").write_text("# My books\n")
    with caplog.at_level(logging.WARNING, logger="helpers.books.pdf"):
        corpus = pdf.load_corpus(folder)
    assert [b.name for b in corpus.books] == ["good"]
    assert {p.book for p in corpus.passages} == {"good"} and len(corpus.passages) >= 10
    reasons = dict(corpus.skipped_files)
    assert set(reasons) == {"corrupt.pdf", "locked.pdf", "scan.pdf", "notes.docx", "README.md"}
    assert reasons["locked.pdf"].startswith("encrypted") and "password" in reasons["locked.pdf"]
    assert reasons["corrupt.pdf"].startswith("corrupt")
    assert reasons["scan.pdf"].startswith("no text layer") and "OCR" in reasons["scan.pdf"]
    assert "not a book file" in reasons["notes.docx"]
    for name in ("locked.pdf", "corrupt.pdf", "scan.pdf"):
        assert any(name in r.message for r in caplog.records if r.levelno == logging.WARNING)
    rows = {r["file"]: r for r in corpus.report()}
    assert rows["good.pdf"]["status"] == "loaded" and rows["scan.pdf"]["status"] == "skipped"
    assert len({tuple(r) for r in rows.values()}) == 1          # the same columns in every row
    assert "3 files" not in corpus.summary() and "locked.pdf (encrypted)" in corpus.summary()


def test_load_passages_logs_a_summary(sample_pdf, caplog):
    with caplog.at_level(logging.INFO, logger="helpers.books.pdf"):
        ps = pdf.load_passages(sample_pdf)
    summary = [r.message for r in caplog.records if "passages from" in r.message]
    assert len(summary) == 1 and summary[0].startswith(f"{len(ps)} passages from 1 book(s)")
    assert "1 title page" in summary[0] and "1 index" in summary[0]


def test_single_unreadable_file_is_a_clear_error(tmp_path):
    folder = make_bad_folder(tmp_path / "b")
    with pytest.raises(ValueError, match=r"locked\.pdf.*encrypted.*password"):
        pdf.load_corpus(folder / "locked.pdf")
    (folder / "good.pdf").unlink()
    with pytest.raises(ValueError, match=r"No book in the folder .*b could be read.*corrupt\.pdf"):
        pdf.load_corpus(folder)


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "Empty").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        pdf.load_passages(tmp_path / "Empty")
    msg = str(e.value)
    assert str(tmp_path / "Empty") in msg and ".pdf" in msg and ".epub" in msg
    assert "Books/<Persona>/" in msg and "it is empty" in msg
    (tmp_path / "Empty" / "notes.docx").write_bytes(b"PK")
    (tmp_path / "Empty" / "README.md").write_text("# Books\n")
    with pytest.raises(FileNotFoundError, match="found only: README.md, notes.docx"):
        pdf.load_passages(tmp_path / "Empty")


def test_missing_path_and_wrong_file_type(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Book path not found: .*nowhere\.pdf"):
        pdf.load_passages(tmp_path / "nowhere.pdf")
    (tmp_path / "a.docx").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"a\.docx is not a book file.*\.pdf"):
        pdf.load_passages(tmp_path / "a.docx")


@pytest.mark.parametrize("kwargs, setting", [
    (dict(words=100, overlap=100), "overlap"),
    (dict(words=100, overlap=-1), "overlap"),
    (dict(words=100, overlap=10, min_words=101), "min_words"),
    (dict(min_words=0), "min_words"),
    (dict(words=0, overlap=0, min_words=0), "words"),
    (dict(words=350.0), "words"),
])
def test_bad_settings_are_clear_errors(kwargs, setting):
    with pytest.raises(ValueError, match=f"`{setting}`"):
        pdf.load_passages(SAMPLE_MD, **kwargs)


# --- the command line ---------------------------------------------------------------------------


def test_command_line(sample_pdf, tmp_path, capsys):
    assert pdf.main([str(sample_pdf), "--words", "200", "--overlap", "20"]) == 0
    out = capsys.readouterr().out
    n = len(pdf.load_passages(sample_pdf, words=200, overlap=20))
    assert "file" in out.splitlines()[0] and "sample.pdf" in out and "table of contents p3" in out
    assert f"{n} passages from 1 book(s)" in out
    assert pdf.main([str(tmp_path / "missing")]) == 2
    assert "Book path not found" in capsys.readouterr().err
    assert pdf.main([str(sample_pdf), "--overlap", "400"]) == 2
    assert "`overlap`" in capsys.readouterr().err


def test_a_long_pdf_read_by_several_processes_gives_what_one_process_reads(sample_pdf, monkeypatch):
    """The page shares read side by side join up to exactly the one-process reading, also when
    a worker fails (its pages are read in this process); FINETUNING_PDF_PROCESSES caps them."""
    from helpers.books import reader
    monkeypatch.setenv(reader.PROCESSES_ENV, "1")
    one = reader.read_book(sample_pdf)
    assert reader.processes_for(10_000) == 1
    monkeypatch.setenv(reader.PROCESSES_ENV, "3")
    monkeypatch.setattr(reader, "PAGES_PER_PROCESS", 2)
    monkeypatch.setattr(reader.os, "cpu_count", lambda: 8)
    assert reader.processes_for(len(one.pages)) == 3
    several = reader.read_book(sample_pdf)
    assert (several.blocks, several.heights, several.outline) == (one.blocks, one.heights, one.outline)
    passages = pdf.load_corpus(sample_pdf).passages
    monkeypatch.setenv(reader.PROCESSES_ENV, "1")
    assert pdf.load_corpus(sample_pdf).passages == passages
    monkeypatch.setenv(reader.PROCESSES_ENV, "3")

    def broken(path, start, stop):
        raise OSError("no such worker")
    monkeypatch.setattr(reader, "_blocks_of_file", broken)
    again = reader.read_book(sample_pdf)
    assert (again.blocks, again.heights) == (one.blocks, one.heights)
    monkeypatch.setenv(reader.PROCESSES_ENV, "many")
    with pytest.raises(ValueError, match="FINETUNING_PDF_PROCESSES='many'"):
        reader.processes_for(100)
