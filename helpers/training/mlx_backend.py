"""``backend="mlx"``: LoRA training on Apple silicon with MLX (mlx-lm), on our labels.

mlx-lm's own ``--mask-prompt`` trains other tokens than ours (the newline after ``<|im_end|>``,
Qwen3's empty think block, a padding token), so its data path is not used: training goes through
``mlx_lm.tuner.trainer.train`` with our batch iterator (:class:`Rows`: the ``input_ids`` and
``labels`` of :func:`helpers.training.masks.tokenize_dataset`) and our loss (:func:`loss`:
cross-entropy on the tokens whose label is not -100, over the trained tokens of the whole
gradient-accumulation group, as transformers' Trainer does). ``train()`` takes both as
arguments, so its own loop, compiled step and accumulation are used unchanged; the optimizer
(:func:`optimizer`) is AdamW with bias correction, gradient clipping at 1.0 and the warm-up and
schedule of our transformers path.

The model is loaded from the Hugging Face folder (:func:`helpers.training.mlx_convert.load_mlx_model`,
which fixes mlx-lm's rope and GPT-OSS loading), the adapter written as a PEFT folder
(``<run>/adapter``), so the comparison, the exports and ``--skip-training`` read it as they
read any other run's; :func:`train_folder` can also write the fused model.

Install: ``pip install ".[mlx]"`` (on Linux the CPU build: ``pip install "mlx[cpu]" mlx-lm``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers.core.files import write_json
from helpers.runtime import loading
from helpers.training import divergence, passes
from helpers.training import mlx_convert as convert
from helpers.training.config import TrainConfig
from helpers.training.trainer import TrainResult

log = logging.getLogger(__name__)

#: gradient norm clip, transformers' default ``max_grad_norm``
MAX_GRAD_NORM = 1.0
#: batches are padded to a multiple of this (fewer shapes for mx.compile to trace)
PAD_TO = 32
SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")


def available() -> bool:
    """Whether mlx and mlx-lm import here."""
    return loading.mlx_available()


def require_mlx() -> None:
    """An ``ImportError`` naming the install when mlx or mlx-lm is missing."""
    loading.select_backend("mlx")


# -- LoRA -------------------------------------------------------------------------------------
def lora_keys(model, target_modules: Sequence[str]) -> set[str]:
    """The module paths inside a transformer block (``self_attn.q_proj``) that get LoRA: the
    linear layers whose last name is in ``target_modules``. A target with no linear layer is an
    error (MLX's GPT-OSS experts, for instance, are not ``nn.Linear``)."""
    import mlx.nn as nn
    keys, found = set(), set()
    for name, module in model.layers[0].named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in target_modules and isinstance(module, nn.Linear):
            keys.add(name)
            found.add(last)
    missing = sorted(set(target_modules) - found)
    if missing:
        raise ValueError(f"target_modules {missing} name no linear layer in this model on "
                         f"backend='mlx' (linear layers found: {sorted(found)}). Set target_modules "
                         "to linear layers (e.g. q_proj, k_proj, v_proj, o_proj).")
    return keys


def add_lora(model, cfg: TrainConfig) -> int:
    """Freeze ``model`` and wrap ``cfg.target_modules`` of every block with LoRA of rank
    ``lora_r``, scale ``lora_alpha / lora_r`` (PEFT's) and ``lora_dropout``, initialised from
    ``cfg.seed`` (A uniform in +-1/sqrt(in), B zero, as PEFT). Returns the trainable count."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    mx.random.seed(cfg.seed)
    model.freeze()
    keys = lora_keys(model, cfg.target_modules)
    linear_to_lora_layers(model, len(model.layers), {"rank": cfg.lora_r, "keys": keys,
                                                     "scale": cfg.lora_alpha / cfg.lora_r,
                                                     "dropout": cfg.lora_dropout})
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    total = sum(v.size for _, v in tree_flatten(model.parameters()))
    log.info("MLX LoRA r=%d alpha=%d on %s: %d trainable of %d parameters (%.2f%%)", cfg.lora_r,
             cfg.lora_alpha, ",".join(sorted(keys)), trainable, total, 100 * trainable / total)
    return trainable


# -- data and loss ----------------------------------------------------------------------------
class Rows:
    """Our tokenized rows as mlx-lm batches: ``(input_ids, labels, weight)``, right-padded to a
    multiple of :data:`PAD_TO` (labels -100 there), shuffled per epoch from ``seed``. Batches
    come in groups of ``grad_accum`` (one optimizer step); ``weight`` is
    ``grad_accum / trained tokens of the group``, so that after mlx-lm averages the group's
    gradients the step's loss is the group's total over its trained tokens."""

    def __init__(self, rows: Sequence[dict], batch_size: int, max_seq_length: int, *,
                 grad_accum: int = 1, seed: int = 42, shuffle: bool = True, pad_id: int = 0):
        def cut(rs):
            return [(list(r["input_ids"])[:max_seq_length], list(r["labels"])[:max_seq_length])
                    for r in rs]
        # rows of one pass only (:mod:`helpers.training.passes`): each epoch has its own list
        tagged = passes.equal_passes(rows)
        self._by_pass = [cut(passes.rows_for_epoch(tagged, k))
                         for k in range(max(1, passes.pass_count(tagged)))]
        self.rows = self._by_pass[0]
        self.batch_size, self.grad_accum, self.seed = batch_size, grad_accum, seed
        self.shuffle, self.pad_id = shuffle, pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def epoch_rows(self, epoch: int) -> list[tuple[list[int], list[int]]]:
        return self._by_pass[epoch % len(self._by_pass)]

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def _stream(self, loop: bool):
        import numpy as np
        epoch = 0
        while True:
            rows = self.epoch_rows(epoch)
            order = (np.random.RandomState(self.seed + epoch).permutation(len(rows))
                     if self.shuffle else np.arange(len(rows)))
            for start in range(0, len(order), self.batch_size):
                yield [rows[i] for i in order[start:start + self.batch_size]]
            epoch += 1
            if not loop:
                return

    def _arrays(self, batch):
        import numpy as np
        longest = max(len(ids) for ids, _ in batch)
        width = PAD_TO * math.ceil(longest / PAD_TO)
        inputs = np.full((len(batch), width), self.pad_id, np.int32)
        labels = np.full((len(batch), width), -100, np.int32)
        for j, (ids, lab) in enumerate(batch):
            inputs[j, :len(ids)], labels[j, :len(lab)] = ids, lab
        return inputs, labels

    def batches(self, loop: bool = False):
        import mlx.core as mx
        stream = self._stream(loop)
        while True:
            group = [self._arrays(b) for b in _take(stream, self.grad_accum)]
            if not group:
                return
            trained = sum(int((labels[:, 1:] != -100).sum()) for _, labels in group)
            weight = mx.array(self.grad_accum / max(trained, 1), dtype=mx.float32)
            for inputs, labels in group:
                yield mx.array(inputs), mx.array(labels), weight


def _take(iterator, n: int) -> list:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) == n:
            break
    return out


def iterate_batches(dataset: Rows, batch_size=None, max_seq_length=None, loop=False, seed=None,
                    comm_group=None):
    """mlx-lm's ``iterate_batches`` signature over :class:`Rows` (which already knows its batch
    size, length and seed)."""
    return dataset.batches(loop)


def loss(model, inputs, labels, weight):
    """Cross-entropy of the next token where ``labels`` (shifted by one) is not -100, summed and
    multiplied by ``weight`` (:class:`Rows`); returns ``(loss, trained tokens)`` as mlx-lm's
    ``default_loss`` does. With ``weight = 1 / trained tokens`` it is transformers' loss."""
    import mlx.core as mx
    import mlx.nn as nn
    logits = model(inputs)[:, :-1, :].astype(mx.float32)
    targets = labels[:, 1:]
    mask = targets != -100
    ce = nn.losses.cross_entropy(logits, mx.where(mask, targets, 0)) * mask
    return ce.sum() * weight, mask.sum()


