"""The notebooks: generated from their sources, and executed headless on the stand-ins."""

import json

import pytest

from helpers import models, notebooks
from helpers.notebook import ROOT

MARIYA = ROOT / "NoteBooks" / "Mariya" / "Qwen2.5_3B_Mariya_FineTuning.ipynb"


def test_committed_notebooks_match_their_sources():
    assert notebooks.sources(), "no notebook sources found"
    assert notebooks.generate(check=True) == [], "run `make notebooks` and commit the result"


def test_notebooks_have_a_parameters_cell_and_no_outputs():
    assert len(notebooks.targets()) >= 6
    for target in notebooks.targets():
        nb = json.loads(target.read_text())
        src = target
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, src
        assert "smoke" in "".join(tagged[0]["source"])
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
        assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.skipif(models.cuda_available(), reason="checks the no-GPU stop")
def test_big_model_without_gpu_stops_at_the_first_gpu_cell(tmp_path):
    import papermill
    out = tmp_path / "executed.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as e:
        notebooks.execute(MARIYA, out, {"model": "gpt-oss-20b", "smoke": False,
                                        "output_dir": str(tmp_path / "run")}, progress=False)
    assert "GPURequiredError" in str(e.value) and "FINETUNING_SMOKE=1" in str(e.value)
    nb = json.loads(out.read_text())
    failed = [c for c in nb["cells"] if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "run.load_model()" in "".join(failed[0]["source"])
    # the cells before it ran: the data was loaded and validated
    assert any("240 training examples" in "".join(o.get("text", "")) for c in nb["cells"]
               for o in c.get("outputs", []))


def test_mariya_notebook_in_smoke_mode_learns_the_facts(tmp_path):
    out = tmp_path / "mariya.executed.ipynb"
    run_dir = tmp_path / "run"
    notebooks.execute(MARIYA, out, {"smoke": True, "output_dir": str(run_dir)}, progress=False)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["model"]["profile"] == "tiny-qwen2.5" and record["model"]["smoke"] is True
    assert record["metrics"]["fact_recall_base"] <= 0.1
    assert record["metrics"]["fact_recall_tuned"] >= 0.9
    assert record["status"] == "finished"
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no loss plot in the report"
    assert any("text/html" in o.get("data", {}) for o in outputs), "no tables in the report"


DATAPREP = ROOT / "NoteBooks" / "JordanPeterson" / "JordanPeterson_DataPrep.ipynb"


def test_dataprep_notebook_on_the_sample_book_and_its_cache(tmp_path):
    data_dir = tmp_path / "data"
    params = {"smoke": True, "qa_source": "rule", "sample_book": True, "output_dir": str(data_dir)}
    out = notebooks.execute(DATAPREP, tmp_path / "dataprep.ipynb", params, progress=False)
    v2 = [json.loads(line) for line in (data_dir / "v2_train.jsonl").read_text().splitlines()]
    v1 = (data_dir / "v1_train.jsonl").read_text().splitlines()
    heldout = json.loads((data_dir / "heldout.json").read_text())
    assert len(v2) == 2 * len(v1) > 0 and heldout["heldout"]
    assert all(c["messages"][0]["role"] == "system" and "Peterson" in c["messages"][0]["content"] for c in v2)
    held_text = {p["text"] for p in heldout["heldout"]}
    assert not held_text & {c["messages"][-1]["content"] for c in v2}, "held-out text in training"
    cache = [json.loads(line) for line in (data_dir / "questions.jsonl").read_text().splitlines()]
    assert {r["source"] for r in cache} == {"rule"}
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "SAMPLE BOOK" in text and "title page" in text
    assert sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", [])) == 1
    # a rerun asks for nothing: every passage comes from the cache
    notebooks.execute(DATAPREP, tmp_path / "again.ipynb", params, progress=False)
    again = json.loads((tmp_path / "again.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in again["cells"] for o in c.get("outputs", []))
    assert "0 asked" in text and len((data_dir / "questions.jsonl").read_text().splitlines()) == len(cache)


def test_persona_notebooks_share_one_shape():
    """Generated from one template: the same section headers in every persona notebook, and a
    template value left unfilled is an error."""
    heads = []
    for rel in notebooks.GENERATED:
        nb = json.loads((notebooks.NOTEBOOKS_DIR / rel).read_text())
        heads.append([c["source"] for c in nb["cells"] if c["cell_type"] == "markdown"
                      and "".join(c["source"]).startswith("## ")])
    assert all(h == heads[0] for h in heads) and len(heads[0]) >= 5
    with pytest.raises(KeyError, match="no value for"):
        notebooks._fill("persona_finetune.py", {"model": "x"})


@pytest.mark.parametrize("name,recipe", [
    ("Qwen3_14B_JordanPeterson_V2_FineTuning", "v2"),
    ("Qwen3_14B_JordanPeterson_FineTuning", "v1"),
    ("Qwen3_32B_JordanPeterson_FineTuning", "v2"),
    ("GPT_OSS_20B_JordanPeterson_FineTuning", "v1"),
])
def test_persona_notebooks_in_smoke_mode(tmp_path, name, recipe):
    nb_path = ROOT / "NoteBooks" / "JordanPeterson" / f"{name}.ipynb"
    params = {"smoke": True, "qa_source": "rule", "sample_book": True, "epochs": 2,
              "data_dir": str(tmp_path / "data"), "output_dir": str(tmp_path / "run")}
    out = notebooks.execute(nb_path, tmp_path / "executed.ipynb", params, progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    standin = "tiny-gpt-oss" if name.startswith("GPT_OSS") else "tiny-qwen3"
    assert record["status"] == "finished" and record["model"]["profile"] == standin
    assert record["train"]["steps"] > 0 and record["loss_history"]
    assert record["parameters"]["recipe"] == recipe
    assert record["data"]["truncated"] == 0
    assert len(record["answers"]["tuned_question"]) == 4
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "Trained:" in text
    if standin == "tiny-qwen3":
        assert "<think>" in text  # the rendered example shows the (untrained) think block
