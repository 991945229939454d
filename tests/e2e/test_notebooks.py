"""The notebooks: generated from their sources, and executed headless on the stand-ins."""

import json
import re
import shutil

import pytest

from helpers import models, notebooks
from helpers.data import persona as personas
from helpers.notebooks.setup import ROOT

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
    # the same facts asked in phrasings the training data does not hold: recorded, not required
    assert record["metrics"]["fact_recall_base_unseen"] <= 0.1
    assert 0.0 <= record["metrics"]["fact_recall_tuned_unseen"] <= 1.0
    assert record["status"] == "finished"
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no loss plot in the report"
    assert any("text/html" in o.get("data", {}) for o in outputs), "no tables in the report"
    # a report: progress is plain output, red (stderr) boxes only for warnings, and an HTML copy
    stderr = "".join("".join(o.get("text", "")) for o in outputs if o.get("name") == "stderr")
    assert " helpers." not in stderr.replace("WARNING", ""), stderr[:2000]
    assert "Trained" in "".join("".join(o.get("text", "")) for o in outputs if o.get("name") == "stdout")
    page = out.with_suffix(".html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "Mariya" in page and "image/png" in page


def test_mariya_notebook_trains_with_mlx(tmp_path):
    """backend="mlx" through the notebook (issue 14): MLX trains the stand-in (its Linux CPU
    build: a fifth of a pass, six steps; its 24 would take an hour), writes a PEFT adapter, and the
    tuned answers are asked through transformers with it."""
    pytest.importorskip("mlx_lm", reason="backend='mlx' needs mlx and mlx-lm (requirements-cpu.txt)")
    out = tmp_path / "mariya-mlx.executed.ipynb"
    run_dir = tmp_path / "run"
    notebooks.execute(MARIYA, out, {"smoke": True, "backend": "mlx", "epochs": 0.2,
                                    "output_dir": str(run_dir)}, progress=False)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["train"]["backend"] == "mlx"
    losses = [h["loss"] for h in record["loss_history"] if "loss" in h]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert len(record["answers"]["probes_tuned"]) == len(record["answers"]["probes_base"]) == 60


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


@pytest.mark.slow
def test_dataprep_notebook_reports_the_cleaning_of_a_real_book(tmp_path):
    """The DataPrep notebook on a real PDF manual (Debian's FAQ, fetched with apt into the cache):
    the cleaning report names the book, says what each rule removed and gives a verdict."""
    from tests.books import realbooks as rb
    if rb.apt_available():
        pytest.skip(rb.apt_available())
    book = next(b for b in rb.all_books() if b.name == "debian-faq.en.pdf")
    (tmp_path / "books").mkdir()
    shutil.copy(book, tmp_path / "books" / book.name)
    params = {"smoke": True, "qa_source": "rule", "books": str(tmp_path / "books"),
              "sample_book": False, "output_dir": str(tmp_path / "data")}
    out = notebooks.execute(DATAPREP, tmp_path / "dataprep.ipynb", params, progress=False)
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/html", ""))
                   for c in nb["cells"] for o in c.get("outputs", []))
    assert "debian-faq" in text and "verdict" in text and "running header" in text.lower()
    assert (tmp_path / "data" / "v2_train.jsonl").is_file()


def test_persona_notebooks_share_one_shape():
    """Generated from one template: the same section headers in every persona notebook, and a
    template value left unfilled is an error."""
    heads = []
    finetune = [nb.path for nb in notebooks.generated() if nb.template == "persona_finetune.py"]
    assert len(finetune) >= 4
    for rel in finetune:
        nb = json.loads((notebooks.NOTEBOOKS_DIR / rel).read_text())
        heads.append([c["source"] for c in nb["cells"] if c["cell_type"] == "markdown"
                      and "".join(c["source"]).startswith("## ")])
    assert all(h == heads[0] for h in heads) and len(heads[0]) >= 5
    with pytest.raises(KeyError, match="no value for"):
        notebooks._fill("persona_finetune.py", {"model": "x"})


# one notebook also exports, in every format the family has (each export reloaded and asked)
EXTRA_PARAMS = {"Qwen3_14B_JordanPeterson_FineTuning": {"export": ["adapter", "merged", "gguf"]}}


@pytest.fixture(scope="module")
def jp_runs(tmp_path_factory):
    """The JordanPeterson fine-tuning notebooks in smoke mode, each run at most once per test
    session; they share one data folder, and the comparison test reuses their run folders."""
    work = tmp_path_factory.mktemp("jp")
    done = {}

    def run(name):
        if name not in done:
            params = {"smoke": True, "qa_source": "rule", "sample_book": True, "epochs": 2,
                      "data_dir": str(work / "data"), "output_dir": str(work / name),
                      **EXTRA_PARAMS.get(name, {})}
            out = notebooks.execute(ROOT / "NoteBooks" / "JordanPeterson" / f"{name}.ipynb",
                                    work / f"{name}.executed.ipynb", params, progress=False)
            done[name] = (work / name, out)
        return done[name]
    run.work = work
    return run


