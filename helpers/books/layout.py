"""Cleaning PDF pages by where their text sits: running headers and footers, footnotes, drop caps.

PyMuPDF gives each page's text as blocks with their boxes (``page.get_text("blocks")``, as fast
as plain text). The rules, in order, each recorded in a :class:`Removals`:

- **Running headers and footers by position.** A *band* is a height near the top (bottom) edge
  where short blocks (at most 2 lines and 15 words, starting in the top or ending in the bottom
  ``EDGE`` share of the page) sit on many pages: at least ``BAND_MIN_PAGES`` pages and
  ``BAND_MIN_SHARE`` of them. A band is a running header (footer) band when at least half of its
  blocks are page numbers or text that repeats, digits ignored, on another page. Then *every*
  short block in the band goes, also those that do not repeat: per-chapter or per-topic headers
  ("Chapter 3: Loops", a reference manual's topic name), alternating odd/even headers (same
  height, either side), page numbers left or right. (A block repeats when any of its lines does:
  "CHAPTER 1. OVERVIEW" above a per-page section title.) A chapter's first page, which has no
  header, has nothing in the band and loses nothing. A block that is the outline title of a
  chapter starting on that page is kept.
- **Footnotes** (moved to the end of the book, as endnotes are printed). A block in the lower ``FOOTNOTE_ZONE`` of the page,
  below all the body text, that starts with a marker ("1 ", "12 ", "\u2020 "; not "* ", a bullet) and whose
  marker appears glued to a word in the body of the same page ("limited3"), is a footnote, and so
  is every block below it down to the footer band. The glued marker is removed from the body
  ("limited3" -> "limited"). Notes leave the text flow, so a sentence running across the page
  break is whole again, but they are kept: they are the author's words (the loader puts them
  after the book's last chapter, under "Notes").
  A note that stops mid-sentence at the foot of a page runs on at the foot of the next one: there,
  the lowest block, below all the others and set as small as the note (and smaller than the
  body text), is its rest, joined to it.
- **Drop caps**: a block that is one capital letter, at least twice the height of a body line,
  is joined to the first word of the block after it ("T" + "his" -> "This").

- **Two columns** (:func:`reading_order`): PyMuPDF gives blocks in the order the text was laid
  down, which is column by column in LaTeX but can be right column first, or paragraph by
  paragraph across the columns (text frames in layout programs). Where a page's narrow blocks (under ``WIDE`` of the text
  width) leave a vertical gap in the middle of the page, with at least two blocks and
  ``COLUMN_MIN_SHARE`` of the text on each side, side by side, the page is read as columns: between
  two wide blocks (a title or figure across both columns) the left column top to bottom, then the
  right one. Any other page keeps PyMuPDF's order. (Lines laid down across both columns, line 1
  left, line 1 right, ..., come out of PyMuPDF as one block holding both: telling them apart
  needs line boxes, which cost more than the whole extraction, so that layout is not undone.)

Tables and figure captions are kept as text: they are the author's words, and dropping them would
drop vocabulary the tests require to survive. Hyphenation across lines and pages, front and back
matter and text-based running lines are handled after this, on the page text
(:mod:`helpers.books.cleaning`, :mod:`helpers.books.matter`, :mod:`helpers.books.pdf`).

PyMuPDF's own layout analysis (``pymupdf4llm.to_text`` with ``pymupdf-layout``) was measured on
the same books: it drops running headers well but keeps footnotes, and costs ~0.4 s a page on
2 CPU cores (about 200x bare extraction; without ``pymupdf-layout``, ~0.1 s a page), so a
2,000-page book would take minutes, not seconds. It is not used; ``bench/pdf_bench.py`` has the
figures.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from helpers.books.patterns import DIGITS, PAGE_NUMBER

EDGE = 0.12             # share of the page height at the top (bottom) where headers (footers) sit
BAND_MIN_PAGES = 3      # a header band holds short blocks on at least this many pages ...
BAND_MIN_SHARE = 0.05   # ... and on at least this share of the pages
BAND_TOLERANCE = 3.0    # points: blocks this close in height are in the same band
FOOTNOTE_ZONE = 0.45    # footnotes start in the lower part of the page, below this share
WIDE = 0.6              # a block this share of the text width or wider spans the columns
COLUMN_MIN_SHARE = 0.15 # each column holds at least this share of the page's text
EXAMPLES = 3            # examples kept per rule

FOOTNOTE_START = re.compile(r"(\d{1,3}|[\u2020\u2021\u00a7\u00b6])\s+\S")   # not "*": bullets
Block = tuple  # (x0, y0, x1, y1, text)


@dataclass
class Removals:
    """What each cleaning rule removed from one book: counts and a few examples."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, rule: str, text: str, n: int = 1) -> None:
        self.counts[rule] += n
        ex = self.examples[rule]
        text = " ".join(text.split())
        if len(ex) < EXAMPLES and text and text not in ex:
            ex.append(text if len(text) <= 80 else text[:77] + "...")

    def rows(self) -> list[dict]:
        return [{"rule": rule, "removed": n, "examples": " | ".join(self.examples.get(rule, []))}
                for rule, n in self.counts.items()]


