"""A fake Anthropic Messages API on 127.0.0.1 for tests and benchmarks (no network, no key).

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

``server.count("messages")`` counts POST /v1/messages requests; ``server.log`` keeps every
request (route, time, user text, whether it carried an Authorization header). Batches end after
``batch_polls`` retrieve calls; rules apply to their items too (a status becomes an ``errored``
result). Run standalone (``python tests/fake_anthropic.py --latency 0.1``) it prints ``URL <url>``
and serves until killed; ``GET /_fake/stats`` returns the counts as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}


@dataclass
class Rule:
    status: int | None = None        # answer with this HTTP status (an error body)
    reply: str | None = None         # "prose" | "count" | "empty" | "fenced" | "wrapped" | literal text
    delay: float = 0.0               # extra seconds before replying
    drop: bool = False               # close the connection without a reply
    retry_after: str | None = None   # retry-after header value with the status
    match: str | None = None         # applies only to requests whose user text contains this
    times: int = 1                   # how many matching requests it applies to (-1: all)


def _now_iso(offset_s: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


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


def requested_n(text: str) -> int:
    m = re.search(r"exactly (\d+)", text)
    return int(m.group(1)) if m else 2


class FakeAnthropic:
    def __init__(self, latency: float = 0.0, batch_polls: int = 2):
        self.latency = latency
        self.batch_polls = batch_polls
        self.rules: list[Rule] = []
        self.counts: Counter = Counter()
        self.log: list[dict] = []
        self.batches: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
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
        qs = questions_for(text, n)
        kind = rule.reply if rule else None
        if kind is None:
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
    def _batch_json(self, b: dict, base: str) -> dict:
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
                "results_url": f"{base}/v1/messages/batches/{b['id']}/results" if ended else None}

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

    # -- server ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> "FakeAnthropic":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True   # headers and body go out at once (no 40 ms stalls)

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload, headers: dict | None = None,
                      ctype: str = "application/json"):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", "req_" + uuid.uuid4().hex[:12])
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw or b"{}")

            def do_POST(self):
                path = self.path.split("?")[0]
                body = self._body()
                auth = bool(self.headers.get("authorization") or self.headers.get("x-api-key"))
                if path == "/v1/messages":
                    text = _user_text(body)
                    with fake._lock:
                        fake.counts["messages"] += 1
                        fake.log.append({"route": "messages", "time": time.monotonic(),
                                         "text": text, "auth": auth})
                    rule = fake._take_rule(text)
                    time.sleep(fake.latency + (rule.delay if rule else 0.0))
                    if rule and rule.drop:
                        self.close_connection = True
                        return
                    if rule and rule.status:
                        headers = {"retry-after": rule.retry_after} if rule.retry_after else {}
                        return self._send(rule.status, fake.error_body(rule.status), headers)
                    return self._send(200, fake.message_for(body, rule))
                if path == "/v1/messages/batches":
                    bid = "msgbatch_" + uuid.uuid4().hex[:20]
                    b = {"id": bid, "requests": list(body.get("requests", [])), "polls": 0,
                         "created_at": _now_iso(), "expires_at": _now_iso(86400), "results": None}
                    with fake._lock:
                        fake.counts["batches.create"] += 1
                        fake.log.append({"route": "batches.create", "time": time.monotonic(),
                                         "text": "", "auth": auth, "size": len(b["requests"])})
                        fake.batches[bid] = b
                    return self._send(200, fake._batch_json(b, fake.url))
                if path == "/_fake/reset":
                    fake.reset()
                    return self._send(200, {"ok": True})
                return self._send(404, fake.error_body(404))

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/_fake/stats":
                    with fake._lock:
                        return self._send(200, dict(fake.counts))
                m = re.fullmatch(r"/v1/messages/batches/([\w-]+)(/results)?", path)
                if not m or m.group(1) not in fake.batches:
                    return self._send(404, fake.error_body(404))
                b = fake.batches[m.group(1)]
                if m.group(2):
                    with fake._lock:
                        fake.counts["batches.results"] += 1
                    if b["polls"] < fake.batch_polls:
                        return self._send(404, fake.error_body(404))
                    if b["results"] is None:
                        b["results"] = fake._batch_results(b)
                    data = "".join(json.dumps(r) + "\n" for r in b["results"]).encode()
                    return self._send(200, data, ctype="application/binary")
                with fake._lock:
                    fake.counts["batches.retrieve"] += 1
                    b["polls"] += 1
                if b["polls"] >= fake.batch_polls and b["results"] is None:
                    b["results"] = fake._batch_results(b)
                return self._send(200, fake._batch_json(b, fake.url))

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-anthropic")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeAnthropic":
        return self if self._server else self.start()

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
