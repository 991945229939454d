"""LoRA training behind one call, with two backends.

- ``unsloth``: Unsloth's ``FastLanguageModel`` (the fast path on NVIDIA GPUs). Chosen by
  ``backend="auto"`` when CUDA is present and Unsloth imports.
- ``transformers``: transformers + PEFT + TRL's ``SFTTrainer``; runs everywhere.

Both train on exactly the labels made by :func:`helpers.templates.tokenize_for_training`: the
data reach the trainer already tokenized, with ``skip_prepare_dataset``, so neither TRL nor
Unsloth re-derives masks.

More than one process (``accelerate launch``, configs in ``accelerate/``): the transformers
backend only (Unsloth is single-GPU). Each process loads its own copy on its own GPU (DDP), or
on the CPU for FSDP/DeepSpeed to shard; the stand-in build and the checkpoint bookkeeping run on
the main process first; the adapter is written once, by the main process. See
:func:`distributed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers.models import ModelChoice, ModelProfile, require_gpu
from helpers.core import clock

log = logging.getLogger(__name__)

BACKENDS = ("auto", "unsloth", "transformers")


class DistributedError(RuntimeError):
    """A setting that cannot work with more than one process."""


def world_size() -> int:
    """How many processes train together (``WORLD_SIZE``, set by ``accelerate launch``/torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


@dataclass(frozen=True)
class Distributed:
    """This process's place in a multi-process run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    #: accelerate's DistributedType name: NO, MULTI_GPU, MULTI_CPU, FSDP or DEEPSPEED
    type: str = "NO"

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shards_weights(self) -> bool:
        """FSDP and DeepSpeed split the weights across processes (no process holds them all)."""
        return self.type in ("FSDP", "DEEPSPEED")


def distributed() -> Distributed:
    """Where this process stands, from the environment ``accelerate launch`` sets (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``ACCELERATE_USE_FSDP``/``ACCELERATE_USE_DEEPSPEED``)."""
    n = world_size()
    if n == 1:
        return Distributed()
    env = os.environ
    flag = lambda name: env.get(name, "").lower() in ("1", "true", "yes")  # noqa: E731
    from helpers.models import cuda_available
    kind = ("FSDP" if flag("ACCELERATE_USE_FSDP") else "DEEPSPEED" if flag("ACCELERATE_USE_DEEPSPEED")
            else "MULTI_GPU" if cuda_available() else "MULTI_CPU")
    return Distributed(world_size=n, rank=int(env.get("RANK", "0")),
                       local_rank=int(env.get("LOCAL_RANK", "0")), type=kind)


def _check_engine(asked: Distributed, running) -> None:
    """Stop when accelerate set up another engine than the launch asked for (before training):
    under FSDP/DeepSpeed the processes skip answers and load 16-bit weights on the CPU, which only
    makes sense when the weights really are sharded."""
    running = getattr(running, "value", str(running))
    if not asked.shards_weights or running == asked.type:
        return
    import torch
    why = ""
    if asked.type == "FSDP" and not torch.cuda.is_available():
        # accelerate 1.15 state.py: AcceleratorState turns into FSDP only a process state of
        # MULTI_GPU/NPU/XPU/MLU/...; without CUDA it is MULTI_CPU (TrainingArguments' use_cpu),
        # or NO without cpu=True. DeepSpeed's branch only needs the Accelerator made without
        # cpu=True, as the Trainer makes it: DeepSpeed's CPU accelerator runs (over gloo).
        why = (" accelerate (1.15) turns a run into FSDP only on a GPU-type device: on a CPU "
               "its state is MULTI_CPU, so every process would train a whole copy as plain DDP. "
               "torch's FSDP2 itself runs over gloo, but accelerate does not select it on a CPU.")
    raise DistributedError(
        f"accelerate launch asked for {asked.type}, but accelerate set up {running}.{why} Run "
        f"{asked.type} on GPUs; on a CPU use accelerate/ddp_cpu.yaml (DDP) or DeepSpeed's CPU "
        "accelerator (accelerate/deepspeed_zero3.yaml --mixed_precision no, with deepspeed installed).")


@contextlib.contextmanager
def main_process_first():
    """Run the block on the main process first, then on the others together (a no-op in one
    process): what it builds or moves on disk (a stand-in, checkpoints) is done once."""
    if world_size() == 1:
        yield
        return
    import datetime

    import torch
    from accelerate import PartialState
    # the trainer makes the same state later; the process group started here is reused
    state = PartialState(cpu=not torch.cuda.is_available(), timeout=datetime.timedelta(minutes=30))
    with state.main_process_first():
        yield


@dataclass
class TrainConfig:
    """Training settings. ``None`` in :func:`resolve_config` means "the profile's default"."""

    epochs: float = field(default=1.0, metadata={"help": "passes over the training data"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (alpha/r scales updates)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path"})
    target_modules: tuple[str, ...] = field(default=("q_proj", "k_proj", "v_proj"),
                                            metadata={"help": "module names that get LoRA adapters"})
    batch_size: int = field(default=2, metadata={"help": "sequences per device per step"})
    grad_accum: int = field(default=4, metadata={"help": "gradient accumulation steps"})
    max_seq_length: int = field(default=2048, metadata={"help": "longest sequence in tokens; longer ones are truncated and counted"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of steps for linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    lr_scheduler: str = field(default="linear", metadata={"help": "transformers scheduler name"})
    seed: int = field(default=42, metadata={"help": "random seed for LoRA init and data order"})
    logging_steps: int = field(default=5, metadata={"help": "log the loss every N optimizer steps"})
    keep_checkpoints: int = field(default=3, metadata={"help": "per-epoch checkpoints kept (oldest deleted); 0 keeps all"})
    eval_steps: int = field(default=0, metadata={"help": "evaluate every N steps (0: once per epoch) when a validation set is given"})
    early_stopping_patience: int = field(default=0, metadata={"help": "stop after N evaluations without improvement (0: off)"})
    early_stopping_threshold: float = field(default=0.0, metadata={"help": "smallest eval-loss drop that counts as improvement"})
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint in the run folder if there is one"})
    padding_free: bool | None = field(default=None, metadata={"help": "concatenate each batch into one sequence with no padding (position_ids mark where examples start); False pads to the longest; None: see auto_padding_free"})
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard, none, or any transformers report_to value (comma-separated)"})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: load base weights in 4 bits (GPU only)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward pass: less memory, ~20-30% slower"})
    backend: str = field(default="auto", metadata={"help": "auto, unsloth or transformers"})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


def resolve_config(profile: ModelProfile, **overrides) -> TrainConfig:
    """Profile defaults, then ``overrides`` (``None`` values are ignored). An unknown setting
    is an error that lists the known ones."""
    base = TrainConfig(
        epochs=profile.train.epochs, learning_rate=profile.train.learning_rate,
        lora_r=profile.lora.r, lora_alpha=profile.lora.alpha, lora_dropout=profile.lora.dropout,
        target_modules=tuple(profile.lora.target_modules), batch_size=profile.train.batch_size,
        grad_accum=profile.train.grad_accum, max_seq_length=profile.max_seq_length,
        warmup_ratio=profile.train.warmup_ratio, weight_decay=profile.train.weight_decay,
        lr_scheduler=profile.train.lr_scheduler, load_in_4bit=profile.load_in_4bit)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"Unknown training setting(s): {', '.join(unknown)}. "
                        f"Known settings: {', '.join(sorted(known))}.")
    set_ = {k: v for k, v in overrides.items() if v is not None}
    if "target_modules" in set_:
        set_["target_modules"] = tuple(set_["target_modules"])
    cfg = dataclasses.replace(base, **set_)
    if cfg.backend not in BACKENDS:
        raise ValueError(f"backend={cfg.backend!r} is not one of {', '.join(BACKENDS)}.")
    if cfg.backend == "unsloth" and world_size() > 1:
        raise DistributedError(
            f"backend='unsloth' was asked for in a run of {world_size()} processes, but Unsloth "
            "trains on one GPU only. Use backend='transformers' (--backend transformers) under "
            "accelerate launch, or run in one process (python -m helpers.finetune ...) for Unsloth.")
    return cfg


def unsloth_available() -> bool:
    return importlib.util.find_spec("unsloth") is not None


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
        from helpers.models import cuda_available
        if world_size() > 1 or not cuda_available():
            return False
    if "transformers" in sys.modules:
        log.warning("transformers was imported before Unsloth, so Unsloth patches it late (it may "
                    "run slower or use more memory). Call helpers.notebook.setup() before anything "
                    "imports transformers (restart the kernel first).")
    import unsloth  # noqa: F401
    return True


def select_backend(backend: str = "auto") -> str:
    """The backend to use: ``auto`` picks Unsloth on a CUDA machine where it is installed."""
    from helpers.models import cuda_available
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}.")
    if backend == "auto":  # Unsloth is single-GPU: more than one process means transformers
        return ("unsloth" if cuda_available() and unsloth_available() and world_size() == 1
                else "transformers")
    if backend == "unsloth" and world_size() > 1:
        raise DistributedError(f"backend='unsloth' cannot run in {world_size()} processes (Unsloth "
                               "is single-GPU); use backend='transformers' under accelerate launch.")
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


def _mxfp4_checkpoint(source: str, profile: ModelProfile | None = None, *,
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


def _accepts(func, name: str) -> bool:
    import inspect
    try:
        return name in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


def _load_unsloth(source: str, max_len: int, four_bit: bool, device: int | None):
    """Unsloth's ``FastLanguageModel.from_pretrained``; returns ``(model, tokenizer, loaded)``
    where ``loaded`` is the repo Unsloth's mapper really loaded (it may swap ``source``)."""
    import unsloth  # noqa: F401  (must be imported before transformers to patch it)
    from unsloth import FastLanguageModel
    kwargs: dict[str, Any] = dict(model_name=source, max_seq_length=max_len,
                                  load_in_4bit=four_bit, dtype=None)
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
                       on_gpu: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    kwargs: dict[str, Any] = {"dtype": _device_dtype()}
    if profile.family == "gpt-oss":
        kwargs["attn_implementation"] = "eager"
    if four_bit:
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_device_dtype())
    elif _mxfp4_checkpoint(source, profile):
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
    return model, tokenizer


