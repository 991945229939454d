"""scripts/gpu_check.py (make gpu-check): the no-CUDA stop, the model shapes it builds, the disk
arithmetic; the whole check on a GPU (marked ``gpu``: skipped without CUDA)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"

spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda(), reason="checks the no-CUDA stop")
def test_without_cuda_it_stops_at_once_with_code_2_and_says_how(tmp_path):
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    seconds = time.time() - t0
    assert proc.returncode == 2, proc.stderr
    assert seconds < 10, seconds
    assert "bash scripts/gpu_wheels.sh" in proc.stderr
    assert "NVIDIA GPU with CUDA" in proc.stderr
    assert "--no-index" in proc.stderr and "gpu_wheels/requirements.txt" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_the_script_imports_nothing_heavy_at_module_level():
    """The parent must reach its no-CUDA stop with torch only (transformers and Unsloth load in the
    step subprocesses)."""
    code = (f"import sys, importlib.util; s = importlib.util.spec_from_file_location('g', {str(SCRIPT)!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print(sorted(k for k in ('torch', 'transformers', 'unsloth', 'trl', 'helpers') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_qwen3_14b_shape_has_14_8b_parameters():
    cfg = gpu_check.build_config("qwen3-14b")
    assert cfg.model_type == "qwen3"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim, cfg.intermediate_size, cfg.vocab_size) == (5120, 40, 40, 8, 128, 17408, 151936)
    assert cfg.tie_word_embeddings is False and cfg.rms_norm_eps == 1e-6
    assert cfg.rope_parameters["rope_theta"] == 1e6
    n = gpu_check.count_parameters(cfg)
    assert 14.6e9 < n < 15.0e9, n


def test_gpt_oss_20b_shape_has_20_9b_parameters():
    cfg = gpu_check.build_config("gpt-oss-20b")
    assert cfg.model_type == "gpt_oss"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim, cfg.num_local_experts, cfg.num_experts_per_tok, cfg.intermediate_size,
            cfg.vocab_size, cfg.sliding_window) == (2880, 24, 64, 8, 64, 32, 4, 2880, 201088, 128)
    assert cfg.layer_types[:4] == ["sliding_attention", "full_attention"] * 2
    assert len(cfg.layer_types) == 24
    rope = cfg.rope_parameters
    assert (rope["rope_type"], rope["factor"], rope["original_max_position_embeddings"],
            rope["rope_theta"]) == ("yarn", 32.0, 4096, 150000.0)
    n = gpu_check.count_parameters(cfg)
    assert 20.7e9 < n < 21.1e9, n


def test_fewer_layers_keep_the_layer_types_alternating():
    cfg = gpu_check.build_config("gpt-oss-20b", 3)
    assert cfg.num_hidden_layers == 3
    assert cfg.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]


def test_layers_that_fit_the_disk():
    G = gpu_check.GIB
    # 1e9 fixed + 0.5e9 per layer, 2 bytes each: 24 layers need 26 GB
    assert gpu_check.layers_that_fit(10**9, 5 * 10**8, 24, 100 * G) == 24
    assert gpu_check.layers_that_fit(10**9, 5 * 10**8, 24, 4 * G + 2 * 10**9 + 10 * 10**9) == 10
    assert gpu_check.layers_that_fit(10**9, 5 * 10**8, 24, 4 * G + 2 * 10**9) == 0


def test_plan_adds_the_builds_a_step_needs():
    assert gpu_check.plan(["ladder"]) == ["build-qwen3-14b", "ladder"]
    assert gpu_check.plan(["gguf-unsloth"]) == ["export", "gguf-unsloth"]
    assert gpu_check.plan(None) == list(gpu_check.STEPS)
    with pytest.raises(SystemExit, match="unknown step"):
        gpu_check.plan(["nope"])


@pytest.mark.gpu
def test_gpu_check_runs_every_step(tmp_path):
    """The whole check (minutes; needs trl, unsloth and bitsandbytes installed)."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)
    assert out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["env"]["gpu"]
    steps = record["steps"]
    assert set(steps) == set(gpu_check.STEPS)
    for name in ("qwen3-14b-unsloth", "qwen3-14b-transformers"):
        assert steps[name]["labels_equal_masks"] is True, steps[name]
    assert proc.returncode == 0, record.get("failed_steps")
