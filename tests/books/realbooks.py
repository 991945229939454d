"""Real books for the cleaning tests: PDF and EPUB manuals from Debian documentation packages,
fetched with apt at test time into ``$FINETUNING_CACHE/realbooks`` (default
``~/.cache/finetuning/realbooks``), never committed. All are free documentation (GPL-2+ or
GPL-compatible licences, see each package's copyright file); about 19 MB of downloads.

And the measures the tests apply, computed from the raw text only (never with the cleaner's own
detectors): running headers counted as lines repeated at the top or bottom of many pages,
vocabulary, passage ends, overlaps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

# package -> files inside it (paths in the package, .gz ones are unpacked)
PACKAGES = {
    "r-doc-pdf": ["usr/share/R/doc/manual/R-intro.pdf", "usr/share/R/doc/manual/R-admin.pdf",
                  "usr/share/R/doc/manual/refman.pdf"],
    "debian-reference-en": ["usr/share/debian-reference/debian-reference.en.pdf"],
    "developers-reference": ["usr/share/developers-reference/developers-reference.pdf",
                             "usr/share/developers-reference/developers-reference.epub"],
    "debian-policy": ["usr/share/doc/debian-policy/policy.pdf.gz",
                      "usr/share/doc/debian-policy/policy.epub"],
    "gnuplot-doc": ["usr/share/doc/gnuplot/gnuplot.pdf"],
    "debian-faq": ["usr/share/doc/debian/FAQ/debian-faq.en.pdf.gz"],
}
BIG = "refman.pdf"      # R's reference manual, ~2,400 pages: the benchmark book


def cache_dir() -> Path:
    return Path(os.environ.get("FINETUNING_CACHE", Path.home() / ".cache" / "finetuning")) / "realbooks"


def apt_available() -> str | None:
    """None when apt-get and dpkg-deb are there, else the reason to skip."""
    missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    return f"apt is not available here ({', '.join(missing)} missing)" if missing else None


def fetch(package: str) -> Path:
    """The package's files, downloaded and unpacked once; returns the folder of the books."""
    root = cache_dir()
    books = root / "books" / package
    if (books / ".done").exists():
        return books
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for f in debs.glob(f"{package}_*.deb"):
        f.unlink()
    cmd = ["apt-get", "download", package]
    r = subprocess.run(cmd, cwd=debs, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and os.geteuid() == 0:          # stale or missing package lists
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        r = subprocess.run(cmd, cwd=debs, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"`apt-get download {package}` failed: {r.stderr.strip()[-400:]}. "
                           f"Run `apt-get update` (as root) and check the Debian mirror in "
                           f"/etc/apt/sources.list*.")
    deb = next(debs.glob(f"{package}_*.deb"))
    tree = root / "tree" / package
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=600)
    books.mkdir(parents=True, exist_ok=True)
    for rel in PACKAGES[package]:
        src = tree / rel
        if rel.endswith(".gz"):
            import gzip
            (books / src.name[:-3]).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            shutil.copyfile(src, books / src.name)
    shutil.rmtree(tree, ignore_errors=True)
    deb.unlink()
    (books / ".done").write_text("ok\n")
    return books


def all_books() -> list[Path]:
    out = []
    for package in PACKAGES:
        folder = fetch(package)
        out += sorted(p for p in folder.iterdir() if p.suffix in (".pdf", ".epub"))
    return out


# --- measures from the raw text -----------------------------------------------------------------

HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])[-\u00ad]\n(?=[a-z])")
WORD = re.compile(r"[^\W\d_]{3,}")
PUNCT = "\"'()[]{}<>,.;:!?\u201c\u201d\u2018\u2019*`"


def raw_pages(path: Path) -> list[str]:
    """Plain PyMuPDF text per page (no flags, no blocks: not what the loader reads)."""
    import pymupdf
    with pymupdf.open(path) as doc:
        return [page.get_text() for page in doc]


def _key(line: str) -> str:
    return " ".join(re.sub(r"\d+", " ", line.lower()).split())


def running_headers(pages: list[str], edge: int = 3, min_pages: int = 4) -> tuple[Counter, list[str]]:
    """Lines repeated (digits ignored) among the first or last ``edge`` lines of at least
    ``min_pages`` pages, with 2+ letters and at most 12 words: {key: instances}, and each
    page's body (its text without those instances)."""
    split = [[line.strip() for line in p.split("\n") if line.strip()] for p in pages]
    seen: Counter = Counter()
    for lines in split:
        seen.update({_key(x) for x in lines[:edge] + lines[-edge:]})
    anywhere = Counter(_key(x) for lines in split for x in lines)
    # a header line sits at a page edge on most of the pages where it is printed as a line
    keys = {k for k, n in seen.items()
            if n >= min_pages and n * 2 >= anywhere[k] and len(re.findall(r"[^\W\d_]", k)) >= 2
            and len(k.split()) <= 12}
    instances: Counter = Counter()
    bodies = []
    for lines in split:
        edges = set(range(min(edge, len(lines)))) | set(range(max(0, len(lines) - edge), len(lines)))
        hit = {i for i in edges if _key(lines[i]) in keys}
        instances.update(_key(lines[i]) for i in hit)
        bodies.append(" ".join(x for i, x in enumerate(lines) if i not in hit))
    return instances, bodies


def header_survival(pages: list[str], passages_text: str) -> tuple[int, int, dict]:
    """(header instances in the raw text, instances surviving in the passages, {key: n}).
    A header key's survivors are its occurrences in the passages beyond those in the body."""
    instances, bodies = running_headers(pages)
    body = _key(" ".join(bodies))
    text = _key(passages_text)
    survived = {}
    for k, n in instances.items():
        pat = re.compile(r"(?<!\w)" + re.escape(k) + r"(?!\w)")
        extra = len(pat.findall(text)) - len(pat.findall(body))
        if extra > 0:
            survived[k] = min(extra, n)
    return sum(instances.values()), sum(survived.values()), survived


def raw_words(pages: list[str]) -> set[str]:
    """Whole words of the raw text (hyphenated line ends joined), lower case."""
    return set(WORD.findall(HYPHEN_BREAK.sub("", "\n".join(pages)).lower()))


def raw_tokens(pages: list[str]) -> set[str]:
    text = HYPHEN_BREAK.sub("", "\n".join(pages))
    return {t.strip(PUNCT).lower() for t in text.split()}


def mid_word_ends(passages, tokens: set[str]) -> list[str]:
    """Passage first/last tokens that are not whole tokens of the raw text (broken words)."""
    bad = []
    for p in passages:
        words = p.text.split()
        for w in (words[0], words[-1]):
            t = w.strip(PUNCT).lower()
            if t and any(c.isalpha() for c in t) and t not in tokens:
                bad.append(f"{p.book} #{p.index}: {w!r}")
    return bad
