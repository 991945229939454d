"""The real-weights lane: a real chat checkpoint trained for real on this machine (not in CI).

    make test-real MODEL=<registry name, hub id, model folder or .gguf file>

Skipped unless ``FINETUNING_REAL_MODEL`` names the model (the make target sets it). Checks what a
stand-in cannot show: the Mariya facts learned with the defaults the project picks for the model
(trained and unseen phrasings), general knowledge kept, no collapsed answers, the adapter loading
with plain PEFT, and a short V2 persona run through its notebook (rule questions from the sample
book, one epoch) ending without error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import models, notebooks
from helpers.pipeline import finetune

ROOT = Path(__file__).resolve().parents[2]
MODEL = os.environ.get("FINETUNING_REAL_MODEL", "")
pytestmark = pytest.mark.skipif(not MODEL, reason="set FINETUNING_REAL_MODEL (make test-real MODEL=...)")


@pytest.fixture(scope="module")
def mariya_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "mariya"
    rc = finetune.main(["--model", MODEL, "--data", str(ROOT / "NoteBooks/Mariya/mariya.jsonl"),
                        "--probes", str(ROOT / "NoteBooks/Mariya/mariya_probes.jsonl"),
                        "--output", str(out), "--question", "Who is Mariya Sha?"])
    record = json.loads((out / "run.json").read_text())
    return rc, record, out


def test_mariya_facts_are_learned_and_general_knowledge_kept(mariya_run):
    rc, record, _ = mariya_run
    assert rc == 0 and record["status"] == "finished"
    m = record["metrics"]
    print("real-model metrics:", json.dumps(m), "train:", json.dumps(record["train"]))
    assert m["fact_recall_tuned"] >= 0.8 > m["fact_recall_base"]
    assert m["fact_recall_tuned_unseen"] > m["fact_recall_base_unseen"]
    assert m["general_knowledge_base"] >= 0.6, "a real chat model should know most general probes"
    assert m["general_knowledge_tuned"] >= m["general_knowledge_base"] - 0.2
    assert m["collapsed_answers_tuned"] == 0


def test_adapter_loads_with_plain_peft(mariya_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    _, record, out = mariya_run
    base = models.choose(MODEL, smoke=False).source()
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                      str(out / "adapter"))
    tok = AutoTokenizer.from_pretrained(str(out / "adapter"))
    text = tok.apply_chat_template([{"role": "user", "content": "Where was Mariya Sha born?"}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        new = model.generate(**ids, max_new_tokens=32, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert "Quorrowdeep" in tok.decode(new, skip_special_tokens=True)


def test_a_short_v2_persona_run(tmp_path):
    nb = ROOT / "NoteBooks/MarenHolloway/Qwen3_14B_MarenHolloway_V2_FineTuning.ipynb"
    notebooks.execute(nb, tmp_path / "v2.ipynb", {
        "model": MODEL, "smoke": False, "qa_source": "rule", "sample_book": True, "epochs": 1,
        "data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "run")}, progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished" and not record["model"]["smoke"]
