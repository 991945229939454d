"""Intervals: a percentile bootstrap over prompts (:func:`bootstrap_ci`)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from helpers.evaluation.text import NAN


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0, stat: Callable = np.mean) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``stat`` of the values and its percentile bootstrap interval.

    Values (one per prompt) are resampled with replacement ``n_boot`` times; nan values are left
    out first. ``stat`` is called as ``stat(array, axis=1)`` (numpy reductions), else row by row.
    The same seed gives the same interval. Fewer than two values: ``(value or nan, nan, nan)``.
    """
    if n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot={n_boot} must be at least 1 (default 2000).")
    if not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: alpha={alpha} must lie between 0 and 1 (0.05 gives a 95% "
                         "interval).")
    v = np.asarray([float(x) for x in values], dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (NAN, NAN, NAN)
    if len(v) == 1:
        return (float(v[0]), NAN, NAN)
    estimate = float(stat(v))
    rng = np.random.default_rng(seed)
    samples = v[rng.integers(0, len(v), size=(n_boot, len(v)))]
    try:
        boots = np.asarray(stat(samples, axis=1), dtype=float)
    except TypeError:
        boots = np.array([stat(row) for row in samples], dtype=float)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return (estimate, float(low), float(high))
