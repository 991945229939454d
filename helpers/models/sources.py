"""Where a model outside the registry comes from: a hub id (the hub, or the local Hugging Face
cache when offline) or a GGUF file (converted once to a model folder and cached).

A GGUF file is what users of Ollama and LM Studio already have. transformers dequantizes one
while loading (``from_pretrained(folder, gguf_file=...)``: Q4_K, Q5_0, Q6_K, Q8_0, F16, ...) but
then refuses to save it ("quantized with gguf"), so the conversion copies the weights into a
fresh model of the same config and saves that, with the tokenizer and the chat template the file
carries. The folder is cached under ``$FINETUNING_CACHE/gguf/`` by the file's name, size and a
hash of its first and last megabyte, so a second run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from helpers.models import standins
from helpers.models.families import TEMPLATE_MARKERS

log = logging.getLogger(__name__)


class ModelSourceError(ValueError):
    """A hub id or GGUF file that cannot be used (not cached offline, unreadable, no template)."""


def is_gguf(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(".gguf")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` with no path that exists here."""
    parts = str(name).split("/")
    return len(parts) == 2 and all(parts) and not Path(name).expanduser().exists()


def hub_config(repo_id: str) -> dict:
    """``config.json`` of a hub model: from the local Hugging Face cache when it holds the file
    (always so with ``HF_HUB_OFFLINE=1``), else downloaded."""
    try:
        from huggingface_hub import hf_hub_download
        path = hf_hub_download(repo_id, "config.json")
    except Exception as e:  # noqa: BLE001 - offline miss, unknown repo, gated repo, no network
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        how = ("HF_HUB_OFFLINE=1 is set and the local Hugging Face cache "
               f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) does not hold it"
               if offline else f"it could not be fetched ({type(e).__name__}: {str(e)[:200]})")
        raise ModelSourceError(
            f"Model {repo_id!r} is not in the registry and its config.json could not be read: "
            f"{how}. Download it once where the hub is reachable (`hf download {repo_id}`), "
            "pass a local folder holding config.json, or a .gguf file, as `model`.") from e
    return json.loads(Path(path).read_text())


def folder_chat_template(folder: str | os.PathLike) -> str | None:
    """A model folder's chat template text (``chat_template.jinja``, else the
    ``chat_template`` of ``tokenizer_config.json``), None when it has none."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    try:
        template = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, ValueError):
        return None
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        template = "\n".join(t.get("template", "") for t in template)
    return template or None


def hub_chat_template(repo_id: str) -> str | None:
    """A hub model's chat template (``chat_template.jinja``, else ``tokenizer_config.json``),
    from the local cache or the hub; None when neither can be read."""
    from huggingface_hub import hf_hub_download
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        try:
            path = Path(hf_hub_download(repo_id, name))
        except Exception:  # noqa: BLE001 - not in the repo, not cached offline: try the next
            continue
        return folder_chat_template(path.parent)
    return None


def gguf_chat_template(gguf_path: str | os.PathLike) -> str | None:
    """The chat template a GGUF file carries (``tokenizer.chat_template``), None without one;
    read from its metadata (memory-mapped, no weights loaded)."""
    from gguf import GGUFReader
    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.chat_template")
    return str(field.contents()) if field is not None else None


def check_template(source: str | os.PathLike, family: str, model_type: str | None, *,
                   template: str | None = None) -> None:
    """Refuse a model whose own chat template does not render its family's format (a config
    and template from different models). ``source`` is a folder, whose template is read, or,
    with ``template`` given, where that template came from (a hub id, a GGUF file). A model
    without a template passes."""
    if template is None and Path(source).is_dir():
        template = folder_chat_template(source)
    marker = TEMPLATE_MARKERS[family]
    if template is not None and marker not in template:
        raise ModelSourceError(
            f"{source}: its config says model_type {model_type!r} (the {family} family), but its "
            f"chat template does not render that family's format (no {marker!r}). Use the chat "
            "template the model was trained with (its makers' tokenizer_config.json or "
            "chat_template.jinja).")


def _fingerprint(path: Path) -> str:
    """Name, size and the first and last megabyte: enough to tell two GGUF files apart without
    reading a few gigabytes."""
    h = hashlib.sha256(f"{path.name}:{path.stat().st_size}".encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def gguf_cache_dir(gguf_path: str | os.PathLike) -> Path:
    path = Path(gguf_path).expanduser().resolve()
    return standins.cache_root() / "gguf" / f"{path.stem}-{_fingerprint(path)}"


def gguf_config(gguf_path: str | os.PathLike) -> dict:
    """The transformers config of a GGUF file (read from its metadata; no weights loaded)."""
    path = Path(gguf_path).expanduser()
    if not path.is_file():
        raise ModelSourceError(f"GGUF file not found: {path}. Set `model` to the path of a .gguf file.")
    cached = gguf_cache_dir(path) / "config.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # noqa: BLE001 - an architecture transformers cannot read from GGUF
        raise ModelSourceError(
            f"transformers cannot read {path} ({type(e).__name__}: {str(e)[:200]}). Convert it "
            "to a Hugging Face folder with the tool that made it, or use the original model's "
            "hub id or folder as `model`.") from e
    out = config.to_dict()
    out.pop("quantization_config", None)
    return out


def gguf_folder(gguf_path: str | os.PathLike) -> Path:
    """A Hugging Face model folder made from ``gguf_path`` (16-bit weights, tokenizer, chat
    template), converted on first use and cached."""
    path = Path(gguf_path).expanduser().resolve()
    out = gguf_cache_dir(path)
    if (out / "model.safetensors").is_file() or (out / "model.safetensors.index.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    log.info("Converting %s to a model folder (once; cached in %s)", path.name, out)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelSourceError(
            f"{path} carries no chat template (tokenizer.chat_template), so its chat format is "
            "unknown. Use a chat (instruct) model's GGUF, or its hub id or folder as `model`.")
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                  dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelSourceError(f"{path}: the converted weights do not match the model "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]}).")
    model.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    eos = [t for t in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
           if isinstance(t, int) and t != tokenizer.unk_token_id]
    gen = {"eos_token_id": sorted(set(eos)), "pad_token_id": tokenizer.pad_token_id}
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
    (tmp / "source.json").write_text(json.dumps({"gguf": str(path)}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    del loaded, model
    return out
