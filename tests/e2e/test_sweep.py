"""Sweeps: grids typed by the notebook's own parameters, a resumable two-point sweep of the
Mariya notebook on the stand-in, and the Sweep notebook over the finished sweep."""

import json
from pathlib import Path

import pytest

from helpers import notebooks
from helpers.notebooks import sweep
from helpers.notebooks.setup import ROOT

MARIYA = ROOT / "NoteBooks" / "Mariya" / "Qwen2.5_3B_Mariya_FineTuning.ipynb"
SWEEP_NB = ROOT / "NoteBooks" / "Sweep.ipynb"


# -- grids and values (no execution) ----------------------------------------------------------
def test_grid_values_take_the_notebooks_parameter_types(tmp_path):
    s = sweep.plan(MARIYA, "g", "lora_r=8,16;learning_rate=1e-3,5e-3",
                   ["smoke=True", "epochs=1", 'system_prompt=""', "seed=None"], root=tmp_path)
    assert s.grid == {"lora_r": [8, 16], "learning_rate": [0.001, 0.005]}
    assert s.fixed == {"smoke": True, "epochs": 1.0, "system_prompt": "", "seed": None}
    assert isinstance(s.fixed["epochs"], float) and isinstance(s.grid["lora_r"][0], int)
    assert [p["id"] for p in s.points] == [
        "lora_r=8__learning_rate=0.001", "lora_r=8__learning_rate=0.005",
        "lora_r=16__learning_rate=0.001", "lora_r=16__learning_rate=0.005"]
    assert all(p["action"] == "run" and p["status"] == "pending" for p in s.points)
    assert not (tmp_path / "g").exists(), "a plan writes nothing"
    # the same grid as the Sweep notebook writes it (NAME: V1, V2; papermill skips a parameter
    # line with a second "="), as --grid options, as a dict with typed values, and from a TOML or JSON file
    assert sweep.plan(MARIYA, "g", "lora_r: 8, 16; learning_rate: 0.001, 0.005", root=tmp_path).grid == s.grid
    assert sweep.plan(MARIYA, "g", ["lora_r=8,16", "learning_rate=0.001,0.005"], root=tmp_path).grid == s.grid
    assert sweep.parse_fixed("question: Who is X? a=b;model=qwen3-14b:v2") == {
        "question": "Who is X? a=b", "model": "qwen3-14b:v2"}
    assert sweep.plan(MARIYA, "g", {"lora_r": [8.0, 16], "learning_rate": [1e-3, 5e-3]},
                      {"smoke": True, "epochs": 1}, root=tmp_path).fixed == {"smoke": True, "epochs": 1.0}
    toml = tmp_path / "grid.toml"
    toml.write_text('notebook = "NoteBooks/Mariya/Qwen2.5_3B_Mariya_FineTuning.ipynb"\nname = "g"\n'
                    '[grid]\nlora_r = [8, 16]\nlearning_rate = [1e-3, 5e-3]\n[fixed]\nsmoke = true\n')
    spec = sweep.read_grid_file(toml)
    assert sweep.plan(spec["notebook"], spec["name"], spec["grid"], spec["fixed"], root=tmp_path).grid == s.grid
    js = tmp_path / "grid.json"
    js.write_text(json.dumps({"grid": {"lora_r": [8, 16]}, "fixed": {"epochs": 2}}))
    assert sweep.read_grid_file(js)["grid"] == {"lora_r": [8, 16]}


def test_point_ids_are_stable_and_filesystem_safe():
    assert sweep.point_id({"lora_r": 8, "learning_rate": 1e-5}) == "lora_r=8__learning_rate=1e-05"
    assert sweep.point_id({"model": "Qwen/Qwen2.5-3B", "smoke": None}) == "model=Qwen_Qwen2.5-3B__smoke=None"
    long = sweep.point_id({f"p{i}": "x" * 20 for i in range(10)})
    assert len(long) <= 120 and long == sweep.point_id({f"p{i}": "x" * 20 for i in range(10)})


def test_coerce_without_annotation_reads_a_literal():
    untyped = {"inferred_type_name": "None", "default": "None"}
    assert sweep.coerce("x", "3", untyped) == 3 and sweep.coerce("x", "true", untyped) is True
    assert sweep.coerce("x", "hello", untyped) == "hello"
    assert sweep.coerce("x", "2", {"inferred_type_name": "None", "default": "0.5"}) == 2.0
    assert sweep.coerce("x", "[1, 2]", {"inferred_type_name": "list", "default": "[]"}) == [1, 2]


def test_unknown_parameter_names_the_setting_and_lists_the_known_ones(tmp_path):
    with pytest.raises(sweep.SweepError) as e:
        sweep.plan(MARIYA, "g", "lora_rank=8,16", root=tmp_path)
    msg = str(e.value)
    assert "lora_rank" in msg and "lora_r, lora_alpha" in msg and "papermill --help-notebook" in msg
    with pytest.raises(sweep.SweepError, match="Unknown parameter.*epoch\\b"):
        sweep.plan(MARIYA, "g", "lora_r=8", "epoch=2", root=tmp_path)