def batch_loss(model, rows: Sequence[dict]) -> float:
    """Our loss on ``rows`` as one batch (mean over their trained tokens)."""
    inputs, labels, weight = next(Rows(rows, len(rows), 1 << 30, shuffle=False).batches())
    value, _ = loss(model, inputs, labels, weight)
    return float(value.item())


# -- optimizer --------------------------------------------------------------------------------
def schedule(cfg: TrainConfig, steps: int):
    """The learning rate by optimizer step, as transformers' scheduler of ``cfg.lr_scheduler``
    with ``ceil(warmup_ratio x steps)`` warm-up steps (0 at step 0, then linear)."""
    import mlx.optimizers as optim
    if cfg.lr_scheduler not in SCHEDULES:
        raise ValueError(f"lr_scheduler={cfg.lr_scheduler!r} is not available on backend='mlx'; "
                         f"use one of {', '.join(SCHEDULES)}.")
    warmup = math.ceil(cfg.warmup_ratio * steps) if cfg.lr_scheduler != "constant" else 0
    rest = max(steps - warmup, 1)
    lr = cfg.learning_rate
    if cfg.lr_scheduler == "linear":
        after = optim.linear_schedule(lr, 0.0, rest)
    elif cfg.lr_scheduler == "cosine":
        after = optim.cosine_decay(lr, rest)
    else:
        after = lambda step: lr  # noqa: E731
    if not warmup:
        return after
    return optim.join_schedules([optim.linear_schedule(0.0, lr, warmup), after], [warmup])


