"""Intervals: a percentile bootstrap over prompts (:func:`bootstrap_ci`), Wilson score intervals
for a proportion (:func:`wilson`) and Newcombe's interval for a difference of two (:func:`newcombe`)."""

from __future__ import annotations

import math
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


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float, float]:
    """``(share, low, high)``: ``successes / n`` and its Wilson score interval (95% by default).
    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 0 or n
    successes (3 of 3 gives [0.44, 1]). ``n == 0``: all nan."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson: successes={successes} must lie between 0 and n={n}.")
    if n == 0:
        return (NAN, NAN, NAN)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe(s1: int, n1: int, s2: int, n2: int, z: float = 1.959964) -> tuple[float, float, float]:
    """``(difference, low, high)`` of two independent shares ``s1/n1 - s2/n2`` with Newcombe's
    hybrid score interval (method 10: the two Wilson intervals combined). An interval that
    excludes 0 is a difference the sample sizes can tell apart. Either ``n`` 0: all nan."""
    if not n1 or not n2:
        return (NAN, NAN, NAN)
    p1, l1, u1 = wilson(s1, n1, z)
    p2, l2, u2 = wilson(s2, n2, z)
    d = p1 - p2
    return (d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
