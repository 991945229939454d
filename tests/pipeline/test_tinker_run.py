"""TinkerRun (helpers/pipeline/tinker_run.py): the notebook's steps on backend="tinker", the real
SDK against the loopback server of tests/support/fake_tinker.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers.pipeline import finetune
from helpers.pipeline.tinker_run import TinkerRun
from helpers.training import tinker_models

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.fake_tinker import TinkerLoopback, standin_shapes, tinker_adapter_files  # noqa: E402

tinker = pytest.importorskip("tinker", reason='the Tinker SDK is not installed (pip install ".[tinker]")')
pytestmark = pytest.mark.skipif(
    tinker.__version__ != tinker_models.SDK_VERSION,
    reason=f"the loopback server speaks tinker {tinker_models.SDK_VERSION}'s REST paths; installed: {tinker.__version__}")


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setattr(tinker_models, "_setting", lambda name: "tml-loopback" if name == "TINKER_API_KEY" else None)


def test_the_notebook_steps_run_on_tinker(tmp_path, key, tokenizer_for, random_standin):
    tok = tokenizer_for("qwen3")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i} about Mariya?",
                                        "completion": f"Mariya answer {i}."}) + "\n" for i in range(6)))
    raw = tinker_adapter_files(tmp_path / "made", standin_shapes(random_standin("qwen3")))
    reply = {True: tok.encode("Mariya Sha builds robots.", add_special_tokens=False),
             False: tok.encode("I do not know.", add_special_tokens=False)}
    with TinkerLoopback(files={p.name: p.read_bytes() for p in raw.iterdir()},
                        reply=lambda trained: reply[trained]) as srv:
        run = TinkerRun.start(model="qwen3-32b", output_dir=str(tmp_path / "run"), replay=0,
                              client=tinker.ServiceClient(base_url=srv.url, api_key="tml-loopback"),
                              rest=tinker.RestClient(base_url=srv.url, api_key="tml-loopback"),
                              tokenizer=tok, epochs=1, batch_size=2, grad_accum=1, lora_r=4)
        run.load_data(str(data))
        outcome = run.train_with_fallback((), ["Who is Mariya Sha?"], live_plot=False)
        cost = run.cost()
        run.finish()
    assert outcome.result.steps == 3 and outcome.result.backend == "tinker"
    assert run.answers["base_question"] == ["I do not know."]
    assert run.answers["tuned_question"] == ["Mariya Sha builds robots."]
    assert len(srv.fwdbwd) == 3 and srv.created[0]["base_model"] == "Qwen/Qwen3-32B"
    assert cost["tokens"]["train"] == outcome.result.trained_tokens > 0
    assert cost["tokens"]["sample"] == len(reply[False]) + len(reply[True])
    assert cost["tokens"]["prefill"] == sum(len(s["prompt"]) for s in srv.samples)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["status"] == "finished" and rec["model"]["backend"] == "tinker"
    assert rec["tinker"]["tokens"] == cost["tokens"] and rec["tinker"]["usd"] is None
    assert rec["train"]["steps"] == 3 and len(rec["loss_history"]) == 3
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "run" / "loss.png").is_file()


def test_tinker_run_refuses_a_model_tinker_does_not_serve(tmp_path, key):
    with pytest.raises(tinker_models.TinkerModelError, match="model='qwen3-32b'"):
        TinkerRun.start(model="qwen3-14b", output_dir=str(tmp_path / "run"), client=object(), rest=object())
    with pytest.raises(ValueError, match="use FineTuneRun.start for local training"):
        TinkerRun.start(model="qwen3-32b", backend="transformers", client=object(), rest=object())


def test_fine_tune_run_points_to_tinker_run(tmp_path, key):
    with pytest.raises(ValueError, match=r"TinkerRun\.start"):
        finetune.FineTuneRun.start(model="qwen3-32b", output_dir=str(tmp_path / "run"), backend="tinker")
    assert not (tmp_path / "run" / "run.json").exists()      # stopped before any work
