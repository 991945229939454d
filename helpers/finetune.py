"""One fine-tuning run, step by step: what the notebooks call cell by cell, and the command line.

    python -m helpers.finetune --data NoteBooks/Mariya/mariya.jsonl --model qwen2.5-3b \\
        --output outputs/mariya --question "Who is Mariya Sha?" [--smoke] [--skip-original] \\
        [--skip-training]

Settings resolve as the model profile's defaults (the stand-in's in smoke mode), then the values
given here; ``None`` means "keep the default".
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from helpers import data as data_mod
from helpers import models, templates
from helpers.runrecord import RunRecord

log = logging.getLogger(__name__)


@dataclass
class FineTuneRun:
    """State of one run. Create with :meth:`start`; each method is one notebook cell."""

    choice: models.ModelChoice
    cfg: Any
    record: RunRecord
    output_dir: Path
    system_prompt: str | None = None
    model: Any = None
    tokenizer: Any = None
    dataset: Any = None
    rows: list = field(default_factory=list)
    result: Any = None
    answers: dict = field(default_factory=dict)

    # -- setup ---------------------------------------------------------------------------
    @classmethod
    def start(cls, *, model: str, output_dir: str | None = None, name: str = "run",
              smoke: bool | None = None, system_prompt: str | None = None,
              parameters: dict | None = None, **train_overrides) -> "FineTuneRun":
        """Resolve the model (smoke mode swaps in the stand-in) and the training settings, and
        open ``output_dir/run.json`` (default ``outputs/<name>-<model used>``). Raises for an
        unknown model or setting before any work."""
        from helpers.notebook import ROOT
        from helpers.train import resolve_config
        choice = models.choose(model, smoke)
        cfg = resolve_config(choice.profile, **train_overrides)
        out = Path(output_dir) if output_dir else ROOT / "outputs" / f"{name}-{choice.profile.name}"
        record = RunRecord(out, parameters={**(parameters or {}), "model": model,
                                            "smoke": choice.smoke, **train_overrides})
        record.update("model", {"requested": choice.requested.name, "profile": choice.profile.name,
                                "family": choice.family, "smoke": choice.smoke,
                                "described": choice.describe()})
        record.update("train_config", cfg.to_dict())
        log.info("Run %s: %s", out, choice.describe())
        return cls(choice=choice, cfg=cfg, record=record, output_dir=out,
                   system_prompt=system_prompt or None)

    @property
    def profile(self) -> models.ModelProfile:
        return self.choice.profile

    # -- model ---------------------------------------------------------------------------
    def load_model(self, adapter=None):
        """Load the base model (and ``adapter`` if given); stops here without a GPU unless in
        smoke mode."""
        from helpers.train import load_model, select_backend
        import transformers
        transformers.set_seed(self.cfg.seed)
        with self.record.phase("load_model"):
            self.model, self.tokenizer = load_model(
                self.choice, backend=self.cfg.backend, adapter=adapter,
                max_seq_length=self.cfg.max_seq_length, load_in_4bit=self.cfg.load_in_4bit)
        self.record.update("model", {"source": self.choice.source(),
                                     "backend": select_backend(self.cfg.backend),
                                     "parameters": sum(p.numel() for p in self.model.parameters())})
        return self.model

    def ask(self, questions: Sequence[str], *, label: str, greedy: bool = True,
            max_new_tokens: int | None = None) -> list[str]:
        """Answers from the model as it is now; stored in run.json under ``answers.<label>``."""
        from helpers.generate import answer
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
    def load_data(self, path: str) -> data_mod.Dataset:
        with self.record.phase("load_data"):
            self.dataset = data_mod.load(path, system_prompt=self.system_prompt)
        self.record.update("data", {"path": str(path), "examples": len(self.dataset),
                                    "format": self.dataset.format})
        return self.dataset

    def tokenize(self) -> dict[str, Any]:
        """Tokenize with response-only labels and run the mask check; returns its statistics."""
        if self.tokenizer is None:
            self.load_model()
        with self.record.phase("tokenize"):
            self.rows, stats = templates.tokenize_dataset(
                self.tokenizer, self.dataset.conversations, max_seq_length=self.cfg.max_seq_length,
                model=self.profile.name, **self.profile.template_kwargs)
        self.record.update("data", stats)
        return stats

    def example_mask(self, index: int = 0) -> dict[str, str]:
        """The rendered text of one example and the part of it that is trained."""
        row = self.rows[index]
        return {"rendered": self.tokenizer.decode(row["input_ids"]),
                "trained": templates.decode_trained(self.tokenizer, row)}

    # -- training ------------------------------------------------------------------------
    def add_lora(self):
        from helpers.train import add_lora
        self.model = add_lora(self.model, self.cfg)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.record.update("model", {"trainable_parameters": trainable})
        return self.model

    def train(self, *, live_plot: bool = True):
        from helpers import plots
        from helpers.train import train
        if not self.rows:
            self.tokenize()
        if not hasattr(self.model, "peft_config"):
            self.add_lora()
        live = plots.LiveLossPlot(f"{self.profile.display_name}: training loss") if live_plot else None
        with self.record.phase("train"):
            self.result = train(self.model, self.tokenizer, self.rows, self.cfg, self.output_dir,
                                on_log=live)
        if live:
            live.close()
        plots.save_loss_plot(self.result.loss_history, self.output_dir / "loss.png",
                             f"{self.profile.display_name}: training loss")
        self.record.update("train", self.result.summary())
        self.record.data["loss_history"] = self.result.loss_history
        self.record.save()
        return self.result

    # -- evaluation ----------------------------------------------------------------------
    def fact_recall(self, probes: Sequence[dict], *, label: str) -> float:
        """Share of probe questions whose greedy answer contains the key fact; stored as the
        metric ``fact_recall_<label>``."""
        from helpers.evaluate import fact_recall
        answers = self.ask([p["question"] for p in probes], label=f"probes_{label}")
        score = fact_recall(answers, [p["key_fact"] for p in probes])
        self.record.set_metric(f"fact_recall_{label}", round(score, 4))
        return score

    def finish(self) -> dict[str, Any]:
        return self.record.finish()

    def free(self) -> None:
        """Drop the model and free its memory."""
        self.model = None
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def before_after_table(questions: Sequence[str], before: Sequence[str], after: Sequence[str],
                       key_facts: Sequence[str] | None = None):
    """A pandas DataFrame: question, base answer, tuned answer (and whether each has the fact)."""
    import pandas as pd
    from helpers.evaluate import contains_fact
    df = pd.DataFrame({"question": list(questions), "base answer": list(before),
                       "tuned answer": list(after)})
    if key_facts is not None:
        df.insert(1, "key fact", list(key_facts))
        df["base has fact"] = [contains_fact(a, k) for a, k in zip(before, key_facts)]
        df["tuned has fact"] = [contains_fact(a, k) for a, k in zip(after, key_facts)]
    return df


# -- command line --------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m helpers.finetune",
        description="Fine-tune a model with LoRA on a prompt/completion or chat JSONL file and "
                    "show its answers before and after.")
    g = p.add_argument_group("what to run")
    g.add_argument("--data", required=True, help="prompt/completion or chat-messages JSONL file")
    g.add_argument("--model", default="qwen2.5-3b",
                   help=f"registry name or hub id ({', '.join(models.known_models())})")
    g.add_argument("--output", required=True, help="run folder: adapter, checkpoints, run.json")
    g.add_argument("--question", action="append", default=None,
                   help="question to ask before and after (repeatable); default: the first prompts")
    g.add_argument("--probes", help="JSONL of {question, key_fact} for fact recall")
    g.add_argument("--system-prompt", default=None, help="system prompt for every example and question")
    g.add_argument("--smoke", action="store_true", default=None,
                   help="use the family's tiny stand-in (also FINETUNING_SMOKE=1)")
    g.add_argument("--skip-original", action="store_true", help="do not ask the base model")
    g.add_argument("--skip-training", action="store_true",
                   help="do not train: load the adapter already in --output and ask it")
    t = p.add_argument_group("training (default: the model profile's)")
    t.add_argument("--backend", default=None, choices=("auto", "unsloth", "transformers"))
    t.add_argument("--epochs", type=float, default=None, help="passes over the data")
    t.add_argument("--learning-rate", type=float, default=None, help="peak learning rate")
    t.add_argument("--lora-r", type=int, default=None, help="LoRA rank")
    t.add_argument("--lora-alpha", type=int, default=None, help="LoRA alpha")
    t.add_argument("--batch-size", type=int, default=None, help="sequences per step")
    t.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps")
    t.add_argument("--max-seq-length", type=int, default=None, help="longest sequence in tokens")
    t.add_argument("--seed", type=int, default=None, help="random seed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "datasets", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        run = FineTuneRun.start(
            model=args.model, output_dir=args.output, smoke=args.smoke,
            system_prompt=args.system_prompt, parameters={"data": args.data},
            backend=args.backend, epochs=args.epochs, learning_rate=args.learning_rate,
            lora_r=args.lora_r, lora_alpha=args.lora_alpha, batch_size=args.batch_size,
            grad_accum=args.grad_accum, max_seq_length=args.max_seq_length, seed=args.seed)
        dataset = data_mod.load(args.data)  # validate before loading any model
        probes = data_mod.load_probes(args.probes) if args.probes else []
        questions = args.question or dataset.prompts()[:3]
        adapter = run.output_dir / "adapter"
        if args.skip_training and not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--skip-training needs a trained adapter in {adapter}; run "
                                    "once without --skip-training first.")
        run.load_model(adapter=adapter if args.skip_training else None)
        before = None
        if not args.skip_original and not args.skip_training:
            before = run.ask(questions, label="base")
            if probes:
                run.fact_recall(probes, label="base")
        if not args.skip_training:
            run.load_data(args.data)
            stats = run.tokenize()
            print(f"Mask check: {stats['trained_tokens']} of {stats['tokens']} tokens trained "
                  f"({stats['trained_share']:.1%})")
            result = run.train(live_plot=False)
            print(f"Trained {result.steps} steps in {result.train_seconds:.0f} s, final loss "
                  f"{result.final_loss:.4f}; adapter saved in {result.adapter_dir}")
        after = run.ask(questions, label="tuned")
        if probes:
            run.fact_recall(probes, label="tuned")
        for i, q in enumerate(questions):
            print(f"\nQ: {q}")
            if before is not None:
                print(f"  base : {before[i]}")
            print(f"  tuned: {after[i]}")
        rec = run.finish()
        if rec["metrics"]:
            print("\nMetrics:", ", ".join(f"{k}={v}" for k, v in rec["metrics"].items()))
        print(f"Run record: {run.record.path}")
        return 0
    except (models.UnknownModelError, models.GPURequiredError, data_mod.DataError,
            FileNotFoundError, TypeError, ImportError, templates.MaskingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
