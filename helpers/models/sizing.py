"""A model's size from its config, the memory it needs, and LoRA/training defaults derived from it.

Used for any model that is not a tuned registry entry (a local folder, a hub id outside the
registry, a GGUF file) and for the small real models in the registry. Nothing here loads torch:
the parameter count comes from the config's shapes (checked against the real module count of
each stand-in in the tests).

The rules (each default comes with its reason, shown in the notebook and run.json):

- LoRA r 16, alpha 32, dropout 0, on every linear layer of attention and MLP: adapting all
  linear layers is what lets LoRA match full fine-tuning (the QLoRA paper's finding); alpha = 2r
  keeps the update's scale when r changes; r 16 is ample for a persona's facts and voice.
- Learning rate 2e-4 from 4B parameters up (the usual LoRA rate: Unsloth's and TRL's examples),
  3e-4 below. Measured on a real 0.5B chat model (Qwen2.5-Coder-0.5B-Instruct) on the Mariya
  facts, 2 CPU cores, all with replay (:mod:`helpers.data.replay`): 1e-3 for 2 passes learned them
  (97% of trained phrasings, 87% of unseen) but kept 5 of 9 known answers among 10 general
  questions; 5e-4 for 3 passes 100% / 97%, kept 6 of 9; 3e-4 for 3 passes 100% / 93%, kept 7 of 9
  (17 of 24 among 30 questions); 3e-4 for 2 passes learned less (83% / 80%) and kept no more.
  Never the stand-ins' 5e-3, which suits 1M parameters and made a real 0.5B model's loss go from
  2 to 21 (it then answered one syllable, repeated); the divergence watch stops such a run.
- Batch 8 examples per optimizer step (4 x 2 accumulation: a 24 GB GPU holds 4 sequences of a
  1-2B model at 1,024 tokens with room to spare); warm-up 5%, linear decay.
- Epochs from the data: enough passes for about ``TARGET_STEPS`` optimizer steps, at least 1 and
  at most ``MAX_EPOCHS`` (a 240-example fact set gets 3 passes; a 5,000-passage book, 1): a fact
  set is learned in a few passes, and on a laptop CPU a step of a 0.5B model takes ~6 s.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

#: optimizer steps the data-derived epoch count aims for
TARGET_STEPS = 90
MAX_EPOCHS = 5
#: bytes per parameter by how the weights are held
BYTES = {4: 0.5, 8: 1.0, 16: 2.0, 32: 4.0}


def _get(cfg: dict, *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` present in ``cfg`` or its ``text_config``."""
    for source in (cfg, cfg.get("text_config") or {}):
        for k in keys:
            if source.get(k) is not None:
                return source[k]
    return default


def parameter_count(cfg: dict) -> int:
    """Parameters of a decoder-only transformer from its ``config.json`` (dense or mixture of
    experts): embeddings, attention, MLP or experts and router, norms, and the output head
    unless tied to the embeddings."""
    hidden = int(_get(cfg, "hidden_size", "n_embd", "d_model"))
    layers = int(_get(cfg, "num_hidden_layers", "n_layer", "num_layers"))
    vocab = int(_get(cfg, "vocab_size"))
    heads = int(_get(cfg, "num_attention_heads", "n_head"))
    kv_heads = int(_get(cfg, "num_key_value_heads", default=heads))
    head_dim = int(_get(cfg, "head_dim", default=hidden // heads))
    bias = bool(_get(cfg, "attention_bias", default=False)) or _get(cfg, "model_type") == "qwen2"
    q, kv = heads * head_dim, kv_heads * head_dim
    attn = hidden * q + 2 * hidden * kv + q * hidden + ((q + 2 * kv) if bias else 0)
    if _get(cfg, "model_type") == "gpt_oss":
        attn += hidden + heads  # o_proj bias and the attention sinks
    experts = int(_get(cfg, "num_experts", "num_local_experts", "n_routed_experts", default=0) or 0)
    if experts:
        inter = int(_get(cfg, "moe_intermediate_size", "intermediate_size"))
        mlp = experts * 3 * hidden * inter + hidden * experts
        if _get(cfg, "model_type") == "gpt_oss":  # biases on the experts and the router
            mlp += experts * (2 * inter + hidden) + experts
    else:
        mlp = 3 * hidden * int(_get(cfg, "intermediate_size"))
    norms = 2 * hidden + (2 * head_dim if _get(cfg, "model_type") in {"qwen3", "qwen3_moe"} else 0)
    tied = bool(_get(cfg, "tie_word_embeddings", default=False))
    return vocab * hidden * (1 if tied else 2) + layers * (attn + mlp + norms) + hidden


def training_memory_gb(params: int, bits: int, *, trainable_share: float = 0.01) -> float:
    """A rough peak for LoRA training: the weights at ``bits``, the adapter with its gradients
    and Adam state (16 bytes per trainable parameter, about 1% of the model), 20% for
    activations, buffers and the framework, and 1 GB of runtime."""
    weights = params * BYTES[bits] / 1e9
    adapter = params * trainable_share * 16 / 1e9
    return round(weights * 1.2 + adapter + 1.0, 1)


@dataclass(frozen=True)
class SizedDefaults:
    """LoRA and training defaults for a model of ``params`` parameters, with their reasons."""

    params: int
    lora_r: int = 16
    lora_alpha: int = 32
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 2
    warmup_ratio: float = 0.05
    reasons: dict[str, str] = field(default_factory=dict)


def sized_defaults(params: int) -> SizedDefaults:
    """The defaults for a model of ``params`` parameters (see the module docstring)."""
    lr = 3e-4 if params < 4e9 else 2e-4
    batch, accum = 4, 2
    size = f"{params / 1e9:.2f}B parameters"
    reasons = {
        "lora_r": "r 16 on every linear layer: adapting all of them is what lets LoRA match full "
                  "fine-tuning; 16 is ample for a persona",
        "lora_alpha": "alpha = 2r keeps the update's scale when r changes",
        "learning_rate": (f"{lr:g} for {size} (2e-4 from 4B, 3e-4 below): a higher rate made a real "
                          "0.5B model forget more; the stand-ins' 5e-3 destroys a real model"),
        "batch_size": f"{batch} x {accum} accumulation = 8 examples per step",
        "epochs": f"enough passes over the data for about {TARGET_STEPS} steps, 1 to {MAX_EPOCHS}",
    }
    return SizedDefaults(params=params, learning_rate=lr, batch_size=batch, grad_accum=accum,
                         reasons=reasons)


def epochs_for(n_examples: int, batch_size: int, grad_accum: int) -> int:
    """Passes over ``n_examples`` for about ``TARGET_STEPS`` optimizer steps (1 to MAX_EPOCHS).

    >>> epochs_for(240, 8, 1), epochs_for(5000, 4, 2), epochs_for(40, 4, 2)
    (3, 1, 5)
    """
    per_epoch = max(1, math.ceil(n_examples / max(1, batch_size * grad_accum)))
    return max(1, min(MAX_EPOCHS, round(TARGET_STEPS / per_epoch)))


def machine_memory_gb() -> float:
    """This machine's physical memory in GB (0 where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 0.0
