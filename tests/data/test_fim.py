"""Fill-in-the-middle examples from a code repository: the walk, the cuts, both renderings and
their masks (only the middle is trained)."""

import json
import random
from pathlib import Path

import pytest

from helpers import data
from helpers.data import convert, fim
from helpers.training import masks

REAL_TOKENIZER = Path("/work/real/qwen2.5-coder-0.5b-instruct")

CODE = '''"""Tiny inventory helpers."""


def total(items):
    """The sum of the prices."""
    return sum(price for _, price in items)


def cheapest(items):
    best = None
    for name, price in items:
        if best is None or price < best[1]:
            best = (name, price)
    return best


class Shelf:
    def __init__(self, label):
        self.label = label
        self.items = []

    def add(self, name, price):
        self.items.append((name, price))
        return len(self.items)
'''


def make_repo(root: Path) -> Path:
    repo = root / "shop"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "inventory.py").write_text(CODE)
    (repo / "pkg" / "util.js").write_text("export function twice(x) {\n  return 2 * x;\n}\n\n"
                                          "export const NAME = 'util';\n")
    (repo / "README.md").write_text("# shop\nnot code\n")
    (repo / ".git").mkdir()
    (repo / ".git" / "hooks.py").write_text("print('hook')\n")
    (repo / "node_modules" / "dep").mkdir(parents=True)
    (repo / "node_modules" / "dep" / "index.js").write_text("module.exports = 1;\n")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "site.py").write_text("x = 1\n")
    (repo / "generated").mkdir()
    (repo / "generated" / "big.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("# build output\ngenerated/\n*.min.js\n")
    (repo / "app.min.js").write_text("var a=1;\n")
    (repo / "blob.py").write_bytes(b"\x00\x01\x02 binary")
    (repo / "huge.py").write_text("y = 2\n" * 50_000)
    (repo / "tokens.py").write_text("END = '<|endoftext|>'\n")
    return repo


def test_walk_keeps_code_and_skips_vendored_hidden_ignored_binary_huge(tmp_path):
    repo = make_repo(tmp_path)
    files, skipped = fim.code_files(repo)
    assert [p.relative_to(repo).as_posix() for p in files] == ["pkg/inventory.py", "pkg/util.js"]
    reasons = dict(skipped)
    assert reasons["blob.py"] == "binary"
    assert reasons["huge.py"].startswith("300000 bytes, over max_bytes")
    assert "control-token" in reasons["tokens.py"]
    only_py, _ = fim.code_files(repo, ["py"])
    assert [p.name for p in only_py] == ["inventory.py"]


@pytest.mark.parametrize("unit", ["line", "token"])
def test_cuts_reassemble_are_capped_and_deterministic(tmp_path, unit):
    repo = make_repo(tmp_path)
    exs, report = fim.examples(repo, n_per_file=4, seed=3, unit=unit, max_middle=3, max_context=120)
    again, _ = fim.examples(repo, n_per_file=4, seed=3, unit=unit, max_middle=3, max_context=120)
    other, _ = fim.examples(repo, n_per_file=4, seed=4, unit=unit, max_middle=3, max_context=120)
    assert exs == again and exs != other
    assert report["files"] == 2 and report["examples"] == len(exs) >= 6
    texts = {"pkg/inventory.py": CODE, "pkg/util.js": (repo / "pkg/util.js").read_text()}
    for e in exs:
        assert e.prefix + e.middle + e.suffix == texts[e.path][e.start:e.end] == e.region
        assert e.middle.strip() and len(e.prefix) <= 120 and len(e.suffix) <= 120
        if unit == "line":
            assert e.middle.count("\n") <= 3
            for piece in (e.prefix, e.middle):   # cut at line boundaries
                assert not piece or piece.endswith("\n")
            assert e.start == 0 or texts[e.path][e.start - 1] == "\n"


def test_adding_a_file_leaves_the_other_cuts_alone(tmp_path):
    repo = make_repo(tmp_path)
    before, _ = fim.examples(repo, seed=1)
    (repo / "pkg" / "new.py").write_text("def f():\n    return 1\n")
    after, _ = fim.examples(repo, seed=1)
    assert [e for e in after if e.path != "pkg/new.py"] == before


def test_errors_name_the_setting(tmp_path):
    with pytest.raises(fim.FimError, match="Repository folder not found"):
        fim.examples(tmp_path / "nope")
    repo = make_repo(tmp_path)
    with pytest.raises(fim.FimError, match="Set `extensions`"):
        fim.examples(repo, extensions=[".zig"])
    with pytest.raises(fim.FimError, match="unit='char'"):
        fim.examples(repo, unit="char")
    with pytest.raises(convert.ConvertError, match="style='fim' but gpt-oss-20b"):
        convert.fim_style("fim", model="gpt-oss-20b")


def test_family_table():
    assert convert.fim_style("auto", model="qwen2.5-3b") is fim.QWEN_FIM
    assert convert.fim_style("auto", model="qwen3-14b") is fim.QWEN_FIM
    assert convert.fim_style("auto", model="gpt-oss-20b") is None
    assert convert.fim_style("chat", model="qwen2.5-3b") is None


def _trained_text(tok, row):
    return tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != masks.IGNORE_INDEX])


