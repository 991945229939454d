"""The command line of ``python -m helpers.finetune``: its arguments (the run itself is
:func:`helpers.pipeline.finetune.main`)."""

from __future__ import annotations

import argparse

from helpers import models

#: run classes for backends that train elsewhere, by backend name, and the errors their ``start``
#: raises for the user (the command line prints them, exit 2). helpers.pipeline.tinker_run adds
#: backend="tinker"; helpers/pipeline/__init__.py imports it, so every entry point sees it.
RUN_CLASSES: dict[str, type] = {}
RUN_ERRORS: list[type[Exception]] = []
BACKENDS = ("auto", "unsloth", "transformers", "mlx", "tinker")


def parser() -> argparse.ArgumentParser:
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
    g.add_argument("--replay", type=int, default=None,
                   help="general questions the base model answers, trained on beside the data so "
                        "it keeps what it knew, per pass over the data, each pass its own (default: "
                        "128 for a real model, 0 for a stand-in)")
    g.add_argument("--system-prompt", default=None, help="system prompt for every example and question")
    g.add_argument("--smoke", action="store_true", default=None,
                   help="use the family's tiny stand-in (also FINETUNING_SMOKE=1)")
    g.add_argument("--skip-original", action="store_true", help="do not ask the base model")
    g.add_argument("--skip-training", action="store_true",
                   help="do not train: load the adapter already in --output and ask it")
    g.add_argument("--no-fallback", action="store_true",
                   help="on out-of-memory, stop and print the settings to try instead of stepping "
                        "down (always so under accelerate launch)")
    g.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                   help="render the training data with the template's thinking mode on/off "
                        "(Qwen3 needs --thinking for examples with `reasoning`); default: the profile's")
    t = p.add_argument_group("training (default: the model profile's)")
    t.add_argument("--backend", default=None, choices=BACKENDS,
                   help="where it trains (tinker: Thinking Machines' service, TINKER_API_KEY; "
                        "the real model, no local GPU, no smoke mode)")
    t.add_argument("--epochs", type=float, default=None, help="passes over the data")
    t.add_argument("--learning-rate", type=float, default=None, help="peak learning rate")
    t.add_argument("--lora-r", type=int, default=None, help="LoRA rank")
    t.add_argument("--lora-alpha", type=int, default=None, help="LoRA alpha")
    t.add_argument("--batch-size", type=int, default=None, help="sequences per step")
    t.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation steps")
    t.add_argument("--max-seq-length", type=int, default=None, help="longest sequence in tokens")
    t.add_argument("--seed", type=int, default=None, help="random seed")
    t.add_argument("--replay-kl", type=float, default=None,
                   help="weight of the KL divergence that holds replayed answers to the base "
                        "model's whole next-token distribution (transformers backend; default "
                        "16; 0: train them as ordinary labels)")
    t.add_argument("--load-in-8bit", action="store_true", default=None,
                   help="base weights in 8 bits (bitsandbytes; CUDA only): about half the 16-bit "
                        "weight memory; turns off the profile's 4-bit default")
    return p
