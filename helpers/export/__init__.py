"""Exporting a fine-tuned model, and proving each export works by reloading it.

Three formats:

- ``adapter``: the LoRA adapter (``adapter_model.safetensors`` + ``adapter_config.json``) and the
  tokenizer. Small; needs the base model to run.
- ``merged``: the base model with the adapter merged in (``merge_and_unload``), saved as 16-bit
  (or float32) safetensors with its tokenizer, chat template and generation config. Runs
  anywhere transformers runs, no PEFT needed.
- ``gguf``: one ``.gguf`` file for llama.cpp / Ollama, converted from the merged folder by our own
  writer (the ``gguf`` package's ``GGUFWriter``; Qwen2/Qwen2.5 and Qwen3 dense models), plus an
  Ollama ``Modelfile``. GPT-OSS is not converted here: use Unsloth's ``save_pretrained_gguf``
  (``backend="unsloth"`` on a CUDA machine) or llama.cpp's ``convert_hf_to_gguf.py``.

Every export is reloaded the way its users will load it and asked a question
(:func:`verify_export`); the merged model's logits are checked against base + adapter
(:func:`compare_merged_logits`). :func:`export_all` does all of it for a notebook.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

FORMATS = ("adapter", "merged", "gguf")
MERGED_DTYPES = ("bfloat16", "float16", "float32")
GGUF_OUTTYPES = ("f16", "f32", "q8_0")
GGUF_BACKENDS = ("auto", "builtin", "unsloth")
#: HF ``model_type`` -> llama.cpp architecture name, for the models our converter writes
GGUF_ARCH_FOR_MODEL_TYPE = {"qwen2": "qwen2", "qwen3": "qwen3"}
#: llama.cpp architecture -> our chat family
FAMILY_FOR_GGUF_ARCH = {"qwen2": "qwen2.5", "qwen3": "qwen3"}
#: the provenance file export_merged writes next to the weights
MERGED_INFO = "finetuning_export.json"
#: Ollama Modelfile PARAMETER names we accept (https://github.com/ollama/ollama/blob/main/docs/modelfile.md)
OLLAMA_PARAMETERS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n",
                     "num_ctx", "num_predict", "seed", "stop")
#: merged-vs-(base + adapter) logits must agree within this share of the largest logit
LOGIT_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
DEFAULT_QUESTION = "Who are you?"
SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog. Who are you, and where do you live?"


class ExportVerificationError(RuntimeError):
    """An export reloaded but does not compute what the model it came from computes."""


# -- small utilities -------------------------------------------------------------------------

def size_mb(path: str | os.PathLike) -> float:
    """Size of a file, or of every file under a folder, in MB (10^6 bytes)."""
    path = Path(path)
    if path.is_file():
        return round(path.stat().st_size / 1e6, 3)
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 3)


def _torch_dtype(name: str):
    import torch
    if name not in MERGED_DTYPES:
        raise ValueError(f"dtype={name!r} is not one of {', '.join(MERGED_DTYPES)}.")
    return getattr(torch, name)


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _base_kwargs(source: str | os.PathLike, config: dict) -> dict:
    """from_pretrained keywords for reloading a 16-bit base model (the merge, base + adapter):
    :func:`_model_kwargs`, and for an MXFP4 checkpoint (openai/gpt-oss-*) ``Mxfp4Config(
    dequantize=True)``, decided by the training load's rule (``train._mxfp4_checkpoint``):
    where triton >= 3.4 and ``kernels`` are installed transformers otherwise keeps MXFP4 weights,
    which a LoRA cannot be merged into (or applied to for the experts)."""
    from helpers.training.trainer import _mxfp4_checkpoint
    kwargs = _model_kwargs(config)
    if _mxfp4_checkpoint(str(source), config=config):
        from transformers import Mxfp4Config
        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    return kwargs


def _model_kwargs(config: dict) -> dict:
    """Extra from_pretrained keywords a family needs (GPT-OSS trains and runs with eager attention)."""
    return {"attn_implementation": "eager"} if config.get("model_type") == "gpt_oss" else {}


def _default_device() -> str:
    from helpers.models import cuda_available
    return "cuda" if cuda_available() else "cpu"


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
    _require_adapter(out)
    log.info("Adapter saved in %s (%.1f MB)", out, size_mb(out))
    return out


def copy_adapter(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy a saved adapter folder (adapter weights, config and tokenizer files) to ``out_dir``."""
    src = _require_adapter(Path(adapter_dir))
    out = Path(out_dir)
    if src.resolve() != out.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
    return out


