"""Policies: the formulas by hand, the ask/tell rules every policy keeps, and persistence."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from multisample.bandits.formulas import (
    co_ucb_pair_scores,
    confidence_bounds,
    dts_candidates,
    pairs,
    random_argmax,
    rucb_candidates,
    running_mean,
    ucb,
    win_rates,
)
from multisample.bandits.policies.base import RoundOutcome
from multisample.bandits.policies.co_ucb import CoUCBSettings
from multisample.bandits.policies.double_ts import DoubleTSSettings
from multisample.bandits.policies.fixed import FixedSettings
from multisample.bandits.policies.persistence import PolicyStateError, policy_from_state
from multisample.bandits.policies.registry import POLICIES, PolicySettings, make_policy
from multisample.bandits.policies.rucb import RUCBSettings
from multisample.bandits.policies.ucb1 import UCB1Settings
from multisample.bandits.simulator import Arena, bradley_terry

# Every registered policy, with its defaults and the fields it requires (a new policy with
# a required field fails here until it is given one).
REQUIRED: dict[str, dict[str, Any]] = {"fixed": {"arm": 2}}
SETTINGS = [cls.settings_type.model_validate(REQUIRED.get(k, {})) for k, cls in POLICIES.items()]
IDS = [s.kind for s in SETTINGS]


def test_every_registered_policy_is_tested() -> None:
    assert sorted(POLICIES) == sorted(IDS)
    assert set(REQUIRED) <= set(POLICIES)


# -- formulas by hand ------------------------------------------------------------------


def test_pairs_order() -> None:
    first, second = pairs(4)
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == [
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 2),
        (1, 3),
        (2, 3),
    ]


def test_ucb_index_and_unseen_bonus() -> None:
    # 0.5 + sqrt(2 ln 8 / 4), 0.2 + sqrt(2 ln 8 / 1), count 0 -> mean + bonus.
    got = ucb(np.array([0.5, 0.2, 0.0]), np.array([4, 1, 0]), 8, 1.0)
    np.testing.assert_allclose(got, [1.519666990, 2.239333980, 1.0], atol=1e-9)
    assert ucb(np.array([0.3]), np.array([0]), 8, math.inf)[0] == math.inf


def test_co_ucb_pair_scores_by_hand() -> None:
    # mu = (.75, .25, .5); pairs (0,1) and (1,2) played 16 times each, (0,2) never; T = 32.
    # sqrt(2 ln 32 / 16) = 0.6581922; the unplayed pair's bonus is 1.
    scores = co_ucb_pair_scores(np.array([0.75, 0.25, 0.5]), np.array([16, 0, 16]), 32)
    np.testing.assert_allclose(scores, [0.5 + 0.6581922, 0.625 + 1.0, 0.375 + 0.6581922])


def test_co_ucb_selects_the_best_scoring_pair_and_breaks_ties_at_random() -> None:
    # Every pair scores 0 + 1 at first: the authors shuffle the tied pairs, so over seeds
    # every pair comes first (lowest-index tie-breaking would always give (0, 1)), and
    # one seed always gives the same pair.
    firsts = {make_policy(CoUCBSettings(), 3, seed=s).select() for s in range(40)}
    assert firsts == {(0, 1), (0, 2), (1, 2)}
    assert len({make_policy(CoUCBSettings(), 3, seed=7).select() for _ in range(5)}) == 1
    for seed in range(10):
        policy = make_policy(CoUCBSettings(), 3, seed=seed)
        policy.mu[0] = [0.75, 0.25, 0.5]
        policy.n_pair[0] = [16, 0, 16]
        assert policy.select() == (0, 2)  # 1.625 beats 1.158 and 1.033: no tie


def test_running_mean() -> None:
    assert running_mean(0.5, 16, 12, 16) == pytest.approx((8 + 12) / 32)
    assert running_mean(0.0, 0, 3, 4) == pytest.approx(0.75)
    assert running_mean(0.4, 0, 0, 0) == 0.4  # nothing added: unchanged, no 0/0


def test_co_ucb_batch_update_by_hand() -> None:
    policy = make_policy(CoUCBSettings(), 3, seed=0)
    policy.update(RoundOutcome(0, 1, first_wins=12, second_wins=3, ties=1))
    # B = 16 (the tie counts in B, wins nothing): mu_0 = 12/16, mu_1 = 3/16.
    np.testing.assert_allclose(policy.mu[0], [0.75, 0.1875, 0.0])
    assert policy.n_pair[0].tolist() == [16, 0, 0]
    # Reversed order is the same pair: mu_1 = (16 * 0.1875 + 4) / 32, mu_0 = (12 + 10) / 32.
    policy.update(RoundOutcome(1, 0, first_wins=4, second_wins=10, ties=2))
    np.testing.assert_allclose(policy.mu[0], [22 / 32, 7 / 32, 0.0])
    assert policy.n_pair[0].tolist() == [32, 0, 0]
    # best(): T' = 64 model plays; arm 2 never played gets mu + 1 = 1; arm 0:
    # 0.6875 + sqrt(2 ln 64 / 32).
    assert policy.best() == 0  # 0.6875 + 0.5099 = 1.197 > 1 > 0.2188 + 0.5099
    assert policy.rounds == 2


def test_co_ucb_best_uses_t_twice_the_queries() -> None:
    # The authors' best() counts model plays, 2 per query: T' = n_0 + n_1 + n_2 = 40.
    policy = make_policy(CoUCBSettings(), 3, seed=0)
    policy.update(RoundOutcome(0, 1, first_wins=10, second_wins=6))
    policy.update(RoundOutcome(1, 2, ties=4))
    np.testing.assert_allclose(policy.mu[0], [0.625, 0.3, 0.0])
    # T' = 40: arm 0 0.625 + sqrt(2 ln 40 / 16) = 1.3041 < arm 2 0 + sqrt(2 ln 40 / 4)
    # = 1.3581. With T = 20 queries arm 0 would win (1.2369 > 1.2239).
    assert policy.best() == 2


def test_co_ucb_mean_update_counts_all_of_a_models_queries() -> None:
    # Model 0 plays (0, 1), then (0, 2): its second update weighs its mean by n_0 = 16
    # queries over all its pairs, not by the 0 queries pair (0, 2) had.
    policy = make_policy(CoUCBSettings(), 3, seed=0)
    policy.update(RoundOutcome(0, 1, first_wins=12, second_wins=4))
    policy.update(RoundOutcome(0, 2, first_wins=4, second_wins=12))
    # mu_0 = (16 * 0.75 + 4) / 32; mu_1 = 4 / 16; mu_2 = 12 / 16.
    np.testing.assert_allclose(policy.mu[0], [0.5, 0.25, 0.75])
    assert policy.n_pair[0].tolist() == [16, 16, 0]


def test_co_ucb_selection_uses_t_the_queries_so_far() -> None:
    policy = make_policy(CoUCBSettings(), 3, seed=0)
    policy.mu[0] = [0.5, 0.1, 0.7]
    policy.n_pair[0] = [32, 128, 128]
    # T = 288: (0,1) 0.3 + sqrt(2 ln 288 / 32) = 0.8949; (0,2) 0.6 + sqrt(2 ln 288 / 128)
    # = 0.8975; (1,2) 0.4 + 0.2975. With T doubled, (0,1) would win (0.8803 > 0.8651).
    assert policy.select() == (0, 2)


def test_ucb1_index_and_selection_by_hand() -> None:
    policy = make_policy(UCB1Settings(), 3, seed=0)
    assert policy.absolute_feedback
    assert policy.select() == (0, 0)  # every index is +inf: the lowest arm
    policy.update(RoundOutcome(0, 0, first_rewards=(1.0, 0.0, 1.0, 1.0)))
    assert policy.select() == (1, 1)  # arms 1 and 2 still +inf
    policy.update(RoundOutcome(1, 1, first_rewards=(0.0, 0.0)))
    assert policy.select() == (2, 2)
    policy.update(RoundOutcome(2, 2, first_rewards=(1.0,)))
    # T = 7: 0.75 + sqrt(2 ln 7 / 4) = 1.7364; 0 + sqrt(2 ln 7 / 2) = 1.3950; 1 + 1.9728.
    index = ucb(policy.mu[0], policy.n[0], 7, math.inf)
    np.testing.assert_allclose(index, [1.7363849, 1.3949588, 2.9727697], atol=1e-7)
    assert policy.select() == (2, 2)
    # Both reward lists of a single-model round count for that model.
    policy.update(RoundOutcome(1, 1, first_rewards=(1.0,), second_rewards=(1.0,)))
    assert policy.n[0].tolist() == [4, 4, 1]
    assert policy.mu[0, 1] == pytest.approx(0.5)


def test_rucb_upper_bounds_with_x_over_0_equal_1() -> None:
    wins = np.array([[0, 3, 0], [1, 0, 0], [0, 0, 0]])
    upper, lower = confidence_bounds(wins, 0.51, 5)
    radius = math.sqrt(0.51 * math.log(5) / 4)  # 0.4529937
    expected_upper = [[0.5, 0.75 + radius, 2.0], [0.25 + radius, 0.5, 2.0], [2.0, 2.0, 0.5]]
    expected_lower = [[0.5, 0.75 - radius, 0.0], [0.25 - radius, 0.5, 0.0], [0.0, 0.0, 0.5]]
    np.testing.assert_allclose(upper, expected_upper)
    np.testing.assert_allclose(lower, expected_lower)


def test_rucb_candidates() -> None:
    # Arm 1 lost 10 of 10 to arm 0: u_10 = 0 + sqrt(0.51 ln 11 / 10) = 0.3497 < 1/2.
    upper, _ = confidence_bounds(np.array([[0, 10, 0], [0, 0, 0], [0, 0, 0]]), 0.51, 11)
    assert upper[1, 0] == pytest.approx(0.3497037)
    assert rucb_candidates(upper).tolist() == [True, False, True]
    # u = 1/2 exactly still qualifies (u_cj >= 1/2).
    assert rucb_candidates(np.array([[0.5, 0.5], [0.5, 0.5]])).tolist() == [True, True]


def test_dts_candidate_set() -> None:
    # Upper Copeland scores #{j: u_ij > 1/2} = 1, 1, 1: all tie, so all are candidates,
    # while RUCB's set (every u_cj >= 1/2) is empty.
    upper = np.array([[0.5, 0.6, 0.4], [0.7, 0.5, 0.45], [0.8, 0.3, 0.5]])
    assert dts_candidates(upper).tolist() == [True, True, True]
    assert rucb_candidates(upper).tolist() == [False, False, False]
    # Scores 1, 1, 2: only arm 2; u = 1/2 exactly does not count (strict).
    upper = np.array([[0.5, 0.6, 0.4], [0.45, 0.5, 0.7], [0.8, 0.55, 0.5]])
    assert dts_candidates(upper).tolist() == [False, False, True]
    assert dts_candidates(np.array([[0.5, 0.5], [0.5, 0.5]])).tolist() == [True, True]


def test_random_argmax_breaks_ties_by_the_uniforms() -> None:
    values = np.array([1.0, 3.0, 3.0, 2.0])
    uniforms = np.array([0.9, 0.1, 0.2, 0.99])
    assert random_argmax(values, np.ones(4, bool), uniforms) == 2
    assert random_argmax(values, np.array([True, True, False, True]), uniforms) == 1
    # Batched over runs.
    got = random_argmax(np.zeros((2, 3)), np.array([[1, 0, 1], [0, 1, 0]], bool), np.eye(3)[:2])
    assert got.tolist() == [0, 1]


def test_win_rates() -> None:
    rates = win_rates(np.array([[0, 3, 0], [1, 0, 0], [0, 0, 0]]))
    np.testing.assert_allclose(rates, [[0.5, 0.75, 0.5], [0.25, 0.5, 0.5], [0.5, 0.5, 0.5]])


def test_dueling_policies_best_is_the_empirical_copeland_winner() -> None:
    policy = make_policy(RUCBSettings(), 3, seed=0)
    policy.update(RoundOutcome(0, 1, first_wins=2, second_wins=6))
    policy.update(RoundOutcome(1, 2, first_wins=5, second_wins=3))
    policy.update(RoundOutcome(2, 2, first_rewards=(0.5,) * 8))  # a self-duel: no preference
    assert policy.wins[0].tolist() == [[0, 2, 0], [6, 0, 5], [0, 3, 0]]
    assert policy.queries[0] == 24  # t counts the self-duel's 8 queries
    assert policy.best() == 1


def test_rucb_first_arm_from_the_candidate_set_and_its_challenger() -> None:
    policy = make_policy(RUCBSettings(), 3, seed=0)
    # 0 beat 2 and 2 beat 1 forty times to none; 0 vs 1 is close (10 to 8). t = 99.
    policy.wins[0] = [[0, 10, 40], [8, 0, 0], [0, 40, 0]]
    policy.queries[0] = 98
    # u_12 = u_20 = sqrt(0.51 ln 99 / 40) = 0.242 < 1/2, so C = {0} and B = {0}; the
    # challenger is argmax_j u_j0: u_10 = 8/18 + sqrt(0.51 ln 99 / 18) = 0.805.
    assert policy.select() == (0, 1)
    assert policy.hypothesis[0] == 0


def test_rucb_self_duel_once_the_first_arm_beats_everyone() -> None:
    policy = make_policy(RUCBSettings(), 3, seed=0)
    policy.wins[0] = [[0, 40, 40], [0, 0, 20], [0, 20, 0]]
    policy.queries[0] = 160
    # C = {0}; u_10 = u_20 = 0.254 < u_00 = 1/2, so d = c: the paper's self-duel.
    assert policy.select() == (0, 0)


def test_dts_second_arm_is_the_first_when_everyone_is_known_to_lose() -> None:
    policy = make_policy(DoubleTSSettings(), 3, seed=0)
    policy.wins[0] = [[0, 400, 400], [0, 0, 200], [0, 200, 0]]
    policy.queries[0] = 1200
    # Arm 0 is the only candidate; every arm is eligible (l_i0 <= 1/2), but the sampled
    # theta_i0 ~ Beta(1, 401) are far below theta_00 = 1/2: the self-duel (0, 0).
    assert policy.select() == (0, 0)


# -- ask/tell rules every policy keeps -------------------------------------------------


def play(policy: Any, arena: Arena, rounds: int) -> list[tuple[int, int]]:
    """Play rounds through the single-run API with the arena's feedback."""
    chosen = []
    for _ in range(rounds):
        first, second = policy.select()
        outcomes = arena.play(np.array([first]), np.array([second]))
        policy.update(outcomes.outcome(0))
        chosen.append((first, second))
    return chosen


