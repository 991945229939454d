"""How one request reaches a provider: :class:`HTTPBackend` (our own small HTTP client: keep-alive
connections per worker thread, stdlib only) or :class:`SDKBackend` (an ``anthropic`` or
``openai`` SDK client, with its own retries off). Both speak both providers and turn every
failure into an :class:`ApiFailure`, so the engine in ``helpers.claude.requests`` retries,
counts and reports them the same way.

Why our own client: the SDKs cost about 1.5 ms of CPU per request and 1-2 s to import, which
on two cores kept 32 requests in flight at 100 ms latency to ~0.85 of the ideal wall time
(``bench/qa_bench.py``). It is used when no SDK client is passed and no proxy is configured
for the URL (the SDKs honour proxies; this client does not); Message Batches use the SDK.

Requests are Messages API parameters (``model``, ``max_tokens``, ``system``, ``messages``);
for an OpenAI-compatible server they become chat completions (the system prompt as the first
message) and, when the task gives a JSON schema and the server has not refused one, a
``response_format`` of type ``json_schema``. A server that answers such a request with HTTP
400/422 about the schema (its message names response_format, json_schema, schema, structured or
guided) is asked again without it, for the rest of the run, and replies are parsed tolerantly.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import ssl
import threading
import urllib.parse

from helpers.claude.client import ClaudeConfigError, _setting, client_for
from helpers.claude.providers import Provider, check_base_url, openai_key, proxied

log = logging.getLogger(__name__)

RUN_FATAL_STATUS = {401, 402, 403, 404}   # every request would fail the same way
ANTHROPIC_VERSION = "2026-10-21"      # what the anthropic SDK (2.12) sends
USER_AGENT = "finetuning-helpers"


class ApiFailure(Exception):
    """A request that failed: ``cause`` (an HTTP status, ``timeout``, ``connection``,
    ``fatal`` for one that stops the run, ``schema`` for a refused response_format), a
    description (redact before showing), whether to retry, and a retry-after in seconds."""

    def __init__(self, cause: str, text: str, retryable: bool, retry_after: float | None = None):
        super().__init__(text)
        self.cause, self.text, self.retryable, self.retry_after = (
            cause, text, retryable, retry_after)


def status_failure(status: int, etype: str | None, message: str,
                   retry_after: float | None = None) -> ApiFailure:
    text = f"HTTP {status} {etype or ''}: {message or ''}".replace("  ", " ").strip()
    if status in RUN_FATAL_STATUS:
        return ApiFailure("fatal", text, False)
    return ApiFailure(str(status), text, status in (408, 409, 429) or status >= 500, retry_after)


def parse_retry_after(headers) -> float | None:
    import email.utils
    import time
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            date = email.utils.parsedate_tz(value)
            if date is not None:
                return max(0.0, email.utils.mktime_tz(date) - time.time())
    return None


# -- the two APIs' request and reply shapes ---------------------------------------------------

def openai_body(params: dict, schema: dict | None, official: bool) -> dict:
    """Chat completions parameters from Messages API ones."""
    messages = ([{"role": "system", "content": params["system"]}] if params.get("system") else [])
    messages += list(params["messages"])
    body = {"model": params["model"], "messages": messages}
    # OpenAI's newer models refuse max_tokens; other servers know max_tokens best
    body["max_completion_tokens" if official else "max_tokens"] = params["max_tokens"]
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "reply", "schema": schema, "strict": True}}
    return body


def _field(obj, name, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def anthropic_reply(message) -> tuple[str, dict]:
    text = "".join(_field(b, "text", "") or "" for b in (_field(message, "content") or [])
                   if _field(b, "type") == "text")
    usage = _field(message, "usage") or {}
    return text, {"input_tokens": int(_field(usage, "input_tokens", 0) or 0),
                  "output_tokens": int(_field(usage, "output_tokens", 0) or 0)}


def openai_reply(completion) -> tuple[str, dict]:
    choices = _field(completion, "choices") or []
    text = (_field(_field(choices[0], "message") or {}, "content") or "") if choices else ""
    usage = _field(completion, "usage") or {}
    return text, {"input_tokens": int(_field(usage, "prompt_tokens", 0) or 0),
                  "output_tokens": int(_field(usage, "completion_tokens", 0) or 0)}


_SCHEMA_WORDS = re.compile(r"response_format|json_schema|schema|structured|guided", re.I)


def schema_refusal(status: int | None, body: dict, failure: ApiFailure) -> bool:
    """A 400/422 to a request with a response_format whose message is about it."""
    return ("response_format" in body and status in (400, 422)
            and bool(_SCHEMA_WORDS.search(failure.text)))


class _Schema:
    """Whether to send a task's JSON schema: until the server refuses one (then never again)."""

    def __init__(self, provider: Provider):
        self.provider = provider
        self.ok = provider.openai
        self._lock = threading.Lock()

    def use(self, schema: dict | None) -> dict | None:
        return schema if self.ok else None

    def refused(self, failure: ApiFailure) -> ApiFailure:
        with self._lock:
            first, self.ok = self.ok, False
        if first:
            log.warning("%s refused response_format json_schema (%s): asking without it for the "
                        "rest of the run and reading replies tolerantly", self.provider.url,
                        failure.text[:200])
        return ApiFailure("schema", f"response_format refused ({failure.text})", True, 0.0)


