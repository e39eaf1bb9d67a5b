"""Confidence intervals shared by sweeps, bandit regret bands and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

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