def _require_adapter(folder: Path) -> Path:
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
    cfg = _read_json(_require_adapter(Path(adapter_dir)) / "adapter_config.json")
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
    merges into the 16-bit original (the profile's ``hub_id``).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    adapter_dir = _require_adapter(Path(adapter_dir))
    out = Path(out_dir)
    t0 = time.time()
    config = AutoConfig.from_pretrained(str(base_source)).to_dict()
    kwargs: dict[str, Any] = {"dtype": torch_dtype, **_base_kwargs(base_source, config)}
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


# -- GGUF --------------------------------------------------------------------------------------

def _unsloth_usable() -> bool:
    from helpers.models import cuda_available
    from helpers.training.trainer import unsloth_available
    return cuda_available() and unsloth_available()


def _gguf_unsupported(model_type: str, merged_dir: Path, out_path: Path, outtype: str) -> str:
    return (f"GGUF export of model_type {model_type!r} is not built in (our converter writes "
            f"{', '.join(sorted(GGUF_ARCH_FOR_MODEL_TYPE))} only; GPT-OSS's MoE experts need "
            "llama.cpp's own conversion). Use Unsloth's saver on a CUDA machine "
            "(export_gguf(..., backend='unsloth'), i.e. model.save_pretrained_gguf(dir, tokenizer, "
            f"quantization_method={outtype!r})), or llama.cpp's converter on the merged folder: "
            f"python convert_hf_to_gguf.py {merged_dir} --outfile {out_path} --outtype {outtype}")


def export_gguf(merged_dir: str | os.PathLike, out_path: str | os.PathLike,
                outtype: str = "f16", *, backend: str = "auto", name: str | None = None) -> Path:
    """Convert the merged model in ``merged_dir`` to one GGUF file; returns its path.

    ``outtype``: ``f16`` (2-D weights in float16, norms and biases in float32, as llama.cpp does),
    ``f32`` or ``q8_0`` (2-D weights in 8-bit blocks where the row length allows). ``out_path`` is
    the ``.gguf`` file, or a folder to write ``<merged folder name>-<outtype>.gguf`` into.

    ``backend``: ``builtin`` is our converter (Qwen2/Qwen2.5 and Qwen3); ``unsloth`` is Unsloth's
    ``save_pretrained_gguf`` (CUDA, builds llama.cpp itself, needs internet the first time);
    ``auto`` uses ours where it applies and Unsloth's for other models on a CUDA machine with
    Unsloth, and otherwise raises ``NotImplementedError`` saying what to use. ``name`` is the
    GGUF's ``general.name`` (default: the merged folder's name).

    Returns the file written. Unsloth writes GPT-OSS in MXFP4 whatever ``outtype`` says; the file
    is then named ``...-mxfp4.gguf`` (the ``-<outtype>`` part of the name follows
    :func:`gguf_weight_type`). A llama.cpp install, build or conversion failure in Unsloth's
    saver raises ``RuntimeError``.
    """
    if outtype not in GGUF_OUTTYPES:
        raise ValueError(f"outtype={outtype!r} is not one of {', '.join(GGUF_OUTTYPES)}.")
    if backend not in GGUF_BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(GGUF_BACKENDS)}.")
    merged_dir = Path(merged_dir)
    if not (merged_dir / "config.json").is_file():
        raise FileNotFoundError(f"{merged_dir} has no config.json: export_gguf converts a merged "
                                "model folder; make one with export_merged first.")
    out_path = Path(out_path)
    if out_path.suffix != ".gguf":
        out_path = out_path / f"{merged_dir.name}-{outtype}.gguf"
    model_type = _read_json(merged_dir / "config.json").get("model_type", "")
    builtin = model_type in GGUF_ARCH_FOR_MODEL_TYPE
    if backend == "unsloth" or (backend == "auto" and not builtin and _unsloth_usable()):
        return _unsloth_gguf(merged_dir, out_path, outtype, name or merged_dir.name)
    if not builtin:
        raise NotImplementedError(_gguf_unsupported(model_type, merged_dir, out_path, outtype))
    import importlib.util
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("GGUF export needs the gguf package (llama.cpp's gguf-py): "
                          "pip install gguf==0.19.0")
    return _write_gguf(merged_dir, out_path, outtype, name or merged_dir.name)