# -- our own HTTP client ----------------------------------------------------------------------

class HTTPBackend:
    """Requests over stdlib ``http.client``: one keep-alive connection per worker thread."""

    def __init__(self, provider: Provider, timeout_s: float, *, api_key: str | None = None,
                 auth_token: str | None = None):
        self.provider, self.timeout_s = provider, timeout_s
        self.api_key, self.auth_token = api_key, auth_token
        self.schema = _Schema(provider)
        url = urllib.parse.urlsplit(provider.url)
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname, url.port
        root = url.path.rstrip("/")
        self._path = root + ("/chat/completions" if provider.openai else "/v1/messages")
        self._headers = {"content-type": "application/json", "accept": "application/json",
                         "user-agent": USER_AGENT}
        if provider.openai:
            self._headers["authorization"] = f"Bearer {api_key}"
        else:
            # as the anthropic SDK (2.x) sends an API key or a token
            self._headers["anthropic-version"] = ANTHROPIC_VERSION
            self._headers["authorization"] = f"Bearer {api_key or auth_token}"
        self._local = threading.local()
        self._ssl = ssl.create_default_context() if self._https else None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = (http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                context=self._ssl) if self._https
                    else http.client.HTTPConnection(self._host, self._port, timeout=timeout))
            self._local.conn = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def send(self, params: dict, timeout: float, schema: dict | None = None) -> tuple[str, dict]:
        body = (openai_body(params, self.schema.use(schema), self.provider.base_url is None)
                if self.provider.openai else params)
        data = json.dumps(body).encode("utf-8")
        try:
            conn = self._connection(timeout)
            conn.request("POST", self._path, data, self._headers)
            response = conn.getresponse()
            raw = response.read()
        except (socket.timeout, TimeoutError):
            self._drop()
            raise ApiFailure("timeout", "the request timed out", True) from None
        except (OSError, http.client.HTTPException) as e:
            self._drop()
            raise ApiFailure("connection", f"connection error ({type(e).__name__}) to "
                             f"{self.provider.url}", True) from None
        if response.getheader("connection", "").lower() == "close":
            self._drop()
        try:
            reply = json.loads(raw) if raw else None
        except ValueError:
            reply = None
        if response.status >= 400:
            err = reply.get("error") if isinstance(reply, dict) else None
            err = err if isinstance(err, dict) else {}
            message = err.get("message") or (raw[:200].decode("utf-8", "replace").strip()
                                             if not err else "")
            failure = status_failure(response.status, err.get("type") or err.get("code"),
                                     str(message), parse_retry_after(response.headers))
            if schema_refusal(response.status, body, failure):
                raise self.schema.refused(failure)
            raise failure
        if not isinstance(reply, dict):
            kind = response.getheader("content-type", "no content type")
            raise ApiFailure("fatal", f"the server at {self.provider.url} did not answer like "
                             f"the {self.provider.name} API (HTTP {response.status}, {kind}): is "
                             f"base_url right?", False)
        return openai_reply(reply) if self.provider.openai else anthropic_reply(reply)


