"""Response-only masks on all three stand-in families, and on a template never seen before."""

import datetime

import pytest

from helpers import templates
from helpers.models import REGISTRY

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
