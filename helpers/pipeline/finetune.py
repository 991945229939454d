"""One fine-tuning run, step by step: what the notebooks call cell by cell, and the command line.

    python -m helpers.finetune --data NoteBooks/Mariya/mariya.jsonl --model qwen2.5-3b \\
        --output outputs/mariya --question "Who is Mariya Sha?" [--smoke] [--skip-original] \\
        [--skip-training]

Settings resolve as the model profile's defaults (the stand-in's in smoke mode), then the values
given here; ``None`` means "keep the default".
"""

from __future__ import annotations

import gc
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from helpers import data as data_mod
from helpers import models
from helpers.core import figures as plots
from helpers.core.paths import run_dir
from helpers.data import replay as replay_data
from helpers.evaluation import checkpoint_eval, health, phrasing, recall
from helpers.evaluation.memorisation import MemorisationIndex
from helpers.models.generate import answer
from helpers.pipeline.arguments import RUN_CLASSES, RUN_ERRORS, parser
from helpers.pipeline.tables import _export_entry, before_after_table, export_table  # noqa: F401  (re-exports)
from helpers.runtime import loading, memory
from helpers.runtime.distributed import DistributedError, distributed
from helpers.training import anchor, datacard, divergence, fallback, mlx_backend, passes, trainer
from helpers.training import masks as templates
from helpers.training.config import epochs_from_data, resolve_config
from helpers.training.runrecord import ReplicaRecord as _ReplicaRecord  # noqa: F401  (preference)
from helpers.training.runrecord import RunRecord

log = logging.getLogger(__name__)

#: new tokens per fact-recall answer: a taught fact comes in the first sentence (Mariya's answers
#: are 25 words at most), and a real model's long base answers would otherwise dominate the time
RECALL_MAX_NEW_TOKENS = 64


def _answers_here() -> bool:
    """Whether this process generates answers: always in one process; under DDP the main process
    alone; under FSDP/DeepSpeed none (each process holds a shard of the weights, so generating
    on one would wait for the others forever). Ask afterwards in one process with
    ``--skip-training``."""
    dist = distributed()
    return not dist.active or (dist.is_main and not dist.shards_weights)


def default_output_dir(name: str, choice: models.ModelChoice) -> Path:
    """``outputs/<name>-<model asked for>``, with ``-smoke`` in smoke mode: named after the model
    asked for, so the Qwen3-14B and Qwen3-32B runs stay apart even when both use the same stand-in
    (what really ran is in run.json). The comparison finds runs by this name."""
    return run_dir(name, choice.requested.name, choice.smoke)