# -- an SDK client ----------------------------------------------------------------------------

class SDKBackend:
    """Requests through an ``anthropic.Anthropic`` or ``openai.OpenAI`` client."""

    def __init__(self, client, provider: Provider):
        self.client, self.provider = client, provider
        self.api_key = getattr(client, "api_key", None)
        self.auth_token = getattr(client, "auth_token", None)
        self.schema = _Schema(provider)

    def send(self, params: dict, timeout: float, schema: dict | None = None) -> tuple[str, dict]:
        if self.provider.openai:
            import openai
            errors: tuple = (openai.APIStatusError, openai.APIConnectionError)
            body = openai_body(params, self.schema.use(schema), self.provider.base_url is None)
        else:
            import anthropic
            errors, body = (anthropic.APIStatusError, anthropic.APIConnectionError), params
        try:
            if self.provider.openai:
                return openai_reply(self.client.chat.completions.create(**body, timeout=timeout))
            return anthropic_reply(self.client.messages.create(**body, timeout=timeout))
        except errors as e:
            failure = sdk_failure(e, self.provider)
            if schema_refusal(getattr(e, "status_code", None), body, failure):
                raise self.schema.refused(failure) from None
            raise failure from None


def sdk_failure(e: BaseException, provider: Provider) -> ApiFailure:
    """An SDK error as an :class:`ApiFailure` (the same classes in both SDKs)."""
    names = {c.__name__ for c in type(e).__mro__}
    if "APITimeoutError" in names:
        return ApiFailure("timeout", "the request timed out", True)
    if "APIConnectionError" in names:
        inner = type(e.__cause__).__name__ if e.__cause__ else "no reply"
        where = f" to {provider.url}" if provider.openai else ""
        return ApiFailure("connection", f"connection error ({inner}){where}", True)
    if "APIStatusError" in names:
        message = getattr(e, "api_message", None) or getattr(e, "message", None) or ""
        return status_failure(e.status_code, getattr(e, "type", None), str(message),
                              parse_retry_after(getattr(getattr(e, "response", None),
                                                        "headers", None)))
    raise e


def sdk_provider(client, provider: Provider) -> Provider:
    """The provider an SDK client speaks (an ``openai`` client is the openai provider)."""
    if type(client).__module__.split(".")[0] == "openai" and not provider.openai:
        base = str(getattr(client, "base_url", "") or "").rstrip("/") or None
        return Provider("openai", None if base == "https://api.openai.com/v1" else base)
    return provider


def backend_for(client, provider: Provider, timeout_s: float):
    """The backend to send with: the SDK client given (its own retries turned off), else our
    HTTP client with the provider's key (an SDK client where a proxy is configured)."""
    if client is not None:
        if hasattr(client, "send"):
            return client
        provider = sdk_provider(client, provider)
        if getattr(client, "max_retries", 0) != 0 and hasattr(client, "with_options"):
            client = client.with_options(max_retries=0)
        return SDKBackend(client, provider)
    if provider.openai:
        key = openai_key()
        if proxied(provider.url):
            import openai
            return SDKBackend(openai.OpenAI(api_key=key, base_url=provider.url, max_retries=0,
                                            timeout=timeout_s), provider)
        return HTTPBackend(provider, timeout_s, api_key=key)
    key, token = _setting("ANTHROPIC_API_KEY"), None
    if not key:
        token = _setting("ANTHROPIC_AUTH_TOKEN")
    base = provider.base_url or _setting("ANTHROPIC_BASE_URL")
    if not key and not token or proxied(base or provider.url):
        return SDKBackend(client_for(None, timeout_s), provider)   # no key: the usual error
    if base:
        try:
            base = check_base_url(base)
        except ClaudeConfigError as e:
            raise ClaudeConfigError(f"ANTHROPIC_BASE_URL: {e}") from None
    return HTTPBackend(Provider("anthropic", base), timeout_s, api_key=key, auth_token=token)
