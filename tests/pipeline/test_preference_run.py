"""The DPO run object: what it records before any model is loaded, its mistakes, and the
comparison finding it as the variant "<model>:dpo"."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.data import persona as personas
from helpers.evaluation import compare
from helpers.pipeline.preference import PreferenceRun

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def maren(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNING_WORKDIR", str(tmp_path))
    return personas.load(ROOT / "NoteBooks" / "MarenHolloway", smoke=True)


def test_the_dpo_spec_resolves_to_the_dpo_run(maren):
    before = compare.variants(maren, ["qwen3-14b", "qwen3-14b:dpo"], smoke=True)
    assert before[1].version == "DPO" and not before[1].ready   # listed as missing until trained
    run = PreferenceRun.start(model="qwen3-14b", smoke=True, name=f"{maren.slug}-dpo",
                              system_prompt=maren.system_prompt, beta=0.2,
                              parameters={"persona": maren.name, "data": "v2_train.jsonl"})
    record = json.loads((run.output_dir / "run.json").read_text())
    assert record["parameters"]["recipe"] == "dpo" and record["dpo"]["beta"] == 0.2
    assert record["dpo"]["learning_rate"] == pytest.approx(run.cfg.learning_rate * 0.1)
    assert "beta" not in record["dpo"]["reasons"] and "loss_type" in record["dpo"]["reasons"]
    base, tuned = compare.variants(maren, ["qwen3-14b", "qwen3-14b:dpo"], smoke=True)
    assert tuned.run_dir == run.output_dir and run.output_dir.name == "MarenHolloway-dpo-qwen3-14b-smoke"
    assert tuned.name == "Qwen3-14B DPO" and tuned.version == "DPO" and tuned.base == base.name
    assert tuned.adapter == run.output_dir / "adapter"
    table = run.dpo_settings()
    assert table.loc["beta", "why"] == "set explicitly" and "sigmoid" in table.loc["loss_type", "why"]


def test_mistakes_are_named(maren):
    run = PreferenceRun.start(model="qwen3-14b", smoke=True, name=f"{maren.slug}-dpo")
    with pytest.raises(ValueError, match=r"call run.load_data"):
        run.make_pairs()
    run.dataset = SimpleNamespace(conversations=[])
    run.model = SimpleNamespace(peft_config={"default": None})   # a model already carrying an adapter
    with pytest.raises(ValueError, match="not the base model's"):
        run.make_pairs()
    with pytest.raises(ValueError, match="loss_type='kto'"):
        PreferenceRun.start(model="qwen3-14b", smoke=True, loss_type="kto")


def test_one_process_only(maren, monkeypatch):
    from helpers.runtime.distributed import DistributedError
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="without accelerate launch"):
        PreferenceRun.start(model="qwen3-14b", smoke=True, name=f"{maren.slug}-dpo")
