"""Exports (adapter, merged, GGUF + Ollama Modelfile), each reloaded and checked against the model
it came from.

The models are random-weight stand-ins with a LoRA adapter whose B matrices are set to small
random values: a fresh LoRA has B = 0 and changes nothing, so a merge that silently dropped the
adapter would pass every comparison. Each fixture checks first that the adapter does change the
logits.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import export, models

QUESTION = "Who are you?"
NEW_TOKENS = 8
ALL = ["qwen2.5", "qwen3", "gpt-oss"]
GGUF_FAMILIES = ["qwen2.5", "qwen3"]
#: GGUF logits vs merged float32 logits: largest absolute difference allowed per outtype
GGUF_TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "q8_0": 5e-2}


def _logit_gap(a, b) -> float:
    return float((a - b).abs().max())


def _answer(model, tokenizer, t) -> str:
    """What verify_export returns, for a model a test already loaded (export_all's tests call
    verify_export itself)."""
    from helpers.models.generate import answer
    return answer(model, tokenizer, [QUESTION], t.choice.profile, greedy=True,
                  max_new_tokens=NEW_TOKENS)[0]


def _tuned(family: str, base_dir: Path, root: Path) -> SimpleNamespace:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.training.trainer import add_lora, resolve_config

    choice = models.choose(str(base_dir))
    tok = AutoTokenizer.from_pretrained(base_dir)
    kw = {"attn_implementation": "eager"} if family == "gpt-oss" else {}
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, **kw).eval()
    base_logits = export.logits(model, tok)
    peft = add_lora(model, resolve_config(choice.profile))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    peft.eval()
    tuned_logits = export.logits(peft, tok)
    assert _logit_gap(tuned_logits, base_logits) > 0.05, "the adapter must change the logits"
    t = SimpleNamespace(family=family, base_dir=base_dir, choice=choice, tok=tok, peft=peft,
                        base_logits=base_logits, tuned_logits=tuned_logits, root=root, gguf={})
    t.answer = _answer(peft, tok, t)
    assert t.answer.strip(), "an empty answer would make the answer comparisons vacuous"
    t.adapter = export.export_adapter(peft, tok, root / "adapter")
    t.merged = export.export_merged(base_dir, t.adapter, root / "merged", dtype="float32")
    return t


@pytest.fixture(scope="module")
def tuned(random_standin, tmp_path_factory):
    cache: dict[str, SimpleNamespace] = {}

    def get(family: str) -> SimpleNamespace:
        if family not in cache:
            cache[family] = _tuned(family, random_standin(family), tmp_path_factory.mktemp(family))
        return cache[family]
    return get


@pytest.fixture(scope="module")
def gguf_file(tuned):
    def get(family: str, outtype: str) -> Path:
        t = tuned(family)
        if outtype not in t.gguf:
            t.gguf[outtype] = export.export_gguf(t.merged, t.root / "gguf" / f"m-{outtype}.gguf", outtype)
        return t.gguf[outtype]
    return get


# -- adapter -----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ALL)
def test_adapter_export_reloads_with_the_same_outputs(tuned, family):
    from safetensors import safe_open
    t = tuned(family)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja"):
        assert (t.adapter / name).is_file(), name
    assert export.adapter_base(t.adapter) == str(t.base_dir)
    with safe_open(str(t.adapter / "adapter_model.safetensors"), framework="pt") as st:
        b = [st.get_tensor(k) for k in st.keys() if "lora_B" in k]
    assert b and all(float(x.abs().max()) > 0 for x in b)

    model, tok = export.load_export("adapter", t.adapter)
    assert _logit_gap(export.logits(model, tok), t.tuned_logits) < 1e-5
    assert _answer(model, tok, t) == t.answer


def test_export_adapter_needs_a_lora_model(tuned, tmp_path):
    from transformers import AutoModelForCausalLM
    t = tuned("qwen2.5")
    with pytest.raises(TypeError, match="LoRA-wrapped model"):
        export.export_adapter(AutoModelForCausalLM.from_pretrained(t.base_dir), t.tok, tmp_path / "a")
    assert not (tmp_path / "a").exists()


# -- merged ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ALL)
def test_merged_export_computes_base_plus_adapter(tuned, family):
    from safetensors import safe_open
    t = tuned(family)
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "chat_template.jinja", export.MERGED_INFO):
        assert (t.merged / name).is_file(), name
    with safe_open(str(t.merged / "model.safetensors"), framework="pt") as st:
        assert not [k for k in st.keys() if "lora" in k]
    gen = json.loads((t.merged / "generation_config.json").read_text())
    assert gen["eos_token_id"] == json.loads((t.base_dir / "generation_config.json").read_text())["eos_token_id"]

    cmp = export.compare_merged_logits(t.merged)
    assert cmp["allclose"] and cmp["max_abs_diff"] < 1e-4, cmp
    model, tok = export.load_export("merged", t.merged)
    merged_logits = export.logits(model, tok)
    assert _logit_gap(merged_logits, t.tuned_logits) < 1e-4
    assert _logit_gap(merged_logits, t.base_logits) > 0.05          # the adapter is in the weights
    assert _answer(model, tok, t) == t.answer


def test_merged_bfloat16_is_16_bit_and_close(tuned, tmp_path):
    from safetensors import safe_open
    t = tuned("qwen3")
    out = export.export_merged(t.base_dir, t.adapter, tmp_path / "bf16", dtype="bfloat16")
    with safe_open(str(out / "model.safetensors"), framework="pt") as st:
        dtypes = {st.get_slice(k).get_dtype() for k in st.keys()}
    assert dtypes == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert export.size_mb(out / "model.safetensors") < 0.6 * export.size_mb(t.merged / "model.safetensors")
    cmp = export.compare_merged_logits(out)
    assert cmp["dtype"] == "bfloat16" and cmp["allclose"], cmp


def test_a_wrong_merge_is_caught(tuned, tmp_path, monkeypatch):
    """A merged model made from another adapter fails the logits check, and export_all stops."""
    from safetensors.torch import load_file, save_file
    t = tuned("qwen2.5")
    other = export.copy_adapter(t.adapter, tmp_path / "other")
    weights = load_file(str(other / "adapter_model.safetensors"))
    save_file({k: v * 2 if "lora_B" in k else v for k, v in weights.items()},
              str(other / "adapter_model.safetensors"))
    wrong = export.export_merged(t.base_dir, other, tmp_path / "wrong", dtype="float32")
    cmp = export.compare_merged_logits(wrong, adapter_dir=str(t.adapter))
    assert not cmp["allclose"] and cmp["max_abs_diff"] > cmp["tolerance"]

    monkeypatch.setattr(export, "compare_merged_logits", lambda merged_dir, **kw: cmp)
    with pytest.raises(export.ExportVerificationError, match="does not compute what base"):
        export.export_all((t.peft, t.tok, t.choice, t.adapter), tmp_path / "all",
                          formats=("merged",), merged_dtype="float32", max_new_tokens=2)


def test_export_merged_refuses_a_quantized_base(tuned, tmp_path):
    t = tuned("qwen2.5")
    base = Path(shutil.copytree(t.base_dir, tmp_path / "base4bit"))
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unquantized base model"):
        export.export_merged(base, t.adapter, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_export_merged_errors_name_the_fix(tuned, tmp_path):
    t = tuned("qwen2.5")
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors missing"):
        export.export_merged(t.base_dir, tmp_path, tmp_path / "m")
    with pytest.raises(ValueError, match="bfloat16, float16, float32"):
        export.export_merged(t.base_dir, t.adapter, tmp_path / "m", dtype="int8")


# -- GGUF --------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_gguf_metadata_describes_the_model_and_tokenizer(tuned, gguf_file, family):
    import gguf
    t = tuned(family)
    path = gguf_file(family, "f32")
    cfg = json.loads((t.merged / "config.json").read_text())
    meta = export.gguf_metadata(path)
    arch = {"qwen2.5": "qwen2", "qwen3": "qwen3"}[family]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    expected = {
        "general.architecture": arch,
        f"{arch}.context_length": cfg["max_position_embeddings"],
        f"{arch}.embedding_length": cfg["hidden_size"],
        f"{arch}.block_count": cfg["num_hidden_layers"],
        f"{arch}.feed_forward_length": cfg["intermediate_size"],
        f"{arch}.attention.head_count": cfg["num_attention_heads"],
        f"{arch}.attention.head_count_kv": cfg["num_key_value_heads"],
        f"{arch}.attention.key_length": head_dim,
        f"{arch}.rope.freq_base": cfg["rope_parameters"]["rope_theta"],
        f"{arch}.vocab_size": cfg["vocab_size"],
        "general.file_type": int(gguf.LlamaFileType.ALL_F32),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.eos_token_id": t.tok.eos_token_id,
        "tokenizer.ggml.padding_token_id": t.tok.pad_token_id,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": t.tok.chat_template,
    }
    assert {k: meta.get(k) for k in expected} == expected
    assert meta[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])

    reader = gguf.GGUFReader(str(path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    vocab = t.tok.get_vocab()
    assert len(tokens) == len(types) == cfg["vocab_size"]
    assert all(tokens[i] == tok for tok, i in vocab.items())
    assert types[vocab["<|im_end|>"]] == gguf.TokenType.CONTROL
    assert types[500] == gguf.TokenType.NORMAL and tokens[500] not in t.tok.get_added_vocab()
    if family == "qwen3":
        assert types[vocab["<think>"]] == gguf.TokenType.USER_DEFINED
    hf_merges = json.loads((t.merged / "tokenizer.json").read_text())["model"]["merges"]
    assert merges == [" ".join(m) if isinstance(m, list) else m for m in hf_merges]
    tensors = meta["_tensors"]
    assert "output.weight" not in tensors                 # tied: llama.cpp reuses token_embd
    assert tensors["token_embd.weight"] == ("F32", [cfg["hidden_size"], cfg["vocab_size"]])
    assert len(tensors) == len([n for n in tensors if n.startswith("blk.")]) + 2


@pytest.mark.parametrize("outtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_gguf_reloads_close_to_the_merged_model(tuned, gguf_file, family, outtype):
    t = tuned(family)
    path = gguf_file(family, outtype)
    model, tok = export.load_export("gguf", path)
    got = export.logits(model, tok)
    gap = _logit_gap(got, t.tuned_logits)
    assert gap < GGUF_TOLERANCE[outtype], gap
    assert _logit_gap(got, t.base_logits) > 10 * gap        # the merged adapter is in the file
    tensors = export.gguf_metadata(path)["_tensors"].values()
    assert {qt for qt, shape in tensors if len(shape) == 2} == {{"f32": "F32", "f16": "F16", "q8_0": "Q8_0"}[outtype]}
    assert {qt for qt, shape in tensors if len(shape) == 1} == {"F32"}     # norms (and biases)
    if outtype == "f32":
        assert gap < 1e-6
        text = t.tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": QUESTION}], tokenize=False,
                                         add_generation_prompt=True, **t.choice.profile.template_kwargs)
        assert tok(text, add_special_tokens=False)["input_ids"] == \
            t.tok(text, add_special_tokens=False)["input_ids"]
        assert _answer(model, tok, t) == t.answer                   # greedy, same tokens


def test_gguf_sizes_follow_the_outtype(gguf_file):
    sizes = {o: export.size_mb(gguf_file("qwen3", o)) for o in ("f32", "f16", "q8_0")}
    assert sizes["f32"] > 1.8 * sizes["f16"] and sizes["f16"] > 1.5 * sizes["q8_0"], sizes


def test_gguf_for_gpt_oss_says_what_to_use(tuned, tmp_path):
    t = tuned("gpt-oss")
    with pytest.raises(NotImplementedError) as err:
        export.export_gguf(t.merged, tmp_path / "g.gguf", "f16")
    msg = str(err.value)
    for part in ("gpt_oss", "save_pretrained_gguf", "convert_hf_to_gguf.py", str(t.merged)):
        assert part in msg
    assert not list(tmp_path.iterdir())


def test_export_gguf_errors_name_the_fix(tuned, tmp_path):
    t = tuned("qwen2.5")
    with pytest.raises(ValueError, match="f16, f32, q8_0"):
        export.export_gguf(t.merged, tmp_path / "g.gguf", "q4_k_m")
    with pytest.raises(ValueError, match="auto, builtin, unsloth"):
        export.export_gguf(t.merged, tmp_path / "g.gguf", backend="llama")
    with pytest.raises(FileNotFoundError, match="export_merged first"):
        export.export_gguf(t.adapter, tmp_path / "g.gguf")
    if not models.cuda_available():
        with pytest.raises(ImportError, match="needs Unsloth on a machine with CUDA"):
            export.export_gguf(t.merged, tmp_path / "g.gguf", backend="unsloth")
    assert not list(tmp_path.iterdir())


# -- Ollama Modelfile --------------------------------------------------------------------------

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


def render_go_template(template: str, system: str | None, messages: list[dict]) -> str:
    """The subset of Go's text/template that Modelfile templates use here: trim markers, if /
    else if / else / end, range over .Messages, field output and ``eq``."""
    tokens: list[list] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        tokens.append(["text", text.rstrip() if m.group(1) else text])
        tokens.append(["act", m.group(2), bool(m.group(3))])
        pos = m.end()
    tokens.append(["text", template[pos:]])
    for i, tok in enumerate(tokens):
        if tok[0] == "act" and tok[2]:
            tokens[i + 1][1] = tokens[i + 1][1].lstrip()

    def parse(i):
        nodes = []
        while i < len(tokens):
            kind, body = tokens[i][0], tokens[i][1]
            if kind == "text":
                nodes.append(("text", body))
                i += 1
            elif body == "end" or body.startswith("else"):
                return nodes, i
            elif body.startswith("if "):
                branches, cond, i = [], body[3:], i + 1
                while True:
                    part, i = parse(i)
                    branches.append((cond, part))
                    closing = tokens[i][1]
                    i += 1
                    if closing == "end":
                        break
                    cond = closing[len("else if "):] if closing.startswith("else if ") else None
                nodes.append(("if", branches))
            elif body.startswith("range "):
                part, i = parse(i + 1)
                assert tokens[i][1] == "end"
                nodes.append(("range", body[len("range "):], part))
                i += 1
            else:
                nodes.append(("expr", body))
                i += 1
        return nodes, i

    def value(expr, dot):
        if expr.startswith("eq "):
            a, b = shlex.split(expr[3:])
            return value(a, dot) == b
        assert expr.startswith("."), expr
        return dot[expr[1:]]

    def run(nodes, dot):
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "expr":
                out.append(str(value(node[1], dot)))
            elif node[0] == "if":
                for cond, part in node[1]:
                    if cond is None or value(cond, dot):
                        out.append(run(part, dot))
                        break
            else:
                out.extend(run(node[2], item) for item in value(node[1], dot))
        return "".join(out)

    nodes, _ = parse(0)
    root = {"System": system or "",
            "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    return run(nodes, root)


def _modelfile(text: str) -> dict:
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    params = re.findall(r"^PARAMETER (\S+) (.*)$", text, re.M)
    return {"from": re.search(r"^FROM (.*)$", text, re.M).group(1), "template": template,
            "system": system.group(1) if system else None, "params": params}


CONVERSATIONS = [
    [{"role": "user", "content": "Who is Mariya?"}],
    [{"role": "system", "content": "You are Mariya."}, {"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "You are Mariya."}, {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello, traveller."}, {"role": "user", "content": "Where do you live?"}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"},
     {"role": "user", "content": "Three\nlines"}],
]


@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_modelfile_template_renders_like_the_chat_template(tuned, gguf_file, family):
    t = tuned(family)
    path = export.write_modelfile(gguf_file(family, "f32"), system_prompt="You are Mariya.")
    mf = _modelfile(path.read_text())
    assert mf["from"] == "./m-f32.gguf"
    assert mf["system"] == "You are Mariya."
    assert ("stop", '"<|im_end|>"') in mf["params"] and ("stop", '"<|endoftext|>"') in mf["params"]
    inference = t.choice.profile.inference
    assert ("temperature", str(inference.temperature)) in mf["params"]
    assert ("top_p", str(inference.top_p)) in mf["params"]
    assert ("top_k", str(inference.top_k)) in mf["params"]
    assert (("repeat_penalty", "1.05") in mf["params"]) == (family == "qwen2.5")
    for conv in CONVERSATIONS:
        system = conv[0]["content"] if conv[0]["role"] == "system" else None
        expected = t.tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True,
                                             **t.choice.profile.template_kwargs)
        assert render_go_template(mf["template"], system, conv) == expected


def test_modelfile_elsewhere_points_at_the_gguf_and_takes_params(gguf_file, tmp_path):
    gguf_path = gguf_file("qwen3", "f32")
    path = export.write_modelfile(gguf_path, tmp_path / "ollama",
                                  params={"temperature": 0.2, "num_ctx": 4096, "stop": "<|custom|>"})
    mf = _modelfile(path.read_text())
    assert ((path.parent / mf["from"]).resolve()) == gguf_path.resolve()
    assert ("temperature", "0.2") in mf["params"] and ("temperature", "0.7") not in mf["params"]
    assert ("num_ctx", "4096") in mf["params"] and ("stop", '"<|custom|>"') in mf["params"]
    assert mf["system"] is None
    with pytest.raises(ValueError, match="Known: temperature"):
        export.write_modelfile(gguf_path, tmp_path, params={"temprature": 0.2})


# -- export_all --------------------------------------------------------------------------------

def test_export_all_from_a_run_folder(tuned, tmp_path):
    from helpers.training.runrecord import RunRecord
    t = tuned("qwen2.5")
    run = tmp_path / "run"
    RunRecord(run).update("model", {"profile": str(t.base_dir), "family": "qwen2.5"})
    export.copy_adapter(t.adapter, run / "adapter")
    out = tmp_path / "export"
    result = export.export_all(run, out, question=QUESTION, merged_dtype="float32",
                               gguf_outtype="f32", max_new_tokens=NEW_TOKENS)
    assert list(result) == ["adapter", "merged", "gguf"]
    for fmt, row in result.items():
        assert row["status"] == "ok" and row["reason"] is None, row
        assert row["answer"] == t.answer, fmt
        assert row["size_mb"] == export.size_mb(row["path"]) > 0
    assert result["merged"]["logits_match"] is True
    assert Path(result["gguf"]["path"]).parent == out / "gguf"
    assert (out / "gguf" / "Modelfile").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "gguf", "merged"]


def test_export_all_for_gpt_oss_skips_gguf_with_the_reason(tuned, tmp_path):
    t = tuned("gpt-oss")
    out = tmp_path / "export"
    result = export.export_all((t.peft, t.tok, t.choice, None), out, formats=("adapter", "gguf"),
                               question=QUESTION, max_new_tokens=NEW_TOKENS)
    assert result["adapter"]["status"] == "ok" and result["adapter"]["answer"] == t.answer
    assert result["gguf"]["status"] == "skipped" and result["gguf"]["path"] is None
    assert "convert_hf_to_gguf.py" in result["gguf"]["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["adapter"]      # scratch merge cleaned up


def test_export_all_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="Known formats: adapter, merged, gguf"):
        export.export_all(tmp_path, tmp_path / "o", formats=("onnx",))
    with pytest.raises(ValueError, match="gguf_outtype"):
        export.export_all(tmp_path, tmp_path / "o", gguf_outtype="q4")
    with pytest.raises(FileNotFoundError, match="has no run.json"):
        export.export_all(tmp_path, tmp_path / "o")


def test_export_gguf_refuses_what_it_cannot_encode(tuned, tmp_path):
    """An unknown tensor or a RoPE scaling our writer does not encode stops it, leaving no file."""
    import torch
    from safetensors.torch import save_file
    t = tuned("qwen2.5")
    merged = Path(shutil.copytree(t.merged, tmp_path / "extra"))
    save_file({"model.vision_tower.weight": torch.zeros(4, 4)}, str(merged / "z-extra.safetensors"))
    with pytest.raises(ValueError, match="no GGUF name for tensor 'model.vision_tower.weight'"):
        export.export_gguf(merged, tmp_path / "out")
    merged = Path(shutil.copytree(t.merged, tmp_path / "yarn"))
    cfg = json.loads((merged / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}
    (merged / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NotImplementedError, match="'yarn' RoPE scaling.*convert_hf_to_gguf.py"):
        export.export_gguf(merged, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
