"""DPO on preference pairs (:mod:`helpers.data.preference`): TRL's ``DPOTrainer`` on either backend.

**Masks.** Like SFT, the data reach TRL already tokenized, by our masks
(:func:`helpers.training.masks.tokenize_for_training`): a pair's prompt is every token before the
first trained token of ``prompt + chosen``, and each completion is the trained span, the answer
and the end-of-turn token that closes it. So the chosen and rejected log-probabilities cover
exactly what SFT trains, never the system prompt, the question, role headers or Qwen3's empty
think block, and never the newline the template prints after the closer (which TRL's own
tokenization, "everything after the prompt", would count). :meth:`PretokenizedDPOTrainer._prepare_dataset`
hands the rows to TRL's own collator as they are; :func:`pair_mask` shows, through that
collator, which tokens each loss covers.

**Reference model.** The policy is the base model plus a fresh LoRA adapter. Given a PEFT model
and ``ref_model=None``, TRL 1.15/1.16 adds a frozen copy of that adapter named ``"ref"`` and
scores the reference through it (read in ``DPOTrainer.__init__``); a fresh adapter's update is
zero (LoRA's B starts at 0), so the reference is exactly the base model, and no second copy of the
base weights is made. The copy is deleted before the adapter is saved, so ``adapter/`` holds the
trained adapter alone.

**Backends.** ``transformers``: PEFT + TRL. ``unsloth``: the model loaded and wrapped by Unsloth,
and TRL's ``DPOTrainer`` as Unsloth rewrites it on import (read in unsloth 2026.10.9:
``unsloth.models.rl.PatchFastRL`` runs when ``unsloth`` is imported and replaces
``trl.DPOTrainer`` with a generated ``UnslothDPOTrainer`` subclass; ``PatchDPOTrainer()`` is kept
as a no-op and is called where it exists, for older releases that patched there). Unsloth's CPU
mode covers SFT only (its start-up message says so, and ``_cpu_init`` exports no
``PatchDPOTrainer``), so the Unsloth path needs CUDA and says so (:class:`PreferenceBackendError`).

Settings (:class:`DPOSettings`) come with their reasons; the training settings are the run's
:class:`helpers.training.config.TrainConfig`, except the learning rate (see
:func:`dpo_learning_rate`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers import models
from helpers.runtime import loading
from helpers.runtime.distributed import DistributedError, world_size
from helpers.training import divergence, masks, trl_compat
from helpers.training import trainer as sft
from helpers.training.config import TrainConfig

log = logging.getLogger(__name__)

#: TRL 1.15/1.16 ``DPOConfig.loss_type`` values (read in trl/trainer/dpo_config.py)
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
              "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
#: the DPO learning rate is the run's SFT rate times this (see :func:`dpo_learning_rate`)
LR_FACTOR = 0.1


class PreferenceBackendError(RuntimeError):
    """The backend asked for cannot run DPO here; the message says what to use."""


@dataclass
class DPOSettings:
    """DPO's own settings, each default with its reason (``REASONS``)."""

    beta: float = 0.1
    loss_type: str = "sigmoid"
    learning_rate: float | None = None   # None: dpo_learning_rate(cfg)
    precompute_ref_log_probs: bool = False

    REASONS = {
        "beta": "0.1, the DPO paper's and TRL's default: how far the tuned model may move from the "
                "reference (higher stays closer to the base model)",
        "loss_type": "sigmoid, the original DPO loss (-log sigmoid of beta x the reward margin)",
        "learning_rate": f"the run's SFT learning rate x {LR_FACTOR}: preference losses move a model much "
                         "further per step than SFT (TRL's default for DPO is 1e-6, 50x below "
                         "SFTConfig's 5e-5/2e-5 range; LoRA recipes use 5e-6 to 5e-5)",
        "precompute_ref_log_probs": "off: with LoRA the reference is a frozen copy of the fresh adapter "
                                    "(the base model), so it costs one no-grad forward and almost no memory",
    }

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not a TRL DPO loss. Use one of: "
                             f"{', '.join(LOSS_TYPES)} (sigmoid is standard DPO).")
        if not self.beta > 0:
            raise ValueError(f"beta={self.beta}: use a positive value (0.1 is standard; higher keeps "
                             "the model closer to the reference).")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def dpo_learning_rate(cfg: TrainConfig, settings: DPOSettings) -> float:
    """The learning rate DPO trains with: ``settings.learning_rate`` when set, else the run's
    (SFT) learning rate times :data:`LR_FACTOR`."""
    return settings.learning_rate if settings.learning_rate is not None else cfg.learning_rate * LR_FACTOR


