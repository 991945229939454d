import pytest

from helpers.training.autoconfig import auto_configure
from helpers.training.config import resolve_config


def test_cpu_keeps_16_bit_and_no_checkpointing():
    c = auto_configure("qwen2.5-3b", free_gb=None)
    assert not c.load_in_4bit and not c.gradient_checkpointing
    assert c.batch_size * c.grad_accum >= 4 and "no CUDA GPU" in str(c)


def test_plenty_of_memory_means_16_bit():
    c = auto_configure("qwen3-14b", free_gb=40.0)
    assert not c.load_in_4bit and "16-bit" in c.reasons[0]


def test_24gb_card_takes_4_bit_with_a_bigger_batch_and_same_effective_batch():
    c = auto_configure("qwen3-14b", free_gb=23.5)
    assert c.load_in_4bit and c.gradient_checkpointing
    assert c.batch_size == 4 and c.grad_accum == 2  # profile: 2 x 4 = 8
    assert "4-bit" in c.reasons[0] and "23.5 GB" in c.reasons[0]


def test_tight_memory_goes_to_batch_1_with_checkpointing_and_names_the_ladder():
    c = auto_configure("qwen3-32b", free_gb=22.0)
    assert c.load_in_4bit and c.gradient_checkpointing and c.batch_size == 1 and c.grad_accum == 8
    c = auto_configure("qwen3-32b", free_gb=12.0)
    assert "qwen3-30b-a3b" in str(c) and "still tight" in str(c)


def test_token_lengths_set_the_sequence_length_and_free_room_for_batch():
    report = {"p95": 700, "max": 740, "recommended_max_seq_length": 768, "truncated_at_recommended": 0}
    c = auto_configure("qwen3-14b", free_gb=23.5, length_report=report)
    assert c.max_seq_length == 768 and "P95 is 700" in str(c)
    assert c.batch_size == 8 and c.grad_accum == 1  # 2048 -> 768 leaves room for 2x the batch
    long = dict(report, recommended_max_seq_length=4096, p95=3900, max=4000)
    assert auto_configure("qwen3-14b", free_gb=23.5, length_report=long).max_seq_length == 2048


def test_choice_feeds_the_trainer_settings():
    c = auto_configure("qwen3-14b", free_gb=23.5)
    cfg = resolve_config(__import__("helpers.models", fromlist=["x"]).get_profile("qwen3-14b"), **c.overrides())
    assert (cfg.load_in_4bit, cfg.batch_size, cfg.grad_accum, cfg.gradient_checkpointing) == (True, 4, 2, True)


def test_suggest_measures_the_data_and_lets_parameters_win(tmp_path):
    import json

    from helpers.training.autoconfig import suggest
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"Question {i}?", "completion": "word " * (10 + i)})
                              for i in range(20)))
    auto, settings = suggest("qwen3-14b", path, smoke=True, explicit={"batch_size": 3, "grad_accum": None})
    assert auto.max_seq_length <= 128 and settings["max_seq_length"] == auto.max_seq_length
    assert "the data's P95" in str(auto)
    assert settings["batch_size"] == 3 and settings["grad_accum"] == auto.grad_accum
    assert "batch_size=3 as given" in str(auto)
    cfg = resolve_config(__import__("helpers.models", fromlist=["x"]).get_profile("tiny-qwen3"), **settings)
    assert cfg.batch_size == 3


def test_moe_sizes_follow_the_backend():
    """Qwen3-30B-A3B in 4 bits is ~19 GB on Unsloth (experts quantized) but ~65 GB on
    transformers (bitsandbytes leaves the 3-D expert parameters in bf16)."""
    unsloth = auto_configure("qwen3-30b-a3b", free_gb=40.0, backend="unsloth")
    assert unsloth.load_in_4bit and "4-bit needs ~19.0 GB" in str(unsloth)
    assert unsloth.batch_size == 2          # 21 GB to spare: a bigger batch
    assert str(auto_configure("qwen3-30b-a3b", free_gb=40.0)) == str(unsloth).replace(" on unsloth", "")
    tf = auto_configure("qwen3-30b-a3b", free_gb=40.0, backend="transformers")
    assert "19.0" not in str(tf) and "~65.0 GB needed on transformers" in str(tf)
    assert "still tight" in str(tf) and "qwen3-14b" in str(tf)
    assert tf.batch_size == 1 and tf.gradient_checkpointing
    # room for the 16-bit model (66 GB) on either backend
    assert not auto_configure("qwen3-30b-a3b", free_gb=75.0, backend="transformers").load_in_4bit


def test_gpt_oss_is_never_4_bit_on_transformers():
    tf = auto_configure("gpt-oss-20b", free_gb=30.0, backend="transformers")
    assert not tf.load_in_4bit
    assert "4-bit cannot run on the transformers backend" in tf.reasons[0]
    assert "~44.0 GB needed on transformers" in tf.reasons[0] and "backend='unsloth'" in tf.reasons[0]
    assert tf.batch_size == 1 and tf.gradient_checkpointing
    cfg = resolve_config(__import__("helpers.models", fromlist=["x"]).get_profile("gpt-oss-20b"),
                         **tf.overrides())
    assert cfg.load_in_4bit is False        # the run loads 16 bits instead of refusing
    assert not auto_configure("gpt-oss-20b", free_gb=50.0, backend="transformers").load_in_4bit
    assert auto_configure("gpt-oss-20b", free_gb=30.0, backend="unsloth").load_in_4bit


@pytest.mark.parametrize("backend, unsloth_installed, runs_on",
                         [("auto", True, "unsloth"), ("auto", False, "transformers"),
                          ("transformers", True, "transformers"), ("unsloth", True, "unsloth")])
def test_suggest_sizes_for_the_backend_that_will_run(monkeypatch, tmp_path, backend,
                                                     unsloth_installed, runs_on):
    import json

    from helpers import models
    from helpers.data import prep as dataprep
    from helpers.runtime import loading, memory
    from helpers.training import autoconfig
    from helpers.training.autoconfig import suggest
    tokenizer, _ = dataprep.load_tokenizer("qwen3-30b-a3b", smoke=True)
    monkeypatch.setattr(loading, "load_tokenizer",
                        lambda model, smoke=None: (tokenizer, models.choose(model, smoke=False)))
    monkeypatch.setattr(memory, "free_memory_gb", lambda device=None: 40.0)
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(loading, "unsloth_available", lambda: unsloth_installed)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    seen = []
    real = autoconfig.auto_configure
    monkeypatch.setattr(autoconfig, "auto_configure", lambda *a, **k: seen.append(k["backend"]) or real(*a, **k))
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"Question {i}?", "completion": "word " * 10})
                              for i in range(10)))
    auto, settings = suggest("qwen3-30b-a3b", path, smoke=False, backend=backend)
    assert seen == [runs_on]
    assert ("19.0" in str(auto)) == (runs_on == "unsloth")
    assert (settings["batch_size"] == 1) == (runs_on == "transformers")   # 65 GB: tight
    assert settings["load_in_4bit"] is True