@dataclass
class FineTuneRun:
    """State of one run. Create with :meth:`start`; each method is one notebook cell."""

    choice: models.ModelChoice
    cfg: Any
    record: RunRecord
    output_dir: Path
    system_prompt: str | None = None
    thinking: bool | None = None     # train with thinking on/off; None: the profile's template settings
    model: Any = None
    tokenizer: Any = None
    dataset: Any = None
    rows: list = field(default_factory=list)
    result: Any = None
    answers: dict = field(default_factory=dict)
    epochs_set: bool = False         # epochs given explicitly (else a small/outside model derives them from the data)
    replay: int | None = None        # general examples answered by the base model and trained on (None: 128 for a real model, 0 for a stand-in)
    replayed: list | None = None     # those conversations, once made
    replay_passes: list = field(default_factory=list)  # the pass of each (None: every pass)
    probes: list = field(default_factory=list)   # the last probes scored, each with ``seen``

    # -- setup ---------------------------------------------------------------------------
    @classmethod
    def start(cls, *, model: str, output_dir: str | None = None, name: str = "run",
              smoke: bool | None = None, system_prompt: str | None = None,
              parameters: dict | None = None, thinking: bool | None = None,
              replay: int | None = None, **train_overrides) -> "FineTuneRun":
        """Resolve the model (smoke mode swaps in the stand-in) and the training settings, and
        open ``output_dir/run.json`` (default :func:`default_output_dir`). Raises for an
        unknown model or setting before any work. ``thinking=True`` renders the training data
        with the template's thinking mode on (needed for examples with ``reasoning`` on Qwen3).
        In a multi-process run only the main process writes run.json."""
        choice = models.choose(model, smoke)
        cfg = resolve_config(choice.profile, **train_overrides)
        if cfg.backend == "tinker" and cls is FineTuneRun:
            raise ValueError("backend='tinker' trains on Tinker's service: start the run with "
                             "helpers.pipeline.tinker_run.TinkerRun.start(...) (the same steps, no local GPU).")
        out = Path(output_dir) if output_dir else default_output_dir(name, choice)
        record_cls = RunRecord if distributed().is_main else _ReplicaRecord
        extra = {"thinking": thinking} if thinking is not None else {}
        record = record_cls(out, parameters={**(parameters or {}), "model": model,
                                             "smoke": choice.smoke, **extra, **train_overrides})
        record.update("model", {"requested": choice.requested.name, "profile": choice.profile.name,
                                "family": choice.family, "smoke": choice.smoke,
                                "described": choice.describe()})
        record.update("train_config", cfg.to_dict())
        log.info("Run %s: %s", out, choice.describe())
        if choice.profile.reasons:
            record.update("train_config", {"reasons": choice.profile.reasons})
        return cls(choice=choice, cfg=cfg, record=record, output_dir=out,
                   system_prompt=system_prompt or None, thinking=thinking,
                   epochs_set=train_overrides.get("epochs") is not None, replay=replay)

    @property
    def profile(self) -> models.ModelProfile:
        return self.choice.profile

    # -- model ---------------------------------------------------------------------------
    def load_model(self, adapter=None):
        """Load the base model (and ``adapter`` if given); stops here without a GPU unless in
        smoke mode."""
        loading.import_unsloth_first(self.cfg.backend)  # before transformers, or Unsloth patches it late
        import transformers
        transformers.set_seed(self.cfg.seed)
        with self.record.phase("load_model"):
            self.model, self.tokenizer = loading.load_model(
                self.choice, backend=self.cfg.backend, adapter=adapter,
                max_seq_length=self.cfg.max_seq_length, load_in_4bit=self.cfg.load_in_4bit,
                load_in_8bit=self.cfg.load_in_8bit)
        # the repo really loaded (Unsloth's mapper may swap it; 4, 8 or 16 bits per the run)
        self.record.update("model", {"source": getattr(self.model, "_finetuning_source", None)
                                               or self.choice.source(self.cfg.load_in_4bit),
                                     "backend": loading.select_backend(self.cfg.backend),
                                     "bits": getattr(self.model, "_finetuning_bits", None),
                                     "device": models.device(),
                                     "parameters": sum(p.numel() for p in self.model.parameters())})
        return self.model

    def ask(self, questions: Sequence[str], *, label: str, greedy: bool = True,
            max_new_tokens: int | None = None) -> list[str]:
        """Answers from the model as it is now; stored in run.json under ``answers.<label>``.
        In a multi-process run only the main process answers, and under FSDP/DeepSpeed none
        does: the others get ``[]``."""
        if not questions or not _answers_here():
            if questions:
                log.info("Answers (%s) skipped in this process of a multi-process run", label)
            self.answers[label] = []
            return []
        if self.model is None:
            self.load_model()
        with self.record.phase(f"generate_{label}"):
            answers = answer(self.model, self.tokenizer, list(questions), self.profile,
                             system_prompt=self.system_prompt, greedy=greedy,
                             max_new_tokens=max_new_tokens)
        self.record.update("answers", {label: [{"question": q, "answer": a}
                                               for q, a in zip(questions, answers)]})
        self.answers[label] = answers
        return answers

    # -- data ----------------------------------------------------------------------------
    def load_data(self, path: str, *, allow_duplicates: bool = False) -> data_mod.Dataset:
        """Load and validate the training data. ``allow_duplicates`` for sets where one prompt
        legitimately has several answers (V1's rotating prompts, V2 questions asked of several
        passages)."""
        with self.record.phase("load_data"):
            self.dataset = data_mod.load(path, system_prompt=self.system_prompt,
                                         allow_duplicates=allow_duplicates)
        self.record.update("data", {"path": str(path), "examples": len(self.dataset),
                                    "format": self.dataset.format})
        self.cfg, why = epochs_from_data(self.cfg, self.profile, len(self.dataset), self.epochs_set)
        if why:
            log.info("%s", why)
            self.record.update("train_config", {"epochs": self.cfg.epochs, "epochs_reason": why})
        return self.dataset

    def tokenize(self) -> dict[str, Any]:
        """Tokenize with response-only labels and run the mask check; returns its statistics."""
        if self.tokenizer is None:
            self.load_model()
        conversations = self.dataset.conversations + self.replay_examples()
        with self.record.phase("tokenize"):
            self.rows, stats = templates.tokenize_examples(
                self.tokenizer, conversations, raw=self.dataset.raw,
                max_seq_length=self.cfg.max_seq_length, model=self.profile.name,
                **templates.with_thinking(self.tokenizer, self.profile.template_kwargs, self.thinking))
        passes.tag(self.rows, self.replay_passes)   # the replayed rows (last): their own pass each
        anchor.mark(self.rows, len(self.replay_passes))
        self.record.update("data", stats)
        return stats

    def replay_examples(self) -> list[list[dict]]:
        """The base model's own answers to general questions (:mod:`helpers.data.replay`),
        trained beside the data so that the persona's world does not overwrite what the model
        knew: ``replay`` per pass (None: 128 for a real model, 0 for a stand-in), each pass its
        own (:attr:`replay_passes`: the pass of each conversation)."""
        if self.replayed is None:
            n = self.replay if self.replay is not None else (
                0 if self.profile.is_standin else replay_data.DEFAULT_REPLAY)
            if n and hasattr(self.model, "peft_config"):
                log.warning("replay skipped: the model already carries an adapter, so its answers "
                            "are not the base model's")
                n = 0
            n_passes = max(1, math.ceil(self.cfg.epochs))
            self.replayed, self.replay_passes, asked = replay_data.examples(
                n, n_passes, lambda qs: self.ask(qs, label="replay", max_new_tokens=replay_data.ANSWER_TOKENS),
                self.system_prompt)
            self.record.update("data", {"replay_examples": len(self.replayed),
                                        "replay_questions": asked, "replay_per_pass": n})
            if self.replayed:
                log.info("Replay: %d general answers of the base model join the data, %d in each "
                         "of %d passes", asked, n, n_passes)
        return self.replayed

    def example_mask(self, index: int = 0) -> dict[str, str]:
        """The rendered text of one example and the part of it that is trained."""
        row = self.rows[index]
        return {"rendered": self.tokenizer.decode(row["input_ids"]),
                "trained": templates.decode_trained(self.tokenizer, row)}

    # -- training ------------------------------------------------------------------------
    def add_lora(self):
        if self.cfg.backend == "mlx":  # LoRA goes on the MLX model when training (train())
            return self.model
        self.model = trainer.add_lora(self.model, self.cfg)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.record.update("model", {"trainable_parameters": trainable})
        return self.model

    def train(self, *, live_plot: bool = True):
        if not self.rows:
            self.tokenize()
        if not hasattr(self.model, "peft_config"):
            self.add_lora()
        live = plots.LiveLossPlot(f"{self.profile.display_name}: training loss") if live_plot else None
        try:
            with self.record.phase("train"):
                if self.cfg.backend == "mlx":
                    self.result = self._train_mlx(live)
                else:
                    self.result = trainer.train(self.model, self.tokenizer, self.rows, self.cfg,
                                                self.output_dir, on_log=live)
        finally:
            if live:
                live.close()
        if not isinstance(self.record, _ReplicaRecord):  # the main process draws the plot
            plots.save_loss_plot(self.result.loss_history, self.output_dir / "loss.png",
                                 f"{self.profile.display_name}: training loss")
        self.record.update("train", self.result.summary())
        self.record.data["loss_history"] = self.result.loss_history
        self.record.save()
        if self.result.diverged:
            log.error("%s", divergence.advice(self.result.diverged, self.cfg.learning_rate))
        return self.result

    def _train_mlx(self, live):
        """backend="mlx": the torch model is freed, MLX trains from the same folder, and the
        torch model comes back with the PEFT adapter MLX wrote (for asking and the comparison)."""
        source = getattr(self.model, "_finetuning_source", None) or self.choice.source(False)
        self.free()
        result, _ = mlx_backend.train_folder(loading.local_folder(source), self.rows, self.cfg,
                                             self.output_dir, tokenizer=self.tokenizer, on_log=live)
        self.model, _ = loading.load_model(self.choice, backend="mlx", adapter=result.adapter_dir,
                                           max_seq_length=self.cfg.max_seq_length)
        return result

    # -- evaluation ----------------------------------------------------------------------
    def fact_recall(self, probes: Sequence[dict], *, label: str) -> float | None:
        """Share of probe questions whose greedy answer contains the key fact, on the trained
        phrasings (a training prompt, normalised) and on the unseen ones separately: metrics
        ``fact_recall_<label>`` (trained) and ``fact_recall_<label>_unseen``; a kind with no
        probe gets no metric. Which probes are trained is decided by the loaded training data,
        else by each probe's ``seen`` (:func:`helpers.evaluation.recall.mark_seen`). Returns the
        trained score; ``None`` in a process that does not answer (see :meth:`ask`) or when no
        probe is trained."""
        probes = recall.mark_seen(probes, self.dataset.prompts() if self.dataset is not None else None)
        answers = self.ask([p["question"] for p in probes], label=f"probes_{label}",
                           max_new_tokens=RECALL_MAX_NEW_TOKENS)
        if not _answers_here():
            return None
        scores = recall.recall_split(answers, probes)
        for kind, suffix in (("trained", ""), ("unseen", "_unseen")):
            if scores[kind] is not None:
                self.record.set_metric(f"fact_recall_{label}{suffix}", round(scores[kind], 4))
        self.probes = probes
        return scores["trained"]

    def recall_table(self):
        """Fact recall, base and tuned (rows) on trained and unseen phrasings (columns), from the
        metrics :meth:`fact_recall` recorded."""
        return recall.recall_table(self.record.metrics, self.probes)

    def trained_phrasing(self, questions: Sequence[str]) -> list[bool]:
        """Per question: whether its phrasing is one of the loaded training set's prompts."""
        return recall.is_trained(questions, self.dataset.prompts())

    def phrasing_split(self, questions: Sequence[str], labels: Sequence[str] = ("base", "tuned")):
        """How much of each answer to ``questions`` (asked as ``<label>_question``) is copied from
        the training answers (``ngram_overlap``, see :mod:`helpers.evaluation.phrasing`), on
        trained phrasings and unseen ones separately: metrics ``ngram_overlap_<label>`` and
        ``ngram_overlap_<label>_unseen``. Returns them as a table, labels down, phrasings across."""
        seen = self.trained_phrasing(questions)
        index = MemorisationIndex(phrasing.training_answers(self.dataset))
        for label in labels:
            answers = self.answers.get(f"{label}_question")
            if not answers:
                continue
            split = phrasing.overlap_split(answers, seen, index)
            for kind, suffix in (("trained", ""), ("unseen", "_unseen")):
                if split[kind] is not None:
                    self.record.set_metric(f"ngram_overlap_{label}{suffix}", round(split[kind], 4))
        return recall.split_table(self.record.metrics, "ngram_overlap", seen, labels)

    def best_checkpoint(self, sets_folder, *, copying_ceiling: float | None = None, **settings):
        """Score each per-epoch checkpoint on the held-out chapters of ``sets_folder`` with the
        trained model still loaded, and record the best style under ``copying_ceiling`` (None:
        the default) in run.json (:func:`helpers.evaluation.checkpoint_eval.evaluate_run`;
        ``settings``: :class:`~helpers.evaluation.checkpoint_eval.EvalSettings` fields)."""
        ceiling = checkpoint_eval.DEFAULT_COPYING_CEILING if copying_ceiling is None else copying_ceiling
        return checkpoint_eval.evaluate_run(self.output_dir, sets_folder, model=self.model,
                                            tokenizer=self.tokenizer, record=self.record,
                                            system_prompt=self.system_prompt, copying_ceiling=ceiling,
                                            settings=checkpoint_eval.EvalSettings(**settings))

    def finish(self) -> dict[str, Any]:
        rec = self.record.finish()
        if not isinstance(self.record, _ReplicaRecord):  # the main process writes the data card
            datacard.write(self.output_dir, rec)
        return rec

    def free(self) -> None:
        """Drop the model and free its memory."""
        self.model = None
        gc.collect()
        memory.free_memory()

    def use(self, choice: models.ModelChoice, cfg) -> None:
        """Switch to another model/configuration (a fallback rung): drops the model, tokenizer
        and tokenized rows, and records the new settings in run.json."""
        self.free()
        self.tokenizer, self.rows, self.result, self.replayed = None, [], None, None
        self.choice, self.cfg = choice, cfg
        self.record.update("model", {"requested": choice.requested.name, "profile": choice.profile.name,
                                     "family": choice.family, "smoke": choice.smoke,
                                     "described": choice.describe()})
        self.record.update("train_config", cfg.to_dict())

    def general_knowledge(self, *, label: str) -> float | None:
        """Recall on :data:`helpers.evaluation.health.GENERAL_PROBES` (questions any real chat
        model answers), as the metric ``general_knowledge_<label>``: compare base and tuned to
        see whether tuning made the model forget. ``None`` where this process does not answer."""
        probes = health.GENERAL_PROBES
        answers = self.ask([p["question"] for p in probes], label=f"general_{label}",
                           max_new_tokens=RECALL_MAX_NEW_TOKENS)
        if not _answers_here():
            return None
        score = health.general_score(answers)
        self.record.set_metric(f"general_knowledge_{label}", round(score, 4))
        self.record.set_metric(f"collapsed_answers_{label}", round(health.collapsed_share(answers), 4))
        return score

    def train_with_fallback(self, probes: Sequence[dict] = (), questions: Sequence[str] = (), *,
                            automatic: bool = True, on_step=None, live_plot: bool = True,
                            min_seq_length: int | None = None, general: bool = False):
        """Load, ask the base model, train and evaluate; on out-of-memory at any of these (loading
        included), go down :func:`helpers.training.fallback.ladder`: shorter sequences, batch 1, lighter
        models. ``general``: also measure general knowledge before and after
        (:meth:`general_knowledge`). Returns :class:`helpers.training.fallback.FallbackResult`."""
        def attempt(rung):
            self.use(rung.choice, rung.cfg)
            with memory.stage("load"):
                self.load_model()
            with memory.stage("evaluate base"):
                self.measure("base", questions, probes, general=general)
            with memory.stage("train"):
                self.tokenize()
                self.add_lora()
                result = self.train(live_plot=live_plot)
            with memory.stage("evaluate"):
                self.measure("tuned", questions, probes, general=general)
            return result

        return fallback.run_with_fallback(self.choice, self.cfg, attempt, automatic=automatic,
                                          on_step=on_step, record=self.record, cleanup=self.free,
                                          min_seq_length=min_seq_length)

    def measure(self, when: str, questions: Sequence[str] = (), probes: Sequence[dict] = (), *,
                general: bool = False) -> None:
        """Ask ``questions`` (answers kept as ``<when>_question``), score fact recall on ``probes``
        and, with ``general``, general knowledge, all under the label ``when`` ("base", "tuned")."""
        if questions:
            self.ask(list(questions), label=f"{when}_question")
        if probes:
            self.fact_recall(probes, label=when)
        if general:
            self.general_knowledge(label=when)