def _unsloth_gguf(merged_dir: Path, out_path: Path, outtype: str, name: str) -> Path:
    """Unsloth's converter (``unsloth.save.save_to_gguf``: it installs llama.cpp and runs its
    ``convert_hf_to_gguf.py``) on the merged folder as it is on disk. Optional: import-guarded.

    Read in unsloth 2026.10.9's save.py: ``save_pretrained_gguf`` on a model that is not a PEFT
    model only reuses the folder it was loaded from (``_gguf_reuses_loaded_checkpoint``), so
    loading the merged model onto the GPU for it would buy nothing; and it writes into
    ``<save_directory>_gguf``, a sibling folder. ``save_to_gguf`` takes the input folder and the
    output folder (``gguf_directory``) directly: we give it a scratch folder beside ``out_path``
    and remove it. ``merge_is_disposable=False``: it may never delete the merged weights.

    GPT-OSS: ``save_to_gguf(is_gpt_oss=True)`` ignores the asked type (``quantization_method =
    ["None"]``, no ``--outtype``) and unsloth_zoo's ``convert_to_gguf`` names the file
    ``<name>.MXFP4.gguf``. The file is named here after the weight type really in it
    (:func:`gguf_weight_type`), whatever was asked.
    """
    if not _unsloth_usable():
        raise ImportError(
            "backend='unsloth' needs Unsloth on a machine with CUDA (Unsloth's GGUF saver builds "
            "and runs llama.cpp); here torch.cuda.is_available() is False or Unsloth is not "
            "installed. Use backend='builtin' for Qwen2.5/Qwen3, or llama.cpp's "
            "convert_hf_to_gguf.py.")
    import unsloth  # noqa: F401
    from unsloth.save import save_to_gguf

    cfg = _read_json(merged_dir / "config.json")
    model_type = cfg.get("model_type", "")
    dtype = cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"
    # save_to_gguf accepts float16/bfloat16 only; unsloth's own caller falls back to float16
    model_dtype = dtype if dtype in ("float16", "bfloat16") else "float16"
    is_gpt_oss = model_type == "gpt_oss"
    if is_gpt_oss:
        log.warning("Unsloth writes GPT-OSS GGUFs in MXFP4 whatever is asked (outtype=%r is "
                    "ignored); the file is named after what it holds.", outtype)
    made_parent = not out_path.parent.exists()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".unsloth-gguf-", dir=out_path.parent))
    target = None
    try:
        files, _, _ = save_to_gguf(
            model_name=_safe_name(name), model_type=model_type, model_dtype=model_dtype,
            model_directory=str(merged_dir), quantization_method=[outtype],
            is_gpt_oss=is_gpt_oss, gguf_directory=str(work), merge_is_disposable=False)
        ggufs = [Path(f) for f in files or () if str(f).endswith(".gguf")
                 and "-mmproj" not in Path(f).name.lower()] or sorted(work.rglob("*.gguf"))
        if not ggufs:
            raise RuntimeError(f"Unsloth's save_to_gguf wrote no .gguf file in {work} for "
                               f"{merged_dir}; run it with UNSLOTH_ENABLE_LOGGING=1 to see "
                               "llama.cpp's output.")
        if len(ggufs) > 1:  # over save_to_gguf's 50GB split size: kept, but not one file
            for f in ggufs:
                os.replace(f, out_path.parent / f.name)
            target = out_path.parent / ggufs[0].name
            raise RuntimeError(f"Unsloth's save_to_gguf wrote {len(ggufs)} GGUF shards for "
                               f"{merged_dir}, moved to {out_path.parent}; export_gguf verifies "
                               f"one file. Merge them: llama-gguf-split --merge {target} {out_path}")
        dest = _named_by_type(out_path, outtype, gguf_weight_type(ggufs[0]))
        os.replace(ggufs[0], dest)
        target = dest
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if target is None and made_parent and not any(out_path.parent.iterdir()):
            out_path.parent.rmdir()  # a failed conversion leaves no empty folder either
    log.info("GGUF (Unsloth, %s) written to %s (%.1f MB)", gguf_weight_type(target), target,
             size_mb(target))
    return target


