import dataclasses

import pytest

from helpers import models
from helpers.training.trainer import resolve_config


def test_registry_has_every_design_card_model():
    for name in ("gpt-oss-20b", "qwen3-14b", "qwen3-32b", "qwen3-30b-a3b", "qwen2.5-3b"):
        p = models.get_profile(name)
        assert p.hub_id and p.hub_id_4bit
        assert p.family in models.FAMILIES
        assert p.vram_gb() > 0 and p.max_seq_length >= 512
        assert p.standin in models.REGISTRY
    assert models.get_profile("qwen3-32b").fallbacks == ("qwen3-30b-a3b", "qwen3-14b")


def test_hub_id_and_case_insensitive_lookup():
    assert models.get_profile("Qwen/Qwen2.5-3B-Instruct").name == "qwen2.5-3b"
    assert models.get_profile("QWEN3-14B").name == "qwen3-14b"
    assert models.get_profile("unsloth/gpt-oss-20b-unsloth-bnb-4bit").name == "gpt-oss-20b"


def test_unknown_model_lists_known_ones():
    with pytest.raises(models.UnknownModelError) as e:
        models.get_profile("llama-9000")
    msg = str(e.value)
    assert "llama-9000" in msg
    for name in ("gpt-oss-20b", "qwen3-14b", "qwen2.5-3b"):
        assert name in msg


def test_smoke_mode_from_env_and_argument(monkeypatch):
    monkeypatch.delenv(models.SMOKE_ENV, raising=False)
    assert not models.smoke_mode()
    monkeypatch.setenv(models.SMOKE_ENV, "1")
    assert models.smoke_mode()
    assert not models.smoke_mode(False)  # the explicit argument wins
    choice = models.choose("gpt-oss-20b")
    assert choice.smoke and choice.profile.name == "tiny-gpt-oss"
    assert models.choose("qwen3-32b").profile.name == "tiny-qwen3"
    monkeypatch.setenv(models.SMOKE_ENV, "0")
    assert models.choose("qwen3-32b").profile.name == "qwen3-32b"


@pytest.mark.skipif(models.cuda_available(), reason="checks the no-GPU message")
def test_big_model_without_gpu_says_how_to_use_smoke_mode():
    with pytest.raises(models.GPURequiredError) as e:
        models.require_gpu(models.choose("gpt-oss-20b", smoke=False))
    msg = str(e.value)
    assert "GPT-OSS 20B" in msg and "FINETUNING_SMOKE=1" in msg and "-p smoke True" in msg
    models.require_gpu(models.choose("gpt-oss-20b", smoke=True))  # the stand-in needs none


def test_training_settings_precedence_and_unknown_setting():
    p = models.get_profile("qwen2.5-3b")
    cfg = resolve_config(p)
    assert (cfg.epochs, cfg.lora_r, cfg.learning_rate) == (p.train.epochs, p.lora.r, p.train.learning_rate)
    cfg = resolve_config(p, epochs=2, lora_r=None)
    assert cfg.epochs == 2 and cfg.lora_r == p.lora.r
    with pytest.raises(TypeError, match="Unknown training setting.*lora_rank.*Known settings"):
        resolve_config(p, lora_rank=4)
    with pytest.raises(ValueError, match="backend"):
        resolve_config(p, backend="tpu")


def test_local_folder_is_a_model(random_standin):
    path = random_standin("qwen3")
    p = models.get_profile(str(path))
    assert p.family == "qwen3" and p.is_standin
    assert dataclasses.asdict(p)["hub_id"] == str(path)
