"""Real books: PDF and EPUB manuals from Debian documentation packages (tests/books/realbooks.py
fetches them with apt into the cache). Fails when more than 2% of the running headers counted in
the raw text survive in the passages, when a passage starts or ends mid-word, when neighbours do
not share the asked overlap, or when under 97% of the raw text's vocabulary survives."""

from __future__ import annotations

import pytest

from helpers.books import cleanreport, pdf
from tests.books import realbooks as rb

pytestmark = pytest.mark.slow

if rb.apt_available():
    pytest.skip(rb.apt_available(), allow_module_level=True)

WORDS, OVERLAP = 350, 50


@pytest.fixture(scope="module")
def books():
    return [b for b in rb.all_books() if b.name != rb.BIG]


@pytest.fixture(scope="module")
def loaded(books):
    return {b.name: (pdf.load_corpus(b, words=WORDS, overlap=OVERLAP),
                     pdf.load_corpus(b, words=WORDS, overlap=0, min_words=1)) for b in books}


def test_corpus_has_pdfs_and_epubs(books):
    assert sum(b.suffix == ".pdf" for b in books) >= 6 and sum(b.suffix == ".epub" for b in books) == 2


def test_running_headers_do_not_survive(books, loaded):
    total = survived = 0
    report = []
    for b in books:
        if b.suffix != ".pdf":
            continue
        text = " ".join(p.text for p in loaded[b.name][1].passages)
        n, s, keys = rb.header_survival(rb.raw_pages(b), text)
        total, survived = total + n, survived + s
        report.append(f"{b.name}: {s}/{n} {keys}")
        assert s <= 0.02 * n + 1, report[-1]
    assert total > 1000 and survived <= 0.02 * total, report


def test_vocabulary_survives(books, loaded):
    for b in books:
        if b.suffix != ".pdf":
            continue
        raw = rb.raw_words(rb.raw_pages(b))
        text = " ".join(p.text for p in loaded[b.name][1].passages).lower()
        kept = len(raw & set(rb.WORD.findall(text))) / len(raw)
        assert kept >= 0.97, (b.name, kept, sorted(raw - set(rb.WORD.findall(text)))[:40])


def test_no_passage_starts_or_ends_mid_word(books, loaded):
    for b in books:
        if b.suffix != ".pdf":
            continue
        tokens = rb.raw_tokens(rb.raw_pages(b))
        assert not rb.mid_word_ends(loaded[b.name][0].passages, tokens), b.name


def test_neighbouring_passages_share_the_overlap(loaded):
    for name, (corpus, _) in loaded.items():
        ps = corpus.passages
        assert len(ps) > 50, name
        for a, c in zip(ps, ps[1:]):
            assert a.text.split()[-OVERLAP:] == c.text.split()[:OVERLAP], (name, a.index)


def test_epub_by_spine_and_navigation(loaded):
    for name in ("developers-reference.epub", "policy.epub"):
        corpus = loaded[name][0]
        chapters = [p.chapter for p in corpus.passages]
        assert len(set(chapters)) >= 10 and None not in chapters, name
        pdf_twin = loaded[name.replace(".epub", ".pdf")][0]
        ratio = corpus.books[0].words / pdf_twin.books[0].words
        assert 0.8 <= ratio <= 1.25, (name, ratio)   # same book, about the same words


def test_cleaning_report_on_real_books(loaded):
    for name, (corpus, _) in loaded.items():
        (row,) = cleanreport.summary(corpus)
        assert row["repeated_phrases"] == 0, (name, cleanreport.leftovers(corpus))
        rules = cleanreport.rules(corpus)
        assert rules and all(r["examples"] for r in rules), name


def test_the_outline_is_pymupdfs_table_of_contents(books):
    """The loader walks the outline PyMuPDF loaded on opening (get_toc loads it again): the
    same entries, levels and pages, on every real PDF and the big one."""
    import pymupdf

    from helpers.books import reader
    with_outline = 0
    for b in (b for b in rb.all_books() if b.suffix == ".pdf"):
        with pymupdf.open(b) as doc:
            toc = doc.get_toc(simple=True)
            assert reader._outline(doc) == toc, b.name
            with_outline += bool(toc)
    assert with_outline >= 4      # the comparison is not only of empty outlines