def test_chat_fallback_on_the_standin_trains_only_the_middle(tmp_path, tokenizer_for):
    tok = tokenizer_for("qwen2.5")
    assert fim.fim_tokens(tok) is None     # the stand-in has no FIM tokens
    assert convert.fim_style("auto", tokenizer=tok) is None
    exs, _ = fim.examples(make_repo(tmp_path), n_per_file=3, seed=0)
    convs = [fim.to_record(e, None)["messages"] for e in exs]
    for e, c in zip(exs, convs):
        assert c[0]["role"] == "user" and fim.FILL in c[0]["content"]
        assert e.prefix + fim.FILL + e.suffix in c[0]["content"]
        assert c[1] == {"role": "assistant", "content": e.middle}
    rows, stats = masks.tokenize_dataset(tok, convs, max_seq_length=4096, model="tiny-qwen2.5")
    for e, row in zip(exs, rows):
        assert _trained_text(tok, row) == e.middle + "<|im_end|>"
    # the same records written and read back as chat JSONL
    out = convert.convert_repo(make_repo(tmp_path / "again"), tmp_path / "fim.jsonl", tokens=None,
                               n_per_file=3, validation=0.5)
    assert len(data.load(out.train)) == out.report["train"] > 0
    assert len(data.load(out.validation)) == out.report["validation"] > 0


def _fim_tokenizer(random_standin):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(random_standin("qwen2.5"))   # a fresh copy to extend
    tok.add_special_tokens({"additional_special_tokens": [
        t for t in fim.QWEN_FIM.strings() if t not in tok.get_vocab()]})
    return tok


def test_fim_tokens_render_psm_and_train_only_the_middle(tmp_path, random_standin):
    tok = _fim_tokenizer(random_standin)
    tokens = fim.fim_tokens(tok)
    assert tokens is fim.QWEN_FIM
    exs, _ = fim.examples(make_repo(tmp_path), n_per_file=3, seed=0)
    recs = [fim.to_record(e, tokens, repo_name="shop") for e in exs]
    e, r = exs[0], recs[0]
    assert r["raw_prompt"] == (f"<|repo_name|>shop\n<|file_sep|>{e.path}\n<|fim_prefix|>{e.prefix}"
                               f"<|fim_suffix|>{e.suffix}<|fim_middle|>")
    assert r["raw_completion"] == e.middle + "<|endoftext|>"
    rows, stats = masks.tokenize_raw_dataset(tok, recs, max_seq_length=4096, model="tiny+fim")
    for e, row in zip(exs, rows):
        assert _trained_text(tok, row) == e.middle + "<|endoftext|>"
        joined = tok(fim.raw_prompt(e, tokens, "shop") + e.middle + "<|endoftext|>",
                     add_special_tokens=False)["input_ids"]
        assert row["input_ids"] == joined   # tokenizing apart changes nothing at <|fim_middle|>
    assert 0 < stats["trained_share"] < 1


