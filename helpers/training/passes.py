"""Rows that belong to one pass only: every pass over the data meets its own replayed answers.

Replayed general answers (:mod:`helpers.data.replay`) protect what a model knew, but measured on
a real 0.5B model they harm it when the same answers come back every pass: trained on nothing but
its own greedy answers to 128 everyday questions, three passes lost 7 of 24 general answers and
one pass lost 1; 43 answers seen three times (as many steps as 128 seen once) lost 7 again. The
model memorises its own answers (loss 0.02), wrong ones included, and that memorising moves its
neighbours. So a row may carry :data:`PASS_KEY`: ``k`` of ``n`` tagged passes means it is trained
in epochs ``k``, ``k + n``, ... and in no other. Untagged rows (the data) are trained every epoch.

Every backend asks for an epoch's rows here (:func:`rows_for_epoch`): TRL's trainer through
:class:`EpochRows` (a dataset whose tagged part follows the epoch the trainer is in, set by
:func:`epoch_callback` at each epoch's start), the MLX and Tinker loops directly. Each epoch has the
same number of rows (a sampler needs a fixed length): passes with more tagged rows than the smallest
one lose their last ones (:func:`equal_passes`).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

log = logging.getLogger(__name__)

#: the key a row carries when it belongs to one pass only (0-based, of :func:`pass_count`)
PASS_KEY = "replay_pass"


def tag(rows: list[dict], tags: Sequence[int | None]) -> None:
    """Give the last ``len(tags)`` of ``rows`` their pass (None: every epoch), in place."""
    for row, k in zip(rows[len(rows) - len(tags):], tags):
        if k is not None:
            row[PASS_KEY] = k


def pass_count(rows: Sequence[dict]) -> int:
    """How many tagged passes ``rows`` hold (0: no row is tagged, every row every epoch)."""
    tags = {r[PASS_KEY] for r in rows if r.get(PASS_KEY) is not None}
    return max(tags) + 1 if tags else 0


def equal_passes(rows: Sequence[dict]) -> list[dict]:
    """``rows`` with every tagged pass cut to the size of the smallest one (an epoch's length must
    not change); logs what was dropped."""
    n = pass_count(rows)
    if not n:
        return list(rows)
    sizes = [0] * n
    for r in rows:
        if r.get(PASS_KEY) is not None:
            sizes[r[PASS_KEY]] += 1
    keep, seen, out = min(sizes), [0] * n, []
    for r in rows:
        k = r.get(PASS_KEY)
        if k is not None:
            seen[k] += 1
            if seen[k] > keep:
                continue
        out.append(r)
    if max(sizes) > keep:
        log.info("Passes: %d rows left out so that every pass trains %d of its own", sum(sizes) - keep * n, keep)
    return out


def rows_for_epoch(rows: Sequence[dict], epoch: int) -> list[dict]:
    """The rows trained in 0-based ``epoch``: the untagged ones and those of pass ``epoch % n``,
    in their order in ``rows``."""
    n = pass_count(rows)
    if not n:
        return list(rows)
    k = epoch % n
    return [r for r in rows if r.get(PASS_KEY) is None or r[PASS_KEY] == k]


def epoch_length(rows: Sequence[dict]) -> int:
    """Rows in one epoch (every epoch has as many after :func:`equal_passes`)."""
    return len(rows_for_epoch(rows, 0))


def totals(rows: Sequence[dict], epochs: float) -> tuple[int, int]:
    """(tokens, trained tokens) over ``ceil(epochs)`` epochs, each with its own rows."""
    tokens = trained = 0
    for e in range(max(1, math.ceil(epochs))):
        for r in rows_for_epoch(rows, e):
            tokens += len(r["input_ids"])
            trained += sum(1 for x in r["labels"] if x != -100)
    return tokens, trained


#: what the trainer reads of a row: its tokens, labels, and the base model's targets where the
#: replayed rows carry them (:mod:`helpers.training.anchor`)
ITEM_KEYS = ("input_ids", "labels", "teacher_ids", "teacher_logprobs")


def item(row: dict) -> dict:
    """The part of ``row`` the trainer reads (:data:`ITEM_KEYS` that it has)."""
    return {k: row[k] for k in ITEM_KEYS if k in row}


class EpochRows:
    """The current epoch's rows by index (:func:`item` of each); ``epoch`` is set by
    :func:`epoch_callback`. :meth:`as_dataset` is what TRL's trainer takes (it accepts only a
    ``datasets.Dataset``)."""

    def __init__(self, rows: Sequence[dict]):
        self.rows = equal_passes(rows)
        self.n = pass_count(self.rows)
        self._by_pass = [rows_for_epoch(self.rows, k) for k in range(max(1, self.n))]
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._by_pass[0])

    def __getitem__(self, i: int) -> dict:
        return item(self._by_pass[self.epoch % len(self._by_pass)][i])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def as_dataset(self):
        """A ``datasets.Dataset`` of indices whose items are read from these rows when the
        trainer's loader asks (``with_transform``), so they follow :attr:`epoch`."""
        from datasets import Dataset

        def fetch(batch: dict) -> dict:
            items = [self[i] for i in batch["index"]]
            return {k: [r[k] for r in items] for k in items[0]}
        return Dataset.from_dict({"index": list(range(len(self)))}).with_transform(fetch)


def epoch_callback(dataset: EpochRows):
    """A ``TrainerCallback`` that points ``dataset`` at the epoch the trainer starts (its state's
    epoch count, whole at an epoch's start; a resumed run starts inside the epoch it stopped in)."""
    from transformers import TrainerCallback

    class _Epoch(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kw):
            dataset.set_epoch(math.floor((state.epoch or 0) + 1e-6))

    return _Epoch()