def optimizer(cfg: TrainConfig, steps: int):
    """AdamW as torch's (betas 0.9/0.999, eps 1e-8, bias correction, ``cfg.weight_decay``) with
    the gradient norm clipped at :data:`MAX_GRAD_NORM` before each update."""
    import mlx.optimizers as optim

    class ClippedAdamW(optim.AdamW):
        def update(self, model, gradients):
            gradients, _ = optim.clip_grad_norm(gradients, MAX_GRAD_NORM)
            return super().update(model, gradients)

    return ClippedAdamW(learning_rate=schedule(cfg, steps), weight_decay=cfg.weight_decay,
                        bias_correction=True)


# -- training ---------------------------------------------------------------------------------
class _Diverged(Exception):
    pass


def _check(cfg: TrainConfig) -> None:
    if cfg.early_stopping_patience:
        raise ValueError("early_stopping_patience is not available on backend='mlx' (mlx-lm's "
                         "trainer cannot stop on a validation loss). Set early_stopping_patience=0, "
                         "or use backend='transformers'.")
    if cfg.load_in_4bit or cfg.load_in_8bit:
        raise ValueError("backend='mlx' trains on the model's 16/32-bit weights; load_in_4bit and "
                         "load_in_8bit are bitsandbytes (CUDA) settings. Set both to False, or "
                         "use backend='unsloth' on an NVIDIA GPU for QLoRA.")


