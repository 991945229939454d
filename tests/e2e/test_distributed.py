"""More than one process: `accelerate launch` with 2 CPU processes runs the command line end to
end under DDP (gloo), DeepSpeed ZeRO-2/3 (its CPU accelerator, over gloo; skipped where deepspeed is
not installed) and FSDP2 (over gloo, with accelerate's one CPU refusal forced, see
FORCE_FSDP_ON_CPU); each writes the whole adapter once and it reloads with plain PEFT. FSDP on a
CPU without that is refused with the reason; the accelerate configs load; Unsloth is refused
under several processes."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.pipeline import finetune
from helpers.training import trainer as train_mod

ROOT = Path(__file__).resolve().parents[2]
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


def _after_import(name, patch):
    # run patch(module) once `name` is imported (the launched processes import it late)
    import importlib.abc, importlib.util

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)
            spec.loader.exec_module = exec_module
            return spec
    sys.meta_path.insert(0, Finder())


def _log_shards(trainer_module):
    # at each save, every process logs how much of each LoRA tensor it holds: FSDP2 a DTensor's
    # local shard, ZeRO-3 its ds_tensor partition; otherwise the whole tensor
    import json
    save_model = trainer_module.Trainer.save_model

    def logged(self, *args, **kwargs):
        rows = []
        for name, p in self.model_wrapped.named_parameters():
            if "lora_" not in name:
                continue
            if hasattr(p, "ds_tensor"):
                local, full = p.ds_tensor.numel(), p.ds_numel
            elif hasattr(p, "to_local"):
                local, full = p.to_local().numel(), p.numel()
            else:
                local, full = p.numel(), p.numel()
            rows.append([name, local, full])
        with open(os.environ["FT_SHARD_LOG"], "a") as fh:
            fh.write(json.dumps({"rank": int(os.environ.get("RANK", "0")), "params": rows}) + "\\n")
        return save_model(self, *args, **kwargs)
    trainer_module.Trainer.save_model = logged


if os.environ.get("FT_SHARD_LOG"):
    _after_import("transformers.trainer", _log_shards)
'''

# accelerate 1.15 never selects FSDP on a CPU (state.py: AcceleratorState becomes FSDP only from
# MULTI_GPU/NPU/XPU/..., and without CUDA TrainingArguments' use_cpu makes it MULTI_CPU). This
# hook forces that one decision, with the FSDP plugin accelerate itself built from the launch's
# config; everything after it is the real code: accelerate's fsdp2_prepare_model (torch's
# fully_shard per decoder layer over gloo), the Trainer's FSDP checkpoint and save_model's gather.
FORCE_FSDP_ON_CPU = '''
import os

if os.environ.get("FT_FORCE_FSDP_ON_CPU"):
    def _force(state_module):
        from accelerate.utils import DistributedType
        init = state_module.AcceleratorState.__init__

        def forced(self, *args, fsdp_plugin=None, **kwargs):
            init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
            if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
                self.distributed_type = DistributedType.FSDP
                self.fsdp_plugin = fsdp_plugin
                state_module.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        state_module.AcceleratorState.__init__ = forced
    _after_import("accelerate.state", _force)
'''


def _gloo() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_gloo_available()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: Path, random_standin, tmp_path, *, launch_args=(), env=None, hook=""):
    """``accelerate launch --config_file config -m helpers.finetune`` with 2 processes on the
    random tiny-qwen2.5 and 32 Mariya rows (8 per process and step: 2 steps in one epoch).
    Returns (process, seconds, run folder, tmp_path): saves.log has the RANK of each process that
    wrote adapter_config.json, shards.log what each process held at each save."""
    data = tmp_path / "mariya32.jsonl"
    data.write_text("".join(MARIYA.read_text(encoding="utf-8").splitlines(keepends=True)[:32]))
    hooks = tmp_path / "hook"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SAVE_HOOK + hook)
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks), str(ROOT)]),
               FT_SAVE_LOG=str(tmp_path / "saves.log"), FT_SHARD_LOG=str(tmp_path / "shards.log"),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               CUDA_VISIBLE_DEVICES="", **(env or {}))  # CPU processes, on a GPU machine too
    env.pop("FINETUNING_SMOKE", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           *launch_args, "--main_process_port", str(_free_port()),
           "-m", "helpers.finetune", "--model", str(random_standin("qwen2.5")), "--data", str(data),
           "--output", str(out), "--epochs", "1", "--batch-size", "8", "--grad-accum", "1",
           "--question", "Who is Mariya Sha?"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    return proc, time.time() - t0, out, tmp_path


def _check_run(proc, out, kind: str) -> dict:
    """The run finished in 2 processes under ``kind``, trained 2 steps with finite losses, and
    the adapter was written once, by the main process."""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["train"]["world_size"] == 2 and record["train"]["distributed_type"] == kind
    # 32 examples, 8 per process and step, 2 processes: 2 optimizer steps in one epoch
    assert record["train"]["steps"] == 2
    losses = [h["loss"] for h in record["loss_history"]] + [record["train"]["final_loss"]]
    assert losses and all(math.isfinite(x) for x in losses)
    assert not list(out.glob("*.tmp"))
    assert (out.parent / "saves.log").read_text().split() == ["0"]
    assert proc.stdout.count("Run record:") == 1
    assert f"Distributed: 2 processes ({kind})" in proc.stdout
    return record


def _check_whole_adapter(adapter: Path, base: Path) -> None:
    """Every LoRA tensor of every targeted module is in the file with its whole shape (lora_A
    [r, in], lora_B [out, r]), every lora_B moved from zero (PEFT starts them at zero), and the
    adapter reloads with plain PEFT on the base model, changing its finite outputs."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = json.loads((adapter / "adapter_config.json").read_text())
    r, targets = config["r"], set(config["target_modules"])
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    expected = {}
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in targets and isinstance(module, torch.nn.Linear):
            expected[f"base_model.model.{name}.lora_A.weight"] = (r, module.in_features)
            expected[f"base_model.model.{name}.lora_B.weight"] = (module.out_features, r)
    assert len(expected) == 2 * len(targets) * model.config.num_hidden_layers
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert all(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)

    ids = torch.arange(3, 35).unsqueeze(0)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(model, str(adapter))
        loaded = {k.replace(".default.", "."): v for k, v in tuned.state_dict().items() if "lora_" in k}
        assert loaded.keys() == weights.keys()  # PEFT put every tensor of the file in its module
        assert all(torch.equal(loaded[k], weights[k]) for k in weights)
        logits = tuned(input_ids=ids).logits
    assert torch.isfinite(logits).all() and not torch.allclose(logits, plain)


