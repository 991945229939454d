"""Running the "knowledge or voice?" check beside the model comparison: every variant of a
:class:`helpers.evaluation.compare.Comparison` answers closed-book fact questions (no book in the
prompt; the comparison's system prompt and decoding), one variant at a time, each cached like the
comparison's phases (``helpers.evaluation.cache``, under a key over the questions, settings and
adapter), so a rerun loads nothing. Scores are computed from the cached answers every time
(:mod:`helpers.evaluation.knowledge`), so a scoring change never needs the models again.

:func:`questions` makes the balanced question set (N from trained chapters, N from held-out
ones) with the persona's question source; :func:`run` answers them; :class:`Knowledge` holds
the tables, the plot and the verdict.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from helpers import models
from helpers.core import paths
from helpers.core.files import write_json
from helpers.data import prep as dataprep
from helpers.evaluation import cache as compare_cache
from helpers.evaluation import knowledge
from helpers.evaluation.compare import Comparison, Settings, Variant, _plain
from helpers.evaluation.deltas import delta_table
from helpers.evaluation.plot_common import _figure
from helpers.models.generate import answer
from helpers.questions import facts
from helpers.questions.facts import FactQuestion
from helpers.runtime import memory
from helpers.runtime.loading import load_model

log = logging.getLogger(__name__)

#: bumped when how the answers are made changes: cached answers made before are recomputed
KNOWLEDGE_VERSION = 1
#: answer length cap when the comparison sets none: a fact is a few words (as for fact recall)
MAX_NEW_TOKENS = 64
STYLE_METRICS = ("tfidf", "delta")


def resolve_source(persona, source: str | None, smoke: bool | None) -> str:
    """``source`` when given; else ``rule`` in smoke mode (nothing paid, nothing downloaded) and
    the persona's ``qa_source`` otherwise."""
    if source is not None:
        return source
    return "rule" if models.smoke_mode(smoke) else persona.data.qa_source


def questions(persona, folder: str | Path, n: int = 20, *, source: str | None = None,
              smoke: bool | None = None, model: str | None = None,
              cache_path: str | Path | None = None, progress: bool = True, **api) -> list[FactQuestion]:
    """``n`` fact questions from the trained passages of the training-set ``folder`` and ``n``
    from its held-out passages (:func:`helpers.questions.facts.balanced`). The source is
    :func:`resolve_source`'s; ``local`` loads ``model`` (the base model of the comparison) to
    ask; ``anthropic`` uses the persona's ``qa_model``, ``budget_usd`` and ``concurrency``.
    Model replies are cached in ``cache_path`` (default ``<folder>/facts.jsonl``)."""
    source = resolve_source(persona, source, smoke)
    sets = facts.passages_from_sets(folder)
    kw: dict = {"cache_path": Path(cache_path) if cache_path else Path(folder) / "facts.jsonl"}
    if source == "local":
        if not model:
            raise facts.QAConfigError("knowledge_source='local' needs a model to ask: list a base "
                                      "model among the comparison's variants.")
        kw["local_model"] = dataprep.local_question_model("local", model, smoke)
    elif source == "anthropic":
        d = persona.data
        kw.update(model=d.qa_model, budget_usd=d.budget_usd, concurrency=d.concurrency, progress=progress)
    return facts.balanced(sets, n, source=source, **{**kw, **api})


def fingerprint(variant: Variant, settings: Settings, questions_: Sequence[FactQuestion],
                system_prompt: str | None) -> dict:
    """Everything a variant's cached answers depend on (not the key facts: scoring reads them)."""
    choice = models.choose(variant.model, variant.smoke)
    return {"variant": variant.name, "model": choice.profile.name, "source": choice.source(),
            "adapter": compare_cache.adapter_checksum(variant.adapter),
            "questions": [q.question for q in questions_], "system_prompt": system_prompt,
            "decoding": settings.decoding, "seed": settings.seed,
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS,
            "knowledge_version": KNOWLEDGE_VERSION}