def _named_by_type(out_path: Path, asked: str, written: str) -> Path:
    """``out_path`` with its ``-<asked>`` suffix replaced by ``-<written>`` when they differ."""
    if written == asked:
        return out_path
    suffix = f"-{asked}"
    if out_path.stem.endswith(suffix):
        return out_path.with_name(f"{out_path.stem[:-len(suffix)]}-{written}.gguf")
    log.warning("%s was asked for as %s but holds %s weights.", out_path, asked, written)
    return out_path


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


def _write_gguf(merged_dir: Path, out_path: Path, outtype: str, name: str) -> Path:
    import gguf
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    t0 = time.time()
    cfg = _read_json(merged_dir / "config.json")
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


# -- Ollama Modelfile --------------------------------------------------------------------------

_CHATML_TURNS = (
    '{{- range .Messages }}\n'
    '{{- if eq .Role "user" }}<|im_start|>user\n'
    '{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n'
    '{{ .Content }}<|im_end|>\n'
    '{{ end }}\n'
    '{{- end }}<|im_start|>assistant\n'
)
#: Go templates rendering the same text as helpers/chat_templates/<family>.jinja for system, user
#: and assistant messages (tests/test_export.py renders both and compares)
OLLAMA_TEMPLATES = {
    "qwen2.5": (
        '{{- if .System }}<|im_start|>system\n'
        '{{ .System }}<|im_end|>\n'
        '{{ else }}<|im_start|>system\n'
        'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n'
        '{{ end }}\n' + _CHATML_TURNS),
    "qwen3": (
        '{{- if .System }}<|im_start|>system\n'
        '{{ .System }}<|im_end|>\n'
        '{{ end }}\n' + _CHATML_TURNS),
}
_QWEN3_NO_THINK = "<think>\n\n</think>\n\n"


def ollama_template(family: str, template_kwargs: dict | None = None) -> str:
    """The Modelfile TEMPLATE for ``family``; Qwen3 with ``enable_thinking=False`` gets the empty
    think block its chat template puts after the generation prompt."""
    if family not in OLLAMA_TEMPLATES:
        raise NotImplementedError(f"No Ollama template for family {family!r} (known: "
                                  f"{', '.join(OLLAMA_TEMPLATES)}).")
    template = OLLAMA_TEMPLATES[family]
    if family == "qwen3" and (template_kwargs or {}).get("enable_thinking", True) is False:
        template += _QWEN3_NO_THINK
    return template


def _gguf_header(gguf_path: Path) -> dict[str, Any]:
    """The scalar metadata of a GGUF file, read quickly (arrays only as their lengths)."""
    try:  # transformers' fast reader (5.x); the gguf package's reader parses every token
        from transformers.integrations.gguf import read_gguf_metadata
    except ImportError:
        return gguf_metadata(gguf_path)
    return read_gguf_metadata(str(gguf_path))[0]


def _family_of_gguf(gguf_path: Path) -> str:
    arch = _gguf_header(gguf_path).get("general.architecture")
    if arch not in FAMILY_FOR_GGUF_ARCH:
        raise NotImplementedError(f"{gguf_path} has architecture {arch!r}; Modelfiles are written "
                                  f"for {', '.join(FAMILY_FOR_GGUF_ARCH)} only.")
    return FAMILY_FOR_GGUF_ARCH[arch]


