"""The fake OpenAI-compatible server (tests/support/fake_openai.py) with the Batch API's
endpoints, as the pinned openai SDK (``SDK_VERSION``, read in ``resources/files.py`` and
``resources/batches.py``) calls them:

- ``POST <prefix>/files`` (multipart: ``purpose`` and ``file``) -> a file object;
- ``GET <prefix>/files/<id>/content`` -> the file's bytes;
- ``POST <prefix>/batches`` (``input_file_id``, ``endpoint``, ``completion_window``) -> a batch
  (``status`` "validating");
- ``GET <prefix>/batches/<id>`` -> the batch: "in_progress" until it has been polled
  ``batch_polls`` times, then ``batch_end`` ("completed", or "expired"/"cancelled"/"failed"),
  with ``output_file_id`` (lines ``{"id", "custom_id", "response": {"status_code": 200,
  "request_id", "body": <chat completion>}, "error": null}``) and ``error_file_id`` (the same
  shape with the error status and an ``{"error": ...}`` body).

Each request line is answered like a live chat completion, so the fake's rules apply to it
(``add(status=500, match=...)``, ``add(reply="prose")``, ...); ``expire=n`` leaves the last n
requests of an expired batch without a result, as OpenAI does. A server made without batches is
plain :class:`FakeOpenAI` (404 on these paths, as Ollama, vLLM and LM Studio answer).
``uploads`` keeps every uploaded file's parsed JSONL lines."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import time
import uuid

from tests.support.fake_anthropic import _user_text
from tests.support.fake_openai import FakeOpenAI

SDK_VERSION = "3.57.0"          # the openai SDK whose calls these endpoints answer (locks/cpu.txt)


class FakeOpenAIBatches(FakeOpenAI):
    def __init__(self, *, batch_polls: int = 2, batch_end: str = "completed", expire: int = 0,
                 **kw):
        super().__init__(**kw)
        self.batch_polls, self.batch_end, self.expire = batch_polls, batch_end, expire
        self.files: dict[str, dict] = {}
        self.obatches: dict[str, dict] = {}
        self.uploads: list[list[dict]] = []
        self._blk = threading.Lock()

    def _count(self, route: str, **extra) -> None:
        with self._lock:
            self.counts[route] += 1
            self.log.append({"route": route, "time": time.monotonic(), "text": "", **extra})

    def _file(self, data: bytes, filename: str, purpose: str) -> dict:
        fid = "file-" + uuid.uuid4().hex[:24]
        f = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
             "filename": filename, "purpose": purpose, "status": "processed", "data": data}
        self.files[fid] = f
        return f

    @staticmethod
    def _public(f: dict) -> dict:
        return {k: v for k, v in f.items() if k != "data"}

    def _upload(self, headers: dict, raw: bytes):
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"content-type: " + headers.get("content-type", "").encode() + b"\r\n\r\n" + raw)
        if not msg.is_multipart():
            return 400, {}, self.error_body(400, "expected multipart/form-data")
        fields, data, filename = {}, None, "upload"
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                data, filename = part.get_payload(decode=True), part.get_filename() or filename
            else:
                fields[name] = part.get_content().strip()
        if data is None or fields.get("purpose") != "batch":
            return 400, {}, self.error_body(400, "a file and purpose 'batch' are required")
        try:
            lines = [json.loads(s) for s in data.decode().splitlines() if s.strip()]
        except ValueError:
            return 400, {}, self.error_body(400, "the file is not JSONL")
        self.uploads.append(lines)
        self._count("files.create", size=len(lines))
        return 200, {}, self._public(self._file(data, filename, "batch"))

    def _create(self, raw: bytes):
        body = json.loads(raw or b"{}")
        f = self.files.get(body.get("input_file_id"))
        if f is None:
            return 400, {}, self.error_body(400, "input_file_id: no such file")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return 400, {}, self.error_body(400, f"unsupported endpoint/completion_window {body}")
        bid = "batch_" + uuid.uuid4().hex[:24]
        lines = [json.loads(s) for s in f["data"].decode().splitlines() if s.strip()]
        b = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
             "input_file_id": f["id"], "completion_window": "24h", "status": "validating",
             "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
             "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
             "polls": 0, "lines": lines}
        with self._blk:
            self.obatches[bid] = b
        self._count("batches.create", size=len(lines))
        return 200, {}, self._batch_json(b)

    def _batch_json(self, b: dict) -> dict:
        return {k: v for k, v in b.items() if k not in ("polls", "lines")}

    def _finish(self, b: dict) -> None:
        if self.batch_end == "failed":
            b["errors"] = {"object": "list", "data": [
                {"code": "invalid_request", "message": "fake: the batch failed validation",
                 "line": 1, "param": None}]}
            b["status"] = "failed"
            return
        lines = b["lines"]
        if self.batch_end in ("expired", "cancelled"):
            lines = lines[:max(0, len(lines) - self.expire)]
        out, err = [], []
        for line in lines:
            body = line["body"]
            text = _user_text({"messages": [m for m in body.get("messages", [])
                                            if m.get("role") == "user"]})
            rule = self._take_rule(text)
            rid = "batch_req_" + uuid.uuid4().hex[:16]
            if self.schema == "refuse" and "response_format" in body:
                status, rbody = 400, self.error_body(
                    400, "response_format json_schema is not supported by this server")
            elif rule and rule.status:
                status, rbody = rule.status, self.error_body(rule.status)
            else:
                status, rbody = 200, self.completion_for(body, rule)
            row = {"id": rid, "custom_id": line["custom_id"], "error": None,
                   "response": {"status_code": status, "request_id": "req_" + rid[10:],
                                "body": rbody}}
            (out if status == 200 else err).append(row)
        for rows, key in ((out, "output_file_id"), (err, "error_file_id")):
            if rows:
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                b[key] = self._file(data, f"{b['id']}_{key}.jsonl", "batch_output")["id"]
        b["request_counts"] = {"total": len(b["lines"]), "completed": len(out),
                               "failed": len(err)}
        b["status"] = self.batch_end

    def _retrieve(self, bid: str):
        with self._blk:
            b = self.obatches.get(bid)
            if b is None:
                return 404, {}, self.error_body(404, f"no batch {bid}")
            b["polls"] += 1
            if b["status"] in ("validating", "in_progress"):
                if b["polls"] >= self.batch_polls:
                    self._finish(b)
                else:
                    b["status"] = "in_progress"
        self._count("batches.retrieve")
        return 200, {}, self._batch_json(b)

    async def _dispatch(self, method: str, path: str, headers: dict, raw: bytes):
        path = path.split("?")[0]
        p = self.prefix
        if method == "POST" and path == p + "/files":
            return self._upload(headers, raw)
        m = re.fullmatch(re.escape(p) + r"/files/([\w-]+)/content", path)
        if method == "GET" and m:
            f = self.files.get(m.group(1))
            if f is None:
                return 404, {}, self.error_body(404, "no such file")
            self._count("files.content")
            return 200, {"content-type": "application/octet-stream"}, f["data"]
        if method == "POST" and path == p + "/batches":
            return self._create(raw)
        m = re.fullmatch(re.escape(p) + r"/batches/([\w-]+)", path)
        if method == "GET" and m:
            return self._retrieve(m.group(1))
        return await super()._dispatch(method, path, headers, raw)
