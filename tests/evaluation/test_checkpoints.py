"""The best checkpoint (issue 13, part 3): per-epoch checkpoints listed, each scored on held-out
text and cached, the rule that picks the best under a copying ceiling, the pointer in run.json,
the comparison spec that names a checkpoint and the sweep's record of it. One tiny run on a
random-weight stand-in: 2 epochs of 2 steps."""

import json
import math

import pytest

from helpers.data import persona as personas
from helpers.evaluation import cache as compare_cache
from helpers.evaluation import checkpoint_eval, checkpoints, compare
from helpers.evaluation.checkpoints import CheckpointError, choose_best

MH = "NoteBooks/MarenHolloway"
SYSTEM = "You are Maren Holloway, a woodworker who writes plainly."
TRAIN = ["The bench was swept every morning before the tools came out, and the shavings went "
         "into a sack for the stove.",
         "A sharp chisel is safer than a dull one, because it goes where it is sent and does not "
         "skid off the grain.",
         "Glue is patient work: the clamps stay on overnight and nobody touches the joint.",
         "Oak moves with the seasons, so the panel floats in its groove and is never glued.",
         # long enough for the recitation audit (a 32-word prefix and a 50-word run to find)
         " ".join(["The first winter in the workshop taught me more than any book about wood.",
                   "The stove smoked, the glue would not set, and every board I had planed flat in",
                   "October had cupped by December. I learned to leave timber in the room for a",
                   "month before cutting it, to warm the glue pot before the clamps, and to write",
                   "the date on every offcut so that I could see, a year later, how far it had",
                   "moved. None of this was clever; it was only patience written down."]),
         " ".join(["My grandfather kept his chisels in a canvas roll that smelled of linseed oil.",
                   "Each one had a nick in the handle where he had dropped it once, and he could",
                   "tell you the year of every nick. He said a tool that had never been dropped",
                   "had never been used, and a man who had never dropped one was not to be",
                   "trusted with a plane. I still have the roll, and I still drop the chisels,",
                   "and I still write the year on the handle with a soft pencil."])]
HELD = ["The harbour at Varn was quiet in winter, and the boats lay upturned on the shingle "
        "while their owners mended nets in the sheds.",
        "Pine is soft and forgiving; a beginner should start there, with a saw, a plane and "
        "the patience to sharpen both.",
        "Every workshop has a corner where broken things wait for the day someone has time "
        "for them, and that day rarely comes."]


def _sets(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heldout.json").write_text(json.dumps({"heldout": [{"text": t} for t in HELD]}))
    with open(folder / "v1_train.jsonl", "w") as f:
        for t in TRAIN:
            f.write(json.dumps({"messages": [{"role": "system", "content": SYSTEM},
                                             {"role": "user", "content": "Continue."},
                                             {"role": "assistant", "content": t}]}) + "\n")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, random_standin):
    """A finished two-epoch run on the random-weight tiny Qwen2.5 (4 examples, 2 per step)."""
    from helpers.pipeline.finetune import FineTuneRun
    root = tmp_path_factory.mktemp("best")
    sets = _sets(root / "sets")
    run = FineTuneRun.start(model=str(random_standin("qwen2.5")), output_dir=str(root / "run"),
                            system_prompt=SYSTEM, backend="transformers", epochs=2, batch_size=2,
                            grad_accum=1, learning_rate=5e-3, logging_steps=1, report_to="none",
                            keep_checkpoints=0, max_seq_length=256)
    run.load_data(str(sets / "v1_train.jsonl"), allow_duplicates=True)
    run.train(live_plot=False)
    run.finish()
    return run, sets


