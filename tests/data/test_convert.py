"""Local `datasets` files to chat JSONL, the shared dedupe/split/report, and the command line."""

import json
from pathlib import Path

import pytest

from helpers import data
from helpers.data import convert

HERE = Path(__file__).parent / "chatlogs"

ROWS = [{"instruction": f"Name a prime number above {10 * i}.", "input": "",
         "output": f"{[11, 23, 31, 41, 53, 61, 71, 83][i]} is one."} for i in range(8)]


def write_rows(path: Path, rows):
    if path.suffix == ".parquet":
        import pandas as pd
        pd.DataFrame(rows).to_parquet(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".jsonl"])
def test_named_columns_from_each_file_kind(tmp_path, suffix):
    rows = ROWS + [ROWS[0], dict(ROWS[1], output="  23 is ONE!"), dict(ROWS[2], output=" ")]
    src = write_rows(tmp_path / f"alpaca{suffix}", rows)
    out = convert.convert_datasets_file(src, tmp_path / "alpaca.jsonl", prompt_field="instruction",
                                        completion_field="output", input_field="input",
                                        validation=0.25, seed=1)
    r = out.report
    assert r["source"]["left_out"] == {"empty or no answer": 1}
    assert r["input"] == 10 and r["duplicates"]["exact"] == 1
    assert r["duplicates"]["normalised"] == 1      # same words after case/spacing/punctuation
    assert (r["train"], r["validation"]) == (6, 2)
    convs = data.load(out.train).conversations + data.load(out.validation).conversations
    assert sorted(c[0]["content"] for c in convs) == sorted(x["instruction"] for x in ROWS)


def test_prompt_completion_and_messages_columns(tmp_path):
    pc = write_rows(tmp_path / "pc.jsonl", [{"prompt": "Hi?", "completion": "Hello."},
                                             {"prompt": "Bye?", "completion": "Goodbye."}])
    convs, report = convert.from_datasets_file(pc)
    assert report["columns"] == ["prompt", "completion"]
    assert convs[0] == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    msgs = [{"messages": [{"role": "system", "content": "Be kind."},
                          {"role": "user", "content": "Hi?"},
                          {"role": "tool", "content": "ignored"},
                          {"role": "assistant", "content": "Hello."}]},
            {"messages": [{"role": "user", "content": "No answer"}]}]
    convs, report = convert.from_datasets_file(write_rows(tmp_path / "m.parquet", msgs))
    assert [m["role"] for m in convs[0]] == ["system", "user", "assistant"]
    assert report["left_out"] == {"empty or no answer": 1}
    share = [{"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Yo."}]}]
    convs, _ = convert.from_datasets_file(write_rows(tmp_path / "s.json", share),
                                          messages_field="conversations")
    assert convs == [[{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo."}]]


def test_missing_column_lists_the_columns(tmp_path):
    src = write_rows(tmp_path / "a.jsonl", ROWS)
    with pytest.raises(convert.ConvertError, match="no column 'prompt', 'completion'; its columns "
                       "are instruction, input, output. Name the columns with prompt_field"):
        convert.from_datasets_file(src)
    with pytest.raises(convert.ConvertError, match="expected an existing file ending in .parquet"):
        convert.from_datasets_file(tmp_path / "a.txt")


def test_same_prompt_later_answer_dropped_so_data_load_accepts_it(tmp_path):
    recs = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": a}]}
            for a in ("Hello there.", "Good morning to you.")]
    out = convert.finish(recs, tmp_path / "x.jsonl", validation=0)
    assert out.report["duplicates"]["same_prompt"] == 1 and out.report["train"] == 1
    assert out.validation.read_text() == ""
    assert len(data.load(out.train)) == 1


def test_fim_split_holds_out_whole_files(tmp_path):
    recs = [{"messages": [{"role": "user", "content": f"gap {f} {i}"},
                          {"role": "assistant", "content": f"code {f} {i}"}], "source": f"f{f}.py"}
            for f in range(10) for i in range(3)]
    out = convert.finish(recs, tmp_path / "fim.jsonl", validation=0.2, seed=0)
    train = [json.loads(x)["source"] for x in out.train.read_text().splitlines()]
    valid = [json.loads(x)["source"] for x in out.validation.read_text().splitlines()]
    assert not set(train) & set(valid) and len(valid) == 6 and len(train) == 24


def test_command_line(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert convert.main(["claude", str(HERE / "claude_conversations.json"), "--out", str(out),
                         "--min-turns", "2"]) == 0
    assert "train" in capsys.readouterr().out and out.is_file()
    assert convert.main(["chatgpt", str(HERE / "claude_conversations.json"), "--out", str(out)]) == 2
    assert "looks like a claude export" in capsys.readouterr().err
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("".join(f"x{i} = {i}\n" for i in range(40)))
    assert convert.main(["fim", str(repo), "--model", "qwen2.5-3b", "--out", str(tmp_path / "f.jsonl"),
                         "--per-file", "3", "--validation", "0"]) == 0
    recs = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(r["raw_prompt"].startswith("<|repo_name|>repo\n<|file_sep|>a.py\n")
                                  for r in recs)
    assert convert.main(["fim", str(repo), "--model", "gpt-oss-20b", "--out",
                         str(tmp_path / "g.jsonl")]) == 0
    assert "messages" in json.loads((tmp_path / "g.jsonl").read_text().splitlines()[0])
    assert convert.main(["fim", str(repo), "--model", "no-such-model", "--out", str(out)]) == 2
    assert "Unknown model" in capsys.readouterr().err
    src = write_rows(tmp_path / "d.jsonl", ROWS)
    assert convert.main(["datasets", str(src), "--out", str(out)]) == 2
    assert "--prompt-field" in capsys.readouterr().err
