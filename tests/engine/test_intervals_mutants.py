"""engine/intervals.py at the edges test_intervals.py leaves open; each test killed
surviving mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import pytest

from multisample.engine.intervals import mean_ci, sign_test_p_value


@pytest.mark.parametrize(("wins", "losses"), [(-1, 2), (2, -1), (-3, -3)])
def test_a_negative_count_on_either_side_is_refused_by_name(wins: int, losses: int) -> None:
    # Checked before scipy sees the counts: the message gives both.
    with pytest.raises(ValueError, match=rf"^counts must be >= 0 \(got {wins}, {losses}\)$"):
        sign_test_p_value(wins, losses)


def test_two_values_that_differ_get_a_t_interval() -> None:
    # (0, 1): mean 1/2, sem = s / sqrt(2) = (1 / sqrt(2)) / sqrt(2) = 1/2, one degree of
    # freedom: t_0.975(1) = 12.7062 -> 1/2 +- 6.3531.
    mean, low, high = mean_ci([0.0, 1.0])
    assert mean == 0.5
    assert (low, high) == pytest.approx((0.5 - 6.35310, 0.5 + 6.35310), abs=1e-4)


def test_no_values_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"^mean_ci of no values$"):
        mean_ci([])
