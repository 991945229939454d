"""The command line: each error a user can meet, and a real (tiny) run."""

import json

import pytest

from helpers import finetune, models


@pytest.fixture
def small_data(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text("\n".join(json.dumps({"prompt": f"Who is person {i}?",
                                       "completion": f"Person {i} is a baker in the old town."})
                           for i in range(8)) + "\n")
    return p


def test_unknown_model(small_data, tmp_path, capsys):
    assert finetune.main(["--data", str(small_data), "--model", "llama-9000", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'llama-9000'" in err and "qwen2.5-3b" in err


def test_bad_line_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": }\n')
    assert finetune.main(["--data", str(bad), "--model", "qwen2.5-3b", "--smoke", "--output", str(tmp_path / "o")]) == 2
    assert f"{bad}:2: bad JSON" in capsys.readouterr().err


def test_missing_data_file(tmp_path, capsys):
    assert finetune.main(["--data", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "Data file not found" in capsys.readouterr().err


@pytest.mark.skipif(models.cuda_available(), reason="checks the no-GPU message")
def test_20b_without_gpu(small_data, tmp_path, capsys):
    assert finetune.main(["--data", str(small_data), "--model", "gpt-oss-20b", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs an NVIDIA GPU" in err and "FINETUNING_SMOKE=1" in err


def test_skip_training_without_adapter(small_data, random_standin, tmp_path, capsys):
    rc = finetune.main(["--data", str(small_data), "--model", str(random_standin("qwen3")),
                        "--output", str(tmp_path / "o"), "--skip-training"])
    assert rc == 2 and "--skip-training needs a trained adapter" in capsys.readouterr().err


def test_train_then_reuse_the_adapter(small_data, random_standin, tmp_path, capsys):
    out = tmp_path / "run"
    model = str(random_standin("qwen3"))
    rc = finetune.main(["--data", str(small_data), "--model", model, "--output", str(out),
                        "--question", "Who is person 3?", "--epochs", "1", "--batch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "Q: Who is person 3?" in text and "base :" in text and "tuned:" in text
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["train"]["steps"] == 2
    assert record["loss_history"] and record["data"]["trained_tokens"] > 0
    assert {"load_model", "train", "generate_tuned"} <= set(record["phases"])
    assert (out / "loss.png").is_file() and (out / "adapter" / "adapter_config.json").is_file()

    rc = finetune.main(["--data", str(small_data), "--model", model, "--output", str(out),
                        "--question", "Who is person 3?", "--skip-training", "--skip-original"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "tuned:" in text and "base :" not in text
