"""Unsloth against plain transformers + PEFT + TRL on one NVIDIA GPU, side by side in one run:
training tokens per second and peak VRAM for the same LoRA run on a Qwen3-shaped model of about
0.6B parameters with random weights (built here: no download). Unsloth's claim, the anchor:
about 2x the speed with up to 70% less VRAM.

    .venv/bin/python bench/backend_bench.py [--steps 40] [--seq 1024] [--batch 4] [--4bit]

Each backend trains in its own process (Unsloth must be imported before transformers, and peak
memory is per process). Needs CUDA; on a CPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Qwen3-0.6B's shape (random weights; the benchmark measures speed and memory, not quality)
QWEN3_SHAPE = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                   num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                   max_position_embeddings=4096, tie_word_embeddings=True)


def build_model(folder: Path) -> Path:
    """A random-weight Qwen3 model with the stand-in's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from helpers.models import standins
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**QWEN3_SHAPE)).to(torch.bfloat16)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(standins.ensure("tiny-qwen3", pretrain_steps=0)).save_pretrained(folder)
    return folder


def worker(backend: str, folder: str, steps: int, seq: int, batch: int, four_bit: bool) -> dict:
    """Train ``steps`` steps with ``backend``; returns tokens/s and peak memory."""
    if backend == "unsloth":
        import unsloth  # noqa: F401  (before transformers)
    import torch

    from helpers import models
    from helpers.runtime.loading import load_model
    from helpers.training.config import resolve_config
    from helpers.training.trainer import add_lora, train
    choice = models.choose(folder)
    cfg = resolve_config(choice.profile, epochs=1, batch_size=batch, grad_accum=1, max_seq_length=seq,
                         lora_r=16, lora_alpha=16, learning_rate=1e-4, padding_free=False,
                         report_to="none", keep_checkpoints=1, backend=backend, load_in_4bit=four_bit,
                         gradient_checkpointing=True)
    model, tok = load_model(choice, backend=backend, max_seq_length=seq, load_in_4bit=four_bit)
    model = add_lora(model, cfg)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(steps * batch):
        ids = torch.randint(10, 2000, (seq,), generator=gen).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (seq // 2) + ids[seq // 2:]})
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        result = train(model, tok, rows, cfg, out)
    return {"backend": backend, "steps": result.steps, "seconds": result.train_seconds,
            "tokens_per_s": steps * batch * seq / result.train_seconds,
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--4bit", dest="four_bit", action="store_true", help="QLoRA (bitsandbytes 4-bit) for both")
    p.add_argument("--worker", choices=("unsloth", "transformers"), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.folder, args.steps, args.seq, args.batch,
                                            args.four_bit)), flush=True)
        return 0
    import torch
    if not torch.cuda.is_available():
        print("bench/backend_bench.py needs an NVIDIA GPU with CUDA (Unsloth runs only there).")
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(Path(tmp) / "qwen3-0.6b-random")
        for backend in ("transformers", "unsloth"):
            t0 = time.time()
            cmd = [sys.executable, __file__, "--worker", backend, "--folder", str(folder),
                   "--steps", str(args.steps), "--seq", str(args.seq), "--batch", str(args.batch)]
            proc = subprocess.run(cmd + (["--4bit"] if args.four_bit else []), capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{backend} failed ({time.time() - t0:.0f} s):\n{proc.stderr[-3000:]}")
                return 1
            results[backend] = json.loads(line[0][7:])
    gpu = torch.cuda.get_device_name(0)
    print(f"{gpu}; Qwen3-0.6B shape, random weights; LoRA r16 on all linear layers, "
          f"{'4-bit' if args.four_bit else 'bf16'}, gradient checkpointing; {args.steps} steps of "
          f"{args.batch} x {args.seq} tokens")
    print(f"{'backend':14} {'tokens/s':>10} {'peak GB':>8}")
    for name, r in results.items():
        print(f"{name:14} {r['tokens_per_s']:10.0f} {r['peak_gb']:8.2f}")
    t, u = results["transformers"], results["unsloth"]
    print(f"unsloth / transformers: speed x{u['tokens_per_s'] / t['tokens_per_s']:.2f}, "
          f"peak VRAM x{u['peak_gb'] / t['peak_gb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
