"""More than one process: `accelerate launch` with DDP on the CPU (2 processes, gloo) runs the
command line end to end; the accelerate configs load; Unsloth is refused under several processes."""

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import finetune
from helpers import train as train_mod

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "accelerate"
MARIYA = ROOT / "NoteBooks" / "Mariya" / "mariya.jsonl"

# Imported by every Python process of the launch (it is on PYTHONPATH as sitecustomize): an audit
# hook appends the RANK of each process that opens adapter/adapter_config.json for writing.
SAVE_HOOK = '''
import os, sys

def _hook(event, args):
    if event != "open" or not str(args[0]).endswith(os.path.join("adapter", "adapter_config.json")):
        return
    mode, flags = args[1], args[2] or 0
    if (mode and any(c in mode for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR):
        with open(os.environ["FT_SAVE_LOG"], "a") as fh:
            fh.write(os.environ.get("RANK", "-") + "\\n")

if os.environ.get("FT_SAVE_LOG"):
    sys.addaudithook(_hook)
'''


def _gloo() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_gloo_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not _gloo(), reason="torch.distributed with the gloo backend is not available")
def test_ddp_on_two_cpu_processes(random_standin, tmp_path):
    data = tmp_path / "mariya32.jsonl"
    data.write_text("".join(MARIYA.read_text(encoding="utf-8").splitlines(keepends=True)[:32]))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SAVE_HOOK)
    saves = tmp_path / "saves.log"
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(ROOT)]), FT_SAVE_LOG=str(saves),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("FINETUNING_SMOKE", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "ddp_cpu.yaml"),
           "--main_process_port", str(_free_port()),
           "-m", "helpers.finetune", "--model", str(random_standin("qwen2.5")), "--data", str(data),
           "--output", str(out), "--epochs", "1", "--batch-size", "8", "--grad-accum", "1",
           "--question", "Who is Mariya Sha?"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]

    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["train"]["world_size"] == 2 and record["train"]["distributed_type"] == "MULTI_CPU"
    # 32 examples, 8 per process and step, 2 processes: 2 optimizer steps in one epoch
    assert record["train"]["steps"] == 2
    losses = [h["loss"] for h in record["loss_history"]] + [record["train"]["final_loss"]]
    assert losses and all(math.isfinite(x) for x in losses)
    assert not list(out.glob("*.tmp"))

    # the adapter was written once, by the main process, and its LoRA weights moved from their
    # initial values (PEFT starts every lora_B at zero)
    assert saves.read_text().split() == ["0"]
    from safetensors.torch import load_file
    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())

    # one report, printed by the main process; the answers come from it alone
    assert proc.stdout.count("Run record:") == 1 and proc.stdout.count("Q: Who is Mariya Sha?") == 1
    assert "Distributed: 2 processes (MULTI_CPU)" in proc.stdout
    assert len(record["answers"]["tuned_question"]) == 1
    assert seconds < 150, f"the 2-process run took {seconds:.0f} s"


def test_every_accelerate_config_loads():
    from accelerate.commands.config.config_args import load_config_from_file
    expected = {"ddp_cpu.yaml": "MULTI_GPU", "ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP",
                "deepspeed_zero2.yaml": "DEEPSPEED", "deepspeed_zero3.yaml": "DEEPSPEED"}
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(expected)
    for name, kind in expected.items():
        cfg = load_config_from_file(str(CONFIGS / name))
        assert cfg.distributed_type.value == kind, name
        assert cfg.num_processes == 2 and cfg.num_machines == 1, name
        assert "accelerate launch --config_file accelerate/" + name in (CONFIGS / name).read_text()
    assert load_config_from_file(str(CONFIGS / "ddp_cpu.yaml")).use_cpu is True
    fsdp = load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    for stage in (2, 3):
        ds = load_config_from_file(str(CONFIGS / f"deepspeed_zero{stage}.yaml")).deepspeed_config
        assert ds["zero_stage"] == stage


def test_where_a_process_stands(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(var, raising=False)
    assert train_mod.distributed() == train_mod.Distributed()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    d = train_mod.distributed()
    assert (d.world_size, d.rank, d.local_rank, d.active, d.is_main) == (4, 3, 1, True, False)
    assert d.type in ("MULTI_GPU", "MULTI_CPU") and not d.shards_weights
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert train_mod.distributed().type == "FSDP" and train_mod.distributed().shards_weights
    # Unsloth is single-GPU: "auto" picks transformers under several processes
    assert train_mod.select_backend("auto") == "transformers"


def test_unsloth_is_refused_under_several_processes(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Who?", "completion": "Mariya."}) + "\n")
    rc = finetune.main(["--data", str(data), "--model", "qwen2.5-3b", "--smoke", "--backend", "unsloth",
                        "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "backend='unsloth' was asked for in a run of 2 processes, but Unsloth trains on one GPU" in err
    assert "--backend transformers" in err
    with pytest.raises(train_mod.DistributedError, match="Unsloth is single-GPU"):
        train_mod.select_backend("unsloth")
