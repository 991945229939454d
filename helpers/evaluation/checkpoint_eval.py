"""Every per-epoch checkpoint of a run scored on the held-out chapters, cached per checkpoint in
the run folder, and the best one chosen (:func:`evaluate_run`; the rule and the pointer are in
:mod:`helpers.evaluation.checkpoints`).

Per checkpoint, with the same prompts, system prompt and sampling seed for all:

- ``bits_per_byte``: held-out perplexity as bits per byte of the held-out chapters' text
  (:func:`helpers.evaluation.perplexity.heldout_nll`; lower: the model predicts the author's
  unseen prose better);
- ``delta``: Burrows' Delta between the checkpoint's answers, pooled, and the author's passages
  (training and held-out; :mod:`helpers.evaluation.style`; lower: closer to the author's use of
  the most frequent words);
- ``copying``: the mean share of an answer's 8-word runs found verbatim in the training passages
  (``ngram_overlap``, :mod:`helpers.evaluation.memorisation`), beside ``longest_copy_share``;
- ``recitation_share``: the share of sampled training passages the checkpoint continues word for
  word for at least 50 words when given their first 32, chat-wrapped as it trained
  (:func:`helpers.evaluation.recitation.audit`), with ``recitation_longest_run``.

The answers are sampled (the family's recommended temperature, top-p and top-k, a fixed seed) to
prompts made from the held-out passages without a model (:func:`heldout_prompts`), so a
checkpoint that learned to paste training passages shows it.

A result is cached as ``<run>/checkpoint_eval/<checkpoint>-<key>.json``; the key hashes the
adapter's checksum and everything else the numbers depend on, so a rerun computes only what
changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from helpers import models
from helpers.books.passage import Passage
from helpers.core import paths
from helpers.core.files import write_json
from helpers.evaluation import audits, compare, recitation
from helpers.evaluation import cache as compare_cache
from helpers.evaluation.checkpoints import (
    DEFAULT_COPYING_CEILING,
    Checkpoint,
    CheckpointError,
    choose_best,
    list_checkpoints,
    write_best,
)
from helpers.evaluation.memorisation import MemorisationIndex
from helpers.evaluation.metrics import score_answers
from helpers.evaluation.perplexity import heldout_nll
from helpers.evaluation.style import _DeltaPool
from helpers.evaluation.text import words
from helpers.models.generate import answer
from helpers.questions.rules import rule_questions
from helpers.runtime import memory
from helpers.runtime.loading import load_model

log = logging.getLogger(__name__)

#: bumped when a checkpoint metric's computation changes: cached results made before are redone
EVAL_VERSION = 2
CACHE_FOLDER = "checkpoint_eval"

#: one sentence per metric, shown beside the table and the plot
EXPLAINED = {
    "bits_per_byte": "bits per byte: how well the checkpoint predicts the held-out chapters' "
                     "text, never trained on (lower is better).",
    "delta": "Burrows' Delta: distance between the word-frequency profile of the checkpoint's "
             "answers and the author's passages (lower is closer to the author's style).",
    "copying": "copying: the share of the answers' 8-word runs found verbatim in the training "
               "passages (lower is more of the model's own writing; the ceiling is the most a "
               "checkpoint may copy and still be chosen).",
    "recitation_share": "recitation: the share of sampled training passages the checkpoint "
                        "continues word for word for 50 words or more from their first 32 "
                        "(lower: it learned the voice, not the text).",
}


@dataclass(frozen=True)
class EvalSettings:
    """How each checkpoint is asked and scored (every value is part of the cache key)."""

    prompts: int = 4                  # prompts made from the held-out passages
    max_new_tokens: int = 128         # per sampled answer
    seed: int = 0                     # sampling seed, the same for every checkpoint
    window: int = 512                 # held-out bits per byte: tokens per forward pass
    stride: int = 256                 # ... and how far each window moves
    recitation_passages: int = 16     # training passages in the recitation audit (0: no audit; 8 at most on a stand-in)

    def check(self) -> None:
        if self.prompts < 1 or self.max_new_tokens < 1:
            raise CheckpointError(f"prompts={self.prompts}, max_new_tokens={self.max_new_tokens}: "
                                  "both must be at least 1 (defaults 4 and 128).")
        if self.recitation_passages < 0:
            raise CheckpointError(f"recitation_passages={self.recitation_passages}: use 0 (no "
                                  "recitation audit) or more (default 16).")
        if not 0 < self.stride < self.window:
            raise CheckpointError(f"stride={self.stride} must be at least 1 and below "
                                  f"window={self.window} (defaults 256 and 512).")


def heldout_prompts(passages: Sequence[str], n: int) -> list[str]:
    """``n`` questions, each made without a model from one held-out passage
    (:func:`helpers.questions.rules.rule_questions`), the passages spread evenly over the
    held-out chapters. No training example was made from these passages."""
    if not passages:
        return []
    n = min(n, len(passages))
    picks = sorted({round(i * (len(passages) - 1) / max(n - 1, 1)) for i in range(n)})
    out = []
    for i in picks:
        for q in rule_questions(Passage(passages[i], book="heldout", first_page=0, last_page=0), 3):
            if q not in out:
                out.append(q)
                break
    return out


# -- the report --------------------------------------------------------------------------------
@dataclass
class CheckpointReport:
    """Each checkpoint's metrics (``rows``, oldest first), the best one and why."""

    run_dir: Path
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    reason: str
    copying_ceiling: float
    status: dict[str, str] = field(default_factory=dict)   # checkpoint -> "cache" / "computed"
    prompts: list[str] = field(default_factory=list)

    def table(self):
        """One row per checkpoint: epoch, step, the metrics, where it came from, the best marked."""
        import pandas as pd
        cols = ("epoch", "step", "bits_per_byte", "delta", "copying", "longest_copy_share",
                "recitation_share", "recitation_longest_run")
        df = pd.DataFrame([{"checkpoint": r["checkpoint"], **{c: r.get(c) for c in cols},
                            "under ceiling": _finite(r.get("copying")) and r["copying"] <= self.copying_ceiling,
                            "best": self.best is not None and r["checkpoint"] == self.best["checkpoint"],
                            "result": self.status.get(r["checkpoint"], "")} for r in self.rows])
        return df.set_index("checkpoint")

    def answers(self):
        """The sampled answers: prompts down, checkpoints across."""
        import pandas as pd
        return pd.DataFrame({r["checkpoint"]: r["answers"] for r in self.rows},
                            index=pd.Index(self.prompts, name="prompt"))

    def explain(self) -> str:
        """One sentence per metric, then the choice."""
        shown = ("bits_per_byte", "delta", "copying",
                 *(("recitation_share",) if any("recitation_share" in r for r in self.rows) else ()))
        lines = [f"- {EXPLAINED[k]}" for k in shown]
        best = (f"Best: {self.best['checkpoint']} (epoch {_fmt(self.best.get('epoch'))}): {self.reason}."
                if self.best else f"No best checkpoint: {self.reason}")
        return "\n".join([*lines, f"Copying ceiling: {self.copying_ceiling:g}.", best])

    def plot(self, path: str | Path | None = None):
        """The metrics per epoch, the best marked, the ceiling drawn
        (:func:`helpers.evaluation.checkpoint_plots.checkpoint_plot`)."""
        from helpers.evaluation.checkpoint_plots import checkpoint_plot
        fig = checkpoint_plot(self.rows, self.best, self.copying_ceiling,
                              title=f"{self.run_dir.name}: checkpoints on the held-out chapters")
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _fmt(x: Any) -> str:
    return f"{x:g}" if _finite(x) else "?"


