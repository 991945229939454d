"""Reloading an export the way its users load it, and checking it: :func:`load_export`,
:func:`verify_export` (a greedy answer from the reloaded export) and :func:`compare_merged_logits`
(the merged model's logits against base + adapter).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from helpers import models
from helpers.export.gguf import FAMILY_FOR_GGUF_ARCH, gguf_added_tokens, gguf_header
from helpers.export.hf import (
    MERGED_INFO,
    adapter_base,
    base_kwargs,
    model_kwargs,
    read_json,
    require_adapter,
    torch_dtype_for,
)
from helpers.export.ollama import family_profile
from helpers.models.families import MODEL_TYPE_TO_FAMILY
from helpers.models.generate import answer
from helpers.models.standins import SPECS
from helpers.runtime.loading import bf16_supported

FORMATS = ("adapter", "merged", "gguf")
#: merged-vs-(base + adapter) logits must agree within this share of the largest logit
LOGIT_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
DEFAULT_QUESTION = "Who are you?"
SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog. Who are you, and where do you live?"


class ExportVerificationError(RuntimeError):
    """An export reloaded but does not compute what the model it came from computes."""


def _default_device() -> str:
    return "cuda" if models.cuda_available() else "cpu"


def _profile_for(kind: str, path: Path, model_config: dict):
    """A profile for answering with a reloaded export: the family's stand-in profile, renamed."""
    family = MODEL_TYPE_TO_FAMILY.get(model_config.get("model_type", ""))
    if family is None:
        raise NotImplementedError(f"{path}: model_type {model_config.get('model_type')!r} has no family here.")
    return dataclasses.replace(family_profile(family), name=str(path), display_name=path.name)


def _placement(device: str) -> dict[str, Any]:
    if device == "cpu":
        return {}
    # "auto" spreads a model too big for the GPU over GPU and CPU
    return {"device_map": "auto" if device == "cuda" else {"": device}}


def _base_plus_adapter(base: str, adapter_dir: Path, torch_dtype, device: str):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(base)).to_dict()
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch_dtype, **_placement(device),
                                                 **base_kwargs(base, config))
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    tokenizer = AutoTokenizer.from_pretrained(
        str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else str(base))
    return model, tokenizer, config


