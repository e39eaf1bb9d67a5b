"""engine/budget.py: limits, per-model accounting and FLOP estimates."""

from __future__ import annotations

import pytest

from multisample.engine.budget import Budget, ModelSpend, estimate_flops
from multisample.engine.config import BudgetConfig
from multisample.engine.types import Generation


def gen(model: str = "m", prompt_tokens: int = 10, completion_tokens: int = 5) -> Generation:
    return Generation(
        text="answer",
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason="stop",
        seed=1,
        latency_s=0.01,
    )


def budget(
    generations: int | None = 16,
    tokens: int | None = None,
    parameters: dict[str, float] | None = None,
) -> Budget:
    limits = BudgetConfig(generations=generations, tokens=tokens)
    if parameters is None:
        return Budget(limits)
    known = dict(parameters)
    return Budget(limits, lambda model: known.get(model))


# --- generation limit ------------------------------------------------------------------------


def test_generation_limit_exact_boundary() -> None:
    b = budget(generations=3)
    assert b.remaining_generations() == 3
    assert b.can_generate(3)
    assert not b.can_generate(4)
    for expected_left in (2, 1):
        b.charge(gen())
        assert b.remaining_generations() == expected_left
        assert b.can_generate()
        assert b.can_generate(expected_left)
        assert not b.can_generate(expected_left + 1)
    b.charge(gen())
    assert b.remaining_generations() == 0
    assert not b.can_generate()
    assert not b.can_generate(1)
    assert b.can_generate(0)


def test_remaining_generations_never_negative() -> None:
    b = budget(generations=1)
    b.charge(gen())
    b.charge(gen())  # a strategy bug: charged past the limit
    assert b.generations == 2
    assert b.remaining_generations() == 0
    assert not b.can_generate()


def test_remaining_generations_none_without_limit() -> None:
    b = budget(generations=None, tokens=100)
    assert b.remaining_generations() is None
    assert b.can_generate(10_000)


# --- token limit -----------------------------------------------------------------------------


def test_token_limit_allows_while_below() -> None:
    b = budget(generations=None, tokens=100)
    assert b.can_generate()
    b.charge(gen(prompt_tokens=60, completion_tokens=39))  # 99 spent
    assert b.tokens == 99
    assert b.can_generate()
    b.charge(gen(prompt_tokens=1, completion_tokens=0))  # 100 spent: at the limit
    assert b.tokens == 100
    assert not b.can_generate()


def test_token_limit_may_overshoot_by_one_generation() -> None:
    b = budget(generations=None, tokens=100)
    b.charge(gen(prompt_tokens=50, completion_tokens=49))
    assert b.can_generate()  # 99 < 100: one more is allowed...
    b.charge(gen(prompt_tokens=50, completion_tokens=50))
    assert b.tokens == 199  # ...and it overshoots the limit
    assert not b.can_generate()


def test_token_limit_ignores_n() -> None:
    b = budget(generations=None, tokens=100)
    assert b.can_generate(50)


def test_tokens_sum_over_models() -> None:
    b = budget(generations=None, tokens=30)
    b.charge(gen("a", 10, 5))
    assert b.can_generate()
    b.charge(gen("b", 10, 5))
    assert b.tokens == 30
    assert not b.can_generate()


# --- both limits -----------------------------------------------------------------------------


def test_both_limits_generation_limit_first() -> None:
    b = budget(generations=2, tokens=1000)
    b.charge(gen())
    b.charge(gen())
    assert b.tokens == 30
    assert not b.can_generate()


def test_both_limits_token_limit_first() -> None:
    b = budget(generations=10, tokens=20)
    b.charge(gen(prompt_tokens=15, completion_tokens=5))
    assert b.remaining_generations() == 9
    assert not b.can_generate()


def test_both_limits_n_checked_against_generations() -> None:
    b = budget(generations=4, tokens=1000)
    b.charge(gen())
    assert b.can_generate(3)
    assert not b.can_generate(4)


# --- charge and FLOPs ------------------------------------------------------------------------