def load_model(choice: ModelChoice, *, backend: str = "auto", adapter=None,
               max_seq_length: int | None = None, load_in_4bit: bool | None = None):
    """``(model, tokenizer)`` for ``choice`` with ``backend``; with ``adapter``, the base model
    plus that LoRA adapter. Stops with a clear message for a full-size model without a GPU, for
    a model/precision the backend would load wrong (:class:`helpers.models.UnsupportedLoadError`)
    and for missing or unexpected weights (:class:`WeightMismatchError`). A model that does not
    fit on this process's GPU raises out-of-memory (:class:`helpers.memory.OffloadedError` if it
    was spilled to the CPU). ``model._finetuning_source`` is the repo really loaded."""
    require_gpu(choice)
    backend = select_backend(backend)
    profile = choice.profile
    four_bit = profile.load_in_4bit if load_in_4bit is None else load_in_4bit
    from helpers.models import cuda_available
    on_gpu = cuda_available()
    four_bit = bool(four_bit and on_gpu)
    dist = distributed()
    if four_bit and dist.shards_weights:
        log.warning("%s shards 16-bit weights across processes; 4-bit loading is off under it "
                    "(use accelerate/ddp.yaml for QLoRA on each GPU).", dist.type)
        four_bit = False
    from helpers.runtime import memory  # local: memory imports this module
    with main_process_first():  # a stand-in is built once, by the main process
        source = choice.source(four_bit, backend)  # refuses what this backend would load wrong
    # logs a warning, naming what to change, when it won't fit on this process's GPU
    memory.preload_check(choice, four_bit, backend=backend, device=dist.local_rank)
    before = memory.memory_snapshot(dist.local_rank)
    max_len = max_seq_length or profile.max_seq_length
    t0 = time.time()
    if backend == "unsloth":
        model, tokenizer, loaded = _load_unsloth(source, max_len, four_bit,
                                                 dist.local_rank if on_gpu else None)
    else:
        model, tokenizer = _load_transformers(source, profile, four_bit, dist, on_gpu)
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
    return model, tokenizer


