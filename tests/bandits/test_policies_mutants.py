"""Policy rules the other policy tests leave unpinned; each test killed surviving mutants
of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pytest

from multisample.bandits.policies.base import OutcomeArrays, Policy, RoundOutcome
from multisample.bandits.policies.co_ucb import CoUCBSettings
from multisample.bandits.policies.double_ts import DoubleTSSettings
from multisample.bandits.policies.registry import POLICIES, make_policy
from multisample.bandits.policies.rucb import RUCBSettings
from multisample.bandits.policies.ucb1 import UCB1Settings
from multisample.engine.config import Settings


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
    for case, (wins, queries) in enumerate(_duel_states(states, 120)):
        alpha = 0.51 if case % 6 == 5 else [0.51, 2.0][int(states.integers(0, 2))]
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


def _duel_states(rng: np.random.Generator, cases: int) -> list[tuple[np.ndarray, int]]:
    """(wins, queries) of 4 arms, in six families: few queries; many; a strong Condorcet
    winner (RUCB's C is that arm alone); a strong cycle 0 > 1 > 2 > 0, 0 > 3 (C empty at
    alpha 0.51); two strong arms level with each other (C holds both); and one pair with
    4 comparisons at t = 7 or 8, where u = 1/2 lies between t and t + 1 at alpha 0.51."""
    states = []
    for case in range(cases):
        family, n = case % 6, int(rng.integers(20, 80))
        arms = [int(a) for a in rng.permutation(4)]
        wins = rng.integers(0, [2, 30, 3, 3, 3, 1][family], size=(4, 4))
        if family == 2:
            winner = arms[0]
            wins[winner, :], wins[:, winner] = n, 0
        if family == 3:
            wins[:3, :3] = 0
            for i, j in ((0, 1), (1, 2), (2, 0), (0, 3)):
                wins[i, j], wins[j, i] = n, 0
        if family == 4:
            for strong in arms[:2]:
                for weak in arms[2:]:
                    wins[strong, weak], wins[weak, strong] = n, 0
        if family == 5:
            wins[arms[0], arms[1]] = 4
        np.fill_diagonal(wins, 0)
        extra = int(rng.integers(2, 4)) if family == 5 else int(rng.integers(0, 5))
        states.append((wins, int(wins.sum()) + extra))
    return states


def test_rucb_selection_equals_the_algorithm_written_out() -> None:
    states = np.random.default_rng(5)
    for case, (wins, queries) in enumerate(_duel_states(states, 120)):
        alpha = 0.51 if case % 6 == 5 else [0.51, 2.0][int(states.integers(0, 2))]
        hypothesis = int(states.integers(-1, 4))
        policy: Any = make_policy(RUCBSettings(alpha=alpha), 4, case)
        policy.wins[0], policy.queries[0], policy.hypothesis[0] = wins, queries, hypothesis
        c, d, kept = _rucb_reference(wins, queries, alpha, hypothesis, np.random.default_rng(case))
        assert (policy.select(), int(policy.hypothesis[0])) == ((c, d), kept), case


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: POLICIES["co_ucb"](UCB1Settings(), 3, [0]),
            TypeError,
            r"^co_ucb needs CoUCBSettings, got ",
        ),
        (
            lambda: POLICIES["co_ucb"](CoUCBSettings(), 3.0, [0]),
            ValueError,
            r"^arms must be an integer >= 2 \(got 3\.0\)$",
        ),
        (
            lambda: POLICIES["co_ucb"](CoUCBSettings(), 3, []),
            ValueError,
            r"^a policy needs at least one seed \(one per run\)$",
        ),
    ],
)
def test_a_policy_refuses_bad_construction_by_name(make: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (RoundOutcome(0, 3, first_wins=1), r"^feedback second arm \[3\] is out of range 0\.\.2$"),
        (RoundOutcome(0, 1, first_wins=-1), r"^feedback first_wins must be >= 0 \(got \[-1\]\)$"),
        (
            RoundOutcome(0, 1, first_rewards=("a",)),
            r"^feedback first_rewards must be numbers: could not convert",
        ),  # type: ignore[arg-type]
    ],
)
def test_impossible_feedback_is_refused_with_its_field(outcome: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy(RUCBSettings(), 3, 0).update(outcome)


def test_a_round_of_the_wrong_number_of_runs_is_refused_with_the_shapes() -> None:
    policy = POLICIES["rucb"](RUCBSettings(), 3, [0, 1])  # two runs, one round's arrays
    one_run = OutcomeArrays.of(RoundOutcome(0, 1, first_wins=1))
    with pytest.raises(ValueError, match=r"^first has shape \(1,\); expected \(2,\)$"):
        policy.update_runs(one_run)


def test_rucb_runs_are_independent_when_one_has_a_single_candidate() -> None:
    # Run 1 has a Condorcet winner (arm 2, C = {2}); run 0 has played nothing (C = all).
    policy: Any = POLICIES["rucb"](RUCBSettings(), 3, [4, 5])
    policy.wins[1, 2, :2], policy.queries[1] = 60, 120
    first, second = policy.select_runs()
    assert (int(first[1]), int(second[1]), int(policy.hypothesis[1])) == (2, 2, 2)
    alone: Any = make_policy(RUCBSettings(), 3, 4)
    assert (int(first[0]), int(second[0])) == alone.select()


def test_rucb_second_arm_is_never_c_when_c_ties_in_its_own_column() -> None:
    # Arm 0 won the only 3 queries; alpha = 0.75 / ln 4 makes u_10 = sqrt(alpha ln 4 / 3)
    # = 1/2 exactly at t = 4, so both arms are in C, and when c = 0 its column ties
    # u_00 = u_10 = 1/2: d must be arm 1. When c = 1, d = 0 (u_01 = 1.5).
    alpha = 0.75 / math.log(4)
    seen = set()
    for seed in range(20):
        policy: Any = make_policy(RUCBSettings(alpha=alpha), 2, seed)
        policy.wins[0, 0, 1], policy.queries[0] = 3, 3
        seen.add(policy.select())
    assert seen == {(0, 1), (1, 0)}


def _dts_first_arms(queries: int, seeds: int = 60) -> set[int]:
    """D-TS's first arms over `seeds` seeds: arm 0 won 4 of 4 queries against arm 1,
    every other pair unplayed (u = 2), `queries` - 4 ties besides."""
    firsts = set()
    for seed in range(seeds):
        policy: Any = make_policy(DoubleTSSettings(alpha=0.51), 3, seed)
        policy.wins[0, 0, 1], policy.queries[0] = 4, queries
        firsts.add(policy.select()[0])
    return firsts


def test_double_ts_candidates_use_t_one_more_than_the_queries() -> None:
    # u_10 = sqrt(0.51 ln t / 4): 0.498 at t = 7 (6 queries), below 1/2, so arm 1's upper
    # Copeland score is 1 < 2 and it is never the first arm; 0.515 at t = 8 (7 queries):
    # arm 1 is a candidate and the posterior sample sometimes makes it first.
    assert math.sqrt(0.51 * math.log(7) / 4) < 0.5 < math.sqrt(0.51 * math.log(8) / 4)
    assert _dts_first_arms(6) == {0, 2}
    assert _dts_first_arms(7) == {0, 1, 2}
