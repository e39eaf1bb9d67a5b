"""engine/rewards/normalization.py: every kind on numbers worked out by hand (chosen to be
exact in binary floating point), the per-prompt statistics, and the settings' shapes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from multisample.engine.rewards.normalization import (
    IDENTITY,
    NORMALIZATIONS,
    Affine,
    MinMax,
    NoNormalization,
    Normalization,
    RewardNormalization,
    Scale,
    Sigmoid,
    ZScore,
    normalize,
    sigmoid,
)

PARSE = TypeAdapter(Normalization)
FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def test_none_keeps_the_reward() -> None:
    assert normalize(NoNormalization(), 3.5, [1.0, -7.25]) == 3.5
    assert normalize(NoNormalization(), -2.0, []) == -2.0


def test_sigmoid_of_reward_over_tau() -> None:
    assert normalize(Sigmoid(), 0.0, []) == 0.5
    assert normalize(Sigmoid(tau=0.5), 1.0, [9.0]) == 1 / (1 + math.exp(-2.0))
    assert normalize(Sigmoid(tau=2.0), -4.0, []) == math.exp(-2.0) / (1 + math.exp(-2.0))
    # It saturates: logit-scale rewards of +-5 at the published tau = 0.1 all tie.
    assert normalize(Sigmoid(), 5.0, []) == normalize(Sigmoid(), 4.0, []) == 1.0
    assert normalize(Sigmoid(), -5.0, []) < normalize(Sigmoid(), -4.0, []) < 1e-17
    assert sigmoid(1e4) == 1.0 and sigmoid(-1e4) == 0.0  # no overflow


def test_scale_multiplies_by_the_factor() -> None:
    assert normalize(Scale(factor=0.25), 6.0, [2.0]) == 1.5
    assert normalize(Scale(factor=4.0), -0.5, []) == -2.0


def test_zscore_over_the_prompts_rewards_so_far() -> None:
    # 2, 4, 4, 4, 5, 5, 7, 9: mean 5, population standard deviation 2.
    earlier = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0]
    assert normalize(ZScore(), 9.0, earlier) == 2.0
    assert normalize(ZScore(), 2.0, [4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]) == -1.5
    assert ZScore().affine([*earlier, 9.0]) == Affine(5.0, 2.0)
    # Logit-scale rewards the sigmoid cannot tell apart: +-1 standard deviation.
    assert normalize(ZScore(), 5.0, [-5.0]) == 1.0
    assert normalize(ZScore(), -5.0, [5.0]) == -1.0


def test_minmax_over_the_prompts_rewards_so_far() -> None:
    assert normalize(MinMax(), 5.0, [1.0, 9.0]) == 0.5
    assert normalize(MinMax(), 9.0, [1.0, 5.0]) == 1.0
    assert normalize(MinMax(), 1.0, [5.0, 9.0]) == 0.0
    assert normalize(MinMax(), -3.0, [-7.0, 1.0]) == 0.5
    assert MinMax().affine([3.0, -1.0, 7.0]) == Affine(-1.0, 8.0)


@pytest.mark.parametrize("kind", [ZScore(), MinMax()])
def test_a_prompt_without_spread_maps_to_zero(kind: RewardNormalization) -> None:
    assert normalize(kind, 4.75, []) == 0.0  # one sample
    assert normalize(kind, 0.1, [0.1, 0.1]) == 0.0  # all equal (no mean rounding)
    assert kind.affine([]) == IDENTITY


def test_the_statistics_are_those_of_the_values_given_so_far() -> None:
    # The same reward maps differently as the prompt's samples come in, and back again
    # for the same values: nothing but the values decides.
    assert normalize(ZScore(), 3.0, [1.0]) == 1.0
    # 1, 3, 3, -1, 3: mean 1.8, population standard deviation 1.6.
    assert normalize(ZScore(), 3.0, [1.0, 3.0, 3.0, -1.0]) == pytest.approx(0.75)
    assert normalize(MinMax(), 3.0, [1.0, 5.0]) == 0.5
    assert normalize(MinMax(), 3.0, [1.0]) == 1.0


def test_fixed_kinds_have_no_per_prompt_part() -> None:
    for kind in (NoNormalization(), Sigmoid(tau=3.0), Scale(factor=2.0)):
        assert kind.affine([1.0, 5.0, -2.0]) == IDENTITY


def test_affine_total_is_the_sum_of_the_mapped_values() -> None:
    affine = Affine(5.0, 2.0)
    assert affine.total(9.0 + 7.0, 2) == affine(9.0) + affine(7.0) == 3.0
    assert affine.total(0.0, 0) == 0.0


@given(st.lists(FINITE, max_size=8), st.integers(min_value=0, max_value=50))
def test_the_identity_total_is_the_sum_bit_for_bit(values: list[float], count: int) -> None:
    # The published defaults keep their exact arithmetic: sum - n * 0.0, over 1.0.
    total = math.fsum(values)
    assert IDENTITY.total(total, count) == total
    assert all(IDENTITY(v) == v for v in values)


@given(st.lists(FINITE, min_size=2, max_size=8))
def test_every_kind_keeps_the_order_of_rewards(rewards: list[float]) -> None:
    # Non-decreasing (the sigmoid may tie far out), so an argmax of raw rewards is an
    # argmax of r~: PRS, which only takes one, would choose the same.
    kinds = [NoNormalization(), Sigmoid(), Sigmoid(tau=10.0), Scale(factor=0.5), ZScore(), MinMax()]
    ordered = sorted(rewards)
    for kind in kinds:
        values = [kind.pointwise(r) for r in rewards]
        affine = kind.affine(values)
        mapped = [affine(kind.pointwise(r)) for r in ordered]
        assert mapped == sorted(mapped), kind


def test_a_kind_alone_takes_its_defaults() -> None:
    assert PARSE.validate_python("zscore") == ZScore()
    assert PARSE.validate_python("minmax") == MinMax()
    assert PARSE.validate_python("none") == NoNormalization()
    assert PARSE.validate_python("sigmoid") == Sigmoid(tau=0.1)
    assert PARSE.validate_python({"kind": "sigmoid", "tau": 2}) == Sigmoid(tau=2.0)
    assert PARSE.validate_python({"kind": "scale", "factor": 0.2}) == Scale(factor=0.2)
    assert set(NORMALIZATIONS) == {"none", "sigmoid", "scale", "zscore", "minmax"}


@pytest.mark.parametrize(
    "bad",
    [
        "scale",  # a factor is required
        {"kind": "scale", "factor": 0},
        {"kind": "scale", "factor": -1},
        {"kind": "sigmoid", "tau": 0},
        {"kind": "zscore", "ddof": 1},
        "softmax",
        3,
    ],
)
def test_bad_settings_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        PARSE.validate_python(bad)
