"""Rows of one pass only: each epoch trains the data and its own replayed rows, on every backend."""

import pytest

from helpers.data import replay
from helpers.training import passes
from helpers.training.config import TrainConfig
from tests.support.chat_pairs import data_and_replayed


def _rows(n_data=4, tags=(0, 0, 1, 1, 2, 2)):
    data = [{"input_ids": [1, 2, 10 + i], "labels": [-100, 2, 10 + i]} for i in range(n_data)]
    tagged = [{"input_ids": [1, 3, 100 + j], "labels": [-100, -100, 100 + j], passes.PASS_KEY: k}
              for j, k in enumerate(tags)]
    return data + tagged


def test_each_epoch_has_the_data_and_its_own_pass():
    rows = _rows()
    assert passes.pass_count(rows) == 3 and passes.pass_count(rows[:4]) == 0
    ids = [[r["input_ids"][-1] for r in passes.rows_for_epoch(rows, e)] for e in range(4)]
    assert ids == [[10, 11, 12, 13, 100, 101], [10, 11, 12, 13, 102, 103],
                   [10, 11, 12, 13, 104, 105], [10, 11, 12, 13, 100, 101]]
    # 3 epochs: 4 data rows x 3 (3 tokens, 2 trained each) + 6 tagged rows once (3 tokens, 1 trained)
    assert passes.totals(rows, 3) == (4 * 3 * 3 + 6 * 3, 4 * 3 * 2 + 6)
    assert passes.totals(rows, 2.5) == passes.totals(rows, 3)
    assert passes.totals(rows[:4], 2) == (24, 16)


def test_unequal_passes_are_cut_to_the_smallest():
    rows = passes.equal_passes(_rows(tags=(0, 0, 0, 1, 1, 2, 2)))
    assert [r[passes.PASS_KEY] for r in rows if passes.PASS_KEY in r] == [0, 0, 1, 1, 2, 2]
    assert passes.epoch_length(rows) == 6


def test_tag_marks_the_last_rows():
    rows = [{"input_ids": [i]} for i in range(5)]
    passes.tag(rows, [None, 0, 1])
    assert [r.get(passes.PASS_KEY) for r in rows] == [None, None, None, 0, 1]


def test_replay_questions_are_fresh_each_pass_while_the_pool_lasts(caplog):
    by_pass = replay.questions_by_pass(5, 3)
    flat = [q for qs in by_pass for q in qs]
    assert len(flat) == len(set(flat)) == 15 and flat == list(replay.REPLAY_QUESTIONS[:15])
    big = len(replay.REPLAY_QUESTIONS) // 2 + 1
    with caplog.at_level("WARNING"):
        wrapped = replay.questions_by_pass(big, 2)
    assert "some come back in a later pass" in caplog.text
    pool = replay.REPLAY_QUESTIONS
    assert wrapped[1][-1] == pool[(2 * big - 1) % len(pool)] and wrapped[1][0] == pool[big]
    assert replay.questions_by_pass(0, 3) == [[], [], []]


def test_replay_examples_ask_each_question_once_and_tag_its_pass():
    asked = []

    def ask(qs):
        asked.append(list(qs))
        return [f"Answer {i}." if i != 1 else "cut off" for i in range(len(qs))]

    convs, tags, n = replay.examples(2, 3, ask, "Be brief.")
    assert n == 6 and asked == [list(replay.REPLAY_QUESTIONS[:6])]
    assert tags == [0, 1, 1, 2, 2]     # the second question's answer has no sentence: left out
    assert convs[0][0] == {"role": "system", "content": "Be brief."}
    convs, tags, n = replay.examples(2, 1, ask)
    assert tags == [None] and n == 2   # one pass: the rows are every epoch's


def test_transformers_trainer_gives_each_epoch_its_own_pass(random_standin, tokenizer_for, tmp_path,
                                                             monkeypatch):
    """Through TRL's trainer: the rows the model is given in epoch e are the data and pass e's."""
    from helpers import models
    from helpers.runtime.loading import load_model
    from helpers.training import masks
    from helpers.training.config import resolve_config
    from helpers.training.trainer import add_lora, train

    folder = random_standin("qwen2.5")
    choice = models.choose(str(folder))
    tok = tokenizer_for("qwen2.5")
    rows, _ = masks.tokenize_dataset(tok, data_and_replayed(), max_seq_length=128)
    passes.tag(rows, [0, 0, 1, 1, 2, 2])
    index = {tuple(r["input_ids"]): i for i, r in enumerate(rows)}
    seen: list[tuple[int, int]] = []
    original = passes.EpochRows.__getitem__

    def spy(self, i):
        item = original(self, i)
        seen.append((self.epoch, index[tuple(item["input_ids"])]))
        return item
    monkeypatch.setattr(passes.EpochRows, "__getitem__", spy)
    cfg = resolve_config(choice.profile, epochs=3, batch_size=2, grad_accum=1, learning_rate=1e-3,
                         logging_steps=1, max_seq_length=128, report_to="none", padding_free=False)
    model, _ = load_model(choice, backend="transformers")
    result = train(add_lora(model, cfg), tok, rows, cfg, tmp_path)
    by_epoch = {e: sorted(i for ep, i in seen if ep == e) for e in range(3)}
    # epoch 0's extra 0: TRL looks at the first item once when the trainer is made
    assert by_epoch == {0: [0, 0, 1, 2, 3, 4, 5], 1: [0, 1, 2, 3, 6, 7], 2: [0, 1, 2, 3, 8, 9]}
    assert result.steps == 9   # 6 rows an epoch, batches of 2, 3 epochs
    assert result.trained_tokens == passes.totals(rows, 3)[1]
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3", "checkpoint-6", "checkpoint-9"]   # one per epoch, as before


def test_mlx_rows_and_tinker_plan_follow_the_passes():
    from helpers.training import mlx_backend, tinker_backend
    rows = _rows()
    data = mlx_backend.Rows(rows, batch_size=2, max_seq_length=8, seed=1)
    stream = data._stream(True)
    for e in range(4):
        got = sorted(ids[-1] for _ in range(data.batches_per_epoch) for ids, _ in next(stream))
        assert got == [10, 11, 12, 13] + [100 + 2 * (e % 3), 101 + 2 * (e % 3)]
    cfg = TrainConfig(epochs=3, batch_size=2, grad_accum=1, seed=1)
    steps = tinker_backend.plan(rows, cfg)
    assert len(steps) == 9
    for e in range(3):
        got = sorted(rows[i]["input_ids"][-1] for step in steps[3 * e:3 * e + 3] for i in step)
        assert got == [10, 11, 12, 13, 100 + 2 * e, 101 + 2 * e]
    assert tinker_backend.plan(4, cfg) == tinker_backend.plan(rows[:4], cfg)


@pytest.mark.parametrize("epochs", [1, 3])
def test_untagged_rows_train_every_epoch(epochs):
    rows = _rows(tags=())
    assert passes.rows_for_epoch(rows, epochs) == rows
    assert passes.equal_passes(rows) == rows