def evaluate(variant: Variant, questions_: Sequence[FactQuestion], *, system_prompt: str | None,
             settings: Settings) -> dict:
    """Load one variant, answer every question without the book, free it."""
    choice = models.choose(variant.model, variant.smoke)
    t0 = time.time()
    model, tokenizer = load_model(choice, adapter=variant.adapter)
    try:
        answers = answer(model, tokenizer, [q.question for q in questions_], choice.profile,
                         system_prompt=system_prompt, greedy=settings.decoding == "greedy",
                         max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS, seed=settings.seed)
    finally:
        del model
        memory.free_memory()
    return _plain({"questions": [q.question for q in questions_], "answers": answers,
                   "seconds": time.time() - t0})


def run(comparison: Comparison, questions_: Sequence[FactQuestion], *,
        cache_dir: str | Path | None = None, on_event: Callable[[str], None] | None = None,
        grades: dict | None = None) -> "Knowledge":
    """Every variant of the comparison that has its model (a missing adapter is skipped, as
    there) answers ``questions_``; each from the cache when its entry is still valid."""
    if not questions_:
        raise ValueError("No fact questions: the training-set folder gave none (set "
                         "knowledge_questions to 1 or more, and check the folder has passages).")
    cache_dir = Path(cache_dir) if cache_dir else paths.work_dir() / "comparison_cache_all_models"
    say = on_event or log.info
    system_prompt = comparison.system_prompt
    answers, status = {}, {}
    ready = [v for v in comparison.variants if v.ready]
    for i, v in enumerate(ready, 1):
        head = f"[{i}/{len(ready)}] {v.name}"
        key = compare_cache.key_for(f"knowledge {v.name}",
                                    fingerprint(v, comparison.settings, questions_, system_prompt))
        cached = compare_cache.load(cache_dir, key)
        if cached is not None:
            answers[v.name], status[v.name] = cached["answers"], "cache"
            say(f"{head}: fact answers reused ({key})")
            continue
        result = evaluate(v, questions_, system_prompt=system_prompt, settings=comparison.settings)
        compare_cache.save(cache_dir, key, result)
        answers[v.name], status[v.name] = result["answers"], "computed"
        say(f"{head}: {len(questions_)} fact answers in {result['seconds']:.0f} s; cached as {key}")
    return Knowledge(variants=ready, answers=answers, status=status, questions=list(questions_),
                     comparison=comparison, grades=grades or {})


