"""Rewards: the shared interface, and each kind on real models where it has one."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from multisample.engine.config import PoolConfig
from multisample.engine.pool import ModelPool
from multisample.engine.rewards.base import Reward, RewardError
from multisample.engine.rewards.combine import CallableReward, WeightedReward
from multisample.engine.rewards.embedding import EmbeddingReward
from multisample.engine.rewards.judge import JudgeReward, expected_digit
from multisample.engine.rewards.registry import RewardSpec
from multisample.engine.rewards.verifiable import VerifiableReward
from multisample.engine.types import Generation, GenerationRequest, Prompt
from tests.conftest import CHAT_MODEL

PROMPT = Prompt(
    id="p",
    prompt="List two fruits in lowercase, without commas.",
    reference="apple and pear",
    constraints=({"kind": "all_lowercase"}, {"kind": "no_commas"}),
)


def length_score(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    """A user reward for the callable tests: the length of each response."""
    return [float(len(r)) for r in responses]


async def async_constant(prompt: str, responses: list[str], reference: str | None) -> list[float]:
    await asyncio.sleep(0)
    return [2.0 for _ in responses]


def not_a_list(prompt: str, responses: list[str], reference: str | None) -> object:
    return "oops"


def reward_of(spec: dict[str, object]) -> Reward:
    from pydantic import TypeAdapter

    parsed = TypeAdapter(RewardSpec).validate_python(spec)
    pool = ModelPool(PoolConfig.model_validate({"models": [{"name": "m", "model": "x"}]}))
    return parsed.build(pool)


class Counting(Reward):
    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        self.batches.append(responses)
        return [float(len(r)) for r in responses]


async def test_cache_scores_each_distinct_response_once() -> None:
    reward = Counting()
    assert await reward.score(PROMPT, ["a", "bb", "a"]) == [1.0, 2.0, 1.0]
    assert await reward.score(PROMPT, ["bb", "ccc"]) == [2.0, 3.0]
    assert reward.batches == [["a", "bb"], ["ccc"]]
    assert reward.calls == 3
    # Another prompt is another cache entry.
    other = PROMPT.model_copy(update={"prompt": "something else"})
    await reward.score(other, ["a"])
    assert reward.calls == 4


async def test_verifiable_reward_is_the_fraction_of_constraints_met() -> None:
    reward = VerifiableReward()
    scores = await reward.score(PROMPT, ["apple and pear", "Apple and pear", "Apple, pear"])
    assert scores == [1.0, 0.5, 0.0]


async def test_callable_reward_sync_async_and_bad_return() -> None:
    assert await CallableReward("tests.engine.test_rewards:length_score").score(
        PROMPT, ["ab", "abcd"]
    ) == [2.0, 4.0]
    assert await CallableReward("tests.engine.test_rewards:async_constant").score(
        PROMPT, ["x"]
    ) == [2.0]
    with pytest.raises(RewardError, match="must return a list of numbers"):
        await CallableReward("tests.engine.test_rewards:not_a_list").score(PROMPT, ["x", "y"])


def test_callable_reward_import_errors_are_clear() -> None:
    with pytest.raises(RewardError, match="cannot import no_such_module"):
        CallableReward("no_such_module:f")
    with pytest.raises(RewardError, match="has no function 'missing'"):
        CallableReward("tests.engine.test_rewards:missing")


async def test_weighted_reward_is_the_weighted_sum() -> None:
    reward = reward_of(
        {
            "kind": "weighted",
            "components": [
                {"weight": 0.5, "reward": {"kind": "verifiable"}},
                {
                    "weight": 2.0,
                    "reward": {
                        "kind": "callable",
                        "path": "tests.engine.test_rewards:length_score",
                    },
                },
            ],
        }
    )
    assert isinstance(reward, WeightedReward)
    assert await reward.score(PROMPT, ["ab", "A,B"]) == [0.5 * 1.0 + 2.0 * 2, 0.5 * 0.0 + 2.0 * 3]


def test_judge_needs_a_pool_model_and_a_readable_template(tmp_path: Path) -> None:
    with pytest.raises(RewardError, match="no pool model named 'judge'"):
        reward_of({"kind": "judge", "model": "judge"})
    with pytest.raises(RewardError, match="cannot read"):
        reward_of({"kind": "judge", "model": "m", "template": str(tmp_path / "missing.txt")})


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"7": 0.0}, 7.0),
        ({" 3": math.log(0.5), "5": math.log(0.5)}, 4.0),
        # Non-digits are ignored and the digits renormalized.
        ({"9": math.log(0.2), "Hello": math.log(0.8)}, 9.0),
        ({"▁2": math.log(0.25), "Ġ6": math.log(0.75)}, 5.0),
        ({"10": 0.0, "x": -1.0}, None),
        ({}, None),
    ],
)
def test_expected_digit(top: dict[str, float], expected: float | None) -> None:
    value = expected_digit(top)
    assert value == pytest.approx(expected) if expected is not None else value is None


def test_judge_prompt_shows_the_reference_only_when_asked() -> None:
    pool = ModelPool(PoolConfig.model_validate({"models": [{"name": "m", "model": "x"}]}))
    with_ref = JudgeReward(pool, "m").render("Q?", "A.", "R.")
    without = JudgeReward(pool, "m", use_reference=False).render("Q?", "A.", "R.")
    assert "R." in with_ref and "R." not in without
    assert "Q?" in with_ref and "A." in with_ref


@pytest.mark.engine
async def test_judge_on_a_real_model(pool: ModelPool) -> None:
    judge = JudgeReward(pool, CHAT_MODEL)
    answers = ["apple and pear", "The capital of France is Paris.", ""]
    scores = await judge.score(PROMPT, answers)
    assert len(scores) == 3
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert judge.no_digit < 3, "the judge should put digits among its top tokens"
    # Greedy and cached: the same answers give the same scores without new calls.
    assert await judge.score(PROMPT, answers) == scores
    assert judge.calls == 3


async def test_embedding_similarity_with_minilm() -> None:
    reward = EmbeddingReward(missing_reference=0.25)
    same, close, far = await reward.score(
        PROMPT, ["apple and pear", "a pear and an apple", "quantum chromodynamics lecture"]
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= far < close < same
    no_ref = PROMPT.model_copy(update={"reference": None})
    assert await reward.score(no_ref, ["anything"]) == [0.25]


class DigitPool:
    """A stand-in pool whose judge model answers with fixed first-token log-probs."""

    def __init__(self, tops: list[dict[str, float]]) -> None:
        self.names = ["j"]
        self.tops = tops

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [
            Generation(
                text="x",
                model=model,
                prompt_tokens=1,
                completion_tokens=1,
                finish_reason="length",
                seed=0,
                latency_s=0.0,
                top_logprobs=(top,),
            )
            for top in self.tops[: len(requests)]
        ]


async def test_judge_without_a_digit_scores_lowest_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = DigitPool([{"9": 0.0}, {"Hello": 0.0}, {"x": -1.0}])
    judge = JudgeReward(pool, "j")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="multisample.engine.rewards.judge"):
        scores = await judge.score(PROMPT, ["a", "b", "c"])
    assert scores == [1.0, 0.0, 0.0]
    assert judge.missing_scores() == 2  # visible, never silent
    assert sum("named no digit" in r.getMessage() for r in caplog.records) == 1  # warned once
    weighted = WeightedReward([(0.5, judge), (0.5, JudgeReward(pool, "j"))])  # type: ignore[arg-type]
    assert weighted.missing_scores() == 2


async def test_judge_without_a_digit_can_stop_the_run() -> None:
    judge = JudgeReward(DigitPool([{"Hello": 0.0}]), "j", on_missing="error")  # type: ignore[arg-type]
    with pytest.raises(RewardError, match=r"judge 'j': no digit .* prompt 'p'"):
        await judge.score(Prompt(id="p", prompt="Q?"), ["a"])
