import json

import pytest

from helpers import data


def write(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_prompt_completion_with_system_prompt(tmp_path):
    p = write(tmp_path, [json.dumps({"prompt": "Q1", "completion": "A1"}),
                         "", json.dumps({"prompt": "Q2", "completion": "A2"})])
    ds = data.load(p, system_prompt="Be brief.")
    assert ds.format == "prompt_completion" and len(ds) == 2 and ds.lines == [1, 3]
    assert ds.conversations[0] == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Q1"},
                                   {"role": "assistant", "content": "A1"}]
    assert data.load(p).conversations[1][0]["role"] == "user"


def test_messages_format(tmp_path):
    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}]
    ds = data.load(write(tmp_path, [json.dumps({"messages": conv})]))
    assert ds.format == "messages" and ds.conversations == [conv]
    # a new system prompt replaces the old one
    assert ds.with_system_prompt("T").conversations[0][0] == {"role": "system", "content": "T"}
    assert sum(m["role"] == "system" for m in ds.with_system_prompt("T").conversations[0]) == 1


def test_every_problem_named_by_file_and_line(tmp_path):
    p = write(tmp_path, [
        json.dumps({"prompt": "Q1", "completion": "A1"}),
        '{"prompt": "Q2", "completion": ',                 # 2: bad JSON
        json.dumps({"prompt": "Q3"}),                        # 3: missing key
        json.dumps({"prompt": "Q4", "completion": "  "}),    # 4: empty text
        json.dumps({"prompt": "Q1", "completion": "other"}),  # 5: duplicate prompt
    ])
    with pytest.raises(data.DataError) as e:
        data.load(p)
    msg = str(e.value)
    assert "4 problem(s)" in msg
    assert f"{p}:2: bad JSON" in msg
    assert f"{p}:3: missing key 'completion'" in msg
    assert f"{p}:4: empty 'completion'" in msg
    assert f"{p}:5: duplicate prompt (same as line 1)" in msg


def test_bad_messages(tmp_path):
    p = write(tmp_path, [json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
                         json.dumps({"messages": [{"role": "user", "content": "only a question"}]})])
    msg = str(pytest.raises(data.DataError, data.load, p).value)
    assert f"{p}:1: message 0 has role 'robot'" in msg
    assert f"{p}:2: no assistant message" in msg


def test_missing_file_names_path_and_neighbours(tmp_path):
    write(tmp_path, [json.dumps({"prompt": "q", "completion": "a"})], name="real.jsonl")
    msg = str(pytest.raises(data.DataError, data.load, tmp_path / "typo.jsonl").value)
    assert "typo.jsonl" in msg and "real.jsonl" in msg


def test_duplicates_allowed_when_asked(tmp_path):
    p = write(tmp_path, [json.dumps({"prompt": "Q", "completion": "A"})] * 2)
    ds = data.load(p, allow_duplicates=True)
    assert len(ds) == 2 and "duplicate prompt" in ds.warnings[0]


def test_probes(tmp_path):
    p = write(tmp_path, [json.dumps({"question": "Q", "key_fact": "K"}), json.dumps({"question": "Q2"})])
    msg = str(pytest.raises(data.DataError, data.load_probes, p).value)
    assert f"{p}:2: missing or empty key_fact" in msg


def test_shipped_mariya_data_is_valid():
    from helpers.notebooks.setup import ROOT
    ds = data.load(ROOT / "NoteBooks/Mariya/mariya.jsonl")
    probes = data.load_probes(ROOT / "NoteBooks/Mariya/mariya_probes.jsonl")
    assert 220 <= len(ds) <= 260
    prompts = set(ds.prompts())
    assert all(p["question"] in prompts for p in probes if p["seen"])  # unseen: tests/evaluation/test_recall.py
    assert probes[0]["question"] == "Who is Mariya Sha?"
