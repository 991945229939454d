"""backend="tinker": LoRA training on Thinking Machines' Tinker service, from a machine without a
GPU. The loop runs here; each optimizer step sends one batch to Tinker (SDK 0.38, read in its
source: ``TrainingClient.forward_backward(data, loss_fn="cross_entropy")`` then
``optim_step(AdamParams(...))``, both futures).

- Data: our tokenized rows (``input_ids``/``labels`` from :func:`helpers.training.masks.tokenize_dataset`)
  become :class:`tinker.types.Datum`: the model reads ``input_ids[:-1]``, the targets are
  ``input_ids[1:]`` and the weights our mask shifted the same way (1 where ``labels`` is not -100).
  Tinker's cross-entropy sums ``-logprob * weight``; the loss we log is that sum over the weighted
  tokens (the mean per trained token, as the local trainer logs).
- Schedule: ``cfg.batch_size * cfg.grad_accum`` examples per optimizer step, ``cfg.epochs`` passes
  (a fraction allowed), data shuffled per epoch with ``cfg.seed``; the learning rate warms up
  linearly over ``cfg.warmup_ratio`` of the steps, then follows ``cfg.lr_scheduler`` (linear,
  cosine or constant) and goes to ``AdamParams(learning_rate=...)`` each step, with the local
  trainer's AdamW settings (:data:`ADAM`: transformers' defaults, gradients clipped at norm 1)
  rather than Tinker's own defaults (beta2 0.95, eps 1e-12, no clipping).
- LoRA: Tinker chooses modules by kind (``train_attn``/``train_mlp``/``train_unembed``), not by
  name, so ``cfg.target_modules`` does not apply (logged; run.json ``tinker.lora`` says what ran).
  Mixture-of-experts models (Qwen3-30B-A3B, GPT-OSS) train attention only by default: expert
  LoRA cannot become a PEFT adapter that transformers 5 loads (:mod:`helpers.training.tinker_adapter`).
- Checkpoints: ``save_state`` each epoch (and every ``cfg.eval_steps`` steps when set); the
  tinker:// path, the step, the loss history and the tokens so far go to
  ``<run>/tinker_state.json`` (atomic), so a crashed run resumes with
  ``create_training_client_from_state_with_optimizer`` when the settings and data match.
- Answers: :func:`generate_fn` samples greedily from a sampling client (the base model before,
  the trained weights after) with our chat template.
- The adapter: exported, downloaded and converted to a PEFT folder in ``<run>/adapter``
  (:mod:`helpers.training.tinker_adapter`); tokens and cost in run.json ``tinker``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers.core.files import write_json
from helpers.models.generate import strip_reasoning
from helpers.training import passes, tinker_adapter
from helpers.training.config import TrainConfig
from helpers.training.tinker_models import (
    TokenCounts,
    api_key,
    cost_summary,
    require_tinker,
    server_models,
    tinker_base_model,
)
from helpers.training.trainer import TrainResult, _fingerprint

log = logging.getLogger(__name__)

STATE_FILE = "tinker_state.json"
#: AdamW as the local trainer runs it (transformers' TrainingArguments defaults, max_grad_norm 1.0)
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "grad_clip_norm": 1.0}


def _types():
    from tinker import types
    return types


def _result(x):
    """A future's value (the SDK's APIFuture / backcompat futures), or ``x`` itself."""
    return x.result() if hasattr(x, "result") and callable(x.result) else x


# -- data -------------------------------------------------------------------------------------

def datum(row: dict, types=None):
    """One tokenized row as a Tinker Datum: inputs ``input_ids[:-1]``, ``target_tokens``
    ``input_ids[1:]``, ``weights`` 1.0 where the shifted label is trained, else 0.0."""
    types = types or _types()
    ids, labels = list(row["input_ids"]), list(row["labels"])
    if len(ids) != len(labels) or len(ids) < 2:
        raise ValueError(f"A row needs input_ids and labels of the same length (>= 2); got "
                         f"{len(ids)} and {len(labels)}.")
    weights = [0.0 if lab == -100 else 1.0 for lab in labels[1:]]
    return types.Datum(model_input=types.ModelInput.from_ints(ids[:-1]),
                       loss_fn_inputs={"target_tokens": ids[1:], "weights": weights})


def is_moe(base: str, family: str | None = None) -> bool:
    """Whether Tinker base model ``base`` is a mixture of experts (GPT-OSS, Qwen3-...-A3B/-A22B)."""
    return family == "gpt-oss" or "gpt-oss" in base or re.search(r"-A\d+B", base) is not None


def weighted_tokens(row: dict) -> int:
    return sum(1 for lab in row["labels"][1:] if lab != -100)


def plan(rows: Sequence[dict] | int, cfg: TrainConfig) -> list[list[int]]:
    """Row indices of each optimizer step: ``batch_size * grad_accum`` per step, each epoch in its
    own seeded order, ``cfg.epochs`` passes (the last one cut where a fraction asks). ``rows``
    (or their number): a row of one pass only (:mod:`helpers.training.passes`) is in its epochs'
    orders and no other (give rows already cut by ``passes.equal_passes``)."""
    if isinstance(rows, int):
        rows = [{}] * rows
    tag = passes.PASS_KEY
    n_pass = passes.pass_count(rows)
    per_step = max(1, cfg.batch_size * cfg.grad_accum)
    n_rows = passes.epoch_length(rows)
    per_epoch = math.ceil(n_rows / per_step)
    total = max(1, math.ceil(per_epoch * cfg.epochs))
    steps: list[list[int]] = []
    epoch = 0
    while len(steps) < total:
        order = [i for i, r in enumerate(rows)
                 if r.get(tag) is None or r[tag] == epoch % max(1, n_pass)]
        random.Random(cfg.seed + epoch).shuffle(order)
        steps.extend(order[i:i + per_step] for i in range(0, n_rows, per_step))
        epoch += 1
    return steps[:total]


def learning_rate(step: int, total: int, cfg: TrainConfig) -> float:
    """The rate for 0-based ``step`` of ``total``: linear warm-up, then linear/cosine/constant decay."""
    warm = int(math.ceil(total * cfg.warmup_ratio))
    if step < warm:
        return cfg.learning_rate * (step + 1) / warm
    if cfg.lr_scheduler.startswith("constant"):
        return cfg.learning_rate
    left = (step - warm) / max(1, total - warm)
    if cfg.lr_scheduler == "cosine":
        return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * left))
    if cfg.lr_scheduler == "linear":
        return cfg.learning_rate * (1 - left)
    raise ValueError(f"lr_scheduler={cfg.lr_scheduler!r} is not one backend='tinker' follows: use "
                     "linear, cosine or constant.")


def batch_loss(output, batch: Sequence, n_weighted: int) -> float | None:
    """Mean loss per trained token of one forward_backward: ``loss:sum`` from its metrics, else
    ``-sum(logprobs * weights)`` from the per-datum outputs."""
    metrics = getattr(output, "metrics", None) or {}
    if "loss:sum" in metrics:
        return float(metrics["loss:sum"]) / max(1, n_weighted)
    total = 0.0
    outs = getattr(output, "loss_fn_outputs", None) or []
    if not outs:
        return None
    for out, d in zip(outs, batch):
        lp = out["logprobs"]
        lp = lp.tolist() if hasattr(lp, "tolist") else list(lp)
        w = d.loss_fn_inputs["weights"].tolist()
        total -= sum(a * b for a, b in zip(lp, w))
    return total / max(1, n_weighted)


# -- clients ----------------------------------------------------------------------------------

def service_client(base_url: str | None = None):
    """The SDK's ServiceClient with the key from :func:`helpers.training.tinker_models.api_key`."""
    require_tinker()
    import tinker
    return tinker.ServiceClient(api_key=api_key(), base_url=base_url)


