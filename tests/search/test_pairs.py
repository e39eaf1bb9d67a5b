"""search/pairs.py: choosing preference pairs from scored samples, and their records."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from multisample.engine.seeds import derive_seed
from multisample.engine.types import Prompt
from multisample.search.base import Action, Candidate
from multisample.search.pairs import (
    PairMethod,
    PairSettings,
    as_text_format,
    pair_records,
    rejected_index,
    select_pairs,
)

ALL: list[PairMethod] = ["max_min", "max_mu_minus_2sigma", "max_rank_k", "min_of_k_random"]

# 18 samples: chosen is index 0 (the first 1.0); the minimum (0.0) is index 7; mu - 2 sigma
# (ddof=1) is about 0.378, nearest to the 0.5 at index 4.
SPREAD = [1.0, 0.9, 1.0, 0.9, 0.5, 1.0, 0.9, 0.0, 1.0, 0.9, 1.0, 0.9, 1.0, 0.9, 1.0, 0.9, 1.0, 0.9]


def pair_settings(**kwargs: Any) -> PairSettings:
    return PairSettings(**kwargs)


def candidate(
    i: int,
    reward: float | None,
    model: str = "m",
    action: Action = "generate",
    text: str | None = None,
) -> Candidate:
    return Candidate(
        id=i,
        model=model,
        action=action,
        parents=(),
        depth=1,
        text=text if text is not None else f"answer {i}",
        reward=reward,
        prompt_tokens=3,
        completion_tokens=4,
        finish_reason="stop",
        seed=i,
        latency_s=0.0,
    )


# --- settings --------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    s = PairSettings()
    assert s.methods == ["max_min", "max_mu_minus_2sigma"]
    assert s.min_margin == 0.0
    assert s.rank_k == 2
    assert s.random_k == 4


@pytest.mark.parametrize(
    "kwargs",
    [{"rank_k": 1}, {"random_k": 0}, {"min_margin": -0.1}, {"methods": ["best"]}, {"k": 2}],
)
def test_settings_reject(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PairSettings(**kwargs)


# --- each method -----------------------------------------------------------------------------


def test_max_min() -> None:
    s = pair_settings(methods=["max_min"])
    assert select_pairs([0.5, 0.9, 0.1, 0.3], s) == [("max_min", 1, 2)]
    assert rejected_index([0.5, 0.9, 0.1, 0.3], "max_min", s) == 2


def test_max_min_two_samples() -> None:
    s = pair_settings(methods=["max_min"])
    assert select_pairs([0.0, 1.0], s) == [("max_min", 1, 0)]


def test_max_min_ties_take_the_earlier_best_and_the_later_worst() -> None:
    s = pair_settings(methods=["max_min"])
    # Stable order from best to worst: 1, 3 (the 0.9s), 2, 0, 4 (the 0.1s).
    assert select_pairs([0.1, 0.9, 0.5, 0.9, 0.1], s) == [("max_min", 1, 4)]


def test_max_mu_minus_2sigma_picks_nearest_to_target() -> None:
    values = np.asarray(SPREAD)
    target = values.mean() - 2 * values.std(ddof=1)
    assert target == pytest.approx(0.3785, abs=1e-4)
    s = pair_settings(methods=["max_min", "max_mu_minus_2sigma"])
    assert select_pairs(SPREAD, s) == [("max_min", 0, 7), ("max_mu_minus_2sigma", 0, 4)]


# Each fixture tells mu - 2 sigma (sample std, ddof=1) apart from one plausible slip: a
# rejected sample nearest mu - 1, 1.5 or 2.5 sigma, or the population std (ddof=0).
SWEET_SPOT_FIXTURES = {
    "not mu - 1 sigma": [0.98, 0.56, 0.98, 0.7, 0.77, 0.94, 0.76, 0.84, 0.34, 0.92],
    "not mu - 1.5 sigma": [0.99, 0.99, 0.91, 0.83, 0.68, 0.58, 0.99, 0.82, 0.52, 0.87],
    "not mu - 2.5 sigma": [
        0.97,
        0.29,
        0.7,
        1.0,
        0.67,
        0.95,
        0.86,
        0.94,
        0.87,
        0.74,
        0.92,
        0.34,
        0.79,
    ],
    "not ddof=0": [0.87, 0.38, 0.94, 0.82, 0.97, 0.59, 0.78, 0.99, 0.87, 0.82, 0.8, 0.97, 0.23],
}


@pytest.mark.parametrize("rewards", SWEET_SPOT_FIXTURES.values(), ids=SWEET_SPOT_FIXTURES)
def test_max_mu_minus_2sigma_uses_two_sample_standard_deviations(rewards: list[float]) -> None:
    # The oracle, written independently with the standard library (stdev is ddof=1).
    target = statistics.fmean(rewards) - 2 * statistics.stdev(rewards)
    best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    expected = min(
        (i for i in range(len(rewards)) if i != best), key=lambda i: abs(rewards[i] - target)
    )
    assert rejected_index(rewards, "max_mu_minus_2sigma", pair_settings()) == expected


def test_max_mu_minus_2sigma_small_n_is_the_minimum() -> None:
    s = pair_settings(methods=["max_mu_minus_2sigma"])
    # mean 0.45, std 0.33: the target (-0.2) lies below every sample.
    assert select_pairs([0.5, 0.9, 0.1, 0.3], s) == [("max_mu_minus_2sigma", 1, 2)]


def test_max_mu_minus_2sigma_never_the_chosen_one() -> None:
    s = pair_settings()
    # All equal: the target equals every reward, the chosen (index 0) is skipped.
    assert rejected_index([2.0, 2.0, 2.0], "max_mu_minus_2sigma", s) == 1
    # Two samples: the other one, whatever the target.
    assert rejected_index([3.0, 1.0], "max_mu_minus_2sigma", s) == 1
    assert rejected_index([1.0, 3.0], "max_mu_minus_2sigma", s) == 0


def test_max_rank_k() -> None:
    s = pair_settings(methods=["max_rank_k"], rank_k=9)
    # Eight 1.0s rank 1-8; the 9th best is the first 0.9, index 1.
    assert select_pairs(SPREAD, s) == [("max_rank_k", 0, 1)]
    s3 = pair_settings(methods=["max_rank_k"], rank_k=3)
    assert select_pairs([0.5, 0.9, 0.1, 0.3, 0.7], s3) == [("max_rank_k", 1, 0)]


def test_max_rank_k_equal_to_n_is_the_worst() -> None:
    s = pair_settings(methods=["max_rank_k"], rank_k=4)
    assert select_pairs([0.5, 0.9, 0.1, 0.3], s) == [("max_rank_k", 1, 2)]


def test_max_rank_k_beyond_n_gives_no_pair() -> None:
    s = pair_settings(methods=["max_rank_k"], rank_k=5)
    assert rejected_index([0.5, 0.9, 0.1, 0.3], "max_rank_k", s) is None
    assert select_pairs([0.5, 0.9, 0.1, 0.3], s) == []


def test_max_rank_k_tied_with_best_gives_no_pair() -> None:
    s = pair_settings(methods=["max_rank_k"], rank_k=2)
    assert rejected_index(SPREAD, "max_rank_k", s) == 2  # the second 1.0
    assert select_pairs(SPREAD, s) == []


def test_min_of_k_random_deterministic_for_a_seed() -> None:
    s = pair_settings(methods=["min_of_k_random"], random_k=3)
    rewards = [0.1 * i for i in range(20)]
    for seed in range(10):
        first = rejected_index(rewards, "min_of_k_random", s, seed)
        assert rejected_index(rewards, "min_of_k_random", s, seed) == first
        assert select_pairs(rewards, s, seed) == select_pairs(rewards, s, seed)
    picks = {rejected_index(rewards, "min_of_k_random", s, seed) for seed in range(30)}
    assert len(picks) > 1  # the seed matters


@pytest.mark.parametrize("seed", range(20))
def test_min_of_k_random_returns_minimum_of_its_draw(seed: int) -> None:
    s = pair_settings(methods=["min_of_k_random"], random_k=3)
    rewards = [0.3, 0.8, 0.1, 0.95, 0.5, 0.2, 0.7, 0.4]
    values = np.asarray(rewards)
    others = np.argsort(-values, kind="stable")[1:]
    drawn = np.random.default_rng(seed).choice(others, size=3, replace=False)
    expected = int(drawn[np.argmin(values[drawn])])
    got = rejected_index(rewards, "min_of_k_random", s, seed)
    assert got == expected
    assert got != 3  # never the chosen (0.95)


def test_min_of_k_random_large_k_is_the_minimum() -> None:
    s = pair_settings(methods=["min_of_k_random"], random_k=50)
    rewards = [0.3, 0.8, 0.1, 0.95, 0.1, 0.2]
    for seed in range(10):
        # Ties at the minimum go to the lower index.
        assert rejected_index(rewards, "min_of_k_random", s, seed) == 2


def test_min_of_k_random_k1_never_the_chosen() -> None:
    s = pair_settings(methods=["min_of_k_random"], random_k=1)
    rewards = [0.3, 0.8, 0.1, 0.95]
    picks = {rejected_index(rewards, "min_of_k_random", s, seed) for seed in range(50)}
    assert picks <= {0, 1, 2}
    assert len(picks) >= 2


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown pair method 'best'"):
        rejected_index([1.0, 0.0], "best", PairSettings())  # type: ignore[arg-type]


def test_all_methods_in_order() -> None:
    s = pair_settings(methods=ALL, rank_k=3, random_k=50)
    assert select_pairs([0.5, 0.9, 0.1, 0.3, 0.7], s) == [
        ("max_min", 1, 2),
        ("max_mu_minus_2sigma", 1, 2),
        ("max_rank_k", 1, 0),
        ("min_of_k_random", 1, 2),
    ]


# --- when there is no pair -------------------------------------------------------------------


@pytest.mark.parametrize("rewards", [[0.7, 0.7, 0.7], [1.0, 1.0], [0.0] * 10])
def test_all_equal_rewards_give_no_pairs(rewards: list[float]) -> None:
    assert select_pairs(rewards, pair_settings(methods=ALL, random_k=2)) == []


def test_gap_below_epsilon_gives_no_pair() -> None:
    assert select_pairs([1.0, 1.0 - 1e-13], pair_settings(methods=["max_min"])) == []


@pytest.mark.parametrize("rewards", [[], [0.5]])
def test_fewer_than_two_samples(rewards: list[float]) -> None:
    s = pair_settings(methods=ALL)
    assert select_pairs(rewards, s) == []
    for method in ALL:
        assert rejected_index(rewards, method, s) is None


def test_min_margin_filter() -> None:
    rewards = [1.0, 0.75, 0.0]
    s = pair_settings(methods=["max_min", "max_rank_k"], rank_k=2, min_margin=0.5)
    assert select_pairs(rewards, s) == [("max_min", 0, 2)]
    loose = pair_settings(methods=["max_min", "max_rank_k"], rank_k=2, min_margin=0.25)
    assert select_pairs(rewards, loose) == [("max_min", 0, 2), ("max_rank_k", 0, 1)]
    strict = pair_settings(methods=["max_min", "max_rank_k"], rank_k=2, min_margin=1.5)
    assert select_pairs(rewards, strict) == []


def test_min_margin_exact_gap_is_kept() -> None:
    s = pair_settings(methods=["max_min"], min_margin=0.5)
    assert select_pairs([1.0, 0.5], s) == [("max_min", 0, 1)]


# --- records ---------------------------------------------------------------------------------


def test_pair_records_fields_and_lineage() -> None:
    prompt = Prompt(id="q1", prompt="What is 2+2?")
    candidates = [
        candidate(0, 0.4, model="a", text="five"),
        candidate(1, None, model="judge", action="feedback", text="be careful"),
        candidate(2, 0.9, model="b", action="refine", text="four"),
        candidate(3, 0.1, model="a", text="fish"),
    ]
    records = pair_records(prompt, candidates, pair_settings(methods=["max_min"]))
    assert records == [
        {
            "prompt": [{"role": "user", "content": "What is 2+2?"}],
            "chosen": [{"role": "assistant", "content": "four"}],
            "rejected": [{"role": "assistant", "content": "fish"}],
            "prompt_id": "q1",
            "method": "max_min",
            "chosen_reward": 0.9,
            "rejected_reward": 0.1,
            "chosen_id": 2,
            "rejected_id": 3,
            "chosen_model": "b",
            "rejected_model": "a",
            "chosen_action": "refine",
            "rejected_action": "generate",
        }
    ]


def test_pair_records_prompt_has_the_chosen_models_system_prompt() -> None:
    prompt = Prompt(id="q1", prompt="What is 2+2?")
    candidates = [candidate(0, 0.9, model="b"), candidate(1, 0.1, model="a")]
    systems = {"a": "Be terse.", "b": "Show your work."}
    (record,) = pair_records(prompt, candidates, pair_settings(methods=["max_min"]), 0, systems)
    assert record["prompt"] == [
        {"role": "system", "content": "Show your work."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert as_text_format(record) == {
        **record,
        "prompt": "What is 2+2?",
        "chosen": "answer 0",
        "rejected": "answer 1",
    }


def test_pair_records_ignore_feedback() -> None:
    prompt = Prompt(id="q", prompt="p")
    # Feedback with no reward would be the only "different" sample: no pair at all.
    candidates = [candidate(0, 0.5), candidate(1, None, action="feedback"), candidate(2, 0.5)]
    assert pair_records(prompt, candidates, pair_settings(methods=ALL)) == []
    only_one = [candidate(0, 0.5), candidate(1, None, action="feedback")]
    assert pair_records(prompt, only_one, pair_settings(methods=ALL)) == []
    assert pair_records(prompt, [], pair_settings(methods=ALL)) == []


def test_pair_records_one_per_method() -> None:
    prompt = Prompt(id="q", prompt="p")
    candidates = [candidate(i, r) for i, r in enumerate(SPREAD)]
    records = pair_records(prompt, candidates, pair_settings(methods=ALL, rank_k=9))
    assert [r["method"] for r in records] == ALL
    assert {r["chosen_id"] for r in records} == {0}
    assert [r["rejected_id"] for r in records[:3]] == [7, 4, 1]
    for r in records:
        assert r["chosen_reward"] > r["rejected_reward"]
        assert r["rejected"] == [{"role": "assistant", "content": f"answer {r['rejected_id']}"}]


def test_pair_records_random_seed_derives_from_prompt() -> None:
    prompt = Prompt(id="q7", prompt="p")
    rewards = [0.05 * i for i in range(20)]
    candidates = [candidate(i, r) for i, r in enumerate(rewards)]
    s = pair_settings(methods=["min_of_k_random"], random_k=2)
    for seed in (0, 1, 42):
        (record,) = pair_records(prompt, candidates, s, seed)
        expected = rejected_index(
            rewards, "min_of_k_random", s, derive_seed(seed, prompt.id, "pairs")
        )
        assert record["rejected_id"] == expected
        assert pair_records(prompt, candidates, s, seed) == [record]


# --- properties ------------------------------------------------------------------------------

rewards_lists = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.sampled_from([0.0, 0.5, 1.0]),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(
    rewards=rewards_lists,
    rank_k=st.integers(2, 30),
    random_k=st.integers(1, 30),
    min_margin=st.sampled_from([0.0, 0.1, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_pair_prefers_an_argmax(
    rewards: list[float], rank_k: int, random_k: int, min_margin: float, seed: int
) -> None:
    s = pair_settings(methods=ALL, rank_k=rank_k, random_k=random_k, min_margin=min_margin)
    pairs = select_pairs(rewards, s, seed)
    methods = [m for m, _, _ in pairs]
    assert len(methods) == len(set(methods))
    assert methods == [m for m in ALL if m in methods]  # settings order
    for _method, chosen, rejected in pairs:
        assert 0 <= chosen < len(rewards) and 0 <= rejected < len(rewards)
        assert chosen != rejected
        assert rewards[chosen] == max(rewards)
        assert rewards[chosen] > rewards[rejected]
        assert rewards[chosen] - rewards[rejected] >= min_margin
    if len(rewards) >= 2 and max(rewards) - min(rewards) >= max(min_margin, 1e-12):
        assert ("max_min", rewards.index(max(rewards)), _last_min(rewards)) in pairs


def _last_min(rewards: Sequence[float]) -> int:
    low = min(rewards)
    return max(i for i, r in enumerate(rewards) if r == low)