@pytest.fixture
def matrix() -> np.ndarray:
    return bradley_terry([0.8, 0.2, 1.0, -0.3])


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_json_round_trip_continues_identically(settings: Any, matrix: np.ndarray) -> None:
    policy = make_policy(settings, 4, seed=123)
    play(policy, Arena(matrix, 8, [9]), 25)
    state = policy.state()
    assert set(state) == {"version", "kind", "settings", "arms", "rounds", "rng", "counters"}
    assert state["kind"] == settings.kind and state["arms"] == 4 and state["rounds"] == 25
    restored = policy_from_state(json.loads(json.dumps(state)))
    assert restored.state() == state
    # Same feedback stream from here on: the same selections, the same end state.
    original_choices = play(policy, Arena(matrix, 8, [10]), 40)
    restored_choices = play(restored, Arena(matrix, 8, [10]), 40)
    assert original_choices == restored_choices
    assert restored.state() == policy.state()
    assert restored.best() == policy.best()


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_same_seed_same_selections(settings: Any, matrix: np.ndarray) -> None:
    runs = [play(make_policy(settings, 4, seed=5), Arena(matrix, 4, [1]), 30) for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_update_rejects_impossible_feedback(settings: Any) -> None:
    policy = make_policy(settings, 3, seed=0)
    rewards = (0.5,) * 4
    bad = [
        RoundOutcome(3, 0, first_wins=1, first_rewards=rewards),  # arm out of range
        RoundOutcome(0, -1, first_wins=1, first_rewards=rewards),
        RoundOutcome(0, 1, first_wins=-1, first_rewards=rewards),  # negative counts
        RoundOutcome(0, 1, first_wins=2, ties=-1, first_rewards=rewards),
        RoundOutcome(0, 1, first_wins=1.5, first_rewards=rewards),  # type: ignore[arg-type]
        RoundOutcome(0, 1, first_wins=True, first_rewards=rewards),
        RoundOutcome(0, 1, first_wins=2, first_rewards=(0.5, math.nan)),
    ]
    for feedback in bad:
        with pytest.raises(ValueError):
            policy.update(feedback)
    assert policy.rounds == 0


def test_policy_specific_feedback_rules() -> None:
    with pytest.raises(ValueError, match="different models"):
        make_policy(CoUCBSettings(), 3, 0).update(RoundOutcome(1, 1, first_wins=2))
    with pytest.raises(ValueError, match="absolute rewards"):
        make_policy(UCB1Settings(), 3, 0).update(RoundOutcome(0, 1, first_wins=2, second_wins=2))
    # Fixed, RUCB and D-TS accept a single-model round with rewards only.
    for settings in (FixedSettings(arm=1), RUCBSettings(), DoubleTSSettings()):
        make_policy(settings, 3, 0).update(RoundOutcome(1, 1, first_rewards=(0.2, 0.4)))


def test_settings_defaults_and_validation() -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(PolicySettings)
    assert adapter.validate_python({"kind": "rucb"}).alpha == 0.51
    assert adapter.validate_python({"kind": "double_ts"}).alpha == 0.51
    assert isinstance(adapter.validate_python({"kind": "co_ucb"}), CoUCBSettings)
    for bad in ({"kind": "rucb", "alpha": 0.5}, {"kind": "fixed"}, {"kind": "thompson"}):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)
    with pytest.raises(ValueError, match="below the 3 arms"):
        make_policy(FixedSettings(arm=3), 3, 0)
    with pytest.raises(ValueError, match="arms"):
        make_policy(CoUCBSettings(), 1, 0)


