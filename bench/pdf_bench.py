"""What book loading costs over bare text extraction: PyMuPDF's page.get_text() on every page
against helpers.pdf.load_passages (extraction + cleaning + front/back matter + chunking) on the
same ~300-page PDF, side by side in one run: with the loader's default processes (a long PDF is
read by several, one share of its pages each) and with one. Prints the times (best of several
runs, the three run back to back each time), the ratios to bare (best/best, and the median of
the back-to-back pairs, which is steadier on a busy machine) and pages per second.

    .venv/bin/python bench/pdf_bench.py [--pages 300] [--repeat 9]
    .venv/bin/python bench/pdf_bench.py --pdf ~/.cache/finetuning/realbooks/books/r-doc-pdf/refman.pdf \
        --repeat 3 [--layout-pages 10]

``--pdf`` times a real book instead (R's 2,415-page reference manual is fetched by the real-book
tests, tests/books/realbooks.py). ``--layout-pages N`` also times PyMuPDF's own layout analysis
(``pymupdf4llm.to_text`` with header/footer removal, ``pymupdf-layout`` active) on N pages and
prints its cost per page beside bare extraction's.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path

import pymupdf

from helpers.books import pdf, reader


def big_source(target_pages: int) -> str:
    """The sample book with its chapters repeated (renumbered) until about target_pages."""
    text = pdf.SAMPLE_BOOK.read_text(encoding="utf-8")
    head, first = text.split("\n# Chapter 1:", 1)
    chapters = re.split(r"\n# Chapter \d+: ", "\n# Chapter 1: " + first)[1:]
    per_round = 17                       # body pages the sample's six chapters take
    rounds = max(1, round(target_pages / per_round))
    out, n = [head], 0
    for r in range(rounds):
        for chapter in chapters:
            n += 1
            title, body = chapter.split("\n", 1)
            out.append(f"\n# Chapter {n}: {title} ({r + 1})\n{body}")
    return "".join(out)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=300, help="about how many pages (300)")
    ap.add_argument("--repeat", type=int, default=9, help="timed runs of each (9)")
    ap.add_argument("--pdf", help="time this PDF instead of a sample book made for --pages")
    ap.add_argument("--layout-pages", type=int, default=0,
                    help="also time pymupdf4llm's layout analysis on this many pages (0: no)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = (Path(args.pdf).expanduser() if args.pdf else
                pdf.make_sample_pdf(Path(tmp) / "big_book.pdf", source=big_source(args.pages)))
        made = time.perf_counter() - t0
        with pymupdf.open(path) as doc:
            pages = doc.page_count
        print(f"{path.name}: {pages} pages, {path.stat().st_size / 1e6:.1f} MB "
              f"(made in {made:.1f} s)\n")

        def bare():
            with pymupdf.open(path) as doc:
                return [page.get_text() for page in doc]

        def loader():
            return pdf.load_passages(path)

        def one_process():
            os.environ[reader.PROCESSES_ENV] = "1"
            try:
                return pdf.load_passages(path)
            finally:
                os.environ.pop(reader.PROCESSES_ENV)

        bare(), loader(), one_process()  # warm-up: imports, file cache
        runs = [(timed(bare), timed(loader), timed(one_process)) for _ in range(args.repeat)]
        t_bare = min(r[0] for r in runs)
        words = sum(len(t.split()) for t in bare())
        passages = loader()
        print(f"{'':34} {'seconds':>8} {'pages/s':>8}   (best of {args.repeat}, back to back)")
        print(f"{'page.get_text() (bare)':34} {t_bare:8.3f} {pages / t_bare:8.0f}")
        for k, label in ((1, f"load_passages ({reader.processes_for(pages)} processes)"),
                         (2, "load_passages (1 process)")):
            t = min(r[k] for r in runs)
            ratios = sorted(r[k] / r[0] for r in runs)
            print(f"{label:34} {t:8.3f} {pages / t:8.0f}   / bare: {t / t_bare:.2f}x best/best, "
                  f"{ratios[len(ratios) // 2]:.2f}x median of pairs")
        print(f"\n({words} words extracted, {len(passages)} passages)")
        if args.layout_pages:
            layout(path, args.layout_pages, t_bare / pages)


def layout(path: Path, n: int, bare_per_page: float) -> None:
    """pymupdf4llm's layout analysis (headers and footers dropped) on the first n pages."""
    import pymupdf4llm
    with pymupdf.open(path) as doc:
        pages = list(range(min(n, doc.page_count)))
        pymupdf4llm.to_text(doc, pages=pages[:1], header=False, footer=False, use_ocr=False)
        t = timed(lambda: pymupdf4llm.to_text(doc, pages=pages, header=False, footer=False,
                                              use_ocr=False))
    per = t / len(pages)
    print(f"\npymupdf4llm.to_text (layout {'on' if pymupdf4llm._use_layout else 'off'}): "
          f"{per:.3f} s/page on {len(pages)} pages = {per / bare_per_page:.0f}x bare extraction")


if __name__ == "__main__":
    main()
