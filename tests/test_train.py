"""Training: the labels the model sees are ours, LoRA changes only adapter weights, on both backends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import train as train_mod

sys.path.insert(0, str(Path(__file__).parent))
from label_capture import capture  # noqa: E402


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3", "gpt-oss"])
def test_transformers_backend_trains_exactly_our_labels(random_standin, tmp_path, family):
    out = capture("transformers", family, str(random_standin(family)), str(tmp_path))
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
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "label_capture.py"), "unsloth", "qwen3",
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
