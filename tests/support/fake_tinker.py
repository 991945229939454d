"""Fakes for the Tinker SDK (tests of backend="tinker", no network, no key).

- :class:`FakeService` / :class:`FakeRest`: client objects with the methods our backend calls on
  ``tinker.ServiceClient`` / ``tinker.RestClient`` (SDK 0.38), returning futures. The training
  client records every batch, learning rate and checkpoint; its loss falls each step; it can be
  told to crash at a step (``crash_at``). Exported weights are written in Tinker's own adapter
  layout for a given set of target shapes and served as ``file://`` URLs.
- :class:`TinkerLoopback`: an HTTP server on 127.0.0.1 speaking the REST paths the real SDK 0.38
  calls for a session-less ``RestClient`` (client config, dynamic config, server capabilities,
  external weights URLs, telemetry) and serving the exported files, so the real SDK code runs.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace


class Future:
    def __init__(self, value):
        self.value = value

    def result(self, timeout=None):
        return self.value


def tinker_adapter_files(folder: Path, shapes: dict[str, tuple[int, int]], rank: int = 4,
                         alpha: int = 32, seed: int = 0, experts: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """Write an adapter in Tinker's layout: ``base_model.model.<module>.lora_A/B.weight`` for each
    module in ``shapes`` ((out, in)), and 3-D ``(n, r, in)`` / ``(n, out, r)`` ones for each
    ``experts`` key (``...experts.w1.weight``: (n, out, in))."""
    import torch
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    w = {}
    for module, (out, inp) in shapes.items():
        w[f"base_model.model.{module}.lora_A.weight"] = torch.randn(rank, inp, generator=g) * 0.1
        w[f"base_model.model.{module}.lora_B.weight"] = torch.randn(out, rank, generator=g) * 0.1
    for key, (n, out, inp) in (experts or {}).items():
        w[f"base_model.model.{key}.lora_A.weight"] = torch.randn(1, rank, inp, generator=g)  # shared A
        w[f"base_model.model.{key}.lora_B.weight"] = torch.randn(n, out, rank, generator=g)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(w, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": alpha}))
    return folder


@dataclass
class FakeTraining:
    service: "FakeService"
    base_model: str
    rank: int
    step: int = 0
    kwargs: dict = field(default_factory=dict)

    def forward_backward(self, data, loss_fn):
        assert loss_fn == "cross_entropy"
        self.service.calls += 1
        if self.service.crash_at is not None and self.service.calls == self.service.crash_at:
            raise ConnectionError("fake Tinker dropped the connection")
        self.service.batches.append(data)
        level = 2.0 / (1 + self.step)
        outs = []
        for d in data:
            n = d.model_input.length
            outs.append({"logprobs": [-level] * n})
        return Future(SimpleNamespace(loss_fn_outputs=outs, metrics={}))

    def optim_step(self, params):
        self.service.lrs.append(params.learning_rate)
        self.step += 1
        return Future(SimpleNamespace(metrics={}))

    def save_state(self, name):
        path = f"tinker://run-{id(self.service) % 1000}/weights/{name}"
        self.service.saved[path] = self.step
        return Future(SimpleNamespace(path=path))

    def save_weights_external(self, name, ttl_seconds=None):
        path = f"tinker://run-{id(self.service) % 1000}/external_weights/{name}"
        self.service.exported.append(path)
        return Future(SimpleNamespace(path=path))

    def save_weights_and_get_sampling_client(self, name=None):
        return Future(FakeSampler(self.service, trained=True))


class FakeSampler:
    def __init__(self, service, trained: bool):
        self.service, self.trained = service, trained

    def sample(self, prompt, num_samples, sampling_params):
        self.service.prompts.append((self.trained, prompt.to_ints(), sampling_params))
        text = self.service.trained_reply if self.trained else self.service.base_reply
        tokens = self.service.tokenizer.encode(text, add_special_tokens=False)
        return Future(SimpleNamespace(sequences=[SimpleNamespace(tokens=tokens)]))


class FakeService:
    """A ServiceClient stand-in. ``crash_at``: the forward_backward call (1-based) that fails."""

    def __init__(self, tokenizer=None, crash_at: int | None = None):
        self.tokenizer = tokenizer
        self.crash_at = crash_at
        self.calls = 0
        self.batches: list = []
        self.lrs: list[float] = []
        self.saved: dict[str, int] = {}
        self.exported: list[str] = []
        self.prompts: list = []
        self.created: list[dict] = []
        self.resumed_from: list[str] = []
        self.base_reply, self.trained_reply = "I do not know.", "Mariya Sha builds robots."

    def create_lora_training_client(self, base_model, rank=32, seed=None, train_mlp=True,
                                    train_attn=True, train_unembed=True):
        self.created.append(dict(base_model=base_model, rank=rank, seed=seed, train_mlp=train_mlp,
                                 train_attn=train_attn, train_unembed=train_unembed))
        return Future(FakeTraining(self, base_model, rank))

    def create_training_client_from_state_with_optimizer(self, path):
        self.resumed_from.append(path)
        return Future(FakeTraining(self, "resumed", 0, step=self.saved[path]))

    def create_sampling_client(self, base_model=None, model_path=None):
        return Future(FakeSampler(self, trained=False))


class FakeRest:
    """A RestClient stand-in: ``models`` for the capabilities; exports written by ``make_files``."""

    def __init__(self, folder: Path, make_files, models=("Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B",
                                                         "openai/gpt-oss-20b")):
        self.folder, self.make_files, self.models = Path(folder), make_files, list(models)

    def get_server_capabilities(self):
        return Future(SimpleNamespace(supported_models=[
            SimpleNamespace(model_name=m, trainable=True) for m in self.models]))

    def get_external_weights_urls(self, path):
        src = self.make_files(self.folder / "export")
        urls = {p.name: p.resolve().as_uri() for p in sorted(src.iterdir())}
        return Future(SimpleNamespace(urls=urls, expires=datetime.now(timezone.utc) + timedelta(hours=1)))


# -- the loopback server the real SDK talks to ------------------------------------------------

class TinkerLoopback:
    """``with TinkerLoopback(files={...}) as srv:`` then ``tinker.RestClient(base_url=srv.url,
    api_key="tml-fake")``. ``models``: what get_server_capabilities lists; ``files``: name ->
    bytes served under /files/ and listed by the external weights URLs. ``requests`` keeps
    (method, path, headers) of every request."""

    def __init__(self, models=("Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B", "openai/gpt-oss-20b"),
                 files: dict[str, bytes] | None = None):
        self.models, self.files = list(models), dict(files or {})
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _reply(self, status: int, body: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self, method: str):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                path = self.path.split("?", 1)[0]
                outer.requests.append((method, path, dict(self.headers)))
                status, body = outer.answer(method, path)
                if isinstance(body, bytes):
                    self._reply(status, body, "application/octet-stream")
                else:
                    self._reply(status, json.dumps(body).encode())

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, method: str, path: str):
        if path == "/api/v1/client/config":
            # pjwt_auth_enabled False: the SDK sends the API key itself (no JWT exchange)
            return 200, {"pjwt_auth_enabled": False}
        if path == "/api/v1/client/dynamic_config":
            return 200, {}
        if path == "/api/v1/telemetry":
            return 200, {"status": "accepted"}
        if path == "/api/v1/get_server_capabilities":
            return 200, {"supported_models": [{"model_name": m, "trainable": True, "sampleable": True}
                                              for m in self.models]}
        if path.startswith("/api/v1/training_runs/") and path.endswith("/external_weights_urls"):
            expires = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
            return 200, {"urls": {name: f"{self.url}/files/{name}" for name in self.files},
                         "expires": expires}
        if path.startswith("/files/") and path[len("/files/"):] in self.files:
            return 200, self.files[path[len("/files/"):]]
        return 404, {"detail": f"fake Tinker has no {method} {path}"}

    def __enter__(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
