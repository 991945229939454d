"""Model loading on a CUDA machine (issue 10: a, b, c, e, i, j), checked on the CPU with fakes.

Each fake stands in for the library call ``helpers.runtime.loading.load_model`` makes, with the behaviour
read in the library's source (unsloth 2026.10.9 models/loader.py, loader_utils.py, mapper.py;
unsloth_zoo 2026.10.9 temporary_patches/gpt_oss.py, moe_utils_bnb4bit.py; transformers 5.17
modeling_utils.py, integrations/bitsandbytes.py, quantizers/quantizer_mxfp4.py). The weight
checks load a real tiny model from a folder whose safetensors file was tampered with.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from helpers import models
from helpers.pipeline.finetune import FineTuneRun
from helpers.runtime import loading, memory
from helpers.training import fallback
from helpers.training.config import resolve_config

DIST_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")


class FakeModel(torch.nn.Module):
    """What from_pretrained returns: parameters, a config naming the repo, maybe a device map."""

    def __init__(self, name: str, device_map: dict | None = None):
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.config = types.SimpleNamespace(_name_or_path=name)
        if device_map is not None:
            self.hf_device_map = device_map

    @property
    def name_or_path(self):
        return self.config._name_or_path


def fake_tokenizer():
    return types.SimpleNamespace(pad_token=None, eos_token="</s>")


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA machine as far as our code asks (models.cuda_available), one process."""
    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(loading, "_device_dtype", lambda: torch.bfloat16)
    monkeypatch.setattr(loading, "main_process_first", contextlib.nullcontext)
    return monkeypatch


@pytest.fixture
def fake_transformers(gpu):
    """AutoModelForCausalLM/AutoTokenizer.from_pretrained that record what they were asked."""
    import transformers
    calls = []

    def model_from_pretrained(source, **kwargs):
        calls.append((source, kwargs))
        model = FakeModel(source, kwargs.get("device_map"))
        info = {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(),
                "error_msgs": []}
        return (model, info) if kwargs.get("output_loading_info") else model

    gpu.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from_pretrained)
    gpu.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: fake_tokenizer())
    return calls


def install_fake_unsloth(monkeypatch, *, resolve=lambda name, four: name, spill=None,
                         load=None, callback=True):
    """A fake ``unsloth`` package whose FastLanguageModel.from_pretrained records its kwargs and
    returns a model named after ``resolve(name, load_in_4bit)`` (Unsloth's mapper), reported
    through ``on_model_resolved`` as unsloth 2026.10.9 loader.py does (``callback=False``: an
    Unsloth without that parameter). ``spill``: the ``hf_device_map`` the model comes back with;
    ``load(name)``: build the model another way."""
    calls = []

    def build(model_name, load_in_4bit):
        name = resolve(model_name, load_in_4bit)
        model = load(name) if load else FakeModel(name)
        if spill is not None:
            model.hf_device_map = spill
        return name, model

    if callback:
        def from_pretrained(model_name, max_seq_length=2048, dtype=None, load_in_4bit=True,
                            device_map="sequential", on_model_resolved=None, **kwargs):
            calls.append(dict(model_name=model_name, load_in_4bit=load_in_4bit,
                              device_map=device_map, **kwargs))
            name, model = build(model_name, load_in_4bit)
            if on_model_resolved is not None:
                on_model_resolved(name)
            return model, fake_tokenizer()
    else:
        def from_pretrained(model_name, max_seq_length=2048, dtype=None, load_in_4bit=True,
                            device_map="sequential", **kwargs):
            calls.append(dict(model_name=model_name, load_in_4bit=load_in_4bit,
                              device_map=device_map, **kwargs))
            return build(model_name, load_in_4bit)[1], fake_tokenizer()

    mod = types.ModuleType("unsloth")
    mod.FastLanguageModel = types.SimpleNamespace(from_pretrained=from_pretrained)
    monkeypatch.setitem(sys.modules, "unsloth", mod)
    monkeypatch.setattr(loading, "unsloth_available", lambda: True)
    return calls


