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

The pieces: :mod:`~helpers.export.hf` (adapter, merged), :mod:`~helpers.export.gguf` (our GGUF
writer and reader), :mod:`~helpers.export.unsloth_gguf` (Unsloth's llama.cpp path),
:mod:`~helpers.export.ollama` (the Modelfile) and :mod:`~helpers.export.verify` (reloads and
checks). This module picks the GGUF converter (:func:`export_gguf`) and runs them all
(:func:`export_all`); every public name is importable from here.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from helpers import models
from helpers.export.gguf import (  # noqa: F401
    FAMILY_FOR_GGUF_ARCH,
    GGUF_ARCH_FOR_MODEL_TYPE,
    GGUF_OUTTYPES,
    gguf_metadata,
    gguf_vocab,
    gguf_weight_type,
    safe_name,
    write_gguf,
)
from helpers.export.hf import (  # noqa: F401
    MERGED_DTYPES,
    MERGED_INFO,
    adapter_base,
    copy_adapter,
    export_adapter,
    export_merged,
    read_json,
    size_mb,
    torch_dtype_for,
)
from helpers.export.ollama import OLLAMA_PARAMETERS, OLLAMA_TEMPLATES, ollama_template, write_modelfile  # noqa: F401
from helpers.export.unsloth_gguf import unsloth_usable, write_unsloth_gguf
from helpers.export.verify import (  # noqa: F401
    DEFAULT_QUESTION,
    FORMATS,
    LOGIT_TOLERANCE,
    SAMPLE_TEXT,
    ExportVerificationError,
    compare_merged_logits,
    load_export,
    logits,
    verify_export,
)

log = logging.getLogger(__name__)

GGUF_BACKENDS = ("auto", "builtin", "unsloth")


# -- GGUF: which converter -----------------------------------------------------------------------

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
    model_type = read_json(merged_dir / "config.json").get("model_type", "")
    builtin = model_type in GGUF_ARCH_FOR_MODEL_TYPE
    if backend == "unsloth" or (backend == "auto" and not builtin and unsloth_usable()):
        return write_unsloth_gguf(merged_dir, out_path, outtype, name or merged_dir.name)
    if not builtin:
        raise NotImplementedError(_gguf_unsupported(model_type, merged_dir, out_path, outtype))
    import importlib.util
    if importlib.util.find_spec("gguf") is None:
        raise ImportError("GGUF export needs the gguf package (llama.cpp's gguf-py): "
                          "pip install gguf==0.19.0")
    return write_gguf(merged_dir, out_path, outtype, name or merged_dir.name)


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
    record = read_json(record_path)
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
    torch_dtype_for(merged_dtype)
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
            target = gguf_dir / f"{safe_name(choice.profile.name)}-{gguf_outtype}.gguf"
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
