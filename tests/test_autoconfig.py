from helpers.autoconfig import auto_configure
from helpers.train import resolve_config


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
    from helpers.autoconfig import suggest
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
