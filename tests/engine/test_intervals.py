import numpy as np
import pytest
from scipy import stats

from engine.intervals import mean_ci


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
