import pytest

from helpers.evaluation.recall import contains_fact, fact_recall


def test_fact_recall():
    assert contains_fact("She was born in  QUORROWDEEP.", "Quorrowdeep")
    assert not contains_fact("She was born by the sea.", "Quorrowdeep")
    assert fact_recall(["a Vellistrand b", "nothing", "sylvarch"], ["Vellistrand", "Quorrowdeep", "Sylvarch"]) == pytest.approx(2 / 3)
    assert fact_recall([], []) == 0.0
    with pytest.raises(ValueError):
        fact_recall(["a"], [])
