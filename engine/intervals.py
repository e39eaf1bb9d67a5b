"""Confidence intervals and tests shared by sweeps, bandit regret bands and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the Student-t confidence interval of the mean.

    With fewer than two values, or none that differ, the interval is the mean itself
    (scipy would return NaN bounds, which plots and tables cannot use)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("mean_ci of no values")
    mean = float(data.mean())
    if data.size < 2 or float(data.std()) == 0.0:
        return mean, mean, mean
    low, high = stats.t.interval(level, data.size - 1, loc=mean, scale=stats.sem(data))
    return mean, float(low), float(high)


def sign_test_p_value(wins: int, losses: int) -> float:
    """Two-sided exact binomial (sign) test of `wins` against `losses` at probability 1/2,
    ties left out (scipy.stats.binomtest). With wins and losses the two kinds of
    discordant pairs of binary outcomes, this is McNemar's exact test. 1.0 when there
    are neither (nothing to test)."""
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be >= 0 (got {wins}, {losses})")
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(wins, wins + losses, 0.5).pvalue)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values, by name: the k-th smallest of m p-values times
    (m - k + 1), never below an adjusted smaller one's, at most 1. Rejecting where the
    adjusted value is below alpha holds the family-wise error at alpha. (statsmodels has
    this; it is not a dependency for a few lines of arithmetic.)"""
    order = sorted(p_values, key=p_values.__getitem__)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted
