"""Training that notices when it breaks: a loss that turns NaN or climbs far above where it began.

The rule (checked at every logged loss):

- a loss or gradient norm that is NaN or infinite stops the run at once (a non-finite gradient
  turns the weights to NaN at the next step, after which the loss TRL logs can even read 0.0);
- a loss above ``RISE_FACTOR`` (3) times the first logged loss, twice in a row, stops it too
  (one spike is tolerated: warm-up and a hard batch cause those).

A learning rate far too high for the model is the usual cause (the stand-ins' 5e-3 took a real
0.5B model's loss from 2.1 to 21.7 and left it answering one syllable, repeated). The stop is
recorded in run.json (``train.diverged``), logged as an error, and the notebooks and the command
line say so: a run never reports success over a destroyed model.
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)

RISE_FACTOR = 3.0
#: logged losses in a row above the bar before the run stops
PATIENCE = 2


class DivergenceWatch:
    """Decides, loss by loss, whether training has diverged (no transformers needed: the
    callback below feeds it)."""

    def __init__(self, rise_factor: float = RISE_FACTOR, patience: int = PATIENCE):
        self.rise_factor, self.patience = rise_factor, patience
        self.first: float | None = None
        self.above = 0
        self.event: dict[str, Any] | None = None

    def update(self, step: int, loss: float, grad_norm: float | None = None) -> dict[str, Any] | None:
        """The divergence event when ``loss`` (and ``grad_norm``) at ``step`` end the run, else None."""
        if self.event is not None:
            return self.event
        for what, value in (("loss", loss), ("gradient norm", grad_norm)):
            if value is not None and not math.isfinite(value):
                self.event = {"step": step, "loss": loss if math.isfinite(loss) else str(loss),
                              "first_loss": self.first,
                              "reason": f"the {what} became {value} at step {step}"}
                return self.event
        if self.first is None:
            self.first = loss
            return None
        if loss > self.rise_factor * self.first:
            self.above += 1
        else:
            self.above = 0
        if self.above >= self.patience:
            self.event = {"step": step, "loss": round(loss, 4), "first_loss": round(self.first, 4),
                          "reason": (f"the loss rose to {loss:.3g} at step {step}, over "
                                     f"{self.rise_factor:g}x its first value {self.first:.3g}, "
                                     f"{self.patience} logs in a row")}
        return self.event


def advice(event: dict[str, Any], learning_rate: float) -> str:
    """What the run says when it stops: what happened and what to change."""
    return (f"Training diverged and was stopped: {event['reason']}. The adapter saved is the one "
            f"from that point and is likely broken. Lower the learning rate (learning_rate="
            f"{learning_rate:g} now; try {learning_rate / 4:g}), or leave it unset to use the "
            "model's default.")


def divergence_callback(watch: DivergenceWatch, learning_rate: float):
    """A transformers ``TrainerCallback`` that stops training when ``watch`` says it diverged."""
    from transformers import TrainerCallback

    class StopOnDivergence(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            norm = logs.get("grad_norm")
            event = watch.update(state.global_step, float(logs["loss"]),
                                 None if norm is None else float(norm))
            if event is not None and not control.should_training_stop:
                log.error(advice(event, learning_rate))
                control.should_training_stop = True

    return StopOnDivergence()
