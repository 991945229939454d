"""backend="tinker" from the command line (``python -m helpers.finetune --backend tinker``) and
through :func:`helpers.pipeline.runs.start_run` (what the notebooks call): the real SDK against
the loopback server of tests/support/fake_tinker.py."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.evaluation import health
from helpers.notebooks import setup as notebook
from helpers.pipeline import finetune, runs
from helpers.pipeline.tinker_run import TinkerRun
from helpers.training import tinker_backend, tinker_models

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support.fake_tinker import TinkerLoopback, standin_shapes, tinker_adapter_files  # noqa: E402

tinker = pytest.importorskip("tinker", reason='the Tinker SDK is not installed (pip install ".[tinker]")')
pytestmark = pytest.mark.skipif(
    tinker.__version__ != tinker_models.SDK_VERSION,
    reason=f"the loopback server speaks tinker {tinker_models.SDK_VERSION}'s REST paths; installed: {tinker.__version__}")


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setattr(tinker_models, "_setting", lambda name: "tml-loopback" if name == "TINKER_API_KEY" else None)


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Question {i} about Mariya?",
                                     "completion": f"Mariya answer {i}."}) + "\n" for i in range(6)))
    return p


@pytest.fixture
def server(tmp_path, tokenizer_for, random_standin, monkeypatch):
    """The loopback Tinker service, the SDK pointed at it, the Qwen3 stand-in's tokenizer served
    for Qwen/Qwen3-32B (no hub here)."""
    import transformers
    tok = tokenizer_for("qwen3")
    raw = tinker_adapter_files(tmp_path / "made", standin_shapes(random_standin("qwen3")))
    reply = {True: tok.encode("Mariya Sha builds robots.", add_special_tokens=False),
             False: tok.encode("I do not know.", add_special_tokens=False)}
    asked: list[str] = []

    def from_pretrained(name, *a, **kw):
        asked.append(name)
        return tok

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    with TinkerLoopback(files={p.name: p.read_bytes() for p in raw.iterdir()},
                        reply=lambda trained: reply[trained]) as srv:
        # the clients our code makes get the server's URL. Not through TINKER_BASE_URL alone:
        # tinker 0.38 keeps one session-less RestClient holder per (base_url argument, key) for
        # the life of the process (internal_client_holder._SessionlessHolderCache), so with
        # base_url=None every later test would reach the first test's server
        for name in ("service_client", "rest_client"):
            made = getattr(tinker_backend, name)
            monkeypatch.setattr(tinker_backend, name, lambda base_url=None, made=made: made(base_url or srv.url))
        srv.tokenizer_asked = asked
        yield srv


def test_the_command_line_trains_on_tinker(server, key, data, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="helpers.pipeline.tinker_run"):
        rc = finetune.main(["--backend", "tinker", "--model", "qwen3-32b", "--data", str(data),
                            "--output", str(out), "--question", "Who is Mariya Sha?",
                            "--replay", "0", "--epochs", "1", "--batch-size", "2",
                            "--grad-accum", "1", "--lora-r", "4"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "Trained 3 steps on tinker:Qwen/Qwen3-32B" in printed
    assert "base : I do not know." in printed and "tuned: Mariya Sha builds robots." in printed
    assert f"General knowledge ({len(health.GENERAL_PROBES)} questions" in printed          # a real model: asked base and tuned
    assert server.tokenizer_asked == ["Qwen/Qwen3-32B"]
    assert len(server.fwdbwd) == 3 and server.created[0]["base_model"] == "Qwen/Qwen3-32B"
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "finished" and rec["model"]["backend"] == "tinker"
    assert rec["train"]["steps"] == 3 and rec["tinker"]["tokens"]["train"] > 0
    assert rec["tinker"]["tokens"]["sample"] > 0 and rec["tinker"]["usd"] is None
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert any("Tinker: " in r.message and "train" in r.message for r in caplog.records)


def test_command_line_errors_for_tinker_name_the_fix(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tinker_models, "_setting", lambda name: None)   # no TINKER_API_KEY
    assert finetune.main(["--backend", "tinker", "--model", "qwen3-32b", "--data", str(data),
                          "--output", str(tmp_path / "o")]) == 2
    assert "needs a Tinker API key: set TINKER_API_KEY" in capsys.readouterr().err
    assert finetune.main(["--backend", "tinker", "--model", "qwen2.5-3b", "--data", str(data),
                          "--output", str(tmp_path / "o")]) == 2
    assert "qwen3-30b-a3b" in capsys.readouterr().err        # the nearest model Tinker serves


def test_python_dash_m_sees_the_tinker_backend(tmp_path):
    """``python -m helpers.finetune`` runs finetune.py as ``__main__``, a copy of the module: the
    backend table it reads is arguments.RUN_CLASSES, filled when helpers.pipeline is imported."""
    r = subprocess.run([sys.executable, "-m", "helpers.finetune", "--backend", "tinker", "--model",
                        "llama-9000", "--data", str(tmp_path / "x.jsonl"), "--output",
                        str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "model='llama-9000'" in r.stderr and "Tinker" in r.stderr, r.stderr


def test_start_run_picks_the_class_and_the_notebook_steps_run(server, key, data, tmp_path):
    assert runs.run_class("tinker") is TinkerRun and runs.run_class(None) is finetune.FineTuneRun
    assert runs.run_class("transformers") is finetune.FineTuneRun
    # TinkerRun's own keywords (client, rest, ...) pass through
    run = runs.start_run(model="qwen3-32b", backend="tinker", output_dir=str(tmp_path / "run"),
                         name="mariya", smoke=None, replay=0, epochs=1, batch_size=2,
                         grad_accum=1, lora_r=4, seed=42, system_prompt="",
                         client=tinker.ServiceClient(base_url=server.url, api_key="tml-loopback"),
                         rest=tinker.RestClient(base_url=server.url, api_key="tml-loopback"))
    assert isinstance(run, TinkerRun)
    # the Mariya notebook's cells, in order
    notebook.settings_table(run)
    run.load_data(str(data))
    run.load_model()
    before = run.ask(["Who is Mariya Sha?"], label="base_question")[0]
    probes = [{"question": "Who is Mariya Sha?", "key_fact": "robots", "seen": False}]
    run.fact_recall(probes, label="base")
    run.general_knowledge(label="base")
    stats = run.tokenize()
    assert stats["trained_tokens"] > 0 and "Mariya answer 0." in run.example_mask(0)["trained"]
    assert run.add_lora() is None
    result = run.train(live_plot=False)
    assert result.steps == 3 and result.tokens_per_second > 0
    after = run.ask(["Who is Mariya Sha?"], label="tuned_question")[0]
    run.fact_recall(probes, label="tuned")
    assert (before, after) == ("I do not know.", "Mariya Sha builds robots.")
    assert run.record.data["metrics"]["fact_recall_tuned_unseen"] == 1.0
    run.recall_table()
    run.finish()
    summary = notebook.run_summary(run)["value"]
    assert summary["backend"] == "tinker" and summary["tinker_train_tokens"] > 0
    assert summary["tinker_sample_tokens"] > 0
    assert summary["tinker_usd"] == "no price known (pass prices=)"
    notebook.files_table(run.output_dir)


def test_start_run_keeps_local_backends_local(tmp_path, caplog):
    run = runs.start_run(model="qwen2.5-3b", backend="transformers", smoke=True,
                         output_dir=str(tmp_path / "local"))
    assert type(run) is finetune.FineTuneRun and run.cfg.backend == "transformers"
    with pytest.raises(ValueError, match="backend"):
        runs.start_run(model="qwen2.5-3b", backend="cuda-please", smoke=True,
                       output_dir=str(tmp_path / "x"))


def notebook_cells(path: Path) -> list[str]:
    """The code cells of a py:percent notebook source, in order (markdown cells left out)."""
    cells = path.read_text().split("\n# %%")[1:]
    return ["\n".join(c.splitlines()[1:]) for c in cells if not c.lstrip().startswith("[markdown]")]


def test_the_mariya_notebook_runs_on_tinker(server, key, tmp_path, monkeypatch, capsys):
    """The notebook's own cells (NoteBooks/Mariya/Qwen2.5_3B_Mariya_FineTuning.py), executed in
    order with backend="tinker": every step it calls exists on TinkerRun and the summary shows
    Tinker's tokens."""
    cells = notebook_cells(ROOT / "NoteBooks/Mariya/Qwen2.5_3B_Mariya_FineTuning.py")
    assert cells[0].startswith("model: str =")               # the parameters cell
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: ROOT)   # no kernel, no log handlers here
    monkeypatch.setattr(tinker_models, "_setting", lambda name: "tml-loopback" if name == "TINKER_API_KEY" else None)
    ns: dict = {}
    exec(cells[0], ns)
    ns.update(backend="tinker", model="qwen3-32b", output_dir=str(tmp_path / "mariya"), replay=0,
              epochs=1.0, batch_size=16, grad_accum=1, lora_r=4)
    for cell in cells[1:]:
        exec(cell, ns)
    run = ns["run"]
    assert isinstance(run, TinkerRun) and ns["result"].steps == 15     # 240 pairs / 16
    assert (ns["before"], ns["after"]) == ("I do not know.", "Mariya Sha builds robots.")
    rec = json.loads((tmp_path / "mariya" / "run.json").read_text())
    assert rec["status"] == "finished" and rec["model"]["backend"] == "tinker"
    assert {"fact_recall_base", "fact_recall_tuned", "general_knowledge_tuned"} <= set(rec["metrics"])
    summary = notebook.run_summary(run)["value"]
    assert summary["tinker_train_tokens"] == rec["tinker"]["tokens"]["train"] > 0
    assert len(server.fwdbwd) == 15
