"""Hugging Face model folders into MLX (mlx-lm) and LoRA adapters back out as PEFT folders: the
conversions behind ``backend="mlx"`` (:mod:`helpers.training.mlx_backend`).

Loading (:func:`load_mlx_model`) fixes what mlx-lm 0.32 gets wrong on folders saved by
transformers 5 (measured on the stand-ins, ``tests/training/test_mlx_backend.py``):

- its ``qwen2`` model reads ``rope_theta`` only at the top level of config.json, where
  transformers 5 no longer writes it (it is under ``rope_parameters``), and silently uses 1e6;
  the theta and any rope scaling are taken from ``rope_parameters`` here;
- GPT-OSS as OpenAI publishes it (openai/gpt-oss-20b: MXFP4 experts, ``*_blocks``/``*_scales``,
  output first) is mlx-lm's own layout and loads as it is, quantized (checked on an MXFP4 copy of
  the stand-in made here: the same logits as transformers' dequantized model);
- GPT-OSS experts saved by transformers are ``gate_up_proj`` [experts, hidden, 2 x inter]
  (gate and up interleaved, input first) and ``down_proj`` [experts, inter, hidden]; mlx-lm's
  ``sanitize`` expects OpenAI's original layout (output first, or MXFP4 blocks) and would load
  them wrong. They are split and transposed here, and the YaRN rope gets transformers'
  frequencies: with ``truncate: false`` (GPT-OSS's config) the correction range is not rounded,
  which mlx-lm's ``YarnRoPE`` always does.

Export: mlx-lm's ``lora_a`` [in, r] and ``lora_b`` [r, out] with ``scale`` are PEFT's
``lora_A.weight`` [r, in] and ``lora_B.weight`` [out, r] with ``lora_alpha / r``
(:func:`peft_state`, :func:`save_peft_adapter`); :func:`save_fused` writes the merged model as a
Hugging Face folder with the base's own tensor names and layout.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

from helpers.core.files import write_json

log = logging.getLogger(__name__)

#: model types whose transformers-5 folders load correctly through the conversions here
SUPPORTED = ("qwen2", "qwen3", "gpt_oss")

#: files of a model folder copied beside a fused model or an adapter (tokenizer and template)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json", "vocab.json", "merges.txt")


def read_config(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text())


def rope_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """The config entries mlx-lm needs at the top level: ``rope_theta`` (and ``rope_scaling``
    for a scaled rope) from transformers 5's ``rope_parameters``, or from the older top-level
    ``rope_theta``/``rope_scaling`` (the hub's openai/gpt-oss-20b config.json)."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    out: dict[str, Any] = {}
    theta = params.get("rope_theta", config.get("rope_theta"))
    if theta is not None:
        out["rope_theta"] = float(theta)
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind != "default":
        out["rope_scaling"] = dict(params)
    return out


def yarn_inverse_frequencies(dims: int, base: float, scaling: dict[str, Any]):
    """transformers' YaRN inverse frequencies (``_compute_yarn_parameters``), truncating the
    correction range only when ``truncate`` is true (the default)."""
    import numpy as np
    factor = scaling["factor"]
    original = scaling.get("original_max_position_embeddings", 4096)
    beta_fast, beta_slow = scaling.get("beta_fast", 32), scaling.get("beta_slow", 1)

    def correction_dim(rotations):
        return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dims - 1)
    if low == high:
        high += 0.001
    pos = base ** (np.arange(0, dims, 2, dtype=np.float32) / dims)
    extrapolation, interpolation = 1.0 / pos, 1.0 / (factor * pos)
    ramp = np.clip((np.arange(dims // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extra_factor = 1 - ramp
    return interpolation * (1 - extra_factor) + extrapolation * extra_factor


def _fix_yarn(model, config: dict[str, Any]) -> None:
    """Give each YaRN rope transformers' frequencies (see :func:`yarn_inverse_frequencies`)."""
    import mlx.core as mx
    from mlx_lm.models.rope_utils import YarnRoPE
    scaling = rope_overrides(config).get("rope_scaling")
    if not scaling or scaling.get("rope_type", scaling.get("type")) != "yarn":
        return
    theta = rope_overrides(config)["rope_theta"]
    for _, module in model.named_modules():
        if isinstance(module, YarnRoPE):
            inv = yarn_inverse_frequencies(module.dims, theta, scaling)
            module._freqs = mx.array(1.0 / inv)


def gpt_oss_from_transformers(weights: dict) -> dict:
    """GPT-OSS expert weights as transformers saves them, in mlx-lm's layout (see the module
    docstring); other tensors unchanged."""
    import mlx.core as mx
    out = {}
    for key, value in weights.items():
        if key.endswith("experts.gate_up_proj"):
            both = value.swapaxes(-1, -2)                 # [experts, 2 x inter, hidden]
            out[key.replace("gate_up_proj", "gate_proj.weight")] = mx.contiguous(both[..., ::2, :])
            out[key.replace("gate_up_proj", "up_proj.weight")] = mx.contiguous(both[..., 1::2, :])
        elif key.endswith("experts.gate_up_proj_bias"):
            out[key.replace("gate_up_proj_bias", "gate_proj.bias")] = mx.contiguous(value[..., ::2])
            out[key.replace("gate_up_proj_bias", "up_proj.bias")] = mx.contiguous(value[..., 1::2])
        elif key.endswith("experts.down_proj"):
            out[key + ".weight"] = mx.contiguous(value.swapaxes(-1, -2))   # [experts, hidden, inter]
        elif key.endswith("experts.down_proj_bias"):
            out[key.replace("down_proj_bias", "down_proj.bias")] = value
        else:
            out[key] = value
    return out


def _model_classes(config: dict[str, Any]):
    """mlx-lm's classes for ``config``; GPT-OSS's with the transformers-layout conversion."""
    from mlx_lm.utils import _get_classes
    model_class, args_class = _get_classes(config)
    if config.get("model_type") != "gpt_oss":
        return model_class, args_class

    class GptOssFromTransformers(model_class):
        def sanitize(self, weights):
            if any(k.endswith("experts.gate_up_proj") for k in weights):
                weights = gpt_oss_from_transformers(weights)
            return super().sanitize(weights)

    return GptOssFromTransformers, args_class


def load_mlx_model(folder: str | Path):
    """``(model, config)``: the Hugging Face model in ``folder`` as an mlx-lm model, float32
    weights as saved, with the fixes in the module docstring. Raises for a model type whose
    transformers-5 folders are not verified here."""
    from mlx_lm.utils import load_model
    folder = Path(folder)
    config = read_config(folder)
    kind = config.get("model_type")
    if kind not in SUPPORTED:
        raise ValueError(
            f"backend='mlx' does not support model_type={kind!r} (from {folder}/config.json): "
            f"the MLX conversion is verified for {', '.join(SUPPORTED)} only. Use "
            "backend='transformers' for this model.")
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method and not (kind == "gpt_oss" and method == "mxfp4"):
        raise ValueError(
            f"backend='mlx' loads unquantized Hugging Face folders (and GPT-OSS's own MXFP4 "
            f"checkpoint); {folder} is quantized ({method}). Use the model's 16-bit checkpoint, "
            "or backend='transformers'.")
    overrides = rope_overrides(config)
    model, loaded = load_model(folder, model_config=overrides, get_model_classes=_model_classes)
    _fix_yarn(model, {**config, **overrides})
    return model, loaded


# -- adapters -------------------------------------------------------------------------------
def lora_layers(model) -> dict[str, Any]:
    """Every LoRA layer of an mlx model by its module path (``model.layers.0.self_attn.q_proj``)."""
    from mlx_lm.tuner.lora import LoRALinear
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def peft_state(model) -> dict[str, Any]:
    """The model's LoRA weights as PEFT tensors (numpy float32), by PEFT's key names. Made
    C-contiguous: numpy views of transposed mlx arrays have other strides, and safetensors'
    numpy writer stores the raw buffer (a transposed view came back scrambled)."""
    import numpy as np
    state = {}
    for name, layer in lora_layers(model).items():
        prefix = f"base_model.model.{name}"
        state[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(np.array(layer.lora_a, dtype=np.float32).T)
        state[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(np.array(layer.lora_b, dtype=np.float32).T)
    return state


def save_peft_adapter(model, folder: str | Path, *, base: str, r: int, alpha: int, dropout: float,
                      target_modules, tokenizer=None) -> Path:
    """Write the model's LoRA weights as a PEFT adapter folder (adapter_config.json and
    adapter_model.safetensors) that ``PeftModel.from_pretrained`` loads onto ``base``."""
    from safetensors.numpy import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = lora_layers(model)
    scales = {round(float(layer.scale), 6) for layer in layers.values()}
    if scales != {round(alpha / r, 6)}:
        raise ValueError(f"The MLX LoRA scales {sorted(scales)} are not lora_alpha/r = {alpha}/{r}: "
                         "the adapter would load into PEFT with another strength.")
    state = peft_state(model)
    tmp = folder / "adapter_model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / "adapter_model.safetensors")
    wrapped = sorted({name.rsplit(".", 1)[-1] for name in layers})
    write_json(folder / "adapter_config.json", {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base),
        "r": r, "lora_alpha": alpha, "lora_dropout": dropout, "bias": "none",
        "target_modules": sorted(set(target_modules) & set(wrapped)) or wrapped,
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "init_lora_weights": True,
        "inference_mode": True, "modules_to_save": None, "layers_to_transform": None})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def save_fused(model, folder: str | Path, *, base: str | Path) -> Path:
    """The base model in ``base`` with the LoRA update merged in (W + scale * B A), written as a
    Hugging Face folder: the base's config, tokenizer and tensor names, only the wrapped
    linears' weights changed (so GPT-OSS keeps its transformers layout)."""
    import mlx.core as mx
    import numpy as np
    from safetensors import safe_open
    base, folder = Path(base), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    deltas = {}
    for name, layer in lora_layers(model).items():
        a, b = np.array(layer.lora_a, dtype=np.float32), np.array(layer.lora_b, dtype=np.float32)
        deltas[f"{name}.weight"] = float(layer.scale) * (b.T @ a.T)     # [out, in]
    files = sorted(base.glob("model*.safetensors"))
    shapes = {}
    for file in files:
        with safe_open(str(file), "np") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    wrong = sorted(k for k, d in deltas.items() if shapes.get(k) != d.shape)
    if wrong:
        raise ValueError(f"The adapter's layers {wrong[:3]} do not match a weight of {base} (missing "
                         "or another shape): fuse onto the model it was trained on.")
    for file in files:  # through mlx: numpy has no bfloat16, the dtype of real checkpoints
        tensors = mx.load(str(file))
        for key in list(tensors):
            if key in deltas:
                weight = tensors[key]
                tensors[key] = (weight.astype(mx.float32) + mx.array(deltas[key])).astype(weight.dtype)
        tmp = folder / (file.stem + ".tmp.safetensors")
        mx.save_safetensors(str(tmp), tensors, metadata={"format": "pt"})
        tmp.replace(folder / file.name)
    for name in ("config.json", "model.safetensors.index.json", *TOKENIZER_FILES):
        if (base / name).is_file():
            shutil.copyfile(base / name, folder / name)
    return folder