def train(model, rows: Sequence[dict], cfg: TrainConfig, output_dir: str | os.PathLike, *,
          eval_rows: Sequence[dict] | None = None, pad_id: int = 0, base: str = "",
          on_log: Callable[[list[dict]], None] | None = None) -> TrainResult:
    """Train the LoRA-wrapped mlx ``model`` (:func:`add_lora`) on our tokenized ``rows`` through
    ``mlx_lm.tuner.trainer.train``. Loss history, validation losses, divergence stops and speed
    come back as a :class:`helpers.training.trainer.TrainResult` (``adapter_dir`` is
    ``output_dir/adapter``, written by :func:`train_folder`). Each epoch's adapter is written as
    PEFT to ``output_dir/checkpoints/checkpoint-<step>`` with a ``trainer_state.json`` (epoch,
    step, losses), the newest ``keep_checkpoints`` kept (0: all), as the transformers backend
    does, for the best-checkpoint evaluation; ``base`` is the model they name. An MLX run does
    not resume from them."""
    import mlx.core as mx
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, evaluate
    from mlx_lm.tuner.trainer import train as mlx_train
    _check(cfg)
    output_dir = Path(output_dir)
    (output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    data = Rows(rows, cfg.batch_size, cfg.max_seq_length, grad_accum=cfg.grad_accum,
                seed=cfg.seed, pad_id=pad_id)
    val = (Rows(eval_rows, cfg.batch_size, cfg.max_seq_length, shuffle=False, pad_id=pad_id)
           if eval_rows else None)
    g, per_epoch = cfg.grad_accum, data.batches_per_epoch
    steps = max(1, math.ceil(per_epoch * cfg.epochs / g))

    def epoch(step: int) -> float:   # batches seen / batches per epoch (groups may span epochs)
        return round(step * g / per_epoch, 3)

    def ends_epoch(step: int) -> bool:
        return step == steps or (step * g) // per_epoch > ((step - 1) * g) // per_epoch

    # every optimizer step reports to the callback: it logs every ``logging_steps`` (and the
    # first), and evaluates every ``eval_steps`` (0: each epoch) after a whole step; mlx-lm's own
    # validation runs before an iteration, which can fall inside an accumulation group
    args = TrainingArgs(batch_size=cfg.batch_size, iters=steps * g, steps_per_report=g,
                        steps_per_save=steps * g + 1, max_seq_length=cfg.max_seq_length,
                        adapter_file=str(output_dir / "checkpoints" / "mlx_adapters.safetensors"),
                        grad_checkpoint=cfg.gradient_checkpointing, grad_accumulation_steps=g)
    every = max(1, cfg.logging_steps)
    history: list[dict] = []
    evals: list[dict] = []
    window: list[float] = []
    watch = divergence.DivergenceWatch()
    t0 = time.time()

    class Record(TrainingCallback):
        def on_train_loss_report(self, info):
            step = info["iteration"] // g
            window.append(float(info["train_loss"]))
            if step % every == 0 or step in (1, steps):
                mean = sum(window) / len(window)
                window.clear()
                history.append({"step": step, "epoch": epoch(step), "loss": round(mean, 5),
                                "learning_rate": float(info["learning_rate"])})
                spent = time.time() - t0
                log.info("step %d/%d (epoch %.1f) loss %.4f | %.0f s elapsed, ~%.0f s left", step,
                         steps, epoch(step), mean, spent, spent / step * (steps - step))
                if on_log is not None:
                    on_log(history)
                if watch.update(step, mean) is not None:
                    raise _Diverged
            due = step % cfg.eval_steps == 0 if cfg.eval_steps else ends_epoch(step)
            if val is not None and (due or step == steps):
                value = evaluate(model, val, batch_size=cfg.batch_size, num_batches=-1,
                                 loss=loss, iterate_batches=iterate_batches)
                model.train()
                evals.append({"step": step, "epoch": epoch(step), "eval_loss": round(float(value), 5)})
            if ends_epoch(step):
                _checkpoint(model, output_dir, step, epoch(step), history, evals, cfg, base)

    log.info("Training on MLX (%s): %d steps, %d epoch(s)", mx.default_device(), steps,
             math.ceil(cfg.epochs))
    model.train()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm's rich progress: ours is logged
            mlx_train(model, optimizer(cfg, steps), data, None, args=args, loss=loss,
                      iterate_batches=iterate_batches, training_callback=Record())
    except _Diverged:
        log.error("%s", divergence.advice(watch.event, cfg.learning_rate))
    finally:  # mlx-lm's own save at the end: its format, not PEFT; the checkpoints are ours
        Path(args.adapter_file).unlink(missing_ok=True)
    seconds = time.time() - t0
    model.eval()
    done = history[-1]["step"] if history else 0
    epochs = math.ceil(cfg.epochs)
    seen = [row for e in range(epochs) for row in data.epoch_rows(e)]
    tokens = sum(len(ids) for ids, _ in seen)
    trained = sum(sum(1 for x in lab if x != -100) for _, lab in seen)
    processed = sum(len(b) * PAD_TO * math.ceil(max(len(ids) for ids, _ in b) / PAD_TO)
                    for b in data._stream(False)) * epochs
    return TrainResult(output_dir=output_dir, adapter_dir=output_dir / "adapter",
                       loss_history=history, steps=done, train_seconds=seconds,
                       final_loss=history[-1]["loss"] if history else None, trained_tokens=trained,
                       tokens_per_second=tokens / max(seconds, 1e-9), backend="mlx",
                       eval_history=evals, real_token_share=tokens / max(processed, 1),
                       diverged=watch.event, device=f"mlx-{mx.default_device().type.name}",
                       stopped_early=watch.event is not None)


def _checkpoint(model, output_dir: Path, step: int, epoch: float, history, evals,
                cfg: TrainConfig, base: str) -> None:
    """The adapter at ``step`` as a PEFT checkpoint folder; older ones beyond ``keep_checkpoints``
    removed."""
    folder = output_dir / "checkpoints" / f"checkpoint-{step}"
    convert.save_peft_adapter(model, folder, base=base, r=cfg.lora_r, alpha=cfg.lora_alpha,
                              dropout=cfg.lora_dropout, target_modules=cfg.target_modules)
    write_json(folder / "trainer_state.json", {"epoch": round(epoch, 4), "global_step": step,
                                               "log_history": [*history, *evals], "backend": "mlx"})
    if cfg.keep_checkpoints:
        found = sorted((p for p in folder.parent.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                       key=lambda p: int(p.name.split("-")[-1]))
        for old in found[:-cfg.keep_checkpoints]:
            shutil.rmtree(old)


def train_folder(folder: str | os.PathLike, rows: Sequence[dict], cfg: TrainConfig,
                 output_dir: str | os.PathLike, *, tokenizer=None,
                 eval_rows: Sequence[dict] | None = None, fused: bool = False,
                 on_log: Callable[[list[dict]], None] | None = None) -> tuple[TrainResult, Any]:
    """Load the Hugging Face model in ``folder`` into MLX, add LoRA per ``cfg``, train on
    ``rows`` and write the adapter as PEFT in ``output_dir/adapter`` (with ``tokenizer``'s files),
    plus the merged model in ``output_dir/fused`` with ``fused``. Returns the result and the
    trained mlx model."""
    require_mlx()
    _check(cfg)
    model, _ = convert.load_mlx_model(folder)
    add_lora(model, cfg)
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    result = train(model, rows, cfg, output_dir, eval_rows=eval_rows, pad_id=pad, base=str(folder),
                   on_log=on_log)
    convert.save_peft_adapter(model, result.adapter_dir, base=str(folder), r=cfg.lora_r,
                              alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                              target_modules=cfg.target_modules, tokenizer=tokenizer)
    if fused:
        convert.save_fused(model, Path(output_dir) / "fused", base=folder)
    log.info("Trained %d steps on MLX in %.0f s (%.0f tokens/s); final loss %s; adapter in %s",
             result.steps, result.train_seconds, result.tokens_per_second, result.final_loss,
             result.adapter_dir)
    return result, model
