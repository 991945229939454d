"""backend="tinker" (helpers/training/tinker_*.py): the loop against a fake client object (batches,
weights from our masks, schedule, checkpoints, resume, sampling, tokens and cost, the PEFT folder
our loaders read) and the real SDK against a loopback server (models list, adapter download)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers.models import get_profile
from helpers.training import masks, tinker_adapter, tinker_backend, tinker_models
from helpers.training.config import TrainConfig, resolve_config
from helpers.training.runrecord import RunRecord
from helpers.training.tinker_models import TinkerModelError, TinkerUnavailableError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.fake_tinker import (  # noqa: E402
    FakeRest,
    FakeService,
    TinkerLoopback,
    standin_shapes,
    tinker_adapter_files,
)

tinker = pytest.importorskip("tinker", reason='the Tinker SDK is not installed (pip install ".[tinker]")')
PINNED = tinker_models.SDK_VERSION

CONVERSATIONS = [
    [{"role": "user", "content": f"Question number {i}?"},
     {"role": "assistant", "content": f"Answer number {i} is about Mariya."}]
    for i in range(6)
]


@pytest.fixture
def rows(tokenizer_for):
    tok = tokenizer_for("qwen3")
    return masks.tokenize_dataset(tok, CONVERSATIONS, max_seq_length=256, model="tiny-qwen3")[0]


def fakes(tmp_path, tokenizer, standin, **kw):
    service = FakeService(tokenizer, **kw)
    rest = FakeRest(tmp_path / "remote", lambda d: tinker_adapter_files(d, standin_shapes(standin)))
    return service, rest


CFG = dict(epochs=2, batch_size=2, grad_accum=1, learning_rate=1e-4, warmup_ratio=0.25,
           lr_scheduler="linear", lora_r=4, seed=3)


def test_training_loop_weights_schedule_cost_and_peft_folder(tmp_path, rows, tokenizer_for, random_standin):
    tok = tokenizer_for("qwen3")
    service, rest = fakes(tmp_path, tok, random_standin("qwen3"))
    record = RunRecord(tmp_path / "run", name="t")
    cfg = TrainConfig(**CFG)
    seen_history = []
    result = tinker_backend.train(rows, cfg, tmp_path / "run", model="qwen3-32b", tokenizer=tok,
                                  client=service, rest=rest, record=record,
                                  on_log=lambda h: seen_history.append(len(h)))
    # 6 rows, 2 per step, 2 epochs: 6 steps; LoRA asked with our rank and seed on Tinker's model
    assert result.steps == 6 and len(service.batches) == 6 and len(service.lrs) == 6
    assert service.created == [dict(base_model="Qwen/Qwen3-32B", rank=4, seed=3, train_mlp=True,
                                    train_attn=True, train_unembed=False)]
    # weights are our labels shifted by one: 1 exactly where the next token is trained
    for batch in service.batches:
        for d in batch:
            ids = d.model_input.to_ints() + [d.loss_fn_inputs["target_tokens"].tolist()[-1]]
            row = next(r for r in rows if r["input_ids"] == ids)
            assert d.loss_fn_inputs["target_tokens"].tolist() == row["input_ids"][1:]
            assert d.loss_fn_inputs["weights"].tolist() == [float(x != -100) for x in row["labels"][1:]]
    # every row once per epoch
    def seen(batches):
        return sorted(tuple(d.model_input.to_ints()) for b in batches for d in b)
    assert seen(service.batches[:3]) == seen(service.batches[3:]) == sorted(tuple(r["input_ids"][:-1]) for r in rows)
    # warm-up over 2 steps (25% of 6, rounded up), then linear decay to 0
    assert service.lrs[:2] == pytest.approx([5e-5, 1e-4])
    assert service.lrs[2:] == pytest.approx([1e-4 * (1 - k / 4) for k in range(4)])
    # AdamW as the local trainer runs it, not Tinker's defaults
    a = service.adam
    assert (a.beta1, a.beta2, a.eps, a.grad_clip_norm, a.weight_decay) == (0.9, 0.999, 1e-8, 1.0, 0.0)
    # the loss the fake gives: level 2/(1+step) per trained token, mean per trained token
    assert [h["loss"] for h in result.loss_history] == pytest.approx([2.0 / (1 + s) for s in range(6)], abs=1e-5)
    assert seen_history == [1, 2, 3, 4, 5, 6]
    # a checkpoint per epoch (3 steps), recorded for resume
    assert sorted(service.saved.values()) == [3, 6]
    state = json.loads((tmp_path / "run" / tinker_backend.STATE_FILE).read_text())
    assert state["step"] == 6 and len(state["checkpoints"]) == 2
    # tokens sent: every input token of every step
    sent = sum(d.model_input.length for b in service.batches for d in b)
    assert result.trained_tokens == sent > 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["train"]["backend"] == "tinker" and run["train"]["steps"] == 6
    assert run["tinker"]["tokens"]["train"] == sent
    assert run["tinker"]["usd"] is None and "not known to the code" in run["tinker"]["price"]
    assert len(run["loss_history"]) == 6
    # the adapter: a PEFT folder (config + weights + tokenizer) that PEFT loads onto the base
    adapter = tmp_path / "run" / "adapter"
    conf = json.loads((adapter / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["base_model_name_or_path"] == "Qwen/Qwen3-32B"
    assert conf["target_modules"] == ["q_proj", "v_proj"] and conf["r"] == 4
    assert (adapter / "tokenizer_config.json").is_file()


def test_converted_adapter_loads_in_peft_and_changes_the_model(tmp_path, random_standin):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    standin = random_standin("qwen3")
    raw = tinker_adapter_files(tmp_path / "raw", standin_shapes(standin))
    out = tinker_adapter.to_peft(raw, tmp_path / "peft", base_model="Qwen/Qwen3-32B", family="qwen3")
    base = AutoModelForCausalLM.from_pretrained(standin)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, str(out))
        after = tuned(ids).logits
    from safetensors.torch import load_file
    sd = tuned.state_dict()
    for k, v in load_file(str(raw / "adapter_model.safetensors")).items():
        peft_key = k.replace(".weight", ".default.weight")
        assert torch.equal(sd[peft_key], v), k     # every tensor landed where Tinker trained it
    assert not torch.allclose(before, after)


def test_moe_experts_are_refused_or_split_per_expert_for_vllm(tmp_path):
    raw = tinker_adapter_files(tmp_path / "raw", {"model.layers.0.self_attn.q_proj": (8, 8)},
                               experts={"model.layers.0.mlp.experts.w1": (3, 6, 8),
                                        "model.layers.0.mlp.experts.w2": (3, 8, 6)})
    with pytest.raises(tinker_adapter.AdapterConversionError, match="Train attention only"):
        tinker_adapter.to_peft(raw, tmp_path / "refused", base_model="Qwen/Qwen3-30B-A3B")
    out = tinker_adapter.to_peft(raw, tmp_path / "peft", base_model="Qwen/Qwen3-30B-A3B", split_experts=True)
    from safetensors.torch import load_file
    w = load_file(str(out / "adapter_model.safetensors"))
    src = load_file(str(raw / "adapter_model.safetensors"))
    for i in range(3):
        a = w[f"base_model.model.model.layers.0.mlp.experts.{i}.gate_proj.lora_A.weight"]
        assert a.shape == (4, 8) and (a == src["base_model.model.model.layers.0.mlp.experts.w1.lora_A.weight"][0]).all()
        b = w[f"base_model.model.model.layers.0.mlp.experts.{i}.down_proj.lora_B.weight"]
        assert (b == src["base_model.model.model.layers.0.mlp.experts.w2.lora_B.weight"][i]).all()
    conf = json.loads((out / "adapter_config.json").read_text())
    assert conf["target_modules"] == ["down_proj", "gate_proj", "q_proj"]


def test_gpt_oss_experts_and_a_bad_folder_are_refused(tmp_path):
    raw = tinker_adapter_files(tmp_path / "raw", {"model.layers.0.attn.q_proj": (8, 8)},
                               experts={"model.layers.0.mlp.experts.w1": (2, 6, 8)})
    with pytest.raises(tinker_adapter.AdapterConversionError, match="train_mlp=False"):
        tinker_adapter.to_peft(raw, tmp_path / "peft", base_model="openai/gpt-oss-20b", split_experts=True)
    attn_only = tinker_adapter_files(tmp_path / "raw2", {"model.layers.0.attn.q_proj": (8, 8)})
    out = tinker_adapter.to_peft(attn_only, tmp_path / "peft2", base_model="openai/gpt-oss-20b")
    from safetensors.torch import load_file
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in load_file(
        str(out / "adapter_model.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(tinker_adapter.AdapterConversionError, match="adapter_config.json and adapter_model.safetensors"):
        tinker_adapter.to_peft(tmp_path / "empty", tmp_path / "x", base_model="Qwen/Qwen3-32B")


def test_crash_then_resume_from_the_last_checkpoint(tmp_path, rows, tokenizer_for, random_standin):
    tok = tokenizer_for("qwen3")
    cfg = TrainConfig(**CFG)
    service, rest = fakes(tmp_path, tok, random_standin("qwen3"), crash_at=5)   # dies in step 5
    with pytest.raises(ConnectionError):
        tinker_backend.train(rows, cfg, tmp_path / "run", model="qwen3-32b", client=service, rest=rest)
    state = json.loads((tmp_path / "run" / tinker_backend.STATE_FILE).read_text())
    assert state["step"] == 3                        # the epoch-1 checkpoint
    again = FakeService(tok)
    again.saved = dict(service.saved)                # the checkpoints live on Tinker
    result = tinker_backend.train(rows, cfg, tmp_path / "run", model="qwen3-32b", client=again, rest=rest)
    assert again.resumed_from == [state["path"]] and again.created == []
    assert len(again.batches) == 3 and result.resumed_from == state["path"]
    # the schedule goes on where it stopped; the history covers the whole run
    assert again.lrs == pytest.approx([1e-4 * (1 - k / 4) for k in (1, 2, 3)])
    assert [h["step"] for h in result.loss_history] == [1, 2, 3, 4, 5, 6]
    # other settings: no resume, a fresh LoRA
    third = FakeService(tok)
    third.saved = dict(again.saved)
    tinker_backend.train(rows, TrainConfig(**{**CFG, "learning_rate": 2e-4}), tmp_path / "run",
                         model="qwen3-32b", client=third, rest=rest, download=False)
    assert third.resumed_from == [] and len(third.created) == 1


def test_before_and_after_answers_and_their_tokens(tmp_path, rows, tokenizer_for, random_standin):
    tok = tokenizer_for("qwen3")
    service, rest = fakes(tmp_path, tok, random_standin("qwen3"))
    record = RunRecord(tmp_path / "run", name="t")
    before = tinker_backend.base_generate(service, "qwen3-32b", tok)
    assert before(["Who is Mariya Sha?"]) == ["I do not know."]
    result = tinker_backend.train(rows, TrainConfig(**CFG), tmp_path / "run", model="qwen3-32b",
                                  client=service, rest=rest, record=record, download=False)
    after = tinker_backend.trained_generate(result, tok, max_new_tokens=32)
    assert after(["Who is Mariya Sha?", "Where?"]) == ["Mariya Sha builds robots."] * 2
    trained, prompt, params = service.prompts[-1]
    assert trained and params.temperature == 0.0 and params.max_tokens == 32
    assert prompt == list(tok.apply_chat_template([{"role": "user", "content": "Where?"}], tokenize=True,
                                                  add_generation_prompt=True)["input_ids"])
    assert result.tokens.prefill == sum(len(p) for t, p, _ in service.prompts if t)
    assert result.tokens.sample == 2 * len(tok.encode("Mariya Sha builds robots.", add_special_tokens=False))
    summary = tinker_backend.record_cost(record, "Qwen/Qwen3-32B", result.tokens, prices=(1.0, 2.0, 3.0))
    t = result.tokens
    assert summary["usd"] == pytest.approx(round((t.prefill + 2 * t.sample + 3 * t.train) / 1e6, 4))
    assert json.loads((tmp_path / "run" / "run.json").read_text())["tinker"]["usd"] == summary["usd"]


# -- model mapping and the errors a user meets -----------------------------------------------

def test_model_mapping_and_refusals_name_the_nearest():
    assert tinker_models.tinker_base_model("qwen3-32b") == "Qwen/Qwen3-32B"
    assert tinker_models.tinker_base_model("qwen3-30b-a3b") == "Qwen/Qwen3-30B-A3B"
    assert tinker_models.tinker_base_model("gpt-oss-20b") == "openai/gpt-oss-20b"
    with pytest.raises(TinkerModelError) as e:
        tinker_models.tinker_base_model("qwen3-14b")
    assert "Tinker does not serve Qwen3-14B" in str(e.value) and "model='qwen3-32b'" in str(e.value)
    with pytest.raises(TinkerModelError) as e:
        tinker_models.tinker_base_model("qwen2.5-3b")
    assert "Tinker serves no Qwen2.5" in str(e.value) and "model='qwen3-30b-a3b'" in str(e.value)
    with pytest.raises(TinkerModelError, match="no Tinker base model"):
        tinker_models.tinker_base_model("tiny-qwen3")
    # the service's own list wins: a model it does not list today is refused, naming what it lists
    with pytest.raises(TinkerModelError, match="not in the models this Tinker service trains today: Qwen/Qwen3-32B"):
        tinker_models.tinker_base_model("gpt-oss-20b", ["Qwen/Qwen3-32B"])
    assert tinker_models.tinker_base_model("Qwen/Qwen3-8B", ["Qwen/Qwen3-8B"]) == "Qwen/Qwen3-8B"


def test_config_accepts_tinker_and_names_the_fixes(monkeypatch, tmp_path):
    profile = get_profile("qwen3-32b")
    monkeypatch.setattr(tinker_models, "_setting", lambda name: None)
    with pytest.raises(TinkerUnavailableError) as e:
        resolve_config(profile, backend="tinker")
    assert "TINKER_API_KEY" in str(e.value) and ".env" in str(e.value)
    monkeypatch.setattr(tinker_models, "sdk_installed", lambda: False)
    with pytest.raises(TinkerUnavailableError, match=r'pip install "\.\[tinker\]"'):
        resolve_config(profile, backend="tinker")
    monkeypatch.setattr(tinker_models, "sdk_installed", lambda: True)
    monkeypatch.setattr(tinker_models, "_setting", lambda name: "tml-x" if name == "TINKER_API_KEY" else None)
    assert resolve_config(profile, backend="tinker").backend == "tinker"
    with pytest.raises(ValueError, match="tinker"):
        resolve_config(profile, backend="tpu")


def test_an_unknown_scheduler_is_refused_before_any_cost(tmp_path, rows, tokenizer_for, random_standin):
    service, rest = fakes(tmp_path, tokenizer_for("qwen3"), random_standin("qwen3"))
    with pytest.raises(ValueError, match="linear, cosine or constant"):
        tinker_backend.train(rows, TrainConfig(**{**CFG, "lr_scheduler": "polynomial"}), tmp_path / "run",
                             model="qwen3-32b", client=service, rest=rest)
    assert service.created == [] and service.batches == []


@pytest.mark.parametrize("model, base", [("gpt-oss-20b", "openai/gpt-oss-20b"),
                                         ("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B")])
def test_mixtures_of_experts_train_attention_only_unless_told(tmp_path, rows, tokenizer_for, random_standin,
                                                              model, base):
    service, rest = fakes(tmp_path, tokenizer_for("qwen3"), random_standin("qwen3"))
    record = RunRecord(tmp_path / "run", name="t")
    tinker_backend.train(rows, TrainConfig(**{**CFG, "epochs": 1}), tmp_path / "run", model=model,
                         client=service, rest=rest, record=record, download=False)
    assert service.created[0]["train_mlp"] is False and service.created[0]["base_model"] == base
    assert record.data["tinker"]["lora"]["train_mlp"] is False
    with pytest.raises(ValueError, match="a mixture of experts"):
        tinker_backend.train(rows, TrainConfig(**CFG), tmp_path / "run2", model=model,
                             client=service, rest=rest, train_mlp=True)
    assert len(service.created) == 1
    assert not tinker_backend.is_moe("Qwen/Qwen3-32B") and tinker_backend.is_moe("Qwen/Qwen3-235B-A22B-Instruct-2507")


# -- the real SDK against a loopback server ----------------------------------------------------

real_sdk = pytest.mark.skipif(
    tinker.__version__ != PINNED,
    reason=f"the loopback server speaks tinker {PINNED}'s REST paths; installed: {tinker.__version__}")


def loopback(tmp_path, tok, standin, **kw):
    raw = tinker_adapter_files(tmp_path / "made", standin_shapes(standin))
    files = {p.name: p.read_bytes() for p in raw.iterdir()}
    reply = {True: tok.encode("Mariya Sha builds robots.", add_special_tokens=False),
             False: tok.encode("I do not know.", add_special_tokens=False)}
    return TinkerLoopback(files=files, reply=lambda trained: reply[trained], **kw), files


@real_sdk
def test_real_sdk_runs_the_whole_run_against_a_loopback_server(tmp_path, rows, tokenizer_for, random_standin):
    tok = tokenizer_for("qwen3")
    server, files = loopback(tmp_path, tok, random_standin("qwen3"))
    record = RunRecord(tmp_path / "run", name="t")
    with server as srv:
        service = tinker.ServiceClient(base_url=srv.url, api_key="tml-loopback")
        rest = tinker.RestClient(base_url=srv.url, api_key="tml-loopback")
        before = tinker_backend.base_generate(service, "qwen3-32b", tok)(["Who is Mariya Sha?"])
        result = tinker_backend.train(rows, TrainConfig(**CFG), tmp_path / "run", model="qwen3-32b",
                                      tokenizer=tok, client=service, rest=rest, record=record)
        after = tinker_backend.trained_generate(result, tok)(["Who is Mariya Sha?"])
    assert before == ["I do not know."] and after == ["Mariya Sha builds robots."]
    # what went over the wire: our LoRA settings, our tokens, our masks as weights, our schedule
    assert srv.created[0]["base_model"] == "Qwen/Qwen3-32B"
    assert srv.created[0]["lora_config"]["rank"] == 4 and srv.created[0]["lora_config"]["seed"] == 3
    assert len(srv.fwdbwd) == 6
    by_input = {tuple(r["input_ids"][:-1]): r for r in rows}
    for batch in srv.fwdbwd:
        for d in batch:
            row = by_input[tuple(d["tokens"])]
            assert d["target_tokens"] == row["input_ids"][1:]
            assert d["weights"] == [float(x != -100) for x in row["labels"][1:]]
    assert srv.lrs == pytest.approx([5e-5, 1e-4] + [1e-4 * (1 - k / 4) for k in range(4)])
    # the loss the server reported, per trained token
    assert [h["loss"] for h in result.loss_history] == pytest.approx([2.0 / (1 + s) for s in range(6)], abs=1e-5)
    # greedy sampling with the chat template's prompt
    assert srv.samples[-1]["trained"] and srv.samples[-1]["params"]["temperature"] == 0.0
    assert srv.samples[-1]["prompt"] == list(tok.apply_chat_template(
        [{"role": "user", "content": "Who is Mariya Sha?"}], tokenize=True, add_generation_prompt=True)["input_ids"])
    # the adapter came down byte for byte and became a PEFT folder
    for name, data in files.items():
        assert (tmp_path / "run" / "tinker_adapter" / name).read_bytes() == data
    conf = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert conf["target_modules"] == ["q_proj", "v_proj"] and conf["base_model_name_or_path"] == "Qwen/Qwen3-32B"
    # the key went with every API request; checkpoints per epoch; tokens in run.json
    assert all({k.lower(): v for k, v in h.items()}.get("x-api-key") == "tml-loopback"
               for _, p, h in srv.requests if p.startswith("/api/"))
    state = json.loads((tmp_path / "run" / tinker_backend.STATE_FILE).read_text())
    assert [c["step"] for c in state["checkpoints"]] == [3, 6]
    assert all(c["path"].startswith("tinker://") for c in state["checkpoints"])
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["tinker"]["sdk"] == PINNED and run["tinker"]["tokens"]["train"] == result.trained_tokens > 0


@real_sdk
def test_real_sdk_resumes_after_a_failed_step(tmp_path, rows, tokenizer_for, random_standin):
    tok = tokenizer_for("qwen3")
    server, _ = loopback(tmp_path, tok, random_standin("qwen3"), fail_fwdbwd_at=5)
    cfg = TrainConfig(**CFG)
    with server as srv:
        service = tinker.ServiceClient(base_url=srv.url, api_key="tml-loopback")
        rest = tinker.RestClient(base_url=srv.url, api_key="tml-loopback")
        with pytest.raises(tinker.RequestFailedError, match="worker was lost"):
            tinker_backend.train(rows, cfg, tmp_path / "run", model="qwen3-32b", client=service, rest=rest)
        saved = json.loads((tmp_path / "run" / tinker_backend.STATE_FILE).read_text())
        assert saved["step"] == 3
        again = tinker.ServiceClient(base_url=srv.url, api_key="tml-loopback")
        result = tinker_backend.train(rows, cfg, tmp_path / "run", model="qwen3-32b", client=again, rest=rest)
    assert srv.loaded == [saved["path"]] and len(srv.created) == 1    # loaded with its optimizer, not made anew
    assert result.resumed_from == saved["path"] and len(srv.fwdbwd) == 5 + 3
    assert srv.lrs[-3:] == pytest.approx([1e-4 * (1 - k / 4) for k in (1, 2, 3)])
    # the server's loss goes on from step 3, and the history covers the whole run
    assert [h["loss"] for h in result.loss_history] == pytest.approx([2.0 / (1 + s) for s in range(6)], abs=1e-5)


@real_sdk
def test_real_sdk_models_list_refuses_what_the_service_does_not_train(tmp_path):
    with TinkerLoopback(models=["Qwen/Qwen3-32B", "openai/gpt-oss-20b"]) as srv:
        rest = tinker.RestClient(base_url=srv.url, api_key="tml-loopback")
        listed = tinker_models.server_models(rest)
        assert listed == ["Qwen/Qwen3-32B", "openai/gpt-oss-20b"]
        with pytest.raises(TinkerModelError, match="not in the models this Tinker service trains today"):
            tinker_backend.train([{"input_ids": [1, 2], "labels": [1, 2]}], TrainConfig(), tmp_path,
                                 model="qwen3-30b-a3b", client=object(), rest=rest)