# -- Unsloth's own mapper, read from its installed source without importing unsloth -----------
@functools.cache
def _unsloth_models_dir() -> Path | None:   # cached: the fakes replace sys.modules["unsloth"]
    spec = importlib.util.find_spec("unsloth")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def unsloth_resolves(name: str, load_in_4bit: bool) -> str:
    """What ``unsloth.models.loader_utils.get_model_name`` returns for ``name`` (its mapper
    branches and BAD_MAPPINGS, without the network probe), from the installed unsloth's files."""
    base = _unsloth_models_dir()
    spec = importlib.util.spec_from_file_location("_unsloth_mapper", base / "mapper.py")
    mapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mapper)   # plain data and build_mappers: no imports
    bad = {}
    for node in ast.parse((base / "loader_utils.py").read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "BAD_MAPPINGS":
            for k, v in zip(node.value.keys, node.value.values):
                bad[(k.func.value.value if isinstance(k, ast.Call) else k.value).lower()] = v.value
    low = name.lower()
    new = None
    if not load_in_4bit and low in mapper.INT_TO_FLOAT_MAPPER:
        new = mapper.INT_TO_FLOAT_MAPPER[low]
    elif not load_in_4bit and low in mapper.MAP_TO_UNSLOTH_16bit:
        new = mapper.MAP_TO_UNSLOTH_16bit[low]
    elif load_in_4bit and low in mapper.FLOAT_TO_INT_MAPPER:
        new = name if low.endswith("-bnb-4bit") else mapper.FLOAT_TO_INT_MAPPER[low]
    if new is not None and new.lower() in bad:
        new = bad[new.lower()]
    elif new is None and low in bad:
        new = bad[low]
    return new or name


_unsloth_models_dir()


# -- a. GPT-OSS 4-bit through transformers; missing/unexpected weights ---------------------------
def test_transformers_backend_refuses_gpt_oss_in_4_bit(fake_transformers):
    choice = models.choose("gpt-oss-20b", smoke=False)
    with pytest.raises(models.UnsupportedLoadError) as e:
        loading.load_model(choice, backend="transformers", load_in_4bit=True)
    msg = str(e.value)
    assert "load_in_4bit=True" in msg and "backend='unsloth'" in msg and "load_in_4bit=False" in msg
    assert "router.linear" in msg and "randomly initialised" in msg
    assert fake_transformers == []   # refused before anything is downloaded
    # 16 bits on transformers is the 16-bit repo (and Unsloth still gets its 4-bit one)
    assert choice.source(False, "transformers") == "openai/gpt-oss-20b"
    assert choice.source(True, "unsloth") == "unsloth/gpt-oss-20b-unsloth-bnb-4bit"
    p = choice.profile
    assert not p.loads_4bit("transformers") and p.loads_4bit("unsloth")
    assert p.vram_gb(True, "transformers") == p.vram_gb_16bit


def test_transformers_ladder_for_gpt_oss_has_no_4_bit_rung():
    choice = models.choose("gpt-oss-20b", smoke=False)
    cfg = resolve_config(choice.profile, load_in_4bit=False)
    kinds = [r.kind for r in fallback.ladder(choice, cfg, backend="transformers")]
    assert "load_in_4bit" not in kinds
    assert "load_in_4bit" in [r.kind for r in fallback.ladder(choice, cfg, backend="unsloth")]


def _tiny_checkpoint(folder: Path, tamper: bool) -> Path:
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         max_position_embeddings=64)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    if tamper:   # an expert-style layout the model class does not have, like the bnb GPT-OSS repo
        path = folder / "model.safetensors"
        state = load_file(path)
        state["model.layers.0.mlp.experts.0.down_proj.weight"] = state.pop(
            "model.layers.0.mlp.down_proj.weight")
        save_file(state, path, metadata={"format": "pt"})
    return folder


