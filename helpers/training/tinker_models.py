"""Tinker (Thinking Machines' remote training API) without a GPU here: which of our registry models
Tinker trains, the checks before a run (the SDK installed, ``TINKER_API_KEY`` set) and what a run
processed (tokens, and the cost where a price is known).

Tinker trains LoRA adapters on its own GPUs: our loop runs on the CPU and sends batches
(:mod:`helpers.training.tinker_backend`). Its base models are named by their Hugging Face ids;
the service's own list (``RestClient.get_server_capabilities().result().supported_models``)
is the authority, read at the start of a run when a client is at hand.

Nothing here imports the SDK at module level: ``import helpers.training.tinker_models`` is cheap.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from typing import Iterable

from helpers import models
from helpers.claude.client import _setting

log = logging.getLogger(__name__)

#: the SDK version this code was written against and tested with (tests/training/test_tinker_backend.py)
SDK_VERSION = "0.38.0"

#: registry name -> Tinker base model. Tinker lists these (the brief of issue 14 and the Tinker
#: docs' model lineup); the service's capabilities list is checked again at run time.
TINKER_BASE_MODELS: dict[str, str] = {
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "gpt-oss-20b": "openai/gpt-oss-20b",
}

#: registry models Tinker does not serve -> the nearest one it does, with why
NEAREST: dict[str, tuple[str, str]] = {
    "qwen3-14b": ("qwen3-32b", "the same Qwen3 family and chat template, one size up"),
    "qwen3-0.6b": ("qwen3-30b-a3b", "the same Qwen3 chat template; 3B parameters active per token"),
    "qwen3-1.7b": ("qwen3-30b-a3b", "the same Qwen3 chat template; 3B parameters active per token"),
    "qwen2.5-0.5b": ("qwen3-30b-a3b", "Tinker serves no Qwen2.5; Qwen3-30B-A3B is the cheapest "
                     "Qwen it serves (3B active parameters) and our Qwen3 template is ready"),
    "qwen2.5-1.5b": ("qwen3-30b-a3b", "Tinker serves no Qwen2.5; Qwen3-30B-A3B is the cheapest "
                     "Qwen it serves (3B active parameters) and our Qwen3 template is ready"),
    "qwen2.5-3b": ("qwen3-30b-a3b", "Tinker serves no Qwen2.5; Qwen3-30B-A3B is the cheapest "
                   "Qwen it serves (3B active parameters) and our Qwen3 template is ready"),
}

INSTALL_HINT = 'pip install ".[tinker]"'


class TinkerUnavailableError(RuntimeError):
    """backend="tinker" cannot run here: the SDK or the key is missing."""


class TinkerModelError(ValueError):
    """The model asked for is not one Tinker trains."""


def sdk_installed() -> bool:
    return importlib.util.find_spec("tinker") is not None


def api_key() -> str | None:
    """``TINKER_API_KEY`` from the environment, then ``.env`` in the project root, then in the
    home folder (as the Claude key is read)."""
    return _setting("TINKER_API_KEY")


def require_tinker(*, need_key: bool = True) -> None:
    """Stop before anything runs when backend="tinker" cannot work here, naming the fix."""
    if not sdk_installed():
        raise TinkerUnavailableError(
            "backend='tinker' needs the Tinker SDK, which is not installed. Install it with "
            f"`{INSTALL_HINT}` (tinker=={SDK_VERSION}), or choose backend='auto' to train here.")
    if need_key and not api_key():
        raise TinkerUnavailableError(
            "backend='tinker' needs a Tinker API key: set TINKER_API_KEY in the environment or in a "
            ".env file in the project root or your home folder (TINKER_API_KEY=tml-...; keys are "
            "made in the Tinker console). Or choose backend='auto' to train here.")


def tinker_base_model(name: str, supported: Iterable[str] | None = None) -> str:
    """The Tinker base model for registry model ``name`` (a hub id such as ``Qwen/Qwen3-8B`` is
    taken as it is). ``supported``: the service's model names, when known; a model outside it is
    refused too. Refusals name the nearest model Tinker serves."""
    listed = sorted(set(supported)) if supported is not None else None
    if name in TINKER_BASE_MODELS:
        base = TINKER_BASE_MODELS[name]
    elif "/" in name:
        base = name
    else:
        raise TinkerModelError(_refusal(name))
    if listed is not None and base not in listed:
        raise TinkerModelError(
            f"model={name!r} ({base}) is not in the models this Tinker service trains today: "
            f"{', '.join(listed) or 'none listed'}. Choose one of those (a registry name: "
            f"{', '.join(n for n, b in TINKER_BASE_MODELS.items() if b in listed) or 'none'}).")
    return base


def _refusal(name: str) -> str:
    served = ", ".join(f"{n} ({b})" for n, b in TINKER_BASE_MODELS.items())
    if name in NEAREST:
        near, why = NEAREST[name]
        return (f"model={name!r} cannot be trained with backend='tinker': Tinker does not serve "
                f"{_display(name)}. The nearest it serves is model={near!r} "
                f"({TINKER_BASE_MODELS[near]}): {why}. Models Tinker trains here: {served}; or train "
                f"{name!r} on a local GPU with backend='auto'.")
    return (f"model={name!r} has no Tinker base model. Models Tinker trains here: {served} (or pass "
            "a Hugging Face id that Tinker serves, e.g. model='Qwen/Qwen3-8B'); or use "
            "backend='auto' to train here.")


def _display(name: str) -> str:
    try:
        return models.get_profile(name).display_name
    except Exception:  # noqa: BLE001  (only for the message)
        return name


def server_models(rest_client) -> list[str]:
    """The base models the service trains, from ``get_server_capabilities`` (SDK 0.38: a future of
    ``GetServerCapabilitiesResponse`` whose ``supported_models`` have ``model_name`` and
    ``trainable``)."""
    caps = rest_client.get_server_capabilities().result()
    return sorted(m.model_name for m in caps.supported_models
                  if m.model_name and getattr(m, "trainable", None) is not False)


# -- tokens and cost ----------------------------------------------------------------------------

#: USD per million tokens by Tinker base model: (prefill, sample, train). EMPTY ON PURPOSE: the
#: prices for these models were not at hand when this was written (2026-12-02; Tinker publishes
#: them at https://thinkingmachines.ai/tinker/ under pricing). Pass ``prices=`` to count dollars.
PRICES_USD_PER_MTOK: dict[str, tuple[float, float, float]] = {}


@dataclass
class TokenCounts:
    """Tokens a run sent to Tinker, by what Tinker bills: trained (forward + backward on every
    token of each sequence, weight 0 or 1), prefill (prompt tokens when sampling) and sampled."""

    train: int = 0
    prefill: int = 0
    sample: int = 0
    trained_weighted: int = 0   # tokens with weight 1 (what the loss counts)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def cost_summary(base_model: str, tokens: TokenCounts,
                 prices: tuple[float, float, float] | None = None) -> dict:
    """Tokens processed and, where a price is known (``prices`` (prefill, sample, train) USD per
    million tokens, else :data:`PRICES_USD_PER_MTOK`), the cost in USD; otherwise ``usd`` is None
    and ``price`` says that the code does not know it."""
    p = prices or PRICES_USD_PER_MTOK.get(base_model)
    out = {"base_model": base_model, "tokens": tokens.as_dict()}
    if p is None:
        out.update(usd=None, price=("not known to the code: Tinker bills per token (prefill, "
                                    "sampling, training); see https://thinkingmachines.ai/tinker/ "
                                    "and pass prices=(prefill, sample, train) USD per million tokens"))
        return out
    usd = (tokens.prefill * p[0] + tokens.sample * p[1] + tokens.train * p[2]) / 1e6
    out.update(usd=round(usd, 4), price={"prefill": p[0], "sample": p[1], "train": p[2],
                                         "unit": "USD per million tokens"})
    return out
