"""Training settings: :class:`TrainConfig` and :func:`resolve_config` (profile defaults, then the
settings given; ``None`` means "the default"; an unknown setting is an error naming the known ones).

Pure settings: nothing here imports torch or transformers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from helpers.models import ModelProfile, precision, sizing
from helpers.runtime.distributed import DistributedError, world_size
from helpers.runtime.loading import BACKENDS, select_backend
from helpers.training import tinker_models


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
    load_in_8bit: bool = field(default=False, metadata={"help": "load base weights in 8 bits (bitsandbytes LLM.int8, quantized from the 16-bit checkpoint while loading; GPU only): about half the 16-bit weight memory, less rounding than 4 bits; not with load_in_4bit"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward pass: less memory, ~20-30% slower"})
    replay_kl: float = field(default=16.0, metadata={"help": "weight of the KL divergence that trains replayed general answers towards the base model's whole next-token distribution rather than its one answer (transformers backend; helpers.training.anchor, where the weight is measured); 0 trains them as ordinary labels"})
    backend: str = field(default="auto", metadata={"help": "auto, unsloth, transformers, mlx (Apple silicon: helpers.training.mlx_backend), or tinker (Tinker's service trains; needs TINKER_API_KEY)"})

    def __post_init__(self) -> None:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError(
                "load_in_4bit=True and load_in_8bit=True were both set, but the base weights are "
                "loaded in one precision. Set one of them: load_in_4bit=True for 4 bits (QLoRA), or "
                "load_in_8bit=True with load_in_4bit=False for 8 bits (--load-in-8bit on the "
                "command line); neither for 16 bits.")

    @property
    def bits(self) -> int:
        """Bits of the base weights: 4, 8 or 16 (:mod:`helpers.models.precision`)."""
        return precision.bits(self.load_in_4bit, self.load_in_8bit)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


def resolve_config(profile: ModelProfile, **overrides) -> TrainConfig:
    """Profile defaults, then ``overrides`` (``None`` values are ignored). An unknown setting
    is an error that lists the known ones. ``load_in_8bit=True`` turns off the profile's default
    ``load_in_4bit``; both set to True is an error (:class:`TrainConfig`)."""
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
    if set_.get("load_in_8bit") and "load_in_4bit" not in set_:
        set_["load_in_4bit"] = False   # 8 bits asked for: the profile's default 4 bits gives way
    if set_.get("backend") == "mlx" and "load_in_4bit" not in set_:
        set_["load_in_4bit"] = False   # MLX trains the 16-bit weights (bitsandbytes is CUDA only)
    if "target_modules" in set_:
        set_["target_modules"] = tuple(set_["target_modules"])
    cfg = dataclasses.replace(base, **set_)
    if cfg.backend == "tinker":   # Tinker's service trains (helpers.training.tinker_backend)
        tinker_models.require_tinker()
    elif cfg.backend not in BACKENDS:
        raise ValueError(f"backend={cfg.backend!r} is not one of {', '.join(BACKENDS)}, tinker.")
    if cfg.backend == "mlx":
        select_backend("mlx")  # installed (or an error naming `pip install ".[mlx]"`), one process
    if cfg.backend == "unsloth" and world_size() > 1:
        raise DistributedError(
            f"backend='unsloth' was asked for in a run of {world_size()} processes, but Unsloth "
            "trains on one GPU only. Use backend='transformers' (--backend transformers) under "
            "accelerate launch, or run in one process (python -m helpers.finetune ...) for Unsloth.")
    return cfg


def epochs_from_data(cfg: TrainConfig, profile: ModelProfile, n_examples: int,
                     epochs_set: bool) -> tuple[TrainConfig, str | None]:
    """For a profile whose epochs come from the data (``TrainDefaults.epochs_from_data``: small
    registry models and any model outside the registry), the passes over ``n_examples`` that give
    about :data:`helpers.models.sizing.TARGET_STEPS` optimizer steps, with the reason; ``cfg``
    unchanged when ``epochs`` was set explicitly (``epochs_set``) or the profile fixes it."""
    if epochs_set or not profile.train.epochs_from_data:
        return cfg, None
    epochs = sizing.epochs_for(n_examples, cfg.batch_size, cfg.grad_accum)
    steps = -(-n_examples // (cfg.batch_size * cfg.grad_accum)) * epochs
    why = (f"epochs={epochs} from the data: {n_examples} examples, {cfg.batch_size * cfg.grad_accum} "
           f"per step, about {steps} steps (aiming at {sizing.TARGET_STEPS}, {sizing.MAX_EPOCHS} "
           "passes at most; replayed answers, if any, add their steps on top); set `epochs` to "
           "override")
    return dataclasses.replace(cfg, epochs=epochs), why