def _outputs(executed):
    nb = json.loads(executed.read_text())
    return [o for c in nb["cells"] for o in c.get("outputs", [])]


def _nbconvert(nb, tmp_path, env):
    """Run ``nb`` as a user would, `jupyter nbconvert --execute` with no parameters; returns its outputs."""
    import subprocess
    import sys
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=600", "--output-dir", str(tmp_path / "executed"), str(nb)],
        env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _outputs(tmp_path / "executed" / nb.name)


def _text(outputs):
    return "".join("".join(o.get("text", "")) for o in outputs)


@pytest.mark.parametrize("name,recipe", [
    ("Qwen3_14B_JordanPeterson_V2_FineTuning", "v2"),
    ("Qwen3_14B_JordanPeterson_FineTuning", "v1"),
    ("Qwen3_32B_JordanPeterson_FineTuning", "v2"),
    ("GPT_OSS_20B_JordanPeterson_FineTuning", "v1"),
])
def test_persona_notebooks_in_smoke_mode(jp_runs, name, recipe):
    run_dir, out = jp_runs(name)
    record = json.loads((run_dir / "run.json").read_text())
    standin = "tiny-gpt-oss" if name.startswith("GPT_OSS") else "tiny-qwen3"
    assert record["status"] == "finished" and record["model"]["profile"] == standin
    assert record["train"]["steps"] > 0 and record["loss_history"]
    assert record["parameters"]["recipe"] == recipe
    assert record["data"]["truncated"] == 0
    # the persona's 4 questions (unseen phrasings) and 4 training questions asked verbatim
    asked = [a["question"] for a in record["answers"]["tuned_question"]]
    assert len(asked) == 8 and asked[:4] == list(personas.load(ROOT / "NoteBooks" / "JordanPeterson").questions)
    assert {"ngram_overlap_base", "ngram_overlap_base_unseen", "ngram_overlap_tuned",
            "ngram_overlap_tuned_unseen"} <= set(record["metrics"])
    outputs = _outputs(out)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = _text(outputs)
    assert "Trained:" in text and "Auto-configuration:" in text
    if name in EXTRA_PARAMS:
        assert {k: v["status"] for k, v in record["exports"].items()} == {
            "adapter": "ok", "merged": "ok", "gguf": "ok"}
        assert list((run_dir / "export" / "gguf").glob("*.gguf"))
    if standin == "tiny-qwen3":
        assert "<think>" in text  # the rendered example shows the (untrained) think block
    # every epoch's checkpoint kept and scored on the held-out chapters; the best one recorded
    best = record["best_checkpoint"]
    assert len(list((run_dir / "checkpoints").glob("checkpoint-*"))) == 2
    assert len(list((run_dir / "checkpoint_eval").glob("checkpoint-*.json"))) == 2
    assert best["copying_ceiling"] == 0.2 and best["reason"]
    assert "checkpoint" not in best or (run_dir / best["checkpoint"] / "adapter_config.json").is_file()
    assert "bits per byte" in text and "Burrows' Delta" in text


COMPARISON = ROOT / "NoteBooks" / "JordanPeterson" / "AllModels_JordanPeterson_Comparison.ipynb"