def test_checkpoints_are_listed_per_epoch_scored_and_cached(trained, monkeypatch):
    run, sets = trained
    found = checkpoints.list_checkpoints(run.output_dir)
    assert [c.epoch for c in found] == [1.0, 2.0] and [c.step for c in found] == [3, 6]
    settings = checkpoint_eval.EvalSettings(prompts=2, max_new_tokens=8, window=32, stride=16,
                                            recitation_passages=2)
    report = checkpoint_eval.evaluate_run(run.output_dir, sets, settings=settings, copying_ceiling=1.0)
    assert report.status == {"checkpoint-3": "computed", "checkpoint-6": "computed"}
    assert len(report.prompts) == 2 and all(q.endswith("?") for q in report.prompts)
    for row in report.rows:
        assert row["bits_per_byte"] > 0 and len(row["answers"]) == 2
        assert 0 <= row["copying"] <= 1 and row["adapter_sha256"]
        # the two long training passages audited, chat-wrapped as trained
        assert row["recitation_n"] == 2 and 0 <= row["recitation_share"] <= 1
        assert 0 <= row["recitation_longest_run"] <= 64
    # the two epochs' adapters differ, so their held-out scores do
    assert report.rows[0]["bits_per_byte"] != report.rows[1]["bits_per_byte"]
    assert len(list((run.output_dir / "checkpoint_eval").glob("checkpoint-*.json"))) == 2
    # the choice is in run.json and in the pointer file, which names the checkpoint folder
    record = json.loads((run.output_dir / "run.json").read_text())
    pointer = checkpoints.read_best(run.output_dir)
    assert record["best_checkpoint"] == pointer and pointer["copying_ceiling"] == 1.0
    assert (run.output_dir / pointer["checkpoint"] / "adapter_model.safetensors").is_file()
    assert record["metrics"]["best_checkpoint_epoch"] == report.best["epoch"]
    assert report.table()["best"].sum() == 1
    fig = report.plot(run.output_dir / "checkpoints.png")
    assert len(fig.axes) == 4 and (run.output_dir / "checkpoints.png").stat().st_size > 0
    assert "recitation" in report.explain() and "Copying ceiling: 1." in report.explain()

    # again: every checkpoint from the cache, no model loaded
    def no_model(*a, **k):
        raise AssertionError("a cached checkpoint was evaluated again")
    monkeypatch.setattr(checkpoint_eval, "load_model", no_model)
    monkeypatch.setattr(checkpoint_eval, "_score", no_model)
    again = checkpoint_eval.evaluate_run(run.output_dir, sets, settings=settings, copying_ceiling=1.0)
    assert again.status == {"checkpoint-3": "cache", "checkpoint-6": "cache"}
    assert [r["answers"] for r in again.rows] == [r["answers"] for r in report.rows]
    # another setting is another question: recomputed, never served from the cache
    with pytest.raises(AssertionError, match="evaluated again"):
        checkpoint_eval.evaluate_run(run.output_dir, sets, copying_ceiling=1.0,
                                     settings=checkpoint_eval.EvalSettings(prompts=2, max_new_tokens=9,
                                                                           window=32, stride=16,
                                                                           recitation_passages=2))


def test_the_loaded_model_scores_checkpoints_and_is_left_as_it_was(trained, tmp_path):
    """The notebook's path: the trained model still in memory, each checkpoint loaded beside its
    adapter; the numbers match those of a freshly loaded model, and the model is unchanged."""
    import torch
    run, sets = trained
    small = dict(prompts=2, max_new_tokens=8, window=32, stride=16, recitation_passages=2)
    alone = checkpoint_eval.evaluate_run(run.output_dir, sets, copying_ceiling=1.0,
                                         settings=checkpoint_eval.EvalSettings(**small))
    before = {k: v.clone() for k, v in run.model.state_dict().items() if "lora_" in k}
    active = run.model.active_adapter
    (run.output_dir / "checkpoint_eval").rename(tmp_path / "cache")  # scored again, not read back
    report = run.best_checkpoint(sets, copying_ceiling=1.0, **small)
    assert set(report.status.values()) == {"computed"}
    for a, b in zip(alone.rows, report.rows):
        assert a["bits_per_byte"] == pytest.approx(b["bits_per_byte"], rel=1e-5)
        assert a["answers"] == b["answers"] and a["recitation_longest_run"] == b["recitation_longest_run"]
    assert run.model.active_adapter == active and list(run.model.peft_config) == [active]
    after = {k: v for k, v in run.model.state_dict().items() if "lora_" in k}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert run.record.data["best_checkpoint"]["checkpoint"] == f"checkpoints/{report.best['checkpoint']}"