def rest_client(base_url: str | None = None):
    require_tinker()
    import tinker
    return tinker.RestClient(api_key=api_key(), base_url=base_url)


# -- sampling ---------------------------------------------------------------------------------

def generate_fn(sampling_client, tokenizer, *, counts: TokenCounts | None = None,
                template_kwargs: dict | None = None, max_new_tokens: int = 256,
                greedy: bool = True, system_prompt: str | None = None) -> Callable[[Sequence[str]], list[str]]:
    """``answer(questions) -> answers`` sampled from ``sampling_client`` with the tokenizer's chat
    template (greedy by default; the tokenizer's end-of-sequence token ends an answer; reasoning
    removed by :func:`helpers.models.generate.strip_reasoning`); tokens are counted into
    ``counts`` (prefill and sample)."""
    types = _types()
    kwargs = dict(template_kwargs or {})
    stop = sorted({t for t in [tokenizer.eos_token_id] if t is not None})
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def answer(questions: Sequence[str], *, max_new_tokens: int = max_new_tokens) -> list[str]:
        params = types.SamplingParams(max_tokens=max_new_tokens, temperature=0.0 if greedy else 0.7,
                                      stop=stop or None, seed=0)
        futures = []
        for q in questions:
            ids = tokenizer.apply_chat_template(system + [{"role": "user", "content": q}], tokenize=True,
                                                add_generation_prompt=True, **kwargs)
            ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
            if counts is not None:
                counts.prefill += len(ids)
            futures.append(sampling_client.sample(prompt=types.ModelInput.from_ints(ids), num_samples=1,
                                                  sampling_params=params))
        answers = []
        for fut in futures:
            seq = _result(fut).sequences[0]
            tokens = list(seq.tokens)
            if counts is not None:
                counts.sample += len(tokens)
            answers.append(strip_reasoning(tokenizer.decode(tokens, skip_special_tokens=False)))
        return answers

    return answer