def test_missing_and_unexpected_weights_stop_the_transformers_load(gpu, tmp_path):
    import transformers
    gpu.setattr(models, "cuda_available", lambda: False)   # a real load, on this CPU
    gpu.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: fake_tokenizer())
    folder = _tiny_checkpoint(tmp_path / "tampered", tamper=True)
    choice = models.choose(str(folder), smoke=False)
    with pytest.raises(loading.WeightMismatchError) as e:
        loading.load_model(choice, backend="transformers")
    msg = str(e.value)
    assert "model.layers.0.mlp.down_proj.weight" in msg and "randomly initialised" in msg
    assert "model.layers.0.mlp.experts.0.down_proj.weight" in msg and "dropped" in msg
    assert loading.ALLOW_MISMATCH_ENV in msg and not memory.is_oom(e.value)
    gpu.setenv(loading.ALLOW_MISMATCH_ENV, "1")   # loud opt-out: loads, logs an error
    model, _ = loading.load_model(choice, backend="transformers")
    assert model._finetuning_source == str(folder)


def test_an_intact_checkpoint_with_tied_embeddings_loads(gpu, tmp_path):
    import transformers
    gpu.setattr(models, "cuda_available", lambda: False)
    gpu.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: fake_tokenizer())
    folder = _tiny_checkpoint(tmp_path / "intact", tamper=False)
    model, _ = loading.load_model(models.choose(str(folder), smoke=False), backend="transformers")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_missing_weights_stop_the_unsloth_load_too(gpu, tmp_path):
    """Unsloth calls transformers' from_pretrained itself; its loading info is checked as well."""
    from transformers import AutoModelForCausalLM
    folder = _tiny_checkpoint(tmp_path / "tampered", tamper=True)
    install_fake_unsloth(gpu, load=lambda name: AutoModelForCausalLM.from_pretrained(folder))
    with pytest.raises(loading.WeightMismatchError, match="down_proj"):
        loading.load_model(models.choose("qwen3-14b", smoke=False), backend="unsloth")


# -- b. the repo follows the run's load_in_4bit ----------------------------------------------------
def test_transformers_loads_the_16_bit_repo_when_the_run_is_16_bit(fake_transformers, tmp_path):
    run = FineTuneRun.start(model="qwen3-14b", smoke=False, output_dir=str(tmp_path / "run"),
                            backend="transformers", load_in_4bit=False)
    run.load_model()
    source, kwargs = fake_transformers[-1]
    assert source == "Qwen/Qwen3-14B" and "quantization_config" not in kwargs
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["model"]["source"] == "Qwen/Qwen3-14B"
    assert record["train_config"]["load_in_4bit"] is False

    loading.load_model(run.choice, backend="transformers", load_in_4bit=True)
    source, kwargs = fake_transformers[-1]
    assert source == "unsloth/Qwen3-14B-unsloth-bnb-4bit"
    assert kwargs["quantization_config"].load_in_4bit


def test_source_depends_on_load_in_4bit():
    choice = models.choose("qwen3-14b", smoke=False)
    assert choice.source(False) == "Qwen/Qwen3-14B"
    assert choice.source(True) == "unsloth/Qwen3-14B-unsloth-bnb-4bit"
    assert choice.source() == choice.source(choice.profile.load_in_4bit)


# -- c. Qwen3-32B / 30B-A3B: what Unsloth loads, and sizes per backend ---------------------------
@pytest.mark.skipif(_unsloth_models_dir() is None, reason="unsloth is not installed")
@pytest.mark.parametrize("name", ["qwen3-32b", "qwen3-30b-a3b", "qwen3-14b", "gpt-oss-20b"])
def test_transformers_loads_what_unsloth_loads_in_4_bit(name):
    choice = models.choose(name, smoke=False)
    ours = choice.source(True, "unsloth")
    unsloth_loads = unsloth_resolves(ours, True)
    assert unsloth_loads == ours, f"Unsloth would load {unsloth_loads} for {ours}"
    if choice.profile.loads_4bit("transformers"):
        assert choice.source(True, "transformers") == unsloth_loads


def test_qwen3_moe_in_4_bit_is_heavy_on_transformers():
    moe = models.get_profile("qwen3-30b-a3b")
    assert moe.vram_gb(True, "unsloth") == moe.vram_gb(True) == 19.0
    assert moe.vram_gb(True, "transformers") > 60       # ~29B expert parameters stay bf16
    v = memory.preload_check(moe, True, free_gb=23.5, backend="transformers")
    assert not v.fits and "65.0 GiB" in v.message
    assert memory.preload_check(moe, True, free_gb=23.5, backend="unsloth").fits


