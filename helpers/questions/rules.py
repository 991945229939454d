"""Questions without a model: deterministic, made from a passage's names and key words
("What does the author say about X?"). The rule source, and the fallback of the local one."""

from __future__ import annotations

import re
from collections import Counter

from helpers.books.passage import Passage

RULE_MODEL = "rule-v1"           # the rule generator's "model" in cache keys; bump when it changes

_STOP = set("""a about above after again against all also although am an and any are as at be
because been before being below between both but by can could did do does doing down during each
even ever every few for from further had has have having he her here hers herself him himself his
how i if in into is it its itself just like many may me might more most much must my myself never
no nor not now of off often on once one only or other our ours ourselves out over own perhaps
rather same she should since so some still such than that the their theirs them themselves then
there these they this those though through thus to too under until up upon us very was we were
what when where whether which while who whom whose why will with within without would yet you
your yours yourself yourselves chapter page""".split())
_QUESTION_FORMS = ("What does the author say about {t}?", "How does the author describe {t}?",
                   "What does the author tell us about {t}?", "What is the author's view of {t}?")


def _topics(text: str) -> list[str]:
    """Key phrases of a text, most frequent first (ties: first seen first): capitalised names
    not at the start of a sentence, then longer content words ("the harbour")."""
    names: Counter = Counter()
    words: Counter = Counter()
    first: dict[str, int] = {}
    pos = 0
    for sent in re.split(r"(?<=[.!?;:])\s+", text):
        toks = re.findall(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]", sent)
        j = 0
        while j < len(toks):
            tok = toks[j]
            pos += 1
            if j > 0 and tok[0].isupper() and tok.lower() not in _STOP:
                k = j + 1
                while k < len(toks):
                    if toks[k][0].isupper() and toks[k].lower() not in _STOP:
                        k += 1
                    elif (toks[k] in ("of", "de", "von") and k + 1 < len(toks)
                          and toks[k + 1][0].isupper() and toks[k + 1].lower() not in _STOP):
                        k += 2            # "Lighthouse of Varn"
                    else:
                        break
                phrase = " ".join(toks[j:k])
                phrase = phrase[:-2] if phrase.endswith("'s") else phrase
                names[phrase] += 1
                first.setdefault(phrase, pos)
                j = k
                continue
            low = tok.lower()
            if (len(low) >= 6 and low not in _STOP and tok[0].islower()
                    and not low.endswith(("ed", "ing", "ly", "'s"))):
                words[low] += 1
                first.setdefault(low, pos)
            j += 1
    rank = lambda c: sorted(c, key=lambda t: (-c[t], first[t]))  # noqa: E731
    lowered = {x.lower() for x in names}
    return rank(names) + [f"the {w}" for w in rank(words) if w not in lowered]


def rule_questions(passage: Passage, n: int) -> list[str]:
    """N distinct questions made from the passage without a model (deterministic)."""
    out: list[str] = []
    for i, t in enumerate(_topics(passage.text)):
        if len(out) == n:
            break
        out.append(_QUESTION_FORMS[i % len(_QUESTION_FORMS)].format(t=t))
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", passage.text.strip()) if s.split()]
    for s in sentences:
        if len(out) >= n:
            break
        opening = " ".join(s.split()[:8]).rstrip(".,;:!?")
        q = f'What does the author mean by "{opening}"?'
        if q not in out:
            out.append(q)
    k = 1
    while len(out) < n:
        out.append(f"What does the author write on page {passage.first_page} of {passage.book} "
                   f"(part {k})?")
        k += 1
    return out