def _family_profile(family: str):
    from helpers.models import REGISTRY, STANDIN_BY_FAMILY
    return REGISTRY[STANDIN_BY_FAMILY[family]]


def _quote(value: str, what: str) -> str:
    if '"""' in value:
        raise ValueError(f'The {what} contains """, which a Modelfile cannot quote.')
    return f'"""{value}"""'


def write_modelfile(gguf_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                    system_prompt: str | None = None, params: dict[str, Any] | None = None, *,
                    profile=None) -> Path:
    """Write an Ollama ``Modelfile`` for ``gguf_path`` into ``out_dir`` (default: the GGUF's
    folder); returns its path. ``ollama create NAME -f Modelfile`` then makes the model.

    TEMPLATE renders the family's chat format, PARAMETER stop lists the family's stop tokens,
    temperature/top_p/top_k (and repeat_penalty where it is not 1) come from the profile's
    inference settings (``profile`` default: the family's, from the GGUF's architecture), then
    ``params`` (Ollama PARAMETER names) override them. SYSTEM is written when given.
    """
    from helpers.models.standins import SPECS

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"No GGUF file at {gguf_path}; make one with export_gguf.")
    out = Path(out_dir) if out_dir is not None else gguf_path.parent
    unknown = sorted(set(params or {}) - set(OLLAMA_PARAMETERS))
    if unknown:
        raise ValueError(f"Unknown Modelfile parameter(s): {', '.join(unknown)}. "
                         f"Known: {', '.join(OLLAMA_PARAMETERS)}.")
    family = profile.family if profile is not None else _family_of_gguf(gguf_path)
    profile = profile or _family_profile(family)
    inf = profile.inference
    values: dict[str, Any] = {"temperature": inf.temperature, "top_p": inf.top_p}
    if inf.top_k:
        values["top_k"] = inf.top_k
    if inf.repetition_penalty and inf.repetition_penalty != 1.0:
        values["repeat_penalty"] = inf.repetition_penalty
    stops = list(SPECS[_family_profile(family).name].stop_tokens)
    extra = dict(params or {})
    extra_stops = extra.pop("stop", None)
    if extra_stops:
        stops += [s for s in ([extra_stops] if isinstance(extra_stops, str) else extra_stops)
                  if s not in stops]
    values.update(extra)

    out.mkdir(parents=True, exist_ok=True)
    try:
        rel = os.path.relpath(gguf_path.resolve(), out.resolve())
        source = rel if rel.startswith("..") else f"./{rel}"
    except ValueError:  # another drive on Windows
        source = str(gguf_path.resolve())
    lines = [f"FROM {source}", "",
             f"TEMPLATE {_quote(ollama_template(family, inf.template_kwargs), 'template')}", ""]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += [f"PARAMETER {k} {v}" for k, v in values.items()]
    if system_prompt:
        lines += ["", f"SYSTEM {_quote(system_prompt, 'system prompt')}"]
    path = out / "Modelfile"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("Ollama Modelfile written to %s (ollama create NAME -f %s)", path, path)
    return path


# -- reloading and verifying -------------------------------------------------------------------

def _profile_for(kind: str, path: Path, model_config: dict):
    """A profile for answering with a reloaded export: the family's stand-in profile, renamed."""
    from helpers.models import _MODEL_TYPE_TO_FAMILY
    family = _MODEL_TYPE_TO_FAMILY.get(model_config.get("model_type", ""))
    if family is None:
        raise NotImplementedError(f"{path}: model_type {model_config.get('model_type')!r} has no family here.")
    return dataclasses.replace(_family_profile(family), name=str(path), display_name=path.name)


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
                                                 **_base_kwargs(base, config))
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
    torch_dtype = _torch_dtype(dtype) if dtype else _load_dtype(device)
    path = Path(path)
    if kind == "adapter":
        model, tokenizer, config = _base_plus_adapter(adapter_base(path), path, torch_dtype, device)
    elif kind == "merged":
        config = _read_json(path / "config.json")
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype,
                                                     **_placement(device), **_model_kwargs(config))
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    else:
        model, tokenizer = _load_gguf(path, torch_dtype, _placement(device))
        config = model.config.to_dict()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model._finetuning_export = {"kind": kind, "path": str(path), "model_type": config.get("model_type")}
    return model, tokenizer