def test_charge_accumulates_per_model() -> None:
    b = budget(parameters={"a": 1e9, "b": 3e9})
    b.charge(gen("a", 10, 5))
    b.charge(gen("a", 20, 7))
    b.charge(gen("b", 1, 2))
    a, bb = b.per_model["a"], b.per_model["b"]
    assert (a.generations, a.prompt_tokens, a.completion_tokens) == (2, 30, 12)
    assert a.tokens == 42
    assert a.flops == 2 * 1e9 * 15 + 2 * 1e9 * 27
    assert (bb.generations, bb.prompt_tokens, bb.completion_tokens) == (1, 1, 2)
    assert bb.flops == 2 * 3e9 * 3
    assert b.generations == 3
    assert b.tokens == 45
    assert b.flops == pytest.approx(2 * 1e9 * 42 + 2 * 3e9 * 3)


def test_flops_zero_when_parameters_unknown() -> None:
    b = budget(parameters={"known": 2e9})
    b.charge(gen("unknown", 100, 100))
    b.charge(gen("known", 1, 1))
    assert b.per_model["unknown"].flops == 0.0
    assert b.per_model["known"].flops == 2 * 2e9 * 2
    assert b.flops == 8e9


def test_default_parameters_give_zero_flops() -> None:
    b = budget()
    b.charge(gen("m", 100, 100))
    assert b.flops == 0.0
    assert b.per_model["m"].tokens == 200


def test_parameters_callable_receives_model_name() -> None:
    seen: list[str] = []

    def parameters(model: str) -> float | None:
        seen.append(model)
        return 10.0

    b = Budget(BudgetConfig(), parameters)
    b.charge(gen("x", 1, 2))
    assert seen == ["x"]
    assert b.flops == 60.0


def test_estimate_flops() -> None:
    assert estimate_flops(1e9, 10) == 2e10
    assert estimate_flops(None, 10) == 0.0
    assert estimate_flops(0, 10) == 0.0
    assert estimate_flops(5.0, 0) == 0.0


def test_model_spend_tokens() -> None:
    assert ModelSpend(prompt_tokens=3, completion_tokens=4).tokens == 7
    assert ModelSpend().tokens == 0


def test_charge_rewards() -> None:
    b = budget()
    b.charge_rewards(3)
    b.charge_rewards(2)
    assert b.reward_calls == 5
    assert b.generations == 0  # reward calls do not count as generations
    assert b.remaining_generations() == 16


# --- to_dict ---------------------------------------------------------------------------------


def test_to_dict() -> None:
    b = budget(parameters={"zeta": 1.0})
    b.charge(gen("zeta", 2, 3))
    b.charge(gen("alpha", 4, 1))
    b.charge_rewards(2)
    d = b.to_dict()
    assert d == {
        "generations": 2,
        "tokens": 10,
        "flops": 10.0,
        "reward_calls": 2,
        "per_model": {
            "alpha": {"generations": 1, "prompt_tokens": 4, "completion_tokens": 1, "flops": 0.0},
            "zeta": {"generations": 1, "prompt_tokens": 2, "completion_tokens": 3, "flops": 10.0},
        },
    }
    assert list(d["per_model"]) == ["alpha", "zeta"]  # type: ignore[call-overload]


def test_to_dict_empty() -> None:
    assert budget().to_dict() == {
        "generations": 0,
        "tokens": 0,
        "flops": 0,
        "reward_calls": 0,
        "per_model": {},
    }


def test_reserved_generations_count_until_charged_or_released() -> None:
    b = budget(generations=4)
    b.reserve(3)
    assert b.remaining_generations() == 1
    assert b.can_generate(1) and not b.can_generate(2)
    b.charge(gen())  # one of the three arrives
    assert (b.reserved, b.generations, b.remaining_generations()) == (2, 1, 1)
    b.release(2)  # the other two failed
    assert (b.reserved, b.remaining_generations()) == (0, 3)
    b.release(5)
    assert b.reserved == 0