def test_the_rule_lowest_delta_under_the_ceiling_ties_to_bits_per_byte():
    rows = [{"checkpoint": "checkpoint-2", "step": 2, "epoch": 1.0, "delta": 1.40, "copying": 0.05, "bits_per_byte": 2.1},
            {"checkpoint": "checkpoint-4", "step": 4, "epoch": 2.0, "delta": 1.10, "copying": 0.15, "bits_per_byte": 1.9},
            {"checkpoint": "checkpoint-6", "step": 6, "epoch": 3.0, "delta": 0.90, "copying": 0.45, "bits_per_byte": 1.8}]
    best, why = choose_best(rows, 0.2)
    assert best["checkpoint"] == "checkpoint-4"          # epoch 3 copies too much
    assert "1 over the copying ceiling left out" in why
    assert choose_best(rows, 0.5)[0]["checkpoint"] == "checkpoint-6"   # a higher ceiling lets it in
    assert choose_best(rows, 0.1)[0]["checkpoint"] == "checkpoint-2"
    tied = [dict(rows[0], delta=1.1, bits_per_byte=2.0), rows[1]]
    best, why = choose_best(tied, 0.2)
    assert best["checkpoint"] == "checkpoint-4" and "2 tied on Delta" in why
    # no words to measure (nan Delta) never wins; nothing under the ceiling: none, and why
    assert choose_best([dict(rows[0], delta=math.nan), rows[1]], 0.2)[0]["checkpoint"] == "checkpoint-4"
    best, why = choose_best(rows, 0.01)
    assert best is None and "3 copy more than the ceiling 0.01" in why and "Raise copying_ceiling" in why
    with pytest.raises(CheckpointError, match="copying_ceiling=1.5"):
        choose_best(rows, 1.5)


def test_a_ceiling_that_excludes_every_checkpoint_leaves_no_pointer(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"metrics": {"x": 1}}))
    row = {"checkpoint": "checkpoint-4", "step": 4, "epoch": 2.0, "delta": 1.0, "copying": 0.3,
           "bits_per_byte": 2.0}
    checkpoints.write_best(tmp_path, row, "lowest", copying_ceiling=0.5)
    assert checkpoints.read_best(tmp_path)["checkpoint"] == "checkpoints/checkpoint-4"
    best, why = choose_best([row], 0.2)
    checkpoints.write_best(tmp_path, best, why, copying_ceiling=0.2)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["best_checkpoint"]["reason"] == why and "checkpoint" not in record["best_checkpoint"]
    assert record["metrics"]["x"] == 1
    with pytest.raises(CheckpointError, match="has no best_checkpoint.json"):
        checkpoints.read_best(tmp_path)


def test_variant_specs_pick_the_best_or_a_named_checkpoint(trained):
    run, sets = trained
    settings = checkpoint_eval.EvalSettings(prompts=2, max_new_tokens=8, window=32, stride=16,
                                            recitation_passages=2)
    report = checkpoint_eval.evaluate_run(run.output_dir, sets, settings=settings, copying_ceiling=1.0)
    persona = personas.load(MH)
    folder = str(run.output_dir)
    best, named, colon, final = compare.variants(
        persona, [f"{folder}@best", f"{folder}@checkpoint-3", f"{folder}:checkpoint-6", folder], smoke=True)
    assert best.adapter == run.output_dir / "checkpoints" / report.best["checkpoint"]
    assert best.name.endswith(f"best (epoch {report.best['epoch']:g})") and best.version.endswith(" best")
    assert named.adapter == run.output_dir / "checkpoints" / "checkpoint-3" and named.ready
    assert colon.adapter.name == "checkpoint-6" and final.adapter == run.output_dir / "adapter"
    # what the comparison caches and saves of a variant is plain data
    assert json.loads(json.dumps(compare._variant_dict(best)))["adapter_dir"] == str(best.adapter)
    # the cache key follows the checkpoint's adapter
    texts = compare.Texts.from_sets(sets)

    def key(v):
        return compare.fingerprint(v, compare.Settings(), ["q"], None, texts)["adapter"]
    assert key(named) == compare_cache.adapter_checksum(named.adapter) != key(colon)
    assert checkpoints.split_spec("qwen3-14b:v2@best") == ("qwen3-14b:v2", "best")
    assert checkpoints.split_spec("qwen3-14b:v2") == ("qwen3-14b:v2", None)


