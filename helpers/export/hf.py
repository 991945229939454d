"""The Hugging Face exports: the LoRA adapter, and the base model with the adapter merged in.

- ``adapter``: the LoRA adapter (``adapter_model.safetensors`` + ``adapter_config.json``) and the
  tokenizer. Small; needs the base model to run.
- ``merged``: the base model with the adapter merged in (``merge_and_unload``), saved as 16-bit
  (or float32) safetensors with its tokenizer, chat template and generation config. Runs
  anywhere transformers runs, no PEFT needed.

Also the small pieces every export uses: :func:`size_mb`, :func:`read_json`, a torch dtype by
name, and the from_pretrained keywords for reloading a base model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from helpers.runtime.loading import mxfp4_checkpoint

log = logging.getLogger(__name__)

MERGED_DTYPES = ("bfloat16", "float16", "float32")
#: the provenance file export_merged writes next to the weights
MERGED_INFO = "finetuning_export.json"


def size_mb(path: str | os.PathLike) -> float:
    """Size of a file, or of every file under a folder, in MB (10^6 bytes)."""
    path = Path(path)
    if path.is_file():
        return round(path.stat().st_size / 1e6, 3)
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 3)


def torch_dtype_for(name: str):
    """The torch dtype called ``name``, one of :data:`MERGED_DTYPES`."""
    import torch
    if name not in MERGED_DTYPES:
        raise ValueError(f"dtype={name!r} is not one of {', '.join(MERGED_DTYPES)}.")
    return getattr(torch, name)


def read_json(path: Path) -> dict:
    """The JSON object in ``path``."""
    return json.loads(Path(path).read_text())


def base_kwargs(source: str | os.PathLike, config: dict) -> dict:
    """from_pretrained keywords for reloading a 16-bit base model (the merge, base + adapter):
    :func:`model_kwargs`, and for an MXFP4 checkpoint (openai/gpt-oss-*) ``Mxfp4Config(
    dequantize=True)``, decided by the training load's rule
    (:func:`helpers.runtime.loading.mxfp4_checkpoint`): where triton >= 3.4 and ``kernels`` are
    installed transformers otherwise keeps MXFP4 weights, which a LoRA cannot be merged into (or
    applied to for the experts)."""
    kwargs = model_kwargs(config)
    if mxfp4_checkpoint(str(source), config=config):
        from transformers import Mxfp4Config
        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    return kwargs


def model_kwargs(config: dict) -> dict:
    """Extra from_pretrained keywords a family needs (GPT-OSS trains and runs with eager attention)."""
    return {"attn_implementation": "eager"} if config.get("model_type") == "gpt_oss" else {}


# -- adapter -----------------------------------------------------------------------------------

def export_adapter(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save the LoRA adapter of ``model`` (a PEFT model, e.g. from :func:`helpers.train.add_lora`
    or ``load_model(adapter=...)``) and ``tokenizer`` to ``out_dir``; returns ``out_dir``."""
    from peft import PeftModel
    if not isinstance(model, PeftModel):
        raise TypeError(
            f"export_adapter needs a LoRA-wrapped model (a PeftModel, as returned by "
            f"helpers.train.add_lora or load_model(..., adapter=...)); got {type(model).__name__}. "
            "A plain model has no adapter: export it with export_merged or save_pretrained.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    require_adapter(out)
    log.info("Adapter saved in %s (%.1f MB)", out, size_mb(out))
    return out


def copy_adapter(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy a saved adapter folder (adapter weights, config and tokenizer files) to ``out_dir``."""
    src = require_adapter(Path(adapter_dir))
    out = Path(out_dir)
    if src.resolve() != out.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
    return out


def require_adapter(folder: Path) -> Path:
    missing = [n for n in ("adapter_config.json", "adapter_model.safetensors")
               if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a saved LoRA adapter: {', '.join(missing)} missing. Point adapter_dir "
            "at the `adapter` folder of a run (made by helpers.train.train), or export one with "
            "export_adapter(model, tokenizer, out_dir).")
    return folder


def adapter_base(adapter_dir: str | os.PathLike) -> str:
    """The base model an adapter was trained on (``base_model_name_or_path`` in its config)."""
    cfg = read_json(require_adapter(Path(adapter_dir)) / "adapter_config.json")
    return cfg["base_model_name_or_path"]


# -- merged ------------------------------------------------------------------------------------

def export_merged(base_source: str | os.PathLike, adapter_dir: str | os.PathLike,
                  out_dir: str | os.PathLike, dtype: str = "bfloat16", *,
                  device: str = "cpu") -> Path:
    """Load the 16-bit base model ``base_source`` with the adapter in ``adapter_dir``, merge
    (``merge_and_unload``) and save the merged model in ``dtype`` (safetensors), with the
    tokenizer, chat template and generation config, to ``out_dir``; returns ``out_dir``.

    The merge runs on ``device`` (default CPU: it needs the base model's size in RAM, not VRAM).
    ``base_source`` must be an unquantized checkpoint: an adapter trained on a 4-bit base (QLoRA)
    or an 8-bit one (the 16-bit repo quantized while loading) merges into the 16-bit original
    (the profile's ``hub_id``).
    """
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = torch_dtype_for(dtype)
    adapter_dir = require_adapter(Path(adapter_dir))
    out = Path(out_dir)
    t0 = time.time()
    config = AutoConfig.from_pretrained(str(base_source)).to_dict()
    kwargs: dict[str, Any] = {"dtype": torch_dtype, **base_kwargs(base_source, config)}
    quant = config.get("quantization_config")
    if quant and "quantization_config" not in kwargs:  # MXFP4 (gpt-oss) is loaded dequantized
        method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
        method = getattr(method, "value", method)
        raise ValueError(
            f"base_source {base_source} is a quantized checkpoint ({method}); a LoRA adapter "
            "must be merged into the unquantized base model. Pass the 16-bit model instead "
            "(the profile's hub_id, e.g. Qwen/Qwen3-14B rather than "
            "unsloth/Qwen3-14B-unsloth-bnb-4bit).")
    if device != "cpu":
        kwargs["device_map"] = {"": device}
    tok_source = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_source
    tokenizer = AutoTokenizer.from_pretrained(str(tok_source))
    base = AutoModelForCausalLM.from_pretrained(str(base_source), **kwargs)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged = merged.to(torch_dtype)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    if not (out / "generation_config.json").is_file():
        merged.generation_config.save_pretrained(str(out))
    (out / MERGED_INFO).write_text(json.dumps({
        "kind": "merged", "base_source": str(base_source), "adapter_dir": str(adapter_dir),
        "dtype": dtype}, indent=2))
    log.info("Merged model (%s) saved in %s (%.1f MB) in %.1f s", dtype, out, size_mb(out),
             time.time() - t0)
    return out