def test_comparison_notebook_on_two_families_and_its_cache(jp_runs):
    """Base and tuned variants of Qwen3 and GPT-OSS; a second run takes every result from the
    cache and loads no model."""
    q3, _ = jp_runs("Qwen3_14B_JordanPeterson_V2_FineTuning")
    gpt, _ = jp_runs("GPT_OSS_20B_JordanPeterson_FineTuning")
    work = jp_runs.work
    params = {"smoke": True, "variants": ["qwen3-14b", "gpt-oss-20b"], "runs": [str(q3), str(gpt)],
              "data_dir": str(work / "data"), "qa_source": "rule", "sample_book": True,
              "max_new_tokens": 48, "cache_dir": str(work / "cache"), "knowledge_questions": 4}
    names = ["Qwen3-14B", "GPT-OSS 20B", "Qwen3-14B V2", "GPT-OSS 20B V1"]
    first = notebooks.execute(COMPARISON, work / "cmp1.ipynb", {**params, "output_dir": str(work / "cmp1")},
                              progress=False)
    doc = json.loads((work / "cmp1" / "comparison.json").read_text())
    assert doc["status"] == {n: "computed" for n in names}
    got = {(r["variant"], r["metric"]): r["value"] for r in doc["summary"]}
    for n in names:
        for metric in ("tfidf", "delta", "empty_rate", "ngram_overlap", "perplexity", "bits_per_byte"):
            assert (n, metric) in got, (n, metric)
        assert got[(n, "perplexity")] > 1
    assert ("Qwen3-14B V2", "retention") in got and ("Qwen3-14B", "retention") not in got
    outputs = _outputs(first)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 6
    assert "Loaded" in _text(outputs)  # helpers.train logs each model it loads
    assert re.search(r"LLM judge: \d+ requests", _text(outputs))  # the cost is shown; judge=False asks nothing
    # the phrasing table: the V2 run trained on the V2 questions asked verbatim, the V1 run did not
    split = [o["data"]["text/html"] for o in outputs if "ngram_overlap_unseen" in "".join(o.get("data", {}).get("text/html", ""))]
    assert len(split) == 1 and "questions_unseen" in "".join(split[0])
    # knowledge or voice: every variant answered 4 + 4 fact questions; a verdict per tuned model
    known = json.loads((work / "cmp1" / "knowledge.json").read_text())
    assert known["status"] == {n: "computed" for n in names} and len(known["questions"]) == 8
    assert {v["variant"]: v["verdict"] in ("learned the facts", "only the voice", "neither")
            for v in known["verdicts"]} == {"Qwen3-14B V2": True, "GPT-OSS 20B V1": True}
    assert "Qwen3-14B V2: " in _text(outputs) and "RAG over the books" in _text(outputs)

    second = notebooks.execute(COMPARISON, work / "cmp2.ipynb", {**params, "output_dir": str(work / "cmp2")},
                               progress=False)
    doc2 = json.loads((work / "cmp2" / "comparison.json").read_text())
    assert doc2["status"] == {n: "cache" for n in names}
    assert doc2["summary"] == doc["summary"]
    text = _text(_outputs(second))
    assert "Loaded" not in text and text.count("from the cache") == 4
    assert text.count("fact answers reused") == 4