def add_lora(model, cfg: TrainConfig):
    """Wrap ``model`` with fresh LoRA adapters per ``cfg`` (base weights frozen)."""
    backend = getattr(model, "_finetuning_backend", "transformers")
    if backend == "unsloth":
        from unsloth import FastLanguageModel
        from helpers.models import cuda_available
        peft_model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules), bias="none",
            use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing and cuda_available() else False,
            random_state=cfg.seed)
    else:
        import torch
        from peft import LoraConfig, get_peft_model
        torch.manual_seed(cfg.seed)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, lora)
    peft_model._finetuning_backend = backend
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("LoRA r=%d alpha=%d on %s: %d trainable of %d parameters (%.2f%%)", cfg.lora_r,
             cfg.lora_alpha, ",".join(cfg.target_modules), trainable, total, 100 * trainable / total)
    return peft_model


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    loss_history: list[dict]
    steps: int
    train_seconds: float
    final_loss: float | None
    trained_tokens: int
    tokens_per_second: float
    backend: str
    eval_history: list[dict] = field(default_factory=list)
    resumed_from: str | None = None
    stopped_early: bool = False
    real_token_share: float = 1.0   # real tokens / tokens the model processed (padding included)
    world_size: int = 1             # processes that trained together
    distributed_type: str = "NO"    # accelerate's DistributedType: NO, MULTI_GPU, MULTI_CPU, FSDP, DEEPSPEED

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "train_seconds": round(self.train_seconds, 1),
                "final_loss": self.final_loss, "trained_tokens": self.trained_tokens,
                "tokens_per_second": round(self.tokens_per_second, 1), "backend": self.backend,
                "step_seconds": round(self.train_seconds / max(self.steps, 1), 4),
                "eval_loss": self.eval_history[-1]["eval_loss"] if self.eval_history else None,
                "resumed_from": self.resumed_from, "stopped_early": self.stopped_early,
                "real_token_share": round(self.real_token_share, 4),
                "world_size": self.world_size, "distributed_type": self.distributed_type,
                "adapter_dir": str(self.adapter_dir)}