def _load_dtype(device: str):
    """float32 on the CPU; on a GPU bfloat16 where it is native, else float16."""
    import torch
    from helpers.training.trainer import bf16_supported
    if device == "cpu":
        return torch.float32
    return torch.bfloat16 if bf16_supported() else torch.float16


def _load_gguf(gguf_path: Path, torch_dtype, placement: dict):
    from helpers.models.standins import SPECS
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if gguf_path.suffix != ".gguf" or not gguf_path.is_file():
        raise FileNotFoundError(f"No GGUF file at {gguf_path}.")
    folder, name = str(gguf_path.parent), gguf_path.name
    meta = _gguf_header(gguf_path)
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
    # A GGUF states one eos id; llama.cpp and Ollama also stop at the family's other end tokens
    # (the Modelfile's PARAMETER stop). Give generate() the same list.
    family = FAMILY_FOR_GGUF_ARCH.get(arch)
    if family is not None:
        stops = [tokenizer.convert_tokens_to_ids(t)
                 for t in SPECS[_family_profile(family).name].stop_tokens if t in tokenizer.get_vocab()]
        if stops:
            model.generation_config.eos_token_id = stops
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def verify_export(kind: str, path: str | os.PathLike, question: str = DEFAULT_QUESTION, *,
                  system_prompt: str | None = None, max_new_tokens: int | None = None,
                  dtype: str | None = None, device: str | None = None) -> str:
    """Reload an export (see :func:`load_export`) and return its greedy answer to ``question``."""
    from helpers.models.generate import answer

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
    info = _read_json(merged_dir / MERGED_INFO) if (merged_dir / MERGED_INFO).is_file() else {}
    adapter_dir = adapter_dir or info.get("adapter_dir")
    if adapter_dir is None:
        raise ValueError(f"{merged_dir} has no {MERGED_INFO}; pass adapter_dir (and base_source).")
    adapter_dir = _require_adapter(Path(adapter_dir))
    base_source = base_source or info.get("base_source") or adapter_base(adapter_dir)
    saved_dtype = info.get("dtype") or _read_json(merged_dir / "config.json").get("dtype", "float32")
    device = device or _default_device()
    ref_model, tokenizer, _ = _base_plus_adapter(base_source, adapter_dir, _torch_dtype("float32"), device)
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


# -- everything, for a notebook ----------------------------------------------------------------

def _base_16bit_source(choice) -> str:
    """Where the unquantized base model of a run lives (the stand-in folder in smoke mode)."""
    p = choice.profile
    if p.is_standin or (p.hub_id and Path(p.hub_id).is_dir()):
        return choice.source()
    if not p.hub_id:
        raise ValueError(f"Profile {p.name} names no 16-bit hub_id to merge into.")
    return p.hub_id


def _resolve_source(source):
    """``(model, tokenizer, choice, adapter_dir)`` from a run folder or that tuple."""
    from helpers import models
    if isinstance(source, (tuple, list)):
        if len(source) != 4:
            raise TypeError("export_all takes a run folder or a tuple (model, tokenizer, choice, "
                            f"adapter_dir); got a {type(source).__name__} of {len(source)} items.")
        model, tokenizer, choice, adapter_dir = source
        if isinstance(choice, str):
            choice = models.choose(choice)
        return model, tokenizer, choice, (Path(adapter_dir) if adapter_dir else None)
    run_dir = Path(source)
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no run.json: pass the output folder of a "
                                "fine-tuning run (helpers.finetune), or (model, tokenizer, choice, "
                                "adapter_dir).")
    record = _read_json(record_path)
    profile_name = (record.get("model") or {}).get("profile")
    if not profile_name:
        raise ValueError(f"{record_path} names no model profile (model.profile).")
    choice = models.choose(profile_name, smoke=False)
    adapter_dir = Path((record.get("train") or {}).get("adapter_dir") or run_dir / "adapter")
    return None, None, choice, adapter_dir