def test_second_persona_pipeline_with_nbconvert(tmp_path):
    """The sample book's author, as a second persona: data preparation, V2 fine-tuning and the
    comparison, each run by `jupyter nbconvert --execute` with no parameters (smoke mode and the
    work folder come from the environment)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "FINETUNING_SMOKE": "1", "FINETUNING_WORKDIR": str(tmp_path)}
    folder = ROOT / "NoteBooks" / "MarenHolloway"
    for name in ("MarenHolloway_DataPrep", "Qwen3_14B_MarenHolloway_V2_FineTuning",
                 "AllModels_MarenHolloway_Comparison"):
        proc = subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
             "--ExecutePreprocessor.timeout=900", "--output-dir", str(tmp_path / "executed"),
             str(folder / f"{name}.ipynb")], env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs = _outputs(tmp_path / "executed" / f"{name}.ipynb")
        assert not [o for o in outputs if o.get("output_type") == "error"], name
    record = json.loads((tmp_path / "outputs" / "MarenHolloway-v2-qwen3-14b-smoke" / "run.json").read_text())
    assert record["status"] == "finished" and record["parameters"]["persona"] == "Maren Holloway"
    assert (tmp_path / "qa_dataset" / "MarenHolloway" / "v2_train.jsonl").is_file()
    doc = json.loads((tmp_path / "outputs" / "comparison-MarenHolloway-smoke" / "comparison.json").read_text())
    best = [name for name in doc["status"] if name.startswith("Qwen3-14B V2 best (epoch ")]
    assert len(best) == 1, doc["status"]  # the V2 notebook chose it; the DPO run was not made here
    assert doc["status"] == {"Qwen3-14B": "computed", "Qwen3-14B V2": "computed", best[0]: "computed",
                             "Qwen3-14B DPO": "missing"}
    assert "Maren Holloway" in (doc["system_prompt"] or "")
    # recitation and out-of-scope questions beside the copying score; the run's data card
    shown = {r["metric"] for r in doc["summary"] if r["variant"] == "Qwen3-14B V2"}
    assert {"ngram_overlap", "recitation_share_verbatim", "recitation_longest_run", "robust_declined",
            "robust_in_voice", "robust_invented"} <= shown
    card = json.loads((tmp_path / "outputs" / "MarenHolloway-v2-qwen3-14b-smoke" / "data_card.json").read_text())
    assert [b["file"] for b in card["books"]] and card["heldout"]["passages"] > 0
    assert card["training_set"]["file"] == "v2_train.jsonl" and len(card["training_set"]["sha256"]) == 64
    assert card["figures"]["comparison"]["recitation"]["recitation_n"] == 8  # the stand-in's cap


def test_an_unknown_parameter_stops_the_notebook(tmp_path):
    from helpers.notebooks.setup import UnknownParameterError, check_parameters
    params = 'model: str = "x"  # a model\nepochs: float = None  # passes\n'
    check_parameters(["import os", params, "# Parameters\nepochs = 2\n"])  # known: fine
    with pytest.raises(UnknownParameterError, match="Unknown parameter.*learning_rat: .*model, epochs"):
        check_parameters(["import os", params, "# Parameters\nlearning_rat = 0.1\nepochs = 2\n"])
    check_parameters([params])  # nothing injected (JupyterLab, nbconvert): nothing to check
    # in a real kernel: papermill only warns about the name; the setup cell stops the run
    import papermill
    with pytest.raises(papermill.PapermillExecutionError, match="UnknownParameterError"):
        notebooks.execute(MARIYA, tmp_path / "bad.ipynb", {"smoke": True, "learning_rat": 0.1},
                          progress=False)


def test_the_notebook_list_is_data_and_its_mistakes_are_named(tmp_path):
    listed = {nb.path: nb for nb in notebooks.generated()}
    assert "MarenHolloway/MarenHolloway_DataPrep.ipynb" in listed
    v2 = listed["MarenHolloway/Qwen3_14B_MarenHolloway_V2_FineTuning.ipynb"]
    assert v2.values["persona_name"] == "Maren Holloway" and v2.values["recipe"] == "v2"
    assert all(nb.needs and nb.run.startswith("papermill NoteBooks/" + nb.path) for nb in listed.values())
    bad = tmp_path / "notebooks.toml"
    bad.write_text('[personas.A]\nx = "1"\n[notebooks."A/a.ipynb"]\ntemplate = "t.py"\npersona = "A"\n'
                   'needs = "n"\n')
    with pytest.raises(ValueError, match="has no `run`"):
        notebooks.generated(bad)
    bad.write_text('[notebooks."A/a.ipynb"]\ntemplate = "t.py"\npersona = "B"\nneeds = "n"\nrun = "r"\n')
    with pytest.raises(ValueError, match=r"persona 'B'.*\[personas.B\]"):
        notebooks.generated(bad)


def test_smoke_mode_is_an_offline_dry_run_under_plain_nbconvert(tmp_path):
    """A persona whose books are missing and whose questions come from Claude: with
    FINETUNING_SMOKE=1 and no API key, its DataPrep notebook runs with no parameters, says what
    it substituted and records it beside the training sets."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env.update(FINETUNING_SMOKE="1", FINETUNING_WORKDIR=str(tmp_path))
    nb = ROOT / "NoteBooks" / "JordanPeterson" / "JordanPeterson_DataPrep.ipynb"
    text = _text(_nbconvert(nb, tmp_path, env))
    assert "Smoke mode substituted questions: rule-based instead of 'anthropic'" in text
    assert "Smoke mode substituted books" in text
    made = json.loads((tmp_path / "qa_dataset" / "JordanPeterson-smoke" / "dataprep.json").read_text())
    assert len(made["substitutions"]) == 2 and made["counts"]["v2"] > 0
    assert not (tmp_path / "qa_dataset" / "JordanPeterson").exists()


def test_notebook_setup_sends_progress_to_stdout_and_hides_library_warnings(capsys):
    import logging
    import warnings

    from helpers.notebooks import setup as nb_setup
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        with warnings.catch_warnings(record=True) as caught:
            nb_setup.setup()
            logging.getLogger("helpers.test").info("step 3 of 10")
            logging.getLogger("helpers.test").warning("memory is tight")
            warnings.warn_explicit("chatter", UserWarning, "x.py", 1, module="transformers.modeling_utils")
            warnings.warn_explicit("ours", UserWarning, "y.py", 1, module="helpers.training.trainer")
        out, err = capsys.readouterr()
        assert "step 3 of 10" in out and "step 3 of 10" not in err
        assert "memory is tight" in err and "memory is tight" not in out
        assert [str(w.message) for w in caught] == ["ours"]
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)


def test_comparison_notebook_before_any_tuned_model_lists_what_is_missing(tmp_path):
    """Run as a user exploring it would, under plain nbconvert, before any fine-tuning: it
    finishes, says which variants are missing and how to make them, and judges nothing."""
    import os
    env = {**os.environ, "FINETUNING_SMOKE": "1", "FINETUNING_WORKDIR": str(tmp_path)}
    nb = ROOT / "NoteBooks" / "MarenHolloway" / "AllModels_MarenHolloway_Comparison.ipynb"
    outputs = _nbconvert(nb, tmp_path, env)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = _text(outputs)
    assert "LLM judge: nothing to judge" in text
    assert "Qwen3-14B V2" in text and "missing" in text.lower()