@pytest.mark.parametrize("grid,fixed,message", [
    ("lora_r=8.5", None, "lora_r is int in the notebook .*give a whole number"),
    ("lora_r=8", "smoke=maybe", "smoke is bool .*True or False"),
    ("learning_rate=fast", None, "learning_rate is float .*1e-3 works"),
    ("lora_r=8", "output_dir=x", "output_dir cannot be set in a sweep"),
    ("lora_r", None, "needs the form NAME=V1,V2"),
    ("lora_r=", None, "lora_r has no values"),
    ("lora_r=8,8", None, "repeats a value"),
    ("lora_r=8;lora_r=16", None, "given twice"),
    ("lora_r=8", "lora_r=16", "both a grid axis and a fixed parameter"),
    ("", None, "The grid is empty"),
])
def test_bad_grids_and_values_name_the_setting_and_the_fix(tmp_path, grid, fixed, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.plan(MARIYA, "g", grid, fixed, root=tmp_path)


def test_bad_notebook_name_and_grid_file(tmp_path):
    with pytest.raises(sweep.SweepError, match="pass the notebook made from it"):
        sweep.plan(MARIYA.with_suffix(".py"), "g", "lora_r=8", root=tmp_path)
    with pytest.raises(sweep.SweepError, match="Notebook not found"):
        sweep.plan(tmp_path / "nope.ipynb", "g", "lora_r=8", root=tmp_path)
    with pytest.raises(sweep.SweepError, match="must be a folder name"):
        sweep.plan(MARIYA, "a/b", "lora_r=8", root=tmp_path)
    bad = tmp_path / "g.toml"
    bad.write_text("[grid]\nlora_r = [8]\n[sets]\nepochs = 1\n")
    with pytest.raises(sweep.SweepError, match="unknown key.*sets.*known: notebook"):
        sweep.read_grid_file(bad)
    with pytest.raises(FileNotFoundError, match="No sweep at"):
        sweep.load("never-ran", root=tmp_path)


def test_cli_dry_run_and_errors(tmp_path, capsys):
    argv = [str(MARIYA), "--name", "dry", "--root", str(tmp_path), "--grid", "lora_r=8,16",
            "--grid", "learning_rate=1e-3", "--set", "smoke=True", "--dry-run"]
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 point(s)" in out and "new" in out and "lora_r" in out
    assert not (tmp_path / "dry").exists()
    assert sweep.main([str(MARIYA), "--name", "dry", "--root", str(tmp_path), "--grid", "lora_rank=8"]) == 2
    assert "Unknown parameter(s) lora_rank" in capsys.readouterr().err
    assert sweep.main(["--grid", "lora_r=8"]) == 2
    assert "Give the notebook and --name" in capsys.readouterr().err


def _synthetic(tmp_path, grid, fail=()):
    pts = []
    for i, v in enumerate(sweep.points(grid)):
        failed = sweep.point_id(v) in fail
        pts.append({"id": sweep.point_id(v), "values": v, "status": "failed" if failed else "finished",
                    "seconds": 10.0 + i, "final_loss": 2.0 - i / 10, "error": "OOM" if failed else None,
                    "metrics": {} if failed else {"fact_recall_tuned": i / 10, "fact_recall_base": 0.0}})
    return sweep.Sweep(folder=tmp_path / "s", notebook="nb.ipynb", grid=grid, fixed={}, points=pts)


def test_plot_bars_for_one_axis_lines_for_two(tmp_path):
    one = _synthetic(tmp_path, {"lora_r": [8, 16, 32]})
    fig = one.plot(path=tmp_path / "one.png")
    ax = fig.axes[0]
    assert len(ax.patches) == 3 and ax.get_ylabel() == "fact_recall_tuned" and ax.get_xlabel() == "lora_r"
    two = _synthetic(tmp_path, {"lora_r": [8, 16], "learning_rate": [0.001, 0.005, 0.01]},
                     fail={"lora_r=16__learning_rate=0.01"})
    fig = two.plot("final_loss", path=tmp_path / "two.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0.001", "0.005", "0.01"]
    assert len(ax.get_lines()) == 3 and "1 of 6 points not finished" in ax.get_title()
    assert (tmp_path / "one.png").stat().st_size > 5000 and (tmp_path / "two.png").is_file()
    table = two.table()
    assert len(table) == 6 and list(table.columns[:4]) == ["lora_r", "learning_rate", "status", "seconds"]
    assert table["error"].tolist()[-1] == "OOM"
    with pytest.raises(sweep.SweepError, match="metric 'accuracy' is not recorded.*fact_recall_tuned"):
        two.plot("accuracy")


def test_a_kill_mid_point_leaves_sweep_json_saying_so(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(notebooks, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(MARIYA, "k", "lora_r=8,16", "smoke=True", root=tmp_path, progress=False)
    saved = json.loads((tmp_path / "k" / "sweep.json").read_text())
    assert [p["status"] for p in saved["points"]] == ["interrupted", "pending"]
    again = sweep.plan(MARIYA, "k", "lora_r=8,16", "smoke=True", root=tmp_path)
    assert set(again.actions().values()) == {"run"}


# -- a real sweep on the stand-in ------------------------------------------------------------------
@pytest.fixture
def count_runs(monkeypatch):
    ran = []
    real = notebooks.execute

    def counting(notebook, output, parameters, **kw):
        ran.append(Path(output).parent.name)
        return real(notebook, output, parameters, **kw)
    monkeypatch.setattr(notebooks, "execute", counting)
    return ran


def test_two_point_sweep_resumes_and_the_sweep_notebook_shows_it(tmp_path, count_runs):
    fixed = "smoke=True;epochs=1"
    s = sweep.run_sweep(MARIYA, "r", "lora_r=8,16", fixed, root=tmp_path, progress=False)
    folder = tmp_path / "r"
    assert s.statuses() == {"lora_r=8": "finished", "lora_r=16": "finished"}
    assert count_runs == ["lora_r=8", "lora_r=16"]
    for pid, r in (("lora_r=8", 8), ("lora_r=16", 16)):
        record = json.loads((folder / pid / "run.json").read_text())
        assert record["status"] == "finished" and record["parameters"]["lora_r"] == r
        assert (folder / pid / "executed.ipynb").is_file()
    saved = json.loads((folder / "sweep.json").read_text())
    assert saved["grid"] == {"lora_r": [8, 16]} and saved["fixed"] == {"smoke": True, "epochs": 1.0}
    assert all("fact_recall_tuned" in p["metrics"] and p["seconds"] > 0 for p in saved["points"])
    import pandas as pd
    csv = pd.read_csv(folder / "results.csv")
    assert len(csv) == 2 and {"lora_r", "status", "seconds", "final_loss", "fact_recall_tuned"} <= set(csv.columns)
    assert (folder / "results.png").stat().st_size > 5000

    # again: nothing runs
    count_runs.clear()
    again = sweep.run_sweep(MARIYA, "r", "lora_r=8,16", fixed, root=tmp_path, progress=False)
    assert count_runs == [] and set(again.actions().values()) == {"skipped"}
    assert set(again.statuses().values()) == {"finished"}
    assert again.table()["fact_recall_tuned"].tolist() == csv["fact_recall_tuned"].tolist()
    loaded = sweep.load("r", root=tmp_path)
    assert loaded.table().equals(again.table()) and sweep.load(folder).actions() == again.actions()

    # one point left unfinished (as a kill would leave it): only that point runs
    run_json = folder / "lora_r=16" / "run.json"
    record = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**record, "status": "running"}))
    count_runs.clear()
    third = sweep.run_sweep(MARIYA, "r", "lora_r=8,16", fixed, root=tmp_path, progress=False)
    assert count_runs == ["lora_r=16"]
    assert third.actions() == {"lora_r=8": "skipped", "lora_r=16": "ran"}
    assert set(third.statuses().values()) == {"finished"}
    # its training had finished, so it trained again from the start (the old folder kept aside)
    rerun = json.loads(run_json.read_text())
    assert rerun["train"]["resumed_from"] is None and rerun["train"]["final_loss"] > 0
    assert len(list(folder.glob("lora_r=16.old-*"))) == 1

    # other fixed parameters: every point is out of date (the plan says why, and runs nothing)
    changed = sweep.plan(MARIYA, "r", "lora_r=8,16", "smoke=True;epochs=2", root=tmp_path)
    assert set(changed.actions().values()) == {"run"}
    assert "epochs=1.0, the point has 2.0" in changed.points[0]["reason"]

    # the Sweep notebook over the finished sweep: loads, skips both points, shows table and plot
    out = notebooks.execute(SWEEP_NB, tmp_path / "sweep.executed.ipynb",
                            {"name": "r", "root": str(tmp_path), "grid": "lora_r: 8, 16",
                             "fixed": "epochs: 1", "smoke": True}, progress=False)
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert text.count("finished earlier, skipped") == 2
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1
    # the environment, the plan, the results and each point's best checkpoint (none chosen here:
    # the Mariya notebook has no held-out chapters, so the table says so)
    assert sum("text/html" in o.get("data", {}) for o in outputs) == 4


def test_a_failed_point_is_recorded_kept_and_retried_on_request(tmp_path, count_runs):
    s = sweep.run_sweep(MARIYA, "f", "model=no-such-model", "smoke=True", root=tmp_path, progress=False)
    point = s.points[0]
    assert point["status"] == "failed" and "UnknownModelError" in point["error"]
    assert json.loads((tmp_path / "f" / "sweep.json").read_text())["points"][0]["status"] == "failed"
    assert (tmp_path / "f" / "results.csv").is_file() and not (tmp_path / "f" / "results.png").exists()
    count_runs.clear()
    kept = sweep.run_sweep(MARIYA, "f", "model=no-such-model", "smoke=True", root=tmp_path, progress=False)
    assert count_runs == [] and kept.actions() == {"model=no-such-model": "kept"}
    assert kept.points[0]["error"] == point["error"]
    retried = sweep.run_sweep(MARIYA, "f", "model=no-such-model", "smoke=True", root=tmp_path,
                              progress=False, retry_failed=True)
    assert count_runs == ["model=no-such-model"] and retried.statuses() == {"model=no-such-model": "failed"}
