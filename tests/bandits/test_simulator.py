"""Simulator: preference matrices, regret by hand, vectorized runs equal single runs, and
the policies do what they are for on an easy instance."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from multisample.bandits.policies.double_ts import DoubleTSSettings
from multisample.bandits.policies.fixed import FixedSettings
from multisample.bandits.policies.registry import POLICIES, make_policy
from multisample.bandits.policies.rucb import RUCBSettings
from multisample.bandits.policies.uniform import UniformSettings
from multisample.bandits.simulator import (
    Arena,
    borda_scores,
    bradley_terry,
    condorcet_winner,
    copeland_winner,
    cyclic,
    plot_regret,
    preference_matrix,
    random_condorcet,
    regret_band,
    simulate,
    strong_regret,
    true_best,
    weak_regret,
)
from multisample.engine.intervals import mean_ci

# Every registered policy, with its defaults and the fields it requires.
REQUIRED: dict[str, dict[str, Any]] = {"fixed": {"arm": 1}}
SETTINGS = [cls.settings_type.model_validate(REQUIRED.get(k, {})) for k, cls in POLICIES.items()]
IDS = [s.kind for s in SETTINGS]
# Clear Condorcet winner (arm 0), runner-up at P = 0.62, the rest far behind.
EASY = bradley_terry([2.0, 1.5, 0.0, -0.5, -1.0])


def test_bradley_terry_by_hand() -> None:
    p = bradley_terry([0.0, math.log(3), math.log(4)])
    np.testing.assert_allclose(p[1, 0], 0.75)  # strengths 1 and 3
    np.testing.assert_allclose(p[2, 0], 0.8)
    np.testing.assert_allclose(p[2, 1], 4 / 7)
    np.testing.assert_allclose(p + p.T, 1.0)
    assert np.diag(p).tolist() == [0.5, 0.5, 0.5]
    assert condorcet_winner(p) == 2


def test_preference_matrix_validation() -> None:
    assert preference_matrix([[0.5, 0.3], [0.7, 0.5]]).dtype == float
    for bad in (
        [[0.5, 0.3], [0.6, 0.5]],  # P + P.T != 1
        [[0.4, 0.3], [0.7, 0.6]],  # diagonal
        [[0.5, 1.2], [-0.2, 0.5]],  # outside [0, 1]
        [[0.5, 0.5, 0.5]],  # not square
        [[0.5]],  # one arm
    ):
        with pytest.raises(ValueError):
            preference_matrix(bad)


def test_condorcet_and_copeland_winners() -> None:
    # Arm 2 beats everyone.
    p = preference_matrix([[0.5, 0.6, 0.4], [0.4, 0.5, 0.3], [0.6, 0.7, 0.5]])
    assert condorcet_winner(p) == 2 and true_best(p) == 2
    # A cycle among 0, 1, 2 and arm 3 losing to all: no Condorcet winner; the Copeland
    # scores are 2, 2, 2, 0, so the fallback is the lowest of the tied arms.
    p = np.full((4, 4), 0.5)
    for i, j, value in ((0, 1, 0.7), (1, 2, 0.7), (2, 0, 0.7), (0, 3, 0.6), (1, 3, 0.6)):
        p[i, j], p[j, i] = value, 1 - value
    p[2, 3], p[3, 2] = 0.8, 0.2
    assert condorcet_winner(p) is None
    assert copeland_winner(p) == 0 and true_best(p) == 0
    # A tie (P = 1/2) is not a win, so nobody beats everyone.
    assert condorcet_winner(np.full((2, 2), 0.5)) is None


def test_cyclic_has_no_condorcet_winner() -> None:
    for arms in (3, 4, 5):
        p = cyclic(arms)
        assert condorcet_winner(p) is None
        assert copeland_winner(p) == 0
    assert cyclic(3)[0, 1] == pytest.approx(0.7) and cyclic(3)[1, 0] == pytest.approx(0.3)


def test_random_condorcet_instance() -> None:
    p = random_condorcet(5, seed=3, gap=0.1)
    winner = condorcet_winner(p)
    assert winner is not None
    others = np.arange(5) != winner
    assert (p[winner, others] >= 0.6).all() and (p[winner, others] <= 0.7).all()
    np.testing.assert_array_equal(p, random_condorcet(5, seed=3, gap=0.1))


def test_borda_scores() -> None:
    p = preference_matrix([[0.5, 0.6, 0.8], [0.4, 0.5, 0.9], [0.2, 0.1, 0.5]])
    np.testing.assert_allclose(borda_scores(p), [0.7, 0.65, 0.15])


def test_regret_by_hand() -> None:
    p = preference_matrix([[0.5, 0.7, 0.6], [0.3, 0.5, 0.4], [0.4, 0.6, 0.5]])
    # eps(0, .) = 0, 0.2, 0.1
    assert strong_regret(p, 0, 1, 2) == pytest.approx(0.15)
    assert weak_regret(p, 0, 1, 2) == pytest.approx(0.1)
    assert strong_regret(p, 0, 0, 1) == pytest.approx(0.1)
    assert weak_regret(p, 0, 0, 1) == 0.0
    assert strong_regret(p, 0, 0, 0) == 0.0
    assert strong_regret(p, 0, 2, 2) == pytest.approx(0.1)
    np.testing.assert_allclose(strong_regret(p, 0, np.array([1, 0]), np.array([2, 1])), [0.15, 0.1])


def test_simulated_regret_is_batch_times_per_query_regret() -> None:
    result = simulate(FixedSettings(arm=2), EASY, batch=16, horizon=10, seeds=[0, 1])
    per_round = 16 * (EASY[0, 2] - 0.5)
    np.testing.assert_allclose(result.strong, np.tile(per_round * np.arange(1, 11), (2, 1)))
    np.testing.assert_allclose(result.weak, result.strong)
    assert result.best.tolist() == [2, 2] and result.winner == 0


def test_arena_feedback() -> None:
    arena = Arena(EASY, 6, [0, 1, 2])
    outcomes = arena.play(np.array([0, 3, 4]), np.array([1, 3, 2]))
    assert (outcomes.first_wins + outcomes.second_wins).tolist() == [6, 0, 6]  # run 1: one model
    assert outcomes.ties.tolist() == [0, 0, 0]
    assert outcomes.queries.tolist() == [6, 6, 6]
    assert outcomes.outcome(1).second_rewards == ()
    assert len(outcomes.outcome(0).second_rewards) == 6
    assert set(outcomes.outcome(2).first_rewards) <= {0.0, 1.0}


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_vectorized_runs_equal_single_runs(settings: Any) -> None:
    """Run `seed` of a batched simulation is the single-run API played round by round."""
    matrix, batch, horizon, seeds = random_condorcet(4, seed=1), 4, 80, [5, 11, 17]
    result = simulate(settings, matrix, batch, horizon, seeds)
    winner = true_best(matrix)
    for row, seed in enumerate(seeds):
        policy = make_policy(settings, 4, seed)
        arena = Arena(matrix, batch, [seed])
        strong, weak = [], []
        for _ in range(horizon):
            first, second = policy.select()
            policy.update(arena.play(np.array([first]), np.array([second])).outcome(0))
            strong.append(batch * strong_regret(matrix, winner, first, second))
            weak.append(batch * weak_regret(matrix, winner, first, second))
        np.testing.assert_allclose(result.strong[row], np.cumsum(strong), rtol=0, atol=1e-9)
        np.testing.assert_allclose(result.weak[row], np.cumsum(weak), rtol=0, atol=1e-9)
        assert result.best[row] == policy.best()
    # The runs differ from each other (independent seeds), except for a fixed model.
    if settings.kind != "fixed":
        assert not np.array_equal(result.strong[0], result.strong[1])


def test_dueling_policies_find_the_condorcet_winner_with_little_regret() -> None:
    seeds, horizon = range(20), 600
    dueling = [s for s in SETTINGS if s.kind in {"co_ucb", "rucb", "double_ts", "uniform"}]
    results = {s.kind: simulate(s, EASY, 16, horizon, seeds) for s in dueling}
    uniform = results["uniform"]
    for kind in ("co_ucb", "rucb", "double_ts"):
        found = (results[kind].best == 0).mean()
        assert found >= 0.8, f"{kind} found the Condorcet winner in {found:.0%} of seeds"
        assert results[kind].weak[:, -1].mean() < 0.25 * uniform.weak[:, -1].mean()
    # Co-UCB always plays two different models, so its strong regret keeps growing by at
    # least the runner-up's share; RUCB and D-TS settle on the self-duel (0, 0).
    assert results["co_ucb"].strong[:, -1].mean() < 0.5 * uniform.strong[:, -1].mean()
    for kind in ("rucb", "double_ts"):
        assert results[kind].strong[:, -1].mean() < 0.15 * uniform.strong[:, -1].mean()


def test_regret_band_matches_mean_ci(tmp_path: Path) -> None:
    result = simulate(UniformSettings(), EASY, 4, 50, range(6))
    rounds, mean, low, high = regret_band(result.strong, points=10)
    assert rounds[0] == 1 and rounds[-1] == 50 and len(rounds) == 10
    assert (mean[3], low[3], high[3]) == pytest.approx(mean_ci(result.strong[:, rounds[3] - 1]))
    path = tmp_path / "regret.png"
    plot_regret({"uniform": result, "rucb": simulate(RUCBSettings(), EASY, 4, 50, range(6))}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_condorcet_winner_measures_against_copeland() -> None:
    result = simulate(DoubleTSSettings(), cyclic(5), 8, 40, range(3))
    assert result.winner == 0
    assert result.strong.shape == (3, 40)