# -- tokenizing pairs with our masks -----------------------------------------------------------
def _trained_span(row: dict[str, list[int]], where: str) -> tuple[int, int]:
    idx = [i for i, lab in enumerate(row["labels"]) if lab != masks.IGNORE_INDEX]
    if not idx:
        raise masks.MaskingError(f"{where}: no trained token (the answer is missing from the rendering).")
    first, last = idx[0], idx[-1]
    if last - first + 1 != len(idx):
        raise masks.MaskingError(f"{where}: the trained tokens are not one span; a preference pair "
                                 "must end with a single assistant turn.")
    return first, last + 1


def tokenize_pair(tokenizer, pair: dict, *, where: str = "pair", **template_kwargs) -> dict[str, Any]:
    """``prompt_ids``, ``chosen_ids``, ``rejected_ids`` of one pair, cut where our SFT mask starts
    and ends (see the module text); ``shifted`` when the prompt tokenized differently before the
    two answers and the shared prefix was used."""
    rows = {}
    for side in ("chosen", "rejected"):
        row = masks.tokenize_for_training(tokenizer, list(pair["prompt"]) + list(pair[side]), **template_kwargs)
        rows[side] = (row, _trained_span(row, f"{where} ({side})"))
    (c, (c0, c1)), (r, (r0, r1)) = rows["chosen"], rows["rejected"]
    prompt_c, prompt_r = c["input_ids"][:c0], r["input_ids"][:r0]
    shifted = prompt_c != prompt_r
    if shifted:  # tokens merged across the boundary: keep the shared prefix, as TRL does
        n = 0
        while n < min(len(prompt_c), len(prompt_r)) and prompt_c[n] == prompt_r[n]:
            n += 1
        c0 = r0 = n
    return {"prompt_ids": c["input_ids"][:c0], "chosen_ids": c["input_ids"][c0:c1],
            "rejected_ids": r["input_ids"][r0:r1], "shifted": shifted}


def tokenize_pairs(tokenizer, pairs: Sequence[dict], *, max_seq_length: int, model: str = "?",
                   **template_kwargs) -> tuple[list[dict], dict[str, Any]]:
    """Rows for :class:`PretokenizedDPOTrainer` and their statistics. A pair longer than
    ``max_seq_length`` is cut at its end by TRL's collator (counted as ``truncated``); one whose
    prompt alone fills it would train nothing and is dropped (``dropped_long_prompt``)."""
    rows, truncated, dropped, shifted = [], 0, 0, 0
    for i, p in enumerate(pairs):
        row = tokenize_pair(tokenizer, p, where=f"Pair {i} for model {model}", **template_kwargs)
        shifted += row.pop("shifted")
        if len(row["prompt_ids"]) >= max_seq_length:
            dropped += 1
            continue
        longest = len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))
        truncated += longest > max_seq_length
        rows.append(row)
    if not rows:
        raise masks.MaskingError(f"Every pair's prompt is at least max_seq_length={max_seq_length} "
                                 f"tokens for model {model}: raise max_seq_length.")
    if truncated:
        log.warning("%d of %d pairs are longer than max_seq_length=%d and are cut at the end; raise "
                    "max_seq_length to keep the ends of the answers.", truncated, len(rows), max_seq_length)
    if shifted:
        log.warning("%d pair(s): the prompt tokenized differently before the chosen and the rejected "
                    "answer; their completions start at the shared prefix", shifted)
    stats = {"pairs": len(rows), "truncated": truncated, "dropped_long_prompt": dropped,
             "prompt_shifted": shifted,
             "prompt_tokens": sum(len(r["prompt_ids"]) for r in rows),
             "chosen_tokens": sum(len(r["chosen_ids"]) for r in rows),
             "rejected_tokens": sum(len(r["rejected_ids"]) for r in rows),
             "max_tokens": max(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"]))
                               for r in rows)}
    return rows, stats