def test_raw_records_refuse_a_tokenizer_without_the_tokens(tmp_path, tokenizer_for):
    exs, _ = fim.examples(make_repo(tmp_path), n_per_file=1, seed=0)
    rec = fim.to_record(exs[0], fim.QWEN_FIM, repo_name="shop")
    with pytest.raises(masks.MaskingError, match="Example 0 .* no single token '<\\|fim_prefix\\|>'"):
        masks.tokenize_raw_dataset(tokenizer_for("qwen2.5"), [rec], max_seq_length=512)

def test_raw_records_load_as_their_own_format_and_bad_ones_are_named(tmp_path):
    exs, _ = fim.examples(make_repo(tmp_path), n_per_file=2, seed=0)
    recs = [fim.to_record(e, fim.QWEN_FIM, repo_name="shop") for e in exs]
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    ds = data.load(path, system_prompt="ignored: raw text has no chat template")
    assert ds.format == data.RAW and len(ds) == len(recs) and ds.conversations == []
    fields = ("raw_prompt", "raw_completion", "special_tokens")   # the other fields stay behind
    assert ds.raw == [{k: r[k] for k in fields} for r in recs] and ds.prompts() == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n"
                   + json.dumps({"raw_prompt": "x", "raw_completion": ""}) + "\n"
                   + json.dumps({"raw_prompt": "x", "raw_completion": "y", "special_tokens": "<|a|>"}) + "\n"
                   + json.dumps({"prompt": "a chat record", "completion": "in a raw file"}) + "\n")
    with pytest.raises(data.DataError) as err:
        data.load(bad)
    msg = str(err.value)
    assert "3 problem(s)" in msg and f"{bad}:2: missing or empty 'raw_completion'" in msg
    assert f"{bad}:3: 'special_tokens' must be a list" in msg
    assert f"{bad}:4: missing or empty 'raw_prompt' and 'raw_completion'" in msg


def test_raw_example_cut_off_by_max_seq_length_is_an_error(tmp_path, random_standin):
    tok = _fim_tokenizer(random_standin)
    exs, _ = fim.examples(make_repo(tmp_path), n_per_file=1, seed=0, max_context=500)
    recs = [fim.to_record(e, fim.QWEN_FIM) for e in exs]
    with pytest.raises(masks.MaskingError, match="max_seq_length"):
        masks.tokenize_raw_dataset(tok, recs, max_seq_length=3)


@pytest.mark.skipif(not (REAL_TOKENIZER / "tokenizer.json").is_file(),
                    reason="the real Qwen2.5-Coder tokenizer is not on this machine")
def test_real_qwen25_coder_tokenizer_has_the_fim_tokens(tmp_path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(REAL_TOKENIZER)
    assert fim.fim_tokens(tok) is fim.QWEN_FIM
    ids = {t: tok.convert_tokens_to_ids(t) for t in fim.QWEN_FIM.strings()}
    assert ids == {"<|fim_prefix|>": 151659, "<|fim_suffix|>": 151661, "<|fim_middle|>": 151660,
                   "<|repo_name|>": 151663, "<|file_sep|>": 151664, "<|endoftext|>": 151643}
    exs, _ = fim.examples(make_repo(tmp_path), n_per_file=2, seed=0)
    recs = [fim.to_record(e, fim.QWEN_FIM, repo_name="shop") for e in exs]
    rows, _ = masks.tokenize_raw_dataset(tok, recs, max_seq_length=4096, model="qwen2.5-coder-0.5b")
    for e, row in zip(exs, rows):
        assert _trained_text(tok, row) == e.middle + "<|endoftext|>"
        assert row["labels"][-1] == 151643
        assert 151660 in row["input_ids"] and row["labels"][row["input_ids"].index(151660)] == -100


def test_rng_seed_is_stable_across_processes():
    # random.Random(str) hashes the string with SHA-512, not Python's salted hash()
    assert random.Random("0:pkg/a.py").random() == 0.23304124274306992
