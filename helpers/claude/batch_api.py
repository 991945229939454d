"""Batch APIs behind one small interface, so :func:`helpers.claude.batch_run.run_batches` (the
questions' and the judge's batches) submits, polls and collects the same way for both providers: Anthropic's Message Batches
(:class:`AnthropicBatches`) and the OpenAI Batch API (:class:`OpenAIBatches`, for
``provider="openai"``).

OpenAI's calls, read in the pinned SDK (openai 3.57, ``resources/files.py`` and
``resources/batches.py``): the requests go up as one JSONL file (``files.create(file=...,
purpose="batch")``, a multipart POST to ``/files``), each line ``{"custom_id", "method": "POST",
"url": "/v1/chat/completions", "body": <chat completion parameters>}``; ``batches.create(
input_file_id=..., endpoint="/v1/chat/completions", completion_window="24h")`` starts it;
``batches.retrieve(id)`` polls (``status``: validating, in_progress, finalizing, then completed,
failed, expired or cancelled); ``files.content(output_file_id)`` (and ``error_file_id``) hold one
JSON line per request: ``{"custom_id", "response": {"status_code", "body"}, "error"}``. A
request found in neither file (an expired or cancelled batch) is submitted again.

A server without these endpoints (a local Ollama, vLLM or LM Studio server answers 404 there) is
an error naming ``batch=True`` and ``base_url`` (:class:`NoBatchAPI`), raised before anything is
asked: a silent fallback to live requests would change what the run costs and how long it takes
without saying so. Leave ``batch`` off for such servers (requests then run concurrently).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from helpers.claude.backends import (
    _SCHEMA_WORDS,
    anthropic_reply,
    openai_body,
    openai_reply,
    sdk_provider,
)
from helpers.claude.client import ClaudeConfigError, client_for
from helpers.claude.providers import Provider, openai_key

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"                 # the only window the OpenAI Batch API offers
OPENAI_ENDED = {"completed", "failed", "expired", "cancelled"}
RETRYABLE_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error",
                    "expired", "canceled", "cancelled", "rate_limit_exceeded", "server_error",
                    "429", "500", "502", "503", "504", "529", "schema"}


class NoBatchAPI(ClaudeConfigError):
    """The server has no batch endpoint (``batch=True`` against a local server)."""


@dataclass
class BatchItem:
    """One request's outcome in an ended batch."""
    custom_id: str
    ok: bool
    text: str = ""
    usage: dict = field(default_factory=dict)
    error: str = ""                  # the error's type or code (``expired`` for no result)
    message: str = ""

    @property
    def retryable(self) -> bool:
        return self.error in RETRYABLE_ERRORS


def _status(e: BaseException) -> int | None:
    return getattr(e, "status_code", None)


class _Keys:
    """The client's secrets, so the engine can redact them from error text."""
    client = None

    @property
    def api_key(self):
        return getattr(self.client, "api_key", None)

    @property
    def auth_token(self):
        return getattr(self.client, "auth_token", None)


# -- Anthropic --------------------------------------------------------------------------------

class AnthropicBatches(_Keys):
    """The Message Batches API through an ``anthropic.Anthropic`` client."""

    name = "Message Batches"

    def __init__(self, client):
        self.client = client
        self.provider = getattr(client, "provider", Provider())

    def submit(self, requests: list[tuple[str, dict, dict | None]]) -> dict:
        created = self.client.messages.batches.create(requests=[
            {"custom_id": cid, "params": params} for cid, params, _ in requests])
        return {"id": created.id}

    def ended(self, entry: dict) -> bool:
        return self.client.messages.batches.retrieve(entry["id"]).processing_status == "ended"

    def results(self, entry: dict) -> list[BatchItem]:
        out = []
        for item in self.client.messages.batches.results(entry["id"]):
            r = item.result
            if r.type == "succeeded":
                text, usage = anthropic_reply(r.message)
                out.append(BatchItem(item.custom_id, True, text, usage))
                continue
            err = getattr(getattr(getattr(r, "error", None), "error", None), "type", None)
            out.append(BatchItem(item.custom_id, False, error=str(err or r.type),
                                 message=f"batch result {r.type} ({err or r.type})"))
        return out


# -- OpenAI -----------------------------------------------------------------------------------

def no_batch_api(provider: Provider, detail: str) -> NoBatchAPI:
    return NoBatchAPI(
        f"batch=True: the server at base_url={provider.url} has no OpenAI Batch API ({detail}). "
        f"Local servers (Ollama, vLLM, LM Studio) have none: leave batch off (batch=False, "
        f"requests run concurrently), or point base_url at OpenAI (https://api.openai.com/v1) "
        f"or another server with /v1/files and /v1/batches.")


