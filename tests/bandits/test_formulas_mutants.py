"""The bandit formulas at the edges the policy tests leave open: a single comparison, a
play count of one, more than one leading axis. Each test killed surviving mutants of
`make mutation` (docs/TESTING.md); the expectations are computed by hand."""

from __future__ import annotations

import math

import numpy as np

from multisample.bandits.formulas import confidence_bounds, dts_candidates, win_rates
from multisample.engine.ucb import ucb


def test_ucb_bonus_is_zero_after_a_single_query() -> None:
    # ln(1) = 0: one query in all, made on this arm, leaves the bare mean.
    assert ucb(np.array([0.25]), np.array([1]), np.array(1), 7.0)[0] == 0.25
    # total 3, count 2: 0.5 + sqrt(2 ln 3 / 2) = 0.5 + sqrt(ln 3).
    assert math.isclose(
        ucb(np.array([0.5]), np.array([2]), np.array(3), 7.0)[0], 0.5 + math.sqrt(math.log(3))
    )


def test_win_rates_after_a_single_comparison() -> None:
    # Arm 0 beat arm 1 once: P_01 = 1/1, P_10 = 0/1 (not the 1/2 of an unplayed pair).
    rates = win_rates(np.array([[0, 1], [0, 0]]))
    assert rates.tolist() == [[0.5, 1.0], [0.0, 0.5]]


def test_confidence_bounds_after_a_single_comparison() -> None:
    # One query, won by arm 0; alpha 0.5, t = 2: radius sqrt(0.5 ln 2 / 1).
    upper, lower = confidence_bounds(np.array([[0, 1], [0, 0]]), 0.5, np.array(2))
    radius = math.sqrt(0.5 * math.log(2))
    assert np.allclose(upper, [[0.5, 1 + radius], [radius, 0.5]])
    assert np.allclose(lower, [[0.5, 1 - radius], [-radius, 0.5]])


def test_confidence_bounds_set_every_diagonal_with_two_leading_axes() -> None:
    # (2, 3) runs of 4 arms, nothing played: u = 2 and l = 0 off the diagonal, 1/2 on it.
    upper, lower = confidence_bounds(np.zeros((2, 3, 4, 4)), 0.5, np.full((2, 3), 5))
    expected_upper = np.where(np.eye(4, dtype=bool), 0.5, 2.0)
    expected_lower = np.where(np.eye(4, dtype=bool), 0.5, 0.0)
    assert (upper == expected_upper).all()
    assert (lower == expected_lower).all()


def test_dts_candidates_are_the_best_of_each_run_not_of_all_runs() -> None:
    # Run 0: arm 0 beats both others (upper Copeland 2); run 1: every arm beats one (1 each).
    upper = np.array(
        [
            [[0.5, 0.9, 0.9], [0.1, 0.5, 0.1], [0.1, 0.1, 0.5]],
            [[0.5, 0.9, 0.1], [0.1, 0.5, 0.9], [0.9, 0.1, 0.5]],
        ]
    )
    assert dts_candidates(upper).tolist() == [[True, False, False], [True, True, True]]