def _key(text: str) -> str:
    return " ".join(DIGITS.sub(" ", text.lower()).split())


def _short(b: Block) -> bool:
    text = b[4]
    return len(text) < 400 and text.count("\n") <= 2 and len(text.split()) <= 15


def _bands(cands: list[tuple[float, int, str]], n_pages: int) -> list[tuple[float, float]]:
    """Heights (lo, hi) where short edge blocks of many pages sit and mostly repeat."""
    if not cands:
        return []
    keys = defaultdict(set)          # each line of a block, digits ignored -> its pages
    for _, p, text in cands:
        for line in text.split("\n"):
            keys[_key(line)].add(p)
    cands.sort()
    groups, cur = [], [cands[0]]
    for c in cands[1:]:
        if c[0] - cur[-1][0] <= BAND_TOLERANCE:
            cur.append(c)
        else:
            groups.append(cur)
            cur = [c]
    groups.append(cur)
    bands = []
    need = max(BAND_MIN_PAGES, BAND_MIN_SHARE * n_pages)
    for g in groups:
        pages = {p for _, p, _ in g}
        if len(pages) < need:
            continue
        repeating = sum(1 for _, _, t in g
                        if not _key(t) or PAGE_NUMBER.fullmatch(t.strip())
                        or any(_key(x) and len(keys[_key(x)]) >= 2 for x in t.split("\n")))
        if repeating * 2 >= len(g):
            bands.append((g[0][0] - BAND_TOLERANCE, g[-1][0] + BAND_TOLERANCE))
    return bands


def _in(y: float, bands: list[tuple[float, float]]) -> bool:
    return any(lo <= y <= hi for lo, hi in bands)


_NON_WORD = re.compile(r"[^\w]+")