def _loss_recorder():
    from transformers import TrainerCallback

    class LossRecorder(TrainerCallback):
        """Keeps every logged loss (and learning rate) with its step and epoch."""

        def __init__(self):
            self.history: list[dict] = []
            self.eval_history: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "eval_loss" in logs:
                self.eval_history.append({"step": state.global_step, "epoch": round(state.epoch or 0, 3),
                                          "eval_loss": round(float(logs["eval_loss"]), 5)})
            if logs and "loss" in logs:
                self.history.append({"step": state.global_step, "epoch": round(state.epoch or 0, 3),
                                     "loss": round(float(logs["loss"]), 5),
                                     "learning_rate": logs.get("learning_rate")})

    return LossRecorder()


def _restore_history(recorder, log_history: Sequence[dict]) -> None:
    """After a resume: the whole run's losses (the checkpoint's logged ones, then this session's),
    so that the loss curve and the final loss cover the run and not only its last part."""
    seen = {h["step"] for h in recorder.history}
    seen_eval = {h["step"] for h in recorder.eval_history}
    old = [{"step": e["step"], "epoch": round(e.get("epoch") or 0, 3), "loss": round(float(e["loss"]), 5),
            "learning_rate": e.get("learning_rate")}
           for e in log_history if "loss" in e and e.get("step") not in seen]
    old_eval = [{"step": e["step"], "epoch": round(e.get("epoch") or 0, 3),
                 "eval_loss": round(float(e["eval_loss"]), 5)}
                for e in log_history if "eval_loss" in e and e.get("step") not in seen_eval]
    recorder.history[:0] = old
    recorder.eval_history[:0] = old_eval


