"""Words and sentences: how every text metric reads a text (:func:`words`), and the English
function words that describe style and are never keywords."""

from __future__ import annotations

import re

NAN = float("nan")

#: English function words: the stylometric profile of :func:`stylometry`, and the words
#: :func:`keyword_profile` never picks as keywords.
FUNCTION_WORDS: tuple[str, ...] = (
    "a", "an", "the",
    "i", "me", "my", "we", "us", "our", "you", "your", "he", "him", "his", "she", "her",
    "it", "its", "they", "them", "their", "this", "that", "these", "those",
    "who", "whom", "whose", "which", "what",
    "of", "to", "in", "on", "at", "by", "for", "with", "from", "into", "upon", "about", "over",
    "under", "between", "through", "after", "before", "without", "within", "against", "among",
    "up", "down", "out",
    "and", "but", "or", "nor", "so", "yet", "if", "then", "than", "because", "as", "while",
    "although", "though", "when", "where", "whether",
    "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did",
    "have", "has", "had", "will", "would", "shall", "should", "can", "could", "may", "might",
    "must",
    "not", "no", "there", "here", "all", "any", "some", "each", "every", "more", "most", "other",
    "such", "only", "very", "also", "just", "too",
)
_FUNCTION_SET = frozenset(FUNCTION_WORDS)

#: Window of the moving-average type-token ratio (MATTR) in :func:`stylometry`.
TTR_WINDOW = 50

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|(?<=[.!?\u2026][\"'\u201d\u2019)\]])\s+|\n\s*\n")


def words(text: str) -> list[str]:
    """Lower-case word tokens: runs of letters and digits, joined by inner apostrophes."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def sentences(text: str) -> list[str]:
    """Sentences split after . ! ? or an ellipsis (closing quotes kept) and at blank lines;
    pieces without words are dropped. Abbreviations such as "Dr." also end a sentence."""
    parts = (p.strip() for p in _SENTENCE_END.split(text))
    return [p for p in parts if p and _WORD.search(p)]
