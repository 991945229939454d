"""Replayed answers trained towards the base model's distribution (helpers.training.anchor)."""

import pytest

from helpers.training import anchor, passes
from tests.support.chat_pairs import data_and_replayed


def test_kl_is_zero_with_zero_gradient_where_the_model_is_the_base():
    import torch
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    base = torch.log_softmax(logits, -1)
    top = base.topk(4, -1)
    student = logits.clone().requires_grad_(True)
    div = anchor.kl(torch.log_softmax(student, -1), top.indices, top.values)
    assert torch.allclose(div, torch.zeros(5), atol=1e-6)
    div.sum().backward()
    assert student.grad.abs().max() < 1e-6
    moved = anchor.kl(torch.log_softmax(logits + torch.randn(5, 50), -1), top.indices, top.values)
    assert (moved > 1e-3).all()


def test_batch_targets_follow_the_trained_positions_example_by_example():
    examples = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]},
                {"input_ids": [1, 4], "labels": [-100, 4], anchor.IDS: [[4, 5]], anchor.LOGPROBS: [[-0.1, -3.0]]}]
    out = anchor.batch_targets(examples)
    assert out["teacher_on"].tolist() == [False, False, True]
    assert out["teacher_ids"].tolist() == [[0, 0], [0, 0], [4, 5]]
    assert all(anchor.IDS not in e for e in examples)   # popped before TRL's collator sees them
    assert anchor.batch_targets([{"input_ids": [1, 2], "labels": [-100, 2]}]) is None
    raw = [{"input_ids": [7, 8], "labels": [7, 8]}, dict(examples[1], **{anchor.IDS: [[4, 5]],
                                                                         anchor.LOGPROBS: [[-0.1, -3.0]]})]
    assert anchor.batch_targets(raw)["teacher_on"].tolist() == [False, True] and raw[0]["labels"] == [-100, 8]
    with pytest.raises(ValueError, match="1 teacher positions for a row with 2 trained tokens"):
        anchor.batch_targets([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3],
                               anchor.IDS: [[1]], anchor.LOGPROBS: [[0.0]]}])


def test_mark_and_rows_whose_first_token_is_trained():
    rows = [{"input_ids": [i], "labels": [-100]} for i in range(4)]
    anchor.mark(rows, 2)
    assert [r.get(anchor.KEY, False) for r in rows] == [False, False, True, True]
    assert anchor.marked(rows) == 2
    anchor.mark(rows, 0)
    assert anchor.marked(rows) == 2
    with pytest.raises(ValueError, match="first token is trained"):
        anchor._trained_positions([5, 6])


@pytest.fixture
def lora_standin(random_standin, tokenizer_for):
    from helpers import models
    from helpers.runtime.loading import load_model
    from helpers.training import masks
    from helpers.training.config import resolve_config
    from helpers.training.trainer import add_lora

    choice = models.choose(str(random_standin("qwen2.5")))
    tok = tokenizer_for("qwen2.5")
    rows, _ = masks.tokenize_dataset(tok, data_and_replayed(), max_seq_length=128)
    cfg = resolve_config(choice.profile, epochs=3, batch_size=2, grad_accum=1, learning_rate=5e-3,
                         logging_steps=1, max_seq_length=128, report_to="none")
    model, _ = load_model(choice, backend="transformers")
    return add_lora(model, cfg), tok, rows, cfg