def test_ladder_skips_a_fallback_heavier_on_this_backend():
    choice = models.choose("qwen3-32b", smoke=False)
    cfg = resolve_config(choice.profile)
    on = {b: [r.choice.requested.name for r in fallback.ladder(choice, cfg, backend=b)
              if r.kind == "model"] for b in ("unsloth", "transformers")}
    assert on["unsloth"] == ["qwen3-30b-a3b", "qwen3-14b"]
    assert on["transformers"] == ["qwen3-14b"]
    fb = [r for r in fallback.ladder(choice, cfg, backend="unsloth") if r.kind == "model"][0]
    assert "about 19.0 GiB on unsloth" in fb.reason


# -- e. GPT-OSS under FSDP/DeepSpeed (and any 16-bit transformers load): MXFP4 dequantized ------
@pytest.mark.parametrize("flag", ["ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"])
def test_sharded_gpt_oss_loads_dequantized(fake_transformers, monkeypatch, flag):
    from transformers import Mxfp4Config
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", flag: "true"}.items():
        monkeypatch.setenv(k, v)
    loading.load_model(models.choose("gpt-oss-20b", smoke=False), backend="transformers")
    source, kwargs = fake_transformers[-1]
    assert source == "openai/gpt-oss-20b"
    q = kwargs["quantization_config"]
    assert isinstance(q, Mxfp4Config) and q.dequantize is True
    assert "device_map" not in kwargs   # FSDP/DeepSpeed place the shards themselves


def test_mxfp4_is_read_from_a_local_config(tmp_path):
    profile = models.get_profile("tiny-gpt-oss")
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "gpt_oss", "quantization_config": {"quant_method": "mxfp4"}}))
    assert loading.mxfp4_checkpoint(str(tmp_path), profile)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_oss"}))
    assert not loading.mxfp4_checkpoint(str(tmp_path), profile)



class _StopAfterLoad(Exception):
    """Raised by the fake PeftModel: the test only needs the base model's load arguments."""