@dataclass
class Knowledge:
    """The answers of every variant to the fact questions, and what they add up to."""

    variants: list[Variant]
    answers: dict[str, list[str]]               # variant name -> one answer per question
    status: dict[str, str]                      # variant name -> "cache" or "computed"
    questions: list[FactQuestion]
    comparison: Comparison | None = None        # for the voice side of the verdict
    grades: dict = field(default_factory=dict)  # (variant, question index) -> the judge's grade

    def rows(self) -> list[dict]:
        out = []
        for v in self.variants:
            for i, (q, a) in enumerate(zip(self.questions, self.answers.get(v.name, []))):
                out.append({"variant": v.name, "base": v.base, "version": v.version, "split": q.split,
                            "question_index": i, "question": q.question,
                            "key_facts": "; ".join(q.key_facts), "answer": a,
                            **knowledge.score_answer(a, q.key_facts),
                            "judge": self.grades.get((v.name, i))})
        return out

    def per_question(self):
        """Every answer with its question, key facts, outcome (by key facts) and judge grade."""
        import pandas as pd
        return pd.DataFrame(self.rows())

    def summary(self, by: str = "outcome"):
        """Per variant and split: counts, accuracy and its Wilson 95% interval;
        ``by="judge"``: from the LLM judge's grades instead of the key facts."""
        return knowledge.summarise(self.rows(), outcome=by)

    def table(self, by: str = "outcome"):
        """The summary for display: one row per variant, accuracy [low, high] per split."""
        import pandas as pd
        s = self.summary(by)
        rows = {}
        for r in s.itertuples():
            row = rows.setdefault(r.variant, {})
            row[f"{r.split}: correct / wrong / don't know"] = f"{r.correct} / {r.wrong} / {r.dont_know}"
            row[f"{r.split}: accuracy"] = f"{r.accuracy:.0%} [{r.low:.0%}, {r.high:.0%}]"
        return pd.DataFrame.from_dict(rows, orient="index").reindex(
            [v.name for v in self.variants if v.name in rows])

    def voice(self) -> dict[str, dict]:
        """Whether each tuned variant's answers to the comparison prompts moved toward the author."""
        if self.comparison is None or not self.comparison.done:
            return {}
        per_prompt = self.comparison.per_prompt()
        if per_prompt.empty or not set(STYLE_METRICS) <= set(per_prompt.columns):
            return {}
        return knowledge.voice_changes(delta_table(per_prompt, list(STYLE_METRICS)))

    def verdicts(self, by: str = "outcome"):
        return knowledge.verdicts(self.summary(by), self.voice())

    def verdict_text(self, by: str = "outcome") -> str:
        return knowledge.verdict_text(self.verdicts(by))

    def questions_table(self):
        import pandas as pd
        return pd.DataFrame([{"split": q.split, "question": q.question, "key facts": "; ".join(q.key_facts),
                              "source": q.source, "chapter": q.chapter} for q in self.questions])

    def plot(self, by: str = "outcome"):
        """Stacked bars per variant and split: shares correct / wrong / don't know, with the
        accuracy's Wilson interval as an error bar."""
        s = self.summary(by)
        fig, axes = _figure(1, len(knowledge.SPLITS), figsize=(5 + 1.2 * len(self.variants), 3.6), sharey=True)
        colours = {knowledge.CORRECT: "#2a9d8f", knowledge.WRONG: "#e76f51", knowledge.DONT_KNOW: "#bdbdbd"}
        for ax, split in zip(axes[0], knowledge.SPLITS):
            part = s[s["split"] == split]
            names = list(part["variant"])
            bottom = [0.0] * len(names)
            for outcome in knowledge.OUTCOMES:
                share = list(part[outcome] / part["questions"])
                ax.bar(names, share, bottom=bottom, color=colours[outcome],
                       label=outcome.replace("dont_know", "don't know"))
                bottom = [b + x for b, x in zip(bottom, share)]
            acc = part["accuracy"].to_numpy()
            ax.errorbar(names, acc, yerr=[acc - part["low"].to_numpy(), part["high"].to_numpy() - acc],
                        fmt="none", ecolor="black", capsize=4)
            ax.set_title(f"{split} chapters" + ("" if names else " (no questions)"))
            ax.set_ylim(0, 1)
            ax.tick_params(axis="x", rotation=30)
        axes[0][0].set_ylabel("share of questions")
        axes[0][-1].legend(loc="upper right", fontsize=8)
        return fig

    def save(self, folder: str | Path) -> Path:
        """knowledge.json (questions, summary, verdicts) and knowledge_per_question.csv."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.per_question().to_csv(folder / "knowledge_per_question.csv", index=False)
        verdicts = self.verdicts()

        def plain(frame):
            return json.loads(frame.to_json(orient="records"))
        doc = {"questions": [q.to_dict() for q in self.questions], "status": self.status,
               "verdict_rule": knowledge.VERDICT_RULE, "summary": plain(self.summary()),
               "verdicts": plain(verdicts),
               "variants": [{**asdict(v), "run_dir": str(v.run_dir or "")} for v in self.variants]}
        if self.grades:
            doc["summary_judge"] = plain(self.summary("judge"))
        return write_json(folder / "knowledge.json", doc)

