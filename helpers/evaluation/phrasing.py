"""Trained and unseen phrasings for the persona notebooks, whose questions have no key facts.

A question's phrasing is *trained* when it is one of the run's training prompts (normalised, see
:func:`helpers.evaluation.recall.normalise_question`) and *unseen* otherwise, as for the Mariya
probes. The persona's own questions are written by hand, so they are usually unseen; a few
questions of the training set, asked verbatim, give the trained side (:func:`with_trained`).
What is compared on each side is how much of an answer is copied from the training answers
(``ngram_overlap``: the share of its 8-word runs found there) and, in the comparison, the style
metrics: a model that recites its training answers on trained phrasings and writes on unseen
ones has memorised them, not learned to answer as the persona.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from helpers import data
from helpers.evaluation import recall
from helpers.evaluation.memorisation import MemorisationIndex, memorisation

#: the metrics the comparison splits by phrasing
COMPARISON_METRICS = ("ngram_overlap", "longest_copy_share", "tfidf", "delta")


def trained_sample(prompts: Sequence[str], n: int = 4, exclude: Sequence[str] = ()) -> list[str]:
    """Up to ``n`` distinct training prompts, spread evenly over the set (the same ones every
    time), leaving out any phrasing in ``exclude``."""
    skip = recall.trained_phrasings(exclude)
    first: dict[str, str] = {}  # normalised phrasing -> its first prompt
    for p in prompts:
        first.setdefault(recall.normalise_question(p), p)
    distinct = [p for key, p in first.items() if key and key not in skip]
    k = min(max(n, 0), len(distinct))
    return [distinct[i * len(distinct) // k] for i in range(k)]


def with_trained(questions: Sequence[str], prompts: Sequence[str], n: int = 4) -> list[str]:
    """``questions`` followed by ``n`` training prompts (:func:`trained_sample`), asked verbatim
    so that both phrasings are represented."""
    return list(questions) + trained_sample(prompts, n, exclude=questions)


def training_prompts(path: str | Path) -> list[str]:
    """The first user turn of each line of a training file (prompt/completion or messages JSONL):
    its trained phrasings. Read without :func:`helpers.data.load`'s validation and logging: the
    files are the ones a run trained on, already checked then."""
    prompts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                prompts.append(rec["prompt"] if "prompt" in rec else
                               next((m["content"] for m in rec.get("messages", []) if m["role"] == "user"), ""))
    return prompts


def split_means(values: Sequence[float], seen: Sequence[bool]) -> dict[str, float | None]:
    """``{"trained": mean, "unseen": mean}`` of the values whose question was (not) trained; nan
    values are left out, and a side with no value is ``None``."""
    if len(values) != len(seen):
        raise ValueError(f"{len(values)} values for {len(seen)} questions")
    out: dict[str, float | None] = {}
    for kind, want in zip(recall.PHRASINGS, (True, False)):
        vals = [float(v) for v, s in zip(values, seen) if bool(s) is want and not math.isnan(float(v))]
        out[kind] = sum(vals) / len(vals) if vals else None
    return out


def overlap_split(answers: Sequence[str], seen: Sequence[bool],
                  training: Sequence[str] | MemorisationIndex) -> dict[str, float | None]:
    """Mean ``ngram_overlap`` of the answers with the training answers, on trained and unseen
    phrasings separately (:func:`split_means`)."""
    index = training if isinstance(training, MemorisationIndex) else MemorisationIndex(training)
    return split_means([memorisation(a, index)["ngram_overlap"] for a in answers], seen)


def run_prompts(run_dir: str | Path | None) -> list[str] | None:
    """The training prompts of a fine-tuning run (from the data file its run.json names); None
    for no run folder or when the file is gone."""
    if run_dir is None or not (Path(run_dir) / "run.json").is_file():
        return None
    record = json.loads((Path(run_dir) / "run.json").read_text())
    path = Path(record.get("data", {}).get("path") or record.get("parameters", {}).get("data") or "")
    return training_prompts(path) if path.is_file() else None


def comparison_split(result, reference_prompts: Sequence[str], metrics: Sequence[str] = COMPARISON_METRICS):
    """One row per variant of a :class:`helpers.evaluation.compare.Comparison`: each metric's mean
    over the questions whose phrasing the variant trained on (``<metric>``) and over the others
    (``<metric>_unseen``), with how many questions each side holds. A tuned variant's trained
    phrasings are its own run's training prompts; a base model's are ``reference_prompts`` (the
    set the trained questions were taken from), so it shows what the tuned models started from."""
    import pandas as pd
    rows = {}
    for v in result.done:
        res = result.results[v.name]
        asked = list(res["prompts"]) + list(res.get("trained_prompts", []))
        scores = list(res["scores"]) + list(res.get("trained_scores", []))
        own = run_prompts(v.run_dir)
        seen = recall.is_trained(asked, reference_prompts if own is None else own)
        row = {"questions": sum(seen), "questions_unseen": len(seen) - sum(seen)}
        for m in metrics:
            split = split_means([s.get(m, math.nan) for s in scores], seen)
            row[m], row[f"{m}_unseen"] = split["trained"], split["unseen"]
        rows[v.name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")



def training_answers(dataset: data.Dataset) -> list[str]:
    """The distinct assistant turns of a training set (what a tuned model could recite)."""
    return list(dict.fromkeys(m["content"] for conv in dataset.conversations for m in conv
                              if m["role"] == "assistant"))
