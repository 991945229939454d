"""LoRA training behind one call: :func:`add_lora`, then :func:`train` (TRL's ``SFTTrainer``
on either backend, see :mod:`helpers.runtime.loading`).

Both backends train on exactly the labels made by :func:`helpers.templates.tokenize_for_training`:
the data reach the trainer already tokenized, with ``skip_prepare_dataset``, so neither TRL nor
Unsloth re-derives masks. Validation loss, early stopping, TensorBoard, and resuming from the last
checkpoint only when settings and data match (:func:`_resumable`).

More than one process (``accelerate launch``, configs in ``accelerate/``): the transformers
backend only (Unsloth is single-GPU); the checkpoint bookkeeping runs on the main process first;
the adapter is written once, by the main process (:mod:`helpers.runtime.distributed`).

Settings (:class:`TrainConfig`, :func:`resolve_config`) are :mod:`helpers.training.config`; loading
(:func:`load_model`, :func:`select_backend`, ...) is :mod:`helpers.runtime.loading`; both are
importable from here too, as before.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers import models
from helpers.core import clock
from helpers.runtime.distributed import (  # noqa: F401  (re-exports)
    Distributed,
    DistributedError,
    _check_engine,
    check_engine,
    distributed,
    main_process_first,
    world_size,
)
from helpers.runtime.loading import (  # noqa: F401  (re-exports)
    ALLOW_MISMATCH_ENV,
    BACKENDS,
    WeightMismatchError,
    _device_dtype,
    _mxfp4_checkpoint,
    bf16_supported,
    check_loading_info,
    import_unsloth_first,
    load_model,
    mxfp4_checkpoint,
    select_backend,
    unsloth_available,
)
from helpers.training import anchor, divergence, passes, trl_compat
from helpers.training.config import TrainConfig, resolve_config  # noqa: F401  (resolve_config: re-export)

log = logging.getLogger(__name__)


def add_lora(model, cfg: TrainConfig):
    """Wrap ``model`` with fresh LoRA adapters per ``cfg`` (base weights frozen)."""
    backend = getattr(model, "_finetuning_backend", "transformers")
    if backend == "unsloth":
        from unsloth import FastLanguageModel
        peft_model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules), bias="none",
            use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing and models.cuda_available() else False,
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
    diverged: dict | None = None    # why training was stopped as diverged (helpers.training.divergence)
    device: str = "cpu"             # where it trained: cuda, mps or cpu

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "train_seconds": round(self.train_seconds, 1),
                "final_loss": self.final_loss, "trained_tokens": self.trained_tokens,
                "tokens_per_second": round(self.tokens_per_second, 1), "backend": self.backend,
                "step_seconds": round(self.train_seconds / max(self.steps, 1), 4),
                "eval_loss": self.eval_history[-1]["eval_loss"] if self.eval_history else None,
                "resumed_from": self.resumed_from, "stopped_early": self.stopped_early,
                "real_token_share": round(self.real_token_share, 4),
                "world_size": self.world_size, "distributed_type": self.distributed_type,
                "diverged": self.diverged, "device": self.device,
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


def _collator(pad_token_id: int, padding_free: bool, anchored: bool = False):
    """TRL's collator (labels used as given), counting the real and the processed tokens; with
    ``anchored``, it also joins the replayed rows' targets (:func:`anchor.batch_targets`)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class CountingCollator(DataCollatorForLanguageModeling):
        real_tokens: int = 0
        processed_tokens: int = 0

        def torch_call(self, examples):
            targets = anchor.batch_targets(examples) if anchored else None
            out = super().torch_call(examples)
            if targets:
                out.update(targets)
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
    if not settings.get("load_in_8bit"):  # added later: off, it leaves older checkpoints resumable
        settings.pop("load_in_8bit", None)
    if not anchor.marked(rows):  # without replayed rows it changes nothing (and older runs resume)
        settings.pop("replay_kl", None)
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

    trl_compat.ensure_cpu_loss_head()  # TRL 1.15 (the GPU lock's) has no CPU path of its own
    output_dir = Path(output_dir)
    backend = getattr(model, "_finetuning_backend", "transformers")
    def as_dataset(rs):
        return Dataset.from_list([passes.item(r) for r in rs])

    # replayed answers trained towards the base model's distribution (helpers.training.anchor)
    anchored = bool(cfg.replay_kl and anchor.marked(rows)) and backend == "transformers"
    if anchored:
        anchor.teacher_targets(model, rows)
    elif cfg.replay_kl and anchor.marked(rows):
        log.info("Replay: the %s backend trains the replayed answers as ordinary labels "
                 "(the base model's distribution is used by the transformers backend only)", backend)

    # rows of one pass only (replayed answers) follow the epoch: a dataset that changes with it
    epoch_rows = passes.EpochRows(rows) if passes.pass_count(rows) else None
    dataset = epoch_rows.as_dataset() if epoch_rows else as_dataset(rows)
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
        use_cpu=models.device() == "cpu",  # an Apple GPU (mps) trains there
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
    watch = divergence.DivergenceWatch()
    cbs = [recorder, divergence.divergence_callback(watch, cfg.learning_rate), *callbacks]
    if epoch_rows is not None:
        cbs.insert(0, passes.epoch_callback(epoch_rows))
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
    collator = _collator(tokenizer.pad_token_id, padding_free, anchored)
    prepare_for_training(model)
    # TensorBoard's callback reads its folder from the environment when it is created
    saved_env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(output_dir / "tensorboard")
    try:
        trainer_cls = anchor.trainer_class(SFTTrainer, cfg.replay_kl) if anchored else SFTTrainer
        trainer = trainer_cls(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                              processing_class=tokenizer, data_collator=collator,
                              callbacks=cbs + [_progress_logger()])
    finally:
        if saved_env is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = saved_env
    check_engine(distributed(), trainer.accelerator.distributed_type)
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
    tokens, trained = passes.totals(rows, cfg.epochs)
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
                       world_size=world, distributed_type=kind, diverged=watch.event,
                       device=str(trainer.args.device.type),
                       stopped_early=out.global_step < trainer.state.max_steps)
