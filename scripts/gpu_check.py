#!/usr/bin/env python
"""One-command GPU check (``make gpu-check``): the GPU paths of ``helpers`` on real model shapes,
on one NVIDIA GPU with no internet and no model weights.

NOT YET RUN ON A GPU. This script was written and unit-tested on a CPU-only machine (the
no-CUDA exit, the config builders and the disk arithmetic are tested in
tests/test_gpu_check.py); every GPU step below is unverified until its first run, which is what
it is for. Each step is recorded, with its error when it fails, in ONE JSON file (default
``outputs/gpu_check/gpu_check.json``), and a short summary is printed.

Nothing can be downloaded there, so the models are random-weight copies of the real shapes,
built from configs written here (:func:`qwen3_14b_config`, :func:`gpt_oss_20b_config`; field
names as in transformers 5.17's Qwen3Config and GptOssConfig) and saved in bf16 under
``<work>/models/``; each folder is deleted after the steps that use it (disk). Their tokenizer is
the project's tiny stand-in tokenizer of the same family (``helpers.standins.ensure(...,
pretrain_steps=0)``, built offline in seconds), copied next to the config: its ~2k ids all lie
inside the real vocabularies. LoRA on random weights learns nothing; the losses only show that
training runs.

Steps (each in its own subprocess: Unsloth must be imported before transformers and patches it
for the whole process; the parent imports nothing heavier than torch):

1. ``env``: GPU name and memory, torch/CUDA versions, versions of unsloth, unsloth_zoo, trl,
   transformers, bitsandbytes, peft, accelerate, datasets, gguf ("missing" when absent), free disk.
2. The memory cap: every training step calls ``torch.cuda.set_per_process_memory_fraction(cap /
   total)`` first (``--cap-gb``, default 24: an RTX 4090). ``memory.preload_check`` reads the
   driver's free memory, which does not see this cap; its verdict is recorded as it is.
3. ``build-qwen3-14b``, then ``qwen3-14b-unsloth`` and ``qwen3-14b-transformers``: the Qwen3-14B
   shape (14.8B parameters) through the project's own API (``models.get_profile('qwen3-14b')``
   with ``hub_id``/``hub_id_4bit`` replaced by the folder, ``train.load_model(...,
   load_in_4bit=True)``, ``resolve_config``, ``add_lora``, ``train``) on the first Mariya rows
   (NoteBooks/Mariya/mariya.jsonl, tokenized by ``templates.tokenize_dataset``): load seconds,
   tokens/s, peak VRAM after loading and while training (``max_memory_allocated``, reset in
   between), final loss, and the label check of tests/support/label_capture.py (a forward pre-hook
   records the labels the model really receives; they must equal our masks).
4. ``ladder``: the out-of-memory ladder (``fallback.ladder`` + ``fallback.run_with_fallback``, what
   ``FineTuneRun.train_with_fallback`` runs) under ``--ladder-cap-gb`` (default 24). NOT the
   Qwen3-32B the issue names: its random bf16 copy would need 65 GB of disk, which the machine
   cannot spare. Instead the Qwen3-14B-shape folder is asked for in 16 bits (about 27.5 GiB of
   weights, above the cap) at max_seq_length 256 and batch 1, so the ladder the project computes
   has two rungs: 16 bits (must run out of memory, while loading) and 4 bits (should fit). The
   JSON records every rung, the fallback events and which rung trained. A lower cap (e.g. 8)
   makes every rung run out of memory (the 4-bit 14B alone is ~9 GiB) and records the
   exhausted-ladder error instead.
5. ``export``: Unsloth trains a Qwen3-14B shape cut to ``--export-layers`` layers (default 4;
   the same widths and vocabulary, 2.9B parameters: the full shape's merged copy and GGUF would
   need 2 x 30 GB more disk), then ``export.export_all`` writes the adapter, the merged model and
   an f16 GGUF (our own writer: Qwen3 is built in, no llama.cpp) and reloads each and asks it a
   question. ``gguf-unsloth`` then tries Unsloth's own GGUF saver (``export_gguf(...,
   backend='unsloth')``) on the merged folder: it needs llama.cpp, which it builds or downloads,
   so offline it is expected to fail; the error is the step's result.
6. ``build-gpt-oss-20b``, ``gpt-oss-20b-unsloth``, ``gpt-oss-20b-transformers``: the GPT-OSS-20B
   shape (20.9B parameters; 42 GB in bf16: the build uses fewer layers when the disk cannot hold
   it, and says so) trains a few steps on Unsloth in 4 bits. On transformers: (a) the registry
   profile in 4 bits must be refused before any download (``UnsupportedLoadError``; message
   recorded); (b) the local 16-bit folder in 4 bits under the cap, where transformers'
   bitsandbytes leaves the 3-D experts in 16 bits (~38 GB): recorded as it goes (expected: out of
   memory), when time is left.

The whole run must fit in about 9 minutes (``--budget-s``, default 540): each step gets at
most its own timeout and what is left of the budget; a step that cannot start is recorded as
skipped. ``--steps a,b`` runs only those (builds are added when needed).

Without CUDA (or torch) it exits at once with code 2 and says what it needs. When the GPU-only
packages (trl, unsloth, unsloth_zoo, bitsandbytes) are missing, ``--install-wheels`` (what ``make
gpu-check`` passes) installs them from ``gpu_wheels/`` (made by ``bash scripts/gpu_wheels.sh`` on a
machine with internet); without it, or without that folder, it exits with code 2 and says how.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024 ** 3
WHEELS = ROOT / "gpu_wheels"
#: distributions the check cannot run without (the image lacks them)
GPU_ONLY = ("trl", "unsloth", "unsloth_zoo", "bitsandbytes")
VERSIONS = ("torch", "unsloth", "unsloth_zoo", "trl", "transformers", "bitsandbytes", "peft",
            "accelerate", "datasets", "gguf")
MARIYA = ROOT / "NoteBooks" / "Mariya" / "mariya.jsonl"

#: step name -> (timeout in seconds, model folder it needs or builds, extra)
STEPS: dict[str, dict] = {
    "build-qwen3-14b": {"timeout": 150, "builds": "qwen3-14b"},
    "qwen3-14b-unsloth": {"timeout": 180, "needs": "qwen3-14b"},
    "qwen3-14b-transformers": {"timeout": 150, "needs": "qwen3-14b"},
    "ladder": {"timeout": 170, "needs": "qwen3-14b"},
    "export": {"timeout": 170},
    "gguf-unsloth": {"timeout": 75},
    "build-gpt-oss-20b": {"timeout": 170, "builds": "gpt-oss-20b"},
    "gpt-oss-20b-unsloth": {"timeout": 200, "needs": "gpt-oss-20b"},
    "gpt-oss-20b-transformers": {"timeout": 120, "needs": "gpt-oss-20b"},
}
UNSLOTH_STEPS = {"qwen3-14b-unsloth", "export", "gguf-unsloth", "gpt-oss-20b-unsloth"}
#: the registry profile and the stand-in whose tokenizer each shape borrows
PROFILE = {"qwen3-14b": "qwen3-14b", "gpt-oss-20b": "gpt-oss-20b"}
STANDIN = {"qwen3-14b": "tiny-qwen3", "gpt-oss-20b": "tiny-gpt-oss"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json", "added_tokens.json",
                   "generation_config.json")


# -- shapes (pure; tested on a CPU) -------------------------------------------------------------

def qwen3_14b_kwargs(num_layers: int | None = None, **ids) -> dict:
    """Qwen/Qwen3-14B's config.json values (14.8B parameters)."""
    return dict(model_type="qwen3", hidden_size=5120, num_hidden_layers=num_layers or 40,
                num_attention_heads=40, num_key_value_heads=8, head_dim=128,
                intermediate_size=17408, vocab_size=151936, max_position_embeddings=40960,
                rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                tie_word_embeddings=False, attention_bias=False, hidden_act="silu", **ids)