def collate(tokenizer, rows: Sequence[dict], max_length: int | None = None):
    """The batch TRL's ``DataCollatorForPreference`` builds from ``rows``: chosen sequences first,
    then rejected, ``completion_mask`` 1 where a loss is counted."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DataCollatorForPreference(pad_token_id=pad, max_length=max_length)(
        [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rows])


def pair_mask(tokenizer, rows: Sequence[dict], index: int = 0, max_length: int | None = None) -> dict[str, Any]:
    """Which tokens the chosen and the rejected losses cover for one pair, as TRL's collator
    builds the batch: the rendered sequences and the covered parts as text, with token counts."""
    batch = collate(tokenizer, [rows[index]], max_length)
    out: dict[str, Any] = {}
    for side, i in (("chosen", 0), ("rejected", 1)):
        ids, keep, att = batch["input_ids"][i], batch["completion_mask"][i], batch["attention_mask"][i]
        out[f"{side}_rendered"] = tokenizer.decode(ids[att.bool()])
        out[f"{side}_trained"] = tokenizer.decode(ids[keep.bool()])
        out[f"{side}_trained_tokens"] = int(keep.sum())
        out[f"{side}_tokens"] = int(att.sum())
    return out


def sft_agrees(tokenizer, pair: dict, rows: Sequence[dict], index: int = 0, **template_kwargs) -> bool:
    """Whether the chosen loss covers exactly the tokens SFT trains on the same conversation."""
    sft_row = masks.tokenize_for_training(tokenizer, list(pair["prompt"]) + list(pair["chosen"]), **template_kwargs)
    trained = [t for t, lab in zip(sft_row["input_ids"], sft_row["labels"]) if lab != masks.IGNORE_INDEX]
    batch = collate(tokenizer, [rows[index]])
    return batch["input_ids"][0][batch["completion_mask"][0].bool()].tolist() == trained


# -- training ----------------------------------------------------------------------------------
@dataclass
class DPOResult:
    output_dir: Path
    adapter_dir: Path
    history: list[dict]              # per logged step: loss, reward accuracy and margin, ...
    steps: int
    train_seconds: float
    final_loss: float | None
    backend: str
    device: str
    learning_rate: float
    eval: dict[str, float] = field(default_factory=dict)   # held-out pairs after training
    diverged: dict | None = None

    def last(self, key: str) -> float | None:
        vals = [h[key] for h in self.history if h.get(key) is not None]
        return vals[-1] if vals else None

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "train_seconds": round(self.train_seconds, 1),
                "final_loss": self.final_loss, "backend": self.backend, "device": self.device,
                "learning_rate": self.learning_rate,
                "reward_accuracy": self.last("reward_accuracy"), "reward_margin": self.last("reward_margin"),
                "eval": self.eval, "diverged": self.diverged, "adapter_dir": str(self.adapter_dir)}


_LOGGED = {"loss": "loss", "rewards/accuracies": "reward_accuracy", "rewards/margins": "reward_margin",
           "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected",
           "logps/chosen": "logps_chosen", "logps/rejected": "logps_rejected"}


def _recorder():
    from transformers import TrainerCallback

    class DPORecorder(TrainerCallback):
        """Keeps the loss and the reward statistics TRL logs, per step."""

        def __init__(self):
            self.history: list[dict] = []
            self.eval: dict[str, float] = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            if "eval_loss" in logs:
                self.eval = {_LOGGED.get(k[5:], k[5:]): round(float(v), 5) for k, v in logs.items()
                             if k.startswith("eval_") and (k[5:] in _LOGGED)}
            if "loss" in logs:
                row = {"step": state.global_step, "epoch": round(state.epoch or 0, 3)}
                row.update({name: round(float(logs[k]), 5) for k, name in _LOGGED.items() if k in logs})
                self.history.append(row)

    return DPORecorder()


def require_backend(backend: str) -> str:
    """The backend DPO will use; Unsloth needs CUDA (see the module text)."""
    chosen = loading.select_backend(backend)   # ImportError when Unsloth is asked for but missing
    if chosen == "unsloth" and not models.cuda_available():
        raise PreferenceBackendError(
            "backend='unsloth' was asked for DPO, but there is no CUDA GPU here: Unsloth's CPU mode "
            "trains SFT only (it has no DPO path off the GPU). Use backend='transformers' (or 'auto', "
            "which picks it without a GPU) on this machine, or run on an NVIDIA GPU.")
    return chosen


def require_one_process() -> None:
    """DPO runs in one process: it was not built or checked under ``accelerate launch`` (every
    process would generate the rejected answers and write the adapter)."""
    if world_size() > 1:
        raise DistributedError(
            f"DPO was started in a run of {world_size()} processes, but the preference stage runs in "
            "one process only. Run the DPO notebook or PreferenceRun without accelerate launch.")


def trainer_classes(backend: str):
    """``(DPOConfig, trainer class)`` for ``backend``: on Unsloth, TRL's classes as Unsloth
    patched them (Unsloth is imported first). The trainer takes our pre-tokenized rows as they are."""
    if require_backend(backend) == "unsloth":
        loading.import_unsloth_first("unsloth")
        import unsloth
        patch = getattr(unsloth, "PatchDPOTrainer", None)
        if patch is not None:
            patch()
    from trl import DPOConfig, DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer on rows already holding ``prompt_ids``/``chosen_ids``/``rejected_ids``
        (our masks): dataset preparation (prompt extraction, chat template, tokenizing) is skipped."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return DPOConfig, PretokenizedDPOTrainer


def train_dpo(model, tokenizer, rows: Sequence[dict], cfg: TrainConfig, output_dir: str | os.PathLike, *,
              settings: DPOSettings | None = None, eval_rows: Sequence[dict] | None = None,
              callbacks: Sequence[Any] = (), on_log: Callable[[list[dict]], None] | None = None) -> DPOResult:
    """DPO on the LoRA-wrapped ``model`` (fresh adapter; the reference is its frozen copy, i.e.
    the base model) over pre-tokenized ``rows`` (:func:`tokenize_pairs`); the adapter and tokenizer are saved
    in ``output_dir/adapter``. With ``eval_rows`` the held-out pairs are scored after training.
    No checkpoints are kept: a stopped run trains again from the start (its pairs are cached)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    require_one_process()
    settings = settings or DPOSettings()
    backend = getattr(model, "_finetuning_backend", "transformers")
    DPOConfig, Trainer = trainer_classes(backend)
    trl_compat.ensure_cpu_loss_head()   # TRL 1.15's fused LM head has no CPU path of its own
    output_dir = Path(output_dir)
    lr = dpo_learning_rate(cfg, settings)

    def as_dataset(rs):
        return Dataset.from_list([{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in rs])

    use_bf16 = loading.bf16_supported()
    # about 10 points on the reward curves of a short run (the SFT default, 5, leaves 2 in 5 steps)
    steps = math.ceil(math.ceil(len(rows) / (cfg.batch_size * cfg.grad_accum)) * cfg.epochs)
    logging_steps = max(1, min(cfg.logging_steps, steps // 10))
    args = DPOConfig(
        output_dir=str(output_dir / "checkpoints"), num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=lr, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, logging_steps=logging_steps, logging_first_step=True,
        save_strategy="no", eval_strategy="no", per_device_eval_batch_size=cfg.batch_size,
        report_to=sft._report_to(cfg.report_to), seed=cfg.seed, data_seed=cfg.seed,
        max_length=cfg.max_seq_length, remove_unused_columns=False,
        bf16=use_bf16, fp16=torch.cuda.is_available() and not use_bf16,
        use_cpu=models.device() == "cpu", dataloader_num_workers=0, disable_tqdm=True, optim="adamw_torch",
        gradient_checkpointing=cfg.gradient_checkpointing and backend != "unsloth",
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        beta=settings.beta, loss_type=[settings.loss_type],
        precompute_ref_log_probs=settings.precompute_ref_log_probs)
    recorder = _recorder()
    watch = divergence.DivergenceWatch()
    cbs = [recorder, divergence.divergence_callback(watch, lr), *callbacks]
    if on_log is not None:
        class _Forward(TrainerCallback):
            def on_log(self, a, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    on_log(recorder.history)
        cbs.append(_Forward())
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    sft.prepare_for_training(model)
    saved_env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(output_dir / "tensorboard")
    try:
        trainer = Trainer(model=model, ref_model=None, args=args, train_dataset=as_dataset(rows),
                          eval_dataset=as_dataset(eval_rows) if eval_rows else None,
                          processing_class=tokenizer, callbacks=cbs + [sft._progress_logger()])
    finally:
        if saved_env is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = saved_env
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    model.train()
    t0 = time.time()
    out = trainer.train()
    seconds = time.time() - t0
    if eval_rows:
        trainer.evaluate()
    model.eval()
    model.config.use_cache = True
    getattr(model, "get_base_model", lambda: model)().config.use_cache = True
    adapter_dir = output_dir / "adapter"
    if "ref" in getattr(model, "peft_config", {}):   # TRL's frozen copy of the starting adapter
        model.delete_adapter("ref")
    model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    final = recorder.history[-1]["loss"] if recorder.history else out.training_loss
    result = DPOResult(output_dir=output_dir, adapter_dir=adapter_dir, history=recorder.history,
                       steps=out.global_step, train_seconds=seconds, final_loss=final, backend=backend,
                       device=str(trainer.args.device.type), learning_rate=lr, eval=recorder.eval,
                       diverged=watch.event)
    log.info("DPO: %d steps in %.0f s; final loss %.4f, reward accuracy %s, margin %s; held-out %s; "
             "adapter in %s", result.steps, seconds, final, result.last("reward_accuracy"),
             result.last("reward_margin"), result.eval or "-", adapter_dir)
    return result