@pytest.mark.parametrize("entry", ["export_merged", "load_export_adapter"])
@pytest.mark.parametrize("hub_id, mxfp4", [("openai/gpt-oss-20b", True), ("Qwen/Qwen3-14B", False)])
def test_export_reloads_an_mxfp4_base_dequantized(fake_transformers, monkeypatch, tmp_path,
                                                  entry, hub_id, mxfp4):
    """The export merge and the base + adapter reload (adapter check, logits reference) load
    openai/gpt-oss-20b with Mxfp4Config(dequantize=True), decided by loading.mxfp4_checkpoint from
    the checkpoint's config (read with AutoConfig, so a hub id works as well as a folder)."""
    import peft
    import transformers
    from transformers import Mxfp4Config

    from helpers import export
    configs = {"openai/gpt-oss-20b": {"model_type": "gpt_oss", "quantization_config": {
                   "quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}},
               "Qwen/Qwen3-14B": {"model_type": "qwen3"}}

    def config_from_pretrained(source, **kwargs):  # like PretrainedConfig: extra keys are attributes
        cfg = configs[str(source)]
        return types.SimpleNamespace(**cfg, to_dict=lambda: dict(cfg))
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config_from_pretrained)

    def stop(model, *a, **k):
        raise _StopAfterLoad
    monkeypatch.setattr(peft.PeftModel, "from_pretrained", stop)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": hub_id}))
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    with pytest.raises(_StopAfterLoad):
        if entry == "export_merged":
            export.export_merged(hub_id, adapter, tmp_path / "merged")
        else:
            export.load_export("adapter", adapter, device="cpu")
    source, kwargs = fake_transformers[-1]
    assert source == hub_id
    q = kwargs.get("quantization_config")
    if mxfp4:
        assert isinstance(q, Mxfp4Config) and q.dequantize is True
        assert kwargs["attn_implementation"] == "eager"
    else:
        assert q is None

# -- i. each process measures its own GPU; run.json records what was really loaded ---------------
class FakeCuda:
    def __init__(self):
        self.asked = []

    def mem_get_info(self, device):
        self.asked.append(device)
        return (10 * memory.GIB, 24 * memory.GIB)

    def get_device_name(self, device):
        return f"GPU{device}"

    def memory_allocated(self, device):
        return 0

    def memory_reserved(self, device):
        return 0


def test_memory_checks_read_this_process_gpu(monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setattr(memory, "_cuda_torch", lambda: types.SimpleNamespace(cuda=cuda))
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert memory.local_device() == 3
    assert memory.free_memory_gb() == 10.0
    snap = memory.memory_snapshot()
    assert snap["device"].startswith("cuda:3")
    v = memory.preload_check("qwen3-14b", True)      # 13.5 GiB needed, 10 free on GPU 3
    assert not v.fits and v.free_gb == 10.0
    assert cuda.asked == [3, 3, 3]
    assert memory.free_memory_gb(1) == 10.0 and cuda.asked[-1] == 1


def test_ddp_load_measures_and_loads_on_the_local_rank(fake_transformers, monkeypatch):
    cuda = FakeCuda()
    monkeypatch.setattr(memory, "_cuda_torch", lambda: types.SimpleNamespace(cuda=cuda))
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    loading.load_model(models.choose("qwen3-14b", smoke=False), backend="transformers")
    assert set(cuda.asked) == {1}
    assert fake_transformers[-1][1]["device_map"] == {"": 1}


def test_run_json_records_the_repo_unsloth_really_loaded(gpu, tmp_path):
    calls = install_fake_unsloth(gpu, resolve=unsloth_resolves if _unsloth_models_dir()
                                 else (lambda n, f: "unsloth/Qwen3-14B"))
    run = FineTuneRun.start(model="qwen3-14b", smoke=False, output_dir=str(tmp_path / "run"),
                            backend="unsloth", load_in_4bit=False)
    run.load_model()
    assert calls[-1]["model_name"] == "Qwen/Qwen3-14B"
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["model"]["source"] == "unsloth/Qwen3-14B"   # Unsloth's 16-bit copy


def test_without_the_callback_the_model_config_names_the_repo(gpu):
    install_fake_unsloth(gpu, resolve=lambda n, f: "unsloth/Qwen3-14B", callback=False)
    model, _ = loading.load_model(models.choose("qwen3-14b", smoke=False), backend="unsloth",
                                  load_in_4bit=False)
    assert model._finetuning_source == "unsloth/Qwen3-14B"


# -- j. a model that does not fit must run out of memory, not spill to the CPU ------------------
def test_unsloth_loads_on_one_gpu(gpu):
    calls = install_fake_unsloth(gpu)
    loading.load_model(models.choose("qwen3-14b", smoke=False), backend="unsloth")
    assert calls[-1]["device_map"] == {"": 0}   # not Unsloth's default "sequential"


def test_a_model_spilled_to_the_cpu_is_out_of_memory_and_the_ladder_steps_down(gpu, tmp_path):
    spilled = {"model.embed_tokens": 0, "model.layers.39": "cpu", "lm_head": "disk"}
    install_fake_unsloth(gpu, spill=spilled)
    choice = models.choose("qwen3-14b", smoke=False)
    with pytest.raises(memory.OffloadedError) as e:
        loading.load_model(choice, backend="unsloth")
    assert memory.is_oom(e.value) and "model.layers.39 -> cpu" in str(e.value)

    fits = {"": 0}
    maps = iter([spilled, fits])
    install_fake_unsloth(gpu, load=lambda name: FakeModel(name, next(maps)))

    def attempt(rung):
        with memory.stage("load"):
            model, _ = loading.load_model(rung.choice, backend="unsloth",
                                          max_seq_length=rung.cfg.max_seq_length,
                                          load_in_4bit=rung.cfg.load_in_4bit)
        return rung.cfg.max_seq_length

    cfg = resolve_config(choice.profile, backend="unsloth")
    out = fallback.run_with_fallback(choice, cfg, attempt)
    assert out.fell_back and out.result < cfg.max_seq_length
    assert out.events[0]["stage"] == "load" and "OffloadedError" in out.events[0]["error"]
