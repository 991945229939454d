"""A fake Anthropic Messages API on 127.0.0.1 for tests and benchmarks (no network, no key):
an asyncio HTTP/1.1 server (keep-alive) running on a background thread.

It speaks enough of the API for the ``anthropic`` SDK: ``POST /v1/messages`` and the Message
Batches endpoints (create, retrieve, results). A reply is a JSON array of questions made from the
passage in the request (the text between ``<passage>`` tags, or the whole user message), as many
as the prompt asks for ("exactly N"), with ``usage`` token counts (characters / 4).

Behaviour is scriptable per request with rules, consumed in order::

    server = FakeAnthropic(latency=0.05).start()
    server.add(status=429, retry_after="0.2", times=2)          # the next 2 requests get 429
    server.add(status=529, match="Passage 7")                  # one 529 for the request naming it
    server.add(reply="prose", times=3, match="Passage 9")       # malformed: no JSON array
    server.add(reply="count")                                   # malformed: one question too many
    server.add(delay=2.0)                                       # slow reply (client timeouts)
    server.add(drop=True)                                       # close the connection, no reply
    server.add(status=400, echo_auth=True)                      # the error quotes the key

``server.count("messages")`` counts POST /v1/messages requests; ``server.log`` keeps every
request (route, time, user text, whether it carried an Authorization header). A prompt that asks
for no number of questions (no "exactly N") gets a one-line prose answer. Batches end after
``batch_polls`` retrieve calls; rules apply to their items too (a status becomes an ``errored``
result). Run standalone (``python tests/support/fake_anthropic.py --latency 0.1``) it prints ``URL <url>``
and serves until killed; ``GET /_fake/stats`` returns the counts as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http import HTTPStatus

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}


@dataclass
class Rule:
    status: int | None = None        # answer with this HTTP status (an error body)
    reply: str | None = None         # prose|count|empty|fenced|wrapped, or the literal reply
    delay: float = 0.0               # extra seconds before replying
    drop: bool = False               # close the connection without a reply
    retry_after: str | None = None   # retry-after header value with the status
    echo_auth: bool = False          # the error message quotes the Authorization header
    match: str | None = None         # applies only to requests whose user text contains this
    times: int = 1                   # how many matching requests it applies to (-1: all)


def _now_iso(offset_s: float = 0.0) -> str:
    t = datetime.now(timezone.utc) + timedelta(seconds=offset_s)
    return t.isoformat().replace("+00:00", "Z")


def _user_text(body: dict) -> str:
    parts = []
    for m in body.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(b.get("text", "") for b in c if isinstance(b, dict))
    return "\n".join(parts)


def questions_for(text: str, n: int) -> list[str]:
    """The questions the fake model asks about ``text``: distinct, derived from the passage."""
    m = re.search(r"<passage>(.*?)</passage>", text, re.DOTALL)
    passage = (m.group(1) if m else text).strip()
    words = re.findall(r"[A-Za-z][A-Za-z'-]{3,}", passage)
    topic = " ".join(words[:3]) or "this"
    tag = hashlib.sha256(passage.encode()).hexdigest()[:6]
    return [f"What does the author say about {topic} (question {i + 1}, {tag})?" for i in range(n)]


def requested_n(text: str) -> int | None:
    """How many questions the prompt asks for ("exactly N"); None: it asks for an answer."""
    m = re.search(r"exactly (\d+)", text)
    return int(m.group(1)) if m else None


class FakeAnthropic:
    def __init__(self, latency: float = 0.0, batch_polls: int = 2):
        self.latency = latency
        self.batch_polls = batch_polls
        self.rules: list[Rule] = []
        self.counts: Counter = Counter()
        self.log: list[dict] = []
        self.batches: dict[str, dict] = {}
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aserver: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------
    def add(self, **kw) -> Rule:
        rule = Rule(**kw)
        with self._lock:
            self.rules.append(rule)
        return rule

    def count(self, route: str = "messages") -> int:
        with self._lock:
            return self.counts[route]

    def reset(self) -> None:
        with self._lock:
            self.rules.clear()
            self.counts.clear()
            self.log.clear()

    def _take_rule(self, text: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.times != 0 and (rule.match is None or rule.match in text):
                    if rule.times > 0:
                        rule.times -= 1
                    return rule
        return None

    # -- replies ---------------------------------------------------------------------------
    def message_for(self, body: dict, rule: Rule | None) -> dict:
        text = _user_text(body)
        n = requested_n(text)
        qs = questions_for(text, n or 2)
        kind = rule.reply if rule else None
        if kind is None and n is None:     # not a question request: a prose answer
            q = re.search(r"Question: (.*)", text)
            out = f"I would say this about {q.group(1) if q else 'that'}: it matters."
        elif kind is None:
            out = json.dumps(qs)
        elif kind == "prose":
            out = "Here are some good questions about the passage, written as plain prose."
        elif kind == "count":
            out = json.dumps(qs + ["One question too many?"])
        elif kind == "empty":
            out = json.dumps(qs[:-1] + [" "])
        elif kind == "fenced":
            out = "```json\n" + json.dumps(qs, indent=2) + "\n```"
        elif kind == "wrapped":
            out = "Sure! Here they are:\n" + json.dumps(qs) + "\nHope this helps."
        else:
            out = kind
        system = body.get("system") or ""
        if isinstance(system, list):
            system = " ".join(b.get("text", "") for b in system)
        return {
            "id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
            "model": body.get("model", "fake"), "content": [{"type": "text", "text": out}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": max(1, (len(text) + len(system)) // 4),
                      "output_tokens": max(1, len(out) // 4)},
        }

    @staticmethod
    def error_body(status: int) -> dict:
        etype = _ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": etype, "message": f"fake {etype} ({status})"},
                "request_id": "req_fake"}

    # -- batches ---------------------------------------------------------------------------
    def _batch_json(self, b: dict) -> dict:
        ended = b["polls"] >= self.batch_polls
        total = len(b["requests"])
        counts = {"processing": 0 if ended else total, "succeeded": 0, "errored": 0,
                  "canceled": 0, "expired": 0}
        if ended:
            if b["results"] is None:
                b["results"] = self._batch_results(b)
            for r in b["results"]:
                counts[r["result"]["type"]] += 1
        return {"id": b["id"], "type": "message_batch",
                "processing_status": "ended" if ended else "in_progress",
                "request_counts": counts, "created_at": b["created_at"],
                "expires_at": b["expires_at"], "ended_at": _now_iso() if ended else None,
                "archived_at": None, "cancel_initiated_at": None,
                "results_url": (f"{self.url}/v1/messages/batches/{b['id']}/results"
                                if ended else None)}

    def _batch_results(self, b: dict) -> list[dict]:
        out = []
        for req in b["requests"]:
            params = req["params"]
            rule = self._take_rule(_user_text(params))
            if rule and rule.status:
                err = self.error_body(rule.status)
                result = {"type": "errored", "error": err}
            else:
                result = {"type": "succeeded", "message": self.message_for(params, rule)}
            out.append({"custom_id": req["custom_id"], "result": result})
        return out

    # -- HTTP ------------------------------------------------------------------------------
    async def _dispatch(self, method: str, path: str, headers: dict, raw: bytes):
        """(status, headers, body bytes, content type), or None to drop the connection."""
        path = path.split("?")[0]
        auth = bool(headers.get("authorization") or headers.get("x-api-key"))
        if method == "POST" and path == "/v1/messages":
            body = json.loads(raw or b"{}")
            text = _user_text(body)
            with self._lock:
                self.counts["messages"] += 1
                self.log.append({"route": "messages", "time": time.monotonic(), "text": text,
                                 "auth": auth})
            rule = self._take_rule(text)
            await asyncio.sleep(self.latency + (rule.delay if rule else 0.0))
            if rule and rule.drop:
                return None
            if rule and rule.status:
                extra = {"retry-after": rule.retry_after} if rule.retry_after else {}
                body = self.error_body(rule.status)
                if rule.echo_auth:   # a careless server or proxy that quotes what it was sent
                    body["error"]["message"] += f" (sent {headers.get('authorization')})"
                return rule.status, extra, body
            return 200, {}, self.message_for(body, rule)
        if method == "POST" and path == "/v1/messages/batches":
            body = json.loads(raw or b"{}")
            bid = "msgbatch_" + uuid.uuid4().hex[:20]
            b = {"id": bid, "requests": list(body.get("requests", [])), "polls": 0,
                 "created_at": _now_iso(), "expires_at": _now_iso(86400), "results": None}
            with self._lock:
                self.counts["batches.create"] += 1
                self.log.append({"route": "batches.create", "time": time.monotonic(), "text": "",
                                 "auth": auth, "size": len(b["requests"])})
                self.batches[bid] = b
            return 200, {}, self._batch_json(b)
        if method == "POST" and path == "/_fake/reset":
            self.reset()
            return 200, {}, {"ok": True}
        if method == "GET" and path == "/_fake/stats":
            with self._lock:
                return 200, {}, dict(self.counts)
        m = re.fullmatch(r"/v1/messages/batches/([\w-]+)(/results)?", path)
        if method != "GET" or not m or m.group(1) not in self.batches:
            return 404, {}, self.error_body(404)
        b = self.batches[m.group(1)]
        if m.group(2):
            with self._lock:
                self.counts["batches.results"] += 1
            if b["polls"] < self.batch_polls:
                return 404, {}, self.error_body(404)
            self._batch_json(b)  # makes the results
            data = "".join(json.dumps(r) + "\n" for r in b["results"]).encode()
            return 200, {"content-type": "application/binary"}, data
        with self._lock:
            self.counts["batches.retrieve"] += 1
            b["polls"] += 1
        return 200, {}, self._batch_json(b)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                raw = await reader.readexactly(length) if length else b""
                out = await self._dispatch(method, target, headers, raw)
                if out is None:   # a dropped connection: no reply at all
                    break
                status, extra, payload = out
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                hdrs = {"content-type": "application/json", **extra,
                        "content-length": str(len(data)),
                        "request-id": "req_" + uuid.uuid4().hex[:12]}
                reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ \
                    else "Error"
                writer.write((f"HTTP/1.1 {status} {reason}\r\n"
                              + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
                              + "\r\n").encode("latin-1") + data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> "FakeAnthropic":
        """Serves on 127.0.0.1 (``port`` 0: a free one) from a background thread's event loop."""
        ready = threading.Event()

        async def serve():
            self._stopping = asyncio.Event()
            self._aserver = await asyncio.start_server(self._connection, "127.0.0.1", port,
                                                       backlog=512)
            self.port = self._aserver.sockets[0].getsockname()[1]
            ready.set()
            await self._stopping.wait()
            self._aserver.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self._loop = asyncio.new_event_loop()

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(serve())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-anthropic")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Anthropic server did not start")
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> "FakeAnthropic":
        return self if self._thread else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    server = FakeAnthropic(latency=args.latency).start(args.port)
    print(f"URL {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