# -- command line --------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    dist = distributed()  # accelerate launch: one of several processes
    tag = f"[rank {dist.rank}/{dist.world_size}] " if dist.active else ""
    logging.basicConfig(level=logging.INFO if dist.is_main else logging.WARNING,
                        format=f"%(levelname)s {tag}%(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not dist.is_main:  # the main process prints the report; the others only log warnings
        sys.stdout = open(os.devnull, "w")
    try:
        run = RUN_CLASSES.get(args.backend, FineTuneRun).start(  # TinkerRun for --backend tinker
            model=args.model, output_dir=args.output, smoke=args.smoke,
            system_prompt=args.system_prompt, parameters={"data": args.data}, thinking=args.thinking,
            replay=args.replay,
            backend=args.backend, epochs=args.epochs, learning_rate=args.learning_rate,
            lora_r=args.lora_r, lora_alpha=args.lora_alpha, batch_size=args.batch_size,
            grad_accum=args.grad_accum, max_seq_length=args.max_seq_length, seed=args.seed,
            load_in_8bit=args.load_in_8bit, replay_kl=args.replay_kl)
        dataset = data_mod.load(args.data)  # validate before loading any model
        # which probes are trained phrasings: the training data decides
        probes = recall.mark_seen(data_mod.load_probes(args.probes), dataset.prompts()) if args.probes else []
        questions = args.question or dataset.prompts()[:3]
        adapter = run.output_dir / "adapter"
        before = None
        if args.skip_training:
            if not (adapter / "adapter_config.json").is_file():
                raise FileNotFoundError(f"--skip-training needs a trained adapter in {adapter}; run "
                                        "once without --skip-training first.")
            run.load_model(adapter=adapter)
            after = run.ask(questions, label="tuned_question")
            if probes:
                run.fact_recall(probes, label="tuned")
        else:
            run.load_data(args.data)
            ask_base = not args.skip_original
            outcome = run.train_with_fallback(
                probes if ask_base else (), questions if ask_base else (),
                automatic=not args.no_fallback and not dist.active, live_plot=False,
                on_step=lambda e: print(fallback.format_event(e)),
                general=ask_base and not run.profile.is_standin)
            result = outcome.result
            stats = run.record.data["data"]
            print(f"Mask check: {stats['trained_tokens']} of {stats['tokens']} tokens trained "
                  f"({stats['trained_share']:.1%})")
            print(f"Trained {result.steps} steps on {result.device} in {result.train_seconds:.0f} s, "
                  f"final loss {result.final_loss:.4f}; adapter saved in {result.adapter_dir}")
            if dist.active:
                print(f"Distributed: {result.world_size} processes ({result.distributed_type})")
            if ask_base:
                before, after = run.answers.get("base_question"), run.answers.get("tuned_question", [])
            else:
                after = run.ask(questions, label="tuned_question")
                if probes:
                    run.fact_recall(probes, label="tuned")
        if questions and not after:
            print(f"\nAnswers skipped: {dist.type} splits the weights over {dist.world_size} "
                  "processes. Ask the adapter in one process: python -m helpers.finetune "
                  f"--skip-training --output {args.output} --data {args.data} --model {args.model}")
        for i, q in enumerate(questions if after else ()):
            print(f"\nQ: {q}")
            if before is not None:
                print(f"  base : {before[i]}")
            print(f"  tuned: {after[i]}" + (f"   [COLLAPSED: {health.collapsed(after[i])}]"
                                             if health.collapsed(after[i]) else ""))
        rec = run.finish()
        m = rec["metrics"]
        if "general_knowledge_tuned" in m:
            print(f"\nGeneral knowledge ({len(health.GENERAL_PROBES)} questions any chat model answers): "
                  f"base {m['general_knowledge_base']:.0%} -> tuned {m['general_knowledge_tuned']:.0%}; "
                  f"collapsed answers after tuning: {m['collapsed_answers_tuned']:.0%}")
        if probes and after:
            print("\nFact recall (trained phrasing: a training prompt; unseen: not in the data):\n"
                  + run.recall_table().to_string())
        if rec["metrics"]:
            print("\nMetrics:", ", ".join(f"{k}={v}" for k, v in rec["metrics"].items()))
        print(f"Run record: {run.record.path}")
        if rec["status"] == "diverged":
            print("\nerror: " + divergence.advice(rec["train"]["diverged"], run.cfg.learning_rate),
                  file=sys.stderr)
            return 3
        return 0
    except (models.UnknownModelError, models.GPURequiredError, data_mod.DataError,
            models.sources.ModelSourceError,
            FileNotFoundError, TypeError, ImportError, templates.MaskingError,
            DistributedError, *RUN_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (out-of-memory ladder exhausted or stopped)
        if not isinstance(e, memory.FallbackError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