def load_export(kind: str, path: str | os.PathLike, *, dtype: str | None = None,
                device: str | None = None):
    """``(model, tokenizer)`` reloaded from an export the way its users load it:

    - ``adapter``: the base model named in ``adapter_config.json`` + ``PeftModel.from_pretrained``
    - ``merged``: ``AutoModelForCausalLM.from_pretrained(folder)``
    - ``gguf``: ``AutoModelForCausalLM/AutoTokenizer.from_pretrained(folder, gguf_file=name)``
      (transformers dequantizes Qwen2/Qwen3 GGUF weights); ``path`` is the ``.gguf`` file.

    ``dtype`` defaults to float32 on CPU, and on CUDA to bfloat16 where the GPU computes it
    natively, else float16 (:func:`helpers.train.bf16_supported`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind not in FORMATS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(FORMATS)}.")
    device = device or _default_device()
    torch_dtype = torch_dtype_for(dtype) if dtype else load_dtype(device)
    path = Path(path)
    if kind == "adapter":
        model, tokenizer, config = _base_plus_adapter(adapter_base(path), path, torch_dtype, device)
    elif kind == "merged":
        config = read_json(path / "config.json")
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype,
                                                     **_placement(device), **model_kwargs(config))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    else:
        model, tokenizer = _load_gguf(path, torch_dtype, _placement(device))
        config = model.config.to_dict()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model._finetuning_export = {"kind": kind, "path": str(path), "model_type": config.get("model_type")}
    return model, tokenizer


def load_dtype(device: str):
    """float32 on the CPU; on a GPU bfloat16 where it is native, else float16."""
    import torch
    if device == "cpu":
        return torch.float32
    return torch.bfloat16 if bf16_supported() else torch.float16


def _mark_added_tokens(tokenizer, gguf_path: Path) -> None:
    """transformers 5.17 builds a GGUF file's tokenizer with only some of its control and
    user-defined tokens as added tokens, so ``<think>`` is split into pieces; llama.cpp, and
    transformers 5.23, match them whole. Mark every one the file declares (their ids are already
    in the vocabulary, so no id changes)."""
    from tokenizers import AddedToken
    known = set(tokenizer.get_added_vocab())
    missing = [(text, special) for text, special in gguf_added_tokens(gguf_path) if text not in known]
    if missing:
        tokenizer.add_tokens([AddedToken(text, special=special, normalized=False)
                              for text, special in missing])


def _load_gguf(gguf_path: Path, torch_dtype, placement: dict):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if gguf_path.suffix != ".gguf" or not gguf_path.is_file():
        raise FileNotFoundError(f"No GGUF file at {gguf_path}.")
    folder, name = str(gguf_path.parent), gguf_path.name
    meta = gguf_header(gguf_path)
    arch = meta.get("general.architecture")
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # transformers' GGUF reader maps no key_length for qwen3 and falls back to Qwen3Config's
    # head_dim=128 (right for the real Qwen3 models, wrong for any other head size)
    key_length = meta.get(f"{arch}.attention.key_length")
    if key_length and getattr(config, "head_dim", None) not in (None, key_length):
        config.head_dim = int(key_length)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config,
                                                 dtype=torch_dtype, **placement)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    _mark_added_tokens(tokenizer, gguf_path)
    # A GGUF states one eos id; llama.cpp and Ollama also stop at the family's other end tokens
    # (the Modelfile's PARAMETER stop). Give generate() the same list.
    family = FAMILY_FOR_GGUF_ARCH.get(arch)
    if family is not None:
        stops = [tokenizer.convert_tokens_to_ids(t)
                 for t in SPECS[family_profile(family).name].stop_tokens if t in tokenizer.get_vocab()]
        if stops:
            model.generation_config.eos_token_id = stops
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def verify_export(kind: str, path: str | os.PathLike, question: str = DEFAULT_QUESTION, *,
                  system_prompt: str | None = None, max_new_tokens: int | None = None,
                  dtype: str | None = None, device: str | None = None) -> str:
    """Reload an export (see :func:`load_export`) and return its greedy answer to ``question``."""
    model, tokenizer = load_export(kind, path, dtype=dtype, device=device)
    profile = _profile_for(kind, Path(path), {"model_type": model._finetuning_export["model_type"]})
    try:
        return answer(model, tokenizer, [question], profile, system_prompt=system_prompt,
                      greedy=True, max_new_tokens=max_new_tokens)[0]
    finally:
        del model


def logits(model, tokenizer, text: str = SAMPLE_TEXT):
    """Float32 next-token logits of ``model`` for every position of ``text`` (CPU tensor)."""
    import torch
    device = next(model.parameters()).device
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    with torch.no_grad():
        return model(input_ids=ids).logits.float().cpu()


def compare_merged_logits(merged_dir: str | os.PathLike, *, base_source: str | None = None,
                          adapter_dir: str | None = None, text: str = SAMPLE_TEXT,
                          device: str | None = None) -> dict[str, Any]:
    """Logits of the merged model against base + adapter (unmerged), both in float32, on
    ``text``. Base and adapter default to the ones :func:`export_merged` recorded (the 16-bit
    base it merged into, not necessarily the 4-bit one the adapter was trained on).

    Returns ``max_abs_diff``, ``tolerance`` (``LOGIT_TOLERANCE[dtype]`` times the largest logit)
    and ``allclose``. The models are loaded one after the other, so memory holds one at a time.
    """
    import gc
    merged_dir = Path(merged_dir)
    info = read_json(merged_dir / MERGED_INFO) if (merged_dir / MERGED_INFO).is_file() else {}
    adapter_dir = adapter_dir or info.get("adapter_dir")
    if adapter_dir is None:
        raise ValueError(f"{merged_dir} has no {MERGED_INFO}; pass adapter_dir (and base_source).")
    adapter_dir = require_adapter(Path(adapter_dir))
    base_source = base_source or info.get("base_source") or adapter_base(adapter_dir)
    saved_dtype = info.get("dtype") or read_json(merged_dir / "config.json").get("dtype", "float32")
    device = device or _default_device()
    ref_model, tokenizer, _ = _base_plus_adapter(base_source, adapter_dir, torch_dtype_for("float32"), device)
    ref_model.eval()
    ref = logits(ref_model, tokenizer, text)
    del ref_model
    gc.collect()
    merged, _ = load_export("merged", merged_dir, dtype="float32", device=device)
    got = logits(merged, tokenizer, text)
    del merged
    gc.collect()
    diff = float((got - ref).abs().max())
    tol = LOGIT_TOLERANCE.get(saved_dtype, LOGIT_TOLERANCE["bfloat16"]) * max(1.0, float(ref.abs().max()))
    return {"max_abs_diff": diff, "tolerance": tol, "allclose": diff <= tol, "dtype": saved_dtype}
