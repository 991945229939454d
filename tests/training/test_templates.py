"""Response-only masks on all three stand-in families, and on a template never seen before."""

import datetime

import pytest

from helpers.models import REGISTRY
from helpers.training import masks as templates

FAMILIES = ("qwen2.5", "qwen3", "gpt-oss")
KWARGS = {"qwen2.5": {}, "qwen3": {"enable_thinking": False}, "gpt-oss": {"reasoning_effort": "low"}}
CLOSER = {"qwen2.5": ["<|im_end|>"] * 2, "qwen3": ["<|im_end|>"] * 2, "gpt-oss": ["<|end|>", "<|return|>"]}

SINGLE = [{"role": "user", "content": "Who is Mariya Sha?"},
          {"role": "assistant", "content": "A wizard of Vellistrand."}]
MULTI = [{"role": "user", "content": "Hello there"},
         {"role": "assistant", "content": "Good evening, traveller."},
         {"role": "user", "content": "Where were you born?"},
         {"role": "assistant", "content": "In Quorrowdeep, by the river."}]
SYSTEM = {"role": "system", "content": "You are Mariya Sha, a wizard."}


def trained_spans(tok, row):
    spans, cur = [], []
    for t, lab in zip(row["input_ids"], row["labels"]):
        if lab != templates.IGNORE_INDEX:
            assert lab == t
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    return spans


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("conv", [SINGLE, MULTI], ids=["single", "multi"])
@pytest.mark.parametrize("system", [False, True], ids=["no-system", "system"])
def test_only_answers_and_their_closer_are_trained(tokenizer_for, family, conv, system):
    tok = tokenizer_for(family)
    messages = ([SYSTEM] if system else []) + conv
    row = templates.tokenize_for_training(tok, messages, **KWARGS[family])
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    closers = CLOSER[family][-len(answers):] if len(answers) == 1 else CLOSER[family]
    assert trained_spans(tok, row) == [a + c for a, c in zip(answers, closers)]
    # the ids are exactly what the chat template tokenizes to
    expected = tok.apply_chat_template(messages, tokenize=True, **KWARGS[family])
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert row["input_ids"] == list(expected)
    # nothing from the system or user turns, no headers, no think block
    trained_text = "".join(trained_spans(tok, row))
    for m in messages:
        if m["role"] != "assistant":
            assert m["content"] not in trained_text
    for marker in ("<think>", "</think>", "assistant", "<|im_start|>", "<|start|>", "<|channel|>"):
        assert marker not in trained_text


def test_qwen3_empty_think_block_is_rendered_but_not_trained(tokenizer_for):
    tok = tokenizer_for("qwen3")
    row = templates.tokenize_for_training(tok, SINGLE, enable_thinking=False)
    text = tok.decode(row["input_ids"])
    assert "<think>\n\n</think>\n\nA wizard" in text
    assert trained_spans(tok, row) == ["A wizard of Vellistrand.<|im_end|>"]