def _shards(tmp_path: Path) -> dict[int, dict[str, tuple[int, int]]]:
    """rank -> LoRA parameter -> (elements this process held, elements of the whole tensor), at
    the last save."""
    last = {}
    for line in (tmp_path / "shards.log").read_text().splitlines():
        row = json.loads(line)
        last[row["rank"]] = {name: (local, full) for name, local, full in row["params"]}
    return last


def _check_sharded(tmp_path: Path) -> None:
    """Each of the 2 processes held about half of every LoRA tensor (so save_model gathered)."""
    shards = _shards(tmp_path)
    assert sorted(shards) == [0, 1] and shards[0].keys() == shards[1].keys() and shards[0]
    for name, (_, full) in shards[0].items():
        held = [shards[rank][name][0] for rank in (0, 1)]
        assert all(0 < h <= -(-full // 2) for h in held) and sum(held) >= full, (name, held, full)


@pytest.mark.skipif(not _gloo(), reason="torch.distributed with the gloo backend is not available")
def test_ddp_on_two_cpu_processes(random_standin, tmp_path):
    proc, seconds, out, _ = _launch(CONFIGS / "ddp_cpu.yaml", random_standin, tmp_path)
    record = _check_run(proc, out, "MULTI_CPU")
    _check_whole_adapter(out / "adapter", random_standin("qwen2.5"))
    # one report, printed by the main process; the answers come from it alone
    assert proc.stdout.count("Q: Who is Mariya Sha?") == 1
    assert len(record["answers"]["tuned_question"]) == 1
    assert seconds < 150, f"the 2-process run took {seconds:.0f} s"


def _deepspeed_skip() -> str | None:
    import importlib.util
    if importlib.util.find_spec("deepspeed") is None:
        return ("deepspeed is not installed (optional, not in the locks: pip install deepspeed); "
                "its CPU accelerator runs this test where it is")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return ("no C++ compiler: DeepSpeed's CPU accelerator compiles its shared-memory "
                "collectives (deepspeed_shm_comm) when the process group starts")
    return None


@pytest.mark.slow
@pytest.mark.skipif(not _gloo(), reason="torch.distributed with the gloo backend is not available")
@pytest.mark.skipif(_deepspeed_skip() is not None, reason=str(_deepspeed_skip()))
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_on_two_cpu_processes(stage, random_standin, tmp_path):
    # the shipped config, in float32 (deepspeed's CPU accelerator, gloo: no oneCCL needed)
    proc, seconds, out, tmp = _launch(CONFIGS / f"deepspeed_zero{stage}.yaml", random_standin, tmp_path,
                                      launch_args=["--mixed_precision", "no"], env={"DS_ACCELERATOR": "cpu"})
    _check_run(proc, out, "DEEPSPEED")
    if stage == 3:
        _check_sharded(tmp)  # ZeRO-3 splits the weights; the adapter was gathered for saving
    else:
        assert all(local == full for rank in _shards(tmp).values() for local, full in rank.values())
    _check_whole_adapter(out / "adapter", random_standin("qwen2.5"))
    assert "Answers skipped: DEEPSPEED" in proc.stdout
    # the first run on a machine also compiles deepspeed_shm_comm (~2 minutes on 2 cores)
    assert seconds < 300, f"the 2-process run took {seconds:.0f} s"


@pytest.mark.slow
@pytest.mark.skipif(not _gloo(), reason="torch.distributed with the gloo backend is not available")
def test_fsdp2_over_gloo_on_two_cpu_processes(random_standin, tmp_path):
    proc, seconds, out, tmp = _launch(CONFIGS / "fsdp.yaml", random_standin, tmp_path,
                                      launch_args=["--mixed_precision", "no"],
                                      env={"FT_FORCE_FSDP_ON_CPU": "1"}, hook=FORCE_FSDP_ON_CPU)
    _check_run(proc, out, "FSDP")
    _check_sharded(tmp)  # each process held half of each tensor: save_model gathered them
    # accelerate's FSDP checkpoint code wrote the model and optimizer (the FSDP path, not DDP's)
    assert {"pytorch_model_fsdp.bin", "optimizer.bin"} <= {p.name for p in (out / "checkpoints").glob("checkpoint-*/*")}
    _check_whole_adapter(out / "adapter", random_standin("qwen2.5"))
    assert "Answers skipped: FSDP" in proc.stdout
    assert seconds < 150, f"the 2-process run took {seconds:.0f} s"


@pytest.mark.skipif(not _gloo(), reason="torch.distributed with the gloo backend is not available")
def test_fsdp_on_a_cpu_is_refused_with_the_reason(random_standin, tmp_path):
    # unforced, accelerate would train plain DDP (MULTI_CPU) while the run believed it was FSDP
    proc, _, out, tmp = _launch(CONFIGS / "fsdp.yaml", random_standin, tmp_path,
                                launch_args=["--mixed_precision", "no"])
    assert proc.returncode != 0
    assert "error: accelerate launch asked for FSDP, but accelerate set up MULTI_CPU." in proc.stderr
    assert "accelerate (1.15) turns a run into FSDP only on a GPU-type device" in proc.stderr
    assert "on a CPU use accelerate/ddp_cpu.yaml" in proc.stderr
    assert not (out / "adapter").exists() and not (tmp / "saves.log").exists()


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
