"""Line patterns of book text: page numbers, chapter and matter headings, contents and index
lines, copyright signals, sentence ends and hyphenated line ends.

Shared by the steps of :mod:`helpers.books.pdf` (cleaning, headings, front/back matter, prose,
chunking) and by the sample-book typesetter.
"""

from __future__ import annotations

import re

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\ufeff]")
DIGITS = re.compile(r"\d+")
ROMAN = r"(?=[mdclxvi])m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})"
# A line that is only a page number: "17", "xii", "Page 17", "17 of 300", "- 17 -".
PAGE_NUMBER = re.compile(
    rf"(?:page\s+)?(?:\d{{1,4}}|{ROMAN})(?:\s*(?:of|/)\s*\d{{1,4}})?"
    r"|[-\u2013\u2014]\s*\d{1,4}\s*[-\u2013\u2014]", re.I)
NUM_WORDS = ("one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
             "fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|"
             "seventy|eighty|ninety|hundred")
# "Chapter 3", "CHAPTER THREE", "Part II: The Road", "Chapter Twenty-One. Home"
CHAPTER_LINE = re.compile(
    r"(?:chapter|part|book)\s+"
    rf"(?:\d{{1,3}}|[ivxlc]{{1,7}}|(?:{NUM_WORDS})(?:[\s-](?:{NUM_WORDS}))*)"
    r"(?!\w)\s*[:.\-\u2013\u2014]?\s*(?P<title>.*)", re.I)
NAMED_CHAPTER = re.compile(
    r"(?:prologue|epilogue|introduction|preface|foreword|afterword|conclusion|interlude)"
    r"(?!\w)\s*[:.\-\u2013\u2014]?\s*(?P<title>.*)", re.I)
# Headings of front and back matter: they split the text but are not chapters of the body.
MATTER_LINE = re.compile(
    r"(?:table of )?contents|index|copyright(?: page)?|dedication|title(?: page)?|cover|"
    r"half[- ]title|acknowledge?ments|about the authors?|also by\b.{0,60}", re.I)
CONTENTS = re.compile(r"(?:table of )?contents", re.I)
INDEX = re.compile(r"(?:\w+ )?index(?: of \w+)?", re.I)    # "Index", "Concept Index"
MD_HEADING = re.compile(r"(#{1,6})\s+(.*?)(?:\s+#+)?\s*")
# A title that ends in dot leaders and a page number: a contents line, not a heading. (Contents
# lines without leaders, "Chapter 1 The Bench 4", are caught as a run of headings instead.)
PAGE_TAIL = re.compile(r"(?:\.{2,}|(?:\.\s){2,})\s*\d{1,4}\s*$")
# Contents lines: "Chapter 1: The Bench ...... 5", a dot-leader line, a lone page number.
TOC_ENTRY = re.compile(r".*(?:\.{2,}|(?:\.\s){2,}|\s)\d{1,4}|[.\s]*\.{3,}[.\s]*|\d{1,4}")
# Index lines: "apprentice, 12, 45-47" (and wrapped continuations "88, 102").
INDEX_ENTRY = re.compile(
    r"(?:[^\d\W].{0,80}?[,\s]\s*)?\d{1,4}(?:\s*[-\u2013]\s*\d{1,4})?"
    r"(?:\s*[,;]\s*\d{1,4}(?:\s*[-\u2013]\s*\d{1,4})?)*\.?")
COPYRIGHT_SIGNALS = [re.compile(p, re.I) for p in (
    r"copyright|\u00a9|\(c\)\s*\d{4}", r"all rights reserved", r"\bisbn\b",
    r"first (?:published|edition|printing)",
    r"printed in|published by|library of congress|catalogu?e record|cataloging")]
DEDICATION = re.compile(r"(?:for|to|dedicated to|in (?:loving )?memory of)\b", re.I)
SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*$")
# Hyphenation at a line end: a letter, a hyphen (or soft hyphen), the line break, then a
# lowercase letter. "Jean-" + "Paul" keeps its hyphen (capital after the break).
# (The look-behind comes after the literal "-\n" so the search is fast.)
LINE_END_HYPHEN = re.compile(
    r"[-\u00ad]\n(?<=[^\W\d_][-\u00ad]\n)(?=[a-z\u00df-\u00f6\u00f8-\u00ff])")
LINE_END_HYPHEN_KEEP = re.compile(r"-\n(?<=[^\W\d_]-\n)(?=[A-Z])")
# Cheap test before the heading patterns: the first word a heading line can start with.
HEADING_START = re.compile(
    r"(?:chapter|part|book|prologue|epilogue|introduction|preface|foreword|afterword|conclusion|"
    r"interlude|table|contents|index|copyright|dedication|title|cover|half|acknowledg|about|also)",
    re.I)
