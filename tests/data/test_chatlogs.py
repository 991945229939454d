"""Claude.ai and ChatGPT exports to chat messages (hand-made fixtures in tests/data/chatlogs/)."""

import json
from pathlib import Path

import pytest

from helpers import data
from helpers.data import chatlogs, convert

HERE = Path(__file__).parent / "chatlogs"
CLAUDE = HERE / "claude_conversations.json"
CHATGPT = HERE / "chatgpt_conversations.json"


def test_claude_export():
    convs, report = chatlogs.load_export(CLAUDE)
    assert report == {"format": "claude", "conversations": 5, "kept": 4,
                      "left_out": {"too short": 1}}
    first = convs[0]
    assert [m["role"] for m in first] == ["user", "assistant", "user", "assistant"]
    # text blocks only (no thinking, tool use or tool results), joined
    assert first[1]["content"] == ("No, it is hungry. That acetone smell comes from the yeast "
                                   "running out of food.\n\nFeed it twice a day for a few days "
                                   "and the smell will fade.")
    assert convs[2] == [{"role": "user", "content": "What is the capital of Australia?"},
                        {"role": "assistant", "content": "Canberra."}]   # old export: `text`
    # the edited branch: the path from the last message back to the root
    assert [m["content"] for m in convs[3]] == [
        "Give me a word that rhymes with orange.",
        "Nothing rhymes perfectly with orange; sporange is the closest.",
        "And with silver?", "Chilver, an old word for a ewe lamb."]


def test_claude_filters():
    convs, report = chatlogs.load_export(CLAUDE, drop_attachments=True, min_turns=2)
    assert report["left_out"] == {"attachments": 1, "too short": 2}
    assert [len(c) for c in convs] == [4, 4]


def test_chatgpt_export_follows_current_node():
    convs, report = chatlogs.load_export(CHATGPT)
    assert report == {"format": "chatgpt", "conversations": 5, "kept": 4,
                      "left_out": {"too short": 1}}
    # edited user turn and a regenerated answer: the branch that ends at current_node
    assert convs[0] == [{"role": "user", "content": "Suggest a name for a grey cat."},
                        {"role": "assistant", "content": "How about Pebble?"},
                        {"role": "user", "content": "Something shorter?"},
                        {"role": "assistant", "content": "Smoke."}]
    # the code call and its tool output left out; the answer around them is one turn
    assert convs[1][1] == {"role": "assistant", "content": "Let me compute that.\n\n"
                           "2^100 = 1267650600228229401496703205376."}
    assert convs[2][0]["content"] == "What plant is this?"     # image part left out
    # custom instructions and thoughts left out
    assert [m["content"] for m in convs[3]] == [
        "Is a tomato a fruit?", "Botanically, yes; in the kitchen it is used as a vegetable."]


def test_chatgpt_without_current_node_follows_last_children():
    raw = json.loads(CHATGPT.read_text())
    del raw[0]["current_node"]
    conv, _ = chatlogs.chatgpt_conversation(raw[0])
    assert conv[-1]["content"] == "Smoke."


def test_chatgpt_drop_attachments():
    convs, report = chatlogs.load_export(CHATGPT, "chatgpt", drop_attachments=True)
    assert report["left_out"] == {"too short": 1, "attachments": 1}
    assert all("plant" not in c[0]["content"] for c in convs)


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(chatlogs.ChatLogError, match="Export file not found"):
        chatlogs.load_export(tmp_path / "conversations.json")
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps([{"messages": []}]))
    with pytest.raises(chatlogs.ChatLogError, match="unknown export format .*set format to one of claude, chatgpt"):
        chatlogs.load_export(bad)
    with pytest.raises(chatlogs.ChatLogError, match="looks like a claude export, not chatgpt"):
        chatlogs.load_export(CLAUDE, "chatgpt")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(chatlogs.ChatLogError, match="is not JSON"):
        chatlogs.load_export(tmp_path / "broken.json")
    with pytest.raises(convert.ConvertError, match="No examples to write.*too short"):
        convert.convert_chat_export(CHATGPT, tmp_path / "x.jsonl", min_turns=5)


def test_convert_writes_loadable_split_files(tmp_path):
    out = convert.convert_chat_export(CHATGPT, tmp_path / "chats.jsonl", validation=0.25,
                                      system_prompt="You are helpful.")
    r = out.report
    assert (r["input"], r["train"], r["validation"]) == (4, 3, 1)
    train, valid = data.load(out.train), data.load(out.validation)
    assert len(train) == 3 and len(valid) == 1
    assert all(c[0] == {"role": "system", "content": "You are helpful."} for c in train.conversations)
    saved = json.loads((tmp_path / "chats.report.json").read_text())
    assert saved["source"]["format"] == "chatgpt" and saved["train"] == 3
    again = convert.convert_chat_export(CHATGPT, tmp_path / "again.jsonl", validation=0.25,
                                        system_prompt="You are helpful.")
    assert again.validation.read_text() == out.validation.read_text()   # seeded
