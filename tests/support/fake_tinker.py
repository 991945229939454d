"""Fakes for the Tinker SDK (tests of backend="tinker", no network, no key).

- :class:`FakeService` / :class:`FakeRest`: client objects with the methods our backend calls on
  ``tinker.ServiceClient`` / ``tinker.RestClient`` (SDK 0.38), returning futures. The training
  client records every batch, learning rate and checkpoint; its loss falls each step; it can be
  told to crash at a step (``crash_at``). Exported weights are written in Tinker's own adapter
  layout for a given set of target shapes and served as ``file://`` URLs.
- :class:`TinkerLoopback`: an HTTP server on 127.0.0.1 speaking the REST paths the real SDK 0.38
  calls for a whole LoRA run (training, checkpoints, sampling, the models list, the adapter
  export and its files), so the real SDK code runs against it.
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


def standin_shapes(path) -> dict[str, tuple[int, int]]:
    """q_proj/v_proj (out, in) of every layer of the stand-in at ``path``, by module name."""
    cfg = json.loads((Path(path) / "config.json").read_text())
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    shapes = {}
    for i in range(cfg["num_hidden_layers"]):
        shapes[f"model.layers.{i}.self_attn.q_proj"] = (cfg["num_attention_heads"] * hd, cfg["hidden_size"])
        shapes[f"model.layers.{i}.self_attn.v_proj"] = (cfg["num_key_value_heads"] * hd, cfg["hidden_size"])
    return shapes


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
        self.service.adam = params
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
    """``with TinkerLoopback(...) as srv:`` then ``tinker.ServiceClient(base_url=srv.url,
    api_key="tml-fake")`` / ``tinker.RestClient(...)``: the REST paths tinker 0.38 calls for a LoRA
    run (client config with JWT exchange off, session, create_model, get_info, forward_backward
    (protobuf in and out; ``fail_fwdbwd_at`` fails one), optim_step, save_weights, load_weights,
    save_weights_external, sampling sessions, asample (protobuf out), retrieve_future, heartbeat,
    telemetry) and the server
    capabilities and external weights URLs of a session-less RestClient. ``files``: name ->
    bytes of the exported adapter, served under /files/. The loss of a model falls with its
    optimizer steps (2 / (1 + step) per weighted token). ``reply``: (trained?) -> token ids a
    sampler answers. ``requests`` keeps (method, path, headers); ``fwdbwd`` the decoded batches
    (per datum: input tokens, target tokens, weights); ``lrs`` every optimizer learning rate."""

    def __init__(self, models=("Qwen/Qwen3-32B", "Qwen/Qwen3-30B-A3B", "openai/gpt-oss-20b"),
                 files: dict[str, bytes] | None = None, reply=lambda trained: [11, 12, 13],
                 fail_fwdbwd_at: int | None = None):
        self.models, self.files, self.reply = list(models), dict(files or {}), reply
        self.fail_fwdbwd_at = fail_fwdbwd_at      # the forward_backward call (1-based) whose result fails
        self.requests: list[tuple[str, str, dict]] = []
        self.fwdbwd: list[list[dict]] = []
        self.lrs: list[float] = []
        self.samples: list[dict] = []
        self.created: list[dict] = []
        self.loaded: list[str] = []
        self._lock = threading.Lock()
        self._n = 0
        self._futures: dict[str, tuple[str, object]] = {}
        self._steps: dict[str, int] = {}          # model id -> optimizer steps
        self._saved: dict[str, int] = {}          # tinker:// path -> steps at save
        self._sampling: dict[str, bool] = {}      # sampling session -> trained weights?
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _route(self, method: str):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = self.path.split("?", 1)[0]
                with outer._lock:
                    outer.requests.append((method, path, dict(self.headers)))
                    status, reply = outer.answer(method, path, dict(self.headers), body)
                if isinstance(reply, bytes):
                    data, ctype = reply, "application/x-protobuf" if path.startswith("/api/") else "application/octet-stream"
                else:
                    data, ctype = json.dumps(reply).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n}"

    def _future(self, kind: str, value, **extra) -> dict:
        rid = self._id("req")
        self._futures[rid] = (kind, value)
        return {"request_id": rid, **extra}

    def _fwdbwd(self, body: bytes):
        import numpy as np
        from tinker.proto import tinker_public_pb2 as pb
        req = pb.ForwardBackwardRequest()
        req.ParseFromString(body)
        level = 2.0 / (1 + self._steps.get(req.model_id, 0))
        batch, out_lp, offsets, loss = [], [], [0], 0.0
        for d in req.data:
            tokens = [t for c in d.model_input for t in np.frombuffer(c.encoded_text.tokens, dtype=np.int32).tolist()]
            target = np.frombuffer(d.loss_fn_inputs["target_tokens"].dense, dtype=np.int64).tolist()
            weights = np.frombuffer(d.loss_fn_inputs["weights"].dense, dtype=np.float32).tolist()
            batch.append({"tokens": tokens, "target_tokens": target, "weights": weights})
            lp = np.full(len(target), -level, dtype=np.float32)
            out_lp.append(lp)
            offsets.append(offsets[-1] + lp.nbytes)
            loss += level * sum(weights)
        self.fwdbwd.append(batch)
        out = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
        rec = out.loss_fn_outputs.add()
        rec.num_datums = len(batch)
        bt = rec.fields["logprobs"]
        bt.dtype = pb.DTYPE_FLOAT32
        bt.data = b"".join(a.tobytes() for a in out_lp)
        bt.offsets = np.asarray(offsets, dtype=np.int64).tobytes()
        out.metrics["loss:sum"] = loss
        return out.SerializeToString()

    def _sample(self, session: str, body: dict) -> bytes:
        import numpy as np
        from tinker.proto import tinker_public_pb2 as pb
        trained = self._sampling[session]
        prompt = [t for c in body["prompt"]["chunks"] for t in c["tokens"]]
        self.samples.append({"trained": trained, "prompt": prompt, "params": body.get("sampling_params", {})})
        out = pb.SampleResponse()
        seq = out.sequences.add()
        seq.stop_reason = pb.STOP_REASON_STOP
        seq.tokens = np.asarray(self.reply(trained), dtype=np.int32).tobytes()
        return out.SerializeToString()

    def answer(self, method: str, path: str, headers: dict, body: bytes):
        j = json.loads(body) if body and not path.endswith("/forward_backward") else {}
        if path == "/api/v1/client/config":
            return 200, {"pjwt_auth_enabled": False}   # the SDK sends the API key itself
        if path == "/api/v1/client/dynamic_config":
            return 200, {}
        if path == "/api/v1/telemetry":
            return 200, {"status": "accepted"}
        if path == "/api/v1/create_session":
            return 200, {"type": "create_session", "session_id": self._id("session")}
        if path == "/api/v1/session_heartbeat":
            return 200, {"type": "session_heartbeat"}
        if path == "/api/v1/get_server_capabilities":
            return 200, {"supported_models": [{"model_name": m, "trainable": True, "sampleable": True}
                                              for m in self.models]}
        if path == "/api/v1/create_model":
            model_id = f"{j['session_id']}:train:{j['model_seq_id']}"
            self.created.append(j)
            self._steps[model_id] = 0
            return 200, self._future("json", {"model_id": model_id, "type": "create_model"}, model_id=model_id)
        if path == "/api/v1/load_weights":
            model_id = f"{j['session_id']}:train:{j['model_seq_id']}"
            self.loaded.append(j["path"])
            self._steps[model_id] = self._saved[j["path"]]
            return 200, self._future("json", {"path": j["path"], "model_id": model_id, "type": "load_weights"})
        if path == "/api/v1/get_info":
            return 200, {"type": "get_info", "model_id": j["model_id"], "is_lora": True,
                         "model_data": {"model_name": self.models[0], "arch": "qwen3"}}
        if path == "/api/v1/forward_backward":
            out = self._fwdbwd(body)
            if len(self.fwdbwd) == self.fail_fwdbwd_at:
                return 200, self._future("json", {"error": "fake Tinker: the worker was lost", "category": "server"})
            return 200, self._future("proto", out)
        if path == "/api/v1/optim_step":
            self.lrs.append(j["adam_params"]["learning_rate"])
            self._steps[j["model_id"]] = self._steps.get(j["model_id"], 0) + 1
            return 200, self._future("json", {"metrics": {}})
        if path == "/api/v1/save_weights":
            run = j["model_id"].replace(":", "-")
            saved = f"tinker://{run}/weights/{j['path']}"
            self._saved[saved] = self._steps[j["model_id"]]
            return 200, self._future("json", {"path": saved, "type": "save_weights"})
        if path == "/api/v1/save_weights_external":
            run = j["model_id"].replace(":", "-")
            return 200, self._future("json", {"path": f"tinker://{run}/external_weights/{j['path']}",
                                              "type": "save_weights_external"})
        if path == "/api/v1/save_weights_for_sampler":
            session = self._id("sampler")
            self._sampling[session] = True
            return 200, self._future("json", {"sampling_session_id": session, "type": "save_weights_for_sampler"})
        if path == "/api/v1/create_sampling_session":
            session = self._id("sampler")
            self._sampling[session] = bool(j.get("model_path"))
            return 200, {"type": "create_sampling_session", "sampling_session_id": session}
        if path == "/api/v1/asample":
            return 200, self._future("proto", self._sample(j["sampling_session_id"], j),
                                     sample_sequence_ids=[self._id("seq") for _ in range(j.get("num_samples", 1))])
        if path == "/api/v1/retrieve_future":
            kind, value = self._futures[j["request_id"]]
            return 200, value
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
