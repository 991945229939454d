"""What long runs need: validation loss, early stopping, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import models
from helpers.runtime.loading import load_model
from helpers.training import masks as templates
from helpers.training.config import resolve_config
from helpers.training.trainer import add_lora, train

HERE = Path(__file__).parent


def _rows(tok, n, offset=0):
    convs = [[{"role": "user", "content": f"Question {i}?"},
              {"role": "assistant", "content": f"Answer number {i} is short."}] for i in range(offset, offset + n)]
    return templates.tokenize_dataset(tok, convs, max_seq_length=128, model="tiny")[0]


def test_validation_loss_and_early_stopping(random_standin, tmp_path):
    choice = models.choose(str(random_standin("qwen2.5")))
    # a threshold no drop can reach: every evaluation counts as "no improvement"
    cfg = resolve_config(choice.profile, epochs=10, batch_size=2, grad_accum=1, eval_steps=1,
                         early_stopping_patience=2, early_stopping_threshold=100.0,
                         report_to="tensorboard", logging_steps=1)
    model, tok = load_model(choice, backend="transformers")
    model = add_lora(model, cfg)
    result = train(model, tok, _rows(tok, 8), cfg, tmp_path, eval_rows=_rows(tok, 4, offset=100))
    assert result.stopped_early and result.steps == 3  # first eval, then 2 without improvement
    assert [e["step"] for e in result.eval_history] == [1, 2, 3]
    assert all(e["eval_loss"] > 0 for e in result.eval_history)
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard log"


def test_early_stopping_needs_a_validation_set(random_standin, tmp_path):
    choice = models.choose(str(random_standin("qwen2.5")))
    cfg = resolve_config(choice.profile, early_stopping_patience=2, report_to="none")
    model, tok = load_model(choice, backend="transformers")
    with pytest.raises(ValueError, match="early_stopping_patience is set but there is no validation set"):
        train(add_lora(model, cfg), tok, _rows(tok, 4), cfg, tmp_path)


def test_resume_after_sigkill_reaches_the_same_state(random_standin, tmp_path):
    model_dir = str(random_standin("qwen3"))
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    script = str(HERE.parent / "support" / "resume_run.py")

    def run(out, sleep=0.0):
        p = subprocess.run([sys.executable, script, model_dir, str(out), str(sleep)],
                           capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout.strip().splitlines()[-1])

    straight = run(tmp_path / "straight")
    assert straight["steps"] == 12 and straight["resumed_from"] is None

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, script, model_dir, str(killed), "0.5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "checkpoint-6").is_dir():  # two epochs done
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter").exists()

    resumed = run(killed)
    assert resumed["resumed_from"] and resumed["resumed_from"].endswith(("checkpoint-6", "checkpoint-9"))
    assert resumed["steps"] == 12
    assert resumed["checksum"] == pytest.approx(straight["checksum"], rel=1e-4, abs=1e-4)
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-3)


def test_checkpoints_from_other_settings_are_set_aside(random_standin, tmp_path):
    choice = models.choose(str(random_standin("qwen2.5")))
    model, tok = load_model(choice, backend="transformers")
    rows = _rows(tok, 4)
    cfg = resolve_config(choice.profile, epochs=1, batch_size=2, report_to="none")
    train(add_lora(model, cfg), tok, rows, cfg, tmp_path)
    model, tok = load_model(choice, backend="transformers")
    cfg2 = resolve_config(choice.profile, epochs=1, batch_size=2, learning_rate=1e-4, report_to="none")
    result = train(add_lora(model, cfg2), tok, rows, cfg2, tmp_path)
    assert result.resumed_from is None and result.steps == 2
    assert list(tmp_path.glob("checkpoints.old-*")), "old checkpoints were not kept aside"


def test_gradient_checkpointing_trains_lora(random_standin, tmp_path):
    choice = models.choose(str(random_standin("qwen3")))
    cfg = resolve_config(choice.profile, epochs=1, batch_size=2, gradient_checkpointing=True,
                         report_to="none", learning_rate=1e-2)
    model, tok = load_model(choice, backend="transformers")
    model = add_lora(model, cfg)
    before = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_B" in k}
    result = train(model, tok, _rows(tok, 4), cfg, tmp_path)
    assert result.steps == 2
    assert any((before[k] != v.detach()).any() for k, v in model.named_parameters() if k in before)


def test_resuming_a_finished_run_keeps_its_loss_history(random_standin, tmp_path):
    """Rerunning a finished run resumes from its last checkpoint and trains nothing more; the
    record still has the whole loss curve and the real final loss (not 0.0)."""
    choice = models.choose(str(random_standin("qwen2.5")))
    cfg = resolve_config(choice.profile, epochs=2, batch_size=2, logging_steps=1, report_to="none")
    model, tok = load_model(choice, backend="transformers")
    rows = _rows(tok, 4)
    first = train(add_lora(model, cfg), tok, rows, cfg, tmp_path)
    model, tok = load_model(choice, backend="transformers")
    again = train(add_lora(model, cfg), tok, rows, cfg, tmp_path)
    assert again.resumed_from and again.steps == first.steps == 4
    assert [h["step"] for h in again.loss_history] == [h["step"] for h in first.loss_history] == [1, 2, 3, 4]
    assert again.final_loss == pytest.approx(first.final_loss) and again.final_loss > 0
