"""Padding-free batches against padding to the longest sequence, side by side in one run:
the share of processed tokens that are real, and real tokens per second, on the tiny Qwen2.5
stand-in with the Mariya data (one epoch each, same seed, same order).

    .venv/bin/python bench/batching_bench.py [--batch-size 8]
"""

from __future__ import annotations

import argparse
import logging
import tempfile

from helpers import data, models
from helpers.notebooks.setup import ROOT
from helpers.runtime.loading import load_model
from helpers.training import masks as templates
from helpers.training.config import resolve_config
from helpers.training.trainer import add_lora, train


def run(padding_free: bool, batch_size: int) -> dict:
    choice = models.choose("qwen2.5-3b", smoke=True)
    cfg = resolve_config(choice.profile, epochs=1, batch_size=batch_size, grad_accum=1,
                         padding_free=padding_free, report_to="none", keep_checkpoints=1)
    model, tok = load_model(choice, backend="transformers")
    convs = data.load(ROOT / "NoteBooks/Mariya/mariya.jsonl",
                      system_prompt="You are Mariya Sha, a wizard.").conversations
    rows, _ = templates.tokenize_dataset(tok, convs, max_seq_length=cfg.max_seq_length, model="bench")
    model = add_lora(model, cfg)
    with tempfile.TemporaryDirectory() as out:
        r = train(model, tok, rows, cfg, out)
    real = sum(len(x["input_ids"]) for x in rows)
    return {"share": r.real_token_share, "tok_s": real / r.train_seconds, "seconds": r.train_seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    padded = run(False, args.batch_size)
    free = run(True, args.batch_size)
    print(f"batch size {args.batch_size}, tiny-qwen2.5, Mariya data (240 examples), 1 epoch")
    print(f"{'':14} {'real-token share':>17} {'real tokens/s':>14} {'seconds':>8}")
    for name, r in (("padded", padded), ("padding-free", free)):
        print(f"{name:14} {r['share']:17.1%} {r['tok_s']:14.0f} {r['seconds']:8.1f}")
    print(f"padding-free / padded: real-token share x{free['share'] / padded['share']:.2f}, "
          f"throughput x{free['tok_s'] / padded['tok_s']:.2f}")


if __name__ == "__main__":
    main()