class OpenAIBatches(_Keys):
    """The OpenAI Batch API through an ``openai.OpenAI`` client (OpenAI's own or any server
    with ``/files`` and ``/batches``)."""

    name = "OpenAI Batch API"

    def __init__(self, client, provider: Provider):
        self.client, self.provider = client, provider
        self.schema_ok = True                 # until an item is refused for its schema

    def line(self, custom_id: str, params: dict, schema: dict | None) -> dict:
        body = openai_body(params, schema if self.schema_ok else None,
                           self.provider.base_url is None)
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}

    def jsonl(self, requests: list[tuple[str, dict, dict | None]]) -> bytes:
        return "".join(json.dumps(self.line(*r)) + "\n" for r in requests).encode("utf-8")

    def _endpoint(self, what: str, fn):
        """A call to a batch endpoint; a 404/405 or a reply that is not the API's is
        :class:`NoBatchAPI` (other errors go to the engine's retries)."""
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001  (only the SDK's status errors are looked at)
            if _status(e) in (404, 405):
                raise no_batch_api(self.provider, f"{what} answered HTTP {_status(e)}") from None
            raise
        if not isinstance(getattr(out, "id", None), str):
            raise no_batch_api(self.provider, f"{what} did not answer like the API")
        return out

    def submit(self, requests: list[tuple[str, dict, dict | None]]) -> dict:
        data = self.jsonl(requests)
        f = self._endpoint("POST /files", lambda: self.client.files.create(
            file=("batch_requests.jsonl", data, "application/jsonl"), purpose="batch"))
        b = self._endpoint("POST /batches", lambda: self.client.batches.create(
            input_file_id=f.id, endpoint=ENDPOINT, completion_window=COMPLETION_WINDOW))
        return {"id": b.id, "input_file_id": f.id, "schema": self.schema_ok}

    def ended(self, entry: dict) -> bool:
        b = self.client.batches.retrieve(entry["id"])
        entry["openai_status"] = b.status
        if b.status not in OPENAI_ENDED:
            return False
        entry["output_file_id"], entry["error_file_id"] = b.output_file_id, b.error_file_id
        errors = getattr(getattr(b, "errors", None), "data", None) or []
        entry["batch_errors"] = [f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}"
                                 for e in errors][:5]
        return True

    def _lines(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self.client.files.content(file_id).text
        return [json.loads(s) for s in text.splitlines() if s.strip()]

    def results(self, entry: dict) -> list[BatchItem]:
        out, seen = [], set()
        for line in self._lines(entry.get("output_file_id")) + self._lines(entry.get("error_file_id")):
            cid = line.get("custom_id")
            if cid is None or cid in seen:
                continue
            seen.add(cid)
            out.append(self._item(cid, line, bool(entry.get("schema"))))
        if entry.get("openai_status") == "failed":
            why = "; ".join(entry.get("batch_errors") or []) or "no reason given"
            out += [BatchItem(cid, False, error="batch_failed", message=f"batch failed: {why}")
                    for cid in entry["passages"] if cid not in seen]
        else:                              # expired or cancelled: not run, so asked again
            status = entry.get("openai_status") or "expired"
            out += [BatchItem(cid, False, error=status, message=f"no result (batch {status})")
                    for cid in entry["passages"] if cid not in seen]
        return out

    def _item(self, cid: str, line: dict, with_schema: bool) -> BatchItem:
        response = line.get("response") or {}
        status = response.get("status_code")
        body = response.get("body") or {}
        if status == 200 and not line.get("error"):
            text, usage = openai_reply(body)
            return BatchItem(cid, True, text, usage)
        err = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        code = str(err.get("code") or err.get("type") or status or "error")
        message = str(err.get("message") or "")
        if status in (400, 422) and _SCHEMA_WORDS.search(message) and with_schema:
            if self.schema_ok:
                    log.warning("%s refused response_format json_schema in a batch (%s): asking "
                            "again without it and reading replies tolerantly", self.provider.url,
                            message[:200])
            self.schema_ok = False
            code = "schema"
        elif status in (429, 500, 502, 503, 504):
            code = str(status)
        return BatchItem(cid, False, error=code,
                         message=f"batch request HTTP {status} {code}: {message}".strip())


def batches_for(client, provider: Provider, timeout_s: float):
    """The batch interface for ``provider``: ``client`` if it already is one, the SDK client
    given, else one made from the key (its own retries off: the engine retries)."""
    if hasattr(client, "submit"):
        return client
    if client is not None:
        provider = sdk_provider(client, provider)
    if not provider.openai:
        return AnthropicBatches(client_for(client, timeout_s))
    if client is None:
        import openai
        client = openai.OpenAI(api_key=openai_key(), base_url=provider.url, max_retries=0,
                               timeout=timeout_s)
    elif getattr(client, "max_retries", 0) != 0 and hasattr(client, "with_options"):
        client = client.with_options(max_retries=0)
    return OpenAIBatches(client, provider)
