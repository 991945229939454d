"""What the comparison measures beside its answers, per variant, while the model is loaded:

- the recitation audit (:mod:`helpers.evaluation.recitation`) on the variant's own training
  conversations (a run's data file; for a base model the persona's V1 set), chat-wrapped as it
  was trained, so each tuned model is tested for recitation the way it learned the passages;
- the robustness probes (:mod:`helpers.evaluation.robustness`), asked with the comparison's
  system prompt and decoding like every other prompt.

:func:`summary_rows` turns a cached result into summary rows; :func:`to_card` adds the
recitation and copying figures to a run's data card (:mod:`helpers.training.datacard`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from helpers.core import paths
from helpers.evaluation import recitation, robustness
from helpers.evaluation.intervals import wilson
from helpers.models.generate import answer
from helpers.training import datacard

log = logging.getLogger(__name__)

#: passages audited at most on a stand-in (smoke mode and tests run on two CPU cores)
STANDIN_PASSAGES = 8

#: metrics the recitation audit adds to the summary, with one sentence each
RECITATION_EXPLAINED = {
    "recitation_share_verbatim": "share of sampled training passages the model continues word for word for at least 50 words when given their first 32 (with a 95% Wilson interval); lower: it learned the voice, not the text",
    "recitation_longest_run": "the longest verbatim run, in words, over those passages (64 is the most a continuation can show)",
}


def conversations(path: str | Path) -> list[dict]:
    """``{"system", "user", "passage"}`` per training example of a JSONL file (``messages`` or
    prompt/completion rows), the first example of each passage only."""
    out, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            msgs = row.get("messages") or [{"role": "user", "content": row.get("prompt", "")},
                                           {"role": "assistant", "content": row.get("completion", "")}]
            system = next((m["content"] for m in msgs if m["role"] == "system"), None)
            user = next((m["content"] for m in msgs if m["role"] == "user"), "")
            passage = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else ""
            if passage and passage not in seen:
                seen.add(passage)
                out.append({"system": system, "user": user, "passage": passage})
    return out


def training_file(variant, texts) -> Path | None:
    """The file the variant trained on (its run.json's data path), else the persona's V1 set."""
    if variant.run_dir is not None and (variant.run_dir / "run.json").is_file():
        record = json.loads((variant.run_dir / "run.json").read_text())
        raw = record.get("data", {}).get("path") or record.get("parameters", {}).get("data")
        found = paths.path(raw) if raw else None
        if found is not None and found.is_file():
            return found
    v1 = Path(texts.folder) / "v1_train.jsonl"
    return v1 if v1.is_file() else None


def recite(variant, model, tokenizer, profile, texts, *, max_passages: int) -> dict | None:
    """The recitation audit of one loaded variant, as plain data (None: no training file)."""
    source = training_file(variant, texts)
    if source is None:
        log.warning("recitation: %s has no training file to audit", variant.name)
        return None
    convs = conversations(source)
    if profile.is_standin and max_passages > STANDIN_PASSAGES:
        log.info("recitation: %d passages instead of %d on the stand-in", STANDIN_PASSAGES, max_passages)
        max_passages = STANDIN_PASSAGES
    systems = {c["system"] for c in convs}
    result = recitation.audit(model, tokenizer, [c["passage"] for c in convs], chat=True,
                              user_prompts=[c["user"] for c in convs],
                              system_prompt=next(iter(systems)) if len(systems) == 1 else None,
                              template_kwargs=profile.template_kwargs, max_passages=max_passages)
    return {**result.to_dict(), "source": source.name}


def measure(variant, model, tokenizer, profile, texts, *, index, probes: Sequence[dict] = (),
            max_passages: int = 50, answer_kw: dict | None = None, persona_name: str = "") -> dict[str, Any]:
    """``{"recitation": ..., "robustness": ...}`` for one loaded variant (each only when asked:
    ``max_passages`` > 0, ``probes`` given)."""
    out: dict[str, Any] = {}
    if max_passages:
        rec = recite(variant, model, tokenizer, profile, texts, max_passages=max_passages)
        if rec is not None:
            out["recitation"] = rec
    if probes:
        answers = answer(model, tokenizer, [p["question"] for p in probes], profile, **(answer_kw or {}))
        out["robustness"] = {"rows": robustness.score(answers, probes, author_passages=texts.training,
                                                      index=index, persona_name=persona_name)}
    return out


def summary_rows(result: dict) -> list[tuple[str, float, float, float]]:
    """``(metric, value, low, high)`` rows for the comparison's summary: the recitation share
    (Wilson interval over passages) and longest run, then the robustness metrics."""
    rows = []
    rec = result.get("recitation")
    if rec and rec["n"]:
        hits = sum(r >= rec["settings"]["min_run"] for r in rec["runs"])
        rows.append(("recitation_share_verbatim", *wilson(hits, rec["n"])))
        rows.append(("recitation_longest_run", float(rec["longest_run"]), math.nan, math.nan))
    rows += robustness.summary_rows(result.get("robustness", {}).get("rows", []))
    return rows


def explain() -> str:
    """One sentence per metric these checks add, as lines to print beside the tables."""
    return "\n".join(f"{k}: {v}." for k, v in {**RECITATION_EXPLAINED, **robustness.EXPLAINED}.items())


def plot(summary):
    """The recitation figures beside the copying score, a panel each; a sentence instead when no
    variant was audited."""
    from helpers.evaluation.summary_plots import grouped_bars
    shown = set(summary["metric"])
    if "recitation_share_verbatim" not in shown:
        return "no recitation audit (recitation_passages=0, or no training file to audit)"
    return grouped_bars(summary, [m for m in ("recitation_share_verbatim", "recitation_longest_run",
                                              "longest_copy_share", "ngram_overlap") if m in shown])


def examples(comparison, n: int = 2):
    """The longest recitations per variant: prefix, the passage's next words, the model's."""
    import pandas as pd
    rows = [{"variant": v.name, **ex} for v in comparison.done
            for ex in (comparison.results[v.name].get("recitation") or {}).get("examples", [])[:n]]
    return pd.DataFrame(rows)


def figures(result: dict) -> dict[str, Any]:
    """The recitation and copying figures of one variant's result, for its data card."""
    out: dict[str, Any] = {}
    rec = result.get("recitation")
    if rec:
        out["recitation"] = {**recitation.RecitationResult.from_dict(
            {k: v for k, v in rec.items() if k != "source"}).as_metrics(), **rec["settings"]}
    scores = result.get("scores", [])
    for name in ("longest_copy_share", "ngram_overlap"):
        vals = [s[name] for s in scores if not math.isnan(s.get(name, math.nan))]
        out.setdefault("copying", {})[name] = sum(vals) / len(vals) if vals else math.nan
    if scores:
        out["copying"]["answers"] = len(scores)
    return out


def to_card(variant, result: dict) -> None:
    """Add the variant's recitation and copying figures to its run's data card (a base model has
    no run: nothing is written)."""
    if variant.run_dir is None or not (variant.run_dir / "run.json").is_file():
        return
    datacard.add_figures(variant.run_dir, {"variant": variant.name, **figures(result)}, source="comparison")