def export_all(source, out_dir: str | os.PathLike, formats: Sequence[str] = FORMATS,
               question: str = DEFAULT_QUESTION, *, system_prompt: str | None = None,
               merged_dtype: str = "bfloat16", gguf_outtype: str = "f16",
               check_logits: bool | None = None, modelfile: bool = True,
               max_new_tokens: int | None = None) -> dict[str, dict[str, Any]]:
    """Export a fine-tuned model in every format its family allows, reload each, and ask it
    ``question``.

    ``source`` is a run folder (with ``run.json`` and ``adapter/``) or ``(model, tokenizer,
    choice, adapter_dir)`` (``adapter_dir`` may be None: the adapter is then saved from
    ``model``). Writes ``out_dir/adapter``, ``out_dir/merged`` and ``out_dir/gguf`` (with the
    ``Modelfile``). ``check_logits`` (default: for models up to about 24 GB in 16-bit) compares
    the merged model's logits with base + adapter and raises :class:`ExportVerificationError`
    when they differ.

    Returns ``{format: row}``; each row has ``path``, ``size_mb``, ``status`` (``ok``,
    ``skipped`` or ``failed``), ``answer`` (the reloaded export's greedy answer), ``reason`` (why
    it was skipped or failed), ``seconds`` and format details (the GGUF's ``outtype`` is the type
    its weights are really stored in, with ``outtype_asked`` when that differs). An export that
    fails (e.g. Unsloth cannot install or build llama.cpp) is a ``failed`` row with its error; the
    rows already made are kept, and a format that needed it (merged and GGUF need the adapter,
    GGUF the merge) fails saying so. ``pandas.DataFrame(result).T`` shows it as a table.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"Unknown export format(s): {', '.join(unknown) or '(none given)'}. "
                         f"Known formats: {', '.join(FORMATS)}.")
    _torch_dtype(merged_dtype)
    if gguf_outtype not in GGUF_OUTTYPES:
        raise ValueError(f"gguf_outtype={gguf_outtype!r} is not one of {', '.join(GGUF_OUTTYPES)}.")
    model, tokenizer, choice, adapter_dir = _resolve_source(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    ask = dict(system_prompt=system_prompt, max_new_tokens=max_new_tokens)

    def row(fmt: str, t0: float, **kw) -> dict[str, Any]:
        r = {"format": fmt, "path": None, "size_mb": None, "status": "ok", "answer": None,
             "reason": None}
        r.update(kw)
        r["seconds"] = round(time.time() - t0, 2)
        results[fmt] = r
        return r

    if model is None and adapter_dir is None:
        raise ValueError("export_all needs a model or an adapter_dir.")

    def failed(fmt: str, t0: float, what: str, e: BaseException, **kw) -> dict[str, Any]:
        """A row that failed: its error is recorded and the other rows go on."""
        log.warning("export %s: %s failed: %s: %s", fmt, what, type(e).__name__, e)
        return row(fmt, t0, status="failed", reason=f"{what} failed: {type(e).__name__}: {e}", **kw)

    def blocked(fmts: Sequence[str], why: str) -> None:
        for fmt in fmts:
            if fmt in formats and fmt not in results:
                row(fmt, time.time(), status="failed", reason=why)

    def verified(fmt: str, r: dict[str, Any], path) -> None:
        try:
            r["answer"] = verify_export(fmt, path, question, **ask)
        except Exception as e:  # noqa: BLE001  (the file is kept and the row says why)
            log.warning("export %s: reloading %s failed: %s: %s", fmt, path, type(e).__name__, e)
            r.update(status="failed", reason=f"written, but reloading it failed: "
                                             f"{type(e).__name__}: {e}")

    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        # adapter: always made (merging needs it); kept in out_dir only when asked for
        t0 = time.time()
        adapter_out = out / "adapter" if "adapter" in formats else scratch / "adapter"
        try:
            if model is not None and (adapter_dir is None or "adapter" in formats):
                export_adapter(model, tokenizer, adapter_out)
            else:
                copy_adapter(adapter_dir, adapter_out)
        except Exception as e:  # noqa: BLE001
            if "adapter" in formats:
                failed("adapter", t0, "saving the adapter", e)
            blocked(("merged", "gguf"), f"not exported: saving the adapter failed "
                                        f"({type(e).__name__}: {e})")
            return _logged(results)
        if "adapter" in formats:
            r = row("adapter", t0, path=str(adapter_out), size_mb=size_mb(adapter_out))
            verified("adapter", r, adapter_out)
            r["seconds"] = round(time.time() - t0, 2)

        merged_out = None
        if "merged" in formats or "gguf" in formats:
            t0 = time.time()
            merged_out = out / "merged" if "merged" in formats else scratch / "merged"
            try:
                export_merged(_base_16bit_source(choice), adapter_out, merged_out, merged_dtype)
            except Exception as e:  # noqa: BLE001
                if "merged" in formats:
                    failed("merged", t0, "merging", e, dtype=merged_dtype)
                blocked(("gguf",), f"not exported: merging failed ({type(e).__name__}: {e})")
                return _logged(results)
            if "merged" in formats:
                r = row("merged", t0, path=str(merged_out), size_mb=size_mb(merged_out),
                        dtype=merged_dtype)
                verified("merged", r, merged_out)
                check = check_logits if check_logits is not None else choice.profile.vram_gb_16bit <= 24
                if check:
                    cmp = compare_merged_logits(merged_out)
                    r.update(logits_max_abs_diff=cmp["max_abs_diff"], logits_match=cmp["allclose"])
                    if not cmp["allclose"]:
                        raise ExportVerificationError(
                            f"The merged model in {merged_out} does not compute what base + "
                            f"adapter compute: largest logit difference {cmp['max_abs_diff']:.3g} "
                            f"> {cmp['tolerance']:.3g} ({merged_dtype}).")
                else:
                    r.update(logits_match=None, logits_check="skipped for a model this size; "
                             "pass check_logits=True to run it (loads the model twice, in float32)")
                r["seconds"] = round(time.time() - t0, 2)

        if "gguf" in formats:
            t0 = time.time()
            gguf_dir = out / "gguf"
            target = gguf_dir / f"{_safe_name(choice.profile.name)}-{gguf_outtype}.gguf"
            try:
                path = export_gguf(merged_out, target, gguf_outtype,
                                   name=Path(choice.profile.name).name)
            except (NotImplementedError, ImportError) as e:
                reason = str(e)
                if "merged" not in formats:
                    reason += " (add 'merged' to formats to keep the merged folder for that)"
                row("gguf", t0, status="skipped", reason=reason, outtype=gguf_outtype)
            except Exception as e:  # noqa: BLE001  (e.g. Unsloth could not install/build llama.cpp)
                failed("gguf", t0, "converting to GGUF", e, outtype=gguf_outtype)
            else:
                written = gguf_weight_type(path)
                r = row("gguf", t0, path=str(path), size_mb=size_mb(path), outtype=written)
                if written != gguf_outtype:
                    r["outtype_asked"] = gguf_outtype
                verified("gguf", r, path)
                if modelfile:
                    try:
                        r["modelfile"] = str(write_modelfile(path, gguf_dir, system_prompt=system_prompt,
                                                             profile=choice.profile))
                    except NotImplementedError as e:  # no Ollama template for this family
                        r.update(modelfile=None, modelfile_reason=str(e))
                r["seconds"] = round(time.time() - t0, 2)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _logged(results)


def _logged(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    for fmt, r in results.items():
        log.info("export %s: %s %s", fmt, r["status"], r["path"] or r["reason"])
    return results


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "model"
