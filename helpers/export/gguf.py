"""GGUF files: our own writer (one ``.gguf`` for llama.cpp / Ollama from a merged folder), and
reading one back (weight type, metadata).

The writer uses the ``gguf`` package's ``GGUFWriter`` (llama.cpp's gguf-py) and converts
Qwen2/Qwen2.5 and Qwen3 dense models; GPT-OSS goes through Unsloth's saver
(:mod:`helpers.export.unsloth_gguf`) or llama.cpp's ``convert_hf_to_gguf.py``.
:func:`helpers.export.export_gguf` picks the converter.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from helpers.export.hf import read_json, size_mb

log = logging.getLogger(__name__)

GGUF_OUTTYPES = ("f16", "f32", "q8_0")
#: HF ``model_type`` -> llama.cpp architecture name, for the models our converter writes
GGUF_ARCH_FOR_MODEL_TYPE = {"qwen2": "qwen2", "qwen3": "qwen3"}
#: llama.cpp architecture -> our chat family
FAMILY_FOR_GGUF_ARCH = {"qwen2": "qwen2.5", "qwen3": "qwen3"}


def gguf_weight_type(gguf_path: str | os.PathLike) -> str:
    """The type most of a GGUF file's weights are stored in, as a lower-case name (``f16``,
    ``q8_0``, ``mxfp4``...): the tensor type holding the most elements among the 2-D and larger
    tensors (norms and biases stay float32 in every outtype)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    counts: dict[str, int] = {}
    for t in reader.tensors:
        if len(t.shape) >= 2:
            kind = t.tensor_type.name.lower()
            counts[kind] = counts.get(kind, 0) + int(t.n_elements)
    if not counts:
        raise ValueError(f"{gguf_path} holds no weight matrices.")
    return max(counts, key=counts.get)


def _looks_special(token: str) -> bool:
    return (token.startswith("<|") and token.endswith("|>")) or (
        token.startswith("<｜") and token.endswith("｜>"))


def gguf_vocab(tokenizer, n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens in id order and their llama.cpp token types, padded to the model's ``n_vocab``
    rows with unused ``[PAD<id>]`` tokens (as llama.cpp's converter does)."""
    import gguf

    vocab = tokenizer.get_vocab()
    if len(vocab) > n_vocab:
        raise ValueError(f"The tokenizer has {len(vocab)} tokens but the model only {n_vocab} "
                         "embedding rows; the merged folder's tokenizer does not fit its model.")
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            special = decoder[i].special if i in decoder else False
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special or _looks_special(token)
                         else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _rope_theta(cfg: dict) -> float:
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise NotImplementedError(
            f"The merged model uses {kind!r} RoPE scaling, which our GGUF writer does not encode; "
            "convert it with llama.cpp's convert_hf_to_gguf.py.")
    theta = rope.get("rope_theta", cfg.get("rope_theta"))
    if theta is None:
        raise ValueError("config.json states no rope_theta (in rope_parameters or at the top level).")
    return float(theta)


def write_gguf(merged_dir: Path, out_path: Path, outtype: str, name: str) -> Path:
    import gguf
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    t0 = time.time()
    cfg = read_json(merged_dir / "config.json")
    arch_name = GGUF_ARCH_FOR_MODEL_TYPE[cfg["model_type"]]
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    if cfg.get("use_sliding_window"):
        raise NotImplementedError("use_sliding_window=true is not encoded by our GGUF writer; "
                                  "use llama.cpp's convert_hf_to_gguf.py.")
    n_layers = cfg["num_hidden_layers"]
    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    n_vocab = cfg["vocab_size"]
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f".{out_path.name}.partial")
    writer = gguf.GGUFWriter(str(tmp_path), arch_name)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        writer.add_context_length(cfg["max_position_embeddings"])
        writer.add_embedding_length(cfg["hidden_size"])
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(cfg["intermediate_size"])
        writer.add_head_count(n_head)
        writer.add_head_count_kv(cfg.get("num_key_value_heads", n_head))
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_freq_base(_rope_theta(cfg))
        writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        writer.add_vocab_size(n_vocab)
        writer.add_file_type(ftype)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

        tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
        tokens, types = gguf_vocab(tokenizer, n_vocab)
        writer.add_tokenizer_model("gpt2")          # byte-level BPE
        writer.add_tokenizer_pre("qwen2")           # llama.cpp's name for the Qwen2/Qwen3 split regex
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        # merges, bos/eos/pad ids, add_bos/add_eos and the chat template, read the way llama.cpp's
        # converter reads them (tokenizer.json, tokenizer_config.json, chat_template.jinja, config.json)
        special = gguf.SpecialVocab(merged_dir, load_merges=True, n_vocab=n_vocab)
        if not special.merges:
            raise ValueError(f"{merged_dir}/tokenizer.json has no BPE merges; a GGUF 'gpt2' "
                             "tokenizer needs them.")
        if special.chat_template is None and tokenizer.chat_template:
            special.chat_template = tokenizer.chat_template
        if "eos" not in special.special_token_ids and tokenizer.eos_token_id is not None:
            special.special_token_ids["eos"] = tokenizer.eos_token_id
        if "pad" not in special.special_token_ids and tokenizer.pad_token_id is not None:
            special.special_token_ids["pad"] = tokenizer.pad_token_id
        # stated, not left to llama.cpp's per-vocabulary default (Qwen adds no BOS)
        special.add_special_token.setdefault("bos", bool(getattr(tokenizer, "add_bos_token", False)))
        special.add_to_gguf(writer, quiet=True)

        # Two passes over the safetensors: first the tensor directory (names, shapes, types),
        # then the data one tensor at a time, so memory holds one tensor, never the model.
        plan = _gguf_tensor_plan(merged_dir, arch, arch_name, n_layers, outtype,
                                 tied=bool(cfg.get("tie_word_embeddings", False)))
        for item in plan:
            writer.add_tensor_info(item["name"], item["byte_shape"], item["np_dtype"],
                                   item["nbytes"], raw_dtype=item["qtype"])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for file, items in _by_file(plan):
            with safe_open(str(file), framework="pt") as st:
                for item in items:
                    data = st.get_tensor(item["key"]).to(torch.float32).numpy()
                    writer.write_tensor_data(gguf.quants.quantize(data, item["gguf_type"]))
        written = len(plan)
    except BaseException:
        writer.close()
        tmp_path.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp_path, out_path)
    log.info("GGUF (%s, %s, %d tensors) written to %s (%.1f MB) in %.1f s", arch_name, outtype,
             written, out_path, size_mb(out_path), time.time() - t0)
    return out_path


