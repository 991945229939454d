"""How much the response-only masks cost: tokenize_for_training against a plain
apply_chat_template(tokenize=True) on the same conversations, per stand-in family, side by side
in one run. Prints examples per second and the ratio.

    .venv/bin/python bench/masking_bench.py
"""

from __future__ import annotations

import time

from transformers import AutoTokenizer

from helpers import data
from helpers.models import REGISTRY, standins
from helpers.notebooks.setup import ROOT
from helpers.training import masks as templates


def rate(fn, items, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best


def main() -> None:
    convs = data.load(ROOT / "NoteBooks/Mariya/mariya.jsonl",
                      system_prompt="You are Mariya Sha.").conversations
    print(f"{len(convs)} conversations (Mariya data with a system prompt)\n")
    print(f"{'family':10} {'plain ex/s':>11} {'masked ex/s':>12} {'masked/plain':>13}")
    for name in ("tiny-qwen2.5", "tiny-qwen3", "tiny-gpt-oss"):
        tok = AutoTokenizer.from_pretrained(standins.ensure(name, pretrain_steps=0))
        kw = REGISTRY[name].template_kwargs
        plain = rate(lambda c: tok.apply_chat_template(c, tokenize=True, **kw), convs)
        masked = rate(lambda c: templates.tokenize_for_training(tok, c, **kw), convs)
        print(f"{REGISTRY[name].family:10} {plain:11.0f} {masked:12.0f} {masked / plain:13.2f}")


if __name__ == "__main__":
    main()
