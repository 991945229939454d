import json

import pytest

from helpers.training.runrecord import RunRecord, load


def test_run_json_has_everything_and_survives_a_failure(tmp_path):
    rec = RunRecord(tmp_path / "run1", parameters={"epochs": 3})
    with rec.phase("load"):
        pass
    with pytest.raises(RuntimeError):
        with rec.phase("train"):
            raise RuntimeError("out of memory")
    d = json.loads((tmp_path / "run1" / "run.json").read_text())
    assert d["parameters"] == {"epochs": 3}
    assert set(d["phases"]) == {"load", "train"}
    assert d["status"] == "failed" and "out of memory" in d["errors"][0]["error"]
    assert d["versions"]["transformers"] and d["versions"]["python"]
    assert d["hardware"]["cpu_count"] >= 1 and d["hardware"]["device"]
    assert d["memory"]["peak_rss_gb"] > 0


def test_metrics_and_finish(tmp_path):
    rec = RunRecord(tmp_path)
    rec.set_metric("fact_recall_tuned", 0.95)
    d = rec.finish()
    assert d["status"] == "finished" and d["wall_seconds"] >= 0
    assert load(tmp_path)["metrics"] == {"fact_recall_tuned": 0.95}
    assert rec.summary()["fact_recall_tuned"] == 0.95
