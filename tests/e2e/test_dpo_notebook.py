"""The Maren Holloway DPO notebook in smoke mode, then the comparison taking its run as the
variant "qwen3-14b:dpo"."""

import json

from helpers import notebooks
from helpers.notebooks.setup import ROOT

FOLDER = ROOT / "NoteBooks" / "MarenHolloway"


def test_dpo_notebook_in_smoke_mode_and_its_run_in_the_comparison(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNING_WORKDIR", str(tmp_path))
    out = notebooks.execute(FOLDER / "Qwen3_14B_MarenHolloway_DPO_FineTuning.ipynb", tmp_path / "dpo.ipynb",
                            {"smoke": True, "max_pairs": 12, "heldout_fraction": 0.25, "batch_size": 2}, progress=False,
                            html=False)
    run_dir = tmp_path / "outputs" / "MarenHolloway-dpo-qwen3-14b-smoke"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["parameters"]["recipe"] == "dpo"
    assert record["model"]["profile"] == "tiny-qwen3" and record["train"]["steps"] > 0
    pairs = record["data"]["pairs"]
    assert pairs["pairs"] == 12 and pairs["heldout"] >= 1 and pairs["train"] + pairs["heldout"] == 12
    history = record["loss_history"]
    assert history[0]["reward_margin"] == 0 and history[-1]["reward_margin"] > 0   # the policy starts as the reference
    assert record["metrics"]["eval_reward_margin"] > 0
    assert (run_dir / "dpo.png").is_file() and (run_dir / "preference" / "rejected_answers.jsonl").is_file()
    cells = json.loads(out.read_text())["cells"]
    text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    assert "Chosen loss covers exactly the SFT-trained tokens: True" in text

    cmp = notebooks.execute(FOLDER / "AllModels_MarenHolloway_Comparison.ipynb", tmp_path / "cmp.ipynb",
                            {"smoke": True, "variants": ["qwen3-14b", "qwen3-14b:dpo"], "max_new_tokens": 24,
                             "trained_questions": 0, "retention": False, "knowledge_questions": 0},
                            progress=False, html=False)
    doc = json.loads((tmp_path / "outputs" / "comparison-MarenHolloway-smoke" / "comparison.json").read_text())
    assert doc["status"] == {"Qwen3-14B": "computed", "Qwen3-14B DPO": "computed"}
    dpo = next(v for v in doc["variants"] if v["name"] == "Qwen3-14B DPO")
    assert dpo["version"] == "DPO" and dpo["run_dir"] == str(run_dir)
    assert not [o for c in json.loads(cmp.read_text())["cells"] for o in c.get("outputs", [])
                if o.get("output_type") == "error"]