def gpt_oss_20b_kwargs(num_layers: int | None = None, **ids) -> dict:
    """openai/gpt-oss-20b's config.json values (20.9B parameters): alternating sliding (128) and
    full attention, YaRN rope (factor 32 over 4096 positions, theta 150000)."""
    n = num_layers or 24
    return dict(model_type="gpt_oss", hidden_size=2880, num_hidden_layers=n,
                num_attention_heads=64, num_key_value_heads=8, head_dim=64,
                num_local_experts=32, num_experts_per_tok=4, intermediate_size=2880,
                vocab_size=201088, sliding_window=128, max_position_embeddings=131072,
                layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)],
                rope_parameters={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                                 "beta_slow": 1.0, "truncate": False,
                                 "original_max_position_embeddings": 4096, "rope_theta": 150000.0},
                rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=True,
                swiglu_limit=7.0, router_aux_loss_coef=0.9, output_router_logits=False, **ids)


SHAPES = {"qwen3-14b": qwen3_14b_kwargs, "gpt-oss-20b": gpt_oss_20b_kwargs}


def build_config(shape: str, num_layers: int | None = None, **ids):
    """A transformers config of ``shape`` (``ids``: pad/eos/bos token ids)."""
    from transformers import AutoConfig
    kw = SHAPES[shape](num_layers, **ids)
    return AutoConfig.for_model(kw.pop("model_type"), **kw)


