"""What requests cost: list prices per model (Anthropic's, and OpenAI's common ones for
``provider="openai"``), the batch discount, and the message framing counted in token estimates
(tokens are estimated as characters / 4 plus that framing). A model on an OpenAI-compatible
server without a list price here (a local Ollama/vLLM/LM Studio model, most OpenRouter ones)
counts as free, with a logged note: pass ``price_per_mtok`` for a paid one."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# (input, output) USD per million tokens. LIST PRICES AS OF WRITING: check
# https://www.anthropic.com/pricing before relying on them; pass price_per_mtok= to override.
PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
}
# OpenAI list prices, (input, output) USD per million tokens, AS OF WRITING: check
# https://openai.com/api/pricing. OpenRouter's "openai/<model>" names match too.
OPENAI_PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
}
BATCH_DISCOUNT = 0.5             # the Message Batches API bills half the list price
# The OpenAI Batch API bills half the list price too, input and output tokens alike (OpenAI's
# batch guide, https://platform.openai.com/docs/guides/batch; the figure as quoted by
# https://apidog.com/blog/openai-batch-api/, read 2026-12-02, not re-checked at OpenAI from here).
OPENAI_BATCH_DISCOUNT = 0.5
PROMPT_OVERHEAD_TOKENS = 12      # message framing the API adds to the text we send


_noted: set[str] = set()


def prices_for(model: str, price_per_mtok: tuple[float, float] | None = None,
               provider: str = "anthropic") -> tuple[float, float] | None:
    """(input, output) USD per million tokens for a model id (dated ids match their family;
    the longest known name wins). None: no price known for an Anthropic model. For
    ``provider="openai"`` an unknown model is free (0, 0), with a note in the log."""
    if price_per_mtok is not None:
        return tuple(price_per_mtok)  # type: ignore[return-value]
    table = OPENAI_PRICES_USD_PER_MTOK if provider == "openai" else PRICES_USD_PER_MTOK
    name = model.removeprefix("openai/") if provider == "openai" else model
    known = [k for k in table if name.startswith(k)]
    if known:
        return table[max(known, key=len)]
    if provider != "openai":
        return None
    if model not in _noted:
        _noted.add(model)
        log.info("no list price known for %r: counted as free (a local server costs nothing); "
                 "pass price_per_mtok=(input, output) USD per million tokens for a paid one "
                 "(known: %s)", model, ", ".join(OPENAI_PRICES_USD_PER_MTOK))
    return (0.0, 0.0)


def cost_usd(model: str, input_tokens: int, output_tokens: int, *, batch: bool = False,
             price_per_mtok: tuple[float, float] | None = None,
             provider: str = "anthropic") -> float | None:
    price = prices_for(model, price_per_mtok, provider)
    if price is None:
        return None
    usd = (input_tokens * price[0] + output_tokens * price[1]) / 1e6
    return usd * (batch_discount(provider) if batch else 1.0)


def batch_discount(provider: str = "anthropic") -> float:
    """What a batch costs as a share of the list price, per provider."""
    return OPENAI_BATCH_DISCOUNT if provider == "openai" else BATCH_DISCOUNT
