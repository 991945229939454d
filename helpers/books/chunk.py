"""Chunking a book's words into passages of ``words`` words; each starts ``overlap`` words
before the previous one ended, so neighbours share exactly ``overlap`` words. A passage ends
early at a sentence end when one lies in its last ~15 words; each records its pages and the
chapter it starts in.
"""

from __future__ import annotations

import bisect

from helpers.books.passage import Passage
from helpers.books.patterns import SENTENCE_END

SENTENCE_WINDOW = 15     # a passage may end this many words early, at a sentence end
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "e.g.", "i.e.", "vs.", "cf.", "etc.",
                  "no.", "p.", "pp.", "vol.", "ch."}


def _ends_sentence(token: str) -> bool:
    """"word." / 'word!"' / "word?)" end a sentence; "Dr." and "e.g." do not."""
    return (bool(SENTENCE_END.search(token))
            and token.lower().strip("\"'(\u201c\u2018") not in _ABBREVIATIONS)


def chunk_tokens(tokens: list[str], page_starts: list[int], page_of_run: list[int],
                 chapter_starts: list[int], chapter_titles: list[str | None], book: str,
                 words: int, overlap: int, min_words: int) -> list[Passage]:
    """Passages of ``words`` words; each starts ``overlap`` words before the previous one
    ended. A passage ends early after a sentence end found in its last ``window`` words (never
    so early that it would hold ``overlap`` words or fewer). The tail of the book becomes the
    last passage when it has at least ``min_words`` words and something new."""
    def page(k: int) -> int:
        return page_of_run[bisect.bisect_right(page_starts, k) - 1]

    def chapter(k: int) -> str | None:
        j = bisect.bisect_right(chapter_starts, k) - 1
        return chapter_titles[j] if j >= 0 else None

    window = min(SENTENCE_WINDOW, words // 4)
    n, start, out = len(tokens), 0, []
    while start < n:
        end = start + words
        if end >= n:
            end = n
            if end - start < min_words or (out and end - start <= overlap):
                break
        else:
            for j in range(end - 1, max(end - window, start + overlap + 1) - 1, -1):
                if _ends_sentence(tokens[j]):
                    end = j + 1
                    break
        out.append(Passage(text=" ".join(tokens[start:end]), book=book, first_page=page(start),
                           last_page=page(end - 1), index=len(out), chapter=chapter(start)))
        if end == n:
            break
        start = end - overlap
    return out
