"""Perplexity and bits per byte of a model on held-out book text, scored in sliding windows
(:func:`heldout_nll`). torch is imported inside the function."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from helpers.evaluation.text import NAN


def _windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, first, end)`` per forward pass: input ``ids[begin:end]``, targets ``first..end-1``.

    The first pass scores every token but the first; each later one scores the next ``stride``
    tokens with the ``window - stride`` tokens before them as context only. Every target has at
    least one token of context because ``stride < window``.
    """
    if n < 2:
        return []
    end = min(window, n)
    out = [(0, 1, end)]
    while end < n:
        new_end = min(end + stride, n)
        out.append((max(0, new_end - window), end, new_end))
        end = new_end
    return out


def heldout_nll(model: Any, tokenizer: Any, texts: Sequence[str], *, window: int = 512,
                stride: int = 256, progress: Callable[[int, int], Any] | None = None) -> dict:
    """Negative log-likelihood of held-out texts, scored in sliding windows.

    Each text is tokenized on its own without special tokens. With a BOS token it is prepended
    and every text token is scored; without one (Qwen) the first token of each text is context
    only. Windows of ``window`` tokens advance by ``stride``; every later token is scored exactly
    once, with up to ``window - stride`` tokens of context (the usual strided perplexity; the sum
    is taken from the logits, which is what labels of -100 on the context tokens would give).
    ``bytes`` counts all UTF-8 bytes of the texts, so without a BOS token ``bits_per_byte`` runs a
    little high (one unscored token per text): pass long texts, such as whole chapters.

    Returns ``nll_sum`` (nats), ``tokens`` (scored), ``bytes``, ``perplexity`` and
    ``bits_per_byte``. ``progress(done, total)`` is called after each window.
    """
    if window < 2:
        raise ValueError(f"heldout_nll: window={window} is too small; use at least 2 "
                         "(default 512).")
    if not 1 <= stride < window:
        raise ValueError(f"heldout_nll: stride={stride} must be at least 1 and smaller than "
                         f"window={window} so that every scored token has context; use "
                         f"stride=window // 2 (the default is 256 for 512).")
    import torch

    bos = getattr(tokenizer, "bos_token_id", None)
    seqs: list[list[int]] = []
    n_bytes = 0
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        seqs.append(([bos] if bos is not None else []) + ids)
        n_bytes += len(text.encode("utf-8"))
    plans = [_windows(len(ids), window, stride) for ids in seqs]
    total = sum(len(p) for p in plans)
    if total == 0:
        raise ValueError(f"heldout_nll: the {len(seqs)} held-out texts hold no token to score "
                         "(empty or one token each); pass the held-out passages' text.")

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll_sum, tokens, done = 0.0, 0, 0
    try:
        with torch.no_grad():
            for ids, plan in zip(seqs, plans):
                for begin, first, end in plan:
                    x = torch.tensor([ids[begin:end]], dtype=torch.long, device=device)
                    logits = model(input_ids=x, attention_mask=torch.ones_like(x),
                                   use_cache=False).logits[0]
                    pred = logits[first - 1 - begin:end - 1 - begin].float()
                    target = x[0, first - begin:end - begin]
                    nll_sum += torch.nn.functional.cross_entropy(pred, target,
                                                                 reduction="sum").item()
                    tokens += end - first
                    done += 1
                    if progress is not None:
                        progress(done, total)
    finally:
        if was_training:
            model.train()
    return {"nll_sum": nll_sum, "tokens": tokens, "bytes": n_bytes,
            "perplexity": math.exp(nll_sum / tokens),
            "bits_per_byte": nll_sum / math.log(2) / n_bytes if n_bytes else NAN}