def _progress_logger(parts: int = 10):
    """Logs about ``parts`` progress lines per run: step, epoch, loss, elapsed and time left."""
    from transformers import TrainerCallback

    class ProgressLogger(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.time()
            self.every = max(1, state.max_steps // parts)
            self.loss = None
            log.info("Training: %d steps, %d epoch(s)", state.max_steps, math.ceil(args.num_train_epochs))

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.loss = logs["loss"]

        def on_step_end(self, args, state, control, **kw):
            step, total = state.global_step, state.max_steps
            if step % self.every and step != total:
                return
            spent = time.time() - self.t0
            left = spent / step * (total - step)
            loss = f"loss {self.loss:.4f}" if self.loss is not None else "loss -"
            log.info("step %d/%d (epoch %.1f) %s | %.0f s elapsed, ~%.0f s left", step, total,
                     state.epoch or 0, loss, spent, left)

    return ProgressLogger()


def _report_to(value: str) -> list[str]:
    wanted = [v.strip() for v in value.split(",") if v.strip() and v.strip() != "none"]
    if "tensorboard" in wanted and importlib.util.find_spec("tensorboard") is None:
        log.warning("report_to includes tensorboard but it is not installed (pip install tensorboard); "
                    "training goes on without TensorBoard logs.")
        wanted.remove("tensorboard")
    return wanted or ["none"]


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest ``checkpoint-N`` folder of a run, if any."""
    folder = Path(output_dir) / "checkpoints"
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def auto_padding_free(backend: str, model_type: str) -> bool:
    """Whether padding-free batches are on by default. Measured on the stand-ins
    (tests/test_train.py): with the transformers backend, Qwen2 and Qwen3 give exactly the padded
    loss; GPT-OSS (eager attention with sinks) lets packed sequences see each other, so it pads.
    Unsloth is left to pad until its packed path is verified on a GPU."""
    return backend == "transformers" and model_type in ("qwen2", "qwen3", "qwen3_moe")


def _has_experts(model) -> bool:
    config = getattr(model, "config", None)
    return any(getattr(config, k, None) for k in ("num_experts", "num_local_experts", "n_routed_experts"))


def prepare_for_training(model) -> None:
    """No KV cache while training: with a cache, transformers does not detect packed
    (padding-free) sequences and lets them attend to each other."""
    model.config.use_cache = False
    base = getattr(model, "get_base_model", lambda: model)()
    base.config.use_cache = False


def _collator(pad_token_id: int, padding_free: bool):
    """TRL's collator (labels used as given), counting the real and the processed tokens."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class CountingCollator(DataCollatorForLanguageModeling):
        real_tokens: int = 0
        processed_tokens: int = 0

        def torch_call(self, examples):
            out = super().torch_call(examples)
            self.real_tokens += sum(len(e["input_ids"]) for e in examples)
            self.processed_tokens += out["input_ids"].numel()
            return out

    return CountingCollator(pad_token_id=pad_token_id, padding_free=padding_free)


def _fingerprint(cfg: TrainConfig, rows: Sequence[dict]) -> dict[str, Any]:
    """Settings and data a checkpoint was made with. The data are the rows' ``source_sha256``
    (the conversations before rendering, from ``templates.tokenize_dataset``) where every row
    has one: GPT-OSS's template renders today's date, so its token ids differ from one day to
    the next and a resume on a later day would start over. Rows made otherwise are hashed by
    their ``input_ids`` and ``labels``."""
    import hashlib
    h = hashlib.sha256()
    if rows and all("source_sha256" in r for r in rows):
        h.update(b"source_sha256\n")
        for r in rows:
            h.update(r["source_sha256"].encode("ascii") + b"\n")
    else:
        for r in rows:
            h.update(bytes(str(r["input_ids"]), "ascii"))
            h.update(bytes(str(r["labels"]), "ascii"))
    settings = {k: v for k, v in cfg.to_dict().items()
                if k not in ("resume", "report_to", "logging_steps", "keep_checkpoints")}
    return {"settings": settings, "data_sha256": h.hexdigest()}


def _resumable(output_dir: Path, cfg: TrainConfig, rows: Sequence[dict]) -> Path | None:
    """The checkpoint to resume from, only if it was made with the same settings and data;
    checkpoints from other settings are moved aside (never deleted) and training starts over."""
    folder = Path(output_dir) / "checkpoints"
    stamp = folder / "finetuning_fingerprint.json"
    current = _fingerprint(cfg, rows)
    last = last_checkpoint(output_dir)
    if last is not None:
        import json
        saved = json.loads(stamp.read_text()) if stamp.is_file() else None
        if saved == current:
            return last
        aside = folder.with_name(f"checkpoints.old-{clock.stamp()}")
        folder.rename(aside)
        log.warning("Checkpoints in %s were made with other settings or data; moved them to %s and "
                    "starting over.", folder, aside)
    folder.mkdir(parents=True, exist_ok=True)
    import json
    stamp.write_text(json.dumps(current, indent=1))
    return None


def train(model, tokenizer, rows: Sequence[dict], cfg: TrainConfig, output_dir: str | os.PathLike,
          *, eval_rows: Sequence[dict] | None = None, callbacks: Sequence[Any] = (),
          on_log: Callable[[list[dict]], None] | None = None) -> TrainResult:
    """Train the LoRA-wrapped ``model`` on tokenized ``rows`` (``input_ids``/``labels``).

    Saves a checkpoint per epoch (or per ``eval_steps``) under ``output_dir/checkpoints`` and
    the adapter and tokenizer in ``output_dir/adapter``; resumes from the last checkpoint there
    when ``cfg.resume``. With ``eval_rows`` it reports validation loss and can stop early.
    """
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from helpers.training import trl_compat
    trl_compat.ensure_cpu_loss_head()  # TRL 1.15 (the GPU lock's) has no CPU path of its own
    output_dir = Path(output_dir)
    backend = getattr(model, "_finetuning_backend", "transformers")
    def as_dataset(rs):
        return Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rs])

    dataset = as_dataset(rows)
    eval_dataset = as_dataset(eval_rows) if eval_rows else None
    if cfg.early_stopping_patience and eval_dataset is None:
        raise ValueError("early_stopping_patience is set but there is no validation set: pass "
                         "eval_rows (e.g. eval_fraction > 0), or set early_stopping_patience=0.")
    strategy = "steps" if cfg.eval_steps else "epoch"
    use_bf16 = bf16_supported()  # native bf16 only: an emulating card (RTX 20xx, V100) gets fp16
    args = SFTConfig(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy=strategy,
        save_steps=cfg.eval_steps or 500,
        eval_strategy=strategy if eval_dataset is not None else "no",
        eval_steps=cfg.eval_steps or None,
        per_device_eval_batch_size=cfg.batch_size,
        load_best_model_at_end=bool(cfg.early_stopping_patience),
        metric_for_best_model="eval_loss" if cfg.early_stopping_patience else None,
        greater_is_better=False if cfg.early_stopping_patience else None,
        save_total_limit=cfg.keep_checkpoints or None,
        save_only_model=False,
        report_to=_report_to(cfg.report_to),
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_length=cfg.max_seq_length,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        bf16=use_bf16,
        fp16=torch.cuda.is_available() and not use_bf16,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
        optim="adamw_torch",
        gradient_checkpointing=cfg.gradient_checkpointing and backend != "unsloth",
        # DDP: every LoRA weight of a dense model gets a gradient each step, so the search for
        # unused ones is skipped; in a mixture of experts, unrouted experts' weights get none
        ddp_find_unused_parameters=_has_experts(model),
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
    )
    recorder = _loss_recorder()
    cbs = [recorder, *callbacks]
    if on_log is not None:
        class _Forward(TrainerCallback):
            def on_log(self, a, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    on_log(recorder.history)
        cbs.append(_Forward())
    if cfg.early_stopping_patience:
        from transformers import EarlyStoppingCallback
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience,
                                         early_stopping_threshold=cfg.early_stopping_threshold))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    family = getattr(getattr(model, "config", None), "model_type", "")
    padding_free = cfg.padding_free if cfg.padding_free is not None else auto_padding_free(backend, family)
    collator = _collator(tokenizer.pad_token_id, padding_free)
    prepare_for_training(model)
    # TensorBoard's callback reads its folder from the environment when it is created
    saved_env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(output_dir / "tensorboard")
    try:
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                             processing_class=tokenizer, data_collator=collator,
                             callbacks=cbs + [_progress_logger()])
    finally:
        if saved_env is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = saved_env
    _check_engine(distributed(), trainer.accelerator.distributed_type)
    # our progress lines and the live plot replace the per-step dict printing and tqdm bars
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    model.train()
    t0 = time.time()
    with main_process_first():  # old checkpoints are moved aside once, by the main process
        resume_from = _resumable(output_dir, cfg, rows) if cfg.resume else None
    if resume_from:
        log.info("Resuming from %s", resume_from)
    out = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - t0
    if resume_from:  # the losses logged before the checkpoint come back from its trainer state
        _restore_history(recorder, trainer.state.log_history)
    model.eval()
    model.config.use_cache = True
    getattr(model, "get_base_model", lambda: model)().config.use_cache = True
    adapter_dir = output_dir / "adapter"
    world = trainer.args.world_size
    kind = getattr(trainer.accelerator.distributed_type, "value", str(trainer.accelerator.distributed_type))
    if world > 1:
        # every process takes part (FSDP/ZeRO-3 gather the sharded weights); the main one writes
        trainer.save_model(str(adapter_dir))
        if trainer.is_world_process_zero():
            log.info("Saved the adapter in %s (process %d of %d)", adapter_dir,
                     trainer.args.process_index, world)
    else:
        model.save_pretrained(str(adapter_dir))
        tokenizer.save_pretrained(str(adapter_dir))
    epochs = math.ceil(cfg.epochs)
    tokens = sum(len(r["input_ids"]) for r in rows) * epochs
    trained = sum(sum(1 for x in r["labels"] if x != -100) for r in rows) * epochs
    final = recorder.history[-1]["loss"] if recorder.history else out.training_loss
    log.info("Trained %d steps in %.0f s (%.0f tokens/s); final loss %.4f; adapter in %s",
             out.global_step, seconds, tokens / max(seconds, 1e-9), final, adapter_dir)
    return TrainResult(output_dir=output_dir, adapter_dir=adapter_dir,
                       loss_history=recorder.history, steps=out.global_step, train_seconds=seconds,
                       final_loss=final, trained_tokens=trained,
                       tokens_per_second=tokens / max(seconds, 1e-9), backend=backend,
                       eval_history=recorder.eval_history,
                       resumed_from=str(resume_from) if resume_from else None,
                       real_token_share=collator.real_tokens / max(collator.processed_tokens, 1),
                       world_size=world, distributed_type=kind,
                       stopped_early=out.global_step < trainer.state.max_steps)
