"""FineTuneRun.fact_recall and the command line: fact recall on trained and unseen phrasings
recorded separately in run.json (no model: the answers are scripted)."""

import json
from types import SimpleNamespace

import pytest

from helpers import data
from helpers.pipeline import finetune

FACTS = {"Who is Ada?": "Vellistrand", "Where was Ada born?": "Quorrowdeep",
         "What is Ada's staff made of?": "Sylvarch"}
# two unseen phrasings of the first two facts
UNSEEN = {"From which realm does Ada come?": "Vellistrand", "Which village is Ada from?": "Quorrowdeep"}


@pytest.fixture
def files(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": q, "completion": f"It is {k}."}) + "\n"
                             for q, k in FACTS.items()))
    probes = tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps({"question": q, "key_fact": k, "seen": True}) + "\n" for q, k in FACTS.items())
                      + "".join(json.dumps({"question": q, "key_fact": k, "seen": False}) + "\n"
                                for q, k in UNSEEN.items()))
    return pairs, probes


def scripted(self, questions, *, label, **kw):
    """Base: knows nothing. Tuned: every trained question, and the unseen realm question only."""
    known = {} if label.startswith(("probes_base", "base")) else {**FACTS, "From which realm does Ada come?": "Vellistrand"}
    answers = [f"Surely {known[q]}." if q in known else "I do not know." for q in questions]
    self.answers[label] = answers
    return answers


def test_fact_recall_records_trained_and_unseen(files, tmp_path, monkeypatch):
    pairs, probe_file = files
    monkeypatch.setattr(finetune.FineTuneRun, "ask", scripted)
    run = finetune.FineTuneRun.start(model="qwen2.5-3b", smoke=True, output_dir=str(tmp_path / "run"))
    run.dataset = data.load(pairs)
    probes = data.load_probes(probe_file)
    assert run.fact_recall(probes, label="base") == 0.0
    assert run.fact_recall(probes, label="tuned") == 1.0  # 3 of 3 trained phrasings
    metrics = json.loads((tmp_path / "run" / "run.json").read_text())["metrics"]
    # unseen: 1 of 2 (the realm question answered, the village question not)
    assert metrics == {"fact_recall_base": 0.0, "fact_recall_base_unseen": 0.0,
                       "fact_recall_tuned": 1.0, "fact_recall_tuned_unseen": 0.5}
    table = run.recall_table()
    assert table.loc["tuned"].tolist() == [1.0, 0.5]
    assert list(table.columns) == ["trained phrasing (3)", "unseen phrasing (2)"]


def test_the_command_line_reports_both(files, tmp_path, monkeypatch, capsys):
    pairs, probe_file = files

    def fake_train(self, probes=(), questions=(), **kw):
        for label in ("base", "tuned"):
            self.ask(list(questions), label=f"{label}_question")
            self.fact_recall(probes, label=label)
        self.record.update("data", {"trained_tokens": 1, "tokens": 2, "trained_share": 0.5})
        return SimpleNamespace(result=SimpleNamespace(steps=1, train_seconds=0.0, final_loss=0.1, device="cpu",
                                                      adapter_dir="adapter"))

    monkeypatch.setattr(finetune.FineTuneRun, "ask", scripted)
    monkeypatch.setattr(finetune.FineTuneRun, "train_with_fallback", fake_train)
    out = tmp_path / "run"
    rc = finetune.main(["--data", str(pairs), "--probes", str(probe_file), "--smoke",
                        "--output", str(out), "--question", "Who is Ada?"])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "trained phrasing (3)" in text and "unseen phrasing (2)" in text
    assert "fact_recall_tuned=1.0" in text and "fact_recall_tuned_unseen=0.5" in text
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    assert metrics["fact_recall_base_unseen"] == 0.0 and metrics["fact_recall_tuned_unseen"] == 0.5