def _inputs(rows):
    import torch
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def test_replayed_rows_do_not_push_a_fresh_adapter_and_data_rows_keep_their_cross_entropy(lora_standin):
    """At the start (LoRA's B is zero, so the tuned model is the base) the replayed rows' loss
    and gradient are zero, where ordinary labels would push; the data rows' loss is the usual
    mean cross-entropy."""
    import torch
    model, _, rows, _ = lora_standin
    anchor.mark(rows, 6)
    filled = anchor.teacher_targets(model, rows, top_k=8)
    assert filled == sum(1 for r in rows[4:] for x in r["labels"] if x != -100)
    assert all(r[anchor.IDS] == [] for r in rows[:4]) and all(len(r[anchor.IDS][0]) == 8 for r in rows[4:])
    model.train()
    replayed = [passes.item(r) for r in rows[4:]]
    inputs = _inputs(replayed)
    value = anchor.loss(model, dict(inputs), anchor.batch_targets([dict(r) for r in replayed]))
    value.backward()
    grads = [p.grad.abs().max().item() for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert abs(value.item()) < 1e-4 and max(grads) < 1e-4
    model.zero_grad()
    plain = model(**inputs).loss      # what ordinary labels would train on
    assert plain.item() > 1.0
    data = [passes.item(r) for r in rows[:4]] + [passes.item(rows[4])]
    targets = anchor.batch_targets([dict(r) for r in data])
    targets["teacher_on"][:] = False  # every position on its labels: the model's own mean cross-entropy
    mixed = anchor.loss(model, dict(_inputs(data)), targets)
    assert torch.allclose(mixed, model(**_inputs(data)).loss, atol=1e-5)


@pytest.mark.parametrize("padding_free", [False, True])
def test_trl_trainer_trains_replayed_rows_on_the_base_distribution(lora_standin, tmp_path, monkeypatch,
                                                                  padding_free):
    """Through TRL's trainer, padded and padding-free: every batch holding replayed rows gets
    their targets, lined up with its trained tokens (the loss checks the count), each replayed
    position once over the run (each row trains in its own pass), and the loss falls."""
    import dataclasses

    from helpers.training.trainer import train
    model, tok, rows, cfg = lora_standin
    cfg = dataclasses.replace(cfg, padding_free=padding_free)
    anchor.mark(rows, 6)
    passes.tag(rows, [0, 0, 1, 1, 2, 2])
    calls = []
    original = anchor.loss

    def spy(m, inputs, targets, num_items_in_batch=None, weight=1.0):
        value = original(m, inputs, targets, num_items_in_batch, weight)
        calls.append((targets["teacher_on"].tolist(), value.item()))
        return value
    monkeypatch.setattr(anchor, "loss", spy)
    result = train(model, tok, rows, cfg, tmp_path)
    assert result.steps == 9 and 3 <= len(calls) <= 9   # batches of data rows only take TRL's loss
    replayed_positions = sum(1 for r in rows[4:] for x in r["labels"] if x != -100)
    assert sum(sum(on) for on, _ in calls) == replayed_positions
    assert all(v == v and v < 20 for _, v in calls)
    assert result.final_loss < result.loss_history[0]["loss"]


def test_replay_kl_off_trains_ordinary_labels(lora_standin, tmp_path, monkeypatch):
    import dataclasses

    from helpers.training.trainer import train
    model, tok, rows, cfg = lora_standin
    anchor.mark(rows, 6)
    monkeypatch.setattr(anchor, "teacher_targets", lambda *a, **k: pytest.fail("targets computed"))
    result = train(model, tok, rows, dataclasses.replace(cfg, replay_kl=0.0, epochs=1), tmp_path)
    assert result.steps == 5 and not any(anchor.IDS in r for r in rows)


def test_weight_scales_the_replayed_positions_only():
    import torch
    torch.manual_seed(1)

    class Tiny(torch.nn.Module):
        training = True

        def forward(self, input_ids, attention_mask=None, use_cache=None):
            class Out:
                pass
            out = Out()
            out.logits = torch.randn(input_ids.shape[0], input_ids.shape[1], 12, generator=torch.Generator().manual_seed(3))
            return out
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([[-100, 2, 3]])}
    targets = {"teacher_ids": torch.tensor([[0, 1], [2, 3]]),
               "teacher_logprobs": torch.log(torch.tensor([[0.5, 0.3], [0.6, 0.2]])),
               "teacher_on": torch.tensor([False, True])}
    one, two, none = (anchor.loss(Tiny(), dict(inputs), targets, weight=w) for w in (1.0, 2.0, 0.0))
    # (ce + w * kl) / 2: the weight moves only the replayed position's share
    assert torch.allclose(two - one, one - none)
    assert (two - one).item() > 0


def test_replay_kl_is_a_resume_setting_only_where_rows_are_replayed():
    from helpers import models
    from helpers.pipeline.finetune import parser
    from helpers.training import trainer
    from helpers.training.config import resolve_config
    profile = models.get_profile("qwen2.5-0.5b")
    rows = [{"input_ids": [1, 2], "labels": [-100, 2]}]
    assert "replay_kl" not in trainer._fingerprint(resolve_config(profile), rows)["settings"]
    anchor.mark(rows, 1)
    one, off = (trainer._fingerprint(resolve_config(profile, replay_kl=w), rows) for w in (1.0, 0.0))
    assert one["settings"]["replay_kl"] == 1.0 and one != off
    base = ["--data", "d.jsonl", "--output", "o"]
    assert parser().parse_args(base).replay_kl is None
    assert parser().parse_args(base + ["--replay-kl", "0"]).replay_kl == 0.0
