import numpy as np
import pytest
from scipy import stats

from multisample.engine.intervals import holm, mean_ci, sign_test_p_value


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


def test_holm_by_hand() -> None:
    # Sorted: a 0.01 x 3 = 0.03; c 0.03 x 2 = 0.06; b 0.04 x 1 = 0.04, raised to c's 0.06.
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx(
        {"a": 0.03, "b": 0.06, "c": 0.06}
    )
    # Capped at 1: 0.6 x 2; b's 0.7 is raised to it.
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}
    assert holm({"only": 0.02}) == {"only": 0.02} and holm({}) == {}


def test_holm_rejects_what_the_step_down_procedure_rejects() -> None:
    """Against the procedure as Holm wrote it: compare the k-th smallest p-value with
    alpha / (m - k + 1) and stop at the first that is not below."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        p = dict(enumerate(rng.uniform(0, 0.1, size=rng.integers(1, 8)).tolist()))
        alpha = 0.05
        rejected = set()
        for k, name in enumerate(sorted(p, key=p.__getitem__)):
            if p[name] >= alpha / (len(p) - k):
                break
            rejected.add(name)
        adjusted = holm({str(k): v for k, v in p.items()})
        assert {int(k) for k, v in adjusted.items() if v < alpha} == rejected
