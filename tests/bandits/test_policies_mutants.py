"""Policy rules the other policy tests leave unpinned; each test killed surviving mutants
of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pytest

from bandits.policies import (
    POLICIES,
    CoUCBSettings,
    DoubleTSSettings,
    RoundOutcome,
    RUCBSettings,
    UCB1Settings,
    make_policy,
)
from bandits.policies.base import OutcomeArrays, Policy
from engine.config import Settings


class _ProbeSettings(Settings):
    kind: Literal["probe"] = "probe"


def test_a_policy_class_takes_its_kind_from_its_settings_type() -> None:
    # Defined here, not at import, so that the class hook runs while the test runs.
    class Probe(Policy):
        settings_type = _ProbeSettings

        def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
            raise NotImplementedError

        def best_runs(self) -> np.ndarray:
            raise NotImplementedError

        def _learn(self, outcomes: OutcomeArrays) -> None:
            raise NotImplementedError

    class Subclass(Probe):  # no settings_type of its own: the parent's kind stays
        pass

    assert Probe.kind == "probe"
    assert Subclass.kind == "probe"
    assert "kind" not in vars(Subclass)


@pytest.mark.parametrize("method", ["select", "best", "state", "update"])
def test_the_single_run_view_names_the_method_called(method: str) -> None:
    policy = POLICIES["co_ucb"](CoUCBSettings(), 3, [0, 1])  # two runs
    args = (RoundOutcome(0, 1, first_wins=1),) if method == "update" else ()
    with pytest.raises(ValueError, match=rf"^{method}\(\) is the single-run view; .* 2 runs$"):
        getattr(policy, method)(*args)


def test_a_count_that_is_not_an_integer_is_refused_by_name() -> None:
    outcome: Any = RoundOutcome(0, 1, first_wins=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^feedback first_wins must be an integer \(got 1.5\)$"):
        make_policy(CoUCBSettings(), 3, 0).update(outcome)


def test_a_missing_reward_is_refused_as_not_a_finite_number() -> None:
    # None becomes NaN as a float: refused with the field's name (not a TypeError).
    outcome: Any = RoundOutcome(0, 0, first_rewards=(0.5, None))  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^feedback first_rewards must be a sequence of finite numbers$"
    ):
        make_policy(UCB1Settings(), 3, 0).update(outcome)


def test_ucb1_refuses_preferences_without_rewards_with_its_own_message() -> None:
    policy = make_policy(UCB1Settings(), 3, 0)
    outcome: Any = RoundOutcome(0, 1, first_wins=2, second_wins=2)
    with pytest.raises(
        ValueError, match=r"^ucb1 learns from absolute rewards; this feedback has none$"
    ):
        policy.update(outcome)


def test_co_ucb_refuses_a_self_duel_with_its_own_message() -> None:
    outcome = RoundOutcome(1, 1, first_wins=2)
    with pytest.raises(
        ValueError, match=r"^co_ucb plays pairs of two different models \(got first == second\)$"
    ):
        make_policy(CoUCBSettings(), 3, 0).update(outcome)


def test_co_ucb_best_counts_the_plays_of_each_run_alone() -> None:
    # Run 0: pairs (0,1) and (0,2) once each: n = (2, 1, 1), T = 4; mu = (0.6, 0, 0).
    # UCB: arm 0 = 0.6 + sqrt(2 ln 4 / 2) = 1.777, arms 1, 2 = sqrt(2 ln 4) = 1.665: 0.
    # Run 1 played 3000 queries; with its plays in run 0's T, arm 1 would win (4.17 > 3.55).
    policy: Any = POLICIES["co_ucb"](CoUCBSettings(), 3, [0, 1])
    policy.n_pair[:] = [[1, 1, 0], [1000, 1000, 1000]]
    policy.mu[:] = [[0.6, 0.0, 0.0], [0.2, 0.9, 0.1]]
    assert policy.best_runs().tolist() == [0, 1]


def _dts_reference(wins: np.ndarray, queries: int, alpha: float, rng: Any) -> tuple[int, int]:
    """D-TS's selection (Wu & Liu 2016, Alg. 1) written out with loops, drawing from `rng`
    in the policy's order: theta of every pair i < j, K tie-breaking uniforms, the column
    of the first arm, K more uniforms."""
    k = len(wins)
    t = queries + 1

    def bounds(i: int, j: int) -> tuple[float, float]:
        if i == j:
            return 0.5, 0.5
        n = wins[i, j] + wins[j, i]
        if n == 0:
            return 2.0, 0.0  # x/0 := 1 for the mean and the radius
        mean, radius = wins[i, j] / n, math.sqrt(alpha * math.log(t) / n)
        return mean + radius, mean - radius

    upper_copeland = [sum(bounds(i, j)[0] > 0.5 for j in range(k) if j != i) for i in range(k)]
    candidates = [i for i in range(k) if upper_copeland[i] == max(upper_copeland)]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    theta = rng.beta([wins[i, j] + 1 for i, j in pairs], [wins[j, i] + 1 for i, j in pairs])
    sample = np.full((k, k), 0.5)
    for (i, j), value in zip(pairs, theta, strict=True):
        sample[i, j], sample[j, i] = value, 1 - value
    beats = [sum(sample[i, j] > 0.5 for j in range(k)) for i in range(k)]
    top = max(beats[i] for i in candidates)
    ties = rng.random(k)
    first = max((i for i in candidates if beats[i] == top), key=lambda i: ties[i])
    column = rng.beta(
        [wins[i, first] + 1 for i in range(k)], [wins[first, i] + 1 for i in range(k)]
    )
    column[first] = 0.5
    allowed = [i for i in range(k) if bounds(i, first)[1] <= 0.5]
    best = max(column[i] for i in allowed)
    ties = rng.random(k)
    second = max((i for i in allowed if column[i] == best), key=lambda i: ties[i])
    return first, second


def test_double_ts_selection_equals_the_algorithm_written_out() -> None:
    states = np.random.default_rng(11)
    for case, wins in enumerate(_duel_states(states, 60)):
        queries = int(wins.sum()) + int(states.integers(0, 5))
        alpha = [0.51, 2.0][int(states.integers(0, 2))]
        policy: Any = make_policy(DoubleTSSettings(alpha=alpha), 4, case)
        policy.wins[0], policy.queries[0] = wins, queries
        expected = _dts_reference(wins, queries, alpha, np.random.default_rng(case))
        assert policy.select() == expected, case


def _upper(wins: np.ndarray, queries: int, alpha: float, i: int, j: int) -> float:
    """u_ij of RUCB and D-TS: W/(W+W^T) + sqrt(alpha ln t / (W+W^T)), x/0 := 1, t = 1 +
    queries; 1/2 on the diagonal."""
    if i == j:
        return 0.5
    n = wins[i, j] + wins[j, i]
    if n == 0:
        return 2.0
    return wins[i, j] / n + math.sqrt(alpha * math.log(queries + 1) / n)


def _rucb_reference(
    wins: np.ndarray, queries: int, alpha: float, hypothesis: int, rng: Any
) -> tuple[int, int, int]:
    """RUCB's selection (Zoghi et al. 2014, Alg. 1) with loops: (c, d, the new B's arm or
    -1), drawing 1 + 2K uniforms from `rng`: a coin, K to pick c, K to pick d."""
    k = len(wins)
    u = [[_upper(wins, queries, alpha, i, j) for j in range(k)] for i in range(k)]
    candidates = [i for i in range(k) if all(u[i][j] >= 0.5 for j in range(k))]
    draws = rng.random(1 + 2 * k)
    coin, pick_c, pick_d = draws[0], draws[1 : k + 1], draws[k + 1 :]
    if hypothesis not in candidates:  # line 8: B = {} when it left C
        hypothesis = -1
    if len(candidates) == 1:  # line 9
        hypothesis = candidates[0]
    if hypothesis >= 0 and (len(candidates) == 1 or coin < 0.5):
        c = hypothesis
    else:  # uniform over C minus B (all arms when C is empty)
        pool = [i for i in candidates or range(k) if i != hypothesis]
        c = max(pool, key=lambda i: pick_c[i])
    column = [u[j][c] for j in range(k)]
    top = [j for j in range(k) if column[j] == max(column)]
    if len(top) > 1 and c in top:
        top.remove(c)
    d = max(top, key=lambda j: pick_d[j])
    return c, d, hypothesis


def _duel_states(rng: np.random.Generator, cases: int) -> list[np.ndarray]:
    """Win matrices of 4 arms: few queries, many, a strong Condorcet winner (arm 0; RUCB's
    C is {0}), and a strong cycle (0 > 1 > 2 > 0, 0 > 3) that empties C at alpha 0.51."""
    states = []
    for case in range(cases):
        n = int(rng.integers(20, 80))
        wins = rng.integers(0, [2, 30, 3, 3][case % 4], size=(4, 4))
        if case % 4 == 2:
            wins[0, 1:] = n
            wins[1:, 0] = 0
        if case % 4 == 3:
            wins[:3, :3] = 0
            for i, j in ((0, 1), (1, 2), (2, 0), (0, 3)):
                wins[i, j], wins[j, i] = n, 0
        np.fill_diagonal(wins, 0)
        states.append(wins)
    return states


def test_rucb_selection_equals_the_algorithm_written_out() -> None:
    states = np.random.default_rng(5)
    for case, wins in enumerate(_duel_states(states, 60)):
        queries = int(wins.sum()) + int(states.integers(0, 5))
        alpha = [0.51, 2.0][int(states.integers(0, 2))]
        hypothesis = int(states.integers(-1, 4))
        policy: Any = make_policy(RUCBSettings(alpha=alpha), 4, case)
        policy.wins[0], policy.queries[0], policy.hypothesis[0] = wins, queries, hypothesis
        c, d, kept = _rucb_reference(wins, queries, alpha, hypothesis, np.random.default_rng(case))
        assert (policy.select(), int(policy.hypothesis[0])) == ((c, d), kept), case
