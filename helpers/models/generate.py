"""Answers for a list of questions, batched, with each family's recommended settings."""

from __future__ import annotations

import logging
import re
import time
from typing import Sequence

from helpers.models import InferenceDefaults, ModelProfile

log = logging.getLogger(__name__)

#: a long list of questions logs how far it got this often (seconds)
PROGRESS_SECONDS = 30.0

_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
_HARMONY_FINAL = "<|channel|>final<|message|>"
_CONTROL_TOKENS = re.compile(r"<\|[a-z_]+\|>")  # <|im_end|>, <|return|>, <|endoftext|>, ...


def strip_reasoning(text: str) -> str:
    """The answer without reasoning: Qwen3 ``<think>`` blocks (closed, left open by a cut-off
    generation, or opened by the prompt so that only ``</think>`` is generated) and GPT-OSS
    analysis-channel text are removed; control tokens such as ``<|im_end|>`` too."""
    if _HARMONY_FINAL in text:
        text = text.rsplit(_HARMONY_FINAL, 1)[1]
    elif "<|channel|>analysis" in text:
        return ""  # only reasoning was produced: there is no answer
    text = _THINK.sub("", text)
    if "</think>" in text:          # the prompt opened the think block: reasoning ends here
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:           # an unclosed think block: all of it is reasoning
        text = text.split("<think>", 1)[0]
    text = _CONTROL_TOKENS.sub("", text)
    return text.strip()


def answer(model, tokenizer, questions: Sequence[str], profile: ModelProfile, *,
           system_prompt: str | None = None, greedy: bool = True, batch_size: int = 8,
           max_new_tokens: int | None = None, settings: InferenceDefaults | None = None,
           seed: int = 0, raw: list[str] | None = None) -> list[str]:
    """One answer per question (reasoning stripped), in order.

    ``greedy=False`` samples with the profile's recommended temperature, top-p and top-k.
    Pass a list as ``raw`` to also get the decoded text before stripping (reasoning and special
    tokens included), e.g. to show what was removed.
    """
    import torch

    settings = settings or profile.inference
    max_new = max_new_tokens or settings.max_new_tokens
    if getattr(model.config, "output_router_logits", False):
        model.config.output_router_logits = False  # SFTTrainer turns it on; it breaks padded generation
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    answers: list[str] = []
    torch.manual_seed(seed)
    t0 = last = time.monotonic()
    try:
        for i in range(0, len(questions), batch_size):
            chunk = questions[i:i + batch_size]
            prompts = []
            for q in chunk:
                msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
                msgs.append({"role": "user", "content": q})
                prompts.append(tokenizer.apply_chat_template(
                    msgs, tokenize=False, add_generation_prompt=True, **settings.template_kwargs))
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen_kwargs = dict(max_new_tokens=max_new, pad_token_id=tokenizer.pad_token_id)
            if greedy:  # plain argmax decoding: no sampling knobs, no repetition penalty
                gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                                  repetition_penalty=None)
            else:
                gen_kwargs.update(do_sample=True, temperature=settings.temperature,
                                  top_p=settings.top_p, top_k=settings.top_k or None,
                                  repetition_penalty=settings.repetition_penalty)
            with torch.no_grad():
                out = model.generate(**enc, **gen_kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            for row in new:
                text = tokenizer.decode(row, skip_special_tokens=False)
                if raw is not None:
                    raw.append(text)
                answers.append(_clean(strip_reasoning(text), tokenizer))
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS and len(answers) < len(questions):
                last = now
                log.info("Answered %d of %d questions in %.0f s, ~%.0f s left", len(answers),
                         len(questions), now - t0, (now - t0) / len(answers) * (len(questions) - len(answers)))
    finally:
        tokenizer.padding_side = old_side
    return answers


def _clean(text: str, tokenizer) -> str:
    for tok in getattr(tokenizer, "all_special_tokens", []):
        text = text.replace(tok, "")
    return text.strip()
