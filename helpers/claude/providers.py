"""Which API answers: ``provider="anthropic"`` (the Messages API, the default) or
``provider="openai"`` (any OpenAI-compatible chat completions server: OpenAI, OpenRouter, a local
Ollama, vLLM or LM Studio) at ``base_url``, with its key from the environment or a ``.env`` file.

:func:`choose` checks the settings; :meth:`Provider.key_model` is the model name cache keys and
records carry: the model alone for Anthropic (so existing caches keep their keys), the model and
the base URL for an OpenAI-compatible server, so answers from different servers never mix.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from helpers.claude.client import ClaudeConfigError, _setting

PROVIDERS = ("anthropic", "openai")
OPENAI_URL = "https://api.openai.com/v1"

NO_OPENAI_KEY_MESSAGE = (
    "provider='openai' needs a key: set OPENAI_API_KEY in the environment or in a .env file in "
    "the project root or your home folder (a local server such as Ollama, vLLM or LM Studio "
    "accepts any non-empty string, e.g. OPENAI_API_KEY=local). Or choose provider='anthropic' "
    "(ANTHROPIC_API_KEY), or a source that needs no key: source='rule' / qa_source=\"rule\".")


@dataclass(frozen=True)
class Provider:
    """A checked provider setting (:func:`choose` makes them)."""
    name: str = "anthropic"
    base_url: str | None = None      # None: the provider's own (ANTHROPIC_BASE_URL for Anthropic)

    @property
    def openai(self) -> bool:
        return self.name == "openai"

    @property
    def key_env(self) -> str:
        return "OPENAI_API_KEY" if self.openai else "ANTHROPIC_API_KEY"

    @property
    def url(self) -> str:
        """The base URL requests go to (OpenAI's own when none was set)."""
        return self.base_url or (OPENAI_URL if self.openai else "https://api.anthropic.com")

    def key_model(self, model: str) -> str:
        """The model as cache keys and records name it."""
        return f"{model} @ {self.url}" if self.openai else model

    def hint(self) -> str:
        """What to check when the server refuses every request."""
        if self.openai:
            return f"Check OPENAI_API_KEY, base_url ({self.url}) and the model name"
        return "Check ANTHROPIC_API_KEY and the model name"

    def describe(self) -> str:
        return f"openai-compatible server at {self.url}" if self.openai else "Anthropic"


def check_base_url(base_url: str) -> str:
    """The URL without a trailing slash; an error naming ``base_url`` when it is not http(s)."""
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClaudeConfigError(
            f"base_url={base_url!r} is not an http(s) URL: give the server's API root, e.g. "
            f"https://api.openai.com/v1, https://openrouter.ai/api/v1, http://localhost:11434/v1 "
            f"(Ollama), http://localhost:8000/v1 (vLLM) or http://localhost:1234/v1 (LM Studio).")
    try:
        parts.port
    except ValueError:
        raise ClaudeConfigError(f"base_url={base_url!r} has a bad port number: give e.g. "
                                f"http://localhost:11434/v1.") from None
    return base_url.strip().rstrip("/")


def choose(provider: str | None = "anthropic", base_url: str | None = None) -> Provider:
    """The provider to ask. ``base_url`` None: OPENAI_BASE_URL (environment, then ``.env``) for
    ``openai``, else OpenAI's own; for ``anthropic`` ANTHROPIC_BASE_URL as before."""
    name = (provider or "anthropic").lower()
    if name not in PROVIDERS:
        raise ClaudeConfigError(f"Unknown provider {provider!r}: choose one of "
                                f"{', '.join(PROVIDERS)} (openai: any OpenAI-compatible server, "
                                f"with base_url).")
    if name == "openai":
        base_url = base_url or _setting("OPENAI_BASE_URL")
    if base_url:
        base_url = check_base_url(base_url)
    return Provider(name, base_url or None)


def openai_key() -> str:
    key = _setting("OPENAI_API_KEY")
    if not key:
        raise ClaudeConfigError(NO_OPENAI_KEY_MESSAGE)
    return key


def proxied(url: str) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy."""
    import urllib.request
    host = urllib.parse.urlsplit(url).hostname or ""
    scheme = urllib.parse.urlsplit(url).scheme
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host)
