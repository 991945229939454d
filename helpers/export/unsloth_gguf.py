"""GGUF through Unsloth: its ``save_to_gguf`` installs llama.cpp and runs llama.cpp's
``convert_hf_to_gguf.py`` on the merged folder (CUDA with Unsloth only). The path for models our
writer (:mod:`helpers.export.gguf`) does not convert, GPT-OSS among them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from helpers import models
from helpers.export.gguf import gguf_weight_type, safe_name
from helpers.export.hf import read_json, size_mb
from helpers.runtime.loading import unsloth_available

log = logging.getLogger(__name__)


def unsloth_usable() -> bool:
    """Unsloth's GGUF saver can run here: CUDA and Unsloth are both available."""
    return models.cuda_available() and unsloth_available()


def write_unsloth_gguf(merged_dir: Path, out_path: Path, outtype: str, name: str) -> Path:
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
    if not unsloth_usable():
        raise ImportError(
            "backend='unsloth' needs Unsloth on a machine with CUDA (Unsloth's GGUF saver builds "
            "and runs llama.cpp); here torch.cuda.is_available() is False or Unsloth is not "
            "installed. Use backend='builtin' for Qwen2.5/Qwen3, or llama.cpp's "
            "convert_hf_to_gguf.py.")
    import unsloth  # noqa: F401
    from unsloth.save import save_to_gguf

    cfg = read_json(merged_dir / "config.json")
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
            model_name=safe_name(name), model_type=model_type, model_dtype=model_dtype,
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