def count_parameters(config) -> int:
    """Parameters of the model ``config`` describes, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def layers_that_fit(fixed: int, per_layer: int, wanted: int, free_bytes: int,
                    margin_bytes: int = 4 * GIB, bytes_per_param: int = 2) -> int:
    """The most layers (at most ``wanted``, at least 1) whose checkpoint (``fixed`` + ``per_layer``
    parameters each, ``bytes_per_param``) fits in ``free_bytes`` less ``margin_bytes``; 0 when
    not even one layer fits."""
    room = free_bytes - margin_bytes - fixed * bytes_per_param
    if room < per_layer * bytes_per_param:
        return 0
    return min(wanted, room // (per_layer * bytes_per_param))


# -- no GPU, packages --------------------------------------------------------------------------

NO_CUDA = """gpu_check: {why}.

This check needs an NVIDIA GPU with CUDA (it trains random-weight copies of Qwen3-14B and
GPT-OSS-20B in 4 bits, on both backends, with a 24 GiB memory cap), a CUDA build of torch, and the
GPU-only packages: trl, unsloth, unsloth_zoo and bitsandbytes (plus gguf, and datasets if the
image lacks it). On a GPU machine without internet, bring the wheels:

  1. on a machine with internet, in this project:   bash scripts/gpu_wheels.sh
     (writes gpu_wheels/, a few MB; WITH_PYARROW=1 adds pyarrow/pandas if datasets is missing there)
  2. copy the project, gpu_wheels/ included, to the GPU machine
  3. there:  make gpu-check      (python scripts/gpu_check.py --install-wheels), which installs
     pip install --no-index --no-deps --find-links gpu_wheels -r gpu_wheels/requirements.txt
     when the packages are missing, then runs every step.
