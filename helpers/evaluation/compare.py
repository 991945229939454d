"""The AllModels comparison: every base and tuned variant asked the same prompts, with the same
system prompt and decoding, scored by one computation per metric, and cached per variant.

Phases per variant: load the model (plus adapter), generate, score (held-out perplexity with the
model; text metrics from the answers), free the memory, write
``<cache_dir>/<key>_results.pkl``, next variant. The key hashes everything the result depends on
(prompts, system prompt, decoding, adapter checksum, held-out text, metric settings), so a rerun
reuses exactly the entries that are still valid and a change is never served from the cache.

A variant is one line: ``"qwen3-14b"`` (the base model), ``"qwen3-14b:v2"`` (the run the persona's
V2 notebook writes by default) or a run folder (anything with ``run.json`` and ``adapter/``); a run
followed by ``@best`` or ``@checkpoint-<step>`` is that run's best or named per-epoch checkpoint
(:mod:`helpers.evaluation.checkpoints`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers import models
from helpers.core import paths
from helpers.core.paths import ROOT
from helpers.evaluation import audits, checkpoints, metrics
from helpers.evaluation import cache as compare_cache
from helpers.models.generate import answer
from helpers.runtime import memory
from helpers.runtime.loading import load_model

log = logging.getLogger(__name__)

#: bumped when a metric's computation changes: cached entries made before are recomputed
METRICS_VERSION = 1

#: general questions whose answers fine-tuning on a persona should leave alone (retention check)
GENERAL_QUESTIONS = (
    "What is the capital of France?",
    "How many days are there in a week?",
    "What do plants need to grow?",
    "What is two plus three?",
    "Name a colour of the rainbow.",
    "What is water made of?",
)

#: per-answer metrics shown in the summary, in display order
ANSWER_METRICS = ("words", "empty_rate", "tfidf", "delta", "mean_sentence_words", "type_token_ratio",
                  "longest_copy_share", "ngram_overlap")


class CompareError(ValueError):
    """A variant, run folder or setting of the comparison is wrong; the message says the fix."""


@dataclass(frozen=True)
class Variant:
    """One model in the comparison."""

    name: str                  # what tables and plots call it, e.g. "Qwen3-14B V2"
    model: str                 # registry name of the model that is loaded
    version: str               # "base", "V1", "V2", ...
    base: str                  # display name of its base model (what deltas are taken from)
    run_dir: Path | None = None
    smoke: bool = False
    asked_for: str = ""        # the model the run asked for (differs after an OOM fallback)
    adapter_dir: Path | None = None  # one of the run's checkpoints instead of its final adapter

    @property
    def adapter(self) -> Path | None:
        return self.adapter_dir or (self.run_dir / "adapter" if self.run_dir else None)

    @property
    def ready(self) -> bool:
        return self.adapter is None or (self.adapter / "adapter_config.json").is_file()


@dataclass(frozen=True)
class Settings:
    """What every model is asked with. ``system_prompt`` is ``"persona"`` (the persona's prompt
    for every model) or ``"none"`` (no system prompt for any): never one for base and another for
    tuned models."""

    system_prompt: str = "persona"
    decoding: str = "greedy"             # greedy or sampled (the family's recommended settings)
    max_new_tokens: int | None = None    # None: the family's default
    seed: int = 0
    window: int = 512                    # held-out perplexity: tokens per forward pass
    stride: int = 256                    # ... and how far each window moves
    retention: bool = True               # also ask GENERAL_QUESTIONS
    recitation: int = 50                 # training passages audited for verbatim recitation (0: off)

    def check(self) -> None:
        if self.system_prompt not in ("persona", "none"):
            raise CompareError(f"system_prompt={self.system_prompt!r}: use 'persona' (the persona's "
                               "prompt for every model) or 'none' (no system prompt for any).")
        if self.decoding not in ("greedy", "sampled"):
            raise CompareError(f"decoding={self.decoding!r}: use 'greedy' or 'sampled'.")
        if not 0 < self.stride < self.window:
            raise CompareError(f"stride={self.stride} must be at least 1 and below window={self.window} "
                               "(windows overlap so that every scored token has context).")


# -- variants ----------------------------------------------------------------------------------
def _display(model: str) -> str:
    try:
        return models.get_profile(model).display_name
    except models.UnknownModelError:
        return model


def variant_from_run(run_dir: str | Path, name: str | None = None) -> Variant:
    """A tuned variant from a run folder: its run.json says which model ran (after any
    out-of-memory fallback) and with which recipe."""
    run_dir = paths.path(run_dir)
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise CompareError(f"{run_dir} has no run.json: name a run folder a fine-tuning notebook "
                           "wrote (outputs/<persona>-<recipe>-<model>), or train it first.")
    record = json.loads(record_path.read_text())
    params, model_info = record.get("parameters", {}), record.get("model", {})
    asked = params.get("model") or model_info.get("requested")
    ran = model_info.get("requested") or asked
    version = str(params.get("recipe") or "tuned").upper()
    return Variant(name=name or f"{_display(asked)} {version}", model=ran, version=version,
                   base=_display(ran), run_dir=run_dir, smoke=bool(model_info.get("smoke")),
                   asked_for=asked)


def variants(persona, specs: Sequence[str], *, smoke: bool | None = None) -> list[Variant]:
    """Variants from one-line specs: ``"qwen3-14b"`` (base), ``"qwen3-14b:v2"`` (the run the
    persona's V2 notebook writes by default), or a run folder path; ``@best`` or
    ``@checkpoint-<step>`` after a run picks that checkpoint (:func:`checkpoints.at_checkpoint`)."""
    out, seen = [], set()
    for spec in specs:
        spec, selector = checkpoints.split_spec(str(spec))
        if "/" in spec or (ROOT / spec).is_dir():
            v = variant_from_run(spec)
        else:
            model, _, recipe = spec.partition(":")
            choice = models.choose(model, smoke)  # raises UnknownModelError listing the names
            if recipe:
                run_dir = paths.run_dir(f"{persona.slug}-{recipe.lower()}", choice.requested.name, choice.smoke)
                if (run_dir / "run.json").is_file():
                    v = variant_from_run(run_dir)
                else:
                    v = Variant(name=f"{_display(model)} {recipe.upper()}", model=model,
                                version=recipe.upper(), base=_display(model), run_dir=run_dir,
                                smoke=choice.smoke, asked_for=model)
            else:
                v = Variant(name=_display(model), model=model, version="base", base=_display(model),
                            smoke=choice.smoke, asked_for=model)
        v = checkpoints.at_checkpoint(v, selector) if selector else v
        if v.name in seen:
            raise CompareError(f"Two variants are called {v.name!r}: list each model once.")
        seen.add(v.name)
        out.append(v)
    return out


def default_output_dir(persona, smoke: bool | None = None) -> Path:
    """``outputs/comparison-<Persona>``, plus ``-smoke`` in smoke mode."""
    return paths.work_dir() / "outputs" / (f"comparison-{persona.slug}" + ("-smoke" if models.smoke_mode(smoke) else ""))


# -- reference texts ---------------------------------------------------------------------------
@dataclass
class Texts:
    """The author's text as the comparison needs it: held-out passages (never trained on) for
    perplexity, training passages for memorisation and the author's style."""

    heldout: list[str]
    training: list[str]
    folder: Path

    @classmethod
    def from_sets(cls, folder: str | Path) -> "Texts":
        folder = Path(folder)
        held = json.loads((folder / "heldout.json").read_text())
        heldout = [p["text"] for p in held.get("heldout", [])]
        training = []
        with open(folder / "v1_train.jsonl", encoding="utf-8") as f:
            for line in f:
                conv = json.loads(line)["messages"]
                training.append(conv[-1]["content"])
        training = list(dict.fromkeys(training))
        leak = set(heldout) & set(training)
        if leak:
            raise CompareError(f"{len(leak)} held-out passage(s) of {folder} are in its training set: "
                               "perplexity on them would flatter the tuned models. Rebuild the sets "
                               "(delete the folder's *_train.jsonl and heldout.json).")
        if not heldout:
            log.warning("%s holds no held-out passages: perplexity will be missing", folder)
        return cls(heldout=heldout, training=training, folder=folder)

    def sha(self) -> str:
        import hashlib
        return hashlib.sha256("\x00".join(self.heldout).encode()).hexdigest()[:16]


def leaked(variant: Variant, texts: Texts) -> int | None:
    """How many held-out passages the variant's training file contains (None: not a run, or its
    data file is gone). Anything above 0 makes its perplexity meaningless."""
    if variant.run_dir is None or not (variant.run_dir / "run.json").is_file():
        return None
    record = json.loads((variant.run_dir / "run.json").read_text())
    path = Path(record.get("data", {}).get("path") or record.get("parameters", {}).get("data") or "")
    if not path.is_file():
        return None
    held = set(texts.heldout)
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            for m in row.get("messages", []):
                n += m.get("content") in held
            n += row.get("completion") in held
    return n


# -- cache key ---------------------------------------------------------------------------------
def fingerprint(variant: Variant, settings: Settings, prompts: Sequence[str],
                system_prompt: str | None, texts: Texts, trained_prompts: Sequence[str] = (),
                probes: Sequence[dict] = ()) -> dict[str, Any]:
    """Everything a variant's cached result depends on."""
    choice = models.choose(variant.model, variant.smoke)
    extra = {"trained_prompts": list(trained_prompts)} if trained_prompts else {}  # older keys stay valid
    extra |= {"probes": list(probes)} if probes else {}
    return {"variant": variant.name, "model": choice.profile.name, "source": choice.source(),
            "adapter": compare_cache.adapter_checksum(variant.adapter),
            "prompts": list(prompts), "system_prompt": system_prompt,
            "settings": asdict(settings), "heldout": texts.sha(),
            "training_passages": len(texts.training), "metrics_version": METRICS_VERSION,
            "general_questions": list(GENERAL_QUESTIONS) if settings.retention else [], **extra}


# -- one variant -------------------------------------------------------------------------------
def _variant_dict(v: Variant) -> dict:
    """A variant as plain data (its folders as text; "" where unset)."""
    return {**asdict(v), "run_dir": str(v.run_dir or ""), "adapter_dir": str(v.adapter_dir or "")}


def _plain(x: Any) -> Any:
    """numpy scalars and tuples to plain Python, for the cache."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        return x.item()
    return x


def evaluate(variant: Variant, *, prompts: Sequence[str], system_prompt: str | None,
             settings: Settings, texts: Texts, index: "metrics.MemorisationIndex",
             trained_prompts: Sequence[str] = (), probes: Sequence[dict] = ()) -> dict[str, Any]:
    """Load, generate, score and free one variant; returns its plain-data result. The answers to
    ``trained_prompts`` (training questions asked verbatim) are kept apart from the others, for
    :func:`helpers.evaluation.phrasing.comparison_split` only."""
    choice = models.choose(variant.model, variant.smoke)
    seconds: dict[str, float] = {}
    t0 = time.time()
    model, tokenizer = load_model(choice, adapter=variant.adapter)
    seconds["load"] = time.time() - t0
    try:
        t0 = time.time()
        raw: list[str] = []
        kw = dict(system_prompt=system_prompt, greedy=settings.decoding == "greedy",
                  max_new_tokens=settings.max_new_tokens, seed=settings.seed)
        answers = answer(model, tokenizer, list(prompts) + list(trained_prompts), choice.profile, raw=raw, **kw)
        answers, trained_answers = answers[:len(prompts)], answers[len(prompts):]
        del raw[len(prompts):]
        general = (answer(model, tokenizer, list(GENERAL_QUESTIONS), choice.profile, **kw)
                   if settings.retention else [])
        seconds["generate"] = time.time() - t0
        t0 = time.time()
        heldout = (metrics.heldout_nll(model, tokenizer, texts.heldout, window=settings.window,
                                       stride=settings.stride) if texts.heldout else {})
        seconds["perplexity"] = time.time() - t0
        t0 = time.time()  # recitation audit and robustness probes (helpers.evaluation.audits)
        extra = audits.measure(variant, model, tokenizer, choice.profile, texts, index=index, probes=probes,
                               max_passages=settings.recitation, answer_kw=kw, persona_name=system_prompt or "")
        seconds["audits"] = time.time() - t0
    finally:
        del model
        memory.free_memory()
    t0 = time.time()
    scores = metrics.score_answers(answers, author_passages=texts.training, index=index)
    trained = ({"trained_prompts": list(trained_prompts), "trained_answers": trained_answers,
                "trained_scores": metrics.score_answers(trained_answers, author_passages=texts.training,
                                                        index=index)} if trained_prompts else {})
    seconds["score"] = time.time() - t0
    return _plain({"variant": _variant_dict(variant),
                   "ran_as": choice.describe(), "prompts": list(prompts), "answers": answers,
                   "raw": raw, "general_answers": general, "heldout": heldout, "scores": scores,
                   "seconds": seconds, **trained, **extra})


# -- the whole comparison ----------------------------------------------------------------------
@dataclass
class Comparison:
    variants: list[Variant]
    results: dict[str, dict]                 # variant name -> cached/computed result
    status: dict[str, str]                   # variant name -> "cache", "computed", "missing"
    settings: Settings
    texts: Texts
    prompts: list[str]
    system_prompt: str | None
    keywords_reference: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[Variant]:
        return [v for v in self.variants if v.name in self.results]

    # -- frames ------------------------------------------------------------------------------
    def per_prompt(self):
        """One row per variant and prompt: the answer and every per-answer metric."""
        import pandas as pd
        rows = []
        for v in self.done:
            res = self.results[v.name]
            for i, (prompt, ans, score) in enumerate(zip(res["prompts"], res["answers"], res["scores"])):
                rows.append({"variant": v.name, "base": v.base, "version": v.version,
                             "prompt_index": i, "prompt": prompt, "answer": ans, **score})
        return pd.DataFrame(rows)

    def summary(self):
        """Long table: variant, base, version, metric, value, low, high (95% bootstrap over
        prompts; held-out perplexity and retention have no interval)."""
        import pandas as pd
        rows = []
        for v in self.done:
            res = self.results[v.name]
            for name, (est, lo, hi) in metrics.summarise(res["scores"]).items():
                name = "empty_rate" if name == "empty" else name
                rows.append((v.name, v.base, v.version, name, est, lo, hi))
            for name in ("perplexity", "bits_per_byte"):
                if name in res["heldout"]:
                    rows.append((v.name, v.base, v.version, name, res["heldout"][name], math.nan, math.nan))
            keep = self.retention_score(v)
            if keep is not None:
                rows.append((v.name, v.base, v.version, "retention", keep, math.nan, math.nan))
            rows += [(v.name, v.base, v.version, *r) for r in audits.summary_rows(res)]  # recitation, robustness
        return pd.DataFrame(rows, columns=["variant", "base", "version", "metric", "value", "low", "high"])

    def retention_score(self, v: Variant) -> float | None:
        """Mean word-overlap F1 between a tuned variant's answers to general questions and its
        base model's (1.0: unchanged). None for base models or when the base is not compared."""
        if v.version == "base" or not self.settings.retention:
            return None
        base = next((b for b in self.done if b.version == "base" and b.base == v.base), None)
        if base is None:
            return None
        a, b = self.results[v.name]["general_answers"], self.results[base.name]["general_answers"]
        return sum(_overlap_f1(x, y) for x, y in zip(a, b)) / max(len(a), 1)

    def retention(self):
        """General questions: each variant's answer side by side (the retention check)."""
        import pandas as pd
        if not self.settings.retention:
            return pd.DataFrame()
        data = {v.name: self.results[v.name]["general_answers"] for v in self.done}
        return pd.DataFrame(data, index=pd.Index(GENERAL_QUESTIONS, name="question"))

    def keywords(self, top_k: int = 15):
        """Keyword rates per 1,000 answer words; the keywords are the author's most frequent
        content words, the same columns for every variant."""
        import pandas as pd
        profiles = {v.name: metrics.keyword_profile(self.results[v.name]["answers"], None, top_k=top_k,
                                                    reference=self.texts.training)
                    for v in self.done}
        return pd.DataFrame(profiles).T

    def answers(self) -> dict[str, list[str]]:
        return {v.name: list(self.results[v.name]["answers"]) for v in self.done}

    def bases(self) -> dict[str, str]:
        """Variant name -> the base model it is compared with (what ran, after any fallback)."""
        return {v.name: v.base for v in self.done}

    def answers_table(self, n: int | None = None):
        """Prompts down, variants across: every answer, empty ones shown as (empty)."""
        import pandas as pd
        data = {v.name: [a if a.strip() else "(empty)" for a in self.results[v.name]["answers"]]
                for v in self.done}
        df = pd.DataFrame(data, index=pd.Index(self.prompts, name="prompt"))
        return df.head(n) if n else df

    def table(self):
        """The summary as one row per variant: value [low, high]."""
        s = self.summary()
        if s.empty:
            return s

        def fmt(r):
            if math.isnan(r.value):
                return "n/a"
            text = f"{r.value:.3g}"
            return text if math.isnan(r.low) else f"{text} [{r.low:.3g}, {r.high:.3g}]"
        s = s.assign(cell=s.apply(fmt, axis=1))
        wide = s.pivot(index="variant", columns="metric", values="cell")
        order = [m for m in (*ANSWER_METRICS, "perplexity", "bits_per_byte", "retention")
                 if m in wide.columns]
        wide = wide[order + [c for c in wide.columns if c not in order]]
        return wide.reindex([v.name for v in self.done])

    def variants_table(self):
        """Which variants ran, from where, and whether their result came from the cache."""
        import pandas as pd
        rows = []
        for v in self.variants:
            res = self.results.get(v.name, {})
            rows.append({"variant": v.name, "version": v.version, "model loaded": v.model,
                         "asked for": v.asked_for or v.model,
                         "run folder": str(v.run_dir.relative_to(ROOT)) if v.run_dir and ROOT in v.run_dir.parents
                         else str(v.run_dir or ""),
                         "result": self.status.get(v.name, ""),
                         "held-out leaked": leaked(v, self.texts),
                         "seconds": round(sum(res.get("seconds", {}).values()), 1) if res else None})
        return pd.DataFrame(rows).set_index("variant")

    def save(self, folder: str | Path) -> Path:
        """comparison.json (settings, status, summary), per_prompt.csv and summary.csv."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summary = self.summary()
        self.per_prompt().to_csv(folder / "per_prompt.csv", index=False)
        summary.to_csv(folder / "summary.csv", index=False)
        doc = {"settings": asdict(self.settings), "system_prompt": self.system_prompt,
               "prompts": self.prompts, "status": self.status,
               "variants": [_variant_dict(v) for v in self.variants],
               "summary": json.loads(summary.to_json(orient="records"))}
        tmp = folder / "comparison.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(folder / "comparison.json")
        return folder / "comparison.json"


def run(variants_: Sequence[Variant], *, prompts: Sequence[str], persona_prompt: str | None,
        texts: Texts, settings: Settings = Settings(), cache_dir: str | Path | None = None,
        on_event: Callable[[str], None] | None = None, trained_prompts: Sequence[str] = (),
        probes: Sequence[dict] = ()) -> Comparison:
    """Evaluate every variant (from the cache when its entry is still valid). ``trained_prompts``:
    training questions also asked, verbatim, and kept out of every table but
    :func:`helpers.evaluation.phrasing.comparison_split`; ``probes``: out-of-scope questions
    (:func:`helpers.evaluation.robustness.default_probes`) scored by :mod:`~helpers.evaluation.robustness`."""
    settings.check()
    if not prompts:
        raise CompareError("No prompts: set `questions` (and `compare_prompts`) in persona.toml.")
    cache_dir = Path(cache_dir) if cache_dir else paths.work_dir() / "comparison_cache_all_models"
    system_prompt = persona_prompt if settings.system_prompt == "persona" else None
    say = on_event or log.info
    index = None
    results, status = {}, {}
    for i, v in enumerate(variants_, 1):
        head = f"[{i}/{len(variants_)}] {v.name}"
        if not v.ready:
            status[v.name] = "missing"
            say(f"{head}: no adapter in {v.run_dir}; run its fine-tuning notebook first. Skipped.")
            continue
        key = compare_cache.key_for(v.name, fingerprint(v, settings, prompts, system_prompt, texts, trained_prompts, probes))
        cached = compare_cache.load(cache_dir, key)
        if cached is not None:
            results[v.name], status[v.name] = cached, "cache"
            say(f"{head}: from the cache ({key})")
            continue
        if index is None:
            index = metrics.MemorisationIndex(texts.training)
        t0 = time.time()
        results[v.name] = evaluate(v, prompts=prompts, system_prompt=system_prompt,
                                   settings=settings, texts=texts, index=index, trained_prompts=trained_prompts,
                                   probes=probes)
        status[v.name] = "computed"
        compare_cache.save(cache_dir, key, results[v.name])
        audits.to_card(v, results[v.name])  # recitation and copying figures in the run's data card
        empty = sum(not a.strip() for a in results[v.name]["answers"])
        say(f"{head}: computed in {time.time() - t0:.0f} s ({len(prompts)} answers, {empty} empty); "
            f"cached as {key}")
    return Comparison(variants=list(variants_), results=results, status=status, settings=settings,
                      texts=texts, prompts=list(prompts), system_prompt=system_prompt)


def _overlap_f1(a: str, b: str) -> float:
    """Word-overlap F1 of two answers (1.0 when they use the same words)."""
    from collections import Counter
    wa, wb = Counter(metrics.words(a)), Counter(metrics.words(b))
    if not wa and not wb:
        return 1.0
    common = sum((wa & wb).values())
    if not common:
        return 0.0
    p, r = common / sum(wa.values()), common / sum(wb.values())
    return 2 * p * r / (p + r)
