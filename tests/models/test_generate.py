import pytest

from helpers import models
from helpers.models.generate import answer, strip_reasoning


@pytest.mark.parametrize("raw,expected", [
    ("<think>\nLet me think.\n</think>\n\nParis.", "Paris."),
    ("<think>\n\n</think>\n\nParis.<|im_end|>", "Paris."),
    ("<think>I am still thinking and ran out of tok", ""),
    # templates that open the think block in the prompt (Qwen3 thinking models): only </think>
    ("The user asks a capital.\n</think>\n\nParis.<|im_end|>", "Paris."),
    ("<think>\nA.\n</think>\n\n<think>\nB.\n</think>\n\nParis.", "Paris."),
    ("<|channel|>analysis<|message|>Capital.<|end|><|start|>assistant<|channel|>final"
     "<|message|>Paris.<|end|>", "Paris."),
    ("Plain answer.", "Plain answer."),
    ("<|channel|>analysis<|message|>User asks capital.<|end|><|start|>assistant<|channel|>final"
     "<|message|>Paris.<|return|>", "Paris."),
    ("<|channel|>final<|message|>Paris.<|return|>", "Paris."),
    ("<|channel|>analysis<|message|>thinking only, cut off", ""),
    ("The analysis shows bread rises.", "The analysis shows bread rises."),
])
def test_strip_reasoning(raw, expected):
    assert strip_reasoning(raw) == expected


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3", "gpt-oss"])
def test_batched_answers_one_per_question(random_standin, family):
    from helpers.runtime.loading import load_model
    choice = models.choose(str(random_standin(family)))
    model, tok = load_model(choice, backend="transformers")
    qs = ["Why is the sky blue?", "How do bees make honey?", "Tell me about trains."]
    out = answer(model, tok, qs, choice.profile, system_prompt="Be brief.", max_new_tokens=8, batch_size=2)
    assert len(out) == 3 and all(isinstance(a, str) for a in out)
    # greedy decoding is deterministic and does not depend on the batch it runs in
    assert answer(model, tok, qs[1:2], choice.profile, system_prompt="Be brief.", max_new_tokens=8) == out[1:2]
    assert tok.padding_side == "right"  # restored after generation
    sampled = answer(model, tok, qs, choice.profile, greedy=False, max_new_tokens=8, seed=1)
    assert len(sampled) == 3


def test_long_question_lists_log_their_progress(random_standin, monkeypatch, caplog):
    from helpers.models import generate
    from helpers.runtime.loading import load_model
    choice = models.choose(str(random_standin("qwen2.5")))
    model, tok = load_model(choice, backend="transformers")
    monkeypatch.setattr(generate, "PROGRESS_SECONDS", 0.0)   # every batch but the last
    with caplog.at_level("INFO", logger="helpers.models.generate"):
        answer(model, tok, ["One?", "Two?", "Three?", "Four?", "Five?"], choice.profile,
               max_new_tokens=2, batch_size=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Answered")]
    assert [line.split(" in ")[0] for line in lines] == ["Answered 2 of 5 questions", "Answered 4 of 5 questions"]
    assert all(line.endswith("s left") for line in lines)