def _norm(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def clean_pages(pages: list[list[Block]], heights: list[float], removed: Removals,
                titles: dict[int, list[str]] | None = None) -> tuple[list[str], list[tuple[int, str]]]:
    """The text of each page with running headers/footers, footnotes and drop caps handled
    (rules in the module docstring), and the footnotes [(0-based page, text)] taken out.
    ``titles``: outline titles by 0-based page, kept."""
    titles = titles or {}
    n = len(pages)
    tops, bottoms = [], []
    edges: list[list[int]] = []      # per page: the blocks that may be a header or a footer
    for p, (blocks, h) in enumerate(zip(pages, heights)):
        top, bottom = EDGE * h, (1 - EDGE) * h
        edges.append([])
        for i, b in enumerate(blocks):
            if (b[1] <= top or b[3] >= bottom) and _short(b) and b[4].strip():
                edges[p].append(i)
                if b[1] <= top:
                    tops.append((round(b[1], 1), p, b[4]))
                if b[3] >= bottom:
                    bottoms.append((round(h - b[3], 1), p, b[4]))
    top_bands = _bands(tops, n) if n >= BAND_MIN_PAGES else []
    bottom_bands = _bands(bottoms, n) if n >= BAND_MIN_PAGES else []
    out, notes = [], []
    open_note = None       # line height of the previous page's last footnote, when it runs on
    for p, (blocks, h) in enumerate(zip(pages, heights)):
        body: list[Block] = blocks
        footer_top = h
        if edges[p] and (top_bands or bottom_bands):
            keep_titles = {_norm(t) for t in titles.get(p, [])}
            top, bottom = EDGE * h, (1 - EDGE) * h
            drop = set()
            for i in edges[p]:
                b = blocks[i]
                if b[1] <= top and _in(b[1], top_bands):
                    edge = "running header (position)"
                elif b[3] >= bottom and _in(h - b[3], bottom_bands):
                    edge = "running footer (position)"
                else:
                    continue
                if keep_titles and _norm(b[4]) in keep_titles:
                    continue
                removed.add(edge, b[4])
                if edge == "running footer (position)":
                    footer_top = min(footer_top, b[1])
                drop.add(i)
            if drop:
                body = [b for i, b in enumerate(blocks) if i not in drop]
        body = reading_order(body, removed)
        body, page_notes = _split_footnotes(body, h, footer_top, removed)
        if open_note is not None:
            body, rest = _continued_note(body, h, footer_top, open_note)
            if rest is not None:
                removed.add("footnote continued (joined to its note)", rest[4])
                notes[-1] = (notes[-1][0], notes[-1][1].rstrip("\n") + "\n" + rest[4])
        notes += [(p, b[4]) for b in page_notes]
        open_note = _line_height(page_notes) if page_notes and _unfinished(page_notes[-1][4]) else None
        body = _join_drop_caps(body, removed)
        out.append("".join(b[4] if b[4].endswith("\n") else b[4] + "\n" for b in body))
    return out, notes


def _gutter(narrow: list[Block], lo: float, width: float) -> float | None:
    """The middle of a vertical gap between the narrow blocks in the middle half of the text
    width, if there is one."""
    spans = sorted((b[0], b[2]) for b in narrow)
    reach = spans[0][1]
    for x0, x1 in spans[1:]:
        if x0 > reach and lo + 0.25 * width <= (reach + x0) / 2 <= lo + 0.75 * width:
            return (reach + x0) / 2
        reach = max(reach, x1)
    return None


def reading_order(body: list[Block], removed: Removals | None = None) -> list[Block]:
    """``body`` in reading order: column by column on a two-column page (rule in the module
    docstring), else as it is."""
    if len(body) < 4:
        return body
    lo, hi = min(b[0] for b in body), max(b[2] for b in body)
    width = hi - lo
    if width <= 0:
        return body
    narrow = [b for b in body if b[2] - b[0] < WIDE * width]
    if len(narrow) < 4:
        return body
    g = _gutter(narrow, lo, width)
    if g is None:
        return body
    left, right = [b for b in narrow if b[2] <= g], [b for b in narrow if b[0] >= g]
    chars = sum(len(b[4]) for b in body) or 1
    if (len(left) < 2 or len(right) < 2 or sum(len(b[4]) for b in left) < COLUMN_MIN_SHARE * chars
            or sum(len(b[4]) for b in right) < COLUMN_MIN_SHARE * chars
            or max(b[3] for b in left) <= min(b[1] for b in right)      # one above the other,
            or max(b[3] for b in right) <= min(b[1] for b in left)):    # not side by side
        return body
    wide = sorted((b for b in body if b[2] - b[0] >= WIDE * width), key=lambda b: b[1])
    out, placed = [], set()
    for cut in [*(b[1] for b in wide), float("inf")]:
        for side in (left, right):
            for b in sorted((b for b in side if b[1] < cut and id(b) not in placed), key=lambda b: b[1]):
                out.append(b)
                placed.add(id(b))
        out += [b for b in wide if b[1] == cut and id(b) not in placed]
        placed.update(id(b) for b in wide if b[1] == cut)
    if out != body and removed is not None:
        removed.add("two columns read in order", f"{len(left)} left, {len(right)} right blocks")
    return out if len(out) == len(body) else body


def _split_footnotes(body: list[Block], h: float, footer_top: float, removed: Removals
                     ) -> tuple[list[Block], list[Block]]:
    """(body without footnotes and their glued markers, the footnote blocks)."""
    if len(body) < 2:
        return body, []
    start = None
    for i, b in enumerate(body):
        if b[1] < FOOTNOTE_ZONE * h or b[1] >= footer_top:
            continue
        m = FOOTNOTE_START.match(b[4])
        if not m:
            continue
        below = all(o[1] >= b[1] - 1 for o in body[i:])   # nothing after it starts higher up
        above = [o for o in body[:i] if o[3] <= b[1] + 1]
        if not below or not above:
            continue
        marker = re.escape(m[1])
        glued = re.compile(rf"(?<=[^\W\d_]){marker}(?=[\s.,;:)\u201d\u2019\"']|$)"
                           if m[1].isdigit() else rf"(?<=\S){marker}")
        if any(glued.search(o[4]) for o in above):
            start = i
            break
    if start is None:
        return body, []
    notes = body[start:]
    kept = body[:start]
    for b in notes:
        removed.add("footnote (moved to Notes)", b[4])
    markers = [m[1] for b in notes for m in [FOOTNOTE_START.match(b[4])] if m]
    markers += [m[1] for b in notes for m in re.finditer(r"\n(\d{1,3})\s", b[4])]
    for marker in dict.fromkeys(markers):
        pat = re.compile(rf"(?<=[^\W\d_]){re.escape(marker)}(?=[\s.,;:)\u201d\u2019\"']|$)"
                         if marker.isdigit() else rf"(?<=\S){re.escape(marker)}")
        for k, b in enumerate(kept):
            hit = pat.search(b[4])
            if hit:
                removed.add("footnote marker", b[4][max(0, hit.start() - 30):hit.end()])
                kept[k] = (*b[:4], b[4][:hit.start()] + b[4][hit.end():])
                break
    return kept, notes


def _line_height(blocks: list[Block]) -> float:
    """The median height of a line in ``blocks`` (each block's height over its lines)."""
    per = sorted((b[3] - b[1]) / (b[4].rstrip("\n").count("\n") + 1) for b in blocks)
    return per[len(per) // 2]


def _unfinished(text: str) -> bool:
    """A note that stops mid-sentence (no full stop, question or exclamation mark, closing
    bracket or quote at its end): it runs on at the foot of the next page."""
    text = text.rstrip()
    return bool(text) and text[-1] not in ".!?)]\"'\u201d\u2019:"


def _continued_note(body: list[Block], h: float, footer_top: float, note_height: float
                    ) -> tuple[list[Block], Block | None]:
    """The rest of the previous page's unfinished footnote, printed first at this page's foot:
    the lowest block, in the footnote zone and below all the others, set in lines as small as
    the note's (within 15%) and smaller than the body's (under 85% of their median), not
    starting with a note marker. Returns (the body without it, it or None)."""
    if len(body) < 2:
        return body, None
    c = max(body, key=lambda b: b[1])
    others = [b for b in body if b is not c]
    if (c[1] < FOOTNOTE_ZONE * h or c[1] >= footer_top or FOOTNOTE_START.match(c[4])
            or any(o[3] > c[1] + 1 for o in others)):
        return body, None
    lh = _line_height([c])
    if abs(lh - note_height) > 0.15 * note_height or lh >= 0.85 * _line_height(others):
        return body, None
    return others, c


def _join_drop_caps(body: list[Block], removed: Removals) -> list[Block]:
    """A one-letter block much taller than a body line, joined to the next block's first word."""
    if not any(len(b[4].strip()) == 1 for b in body):
        return body                       # no one-letter block: nothing to join
    out: list[Block] = []
    lines = [(b[3] - b[1]) / (b[4].count("\n") or 1) for b in body if b[4].count("\n") >= 3]
    line_h = sorted(lines)[len(lines) // 2] if lines else None
    i = 0
    while i < len(body):
        b = body[i]
        letter = b[4].strip()
        if (line_h and len(letter) == 1 and letter.isupper() and i + 1 < len(body)
                and b[3] - b[1] >= 2 * line_h and body[i + 1][4][:1].isalpha()):
            nxt = body[i + 1]
            removed.add("drop cap joined", letter + nxt[4].split()[0])
            out.append((*nxt[:4], letter + nxt[4]))
            i += 2
            continue
        out.append(b)
        i += 1
    return out
