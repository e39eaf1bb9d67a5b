import numpy as np
import pytest
from scipy import stats

from multisample.engine.intervals import mean_ci, sign_test_p_value


def test_mean_ci_matches_scipy_t_interval():
    data = [0.2, 0.5, 0.9, 0.4, 0.7]
    mean, low, high = mean_ci(data)
    want = stats.t.interval(0.95, 4, loc=np.mean(data), scale=stats.sem(data))
    assert mean == pytest.approx(0.54)
    assert (low, high) == pytest.approx(want)
    assert low < mean < high


def test_mean_ci_is_the_mean_when_nothing_varies():
    assert mean_ci([0.3]) == (0.3, 0.3, 0.3)
    assert mean_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)


def test_mean_ci_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        mean_ci([])


def test_sign_test_by_hand():
    # Two-sided exact binomial at 1/2: 5 wins, 0 losses -> 2 x 0.5^5 = 0.0625.
    assert sign_test_p_value(5, 0) == pytest.approx(0.0625)
    assert sign_test_p_value(0, 5) == pytest.approx(0.0625)
    # 4 vs 1: P(X <= 1) + P(X >= 4) for Bin(5, 1/2) = (1 + 5 + 5 + 1) / 32 = 0.375.
    assert sign_test_p_value(4, 1) == pytest.approx(0.375)
    assert sign_test_p_value(3, 3) == pytest.approx(1.0)
    assert sign_test_p_value(0, 0) == 1.0  # no discordant pair: nothing to test
    with pytest.raises(ValueError):
        sign_test_p_value(-1, 2)
