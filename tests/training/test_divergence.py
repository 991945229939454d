"""Training that notices when it breaks: the rule, and a real run stopped by it."""

import json
import math

import pytest

from helpers.pipeline import finetune
from helpers.training.divergence import DivergenceWatch, advice
from tests.pipeline.test_cli import small_data  # noqa: F401  (the same 8 pairs)


def test_nan_stops_at_once():
    w = DivergenceWatch()
    assert w.update(1, 2.0) is None
    event = w.update(5, math.nan)
    assert event["step"] == 5 and "nan" in event["reason"]


def test_a_non_finite_gradient_stops_at_once():
    w = DivergenceWatch()
    w.update(1, 7.4, 17.3)
    event = w.update(5, 9.8, math.inf)
    assert event["step"] == 5 and "gradient norm became inf" in event["reason"]


def test_one_spike_is_tolerated_two_in_a_row_stop():
    w = DivergenceWatch()
    for step, loss in [(1, 2.0), (5, 1.5), (10, 6.5), (15, 1.2), (20, 6.1)]:
        assert w.update(step, loss) is None  # 6.5 and 6.1 are over 3 x 2.0, but not in a row
    event = w.update(25, 21.7)
    assert event["step"] == 25 and event["first_loss"] == 2.0 and "3x" in event["reason"]
    assert w.update(30, 1.0) is event  # once diverged, stays diverged


def test_a_falling_loss_never_stops():
    w = DivergenceWatch()
    assert all(w.update(s, 5.0 / s) is None for s in range(1, 50))


def test_advice_names_the_setting_and_a_lower_value():
    text = advice({"reason": "the loss rose"}, 5e-3)
    assert "learning_rate=0.005" in text and "0.00125" in text


@pytest.mark.slow
def test_a_run_whose_loss_explodes_is_stopped_and_reported(small_data, random_standin, tmp_path, capsys):
    out = tmp_path / "run"
    rc = finetune.main(["--data", str(small_data), "--model", str(random_standin("qwen2.5")),
                        "--output", str(out), "--question", "Who is person 3?", "--epochs", "10",
                        "--batch-size", "4", "--learning-rate", "30", "--skip-original"])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "Training diverged and was stopped" in err and "learning_rate=30" in err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "diverged"
    diverged = record["train"]["diverged"]
    assert diverged["step"] < 20  # stopped before the 20 steps asked for
    assert record["train"]["steps"] == diverged["step"]