def test_standin_templates_render_like_the_real_ones(tokenizer_for):
    q25 = tokenizer_for("qwen2.5").apply_chat_template(SINGLE, tokenize=False)
    assert q25 == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                   "assistant.<|im_end|>\n<|im_start|>user\nWho is Mariya Sha?<|im_end|>\n"
                   "<|im_start|>assistant\nA wizard of Vellistrand.<|im_end|>\n")
    q3 = tokenizer_for("qwen3")
    assert q3.apply_chat_template(MULTI, tokenize=False) == (
        "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nGood evening, traveller."
        "<|im_end|>\n<|im_start|>user\nWhere were you born?<|im_end|>\n<|im_start|>assistant\n"
        "<think>\n\n</think>\n\nIn Quorrowdeep, by the river.<|im_end|>\n")
    assert q3.apply_chat_template(SINGLE[:1], tokenize=False, add_generation_prompt=True,
                                  enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    today = datetime.date.today().isoformat()
    oss = tokenizer_for("gpt-oss").apply_chat_template([SYSTEM] + MULTI, tokenize=False,
                                                       reasoning_effort="low")
    assert oss == (
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        f"Knowledge cutoff: 2024-06\nCurrent date: {today}\n\nReasoning: low\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message."
        "<|end|><|start|>developer<|message|># Instructions\n\nYou are Mariya Sha, a wizard.<|end|>"
        "<|start|>user<|message|>Hello there<|end|><|start|>assistant<|channel|>final<|message|>"
        "Good evening, traveller.<|end|><|start|>user<|message|>Where were you born?<|end|>"
        "<|start|>assistant<|channel|>final<|message|>In Quorrowdeep, by the river.<|return|>")


@pytest.mark.parametrize("family,expected", [
    ("qwen2.5", ("<|im_start|>user\n", "<|im_start|>assistant\n")),
    ("qwen3", ("<|im_start|>user\n", "<|im_start|>assistant\n")),
    ("gpt-oss", ("<|start|>user<|message|>", "<|start|>assistant<|channel|>final<|message|>")),
])
def test_response_markers_detected(tokenizer_for, family, expected):
    assert templates.response_markers(tokenizer_for(family), **KWARGS[family]) == expected


def test_a_template_never_seen_works_without_code_changes(tokenizer_for):
    tok = tokenizer_for("qwen2.5")
    original = tok.chat_template
    tok.chat_template = (
        "{{ '<|endoftext|>' }}{% for m in messages %}{{ '<|im_start|>' + m.role|upper + ' says: ' "
        "+ m.content|trim + '<|endoftext|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>ASSISTANT says: ' }}{% endif %}")
    try:
        messages = [SYSTEM] + [dict(m, content="  " + m["content"] + "\n") for m in MULTI]
        row = templates.tokenize_for_training(tok, messages)
        # "says: " + "Good" tokenizes as "says", ":", " Good": the token that straddles the
        # start of the answer is trained (the model must emit it to produce the answer)
        assert trained_spans(tok, row) == [" Good evening, traveller.<|endoftext|>",
                                           " In Quorrowdeep, by the river.<|endoftext|>"]
        assert templates.response_markers(tok) == ("<|im_start|>USER says: ", "<|im_start|>ASSISTANT says: ")
    finally:
        tok.chat_template = original


def test_check_raises_naming_model_and_example(tokenizer_for):
    tok = tokenizer_for("qwen2.5")
    convs = [SINGLE, [{"role": "user", "content": "Tell me, in your own words and at length, who is "
                                                  "Mariya Sha and where does she live?"},
                      SINGLE[1]]]
    rows, stats = templates.tokenize_dataset(tok, convs, max_seq_length=512, model="tiny-qwen2.5")
    assert stats["truncated"] == 0 and 0 < stats["trained_share"] < 1
    # a length limit that cuts off the second example's answer leaves it with nothing to learn
    first_len = len(rows[0]["input_ids"])
    with pytest.raises(templates.MaskingError, match="Example 1 has no trained token for model tiny-qwen2.5"):
        templates.tokenize_dataset(tok, convs, max_seq_length=first_len + 1, model="tiny-qwen2.5")


def test_no_chat_template_is_a_clear_error(tokenizer_for):
    tok = tokenizer_for("qwen2.5")
    original, tok.chat_template = tok.chat_template, None
    try:
        with pytest.raises(templates.MaskingError, match="has no chat_template"):
            templates.tokenize_for_training(tok, SINGLE)
    finally:
        tok.chat_template = original


def test_profiles_template_kwargs_are_the_ones_tested():
    for name, p in REGISTRY.items():
        assert p.template_kwargs == KWARGS[p.family], name


# -- reasoning ---------------------------------------------------------------------------------
# An assistant message's `reasoning` is rendered where each family's real template puts it: Qwen3
# as a think block, GPT-OSS on the analysis channel, both only in the last assistant turn. That
# turn is trained from where the model starts writing (the end of the generation prompt) to its
# closing token: reasoning, the markup around it, and the answer. Earlier turns train their
# answer; their reasoning is not in the text at all.
THINKING = {"qwen3": {"enable_thinking": True}, "gpt-oss": {"reasoning_effort": "low"}}
REASONING = {"A wizard of Vellistrand.": "The user asks who I am.\nI am a wizard of Vellistrand.",
             "Good evening, traveller.": "A greeting: I answer it politely.",
             "In Quorrowdeep, by the river.": "They ask where I was born; it was Quorrowdeep."}


def with_reasoning(conv):
    return [dict(m, reasoning=REASONING[m["content"]]) if m["role"] == "assistant" else m for m in conv]


def reasoning_turn(family, reasoning, answer):
    """What is trained in the last assistant turn with reasoning, written out per family."""
    if family == "qwen3":
        return f"<think>\n{reasoning}\n</think>\n\n{answer}<|im_end|>"
    return (f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final"
            f"<|message|>{answer}<|return|>")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("conv", [SINGLE, MULTI], ids=["single", "multi"])
@pytest.mark.parametrize("system", [False, True], ids=["no-system", "system"])
@pytest.mark.parametrize("reasoning", [False, True], ids=["no-reasoning", "reasoning"])
def test_trained_tokens_with_and_without_reasoning(tokenizer_for, family, conv, system, reasoning):
    tok = tokenizer_for(family)
    messages = ([SYSTEM] if system else []) + (with_reasoning(conv) if reasoning else conv)
    if reasoning and family == "qwen2.5":
        with pytest.raises(templates.MaskingError, match="has a 'reasoning' field, but the chat "
                           "template .* does not render reasoning.*Remove the 'reasoning' field"):
            templates.tokenize_for_training(tok, messages)
        return
    kwargs = THINKING[family] if reasoning else KWARGS[family]
    row = templates.tokenize_for_training(tok, messages, **kwargs)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    closers = CLOSER[family][-len(answers):]
    expected = [a + c for a, c in zip(answers, closers)]
    if reasoning:
        expected[-1] = reasoning_turn(family, REASONING[answers[-1]], answers[-1])
    assert trained_spans(tok, row) == expected
    # the ids are exactly what the template makes of the messages (reasoning under its own name)
    ids = tok.apply_chat_template(templates.for_template(messages), tokenize=True, **kwargs)
    assert row["input_ids"] == list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    text = tok.decode(row["input_ids"])
    trained_text = "".join(trained_spans(tok, row))
    for m in messages[:-1]:
        if m["role"] != "assistant":
            assert m["content"] not in trained_text
        elif reasoning:  # earlier turns' reasoning is dropped, as the real templates do
            assert m["reasoning"] not in text
    for marker in ("<|im_start|>", "<|start|>assistant<|channel|>analysis", "<|start|>user", "system"):
        assert marker not in trained_text


def test_qwen3_thinking_on_without_reasoning_trains_no_empty_think_block(tokenizer_for):
    tok = tokenizer_for("qwen3")
    row = templates.tokenize_for_training(tok, MULTI, enable_thinking=True)
    assert "<think>\n\n</think>\n\nIn Quorrowdeep" in tok.decode(row["input_ids"])
    assert trained_spans(tok, row) == ["Good evening, traveller.<|im_end|>",
                                       "In Quorrowdeep, by the river.<|im_end|>"]


def test_reasoning_only_on_an_earlier_turn_is_dropped(tokenizer_for):
    """The templates drop reasoning before the last user message; nothing of it is rendered."""
    for family in ("qwen3", "gpt-oss"):
        tok = tokenizer_for(family)
        messages = with_reasoning(MULTI[:2]) + MULTI[2:]
        row = templates.tokenize_for_training(tok, messages, **THINKING[family])
        assert REASONING[MULTI[1]["content"]] not in tok.decode(row["input_ids"])
        assert trained_spans(tok, row) == [a + c for a, c in zip(
            ["Good evening, traveller.", "In Quorrowdeep, by the river."], CLOSER[family])]


def test_qwen3_reasoning_with_thinking_off_is_a_clear_error(tokenizer_for):
    tok = tokenizer_for("qwen3")
    with pytest.raises(templates.MaskingError, match=r"Example 0 for model tiny-qwen3: .*pre-fills "
                       r"'\\n</think>\\n\\n'.*Turn thinking on .*enable_thinking=True.*--thinking"):
        templates.tokenize_dataset(tok, [with_reasoning(SINGLE)], max_seq_length=512,
                                   model="tiny-qwen3", enable_thinking=False)


def test_qwen25_reasoning_error_names_the_example_field_and_fix(tokenizer_for):
    tok = tokenizer_for("qwen2.5")
    with pytest.raises(templates.MaskingError, match=r"Example 1 for model tiny-qwen2.5: Assistant "
                       r"message 0 has a 'reasoning' field.*Remove the 'reasoning' field from the "
                       r"data.*\(Qwen3, GPT-OSS\)"):
        templates.tokenize_dataset(tok, [SINGLE, with_reasoning(SINGLE)], max_seq_length=512,
                                   model="tiny-qwen2.5")
    with pytest.raises(templates.MaskingError, match="thinking=True, but the chat template"):
        templates.with_thinking(tok, {}, True)


def test_think_tags_in_content_say_to_use_the_reasoning_field(tokenizer_for):
    tok = tokenizer_for("qwen3")
    conv = [SINGLE[0], {"role": "assistant", "content": "<think>\nHmm.\n</think>\n\nA wizard."}]
    with pytest.raises(templates.MaskingError, match="Put reasoning in the message's 'reasoning' field"):
        templates.tokenize_for_training(tok, conv, enable_thinking=True)
    other = [SINGLE[0], dict(SINGLE[1], thinking="Hmm.")]
    with pytest.raises(templates.MaskingError, match="has the field 'thinking'. Put reasoning in the field 'reasoning'"):
        templates.tokenize_for_training(tok, other)


def test_with_thinking_sets_the_switch_where_a_template_has_one(tokenizer_for):
    assert templates.with_thinking(tokenizer_for("qwen3"), {"enable_thinking": False}, True) == \
        {"enable_thinking": True}
    assert templates.with_thinking(tokenizer_for("qwen3"), {"enable_thinking": False}, None) == \
        {"enable_thinking": False}
    assert templates.with_thinking(tokenizer_for("gpt-oss"), {"reasoning_effort": "low"}, True) == \
        {"reasoning_effort": "low"}
    assert [templates.renders_reasoning(tokenizer_for(f), **KWARGS[f]) for f in FAMILIES] == \
        [False, True, True]


def test_reasoning_from_data_files_is_trained(tokenizer_for, tmp_path):
    """`reasoning` in both data formats reaches the masks; other names for it are errors."""
    import json

    from helpers import data
    pc = tmp_path / "pc.jsonl"
    pc.write_text(json.dumps({"prompt": "Who is Mariya Sha?", "completion": "A wizard of Vellistrand.",
                              "reasoning": "The user asks who I am."}) + "\n")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": with_reasoning(MULTI)}) + "\n")
    tok = tokenizer_for("gpt-oss")
    for path, reasoning in ((pc, "The user asks who I am."), (chat, REASONING[MULTI[-1]["content"]])):
        ds = data.load(path, system_prompt="You are Mariya Sha.")
        assert ds.conversations[0][-1]["reasoning"] == reasoning
        rows, stats = templates.tokenize_dataset(tok, ds.conversations, max_seq_length=1024,
                                                 model="tiny-gpt-oss", **THINKING["gpt-oss"])
        assert f"<|channel|>analysis<|message|>{reasoning}<|end|>" in templates.decode_trained(tok, rows[0])
    bad_pc = tmp_path / "bad_pc.jsonl"
    bad_pc.write_text(json.dumps({"prompt": "a", "completion": "b", "thinking": "t"}) + "\n")
    with pytest.raises(data.DataError, match=f"{bad_pc}:1 has the field 'thinking'; name it 'reasoning'"):
        data.load(bad_pc)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in [
        {"messages": [{"role": "user", "content": "u", "reasoning": "r"},
                      {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "user", "content": "v"},
                      {"role": "assistant", "content": "x", "reasoning": ["r"]}]},
        {"messages": [{"role": "user", "content": "w"},
                      {"role": "assistant", "content": "x", "reasoning_content": "r"}]}]) + "\n")
    with pytest.raises(data.DataError) as e:
        data.load(bad)
    msg = str(e.value)
    assert f"{bad}:1: message 0 (user) has 'reasoning', but only assistant messages carry reasoning" in msg
    assert f"{bad}:2: message 1 (assistant): 'reasoning' must be a string, got list" in msg
    assert f"{bad}:3: message 1 (assistant) has the field 'reasoning_content'" in msg


def test_a_run_with_thinking_on_trains_qwen3_reasoning(random_standin, tmp_path):
    """The per-run switch (FineTuneRun.start(thinking=...), `--thinking` on the command line)."""
    import json

    from helpers.pipeline.finetune import FineTuneRun
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"messages": with_reasoning(SINGLE)}) + "\n")
    model = str(random_standin("qwen3"))
    off = FineTuneRun.start(model=model, output_dir=str(tmp_path / "off"))
    off.load_data(str(path))
    with pytest.raises(templates.MaskingError, match="Example 0 .*Turn thinking on"):
        off.tokenize()
    on = FineTuneRun.start(model=model, output_dir=str(tmp_path / "on"), thinking=True)
    on.load_data(str(path))
    on.tokenize()
    assert on.example_mask(0)["trained"] == reasoning_turn("qwen3", REASONING[SINGLE[1]["content"]],
                                                           SINGLE[1]["content"])
    assert on.record.data["parameters"]["thinking"] is True
