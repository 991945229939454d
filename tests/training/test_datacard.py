"""helpers.training.datacard: the data card every fine-tuning run writes (sources as sha256,
the held-out split, figures added later), the data preparation recording the books' checksums
and the optional out-of-scope refusal examples, and FineTuneRun.finish writing the card."""

import dataclasses
import hashlib
import json

from helpers.books.passage import Passage
from helpers.data import outofscope, prep, provenance, recipes
from helpers.data import persona as personas
from helpers.pipeline import finetune
from helpers.training import datacard

MH = "NoteBooks/MarenHolloway"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepared(tmp_path, refusal_examples=0):
    """A persona's sets written by prep.write_sets from two books in a folder."""
    books = tmp_path / "books"
    books.mkdir()
    (books / "one.md").write_text("# One\n\nThe bench was swept every morning.\n")
    (books / "two.txt").write_text("A sharp chisel is safer than a dull one.\n")
    (books / "notes.json").write_text("{}")  # not a book
    persona = personas.load(MH)
    persona = dataclasses.replace(persona, data=dataclasses.replace(persona.data, refusal_examples=refusal_examples))
    passages = [Passage(text=f"Passage {i} about the bench and the chisel, " * 5, book="one", first_page=i,
                        last_page=i, index=i, chapter=f"Chapter {i // 2}") for i in range(8)]
    split = recipes.heldout_split(passages, 0.25, seed=1)
    records = [{"question": f"What about passage {p.index}?", "answer": p.text, "passage_sha256": p.sha256,
                "source": "rule"} for p in split.train]
    sets = prep.write_sets(persona, split, records, tmp_path / "sets", books=books)
    return persona, split, sets, books


def test_dataprep_records_book_checksums_and_the_recipe_flag(tmp_path):
    persona, split, sets, books = _prepared(tmp_path)
    meta = json.loads((sets.folder / "dataprep.json").read_text())
    assert meta["books"] == [{"file": "one.md", "sha256": _sha(books / "one.md"), "bytes": (books / "one.md").stat().st_size},
                             {"file": "two.txt", "sha256": _sha(books / "two.txt"), "bytes": (books / "two.txt").stat().st_size}]
    assert meta["recipe_options"] == {"refusal_examples": 0}  # off by default
    assert sets.counts["v2"] == len(split.train)


def test_refusal_examples_join_v2_only_and_are_recorded(tmp_path):
    persona, split, sets, _ = _prepared(tmp_path, refusal_examples=5)
    assert personas.DataSettings().refusal_examples == 0
    meta = json.loads((sets.folder / "dataprep.json").read_text())
    assert meta["recipe_options"] == {"refusal_examples": 5}
    v2 = [json.loads(line)["messages"] for line in sets.files["v2"].read_text().splitlines()]
    refusals = [c for c in v2 if c[-1]["content"] in outofscope.REFUSALS]
    assert len(v2) == len(split.train) + 5 and len(refusals) == 5
    assert all(c[0] == {"role": "system", "content": persona.system_prompt} for c in refusals)
    v1 = sets.files["v1"].read_text()
    assert not any(r in v1 for r in outofscope.REFUSALS)


def test_card_hashes_the_sources_and_describes_the_split(tmp_path):
    _, split, sets, books = _prepared(tmp_path)
    record = {"name": "MH-v2", "parameters": {"persona": "Maren Holloway", "recipe": "v2"},
              "model": {"requested": "qwen3-14b", "profile": "tiny-qwen3", "smoke": True},
              "data": {"path": str(sets.files["v2"]), "examples": 5, "format": "messages", "replay_examples": 0}}
    run = tmp_path / "run"
    path = datacard.write(run, record)
    card = json.loads(path.read_text())
    ts = card["training_set"]
    assert ts["file"] == "v2_train.jsonl" and ts["sha256"] == _sha(sets.files["v2"]) and ts["examples"] == 5
    assert ts["bytes"] == sets.files["v2"].stat().st_size
    files = {f["file"]: f["sha256"] for f in card["data_files"]}
    assert files == {"v1_train.jsonl": _sha(sets.files["v1"]), "heldout.json": _sha(sets.files["heldout"]),
                     "dataprep.json": _sha(sets.folder / "dataprep.json")}
    assert [b["file"] for b in card["books"]] == ["one.md", "two.txt"] and card["books_folder"] == str(books)
    held = card["heldout"]
    assert held["passages"] == len(split.heldout) > 0 and held["sha256"] == _sha(sets.files["heldout"])
    assert held["regions"] == split.regions and held["passage_sha256"] == [p.sha256 for p in split.heldout]
    assert card["recipe_options"] == {"refusal_examples": 0} and card["notes"] == []
    md = (run / "data_card.md").read_text()
    assert _sha(sets.files["v2"]) in md and "one.md" in md and f"{len(split.heldout)} passages" in md

    # figures added later (the comparison's) survive a rewrite of the card
    datacard.add_figures(run, {"recitation": {"recitation_share_verbatim": 0.25}}, source="comparison")
    datacard.write(run, record)
    card = json.loads(path.read_text())
    assert card["figures"]["comparison"]["recitation"] == {"recitation_share_verbatim": 0.25}
    assert "recitation_share_verbatim=0.25" in (run / "data_card.md").read_text()


def test_card_says_what_it_could_not_check(tmp_path):
    lone = tmp_path / "lone.jsonl"
    lone.write_text('{"prompt": "a", "completion": "b"}\n')
    card = datacard.build({"data": {"path": str(lone)}})
    assert card["training_set"]["sha256"] == provenance.file_sha256(lone) and card["data_files"] == []
    assert card["heldout"] is None and card["books"] is None
    assert any("no heldout.json" in n for n in card["notes"])
    missing = datacard.build({"data": {"path": str(tmp_path / "gone.jsonl")}})
    assert missing["training_set"] is None and "not found" in missing["notes"][0]
    old = tmp_path / "old"
    old.mkdir()
    (old / "v1_train.jsonl").write_text("{}\n")
    (old / "dataprep.json").write_text(json.dumps({"persona": "M"}))  # made before data cards
    assert any("rebuild the sets" in n for n in datacard.build({"data": {"path": str(old / "v1_train.jsonl")}})["notes"])


def test_finetune_run_writes_the_card_when_it_finishes(tmp_path):
    _, _, sets, _ = _prepared(tmp_path)
    run = finetune.FineTuneRun.start(model="qwen2.5-3b", smoke=True, output_dir=str(tmp_path / "run"),
                                     parameters={"persona": "Maren Holloway", "recipe": "v2"})
    run.load_data(str(sets.files["v2"]), allow_duplicates=True)
    run.finish()
    card = json.loads((tmp_path / "run" / "data_card.json").read_text())
    assert card["training_set"]["sha256"] == _sha(sets.files["v2"]) and card["persona"] == "Maren Holloway"
    assert card["training_set"]["examples"] == len(run.dataset)
    assert (tmp_path / "run" / "data_card.md").is_file()
