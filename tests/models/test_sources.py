"""Any chat model: sizes from configs, defaults from sizes, hub ids from the offline cache, GGUF files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import models
from helpers.models import sizing, sources
from helpers.training.config import epochs_from_data, resolve_config

ROOT = Path(__file__).resolve().parents[2]

# the shapes of Qwen/Qwen2.5-0.5B-Instruct's config.json
QWEN25_05B = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896,
              "num_hidden_layers": 24, "vocab_size": 151936, "num_attention_heads": 14,
              "num_key_value_heads": 2, "intermediate_size": 4864, "tie_word_embeddings": True,
              "max_position_embeddings": 32768}


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3", "gpt-oss"])
def test_parameter_count_equals_the_model_built_from_the_config(random_standin, family):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    path = random_standin(family)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    real = sum(p.numel() for p in model.parameters())
    assert sizing.parameter_count(json.loads((path / "config.json").read_text())) == real


def test_parameter_count_of_real_configs():
    assert sizing.parameter_count(QWEN25_05B) == 494_032_768  # "0.49B" on the model card
    assert models.get_profile("qwen2.5-0.5b").params == 494_032_768


def test_a_real_sized_folder_gets_size_defaults_not_the_standin_recipe(tmp_path):
    folder = tmp_path / "Qwen2.5-0.5B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN25_05B))
    p = models.get_profile(str(folder))
    standin = models.get_profile("tiny-qwen2.5")
    assert p.family == "qwen2.5" and not p.is_standin and p.params == 494_032_768
    assert p.train.learning_rate == 3e-4 and p.train.learning_rate != standin.train.learning_rate
    assert (p.lora.r, p.lora.alpha) == (16, 32) and len(p.lora.target_modules) == 7
    assert p.train.epochs_from_data and "learning_rate" in p.reasons
    assert p.max_seq_length == 2048
    # 0.5B in 32 bits on a CPU: ~2 GB of weights plus the rest; not a GPU-only model on 24 GB
    assert 2 < p.cpu_memory_gb() < 5


def test_epochs_come_from_the_data_unless_set():
    p = models.get_profile("qwen2.5-0.5b")
    cfg = resolve_config(p)  # batch 4 x 2 = 8 per step
    cfg2, why = epochs_from_data(cfg, p, 240, epochs_set=False)
    assert cfg2.epochs == 3 and "240 examples" in why and "set `epochs`" in why
    assert epochs_from_data(cfg, p, 5000, epochs_set=False)[0].epochs == 1
    assert epochs_from_data(cfg, p, 20, epochs_set=False)[0].epochs == sizing.MAX_EPOCHS
    assert epochs_from_data(cfg, p, 240, epochs_set=True) == (cfg, None)
    registry = models.get_profile("qwen3-14b")  # a tuned registry profile keeps its epochs
    assert epochs_from_data(resolve_config(registry), registry, 240, False)[1] is None


def test_no_gpu_stop_follows_the_machine_memory(monkeypatch):
    small = models.choose("qwen2.5-0.5b", smoke=False)
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    monkeypatch.setattr(sizing, "machine_memory_gb", lambda: 16.0)
    models.require_gpu(small)  # a laptop trains it
    with pytest.raises(models.GPURequiredError, match=r"would need about 74 GB.*has 16 GB.*qwen2.5-0.5b"):
        models.require_gpu(models.choose("qwen3-14b", smoke=False))
    monkeypatch.setattr(sizing, "machine_memory_gb", lambda: 2.0)
    with pytest.raises(models.GPURequiredError, match="Qwen2.5-0.5B"):
        models.require_gpu(small)


def test_small_models_have_standins_for_smoke_mode():
    for name in models.SMALL_MODELS:
        choice = models.choose(name, smoke=True)
        assert choice.profile.is_standin and choice.profile.family == models.get_profile(name).family


def test_device_order(monkeypatch):
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    monkeypatch.setattr(models, "mps_available", lambda: True)
    assert models.device() == "mps"
    monkeypatch.setattr(models, "mps_available", lambda: False)
    assert models.device() == "cpu"
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    assert models.device() == "cuda"


def test_unknown_name_lists_what_is_accepted():
    with pytest.raises(models.UnknownModelError, match="hub id.*folder.*gguf"):
        models.get_profile("no-such-model")


def _hub_cache(root: Path, repo: str, folder: Path) -> None:
    """Lay ``folder`` out as the Hugging Face cache does after ``hf download repo``."""
    entry = root / "hub" / f"models--{repo.replace('/', '--')}"
    snap = entry / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, snap)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(snap.name)


_OFFLINE_RUN = """
import sys
from helpers import models
from helpers.runtime import loading
p = models.get_profile(sys.argv[1])
choice = models.choose(sys.argv[1], smoke=False)
model, tok = loading.load_model(choice, backend="transformers")
print(p.family, p.is_standin, choice.source(), type(model).__name__)
"""


@pytest.mark.slow
def test_hub_id_outside_the_registry_loads_offline_from_the_cache(random_standin, tmp_path):
    _hub_cache(tmp_path / "hf", "someone/tiny-chat", random_standin("qwen3"))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _OFFLINE_RUN, "someone/tiny-chat"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-4:] == ["qwen3", "True", "someone/tiny-chat", "Qwen3ForCausalLM"]
    # a hub id the cache lacks: the error says offline, the cache and how to fill it
    miss = subprocess.run([sys.executable, "-c", _OFFLINE_RUN, "someone/not-cached"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert miss.returncode != 0
    assert "HF_HUB_OFFLINE=1" in miss.stderr and "hf download someone/not-cached" in miss.stderr
    # a cached hub model whose chat template is another family's: refused, naming both
    mixed = tmp_path / "mixed"
    shutil.copytree(random_standin("qwen3"), mixed)
    (mixed / "chat_template.jinja").write_text(sources.folder_chat_template(random_standin("gpt-oss")))
    _hub_cache(tmp_path / "hf", "someone/mixed-chat", mixed)
    bad = subprocess.run([sys.executable, "-c", _OFFLINE_RUN, "someone/mixed-chat"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "someone/mixed-chat: its config says model_type 'qwen3'" in bad.stderr
    assert "'<|im_start|>'" in bad.stderr


@pytest.mark.slow
def test_a_gguf_file_is_a_model(random_standin, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from helpers.export.gguf import write_gguf
    monkeypatch.setenv("FINETUNING_CACHE", str(tmp_path / "cache"))
    src = random_standin("qwen2.5")
    gguf_path = write_gguf(src, tmp_path / "tiny.gguf", "f32", "tiny")
    p = models.get_profile(str(gguf_path))
    assert p.family == "qwen2.5" and p.hub_id == str(gguf_path.resolve())
    folder = Path(models.choose(str(gguf_path), smoke=False).source())
    assert folder.parent == tmp_path / "cache" / "gguf" and (folder / "tokenizer_config.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert sources.gguf_folder(gguf_path) == folder  # converted once
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)(ids).logits
        b = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(ids).logits
    assert torch.allclose(a, b, atol=0.05)  # saved in bfloat16
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


@pytest.mark.slow
def test_a_gguf_file_whose_template_is_another_familys_is_refused(random_standin, tmp_path, monkeypatch):
    from helpers.export.gguf import write_gguf
    monkeypatch.setenv("FINETUNING_CACHE", str(tmp_path / "cache"))
    mixed = tmp_path / "mixed"
    shutil.copytree(random_standin("qwen2.5"), mixed)
    (mixed / "chat_template.jinja").write_text(sources.folder_chat_template(random_standin("gpt-oss")))
    gguf_path = write_gguf(mixed, tmp_path / "mixed.gguf", "f32", "mixed")
    assert "<|start|>" in sources.gguf_chat_template(gguf_path)
    with pytest.raises(sources.ModelSourceError, match=r"mixed.gguf: its config says model_type 'qwen2'.*qwen2.5 family"):
        models.get_profile(str(gguf_path))
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").glob("*/model.safetensors"))


def test_missing_gguf_file_names_the_setting(tmp_path):
    with pytest.raises(sources.ModelSourceError, match="GGUF file not found.*`model`"):
        models.get_profile(str(tmp_path / "nothing.gguf"))


def test_cpu_weights_dtype(monkeypatch):
    import torch

    from helpers.runtime import loading
    real, standin = models.get_profile("qwen2.5-0.5b"), models.get_profile("tiny-qwen2.5")
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    monkeypatch.setattr(models, "mps_available", lambda: False)
    monkeypatch.setattr(loading, "cpu_bf16_native", lambda: True)
    assert loading.load_dtype(real, on_gpu=False) == torch.bfloat16
    assert loading.load_dtype(standin, on_gpu=False) == torch.float32  # exact tests
    monkeypatch.setattr(loading, "cpu_bf16_native", lambda: False)
    assert loading.load_dtype(real, on_gpu=False) == torch.float32
    monkeypatch.setenv(loading.CPU_DTYPE_ENV, "bfloat16")
    assert loading.load_dtype(real, on_gpu=False) == torch.bfloat16
    monkeypatch.setenv(loading.CPU_DTYPE_ENV, "fp8")
    with pytest.raises(ValueError, match="FINETUNING_CPU_DTYPE.*auto, bfloat16 or float32"):
        loading.load_dtype(real, on_gpu=False)


def test_a_folder_whose_template_is_another_familys_is_refused(random_standin, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(random_standin("qwen2.5"), folder)
    gpt_oss = sources.folder_chat_template(random_standin("gpt-oss"))
    (folder / "chat_template.jinja").write_text(gpt_oss)
    with pytest.raises(sources.ModelSourceError, match=r"its config says model_type 'qwen2'.*qwen2.5 family.*'<\|im_start\|>'"):
        models.get_profile(str(folder))
    assert models.get_profile(str(random_standin("qwen3"))).family == "qwen3"  # its own template passes
