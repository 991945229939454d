"""Training: the labels the model sees are ours, LoRA changes only adapter weights, on both backends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.training import trainer as train_mod
from tests.support.label_capture import capture


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3", "gpt-oss"])
@pytest.mark.parametrize("padding_free", [True, False], ids=["padding-free", "padded"])
def test_transformers_backend_trains_exactly_our_labels(random_standin, tmp_path, family, padding_free):
    out = capture("transformers", family, str(random_standin(family)), str(tmp_path), padding_free)
    if padding_free:
        assert out["real_token_share"] == 1.0
    else:
        assert 0.5 < out["real_token_share"] < 1.0
    assert out["backend"] == "transformers"
    assert out["sequences_checked"] >= 6 and out["mismatched"] == 0
    assert out["lora_params"] > 0 and out["lora_changed"] == out["lora_params"]
    assert out["base_changed"] == []
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]  # one per epoch (3 steps each)


@pytest.mark.skipif(not train_mod.unsloth_available(), reason="Unsloth not installed")
def test_unsloth_backend_trains_exactly_our_labels(random_standin, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "support" / "label_capture.py"), "unsloth", "qwen3",
         str(random_standin("qwen3")), str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "unsloth"
    assert out["sequences_checked"] >= 6 and out["mismatched"] == 0
    assert out["lora_params"] > 0 and out["lora_changed"] == out["lora_params"]
    assert out["base_changed"] == []


def test_backend_selection():
    expected = "unsloth" if (train_mod.unsloth_available() and __import__("torch").cuda.is_available()) \
        else "transformers"
    assert train_mod.select_backend("auto") == expected
    assert train_mod.select_backend("transformers") == "transformers"
    with pytest.raises(ValueError, match="backend='tpu'"):
        train_mod.select_backend("tpu")


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3", "gpt-oss"])
def test_padding_free_batches_give_the_same_loss_as_padded(random_standin, family):
    """Packed sequences must not attend to each other: the loss of a padding-free batch equals
    the loss of the same examples padded. Where it does not (GPT-OSS's eager attention), padding
    free must be off by default."""
    import torch

    from helpers import models
    from helpers.training import masks as templates
    choice = models.choose(str(random_standin(family)))
    model, tok = train_mod.load_model(choice, backend="transformers")
    convs = [[{"role": "user", "content": "Short?"}, {"role": "assistant", "content": "Yes."}],
             [{"role": "user", "content": "A longer question about bread and ovens?"},
              {"role": "assistant", "content": "Bread bakes in a hot oven for forty minutes or so."}]]
    rows, _ = templates.tokenize_dataset(tok, convs, max_seq_length=512, model=family,
                                         **choice.profile.template_kwargs)
    train_mod.prepare_for_training(model)  # what train() does before training
    losses = {}
    for free in (True, False):
        batch = train_mod._collator(tok.pad_token_id, free)(rows)
        batch = {k: v for k, v in batch.items() if k in ("input_ids", "labels", "attention_mask", "position_ids")}
        with torch.no_grad():
            losses[free] = model(**batch).loss.item()
    same = losses[True] == pytest.approx(losses[False], rel=1e-5)
    model_type = model.config.model_type
    assert same == train_mod.auto_padding_free("transformers", model_type), (model_type, losses)
    assert same or family == "gpt-oss"
