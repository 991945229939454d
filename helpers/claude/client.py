"""The Claude client: the API key (environment, then ``.env`` files), a client made from it with
the SDK's own retries off, key redaction, and the errors of every run of Claude requests.

The API key is never logged, stored or put in an error message: :func:`redact` scrubs it from
text the SDK gives back. ``anthropic`` is imported only when a client is made here.
"""

from __future__ import annotations

import os
from pathlib import Path

from helpers.core.paths import ROOT

DEFAULT_MODEL = "claude-haiku-4-5-20251001"

NO_KEY_MESSAGE = (
    "source='anthropic' needs an Anthropic API key: set ANTHROPIC_API_KEY in the environment or "
    "in a .env file in the project root or your home folder. Without a key, choose a source "
    "explicitly: qa_source=\"rule\" (deterministic questions, no model; source='rule' here, "
    "--source rule on the command line) or qa_source=\"local\" (a local transformers model: "
    "source='local', local_model=(model, tokenizer)). Records carry their source.")


# -- errors -----------------------------------------------------------------------------------

class ClaudeError(RuntimeError):
    """A run of Claude requests stopped (the work done so far is saved in the cache)."""


class ClaudeConfigError(ClaudeError, ValueError):
    """A setting is wrong or missing (no API key, unknown source, ...)."""


class MalformedReply(ValueError):
    """A reply that cannot be read as asked (e.g. not a JSON array of exactly N distinct
    non-empty strings); the request is asked again."""


# the names these errors had in helpers.qa
QAError = ClaudeError
QAConfigError = ClaudeConfigError


# -- credentials ------------------------------------------------------------------------------

def _dotenv_files() -> list[Path]:
    return [ROOT / ".env", Path.home() / ".env"]


def _read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (``export`` and quotes allowed, ``#`` comments); nothing is exported."""
    out: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        k = k.strip().removeprefix("export ").strip()
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        elif " #" in v:
            v = v.split(" #", 1)[0].strip()
        out[k] = v
    return out


def _setting(name: str) -> str | None:
    if os.environ.get(name):
        return os.environ[name]
    for f in _dotenv_files():
        v = _read_dotenv(f).get(name)
        if v:
            return v
    return None


def client_for(client, timeout_s: float):
    """The client to use: the one given (its SDK retries turned off), else one made from
    ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) and ANTHROPIC_BASE_URL, environment first, then
    ``.env`` in the project root, then in the home folder."""
    if client is not None:
        if getattr(client, "max_retries", 0) != 0 and hasattr(client, "with_options"):
            client = client.with_options(max_retries=0)
        return client
    key, token = _setting("ANTHROPIC_API_KEY"), None
    if not key:
        token = _setting("ANTHROPIC_AUTH_TOKEN")
    if not key and not token:
        raise ClaudeConfigError(NO_KEY_MESSAGE)
    import anthropic
    return anthropic.Anthropic(api_key=key, auth_token=token if not key else None,
                               base_url=_setting("ANTHROPIC_BASE_URL"), max_retries=0,
                               timeout=timeout_s)


# -- redaction --------------------------------------------------------------------------------

def _secrets(client) -> list[str]:
    return [s for s in (getattr(client, "api_key", None), getattr(client, "auth_token", None))
            if isinstance(s, str) and len(s) >= 6]


def redact(text: str, client) -> str:
    for s in _secrets(client):
        text = text.replace(s, "[redacted]")
    return text
