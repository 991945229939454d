"""A Tinker adapter on disk as a PEFT adapter folder that our comparison and export load.

Download (SDK 0.38, read in its source: ``tinker/cli/commands/checkpoint.py``): the training
client exports its weights with ``save_weights_external(name, ttl_seconds)``, a
``tinker://<run>/external_weights/<name>`` path; ``RestClient.get_external_weights_urls(path)``
returns a signed URL per file, fetched with plain HTTP GETs.

What comes down is Tinker's own layout (``adapter_config.json`` + ``adapter_model.safetensors``,
as the SDK's ``checkpoint push-hf`` checks): keys ``base_model.model.<module>.lora_A.weight`` /
``lora_B.weight`` named after Tinker's modules, and mixture-of-experts LoRA kept as 3-D tensors
``(experts, r, dim)`` under ``...experts.w1/w2/w3``. :func:`to_peft` writes what PEFT expects
(the renames tinker-cookbook's ``weights.build_lora_adapter`` documents): ``unembed_tokens`` ->
``lm_head``, GPT-OSS ``.attn`` -> ``.self_attn``.

Experts: transformers 5 keeps a mixture-of-experts layer's experts as one fused 3-D parameter
(``Qwen3MoeExperts.gate_up_proj``, ``GptOssExperts``; read in transformers 5.23), which PEFT's
LoRA modules cannot target, so an adapter with expert LoRA is refused by default (the backend
trains MoE models' attention only). ``split_experts=True`` writes the per-expert layout that
vLLM/SGLang serve (``experts.<i>.gate_proj`` (w1), ``up_proj`` (w3), ``down_proj`` (w2), a shared
1-expert side broadcast), which PEFT here does not load.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from pathlib import Path

from helpers.core.files import write_json

log = logging.getLogger(__name__)

EXPERT_NAMES = ((".w1.", ".gate_proj."), (".w3.", ".up_proj."), (".w2.", ".down_proj."))


class AdapterConversionError(ValueError):
    """A downloaded Tinker adapter that cannot become a PEFT adapter."""


def download(training_client, rest_client, dest: str | os.PathLike, *, name: str = "final",
             ttl_seconds: int = 3600, opener=urllib.request.urlopen) -> Path:
    """Export the training client's weights and download every file into ``dest``; returns it."""
    dest = Path(dest)
    path = training_client.save_weights_external(name, ttl_seconds=ttl_seconds).result().path
    urls = rest_client.get_external_weights_urls(path).result().urls
    if not urls:
        raise AdapterConversionError(f"Tinker's export {path} has no files; nothing to download.")
    base = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for rel, url in sorted(urls.items()):
        target = (dest / rel).resolve()
        if not target.is_relative_to(base):
            raise AdapterConversionError(f"Tinker's export {path} names a file outside its folder: {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        with opener(url, timeout=120) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, target)
    log.info("Downloaded Tinker adapter %s (%d files) to %s", path, len(urls), dest)
    return dest


def _peft_key(key: str, gpt_oss: bool) -> str:
    key = key.replace("model.unembed_tokens", "lm_head")
    if gpt_oss and ".experts" not in key:
        key = key.replace(".attn.", ".self_attn.")
    return key


def to_peft(src: str | os.PathLike, out: str | os.PathLike, *, base_model: str,
            family: str | None = None, split_experts: bool = False) -> Path:
    """Convert the Tinker adapter in ``src`` into a PEFT adapter in ``out`` for ``base_model`` (its
    hub id, written as ``base_model_name_or_path``). Expert LoRA is refused unless
    ``split_experts`` (see the module notes); GPT-OSS's always."""
    from safetensors.torch import load_file, save_file

    src, out = Path(src), Path(out)
    cfg_path, weights_path = src / "adapter_config.json", src / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights_path.is_file():
        raise AdapterConversionError(
            f"{src} is not a Tinker adapter: it needs adapter_config.json and adapter_model.safetensors "
            f"(found: {', '.join(sorted(p.name for p in src.iterdir())) if src.is_dir() else 'no folder'}).")
    tinker_cfg = json.loads(cfg_path.read_text())
    if "r" not in tinker_cfg or "lora_alpha" not in tinker_cfg:
        raise AdapterConversionError(f"{cfg_path} lacks 'r' or 'lora_alpha'; it is not a LoRA adapter config.")
    gpt_oss = family == "gpt-oss" or "gpt-oss" in base_model
    weights = load_file(str(weights_path))
    peft: dict = {}
    targets: set[str] = set()
    for a_key in sorted(k for k in weights if ".lora_A." in k):
        b_key = a_key.replace(".lora_A.", ".lora_B.")
        if b_key not in weights:
            raise AdapterConversionError(f"{weights_path} has {a_key} without its {b_key}.")
        a, b = weights[a_key], weights[b_key]
        key = _peft_key(a_key, gpt_oss)
        if ".experts" in key:
            if gpt_oss or not split_experts:
                raise AdapterConversionError(
                    f"This adapter trains the experts of {base_model} ({a_key}), which transformers 5 "
                    "keeps as one fused parameter that PEFT LoRA cannot load. Train attention only "
                    "(train_mlp=False, the default for mixture-of-experts models in "
                    "tinker_backend.train), or merge it with tinker-cookbook's weights.build_hf_model"
                    + ("." if gpt_oss else "; split_experts=True writes vLLM's per-expert layout."))
            if a.numel() == 0 and b.numel() == 0:
                continue
            if a.ndim != 3 or b.ndim != 3:
                raise AdapterConversionError(f"{a_key}: expert LoRA must be 3-D, got {tuple(a.shape)} / {tuple(b.shape)}.")
            n = max(a.shape[0], b.shape[0])
            for old, new in EXPERT_NAMES:
                key = key.replace(old, new)
            for i in range(n):
                k_i = key.replace(".experts.", f".experts.{i}.")
                peft[k_i] = a[0 if a.shape[0] == 1 else i].clone().contiguous()
                peft[k_i.replace(".lora_A.", ".lora_B.")] = b[0 if b.shape[0] == 1 else i].clone().contiguous()
                targets.add(k_i.split(".lora_A.")[0].rsplit(".", 1)[-1])
        else:
            peft[key] = a.contiguous()
            peft[key.replace(".lora_A.", ".lora_B.")] = b.contiguous()
            targets.add(key.split(".lora_A.")[0].rsplit(".", 1)[-1])
    if not peft:
        raise AdapterConversionError(f"{weights_path} holds no LoRA weights (no '.lora_A.' keys).")
    out.mkdir(parents=True, exist_ok=True)
    save_file(peft, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    write_json(out / "adapter_config.json", {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": int(tinker_cfg["r"]), "lora_alpha": tinker_cfg["lora_alpha"], "lora_dropout": 0.0,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
        "target_modules": sorted(targets)})
    log.info("PEFT adapter for %s: %d tensors on %s in %s", base_model, len(peft), ",".join(sorted(targets)), out)
    return out
