"""Loading a model onto this machine, with one of three backends.

- ``unsloth``: Unsloth's ``FastLanguageModel`` (the fast path on NVIDIA GPUs). Chosen by
  ``backend="auto"`` when CUDA is present and Unsloth imports (:func:`select_backend`).
- ``transformers``: transformers + PEFT; runs everywhere, and in more than one process.
- ``mlx``: training in MLX on Apple silicon (:mod:`helpers.training.mlx_backend`); the model
  loaded here for asking and evaluating is the transformers one (on ``mps``), and the trained
  adapter comes back to it as a PEFT adapter. Never chosen by ``auto``.

:func:`load_model` checks the free GPU memory first (:func:`helpers.runtime.memory.preload_check`),
loads on this process's GPU (:mod:`helpers.runtime.distributed`), refuses a model spilled to the
CPU, and stops on missing or unexpected weights (:func:`check_loading_info`).
:func:`load_tokenizer` is the tokenizer alone, for length reports. Nothing here imports torch or
transformers at module import.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

from helpers import models
from helpers.models import ModelChoice, ModelProfile, precision, require_gpu, standins
from helpers.runtime import memory
from helpers.runtime.distributed import Distributed, DistributedError, distributed, main_process_first, world_size

log = logging.getLogger(__name__)


BACKENDS = ("auto", "unsloth", "transformers", "mlx")


def unsloth_available() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def mlx_available() -> bool:
    """Whether mlx and mlx-lm are installed (``pip install ".[mlx]"``)."""
    return all(importlib.util.find_spec(name) is not None for name in ("mlx", "mlx_lm"))


def local_folder(source: str | os.PathLike) -> Path:
    """The folder holding ``source``: a folder as it is, a hub id from the Hugging Face cache
    (downloaded there first when missing): config, weights and tokenizer files only (the hub's
    openai/gpt-oss-20b also holds ~26 GB of original/ and metal/ weights). For readers of the
    files themselves (MLX)."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download
    # fnmatch's * crosses "/": "model*.safetensors" keeps original/model.safetensors out
    return Path(snapshot_download(str(source), allow_patterns=["*.json", "model*.safetensors",
                                                               "*.jinja", "*.txt", "tokenizer*"]))


def import_unsloth_first(backend: str = "auto") -> bool:
    """Import Unsloth now, before anything imports transformers, where it will be used: with
    ``backend="unsloth"``, or ``"auto"`` on a CUDA machine in one process (as
    :func:`select_backend` picks it). Unsloth patches transformers, TRL and PEFT when imported
    and warns that it may be slower or use more memory when transformers came first. Called at
    the top of ``notebook.setup()`` and ``FineTuneRun.load_model``; checking CUDA imports torch,
    not transformers. Returns whether Unsloth is imported."""
    import sys
    if "unsloth" in sys.modules:
        return True
    if backend == "transformers" or not unsloth_available():
        return False
    if backend != "unsloth":
        if world_size() > 1 or not models.cuda_available():
            return False
    if "transformers" in sys.modules:
        log.warning("transformers was imported before Unsloth, so Unsloth patches it late (it may "
                    "run slower or use more memory). Call helpers.notebook.setup() before anything "
                    "imports transformers (restart the kernel first).")
    import unsloth  # noqa: F401
    return True


def select_backend(backend: str = "auto") -> str:
    """The backend to use: ``auto`` picks Unsloth on a CUDA machine where it is installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}.")
    if backend == "auto":  # Unsloth is single-GPU: more than one process means transformers
        return ("unsloth" if models.cuda_available() and unsloth_available() and world_size() == 1
                else "transformers")
    if backend == "unsloth" and world_size() > 1:
        raise DistributedError(f"backend='unsloth' cannot run in {world_size()} processes (Unsloth "
                               "is single-GPU); use backend='transformers' under accelerate launch.")
    if backend == "mlx" and not mlx_available():
        raise ImportError("backend='mlx' was asked for but mlx and mlx-lm are not installed. Install "
                          "them with `pip install \".[mlx]\"` (Apple silicon; on Linux the CPU build: "
                          "`pip install \"mlx[cpu]\" mlx-lm`), or use backend='transformers'.")
    if backend == "mlx" and world_size() > 1:
        raise DistributedError(f"backend='mlx' cannot run in {world_size()} processes; run in one "
                               "process, or use backend='transformers' under accelerate launch.")
    if backend == "unsloth" and not unsloth_available():
        raise ImportError("backend='unsloth' was asked for but Unsloth is not installed. Install it "
                          "(`pip install unsloth` on a CUDA machine; on a CPU `pip install --no-deps "
                          "unsloth==2026.10.9 unsloth_zoo==2026.10.9`), or use backend='transformers'.")
    return backend


def bf16_supported() -> bool:
    """Whether the CUDA GPU computes bfloat16 natively (compute capability 8.0, Ampere, or newer).

    ``torch.cuda.is_bf16_supported()`` also says yes where bfloat16 is only emulated (read in
    torch's cuda/__init__.py: below capability 8 it returns whether a bf16 tensor can be made,
    which it can on an RTX 20xx, T4 or V100, where bf16 is slow);
    ``including_emulation=False`` says no there, and those cards get float16."""
    import torch
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # a torch without the argument: ask the device directly
        return bool(torch.version.hip) or torch.cuda.get_device_capability()[0] >= 8


def _device_dtype():
    import torch
    if torch.cuda.is_available():
        return torch.bfloat16 if bf16_supported() else torch.float16
    return torch.float32


#: the weights' dtype without CUDA: "auto" (bfloat16 for a real model where the CPU computes it
#: natively, else float32), "bfloat16" or "float32"
CPU_DTYPE_ENV = "FINETUNING_CPU_DTYPE"


def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (Intel AMX or AVX512-BF16): there a
    0.5B model's LoRA step ran 1.6x faster with bfloat16 weights than with float32 (same loss to
    3 digits; 2 busy cores, 8 x 80 tokens)."""
    import torch
    cpu = getattr(torch, "cpu", None)
    return bool(cpu and (getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                         or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()))