def _gguf_qtype(shape: Sequence[int], outtype: str):
    import gguf
    Q = gguf.GGMLQuantizationType
    if outtype == "f32" or len(shape) < 2:   # norms and biases stay float32
        return Q.F32
    if outtype == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return Q.Q8_0
    return Q.F16


def _gguf_tensor_plan(merged_dir: Path, arch, arch_name: str, n_layers: int, outtype: str, *,
                      tied: bool) -> list[dict[str, Any]]:
    """Every tensor to write: HF key, GGUF name, type and stored (byte) shape, in file order."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    Q = gguf.GGMLQuantizationType
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    files = sorted(merged_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{merged_dir} has no .safetensors weights.")
    plan = []
    for file in files:
        with safe_open(str(file), framework="pt") as st:
            for key in st.keys():
                if key == "lm_head.weight" and tied:
                    continue  # llama.cpp writes output.weight only when it is not the embedding
                name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ValueError(f"{file.name}: no GGUF name for tensor {key!r} in "
                                     f"architecture {arch_name}.")
                shape = tuple(st.get_slice(key).get_shape())
                qtype = _gguf_qtype(shape, outtype)
                n = int(np.prod(shape))
                if qtype == Q.F32:
                    item = {"np_dtype": np.float32, "byte_shape": shape, "nbytes": 4 * n, "qtype": None}
                elif qtype == Q.F16:
                    item = {"np_dtype": np.float16, "byte_shape": shape, "nbytes": 2 * n, "qtype": None}
                else:
                    byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
                    item = {"np_dtype": np.uint8, "byte_shape": byte_shape,
                            "nbytes": int(np.prod(byte_shape)), "qtype": qtype}
                plan.append({"file": file, "key": key, "name": name, "gguf_type": qtype, **item})
    return plan


def _by_file(plan):
    files: dict[Path, list] = {}
    for item in plan:
        files.setdefault(item["file"], []).append(item)
    return files.items()


def gguf_metadata(gguf_path: str | os.PathLike) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (token and merge lists as their lengths)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            value = field.contents()
        except Exception:  # noqa: BLE001  (a type this reader cannot render)
            continue
        if isinstance(value, list) and len(value) > 64:
            value = len(value)
        out[key] = value
    out["_tensors"] = {t.name: (t.tensor_type.name, [int(x) for x in t.shape]) for t in reader.tensors}
    return out


def gguf_added_tokens(gguf_path: str | os.PathLike) -> list[tuple[str, bool]]:
    """The tokens a GGUF file marks as control or user-defined, as ``(text, special)``: what
    llama.cpp matches whole before splitting text (Qwen3's ``<think>``, the chat markers)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    types = reader.fields.get("tokenizer.ggml.token_type")
    if tokens is None or types is None:
        return []
    control, user = int(gguf.TokenType.CONTROL), int(gguf.TokenType.USER_DEFINED)
    return [(text, kind == control) for text, kind in zip(tokens.contents(), types.contents())
            if kind in (control, user)]


def gguf_header(gguf_path: Path) -> dict[str, Any]:
    """The scalar metadata of a GGUF file, read quickly (arrays only as their lengths)."""
    try:  # transformers' fast reader (5.x); the gguf package's reader parses every token
        from transformers.integrations.gguf import read_gguf_metadata
    except ImportError:
        return gguf_metadata(gguf_path)
    return read_gguf_metadata(str(gguf_path))[0]


def safe_name(name: str) -> str:
    """The last part of ``name`` with every character outside letters, digits and ``-_.`` as ``_``
    (a GGUF file name)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "model"