def test_variant_spec_errors(trained, tmp_path, caplog):
    run, _ = trained
    persona = personas.load(MH)
    with pytest.raises(CheckpointError, match="is a base model, which has no checkpoints"):
        compare.variants(persona, ["qwen3-14b@best"], smoke=True)
    with pytest.raises(CheckpointError, match="has no checkpoint-99 with an adapter; its checkpoints: "
                                              "checkpoint-3, checkpoint-6"):
        compare.variants(persona, [f"{run.output_dir}@checkpoint-99"], smoke=True)
    missing, = compare.variants(persona, ["qwen3-14b:v9@best"], smoke=True)  # not trained: listed, skipped
    assert missing.name == "Qwen3-14B V9 best" and not missing.ready
    bare = tmp_path / "bare"
    (bare / "adapter").mkdir(parents=True)
    (bare / "run.json").write_text(json.dumps({"parameters": {"model": "qwen3-14b"},
                                               "model": {"requested": "qwen3-14b", "smoke": True}}))
    # trained but no best chosen (e.g. trained from the command line): missing, with the reason
    with caplog.at_level("WARNING"):
        unchosen, = compare.variants(persona, [f"{bare}@best"], smoke=True)
    assert not unchosen.ready and unchosen.name.endswith(" best")
    assert "has no best_checkpoint.json" in caplog.text and "best checkpoint' section" in caplog.text


def test_evaluate_run_errors(tmp_path):
    sets = _sets(tmp_path / "sets")
    with pytest.raises(CheckpointError, match="has no run.json"):
        checkpoint_eval.evaluate_run(tmp_path / "nothing", sets)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    with pytest.raises(CheckpointError, match="keep_checkpoints=0 keeps all"):
        checkpoint_eval.evaluate_run(tmp_path / "run", sets)
    with pytest.raises(CheckpointError, match="stride=16 must be at least 1 and below window=8"):
        checkpoint_eval.EvalSettings(window=8, stride=16).check()
    with pytest.raises(CheckpointError, match="prompts=0"):
        checkpoint_eval.EvalSettings(prompts=0).check()
    with pytest.raises(CheckpointError, match="recitation_passages=-1"):
        checkpoint_eval.EvalSettings(recitation_passages=-1).check()
    ck = tmp_path / "run" / "checkpoints" / "checkpoint-3"
    ck.mkdir(parents=True)
    (ck / "adapter_model.safetensors").write_bytes(b"w")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "heldout.json").write_text(json.dumps({"heldout": []}))
    (tmp_path / "empty" / "v1_train.jsonl").write_text("")
    with pytest.raises(CheckpointError, match="holds no held-out passage"):
        checkpoint_eval.evaluate_run(tmp_path / "run", tmp_path / "empty")


def test_heldout_prompts_spread_over_the_passages():
    qs = checkpoint_eval.heldout_prompts(HELD, 2)
    assert len(qs) == 2 and "Varn" in qs[0]
    assert checkpoint_eval.heldout_prompts(HELD, 10) == checkpoint_eval.heldout_prompts(HELD, 3)
    assert checkpoint_eval.heldout_prompts([], 4) == []


def test_the_sweep_records_each_points_best_checkpoint(tmp_path):
    from helpers.notebooks import sweep_plan, sweep_record
    points = []
    for pid, best in (("lora_r=16", {"checkpoint": "checkpoint-4", "step": 4, "epoch": 2.0, "delta": 1.1,
                                     "bits_per_byte": 2.0, "copying": 0.1}),
                      ("lora_r=32", None)):
        folder = tmp_path / "sweep" / pid
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"status": "finished", "metrics": {"x": 1.0},
                                                     "train": {"final_loss": 0.5}}))
        why = "lowest Delta" if best else "none of the 2 checkpoints qualifies"
        checkpoints.write_best(folder, best, why, copying_ceiling=0.2)
        point = {"id": pid, "values": {"lora_r": int(pid.split("=")[1])}, "status": "finished"}
        sweep_plan._read_results(point, folder)
        points.append(point)
    assert points[0]["best_checkpoint"]["checkpoint"] == "checkpoints/checkpoint-4"
    assert points[0]["metrics"]["best_checkpoint_delta"] == 1.1
    assert "checkpoint" not in points[1]["best_checkpoint"]
    sweep = sweep_record.Sweep(folder=tmp_path / "sweep", notebook="nb.ipynb", grid={"lora_r": [16, 32]},
                               fixed={}, points=points)
    sweep.save()
    again = sweep_record.load(tmp_path / "sweep")
    table = again.best_checkpoints()
    assert table["checkpoint"][0] == "checkpoints/checkpoint-4" and table["checkpoint"].isna()[1]
    assert table["epoch"][0] == 2.0 and table["reason"][1].startswith("none of the 2")
    column = again.table()["best_checkpoint"]
    assert column[0] == "checkpoints/checkpoint-4" and column.isna()[1]
    assert "best_checkpoint_bits_per_byte" in again.metrics()
