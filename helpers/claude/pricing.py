"""What Claude requests cost: list prices per model, the batch discount, and the message framing
counted in token estimates (tokens are estimated as characters / 4 plus that framing)."""

from __future__ import annotations

# (input, output) USD per million tokens. LIST PRICES AS OF WRITING: check
# https://www.anthropic.com/pricing before relying on them; pass price_per_mtok= to override.
PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
}
BATCH_DISCOUNT = 0.5             # the Message Batches API bills half the list price
PROMPT_OVERHEAD_TOKENS = 12      # message framing the API adds to the text we send


def prices_for(model: str, price_per_mtok: tuple[float, float] | None = None
               ) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for a model id (dated ids match their family)."""
    if price_per_mtok is not None:
        return tuple(price_per_mtok)  # type: ignore[return-value]
    for name, price in PRICES_USD_PER_MTOK.items():
        if model.startswith(name):
            return price
    return None


def cost_usd(model: str, input_tokens: int, output_tokens: int, *, batch: bool = False,
             price_per_mtok: tuple[float, float] | None = None) -> float | None:
    price = prices_for(model, price_per_mtok)
    if price is None:
        return None
    usd = (input_tokens * price[0] + output_tokens * price[1]) / 1e6
    return usd * (BATCH_DISCOUNT if batch else 1.0)