@pytest.mark.parametrize("settings", SETTINGS, ids=IDS)
def test_the_settings_union_is_built_from_the_registry(settings: Any) -> None:
    parsed = TypeAdapter(PolicySettings).validate_python(settings.model_dump(mode="json"))
    assert parsed == settings
    assert make_policy(parsed, 3, 0).kind == settings.kind == POLICIES[settings.kind].kind


def test_single_run_view_refuses_many_runs() -> None:
    policy = POLICIES["co_ucb"](CoUCBSettings(), 3, [0, 1])
    with pytest.raises(ValueError, match="single-run"):
        policy.select()
    assert policy.select_runs()[0].shape == (2,)


# -- corrupt states --------------------------------------------------------------------


def saved(settings: Any = None) -> dict[str, Any]:
    policy = make_policy(settings or CoUCBSettings(), 3, seed=1)
    policy.update(RoundOutcome(0, 1, first_wins=3, second_wins=1))
    return json.loads(json.dumps(policy.state()))


def corrupt(change: Any, settings: Any = None) -> dict[str, Any]:
    state = saved(settings)
    change(state)
    return state


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ([1, 2, 3], "JSON object"),
        ("co_ucb", "JSON object"),
        ({"status": "done", "rounds": 3}, "unknown policy kind None"),
        (corrupt(lambda s: s.update(kind="epsilon_greedy")), "unknown policy kind"),
        (corrupt(lambda s: s.pop("counters")), "counters"),
        (corrupt(lambda s: s.pop("rng")), "rng"),
        (corrupt(lambda s: s.update(version=2)), "version"),
        (corrupt(lambda s: s.update(rounds=-1)), "rounds"),
        (corrupt(lambda s: s.update(kind="rucb")), "holds 'co_ucb' settings"),
        (corrupt(lambda s: s["counters"].update(mu=[0.5] * 4)), "shape"),
        (corrupt(lambda s: s["counters"].update(n_pair=[[4, 0, 0]])), "shape"),
        (corrupt(lambda s: s["counters"].update(n_pair=[4, -1, 0])), "n_pair"),
        (corrupt(lambda s: s["counters"].update(n_pair=[4.5, 0, 0])), "integers"),
        (corrupt(lambda s: s["counters"].update(n_pair=[[4], 0, 0])), "rectangular"),
        (corrupt(lambda s: s["counters"].update(mu=[1.5, 0, 0])), "mu"),
        (corrupt(lambda s: s["counters"].pop("mu")), "expected"),
        (corrupt(lambda s: s["counters"].update(extra=[1])), "expected"),
        (corrupt(lambda s: s.update(kind=[])), "unknown policy kind"),
        (corrupt(lambda s: s["rng"].update(bit_generator="MT19937")), "rng state"),
        (corrupt(lambda s: s["rng"].pop("state")), "rng state"),
        (corrupt(lambda s: s["counters"].update(n_pair=[2**70, 0, 0])), "integers"),
        (corrupt(lambda s: s["settings"].update(alpha=2)), "alpha"),
        (corrupt(lambda s: s["counters"].update(wins=[[0, -1, 0]] * 3), RUCBSettings()), "wins"),
        (corrupt(lambda s: s["counters"].update(hypothesis=3), RUCBSettings()), "hypothesis"),
        (corrupt(lambda s: s.update(arms=2), FixedSettings(arm=2)), "below the 2 arms"),
    ],
)
def test_corrupt_state_is_refused(state: Any, message: str) -> None:
    with pytest.raises(PolicyStateError, match=message):
        policy_from_state(state)