def load_dtype(profile: ModelProfile, on_gpu: bool):
    """The dtype the base weights load in: the GPU's (bf16, or fp16 on cards without native
    bf16); without CUDA float32, or bfloat16 for a real model on a CPU with native bfloat16
    (``FINETUNING_CPU_DTYPE`` overrides). The stand-ins always load in float32 (exact tests)."""
    import torch
    if on_gpu:
        return _device_dtype()
    asked = os.environ.get(CPU_DTYPE_ENV, "auto").strip().lower()
    if asked not in {"auto", "bfloat16", "float32"}:
        raise ValueError(f"{CPU_DTYPE_ENV}={asked!r}: use auto, bfloat16 or float32.")
    if profile.is_standin or asked == "float32":
        return torch.float32
    if asked == "bfloat16" or (models.device() == "cpu" and cpu_bf16_native()):
        return torch.bfloat16
    return torch.float32


class WeightMismatchError(RuntimeError):
    """The checkpoint's weights do not match the model built for it (missing or unused keys)."""


#: set to 1 to load despite missing/unexpected weights (logged as an error, never silent)
ALLOW_MISMATCH_ENV = "FINETUNING_ALLOW_WEIGHT_MISMATCH"


def check_loading_info(info: dict | None, source: str) -> None:
    """Raise :class:`WeightMismatchError` when ``info`` (transformers' ``output_loading_info``:
    ``missing_keys``, ``unexpected_keys``, ``mismatched_keys``) is not empty: a missing weight
    is randomly initialised, an unexpected one is dropped, and transformers only logs a warning
    (hidden at the notebooks' log level). ``FINETUNING_ALLOW_WEIGHT_MISMATCH=1`` loads anyway,
    logging the same message as an error."""
    info = info or {}
    missing = sorted(info.get("missing_keys") or ())
    unexpected = sorted(info.get("unexpected_keys") or ())
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k)
                        for k in (info.get("mismatched_keys") or ()))
    if not (missing or unexpected or mismatched):
        return

    def some(keys: list[str]) -> str:
        return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} weight(s) of the model are not in the checkpoint and would "
                     f"be randomly initialised ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} weight(s) of the checkpoint match nothing in the model "
                     f"and would be dropped ({some(unexpected)})")
    if mismatched:
        parts.append(f"{len(mismatched)} weight(s) have another shape ({some(mismatched)})")
    msg = (f"Loading {source}: " + "; ".join(parts) + ". The checkpoint's layout does not match "
           "the model class built for it, so the model would not be the one trained. Load it "
           "with the backend that knows this layout (backend='unsloth' for Unsloth's "
           "pre-quantized repos), or the model's original 16-bit checkpoint (load_in_4bit=False). "
           f"Only if you know these weights do not matter: {ALLOW_MISMATCH_ENV}=1 loads anyway.")
    if os.environ.get(ALLOW_MISMATCH_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        log.error("%s (loading anyway: %s is set)", msg, ALLOW_MISMATCH_ENV)
        return
    raise WeightMismatchError(msg)


@contextlib.contextmanager
def _loading_reports():
    """Collect transformers' loading info for every ``from_pretrained`` inside (Unsloth calls it
    for us without ``output_loading_info``): ``modeling_utils.log_state_dict_report`` receives it
    whatever the log level."""
    import transformers.modeling_utils as mu
    infos: list[tuple[str, dict]] = []
    original = getattr(mu, "log_state_dict_report", None)
    if original is None:  # another transformers: nothing to hook (checked in source for 5.17/5.23)
        log.warning("transformers.modeling_utils.log_state_dict_report is missing; missing or "
                    "unexpected weights cannot be checked on the Unsloth backend")
        yield infos
        return

    def report(*args, **kwargs):
        info = kwargs.get("loading_info")
        name = kwargs.get("pretrained_model_name_or_path")
        if info is not None:
            infos.append((str(name), {"missing_keys": set(info.missing_keys),
                                      "unexpected_keys": set(info.unexpected_keys),
                                      "mismatched_keys": set(info.mismatched_keys)}))
        return original(*args, **kwargs)

    mu.log_state_dict_report = report
    try:
        yield infos
    finally:
        mu.log_state_dict_report = original


def mxfp4_checkpoint(source: str, profile: ModelProfile | None = None, *,
                      config: dict | None = None) -> bool:
    """Whether ``source`` stores MXFP4 weights (openai/gpt-oss-*): ``config`` (its config as a
    dict, e.g. ``AutoConfig.from_pretrained(source).to_dict()``) when given, else its config.json
    when local, else whether it is the gpt-oss ``profile``'s 16-bit hub id. Used for training
    loads here and for the export merge and reloads (:mod:`helpers.export`)."""
    path = Path(source) / "config.json"
    if config is None and path.is_file():
        import json
        config = json.loads(path.read_text())
    if config is not None:
        quant = config.get("quantization_config") or {}
        method = (quant.get("quant_method") if isinstance(quant, dict)
                  else getattr(quant, "quant_method", None))
        return str(getattr(method, "value", method) or "").lower() == "mxfp4"
    return (profile is not None and profile.family == "gpt-oss" and not profile.is_standin
            and source == profile.hub_id)


_mxfp4_checkpoint = mxfp4_checkpoint   # its name before the move (helpers.train._mxfp4_checkpoint)


def _accepts(func, name: str) -> bool:
    import inspect
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _load_unsloth(source: str, max_len: int, four_bit: bool, device: int | None,
                  eight_bit: bool = False):
    """Unsloth's ``FastLanguageModel.from_pretrained``; returns ``(model, tokenizer, loaded)``
    where ``loaded`` is the repo Unsloth's mapper really loaded (it may swap ``source``).

    8 bits: ``load_in_8bit=True`` with ``load_in_4bit=False`` (unsloth 2026.10.9 raises for both,
    and its ``load_in_4bit`` defaults to True); it hands the load to ``FastModel``, which
    quantizes the 16-bit repo with ``BitsAndBytesConfig(load_in_8bit=True)``
    (:mod:`helpers.models.precision`)."""
    import unsloth  # noqa: F401  (must be imported before transformers to patch it)
    from unsloth import FastLanguageModel
    kwargs: dict[str, Any] = dict(model_name=source, max_seq_length=max_len,
                                  load_in_4bit=four_bit, dtype=None)
    if eight_bit:
        kwargs["load_in_8bit"] = True
    if device is not None:
        # Unsloth's default device_map ("sequential", planned as "unsloth") spills what does not
        # fit to the CPU instead of running out of memory; a one-device map must fit or OOM
        kwargs["device_map"] = {"": device}
    resolved: list[str] = []
    if _accepts(FastLanguageModel.from_pretrained, "on_model_resolved"):
        kwargs["on_model_resolved"] = lambda name: resolved.append(str(name))
    with _loading_reports() as infos:
        model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    for name, info in infos:
        check_loading_info(info, name)
    loaded = (resolved[-1] if resolved else None) or getattr(model, "name_or_path", None) \
        or getattr(getattr(model, "config", None), "_name_or_path", None) or source
    if loaded != source:
        log.info("Unsloth loaded %s for %s", loaded, source)
    return model, tokenizer, str(loaded)


def _load_transformers(source: str, profile: ModelProfile, four_bit: bool, dist: Distributed,
                       on_gpu: bool, eight_bit: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kwargs: dict[str, Any] = {"dtype": load_dtype(profile, on_gpu)}
    if profile.family == "gpt-oss":
        kwargs["attn_implementation"] = "eager"
    if four_bit:
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_device_dtype())
    elif eight_bit:  # LLM.int8 of the 16-bit checkpoint; nn.Linear only (models.precision)
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    elif mxfp4_checkpoint(source, profile):
        # with triton >= 3.4 and `kernels`, transformers keeps MXFP4 weights, which do not train
        # (quantizers/quantizer_mxfp4.py); dequantize=True loads them in bf16
        from transformers import Mxfp4Config
        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    if on_gpu and not dist.shards_weights:
        # one whole copy per process, on that process's GPU (never device_map="auto", which
        # would spread one copy over every GPU, or spill to the CPU); FSDP/DeepSpeed load on
        # the CPU and place each process's shard themselves
        kwargs["device_map"] = {"": dist.local_rank}
    tokenizer = AutoTokenizer.from_pretrained(source)
    model, info = AutoModelForCausalLM.from_pretrained(source, output_loading_info=True, **kwargs)
    check_loading_info(info, source)
    if not on_gpu and not dist.active and models.device() == "mps":
        model.to("mps")  # an Apple GPU: the weights in its (unified) memory
    return model, tokenizer


def load_model(choice: ModelChoice, *, backend: str = "auto", adapter=None,
               max_seq_length: int | None = None, load_in_4bit: bool | None = None,
               load_in_8bit: bool | None = None):
    """``(model, tokenizer)`` for ``choice`` with ``backend``; with ``adapter``, the base model
    plus that LoRA adapter. Stops with a clear message for a full-size model without a GPU, for
    a model/precision the backend would load wrong (:class:`helpers.models.UnsupportedLoadError`)
    and for missing or unexpected weights (:class:`WeightMismatchError`). A model that does not
    fit on this process's GPU raises out-of-memory (:class:`helpers.memory.OffloadedError` if it
    was spilled to the CPU). ``model._finetuning_source`` is the repo really loaded and
    ``model._finetuning_bits`` the bits its base weights were loaded in (4 and 8 need CUDA:
    without it they are off, with a logged note, and the weights are float32: 32).
    ``load_in_8bit=True`` with ``load_in_4bit`` left at None overrides the profile's default 4
    bits; both True is a ``ValueError``."""
    require_gpu(choice)
    backend = select_backend(backend)
    profile = choice.profile
    if load_in_4bit and load_in_8bit:
        raise ValueError("load_in_4bit=True and load_in_8bit=True: load the base weights in one "
                         "precision; set load_in_4bit=False for 8 bits, or load_in_8bit=False.")
    eight_bit = bool(load_in_8bit)
    four_bit = (profile.load_in_4bit and not eight_bit) if load_in_4bit is None else load_in_4bit
    on_gpu = models.cuda_available()
    if (four_bit or eight_bit) and not on_gpu:
        log.info("%d-bit loading needs a CUDA GPU (bitsandbytes); none here, so %s loads "
                 "unquantized on %s.", 4 if four_bit else 8, choice.profile.name, models.device())
    four_bit, eight_bit = bool(four_bit and on_gpu), bool(eight_bit and on_gpu)
    dist = distributed()
    if (four_bit or eight_bit) and dist.shards_weights:
        log.warning("%s shards 16-bit weights across processes; %d-bit loading is off under it "
                    "(use accelerate/ddp.yaml for quantized LoRA on each GPU).", dist.type,
                    4 if four_bit else 8)
        four_bit = eight_bit = False
    with main_process_first():  # a stand-in is built once, by the main process
        # refuses what this backend would load wrong
        source = choice.source(four_bit, backend, load_in_8bit=eight_bit)
    # logs a warning, naming what to change, when it won't fit on this process's GPU
    memory.preload_check(choice, four_bit, backend=backend, device=dist.local_rank,
                         load_in_8bit=eight_bit)
    before = memory.memory_snapshot(dist.local_rank)
    max_len = max_seq_length or profile.max_seq_length
    t0 = time.time()
    if backend == "unsloth":
        model, tokenizer, loaded = _load_unsloth(source, max_len, four_bit,
                                                 dist.local_rank if on_gpu else None, eight_bit)
    else:
        model, tokenizer = _load_transformers(source, profile, four_bit, dist, on_gpu, eight_bit)
        loaded = source
    if on_gpu and not dist.shards_weights:
        memory.refuse_offload(model, dist.local_rank)  # spilled to the CPU = out of memory
    if adapter is not None:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(adapter))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    log.info("Loaded %s with %s in %.1f s; %s", loaded, backend, time.time() - t0,
             memory.format_snapshot(memory.memory_snapshot(dist.local_rank), before))
    model._finetuning_backend = backend
    model._finetuning_source = loaded
    # without CUDA: float32, or bfloat16 for a real model on a CPU with native bf16 (load_dtype)
    model._finetuning_bits = (precision.bits(four_bit, eight_bit) if on_gpu
                              else 8 * next(model.parameters()).element_size())
    return model, tokenizer


def load_tokenizer(model: str, smoke: bool | None = None):
    """The tokenizer of ``model`` (its stand-in's in smoke mode), for length reports."""
    from transformers import AutoTokenizer
    choice = models.choose(model, smoke)
    if choice.profile.is_standin and choice.profile.name in models.REGISTRY:
        # the tokenizer does not depend on pre-training
        return AutoTokenizer.from_pretrained(standins.ensure(choice.profile.name, pretrain_steps=0)), choice
    return AutoTokenizer.from_pretrained(choice.source()), choice
