"""Knowledge or voice? Scoring closed-book answers against key facts, per model and split, and
the verdict on what fine-tuning taught.

Fine-tuning on an author's books reliably changes *how* a model writes; whether it also makes the
model *know* what the books say is another matter (Ovadia et al. 2023 found retrieval beats
fine-tuning for new facts; Gekhman et al. 2024 found new facts are learned slowly and raise
hallucination). This module measures it:

- :func:`score_answer`: an answer is **correct** when every key fact of its question is in it
  (after :func:`normalise`: case, accents, punctuation, and number words as digits), **don't
  know** when it is empty or says it does not know (:data:`UNCERTAIN`) without any key fact, and
  **wrong** otherwise. An optional LLM judge (``knowledge_judge``) grades the same three ways.
- :func:`summarise`: per variant and split (``trained``: questions from passages the tuned models
  trained on; ``heldout``: from chapters no model saw) the counts and the accuracy with its 95%
  Wilson interval.
- :func:`verdicts`: each tuned variant against its own base model, by :data:`VERDICT_RULE`, with
  retrieval (RAG over the books) recommended wherever the facts are not learned.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Iterable, Mapping, Sequence

from helpers.evaluation.intervals import newcombe, wilson

CORRECT, WRONG, DONT_KNOW = "correct", "wrong", "dont_know"
OUTCOMES = (CORRECT, WRONG, DONT_KNOW)
SPLITS = ("trained", "heldout")

#: phrases (normalised) that make an answer without any key fact a "don't know"
UNCERTAIN = ("i don t know", "i do not know", "don t know", "not sure", "i m not certain",
             "i am not certain", "cannot recall", "can t recall", "don t remember",
             "do not remember", "no information", "cannot answer", "can t answer", "no idea",
             "not familiar", "unable to answer", "unable to say", "i have no record", "unknown",
             "i cannot say", "i can t say", "not mentioned")

VERDICT_RULE = (
    "Learned the facts: on questions from its training chapters the tuned model is right more "
    "often than its base model, and the 95% interval of the difference (Newcombe) lies above 0. "
    "Only the voice: not that, but its answers to the comparison's prompts moved toward the author "
    "(TF-IDF similarity up or Burrows' Delta down, paired 95% interval excluding 0, and neither of "
    "the two moved away from the author by that test). Neither: "
    "neither of the two. Wherever the facts are not learned, or the tuned model still gets fewer "
    "than half of its training chapters' facts right, answer factual questions with retrieval "
    "(RAG over the books) instead of relying on the weights.")

_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_NUMBERS.update({w: str(10 * i) for i, w in enumerate(
    "thirty forty fifty sixty seventy eighty ninety".split(), start=3)})
_STOP = set("a an the of and or to in on at by for with from is was were be it its as".split())


def normalise(text: str) -> str:
    """Lower case, accents and punctuation gone, number words up to twenty (and the tens) as
    digits, single spaces: ``"Edda's  Seventeen!"`` -> ``"edda s 17"``."""
    text = re.sub("[\u2018\u2019\u02bc]", "'", text or "")   # curly apostrophes split words too
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", text.lower())
    return " ".join(_NUMBERS.get(w, w) for w in words)


def fact_found(fact: str, answer: str) -> bool:
    """A key fact is in an answer when its normalised words appear there as a run; a fact of
    several words also counts when all its content words appear (any order)."""
    f, a = normalise(fact), f" {normalise(answer)} "
    if not f:
        return False
    if f" {f} " in a:
        return True
    content = [w for w in f.split() if w not in _STOP]
    return len(content) > 1 and all(f" {w} " in a for w in content)


def uncertain(answer: str) -> bool:
    a = f" {normalise(answer)} "
    return any(f" {m} " in a for m in UNCERTAIN)


def score_answer(answer: str, key_facts: Sequence[str]) -> dict:
    """``{"outcome": correct | wrong | dont_know, "facts_found": k, "facts": n}``: correct when
    all ``n`` key facts are found, don't know when the answer is empty or uncertain and holds
    none of them, wrong otherwise (a partly right answer is wrong, with ``facts_found`` saying
    how much it had)."""
    if not key_facts:
        raise ValueError("score_answer: a question without key facts cannot be scored; make the "
                         "questions with helpers.questions.facts (every question has one or more).")
    found = sum(fact_found(f, answer) for f in key_facts)
    if found == len(key_facts):
        outcome = CORRECT
    elif not found and (not (answer or "").strip() or uncertain(answer)):
        outcome = DONT_KNOW
    else:
        outcome = WRONG
    return {"outcome": outcome, "facts_found": found, "facts": len(key_facts)}


# -- aggregation -------------------------------------------------------------------------------

def summarise(rows: Iterable[Mapping], outcome: str = "outcome"):
    """One row per variant and split from per-question rows (``variant``, ``base``,
    ``version``, ``split`` and the ``outcome`` column): ``questions``, ``correct``, ``wrong``,
    ``dont_know``, ``accuracy`` (correct / questions) with its Wilson 95% interval ``low`` /
    ``high``, and ``dont_know_rate``. Rows whose outcome is missing (a judge that did not answer)
    are left out of the counts."""
    import pandas as pd
    groups: dict[tuple, dict] = {}
    for r in rows:
        if r.get(outcome) not in OUTCOMES:
            continue
        g = groups.setdefault((r["variant"], r["split"]), {
            "variant": r["variant"], "base": r["base"], "version": r["version"],
            "split": r["split"], CORRECT: 0, WRONG: 0, DONT_KNOW: 0})
        g[r[outcome]] += 1
    out = []
    for g in groups.values():
        n = g[CORRECT] + g[WRONG] + g[DONT_KNOW]
        acc, low, high = wilson(g[CORRECT], n)
        out.append({**g, "questions": n, "accuracy": acc, "low": low, "high": high,
                    "dont_know_rate": g[DONT_KNOW] / n})
    return pd.DataFrame(out, columns=["variant", "base", "version", "split", "questions", CORRECT,
                                      WRONG, DONT_KNOW, "accuracy", "low", "high", "dont_know_rate"])


def voice_changes(delta_table) -> dict[str, dict]:
    """Variant -> ``{"improved": bool | None, "evidence": str}`` from the comparison's paired
    delta table (``helpers.evaluation.deltas.delta_table`` over ``tfidf`` and ``delta``):
    improved when TF-IDF similarity to the author rose or Burrows' Delta fell with a 95%
    interval excluding 0, and neither moved the other way by the same test (mixed evidence is not
    an improvement); None when the table has no interval for the variant."""
    out = {}
    for variant, row in delta_table.iterrows():
        parts, known, better_any, worse_any = [], False, False, False
        for metric, sign in (("tfidf", 1), ("delta", -1)):
            if (metric, "est") not in row.index or not math.isfinite(row[(metric, "low")]):
                continue
            known = True
            est, low, high = row[(metric, "est")], row[(metric, "low")], row[(metric, "high")]
            better_any |= bool(low > 0 if sign > 0 else high < 0)
            worse_any |= bool(high < 0 if sign > 0 else low > 0)
            parts.append(f"{metric} {est:+.3g} [{low:+.3g}, {high:+.3g}]")
        out[variant] = {"improved": (better_any and not worse_any) if known else None,
                        "evidence": "; ".join(parts) or "no style interval"}
    return out


def _cell(summary, variant: str, split: str):
    hit = summary[(summary["variant"] == variant) & (summary["split"] == split)]
    return None if hit.empty else hit.iloc[0]


def verdicts(summary, voice: Mapping[str, dict] | None = None):
    """One row per tuned variant (against its base model in ``summary``): the accuracy gain on
    trained-chapter and held-out questions with Newcombe 95% intervals, whether the voice moved
    (:func:`voice_changes`), the ``verdict`` ("learned the facts", "only the voice", "neither",
    or "no base model" / "no trained questions") by :data:`VERDICT_RULE`, and ``recommendation``."""
    import pandas as pd
    voice = voice or {}
    rows = []
    tuned = summary[summary["version"] != "base"].drop_duplicates("variant")
    for r in tuned.itertuples():
        base = summary[(summary["version"] == "base") & (summary["base"] == r.base)]
        base_name = base["variant"].iloc[0] if not base.empty else None
        row = {"variant": r.variant, "base": base_name or r.base}
        for split in SPLITS:
            mine = _cell(summary, r.variant, split)
            theirs = _cell(summary, base_name, split) if base_name else None
            row[f"{split}_accuracy"] = mine.accuracy if mine is not None else math.nan
            row[f"{split}_base_accuracy"] = theirs.accuracy if theirs is not None else math.nan
            gain = (newcombe(int(mine.correct), int(mine.questions), int(theirs.correct), int(theirs.questions))
                    if mine is not None and theirs is not None else (math.nan,) * 3)
            row[f"{split}_gain"], row[f"{split}_gain_low"], row[f"{split}_gain_high"] = gain
        v = voice.get(r.variant, {})
        row["voice_improved"], row["voice_evidence"] = v.get("improved"), v.get("evidence", "not measured")
        learned = row["trained_gain_low"] > 0
        if base_name is None:
            row["verdict"] = "no base model"
        elif math.isnan(row["trained_gain"]):
            row["verdict"] = "no trained questions"
        else:
            row["verdict"] = ("learned the facts" if learned else
                              "only the voice" if row["voice_improved"] else "neither")
        facts_fail = not learned or not row["trained_accuracy"] >= 0.5
        row["recommendation"] = (
            "Use retrieval (RAG over the books) for factual questions: the weights do not hold "
            "the facts reliably." if facts_fail else
            "The tuned model recalls its training chapters' facts; held-out chapters still need "
            "retrieval (RAG over the books)." if not row["heldout_gain_low"] > 0 else
            "Facts recalled on trained and held-out chapters; check a sample of answers by hand.")
        rows.append(row)
    return pd.DataFrame(rows, columns=[
        "variant", "base", "trained_accuracy", "trained_base_accuracy", "trained_gain",
        "trained_gain_low", "trained_gain_high", "heldout_accuracy", "heldout_base_accuracy",
        "heldout_gain", "heldout_gain_low", "heldout_gain_high", "voice_improved",
        "voice_evidence", "verdict", "recommendation"])


def verdict_text(table) -> str:
    """One sentence per tuned variant, from :func:`verdicts`."""
    if table.empty:
        return ("No verdict: no tuned variant beside its base model (run the fine-tuning notebooks "
                "and keep each base model among the variants).")

    def pct(x):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"
    lines = []
    for r in table.itertuples():
        if r.verdict in ("no base model", "no trained questions"):
            lines.append(f"{r.variant}: {r.verdict}, no verdict.")
            continue
        lines.append(
            f"{r.variant}: {r.verdict.upper()}. Training-chapter facts {pct(r.trained_accuracy)} "
            f"right vs {pct(r.trained_base_accuracy)} for {r.base} (gain {r.trained_gain:+.0%}, "
            f"95% interval [{r.trained_gain_low:+.0%}, {r.trained_gain_high:+.0%}]); held-out "
            f"chapters {pct(r.heldout_accuracy)} vs {pct(r.heldout_base_accuracy)}; voice: "
            f"{r.voice_evidence}. {r.recommendation}")
    return "\n".join(lines)
