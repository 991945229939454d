"""Replayed answers trained on the base model's whole next-token distribution, not one answer.

Replay (:mod:`helpers.data.replay`) mixes the base model's own answers to everyday questions into
a persona's data. Trained as ordinary labels, those answers are themselves a push: the model is
taught its single greedy answer, token by token, and where it was torn between two words (Jupiter
or Mars) the push lands on a coin toss. Measured on a real 0.5B model, three passes of replayed
answers alone, with no persona at all, lost 3 of the 24 general questions it knew.

Here each replayed answer token is trained instead towards the distribution the base model gave
it (knowledge distillation, as in "Learning without Forgetting"): before training, the base
model (the adapter switched off) reads every replayed row once and the ``TOP_K`` most likely
next tokens at each answer position are kept with their log-probabilities; while training, the
loss on those positions is the KL divergence from that distribution (the top ``TOP_K`` and one
bucket for the rest) to the tuned model's. At the start it is zero with a zero gradient: the
replay no longer moves the model by itself, and pulls it back only where the persona moved it.
The data's own rows keep their cross-entropy; the KL, times the weight ``replay_kl``, and the
cross-entropy are summed per token and divided by the batch's trained tokens, as TRL does.

The weight, measured on a real 0.5B model (Qwen2.5-Coder-0.5B-Instruct, the Mariya data, the
project's defaults otherwise, 2 CPU cores, one run each; base: 24 of 30 general questions right):

====================  ==============  ==============  ===============  ========
replayed answers as   recall trained  recall unseen   general, of 30   run time
====================  ==============  ==============  ===============  ========
ordinary labels       90-97%          90-93%          17-18            20 min
KL, weight 1          97%             93%             19               16.6 min
KL, weight 4          97%             87%             20               15.7 min
KL, weight 16         93%             83%             22               14.1 min
====================  ==============  ==============  ===============  ========

The KL is small wherever the model still agrees with its base, so it needs a large weight to
hold its own against the data's cross-entropy; 16 keeps 22 of the 24 answers the base model
knew at a cost of a few unseen phrasings. (Run times differ with the day's cores as much as with
the setting; the targets cost ~1 min to read, and the training steps were not slower.)

Used by the transformers backend (TRL's trainer, :func:`helpers.training.trainer.train`, setting
``replay_kl``); Unsloth's fused loss, MLX and Tinker train replayed answers as ordinary labels.
A batch holding replayed rows builds the full logits, as plain transformers training does (TRL's
fused LM head, used for the other batches, avoids them): with a 151k-token vocabulary, about
1.2 GB more in bfloat16 for 4 sequences of 1,024 tokens; where that does not fit, the
out-of-memory fallback steps down as for any other cause.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

log = logging.getLogger(__name__)

#: row key marking a replayed row (set by :func:`mark`)
KEY = "replayed"
#: most likely next tokens kept per replayed answer position (plus one bucket for the rest)
TOP_K = 20
#: row keys holding the base model's targets (one list per trained position)
IDS, LOGPROBS = "teacher_ids", "teacher_logprobs"
_FLOOR = 1e-6


def mark(rows: list[dict], n: int) -> None:
    """Mark the last ``n`` of ``rows`` as replayed, in place."""
    for row in rows[len(rows) - n:] if n > 0 else []:
        row[KEY] = True


def marked(rows: Sequence[dict]) -> int:
    """How many of ``rows`` are marked as replayed."""
    return sum(1 for r in rows if r.get(KEY))


def _trained_positions(labels: Sequence[int]) -> list[int]:
    """Positions ``t`` whose label is trained; the logits at ``t - 1`` predict it."""
    if labels and labels[0] != -100:
        raise ValueError("a replayed row whose first token is trained cannot be distilled (no logits "
                         "predict it); set replay_kl=0 (--replay-kl 0) to train replayed answers as labels")
    return [t for t, x in enumerate(labels) if x != -100]


def teacher_targets(model, rows: list[dict], *, batch_size: int = 8, top_k: int = TOP_K) -> int:
    """Give every marked row the base model's ``top_k`` next tokens and log-probabilities at each
    trained position (``teacher_ids`` / ``teacher_logprobs``; other rows get empty lists), in
    place; the adapter, if any, is switched off while reading. Returns the positions filled."""
    import contextlib

    import torch

    todo = sorted((r for r in rows if r.get(KEY)), key=lambda r: len(r["input_ids"]))  # less padding
    for r in rows:
        if not r.get(KEY):
            r[IDS], r[LOGPROBS] = [], []
    if not todo:
        return 0
    off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    filled, t0 = 0, time.monotonic()
    try:
        with off, torch.no_grad():
            for i in range(0, len(todo), batch_size):
                chunk = todo[i:i + batch_size]
                width = max(len(r["input_ids"]) for r in chunk)
                ids = torch.zeros((len(chunk), width), dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for j, r in enumerate(chunk):
                    ids[j, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
                    mask[j, :len(r["input_ids"])] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               use_cache=False).logits
                for j, r in enumerate(chunk):
                    pos = torch.tensor(_trained_positions(r["labels"]), dtype=torch.long)
                    logp = torch.log_softmax(logits[j, pos.to(device) - 1].float(), dim=-1)
                    top = logp.topk(top_k, dim=-1)
                    r[IDS] = top.indices.cpu().tolist()
                    r[LOGPROBS] = [[round(x, 5) for x in row] for row in top.values.cpu().tolist()]
                    filled += len(pos)
    finally:
        model.train(was_training)
    log.info("Replay: the base model's top %d next tokens kept at %d answer positions of %d "
             "replayed rows, %.0f s", top_k, filled, len(todo), time.monotonic() - t0)
    return filled


def batch_targets(examples: list[dict]) -> dict | None:
    """Pop the targets from a batch's ``examples`` and join them in the order the trained
    positions of the batch come in (example by example): ``teacher_ids`` (positions x k),
    ``teacher_logprobs`` and ``teacher_on`` (False for rows trained on their labels). None when
    no example carries targets. A row whose first token is labelled (raw text) loses that label:
    nothing in the row predicts it, and padding-free it would be predicted from the row before."""
    import torch

    rows = [(e.pop(IDS, None), e.pop(LOGPROBS, None), e["labels"]) for e in examples]
    if not any(ids for ids, _, _ in rows):
        return None
    for e in examples:   # a row's first token has no logits of its own to predict it
        if len(e["labels"]) and e["labels"][0] != -100:
            e["labels"] = [-100, *e["labels"][1:]]
    rows = [(ids, lps, e["labels"]) for (ids, lps, _), e in zip(rows, examples)]
    k = next(len(ids[0]) for ids, _, _ in rows if ids)
    all_ids, all_lp, on = [], [], []
    for ids, lps, labels in rows:
        n = sum(1 for x in labels if x != -100)
        if ids:
            if len(ids) != n:
                raise ValueError(f"{len(ids)} teacher positions for a row with {n} trained tokens: the "
                                 "row changed after its targets were read; set replay_kl=0 "
                                 "(--replay-kl 0) to train replayed answers as labels")
            all_ids += ids
            all_lp += lps
            on += [True] * n
        else:
            all_ids += [[0] * k] * n
            all_lp += [[0.0] * k] * n
            on += [False] * n
    return {"teacher_ids": torch.tensor(all_ids, dtype=torch.long).reshape(-1, k),
            "teacher_logprobs": torch.tensor(all_lp, dtype=torch.float32).reshape(-1, k),
            "teacher_on": torch.tensor(on, dtype=torch.bool)}


def kl(logp, teacher_ids, teacher_logprobs):
    """Per position: KL(base || tuned) over the base model's top k tokens and one bucket for the
    rest of the vocabulary; ``logp`` is the tuned model's log-softmax (positions x vocabulary)."""
    import torch

    p_t = teacher_logprobs.exp()
    rest_t = (1 - p_t.sum(-1)).clamp(min=_FLOOR)
    s = logp.gather(-1, teacher_ids)
    rest_s = (1 - s.exp().sum(-1)).clamp(min=_FLOOR)
    return (p_t * (teacher_logprobs - s)).sum(-1) + rest_t * (torch.log(rest_t) - torch.log(rest_s))