"""


def cuda_status() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    try:
        if torch.cuda.is_available():
            return True, ""
    except Exception as e:  # noqa: BLE001 - a broken driver reads as "no CUDA"
        return False, f"torch.cuda.is_available() failed ({e})"
    return False, (f"no CUDA GPU (torch {torch.__version__}, built for CUDA "
                   f"{torch.version.cuda or 'none'}: torch.cuda.is_available() is False)")


def version(dist: str) -> str:
    from importlib import metadata
    for name in (dist, dist.replace("_", "-")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "missing"


def missing_gpu_packages() -> list[str]:
    return [d for d in GPU_ONLY if version(d) == "missing"]


def install_wheels() -> tuple[bool, str]:
    req = WHEELS / "requirements.txt"
    if not req.is_file():
        return False, f"{req} does not exist"
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links",
           str(WHEELS), "-r", str(req)]
    print("gpu_check: installing the GPU-only packages:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


# -- helpers for the steps (run in the step's subprocess) --------------------------------------

def _cap(gb: float) -> dict:
    import torch
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, gb * GIB / total)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    return {"cap_gb": gb, "cap_fraction": round(fraction, 4), "total_gb": round(total / GIB, 2)}


def _peak_gb() -> float:
    import torch
    return round(torch.cuda.max_memory_allocated() / GIB, 3)


def _reset_peak() -> None:
    import torch
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()


def build_random(shape: str, folder: Path, num_layers: int | None = None,
                 fit_disk: bool = True) -> dict:
    """Save a random bf16 copy of ``shape`` (on the GPU: fast) in ``folder`` with the family's
    stand-in tokenizer; fewer layers when the disk cannot hold the whole model."""
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.models import standins
    t0 = time.time()
    tok_dir = standins.ensure(STANDIN[shape], pretrain_steps=0)
    small = json.loads((tok_dir / "config.json").read_text())
    ids = {k: small.get(k) for k in ("pad_token_id", "eos_token_id", "bos_token_id")}
    wanted = num_layers or SHAPES[shape]()["num_hidden_layers"]
    one, two = (count_parameters(build_config(shape, n, **ids)) for n in (1, 2))
    per_layer, fixed = two - one, one - (two - one)
    folder.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder.parent).free
    layers = layers_that_fit(fixed, per_layer, wanted, free) if fit_disk else wanted
    info = {"shape": shape, "folder": str(folder), "layers_wanted": wanted, "layers": layers,
            "parameters": fixed + per_layer * layers, "disk_free_gb": round(free / GIB, 1)}
    if layers == 0:
        raise RuntimeError(f"not enough disk for even one layer of {shape}: {free / GIB:.1f} GiB free")
    if layers < wanted:
        info["note"] = (f"only {layers} of {wanted} layers: {wanted} would need "
                        f"{(fixed + per_layer * wanted) * 2 / GIB:.1f} GiB of disk, "
                        f"{free / GIB:.1f} GiB is free (4 GiB kept spare)")
    config = build_config(shape, layers, **ids)
    config.dtype = "bfloat16"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.to_empty(device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            module = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1 and "norm" in module:  # RMSNorm weights
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(str(folder), max_shard_size="5GB")
    del model
    torch.cuda.empty_cache()
    copied = []
    for name in TOKENIZER_FILES:
        if (tok_dir / name).is_file():
            shutil.copy2(tok_dir / name, folder / name)
            copied.append(name)
    info.update(tokenizer_from=str(tok_dir), tokenizer_files=copied,
                size_gb=round(sum(f.stat().st_size for f in folder.iterdir()) / GIB, 2),
                build_seconds=round(time.time() - t0, 1))
    return info


def _choice(shape: str, folder: Path):
    from helpers import models
    p = dataclasses.replace(models.get_profile(PROFILE[shape]), hub_id=str(folder),
                            hub_id_4bit=str(folder))
    return models.ModelChoice(requested=p, profile=p, smoke=False)


def _rows(tok, profile, max_seq: int, n: int):
    from helpers import data
    from helpers.training import masks as templates
    convs = data.load(MARIYA).conversations[:n]
    rows, stats = templates.tokenize_dataset(tok, convs, max_seq_length=max_seq,
                                             model=profile.name, **profile.template_kwargs)
    return rows, stats


def _label_hook(model):
    """tests/support/label_capture.py's hook: every (input_ids, labels, mask) the model's forward gets
    while training."""
    seen: list = []

    def hook(module, args, kwargs):
        if "labels" in kwargs and kwargs["labels"] is not None and module.training:
            ids = kwargs["input_ids"].detach().cpu().tolist()
            labels = kwargs["labels"].detach().cpu().tolist()
            if kwargs.get("attention_mask") is not None:
                seen.append((ids, labels, kwargs["attention_mask"].detach().cpu().tolist()))
            else:  # padding-free: one row; examples start where position_ids restart at 0
                pos = kwargs["position_ids"].detach().cpu().tolist()[0]
                starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
                split = [(ids[0][a:b], labels[0][a:b]) for a, b in zip(starts, starts[1:])]
                seen.append(([s[0] for s in split], [s[1] for s in split],
                             [[1] * len(s[0]) for s in split]))
    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def _labels_match(rows, seen) -> dict:
    by_ids = {tuple(r["input_ids"]): r["labels"] for r in rows}
    checked = mismatched = 0
    for ids_batch, labels_batch, mask_batch in seen:
        for j, ids in enumerate(ids_batch):
            n = sum(mask_batch[j]) if mask_batch else len(ids)
            expected = by_ids.get(tuple(ids[:n]))
            got = labels_batch[j]
            checked += 1
            if expected is None or got[:n] != expected or any(x != -100 for x in got[n:]):
                mismatched += 1
    return {"sequences_checked": checked, "mismatched": mismatched,
            "labels_equal_masks": checked > 0 and mismatched == 0}


def train_once(choice, backend: str, out_dir: Path, *, four_bit: bool, max_seq: int, n_rows: int,
               batch_size: int = 2, grad_accum: int = 1, keep_model: bool = False) -> dict:
    """Load, add LoRA, train a few steps on Mariya rows and check the labels: the numbers."""
    from helpers.runtime import memory
    from helpers.runtime.loading import load_model
    from helpers.training.config import resolve_config
    from helpers.training.trainer import add_lora, train
    p = choice.profile
    cfg = resolve_config(p, epochs=1, batch_size=batch_size, grad_accum=grad_accum,
                         max_seq_length=max_seq, logging_steps=1, report_to="none",
                         backend=backend, load_in_4bit=four_bit, resume=False, keep_checkpoints=1)
    out: dict = {"backend": backend, "load_in_4bit": four_bit, "max_seq_length": max_seq,
                 "batch_size": batch_size, "grad_accum": grad_accum,
                 "preload_check": str(memory.preload_check(choice, four_bit, backend=backend))}
    _reset_peak()
    t0 = time.time()
    with memory.stage("load"):
        model, tok = load_model(choice, backend=backend, load_in_4bit=four_bit, max_seq_length=max_seq)
    out.update(load_seconds=round(time.time() - t0, 1), peak_vram_load_gb=_peak_gb(),
               loaded=getattr(model, "_finetuning_source", None),
               model_class=type(model).__name__)
    rows, stats = _rows(tok, p, max_seq, n_rows)
    out["rows"] = len(rows)
    out["truncated"] = stats.get("truncated") if isinstance(stats, dict) else None
    with memory.stage("train"):
        model = add_lora(model, cfg)
        seen, handle = _label_hook(model)
        _reset_peak()
        result = train(model, tok, rows, cfg, out_dir)
        handle.remove()
    out.update(peak_vram_train_gb=_peak_gb(), **result.summary(), loss_history=result.loss_history)
    out.update(_labels_match(rows, seen))
    out["ok"] = out["labels_equal_masks"] and out["final_loss"] is not None
    if keep_model:
        out["_model"], out["_tokenizer"] = model, tok
    return out


# -- the steps ---------------------------------------------------------------------------------

def step_build(args, shape: str) -> dict:
    return build_random(shape, Path(args.model_dir) / shape)


def step_train(args, shape: str, backend: str) -> dict:
    import torch
    out = {"memory_cap": _cap(args.cap_gb)}
    folder = Path(args.model_dir) / shape
    out["num_hidden_layers"] = json.loads((folder / "config.json").read_text()).get("num_hidden_layers")
    max_seq = 384 if shape == "gpt-oss-20b" else 256  # GPT-OSS's system header needs ~256
    work = Path(args.work_dir) / "runs" / args.step
    try:
        out.update(train_once(_choice(shape, folder), backend, work, four_bit=True,
                              max_seq=max_seq, n_rows=args.rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        torch.cuda.empty_cache()
    return out


def step_ladder(args) -> dict:
    from helpers.training import fallback
    from helpers.training.config import resolve_config
    out = {"memory_cap": _cap(args.ladder_cap_gb), "backend": args.ladder_backend,
           "instead_of_qwen3_32b": (
               "Qwen3-32B's random bf16 copy needs 65 GB of disk, which this machine cannot spare; "
               f"the Qwen3-14B-shape folder (27.5 GiB in 16 bits) is asked for in 16 bits under a "
               f"{args.ladder_cap_gb} GiB cap instead, at max_seq_length 256 and batch 1, so the "
               "ladder is: 16 bits (must run out of memory), then 4 bits.")}
    choice = _choice("qwen3-14b", Path(args.model_dir) / "qwen3-14b")
    cfg = resolve_config(choice.profile, epochs=1, batch_size=1, grad_accum=2, max_seq_length=256,
                         load_in_4bit=False, backend=args.ladder_backend, logging_steps=1,
                         report_to="none", resume=False, keep_checkpoints=1)
    rungs = fallback.ladder(choice, cfg, backend=args.ladder_backend)
    out["rungs"] = [{"index": r.index, "kind": r.kind, "reason": r.reason, "describe": r.describe()}
                    for r in rungs]
    work = Path(args.work_dir) / "runs" / "ladder"
    holder: dict = {}

    def attempt(rung):
        res = train_once(rung.choice, args.ladder_backend, work / f"rung{rung.index}",
                         four_bit=rung.cfg.load_in_4bit, max_seq=rung.cfg.max_seq_length,
                         n_rows=args.rows, batch_size=rung.cfg.batch_size,
                         grad_accum=rung.cfg.grad_accum)
        holder["last"] = res
        return res

    events: list = []
    try:
        fb = fallback.run_with_fallback(choice, cfg, attempt, rungs=rungs, on_step=events.append,
                                        cleanup=holder.clear)
        out.update(status_detail="trained", rung_used=fb.rung.index, rung_used_reason=fb.rung.reason,
                   fell_back=fb.fell_back, attempts=fb.attempts, result=fb.result)
    except fallback.FallbackError as e:
        out.update(status_detail=type(e).__name__, error=str(e)[:3000])
        events = events or e.events
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["events"] = events
    out["ok"] = bool(out.get("fell_back")) and out.get("rung_used") == len(rungs) - 1
    return out


def step_export(args) -> dict:
    import torch

    from helpers import export
    out = {"memory_cap": _cap(args.cap_gb)}
    folder = Path(args.model_dir) / "qwen3-14b-export"
    out["build"] = build_random("qwen3-14b", folder, num_layers=args.export_layers)
    out["why_fewer_layers"] = (f"the Qwen3-14B shape cut to {args.export_layers} layers (same widths "
                               "and vocabulary): the full shape's merged copy and f16 GGUF would "
                               "need about 60 GB more disk beside its 30 GB base")
    choice = _choice("qwen3-14b", folder)
    work = Path(args.work_dir) / "runs" / "export"
    res = train_once(choice, "unsloth", work, four_bit=True, max_seq=256, n_rows=args.rows,
                     keep_model=True)
    model, tok = res.pop("_model"), res.pop("_tokenizer")
    out["train"] = res
    exp_dir = Path(args.work_dir) / "export"
    shutil.rmtree(exp_dir, ignore_errors=True)
    _reset_peak()
    rows = export.export_all((model, tok, choice, None), exp_dir, formats=("adapter", "merged", "gguf"),
                             question="Who is Mariya Sha?", max_new_tokens=16, check_logits=False)
    out["exports"] = rows
    out["peak_vram_export_gb"] = _peak_gb()
    out["ok"] = all(rows.get(f, {}).get("status") == "ok" for f in ("adapter", "gguf"))
    del model
    torch.cuda.empty_cache()
    return out


def step_gguf_unsloth(args) -> dict:
    from helpers import export
    merged = Path(args.work_dir) / "export" / "merged"
    if not (merged / "config.json").is_file():
        raise FileNotFoundError(f"{merged} is missing: the export step made no merged folder")
    target = Path(args.work_dir) / "export" / "gguf-unsloth" / "qwen3-14b-export-f16.gguf"
    t0 = time.time()
    path = export.export_gguf(merged, target, "f16", backend="unsloth")
    out = {"path": str(path), "size_mb": export.size_mb(path), "seconds": round(time.time() - t0, 1),
           "weight_type": export.gguf_weight_type(path)}
    out["answer"] = export.verify_export("gguf", path, "Who is Mariya Sha?", max_new_tokens=16)
    out["ok"] = True
    return out


def step_gpt_oss_transformers(args) -> dict:
    from helpers import models
    from helpers.runtime.loading import load_model
    out: dict = {}
    real = models.choose("gpt-oss-20b", smoke=False)
    try:  # refused in ModelChoice.source, before anything is downloaded
        load_model(real, backend="transformers", load_in_4bit=True)
        out["registry_profile"] = {"refused": False, "note": "load_model did not refuse"}
    except models.UnsupportedLoadError as e:
        out["registry_profile"] = {"refused": True, "error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # noqa: BLE001
        out["registry_profile"] = {"refused": False, "error": f"{type(e).__name__}: {e}"[:2000]}
    left = args.deadline - time.time()
    if left < 60:
        out["local_folder"] = {"skipped": f"only {left:.0f} s of the budget left"}
    else:
        try:
            out["local_folder"] = step_train(args, "gpt-oss-20b", "transformers")
        except Exception as e:  # noqa: BLE001
            from helpers.runtime import memory
            out["local_folder"] = {"error": f"{type(e).__name__}: {e}"[:2000],
                                   "out_of_memory": memory.is_oom(e),
                                   "stage": memory.stage_of(e)}
    out["ok"] = out["registry_profile"].get("refused") is True
    return out


def run_step(args) -> dict:
    step = args.step
    if step in UNSLOTH_STEPS:
        import unsloth  # noqa: F401  (before transformers: it patches it)
    if step.startswith("build-"):
        return step_build(args, step[len("build-"):])
    if step in ("qwen3-14b-unsloth", "qwen3-14b-transformers", "gpt-oss-20b-unsloth"):
        shape, backend = step.rsplit("-", 1)
        return step_train(args, shape, backend)
    return {"ladder": step_ladder, "export": step_export, "gguf-unsloth": step_gguf_unsloth,
            "gpt-oss-20b-transformers": step_gpt_oss_transformers}[step](args)


def child_main(args) -> int:
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.path.insert(0, str(ROOT))
    t0 = time.time()
    result: dict = {"step": args.step}
    try:
        result.update(run_step(args))
        result["status"] = "ok" if result.get("ok", True) else "failed"
    except BaseException as e:  # noqa: BLE001 - recorded, not raised
        result.update(status="failed", error=f"{type(e).__name__}: {e}"[:4000],
                      traceback=traceback.format_exc()[-6000:])
    result["seconds"] = round(time.time() - t0, 1)
    try:
        import torch
        result["peak_vram_process_gb"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
    except Exception:  # noqa: BLE001
        pass
    Path(args.step_out).write_text(json.dumps(result, indent=1, default=str))
    return 0


# -- the parent --------------------------------------------------------------------------------

def environment() -> dict:
    import torch
    props = torch.cuda.get_device_properties(0)
    env = {"gpu": torch.cuda.get_device_name(0), "gpu_total_gb": round(props.total_memory / GIB, 2),
           "compute_capability": list(torch.cuda.get_device_capability(0)),
           "gpu_count": torch.cuda.device_count(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "python": sys.version.split()[0],
           "cpu_count": os.cpu_count(),
           "versions": {d: version(d) for d in VERSIONS}}
    try:
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        env["nvidia_smi"] = f"not run: {e}"
    return env


def plan(selected: list[str] | None) -> list[str]:
    order = list(STEPS)
    if not selected:
        return order
    unknown = [s for s in selected if s not in STEPS]
    if unknown:
        raise SystemExit(f"gpu_check: unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    want = set(selected)
    for s in selected:  # the folder a step needs is built first
        need = STEPS[s].get("needs")
        if need:
            want.add(f"build-{need}")
    if "gguf-unsloth" in want:
        want.add("export")
    return [s for s in order if s in want]


def run_child(step: str, args, deadline: float, record: dict) -> dict:
    left = deadline - time.time()
    timeout = min(STEPS[step]["timeout"], left)
    if timeout < 20:
        return {"step": step, "status": "skipped", "error": f"time budget spent ({left:.0f} s left)"}
    step_out = Path(args.work_dir) / "steps" / f"{step}.json"
    log_path = Path(args.work_dir) / "steps" / f"{step}.log"
    step_out.parent.mkdir(parents=True, exist_ok=True)
    step_out.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--step-out", str(step_out),
           "--work-dir", args.work_dir, "--model-dir", args.model_dir, "--cap-gb", str(args.cap_gb),
           "--ladder-cap-gb", str(args.ladder_cap_gb), "--ladder-backend", args.ladder_backend,
           "--rows", str(args.rows), "--export-layers", str(args.export_layers),
           "--deadline", str(time.time() + timeout)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", UNSLOTH_DISABLE_STATISTICS="1")
    t0 = time.time()
    print(f"gpu_check: {step} (at most {timeout:.0f} s) ...", flush=True)
    with open(log_path, "w") as logf:
        # its own process group: on timeout, whatever it started (compilers, a llama.cpp
        # build) is killed with it
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            import signal
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            rc, timed_out = None, True
    if step_out.is_file():
        res = json.loads(step_out.read_text())
    else:
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.is_file() else ""
        res = {"step": step, "status": "timeout" if timed_out else "failed",
               "error": (f"no result after {timeout:.0f} s (killed)" if timed_out else
                         f"the step's process exited with code {rc} before writing its result"),
               "log_tail": tail}
    res["wall_seconds"] = round(time.time() - t0, 1)
    res["log"] = str(log_path)
    return res


def _summary_line(res: dict) -> str:
    bits = [f"{res['step']:<26} {res.get('status', '?'):<8} {res.get('wall_seconds', 0):>6.0f} s"]
    for key in ("tokens_per_second", "peak_vram_train_gb", "final_loss", "labels_equal_masks",
                "rung_used", "layers", "size_gb"):
        if res.get(key) is not None:
            bits.append(f"{key}={res[key]}")
    if res.get("error"):
        bits.append("error: " + res["error"].splitlines()[0][:160])
    return "  ".join(bits)


def parent_main(args) -> int:
    ok, why = cuda_status()
    if not ok:
        print(NO_CUDA.format(why=why), file=sys.stderr)
        return 2
    missing = missing_gpu_packages()
    installed = None
    if missing:
        if not args.install_wheels or not (WHEELS / "requirements.txt").is_file():
            where = ("gpu_wheels/ is not here" if not (WHEELS / "requirements.txt").is_file()
                     else "--install-wheels was not given")
            print(NO_CUDA.format(why=f"the GPU-only packages {', '.join(missing)} are missing "
                                     f"({where})"), file=sys.stderr)
            return 2
        ok_install, log_tail = install_wheels()
        installed = {"missing_before": missing, "ok": ok_install, "pip_tail": log_tail}
        missing = missing_gpu_packages()
        if missing:
            print(f"gpu_check: installing from gpu_wheels/ left {', '.join(missing)} missing:\n"
                  f"{log_tail}", file=sys.stderr)
            return 2
    t_start = time.time()
    deadline = t_start + args.budget_s
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Path(args.model_dir).mkdir(parents=True, exist_ok=True)
    record: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:],
                    "never_run_before": "this script had never run on a GPU when it was written",
                    "cap_gb": args.cap_gb, "ladder_cap_gb": args.ladder_cap_gb,
                    "budget_s": args.budget_s, "wheels_installed": installed, "steps": {}}
    try:
        record["env"] = environment()
        record["env"]["disk_free_gb"] = round(shutil.disk_usage(args.model_dir).free / GIB, 1)
    except Exception as e:  # noqa: BLE001
        record["env"] = {"error": f"{type(e).__name__}: {e}"}

    def save():
        record["seconds"] = round(time.time() - t_start, 1)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, out_path)

    save()
    steps = plan(args.steps.split(",") if args.steps else None)
    folders = {}
    for step in steps:
        built = STEPS[step].get("builds")
        need = STEPS[step].get("needs")
        if need and record["steps"].get(f"build-{need}", {}).get("status") != "ok":
            res = {"step": step, "status": "skipped", "error": f"build-{need} did not succeed"}
        else:
            res = run_child(step, args, deadline, record)
        if built:
            folders[built] = Path(args.model_dir) / built
        record["steps"][step] = res
        print(_summary_line(res), flush=True)
        # delete each random checkpoint once nothing later needs it (disk)
        later = steps[steps.index(step) + 1:]
        for shape, folder in list(folders.items()):
            if not any(STEPS[s].get("needs") == shape for s in later) and not args.keep_models:
                shutil.rmtree(folder, ignore_errors=True)
                folders.pop(shape)
        if step == "gguf-unsloth" or (step == "export" and "gguf-unsloth" not in later):
            if not args.keep_models:
                shutil.rmtree(Path(args.model_dir) / "qwen3-14b-export", ignore_errors=True)
                for sub in ("merged", "gguf", "gguf-unsloth"):
                    shutil.rmtree(Path(args.work_dir) / "export" / sub, ignore_errors=True)
        save()
    failed = [s for s, r in record["steps"].items() if r.get("status") != "ok"]
    record["failed_steps"] = failed
    save()
    print(f"gpu_check: {len(steps) - len(failed)} of {len(steps)} steps ok in "
          f"{time.time() - t_start:.0f} s; results in {out_path}", flush=True)
    return 0 if not failed else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "outputs" / "gpu_check" / "gpu_check.json"),
                    help="the one JSON file of results")
    ap.add_argument("--work-dir", default=None, help="scratch folder (default: the --out folder)")
    ap.add_argument("--model-dir", default=None, help="where the random checkpoints go "
                                                      "(default: <work-dir>/models)")
    ap.add_argument("--cap-gb", type=float, default=24.0, help="GPU memory cap in GiB (an RTX 4090)")
    ap.add_argument("--ladder-cap-gb", type=float, default=24.0,
                    help="the cap for the out-of-memory ladder step")
    ap.add_argument("--ladder-backend", default="unsloth", choices=("unsloth", "transformers"))
    ap.add_argument("--rows", type=int, default=16, help="Mariya rows to train on (batch 2: rows/2 steps)")
    ap.add_argument("--export-layers", type=int, default=4)
    ap.add_argument("--budget-s", type=float, default=540.0, help="the whole run's time budget")
    ap.add_argument("--steps", default="", help=f"comma-separated subset of: {', '.join(STEPS)}")
    ap.add_argument("--keep-models", action="store_true", help="keep the random checkpoints")
    ap.add_argument("--install-wheels", action="store_true",
                    help="install missing GPU-only packages from gpu_wheels/ (offline)")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--step-out", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.work_dir = args.work_dir or str(Path(args.out).resolve().parent)
    args.model_dir = args.model_dir or str(Path(args.work_dir) / "models")
    if args.step:
        args.deadline = args.deadline or time.time() + 600
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