# -- one checkpoint ----------------------------------------------------------------------------
def _score(model, tokenizer, profile, prompts, system_prompt, settings: EvalSettings, texts,
           index: MemorisationIndex, pool: _DeltaPool, convs: Sequence[dict]) -> dict[str, Any]:
    t0 = time.time()
    answers = answer(model, tokenizer, list(prompts), profile, system_prompt=system_prompt,
                     greedy=False, seed=settings.seed, max_new_tokens=settings.max_new_tokens)
    held = heldout_nll(model, tokenizer, texts.heldout, window=settings.window, stride=settings.stride)
    scored = score_answers(answers, author_passages=texts.training, index=index)

    def mean(key):
        vals = [r[key] for r in scored if _finite(r.get(key))]
        return sum(vals) / len(vals) if vals else math.nan
    pooled = " ".join(answers)
    recited = {}
    if convs and settings.recitation_passages:
        n = settings.recitation_passages
        n = min(n, audits.STANDIN_PASSAGES) if profile.is_standin else n
        systems = {c["system"] for c in convs}
        r = recitation.audit(model, tokenizer, [c["passage"] for c in convs], chat=True,
                             user_prompts=[c["user"] for c in convs],
                             system_prompt=next(iter(systems)) if len(systems) == 1 else None,
                             template_kwargs=profile.template_kwargs, max_passages=n,
                             seed=settings.seed)
        recited = {"recitation_share": r.share_verbatim, "recitation_longest_run": r.longest_run,
                   "recitation_n": r.n}
    return {**recited, "bits_per_byte": held["bits_per_byte"], "perplexity": held["perplexity"],
            "delta": pool.delta(pooled) if words(pooled) else math.nan,
            "copying": mean("ngram_overlap"), "longest_copy_share": mean("longest_copy_share"),
            "answer_words": sum(r["words"] for r in scored), "empty": sum(r["empty"] for r in scored),
            "answers": answers, "seconds": round(time.time() - t0, 2)}


