"""The command line: each error a user can meet, and a real (tiny) run."""

import json

import pytest

from helpers import models
from helpers.pipeline import finetune


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
    assert {"load_model", "train", "generate_tuned_question"} <= set(record["phases"])
    assert (out / "loss.png").is_file() and (out / "adapter" / "adapter_config.json").is_file()

    rc = finetune.main(["--data", str(small_data), "--model", model, "--output", str(out),
                        "--question", "Who is person 3?", "--skip-training", "--skip-original"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "tuned:" in text and "base :" not in text


def test_out_of_memory_in_training_steps_down_and_is_recorded(small_data, random_standin, tmp_path, capsys, monkeypatch):
    """Simulated out-of-memory on the first training attempt: the run steps down the ladder,
    finishes, and run.json says what happened."""
    import torch

    from helpers.pipeline import finetune as ft
    real_train = ft.FineTuneRun.train
    calls = []

    def flaky(self, **kw):
        calls.append((self.cfg.max_seq_length, self.cfg.batch_size, self.cfg.grad_accum))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(self, **kw)

    monkeypatch.setattr(ft.FineTuneRun, "train", flaky)
    out = tmp_path / "run"
    rc = finetune.main(["--data", str(small_data), "--model", str(random_standin("qwen3")),
                        "--output", str(out), "--epochs", "1", "--max-seq-length", "256",
                        "--batch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    assert len(calls) == 2 and calls[0] == (256, 4, 1)
    # the next rung: this model's shortest sequence is already 256, so batch 1 x 4 steps
    assert calls[1] == (256, 1, 4)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished"
    events = record["fallbacks"]
    assert events[0]["stage"] == "train" and "out of memory" in events[0]["error"].lower()
    assert record["train_config"]["batch_size"] == 1


def test_raw_fim_records_train_through_the_command_line(random_standin, tmp_path, capsys):
    """A code model's fill-in-the-middle records (raw text, no chat template) train through
    `python -m helpers.finetune`, with replayed chat answers beside them: run.json counts both,
    and the trained tokens are exactly the middles' plus the replayed answers'."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.data import fim, replay
    from helpers.training import masks
    src = random_standin("qwen2.5")
    coder = tmp_path / "coder"   # the stand-in with Qwen's FIM tokens, as Qwen2.5-Coder has them
    tok = AutoTokenizer.from_pretrained(src)
    tok.add_special_tokens({"additional_special_tokens": [
        t for t in fim.QWEN_FIM.strings() if t not in tok.get_vocab()]})
    model = AutoModelForCausalLM.from_pretrained(src)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(coder)
    tok.save_pretrained(coder)
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(3):
        (repo / f"m{i}.py").write_text("".join(f"def f{j}(x):\n    return x * {i + j}\n\n" for j in range(6)))
    exs, _ = fim.examples(repo, n_per_file=2, seed=0)
    recs = [fim.to_record(e, fim.QWEN_FIM, repo_name="repo") for e in exs]
    path = tmp_path / "fim.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "run"
    rc = finetune.main(["--data", str(path), "--model", str(coder), "--output", str(out),
                        "--epochs", "1", "--batch-size", "4", "--replay", "2",
                        "--learning-rate", "5e-3", "--skip-original"])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["data"]["format"] == "raw"
    # the replayed answers as trained: cut to whole sentences, those without one left out
    replayed = [[{"role": "user", "content": a["question"]},
                 {"role": "assistant", "content": replay.whole_sentences(a["answer"])}]
                for a in record["answers"]["replay"]]
    replayed = [c for c in replayed if c[1]["content"]]
    assert record["data"]["replay_examples"] == len(replayed)
    assert record["data"]["examples"] == len(recs) + len(replayed)
    _, raw_stats = masks.tokenize_raw_dataset(tok, recs, max_seq_length=4096)
    chat_trained = masks.tokenize_dataset(tok, replayed, max_seq_length=4096)[1]["trained_tokens"] \
        if replayed else 0
    assert record["data"]["trained_tokens"] == raw_stats["trained_tokens"] + chat_trained
    assert record["train"]["steps"] >= 1 and (out / "adapter" / "adapter_config.json").is_file()
