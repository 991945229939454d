"""How the frozen base weights are held while LoRA trains: 16 bits, or 8 or 4 bits through
bitsandbytes, and the memory each needs.

- 16 bits: the model's own checkpoint (``hub_id``) in bf16/fp16.
- 8 bits (``load_in_8bit``): the same 16-bit checkpoint, quantized while loading with
  ``BitsAndBytesConfig(load_in_8bit=True)`` (LLM.int8). Unsloth does the same: in unsloth
  2026.10.9 ``FastLanguageModel.from_pretrained(load_in_8bit=True)`` hands over to
  ``FastModel.from_pretrained`` (models/loader.py), whose ``FastBaseModel`` (models/vision.py)
  builds ``BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=...)``; it raises unless
  ``load_in_4bit=False`` comes with it (``_precision_flags_conflict``; ``load_in_4bit``
  defaults to True there).
- 4 bits (``load_in_4bit``, QLoRA): a pre-quantized repo (``hub_id_4bit``) or NF4 on the fly.

bitsandbytes replaces ``nn.Linear`` layers only (transformers ``integrations/bitsandbytes.py``
``replace_with_bnb_linear``, the same in 5.17 and 5.23), so the 3-D expert parameters of a
mixture of experts stay in 16 bits in 8-bit loads on both backends (unsloth_zoo quantizes them
for 4 bits only: ``temporary_patches/moe_utils_bnb4bit.py`` patches ``Bnb4BitHfQuantizer``).

Memory in 8 bits: a profile's ``vram_gb_8bit`` where set (Qwen3-30B-A3B: its experts stay bf16);
else ``sizing.training_memory_gb(params, 8)`` where the parameter count is known; else one third
of the way from the 4-bit to the 16-bit estimate (the weights take 0.5, 1 and 2 bytes a
parameter, and the rest of the estimate does not change with them, so that is where
``training_memory_gb`` puts 8 bits too).
"""

from __future__ import annotations

from typing import Any

from helpers.models import sizing

BITS = (4, 8, 16)

#: why GPT-OSS is refused in 8 bits (``ModelProfile.no_8bit``), read in source
GPT_OSS_NO_8BIT = (
    "bitsandbytes' 8-bit quantizes nn.Linear only (transformers replace_with_bnb_linear), so the "
    "~19B parameters of GPT-OSS's fused experts would stay in 16 bits (no saving over 16 bits), "
    "and on openai/gpt-oss-20b the checkpoint's own MXFP4 quantization competes with it; Unsloth "
    "2026.10.9 ignores load_in_8bit for gpt-oss (loader_utils.gpt_oss_keeps_checkpoint_quantization: "
    "'bnb 8-bit only replaces nn.Linear, leaving fused experts 16-bit') and loads the checkpoint "
    "as it is, not in 8 bits")


def bits(load_in_4bit: bool | None, load_in_8bit: bool | None = False) -> int:
    """Bits of the base weights for these settings (4 wins only if both are set; settings
    refuse that combination before any load)."""
    return 4 if load_in_4bit else 8 if load_in_8bit else 16


def label(n: int) -> str:
    return f"{n}-bit"


def vram_8bit_gb(p: Any) -> float:
    """The 8-bit estimate of profile ``p`` (see the module docstring for the rule)."""
    if p.vram_gb_8bit is not None:
        return p.vram_gb_8bit
    if p.params and not p.is_standin:
        return sizing.training_memory_gb(p.params, 8)
    return round(p.vram_gb_4bit + (p.vram_gb_16bit - p.vram_gb_4bit) / 3, 1)


def vram_gb(p: Any, n: int, backend: str | None = None) -> float:
    """Peak VRAM of profile ``p`` at ``n`` bits on ``backend`` (None: Unsloth's estimate). A
    precision that ``backend`` cannot load reads as the 16-bit estimate."""
    if n not in BITS:
        raise ValueError(f"bits={n!r} is not one of {', '.join(map(str, BITS))}.")
    if n == 16:
        return p.vram_gb_16bit
    if n == 8:
        return p.vram_gb_16bit if p.no_8bit else vram_8bit_gb(p)
    if backend == "transformers" and p.no_4bit_transformers:
        return p.vram_gb_16bit
    if backend == "transformers" and p.vram_gb_4bit_transformers is not None:
        return p.vram_gb_4bit_transformers
    return p.vram_gb_4bit


def refuse_8bit(p: Any) -> str:
    """The message for an 8-bit load of a profile with ``no_8bit`` set (both backends)."""
    four = (f"4 bits (load_in_4bit=True; about {p.vram_gb_4bit:.0f} GB on backend='unsloth')"
            if p.hub_id_4bit else "")
    return (f"{p.display_name} in 8 bits (load_in_8bit=True) is refused: {p.no_8bit}. Use "
            + (f"{four}, or " if four else "")
            + f"16 bits (load_in_8bit=False, about {p.vram_gb_16bit:.0f} GB of GPU memory).")
