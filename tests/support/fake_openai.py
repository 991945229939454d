"""A fake OpenAI-compatible chat completions server on 127.0.0.1 for tests and benchmarks (no
network, no key): the loopback server of ``fake_anthropic`` speaking ``POST <prefix>/chat/completions``
(``prefix`` ``/v1`` by default, as OpenAI, vLLM, LM Studio and Ollama serve it).

Replies are made like the Anthropic fake's (a JSON array of the questions a prompt asks for, a
prose answer otherwise), in the chat completion shape with ``usage.prompt_tokens`` /
``completion_tokens``. A request with ``response_format`` of type ``json_schema`` gets the
questions as ``{"questions": [...]}``, unless ``schema="refuse"`` (HTTP 400, as a server that
does not support structured output answers) or ``schema="ignore"`` (the plain reply, as a
server that silently drops the field). The same rules apply (``add(status=429,
retry_after="0.2")``, ``add(drop=True)``, ``add(reply="prose")``, ``add(status=400,
echo_auth=True)``, ...); errors have OpenAI's ``{"error": {"message", "type", "code"}}`` body.
A path outside the prefix gets a plain-text 404 (as Ollama answers one), one under ``/site`` a
web page with HTTP 200. ``server.bodies`` keeps every request body. Standalone: ``python tests/support/fake_openai.py
--latency 0.1`` prints ``URL <base url>`` (the prefix included).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.fake_anthropic import FakeAnthropic, _user_text, questions_for, requested_n  # noqa: E402

_ERRORS = {400: "invalid_request_error", 401: "invalid_api_key", 403: "permission_denied",
           404: "model_not_found", 429: "rate_limit_exceeded", 500: "server_error"}


class FakeOpenAI(FakeAnthropic):
    def __init__(self, latency: float = 0.0, schema: str = "accept", prefix: str = "/v1"):
        super().__init__(latency=latency)
        self.schema, self.prefix = schema, prefix
        self.bodies: list[dict] = []

    @property
    def base_url(self) -> str:
        return self.url + self.prefix

    @staticmethod
    def error_body(status: int, message: str = "") -> dict:
        code = _ERRORS.get(status, "server_error")
        return {"error": {"message": message or f"fake {code} ({status})",
                          "type": "invalid_request_error" if status < 500 else "server_error",
                          "param": None, "code": code}}

    def completion_for(self, body: dict, rule) -> dict:
        messages = body.get("messages", [])
        text = _user_text({"messages": [m for m in messages if m.get("role") == "user"]})
        system = " ".join(m.get("content", "") for m in messages if m.get("role") == "system")
        n = requested_n(text)
        qs = questions_for(text, n or 2)
        structured = (self.schema == "accept"
                      and (body.get("response_format") or {}).get("type") == "json_schema")
        kind = rule.reply if rule else None
        if kind is None and n is None:
            q = re.search(r"Question: (.*)", text)
            out = f"I would say this about {q.group(1) if q else 'that'}: it matters."
        elif kind is None:
            out = json.dumps({"questions": qs} if structured else qs)
        elif kind == "prose":
            out = "Here are some good questions about the passage, written as plain prose."
        elif kind == "fenced":
            out = "```json\n" + json.dumps(qs, indent=2) + "\n```"
        elif kind == "wrapped":
            out = "Sure! Here they are:\n" + json.dumps(qs) + "\nHope this helps."
        elif kind == "count":
            out = json.dumps(qs + ["One question too many?"])
        else:
            out = kind
        return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model", "fake"),
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": out}}],
                "usage": {"prompt_tokens": max(1, (len(text) + len(system)) // 4),
                          "completion_tokens": max(1, len(out) // 4),
                          "total_tokens": max(1, (len(text) + len(system)) // 4)
                          + max(1, len(out) // 4)}}

    async def _dispatch(self, method: str, path: str, headers: dict, raw: bytes):
        import asyncio
        path = path.split("?")[0]
        auth = bool(headers.get("authorization"))
        if method == "POST" and path == self.prefix + "/chat/completions":
            body = json.loads(raw or b"{}")
            text = _user_text({"messages": [m for m in body.get("messages", [])
                                            if m.get("role") == "user"]})
            with self._lock:
                self.counts["messages"] += 1
                self.bodies.append(body)
                self.log.append({"route": "messages", "time": time.monotonic(), "text": text,
                                 "auth": auth, "schema": "response_format" in body})
            rule = self._take_rule(text)
            await asyncio.sleep(self.latency + (rule.delay if rule else 0.0))
            if rule and rule.drop:
                return None
            if self.schema == "refuse" and "response_format" in body:
                return 400, {}, self.error_body(
                    400, "response_format json_schema is not supported by this server")
            if rule and rule.status:
                extra = {"retry-after": rule.retry_after} if rule.retry_after else {}
                err = self.error_body(rule.status)
                if rule.echo_auth:
                    err["error"]["message"] += f" (sent {headers.get('authorization')})"
                return rule.status, extra, err
            return 200, {}, self.completion_for(body, rule)
        if method == "POST" and path == "/_fake/reset":
            self.reset()
            return 200, {}, {"ok": True}
        if method == "GET" and path == "/_fake/stats":
            with self._lock:
                return 200, {}, dict(self.counts)
        if path.startswith("/site"):          # a web site, not an API
            return 200, {"content-type": "text/html"}, b"<html>a web page, not an API</html>"
        return 404, {"content-type": "text/plain"}, b"404 page not found"   # as Ollama says it


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--schema", choices=["accept", "refuse", "ignore"], default="accept")
    args = ap.parse_args(argv)
    server = FakeOpenAI(latency=args.latency, schema=args.schema).start(args.port)
    print(f"URL {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