# -- training ---------------------------------------------------------------------------------

def _load_state(output_dir: Path, fingerprint: dict) -> dict | None:
    import json
    path = output_dir / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fingerprint:
        log.warning("%s was made with other settings or data; starting over (its checkpoint %s stays "
                    "on Tinker).", path, state.get("path"))
        return None
    return state


def train(rows: Sequence[dict], cfg: TrainConfig, output_dir: str | os.PathLike, *, model: str,
          tokenizer=None, client=None, rest=None, record=None, family: str | None = None,
          train_mlp: bool | None = None, train_unembed: bool = False, check_server: bool = True,
          prices: tuple[float, float, float] | None = None, download: bool = True,
          on_log: Callable[[list[dict]], None] | None = None) -> TrainResult:
    """Train a LoRA adapter for registry model ``model`` on Tinker with our tokenized ``rows``.

    ``client``/``rest``: a ServiceClient and RestClient (made from ``TINKER_API_KEY`` when None;
    tests pass fakes). ``record``: a :class:`helpers.training.runrecord.RunRecord` that gets
    ``train``, ``loss_history`` and ``tinker`` (base model, checkpoints, tokens, cost).
    ``train_mlp`` None: True, except for mixture-of-experts models (attention only, see the module notes).
    The PEFT adapter lands in ``<output_dir>/adapter`` (with the tokenizer when one is given)."""
    types = _types()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if client is None:
        client = service_client()
    if rest is None and (check_server or download):
        rest = rest_client()
    supported = server_models(rest) if check_server else None
    base = tinker_base_model(model, supported)
    if not rows:
        raise ValueError("backend='tinker' got no training rows: tokenize the data first (FineTuneRun.tokenize).")
    moe = is_moe(base, family)
    if train_mlp is None:
        train_mlp = not moe
    elif train_mlp and moe and download:
        raise ValueError(f"train_mlp=True on {base} (a mixture of experts) trains its experts, whose LoRA "
                         "cannot become a PEFT adapter (transformers 5 fuses them into one parameter). "
                         "Leave train_mlp=None (attention only), or pass download=False and merge with "
                         "tinker-cookbook's weights.build_hf_model.")
    lora = {"rank": cfg.lora_r, "train_attn": True, "train_mlp": train_mlp, "train_unembed": train_unembed}
    log.info("Tinker LoRA by module kind (%s); target_modules=%s does not apply on Tinker", lora,
             ",".join(cfg.target_modules))

    fingerprint = {**_fingerprint(cfg, rows), "base_model": base, "train_mlp": train_mlp,
                   "train_unembed": train_unembed}
    rows = passes.equal_passes(rows)
    steps = plan(rows, cfg)
    learning_rate(len(steps) - 1, len(steps), cfg)     # an unknown scheduler stops here, before any cost
    state = _load_state(output_dir, fingerprint) if cfg.resume else None
    counts = TokenCounts(**(state or {}).get("tokens", {}))
    history: list[dict] = list((state or {}).get("loss_history", []))
    checkpoints: list[dict] = list((state or {}).get("checkpoints", []))
    start = int((state or {}).get("step", 0))
    if state:
        tc = _result(client.create_training_client_from_state_with_optimizer(state["path"]))
        log.info("Resuming on Tinker from %s (step %d of %d)", state["path"], start, len(steps))
    else:
        tc = _result(client.create_lora_training_client(
            base_model=base, rank=cfg.lora_r, seed=cfg.seed, train_mlp=train_mlp, train_attn=True,
            train_unembed=train_unembed))
        log.info("Tinker LoRA r=%d on %s: %d steps, %d example(s) per step", cfg.lora_r, base,
                 len(steps), cfg.batch_size * cfg.grad_accum)
    per_epoch = math.ceil(passes.epoch_length(rows) / max(1, cfg.batch_size * cfg.grad_accum))
    every = cfg.eval_steps or per_epoch
    datums = [datum(r, types) for r in rows]
    t0, trained_here = time.time(), 0
    log_every = max(1, len(steps) // 10)

    def save(step: int) -> None:
        path = _result(tc.save_state(f"step-{step:06d}")).path
        checkpoints.append({"step": step, "path": path})
        write_json(output_dir / STATE_FILE, {
            "fingerprint": fingerprint, "base_model": base, "step": step, "path": path,
            "checkpoints": checkpoints, "loss_history": history, "tokens": counts.as_dict()})

    for i in range(start, len(steps)):
        idx = steps[i]
        batch = [datums[j] for j in idx]
        n_weighted = sum(weighted_tokens(rows[j]) for j in idx)
        lr = learning_rate(i, len(steps), cfg)
        fb = tc.forward_backward(batch, loss_fn="cross_entropy")
        opt = tc.optim_step(types.AdamParams(learning_rate=lr, weight_decay=cfg.weight_decay, **ADAM))
        loss = batch_loss(_result(fb), batch, n_weighted)
        _result(opt)
        n_tokens = sum(d.model_input.length for d in batch)
        counts.train += n_tokens
        counts.trained_weighted += n_weighted
        trained_here += n_tokens
        step = i + 1
        history.append({"step": step, "epoch": round(step / per_epoch, 3),
                        "loss": None if loss is None else round(loss, 5), "learning_rate": lr})
        if step % log_every == 0 or step == len(steps):
            spent = time.time() - t0
            left = spent / (step - start) * (len(steps) - step)
            log.info("step %d/%d (epoch %.1f) loss %s | %.0f s elapsed, ~%.0f s left | %d tokens sent",
                     step, len(steps), step / per_epoch, "-" if loss is None else f"{loss:.4f}", spent,
                     left, counts.train)
        if on_log is not None:
            on_log(history)
        if step % every == 0 or step == len(steps):
            save(step)

    seconds = time.time() - t0
    adapter_dir = output_dir / "adapter"
    if download:
        raw = tinker_adapter.download(tc, rest, output_dir / "tinker_adapter", name="final")
        tinker_adapter.to_peft(raw, adapter_dir, base_model=base, family=family)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(adapter_dir))
    losses = [h["loss"] for h in history if h["loss"] is not None]
    result = TrainResult(
        output_dir=output_dir, adapter_dir=adapter_dir, loss_history=history, steps=len(steps),
        train_seconds=seconds, final_loss=losses[-1] if losses else None, trained_tokens=counts.train,
        tokens_per_second=trained_here / max(seconds, 1e-9), backend="tinker",
        resumed_from=state["path"] if state else None, device=f"tinker:{base}")
    result.training_client = tc          # for the after answers (trained_generate)
    result.tokens = counts
    if record is not None:
        record.update("train", result.summary())
        record.data["loss_history"] = history
        record.update("tinker", {"base_model": base, "checkpoints": checkpoints, "sdk": _sdk_version(),
                                 "lora": lora, "adam": ADAM,
                                 **cost_summary(base, counts, prices)})
    return result


def trained_generate(result: TrainResult, tokenizer, **kwargs) -> Callable[[Sequence[str]], list[str]]:
    """The after answers: a sampling client on the trained weights (``save_weights_and_get_sampling_client``)."""
    sc = _result(result.training_client.save_weights_and_get_sampling_client())
    return generate_fn(sc, tokenizer, counts=result.tokens, **kwargs)


def base_generate(client, model: str, tokenizer, counts: TokenCounts | None = None,
                  **kwargs) -> Callable[[Sequence[str]], list[str]]:
    """The before answers: a sampling client on the untrained Tinker base model."""
    sc = _result(client.create_sampling_client(base_model=tinker_base_model(model)))
    return generate_fn(sc, tokenizer, counts=counts, **kwargs)


def record_cost(record, base: str, counts: TokenCounts, prices=None) -> dict[str, Any]:
    """Rewrite run.json ``tinker`` with the tokens so far (sampling after training adds some)."""
    summary = cost_summary(base, counts, prices)
    record.update("tinker", summary)
    return summary


def _sdk_version() -> str | None:
    try:
        import tinker
        return getattr(tinker, "__version__", None)
    except ImportError:
        return None