def _key(ckpt_sha: str, source: str, prompts, system_prompt, settings: EvalSettings, texts,
         training_sha: str | None) -> str:
    doc = {"adapter": ckpt_sha, "source": source, "prompts": list(prompts),
           "system_prompt": system_prompt, "settings": asdict(settings), "heldout": texts.sha(),
           "training_passages": len(texts.training), "training_file": training_sha,
           "version": EVAL_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def _training_file(record: dict) -> Path | None:
    """The file the run trained on (run.json's data path), if it is still there."""
    raw = (record.get("data") or {}).get("path") or (record.get("parameters") or {}).get("data")
    path = paths.path(raw) if raw else None
    return path if path is not None and path.is_file() else None


def _system_prompt(record: dict) -> str | None:
    """The system prompt the run trained with: its data file's first system message."""
    path = _training_file(record)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    try:
        msgs = json.loads(first).get("messages", [])
    except ValueError:
        return None
    return next((m["content"] for m in msgs if m.get("role") == "system"), None)


# -- a whole run -------------------------------------------------------------------------------
def evaluate_run(run_dir: str | Path, sets_folder: str | Path, *, model=None, tokenizer=None,
                 record=None, system_prompt: str | None = None,
                 copying_ceiling: float = DEFAULT_COPYING_CEILING,
                 settings: EvalSettings = EvalSettings()) -> CheckpointReport:
    """Score every checkpoint of ``run_dir`` on the held-out passages of ``sets_folder`` (the
    persona's training-set folder with ``heldout.json``), from the cache where it is still
    valid, choose the best (:func:`helpers.evaluation.checkpoints.choose_best` with
    ``copying_ceiling``) and record it (:func:`helpers.evaluation.checkpoints.write_best`).

    ``model``/``tokenizer``: the run's trained PEFT model still in memory (a notebook's
    ``run.model``); each checkpoint is loaded beside its adapter and removed again, so the model
    is left as it was. Without it the base model in run.json is loaded (only when a checkpoint is
    not cached) and freed afterwards. ``record``: the run's open RunRecord (see ``write_best``).
    ``system_prompt``: None takes the run's training data's own."""
    settings.check()
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else None
    if info is None:
        raise CheckpointError(f"{run_dir} has no run.json: name a run folder a fine-tuning notebook "
                              "wrote (outputs/<persona>-<recipe>-<model>).")
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise CheckpointError(
            f"{run_dir}/checkpoints holds no checkpoint with an adapter: train with per-epoch "
            "checkpoints kept (keep_checkpoints=0 keeps all; eval_steps=0 saves once per epoch).")
    texts = compare.Texts.from_sets(sets_folder)
    if not texts.heldout:
        raise CheckpointError(f"{sets_folder}/heldout.json holds no held-out passage, so the "
                              "checkpoints cannot be scored on unseen text: rebuild the sets with "
                              "a held-out fraction above 0 (the DataPrep notebook).")
    if system_prompt is None:
        system_prompt = _system_prompt(info)
    prompts = heldout_prompts(texts.heldout, settings.prompts)
    m = info.get("model") or {}
    choice = models.choose(m.get("requested") or (info.get("parameters") or {}).get("model"),
                           bool(m.get("smoke")))
    cache = run_dir / CACHE_FOLDER
    source = _training_file(info)  # the recitation audit's passages
    training_sha = hashlib.sha256(source.read_bytes()).hexdigest() if source is not None else None
    rows: list[dict[str, Any]] = []
    status: dict[str, str] = {}
    todo: list[tuple[Checkpoint, str, Path]] = []
    for c in ckpts:
        sha = compare_cache.adapter_checksum(c.path)
        key = _key(sha, choice.source(), prompts, system_prompt, settings, texts, training_sha)
        path = cache / f"{c.name}-{key}.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            status[c.name] = "cache"
            log.info("%s (epoch %s): from the cache (%s)", c.name, _fmt(c.epoch), path.name)
        else:
            rows.append({"checkpoint": c.name, "step": c.step, "epoch": c.epoch, "adapter_sha256": sha})
            todo.append((c, sha, path))
    if todo:
        if source is None and settings.recitation_passages:
            log.warning("recitation: %s's training file is gone; checkpoints scored without it", run_dir.name)
        convs = audits.conversations(source) if source is not None and settings.recitation_passages else []
        _compute(todo, rows, status, choice, model, tokenizer, prompts, system_prompt, settings, texts,
                 convs)
    best, why = choose_best(rows, copying_ceiling)
    write_best(run_dir, best, why, copying_ceiling=copying_ceiling, record=record)
    log.info("Best checkpoint of %s: %s", run_dir.name,
             f"{best['checkpoint']} ({why})" if best else why)
    return CheckpointReport(run_dir=run_dir, rows=rows, best=best, reason=why,
                            copying_ceiling=copying_ceiling, status=status, prompts=prompts)


def _compute(todo, rows, status, choice, model, tokenizer, prompts, system_prompt, settings, texts,
             convs):
    """Score the checkpoints in ``todo`` on one loaded model, each as an extra adapter."""
    index = MemorisationIndex(texts.training)
    passages = [Counter(words(p)) for p in (*texts.training, *texts.heldout)]
    author: Counter = Counter()
    for c in passages:
        author.update(c)
    pool = _DeltaPool(author, passages, 100)
    owned = model is None or not hasattr(model, "peft_config")
    if owned:  # the base model, wrapped with the first checkpoint's adapter as "default"
        model, tokenizer = load_model(choice, adapter=todo[0][0].path)
    previous = model.active_adapter
    by_name = {r["checkpoint"]: r for r in rows}
    try:
        for c, sha, path in todo:
            name = f"checkpoint_{c.step}"
            model.load_adapter(str(c.path), adapter_name=name)
            model.set_adapter(name)
            try:
                result = _score(model, tokenizer, choice.profile, prompts, system_prompt, settings,
                                texts, index, pool, convs)
            finally:
                model.set_adapter(previous)
                model.delete_adapter(name)
            row = by_name[c.name]
            row.update(compare._plain(result))
            write_json(path, row)
            status[c.name] = "computed"
            log.info("%s (epoch %s): bits/byte %.3f, Delta %.3f, copying %.3f in %.0f s", c.name,
                     _fmt(c.epoch), row["bits_per_byte"], row["delta"], row["copying"], row["seconds"])
    finally:
        if owned:
            del model
            memory.free_memory()