def loss(model, inputs: dict, targets: dict, num_items_in_batch=None, weight: float = 1.0):
    """The training loss of one batch: cross-entropy on the data's trained tokens, :func:`kl`
    times ``weight`` on the replayed ones, summed and divided by the trained tokens
    (``num_items_in_batch`` under gradient accumulation, as TRL's own loss)."""
    import torch

    labels = inputs["labels"]
    out = model(**{k: v for k, v in inputs.items() if k != "labels"})
    shifted = labels[:, 1:]
    where = shifted != -100
    logp = torch.log_softmax(out.logits[:, :-1][where].float(), dim=-1)
    on = targets["teacher_on"].to(logp.device)
    if on.numel() != logp.shape[0]:
        raise ValueError(f"{on.numel()} teacher positions for {logp.shape[0]} trained tokens in the batch")
    ce = -logp.gather(-1, shifted[where].unsqueeze(-1)).squeeze(-1)
    div = kl(logp, targets["teacher_ids"].to(logp.device), targets["teacher_logprobs"].to(logp.device))
    per_token = torch.where(on, weight * div, ce)
    n = num_items_in_batch if num_items_in_batch is not None else where.sum()
    return per_token.sum() / torch.as_tensor(n, device=logp.device).clamp(min=1)


def trainer_class(base, weight: float = 1.0):
    """``base`` (TRL's ``SFTTrainer``) with :func:`loss` (the KL times ``weight``) for batches that
    carry targets (the collator adds them: :func:`batch_targets`); other batches, and
    evaluation, go to ``base``."""

    class AnchoredTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            targets = {k: inputs.pop(k) for k in ("teacher_ids", "teacher_logprobs", "teacher_on")
                       if k in inputs}
            if not targets or return_outputs or not model.training:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            inputs["use_cache"] = False
            value = loss(model, inputs, targets, num_items_in_batch, weight)
            # as TRL's own loss: num_items_in_batch counts every rank's tokens and DDP averages
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                tp = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
                value = value * (self.accelerator.num_processes // tp)
            return value

    return AnchoredTrainer
